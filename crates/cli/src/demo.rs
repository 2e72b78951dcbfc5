//! `hpcbox demo`: the lesson end to end on a cluster of its own. It starts a cluster in a
//! temporary state directory, submits the lesson's pi scripts with `qsub`, shows them progress
//! with `qstat`, prints their output and a table of time and speed-up, and stops the cluster.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use crate::cluster::{start_cluster, stop_cluster, UpArgs};

const RUN_PI: &str = include_str!("../../../examples/lesson/run_pi.pbs");
const RUN_MPI: &str = include_str!("../../../examples/lesson/run_mpi.pbs");

/// `hpcbox demo`'s options.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Monte Carlo samples per estimate.
    #[arg(long, default_value_t = 1_000_000_000)]
    samples: u64,
    /// Keep the demo's directory (state, scripts, job output) instead of removing it.
    #[arg(long)]
    keep: bool,
}

/// Runs the demo; fails if a job fails or the estimate is off.
pub fn run(args: DemoArgs) -> ExitCode {
    let dir = match tempfile::Builder::new().prefix("hpcbox-demo-").tempdir() {
        Ok(dir) => dir,
        Err(e) => return fail(e),
    };
    let outcome = demo(dir.path(), &args);
    if args.keep {
        let kept = dir.keep();
        println!("\nthe demo's files are in {}", kept.display());
    }
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("hpcbox demo: {message}");
    ExitCode::FAILURE
}

fn demo(dir: &Path, args: &DemoArgs) -> Result<(), String> {
    let bin = dir.join("bin");
    let work = dir.join("lesson");
    let state = dir.join("state");
    for d in [&bin, &work] {
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    link_tools(&bin)?;
    // The daemons and the commands below find the cluster through HPCBOX_HOME.
    std::env::set_var("HPCBOX_HOME", &state);
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let cpus = hpcbox_pool::usable_cpus().max(2) as u32;
    // One node with every CPU: the jobs run one after the other, each on CPUs of its own.
    let up = UpArgs {
        nodes: 1,
        cpus: Some(cpus),
        mem: None,
        queues: Vec::new(),
        history: None,
        agents_listen: None,
    };
    println!("$ hpcbox up --cpus {cpus}");
    print!("{}", start_cluster(&up)?);
    let result = run_lesson(&work, &path, args);
    let state_dir = crate::cluster::state_dir()?;
    println!("\n$ hpcbox down");
    stop_cluster(&state_dir);
    println!("hpcbox is down");
    result
}

fn link_tools(bin: &Path) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let names = crate::pbs::COMMANDS.iter().chain(&["hpcbox", "computepi"]);
    for name in names {
        std::os::unix::fs::symlink(&exe, bin.join(name)).map_err(|e| format!("{name}: {e}"))?;
    }
    Ok(())
}

fn shell(work: &Path, path: &str, samples: u64, line: &str) -> Result<String, String> {
    println!("$ {line}");
    let out = Command::new("sh")
        .arg("-c")
        .arg(line)
        .current_dir(work)
        .env("PATH", path)
        .env("SAMPLES", samples.to_string())
        .output()
        .map_err(|e| e.to_string())?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    print!("{stdout}");
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        return Err(format!("`{line}` failed"));
    }
    Ok(stdout)
}

fn run_lesson(work: &Path, path: &str, args: &DemoArgs) -> Result<(), String> {
    for (name, text) in [("run_pi.pbs", RUN_PI), ("run_mpi.pbs", RUN_MPI)] {
        std::fs::write(work.join(name), text).map_err(|e| e.to_string())?;
    }
    let pi = shell(work, path, args.samples, "qsub run_pi.pbs")?
        .trim()
        .to_string();
    let mpi = shell(
        work,
        path,
        args.samples,
        &format!("qsub -W depend=afterany:{pi} run_mpi.pbs"),
    )?
    .trim()
    .to_string();
    watch(work, path, &[&pi, &mpi])?;
    let mut rows = Vec::new();
    for (id, name) in [(&pi, "out_pi"), (&mpi, "out_mpi")] {
        let file = work.join(format!("{name}.o{}", id.split('.').next().unwrap_or(id)));
        let text =
            std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        println!(
            "\n$ cat {}",
            file.file_name().unwrap_or_default().to_string_lossy()
        );
        print!("{text}");
        rows.extend(text.lines().filter_map(parse_result));
    }
    print_table(&rows, args.samples)
}

/// Shows `qstat` whenever the jobs' states change, until every job has finished.
fn watch(work: &Path, path: &str, ids: &[&str]) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut last = String::new();
    loop {
        let out = Command::new("qstat")
            .args(["-x"])
            .args(ids)
            .current_dir(work)
            .env("PATH", path)
            .output()
            .map_err(|e| e.to_string())?;
        let table = String::from_utf8_lossy(&out.stdout).into_owned();
        let states: Vec<&str> = table
            .lines()
            .skip(2)
            .filter_map(|l| l.split_whitespace().nth(4))
            .collect();
        if table != last {
            println!("$ qstat -x {}", ids.join(" "));
            print!("{table}");
            last = table.clone();
        }
        if states.len() == ids.len() && states.iter().all(|s| *s == "F") {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err("the lesson's jobs did not finish in ten minutes".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One `computepi` result line, as its `key=value` fields.
fn parse_result(line: &str) -> Option<BTreeMap<String, String>> {
    let line = line
        .split_once("method=")
        .map(|(_, rest)| format!("method={rest}"))?;
    Some(
        line.split_whitespace()
            .filter_map(|field| field.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

fn print_table(rows: &[BTreeMap<String, String>], samples: u64) -> Result<(), String> {
    let seconds = |row: &BTreeMap<String, String>| {
        row.get("seconds")
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    let serial = rows
        .iter()
        .find(|r| r.get("method").map(String::as_str) == Some("serial"))
        .map(seconds)
        .ok_or("the serial run printed no result")?;
    println!("\nMonte Carlo pi, {samples} samples: time and speed-up against the serial run");
    println!(
        "{:<10} {:>7} {:>10} {:>9} {:>12}",
        "method", "workers", "time (s)", "speed-up", "pi"
    );
    let mut worst_error = 0.0f64;
    for row in rows {
        let get = |k: &str| row.get(k).cloned().unwrap_or_default();
        let t = seconds(row);
        println!(
            "{:<10} {:>7} {:>10.3} {:>9.2} {:>12}",
            get("method"),
            get("workers"),
            t,
            serial / t,
            get("pi")
        );
        if let Some(pi) = row.get("pi").and_then(|p| p.parse::<f64>().ok()) {
            worst_error = worst_error.max((pi - std::f64::consts::PI).abs());
        }
    }
    let bound = 6.0 * hpcbox_lesson::standard_error(samples);
    if rows.len() < 3 || worst_error > bound {
        return Err(format!(
            "expected three estimates within {bound:.1e} of pi, got {} (worst error {worst_error:.1e})",
            rows.len()
        ));
    }
    Ok(())
}

//! `hpcbox scale --submit`: the sweep as one PBS job array on the cluster, a subjob per run,
//! each with CPUs for the largest count so that no two runs share a CPU; then waiting for the
//! array and collecting what its subjobs wrote.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hpcbox_cluster::api::{StatusItem, StatusRequest};
use hpcbox_cluster::client::Client;
use hpcbox_lesson::scaling::{command_for, points_of, Point, Run};
use hpcbox_pbs::status::StatusObject;

use super::plan::{array_file, log_file, logs_dir, results_dir, Outcome, Plan};
use crate::submission::prepare;

/// How often the array's state is asked for while waiting.
const POLL: Duration = Duration::from_millis(250);

/// A sweep to submit.
#[derive(Debug)]
pub struct Sweep<'a> {
    /// The command, with `{n}` where the count goes.
    pub command: &'a [String],
    /// The counts.
    pub procs: &'a [u32],
    /// Runs per count.
    pub repeat: u32,
    /// Its directory: plan, results, output.
    pub dir: PathBuf,
}

/// Submits `sweep` as one job array; when `wait`, waits for it and gives its timings, else
/// prints the array's id and gives `None`.
pub fn submit(sweep: &Sweep<'_>, wait: bool) -> Result<Option<Vec<Point>>, String> {
    let client = crate::pbs::client();
    let widest = check_fits(&client, sweep)?;
    let dir =
        std::path::absolute(&sweep.dir).map_err(|e| format!("{}: {e}", sweep.dir.display()))?;
    let plan = Plan {
        token: hpcbox_cluster::random::random_hex(8).map_err(|e| e.to_string())?,
        workdir: std::env::current_dir().map_err(|e| e.to_string())?,
        command: sweep.command.to_vec(),
        procs: sweep.procs.to_vec(),
        repeat: sweep.repeat,
    };
    prepare_dir(&dir, &plan)?;
    let id = submit_array(&client, &qsub_argv(&plan, &dir, widest)?)?;
    write_file(&array_file(&dir), &id)?;
    eprintln!(
        "hpcbox scale: job array {id}, {} runs; `hpcbox scale --collect {}` reports it",
        plan.runs().len(),
        dir.display()
    );
    if !wait {
        println!("{id}");
        return Ok(None);
    }
    wait_for_array(&client, &id, plan.runs().len())?;
    collect_results(&dir, &plan).map(Some)
}

/// The timings of the sweep in `dir`, submitted earlier: waits for its array first unless
/// every subjob has written its result.
pub fn collect(dir: &Path) -> Result<Vec<Point>, String> {
    let plan = Plan::read(dir)?;
    let total = plan.runs().len();
    if (1..=total).any(|index| Outcome::read(dir, index).is_none()) {
        let path = array_file(dir);
        let id = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        wait_for_array(&crate::pbs::client(), id.trim(), total)?;
    }
    collect_results(dir, &plan)
}

/// Checks that the sweep can be submitted: at least two runs (a PBS array has at least two
/// indices), a cluster up, and a node with CPUs for the largest count, which it gives.
fn check_fits(client: &Client, sweep: &Sweep<'_>) -> Result<u32, String> {
    if sweep.procs.len() * (sweep.repeat as usize) < 2 {
        return Err(
            "a PBS job array needs at least two subjobs, and this sweep is one run: \
                    give --repeat 2 or more, or another count"
                .into(),
        );
    }
    let widest = sweep.procs.iter().copied().max().unwrap_or(1).max(1);
    let nodes = client
        .nodes()
        .map_err(|e| format!("--submit needs a cluster: {e}"))?;
    let most = nodes.iter().filter_map(node_cpus).max().unwrap_or(0);
    if most < widest {
        return Err(format!(
            "the largest count, {widest}, needs {widest} CPUs on one node, and the cluster's \
             largest node has {most} (`hpcbox up --cpus {widest}` gives it more)"
        ));
    }
    Ok(widest)
}

/// A node's `resources_available.ncpus`.
fn node_cpus(node: &StatusObject) -> Option<u32> {
    node.get_resource("resources_available", "ncpus")?
        .parse()
        .ok()
}

/// Makes `dir` ready for a new sweep: the plan written, results and logs of an earlier one
/// removed.
fn prepare_dir(dir: &Path, plan: &Plan) -> Result<(), String> {
    for sub in [results_dir(dir), logs_dir(dir)] {
        if sub.exists() {
            std::fs::remove_dir_all(&sub).map_err(|e| format!("{}: {e}", sub.display()))?;
        }
        std::fs::create_dir_all(&sub).map_err(|e| format!("{}: {e}", sub.display()))?;
    }
    let _ = std::fs::remove_file(array_file(dir));
    plan.write(dir)
}

/// `qsub`'s command line for the sweep's array: one subjob per run, `widest` CPUs each, the
/// submitter's environment, and `hpcbox scale-subjob` as the job.
fn qsub_argv(plan: &Plan, dir: &Path, widest: u32) -> Result<Vec<String>, String> {
    let exe = std::env::current_exe().map_err(|e| format!("this program's path: {e}"))?;
    let path = |p: &Path| p.display().to_string();
    Ok(vec![
        "-N".into(),
        "scale".into(),
        "-J".into(),
        format!("1-{}", plan.runs().len()),
        "-l".into(),
        format!("select=1:ncpus={widest}"),
        "-V".into(),
        "-j".into(),
        "oe".into(),
        "-o".into(),
        format!("{}/", path(&logs_dir(dir))),
        "--".into(),
        path(&exe),
        "scale-subjob".into(),
        path(dir),
        plan.token.clone(),
    ])
}

/// Submits `argv` as `qsub` would; gives the job's id.
fn submit_array(client: &Client, argv: &[String]) -> Result<String, String> {
    let prepared = prepare(argv).map_err(|e| e.message().trim_end().to_string())?;
    let request = prepared.request(argv);
    match client.submit(&request) {
        Err(e) => Err(e.to_string()),
        Ok(Err(refusal)) => Err(format!("qsub refused the job array: {}", refusal.text)),
        Ok(Ok(submitted)) => Ok(submitted.job_id),
    }
}

/// Waits until array `id` of `total` subjobs is finished, with a progress bar of the subjobs
/// that ended.
fn wait_for_array(client: &Client, id: &str, total: usize) -> Result<(), String> {
    let bar = indicatif::ProgressBar::new(total as u64);
    bar.set_message(format!("job array {id}"));
    loop {
        let array = array_status(client, id)?;
        bar.set_position(expired(&array));
        if array.get("job_state") == Some("F") {
            break;
        }
        std::thread::sleep(POLL);
    }
    bar.finish_and_clear();
    Ok(())
}

/// Array `id`'s state and counts, as `qstat -x` has them.
fn array_status(client: &Client, id: &str) -> Result<StatusObject, String> {
    let request = StatusRequest {
        ids: vec![id.to_string()],
        history: true,
        subjobs: false,
        attributes: vec!["job_state".into(), "array_state_count".into()],
    };
    let items = client
        .status(&request)
        .map_err(|e| format!("waiting for job array {id}: {e}"))?;
    match items.into_iter().next() {
        Some(StatusItem::Job(job)) => Ok(job),
        Some(StatusItem::Error { id, error }) => Err(format!("job array {id}: {error}")),
        None => Err(format!("job array {id}: the server does not know it")),
    }
}

/// How many subjobs ended: `Expired:N` of `array_state_count`.
fn expired(array: &StatusObject) -> u64 {
    array
        .get("array_state_count")
        .and_then(|counts| {
            counts
                .split_whitespace()
                .find_map(|count| count.strip_prefix("Expired:")?.parse().ok())
        })
        .unwrap_or(0)
}

/// The timings the subjobs of the sweep in `dir` wrote; an error naming every run that failed
/// or wrote nothing.
fn collect_results(dir: &Path, plan: &Plan) -> Result<Vec<Point>, String> {
    let mut timed: Vec<(Run, f64)> = Vec::new();
    let mut failures = Vec::new();
    for (k, &run) in plan.runs().iter().enumerate() {
        let index = k + 1;
        match Outcome::read(dir, index) {
            Some(outcome) if outcome.exit_status == Some(0) => {
                timed.push((run, outcome.seconds));
            }
            outcome => failures.push(failure(dir, plan, run, index, outcome.as_ref())),
        }
    }
    if failures.is_empty() {
        Ok(points_of(&plan.procs, &timed))
    } else {
        Err(failures.join("\n"))
    }
}

/// What went wrong with subjob `index`, which ran `run`: its exit status and the end of its
/// error output, or that it wrote no result.
fn failure(dir: &Path, plan: &Plan, run: Run, index: usize, outcome: Option<&Outcome>) -> String {
    let what = format!(
        "`{}` at {} processes (run {}, subjob [{index}])",
        command_for(&plan.command, run.procs).join(" "),
        run.procs,
        run.repeat
    );
    let Some(outcome) = outcome else {
        return format!(
            "{what} wrote no result: its job output is in {}",
            logs_dir(dir).display()
        );
    };
    if let Some(error) = &outcome.error {
        return format!("{what} did not start: {error}");
    }
    let stderr = std::fs::read_to_string(log_file(dir, index, "err")).unwrap_or_default();
    format!(
        "{what} failed (exit status {}): {}",
        outcome.exit_status.unwrap_or(1),
        tail(&stderr, 5)
    )
}

/// The last `lines` lines of `text`.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.trim_end().lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Writes `text` to `path`.
fn write_file(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

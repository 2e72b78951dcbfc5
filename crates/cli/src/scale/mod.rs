//! `hpcbox scale`: run a command at several process counts, and report and plot how it scales.
//!
//! The sweep runs here, one run after another, or (`--submit`) as one PBS job array on the
//! cluster, one subjob per run:
//!
//! - [`report`]: the table, the JSON and the plots, the same for both;
//! - [`plan`]: the sweep's directory, which the submitter and the subjobs share;
//! - [`submit`]: submitting the array, waiting for it and collecting its results;
//! - [`subjob`]: what each subjob runs, `hpcbox scale-subjob`.

mod plan;
mod report;
mod subjob;
mod submit;

use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use hpcbox_lesson::scaling::{command_for, Point};

pub use subjob::{subjob, SubjobArgs};

/// `hpcbox scale`'s options.
#[derive(Debug, clap::Args)]
pub struct ScaleArgs {
    /// Process counts to try, comma-separated (default: 1, 2, 4, … up to the usable CPUs).
    #[arg(long, value_delimiter = ',')]
    procs: Vec<u32>,
    /// Runs per count.
    #[arg(long, default_value_t = 3)]
    repeat: u32,
    /// The sweet spot is the fewest processes whose time is at most this fraction longer than
    /// the fastest count's.
    #[arg(long, default_value_t = 0.1, value_parser = fraction)]
    threshold: f64,
    /// Where to write the plots: PREFIX.png and PREFIX.svg.
    #[arg(long, default_value = "scale")]
    plot: PathBuf,
    /// Print the results as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Run the sweep on the cluster (`hpcbox up`) as one PBS job array, a subjob per run, each
    /// with CPUs for the largest count; wait for it and report as a local sweep does.
    #[arg(long, conflicts_with = "collect")]
    submit: bool,
    /// With --submit: print the job array's id and return; `--collect DIR` reports later.
    #[arg(long, requires = "submit")]
    no_wait: bool,
    /// With --submit: the directory of the sweep's plan, results and output
    /// (default: PREFIX.runs, beside the plots).
    #[arg(long, value_name = "DIR", requires = "submit")]
    runs: Option<PathBuf>,
    /// Wait for the job array of an earlier `--submit` whose directory is DIR, and report it.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["procs", "repeat", "command"])]
    collect: Option<PathBuf>,
    /// The command, with `{n}` where the process count goes. (Clap prints `{n}` in a help
    /// text as a line break, so the help spells it out.)
    #[arg(
        help = "The command, with the placeholder n in braces where the process count goes",
        trailing_var_arg = true,
        allow_hyphen_values = true,
        required_unless_present = "collect"
    )]
    command: Vec<String>,
}

impl ScaleArgs {
    /// The counts to try: those given, else the default ones.
    fn counts(&self) -> Vec<u32> {
        if self.procs.is_empty() {
            default_counts(hpcbox_pool::usable_cpus() as u32)
        } else {
            self.procs.clone()
        }
    }

    /// How to report the results.
    fn show(&self) -> report::Show {
        report::Show {
            threshold: self.threshold,
            plot: self.plot.clone(),
            json: self.json,
        }
    }
}

/// Runs the sweep (here, on the cluster, or collects an earlier one), prints the table (or
/// JSON) and writes the plots.
pub fn run(args: ScaleArgs) -> ExitCode {
    match points(&args) {
        Ok(Some(points)) => {
            report::show(&points, &args.show());
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hpcbox scale: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The sweep's timings, as the options ask for them; `None` when a submitted sweep is left
/// to run (`--no-wait`).
fn points(args: &ScaleArgs) -> Result<Option<Vec<Point>>, String> {
    if let Some(dir) = &args.collect {
        return submit::collect(dir).map(Some);
    }
    let procs = args.counts();
    let repeat = args.repeat.max(1);
    if args.submit {
        let sweep = submit::Sweep {
            command: &args.command,
            procs: &procs,
            repeat,
            dir: args
                .runs
                .clone()
                .unwrap_or_else(|| args.plot.with_extension("runs")),
        };
        return submit::submit(&sweep, !args.no_wait);
    }
    sweep(&args.command, &procs, repeat).map(Some)
}

/// 1, 2, 4, … up to `max`, and `max` itself.
fn default_counts(max: u32) -> Vec<u32> {
    let mut counts: Vec<u32> = std::iter::successors(Some(1u32), |n| n.checked_mul(2))
        .take_while(|&n| n < max)
        .collect();
    counts.push(max.max(1));
    counts
}

/// Runs `command` here, `repeat` times at each count, one run after another.
fn sweep(command: &[String], procs: &[u32], repeat: u32) -> Result<Vec<Point>, String> {
    let bar = indicatif::ProgressBar::new(u64::from(repeat) * procs.len() as u64);
    let mut points = Vec::new();
    for &n in procs {
        let argv = command_for(command, n);
        let mut seconds = Vec::new();
        for _ in 0..repeat {
            bar.set_message(format!("{n} processes"));
            seconds.push(time_once(&argv)?);
            bar.inc(1);
        }
        points.push(Point { procs: n, seconds });
    }
    bar.finish_and_clear();
    Ok(points)
}

/// The wall time of one run of `argv`; its error output when it fails.
fn time_once(argv: &[String]) -> Result<f64, String> {
    let (program, args) = argv.split_first().ok_or("no command given")?;
    let started = Instant::now();
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    let seconds = started.elapsed().as_secs_f64();
    if !out.status.success() {
        return Err(format!(
            "`{}` failed ({}): {}",
            argv.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim_end()
        ));
    }
    Ok(seconds)
}

/// A non-negative finite fraction (`--threshold`).
fn fraction(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(x) if x.is_finite() && x >= 0.0 => Ok(x),
        _ => Err(format!(
            "{text:?} is not a fraction of 0 or more (0.1 is 10%)"
        )),
    }
}

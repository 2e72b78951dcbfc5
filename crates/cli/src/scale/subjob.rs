//! `hpcbox scale-subjob DIR TOKEN`: one subjob of a submitted sweep. It finds its run in the
//! plan by `PBS_ARRAY_INDEX`, runs the command at its count in the submitter's working
//! directory, times it, and writes the outcome to `DIR/results/`.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, ExitStatus, Stdio};
use std::time::Instant;

use hpcbox_lesson::scaling::{command_for, Run};

use super::plan::{log_file, Outcome, Plan};

/// `hpcbox scale-subjob`'s arguments, as `hpcbox scale --submit` writes them.
#[derive(Debug, clap::Args)]
pub struct SubjobArgs {
    /// The sweep's directory.
    dir: PathBuf,
    /// The sweep's token, as in its plan.
    token: String,
}

/// Runs this subjob's run of the sweep; exits as the command exited.
pub fn subjob(args: SubjobArgs) -> ExitCode {
    match run_subjob(&args) {
        Ok(status) => ExitCode::from(u8::try_from(status).unwrap_or(1)),
        Err(e) => {
            eprintln!("hpcbox scale-subjob: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Times this subjob's run, records it, and gives the command's exit status.
fn run_subjob(args: &SubjobArgs) -> Result<i32, String> {
    let plan = Plan::read(&args.dir)?;
    if plan.token != args.token {
        return Err(format!(
            "{} now holds another sweep; this subjob's is gone",
            args.dir.display()
        ));
    }
    let index = array_index()?;
    let run = index
        .checked_sub(1)
        .and_then(|k| plan.runs().get(k).copied())
        .ok_or_else(|| format!("the plan has no run {index}"))?;
    let outcome = time_run(&plan, run, &args.dir, index);
    outcome.write(&args.dir, index)?;
    if let Some(error) = &outcome.error {
        eprintln!("hpcbox scale-subjob: {error}");
    }
    Ok(outcome.exit_status.unwrap_or(1))
}

/// `PBS_ARRAY_INDEX`, which the node agent sets in every subjob.
fn array_index() -> Result<usize, String> {
    std::env::var("PBS_ARRAY_INDEX")
        .ok()
        .and_then(|index| index.parse().ok())
        .ok_or_else(|| "PBS_ARRAY_INDEX is not set: this runs as a subjob of a job array".into())
}

/// Runs the command at `run`'s count, its output in the sweep's logs, and times it.
fn time_run(plan: &Plan, run: Run, dir: &Path, index: usize) -> Outcome {
    let argv = command_for(&plan.command, run.procs);
    let started = Instant::now();
    let status = spawn(&argv, &plan.workdir, dir, index);
    let seconds = started.elapsed().as_secs_f64();
    let (exit_status, error) = match status {
        Ok(status) => (Some(exit_status(status)), None),
        Err(e) => (None, Some(e)),
    };
    Outcome {
        run,
        seconds,
        exit_status,
        error,
    }
}

/// Runs `argv` in `workdir` to its end, standard output and error to subjob `index`'s logs.
fn spawn(argv: &[String], workdir: &Path, dir: &Path, index: usize) -> Result<ExitStatus, String> {
    let (program, args) = argv.split_first().ok_or("no command given")?;
    let log = |stream: &str| {
        let path = log_file(dir, index, stream);
        File::create(&path).map_err(|e| format!("{}: {e}", path.display()))
    };
    Command::new(program)
        .args(args)
        .current_dir(workdir)
        .stdin(Stdio::null())
        .stdout(log("out")?)
        .stderr(log("err")?)
        .status()
        .map_err(|e| format!("{program}: {e}"))
}

/// An exit status as a shell gives it: the code, or 128 + the signal that ended the process.
fn exit_status(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|signal| 128 + signal))
        .unwrap_or(1)
}

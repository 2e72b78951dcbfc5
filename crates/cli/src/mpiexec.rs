//! `hpcbox mpiexec`: start a program as N ranks of hpcbox-comm on this machine.

use std::process::ExitCode;
use std::time::Duration;

use hpcbox_comm::launch::{launch, LaunchSpec};

/// `hpcbox mpiexec`'s options (`-np N` is taken as `-n N`, as MPI launchers take it).
#[derive(Debug, clap::Args)]
pub struct MpiexecArgs {
    /// Number of ranks (default: the lines of `PBS_NODEFILE` inside a PBS job, else the CPUs
    /// this process may use).
    #[arg(short = 'n')]
    np: Option<usize>,
    /// Prefix every output line with the rank that wrote it.
    #[arg(long)]
    tag_output: bool,
    /// End the run after this many seconds, naming the ranks still running.
    #[arg(long)]
    timeout: Option<f64>,
    /// Pass this variable of the launcher's environment to the ranks (repeatable).
    #[arg(short = 'x')]
    export: Vec<String>,
    /// Set VAR=VALUE in the ranks' environment (repeatable).
    #[arg(long = "env", value_name = "VAR=VALUE")]
    env: Vec<String>,
    /// Hosts to start ranks on (one per line, optionally `host slots=N`).
    #[arg(long = "hostfile", short = 'f')]
    hostfile: Option<std::path::PathBuf>,
    /// The program and its arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    command: Vec<String>,
}

/// `-np N` (MPI's spelling) as clap's `-n N`.
pub fn normalize(argv: Vec<String>) -> Vec<String> {
    argv.into_iter()
        .map(|arg| if arg == "-np" { "-n".to_string() } else { arg })
        .collect()
}

/// The default number of ranks: one per `PBS_NODEFILE` line in a job, else the usable CPUs.
fn default_ranks() -> usize {
    std::env::var("PBS_NODEFILE")
        .ok()
        .and_then(|path| std::fs::read_to_string(path).ok())
        .map(|text| text.lines().filter(|l| !l.trim().is_empty()).count())
        .filter(|&n| n > 0)
        .unwrap_or_else(hpcbox_pool::usable_cpus)
}

/// Launches the ranks and exits as the first failing rank did.
pub fn run(args: MpiexecArgs) -> ExitCode {
    if let Some(hostfile) = &args.hostfile {
        let local = hpcbox_comm::launch::hostname();
        let remote = std::fs::read_to_string(hostfile)
            .map(|text| {
                text.lines()
                    .filter_map(|l| l.split_whitespace().next())
                    .any(|host| host != local && host != "localhost" && !host.starts_with('#'))
            })
            .unwrap_or(false);
        if remote {
            eprintln!("mpiexec: starting ranks on other hosts is not supported by hpcbox yet");
            return ExitCode::FAILURE;
        }
    }
    let (program, rest) = args
        .command
        .split_first()
        .expect("clap requires the command");
    let mut spec = LaunchSpec::new(args.np.unwrap_or_else(default_ranks), program);
    spec.args = rest.iter().map(Into::into).collect();
    spec.tag_output = args.tag_output;
    spec.timeout = args.timeout.map(Duration::from_secs_f64);
    for name in &args.export {
        match name.split_once('=') {
            Some((name, value)) => spec.env.push((name.to_string(), value.to_string())),
            None => {
                if let Ok(value) = std::env::var(name) {
                    spec.env.push((name.clone(), value));
                }
            }
        }
    }
    for pair in &args.env {
        match pair.split_once('=') {
            Some((name, value)) => spec.env.push((name.to_string(), value.to_string())),
            None => {
                eprintln!("mpiexec: --env takes VAR=VALUE, not `{pair}`");
                return ExitCode::from(2);
            }
        }
    }
    match launch(&spec) {
        Ok(outcome) => {
            if let Some(failure) = &outcome.failure {
                eprintln!("mpiexec: {failure}");
            }
            ExitCode::from((outcome.status & 0xff) as u8)
        }
        Err(e) => {
            eprintln!("mpiexec: {e}");
            ExitCode::FAILURE
        }
    }
}

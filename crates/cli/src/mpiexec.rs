//! `hpcbox mpiexec`: start a program as N ranks of hpcbox-comm, on this machine or on the
//! hosts of a hostfile (or of `PBS_NODEFILE` inside a PBS job); remote ranks start through
//! `$HPCBOX_RSH`, else `ssh -o BatchMode=yes`.

use std::process::ExitCode;
use std::time::Duration;

use hpcbox_comm::launch::{launch, Bind, LaunchSpec};
use hpcbox_comm::placement::{capacity, parse_hostfile, parse_nodefile, place, HostSlots};

/// `hpcbox mpiexec`'s options (`-np N` is taken as `-n N`, as MPI launchers take it).
#[derive(Debug, clap::Args)]
pub struct MpiexecArgs {
    /// Number of ranks (default: the slots of the hostfile, else the lines of `PBS_NODEFILE`
    /// inside a PBS job, else the CPUs this process may use).
    #[arg(short = 'n')]
    np: Option<usize>,
    /// Ranks per host, in place of the hosts' slots.
    #[arg(long)]
    ppn: Option<usize>,
    /// Pin each rank on this machine to one CPU (`core`), or not (`none`).
    #[arg(long = "bind-to", value_parser = ["core", "none"], default_value = "none")]
    bind_to: String,
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
    /// Hosts to start ranks on (`host`, `host slots=N` or `host:N` per line); ranks fill
    /// each host's slots in turn.
    #[arg(long = "hostfile", short = 'f')]
    hostfile: Option<std::path::PathBuf>,
    /// The program and its arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    command: Vec<String>,
}

/// `-np N` and `-ppn N` (MPI's spellings) as clap's `-n N` and `--ppn N`, among
/// `hpcbox mpiexec`'s own options only: the program's arguments stay as they are.
pub fn normalize(mut argv: Vec<String>) -> Vec<String> {
    if argv.get(1).map(String::as_str) != Some("mpiexec") {
        return argv;
    }
    let mut i = 2;
    while let Some(arg) = argv.get_mut(i) {
        match arg.as_str() {
            "-np" => *arg = "-n".into(),
            "-ppn" => *arg = "--ppn".into(),
            _ => {}
        }
        match arg.as_str() {
            "-n" | "--ppn" | "-f" | "--hostfile" | "--bind-to" | "--timeout" | "-x" | "--env" => {
                i += 2
            }
            a if a.starts_with('-') && a != "--" => i += 1,
            // The program: everything from here is its own.
            _ => break,
        }
    }
    argv
}

/// The hosts ranks may go to: the hostfile's, else `PBS_NODEFILE`'s inside a job; `None`
/// when neither names any (then every rank runs here).
fn host_list(args: &MpiexecArgs) -> Result<Option<Vec<HostSlots>>, String> {
    if let Some(path) = &args.hostfile {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read hostfile {}: {e}", path.display()))?;
        let hosts = parse_hostfile(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        if hosts.is_empty() {
            return Err(format!("hostfile {} names no host", path.display()));
        }
        return Ok(Some(hosts));
    }
    let nodefile = std::env::var("PBS_NODEFILE")
        .ok()
        .and_then(|path| std::fs::read_to_string(path).ok())
        .map(|text| parse_nodefile(&text));
    Ok(nodefile.filter(|hosts| !hosts.is_empty()))
}

/// The number of ranks and the host of each (empty: all on this machine).
fn placement(args: &MpiexecArgs) -> Result<(usize, Vec<String>), String> {
    let Some(hosts) = host_list(args)? else {
        let np = args
            .np
            .or(args.ppn)
            .unwrap_or_else(hpcbox_pool::usable_cpus);
        return Ok((np, Vec::new()));
    };
    let np = args.np.unwrap_or_else(|| capacity(&hosts, args.ppn));
    let placed = place(np, &hosts, args.ppn).map_err(|e| e.to_string())?;
    if placed.oversubscribed {
        eprintln!(
            "mpiexec: {np} ranks on {} slots: oversubscribing, extra ranks go round-robin over the hosts",
            capacity(&hosts, None)
        );
    }
    Ok((np, placed.hosts))
}

/// Inside an hpcbox job (its agent takes task requests), remote ranks start through the job's
/// agents (`hpcbox tmrsh`, PBS's `pbs_tmrsh`), as a system MPI's daemons do there: they run as
/// tasks of the job, accounted to it and ended with it, their output in the job's files.
/// `$HPCBOX_RSH` still chooses; elsewhere the agent is ssh ([`hpcbox_comm::remote`]).
fn job_agent() -> Option<Vec<String>> {
    if std::env::var_os(hpcbox_comm::remote::ENV_RSH).is_some()
        || std::env::var_os(hpcbox_cluster::protocol::ENV_TM_SOCKET).is_none()
    {
        return None;
    }
    let exe = std::env::current_exe().ok()?;
    Some(vec![exe.to_string_lossy().into_owned(), "tmrsh".into()])
}

/// Launches the ranks and exits as the first failing rank did.
pub fn run(args: MpiexecArgs) -> ExitCode {
    let (np, hosts) = match placement(&args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("mpiexec: {e}");
            return ExitCode::from(2);
        }
    };
    let (program, rest) = args
        .command
        .split_first()
        .expect("clap requires the command");
    let mut spec = LaunchSpec::new(np, program);
    spec.hosts = hosts;
    spec.bind = if args.bind_to == "core" {
        Bind::Core
    } else {
        Bind::None
    };
    spec.args = rest.iter().map(Into::into).collect();
    spec.agent = job_agent();
    if spec.agent.is_some() && args.tag_output {
        eprintln!(
            "mpiexec: ranks on the job's other hosts write to the job's output files, untagged (pbs_tmrsh)"
        );
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn normalize_rewrites_only_the_launchers_options() {
        assert_eq!(
            normalize(words("hpcbox mpiexec -np 4 -ppn 2 --tag-output prog -np 3")),
            words("hpcbox mpiexec -n 4 --ppn 2 --tag-output prog -np 3")
        );
        assert_eq!(
            normalize(words("hpcbox mpiexec -x -np prog")),
            words("hpcbox mpiexec -x -np prog")
        );
        assert_eq!(
            normalize(words("hpcbox scale -np 2")),
            words("hpcbox scale -np 2")
        );
    }
}

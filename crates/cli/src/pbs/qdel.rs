//! `qdel`, `qhold`, `qrls` and `qsig`: act on jobs by id.

use hpcbox_cluster::api::{Action, JobAction};
use hpcbox_pbs::errno;
use hpcbox_pbs::getopt::{getopt, Opt};

fn usage(command: &str) -> &'static str {
    match command {
        "qdel" => {
            "usage: qdel [-W force|suppress_email=X] [-x] job_identifier...\nqdel --version\n"
        }
        "qsig" => "usage: qsig [-s signal] job_identifier...\nqsig --version\n",
        "qhold" => "usage: qhold [-h hold_list] job_identifier...\nqhold --version\n",
        _ => "usage: qrls [-h hold_list] job_identifier...\nqrls --version\n",
    }
}

/// Runs `command` (`qdel`, `qhold`, `qrls` or `qsig`) with `args`; returns its exit status.
pub fn run(command: &str, args: &[String]) -> i32 {
    if args.len() == 1 && args[0].eq_ignore_ascii_case("--version") {
        println!("pbs_version = {}", env!("CARGO_PKG_VERSION"));
        return 0;
    }
    let spec = match command {
        "qdel" => "W:x",
        "qsig" => "s:",
        _ => "h:",
    };
    let g = getopt(command, spec, args);
    let mut force = false;
    let mut value: Option<String> = None;
    for opt in g.opts {
        match opt {
            Opt::Invalid(message) => {
                eprint!("{message}\n{}", usage(command));
                return 2;
            }
            Opt::Flag('W', Some(w)) => force = w == "force",
            Opt::Flag(_, v) => value = v.or(value),
        }
    }
    if g.operands.is_empty() {
        eprint!("{}", usage(command));
        return 2;
    }
    let action = match command {
        "qdel" => Action::Delete { force },
        "qsig" => Action::Signal {
            signal: value.unwrap_or_else(|| "SIGTERM".into()),
        },
        "qhold" => Action::Hold {
            types: value.unwrap_or_else(|| "u".into()),
        },
        _ => Action::Release {
            types: value.unwrap_or_else(|| "u".into()),
        },
    };
    let client = super::client();
    let mut exit = 0;
    for id in g.operands {
        let request = JobAction {
            id: id.clone(),
            action: action.clone(),
        };
        match client.act(&request) {
            Err(err) => return super::unreachable(command, &err),
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                let id = super::complete_id(&client, &id);
                let line = match command {
                    "qdel" => errno::qdel_error_line(error.code, &id),
                    _ => Some(errno::job_error_line(command, error.code, &id)),
                };
                if let Some(line) = line {
                    eprint!("{line}");
                }
                exit = errno::exit_code(error.code);
            }
        }
    }
    exit
}

//! `qsub`: submit a job script and print its id once the server has it durably.

use hpcbox_pbs::errno;
use hpcbox_pbs::format::qsub_job_id;

use crate::submission::prepare;

/// Runs `qsub` with `args`; returns its exit status.
pub fn run(args: &[String]) -> i32 {
    if args.len() == 1 && args[0].eq_ignore_ascii_case("--version") {
        println!("pbs_version = {}", env!("CARGO_PKG_VERSION"));
        return 0;
    }
    let prepared = match prepare(args) {
        Ok(prepared) => prepared,
        Err(err) => {
            eprint!("{}", err.message());
            return err.exit_code();
        }
    };
    for warning in &prepared.args.warnings {
        eprintln!("{warning}");
    }
    let request = prepared.request(args);
    match super::client().submit(&request) {
        Err(err) => super::unreachable("qsub", &err),
        Ok(Err(refusal)) => {
            eprintln!("qsub: {}", refusal.text);
            errno::exit_code(refusal.code)
        }
        Ok(Ok(submitted)) => {
            if !prepared.options.quiet {
                print!("{}", qsub_job_id(&submitted.job_id));
            }
            0
        }
    }
}

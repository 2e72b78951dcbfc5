//! `qsub`: submit a job script and print its id once the server has it durably.

use hpcbox_cluster::api::SubmitRequest;
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
    if prepared.options.interactive {
        return super::interactive::run(&prepared, args);
    }
    match submit(&prepared.request(args)) {
        Err(code) => code,
        Ok(job_id) => {
            if !prepared.options.quiet {
                print!("{}", qsub_job_id(&job_id));
            }
            0
        }
    }
}

/// Sends `request` to the server: the new job's id, or qsub's exit status after printing
/// why the job was not queued.
pub fn submit(request: &SubmitRequest) -> Result<String, i32> {
    match super::client().submit(request) {
        Err(err) => Err(super::unreachable("qsub", &err)),
        Ok(Err(refusal)) => {
            eprintln!("qsub: {}", refusal.text);
            Err(errno::exit_code(refusal.code))
        }
        Ok(Ok(submitted)) => Ok(submitted.job_id),
    }
}

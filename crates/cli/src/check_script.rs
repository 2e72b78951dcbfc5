//! `hpcbox check-script`: what qsub would send for a job script, without submitting it.

use std::process::ExitCode;

use hpcbox_pbs::format::full::{self, FullOptions};
use hpcbox_pbs::jobid::JobId;
use hpcbox_pbs::newjob::{queued_job, Submission};
use hpcbox_pbs::resource::ResourceDefs;

use crate::submission::{prepare, Prepared};

/// Arguments of `hpcbox check-script`: qsub's own command line.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// qsub options followed by the script path (`-` or nothing reads standard input).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    qsub_args: Vec<String>,
}

/// Prints the job as `qstat -f` would show it once queued, or qsub's error and exit status.
pub fn run(args: Args) -> ExitCode {
    let prepared = match prepare(&args.qsub_args) {
        Ok(prepared) => prepared,
        Err(err) => {
            eprint!("{}", err.message());
            return crate::pbs::exit_code(err.exit_code());
        }
    };
    match render(&prepared, &args.qsub_args) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("qsub: {message}");
            crate::pbs::exit_code(1)
        }
    }
}

fn render(prepared: &Prepared, argv: &[String]) -> Result<String, String> {
    let host = &prepared.submitter.host;
    let job_id = JobId::new(0, host.split('.').next().unwrap_or(host));
    let queue = prepared
        .options
        .destination()
        .map_err(|err| err.to_string())?
        .queue
        .unwrap_or_else(|| hpcbox_pbs::newjob::DEFAULT_QUEUE.to_string());
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let submit_arguments = full::encode_submit_arguments(&argv);
    let now = jiff::Timestamp::now().as_second();
    let submission = Submission {
        options: &prepared.options,
        operand: &prepared.args.operand,
        job_id: &job_id,
        queue: &queue,
        owner: &prepared.user,
        submit_host: host,
        workdir: &prepared.submitter.workdir,
        variables: &prepared.variables,
        submit_arguments: &submit_arguments,
        now,
        execution_time: None,
    };
    let job = queued_job(&submission, &ResourceDefs::builtin(), &|_| false)
        .map_err(|err| err.to_string())?;
    Ok(full::render_jobs(
        &[job],
        &crate::pbs::local_time_zone(),
        FullOptions::default(),
    ))
}

//! `qsub`'s options as a typed model: parsing a command line and `#PBS` directives the way
//! OpenPBS's `qsub` does (`cmds/qsub.c` `process_opts`), merging them with PBS's precedence,
//! validating them with PBS's rules and reporting errors in PBS's words.
//!
//! The flow of a submission is:
//!
//! 1. [`parse_args`] reads the command line (getopt `a:A:c:C:e:fhIj:J:k:l:m:M:N:o:p:q:r:R:S:u:v:VW:XzP:`);
//! 2. the caller picks the directive prefix ([`QsubArgs::directive_prefix`]) and reads the script
//!    with [`crate::script::scan`];
//! 3. [`QsubArgs::finish`] acts on the directives in order (the command line wins), then runs the
//!    checks `qsub` and its library run before sending the job, and gives the final
//!    [`QsubOptions`] or the [`QsubError`] `qsub` would print.
//!
//! ```
//! use hpcbox_pbs::qsub::parse_args;
//! use hpcbox_pbs::script::scan;
//! let args = parse_args(["-N", "cli", "-l", "walltime=1:00:00", "job.pbs"]).unwrap();
//! let script = "#PBS -N script\n#PBS -l walltime=2:00:00,mem=1gb\n#PBS -q workq\nhostname\n";
//! let opts = args.finish(&scan(script, &args.directive_prefix(None))).unwrap();
//! assert_eq!(opts.name.as_deref(), Some("cli"));
//! assert_eq!(opts.resource("walltime"), Some("1:00:00"));
//! assert_eq!(opts.resource("mem"), Some("1gb"));
//! assert_eq!(opts.queue.as_deref(), Some("workq"));
//! ```
//!
//! This crate reads no environment and no clock: `-v VAR` keeps an "inherit" marker that
//! [`VariableList::resolve`] fills in from a lookup the caller passes, and `-a` keeps the date
//! fields as written ([`ExecutionTime`]).

mod args;
mod error;
mod opt_values;
mod options;
mod processor;
#[cfg(test)]
mod properties;
mod resources;
#[cfg(test)]
mod test_support;
mod time;
mod values;
mod variables;

pub use args::{parse_args, Operand, QsubArgs};
pub use error::{QsubError, QsubErrorKind};
pub use options::{check_job_name, QsubOptions};
pub use resources::ResourceRequest;
pub use time::ExecutionTime;
pub use values::{Checkpoint, Join, Keep, MailPoints, RemoveFiles, Sandbox};
pub use variables::{Variable, VariableList, VariableValue};

/// The options `qsub` takes, as given to getopt.
pub const GETOPT_ARGS: &str = "a:A:c:C:e:fhIj:J:k:l:m:M:N:o:p:q:r:R:S:u:v:VW:XzP:";

/// What `qsub` prints on a usage error (both of its usage strings).
pub const USAGE: &str = concat!(
    "usage: qsub [-a date_time] [-A account_string] [-c interval]\n",
    "\t[-C directive_prefix] [-e path] [-f ] [-h ] [-I [-X]] [-j oe|eo] [-J X-Y[:Z]]\n",
    "\t[-k keep] [-l resource_list] [-m mail_options] [-M user_list]\n",
    "\t[-N jobname] [-o path] [-p priority] [-P project] [-q queue] [-r y|n]\n",
    "\t[-R o|e|oe] [-S path] [-u user_list] [-W otherattributes=value...]\n",
    "\t[-v variable_list] [-V ] [-z] [script | -- command [arg1 ...]]\n",
    "       qsub --version\n",
);

/// The longest job name PBS accepts (`PBS_MAXJOBNAME`).
pub const MAX_JOB_NAME: usize = 230;

/// The job name `qsub` uses for a job read from standard input or given as `-- command`.
pub const STDIN_JOB_NAME: &str = "STDIN";

const BAD_W: &str = "qsub: illegal -W value";
const INTER_ARRAY: &str = "qsub: interactive and array job submission cannot be used together";
const NO_RERUN_ARRAY: &str = "qsub:  cannot submit non-rerunable Array Job";
const MULTIPLE_MAX_RUN: &str = "qsub: multiple max_run_subjobs values found";
const INTER_BLOCK_WARN: &str =
    "qsub (Warning) : setting \"block\" attribute as \"true\" for an interactive job will not return job's exit status";
const INTER_RERUN_WARN: &str = "qsub (Warning): Interactive jobs will be treated as not rerunnable";
/// `PBSE_BADATVAL`: the error code of a resource value the library refuses.
const PBSE_BADATVAL: i32 = 15014;
/// The size of `qsub`'s message buffer (`MAXPATHLEN`), which bounds a directive error line.
const RETMSG_SIZE: usize = 4096;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_text_is_pbs_text() {
        assert!(USAGE.starts_with(
            "usage: qsub [-a date_time] [-A account_string] [-c interval]\n\t[-C directive_prefix]"
        ));
        assert!(USAGE.ends_with("[script | -- command [arg1 ...]]\n       qsub --version\n"));
        assert_eq!(USAGE.lines().count(), 7);
        assert!(USAGE.contains("]]\n       qsub --version\n"));
    }
}

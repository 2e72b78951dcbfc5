//! The client half of `qsub`: read the command line, the script and the submitter's
//! environment into what the server needs, exactly as PBS's `qsub` does before it sends a job.

use std::io::Read;

use hpcbox_cluster::api::SubmitRequest;
use hpcbox_pbs::jobenv::{submitter_variables, Submitter};
use hpcbox_pbs::qsub::{parse_args, Operand, QsubArgs, QsubError, QsubOptions};
use hpcbox_pbs::script::scan;

/// A job ready to send: its options, script and the variables `qsub` records.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The parsed command line.
    pub args: QsubArgs,
    /// Command line and directives merged.
    pub options: QsubOptions,
    /// The script's text (`None` for `qsub -- exe args`).
    pub script: Option<String>,
    /// Where and by whom it is submitted.
    pub submitter: Submitter,
    /// The submitting user's name.
    pub user: String,
    /// `Variable_List`: `PBS_O_*`, then `-v`/`-V` variables.
    pub variables: Vec<(String, String)>,
}

impl Prepared {
    /// The server request that submits this job, for `argv` (qsub's arguments as given); a
    /// `-a` time is resolved against the clock now.
    pub fn request(&self, argv: &[String]) -> SubmitRequest {
        SubmitRequest {
            argv: argv.to_vec(),
            options: self.options.clone(),
            operand: self.args.operand.clone(),
            script: self.script.clone(),
            variables: self.variables.clone(),
            workdir: self.submitter.workdir.clone(),
            submit_host: self.submitter.host.clone(),
            execution_time: self
                .options
                .execution_time
                .as_ref()
                .and_then(|at| at.resolve(&jiff::Zoned::now()))
                .map(|at| at.as_second()),
            interactive: None,
        }
    }
}

/// Why a job could not be prepared: `qsub`'s own error, or the script could not be read.
#[derive(Debug)]
pub enum PrepareError {
    /// An error `qsub` reports in its own words, with its exit status.
    Qsub(QsubError),
    /// The script file could not be read.
    Script {
        /// The path given.
        path: String,
        /// Why it could not be read.
        error: std::io::Error,
    },
}

impl PrepareError {
    /// What `qsub` prints on standard error, newline included.
    pub fn message(&self) -> String {
        match self {
            PrepareError::Qsub(err) => err.to_string(),
            PrepareError::Script { path, error } => {
                format!("qsub: script file:: {}\n", describe_io(error, path))
            }
        }
    }

    /// `qsub`'s exit status for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            PrepareError::Qsub(err) => err.exit_code(),
            PrepareError::Script { .. } => 1,
        }
    }
}

fn describe_io(error: &std::io::Error, path: &str) -> String {
    match error.kind() {
        std::io::ErrorKind::NotFound => "No such file or directory".to_string(),
        _ => format!("{error} ({path})"),
    }
}

impl From<QsubError> for PrepareError {
    fn from(err: QsubError) -> Self {
        PrepareError::Qsub(err)
    }
}

/// Reads `argv` (the arguments after the program name), the script and this process's
/// environment into a job ready to send.
pub fn prepare(argv: &[String]) -> Result<Prepared, PrepareError> {
    let args = parse_args(argv)?;
    // `qsub -I` reads no script from standard input, which is the session's (as PBS).
    let script = match args.operand {
        Operand::None | Operand::Stdin if args.options.interactive => None,
        ref operand => read_script(operand)?,
    };
    let prefix = args.directive_prefix(std::env::var("PBS_DPREFIX").ok().as_deref());
    let options = args.finish(&scan(script.as_deref().unwrap_or(""), &prefix))?;
    let submitter = this_submitter();
    let lookup = |name: &str| std::env::var(name).ok();
    let mut variables = submitter_variables(&submitter, lookup);
    if options.export_all {
        for (name, value) in std::env::vars() {
            if !name.starts_with("PBS_O_") && !variables.iter().any(|(n, _)| *n == name) {
                variables.push((name, value));
            }
        }
    }
    if let Some(list) = &options.variables {
        for (name, value) in list.resolve(lookup)? {
            match variables.iter_mut().find(|(n, _)| *n == name) {
                Some(slot) => slot.1 = value,
                None => variables.push((name, value)),
            }
        }
    }
    Ok(Prepared {
        args,
        options,
        script,
        submitter,
        user: current_user(),
        variables,
    })
}

fn read_script(operand: &Operand) -> Result<Option<String>, PrepareError> {
    match operand {
        Operand::Command { .. } => Ok(None),
        Operand::Script(path) => {
            std::fs::read_to_string(path)
                .map(Some)
                .map_err(|error| PrepareError::Script {
                    path: path.clone(),
                    error,
                })
        }
        Operand::None | Operand::Stdin => {
            use std::io::IsTerminal;
            if std::io::stdin().is_terminal() {
                // PBS's prompt for a script typed at the terminal.
                println!("Job script will be read from standard input. Submit with CTRL+D.");
            }
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|error| PrepareError::Script {
                    path: "-".into(),
                    error,
                })?;
            Ok(Some(text))
        }
    }
}

/// Where this process submits from: `$PWD` when it is the working directory, the host name.
pub fn this_submitter() -> Submitter {
    let cwd = std::env::current_dir().unwrap_or_else(|_| "/".into());
    let workdir = std::env::var("PWD")
        .ok()
        .filter(|pwd| same_file(pwd.as_ref(), &cwd))
        .unwrap_or_else(|| cwd.display().to_string());
    Submitter {
        home: std::env::var("HOME").ok(),
        workdir,
        host: host_name(),
        system: nix::sys::utsname::uname()
            .map(|u| u.sysname().to_string_lossy().into_owned())
            .unwrap_or_else(|_| "Linux".into()),
    }
}

fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// This machine's host name.
pub fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|name| name.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
}

/// The name of the user running this process.
pub fn current_user() -> String {
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|user| user.name)
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| nix::unistd::getuid().to_string())
}

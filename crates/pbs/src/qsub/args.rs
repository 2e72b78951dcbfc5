//! The command line: parsing it, what follows the options, and finishing with the script.

use serde::{Deserialize, Serialize};

use super::processor::{Pass, PassResult, Processor};
use super::{QsubError, QsubOptions, GETOPT_ARGS, STDIN_JOB_NAME};
use crate::getopt::{getopt, Getopt, Opt};
use crate::script::{DirectivePrefix, Scan};

/// What follows the options on the command line.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum Operand {
    /// Nothing: the script is read from standard input.
    #[default]
    None,
    /// `-`: the script is read from standard input.
    Stdin,
    /// A script file.
    Script(String),
    /// `-- program [args…]`: run this instead of a script.
    Command {
        /// The program.
        program: String,
        /// Its arguments.
        args: Vec<String>,
    },
}

impl Operand {
    /// The job name `qsub` gives when there is no `-N`: the script's base name, or `STDIN`.
    pub fn default_job_name(&self) -> String {
        match self {
            Operand::Script(path) => path.rsplit('/').next().unwrap_or(path).to_string(),
            _ => STDIN_JOB_NAME.to_string(),
        }
    }
}

/// A parsed `qsub` command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QsubArgs {
    /// `--version` was the only argument: print `pbs_version = …` and exit 0.
    pub version: bool,
    /// The options on the command line.
    pub options: QsubOptions,
    /// The script or command.
    pub operand: Operand,
    /// Warnings `qsub` printed while reading the options.
    pub warnings: Vec<String>,
    /// The state the directives are read in.
    processor: Processor,
}

impl QsubArgs {
    /// The directive prefix to read the script with: `-C` from the command line, else
    /// `pbs_dprefix` (the caller's `$PBS_DPREFIX`), else `#PBS`.
    pub fn directive_prefix(&self, pbs_dprefix: Option<&str>) -> DirectivePrefix {
        DirectivePrefix::resolve(self.options.directive_prefix.as_deref(), pbs_dprefix)
    }

    /// Acts on the script's directives after the command line, as `qsub` does, then makes the
    /// checks `qsub` makes before sending the job. Gives the options the job is submitted with
    /// or the error `qsub` would print.
    ///
    /// Order of errors, as in PBS: a directive's error (exit 1), the script's own error
    /// (CR LF, unmatched quote), the destination, then the first value the library refuses.
    pub fn finish(&self, scan: &Scan) -> Result<QsubOptions, QsubError> {
        self.finish_with(scan, None).map(|(opts, _)| opts)
    }

    /// [`QsubArgs::finish`] with the server's `default_qsub_arguments` (a string of options,
    /// applied after the destination check, below the command line and the script), also
    /// returning every warning printed, command line first.
    ///
    /// ```
    /// use hpcbox_pbs::qsub::parse_args;
    /// use hpcbox_pbs::script::scan;
    /// let args = parse_args(["-l", "walltime=1:00:00", "job.pbs"]).unwrap();
    /// let s = scan("#PBS -q work\n", &args.directive_prefix(None));
    /// let (opts, _) = args.finish_with(&s, Some("-l walltime=10:00,mem=1gb -r n -q other")).unwrap();
    /// assert_eq!(opts.resource("walltime"), Some("1:00:00"));
    /// assert_eq!(opts.resource("mem"), Some("1gb"));
    /// assert_eq!(opts.queue.as_deref(), Some("work"));
    /// assert_eq!(opts.rerunnable, Some(false));
    /// ```
    pub fn finish_with(
        &self,
        scan: &Scan,
        default_qsub_arguments: Option<&str>,
    ) -> Result<(QsubOptions, Vec<String>), QsubError> {
        let mut p = self.processor.clone();
        p.cli = self.options.clone();
        for d in &scan.directives {
            p.directive(d)?;
        }
        if let Some(e) = &scan.error {
            return Err(e.clone().into());
        }
        let default_name = self.operand.default_job_name();
        p.finish(Some(&default_name), default_qsub_arguments)
    }
}

/// Parses `qsub`'s command line (the arguments after the program name), as `qsub` does before
/// it reads the script.
///
/// Errors here are the ones `qsub` reports before reading the script: usage errors (exit 2,
/// with the usage text) and the immediate ones (`-v` quoting, `-X` without `-I`, `-m j`
/// without `-J`). Values the library refuses later are reported by [`QsubArgs::finish`].
pub fn parse_args<I, S>(args: I) -> Result<QsubArgs, QsubError>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let args: Vec<String> = args.into_iter().map(Into::into).collect();
    if let [only] = args.as_slice() {
        if only.eq_ignore_ascii_case("--version") {
            return Ok(QsubArgs {
                version: true,
                options: QsubOptions::default(),
                operand: Operand::None,
                warnings: Vec::new(),
                processor: Processor::default(),
            });
        }
    }
    let mut g = getopt("qsub", GETOPT_ARGS, &args);
    let mut p = Processor::default();
    let mut out = PassResult::default();
    for opt in std::mem::take(&mut g.opts) {
        match opt {
            Opt::Invalid(line) => out.fail(line),
            Opt::Flag(c, v) => p.apply(c, v, Pass::CommandLine, &mut out)?,
        }
    }
    p.after_pass(Pass::CommandLine, &out)?;
    let operand = operand_of(&g);
    let operand = match operand {
        Some(op) if !out.failed && !g.permuted => op,
        _ => return Err(QsubError::usage(&out.lines)),
    };
    Ok(QsubArgs {
        version: false,
        options: p.opts.clone(),
        operand,
        warnings: p.warnings.clone(),
        processor: p,
    })
}

/// The operand after the options, or `None` for a usage error (`process_opts`' checks on
/// `optind`).
fn operand_of(g: &Getopt) -> Option<Operand> {
    if g.ended_by_ddash {
        let (program, args) = g.operands.split_first()?;
        return Some(Operand::Command {
            program: program.clone(),
            args: args.to_vec(),
        });
    }
    if g.last_value_ddash {
        // A `--` taken as an option's value cannot also mean "a command follows".
        return None;
    }
    match g.operands.as_slice() {
        [] => Some(Operand::None),
        [one] if one == "-" => Some(Operand::Stdin),
        [one] => Some(Operand::Script(one.clone())),
        _ => None,
    }
}

impl QsubArgs {
    /// The command line back as arguments (without the program name): the options of
    /// [`QsubOptions::to_args`] and then the operand.
    pub fn to_args(&self) -> Vec<String> {
        if self.version {
            return vec!["--version".into()];
        }
        let mut args = self.options.to_args();
        match &self.operand {
            Operand::None => {}
            Operand::Stdin => args.push("-".into()),
            Operand::Script(s) => args.push(s.clone()),
            Operand::Command {
                program,
                args: rest,
            } => {
                args.push("--".into());
                args.push(program.clone());
                args.extend(rest.iter().cloned());
            }
        }
        args
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qsub::test_support::{args, err, finish, usage_with};
    use crate::qsub::{Keep, QsubErrorKind, USAGE};
    use crate::script::scan;

    #[test]
    fn attached_grouped_and_separate_values() {
        let a = args(&["-koe", "-lselect=1", "-hz", "-N", "x", "s.sh"]);
        assert_eq!(
            a.options.keep,
            Some(Keep {
                output: true,
                error: true,
                direct: false
            })
        );
        assert_eq!(a.options.resource("select"), Some("1"));
        assert!(a.options.hold && a.options.quiet);
        assert_eq!(a.options.name.as_deref(), Some("x"));
        assert_eq!(a.operand, Operand::Script("s.sh".into()));
        // A flag cluster may end in an option that takes the next argument.
        let a = args(&["-hN", "y"]);
        assert!(a.options.hold);
        assert_eq!(a.options.name.as_deref(), Some("y"));
        assert_eq!(a.operand, Operand::None);
    }

    #[test]
    fn operands() {
        assert_eq!(args(&[]).operand, Operand::None);
        assert_eq!(args(&["-"]).operand, Operand::Stdin);
        assert_eq!(
            args(&["-V", "--", "/bin/sleep", "10"]).operand,
            Operand::Command {
                program: "/bin/sleep".into(),
                args: vec!["10".into()]
            }
        );
        // A value that looks like an option is still the value.
        assert_eq!(args(&["-N", "-z"]).options.name.as_deref(), Some("-z"));
        // `--` given as a value, then `--` ending the options.
        let a = args(&["-N", "--", "--", "cmd"]);
        assert_eq!(a.options.name.as_deref(), Some("--"));
        assert_eq!(
            a.operand,
            Operand::Command {
                program: "cmd".into(),
                args: vec![]
            }
        );
    }

    #[test]
    fn version_only_alone() {
        assert!(args(&["--version"]).version);
        assert!(args(&["--VERSION"]).version);
        // Elsewhere it is a cluster: `-` is no option.
        let e = err(&["-z", "--version"]);
        assert!(e.to_string().starts_with("qsub: invalid option -- '-'\n"));
    }

    #[test]
    fn usage_errors_like_pbs() {
        for bad in [
            &["s.sh", "--", "sleep", "1"][..],
            &["s.sh", "--"],
            &["--"],
            &["a.sh", "b.sh"],
            &["s.sh", "-N", "x"],
            &["-N", "--"],
            &["-N", "--", "s.sh"],
        ] {
            let e = err(bad);
            assert_eq!(e.exit_code(), 2, "{bad:?}");
            assert_eq!(e.kind(), &QsubErrorKind::Usage);
            assert_eq!(e.to_string(), USAGE, "{bad:?}");
        }
        assert_eq!(
            err(&["-x"]).to_string(),
            usage_with(&["qsub: invalid option -- 'x'"])
        );
        assert_eq!(
            err(&["-N"]).to_string(),
            usage_with(&["qsub: option requires an argument -- 'N'"])
        );
        assert_eq!(
            err(&["-x", "-y", "s"]).to_string(),
            usage_with(&["qsub: invalid option -- 'x'", "qsub: invalid option -- 'y'"])
        );
    }

    #[test]
    fn error_order_follows_the_script() {
        // A directive error before a CR LF line wins; a CR LF line before it wins.
        let e = finish(&[], "#PBS -r x\necho\r\n").unwrap_err();
        assert_eq!(e.kind(), &QsubErrorKind::Directive { line: 1 });
        let e = finish(&[], "#!/bin/sh\r\n#PBS -r x\n").unwrap_err();
        assert_eq!(e.to_string(), "qsub: script contains cr, lf\n");
        assert_eq!(e.exit_code(), 1);
        // Library checks come after the whole script and the destination.
        let e = finish(&["-j", "xx"], "#PBS -q a@\n").unwrap_err();
        assert_eq!(e.to_string(), "qsub: illegally formed destination: a@\n");
        assert_eq!(e.exit_code(), 2);
        let e = finish(&["-j", "xx"], "#PBS -r x\n").unwrap_err();
        assert_eq!(e.exit_code(), 1);
        let e = finish(&["-j", "xx"], "").unwrap_err();
        assert_eq!(e.to_string(), usage_with(&["qsub: illegal -j value"]));
    }

    #[test]
    fn directive_prefix_comes_from_the_command_line_only() {
        let a = args(&["-C", "#X"]);
        assert_eq!(a.directive_prefix(Some("#Y")).as_str(), Some("#X"));
        assert_eq!(args(&[]).directive_prefix(Some("#Y")).as_str(), Some("#Y"));
        assert!(args(&["-C", ""]).directive_prefix(None).is_disabled());
        // -C in a directive is accepted but changes nothing.
        let o = finish(&[], "#PBS -C #Z\n#Z -N z\n#PBS -N p\n").unwrap();
        assert_eq!(o.name.as_deref(), Some("p"));
    }

    #[test]
    fn default_job_names() {
        assert_eq!(
            Operand::Script("a/b/run.pbs".into()).default_job_name(),
            "run.pbs"
        );
        assert_eq!(Operand::None.default_job_name(), "STDIN");
        assert_eq!(Operand::Stdin.default_job_name(), "STDIN");
    }

    #[test]
    fn server_defaults_come_last() {
        let a = args(&["-N", "cli", "-l", "ncpus=2"]);
        let s = scan(
            "#PBS -q work\n#PBS -l mem=1gb\n",
            &DirectivePrefix::default(),
        );
        let defaults = "-N dflt -q other -l ncpus=8,mem=4gb,walltime=1:00:00 -h -W umask=077";
        let (o, _) = a.finish_with(&s, Some(defaults)).unwrap();
        assert_eq!(o.name.as_deref(), Some("cli"));
        assert_eq!(o.queue.as_deref(), Some("work"));
        assert_eq!(o.resource("ncpus"), Some("2"));
        assert_eq!(o.resource("mem"), Some("1gb"));
        assert_eq!(o.resource("walltime"), Some("1:00:00"));
        assert!(o.hold);
        assert_eq!(o.attribute("umask"), Some("077"));
        let e = a.finish_with(&s, Some("-r x")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "qsub: illegal -r value\nqsub: directive error: -r x \n"
        );
        assert_eq!(e.exit_code(), 255);
        assert_eq!(e.kind(), &QsubErrorKind::DefaultArguments);
        let e = a.finish_with(&s, Some("-N 'x")).unwrap_err();
        assert_eq!(e.exit_code(), 1);
        // The destination is checked before the defaults are read.
        let e = a.finish_with(
            &scan("#PBS -q a@\n", &DirectivePrefix::default()),
            Some("-r x"),
        );
        assert_eq!(e.unwrap_err().kind(), &QsubErrorKind::Destination);
    }
}

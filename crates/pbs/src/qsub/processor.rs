//! Option processing: acting on the command line, then the directives, then the server's
//! defaults, with PBS's precedence, checks and error order (`process_opts`).

use super::error::{depend_error, directive_error_line, illegal_value};
use super::opt_values::{parse_equal_string, parse_priority};
use super::resources::{is_c_space, resource_error_lines, split_resources};
use super::variables::environment_error;
use super::{
    check_job_name, ExecutionTime, QsubError, QsubErrorKind, QsubOptions, BAD_W, GETOPT_ARGS,
    INTER_ARRAY, INTER_BLOCK_WARN, INTER_RERUN_WARN, MULTIPLE_MAX_RUN, NO_RERUN_ARRAY,
};
use crate::array::ArrayRange;
use crate::depend::DependList;
use crate::getopt::{getopt, Opt};
use crate::script::Directive;

/// Who set an option: PBS lets the command line win over directives, and a later directive
/// win over an earlier one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Pass {
    CommandLine,
    Directive,
}

/// What one pass produced besides the options: messages for the user and whether the pass
/// failed.
#[derive(Default)]
pub(super) struct PassResult {
    pub(super) lines: Vec<String>,
    pub(super) failed: bool,
}

impl PassResult {
    pub(super) fn fail(&mut self, line: impl Into<String>) {
        self.lines.push(line.into());
        self.failed = true;
    }
}

/// The state `qsub` builds while it reads the command line and then the directives.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(super) struct Processor {
    /// What the command line set (those options no directive may change).
    pub(super) cli: QsubOptions,
    /// Everything set so far.
    pub(super) opts: QsubOptions,
    /// `-r` as last set (PBS's `roptarg`).
    rerun_no: bool,
    /// Whether `-r y` was given (PBS's `roptarg_inter`).
    rerun_yes: bool,
    /// Whether a `max_run_subjobs` was set by `-J …%N` or `-W` (PBS's `max_run_opt`).
    max_run_seen: bool,
    /// Values the library will refuse when the job is sent, first first.
    pending: Vec<QsubError>,
    /// Warnings printed along the way.
    pub(super) warnings: Vec<String>,
}

/// Whether the pass `pass` may set an option the command line set when `cli_set` is true.
fn may_set(pass: Pass, cli_set: bool) -> bool {
    pass == Pass::CommandLine || !cli_set
}

impl Processor {
    /// Records a value the library would refuse (reported after the script is read).
    fn defer(&mut self, error: QsubError) {
        self.pending.push(error);
    }

    /// Acts on one option, as `process_opts` does for one `case`.
    pub(super) fn apply(
        &mut self,
        c: char,
        value: Option<String>,
        pass: Pass,
        out: &mut PassResult,
    ) -> Result<(), QsubError> {
        let v = value.unwrap_or_default();
        let cli = self.cli.clone();
        let opts = &mut self.opts;
        match c {
            'a' if may_set(pass, cli.execution_time.is_some()) => match v.parse() {
                Ok(t) => opts.execution_time = Some(t),
                Err(_) => out.fail("qsub: illegal -a value"),
            },
            'A' if may_set(pass, cli.account.is_some()) => opts.account = Some(v),
            'P' if may_set(pass, cli.project.is_some()) => opts.project = Some(v),
            'c' if may_set(pass, cli.checkpoint.is_some()) => {
                if v.trim_start_matches(|c: char| c.is_ascii() && is_c_space(c as u8)) == "u" {
                    out.fail("qsub: illegal -c value");
                } else {
                    match v.parse() {
                        Ok(cp) => opts.checkpoint = Some(cp),
                        Err(_) => self.pending.push(illegal_value('c')),
                    }
                }
            }
            'C' if may_set(pass, cli.directive_prefix.is_some()) => opts.directive_prefix = Some(v),
            'e' if may_set(pass, cli.error_path.is_some()) => {
                if v.is_empty() {
                    self.pending.push(illegal_value('e'));
                }
                opts.error_path = Some(v);
            }
            'o' if may_set(pass, cli.output_path.is_some()) => {
                if v.is_empty() {
                    self.pending.push(illegal_value('o'));
                }
                opts.output_path = Some(v);
            }
            'h' if may_set(pass, cli.hold) => opts.hold = true,
            'f' => opts.foreground = true,
            'I' => self.interactive(pass, out),
            'j' if may_set(pass, cli.join.is_some()) => match v.parse() {
                Ok(j) => opts.join = Some(j),
                Err(_) => self.defer(illegal_value('j')),
            },
            'J' => self.array(&v, pass, out),
            'k' if may_set(pass, cli.keep.is_some()) => match v.parse() {
                Ok(k) => opts.keep = Some(k),
                Err(_) => self.defer(illegal_value('k')),
            },
            'l' => self.resources(&v, pass, out),
            'm' if may_set(pass, cli.mail_points.is_some()) => match v.parse() {
                Ok(m) => opts.mail_points = Some(m),
                Err(_) => self.defer(illegal_value('m')),
            },
            'M' if may_set(pass, cli.mail_users.is_some()) => {
                if v.is_empty() {
                    self.pending.push(illegal_value('M'));
                }
                opts.mail_users = Some(v);
            }
            'N' if may_set(pass, cli.name.is_some()) => opts.name = Some(v),
            'p' if may_set(pass, cli.priority.is_some()) => match parse_priority(&v) {
                Some(p) => opts.priority = Some(p),
                None => self.defer(illegal_value('p')),
            },
            'q' if may_set(pass, cli.queue.is_some()) => opts.queue = Some(v),
            'r' if may_set(pass, cli.rerunnable.is_some()) => self.rerun(&v, out),
            'R' if may_set(pass, cli.remove_files.is_some()) => match v.parse() {
                Ok(r) => opts.remove_files = Some(r),
                Err(_) => self.defer(illegal_value('R')),
            },
            'S' if may_set(pass, cli.shell.is_some()) => {
                if v.is_empty() {
                    self.pending.push(illegal_value('S'));
                }
                opts.shell = Some(v);
            }
            'u' if may_set(pass, cli.user_list.is_some()) => {
                if v.is_empty() {
                    self.pending.push(illegal_value('u'));
                }
                opts.user_list = Some(v);
            }
            'v' if may_set(pass, cli.variables.is_some()) => match v.parse() {
                Ok(list) => opts.variables = Some(list),
                Err(_) => return Err(environment_error(std::mem::take(&mut out.lines))),
            },
            'V' if may_set(pass, cli.export_all) => opts.export_all = true,
            'W' => self.w_option(&v, pass, out),
            'X' if may_set(pass, cli.x11) => opts.x11 = true,
            'z' if may_set(pass, cli.quiet) => opts.quiet = true,
            _ => {}
        }
        Ok(())
    }

    fn interactive(&mut self, pass: Pass, out: &mut PassResult) {
        if self.opts.array.is_some() {
            out.fail(INTER_ARRAY);
            return;
        }
        if !may_set(pass, self.cli.interactive) {
            return;
        }
        self.opts.interactive = true;
        if self.opts.block {
            self.warnings.push(INTER_BLOCK_WARN.into());
            self.opts.block = false;
        }
        if self.rerun_yes {
            self.warnings.push(INTER_RERUN_WARN.into());
        }
    }

    fn array(&mut self, v: &str, pass: Pass, out: &mut PassResult) {
        if self.opts.interactive {
            out.fail(INTER_ARRAY);
            return;
        }
        if self.rerun_no {
            out.fail(NO_RERUN_ARRAY);
            return;
        }
        if !may_set(pass, self.cli.array.is_some()) {
            return;
        }
        let has_max = v.contains('%');
        match v.parse::<ArrayRange>() {
            Ok(range) => {
                if has_max && self.max_run_seen {
                    out.fail(MULTIPLE_MAX_RUN);
                    return;
                }
                self.max_run_seen |= has_max;
                self.opts.array = Some(range);
            }
            Err(_) => self.defer(illegal_value('J')),
        }
    }

    fn rerun(&mut self, v: &str, out: &mut PassResult) {
        match v {
            "y" => {
                self.rerun_yes = true;
                self.rerun_no = false;
                if self.opts.interactive {
                    self.warnings.push(INTER_RERUN_WARN.into());
                }
                self.opts.rerunnable = Some(true);
            }
            "n" if self.opts.array.is_some() => out.fail(NO_RERUN_ARRAY),
            "n" => {
                self.rerun_no = true;
                self.opts.rerunnable = Some(false);
            }
            _ => out.fail("qsub: illegal -r value"),
        }
    }

    fn resources(&mut self, v: &str, pass: Pass, out: &mut PassResult) {
        match split_resources(v) {
            Ok(list) => {
                for r in list {
                    let known = self.opts.resources.iter().any(|x| x.name == r.name);
                    if pass == Pass::CommandLine || !known {
                        self.opts.resources.push(r);
                    }
                }
            }
            Err(e) => {
                out.lines.extend(resource_error_lines(v, &e));
                out.failed = true;
            }
        }
    }

    fn w_option(&mut self, v: &str, pass: Pass, out: &mut PassResult) {
        let v = v.trim_start_matches(|c: char| c.is_ascii() && is_c_space(c as u8));
        if v.is_empty() {
            out.fail(BAD_W);
            return;
        }
        let Some(pairs) = parse_equal_string(v) else {
            out.fail(BAD_W);
            return;
        };
        for (key, value) in pairs {
            if !self.w_pair(&key, &value, pass, out) {
                return;
            }
        }
    }

    /// One `-W name=value`; false when the rest of the `-W` value is skipped after an error.
    fn w_pair(&mut self, key: &str, value: &str, pass: Pass, out: &mut PassResult) -> bool {
        let cli = self.cli.clone();
        let opts = &mut self.opts;
        match key {
            "depend" if may_set(pass, cli.depend.is_some()) => match value.parse::<DependList>() {
                Ok(d) => opts.depend = Some(d),
                Err(e) => self.pending.push(depend_error(&e)),
            },
            "stagein" if may_set(pass, cli.stagein.is_some()) => {
                opts.stagein = Some(value.to_string())
            }
            "stageout" if may_set(pass, cli.stageout.is_some()) => {
                opts.stageout = Some(value.to_string())
            }
            "sandbox" if may_set(pass, cli.sandbox.is_some()) => match value.parse() {
                Ok(s) => opts.sandbox = Some(s),
                Err(_) => self.pending.push(illegal_value('W')),
            },
            "group_list" if may_set(pass, cli.group_list.is_some()) => {
                opts.group_list = Some(value.to_string())
            }
            "interactive" if may_set(pass, cli.interactive) => {
                if opts.array.is_some() {
                    out.fail(INTER_ARRAY);
                    return false;
                }
                if value.eq_ignore_ascii_case("true") {
                    opts.interactive = true;
                } else if !value.eq_ignore_ascii_case("false") {
                    out.fail(BAD_W);
                    return false;
                }
                if self.rerun_yes {
                    self.warnings.push(INTER_RERUN_WARN.into());
                }
                if opts.block && opts.interactive {
                    self.warnings.push(INTER_BLOCK_WARN.into());
                    opts.block = false;
                    return false;
                }
            }
            "block" if may_set(pass, cli.block) => {
                if value.eq_ignore_ascii_case("true") {
                    opts.block = true;
                } else if !value.eq_ignore_ascii_case("false") {
                    out.fail(BAD_W);
                    return false;
                }
                if opts.interactive && opts.block {
                    self.warnings.push(INTER_BLOCK_WARN.into());
                    opts.block = false;
                    return false;
                }
            }
            "reserve_start" | "reserve_end" => {
                if value.parse::<ExecutionTime>().is_err() {
                    out.fail(BAD_W);
                    return false;
                }
                opts.attributes.push((key.to_string(), value.to_string()));
            }
            "max_run_subjobs" => {
                if self.max_run_seen {
                    out.fail(MULTIPLE_MAX_RUN);
                    return false;
                }
                self.max_run_seen = true;
                match value.parse() {
                    Ok(n) => self.opts.max_run_subjobs = Some(n),
                    Err(_) => self.pending.push(illegal_value('W')),
                }
            }
            "depend" | "stagein" | "stageout" | "sandbox" | "group_list" | "interactive"
            | "block" => {}
            _ => opts.attributes.push((key.to_string(), value.to_string())),
        }
        true
    }

    /// The checks `process_opts` makes after the options of one pass.
    pub(super) fn after_pass(&mut self, pass: Pass, out: &PassResult) -> Result<(), QsubError> {
        if pass == Pass::CommandLine && self.opts.x11 && !self.opts.interactive && !out.failed {
            let mut lines = out.lines.clone();
            lines.push("qsub: X11 Forwarding possible only for interactive jobs".into());
            return Err(QsubError::new(
                QsubErrorKind::X11WithoutInteractive,
                &lines,
                false,
                1,
            ));
        }
        let mail_j = self.opts.mail_points.is_some_and(|m| m.subjobs);
        if !out.failed && self.opts.array.is_none() && mail_j {
            let mut lines = out.lines.clone();
            lines.push("qsub: mail option 'j' can not be used without array job".into());
            return Err(QsubError::new(
                QsubErrorKind::MailWithoutArray,
                &lines,
                false,
                1,
            ));
        }
        Ok(())
    }

    /// Acts on one directive (`do_dir` with the script's priority).
    pub(super) fn directive(&mut self, d: &Directive) -> Result<(), QsubError> {
        self.low_priority_pass(&d.args, QsubErrorKind::Directive { line: d.line }, 1)
    }

    /// Acts on the server's `default_qsub_arguments` (`do_dir` with the lowest priority):
    /// they only set what neither the command line nor the script set.
    fn defaults(&mut self, text: &str) -> Result<(), QsubError> {
        let args = crate::script::split_directive(text).map_err(|_| {
            QsubError::new(
                QsubErrorKind::DefaultArguments,
                &["qsub: unmatched \0".to_string()],
                false,
                1,
            )
        })?;
        self.cli = self.opts.clone();
        self.low_priority_pass(&args, QsubErrorKind::DefaultArguments, 255)
    }

    /// One pass below the command line: options first, then PBS's checks that the pass holds
    /// options only. A refused pass prints its messages and the directive error line.
    fn low_priority_pass(
        &mut self,
        args: &[String],
        kind: QsubErrorKind,
        exit_code: i32,
    ) -> Result<(), QsubError> {
        let g = getopt("qsub", GETOPT_ARGS, args);
        let mut out = PassResult::default();
        for opt in g.opts {
            match opt {
                Opt::Invalid(line) => out.fail(line),
                Opt::Flag(c, v) => self.apply(c, v, Pass::Directive, &mut out)?,
            }
        }
        self.after_pass(Pass::Directive, &out)?;
        let stray = g.last_value_ddash || !g.operands.is_empty() || g.ended_by_ddash;
        if out.failed || stray {
            let mut lines = out.lines;
            lines.push(directive_error_line(args));
            return Err(QsubError::new(kind, &lines, false, exit_code));
        }
        Ok(())
    }

    /// The checks made once all options are read: the destination, then the values the
    /// library refuses, the job name first (`default_name` when there is no `-N`).
    pub(super) fn finish(
        mut self,
        default_name: Option<&str>,
        default_qsub_arguments: Option<&str>,
    ) -> Result<(QsubOptions, Vec<String>), QsubError> {
        self.opts.destination()?;
        if let Some(defaults) = default_qsub_arguments {
            self.defaults(defaults)?;
        }
        if let Some(name) = self.opts.name.as_deref().or(default_name) {
            check_job_name(name)?;
        }
        if let Some(first) = self.pending.into_iter().next() {
            return Err(first);
        }
        self.opts.resource_list()?;
        Ok((self.opts, self.warnings))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qsub::parse_args;
    use crate::qsub::test_support::{args, err, finish, usage_with};

    #[test]
    fn option_errors_on_the_command_line_print_usage() {
        let cases: [(&[&str], &str); 6] = [
            (&["-r", "x"], "qsub: illegal -r value"),
            (&["-r", "yes"], "qsub: illegal -r value"),
            (&["-a", "2561"], "qsub: illegal -a value"),
            (&["-c", " u"], "qsub: illegal -c value"),
            (&["-W", ""], "qsub: illegal -W value"),
            (&["-W", "depend"], "qsub: illegal -W value"),
        ];
        for (argv, line) in cases {
            let e = err(argv);
            assert_eq!(e.to_string(), usage_with(&[line]), "{argv:?}");
            assert_eq!(e.exit_code(), 2);
        }
    }

    #[test]
    fn array_conflicts() {
        assert_eq!(
            err(&["-I", "-J", "1-3"]).to_string(),
            usage_with(&[INTER_ARRAY])
        );
        assert_eq!(
            err(&["-J", "1-3", "-I"]).to_string(),
            usage_with(&[INTER_ARRAY])
        );
        assert_eq!(
            err(&["-r", "n", "-J", "1-3"]).to_string(),
            usage_with(&[NO_RERUN_ARRAY])
        );
        assert_eq!(
            err(&["-J", "1-3", "-r", "n"]).to_string(),
            usage_with(&[NO_RERUN_ARRAY])
        );
        assert_eq!(
            err(&["-J", "1-3%2", "-W", "max_run_subjobs=3"]).to_string(),
            usage_with(&[MULTIPLE_MAX_RUN])
        );
        let a = args(&["-J", "1-9:2%3"]);
        assert_eq!(
            a.options.array.map(|r| r.to_string()),
            Some("1-9:2%3".into())
        );
    }

    #[test]
    fn immediate_errors_exit_one_without_usage() {
        let e = err(&["-m", "abj"]);
        assert_eq!(
            e.to_string(),
            "qsub: mail option 'j' can not be used without array job\n"
        );
        assert_eq!(e.exit_code(), 1);
        assert!(parse_args(["-m", "abj", "-J", "1-2"]).is_ok());
        let e = err(&["-X"]);
        assert_eq!(
            e.to_string(),
            "qsub: X11 Forwarding possible only for interactive jobs\n"
        );
        assert_eq!(e.exit_code(), 1);
        assert!(parse_args(["-I", "-X"]).is_ok());
        let e = err(&["-v", "A='x"]);
        assert_eq!(
            e.to_string(),
            "qsub: cannot send environment with the job\n"
        );
        assert_eq!(e.exit_code(), 1);
    }

    #[test]
    fn block_and_interactive() {
        let a = args(&["-W", "block=true", "-I"]);
        assert!(a.options.interactive && !a.options.block);
        assert_eq!(a.warnings, [INTER_BLOCK_WARN]);
        assert!(args(&["-W", "block=TRUE"]).options.block);
        assert!(!args(&["-W", "block=false"]).options.block);
        assert!(args(&["-W", "interactive=true"]).options.interactive);
        assert_eq!(err(&["-W", "block=yes"]).to_string(), usage_with(&[BAD_W]));
    }

    #[test]
    fn command_line_wins_over_directives() {
        let script = "#PBS -N fromscript\n#PBS -q q1\n#PBS -l walltime=2:00:00,ncpus=2\n#PBS -v A=1\n#PBS -p 5\nrun\n";
        let o = finish(
            &["-N", "cli", "-l", "walltime=1:00:00", "-v", "B=2", "s"],
            script,
        )
        .unwrap();
        assert_eq!(o.name.as_deref(), Some("cli"));
        assert_eq!(o.queue.as_deref(), Some("q1"));
        assert_eq!(o.resource("walltime"), Some("1:00:00"));
        assert_eq!(o.resource("ncpus"), Some("2"));
        assert_eq!(o.variables.unwrap().to_string(), "B=2");
        assert_eq!(o.priority, Some(5));
    }

    #[test]
    fn later_directives_win_except_resources() {
        let script = "#PBS -N a\n#PBS -N b\n#PBS -l ncpus=1\n#PBS -l ncpus=2\n";
        let o = finish(&[], script).unwrap();
        assert_eq!(o.name.as_deref(), Some("b"));
        // set_resources does not add a name already on the list when reading directives.
        assert_eq!(o.resource("ncpus"), Some("1"));
        // On the command line every -l is sent, and the last one counts.
        let o = finish(&["-l", "ncpus=1", "-l", "ncpus=3"], "").unwrap();
        assert_eq!(o.resource("ncpus"), Some("3"));
    }

    #[test]
    fn generic_w_attributes_are_all_sent() {
        let o = finish(&["-W", "umask=022"], "#PBS -W umask=077\n").unwrap();
        assert_eq!(
            o.attributes,
            [
                ("umask".into(), "022".into()),
                ("umask".into(), "077".into())
            ]
        );
        assert_eq!(o.attribute("umask"), Some("077"));
    }

    #[test]
    fn directive_errors() {
        let e = finish(&[], "#!/bin/sh\n#PBS -l walltime=1:00:00,\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "qsub: illegal -l value\nqsub: directive error: -l walltime=1:00:00, \n"
        );
        assert_eq!(e.exit_code(), 1);
        assert_eq!(e.kind(), &QsubErrorKind::Directive { line: 2 });
        let e = finish(&[], "#PBS -N a extra\n").unwrap_err();
        assert_eq!(e.to_string(), "qsub: directive error: -N a extra \n");
        let e = finish(&[], "#PBS -Y\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "qsub: invalid option -- 'Y'\nqsub: directive error: -Y \n"
        );
        let e = finish(&[], "#PBS -- cmd\n").unwrap_err();
        assert_eq!(e.to_string(), "qsub: directive error: -- cmd \n");
    }
}

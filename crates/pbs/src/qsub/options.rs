//! The options as a whole: what the server ends up with, merging directives with the
//! command line, and the options back as arguments.

use serde::{Deserialize, Serialize};

use super::error::illegal_value;
use super::processor::Processor;
use super::resources::render_resource;
use super::{
    Checkpoint, ExecutionTime, Join, Keep, MailPoints, QsubError, QsubErrorKind, RemoveFiles,
    ResourceRequest, Sandbox, VariableList, MAX_JOB_NAME, PBSE_BADATVAL,
};
use crate::array::ArrayRange;
use crate::depend::DependList;
use crate::destination::Destination;
use crate::resource::{ResourceDefs, ResourceList, ResourceValue};
use crate::script::Directive;

/// Every option `qsub` takes, as set by the command line and directives.
///
/// A field is `None`/`false`/empty when the option was not given; defaults (no hold, `-j n`,
/// `-k n`, `-m a`, priority 0, rerunnable) are the server's business and are not filled in.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct QsubOptions {
    /// `-a`: do not run before this time (`Execution_Time`).
    pub execution_time: Option<ExecutionTime>,
    /// `-A`: the account string (`Account_Name`).
    pub account: Option<String>,
    /// `-c`: checkpointing (`Checkpoint`).
    pub checkpoint: Option<Checkpoint>,
    /// `-C`: the directive prefix (only the command line's changes how the script is read).
    pub directive_prefix: Option<String>,
    /// `-e`: the error path (`Error_Path`).
    pub error_path: Option<String>,
    /// `-f`: stay in the foreground.
    pub foreground: bool,
    /// `-h`: submit with a user hold (`Hold_Types=u`).
    pub hold: bool,
    /// `-I` or `-W interactive=true`: an interactive job.
    pub interactive: bool,
    /// `-j`: join output and error (`Join_Path`).
    pub join: Option<Join>,
    /// `-J`: an array job with these indices (and `%max`, `max_run_subjobs`).
    pub array: Option<ArrayRange>,
    /// `-k`: keep files on the execution host (`Keep_Files`).
    pub keep: Option<Keep>,
    /// `-l`: the resources, in the order `qsub` sends them (see [`QsubOptions::resource`]).
    pub resources: Vec<ResourceRequest>,
    /// `-m`: mail points (`Mail_Points`).
    pub mail_points: Option<MailPoints>,
    /// `-M`: mail recipients (`Mail_Users`).
    pub mail_users: Option<String>,
    /// `-N`: the job name (`Job_Name`).
    pub name: Option<String>,
    /// `-o`: the output path (`Output_Path`).
    pub output_path: Option<String>,
    /// `-p`: priority, −1024 to 1023 (`Priority`).
    pub priority: Option<i32>,
    /// `-P`: the project (`project`).
    pub project: Option<String>,
    /// `-q`: the destination as written, `queue`, `@server` or `queue@server` (see
    /// [`QsubOptions::destination`]).
    pub queue: Option<String>,
    /// `-r`: whether the job can be rerun (`Rerunable`).
    pub rerunnable: Option<bool>,
    /// `-R`: output files to remove (`Remove_Files`).
    pub remove_files: Option<RemoveFiles>,
    /// `-S`: the shell path list (`Shell_Path_List`).
    pub shell: Option<String>,
    /// `-u`: the user list (`User_List`).
    pub user_list: Option<String>,
    /// `-v`: variables to export (`Variable_List`). A later `-v` replaces an earlier one
    /// whole; lists are not combined.
    pub variables: Option<VariableList>,
    /// `-V`: export all of `qsub`'s environment.
    pub export_all: bool,
    /// `-W depend=`.
    pub depend: Option<DependList>,
    /// `-W stagein=`.
    pub stagein: Option<String>,
    /// `-W stageout=`.
    pub stageout: Option<String>,
    /// `-W sandbox=`.
    pub sandbox: Option<Sandbox>,
    /// `-W group_list=`.
    pub group_list: Option<String>,
    /// `-W block=true`: wait for the job to end and exit with its status.
    pub block: bool,
    /// `-W max_run_subjobs=`.
    pub max_run_subjobs: Option<u32>,
    /// Every other `-W name=value` (`umask`, `run_count`, `cred`, …) in the order sent; the
    /// server keeps the last of each name.
    pub attributes: Vec<(String, String)>,
    /// `-X`: X11 forwarding (interactive jobs only). `qsub` also needs `DISPLAY` set; the
    /// caller checks that (`qsub: DISPLAY not set`, a usage error).
    pub x11: bool,
    /// `-z`: do not print the job id.
    pub quiet: bool,
}

impl QsubOptions {
    /// The value the server ends up with for resource `name` (the last one sent).
    pub fn resource(&self, name: &str) -> Option<&str> {
        self.resources
            .iter()
            .rev()
            .find(|r| r.name == name)
            .map(|r| r.value.as_str())
    }

    /// The resources with repeated names collapsed to the value the server keeps, in the order
    /// of first appearance.
    pub fn effective_resources(&self) -> Vec<ResourceRequest> {
        let mut out: Vec<ResourceRequest> = Vec::new();
        for r in &self.resources {
            match out.iter_mut().find(|o| o.name == r.name) {
                Some(o) => o.value = r.value.clone(),
                None => out.push(r.clone()),
            }
        }
        out
    }

    /// The resources decoded by kind with the built-in resource table, as the library checks
    /// them before sending the job. A value it refuses gives
    /// `qsub: Illegal attribute or resource value Resource_List.<name>`, exit 166
    /// (`PBSE_BADATVAL` & 255).
    pub fn resource_list(&self) -> Result<ResourceList, QsubError> {
        self.resource_list_with(&ResourceDefs::builtin())
    }

    /// [`QsubOptions::resource_list`] with the site's resource table.
    pub fn resource_list_with(&self, defs: &ResourceDefs) -> Result<ResourceList, QsubError> {
        let mut list = ResourceList::new();
        for r in self.effective_resources() {
            let name = defs.canonical_name(&r.name);
            match ResourceValue::parse(&name, defs.kind_of(&r.name), &r.value, defs) {
                Ok(value) => list.set(name, value),
                Err(_) => {
                    return Err(QsubError::new(
                        QsubErrorKind::ResourceValue {
                            resource: r.name.clone(),
                        },
                        &[format!(
                            "qsub: Illegal attribute or resource value Resource_List.{}",
                            r.name
                        )],
                        false,
                        PBSE_BADATVAL & 0xff,
                    ))
                }
            }
        }
        Ok(list)
    }

    /// The `-W` attribute `name` as the server keeps it (the last one sent).
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The `-q` destination, parsed; an absent `-q` is the default queue of the default server.
    pub fn destination(&self) -> Result<Destination, QsubError> {
        match &self.queue {
            None => Ok(Destination::default()),
            Some(q) => q.parse().map_err(|_| {
                QsubError::new(
                    QsubErrorKind::Destination,
                    &[format!("qsub: illegally formed destination: {q}")],
                    false,
                    2,
                )
            }),
        }
    }

    /// Options set only by directives, as `qsub` would read them with no command-line options.
    pub fn from_directives(directives: &[Directive]) -> Result<QsubOptions, QsubError> {
        let mut state = Processor::default();
        for d in directives {
            state.directive(d)?;
        }
        state.finish(None, None).map(|(opts, _)| opts)
    }

    /// Combines options from directives with options from the command line, with PBS's
    /// precedence: an option set on the command line wins over the directives; `-l` resources
    /// merge by name (command line first, then directive resources whose name the command line
    /// does not set); `-v` is taken whole from one side; other `-W` attributes are all sent,
    /// command line first.
    ///
    /// [`QsubArgs::finish`](super::QsubArgs::finish) does this while reading the script, with
    /// PBS's error order; this is the same merge for options held apart.
    pub fn merge(directives: &QsubOptions, command_line: &QsubOptions) -> QsubOptions {
        fn pick<T: Clone>(cli: &Option<T>, dir: &Option<T>) -> Option<T> {
            cli.clone().or_else(|| dir.clone())
        }
        let c = command_line;
        let d = directives;
        let mut resources = c.resources.clone();
        for r in &d.resources {
            if !resources.iter().any(|x| x.name == r.name) {
                resources.push(r.clone());
            }
        }
        let mut attributes = c.attributes.clone();
        attributes.extend(d.attributes.iter().cloned());
        QsubOptions {
            execution_time: pick(&c.execution_time, &d.execution_time),
            account: pick(&c.account, &d.account),
            checkpoint: pick(&c.checkpoint, &d.checkpoint),
            directive_prefix: pick(&c.directive_prefix, &d.directive_prefix),
            error_path: pick(&c.error_path, &d.error_path),
            foreground: c.foreground || d.foreground,
            hold: c.hold || d.hold,
            interactive: c.interactive || d.interactive,
            join: pick(&c.join, &d.join),
            array: pick(&c.array, &d.array),
            keep: pick(&c.keep, &d.keep),
            resources,
            mail_points: pick(&c.mail_points, &d.mail_points),
            mail_users: pick(&c.mail_users, &d.mail_users),
            name: pick(&c.name, &d.name),
            output_path: pick(&c.output_path, &d.output_path),
            priority: pick(&c.priority, &d.priority),
            project: pick(&c.project, &d.project),
            queue: pick(&c.queue, &d.queue),
            rerunnable: pick(&c.rerunnable, &d.rerunnable),
            remove_files: pick(&c.remove_files, &d.remove_files),
            shell: pick(&c.shell, &d.shell),
            user_list: pick(&c.user_list, &d.user_list),
            variables: pick(&c.variables, &d.variables),
            export_all: c.export_all || d.export_all,
            depend: pick(&c.depend, &d.depend),
            stagein: pick(&c.stagein, &d.stagein),
            stageout: pick(&c.stageout, &d.stageout),
            sandbox: pick(&c.sandbox, &d.sandbox),
            group_list: pick(&c.group_list, &d.group_list),
            block: (c.block || d.block) && !(c.interactive || d.interactive),
            max_run_subjobs: pick(&c.max_run_subjobs, &d.max_run_subjobs),
            attributes,
            x11: c.x11 || d.x11,
            quiet: c.quiet || d.quiet,
        }
    }

    /// The options as a `qsub` argument list (without the program name), one option per
    /// argument pair in getopt order; parsing it gives these options back. This is also how
    /// `Submit_arguments` is shown.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        let mut push = |opt: &str, value: Option<String>| {
            args.push(opt.to_string());
            if let Some(v) = value {
                args.push(v);
            }
        };
        if let Some(t) = self.execution_time {
            push("-a", Some(t.to_string()));
        }
        if let Some(v) = Option::clone(&self.account) {
            push("-A", Some(v));
        }
        if let Some(c) = self.checkpoint {
            push("-c", Some(c.to_string()));
        }
        if let Some(v) = Option::clone(&self.directive_prefix) {
            push("-C", Some(v));
        }
        if let Some(v) = Option::clone(&self.error_path) {
            push("-e", Some(v));
        }
        if self.foreground {
            push("-f", None);
        }
        if self.hold {
            push("-h", None);
        }
        if self.interactive {
            push("-I", None);
        }
        if let Some(j) = self.join {
            push("-j", Some(j.to_string()));
        }
        if let Some(a) = self.array {
            push("-J", Some(a.to_string()));
        }
        if let Some(k) = self.keep {
            push("-k", Some(k.to_string()));
        }
        for r in &self.resources {
            push("-l", Some(render_resource(r)));
        }
        if let Some(m) = self.mail_points {
            push("-m", Some(m.to_string()));
        }
        if let Some(v) = Option::clone(&self.mail_users) {
            push("-M", Some(v));
        }
        if let Some(v) = Option::clone(&self.name) {
            push("-N", Some(v));
        }
        if let Some(v) = Option::clone(&self.output_path) {
            push("-o", Some(v));
        }
        if let Some(p) = self.priority {
            push("-p", Some(p.to_string()));
        }
        if let Some(v) = Option::clone(&self.project) {
            push("-P", Some(v));
        }
        if let Some(v) = Option::clone(&self.queue) {
            push("-q", Some(v));
        }
        if let Some(r) = self.rerunnable {
            push("-r", Some(if r { "y" } else { "n" }.to_string()));
        }
        if let Some(r) = self.remove_files {
            push("-R", Some(r.to_string()));
        }
        if let Some(v) = Option::clone(&self.shell) {
            push("-S", Some(v));
        }
        if let Some(v) = Option::clone(&self.user_list) {
            push("-u", Some(v));
        }
        if let Some(v) = &self.variables {
            push("-v", Some(v.to_string()));
        }
        if self.export_all {
            push("-V", None);
        }
        let w: [(&str, Option<String>); 7] = [
            ("depend", self.depend.as_ref().map(ToString::to_string)),
            ("stagein", self.stagein.clone()),
            ("stageout", self.stageout.clone()),
            ("sandbox", self.sandbox.map(|s| s.to_string())),
            ("group_list", self.group_list.clone()),
            ("block", self.block.then(|| "true".to_string())),
            (
                "max_run_subjobs",
                self.max_run_subjobs.map(|n| n.to_string()),
            ),
        ];
        for (key, value) in w {
            if let Some(v) = value {
                push("-W", Some(format!("{key}={v}")));
            }
        }
        for (key, value) in &self.attributes {
            push("-W", Some(format!("{key}={value}")));
        }
        if self.x11 {
            push("-X", None);
        }
        if self.quiet {
            push("-z", None);
        }
        args
    }
}

/// Checks a job name as the library does for a submission (`verify_value_jobname`,
/// `check_job_name`): not empty, at most [`MAX_JOB_NAME`] characters, only letters, digits and
/// `-_+.` (a digit may come first: that is only refused for `qalter`-style requests).
pub fn check_job_name(name: &str) -> Result<(), QsubError> {
    if name.len() > MAX_JOB_NAME {
        return Err(QsubError::new(
            QsubErrorKind::JobNameTooLong,
            &["qsub: Job name is too long ".to_string()],
            false,
            2,
        ));
    }
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '+' | '.');
    if name.is_empty() || !name.chars().all(ok) {
        return Err(illegal_value('N'));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qsub::test_support::{args, finish, usage_with};
    use crate::script::{scan, DirectivePrefix, Scan};

    #[test]
    fn library_checks() {
        for (cli, letter) in [
            (&["-k", "on"][..], 'k'),
            (&["-k", "d"], 'k'),
            (&["-m", "x"], 'm'),
            (&["-m", "j"], 'm'),
            (&["-p", "1024"], 'p'),
            (&["-p", "-1025"], 'p'),
            (&["-R", "x"], 'R'),
            (&["-c", "c=x"], 'c'),
            (&["-N", "a b"], 'N'),
            (&["-N", ""], 'N'),
            (&["-J", "5-1"], 'J'),
            (&["-W", "sandbox=box"], 'W'),
            (&["-W", "depend=afterok:1[2]"], 'W'),
        ] {
            let e = finish(cli, "").unwrap_err();
            assert_eq!(
                e.kind(),
                &QsubErrorKind::IllegalValue { option: letter },
                "{cli:?}"
            );
            let text = e.to_string();
            assert!(text.ends_with(&usage_with(&[&format!("qsub: illegal -{letter} value")])));
            assert_eq!(e.exit_code(), 2);
        }
        let e = finish(&["-W", "depend=afterok:1[2]"], "").unwrap_err();
        assert!(e
            .to_string()
            .starts_with("cannot have dependancy on subjob or range\nqsub: illegal -W value\n"));
        let e = finish(&["-N", &"a".repeat(231)], "").unwrap_err();
        assert_eq!(e.to_string(), "qsub: Job name is too long \n");
        assert!(finish(&["-N", &"a".repeat(230)], "").is_ok());
        // A digit may start a name given to qsub; so may the script's base name.
        assert!(finish(&["-N", "1job"], "").is_ok());
        let a = args(&["dir/my job.sh"]);
        let e = a.finish(&Scan::default()).unwrap_err();
        assert_eq!(e.kind(), &QsubErrorKind::IllegalValue { option: 'N' });
        // A later valid name replaces an invalid one, as PBS replaces Job_Name in place.
        assert!(finish(&[], "#PBS -N 'a b'\n#PBS -N ab\n").is_ok());
    }

    #[test]
    fn resource_values_are_checked_by_kind() {
        let e = finish(&["-l", "ncpus=abc"], "").unwrap_err();
        assert_eq!(
            e.to_string(),
            "qsub: Illegal attribute or resource value Resource_List.ncpus\n"
        );
        assert_eq!(e.exit_code(), 166);
        assert!(finish(&["-l", "walltime=00:10:00,mem=1GB"], "").is_ok());
    }

    #[test]
    fn merge_matches_reading_in_order() {
        let script = "#PBS -N d\n#PBS -l mem=1gb,ncpus=2\n#PBS -W umask=077\n#PBS -h\n";
        let cli = args(&["-N", "c", "-l", "ncpus=4", "-W", "umask=022"]);
        let sequential = cli
            .finish(&scan(script, &DirectivePrefix::default()))
            .unwrap();
        let dirs =
            QsubOptions::from_directives(&scan(script, &DirectivePrefix::default()).directives)
                .unwrap();
        assert_eq!(QsubOptions::merge(&dirs, &cli.options), sequential);
    }
}

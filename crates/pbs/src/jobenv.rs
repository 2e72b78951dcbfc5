//! The job's world: the variables `qsub` records, the environment the node agent gives the job
//! script, the `PBS_NODEFILE` contents, and where the job's output goes.
//!
//! Pure: the caller reads the real environment, host names and clock, and passes them in.
//! From OpenPBS: cmds/qsub.c (the `PBS_O_*` variables), resmom/start_exec.c (the job
//! environment and `TMPDIR`), server/svr_jobfunc.c (default output paths).

use crate::jobid::{ArrayPart, JobId};

/// Variables `qsub` copies from the submitter's environment as `PBS_O_<name>`, when set.
const COPIED_FROM_SUBMITTER: [&str; 6] = ["LANG", "LOGNAME", "PATH", "MAIL", "SHELL", "TZ"];

/// What `qsub` knows of where it runs, to record in the job's `Variable_List`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitter {
    /// `HOME`, if set.
    pub home: Option<String>,
    /// The working directory (`$PWD` when it is the same directory as `.`, else `getcwd()`).
    pub workdir: String,
    /// The submit host's fully qualified name.
    pub host: String,
    /// The operating system's name (`uname -s`), for `PBS_O_SYSTEM`.
    pub system: String,
}

/// The `PBS_O_*` variables `qsub` records, in the order it records them.
///
/// `lookup` reads the submitter's environment.
///
/// ```
/// use hpcbox_pbs::jobenv::{submitter_variables, Submitter};
/// let me = Submitter { home: None, workdir: "/scratch/me".into(),
///                      host: "login1.example.com".into(), system: "Linux".into() };
/// let vars = submitter_variables(&me, |name| (name == "PATH").then(|| "/bin".to_string()));
/// assert_eq!(vars[0], ("PBS_O_HOME".to_string(), "/".to_string()));
/// assert!(vars.contains(&("PBS_O_PATH".into(), "/bin".into())));
/// assert!(vars.contains(&("PBS_O_WORKDIR".into(), "/scratch/me".into())));
/// ```
pub fn submitter_variables(
    submitter: &Submitter,
    lookup: impl Fn(&str) -> Option<String>,
) -> Vec<(String, String)> {
    let mut vars = vec![(
        "PBS_O_HOME".to_string(),
        submitter.home.clone().unwrap_or_else(|| "/".to_string()),
    )];
    for name in COPIED_FROM_SUBMITTER {
        if let Some(value) = lookup(name) {
            vars.push((format!("PBS_O_{name}"), value));
        }
    }
    vars.push(("PBS_O_WORKDIR".to_string(), submitter.workdir.clone()));
    vars.push(("PBS_O_SYSTEM".to_string(), submitter.system.clone()));
    vars.push(("PBS_O_HOST".to_string(), submitter.host.clone()));
    vars
}

/// Everything the node agent needs to build a job's environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobContext {
    /// The agent's own base environment (PBS's `pbs_environment` file), applied first.
    pub base: Vec<(String, String)>,
    /// The job's `Variable_List`: `PBS_O_*` and the `-v`/`-V` variables.
    pub variable_list: Vec<(String, String)>,
    /// The job's id.
    pub job_id: JobId,
    /// `Job_Name`.
    pub job_name: String,
    /// The queue the job ran from.
    pub queue: String,
    /// The owner's login name.
    pub user: String,
    /// The owner's home directory.
    pub home: String,
    /// The shell the script runs under.
    pub shell: String,
    /// A secret unique to the job.
    pub cookie: String,
    /// The agent's port.
    pub mom_port: u16,
    /// Path of the job's node file.
    pub nodefile: String,
    /// Threads of the first chunk (`ompthreads`, else its `ncpus`).
    pub threads: u32,
    /// `Account_Name`, if set.
    pub account: Option<String>,
    /// The job's private temporary directory.
    pub tmpdir: String,
    /// Whether the job is interactive (`qsub -I`).
    pub interactive: bool,
}

/// The directory PBS makes for a job under the agent's temporary directory:
/// `<tmpdir>/pbs.<full job id>`.
pub fn job_tmpdir(tmp_root: &str, job_id: &JobId) -> String {
    format!("{}/pbs.{job_id}", tmp_root.trim_end_matches('/'))
}

/// The job script's environment, as the node agent sets it: the base, then `Variable_List`,
/// then PBS's own variables, each later setting replacing an earlier one of the same name.
pub fn job_environment(job: &JobContext) -> Vec<(String, String)> {
    let threads = job.threads.to_string();
    let mut own: Vec<(&str, String)> = vec![
        ("HOME", job.home.clone()),
        ("LOGNAME", job.user.clone()),
        ("PBS_JOBNAME", job.job_name.clone()),
        ("PBS_JOBID", job.job_id.to_string()),
        ("PBS_QUEUE", job.queue.clone()),
        ("SHELL", job.shell.clone()),
        ("USER", job.user.clone()),
        ("PBS_JOBCOOKIE", job.cookie.clone()),
        ("PBS_NODENUM", "0".to_string()),
        ("PBS_TASKNUM", "1".to_string()),
        ("PBS_MOMPORT", job.mom_port.to_string()),
        ("OMP_NUM_THREADS", threads.clone()),
        ("NCPUS", threads),
        ("PBS_NODEFILE", job.nodefile.clone()),
    ];
    if let Some(account) = &job.account {
        own.push(("PBS_ACCOUNT", account.clone()));
    }
    if let ArrayPart::Index(index) = job.job_id.array {
        own.push(("PBS_ARRAY_INDEX", index.to_string()));
        own.push(("PBS_ARRAY_ID", job.job_id.parent().to_string()));
    }
    own.push(("TMPDIR", job.tmpdir.clone()));
    own.push(("PBS_JOBDIR", job.home.clone()));
    if job.interactive {
        own.push(("PBS_ENVIRONMENT", "PBS_INTERACTIVE".to_string()));
    } else {
        own.push(("PBS_ENVIRONMENT", "PBS_BATCH".to_string()));
        own.push(("ENVIRONMENT", "BATCH".to_string()));
    }
    let own = own
        .into_iter()
        .map(|(name, value)| (name.to_string(), value));
    let mut env: Vec<(String, String)> = Vec::new();
    for (name, value) in job
        .base
        .iter()
        .chain(&job.variable_list)
        .cloned()
        .chain(own)
    {
        match env.iter_mut().find(|(existing, _)| *existing == name) {
            Some(slot) => slot.1 = value,
            None => env.push((name, value)),
        }
    }
    env
}

/// The contents of `PBS_NODEFILE`: one short host name (up to the first `.`) per MPI rank,
/// given each chunk's host and its `mpiprocs`.
///
/// ```
/// use hpcbox_pbs::jobenv::nodefile;
/// assert_eq!(nodefile(&[("node1.example.com", 2), ("node2", 1), ("node3", 0)]),
///            "node1\nnode1\nnode2\n");
/// ```
pub fn nodefile(chunks: &[(&str, u32)]) -> String {
    let mut text = String::new();
    for (host, mpiprocs) in chunks {
        let short = host.split('.').next().unwrap_or(host);
        for _ in 0..*mpiprocs {
            text.push_str(short);
            text.push('\n');
        }
    }
    text
}

/// Which of the job's two output streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output: `.o<seq>`, or `.OU` in a directory.
    Output,
    /// Standard error: `.e<seq>`, or `.ER` in a directory.
    Error,
}

/// The default `Output_Path` / `Error_Path`: `<host>:<workdir>/<name>.o<seq>`, with
/// `.<index>` after it for a subjob.
///
/// ```
/// use hpcbox_pbs::jobenv::{default_output_path, Stream};
/// let id = "1234[7].pbs01".parse().unwrap();
/// assert_eq!(default_output_path("login1", "/home/me", "run_pi", &id, Stream::Error),
///            "login1:/home/me/run_pi.e1234.7");
/// ```
pub fn default_output_path(
    host: &str,
    workdir: &str,
    job_name: &str,
    job_id: &JobId,
    stream: Stream,
) -> String {
    let letter = match stream {
        Stream::Output => 'o',
        Stream::Error => 'e',
    };
    let mut path = format!(
        "{host}:{}/{job_name}.{letter}{}",
        workdir.trim_end_matches('/'),
        job_id.seq
    );
    if let ArrayPart::Index(index) = job_id.array {
        path.push_str(&format!(".{index}"));
    }
    path
}

/// The file a stream goes to when its path (`-o dir/`) names a directory:
/// `<dir>/<full id>.OU` or `.ER`.
pub fn output_file_in_directory(dir: &str, job_id: &JobId, stream: Stream) -> String {
    let suffix = match stream {
        Stream::Output => "OU",
        Stream::Error => "ER",
    };
    format!("{}/{job_id}.{suffix}", dir.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context() -> JobContext {
        JobContext {
            base: vec![
                ("PATH".into(), "/bin:/usr/bin".into()),
                ("LANG".into(), "C".into()),
            ],
            variable_list: vec![
                ("PBS_O_WORKDIR".into(), "/home/me/pi".into()),
                ("HOME".into(), "/elsewhere".into()),
                ("LANG".into(), "en_AU.UTF-8".into()),
            ],
            job_id: "42[3].hpcbox".parse().unwrap(),
            job_name: "run_pi".into(),
            queue: "workq".into(),
            user: "me".into(),
            home: "/home/me".into(),
            shell: "/bin/bash".into(),
            cookie: "c0ffee".into(),
            mom_port: 15002,
            nodefile: "/state/aux/42[3].hpcbox".into(),
            threads: 4,
            account: None,
            tmpdir: "/var/tmp/pbs.42[3].hpcbox".into(),
            interactive: false,
        }
    }

    fn get<'a>(env: &'a [(String, String)], name: &str) -> Option<&'a str> {
        env.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    #[test]
    fn job_variables_override_the_job_list_which_overrides_the_base() {
        let env = job_environment(&context());
        assert_eq!(get(&env, "HOME"), Some("/home/me"));
        assert_eq!(get(&env, "LANG"), Some("en_AU.UTF-8"));
        assert_eq!(get(&env, "PATH"), Some("/bin:/usr/bin"));
        assert_eq!(get(&env, "PBS_O_WORKDIR"), Some("/home/me/pi"));
        assert_eq!(get(&env, "NCPUS"), Some("4"));
        assert_eq!(get(&env, "OMP_NUM_THREADS"), Some("4"));
        assert_eq!(get(&env, "PBS_ARRAY_INDEX"), Some("3"));
        assert_eq!(get(&env, "PBS_ARRAY_ID"), Some("42[].hpcbox"));
        assert_eq!(get(&env, "PBS_ENVIRONMENT"), Some("PBS_BATCH"));
        assert_eq!(get(&env, "ENVIRONMENT"), Some("BATCH"));
        assert_eq!(get(&env, "PBS_ACCOUNT"), None);
        let names: Vec<&str> = env.iter().map(|(n, _)| n.as_str()).collect();
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "each variable once: {names:?}");
    }

    #[test]
    fn interactive_jobs_get_only_pbs_environment() {
        let env = job_environment(&JobContext {
            interactive: true,
            account: Some("Training".into()),
            job_id: "7.s".parse().unwrap(),
            ..context()
        });
        assert_eq!(get(&env, "PBS_ENVIRONMENT"), Some("PBS_INTERACTIVE"));
        assert_eq!(get(&env, "ENVIRONMENT"), None);
        assert_eq!(get(&env, "PBS_ACCOUNT"), Some("Training"));
        assert_eq!(get(&env, "PBS_ARRAY_INDEX"), None);
    }

    #[test]
    fn submitter_variables_only_copy_what_is_set() {
        let me = Submitter {
            home: Some("/home/me".into()),
            workdir: "/home/me/pi".into(),
            host: "laptop.local".into(),
            system: "Linux".into(),
        };
        let vars = submitter_variables(&me, |name| match name {
            "LOGNAME" => Some("me".into()),
            "SHELL" => Some("/bin/zsh".into()),
            _ => None,
        });
        let names: Vec<&str> = vars.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "PBS_O_HOME",
                "PBS_O_LOGNAME",
                "PBS_O_SHELL",
                "PBS_O_WORKDIR",
                "PBS_O_SYSTEM",
                "PBS_O_HOST"
            ]
        );
    }

    #[test]
    fn output_paths() {
        let id: JobId = "1234.pbs01".parse().unwrap();
        assert_eq!(
            default_output_path("h", "/w/", "testmpi", &id, Stream::Output),
            "h:/w/testmpi.o1234"
        );
        assert_eq!(
            output_file_in_directory("/out/", &id, Stream::Error),
            "/out/1234.pbs01.ER"
        );
        assert_eq!(job_tmpdir("/var/tmp/", &id), "/var/tmp/pbs.1234.pbs01");
    }
}

//! Everything before a job's first process: the owner's account, the job's files on the node
//! (script, `PBS_NODEFILE`, `TMPDIR`), its environment and where its output goes.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use hpcbox_pbs::exit::{JOB_EXEC_FAIL1, JOB_EXEC_FAILUID, JOB_EXEC_RETRY};
use hpcbox_pbs::jobenv::{self, JobContext, Stream};
use hpcbox_pbs::jobid::JobId;
use nix::unistd::{Uid, User};

use super::mpi_env::{add_mpi_environment, add_task_launcher};
use super::AgentConfig;
use crate::exec::{Credentials, Launch, Program};
use crate::protocol::{JobStart, TaskStart};

/// Why a job could not be started: a PBS `JOB_EXEC_*` status and a message for its comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StartError {
    pub exit_status: i32,
    pub message: String,
}

impl StartError {
    fn new(exit_status: i32, message: impl Into<String>) -> Self {
        StartError {
            exit_status,
            message: message.into(),
        }
    }

    /// A job file the agent could not make: `JOB_EXEC_FAIL1`, as PBS's mom answers a node
    /// file or `TMPDIR` it cannot make (resmom/start_exec.c).
    fn node(what: &str, path: &Path, err: io::Error) -> Self {
        StartError::new(
            JOB_EXEC_FAIL1,
            format!("cannot {what} {}: {err}", path.display()),
        )
    }
}

/// The files the agent makes for a job; all removed when the job ends or fails to start.
#[derive(Debug, Default)]
pub(crate) struct JobFiles {
    pub script: Option<PathBuf>,
    pub nodefile: Option<PathBuf>,
    pub tmpdir: Option<PathBuf>,
}

impl JobFiles {
    /// Removes every file made so far; a failure is logged, never fatal.
    pub fn remove(&self) {
        let results = [
            self.script.as_deref().map(|p| (p, fs::remove_file(p))),
            self.nodefile.as_deref().map(|p| (p, fs::remove_file(p))),
            self.tmpdir.as_deref().map(|p| (p, fs::remove_dir_all(p))),
        ];
        for (path, result) in results.into_iter().flatten() {
            if let Err(err) = result.filter_not_found() {
                tracing::warn!(path = %path.display(), %err, "cannot remove a job file");
            }
        }
    }
}

trait IgnoreNotFound {
    fn filter_not_found(self) -> io::Result<()>;
}

impl IgnoreNotFound for io::Result<()> {
    fn filter_not_found(self) -> io::Result<()> {
        match self {
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }
}

/// A job ready to start.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub launch: Launch,
    pub files: JobFiles,
    /// Where the agent's own messages to the job go (limit kills): the error file, or the
    /// output file when the two are joined.
    pub messages: PathBuf,
}

impl Prepared {
    /// Runs the job on `terminal` (an interactive job's): its standard streams and the agent's
    /// messages to it go there, and its `TERM` is `term`, the submitting terminal's.
    pub fn on_terminal(&mut self, terminal: &Path, term: &str) {
        self.launch.terminal = Some(terminal.to_path_buf());
        self.messages = terminal.to_path_buf();
        let env = &mut self.launch.env;
        match env.iter_mut().find(|(name, _)| name == "TERM") {
            Some(slot) => slot.1 = term.to_string(),
            None => env.push(("TERM".to_string(), term.to_string())),
        }
    }
}

/// The user a job runs as.
#[derive(Debug)]
struct Account {
    user: String,
    home: PathBuf,
    shell: String,
    /// `None` when the agent is not root and runs jobs as itself.
    credentials: Option<Credentials>,
}

/// Prepares `job` to start: on failure, whatever was made is removed again.
pub(crate) fn prepare(config: &AgentConfig, job: &JobStart) -> Result<Prepared, StartError> {
    let Owned {
        id,
        account,
        stdout,
        stderr,
    } = owned(
        &job.job_id,
        &job.owner,
        &job.output_path,
        job.error_path.as_deref(),
    )?;
    let mut files = JobFiles::default();
    let prepared = prepare_files(config, job, &id, &account, &mut files);
    if prepared.is_err() {
        files.remove();
    }
    let (program, env) = prepared?;
    Ok(Prepared {
        messages: stderr.clone().unwrap_or_else(|| stdout.clone()),
        launch: Launch {
            program,
            env,
            cwd: account.home,
            stdout,
            stderr,
            cpus: job.cpus.clone(),
            credentials: account.credentials,
            fresh_output: job.rerun,
            cgroup_procs: None,
            terminal: None,
        },
        files,
    })
}

/// How to start a task of a job here (`pbs_tmrsh`): its command line under `/bin/sh -c`, as
/// the job's owner, with the environment it came with, its output appended to the job's.
pub(crate) fn task_launch(task: &TaskStart) -> Result<Launch, StartError> {
    let Owned {
        account,
        stdout,
        stderr,
        ..
    } = owned(
        &task.job_id,
        &task.owner,
        &task.output_path,
        task.error_path.as_deref(),
    )?;
    let cwd = Some(PathBuf::from(&task.cwd))
        .filter(|dir| dir.is_dir())
        .unwrap_or(account.home);
    Ok(Launch {
        program: Program::Executable(vec![
            "/bin/sh".into(),
            "-c".into(),
            task.command.clone().into(),
        ]),
        env: task.env.clone(),
        cwd,
        stdout,
        stderr,
        cpus: Vec::new(),
        credentials: account.credentials,
        fresh_output: false,
        cgroup_procs: None,
        terminal: None,
    })
}

/// A job's id, its owner's account and where its output goes, on this node.
struct Owned {
    id: JobId,
    account: Account,
    stdout: PathBuf,
    stderr: Option<PathBuf>,
}

/// What job `job_id` of `owner` runs as and writes to (`error_path` `None`: joined to the
/// output), for the job itself and for its tasks.
fn owned(
    job_id: &str,
    owner: &str,
    output_path: &str,
    error_path: Option<&str>,
) -> Result<Owned, StartError> {
    let id: JobId = job_id
        .parse()
        .map_err(|err| StartError::new(JOB_EXEC_FAIL1, format!("bad job id {job_id:?}: {err}")))?;
    let account = account(owner)?;
    let stdout = output_file(output_path, &account.home, &id, Stream::Output)?;
    let stderr = error_path
        .map(|path| output_file(path, &account.home, &id, Stream::Error))
        .transpose()?;
    Ok(Owned {
        id,
        account,
        stdout,
        stderr,
    })
}

fn account(owner: &str) -> Result<Account, StartError> {
    let root = Uid::effective().is_root();
    let found = if root {
        User::from_name(owner)
    } else {
        User::from_uid(Uid::effective())
    };
    let user = found
        .map_err(|err| StartError::new(JOB_EXEC_FAILUID, format!("cannot look up user: {err}")))?
        .ok_or_else(|| {
            StartError::new(
                JOB_EXEC_FAILUID,
                format!("no password entry for user {owner}"),
            )
        })?;
    if !root && user.name != owner {
        tracing::warn!(owner, runs_as = %user.name, "the agent is not root: the job runs as the agent's user");
    }
    let credentials = if root {
        Some(Credentials::of_user(&user).map_err(|err| {
            StartError::new(
                JOB_EXEC_FAILUID,
                format!("cannot find the groups of {owner}: {err}"),
            )
        })?)
    } else {
        None
    };
    let shell = user.shell.to_string_lossy().into_owned();
    Ok(Account {
        user: user.name,
        home: user.dir,
        shell: if shell.is_empty() {
            "/bin/sh".to_string()
        } else {
            shell
        },
        credentials,
    })
}

/// Writes the script and node file, makes `TMPDIR`, and builds the environment; records each
/// file in `files` as soon as it exists.
fn prepare_files(
    config: &AgentConfig,
    job: &JobStart,
    id: &JobId,
    account: &Account,
    files: &mut JobFiles,
) -> Result<(Program, Vec<(String, String)>), StartError> {
    let owner = account.credentials.as_ref();
    fs::create_dir_all(&config.aux_dir)
        .map_err(|err| StartError::node("create", &config.aux_dir, err))?;
    let shell = job
        .shell
        .clone()
        .filter(|shell| !shell.is_empty())
        .unwrap_or_else(|| account.shell.clone());
    let program = match &job.script {
        // An interactive job's script gave its options only (as in PBS): its shell reads
        // commands from the terminal.
        _ if job.interactive.is_some() && job.argv.is_empty() => {
            Program::LoginShell(PathBuf::from(&shell))
        }
        Some(script) => {
            let path = config.aux_dir.join(format!("{id}.SC"));
            files.script = Some(path.clone());
            write_owned(&path, script, 0o700, owner)
                .map_err(|err| StartError::node("write the job script", &path, err))?;
            Program::Script {
                shell: PathBuf::from(&shell),
                path,
            }
        }
        None if job.argv.is_empty() => {
            return Err(StartError::new(
                JOB_EXEC_FAIL1,
                "the job has neither a script nor a command line",
            ))
        }
        None => Program::Executable(job.argv.iter().map(Into::into).collect()),
    };
    let nodefile = config.aux_dir.join(id.to_string());
    files.nodefile = Some(nodefile.clone());
    write_owned(&nodefile, &job.nodefile, 0o644, owner)
        .map_err(|err| StartError::node("write PBS_NODEFILE", &nodefile, err))?;
    let tmpdir = PathBuf::from(jobenv::job_tmpdir(&config.tmp_root.to_string_lossy(), id));
    files.tmpdir = Some(tmpdir.clone());
    make_tmpdir(&tmpdir, owner).map_err(|err| StartError::node("create TMPDIR", &tmpdir, err))?;
    let cookie = cookie().map_err(|err| StartError::new(JOB_EXEC_RETRY, err.to_string()))?;
    let mut env = jobenv::job_environment(&JobContext {
        base: config.base_env.clone(),
        variable_list: job.variables.clone(),
        job_id: id.clone(),
        job_name: job.job_name.clone(),
        queue: job.queue.clone(),
        user: account.user.clone(),
        home: account.home.to_string_lossy().into_owned(),
        shell,
        cookie,
        mom_port: config.mom_port,
        nodefile: nodefile.to_string_lossy().into_owned(),
        threads: job.threads,
        account: job.account.clone(),
        tmpdir: tmpdir.to_string_lossy().into_owned(),
        interactive: job.interactive.is_some(),
    });
    let root = owner.map_or_else(|| Uid::effective().is_root(), |c| c.uid.is_root());
    add_mpi_environment(&mut env, &nodefile.to_string_lossy(), root);
    if let Some((socket, tmrsh)) = &config.tm {
        add_task_launcher(
            &mut env,
            &socket.to_string_lossy(),
            &tmrsh.to_string_lossy(),
        );
    }
    Ok((program, env))
}

/// Writes `contents` to a fresh file of mode `mode`, owned by the job's owner.
fn write_owned(
    path: &Path,
    contents: &str,
    mode: u32,
    owner: Option<&Credentials>,
) -> io::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)?;
    file.write_all(contents.as_bytes())?;
    // The umask may have narrowed the mode.
    file.set_permissions(fs::Permissions::from_mode(mode))?;
    if let Some(owner) = owner {
        std::os::unix::fs::fchown(&file, Some(owner.uid.as_raw()), Some(owner.gid.as_raw()))?;
    }
    Ok(())
}

/// Makes the job's `TMPDIR`, mode 0700, replacing what a crashed agent may have left.
fn make_tmpdir(path: &Path, owner: Option<&Credentials>) -> io::Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    match fs::remove_dir_all(path) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => return Err(err),
        _ => {}
    }
    fs::DirBuilder::new().mode(0o700).create(path)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o700))?;
    if let Some(owner) = owner {
        std::os::unix::fs::chown(path, Some(owner.uid.as_raw()), Some(owner.gid.as_raw()))?;
    }
    Ok(())
}

/// `PBS_JOBCOOKIE`: 128 random bits in hex.
fn cookie() -> io::Result<String> {
    crate::random::random_hex(16)
}

/// The local file a stream goes to: the host part of `host:/path` dropped, a relative path
/// taken from the owner's home, and a directory (an existing one, or a path ending in `/`)
/// given the file `<jobid>.OU` / `.ER`.
pub(crate) fn output_file(
    path: &str,
    home: &Path,
    id: &JobId,
    stream: Stream,
) -> Result<PathBuf, StartError> {
    let local = without_host(path);
    if local.is_empty() {
        return Err(StartError::new(
            JOB_EXEC_FAIL1,
            format!("no file in output path {path:?}"),
        ));
    }
    let file = home.join(local);
    if local.ends_with('/') || file.is_dir() {
        let dir = file.to_string_lossy();
        return Ok(PathBuf::from(jobenv::output_file_in_directory(
            &dir, id, stream,
        )));
    }
    Ok(file)
}

/// `host:/path` → `/path`; a path without a host part is returned as it is.
fn without_host(path: &str) -> &str {
    match path.split_once(':') {
        Some((host, rest)) if !host.contains('/') => rest,
        _ => path,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_paths_lose_their_host_and_fill_in_directories() {
        let id: JobId = "12.srv".parse().unwrap();
        let home = Path::new("/home/me");
        let out = |path: &str, stream| output_file(path, home, &id, stream).unwrap();
        assert_eq!(
            out("login1:/w/pi.o12", Stream::Output),
            Path::new("/w/pi.o12")
        );
        assert_eq!(out("/w/pi.e12", Stream::Error), Path::new("/w/pi.e12"));
        assert_eq!(
            out("login1:/w/out/", Stream::Error),
            Path::new("/w/out/12.srv.ER")
        );
        assert_eq!(out("pi.o12", Stream::Output), Path::new("/home/me/pi.o12"));
        let dir = tempfile::tempdir().unwrap();
        let existing = format!("h:{}", dir.path().display());
        assert_eq!(out(&existing, Stream::Output), dir.path().join("12.srv.OU"));
        for bad in ["", "login1:"] {
            let err = output_file(bad, home, &id, Stream::Output).unwrap_err();
            assert_eq!(err.exit_status, JOB_EXEC_FAIL1);
        }
    }

    #[test]
    fn colons_after_a_slash_are_part_of_the_path() {
        assert_eq!(without_host("/w/a:b"), "/w/a:b");
        assert_eq!(without_host("h.example.com:/w/a:b"), "/w/a:b");
    }

    #[test]
    fn cookies_are_random_hex() {
        let (a, b) = (cookie().unwrap(), cookie().unwrap());
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn files_are_written_with_their_mode_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("1.s.SC");
        write_owned(&script, "echo hi\n", 0o700, None).unwrap();
        let mode = fs::metadata(&script).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        let tmp = dir.path().join("tmp/pbs.1.s");
        make_tmpdir(&tmp, None).unwrap();
        fs::write(tmp.join("scratch"), "x").unwrap();
        make_tmpdir(&tmp, None).unwrap();
        assert!(!tmp.join("scratch").exists(), "a stale TMPDIR is replaced");
        let files = JobFiles {
            script: Some(script.clone()),
            nodefile: Some(dir.path().join("never-made")),
            tmpdir: Some(tmp.clone()),
        };
        files.remove();
        assert!(!script.exists() && !tmp.exists());
    }
}

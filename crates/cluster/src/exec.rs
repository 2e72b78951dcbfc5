//! Running a job's processes on a node: start the script as PBS's mom does, find every process
//! that belongs to the job (daemonized ones included), and signal them all.
//!
//! A job's processes are found two ways, so that none escapes:
//! - the job's top shell leads a new session, and its ordinary descendants share it;
//! - every process started for the job carries the job's marker in its environment
//!   ([`job_marker`]), which a process that double-forks and calls `setsid` still has. The
//!   agent makes itself a child subreaper ([`become_subreaper`]), so such orphans are
//!   re-parented to it rather than to init.
//!
//! In a subreaper whose kernel lists children (`/proc/<pid>/task/<tid>/children`), every
//! process of its jobs lies in its own process tree, so the two tests run on that tree
//! alone; elsewhere on every process of the machine. (A process another daemon starts with
//! a copy of the job's environment, as `at` would, is not the job's: it is in neither the
//! tree nor the job's cgroup, as it is outside PBS's tracking.)

use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

use nix::sys::signal::{kill, Signal};
use nix::unistd::{Gid, Pid, Uid};

/// What a job is to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Program {
    /// A job script, fed to the shell as PBS does: the shell starts as a login shell and reads
    /// the script's path on its standard input.
    Script {
        /// The shell (`-S`, else the owner's login shell).
        shell: PathBuf,
        /// The script file, executable by the job's owner.
        path: PathBuf,
    },
    /// An executable and its arguments (`qsub -- exe args`).
    Executable(Vec<OsString>),
    /// A login shell that reads its commands from the job's terminal (`qsub -I`).
    LoginShell(PathBuf),
}

/// Everything needed to start a job's top process.
#[derive(Debug, Clone)]
pub struct Launch {
    /// What to run.
    pub program: Program,
    /// The complete environment (from `hpcbox_pbs::jobenv::job_environment`).
    pub env: Vec<(String, String)>,
    /// The directory to start in: the owner's home, as PBS does.
    pub cwd: PathBuf,
    /// Where standard output goes.
    pub stdout: PathBuf,
    /// Where standard error goes; `None` joins it to standard output (`-j oe`).
    pub stderr: Option<PathBuf>,
    /// CPU ids to pin the job to; empty leaves it unpinned.
    pub cpus: Vec<usize>,
    /// The user to run as; `None` runs as this process's own user.
    pub credentials: Option<Credentials>,
    /// Empty the output files first (a rerun) instead of appending to them.
    pub fresh_output: bool,
    /// The `cgroup.procs` file of the job's memory cgroup, which its first process enters.
    pub cgroup_procs: Option<PathBuf>,
    /// The terminal an interactive job runs on (a pseudo-terminal's slave side): its standard
    /// input, output and error and its controlling terminal, instead of the output files.
    pub terminal: Option<PathBuf>,
}

/// Who a job's processes run as: the owner's user, primary group and supplementary groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The owner's user id.
    pub uid: Uid,
    /// The owner's primary group.
    pub gid: Gid,
    /// Every group the owner belongs to, as `initgroups` would set them.
    pub groups: Vec<Gid>,
}

impl Credentials {
    /// The credentials of `user`, with the groups from the group database.
    pub fn of_user(user: &nix::unistd::User) -> io::Result<Credentials> {
        let name = std::ffi::CString::new(user.name.as_bytes())
            .map_err(|err| io::Error::new(io::ErrorKind::InvalidInput, err))?;
        let groups = nix::unistd::getgrouplist(&name, user.gid).map_err(io::Error::from)?;
        Ok(Credentials {
            uid: user.uid,
            gid: user.gid,
            groups,
        })
    }
}

/// Top processes whose exit status belongs to a [`RunningJob`]: [`reap_orphans`] leaves them
/// alone, so that the job's `wait` still sees how its shell ended.
static AWAITED: Mutex<Vec<i32>> = Mutex::new(Vec::new());

fn awaited() -> MutexGuard<'static, Vec<i32>> {
    AWAITED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A started job: its top process, which leads the job's session.
#[derive(Debug)]
pub struct RunningJob {
    child: Child,
    /// Whether the top process has been waited for (its pid, and so the job's process group
    /// id, may then be another's).
    top_reaped: bool,
    marker: String,
    /// The `cgroup.procs` of the job's cgroup, when it has one: every process the job made,
    /// whatever it did to its session and environment.
    cgroup_procs: Option<PathBuf>,
}

/// The environment entry that marks a job's processes: `PBS_JOBCOOKIE=<cookie>` when the
/// environment has a cookie, else `PBS_JOBID=<job_id>`.
///
/// The cookie is random per job, so that two installations on one machine, whose jobs may
/// share an id, never take each other's processes for their own.
///
/// ```
/// use hpcbox_cluster::exec::job_marker;
/// let env = vec![("PBS_JOBCOOKIE".to_string(), "c0ffee".to_string())];
/// assert_eq!(job_marker("1.srv", &env), "PBS_JOBCOOKIE=c0ffee");
/// assert_eq!(job_marker("1.srv", &[]), "PBS_JOBID=1.srv");
/// ```
pub fn job_marker(job_id: &str, env: &[(String, String)]) -> String {
    match env.iter().find(|(name, _)| name == "PBS_JOBCOOKIE") {
        Some((name, cookie)) => format!("{name}={cookie}"),
        None => format!("PBS_JOBID={job_id}"),
    }
}

fn login_name(shell: &Path) -> OsString {
    let base = shell.file_name().unwrap_or(shell.as_os_str());
    let mut name = OsString::from("-");
    name.push(base);
    name
}

fn c_path(path: &Path) -> io::Result<std::ffi::CString> {
    std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|err| io::Error::new(io::ErrorKind::InvalidInput, err))
}

/// Starts the job in a new session, as `launch.credentials` when given, pinned to
/// `launch.cpus` when given.
///
/// The output files are opened by the job's own process after it has taken the owner's
/// identity, as PBS's mom does: created if missing, appended to (emptied first for a rerun),
/// mode 0600.
pub fn start(job_id: &str, launch: &Launch) -> io::Result<RunningJob> {
    let mut command = match &launch.program {
        Program::Script { shell, .. } | Program::LoginShell(shell) => {
            let mut command = Command::new(shell);
            command.arg0(login_name(shell));
            command
        }
        Program::Executable(argv) => {
            let (program, args) = argv
                .split_first()
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty command line"))?;
            let mut command = Command::new(program);
            command.args(args);
            command
        }
    };
    command
        .env_clear()
        .envs(launch.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&launch.cwd)
        .stdin(match launch.program {
            Program::Script { .. } => Stdio::piped(),
            Program::Executable(_) | Program::LoginShell(_) => Stdio::null(),
        })
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // Built before the fork: the pre-exec closure must not allocate.
    let child_setup = ChildSetup {
        cpu_set: cpu_set(&launch.cpus)?,
        credentials: launch.credentials.clone(),
        stdout: c_path(&launch.stdout)?,
        stderr: launch.stderr.as_deref().map(c_path).transpose()?,
        fresh_output: launch.fresh_output,
        cgroup_procs: launch.cgroup_procs.as_deref().map(c_path).transpose()?,
        terminal: launch.terminal.as_deref().map(c_path).transpose()?,
    };
    // SAFETY: between fork and exec the closure calls only async-signal-safe functions
    // (setsid, sched_setaffinity, setgroups, setgid, setuid, open, write, ioctl, dup2, close)
    // and allocates nothing.
    unsafe {
        command.pre_exec(move || child_setup.apply());
    }
    let mut awaited = awaited();
    let mut child = command.spawn().map_err(|err| {
        io::Error::new(
            err.kind(),
            format!(
                "cannot start {:?} in {} with output {}: {err}",
                launch.program,
                launch.cwd.display(),
                launch.stdout.display()
            ),
        )
    })?;
    awaited.push(child.id() as i32);
    drop(awaited);
    if let Program::Script { path, .. } = &launch.program {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin was piped");
        let mut line = path.clone().into_os_string().into_vec();
        line.push(b'\n');
        // The shell may exit before reading (a broken login profile): that is the job's
        // outcome to report, not an error in starting it.
        let _ = stdin.write_all(&line);
    }
    Ok(RunningJob {
        top_reaped: false,
        child,
        marker: job_marker(job_id, &launch.env),
        cgroup_procs: launch.cgroup_procs.clone(),
    })
}

/// What the job's process does to itself between fork and exec.
struct ChildSetup {
    cpu_set: Option<nix::sched::CpuSet>,
    credentials: Option<Credentials>,
    stdout: std::ffi::CString,
    stderr: Option<std::ffi::CString>,
    fresh_output: bool,
    cgroup_procs: Option<std::ffi::CString>,
    terminal: Option<std::ffi::CString>,
}

impl ChildSetup {
    fn apply(&self) -> io::Result<()> {
        use nix::fcntl::{open, OFlag};
        use nix::sys::stat::Mode;
        if let Some(procs) = &self.cgroup_procs {
            // Into the job's cgroup while still root. Should that fail, the job runs
            // outside it and the agent's sampling holds it to its limit instead.
            if let Ok(fd) = open(
                procs.as_c_str(),
                OFlag::O_WRONLY | OFlag::O_CLOEXEC,
                Mode::empty(),
            ) {
                let _ = nix::unistd::write(&fd, b"0");
            }
        }
        nix::unistd::setsid()?;
        if let Some(set) = &self.cpu_set {
            nix::sched::sched_setaffinity(Pid::from_raw(0), set)?;
        }
        if let Some(credentials) = &self.credentials {
            nix::unistd::setgroups(&credentials.groups)?;
            nix::unistd::setgid(credentials.gid)?;
            nix::unistd::setuid(credentials.uid)?;
        }
        if let Some(terminal) = &self.terminal {
            return take_terminal(terminal);
        }
        let mut flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_APPEND | OFlag::O_CLOEXEC;
        if self.fresh_output {
            flags |= OFlag::O_TRUNC;
        }
        let mode = Mode::from_bits_truncate(0o600);
        let stdout = open(self.stdout.as_c_str(), flags, mode)?;
        nix::unistd::dup2_stdout(&stdout)?;
        match &self.stderr {
            Some(path) => nix::unistd::dup2_stderr(open(path.as_c_str(), flags, mode)?)?,
            None => nix::unistd::dup2_stderr(&stdout)?,
        }
        Ok(())
    }
}

/// Opens `path` (a terminal) as this session's controlling terminal and makes it the standard
/// input, output and error. Async-signal-safe: runs between fork and exec.
fn take_terminal(path: &std::ffi::CStr) -> io::Result<()> {
    use nix::fcntl::{open, OFlag};
    use nix::sys::stat::Mode;
    let terminal = open(path, OFlag::O_RDWR, Mode::empty())?;
    // SAFETY: TIOCSCTTY takes an int argument; the fd is open and this process leads its
    // session (setsid above), so the terminal becomes its controlling terminal.
    if unsafe { nix::libc::ioctl(terminal.as_raw_fd(), nix::libc::TIOCSCTTY, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    nix::unistd::dup2_stdin(&terminal)?;
    nix::unistd::dup2_stdout(&terminal)?;
    nix::unistd::dup2_stderr(&terminal)?;
    Ok(())
}

fn cpu_set(cpus: &[usize]) -> io::Result<Option<nix::sched::CpuSet>> {
    if cpus.is_empty() {
        return Ok(None);
    }
    let mut set = nix::sched::CpuSet::new();
    for &cpu in cpus {
        set.set(cpu).map_err(io::Error::from)?;
    }
    Ok(Some(set))
}

impl RunningJob {
    /// The top process's id, which is also the job's session id.
    pub fn session(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    /// How the top process ended, if it has: `(exit code, signal)`.
    pub fn try_wait(&mut self) -> io::Result<Option<(Option<i32>, Option<i32>)>> {
        use std::os::unix::process::ExitStatusExt;
        let status = self.child.try_wait();
        if !matches!(status, Ok(None)) {
            // Ended, or no longer ours to wait for (reaped elsewhere): its id may be another's.
            self.top_reaped = true;
            self.release();
        }
        Ok(status?.map(|status| (status.code(), status.signal())))
    }

    /// Waits for the top process to end: `(exit code, signal)`.
    pub fn wait(&mut self) -> io::Result<(Option<i32>, Option<i32>)> {
        use std::os::unix::process::ExitStatusExt;
        let status = self.child.wait();
        self.top_reaped = true;
        self.release();
        let status = status?;
        Ok((status.code(), status.signal()))
    }

    /// Hands the top process over to [`reap_orphans`].
    fn release(&self) {
        let pid = self.child.id() as i32;
        awaited().retain(|&awaited| awaited != pid);
    }

    /// The environment entry that marks the job's processes ([`job_marker`]).
    pub fn marker(&self) -> &str {
        &self.marker
    }

    /// The job's live processes: those [`job_processes`] finds, and those in its cgroup.
    pub fn processes(&self) -> Vec<Pid> {
        let mut pids = job_processes(&self.marker, self.session());
        if let Some(procs) = &self.cgroup_procs {
            for pid in cgroup_members(procs) {
                if !pids.contains(&pid) {
                    pids.push(pid);
                }
            }
        }
        pids
    }

    /// Sends `signal` to every process of the job ([`RunningJob::processes`]); returns how
    /// many were signalled.
    ///
    /// The job's process group (its top process leads it) gets the signal first, in one call,
    /// as PBS signals a job's session: a shell and its foreground command then both have it
    /// before either runs again, so the shell dies by the signal rather than exiting with
    /// 128 + N on seeing its command killed (Exit_status 271, not 143, for a qdel).
    pub fn signal_all(&self, signal: Signal) -> usize {
        let group = (!self.top_reaped).then(|| self.session());
        signal_each(|| self.processes(), group, signal)
    }
}

impl Drop for RunningJob {
    fn drop(&mut self) {
        self.release();
    }
}

/// Sends `signal` to every process of the job whose top process leads session `session`:
/// members of the session and processes whose environment holds `marker` ([`job_marker`]),
/// looked for as [`job_processes`] does (in a subreaper, below it alone). Returns how many
/// processes were signalled.
///
/// A process may fork between the look-up and the signal; the look-up is repeated until it
/// finds no process not yet signalled (at most a few rounds, against fork bombs).
pub fn signal_job(marker: &str, session: Pid, signal: Signal) -> usize {
    signal_each(|| job_processes(marker, session), None, signal)
}

/// Sends `signal` to process group `group` at once, when given (a group whose leader this
/// process has not reaped, so the id is surely the job's), then to every other process
/// `look_up` finds, looking again until it finds none not yet signalled (at most a few rounds,
/// against fork bombs); returns how many were signalled.
///
/// The group's members are not signalled again one by one: a job that traps the signal runs
/// its trap once, as under a `killpg` of its session. A fork under way as the group is
/// signalled gives its child the signal too; a process that joins the group afterwards
/// (forked by a member that survived the signal, or moved in by `setpgid`) is left, as under
/// `killpg`.
fn signal_each(look_up: impl Fn() -> Vec<Pid>, group: Option<Pid>, signal: Signal) -> usize {
    const ROUNDS: usize = 8;
    let group = group.filter(|&group| nix::sys::signal::killpg(group, signal).is_ok());
    let mut seen: Vec<Pid> = Vec::new();
    let mut signalled = 0;
    for _ in 0..ROUNDS {
        let fresh: Vec<Pid> = look_up()
            .into_iter()
            .filter(|pid| !seen.contains(pid))
            .collect();
        if fresh.is_empty() {
            break;
        }
        signalled += fresh
            .iter()
            .filter(|&&pid| {
                group.is_some_and(|g| nix::unistd::getpgid(Some(pid)) == Ok(g))
                    || kill(pid, signal).is_ok()
            })
            .count();
        seen.extend(fresh);
    }
    signalled
}

/// The live processes of a job: its session's members and every process whose environment
/// holds `marker` ([`job_marker`]). In a subreaper that started the job they are looked for
/// below it ([`own_descendants`]), unless the job's top process, alive, is not seen there
/// (a `/proc` that lists no children): then among every process.
pub fn job_processes(marker: &str, session: Pid) -> Vec<Pid> {
    let belongs = |pid: Pid| in_session(pid, session) || has_env_entry(pid, marker);
    match own_descendants() {
        Some(below) if below.contains(&session) || !is_alive(session) => {
            below.into_iter().filter(|&pid| belongs(pid)).collect()
        }
        _ => processes_where(belongs),
    }
}

/// Whether `pid` names a process (a zombie included).
fn is_alive(pid: Pid) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Set once this process is a child subreaper ([`become_subreaper`]).
static SUBREAPER: AtomicBool = AtomicBool::new(false);

/// The processes below this one, down the tree, when every process it ever started is among
/// them: this process is a subreaper (orphans come back to it) and the kernel lists children.
/// `None` otherwise. A subreaper's tree holds its jobs' processes only, where the whole
/// machine may hold hundreds: a look-up at each job's end stays cheap.
fn own_descendants() -> Option<Vec<Pid>> {
    static LISTS_CHILDREN: OnceLock<bool> = OnceLock::new();
    let lists = *LISTS_CHILDREN.get_or_init(|| Path::new("/proc/thread-self/children").exists());
    if !lists || !SUBREAPER.load(Ordering::Relaxed) {
        return None;
    }
    let mut found = std::collections::HashSet::new();
    let mut pending = children_of(Pid::this());
    while let Some(pid) = pending.pop() {
        if found.insert(pid) {
            pending.extend(children_of(pid));
        }
    }
    Some(found.into_iter().collect())
}

/// The children of every thread of `pid` (none when it has gone).
fn children_of(pid: Pid) -> Vec<Pid> {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| read_at_once(&task.path().join("children")))
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|child| child.parse().ok())
                .map(Pid::from_raw)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// A `/proc` list read in one `read` where it fits 64 KiB: the kernel finds its place again
/// by position at each read, so a child reaped between two reads would hide the next one.
fn read_at_once(path: &Path) -> Option<String> {
    use std::io::Read;
    let mut file = fs::File::open(path).ok()?;
    let mut buf = vec![0u8; 64 << 10];
    let n = file.read(&mut buf).ok()?;
    if n == buf.len() {
        // Longer than one read: the rest, as it comes.
        file.read_to_end(&mut buf).ok()?;
    } else {
        buf.truncate(n);
    }
    String::from_utf8(buf).ok()
}

/// The live processes of this machine that `keep` accepts.
fn processes_where(keep: impl Fn(Pid) -> bool) -> Vec<Pid> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .map(Pid::from_raw)
        .filter(|&pid| keep(pid))
        .collect()
}

/// The processes a cgroup's `cgroup.procs` lists (none when it cannot be read).
pub fn cgroup_members(procs: &Path) -> Vec<Pid> {
    fs::read_to_string(procs)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.trim().parse().ok())
        .map(Pid::from_raw)
        .collect()
}

fn in_session(pid: Pid, session: Pid) -> bool {
    nix::unistd::getsid(Some(pid)).is_ok_and(|sid| sid == session)
}

/// Sends SIGKILL, in rounds (a process may fork meanwhile), to every process whose environment
/// holds all of `entries`, until none is left or `patience` has passed; returns how many
/// processes were killed. For the processes of a job whose agent is gone (no session known).
pub fn kill_marked(entries: &[&str], patience: std::time::Duration) -> usize {
    kill_until_gone(
        || processes_where(|pid| entries.iter().all(|e| has_env_entry(pid, e))),
        patience,
    )
}

/// Sends SIGKILL, in rounds, to every process a cgroup's `cgroup.procs` lists, until none is
/// left or `patience` has passed; returns how many processes were killed.
pub fn kill_cgroup(procs: &Path, patience: std::time::Duration) -> usize {
    kill_until_gone(|| cgroup_members(procs), patience)
}

/// SIGKILLs what `look_up` finds, reaping orphans, until it finds nothing or `patience` has
/// passed; returns how many processes were killed.
fn kill_until_gone(look_up: impl Fn() -> Vec<Pid>, patience: std::time::Duration) -> usize {
    let deadline = std::time::Instant::now() + patience;
    let mut killed = 0;
    loop {
        let marked = look_up();
        killed += marked
            .iter()
            .filter(|&&pid| kill(pid, Signal::SIGKILL).is_ok())
            .count();
        reap_orphans();
        if marked.is_empty() || std::time::Instant::now() >= deadline {
            return killed;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

fn has_env_entry(pid: Pid, entry: &str) -> bool {
    fs::read(format!("/proc/{pid}/environ"))
        .is_ok_and(|environ| environ.split(|&b| b == 0).any(|e| e == entry.as_bytes()))
}

/// Makes this process the reaper of orphaned descendants (Linux), so that a job's
/// daemonized processes stay below the agent and are found and reaped by it.
pub fn become_subreaper() -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        nix::sys::prctl::set_child_subreaper(true).map_err(io::Error::from)?;
        SUBREAPER.store(true, Ordering::Relaxed);
    }
    Ok(())
}

/// Reaps this process's exited children without blocking — orphans adopted as subreaper
/// included — except the top processes of [`RunningJob`]s, whose status is theirs to collect.
/// Returns how many were reaped.
///
/// Every other child of this process is reaped too: a process that runs the agent should start
/// its other children through [`start`] or not at all.
pub fn reap_orphans() -> usize {
    let awaited = awaited();
    let mut reaped = 0;
    // Each exited child in turn, looked at without reaping it; the first that is a job's top
    // process would stand in front of the others, so the rest is found through /proc.
    while let Some(pid) = next_exited_child() {
        if awaited.contains(&pid) {
            return reaped + reap_scanning(&awaited);
        }
        reap(pid);
        reaped += 1;
    }
    reaped
}

/// An exited child of this process, left unreaped (`waitid` with `WNOWAIT`); `None` when no
/// child has exited (or there is none). The raw call: a status nix cannot decode (a death by
/// a real-time signal) must not hide the child.
fn next_exited_child() -> Option<i32> {
    // SAFETY: a zeroed siginfo_t is a valid out-parameter; waitid writes it.
    let mut info: nix::libc::siginfo_t = unsafe { std::mem::zeroed() };
    let flags = nix::libc::WEXITED | nix::libc::WNOHANG | nix::libc::WNOWAIT;
    // SAFETY: P_ALL with a valid siginfo_t pointer; WNOWAIT leaves the child as it is.
    if unsafe { nix::libc::waitid(nix::libc::P_ALL, 0, &mut info, flags) } != 0 {
        return None;
    }
    // SAFETY: waitid filled `info` for a child (or left si_pid 0 when none has exited).
    let pid = unsafe { info.si_pid() };
    (pid != 0).then_some(pid)
}

/// Reaps child `pid`, whatever its status.
fn reap(pid: i32) {
    let mut status = 0;
    // SAFETY: waitpid on our own child with a valid status pointer.
    unsafe { nix::libc::waitpid(pid, &mut status, nix::libc::WNOHANG) };
}

/// Reaps the exited children that `/proc` shows, but the `awaited` ones.
fn reap_scanning(awaited: &[i32]) -> usize {
    let me = Pid::this();
    let exited =
        processes_where(|pid| !awaited.contains(&pid.as_raw()) && is_zombie_child_of(pid, me));
    for pid in &exited {
        reap(pid.as_raw());
    }
    exited.len()
}

/// Whether `pid` has exited and waits for `parent` to reap it.
fn is_zombie_child_of(pid: Pid, parent: Pid) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let Some(after_name) = stat.rfind(')').and_then(|end| stat.get(end + 1..)) else {
        return false;
    };
    let mut fields = after_name.split_whitespace();
    let state = fields.next();
    let ppid = fields.next().and_then(|ppid| ppid.parse::<i32>().ok());
    state == Some("Z") && ppid == Some(parent.as_raw())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn launch(dir: &Path, script: &str) -> Launch {
        let path = dir.join("job.sh");
        fs::write(&path, script).unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o700)).unwrap();
        Launch {
            program: Program::Script {
                shell: "/bin/sh".into(),
                path,
            },
            env: vec![
                ("PATH".into(), "/bin:/usr/bin".into()),
                ("HOME".into(), dir.display().to_string()),
            ],
            cwd: dir.to_path_buf(),
            stdout: dir.join("out"),
            stderr: Some(dir.join("err")),
            cpus: Vec::new(),
            credentials: None,
            fresh_output: false,
            cgroup_procs: None,
            terminal: None,
        }
    }

    fn with_job_id(mut launch: Launch, id: &str) -> Launch {
        launch.env.push(("PBS_JOBID".into(), id.into()));
        launch
    }

    #[test]
    fn runs_the_script_in_home_with_its_environment() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = launch(
            dir.path(),
            "#!/bin/sh\npwd\necho \"job $PBS_JOBID\"\necho oops >&2\nexit 3\n",
        );
        l = with_job_id(l, "1.test");
        let mut job = start("1.test", &l).unwrap();
        assert_eq!(job.wait().unwrap(), (Some(3), None));
        let out = fs::read_to_string(dir.path().join("out")).unwrap();
        assert_eq!(out, format!("{}\njob 1.test\n", dir.path().display()));
        assert_eq!(
            fs::read_to_string(dir.path().join("err")).unwrap(),
            "oops\n"
        );
    }

    #[test]
    fn joined_streams_share_one_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = launch(dir.path(), "#!/bin/sh\necho a\necho b >&2\n");
        l.stderr = None;
        start("2.test", &l).unwrap().wait().unwrap();
        assert_eq!(
            fs::read_to_string(dir.path().join("out")).unwrap(),
            "a\nb\n"
        );
    }

    #[test]
    fn executables_run_without_a_shell() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = launch(dir.path(), "");
        l.program = Program::Executable(vec!["/bin/echo".into(), "hello".into()]);
        assert_eq!(
            start("3.test", &l).unwrap().wait().unwrap(),
            (Some(0), None)
        );
        assert_eq!(
            fs::read_to_string(dir.path().join("out")).unwrap(),
            "hello\n"
        );
    }

    fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn signalling_a_job_reaches_its_daemonized_children() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("daemon.pid");
        // The daemon leaves the job's session (setsid) and its parent exits at once.
        let script = format!(
            "#!/bin/sh\nsetsid sh -c 'echo $$ > {pid}; exec sleep 1000' &\nsleep 1000\n",
            pid = pidfile.display()
        );
        let l = with_job_id(launch(dir.path(), &script), "4.test");
        let mut job = start("4.test", &l).unwrap();
        wait_until("the daemon's pid file", || {
            fs::read_to_string(&pidfile).is_ok_and(|s| s.ends_with('\n'))
        });
        let daemon = Pid::from_raw(
            fs::read_to_string(&pidfile)
                .unwrap()
                .trim()
                .parse()
                .unwrap(),
        );
        assert_ne!(nix::unistd::getsid(Some(daemon)).unwrap(), job.session());
        assert_eq!(job.marker(), "PBS_JOBID=4.test");
        assert!(job_processes(job.marker(), job.session()).contains(&daemon));
        assert!(job.signal_all(Signal::SIGKILL) >= 2);
        assert_eq!(job.wait().unwrap(), (None, Some(9)));
        // The daemon is a zombie until its parent reaps it; gone from the job either way.
        wait_until("the daemon to die", || {
            fs::read_to_string(format!("/proc/{daemon}/stat"))
                .map_or(true, |stat| stat.contains(") Z "))
        });
    }

    #[test]
    fn other_jobs_are_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let a = with_job_id(launch(dir.path(), "#!/bin/sh\nsleep 1000\n"), "5.test");
        let other = tempfile::tempdir().unwrap();
        let b = with_job_id(launch(other.path(), "#!/bin/sh\nsleep 1000\n"), "6.test");
        let mut first = start("5.test", &a).unwrap();
        let mut second = start("6.test", &b).unwrap();
        first.signal_all(Signal::SIGTERM);
        assert_eq!(first.wait().unwrap().1, Some(15));
        assert_eq!(second.try_wait().unwrap(), None);
        second.signal_all(Signal::SIGKILL);
        assert_eq!(second.wait().unwrap().1, Some(9));
    }

    #[test]
    fn the_reaper_leaves_job_statuses_to_their_jobs() {
        let dir = tempfile::tempdir().unwrap();
        let l = with_job_id(launch(dir.path(), "#!/bin/sh\nexit 7\n"), "8.test");
        let mut job = start("8.test", &l).unwrap();
        // Never waited for here: reaping it is the reaper's job.
        #[allow(clippy::zombie_processes)]
        let orphan = Command::new("/bin/true").spawn().unwrap();
        let orphan = Pid::from_raw(orphan.id() as i32);
        let me = Pid::this();
        wait_until("both to exit", || {
            is_zombie_child_of(job.session(), me) && is_zombie_child_of(orphan, me)
        });
        assert!(reap_orphans() >= 1);
        assert!(!Path::new(&format!("/proc/{orphan}")).exists());
        assert_eq!(job.wait().unwrap(), (Some(7), None));
    }

    #[test]
    fn a_child_killed_by_a_real_time_signal_holds_up_no_reaping() {
        let me = Pid::this();
        // Never waited for here: reaping them is the reaper's job.
        #[allow(clippy::zombie_processes)]
        let rt = Command::new("/bin/sh")
            .args(["-c", "kill -35 $$"])
            .spawn()
            .unwrap();
        let rt = Pid::from_raw(rt.id() as i32);
        wait_until("a death by signal 35", || is_zombie_child_of(rt, me));
        #[allow(clippy::zombie_processes)]
        let later = Command::new("/bin/true").spawn().unwrap();
        let later = Pid::from_raw(later.id() as i32);
        wait_until("both reaped", || {
            reap_orphans();
            [rt, later]
                .iter()
                .all(|pid| !Path::new(&format!("/proc/{pid}")).exists())
        });
    }

    #[test]
    fn root_runs_jobs_as_their_owner() {
        if !Uid::effective().is_root() {
            return;
        }
        let Ok(Some(nobody)) = nix::unistd::User::from_name("nobody") else {
            return;
        };
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
        let mut l = launch(dir.path(), "#!/bin/sh\nid -u\nid -G\n");
        if let Program::Script { path, .. } = &l.program {
            std::os::unix::fs::chown(path, Some(nobody.uid.as_raw()), None).unwrap();
        }
        let credentials = Credentials::of_user(&nobody).unwrap();
        assert!(credentials.groups.contains(&nobody.gid));
        l.credentials = Some(credentials);
        assert_eq!(
            start("9.test", &l).unwrap().wait().unwrap(),
            (Some(0), None)
        );
        let out = dir.path().join("out");
        assert_eq!(fs::metadata(&out).unwrap().uid(), nobody.uid.as_raw());
        let text = fs::read_to_string(&out).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some(nobody.uid.to_string().as_str()));
        assert!(
            !lines.next().unwrap().split(' ').any(|g| g == "0"),
            "{text}"
        );
    }

    #[test]
    fn unopenable_output_fails_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = launch(dir.path(), "#!/bin/sh\ntrue\n");
        l.stdout = dir.path().join("missing/out");
        let err = start("10.test", &l).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn pinning_limits_the_cpus_the_job_sees() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = launch(
            dir.path(),
            "#!/bin/sh\ngrep Cpus_allowed_list /proc/self/status\n",
        );
        l.cpus = vec![0];
        start("7.test", &l).unwrap().wait().unwrap();
        let out = fs::read_to_string(dir.path().join("out")).unwrap();
        assert_eq!(out.split_whitespace().last(), Some("0"));
    }
}

//! The launcher: starts the ranks of a world, on this node or on others, forwards their
//! output, and ends them all when one fails (`hpcbox mpiexec`).
//!
//! Every rank runs in one new process group, so that killing the group ends the ranks and
//! whatever they started, and gets SIGKILL should its launcher die (`PR_SET_PDEATHSIG`; tied
//! to the launching thread, which [`launch_with`] blocks until the world ends). The launcher
//! creates the rendezvous directory and removes it when the world is over.
//!
//! The rendezvous directory goes in `/dev/shm` when it has room for every rank's inbox, else
//! in the temporary directory.
//!
//! Ranks placed on other hosts ([`LaunchSpec::hosts`]) start through an rsh-style agent
//! ([`crate::remote`]: `$HPCBOX_RSH`, else `ssh -o BatchMode=yes`), whose pipes bring their
//! output back; the agents run in the world's process group like local ranks. A world with
//! a remote rank meets through a TCP rendezvous instead of the directory: the launcher
//! listens on every interface and gives each rank `HPCBOX_RENDEZVOUS=tcp://HOST:PORT`, where
//! HOST is [`LaunchSpec::rendezvous_host`], else `$HPCBOX_RENDEZVOUS_HOST`, else the address
//! of this machine that routes to the first remote host, else this host name's address.
//! Every rank keeps that connection open; when the world fails the launcher closes them,
//! and remote ranks, which no signal of the launcher reaches, end themselves.

use crate::env::{default_ring_bytes, ENV_JOBKEY, ENV_RANK, ENV_RENDEZVOUS, ENV_SIZE};
use crate::placement::is_local;
use crate::remote;
use crate::rendezvous::{route_to, Server};
use crate::transport::shm::{free_bytes, inbox_len};
use crate::{Error, Result};
use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, ToSocketAddrs};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Exit status of a launch that ran out of time (as `timeout(1)`).
pub const TIMEOUT_STATUS: i32 = 124;

/// The variable that names the address remote ranks reach the launcher's rendezvous at.
pub const ENV_RENDEZVOUS_HOST: &str = "HPCBOX_RENDEZVOUS_HOST";

/// How often the launcher looks for a caught signal.
const SIGNAL_TICK: Duration = Duration::from_millis(20);
/// How long ranks have to end after a forwarded signal before SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(1);

/// Catching the launcher's termination signals while worlds run.
mod signals {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
    use std::sync::Mutex;

    const FORWARDED: [Signal; 4] = [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
    ];
    /// Counts caught signals, so that every running launch sees each one.
    static CAUGHT: AtomicU64 = AtomicU64::new(0);
    static LAST: AtomicI32 = AtomicI32::new(0);
    /// Number of launches holding the handlers, and the actions they replaced.
    static INSTALLED: Mutex<(usize, Vec<(Signal, SigAction)>)> = Mutex::new((0, Vec::new()));

    extern "C" fn record(sig: libc::c_int) {
        LAST.store(sig, Ordering::SeqCst);
        CAUGHT.fetch_add(1, Ordering::SeqCst);
    }

    /// Handlers installed while at least one guard lives; the previous actions come back
    /// when the last one drops.
    pub(super) struct Guard {
        seen: AtomicU64,
    }

    impl Guard {
        pub(super) fn install() -> Guard {
            let mut held = INSTALLED.lock().unwrap_or_else(|p| p.into_inner());
            if held.0 == 0 {
                let action = SigAction::new(
                    SigHandler::Handler(record),
                    SaFlags::SA_RESTART,
                    SigSet::empty(),
                );
                for sig in FORWARDED {
                    // SAFETY: the handler only stores into atomics (async-signal-safe).
                    if let Ok(old) = unsafe { sigaction(sig, &action) } {
                        held.1.push((sig, old));
                    }
                }
            }
            held.0 += 1;
            Guard {
                seen: AtomicU64::new(CAUGHT.load(Ordering::SeqCst)),
            }
        }

        /// The last signal caught since the previous call, if any was.
        pub(super) fn take(&self) -> Option<Signal> {
            let now = CAUGHT.load(Ordering::SeqCst);
            if self.seen.swap(now, Ordering::SeqCst) == now {
                return None;
            }
            Signal::try_from(LAST.load(Ordering::SeqCst)).ok()
        }
    }

    impl Drop for Guard {
        fn drop(&mut self) {
            let mut held = INSTALLED.lock().unwrap_or_else(|p| p.into_inner());
            held.0 -= 1;
            if held.0 == 0 {
                for (sig, old) in held.1.drain(..) {
                    // SAFETY: puts back the action that was there before.
                    let _ = unsafe { sigaction(sig, &old) };
                }
            }
        }
    }
}

/// Where rank 0's standard input comes from; the other ranks read `/dev/null`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StdinMode {
    /// The launcher's own standard input, copied to rank 0 (as mpiexec does).
    Forward,
    /// Nothing: rank 0 reads end of file.
    Null,
    /// These bytes, then end of file.
    Bytes(Vec<u8>),
}

/// Whether local ranks are pinned to CPUs (`--bind-to`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Bind {
    /// Ranks run wherever the kernel puts them.
    #[default]
    None,
    /// The i-th local rank runs on the i-th of the launcher's usable CPUs (wrapping round).
    Core,
}

/// What to launch.
#[derive(Clone, Debug)]
pub struct LaunchSpec {
    /// Number of ranks.
    pub np: usize,
    /// The program every rank runs.
    pub program: OsString,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// Extra environment for every rank (the `HPCBOX_*` contract variables are set after
    /// these and win).
    pub env: Vec<(String, String)>,
    /// Prefix each output line with `[rank] ` (what [`launch`] does with it; a custom
    /// [`OutputSink`] given to [`launch_with`] decides for itself).
    pub tag_output: bool,
    /// End the world after this long.
    pub timeout: Option<Duration>,
    /// Rank 0's standard input.
    pub stdin: StdinMode,
    /// While the world runs, catch SIGINT, SIGTERM, SIGHUP and SIGQUIT sent to the launcher
    /// and pass them on to every rank (SIGKILL follows one second later). The ranks run in
    /// a process group of their own, so a terminal's Ctrl-C reaches only the launcher:
    /// without this, it would end the launcher and leave the ranks running.
    pub forward_signals: bool,
    /// The host of each rank, by rank (see [`crate::placement::place`]); empty: every rank
    /// on this machine. Hosts naming this machine ([`is_local`]) start locally.
    pub hosts: Vec<String>,
    /// CPU binding of the ranks on this machine.
    pub bind: Bind,
    /// The agent that starts remote ranks, as words (`AGENT HOST COMMAND` runs it); `None`:
    /// [`remote::agent_from_env`].
    pub agent: Option<Vec<String>>,
    /// The address of this machine that remote ranks connect to; `None`: chosen as the
    /// module documentation says.
    pub rendezvous_host: Option<IpAddr>,
}

impl LaunchSpec {
    /// `np` ranks of `program`, no arguments, untagged output, no timeout, stdin and
    /// signals forwarded.
    pub fn new(np: usize, program: impl Into<OsString>) -> LaunchSpec {
        LaunchSpec {
            np,
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            tag_output: false,
            timeout: None,
            stdin: StdinMode::Forward,
            forward_signals: true,
            hosts: Vec::new(),
            bind: Bind::None,
            agent: None,
            rendezvous_host: None,
        }
    }
}

/// How one rank ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RankExit {
    /// It exited with this status.
    Exited(i32),
    /// A signal (this number) killed it.
    Signaled(i32),
}

impl RankExit {
    /// How a remote rank ended, from how its agent did: a remote shell reports a rank
    /// killed by signal N as status 128 + N.
    pub fn from_agent(agent: RankExit) -> RankExit {
        match agent {
            RankExit::Exited(c) if (129..=128 + 64).contains(&c) => RankExit::Signaled(c - 128),
            other => other,
        }
    }

    /// Whether it exited with status 0.
    pub fn success(self) -> bool {
        self == RankExit::Exited(0)
    }

    /// The shell's view: the status, or 128 + the signal number.
    pub fn status(self) -> i32 {
        match self {
            RankExit::Exited(c) => c,
            RankExit::Signaled(s) => 128 + s,
        }
    }
}

/// Why a world ended early.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// A rank failed first; the launcher then killed the others.
    Rank {
        /// The rank.
        rank: usize,
        /// The node it ran on.
        host: String,
        /// How it ended.
        exit: RankExit,
    },
    /// The timeout ran out; the launcher killed every rank.
    Timeout {
        /// The timeout.
        after: Duration,
        /// Each rank still running then, with the call it said it was blocked in (`None`:
        /// not blocked in a call, or a world meeting over TCP, whose ranks do not say).
        running: Vec<(usize, Option<String>)>,
    },
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Rank {
                rank,
                host,
                exit: RankExit::Exited(c),
            } => write!(f, "rank {rank} on {host} exited with status {c}"),
            Failure::Rank {
                rank,
                host,
                exit: RankExit::Signaled(s),
            } => write!(f, "rank {rank} on {host} killed by signal {s}"),
            Failure::Timeout { after, running } => {
                write!(f, "timed out after {} s", after.as_secs_f64())?;
                for (rank, call) in running {
                    match call {
                        Some(call) => write!(f, "; rank {rank} blocked in {call}")?,
                        None => write!(f, "; rank {rank} running")?,
                    }
                }
                write!(f, "; all ranks killed")
            }
        }
    }
}

/// How a launch ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaunchOutcome {
    /// The launcher's exit status: 0, the first failing rank's status (128 + signal when a
    /// signal killed it), or [`TIMEOUT_STATUS`].
    pub status: i32,
    /// How each rank ended, by rank.
    pub exits: Vec<RankExit>,
    /// What went wrong first, if anything; its Display is the message for the user.
    pub failure: Option<Failure>,
}

/// Which output stream a line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// Receives the ranks' output, one line at a time (without its newline).
pub trait OutputSink: Send + Sync {
    /// One line from `rank` on `stream`.
    fn line(&self, rank: usize, stream: Stream, line: &[u8]);
}

/// Writes lines to the launcher's own stdout and stderr, `[rank] `-prefixed when tagging.
#[derive(Clone, Copy, Debug)]
pub struct StdSink {
    /// Prefix lines with `[rank] `.
    pub tag: bool,
}

impl StdSink {
    /// The bytes written for one line: `[rank] ` when tagging, the line, a newline.
    pub fn format(&self, rank: usize, line: &[u8]) -> Vec<u8> {
        let mut buf = Vec::with_capacity(line.len() + 8);
        if self.tag {
            buf.extend_from_slice(format!("[{rank}] ").as_bytes());
        }
        buf.extend_from_slice(line);
        buf.push(b'\n');
        buf
    }
}

impl OutputSink for StdSink {
    fn line(&self, rank: usize, stream: Stream, line: &[u8]) {
        let buf = self.format(rank, line);
        // Write errors (a closed pipe) cannot be reported anywhere better; drop the line.
        let _ = match stream {
            Stream::Stdout => std::io::stdout().lock().write_all(&buf),
            Stream::Stderr => std::io::stderr().lock().write_all(&buf),
        };
    }
}

/// Runs `spec` with output to the launcher's stdout/stderr. See [`launch_with`].
pub fn launch(spec: &LaunchSpec) -> Result<LaunchOutcome> {
    launch_with(
        spec,
        Arc::new(StdSink {
            tag: spec.tag_output,
        }),
    )
}

/// The rendezvous directory of one launch, removed on drop.
struct RendezvousDir(PathBuf);

impl Drop for RendezvousDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn jobkey() -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    format!(
        "{}-{nanos:x}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// The rendezvous directory: in `/dev/shm` when it can hold every rank's inbox, else in the
/// temporary directory (a file system in memory keeps shared-memory traffic off the disk).
fn make_rendezvous(key: &str, np: usize) -> Result<RendezvousDir> {
    use std::os::unix::fs::DirBuilderExt;
    let shm = Path::new("/dev/shm");
    let need = inbox_len(np, default_ring_bytes(np)).saturating_mul(np) as u64;
    let base = if shm.is_dir() && free_bytes(shm).is_some_and(|f| f >= need) {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let dir = base.join(format!("hpcbox-{key}"));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|e| {
            Error::io(
                format!("creating rendezvous directory {}", dir.display()),
                e,
            )
        })?;
    Ok(RendezvousDir(dir))
}

/// Where one launch's ranks meet: the directory (every rank on this machine) or the TCP
/// rendezvous (some rank elsewhere). Dropping it removes the directory or stops the server.
enum Meeting {
    /// The rendezvous directory.
    Dir(RendezvousDir),
    /// The TCP rendezvous, the `HPCBOX_RENDEZVOUS` value that reaches it, and the directory
    /// where this node's ranks of the world meet, if it has several (removed at the end,
    /// whatever became of them; other nodes' ranks remove theirs as they end).
    Tcp {
        server: Server,
        url: String,
        _here: RendezvousDir,
    },
}

impl Meeting {
    /// The directory for an all-local world, else a TCP rendezvous reachable at `host`.
    fn open(spec: &LaunchSpec, sites: &[Site], key: &str) -> Result<Meeting> {
        let first_remote = sites.iter().find_map(|s| match s {
            Site::Remote(h) => Some(h.as_str()),
            Site::Local { .. } => None,
        });
        let Some(peer) = first_remote else {
            return Ok(Meeting::Dir(make_rendezvous(key, spec.np)?));
        };
        let server = Server::start(spec.np, key)?;
        let url = server.url(rendezvous_host(spec, peer));
        let here = RendezvousDir(crate::transport::hybrid::meeting_dir(key));
        Ok(Meeting::Tcp {
            server,
            url,
            _here: here,
        })
    }

    /// The value of `HPCBOX_RENDEZVOUS`.
    fn value(&self) -> String {
        match self {
            Meeting::Dir(d) => d.0.to_string_lossy().into_owned(),
            Meeting::Tcp { url, .. } => url.clone(),
        }
    }

    /// The call `rank` said it is blocked in (file rendezvous only).
    fn blocked_call(&self, rank: usize) -> Option<String> {
        match self {
            Meeting::Dir(d) => crate::blocked::read(&d.0, rank),
            Meeting::Tcp { .. } => None,
        }
    }

    /// Ends every rank's lifeline (TCP rendezvous): remote ranks then end themselves.
    fn stop(&self) {
        if let Meeting::Tcp { server, .. } = self {
            server.stop();
        }
    }
}

/// The ranks with no exit yet, each with the call it said it is blocked in.
fn still_running(exits: &[Option<RankExit>], meeting: &Meeting) -> Vec<(usize, Option<String>)> {
    exits
        .iter()
        .enumerate()
        .filter(|(_, exit)| exit.is_none())
        .map(|(rank, _)| (rank, meeting.blocked_call(rank)))
        .collect()
}

/// The address remote ranks reach this machine at (see the module documentation).
fn rendezvous_host(spec: &LaunchSpec, peer: &str) -> IpAddr {
    spec.rendezvous_host
        .or_else(|| std::env::var(ENV_RENDEZVOUS_HOST).ok()?.parse().ok())
        .or_else(|| route_to(peer))
        .or_else(|| {
            (hostname(), 0)
                .to_socket_addrs()
                .ok()?
                .map(|a| a.ip())
                .find(|ip| ip.is_ipv4() && !ip.is_loopback())
        })
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

/// Where one rank runs.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Site {
    /// On this machine, pinned to this CPU when binding.
    Local {
        /// The CPU.
        cpu: Option<usize>,
    },
    /// On this host, through the agent.
    Remote(String),
}

/// Every rank's site: remote where `spec.hosts` names another machine, else local, the
/// i-th local rank on `cpus[i % len]` when binding.
fn sites(spec: &LaunchSpec, cpus: &[usize]) -> Vec<Site> {
    let me = hostname();
    let mut local = 0;
    (0..spec.np)
        .map(|rank| match spec.hosts.get(rank) {
            Some(h) if !is_local(h, &me) => Site::Remote(h.clone()),
            _ => {
                let bind = spec.bind == Bind::Core && !cpus.is_empty();
                let cpu = bind.then(|| cpus[local % cpus.len()]);
                local += 1;
                Site::Local { cpu }
            }
        })
        .collect()
}

/// The CPUs this process may run on, in order.
pub fn usable_cpus() -> Vec<usize> {
    use nix::sched::{sched_getaffinity, CpuSet};
    let Ok(set) = sched_getaffinity(Pid::from_raw(0)) else {
        return Vec::new();
    };
    (0..CpuSet::count())
        .filter(|&c| set.is_set(c).unwrap_or(false))
        .collect()
}

/// What every rank of one launch shares.
struct Setup {
    /// The launch's token.
    key: String,
    /// Where the ranks meet.
    meeting: Meeting,
    /// Where each rank runs.
    sites: Vec<Site>,
    /// The agent that starts remote ranks.
    agent: Vec<String>,
    /// The directory remote ranks start in (the launcher's).
    workdir: String,
    /// This machine's name.
    hostname: String,
}

impl Setup {
    /// The host `rank` runs on, as failure messages name it.
    fn host(&self, rank: usize) -> &str {
        match &self.sites[rank] {
            Site::Local { .. } => &self.hostname,
            Site::Remote(h) => h,
        }
    }

    /// How `rank` ended, given how its process (the agent, for a remote rank) did.
    fn rank_exit(&self, rank: usize, exit: RankExit) -> RankExit {
        match self.sites[rank] {
            Site::Local { .. } => exit,
            Site::Remote(_) => RankExit::from_agent(exit),
        }
    }

    /// The environment of `rank`: the spec's, then the `HPCBOX_*` contract.
    fn env(&self, spec: &LaunchSpec, rank: usize) -> Vec<(String, String)> {
        let mut env = spec.env.clone();
        env.extend([
            (ENV_RANK.to_string(), rank.to_string()),
            (ENV_SIZE.to_string(), spec.np.to_string()),
            (ENV_RENDEZVOUS.to_string(), self.meeting.value()),
            (ENV_JOBKEY.to_string(), self.key.clone()),
        ]);
        env
    }
}

/// This node's name.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Kills the whole world's process group.
fn kill_world(pgid: i32) {
    let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
}

/// The command that starts `rank`: the program itself, or the agent that starts it.
fn rank_command(spec: &LaunchSpec, setup: &Setup, rank: usize) -> Command {
    let env = setup.env(spec, rank);
    match &setup.sites[rank] {
        Site::Local { cpu } => local_command(spec, env, *cpu),
        Site::Remote(host) => {
            let text = |s: &OsString| s.to_string_lossy().into_owned();
            let args: Vec<String> = spec.args.iter().map(text).collect();
            let line = remote::command_string(&setup.workdir, &env, &text(&spec.program), &args);
            remote::agent_command(&setup.agent, host, &line)
        }
    }
}

/// The program with `env`, pinned to `cpu` if given.
fn local_command(spec: &LaunchSpec, env: Vec<(String, String)>, cpu: Option<usize>) -> Command {
    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args).envs(env);
    let Some(set) = cpu.and_then(|c| {
        let mut set = nix::sched::CpuSet::new();
        set.set(c).ok().map(|()| set)
    }) else {
        return cmd;
    };
    // SAFETY: sched_setaffinity is one system call on memory prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            nix::sched::sched_setaffinity(Pid::from_raw(0), &set).map_err(std::io::Error::from)
        });
    }
    cmd
}

fn spawn_rank(spec: &LaunchSpec, setup: &Setup, rank: usize, pgid: i32) -> std::io::Result<Child> {
    let mut cmd = rank_command(spec, setup, rank);
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(if rank == 0 && spec.stdin != StdinMode::Null {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .process_group(pgid);
    let launcher = std::process::id() as libc::pid_t;
    // SAFETY: between fork and exec only async-signal-safe calls (prctl, getppid, _exit).
    unsafe {
        cmd.pre_exec(move || {
            // A rank dies with its launcher, even one killed by SIGKILL.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != launcher {
                libc::_exit(137);
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// Copies lines of `from` to the sink; signals `done` at end of file.
fn forward_lines(
    rank: usize,
    stream: Stream,
    from: impl Read + Send + 'static,
    sink: Arc<dyn OutputSink>,
    done: mpsc::Sender<()>,
) {
    std::thread::spawn(move || {
        let mut r = BufReader::new(from);
        let mut line = Vec::new();
        loop {
            line.clear();
            match r.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if line.last() == Some(&b'\n') {
                        line.pop();
                    }
                    sink.line(rank, stream, &line);
                }
            }
        }
        let _ = done.send(());
    });
}

fn feed_stdin(mode: &StdinMode, mut to: ChildStdin) {
    match mode {
        StdinMode::Null => {}
        StdinMode::Bytes(b) => {
            let b = b.clone();
            std::thread::spawn(move || {
                let _ = to.write_all(&b);
            });
        }
        // The copier may stay blocked reading the launcher's stdin after the world ends;
        // it holds nothing else, and the process exits soon after.
        StdinMode::Forward => {
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut std::io::stdin().lock(), &mut to);
            });
        }
    }
}

/// Reaps the group's ranks as they end, sending (pid, exit) for each.
fn reap(pgid: i32, events: mpsc::Sender<(i32, RankExit)>) {
    std::thread::spawn(move || loop {
        let exit = match waitpid(Pid::from_raw(-pgid), None) {
            Ok(WaitStatus::Exited(pid, code)) => (pid.as_raw(), RankExit::Exited(code)),
            Ok(WaitStatus::Signaled(pid, sig, _)) => (pid.as_raw(), RankExit::Signaled(sig as i32)),
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(_) => return,
        };
        if events.send(exit).is_err() {
            return;
        }
    });
}

/// Starts `spec.np` ranks of `spec.program` in one new process group, with the `HPCBOX_*`
/// environment of [`crate::env`], and waits for them. Each output line goes to `sink`. When a
/// rank exits with a non-zero status or is killed by a signal, or the timeout runs out, the
/// launcher kills every rank (SIGKILL to the group, so nothing they started is left; remote
/// ranks end when their lifeline closes) and reports the first failure. The rendezvous
/// directory is removed, and the TCP rendezvous closed, in every case.
///
/// ```no_run
/// use hpcbox_comm::launch::{launch, LaunchSpec};
/// let outcome = launch(&LaunchSpec::new(4, "./mpi_hello"))?;
/// if let Some(f) = &outcome.failure {
///     eprintln!("{f}");
/// }
/// std::process::exit(outcome.status);
/// # Ok::<(), hpcbox_comm::Error>(())
/// ```
pub fn launch_with(spec: &LaunchSpec, sink: Arc<dyn OutputSink>) -> Result<LaunchOutcome> {
    if spec.np == 0 {
        return Err(Error::InvalidArgument(
            "mpiexec needs at least one rank".into(),
        ));
    }
    if !spec.hosts.is_empty() && spec.hosts.len() != spec.np {
        return Err(Error::InvalidArgument(format!(
            "{} hosts given for {} ranks: give one per rank",
            spec.hosts.len(),
            spec.np
        )));
    }
    let start = Instant::now();
    // Caught from before the first spawn: a Ctrl-C while ranks start still reaches them.
    let signals = spec.forward_signals.then(signals::Guard::install);
    let setup = prepare(spec)?;
    let world = spawn_world(spec, sink, &setup)?;
    let (exits, failure) = supervise(spec, &world, &setup, signals.as_ref(), start);
    drop(signals);
    drain_output(&world.output_done, spec.np);
    drop(setup);
    let status = match &failure {
        None => 0,
        Some(Failure::Rank { exit, .. }) => exit.status(),
        Some(Failure::Timeout { .. }) => TIMEOUT_STATUS,
    };
    Ok(LaunchOutcome {
        status,
        exits,
        failure,
    })
}

/// Sites, rendezvous and agent of a launch.
fn prepare(spec: &LaunchSpec) -> Result<Setup> {
    let key = jobkey();
    let sites = sites(spec, &usable_cpus());
    let meeting = Meeting::open(spec, &sites, &key)?;
    let workdir =
        std::env::current_dir().map_err(|e| Error::io("reading the working directory", e))?;
    Ok(Setup {
        key,
        meeting,
        sites,
        agent: spec.agent.clone().unwrap_or_else(remote::agent_from_env),
        workdir: workdir.to_string_lossy().into_owned(),
        hostname: hostname(),
    })
}

/// The started ranks of one launch.
struct World {
    /// Process id of each rank.
    pids: Vec<i32>,
    /// Their process group (rank 0's pid).
    pgid: i32,
    /// One message per output stream that reached its end.
    output_done: mpsc::Receiver<()>,
}

/// Starts every rank with its output forwarded; on a failed start, ends those started.
fn spawn_world(spec: &LaunchSpec, sink: Arc<dyn OutputSink>, setup: &Setup) -> Result<World> {
    let (done_tx, output_done) = mpsc::channel();
    let mut pids = Vec::with_capacity(spec.np);
    let mut pgid = 0;
    for rank in 0..spec.np {
        let mut child = match spawn_rank(spec, setup, rank, pgid) {
            Ok(c) => c,
            Err(source) => {
                setup.meeting.stop();
                if pgid != 0 {
                    kill_world(pgid);
                    for &pid in &pids {
                        let _ = waitpid(Pid::from_raw(pid), None);
                    }
                }
                return Err(Error::Spawn {
                    rank,
                    program: spec.program.to_string_lossy().into_owned(),
                    source,
                });
            }
        };
        let pid = child.id() as i32;
        if rank == 0 {
            pgid = pid;
        }
        pids.push(pid);
        if let Some(out) = child.stdout.take() {
            forward_lines(rank, Stream::Stdout, out, sink.clone(), done_tx.clone());
        }
        if let Some(err) = child.stderr.take() {
            forward_lines(rank, Stream::Stderr, err, sink.clone(), done_tx.clone());
        }
        if let Some(input) = child.stdin.take() {
            feed_stdin(&spec.stdin, input);
        }
    }
    Ok(World {
        pids,
        pgid,
        output_done,
    })
}

/// Waits for every rank to end, killing the world on the first failure, on the timeout, or
/// one grace period after passing on a caught signal. Returns how each rank ended and the
/// first failure.
fn supervise(
    spec: &LaunchSpec,
    world: &World,
    setup: &Setup,
    signals: Option<&signals::Guard>,
    start: Instant,
) -> (Vec<RankExit>, Option<Failure>) {
    let (ev_tx, ev_rx) = mpsc::channel();
    reap(world.pgid, ev_tx);
    let mut exits: Vec<Option<RankExit>> = vec![None; spec.np];
    let mut remaining = spec.np;
    let mut failure = None;
    let mut forwarded: Option<Instant> = None;
    let mut killed = false;
    let kill = |killed: &mut bool| {
        kill_world(world.pgid);
        setup.meeting.stop();
        *killed = true;
    };
    while remaining > 0 {
        let mut wait = match (spec.timeout, &failure) {
            (Some(t), None) => Some(t.saturating_sub(start.elapsed())),
            _ => None,
        };
        if signals.is_some() && !killed {
            wait = Some(wait.map_or(SIGNAL_TICK, |w| w.min(SIGNAL_TICK)));
        }
        let event = match wait {
            Some(w) => match ev_rx.recv_timeout(w) {
                Ok(ev) => Some(ev),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            },
            None => match ev_rx.recv() {
                Ok(ev) => Some(ev),
                Err(_) => break,
            },
        };
        if let Some(sig) = signals.and_then(signals::Guard::take) {
            let _ = killpg(Pid::from_raw(world.pgid), sig);
            forwarded.get_or_insert_with(Instant::now);
        }
        if forwarded.is_some_and(|t| t.elapsed() > KILL_GRACE) && !killed {
            kill(&mut killed);
        }
        if let (Some(after), None) = (spec.timeout, &failure) {
            if start.elapsed() >= after {
                let running = still_running(&exits, &setup.meeting);
                failure = Some(Failure::Timeout { after, running });
                kill(&mut killed);
            }
        }
        let Some((pid, exit)) = event else {
            continue;
        };
        let Some(rank) = world.pids.iter().position(|&p| p == pid) else {
            continue;
        };
        let exit = setup.rank_exit(rank, exit);
        exits[rank] = Some(exit);
        remaining -= 1;
        if failure.is_none() && !exit.success() {
            failure = Some(Failure::Rank {
                rank,
                host: setup.host(rank).to_string(),
                exit,
            });
            if remaining > 0 {
                kill(&mut killed);
            }
        }
    }
    // A rank never reaped (the reaper failed) was killed with the world.
    let exits = exits
        .into_iter()
        .map(|e| e.unwrap_or(RankExit::Signaled(Signal::SIGKILL as i32)))
        .collect();
    (exits, failure)
}

/// Output still in the pipes comes after the exits: waits for every stream's end, but not
/// for a stray process outside the group that still holds a pipe open.
fn drain_output(output_done: &mpsc::Receiver<()>, np: usize) {
    let until = Instant::now() + Duration::from_secs(2);
    for _ in 0..2 * np {
        if output_done
            .recv_timeout(until.saturating_duration_since(Instant::now()))
            .is_err()
        {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Collects output lines for assertions.
    #[derive(Default)]
    struct Collect(Mutex<Vec<(usize, Stream, String)>>);

    impl OutputSink for Collect {
        fn line(&self, rank: usize, stream: Stream, line: &[u8]) {
            let s = String::from_utf8_lossy(line).into_owned();
            self.0.lock().unwrap().push((rank, stream, s));
        }
    }

    fn sh(np: usize, script: &str) -> LaunchSpec {
        let mut s = LaunchSpec::new(np, "sh");
        s.args = vec!["-c".into(), script.into()];
        s.stdin = StdinMode::Null;
        s
    }

    fn run(spec: &LaunchSpec) -> (LaunchOutcome, Vec<(usize, Stream, String)>) {
        let sink = Arc::new(Collect::default());
        let out = launch_with(spec, sink.clone()).unwrap();
        let lines = std::mem::take(&mut *sink.0.lock().unwrap());
        (out, lines)
    }

    fn gone(pid: i32) -> bool {
        // Not running, or a zombie about to be reaped by init.
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(s) => s
                .rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with('Z')),
        }
    }

    #[test]
    fn ranks_see_the_contract_and_output_is_forwarded() {
        let (out, lines) = run(&sh(
            3,
            r#"echo "rank $HPCBOX_RANK of $HPCBOX_SIZE"; test -d "$HPCBOX_RENDEZVOUS" && echo dir >&2"#,
        ));
        assert_eq!(out.status, 0);
        assert_eq!(out.failure, None);
        assert_eq!(out.exits, vec![RankExit::Exited(0); 3]);
        for r in 0..3 {
            assert!(
                lines.contains(&(r, Stream::Stdout, format!("rank {r} of 3"))),
                "{lines:?}"
            );
            assert!(
                lines.contains(&(r, Stream::Stderr, "dir".into())),
                "{lines:?}"
            );
        }
    }

    #[test]
    fn rendezvous_directory_is_removed() {
        let (out, lines) = run(&sh(1, r#"echo "$HPCBOX_RENDEZVOUS""#));
        assert_eq!(out.status, 0);
        let dir = &lines[0].2;
        assert!(dir.contains("hpcbox-"), "{dir}");
        assert!(!Path::new(dir).exists());
    }

    #[test]
    fn failing_rank_kills_the_others_quickly() {
        let t = Instant::now();
        let (out, _) = run(&sh(
            4,
            r#"if [ "$HPCBOX_RANK" = 2 ]; then exit 3; fi; exec sleep 30"#,
        ));
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
        assert_eq!(out.status, 3);
        let msg = out.failure.unwrap().to_string();
        assert_eq!(
            msg,
            format!("rank 2 on {} exited with status 3", hostname())
        );
        assert_eq!(out.exits[2], RankExit::Exited(3));
        assert_eq!(out.exits[0], RankExit::Signaled(9));
    }

    #[test]
    fn killed_rank_reports_its_signal_and_leaves_nothing_behind() {
        let dir = std::env::temp_dir().join(format!("hpcbox-launch-test-{}", jobkey()));
        std::fs::create_dir(&dir).unwrap();
        let script = format!(
            r#"sleep 30 & echo $! > {d}/child-$HPCBOX_RANK; if [ "$HPCBOX_RANK" = 1 ]; then sleep 0.2; kill -9 $$; fi; wait"#,
            d = dir.display()
        );
        let (out, _) = run(&sh(3, &script));
        assert_eq!(out.status, 137);
        assert_eq!(
            out.failure.unwrap().to_string(),
            format!("rank 1 on {} killed by signal 9", hostname())
        );
        for r in 0..3 {
            let pid: i32 = std::fs::read_to_string(dir.join(format!("child-{r}")))
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            let t = Instant::now();
            while !gone(pid) && t.elapsed() < Duration::from_secs(5) {
                std::thread::sleep(Duration::from_millis(10));
            }
            assert!(gone(pid), "grandchild {pid} of rank {r} survived");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn timeout_kills_everything() {
        let mut spec = sh(2, "exec sleep 30");
        spec.timeout = Some(Duration::from_millis(300));
        let t = Instant::now();
        let (out, _) = run(&spec);
        assert!(t.elapsed() < Duration::from_secs(10));
        assert_eq!(out.status, TIMEOUT_STATUS);
        assert!(matches!(out.failure, Some(Failure::Timeout { .. })));
    }

    #[test]
    fn stdin_goes_to_rank_zero_only() {
        let mut spec = sh(2, r#"read line; echo "got:$line""#);
        spec.stdin = StdinMode::Bytes(b"hello\n".to_vec());
        let (out, lines) = run(&spec);
        // Rank 1 reads /dev/null: `read` fails, its echo shows nothing.
        assert_eq!(out.status, 0);
        assert!(
            lines.contains(&(0, Stream::Stdout, "got:hello".into())),
            "{lines:?}"
        );
        assert!(
            lines.contains(&(1, Stream::Stdout, "got:".into())),
            "{lines:?}"
        );
    }

    #[test]
    fn missing_program_is_an_error() {
        let spec = LaunchSpec::new(2, "/nonexistent/hpcbox-no-such-program");
        let e = launch_with(&spec, Arc::new(Collect::default())).unwrap_err();
        assert!(e.to_string().contains("could not start rank 0"), "{e}");
    }

    #[test]
    fn bind_to_core_pins_each_local_rank_to_one_cpu() {
        let cpus = usable_cpus();
        let mut spec = sh(3, "grep Cpus_allowed_list /proc/self/status");
        spec.bind = Bind::Core;
        let (out, lines) = run(&spec);
        assert_eq!(out.status, 0);
        for rank in 0..3 {
            let want = format!("Cpus_allowed_list:\t{}", cpus[rank % cpus.len()]);
            assert!(lines.contains(&(rank, Stream::Stdout, want)), "{lines:?}");
        }
    }

    #[test]
    fn sites_bind_local_ranks_in_turn_and_send_others_away() {
        let mut spec = LaunchSpec::new(4, "prog");
        spec.hosts = vec![
            "localhost".into(),
            "elsewhere".into(),
            hostname(),
            "127.0.0.1".into(),
        ];
        spec.bind = Bind::Core;
        let got = sites(&spec, &[4, 6]);
        let local = |c| Site::Local { cpu: Some(c) };
        assert_eq!(
            got,
            [
                local(4),
                Site::Remote("elsewhere".into()),
                local(6),
                local(4)
            ]
        );
        spec.bind = Bind::None;
        assert_eq!(sites(&spec, &[4, 6])[0], Site::Local { cpu: None });
    }

    #[test]
    fn remote_exit_reads_the_shell_status() {
        assert_eq!(
            RankExit::from_agent(RankExit::Exited(137)),
            RankExit::Signaled(9)
        );
        assert_eq!(
            RankExit::from_agent(RankExit::Exited(3)),
            RankExit::Exited(3)
        );
        assert_eq!(
            RankExit::from_agent(RankExit::Exited(255)),
            RankExit::Exited(255)
        );
        assert_eq!(
            RankExit::from_agent(RankExit::Signaled(9)),
            RankExit::Signaled(9)
        );
    }

    #[test]
    fn hosts_must_match_the_ranks() {
        let mut spec = LaunchSpec::new(2, "true");
        spec.hosts = vec!["a".into()];
        let e = launch_with(&spec, Arc::new(Collect::default())).unwrap_err();
        assert!(e.to_string().contains("one per rank"), "{e}");
    }

    #[test]
    fn std_sink_tags() {
        assert_eq!(StdSink { tag: true }.format(12, b"hi"), b"[12] hi\n");
        assert_eq!(StdSink { tag: false }.format(12, b"hi"), b"hi\n");
    }
}

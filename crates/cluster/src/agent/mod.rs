//! The node agent (PBS's mom): connects to the server, runs the jobs it is sent, enforces
//! their limits, and reports their usage and exits.
//!
//! It reaches the server through the Unix socket of a shared state directory, or over TCP
//! ([`AgentConfig::server_address`]) when it runs on another machine; the protocol is the same.
//!
//! Jobs outlive the connection: when the server goes away the agent keeps running them,
//! reconnects with a short backoff, re-reports them in its [`AgentMessage::Hello`], and then
//! delivers every report held back while it was away.
//!
//! ```no_run
//! use hpcbox_cluster::agent::{self, AgentConfig};
//! use hpcbox_cluster::protocol::NodeReport;
//! let node = NodeReport {
//!     name: "node1".into(),
//!     host: "laptop".into(),
//!     ncpus: 4,
//!     mem_kb: 8 << 20,
//!     ngpus: 0,
//!     cpu_ids: vec![],
//! };
//! let config = AgentConfig::new(node, "/state/agent.sock", "secret", "/state/aux");
//! agent::run(config)?;
//! # Ok::<(), std::io::Error>(())
//! ```

mod job;
mod mpi_env;
mod setup;
mod signals;
mod tasks;
mod terminal;

use std::collections::VecDeque;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use hpcbox_pbs::exit::{JOB_EXEC_FAIL2, JOB_EXEC_RETRY};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpStream, UnixStream};
use tokio::signal::unix::Signal;
use tokio::sync::mpsc;
use tokio::time::{Instant, Interval, MissedTickBehavior};

use crate::protocol::{
    self, AgentMessage, JobStart, NodeReport, RunningReport, ServerMessage, TaskStart, TmAnswer,
    Usage, HEARTBEAT_INTERVAL,
};
use crate::usage::Limits;
use crate::{cgroup, exec};
use job::Job;
pub use signals::parse_signal;

/// PBS's default mom port, for `PBS_MOMPORT`.
pub const DEFAULT_MOM_PORT: u16 = 15002;

/// The first and the longest wait between attempts to reach the server.
const RECONNECT_FIRST: Duration = Duration::from_millis(50);
const RECONNECT_MAX: Duration = Duration::from_secs(1);

/// How long a TCP connection attempt may take (a host that is down answers nothing).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a write to the server may block before the agent gives up on the connection
/// (and keeps the report for the next one): jobs must not go unminded behind a stuck server.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// How a node agent runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    /// The vnode this agent serves, as it reports it.
    pub node: NodeReport,
    /// The Unix socket of the server's agent listener.
    pub server_socket: PathBuf,
    /// The server's TCP address for agents (`HOST:PORT`); when set it is used instead of
    /// [`server_socket`](Self::server_socket).
    pub server_address: Option<String>,
    /// The installation's token, presented in the hello.
    pub token: String,
    /// Where job scripts and node files go (PBS's `$PBS_HOME/aux`).
    pub aux_dir: PathBuf,
    /// Where job `TMPDIR`s go, as `pbs.<jobid>` (PBS's `$tmpdir`, default `/var/tmp`).
    pub tmp_root: PathBuf,
    /// Between SIGTERM and SIGKILL when a job goes past a limit (PBS's `kill_delay`).
    pub kill_delay: Duration,
    /// How often jobs are measured and their limits checked.
    pub poll_interval: Duration,
    /// How often a running job's usage is reported to the server.
    pub usage_interval: Duration,
    /// The environment every job starts from (PBS's `pbs_environment`).
    pub base_env: Vec<(String, String)>,
    /// The agent's port, for `PBS_MOMPORT`.
    pub mom_port: u16,
    /// Where this agent takes task requests (`HPCBOX_TM_SOCKET`), and its `pbs_tmrsh` link;
    /// set once it listens.
    pub tm: Option<(PathBuf, PathBuf)>,
}

impl AgentConfig {
    /// A configuration with PBS's defaults: `TMPDIR`s in `/var/tmp`, a 10 s kill delay,
    /// measurements every second, usage reports every 10 s, and a base environment built by
    /// [`base_environment`] from this process's.
    pub fn new(
        node: NodeReport,
        server_socket: impl Into<PathBuf>,
        token: impl Into<String>,
        aux_dir: impl Into<PathBuf>,
    ) -> AgentConfig {
        AgentConfig {
            node,
            server_socket: server_socket.into(),
            server_address: None,
            token: token.into(),
            aux_dir: aux_dir.into(),
            tmp_root: PathBuf::from("/var/tmp"),
            kill_delay: Duration::from_secs(10),
            poll_interval: Duration::from_secs(1),
            usage_interval: Duration::from_secs(10),
            base_env: base_environment(|name| std::env::var(name).ok()),
            mom_port: DEFAULT_MOM_PORT,
            tm: None,
        }
    }
}

/// The base environment of jobs, as PBS's installer writes `pbs_environment`: `PATH=/bin:/usr/bin`,
/// plus `LANG` and `TZ` when `lookup` finds them set.
///
/// ```
/// use hpcbox_cluster::agent::base_environment;
/// let env = base_environment(|name| (name == "TZ").then(|| "UTC".to_string()));
/// assert_eq!(env, [("PATH".to_string(), "/bin:/usr/bin".to_string()),
///                  ("TZ".to_string(), "UTC".to_string())]);
/// ```
pub fn base_environment(lookup: impl Fn(&str) -> Option<String>) -> Vec<(String, String)> {
    let mut env = vec![("PATH".to_string(), "/bin:/usr/bin".to_string())];
    for name in ["LANG", "TZ"] {
        if let Some(value) = lookup(name).filter(|value| !value.is_empty()) {
            env.push((name.to_string(), value));
        }
    }
    env
}

/// Runs the agent on a runtime of its own until the server refuses it (an error).
///
/// Call it from a plain thread; inside a tokio runtime, await [`serve`] instead.
pub fn run(config: AgentConfig) -> io::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(serve(config))
}

/// The agent itself: makes this process a child subreaper, then talks to the server, and
/// reconnects whenever the connection is lost, for as long as the server does not refuse it.
///
/// Returns only with an error: the server's refusal (kind `PermissionDenied`), or the failure
/// to become a subreaper. Dropping the future stops the agent and leaves its jobs running.
/// The agent reaps every child of this process that [`exec::start`] did not start: run it in a
/// process of its own.
pub async fn serve(config: AgentConfig) -> io::Result<()> {
    exec::become_subreaper()?;
    let mut ticker = tokio::time::interval(config.poll_interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // A job's end is noticed when its top process exits, not at the next tick.
    let mut children = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())?;
    let (terminal_tx, terminal_rx) = mpsc::unbounded_channel();
    let mut agent = Agent {
        config,
        jobs: Vec::new(),
        outbox: VecDeque::new(),
        connected: false,
        last_heartbeat: Instant::now(),
        memory_cgroups: cgroup::memory_hierarchy(),
        waiting: std::collections::HashMap::new(),
        next_ask: 1,
        tasks: Vec::new(),
        reaching: Vec::new(),
        terminal_events: terminal_tx,
    };
    let mut inbound = Inbound {
        asks: agent.listen_for_tasks(),
        terminal: terminal_rx,
    };
    let mut backoff = RECONNECT_FIRST;
    loop {
        match agent.reach(&mut ticker, &mut children, &mut inbound).await {
            Ok(stream) => {
                backoff = RECONNECT_FIRST;
                let outcome = agent
                    .converse(stream, &mut ticker, &mut children, &mut inbound)
                    .await;
                agent.disconnected();
                match outcome {
                    Ok(()) => tracing::warn!("the server closed the connection"),
                    Err(Disconnect::Refused(reason)) => {
                        tracing::error!(%reason, "the server refused this agent");
                        return Err(io::Error::new(
                            io::ErrorKind::PermissionDenied,
                            format!("the server refused the agent: {reason}"),
                        ));
                    }
                    Err(Disconnect::Io(err)) => tracing::warn!(%err, "lost the server"),
                }
            }
            Err(err) => {
                tracing::debug!(%err, server = %Target::of(&agent.config), "cannot reach the server")
            }
        }
        agent
            .idle(backoff, &mut ticker, &mut children, &mut inbound)
            .await;
        backoff = (backoff * 2).min(RECONNECT_MAX);
    }
}

/// Where the server is.
#[derive(Debug, Clone)]
enum Target {
    Unix(PathBuf),
    Tcp(String),
}

impl Target {
    fn of(config: &AgentConfig) -> Target {
        match &config.server_address {
            Some(address) => Target::Tcp(address.clone()),
            None => Target::Unix(config.server_socket.clone()),
        }
    }

    /// Opens a connection: the Unix socket, or TCP within [`CONNECT_TIMEOUT`].
    async fn connect(self) -> io::Result<Box<dyn Duplex>> {
        match self {
            Target::Unix(path) => Ok(Box::new(UnixStream::connect(path).await?)),
            Target::Tcp(address) => {
                let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&address))
                    .await
                    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no answer"))??;
                stream.set_nodelay(true)?;
                Ok(Box::new(stream))
            }
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Unix(path) => write!(f, "{}", path.display()),
            Target::Tcp(address) => write!(f, "tcp {address}"),
        }
    }
}

/// A connection to the server, whatever carries it.
trait Duplex: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Duplex for T {}

/// Why a conversation with the server ended.
#[derive(Debug)]
enum Disconnect {
    Refused(String),
    Io(io::Error),
}

impl From<io::Error> for Disconnect {
    fn from(err: io::Error) -> Self {
        Disconnect::Io(err)
    }
}

/// The agent's state, which outlives connections.
struct Agent {
    config: AgentConfig,
    jobs: Vec<Job>,
    /// Reports not yet written to the server, oldest first.
    outbox: VecDeque<AgentMessage>,
    /// Whether the server has welcomed this agent on the current connection.
    connected: bool,
    /// When the last heartbeat was queued (or the welcome came).
    last_heartbeat: Instant,
    /// The hierarchy that holds jobs' memory cgroups, when this machine has one.
    memory_cgroups: Option<(PathBuf, cgroup::Version)>,
    /// Task requests forwarded to the server, by this agent's number, and where each answer
    /// goes.
    waiting: std::collections::HashMap<u64, tokio::sync::oneshot::Sender<TmAnswer>>,
    next_ask: u64,
    /// Tasks of jobs of other hosts' agents that this agent runs.
    tasks: Vec<tasks::Task>,
    /// Interactive jobs whose `qsub` is being reached, each with the kill asked for meanwhile.
    reaching: Vec<(String, Option<u64>)>,
    /// Where the threads of interactive jobs' terminals report.
    terminal_events: mpsc::UnboundedSender<terminal::TerminalEvent>,
}

/// What comes to the agent besides the server's messages: task requests of its jobs' processes,
/// and what becomes of interactive jobs' `qsub` (reached, or not; gone).
struct Inbound {
    asks: Asks,
    terminal: mpsc::UnboundedReceiver<terminal::TerminalEvent>,
}

/// Where task requests arrive (none when the agent could not listen).
type Asks = Option<tokio::sync::mpsc::UnboundedReceiver<tasks::Ask>>;

/// The next task request, or never.
async fn next_ask(asks: &mut Asks) -> tasks::Ask {
    match asks {
        Some(received) => match received.recv().await {
            Some(ask) => ask,
            None => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

impl Agent {
    /// Connects to the server, minding the jobs while the attempt lasts.
    async fn reach(
        &mut self,
        ticker: &mut Interval,
        children: &mut Signal,
        inbound: &mut Inbound,
    ) -> io::Result<Box<dyn Duplex>> {
        let attempt = Target::of(&self.config).connect();
        tokio::pin!(attempt);
        loop {
            tokio::select! {
                stream = &mut attempt => return stream,
                _ = ticker.tick() => self.tick().await,
                _ = children.recv() => self.reap_ended().await,
                Some(event) = inbound.terminal.recv() => self.on_terminal_event(event),
            }
        }
    }

    /// One connection: the hello, then messages both ways until it breaks.
    async fn converse(
        &mut self,
        stream: Box<dyn Duplex>,
        ticker: &mut Interval,
        children: &mut Signal,
        inbound: &mut Inbound,
    ) -> Result<(), Disconnect> {
        let (read, mut write) = tokio::io::split(stream);
        let mut lines = BufReader::new(read).split(b'\n');
        let hello = AgentMessage::Hello {
            token: self.config.token.clone(),
            node: self.config.node.clone(),
            // Jobs still reaching their qsub run here too, as far as the server is concerned.
            running: self
                .jobs
                .iter()
                .map(Job::running_report)
                .chain(self.reaching.iter().map(|(job_id, _)| RunningReport {
                    job_id: job_id.clone(),
                    session: 0,
                    usage: Usage::default(),
                }))
                .collect(),
            tasks: self.tasks.iter().map(tasks::Task::report).collect(),
        };
        send(&mut write, &hello).await?;
        loop {
            tokio::select! {
                line = lines.next_segment() => match line? {
                    Some(line) => self.on_line(&line).await?,
                    None => return Ok(()),
                },
                _ = ticker.tick() => self.tick().await,
                _ = children.recv() => self.reap_ended().await,
                ask = next_ask(&mut inbound.asks) => self.on_ask(ask),
                Some(event) = inbound.terminal.recv() => self.on_terminal_event(event),
            }
            if self.connected {
                self.flush(&mut write).await?;
            }
        }
    }

    /// Waits `pause` before the next connection attempt, minding the jobs meanwhile.
    async fn idle(
        &mut self,
        pause: Duration,
        ticker: &mut Interval,
        children: &mut Signal,
        inbound: &mut Inbound,
    ) {
        let until = Instant::now() + pause;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => return,
                _ = ticker.tick() => self.tick().await,
                _ = children.recv() => self.reap_ended().await,
                ask = next_ask(&mut inbound.asks) => {
                    let _ = ask.answer.send(tasks::refusal("the agent has lost its server"));
                }
                Some(event) = inbound.terminal.recv() => self.on_terminal_event(event),
            }
        }
    }

    /// Listens for task requests of its jobs' processes (`pbs_tmrsh`); without, jobs get no
    /// task launcher.
    fn listen_for_tasks(&mut self) -> Asks {
        let (socket, tmrsh) = tasks::paths(&self.config.aux_dir, &self.config.node.name);
        let listening = tasks::link_tmrsh(&tmrsh).and_then(|()| tasks::listen(&socket));
        match listening {
            Ok(asks) => {
                self.config.tm = Some((socket, tmrsh));
                Some(asks)
            }
            Err(err) => {
                tracing::warn!(%err, socket = %socket.display(), "no task launcher for jobs");
                None
            }
        }
    }

    /// A task request of a job's process: forwarded to the server when the process is the
    /// job owner's (or root's), else refused.
    fn on_ask(&mut self, ask: tasks::Ask) {
        if !self.connected {
            let _ = ask
                .answer
                .send(tasks::refusal("the agent has lost its server"));
            return;
        }
        let request = ask.request;
        let owner = self
            .jobs
            .iter()
            .find(|job| job.id() == request.job_id)
            .map(Job::owner_uid);
        match owner {
            None => {
                let why = format!("job {} does not run here", request.job_id);
                let _ = ask.answer.send(tasks::refusal(why));
            }
            Some(uid) if uid != ask.uid && ask.uid != 0 => {
                let why = format!("job {} is not yours", request.job_id);
                let _ = ask.answer.send(tasks::refusal(why));
            }
            Some(_) => {
                let task = self.next_ask;
                self.next_ask += 1;
                self.waiting.insert(task, ask.answer);
                self.outbox
                    .push_back(AgentMessage::TaskRequest { task, request });
            }
        }
    }

    /// Runs a task of a job for another host's agent; its end is reported when it exits.
    fn start_task(&mut self, start: TaskStart) {
        let started = setup::task_launch(&start).and_then(|launch| {
            exec::start(&start.job_id, &launch).map_err(|err| setup::StartError {
                exit_status: spawn_failure_status(&err),
                message: err.to_string(),
            })
        });
        match started {
            Ok(process) => {
                tracing::info!(job = %start.job_id, task = start.task, "task started");
                self.tasks.push(tasks::Task {
                    id: start.task,
                    job_id: start.job_id,
                    origin: start.origin,
                    process,
                });
            }
            Err(failure) => self.outbox.push_back(AgentMessage::TaskEnded {
                task: start.task,
                origin: start.origin,
                exit_status: 255,
                error: Some(failure.message),
            }),
        }
    }

    /// Reports the tasks whose process has ended.
    fn reap_tasks(&mut self) {
        let mut index = 0;
        while index < self.tasks.len() {
            let ended = match self.tasks[index].process.try_wait() {
                Ok(None) => None,
                Ok(Some((code, signal))) => Some(code.unwrap_or(128 + signal.unwrap_or(0))),
                Err(_) => Some(255),
            };
            let Some(exit_status) = ended else {
                index += 1;
                continue;
            };
            let task = self.tasks.swap_remove(index);
            tracing::info!(job = %task.job_id, task = task.id, exit_status, "task ended");
            self.outbox.push_back(AgentMessage::TaskEnded {
                task: task.id,
                origin: task.origin,
                exit_status,
                error: None,
            });
        }
    }

    fn disconnected(&mut self) {
        self.connected = false;
        // Usage reports are stale by the next connection; exits and start replies are not.
        self.outbox.retain(|message| {
            !matches!(
                message,
                AgentMessage::Usage { .. } | AgentMessage::Heartbeat
            )
        });
    }

    /// Writes the outbox; a report leaves it only once written.
    async fn flush<W: AsyncWrite + Unpin>(&mut self, write: &mut W) -> io::Result<()> {
        while let Some(message) = self.outbox.front() {
            send(write, message).await?;
            self.outbox.pop_front();
        }
        Ok(())
    }

    async fn on_line(&mut self, line: &[u8]) -> Result<(), Disconnect> {
        if line.trim_ascii().is_empty() {
            return Ok(());
        }
        let message = match protocol::decode_line::<ServerMessage>(line) {
            Ok(message) => message,
            Err(err) => {
                tracing::warn!(%err, line = %String::from_utf8_lossy(line), "skipping a malformed line from the server");
                return Ok(());
            }
        };
        match message {
            ServerMessage::Welcome { server } => {
                tracing::info!(%server, "connected to the server");
                self.connected = true;
                self.last_heartbeat = Instant::now();
            }
            ServerMessage::Refused { reason } => return Err(Disconnect::Refused(reason)),
            _ if !self.connected => {
                tracing::warn!(?message, "ignoring a message sent before the welcome");
            }
            ServerMessage::Start(start) => self.start(*start),
            ServerMessage::Signal { job_id, signal } => self.signal(&job_id, &signal),
            ServerMessage::Kill { job_id, grace } => self.kill(&job_id, grace),
            ServerMessage::StartTask(start) => self.start_task(*start),
            ServerMessage::TaskEnded {
                task,
                exit_status,
                error,
            } => {
                if let Some(answer) = self.waiting.remove(&task) {
                    let _ = answer.send(TmAnswer { exit_status, error });
                }
            }
        }
        Ok(())
    }

    /// Starts a job and queues the reply: `Started`, or `StartFailed` with PBS's status. An
    /// interactive job first reaches its `qsub`, in a thread of its own (a host that does not
    /// answer would hold the agent up for as long as the attempt lasts); it starts once
    /// reached ([`Agent::on_reached`]).
    fn start(&mut self, start: JobStart) {
        if let Some(job) = self.jobs.iter().find(|job| job.id() == start.job_id) {
            tracing::warn!(job = %start.job_id, "asked to start a job that already runs");
            self.outbox.push_back(AgentMessage::Started {
                job_id: start.job_id,
                session: job.session(),
            });
            return;
        }
        if self.reaching.iter().any(|(id, _)| *id == start.job_id) {
            tracing::warn!(job = %start.job_id, "asked to start a job that is starting");
            return;
        }
        let launched = setup::prepare(&self.config, &start).and_then(|prepared| {
            if start.interactive.is_none() {
                return self.launch(&start, prepared, None).map(Some);
            }
            self.reaching.push((start.job_id.clone(), None));
            terminal::reach(start.clone(), prepared, self.terminal_events.clone());
            Ok(None)
        });
        if let Some(launched) = launched.transpose() {
            self.report_start(&start.job_id, launched);
        }
    }

    fn on_terminal_event(&mut self, event: terminal::TerminalEvent) {
        match event {
            terminal::TerminalEvent::Reached(reached) => self.on_reached(*reached),
            terminal::TerminalEvent::QsubLeft(job_id) => self.hang_up(&job_id),
        }
    }

    /// The `qsub` of interactive job `job_id` went away: the job is hung up as a closed
    /// terminal hangs up its session (SIGHUP, then SIGCONT for stopped processes) — if it
    /// still runs here; the signals go to its processes only.
    fn hang_up(&mut self, job_id: &str) {
        if let Some(job) = self.jobs.iter().find(|job| job.id() == job_id) {
            tracing::info!(job = job_id, "its qsub went away: hanging the job up");
            job.signal(nix::sys::signal::Signal::SIGHUP);
            job.signal(nix::sys::signal::Signal::SIGCONT);
        }
    }

    /// An interactive job's `qsub` reached (or not): the job starts on its terminal, or fails
    /// to; a kill asked for meanwhile applies now.
    fn on_reached(&mut self, reached: terminal::Reached) {
        let terminal::Reached {
            start,
            mut prepared,
            terminal,
        } = reached;
        let Some(at) = self.reaching.iter().position(|(id, _)| *id == start.job_id) else {
            return;
        };
        let (job_id, kill) = self.reaching.swap_remove(at);
        let launched = match terminal {
            Err(failure) => {
                prepared.files.remove();
                Err(failure)
            }
            Ok(terminal) => {
                prepared.on_terminal(&terminal.path, &terminal.term);
                self.launch(&start, prepared, Some(terminal))
            }
        };
        self.report_start(&job_id, launched);
        if let Some(grace) = kill {
            self.kill(&job_id, grace);
        }
    }

    /// Queues the reply to a start: `Started` (the job now minded here), or `StartFailed`.
    fn report_start(&mut self, job_id: &str, launched: Result<Job, setup::StartError>) {
        let reply = match launched {
            Ok(job) => {
                let reply = AgentMessage::Started {
                    job_id: job_id.to_string(),
                    session: job.session(),
                };
                tracing::info!(job = job_id, session = job.session(), "job started");
                self.jobs.push(job);
                reply
            }
            Err(failure) => {
                tracing::warn!(job = job_id, status = failure.exit_status, message = %failure.message, "job start failed");
                AgentMessage::StartFailed {
                    job_id: job_id.to_string(),
                    exit_status: failure.exit_status,
                    message: failure.message,
                }
            }
        };
        self.outbox.push_back(reply);
    }

    /// Starts a prepared job (on `terminal`, an interactive job's, when given).
    fn launch(
        &self,
        start: &JobStart,
        mut prepared: setup::Prepared,
        terminal: Option<terminal::Terminal>,
    ) -> Result<Job, setup::StartError> {
        let owner_uid = prepared
            .launch
            .credentials
            .as_ref()
            .map_or_else(|| nix::unistd::geteuid().as_raw(), |c| c.uid.as_raw());
        let cgroup = self.job_cgroup(start);
        prepared.launch.cgroup_procs = cgroup.as_ref().map(cgroup::MemCgroup::procs_file);
        let process = exec::start(&start.job_id, &prepared.launch).map_err(|err| {
            prepared.files.remove();
            // Nothing entered it: the job's first process never started.
            if let Some(cgroup) = cgroup.as_ref().filter(|c| !c.remove()) {
                tracing::warn!(cgroup = %cgroup.path().display(), "cannot remove the job's cgroup");
            }
            setup::StartError {
                exit_status: spawn_failure_status(&err),
                message: err.to_string(),
            }
        })?;
        let relay = terminal.and_then(|terminal| {
            terminal
                .relay(&start.job_id, self.terminal_events.clone())
                .inspect_err(|err| {
                    tracing::warn!(job = %start.job_id, %err, "cannot relay the job's terminal");
                })
                .ok()
        });
        let limits = Limits {
            walltime: start.walltime_limit,
            mem_kb: start.mem_limit_kb,
        };
        Ok(Job::new(
            start.job_id.clone(),
            process,
            prepared.files,
            prepared.messages,
            limits,
            start.threads,
        )
        .with_cgroup(cgroup)
        .with_terminal(relay)
        .owned_by(owner_uid))
    }

    /// The job's memory cgroup, holding it to its `mem` when it has one, where this machine
    /// offers cgroups and the agent may make them; otherwise the agent's sampling alone holds
    /// the job to its limit, and its processes are found by their session and environment.
    fn job_cgroup(&self, start: &JobStart) -> Option<cgroup::MemCgroup> {
        let (hierarchy, version) = self.memory_cgroups.as_ref()?;
        let installation = crate::home::path_tag(&self.config.aux_dir);
        let (id, limit) = (&start.job_id, start.mem_limit_kb);
        match cgroup::MemCgroup::create((hierarchy, *version), &installation, id, limit) {
            Ok(cgroup) => Some(cgroup),
            Err(err) => {
                tracing::debug!(job = %start.job_id, %err, "no memory cgroup for the job");
                None
            }
        }
    }

    fn job_mut(&mut self, job_id: &str) -> Option<&mut Job> {
        let job = self.jobs.iter_mut().find(|job| job.id() == job_id);
        if job.is_none() {
            tracing::warn!(job = job_id, "no such job on this node");
        }
        job
    }

    fn signal(&mut self, job_id: &str, name: &str) {
        let Some(signal) = parse_signal(name) else {
            tracing::warn!(job = job_id, signal = name, "unknown signal");
            return;
        };
        if let Some(job) = self.job_mut(job_id) {
            let count = job.signal(signal);
            tracing::info!(job = job_id, ?signal, count, "signalled the job");
        }
    }

    fn kill(&mut self, job_id: &str, grace: u64) {
        if let Some((_, kill)) = self.reaching.iter_mut().find(|(id, _)| id == job_id) {
            // Killed as soon as it has started (or failed to).
            *kill = Some(grace);
            return;
        }
        // Tasks it runs here for another host's agent (`pbs_tmrsh`) end at once.
        let tasks: Vec<&tasks::Task> = self.tasks.iter().filter(|t| t.job_id == job_id).collect();
        let had_tasks = !tasks.is_empty();
        for task in tasks {
            task.process.signal_all(nix::sys::signal::Signal::SIGKILL);
        }
        if let Some(job) = self.jobs.iter_mut().find(|job| job.id() == job_id) {
            tracing::info!(job = job_id, grace, "killing the job");
            job.terminate(Duration::from_secs(grace), std::time::Instant::now());
        } else if !had_tasks {
            self.kill_orphan(job_id);
        }
    }

    /// Kills what is left of a job this agent does not know: one an earlier run of the agent
    /// started (the server asks before it requeues the job, so that it never runs twice).
    /// Its processes are found by their environment (its id and its node file in this
    /// agent's aux directory, so no other installation's job matches); its files go too.
    fn kill_orphan(&mut self, job_id: &str) {
        let nodefile = self.config.aux_dir.join(job_id);
        let entries = [
            format!("PBS_JOBID={job_id}"),
            format!("PBS_NODEFILE={}", nodefile.display()),
        ];
        let entries: Vec<&str> = entries.iter().map(String::as_str).collect();
        let mut killed = exec::kill_marked(&entries, Duration::from_secs(2));
        // Its cgroup holds also what left its session and environment.
        if let Some(cgroup) = self
            .memory_cgroups
            .as_ref()
            .and_then(|(hierarchy, version)| {
                let installation = crate::home::path_tag(&self.config.aux_dir);
                cgroup::MemCgroup::left_behind((hierarchy, *version), &installation, job_id)
            })
        {
            killed += exec::kill_cgroup(&cgroup.procs_file(), Duration::from_secs(2));
            // The kernel lets go of a cgroup a moment after its last process died.
            let removed = (0..20).any(|_| {
                cgroup.remove() || {
                    std::thread::sleep(Duration::from_millis(10));
                    false
                }
            });
            if !removed {
                tracing::warn!(cgroup = %cgroup.path().display(), "cannot remove the job's cgroup");
            }
        }
        tracing::info!(
            job = job_id,
            killed,
            "killed what an earlier agent left of the job"
        );
        let script = self.config.aux_dir.join(format!("{job_id}.SC"));
        for file in [nodefile, script] {
            let _ = std::fs::remove_file(file);
        }
    }

    /// Minds every job: reaps orphans, ends the jobs whose top process ended, measures the
    /// rest, enforces their limits and queues their usage reports.
    async fn tick(&mut self) {
        self.reap_ended().await;
        if self.connected && self.last_heartbeat.elapsed() >= HEARTBEAT_INTERVAL {
            self.outbox.push_back(AgentMessage::Heartbeat);
            self.last_heartbeat = Instant::now();
        }
        let now = std::time::Instant::now();
        for job in &mut self.jobs {
            job.sample(now);
            job.enforce_limits(self.config.kill_delay, now);
            job.escalate(now);
            if let Some(report) = job.usage_report(self.config.usage_interval, now) {
                if self.connected {
                    self.outbox.push_back(report);
                }
            }
        }
    }

    /// Ends the jobs and tasks whose top process has exited, then reaps orphans (with the
    /// top processes collected first, no exited one stands in front of the orphans).
    async fn reap_ended(&mut self) {
        self.reap_tasks();
        let mut index = 0;
        while index < self.jobs.len() {
            if let Some(exit_status) = self.jobs[index].exit_status() {
                let job = self.jobs.swap_remove(index);
                let report = job.finish(exit_status).await;
                self.outbox.push_back(report);
                continue;
            }
            index += 1;
        }
        exec::reap_orphans();
    }
}

/// Writes one message, within [`WRITE_TIMEOUT`].
async fn send<W: AsyncWrite + Unpin>(write: &mut W, message: &AgentMessage) -> io::Result<()> {
    let line = protocol::encode_line(message)?;
    tokio::time::timeout(WRITE_TIMEOUT, write.write_all(&line))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "the server does not read"))?
}

/// A failed `fork`/`exec`: retried later when the node is short of processes or memory, as
/// PBS does; otherwise the job fails for good.
fn spawn_failure_status(err: &io::Error) -> i32 {
    // EAGAIN and ENOMEM, by kind: exec's errors carry the kind but not always the errno.
    match err.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::OutOfMemory => JOB_EXEC_RETRY,
        _ => JOB_EXEC_FAIL2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::errno::Errno;

    #[test]
    fn fork_shortages_are_retried() {
        let status = |errno: Errno| spawn_failure_status(&io::Error::from(errno));
        assert_eq!(status(Errno::EAGAIN), JOB_EXEC_RETRY);
        assert_eq!(status(Errno::ENOMEM), JOB_EXEC_RETRY);
        assert_eq!(status(Errno::ENOENT), JOB_EXEC_FAIL2);
        assert_eq!(status(Errno::EACCES), JOB_EXEC_FAIL2);
    }

    #[test]
    fn base_environment_skips_empty_values() {
        let env = base_environment(|name| match name {
            "LANG" => Some(String::new()),
            "TZ" => Some("UTC".into()),
            _ => Some("ignored".into()),
        });
        let names: Vec<&str> = env.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, ["PATH", "TZ"]);
    }
}

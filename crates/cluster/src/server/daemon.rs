//! The server daemon: the client API over a Unix socket (HTTP with JSON bodies, the peer's uid
//! naming the user), the agents' socket and optional TCP listener (one JSON message per line,
//! the same on both) and the scheduling loop.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{ConnectInfo, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::io::{AsyncBufRead, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{mpsc, Notify};

use super::core::Core;
use crate::api::{
    Answer, JobAction, NodeChange, StatusItem, StatusRequest, SubmitRequest, Submitted,
};
use crate::home::StateDir;
use crate::protocol::{
    decode_line, encode_line, read_line, AgentMessage, NodeReport, RunningReport, ServerMessage,
    TaskReport, HEARTBEAT_INTERVAL, MAX_AGENT_LINE,
};
use crate::store::Store;
use hpcbox_pbs::newjob::DEFAULT_QUEUE;

/// How the server is started.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The state directory: database, sockets, token, logs.
    pub state: StateDir,
    /// The server's name, the suffix of job ids.
    pub name: String,
    /// Queues to create if missing (PBS's default queue always exists).
    pub queues: Vec<String>,
    /// Seconds between SIGTERM and SIGKILL when a running job is deleted.
    pub kill_delay: u64,
    /// How long finished jobs stay visible to `qstat -x`, in seconds.
    pub history_seconds: u64,
    /// Where to accept agents over TCP as well (`0.0.0.0:15001`), for nodes on other machines.
    pub agents_listen: Option<String>,
}

/// How long a new agent connection may take to present its hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a welcomed agent may stay silent (it sends heartbeats) before the server drops it.
const AGENT_SILENCE: Duration = HEARTBEAT_INTERVAL.saturating_mul(3);

/// The path of the agents' socket in a state directory.
pub fn agent_socket(state: &StateDir) -> PathBuf {
    state.root().join("agent.sock")
}

struct Shared {
    core: Mutex<Core>,
    wake: Notify,
    agents: Mutex<HashMap<String, mpsc::UnboundedSender<ServerMessage>>>,
    pending: Mutex<HashMap<String, Vec<ServerMessage>>>,
    token: String,
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// Runs the server until SIGTERM or SIGINT.
pub async fn run(config: ServerConfig) -> std::io::Result<()> {
    std::fs::create_dir_all(config.state.root())?;
    let store = Store::open(&config.state.database()).map_err(std::io::Error::other)?;
    let mut core = Core::open(&config.name, store, jiff::tz::TimeZone::system())
        .map_err(std::io::Error::other)?;
    core.set_kill_delay(config.kill_delay);
    core.set_history_duration(config.history_seconds);
    for queue in std::iter::once(DEFAULT_QUEUE.to_string()).chain(config.queues.iter().cloned()) {
        core.ensure_queue(&queue).map_err(std::io::Error::other)?;
    }
    let token = super::token::read_or_create(&config.state.token())?;
    let shared = Arc::new(Shared {
        core: Mutex::new(core),
        wake: Notify::new(),
        agents: Mutex::new(HashMap::new()),
        pending: Mutex::new(HashMap::new()),
        token,
    });
    let api = bind(&config.state.socket())?;
    let agents = bind(&agent_socket(&config.state))?;
    let tcp_agents = match &config.agents_listen {
        Some(address) => Some(bind_tcp(address).await?),
        None => None,
    };
    tracing::info!(
        "server {} listening in {}",
        config.name,
        config.state.root().display()
    );
    let app = router(shared.clone());
    let api_task = tokio::spawn(async move {
        axum::serve(api, app.into_make_service_with_connect_info::<PeerUid>()).await
    });
    tokio::spawn(accept_agents(agents, shared.clone()));
    if let Some(listener) = tcp_agents {
        tokio::spawn(accept_agents(listener, shared.clone()));
    }
    tokio::spawn(schedule_loop(shared.clone()));
    shutdown_signal().await;
    api_task.abort();
    let _ = std::fs::remove_file(config.state.socket());
    let _ = std::fs::remove_file(agent_socket(&config.state));
    tracing::info!("server stopped");
    Ok(())
}

fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("a server already listens on {}", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
    Ok(listener)
}

/// Binds the agents' TCP listener, and says where it listens (the port, when 0 was asked).
async fn bind_tcp(address: &str) -> io::Result<TcpListener> {
    let listener = TcpListener::bind(address)
        .await
        .map_err(|e| io::Error::new(e.kind(), format!("agents' TCP address {address}: {e}")))?;
    tracing::info!("accepting agents on tcp {}", listener.local_addr()?);
    Ok(listener)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

// -------------------------------------------------------------------------------------------
// The client API

/// The uid of the process at the other end of a Unix socket.
#[derive(Debug, Clone, Copy)]
struct PeerUid(u32);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, UnixListener>>
    for PeerUid
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, UnixListener>) -> Self {
        PeerUid(stream.io().peer_cred().map_or(u32::MAX, |cred| cred.uid()))
    }
}

/// The user name of `uid`, remembered for a minute: looking it up reads the password
/// database (nsswitch.conf, then /etc/passwd or a directory service) on every request, a
/// good part of a `qsub`'s time in the server.
fn user_name(uid: u32) -> String {
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::time::{Duration, Instant};
    const KEEP: Duration = Duration::from_secs(60);
    static NAMES: Mutex<Option<HashMap<u32, (String, Instant)>>> = Mutex::new(None);
    let now = Instant::now();
    let mut names = NAMES.lock().unwrap_or_else(|p| p.into_inner());
    let names = names.get_or_insert_with(HashMap::new);
    if let Some((name, at)) = names.get(&uid) {
        if now.duration_since(*at) < KEEP {
            return name.clone();
        }
    }
    let name = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map_or_else(|| uid.to_string(), |user| user.name);
    names.insert(uid, (name.clone(), now));
    name
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/jobs", post(submit))
        .route("/v1/status", post(status))
        .route("/v1/jobs/action", post(action))
        .route("/v1/nodes", get(nodes))
        .route("/v1/nodes/state", post(node_state))
        .route("/v1/queues", get(queues))
        .route("/v1/server", get(server))
        .with_state(shared)
}

async fn submit(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(PeerUid(uid)): ConnectInfo<PeerUid>,
    Json(req): Json<SubmitRequest>,
) -> Json<Answer<Submitted>> {
    let user = user_name(uid);
    let answer = shared
        .core
        .lock()
        .expect("core lock")
        .submit(&req, &user, uid, now())
        .map(|job_id| Submitted { job_id });
    shared.wake.notify_one();
    Json(answer)
}

async fn status(
    State(shared): State<Arc<Shared>>,
    Json(req): Json<StatusRequest>,
) -> Json<Vec<StatusItem>> {
    Json(shared.core.lock().expect("core lock").status(&req))
}

async fn action(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(PeerUid(uid)): ConnectInfo<PeerUid>,
    Json(req): Json<JobAction>,
) -> Json<Answer<()>> {
    let user = user_name(uid);
    let answer =
        shared
            .core
            .lock()
            .expect("core lock")
            .act(&req.id, &req.action, &user, uid, now());
    shared.wake.notify_one();
    Json(answer)
}

async fn nodes(State(shared): State<Arc<Shared>>) -> Json<Vec<hpcbox_pbs::status::StatusObject>> {
    Json(shared.core.lock().expect("core lock").node_status())
}

async fn node_state(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(PeerUid(uid)): ConnectInfo<PeerUid>,
    Json(req): Json<NodeChange>,
) -> Json<Answer<()>> {
    let answer = shared.core.lock().expect("core lock").set_node_offline(
        &req.node,
        req.offline,
        req.comment,
        uid,
        now(),
    );
    shared.wake.notify_one();
    Json(answer)
}

async fn queues(State(shared): State<Arc<Shared>>) -> Json<Vec<hpcbox_pbs::status::StatusObject>> {
    Json(shared.core.lock().expect("core lock").queue_status())
}

async fn server(State(shared): State<Arc<Shared>>) -> Json<hpcbox_pbs::status::StatusObject> {
    Json(shared.core.lock().expect("core lock").server_status())
}

// -------------------------------------------------------------------------------------------
// Scheduling and dispatch

async fn schedule_loop(shared: Arc<Shared>) {
    loop {
        // A cycle after every change, and at least every second for the clock.
        let _ = tokio::time::timeout(Duration::from_secs(1), shared.wake.notified()).await;
        let outbox = {
            let mut core = shared.core.lock().expect("core lock");
            core.schedule(now());
            core.take_outbox()
        };
        for (node, message) in outbox {
            deliver(&shared, &node, message);
        }
    }
}

fn deliver(shared: &Shared, node: &str, message: ServerMessage) {
    let agents = shared.agents.lock().expect("agents lock");
    match agents.get(node) {
        Some(sender) if sender.send(message.clone()).is_ok() => {}
        _ => shared
            .pending
            .lock()
            .expect("pending lock")
            .entry(node.to_string())
            .or_default()
            .push(message),
    }
}

/// Where agents connect: the Unix socket, or TCP for nodes on other machines. Every kind is
/// served alike by [`serve_agent`].
trait AgentListener: Send + 'static {
    /// A connection.
    type Stream: AsyncRead + AsyncWrite + Send + 'static;
    /// The next connection, and a description of its peer for the logs.
    fn next(&self) -> impl Future<Output = io::Result<(Self::Stream, String)>> + Send;
}

impl AgentListener for UnixListener {
    type Stream = tokio::net::UnixStream;
    async fn next(&self) -> io::Result<(Self::Stream, String)> {
        let (stream, _) = self.accept().await?;
        Ok((stream, "the agents' socket".to_string()))
    }
}

impl AgentListener for TcpListener {
    type Stream = tokio::net::TcpStream;
    async fn next(&self) -> io::Result<(Self::Stream, String)> {
        let (stream, peer) = self.accept().await?;
        stream.set_nodelay(true)?;
        Ok((stream, format!("tcp {peer}")))
    }
}

async fn accept_agents<L: AgentListener>(listener: L, shared: Arc<Shared>) {
    loop {
        match listener.next().await {
            Ok((stream, peer)) => {
                tokio::spawn(serve_agent(stream, peer, shared.clone()));
            }
            Err(e) => {
                tracing::warn!("agent accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Whether `given` is the installation's token, in time independent of where they differ.
fn same_token(expected: &str, given: &str) -> bool {
    let (expected, given) = (expected.as_bytes(), given.as_bytes());
    let differences = expected
        .iter()
        .zip(given)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    expected.len() == given.len() && std::hint::black_box(differences) == 0
}

/// Reads and checks a connection's hello, within [`HELLO_TIMEOUT`]; the error is the reason
/// to refuse it.
async fn read_hello<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    token: &str,
) -> Result<(NodeReport, Vec<RunningReport>, Vec<TaskReport>), String> {
    let first = tokio::time::timeout(HELLO_TIMEOUT, read_line(reader, MAX_AGENT_LINE))
        .await
        .map_err(|_| "no hello in time".to_string())?
        .map_err(|e| format!("unreadable hello: {e}"))?
        .ok_or_else(|| "closed before the hello".to_string())?;
    match decode_line::<AgentMessage>(&first) {
        Ok(AgentMessage::Hello {
            token: given,
            node,
            running,
            tasks,
        }) if same_token(token, &given) => Ok((node, running, tasks)),
        Ok(AgentMessage::Hello { .. }) => Err("bad token".to_string()),
        _ => Err("the first message must be a hello".to_string()),
    }
}

async fn serve_agent<S>(stream: S, peer: String, shared: Arc<Shared>)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (read, mut write) = tokio::io::split(stream);
    let mut reader = BufReader::new(read);
    let (node, running, tasks) = match read_hello(&mut reader, &shared.token).await {
        Ok(hello) => hello,
        Err(reason) => {
            tracing::warn!("refused an agent from {peer}: {reason}");
            refuse(&mut reader, &mut write, &reason).await;
            return;
        }
    };
    let name = node.name.clone();
    let (sender, mut receiver) = mpsc::unbounded_channel::<ServerMessage>();
    let welcome = ServerMessage::Welcome {
        server: shared.core.lock().expect("core lock").name().to_string(),
    };
    if write_message(&mut write, &welcome).await.is_err() {
        return;
    }
    register(&shared, node, &running, &tasks, sender.clone());
    tracing::info!("agent for {name} connected from {peer}");
    shared.wake.notify_one();
    let writer = tokio::spawn(async move {
        while let Some(message) = receiver.recv().await {
            if write_message(&mut write, &message).await.is_err() {
                break;
            }
        }
    });
    loop {
        let line = match tokio::time::timeout(AGENT_SILENCE, read_line(&mut reader, MAX_AGENT_LINE))
            .await
        {
            Ok(Ok(Some(line))) => line,
            Ok(Ok(None)) => break,
            Ok(Err(e)) => {
                tracing::warn!("agent {name}: {e}");
                break;
            }
            Err(_) => {
                tracing::warn!("agent {name} silent for {AGENT_SILENCE:?}: dropping it");
                break;
            }
        };
        match decode_line::<AgentMessage>(&line) {
            Ok(message) => {
                shared
                    .core
                    .lock()
                    .expect("core lock")
                    .agent_message(&name, message, now());
                shared.wake.notify_one();
            }
            Err(e) => tracing::warn!("agent {name} sent a malformed message: {e}"),
        }
    }
    writer.abort();
    unregister(&shared, &name, &sender);
}

/// Makes a welcomed agent the one its node's messages go to, and hands it their backlog.
fn register(
    shared: &Shared,
    node: NodeReport,
    running: &[RunningReport],
    tasks: &[TaskReport],
    sender: mpsc::UnboundedSender<ServerMessage>,
) {
    let name = node.name.clone();
    let running: Vec<String> = running.iter().map(|r| r.job_id.clone()).collect();
    shared
        .core
        .lock()
        .expect("core lock")
        .agent_hello(node, &running, tasks, now());
    let backlog = shared
        .pending
        .lock()
        .expect("pending lock")
        .remove(&name)
        .unwrap_or_default();
    for message in backlog {
        let _ = sender.send(message);
    }
    shared
        .agents
        .lock()
        .expect("agents lock")
        .insert(name, sender);
}

/// Forgets an agent whose connection ended, unless its node already has a newer connection
/// (an agent that reconnected before its old connection was found dead).
fn unregister(shared: &Shared, name: &str, sender: &mpsc::UnboundedSender<ServerMessage>) {
    {
        let mut agents = shared.agents.lock().expect("agents lock");
        if !agents.get(name).is_some_and(|s| s.same_channel(sender)) {
            tracing::info!("an old connection of the agent for {name} ended");
            return;
        }
        agents.remove(name);
    }
    shared
        .core
        .lock()
        .expect("core lock")
        .agent_gone(name, now());
    tracing::info!("agent for {name} disconnected");
}

/// Tells a connection why it is refused and closes it, after reading (briefly, boundedly) what
/// it still sends, so that the refusal is not lost to a reset.
async fn refuse<R, W>(reader: &mut R, write: &mut W, reason: &str)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let refusal = ServerMessage::Refused {
        reason: reason.to_string(),
    };
    let _ = write_message(write, &refusal).await;
    let _ = write.shutdown().await;
    let mut rest = reader.take(4 * MAX_AGENT_LINE as u64);
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        tokio::io::copy(&mut rest, &mut tokio::io::sink()),
    )
    .await;
}

async fn write_message<W: AsyncWrite + Unpin>(
    write: &mut W,
    message: &ServerMessage,
) -> io::Result<()> {
    write.write_all(&encode_line(message)?).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_match_only_when_equal() {
        assert!(same_token("abc", "abc"));
        assert!(!same_token("abc", "abd"));
        assert!(!same_token("abc", "ab"));
        assert!(!same_token("abc", "abcd"));
        assert!(!same_token("abc", ""));
    }

    #[tokio::test]
    async fn hellos_are_checked() {
        let node = NodeReport {
            name: "n".into(),
            host: "h".into(),
            ncpus: 1,
            mem_kb: 1,
            ngpus: 0,
            cpu_ids: vec![],
        };
        let hello = |token: &str| {
            encode_line(&AgentMessage::Hello {
                token: token.into(),
                node: node.clone(),
                running: vec![],
                tasks: vec![],
            })
            .unwrap()
        };
        let good = hello("secret");
        assert_eq!(read_hello(&mut &good[..], "secret").await.unwrap().0, node);
        let bad = hello("wrong");
        assert_eq!(
            read_hello(&mut &bad[..], "secret").await.unwrap_err(),
            "bad token"
        );
        for garbage in [
            &b"garbage\n"[..],
            b"{\"type\":\"started\",\"job_id\":\"1\",\"session\":1}\n",
        ] {
            let reason = read_hello(&mut &garbage[..], "secret").await.unwrap_err();
            assert_eq!(reason, "the first message must be a hello");
        }
        let huge = vec![b'x'; MAX_AGENT_LINE + 1];
        let reason = read_hello(&mut &huge[..], "secret").await.unwrap_err();
        assert!(reason.starts_with("unreadable hello"), "{reason}");
        assert_eq!(
            read_hello(&mut &b""[..], "secret").await.unwrap_err(),
            "closed before the hello"
        );
    }
}

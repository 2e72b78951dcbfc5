//! The server daemon: the client API over a Unix socket (HTTP with JSON bodies, the peer's uid
//! naming the user), the agents' socket (one JSON message per line) and the scheduling loop.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{ConnectInfo, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, Notify};

use super::core::Core;
use crate::api::{
    Answer, JobAction, NodeChange, StatusItem, StatusRequest, SubmitRequest, Submitted,
};
use crate::home::StateDir;
use crate::protocol::{decode_line, encode_line, AgentMessage, ServerMessage};
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
}

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

fn user_name(uid: u32) -> String {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map_or_else(|| uid.to_string(), |user| user.name)
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

async fn accept_agents(listener: UnixListener, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve_agent(stream, shared.clone()));
            }
            Err(e) => {
                tracing::warn!("agent accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn serve_agent(stream: UnixStream, shared: Arc<Shared>) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let Ok(Some(first)) = lines.next_line().await else {
        return;
    };
    let (node, running) = match decode_line::<AgentMessage>(first.as_bytes()) {
        Ok(AgentMessage::Hello {
            token,
            node,
            running,
        }) if token == shared.token => (node, running),
        Ok(AgentMessage::Hello { .. }) => {
            refuse(&mut write, "bad token").await;
            return;
        }
        _ => {
            refuse(&mut write, "the first message must be a hello").await;
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
    {
        let running: Vec<String> = running.iter().map(|r| r.job_id.clone()).collect();
        shared
            .core
            .lock()
            .expect("core lock")
            .agent_hello(node, &running, now());
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
            .insert(name.clone(), sender);
    }
    tracing::info!("agent for {name} connected");
    shared.wake.notify_one();
    let writer = tokio::spawn(async move {
        while let Some(message) = receiver.recv().await {
            if write_message(&mut write, &message).await.is_err() {
                break;
            }
        }
    });
    while let Ok(Some(line)) = lines.next_line().await {
        match decode_line::<AgentMessage>(line.as_bytes()) {
            Ok(message) => {
                shared
                    .core
                    .lock()
                    .expect("core lock")
                    .agent_message(message, now());
                shared.wake.notify_one();
            }
            Err(e) => tracing::warn!("agent {name} sent a malformed message: {e}"),
        }
    }
    writer.abort();
    shared.agents.lock().expect("agents lock").remove(&name);
    shared
        .core
        .lock()
        .expect("core lock")
        .agent_gone(&name, now());
    tracing::info!("agent for {name} disconnected");
}

async fn refuse(write: &mut tokio::net::unix::OwnedWriteHalf, reason: &str) {
    let _ = write_message(
        write,
        &ServerMessage::Refused {
            reason: reason.to_string(),
        },
    )
    .await;
}

async fn write_message(
    write: &mut tokio::net::unix::OwnedWriteHalf,
    message: &ServerMessage,
) -> std::io::Result<()> {
    write.write_all(&encode_line(message)?).await
}

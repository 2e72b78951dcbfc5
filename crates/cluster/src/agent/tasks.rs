//! The agent's side of tasks (PBS's TM interface, as `pbs_tmrsh` uses it).
//!
//! A process of a job this agent runs connects to the agent's task socket
//! (`HPCBOX_TM_SOCKET`) and asks for a task on another host of the job ([`TmRequest`]); the
//! agent checks that the asking process belongs to the job's owner and forwards the request to
//! the server, which has the agent on that host run the task ([`Task`]) and relays its end
//! back; the agent then answers the waiting process ([`TmAnswer`]).

use std::io;
use std::path::{Path, PathBuf};

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

use crate::exec::RunningJob;
use crate::protocol::{self, TaskOrigin, TaskReport, TmAnswer, TmRequest};

/// Longest request line accepted (a large environment fits).
const MAX_REQUEST: usize = 1 << 20;

/// A request from a process of a job, with the uid of that process and where the answer goes.
pub(crate) struct Ask {
    pub request: TmRequest,
    pub uid: u32,
    pub answer: oneshot::Sender<TmAnswer>,
}

/// A task of a job this agent runs for another host's agent.
#[derive(Debug)]
pub(crate) struct Task {
    /// The server's number for it.
    pub id: u64,
    pub job_id: String,
    /// Who asked for it, told again with its end.
    pub origin: Option<TaskOrigin>,
    pub process: RunningJob,
}

impl Task {
    /// The task as the agent re-reports it to the server.
    pub fn report(&self) -> TaskReport {
        TaskReport {
            task: self.id,
            job_id: self.job_id.clone(),
            origin: self.origin.clone(),
        }
    }
}

/// The answer to a request that cannot be served.
pub(crate) fn refusal(why: impl Into<String>) -> TmAnswer {
    TmAnswer {
        exit_status: 255,
        error: Some(why.into()),
    }
}

/// Listens on `path` (anyone may connect: each request is checked against its job's owner)
/// and hands every request to the agent through the returned channel.
pub(crate) fn listen(path: &Path) -> io::Result<mpsc::UnboundedReceiver<Ask>> {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
    let (asks, received) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve(stream, asks.clone()));
        }
    });
    Ok(received)
}

/// Reads one request from `stream`, waits for the agent's answer and writes it back.
async fn serve(stream: UnixStream, asks: mpsc::UnboundedSender<Ask>) {
    let Ok(uid) = stream.peer_cred().map(|cred| cred.uid()) else {
        return;
    };
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    let answer = match protocol::read_line(&mut read, MAX_REQUEST).await {
        Ok(Some(line)) => match protocol::decode_line::<TmRequest>(&line) {
            Ok(request) => {
                let (answer, answered) = oneshot::channel();
                let asked = asks.send(Ask {
                    request,
                    uid,
                    answer,
                });
                match asked {
                    Ok(()) => answered
                        .await
                        .unwrap_or_else(|_| refusal("the agent went away")),
                    Err(_) => refusal("the agent went away"),
                }
            }
            Err(err) => refusal(format!("malformed request: {err}")),
        },
        Ok(None) => return,
        Err(err) => refusal(format!("unreadable request: {err}")),
    };
    if let Ok(line) = protocol::encode_line(&answer) {
        let _ = write.write_all(&line).await;
    }
}

/// Where the agent of vnode `node` listens for task requests, and the `pbs_tmrsh` link beside
/// it.
pub(crate) fn paths(aux_dir: &Path, node: &str) -> (PathBuf, PathBuf) {
    (
        aux_dir.join(format!("tm-{node}.sock")),
        aux_dir.join("bin").join("pbs_tmrsh"),
    )
}

/// Makes `link` a symbolic link to this program (which runs as `pbs_tmrsh` under that name):
/// made beside it and renamed into place, as the agents of one machine's vnodes all do it.
pub(crate) fn link_tmrsh(link: &Path) -> io::Result<()> {
    let exe = std::env::current_exe()?;
    if let Some(dir) = link.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let fresh = link.with_extension(std::process::id().to_string());
    let _ = std::fs::remove_file(&fresh);
    std::os::unix::fs::symlink(exe, &fresh)?;
    std::fs::rename(&fresh, link)
}

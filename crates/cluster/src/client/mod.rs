//! The client side of the API: how the PBS commands talk to the server over its Unix socket.

pub mod http1;

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::api::{Answer, JobAction, StatusItem, StatusRequest, SubmitRequest, Submitted};
use hpcbox_pbs::status::StatusObject;

/// Why a request got no answer from the server.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No server listens on the socket.
    #[error("cannot connect to the hpcbox server at {path}: {source} (start it with `hpcbox up`)")]
    Connect {
        /// The socket.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The exchange failed half-way.
    #[error("the hpcbox server did not answer: {0}")]
    Transport(String),
}

/// A connection point to one server.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
}

impl Client {
    /// A client of the server listening on `socket`.
    pub fn new(socket: impl Into<PathBuf>) -> Client {
        Client {
            socket: socket.into(),
        }
    }

    /// The socket this client talks to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Queues a job; the id comes back once the job is durable.
    pub fn submit(&self, req: &SubmitRequest) -> Result<Answer<Submitted>, ClientError> {
        self.call("POST", "/v1/jobs", Some(req))
    }

    /// Jobs' attributes, with an error item per unknown id.
    pub fn status(&self, req: &StatusRequest) -> Result<Vec<StatusItem>, ClientError> {
        self.call("POST", "/v1/status", Some(req))
    }

    /// Deletes, holds, releases or signals a job.
    pub fn act(&self, action: &JobAction) -> Result<Answer<()>, ClientError> {
        self.call("POST", "/v1/jobs/action", Some(action))
    }

    /// Every vnode's attributes.
    pub fn nodes(&self) -> Result<Vec<StatusObject>, ClientError> {
        self.call::<(), _>("GET", "/v1/nodes", None)
    }

    /// Takes a vnode offline or puts it back in service.
    pub fn set_node_state(
        &self,
        change: &crate::api::NodeChange,
    ) -> Result<Answer<()>, ClientError> {
        self.call("POST", "/v1/nodes/state", Some(change))
    }

    /// Every queue's attributes.
    pub fn queues(&self) -> Result<Vec<StatusObject>, ClientError> {
        self.call::<(), _>("GET", "/v1/queues", None)
    }

    /// The server's attributes.
    pub fn server(&self) -> Result<StatusObject, ClientError> {
        self.call::<(), _>("GET", "/v1/server", None)
    }

    fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        let body = match body {
            Some(body) => {
                serde_json::to_vec(body).map_err(|e| ClientError::Transport(e.to_string()))?
            }
            None => Vec::new(),
        };
        let bytes = self.exchange(method, path, &body)?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Transport(e.to_string()))
    }

    /// Sends one request and reads its whole response; the body of a successful one.
    fn exchange(&self, method: &str, path: &str, body: &[u8]) -> Result<Vec<u8>, ClientError> {
        let transport = |e: &dyn std::fmt::Display| ClientError::Transport(e.to_string());
        let mut stream =
            UnixStream::connect(&self.socket).map_err(|source| ClientError::Connect {
                path: self.socket.clone(),
                source,
            })?;
        let wrote = stream.write_all(&http1::request(method, path, body));
        // Room for most answers at once.
        let mut bytes = Vec::with_capacity(16 << 10);
        let read = http1::read_response(&mut stream, &mut bytes);
        // A server that refuses a request (too large) answers and closes without reading the
        // rest of it: its answer says more than the broken pipe or the reset that follow.
        let response = http1::parse_response(&bytes).map_err(|parse| match (wrote, read) {
            (Err(e), _) | (_, Err(e)) => transport(&e),
            _ => transport(&parse),
        })?;
        if !(200..300).contains(&response.status) {
            return Err(ClientError::Transport(format!(
                "{} {}: {}",
                response.status,
                response.reason,
                String::from_utf8_lossy(&response.body)
            )));
        }
        Ok(response.body)
    }
}

//! The client side of the API: how the PBS commands talk to the server over its Unix socket.

use std::path::{Path, PathBuf};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
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
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        let bytes = runtime.block_on(self.exchange(method, path, body))?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Transport(e.to_string()))
    }

    async fn exchange(
        &self,
        method: &str,
        path: &str,
        body: Vec<u8>,
    ) -> Result<Bytes, ClientError> {
        let transport = |e: &dyn std::fmt::Display| ClientError::Transport(e.to_string());
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|source| ClientError::Connect {
                path: self.socket.clone(),
                source,
            })?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| transport(&e))?;
        tokio::spawn(connection);
        let request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "hpcbox")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| transport(&e))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| transport(&e))?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| transport(&e))?
            .to_bytes();
        if !status.is_success() {
            return Err(ClientError::Transport(format!(
                "{status}: {}",
                String::from_utf8_lossy(&bytes)
            )));
        }
        Ok(bytes)
    }
}

//! The client ↔ server API: what `qsub`, `qstat`, `qdel` and `pbsnodes` send to the server over
//! its Unix socket (HTTP, JSON bodies), and what they get back.
//!
//! Every answer is an [`Answer`]: the value, or a PBS error (`pbs_errno` and its text) that the
//! command prints in PBS's words.

use hpcbox_pbs::qsub::{Operand, QsubOptions};
use hpcbox_pbs::status::StatusObject;
use serde::{Deserialize, Serialize};

/// `POST /v1/jobs`: a job to queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubmitRequest {
    /// `qsub`'s command line after the program name (`Submit_arguments`).
    pub argv: Vec<String>,
    /// Command line and directives merged.
    pub options: QsubOptions,
    /// The script or command.
    pub operand: Operand,
    /// The script's text (`None` for `qsub -- exe args`).
    pub script: Option<String>,
    /// `Variable_List` as `qsub` built it.
    pub variables: Vec<(String, String)>,
    /// The submitter's working directory.
    pub workdir: String,
    /// The submit host.
    pub submit_host: String,
    /// `-a`, resolved to seconds since the epoch.
    pub execution_time: Option<i64>,
    /// `-I`: where `qsub` waits for the job's terminal.
    #[serde(default)]
    pub interactive: Option<InteractiveTarget>,
}

/// Where an interactive job's terminal is: the `qsub -I` listening on `host:port`, and the
/// secret both ends prove they know there ([`crate::interactive`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InteractiveTarget {
    /// The submit host (`PBS_O_HOST`).
    pub host: String,
    /// The port `qsub` listens on.
    pub port: u16,
    /// A random secret of `qsub`'s, never shown by `qstat`.
    pub secret: String,
}

/// `POST /v1/jobs` answer: the new job's id, durable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Submitted {
    /// The full job id (`12.hpcbox`).
    pub job_id: String,
}

/// `POST /v1/status`: which jobs to show.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusRequest {
    /// Job ids as the user typed them; empty means every job.
    pub ids: Vec<String>,
    /// Include finished jobs (`qstat -x`).
    pub history: bool,
    /// Follow each array with its subjobs (`qstat -t`).
    #[serde(default)]
    pub subjobs: bool,
    /// Only these attributes (by name, resources included); empty means all. The default
    /// `qstat` table asks for its five columns only, as PBS's `qstat` does.
    #[serde(default)]
    pub attributes: Vec<String>,
}

/// One answer of `POST /v1/status`: a job, or the error for an id that was asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StatusItem {
    /// A job's attributes.
    Job(StatusObject),
    /// An id that could not be shown.
    Error {
        /// The id as given (completed with the server name).
        id: String,
        /// Why.
        error: ApiError,
    },
}

/// `POST /v1/jobs/action`: `qdel`, `qhold`, `qrls`, `qsig`, `qalter` of one job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobAction {
    /// The job id as the user typed it.
    pub id: String,
    /// What to do.
    pub action: Action,
}

/// What a [`JobAction`] does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Action {
    /// `qdel` (with `-W force` when `force`).
    Delete {
        /// Remove the job even if its agent does not answer.
        force: bool,
    },
    /// `qhold -h <types>`.
    Hold {
        /// Hold letters (`u`, `o`, `s`).
        types: String,
    },
    /// `qrls -h <types>`.
    Release {
        /// Hold letters.
        types: String,
    },
    /// `qsig -s <signal>`.
    Signal {
        /// The signal's name or number.
        signal: String,
    },
    /// `qalter`: these options replace the job's, as if given on its `qsub` command line.
    Alter {
        /// The options `qalter` was given.
        options: Box<QsubOptions>,
    },
}

/// A PBS error as the server reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{text}")]
pub struct ApiError {
    /// `pbs_errno` (15001 for an unknown job id, …).
    pub code: i32,
    /// PBS's text for it.
    pub text: String,
}

impl ApiError {
    /// The error for a PBS error number, with PBS's own text.
    pub fn from_code(code: i32) -> ApiError {
        ApiError {
            code,
            text: hpcbox_pbs::errno::pbse_to_txt(code)
                .unwrap_or("Unknown error")
                .to_string(),
        }
    }

    /// An error with a text of hpcbox's own, for a PBS error number.
    pub fn with_text(code: i32, text: impl Into<String>) -> ApiError {
        ApiError {
            code,
            text: text.into(),
        }
    }
}

/// Every API answer: the value or the PBS error.
pub type Answer<T> = Result<T, ApiError>;

/// `POST /v1/nodes/state`: `pbsnodes -o` / `-r` of one vnode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeChange {
    /// The vnode.
    pub node: String,
    /// Offline (`-o`) or back in service (`-r`).
    pub offline: bool,
    /// `-C`: a comment to set.
    pub comment: Option<String>,
}

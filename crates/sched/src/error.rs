//! Why an event was refused. A refused event changes nothing.

use thiserror::Error;

use crate::model::JobId;

/// An event the scheduler cannot apply.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SchedError {
    /// No such job (or subjob) is known.
    #[error("unknown job {0}")]
    UnknownJob(JobId),
    /// A job with this sequence number exists already.
    #[error("job {0} already exists")]
    DuplicateJob(u64),
    /// No such queue.
    #[error("unknown queue {0}")]
    UnknownQueue(String),
    /// The queue does not accept jobs.
    #[error("queue {0} is not enabled")]
    QueueDisabled(String),
    /// No such vnode.
    #[error("unknown vnode {0}")]
    UnknownNode(String),
    /// A vnode with this name exists already.
    #[error("vnode {0} already exists")]
    DuplicateNode(String),
    /// The request is malformed (empty select, zero count, bad array range, …).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The job is not in a state that allows this.
    #[error("job {job}: cannot {action} a job that is {state}")]
    WrongState {
        /// The job.
        job: JobId,
        /// What was asked (`hold`, `alter select`, …).
        action: &'static str,
        /// What it is (`running`, `queued`, …).
        state: &'static str,
    },
}

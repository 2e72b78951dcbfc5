//! The outputs of a cycle: starts, comments on waiting jobs, deletions, in PBS's words.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::model::{format_size_kb, DependKind, JobId, Resources};

/// Why a job does not run now, with the texts of OpenPBS's scheduler (`job_info.cpp`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Reason {
    /// `Insufficient amount of resource: ncpus (R: 2 A: 1 T: 2)`: requested, available, total.
    InsufficientResource {
        /// The resource's name (`ncpus`, `mem`, `ngpus`, or a custom one).
        resource: Arc<str>,
        /// Amount requested.
        requested: u64,
        /// Amount available now.
        available: u64,
        /// Amount configured.
        total: u64,
    },
    /// `Job would conflict with reservation or top job`: it fits now but would delay the top job.
    ReservationConflict,
    /// `Job would break strict sorted order`: FIFO, and a job before it cannot run.
    StrictOrdering,
    /// `Queue not started.`
    QueueNotStarted,
    /// `Queue workq job limit has been reached.` (`max_run` of the queue)
    QueueJobLimit {
        /// The queue.
        queue: Arc<str>,
    },
    /// `User has reached queue workq running job limit.` (`max_user_run` of the queue)
    QueueUserLimit {
        /// The queue.
        queue: Arc<str>,
    },
    /// `Server job limit has been reached.` (`max_run` of the server)
    ServerJobLimit,
    /// `User has reached server running job limit.` (`max_user_run` of the server)
    ServerUserLimit,
    /// `Number of concurrent running subjobs limit reached` (`-J …%N`)
    MaxRunSubjobs,
    /// `Not enough free nodes available`: scatter/excl needs more vnodes than are free.
    NoFreeNodes,
    /// `Not enough total nodes available`: more vnodes than exist.
    NoTotalNodes,
}

fn format_amount(resource: &str, amount: u64) -> String {
    if resource == "mem" {
        format_size_kb(amount)
    } else {
        amount.to_string()
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::InsufficientResource {
                resource,
                requested,
                available,
                total,
            } => write!(
                f,
                "Insufficient amount of resource: {resource} (R: {} A: {} T: {})",
                format_amount(resource, *requested),
                format_amount(resource, *available),
                format_amount(resource, *total)
            ),
            Reason::ReservationConflict => {
                f.write_str("Job would conflict with reservation or top job")
            }
            Reason::StrictOrdering => f.write_str("Job would break strict sorted order"),
            Reason::QueueNotStarted => f.write_str("Queue not started."),
            Reason::QueueJobLimit { queue } => {
                write!(f, "Queue {queue} job limit has been reached.")
            }
            Reason::QueueUserLimit { queue } => {
                write!(f, "User has reached queue {queue} running job limit.")
            }
            Reason::ServerJobLimit => f.write_str("Server job limit has been reached."),
            Reason::ServerUserLimit => f.write_str("User has reached server running job limit."),
            Reason::MaxRunSubjobs => {
                f.write_str("Number of concurrent running subjobs limit reached")
            }
            Reason::NoFreeNodes => f.write_str("Not enough free nodes available"),
            Reason::NoTotalNodes => f.write_str("Not enough total nodes available"),
        }
    }
}

/// A job's `comment` as the scheduler sets it.
///
/// ```
/// use hpcbox_sched::{Comment, Reason};
/// let c = Comment::NotRunning(Reason::InsufficientResource {
///     resource: "ncpus".into(), requested: 2, available: 1, total: 2,
/// });
/// assert_eq!(c.to_string(), "Not Running: Insufficient amount of resource: ncpus (R: 2 A: 1 T: 2)");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Comment {
    /// `Not Running: …`: may run later, as things are now.
    NotRunning(Reason),
    /// `Can Never Run: …`: cannot run with the complex as configured.
    CanNeverRun(Reason),
}

impl Comment {
    /// The reason, whichever prefix.
    pub fn reason(&self) -> &Reason {
        match self {
            Comment::NotRunning(r) | Comment::CanNeverRun(r) => r,
        }
    }
}

impl fmt::Display for Comment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Comment::NotRunning(r) => write!(f, "Not Running: {r}"),
            Comment::CanNeverRun(r) => write!(f, "Can Never Run: {r}"),
        }
    }
}

/// Where one chunk of a started job goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkPlacement {
    /// The vnode.
    pub vnode: Arc<str>,
    /// What the chunk takes there.
    pub resources: Resources,
    /// The CPU ids it gets on the vnode (as many as `ncpus`), for pinning.
    pub cpus: Vec<u32>,
    /// The GPU ids it gets on the vnode (as many as `ngpus`).
    pub gpus: Vec<u32>,
}

/// A decision to start a job or subjob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Start {
    /// The job or subjob.
    pub job: JobId,
    /// One placement per chunk, in `select` order.
    pub chunks: Vec<ChunkPlacement>,
    /// Whether it holds its vnodes exclusively (`place=…:excl`).
    pub exclusive: bool,
}

impl Start {
    /// The job's `exec_vnode`, sizes in kb as the server shows them:
    /// `(node1:ncpus=2:mem=1048576kb)+(node2:ncpus=1)`.
    pub fn exec_vnode(&self) -> String {
        self.chunks
            .iter()
            .map(|c| format!("({}:{})", c.vnode, exec_vnode_amounts(&c.resources)))
            .collect::<Vec<_>>()
            .join("+")
    }
}

/// Why the scheduler removed a job on its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeleteReason {
    /// A dependency can no longer be satisfied (e.g. `afterok` on a job that failed).
    Dependency {
        /// The kind of the dependency.
        kind: DependKind,
        /// The job it was on.
        on: JobId,
    },
}

impl fmt::Display for DeleteReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeleteReason::Dependency { on, .. } => {
                write!(f, "Job deleted as result of dependency on job {on}")
            }
        }
    }
}

/// One output of [`crate::Scheduler::cycle`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Decision {
    /// Start this job or subjob on these chunks.
    Run(Start),
    /// A waiting job's comment changed (arrays: on the array, `index: None`).
    Comment {
        /// The job.
        job: JobId,
        /// Its new comment.
        comment: Comment,
    },
    /// The job was removed because it can never become eligible; the server deletes it.
    Delete {
        /// The job (whole array when an array).
        job: JobId,
        /// Why.
        reason: DeleteReason,
    },
}

impl fmt::Display for Decision {
    /// One line: `run 12 (n1:ncpus=2)`, `comment 13 Not Running: …`, `delete 14 Job deleted …`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Decision::Run(s) => {
                write!(f, "run {} {}", s.job, s.exec_vnode())?;
                for c in &s.chunks {
                    if !c.cpus.is_empty() {
                        write!(f, " {}:cpus={}", c.vnode, ids(&c.cpus))?;
                    }
                    if !c.gpus.is_empty() {
                        write!(f, " {}:gpus={}", c.vnode, ids(&c.gpus))?;
                    }
                }
                Ok(())
            }
            Decision::Comment { job, comment } => write!(f, "comment {job} {comment}"),
            Decision::Delete { job, reason } => write!(f, "delete {job} {reason}"),
        }
    }
}

/// `ncpus=2:mem=1048576kb:ngpus=1:licenses=1`, zero amounts left out.
fn exec_vnode_amounts(r: &Resources) -> String {
    let mut parts: Vec<String> = Vec::new();
    if r.ncpus > 0 {
        parts.push(format!("ncpus={}", r.ncpus));
    }
    if r.mem > 0 {
        parts.push(format!("mem={}kb", r.mem));
    }
    if r.ngpus > 0 {
        parts.push(format!("ngpus={}", r.ngpus));
    }
    for (name, amount) in &r.custom {
        if *amount > 0 {
            parts.push(format!("{name}={amount}"));
        }
    }
    parts.join(":")
}

/// CPU ids as ranges: `0-3,6`.
fn ids(list: &[u32]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < list.len() {
        let start = list[i];
        let mut j = i;
        while j + 1 < list.len() && list[j + 1] == list[j] + 1 {
            j += 1;
        }
        if j == i {
            out.push(start.to_string());
        } else {
            out.push(format!("{start}-{}", list[j]));
        }
        i = j + 1;
    }
    out.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_vnode_uses_kb_and_ids_use_ranges() {
        let start = Start {
            job: JobId::job(7),
            chunks: vec![
                ChunkPlacement {
                    vnode: "node1".into(),
                    resources: Resources::new(4, 4 * 1024 * 1024, 0),
                    cpus: vec![0, 1, 2, 5],
                    gpus: vec![],
                },
                ChunkPlacement {
                    vnode: "node2".into(),
                    resources: Resources::cpus(1),
                    cpus: vec![3],
                    gpus: vec![],
                },
            ],
            exclusive: false,
        };
        assert_eq!(
            start.exec_vnode(),
            "(node1:ncpus=4:mem=4194304kb)+(node2:ncpus=1)"
        );
        assert_eq!(
            Decision::Run(start).to_string(),
            "run 7 (node1:ncpus=4:mem=4194304kb)+(node2:ncpus=1) node1:cpus=0-2,5 node2:cpus=3"
        );
    }

    #[test]
    fn comment_texts_match_openpbs() {
        let q: Arc<str> = "workq".into();
        let cases = [
            (
                Reason::ReservationConflict,
                "Job would conflict with reservation or top job",
            ),
            (
                Reason::StrictOrdering,
                "Job would break strict sorted order",
            ),
            (Reason::QueueNotStarted, "Queue not started."),
            (
                Reason::QueueJobLimit { queue: q.clone() },
                "Queue workq job limit has been reached.",
            ),
            (
                Reason::QueueUserLimit { queue: q },
                "User has reached queue workq running job limit.",
            ),
            (Reason::ServerJobLimit, "Server job limit has been reached."),
            (
                Reason::ServerUserLimit,
                "User has reached server running job limit.",
            ),
            (
                Reason::MaxRunSubjobs,
                "Number of concurrent running subjobs limit reached",
            ),
            (Reason::NoFreeNodes, "Not enough free nodes available"),
            (Reason::NoTotalNodes, "Not enough total nodes available"),
        ];
        for (reason, text) in cases {
            assert_eq!(
                Comment::NotRunning(reason).to_string(),
                format!("Not Running: {text}")
            );
        }
        let mem = Reason::InsufficientResource {
            resource: "mem".into(),
            requested: 16 * 1024 * 1024,
            available: 1536,
            total: 0,
        };
        assert_eq!(
            Comment::CanNeverRun(mem).to_string(),
            "Can Never Run: Insufficient amount of resource: mem (R: 16gb A: 1536kb T: 0kb)"
        );
        let d = DeleteReason::Dependency {
            kind: DependKind::AfterOk,
            on: JobId::subjob(3, 2),
        };
        assert_eq!(
            d.to_string(),
            "Job deleted as result of dependency on job 3[2]"
        );
    }
}

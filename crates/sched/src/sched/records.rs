//! The scheduler's internal records: the order key and slot of an eligible job, vnodes,
//! queues, jobs, running allocations, finished outcomes and per-shape caches.

use std::sync::Arc;

use super::ArrayState;
use crate::decision::Comment;
use crate::model::QueueSpec;
use crate::util::IdSet;

/// Order of consideration: queue priority (high first), job priority (high first), submit time,
/// sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Key {
    pub(crate) queue_prio: i64,
    pub(crate) prio: i64,
    pub(crate) submit: u64,
    pub(crate) seq: u64,
}

impl Key {
    pub(super) fn new(queue_prio: i32, prio: i32, submit: u64, seq: u64) -> Key {
        Key {
            queue_prio: -i64::from(queue_prio),
            prio: -i64::from(prio),
            submit,
            seq,
        }
    }
}

/// What a cycle needs of an eligible job without touching its record (kept beside its key).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Slot {
    pub(crate) shape: u32,
    pub(crate) owner: u32,
    pub(crate) queue: u16,
    pub(crate) array: bool,
    /// Requested walltime (`u64::MAX` for none).
    pub(crate) walltime: u64,
    /// Fingerprint of the job's comment (0 for none).
    pub(crate) comment_fp: u64,
}

/// A fingerprint of a comment, to tell cheaply that it did not change.
pub(crate) fn fingerprint(c: &Comment) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = crate::util::IdHasher::default();
    c.hash(&mut h);
    h.finish() | 1
}

/// Up, offline or down, as set by events (busy states are derived).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Avail {
    Up,
    Offline,
    Down,
}

#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub(crate) name: Arc<str>,
    pub(crate) avail: Avail,
    pub(crate) njobs: u32,
    pub(crate) excl: bool,
    pub(crate) cpus: IdSet,
    pub(crate) gpus: IdSet,
}

#[derive(Debug, Clone)]
pub(crate) struct Queue {
    pub(crate) spec: QueueSpec,
    pub(crate) name: Arc<str>,
    pub(crate) running: u32,
}

/// A job (or a whole array) that is not finished.
#[derive(Debug, Clone)]
pub(crate) struct Job {
    pub(crate) key: Key,
    /// Index of its [`Slot`].
    pub(crate) slot: u32,
    pub(crate) shape: u32,
    pub(crate) queue: u16,
    pub(crate) hold: bool,
    /// Single job: started and not requeued.
    pub(crate) started: bool,
    pub(crate) owner: u32,
    pub(crate) project: u32,
    pub(crate) walltime: Option<u64>,
    /// Dependencies not yet satisfied (all of `after…` kinds).
    pub(crate) waiting: Option<Box<[crate::model::Dependency]>>,
    pub(crate) array: Option<Box<ArrayState>>,
    pub(crate) comment: Option<Box<Comment>>,
}

impl Job {
    /// Whether some part of it waits to start.
    pub(crate) fn has_pending_work(&self) -> bool {
        match &self.array {
            Some(a) => a.peek().is_some(),
            None => !self.started,
        }
    }

    pub(super) fn heap_bytes(&self) -> usize {
        let waiting = self.waiting.as_ref().map_or(0, |w| {
            w.len() * std::mem::size_of::<crate::model::Dependency>()
        });
        let array = self.array.as_ref().map_or(0, |a| a.heap_bytes());
        let comment = self
            .comment
            .as_ref()
            .map_or(0, |_| std::mem::size_of::<Comment>());
        waiting + array + comment
    }
}

/// One chunk of a running job.
#[derive(Debug, Clone)]
pub(crate) struct RunChunk {
    pub(crate) node: u32,
    pub(crate) term: u16,
    pub(crate) cpus: Vec<u32>,
    pub(crate) gpus: Vec<u32>,
}

/// A started job or subjob.
#[derive(Debug, Clone)]
pub(crate) struct Run {
    pub(crate) start: u64,
    pub(crate) end: u64,
    pub(crate) shape: u32,
    pub(crate) excl: bool,
    pub(crate) confirmed: bool,
    pub(crate) chunks: Vec<RunChunk>,
}

/// What a running job gives back when it ends, kept inline for the reservation search: one
/// vnode and its `ncpus`, `mem`, `ngpus`; `node == u32::MAX` when the job spans vnodes or holds
/// custom resources (then its [`Run`] is read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Release {
    pub(crate) node: u32,
    pub(crate) excl: bool,
    pub(crate) amounts: [u64; 3],
}

/// What is remembered of a finished job, for dependencies submitted later.
#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    Single { ran: bool, ok: bool },
    Array(Box<ArrayState>),
}

/// Cached per shape for one cycle.
#[derive(Debug, Clone, Default)]
pub(crate) struct ShapeCache {
    /// Cycle in which the shape failed to fit now, and why.
    pub(crate) now_fail: u32,
    pub(crate) now_reason: Option<crate::decision::Reason>,
    /// Fingerprint of `Not Running: <now_reason>`.
    pub(crate) now_fp: u64,
    /// Cycle, and count of starts in it, when the shape was last seen to fit now.
    pub(crate) ok_cycle: u32,
    pub(crate) ok_starts: u64,
    /// Cycle in which it failed to fit beside the top job's reservation.
    pub(crate) bf_fail: u32,
    /// Node generation for which `never` was computed.
    pub(crate) never_gen: u64,
    pub(crate) never: bool,
}

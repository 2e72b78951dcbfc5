//! hpcbox's scheduling policy as a pure, deterministic core, and a trace simulator.
//!
//! The [`Scheduler`] owns vnodes, queues and jobs. Inputs are [`Event`]s (submit, start
//! confirmed, finish, vnode up/down/offline, hold, release, delete, alter, clock); each
//! [`Scheduler::cycle`] returns [`Decision`]s: which job starts on which chunks (vnode, amounts,
//! CPU and GPU ids), and the `comment` of each waiting job in PBS's words. Time is an input, never
//! read; the same events in the same order give the same decisions.
//!
//! Policy: strict order by queue priority, job priority, then submit order; EASY backfill (or
//! strict FIFO); `place=free|pack|scatter|vscatter` with `excl`; dependencies
//! (`after`, `afterok`, `afternotok`, `afterany`, `before…`) on jobs, arrays and subjobs; job
//! arrays kept as one record and expanded lazily.
//!
//! Walltime: backfill plans with each job's walltime request; a job without one is planned with
//! its queue's `default_walltime`, else [`Config::default_walltime`] (five years by default,
//! as PBS, so such a job is never backfilled in front of a top job).
//!
//! [`sim`] replays a workload (SWF trace or synthetic) in virtual time and reports utilization,
//! waits, bounded slowdown and the scheduler's own time per cycle.

mod cycle;
mod decision;
mod deps;
mod error;
mod model;
mod place;
mod restore;
mod sched;
pub mod sim;
mod table;
mod util;

pub use decision::{ChunkPlacement, Comment, Decision, DeleteReason, Reason, Start};
pub use error::SchedError;
pub use model::{
    format_size_kb, Alter, Arrangement, ArraySpec, ChunkSpec, Config, DependKind, Dependency,
    Event, JobId, JobSpec, NodeSpec, NodeState, Place, Policy, QueueSpec, Resources,
    RestoredSubjob, Sharing, SubjobState, FIVE_YEARS,
};
pub use sched::{JobState, MemoryEstimate, NodeView, Scheduler};

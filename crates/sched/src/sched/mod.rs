//! The scheduler's state and how events change it. Cycles are in `cycle.rs`, dependencies in
//! `deps.rs`.
//!
//! The [`Scheduler`] record and [`Scheduler::apply`] are here; the rest is split by concern:
//! `records` (internal records), `array` (lazy job arrays), `nodes` (resources and vnodes),
//! `queues`, `jobs` (submission, holds, alterations), `lifecycle` (start confirmation, end,
//! requeue, delete, purge) and `query` (read-only views).

mod array;
mod jobs;
mod lifecycle;
mod nodes;
mod query;
mod queues;
mod records;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

pub(crate) use array::ArrayState;
pub use nodes::NodeView;
pub use query::{JobState, MemoryEstimate};
pub(crate) use records::{
    fingerprint, Avail, Job, Key, Node, Outcome, Queue, Release, Run, RunChunk, ShapeCache, Slot,
};

use crate::decision::Decision;
use crate::error::SchedError;
use crate::model::{Config, Event, JobId};
use crate::place::{Placer, ResIdx, Shape};
use crate::util::{IdMap, Interner};

/// The scheduling policy's state: vnodes, queues, jobs. Pure: time comes in with events and
/// cycles, nothing is read from the system, and the same events in the same order give the same
/// decisions.
///
/// ```
/// use hpcbox_sched::{ChunkSpec, Decision, Event, JobSpec, NodeSpec, QueueSpec, Resources, Scheduler};
/// let mut s = Scheduler::new(Default::default());
/// s.apply(Event::AddNode(NodeSpec::new("n1", Resources::cpus(4)))).unwrap();
/// s.apply(Event::SetQueue(QueueSpec::new("workq"))).unwrap();
/// let job = JobSpec::new(1, vec![ChunkSpec::new(1, Resources::cpus(2))]);
/// s.apply(Event::Submit(Box::new(job))).unwrap();
/// let d = s.cycle(0);
/// assert_eq!(d[0].to_string(), "run 1 (n1:ncpus=2) n1:cpus=0-1");
/// ```
#[derive(Debug, Clone)]
pub struct Scheduler {
    pub(crate) config: Config,
    pub(crate) now: u64,
    pub(crate) res_names: Vec<Arc<str>>,
    pub(crate) res_index: HashMap<String, ResIdx>,
    pub(crate) nodes: Vec<Node>,
    pub(crate) node_index: HashMap<Arc<str>, u32>,
    /// Vnode × resource matrices.
    pub(crate) total: Vec<u64>,
    pub(crate) free: Vec<u64>,
    pub(crate) node_gen: u64,
    pub(crate) queues: Vec<Queue>,
    pub(crate) queue_index: HashMap<String, u16>,
    pub(crate) owners: Interner,
    pub(crate) projects: Interner,
    pub(crate) shapes: Vec<Shape>,
    pub(crate) shape_index: HashMap<Shape, u32>,
    pub(crate) shape_cache: Vec<ShapeCache>,
    pub(crate) jobs: crate::table::JobTable,
    pub(crate) eligible: BTreeMap<Key, u32>,
    /// Slots of jobs, by `Job::slot` (their position in `jobs`).
    pub(crate) slots: Vec<Slot>,
    pub(crate) running: IdMap<JobId, Run>,
    /// Running jobs by planned end, with what they give back when they end.
    pub(crate) ends: BTreeMap<(u64, JobId), Release>,
    pub(crate) done: IdMap<u64, Outcome>,
    pub(crate) dependents: IdMap<u64, Vec<u64>>,
    pub(crate) run_total: u32,
    pub(crate) run_by_user: IdMap<u32, u32>,
    pub(crate) run_by_queue_user: IdMap<(u16, u32), u32>,
    pub(crate) deferred: Vec<Decision>,
    pub(crate) top: Option<(JobId, u64)>,
    pub(crate) placer: Placer,
    pub(crate) cycle_no: u32,
    pub(crate) scratch_keys: Vec<(Key, u32)>,
    pub(crate) zero_cpu_eligible: usize,
    /// Free amounts over usable (up, not exclusively held) vnodes, per resource; kept up to
    /// date by events and cycles, rebuilt when `agg_valid` is false.
    pub(crate) agg_free: Vec<u64>,
    pub(crate) agg_valid: bool,
    /// Configured amounts over all vnodes and the largest on one, for `totals_gen`.
    pub(crate) totals_gen: u64,
    pub(crate) agg_total: Vec<u64>,
    pub(crate) max_total: Vec<u64>,
}

impl Scheduler {
    /// An empty complex with `config`.
    pub fn new(config: Config) -> Self {
        let res_names: Vec<Arc<str>> = vec!["ncpus".into(), "mem".into(), "ngpus".into()];
        let res_index = res_names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.to_string(), i as ResIdx))
            .collect();
        Scheduler {
            config,
            now: 0,
            res_names,
            res_index,
            nodes: Vec::new(),
            node_index: HashMap::new(),
            total: Vec::new(),
            free: Vec::new(),
            node_gen: 1,
            queues: Vec::new(),
            queue_index: HashMap::new(),
            owners: Interner::default(),
            projects: Interner::default(),
            shapes: Vec::new(),
            shape_index: HashMap::new(),
            shape_cache: Vec::new(),
            jobs: crate::table::JobTable::default(),
            eligible: BTreeMap::new(),
            slots: Vec::new(),
            running: IdMap::default(),
            ends: BTreeMap::new(),
            done: IdMap::default(),
            dependents: IdMap::default(),
            run_total: 0,
            run_by_user: IdMap::default(),
            run_by_queue_user: IdMap::default(),
            deferred: Vec::new(),
            top: None,
            placer: Placer::default(),
            cycle_no: 0,
            scratch_keys: Vec::new(),
            zero_cpu_eligible: 0,
            agg_free: Vec::new(),
            agg_valid: false,
            totals_gen: 0,
            agg_total: Vec::new(),
            max_total: Vec::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The scheduler's time: the latest `Clock` or cycle time seen.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// Applies one event. A refused event changes nothing.
    pub fn apply(&mut self, event: Event) -> Result<(), SchedError> {
        match event {
            Event::AddNode(spec) => self.add_node(spec),
            Event::NodeUp(name) => self.set_avail(&name, Avail::Up),
            Event::NodeDown(name) => self.set_avail(&name, Avail::Down),
            Event::NodeOffline(name) => self.set_avail(&name, Avail::Offline),
            Event::SetQueue(spec) => self.set_queue(spec),
            Event::Submit(spec) => self.submit(*spec),
            Event::StartConfirmed { job, at } => self.confirm(job, at),
            Event::Restore { job, vnodes, at } => self.restore(*job, &vnodes, at),
            Event::RestoreArray { job, subjobs } => self.restore_array(*job, subjobs),
            Event::Requeue(job) => self.requeue(job),
            Event::Finish { job, exit_status } => self.finish(job, exit_status == 0),
            Event::Hold(job) => self.set_hold(job, true),
            Event::Release(job) => self.set_hold(job, false),
            Event::Delete(job) => self.delete(job),
            Event::Alter { job, alter } => self.alter(job, alter),
            Event::Clock(t) => {
                self.now = self.now.max(t);
                Ok(())
            }
            Event::Purge(seq) => self.purge(seq),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        ArraySpec, ChunkSpec, DependKind, Dependency, JobSpec, NodeSpec, QueueSpec, Resources,
    };

    pub(super) fn sched() -> Scheduler {
        let mut s = Scheduler::new(Config::default());
        s.apply(Event::SetQueue(QueueSpec::new("workq"))).unwrap();
        s.apply(Event::AddNode(NodeSpec::new("n1", Resources::cpus(4))))
            .unwrap();
        s
    }

    pub(super) fn job(seq: u64) -> JobSpec {
        JobSpec::new(seq, vec![ChunkSpec::new(1, Resources::cpus(1))])
    }

    #[test]
    fn refused_events_change_nothing() {
        let mut s = sched();
        s.apply(Event::Submit(Box::new(job(1)))).unwrap();
        let before = format!("{:?}", s.memory_estimate());
        let mut bad = job(2);
        bad.depend = vec![Dependency::new(DependKind::AfterOk, JobId::job(99))];
        assert_eq!(
            s.apply(Event::Submit(Box::new(bad))),
            Err(SchedError::UnknownJob(JobId::job(99)))
        );
        assert_eq!(
            s.apply(Event::Submit(Box::new(job(1)))),
            Err(SchedError::DuplicateJob(1))
        );
        let mut empty = job(3);
        empty.select.clear();
        assert!(matches!(
            s.apply(Event::Submit(Box::new(empty))),
            Err(SchedError::Invalid(_))
        ));
        let mut zero = job(4);
        zero.array = Some(ArraySpec::new(5, 1, 1));
        assert!(s.apply(Event::Submit(Box::new(zero))).is_err());
        let mut q = job(5);
        q.queue = "nope".into();
        assert_eq!(
            s.apply(Event::Submit(Box::new(q))),
            Err(SchedError::UnknownQueue("nope".into()))
        );
        assert_eq!(
            s.apply(Event::NodeDown("n9".into())),
            Err(SchedError::UnknownNode("n9".into()))
        );
        assert!(s
            .apply(Event::AddNode(NodeSpec::new("n1", Resources::cpus(1))))
            .is_err());
        assert_eq!(format!("{:?}", s.memory_estimate()), before);
        assert_eq!(s.eligible_len(), 1);
    }

    #[test]
    fn time_never_goes_back() {
        let mut s = sched();
        s.apply(Event::Clock(100)).unwrap();
        s.cycle(50);
        assert_eq!(s.now(), 100);
    }
}

//! The scheduler's state and how events change it. Cycles are in `cycle.rs`, dependencies in
//! `deps.rs`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use crate::decision::{Comment, Decision};
use crate::error::SchedError;
use crate::model::{
    Alter, ArraySpec, ChunkSpec, Config, Event, JobId, JobSpec, NodeSpec, NodeState, Place,
    QueueSpec, Resources,
};
use crate::place::{Chunk, Placer, ResIdx, Shape, MEM, NCPUS, NGPUS};
use crate::util::{IdMap, IdSet, Interner};

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
    fn new(queue_prio: i32, prio: i32, submit: u64, seq: u64) -> Key {
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

/// The subjobs of an array, expanded lazily: a cursor over the range plus the few indices that
/// left the simple "started below the cursor" pattern.
#[derive(Debug, Clone)]
pub(crate) struct ArrayState {
    pub(crate) spec: ArraySpec,
    /// Ordinal (0-based position in the range) of the next index never started.
    pub(crate) next: u32,
    /// Indices started then put back in the queue.
    pub(crate) requeued: BTreeSet<u32>,
    /// Indices deleted before they ran.
    pub(crate) deleted: BTreeSet<u32>,
    /// Indices that ended with a failure.
    pub(crate) failed: BTreeSet<u32>,
    pub(crate) running: u32,
    pub(crate) ended: u32,
    pub(crate) started_any: bool,
}

impl ArrayState {
    fn new(spec: ArraySpec) -> Self {
        ArrayState {
            spec,
            next: 0,
            requeued: BTreeSet::new(),
            deleted: BTreeSet::new(),
            failed: BTreeSet::new(),
            running: 0,
            ended: 0,
            started_any: false,
        }
    }

    pub(crate) fn index_at(&self, ordinal: u32) -> u32 {
        self.spec.start + ordinal * self.spec.step
    }

    pub(crate) fn ordinal(&self, index: u32) -> u32 {
        (index - self.spec.start) / self.spec.step
    }

    /// Moves the cursor past deleted indices.
    fn skip_deleted(&mut self) {
        while self.next < self.spec.len() && self.deleted.contains(&self.index_at(self.next)) {
            self.next += 1;
        }
    }

    /// The next subjob index to start, if any.
    pub(crate) fn peek(&self) -> Option<u32> {
        if let Some(&i) = self.requeued.first() {
            return Some(i);
        }
        (self.next < self.spec.len()).then(|| self.index_at(self.next))
    }

    /// Marks `index` (the one `peek` gave) as started.
    pub(crate) fn take(&mut self, index: u32) {
        if !self.requeued.remove(&index) {
            self.next += 1;
            self.skip_deleted();
        }
        self.running += 1;
        self.started_any = true;
    }

    /// Whether `index` waits to start.
    pub(crate) fn is_pending(&self, index: u32) -> bool {
        self.requeued.contains(&index)
            || (self.ordinal(index) >= self.next && !self.deleted.contains(&index))
    }

    pub(crate) fn is_done(&self) -> bool {
        self.ended >= self.spec.len()
    }

    /// Whole-array success: every subjob ran and ended with status 0.
    pub(crate) fn ok(&self) -> bool {
        self.failed.is_empty() && self.deleted.is_empty()
    }

    fn heap_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + (self.requeued.len() + self.deleted.len() + self.failed.len()) * 8
    }
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

    fn heap_bytes(&self) -> usize {
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

/// A job's state, as `qstat` would show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobState {
    /// Waiting for resources (`Q`).
    Queued,
    /// User hold (`H`).
    Held,
    /// Waiting on dependencies (`H`, system hold in PBS).
    DependWait,
    /// Started (`R`).
    Running,
    /// An array of which some subjob has started (`B`).
    Begun,
    /// Ended, deleted (`F`) — known only until purged.
    Finished,
}

/// What a vnode looks like now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    /// Its name.
    pub name: String,
    /// free / job-busy / job-exclusive / offline / down.
    pub state: NodeState,
    /// `resources_available`.
    pub total: Resources,
    /// What is not assigned.
    pub free: Resources,
    /// How many jobs (and subjobs) run on it.
    pub jobs: u32,
}

/// Memory held by the scheduler, by its own accounting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryEstimate {
    /// Jobs (and arrays) not finished.
    pub jobs: usize,
    /// Bytes their records, index entries and comments take.
    pub job_bytes: usize,
    /// Bytes everything else takes (vnodes, shapes, finished outcomes, running allocations).
    pub other_bytes: usize,
}

impl MemoryEstimate {
    /// Bytes per job record (0 when there are none).
    pub fn bytes_per_job(&self) -> usize {
        self.job_bytes.checked_div(self.jobs).unwrap_or(0)
    }
}

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

/// The most CPUs (or GPUs) one vnode may have: ids are handed out from a bitmap.
const MAX_IDS_PER_NODE: u64 = 1 << 20;

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

    // ----- resources and vnodes -----

    pub(crate) fn stride(&self) -> usize {
        self.res_names.len()
    }

    /// The index of resource `name`, adding a column to the matrices when new.
    fn res_idx(&mut self, name: &str) -> Result<ResIdx, SchedError> {
        if let Some(&i) = self.res_index.get(name) {
            return Ok(i);
        }
        if self.res_names.len() >= usize::from(u16::MAX) {
            return Err(SchedError::Invalid("too many custom resources".into()));
        }
        let old = self.stride();
        let idx = old as ResIdx;
        self.res_names.push(name.into());
        self.res_index.insert(name.to_string(), idx);
        let widen = |m: &Vec<u64>| -> Vec<u64> {
            m.chunks(old.max(1))
                .take(m.len().checked_div(old).unwrap_or(0))
                .flat_map(|row| row.iter().copied().chain(std::iter::once(0)))
                .collect()
        };
        self.total = widen(&self.total);
        self.free = widen(&self.free);
        self.agg_valid = false;
        self.totals_gen = 0;
        Ok(idx)
    }

    /// Sparse amounts of `r`, interning custom names. Zero amounts are left out.
    fn sparse(&mut self, r: &Resources) -> Result<Vec<(ResIdx, u64)>, SchedError> {
        let mut out = Vec::new();
        for (idx, amount) in [(NCPUS, r.ncpus), (MEM, r.mem), (NGPUS, r.ngpus)] {
            if amount > 0 {
                out.push((idx, amount));
            }
        }
        for (name, &amount) in &r.custom {
            if amount > 0 {
                let idx = self.res_idx(name)?;
                out.push((idx, amount));
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    /// The public form of sparse amounts.
    pub(crate) fn resources_of(&self, amounts: &[(ResIdx, u64)]) -> Resources {
        let mut r = Resources::default();
        for &(idx, a) in amounts {
            match idx {
                NCPUS => r.ncpus = a,
                MEM => r.mem = a,
                NGPUS => r.ngpus = a,
                _ => {
                    r.custom
                        .insert(self.res_names[usize::from(idx)].to_string(), a);
                }
            }
        }
        r
    }

    fn row_resources(&self, m: &[u64], node: usize) -> Resources {
        let s = self.stride();
        let row: Vec<(ResIdx, u64)> = m[node * s..(node + 1) * s]
            .iter()
            .enumerate()
            .map(|(i, &a)| (i as ResIdx, a))
            .collect();
        self.resources_of(&row)
    }

    fn add_node(&mut self, spec: NodeSpec) -> Result<(), SchedError> {
        if self.node_index.contains_key(spec.name.as_str()) {
            return Err(SchedError::DuplicateNode(spec.name));
        }
        if spec.name.is_empty() {
            return Err(SchedError::Invalid("empty vnode name".into()));
        }
        let r = &spec.resources;
        if r.ncpus > MAX_IDS_PER_NODE || r.ngpus > MAX_IDS_PER_NODE {
            return Err(SchedError::Invalid(format!(
                "vnode {}: at most {MAX_IDS_PER_NODE} CPUs and GPUs",
                spec.name
            )));
        }
        let amounts = self.sparse(&spec.resources)?;
        let stride = self.stride();
        let mut row = vec![0u64; stride];
        for (idx, a) in amounts {
            row[usize::from(idx)] = a;
        }
        self.total.extend_from_slice(&row);
        self.free.extend_from_slice(&row);
        self.agg_valid = false;
        let name: Arc<str> = spec.name.as_str().into();
        self.node_index
            .insert(name.clone(), self.nodes.len() as u32);
        self.nodes.push(Node {
            name,
            avail: Avail::Up,
            njobs: 0,
            excl: false,
            cpus: IdSet::full(r.ncpus as u32),
            gpus: IdSet::full(r.ngpus as u32),
        });
        self.node_gen += 1;
        Ok(())
    }

    fn set_avail(&mut self, name: &str, avail: Avail) -> Result<(), SchedError> {
        let &i = self
            .node_index
            .get(name)
            .ok_or_else(|| SchedError::UnknownNode(name.to_string()))?;
        self.account(i as usize, false);
        self.nodes[i as usize].avail = avail;
        self.account(i as usize, true);
        Ok(())
    }

    /// Adds (or takes out) a vnode's free amounts to the usable aggregate, if it is usable.
    pub(crate) fn account(&mut self, node: usize, add: bool) {
        let n = &self.nodes[node];
        if !self.agg_valid || n.avail != Avail::Up || n.excl {
            return;
        }
        let stride = self.stride();
        for (r, agg) in self.agg_free.iter_mut().enumerate() {
            let v = self.free[node * stride + r];
            *agg = if add {
                agg.saturating_add(v)
            } else {
                agg.saturating_sub(v)
            };
        }
    }

    /// Rebuilds the usable aggregate when it is not maintained.
    pub(crate) fn ensure_agg(&mut self) {
        if self.agg_valid {
            return;
        }
        let stride = self.stride();
        let mut agg = vec![0u64; stride];
        for (n, node) in self.nodes.iter().enumerate() {
            if node.avail == Avail::Up && !node.excl {
                for (r, a) in agg.iter_mut().enumerate() {
                    *a = a.saturating_add(self.free[n * stride + r]);
                }
            }
        }
        self.agg_free = agg;
        self.agg_valid = true;
    }

    /// A vnode's state and amounts.
    pub fn node(&self, name: &str) -> Option<NodeView> {
        let &i = self.node_index.get(name)?;
        let i = i as usize;
        let n = &self.nodes[i];
        let state = match n.avail {
            Avail::Down => NodeState::Down,
            Avail::Offline => NodeState::Offline,
            Avail::Up if n.excl => NodeState::JobExclusive,
            Avail::Up if self.free[i * self.stride()] == 0 && self.total[i * self.stride()] > 0 => {
                NodeState::JobBusy
            }
            Avail::Up => NodeState::Free,
        };
        Some(NodeView {
            name: n.name.to_string(),
            state,
            total: self.row_resources(&self.total, i),
            free: self.row_resources(&self.free, i),
            jobs: n.njobs,
        })
    }

    /// The vnodes' names, in the order they were added (the order placements try them).
    pub fn node_names(&self) -> impl Iterator<Item = &str> {
        self.nodes.iter().map(|n| &*n.name)
    }

    // ----- queues -----

    fn set_queue(&mut self, spec: QueueSpec) -> Result<(), SchedError> {
        if spec.name.is_empty() {
            return Err(SchedError::Invalid("empty queue name".into()));
        }
        match self.queue_index.get(&spec.name) {
            Some(&q) => {
                let old_prio = self.queues[usize::from(q)].spec.priority;
                self.queues[usize::from(q)].spec = spec;
                if old_prio != self.queues[usize::from(q)].spec.priority {
                    self.rekey_queue(q);
                }
            }
            None => {
                if self.queues.len() >= usize::from(u16::MAX) {
                    return Err(SchedError::Invalid("too many queues".into()));
                }
                let q = self.queues.len() as u16;
                self.queue_index.insert(spec.name.clone(), q);
                self.queues.push(Queue {
                    name: spec.name.as_str().into(),
                    spec,
                    running: 0,
                });
            }
        }
        Ok(())
    }

    fn rekey_queue(&mut self, q: u16) {
        let prio = self.queues[usize::from(q)].spec.priority;
        let mut seqs: Vec<u64> = self
            .jobs
            .values()
            .filter(|j| j.queue == q)
            .map(|j| j.key.seq)
            .collect();
        seqs.sort_unstable();
        for seq in seqs {
            self.rekey(seq, |k| k.queue_prio = -i64::from(prio));
        }
    }

    fn rekey(&mut self, seq: u64, change: impl FnOnce(&mut Key)) {
        if let Some(job) = self.jobs.get_mut(&seq) {
            let was = self.eligible.remove(&job.key);
            change(&mut job.key);
            if let Some(slot) = was {
                self.eligible.insert(job.key, slot);
            }
        }
    }

    // ----- jobs -----

    fn intern_shape(&mut self, select: &[ChunkSpec], place: Place) -> Result<u32, SchedError> {
        if select.is_empty() {
            return Err(SchedError::Invalid("empty select".into()));
        }
        let mut chunks = Vec::with_capacity(select.len());
        for c in select {
            if c.count == 0 {
                return Err(SchedError::Invalid("chunk count 0".into()));
            }
            chunks.push(Chunk {
                count: c.count,
                amounts: self.sparse(&c.resources)?,
            });
        }
        let shape = Shape::new(chunks, place)
            .ok_or_else(|| SchedError::Invalid("request too large".into()))?;
        if let Some(&id) = self.shape_index.get(&shape) {
            return Ok(id);
        }
        let id = self.shapes.len() as u32;
        self.shapes.push(shape.clone());
        self.shape_index.insert(shape, id);
        self.shape_cache.push(ShapeCache::default());
        Ok(id)
    }

    fn queue_of(&self, name: &str) -> Result<u16, SchedError> {
        self.queue_index
            .get(name)
            .copied()
            .ok_or_else(|| SchedError::UnknownQueue(name.to_string()))
    }

    pub(crate) fn submit(&mut self, spec: JobSpec) -> Result<(), SchedError> {
        if self.jobs.contains_key(&spec.seq) || self.done.contains_key(&spec.seq) {
            return Err(SchedError::DuplicateJob(spec.seq));
        }
        let q = self.queue_of(&spec.queue)?;
        if !self.queues[usize::from(q)].spec.enabled {
            return Err(SchedError::QueueDisabled(spec.queue));
        }
        if let Some(a) = &spec.array {
            if a.is_empty() || a.max_running == Some(0) {
                return Err(SchedError::Invalid("bad array range".into()));
            }
            // Every ordinal must fit a u32 count.
            if (a.end - a.start) / a.step >= u32::MAX - 1 {
                return Err(SchedError::Invalid("bad array range".into()));
            }
        }
        self.check_dependencies(&spec)?;
        let shape = self.intern_shape(&spec.select, spec.place)?;
        let qprio = self.queues[usize::from(q)].spec.priority;
        let job = Job {
            key: Key::new(qprio, spec.priority, spec.submit_time, spec.seq),
            slot: 0,
            shape,
            queue: q,
            hold: spec.hold,
            started: false,
            owner: self.owners.intern(&spec.owner),
            project: self.projects.intern(&spec.project),
            walltime: spec.walltime,
            waiting: None,
            array: spec.array.map(|a| Box::new(ArrayState::new(a))),
            comment: None,
        };
        self.jobs.insert(spec.seq, job);
        self.slots.resize(self.jobs.capacity(), Slot::default());
        self.add_dependencies(spec.seq, &spec.depend);
        self.refresh(spec.seq);
        Ok(())
    }

    /// Puts the job in or out of the set considered by cycles.
    pub(crate) fn refresh(&mut self, seq: u64) {
        let Some(job) = self.jobs.get(&seq) else {
            return;
        };
        let want = !job.hold && job.waiting.is_none() && job.has_pending_work();
        let zero_cpu = !self.shapes[job.shape as usize].all_need_cpu;
        self.slots[job.slot as usize] = Slot {
            shape: job.shape,
            owner: job.owner,
            queue: job.queue,
            array: job.array.is_some(),
            walltime: job.walltime.unwrap_or(u64::MAX),
            comment_fp: job.comment.as_deref().map_or(0, fingerprint),
        };
        let changed = if want {
            self.eligible.insert(job.key, job.slot).is_none()
        } else {
            self.eligible.remove(&job.key).is_some()
        };
        if changed && zero_cpu {
            if want {
                self.zero_cpu_eligible += 1;
            } else {
                self.zero_cpu_eligible -= 1;
            }
        }
    }

    /// Removes a job's record and frees its slot.
    pub(crate) fn drop_job(&mut self, seq: u64) -> Option<Job> {
        self.jobs.remove(&seq)
    }

    /// Takes the job out of the eligible set, keeping counts right.
    pub(crate) fn unlist(&mut self, seq: u64) {
        if let Some(job) = self.jobs.get(&seq) {
            if self.eligible.remove(&job.key).is_some()
                && !self.shapes[job.shape as usize].all_need_cpu
            {
                self.zero_cpu_eligible -= 1;
            }
        }
    }

    /// The walltime used for planning: the request, else the queue's default, else the server's.
    pub(crate) fn walltime_of(&self, job: &Job) -> u64 {
        job.walltime
            .or(self.queues[usize::from(job.queue)].spec.default_walltime)
            .unwrap_or(self.config.default_walltime)
    }

    pub(crate) fn confirm(&mut self, id: JobId, at: u64) -> Result<(), SchedError> {
        let walltime = {
            let job = self.jobs.get(&id.seq).ok_or(SchedError::UnknownJob(id))?;
            self.walltime_of(job)
        };
        let run = self.running.get_mut(&id).ok_or(SchedError::WrongState {
            job: id,
            action: "confirm the start of",
            state: "not started",
        })?;
        let release = self.ends.remove(&(run.end, id));
        run.start = at;
        run.end = at.saturating_add(walltime);
        run.confirmed = true;
        if let Some(r) = release {
            self.ends.insert((run.end, id), r);
        }
        Ok(())
    }

    /// Frees what a started job holds and updates the running counts.
    fn release(&mut self, id: JobId) -> Result<Run, SchedError> {
        let run = self.running.remove(&id).ok_or(SchedError::WrongState {
            job: id,
            action: "end",
            state: "not running",
        })?;
        self.ends.remove(&(run.end, id));
        let stride = self.stride();
        let mut seen: Vec<u32> = Vec::new();
        for c in &run.chunks {
            if !seen.contains(&c.node) {
                seen.push(c.node);
            }
        }
        for &n in &seen {
            self.account(n as usize, false);
        }
        let shape = &self.shapes[run.shape as usize];
        for c in &run.chunks {
            let n = c.node as usize;
            for &(r, a) in &shape.chunks[usize::from(c.term)].amounts {
                self.free[n * stride + usize::from(r)] += a;
            }
            self.nodes[n].cpus.give(&c.cpus);
            self.nodes[n].gpus.give(&c.gpus);
        }
        for &n in &seen {
            let node = &mut self.nodes[n as usize];
            node.njobs = node.njobs.saturating_sub(1);
            if run.excl {
                node.excl = false;
            }
            self.account(n as usize, true);
        }
        if let Some(job) = self.jobs.get(&id.seq) {
            let (q, owner) = (job.queue, job.owner);
            self.count_running(q, owner, false);
        }
        Ok(run)
    }

    pub(crate) fn count_running(&mut self, q: u16, owner: u32, up: bool) {
        fn step(v: &mut u32, up: bool) {
            *v = if up { *v + 1 } else { v.saturating_sub(1) };
        }
        step(&mut self.run_total, up);
        step(&mut self.queues[usize::from(q)].running, up);
        step(self.run_by_user.entry(owner).or_insert(0), up);
        step(self.run_by_queue_user.entry((q, owner)).or_insert(0), up);
    }

    fn requeue(&mut self, id: JobId) -> Result<(), SchedError> {
        if !self.jobs.contains_key(&id.seq) {
            return Err(SchedError::UnknownJob(id));
        }
        self.release(id)?;
        let job = self
            .jobs
            .get_mut(&id.seq)
            .ok_or(SchedError::UnknownJob(id))?;
        match (&mut job.array, id.index) {
            (Some(a), Some(i)) => {
                a.running = a.running.saturating_sub(1);
                a.requeued.insert(i);
            }
            _ => job.started = false,
        }
        self.refresh(id.seq);
        Ok(())
    }

    fn finish(&mut self, id: JobId, ok: bool) -> Result<(), SchedError> {
        if !self.jobs.contains_key(&id.seq) {
            return Err(SchedError::UnknownJob(id));
        }
        self.release(id)?;
        self.record_end(id, ok, true);
        Ok(())
    }

    /// Records that a job or subjob ended (ran or not), and wakes its dependents.
    pub(crate) fn record_end(&mut self, id: JobId, ok: bool, ran: bool) {
        let Some(job) = self.jobs.get_mut(&id.seq) else {
            return;
        };
        match (&mut job.array, id.index) {
            (Some(a), Some(i)) => {
                if ran {
                    a.running = a.running.saturating_sub(1);
                }
                a.ended += 1;
                if !ok && ran {
                    a.failed.insert(i);
                }
                if a.is_done() {
                    self.unlist(id.seq);
                    if let Some(job) = self.drop_job(id.seq) {
                        if let Some(a) = job.array {
                            self.done.insert(id.seq, Outcome::Array(a));
                        }
                    }
                } else {
                    self.refresh(id.seq);
                }
            }
            _ => {
                self.unlist(id.seq);
                self.drop_job(id.seq);
                self.done.insert(id.seq, Outcome::Single { ran, ok });
            }
        }
        self.wake_dependents(id.seq);
    }

    fn set_hold(&mut self, id: JobId, hold: bool) -> Result<(), SchedError> {
        let action = if hold { "hold" } else { "release" };
        let job = self
            .jobs
            .get_mut(&id.seq)
            .ok_or(SchedError::UnknownJob(id))?;
        if id.index.is_some() {
            return Err(SchedError::WrongState {
                job: id,
                action,
                state: "a subjob (hold the array)",
            });
        }
        if hold && !job.has_pending_work() {
            return Err(SchedError::WrongState {
                job: id,
                action,
                state: "running",
            });
        }
        job.hold = hold;
        self.refresh(id.seq);
        Ok(())
    }

    fn delete(&mut self, id: JobId) -> Result<(), SchedError> {
        let job = self.jobs.get(&id.seq).ok_or(SchedError::UnknownJob(id))?;
        match (&job.array, id.index) {
            (None, Some(_)) => Err(SchedError::UnknownJob(id)),
            (None, None) => {
                if self.running.contains_key(&id) {
                    self.release(id)?;
                    self.record_end(id, false, true);
                } else {
                    self.record_end(id, false, false);
                }
                Ok(())
            }
            (Some(a), Some(i)) => {
                if !a.spec.contains(i) {
                    return Err(SchedError::UnknownJob(id));
                }
                if self.running.contains_key(&id) {
                    self.release(id)?;
                    self.record_end(id, false, true);
                } else if a.is_pending(i) {
                    self.delete_pending_index(id.seq, i);
                } else {
                    return Err(SchedError::WrongState {
                        job: id,
                        action: "delete",
                        state: "finished",
                    });
                }
                Ok(())
            }
            (Some(a), None) => {
                let pending: Vec<u32> = a.spec.indices().filter(|&i| a.is_pending(i)).collect();
                let mut running: Vec<JobId> = self
                    .running
                    .keys()
                    .filter(|k| k.seq == id.seq)
                    .copied()
                    .collect();
                running.sort_unstable();
                for r in running {
                    self.release(r)?;
                    self.record_end(r, false, true);
                }
                for i in pending {
                    self.delete_pending_index(id.seq, i);
                }
                Ok(())
            }
        }
    }

    pub(crate) fn delete_pending_index(&mut self, seq: u64, index: u32) {
        if let Some(a) = self.jobs.get_mut(&seq).and_then(|j| j.array.as_mut()) {
            if !a.requeued.remove(&index) {
                a.deleted.insert(index);
                a.skip_deleted();
            } else {
                a.deleted.insert(index);
            }
        }
        self.record_end(JobId::subjob(seq, index), false, false);
    }

    fn alter(&mut self, id: JobId, alter: Alter) -> Result<(), SchedError> {
        let job = self.jobs.get(&id.seq).ok_or(SchedError::UnknownJob(id))?;
        if id.index.is_some() {
            return Err(SchedError::WrongState {
                job: id,
                action: "alter",
                state: "a subjob (alter the array)",
            });
        }
        let started = match &job.array {
            Some(a) => a.started_any,
            None => job.started,
        };
        if started && (alter.select.is_some() || alter.place.is_some()) {
            return Err(SchedError::WrongState {
                job: id,
                action: "alter select or place of",
                state: "running",
            });
        }
        let shape = match (&alter.select, alter.place) {
            (None, None) => None,
            (select, place) => {
                let old = &self.shapes[job.shape as usize];
                let select = match select {
                    Some(s) => s.clone(),
                    None => old
                        .chunks
                        .iter()
                        .map(|c| ChunkSpec::new(c.count, self.resources_of(&c.amounts)))
                        .collect(),
                };
                let place = place.unwrap_or(old.place);
                Some(self.intern_shape(&select, place)?)
            }
        };
        self.unlist(id.seq);
        if let Some(job) = self.jobs.get_mut(&id.seq) {
            if let Some(p) = alter.priority {
                job.key.prio = -i64::from(p);
            }
            if let Some(w) = alter.walltime {
                job.walltime = w;
            }
            if let Some(s) = shape {
                job.shape = s;
            }
        }
        if alter.walltime.is_some() {
            self.replan_running(id.seq);
        }
        self.refresh(id.seq);
        Ok(())
    }

    /// Recomputes the planned end of a job's running parts after its walltime changed.
    fn replan_running(&mut self, seq: u64) {
        let Some(job) = self.jobs.get(&seq) else {
            return;
        };
        let walltime = self.walltime_of(job);
        let mut ids: Vec<JobId> = self
            .running
            .keys()
            .filter(|k| k.seq == seq)
            .copied()
            .collect();
        ids.sort_unstable();
        for id in ids {
            if let Some(run) = self.running.get_mut(&id) {
                let release = self.ends.remove(&(run.end, id));
                run.end = run.start.saturating_add(walltime);
                if let Some(r) = release {
                    self.ends.insert((run.end, id), r);
                }
            }
        }
    }

    fn purge(&mut self, seq: u64) -> Result<(), SchedError> {
        self.done
            .remove(&seq)
            .ok_or(SchedError::UnknownJob(JobId::job(seq)))?;
        self.dependents.remove(&seq);
        Ok(())
    }

    // ----- queries -----

    /// A job's (or subjob's) state; `None` when unknown or purged.
    pub fn job_state(&self, id: JobId) -> Option<JobState> {
        if let Some(job) = self.jobs.get(&id.seq) {
            return match (&job.array, id.index) {
                (None, None) if job.started => Some(JobState::Running),
                (None, None) => Some(self.waiting_state(job)),
                (None, Some(_)) => None,
                (Some(a), None) if a.started_any => Some(JobState::Begun),
                (Some(_), None) => Some(self.waiting_state(job)),
                (Some(a), Some(i)) if !a.spec.contains(i) => None,
                (Some(_), Some(_)) if self.running.contains_key(&id) => Some(JobState::Running),
                (Some(a), Some(i)) if a.is_pending(i) => Some(self.waiting_state(job)),
                (Some(_), Some(_)) => Some(JobState::Finished),
            };
        }
        match (self.done.get(&id.seq)?, id.index) {
            (Outcome::Array(a), Some(i)) if !a.spec.contains(i) => None,
            (Outcome::Single { .. }, Some(_)) => None,
            _ => Some(JobState::Finished),
        }
    }

    fn waiting_state(&self, job: &Job) -> JobState {
        if job.hold {
            JobState::Held
        } else if job.waiting.is_some() {
            JobState::DependWait
        } else {
            JobState::Queued
        }
    }

    /// The comment the scheduler last set on a waiting job (or array).
    pub fn comment(&self, seq: u64) -> Option<&Comment> {
        self.jobs.get(&seq)?.comment.as_deref()
    }

    /// The top job of the last cycle and when it is expected to start (`estimated.start_time`).
    pub fn top_job_estimate(&self) -> Option<(JobId, u64)> {
        self.top
    }

    /// Jobs (and arrays) waiting to start, as cycles consider them.
    pub fn eligible_len(&self) -> usize {
        self.eligible.len()
    }

    /// Jobs and subjobs started and not ended.
    pub fn running_len(&self) -> usize {
        self.running.len()
    }

    /// Running jobs and subjobs with their vnodes, sorted by id.
    pub fn running_jobs(&self) -> Vec<(JobId, Vec<String>)> {
        let mut out: Vec<(JobId, Vec<String>)> = self
            .running
            .iter()
            .map(|(id, run)| {
                let nodes = run
                    .chunks
                    .iter()
                    .map(|c| self.nodes[c.node as usize].name.to_string())
                    .collect();
                (*id, nodes)
            })
            .collect();
        out.sort();
        out
    }

    /// Memory used, by the scheduler's own accounting of its records and index entries.
    pub fn memory_estimate(&self) -> MemoryEstimate {
        use std::mem::size_of;
        // A hash map entry costs its key and value plus a control byte, at 7/8 load;
        // a B-tree set entry its key plus about half again for node slack and edges.
        let map_entry = (size_of::<u64>() + size_of::<Job>() + 1) * 8 / 7;
        let set_entry = (size_of::<Key>() + size_of::<u32>()) * 3 / 2 + size_of::<Slot>();
        let job_bytes: usize = self
            .jobs
            .values()
            .map(|j| map_entry + j.heap_bytes())
            .sum::<usize>()
            + self.eligible.len() * set_entry;
        let shapes: usize = self
            .shapes
            .iter()
            .map(|s| {
                2 * (size_of::<Shape>()
                    + s.chunks.len() * size_of::<Chunk>()
                    + s.chunks.iter().map(|c| c.amounts.len() * 16).sum::<usize>())
            })
            .sum();
        let runs: usize = self
            .running
            .values()
            .map(|r| {
                size_of::<Run>()
                    + size_of::<JobId>()
                    + r.chunks
                        .iter()
                        .map(|c| size_of::<RunChunk>() + (c.cpus.len() + c.gpus.len()) * 4)
                        .sum::<usize>()
            })
            .sum();
        let done = self.done.len() * (size_of::<u64>() + size_of::<Outcome>() + 1) * 8 / 7;
        let nodes = self.nodes.len() * (size_of::<Node>() + 2 * 8 * self.stride());
        MemoryEstimate {
            jobs: self.jobs.len(),
            job_bytes,
            other_bytes: shapes
                + runs
                + done
                + nodes
                + self.owners.heap_bytes()
                + self.projects.heap_bytes(),
        }
    }

    /// Queue names with how many of their jobs run.
    pub fn queue_running(&self) -> BTreeMap<String, u32> {
        self.queues
            .iter()
            .map(|q| (q.spec.name.clone(), q.running))
            .collect()
    }

    /// The project a job was submitted under.
    pub fn project(&self, seq: u64) -> Option<&str> {
        let job = self.jobs.get(&seq)?;
        Some(self.projects.name(job.project))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DependKind, Dependency};

    fn sched() -> Scheduler {
        let mut s = Scheduler::new(Config::default());
        s.apply(Event::SetQueue(QueueSpec::new("workq"))).unwrap();
        s.apply(Event::AddNode(NodeSpec::new("n1", Resources::cpus(4))))
            .unwrap();
        s
    }

    fn job(seq: u64) -> JobSpec {
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
    fn an_array_of_100000_costs_what_one_job_costs() {
        let mut s = sched();
        s.apply(Event::Submit(Box::new(job(1)))).unwrap();
        let one = s.memory_estimate().job_bytes;
        let mut a = job(2);
        a.array = Some(ArraySpec::new(1, 100_000, 1));
        s.apply(Event::Submit(Box::new(a))).unwrap();
        let both = s.memory_estimate().job_bytes;
        let array = both - one;
        assert!(array < 4 * one, "array {array} bytes, job {one} bytes");
        // Expanding runs the first subjobs only.
        let runs = s.cycle(0);
        assert_eq!(
            runs.len(),
            1 + 3 + 1,
            "job 1, 3 subjobs beside it, a comment on the array"
        );
        assert_eq!(s.job_state(JobId::subjob(2, 4)), Some(JobState::Queued));
        assert_eq!(s.job_state(JobId::subjob(2, 100_001)), None);
    }

    #[test]
    fn custom_resources_are_consumed_by_name() {
        let mut s = sched();
        let node = NodeSpec::new("lic", Resources::cpus(4).with_custom("licenses", 2));
        s.apply(Event::AddNode(node)).unwrap();
        for seq in 1..=3 {
            let j = JobSpec::new(
                seq,
                vec![ChunkSpec::new(
                    1,
                    Resources::cpus(1).with_custom("licenses", 1),
                )],
            );
            s.apply(Event::Submit(Box::new(j))).unwrap();
        }
        let d: Vec<String> = s.cycle(0).iter().map(|d| d.to_string()).collect();
        assert_eq!(
            d,
            [
                "run 1 (lic:ncpus=1:licenses=1) lic:cpus=0",
                "run 2 (lic:ncpus=1:licenses=1) lic:cpus=1",
                "comment 3 Not Running: Insufficient amount of resource: licenses (R: 1 A: 0 T: 2)",
            ]
        );
        assert_eq!(s.node("lic").unwrap().free.custom["licenses"], 0);
    }

    #[test]
    fn ngpus_get_ids() {
        let mut s = Scheduler::new(Config::default());
        s.apply(Event::SetQueue(QueueSpec::new("workq"))).unwrap();
        s.apply(Event::AddNode(NodeSpec::new("g1", Resources::new(8, 0, 4))))
            .unwrap();
        let j = JobSpec::new(1, vec![ChunkSpec::new(2, Resources::new(1, 0, 2))]);
        s.apply(Event::Submit(Box::new(j))).unwrap();
        let d = s.cycle(0);
        assert_eq!(
            d[0].to_string(),
            "run 1 (g1:ncpus=1:ngpus=2)+(g1:ncpus=1:ngpus=2) g1:cpus=0 g1:gpus=0-1 g1:cpus=1 g1:gpus=2-3"
        );
    }

    #[test]
    fn time_never_goes_back() {
        let mut s = sched();
        s.apply(Event::Clock(100)).unwrap();
        s.cycle(50);
        assert_eq!(s.now(), 100);
    }
}

//! The inputs of the scheduler: nodes (vnodes), queues, jobs and their requests.
//!
//! Amounts are plain integers: `ncpus` and `ngpus` as counts, `mem` in kilobytes, custom
//! consumables by name. The cluster layer converts PBS's `select`/`place` into [`ChunkSpec`] and
//! [`Place`]; the names follow PBS so the conversion is one field to one field.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// The seconds a job without any walltime request is assumed to run, as PBS's scheduler does
/// (`FIVE_YRS` in OpenPBS): long enough never to be backfilled in front of a top job.
pub const FIVE_YEARS: u64 = 157_680_000;

/// An amount of each consumable resource.
///
/// ```
/// use hpcbox_sched::Resources;
/// let r = Resources::new(4, 8 * 1024 * 1024, 0).with_custom("licenses", 2);
/// assert_eq!(r.to_string(), "ncpus=4:mem=8gb:licenses=2");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Resources {
    /// CPUs (cores), as a count.
    pub ncpus: u64,
    /// Memory in kilobytes.
    pub mem: u64,
    /// GPUs, as a count.
    pub ngpus: u64,
    /// Custom consumable resources by name (e.g. `licenses`), in their own integer units.
    pub custom: BTreeMap<String, u64>,
}

impl Resources {
    /// `ncpus`, `mem` (kilobytes) and `ngpus`, no custom resources.
    pub fn new(ncpus: u64, mem_kb: u64, ngpus: u64) -> Self {
        Resources {
            ncpus,
            mem: mem_kb,
            ngpus,
            custom: BTreeMap::new(),
        }
    }

    /// Only CPUs.
    pub fn cpus(ncpus: u64) -> Self {
        Resources::new(ncpus, 0, 0)
    }

    /// The same amounts plus `amount` of the custom consumable `name`.
    pub fn with_custom(mut self, name: &str, amount: u64) -> Self {
        self.custom.insert(name.to_string(), amount);
        self
    }
}

/// Formats a size in kilobytes as PBS's scheduler does: the largest unit that divides it exactly.
///
/// ```
/// assert_eq!(hpcbox_sched::format_size_kb(0), "0kb");
/// assert_eq!(hpcbox_sched::format_size_kb(2 * 1024 * 1024), "2gb");
/// assert_eq!(hpcbox_sched::format_size_kb(1536), "1536kb");
/// ```
pub fn format_size_kb(kb: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1 << 30, "tb"), (1 << 20, "gb"), (1 << 10, "mb")];
    if kb == 0 {
        return "0kb".to_string();
    }
    for (factor, unit) in UNITS {
        if kb.checked_rem(factor) == Some(0) {
            return format!("{}{unit}", kb / factor);
        }
    }
    format!("{kb}kb")
}

impl fmt::Display for Resources {
    /// `ncpus=N:mem=Xgb:ngpus=N:name=N`, leaving out zero amounts; sizes in the largest exact
    /// unit, as the scheduler writes them in comments.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = Vec::new();
        if self.ncpus > 0 {
            parts.push(format!("ncpus={}", self.ncpus));
        }
        if self.mem > 0 {
            parts.push(format!("mem={}", format_size_kb(self.mem)));
        }
        if self.ngpus > 0 {
            parts.push(format!("ngpus={}", self.ngpus));
        }
        for (name, amount) in &self.custom {
            if *amount > 0 {
                parts.push(format!("{name}={amount}"));
            }
        }
        f.write_str(&parts.join(":"))
    }
}

/// One `N:res=value…` term of a `select` statement: `count` chunks of `resources` each.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChunkSpec {
    /// How many chunks of this shape (the `N:` prefix; at least 1).
    pub count: u32,
    /// What one chunk needs.
    pub resources: Resources,
}

impl ChunkSpec {
    /// `count` chunks of `resources`.
    pub fn new(count: u32, resources: Resources) -> Self {
        ChunkSpec { count, resources }
    }
}

/// The arrangement part of `place=`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Arrangement {
    /// `free`: chunks go wherever they fit, several on one vnode if they fit there.
    #[default]
    Free,
    /// `pack`: all chunks on one vnode.
    Pack,
    /// `scatter`: each chunk on a different host.
    Scatter,
    /// `vscatter`: each chunk on a different vnode (one vnode per host here, so as `scatter`).
    Vscatter,
}

/// The sharing part of `place=`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Sharing {
    /// `shared` (the default): other jobs may use what this job leaves free on its vnodes.
    #[default]
    Shared,
    /// `excl`: the vnodes the job uses run nothing else while it runs.
    Excl,
    /// `exclhost`: the hosts the job uses run nothing else (one vnode per host here, so as `excl`).
    Exclhost,
}

/// `place=arrangement:sharing`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Place {
    /// free / pack / scatter / vscatter.
    pub arrangement: Arrangement,
    /// shared / excl / exclhost.
    pub sharing: Sharing,
}

impl Place {
    /// `place=arrangement:sharing`.
    pub fn new(arrangement: Arrangement, sharing: Sharing) -> Self {
        Place {
            arrangement,
            sharing,
        }
    }

    /// Whether the job takes its vnodes whole.
    pub fn is_exclusive(&self) -> bool {
        matches!(self.sharing, Sharing::Excl | Sharing::Exclhost)
    }
}

/// A job as the scheduler knows it: the sequence number the server gave it, and for a subjob of
/// an array its index. Opaque otherwise; the server maps it to `123.server` / `123[4].server`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct JobId {
    /// The job's sequence number.
    pub seq: u64,
    /// The subjob index, for one subjob of an array.
    pub index: Option<u32>,
}

impl JobId {
    /// A job (or a whole array).
    pub fn job(seq: u64) -> Self {
        JobId { seq, index: None }
    }

    /// Subjob `index` of array `seq`.
    pub fn subjob(seq: u64, index: u32) -> Self {
        JobId {
            seq,
            index: Some(index),
        }
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.index {
            Some(i) => write!(f, "{}[{i}]", self.seq),
            None => write!(f, "{}", self.seq),
        }
    }
}

/// The indices of a job array, `-J start-end:step%max_running`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ArraySpec {
    /// The first index.
    pub start: u32,
    /// The last index that may be reached (inclusive).
    pub end: u32,
    /// Distance between indices (at least 1).
    pub step: u32,
    /// At most this many subjobs run at once (`%N`).
    pub max_running: Option<u32>,
}

impl ArraySpec {
    /// `start-end:step` with no cap on running subjobs.
    pub fn new(start: u32, end: u32, step: u32) -> Self {
        ArraySpec {
            start,
            end,
            step,
            max_running: None,
        }
    }

    /// How many indices the range holds (0 when it is invalid; at most `u32::MAX`).
    pub fn len(&self) -> u32 {
        if self.step == 0 || self.end < self.start {
            return 0;
        }
        ((self.end - self.start) / self.step).saturating_add(1)
    }

    /// Whether the range holds no index.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `index` is one of the range's indices.
    pub fn contains(&self, index: u32) -> bool {
        self.step > 0
            && index >= self.start
            && index <= self.end
            && (index - self.start).checked_rem(self.step) == Some(0)
    }

    /// The indices, in order.
    pub fn indices(&self) -> impl Iterator<Item = u32> {
        let (start, step, n) = (self.start, self.step, self.len());
        (0..n).map(move |i| start + i * step)
    }
}

/// The kinds of `-W depend=` that involve jobs. `on:N` is the server's bookkeeping and is not
/// needed here: a `before…` dependency simply adds the matching `after…` to the named job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum DependKind {
    /// May start once the named job has started.
    After,
    /// May start after the named job ends with exit status 0.
    AfterOk,
    /// May start after the named job ends with a non-zero exit status.
    AfterNotOk,
    /// May start after the named job ends, however it ends.
    AfterAny,
    /// The named job may start once this one has started.
    Before,
    /// The named job may start after this one ends with exit status 0.
    BeforeOk,
    /// The named job may start after this one ends with a non-zero exit status.
    BeforeNotOk,
    /// The named job may start after this one ends.
    BeforeAny,
}

impl DependKind {
    /// For a `before…` kind, the `after…` kind it puts on the named job; `None` for `after…`.
    pub fn inverse(self) -> Option<DependKind> {
        match self {
            DependKind::Before => Some(DependKind::After),
            DependKind::BeforeOk => Some(DependKind::AfterOk),
            DependKind::BeforeNotOk => Some(DependKind::AfterNotOk),
            DependKind::BeforeAny => Some(DependKind::AfterAny),
            _ => None,
        }
    }

    /// The name in `-W depend=`.
    pub fn name(self) -> &'static str {
        match self {
            DependKind::After => "after",
            DependKind::AfterOk => "afterok",
            DependKind::AfterNotOk => "afternotok",
            DependKind::AfterAny => "afterany",
            DependKind::Before => "before",
            DependKind::BeforeOk => "beforeok",
            DependKind::BeforeNotOk => "beforenotok",
            DependKind::BeforeAny => "beforeany",
        }
    }
}

/// One dependency: `kind:job`. `job` may name a whole array (`index: None`) or one subjob.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Dependency {
    /// after / afterok / … / beforeany.
    pub kind: DependKind,
    /// The job it is on.
    pub job: JobId,
}

impl Dependency {
    /// `kind:job`.
    pub fn new(kind: DependKind, job: JobId) -> Self {
        Dependency { kind, job }
    }
}

/// A job submitted to the scheduler.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    /// The server's sequence number; unique.
    pub seq: u64,
    /// The queue's name; the queue must exist and be enabled.
    pub queue: String,
    /// `Job_Owner` (user name).
    pub owner: String,
    /// `project`.
    pub project: String,
    /// The `select` statement: at least one term.
    pub select: Vec<ChunkSpec>,
    /// `place=`.
    pub place: Place,
    /// `walltime` in seconds, if requested.
    pub walltime: Option<u64>,
    /// `Priority` (-1024..=1023 in PBS; any i32 accepted); higher runs first.
    pub priority: i32,
    /// When it was submitted (seconds); ties broken by `seq`.
    pub submit_time: u64,
    /// Submitted with a user hold (`qsub -h`).
    pub hold: bool,
    /// `-J`: the job is an array of subjobs.
    pub array: Option<ArraySpec>,
    /// `-W depend=`.
    pub depend: Vec<Dependency>,
}

impl JobSpec {
    /// A job with one `select` term in queue `workq`, owner `user`, no walltime, priority 0,
    /// submitted at time 0: a starting point for builders and tests.
    pub fn new(seq: u64, select: Vec<ChunkSpec>) -> Self {
        JobSpec {
            seq,
            queue: "workq".to_string(),
            owner: "user".to_string(),
            project: "_pbs_project_default".to_string(),
            select,
            place: Place::default(),
            walltime: None,
            priority: 0,
            submit_time: 0,
            hold: false,
            array: None,
            depend: Vec::new(),
        }
    }
}

/// A vnode and what it offers (`resources_available`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSpec {
    /// The vnode's name (unique).
    pub name: String,
    /// Its consumable resources. CPU ids `0..ncpus` and GPU ids `0..ngpus` are handed out.
    pub resources: Resources,
}

impl NodeSpec {
    /// A vnode `name` offering `resources`.
    pub fn new(name: &str, resources: Resources) -> Self {
        NodeSpec {
            name: name.to_string(),
            resources,
        }
    }
}

/// A vnode's state, as `pbsnodes` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum NodeState {
    /// Up, with some CPUs free.
    Free,
    /// Up, all CPUs in use (`job-busy`).
    JobBusy,
    /// Up, used by an exclusive job (`job-exclusive`).
    JobExclusive,
    /// Taken out of service by the administrator (`offline`): running jobs go on, nothing new.
    Offline,
    /// Not reachable (`down`).
    Down,
}

impl NodeState {
    /// The word `pbsnodes` prints.
    pub fn as_pbs(self) -> &'static str {
        match self {
            NodeState::Free => "free",
            NodeState::JobBusy => "job-busy",
            NodeState::JobExclusive => "job-exclusive",
            NodeState::Offline => "offline",
            NodeState::Down => "down",
        }
    }
}

impl fmt::Display for NodeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_pbs())
    }
}

/// A queue and its scheduling attributes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueSpec {
    /// The queue's name.
    pub name: String,
    /// `Priority`: jobs of higher-priority queues are considered first.
    pub priority: i32,
    /// `enabled`: accepts new jobs.
    pub enabled: bool,
    /// `started`: its jobs may run.
    pub started: bool,
    /// `max_run`: at most this many of its jobs (subjobs count one each) run at once.
    pub max_run: Option<u32>,
    /// `max_user_run`: at most this many of one user's jobs in it run at once.
    pub max_user_run: Option<u32>,
    /// `resources_default.walltime`: the walltime assumed for its jobs that request none.
    pub default_walltime: Option<u64>,
}

impl QueueSpec {
    /// An enabled, started queue with priority 0 and no limits.
    pub fn new(name: &str) -> Self {
        QueueSpec {
            name: name.to_string(),
            priority: 0,
            enabled: true,
            started: true,
            max_run: None,
            max_user_run: None,
            default_walltime: None,
        }
    }
}

/// Which policy a cycle follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Policy {
    /// Strict FIFO by priority: once the first job in order cannot run, nothing after it runs
    /// (`strict_ordering` without `backfill`).
    Fifo,
    /// EASY backfill: the first job that cannot run gets a reservation at the earliest time it
    /// could start (using walltime requests); a later job starts now only if it cannot delay it.
    Backfill,
}

/// Server-wide settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// FIFO or EASY backfill.
    pub policy: Policy,
    /// The walltime assumed for jobs that request none and whose queue has no default
    /// ([`FIVE_YEARS`] unless set, as PBS).
    pub default_walltime: u64,
    /// The server's `max_run`: at most this many jobs (subjobs one each) run at once.
    pub max_run: Option<u32>,
    /// The server's `max_user_run`: at most this many of one user's jobs run at once.
    pub max_user_run: Option<u32>,
    /// Whether cycles explain waiting jobs with comments. The simulator turns this off, which
    /// also lets a cycle stop scanning as soon as nothing more can start.
    pub comments: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            policy: Policy::Backfill,
            default_walltime: FIVE_YEARS,
            max_run: None,
            max_user_run: None,
            comments: true,
        }
    }
}

/// Changes to a job (`qalter`). `select`/`place` only while no part of the job has started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alter {
    /// New `Priority`.
    pub priority: Option<i32>,
    /// New walltime request (`Some(None)` removes it); allowed on running jobs too.
    pub walltime: Option<Option<u64>>,
    /// New `select`.
    pub select: Option<Vec<ChunkSpec>>,
    /// New `place`.
    pub place: Option<Place>,
}

/// An input to the scheduler.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// A vnode joins the complex, up and free.
    AddNode(NodeSpec),
    /// A vnode is up again (clears offline and down).
    NodeUp(String),
    /// A vnode is down.
    NodeDown(String),
    /// A vnode is set offline.
    NodeOffline(String),
    /// A queue is created, or its attributes replaced.
    SetQueue(QueueSpec),
    /// A job is submitted.
    Submit(Box<JobSpec>),
    /// The agent confirms a start decided by a cycle, at time `at`; the walltime counts from here.
    StartConfirmed {
        /// The job or subjob started.
        job: JobId,
        /// When it started (seconds).
        at: u64,
    },
    /// A started job goes back to the queue (its start failed, or `qrerun`); resources freed.
    Requeue(JobId),
    /// A started job ended with this exit status.
    Finish {
        /// The job or subjob that ended.
        job: JobId,
        /// Its exit status (0 is success for `afterok`).
        exit_status: i32,
    },
    /// `qhold`: a queued job (or the queued part of an array) is held.
    Hold(JobId),
    /// `qrls`: the user hold is released.
    Release(JobId),
    /// `qdel`: a queued job is removed; a running one counts as ended with a failure (the server
    /// kills it) and its resources are freed.
    Delete(JobId),
    /// `qalter`.
    Alter {
        /// The job (not a subjob).
        job: JobId,
        /// What changes.
        alter: Alter,
    },
    /// The time is now `t` (seconds); time never goes back.
    Clock(u64),
    /// Forget a finished job: dependencies on it can no longer be submitted.
    Purge(u64),
    /// A job that already runs, as the server finds it after a restart: it is submitted and
    /// placed where it runs, started at `at`. `vnodes` names each chunk's vnode, in select
    /// order with counts expanded (`2:ncpus=1+1:ncpus=4` → three names). Not for arrays.
    Restore {
        /// The job.
        job: Box<JobSpec>,
        /// Where each chunk runs.
        vnodes: Vec<String>,
        /// When it started (seconds).
        at: u64,
    },
    /// An array as the server finds it after a restart: submitted whole, with what became of
    /// each subjob that started or was deleted; the other indices wait to start. Subjobs start
    /// in index order, so the started ones must be the first indices not deleted.
    RestoreArray {
        /// The array, with its whole range.
        job: Box<JobSpec>,
        /// The subjobs that are no longer waiting, in any order.
        subjobs: Vec<RestoredSubjob>,
    },
}

/// A subjob of an array handed back with [`Event::RestoreArray`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoredSubjob {
    /// Its index.
    pub index: u32,
    /// What became of it.
    pub state: SubjobState,
}

/// Where a subjob of a restored array stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SubjobState {
    /// It ran and ended, with exit status 0 (`ok`) or not.
    Ended {
        /// Whether it exited 0.
        ok: bool,
    },
    /// It was deleted before it ran.
    Deleted,
    /// It runs: on `vnodes` (one per chunk, in select order, counts expanded), since `at`.
    Running {
        /// Where each chunk runs.
        vnodes: Vec<String>,
        /// When it started (seconds).
        at: u64,
    },
}

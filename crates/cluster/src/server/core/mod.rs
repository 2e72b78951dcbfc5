//! The server's state and every decision it takes, without sockets: requests and agent reports
//! go in, answers and messages for agents come out. The daemon around it
//! ([`super::daemon::run`]) only moves bytes. Clients' requests are in `requests`, agents'
//! reports in `agents`, scheduling cycles and job starts in `scheduling`; arrays and job
//! records have their own files.

use std::collections::{BTreeMap, BTreeSet};

use hpcbox_pbs::errno::PbsErrno;
use hpcbox_pbs::format::history::{finish_comment, job_run_comment, JobEnd};
use hpcbox_pbs::jobid::{ArrayPart, JobId};
use hpcbox_pbs::newjob::{queued_job, Submission, DEFAULT_QUEUE};
use hpcbox_pbs::qsub::{Operand, QsubOptions};
use hpcbox_pbs::resource::ResourceDefs;
use hpcbox_pbs::state::substate;
use hpcbox_pbs::status::{split_variable_list, StatusObject, JOB_ATTRIBUTE_ORDER};
use hpcbox_sched::{
    ArraySpec, Decision, Event, JobId as SchedId, JobSpec, NodeSpec, QueueSpec, Resources,
    RestoredSubjob, Scheduler, SubjobState,
};
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};

use super::convert;
use crate::api::{Action, Answer, ApiError, StatusItem, StatusRequest, SubmitRequest};
use crate::protocol::{AgentMessage, JobStart, NodeReport, ServerMessage, Usage};
use crate::store::{ObjectKind, Store, StoreError};

mod agents;
mod arrays;
mod records;
mod requests;
mod scheduling;
mod tasks;

use arrays::{refresh_array, restored_state, subjob_attrs};
use records::{build_job, job_start_message};

/// A job as the server keeps it, in the store and in memory.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    /// Its sequence number.
    pub seq: u64,
    /// The user who owns it.
    pub owner: String,
    /// The owner's uid, for permission checks.
    pub uid: u32,
    /// Its attributes, as `qstat -f` shows them.
    pub attrs: StatusObject,
    /// The script (`None` for `qsub -- exe args`).
    pub script: Option<String>,
    /// The executable and arguments of `qsub -- exe args`.
    pub argv: Vec<String>,
    /// What the scheduler knows of it.
    pub spec: JobSpec,
    /// Where it runs, once started.
    pub run: Option<Run>,
    /// Whether it is over (history).
    pub finished: bool,
    /// Who deleted it while it ran, for its comment.
    pub deleted_by: Option<String>,
    /// An array's subjobs that have started, by index (the others are queued). Stored as rows
    /// of their own (read here from records written before that).
    #[serde(default, skip_serializing)]
    pub subjobs: BTreeMap<u32, SubJob>,
    /// Subjobs changed since the job was last stored.
    #[serde(skip)]
    changed: BTreeSet<u32>,
    /// Subjobs started and not over (kept beside `subjobs`, whose walk is slow for a large
    /// array, for `array_state_count`).
    #[serde(skip)]
    unfinished: BTreeSet<u32>,
    /// The submission (without its script), from which `qalter` rebuilds the job.
    #[serde(default)]
    pub request: Option<SubmitRequest>,
}

/// A subjob of an array, from its start on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubJob {
    /// Its attributes (`123[4].server`).
    pub attrs: StatusObject,
    /// Where it runs.
    pub run: Option<Run>,
    /// Whether it is over.
    pub finished: bool,
    /// Who deleted it while it ran.
    pub deleted_by: Option<String>,
}

/// What runs: a job, or one subjob of an array, borrowed from its record.
struct TaskRef<'a> {
    attrs: &'a mut StatusObject,
    run: &'a mut Option<Run>,
    finished: &'a mut bool,
    deleted_by: &'a mut Option<String>,
}

impl Job {
    /// Where the `qsub -I` of an interactive job waits for its terminal.
    pub fn interactive_target(&self) -> Option<&crate::api::InteractiveTarget> {
        self.request.as_ref()?.interactive.as_ref()
    }

    /// The attributes of the job itself (`None`) or of its started subjob `index`.
    fn task_attrs(&self, index: Option<u32>) -> Option<&StatusObject> {
        match index {
            None => Some(&self.attrs),
            Some(i) => self.subjobs.get(&i).map(|sub| &sub.attrs),
        }
    }

    /// The job itself (`None`) or its started subjob `index`.
    fn task(&mut self, index: Option<u32>) -> Option<TaskRef<'_>> {
        match index {
            None => Some(TaskRef {
                attrs: &mut self.attrs,
                run: &mut self.run,
                finished: &mut self.finished,
                deleted_by: &mut self.deleted_by,
            }),
            Some(i) => self.subjobs.get_mut(&i).map(|sub| {
                self.changed.insert(i);
                TaskRef {
                    attrs: &mut sub.attrs,
                    run: &mut sub.run,
                    finished: &mut sub.finished,
                    deleted_by: &mut sub.deleted_by,
                }
            }),
        }
    }

    /// Whether the job is an array.
    fn is_array(&self) -> bool {
        self.spec.array.is_some()
    }

    /// Subjob `index`'s attributes: started ones as they are, queued ones as they will start.
    fn subjob_view(&self, index: u32) -> Option<StatusObject> {
        let range = self.spec.array?;
        if !range.contains(index) {
            return None;
        }
        Some(match self.subjobs.get(&index) {
            Some(sub) => sub.attrs.clone(),
            None => {
                let mut attrs = subjob_attrs(&self.attrs, index);
                set(
                    &mut attrs,
                    "job_state",
                    if self.finished { "X" } else { "Q" },
                );
                attrs
            }
        })
    }
}

/// Where a started job runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Run {
    /// The vnode of its first chunk, whose agent runs the script.
    pub node: String,
    /// When it was sent to the agent.
    pub started: i64,
}

/// A vnode and the agent that serves it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Node {
    /// What its agent reported.
    pub report: NodeReport,
    /// Whether its agent is connected now.
    pub connected: bool,
    /// When its state last changed.
    pub state_changed: i64,
    /// Taken out of service by the administrator (`pbsnodes -o`).
    #[serde(default)]
    pub offline: bool,
    /// The administrator's comment (`pbsnodes -C`).
    #[serde(default)]
    pub comment: Option<String>,
}

/// The server.
pub struct Core {
    name: String,
    store: Store,
    jobs: BTreeMap<u64, Job>,
    nodes: BTreeMap<String, Node>,
    queues: BTreeMap<String, QueueSpec>,
    sched: Scheduler,
    defs: ResourceDefs,
    outbox: Vec<(String, ServerMessage)>,
    tz: TimeZone,
    kill_delay: u64,
    /// How long a finished job stays visible to `qstat -x` (PBS's `job_history_duration`).
    history_seconds: u64,
    /// When finished jobs were last purged.
    last_purge: i64,
    /// The second whose waiting jobs were last looked at ([`Core::release_waiting`]).
    last_release: i64,
    /// Tasks of jobs running on their other hosts (`pbs_tmrsh`), by the server's number.
    tasks: BTreeMap<u64, tasks::PendingTask>,
    /// The server's number for the next task: this run's count of starts in the high half,
    /// so that no task of an earlier run shares one.
    next_task: u64,
}

/// Starts that may fail with `JOB_EXEC_RETRY` before the job fails for good (PBS holds a job
/// after 20 failed attempts).
const MAX_START_RETRIES: u32 = 20;

/// PBS's default `job_history_duration`: two weeks.
pub const DEFAULT_HISTORY_SECONDS: u64 = 14 * 24 * 3600;

fn err(errno: PbsErrno) -> ApiError {
    ApiError::from_code(errno.code())
}

impl Core {
    /// The server named `name` over `store`, with its queues, jobs and nodes reloaded.
    pub fn open(name: &str, mut store: Store, tz: TimeZone) -> Result<Core, StoreError> {
        let next_task = store.count_start()? << 32;
        let mut core = Core {
            name: name.to_string(),
            store,
            jobs: BTreeMap::new(),
            nodes: BTreeMap::new(),
            queues: BTreeMap::new(),
            sched: Scheduler::new(hpcbox_sched::Config::default()),
            defs: ResourceDefs::builtin(),
            outbox: Vec::new(),
            tz,
            kill_delay: 10,
            history_seconds: DEFAULT_HISTORY_SECONDS,
            last_purge: i64::MIN,
            last_release: i64::MIN,
            tasks: BTreeMap::new(),
            next_task,
        };
        for (_, queue) in core.store.objects::<QueueSpec>(ObjectKind::Queue)? {
            core.install_queue(queue);
        }
        for (name, mut node) in core.store.objects::<Node>(ObjectKind::Node)? {
            node.connected = false;
            core.install_node(&name, &node.report);
            let _ = core.sched.apply(Event::NodeDown(name.clone()));
            core.nodes.insert(name, node);
        }
        let mut jobs: BTreeMap<u64, (bool, Job)> = core
            .store
            .jobs::<Job>()?
            .into_iter()
            .map(|(seq, finished, job)| (seq, (finished, job)))
            .collect();
        for (seq, index, sub) in core.store.subjobs::<SubJob>()? {
            if let Some((_, job)) = jobs.get_mut(&seq) {
                job.subjobs.insert(index, sub);
            }
        }
        for (seq, (finished, mut job)) in jobs {
            job.unfinished = job
                .subjobs
                .iter()
                .filter(|(_, sub)| !sub.finished)
                .map(|(&i, _)| i)
                .collect();
            if !finished {
                core.reschedule(&job);
            }
            core.jobs.insert(seq, job);
        }
        Ok(core)
    }

    /// Hands a job reloaded from the store back to the scheduler: a queued job is submitted, a
    /// running one is placed where it runs (its agent re-reports it), and an array is
    /// submitted whole with its started subjobs replayed: the running ones placed where they
    /// run, the ended ones counted as ended.
    fn reschedule(&mut self, job: &Job) {
        let outcome = match (&job.run, job.spec.array) {
            (None, None) => self.sched.apply(Event::Submit(Box::new(job.spec.clone()))),
            (Some(run), None) => {
                let vnodes = exec_vnodes(job.attrs.get("exec_vnode").unwrap_or_default());
                let at = run.started.max(0) as u64;
                self.sched.apply(Event::Restore {
                    job: Box::new(job.spec.clone()),
                    vnodes,
                    at,
                })
            }
            (_, Some(_)) => self.sched.apply(Event::RestoreArray {
                job: Box::new(job.spec.clone()),
                subjobs: job
                    .subjobs
                    .iter()
                    .map(|(&index, sub)| RestoredSubjob {
                        index,
                        state: restored_state(sub),
                    })
                    .collect(),
            }),
        };
        if let Err(e) = outcome {
            tracing::warn!(
                "job {} could not be handed back to the scheduler: {e}",
                job.seq
            );
        }
    }

    /// The server's name, the suffix of its job ids.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sets how long a deleted job gets between SIGTERM and SIGKILL.
    pub fn set_kill_delay(&mut self, seconds: u64) {
        self.kill_delay = seconds;
    }

    /// Sets how long a finished job stays visible to `qstat -x`.
    pub fn set_history_duration(&mut self, seconds: u64) {
        self.history_seconds = seconds;
    }

    /// Forgets the finished jobs whose history has run out (at most once a second): gone from
    /// `qstat -x` and from the store, as PBS purges jobs past `job_history_duration`.
    fn purge_history(&mut self, now: i64) {
        if now <= self.last_purge {
            return;
        }
        self.last_purge = now;
        let horizon = now.saturating_sub(i64::try_from(self.history_seconds).unwrap_or(i64::MAX));
        let expired: Vec<u64> = self
            .jobs
            .values()
            .filter(|job| job.finished && finish_time(job).is_some_and(|t| t <= horizon))
            .map(|job| job.seq)
            .collect();
        for seq in expired {
            match self.store.remove_job(seq) {
                Ok(()) => {
                    self.jobs.remove(&seq);
                }
                Err(e) => tracing::error!("could not purge job {seq}: {e}"),
            }
        }
    }

    /// Creates queue `name` (enabled and started) unless it exists.
    pub fn ensure_queue(&mut self, name: &str) -> Result<(), StoreError> {
        if self.queues.contains_key(name) {
            return Ok(());
        }
        let queue = QueueSpec::new(name);
        self.store.put_object(ObjectKind::Queue, name, &queue)?;
        self.install_queue(queue);
        Ok(())
    }

    fn install_queue(&mut self, queue: QueueSpec) {
        let _ = self.sched.apply(Event::SetQueue(queue.clone()));
        self.queues.insert(queue.name.clone(), queue);
    }

    fn install_node(&mut self, name: &str, report: &NodeReport) {
        let resources = Resources::new(
            u64::from(report.ncpus),
            report.mem_kb,
            u64::from(report.ngpus),
        );
        if self.sched.node(name).is_none() {
            let _ = self
                .sched
                .apply(Event::AddNode(NodeSpec::new(name, resources)));
        }
    }

    /// The messages for agents produced since the last call, by node.
    pub fn take_outbox(&mut self) -> Vec<(String, ServerMessage)> {
        std::mem::take(&mut self.outbox)
    }

    /// Stores job `seq` and the subjobs of it that changed.
    fn persist(&mut self, seq: u64) {
        let Some(job) = self.jobs.get_mut(&seq) else {
            return;
        };
        let changed = std::mem::take(&mut job.changed);
        let subjobs: Vec<(u32, &SubJob)> = changed
            .iter()
            .filter_map(|i| job.subjobs.get(i).map(|sub| (*i, sub)))
            .collect();
        if let Err(e) = self.store.update_job(seq, job, job.finished, &subjobs) {
            tracing::error!("could not store job {seq}: {e}");
        }
    }
}

/// When a finished job ended (its `mtime`, set as it ended).
fn finish_time(job: &Job) -> Option<i64> {
    job.attrs.get("mtime").and_then(|t| t.parse().ok())
}

/// The vnode of each chunk of an `exec_vnode` value: `(n1:ncpus=1)+(n2:ncpus=2)` → n1, n2.
fn exec_vnodes(exec_vnode: &str) -> Vec<String> {
    exec_vnode
        .split('+')
        .filter_map(|chunk| {
            let inner = chunk.trim().trim_start_matches('(').trim_end_matches(')');
            inner
                .split(':')
                .next()
                .filter(|name| !name.is_empty())
                .map(str::to_string)
        })
        .collect()
}

/// The `mpiprocs` of each chunk of the job's select, counts expanded, in select order (the
/// order of the scheduler's placements).
fn chunk_mpiprocs(attrs: &StatusObject) -> Vec<u32> {
    let Some(select) = attrs
        .get_resource("Resource_List", "select")
        .and_then(|text| text.parse::<hpcbox_pbs::select::Select>().ok())
    else {
        return Vec::new();
    };
    let select = select.with_defaults(&hpcbox_pbs::resource::ResourceList::new());
    select
        .chunks()
        .iter()
        .flat_map(|chunk| {
            let procs = u32::try_from(chunk.mpiprocs()).unwrap_or(0);
            std::iter::repeat_n(procs, chunk.count() as usize)
        })
        .collect()
}

/// Sets job attribute `name` to `value`, in the server's attribute order.
fn set(attrs: &mut StatusObject, name: &str, value: impl Into<String>) {
    attrs.set(name, None, value, JOB_ATTRIBUTE_ORDER);
}

fn set_usage(attrs: &mut StatusObject, usage: &Usage) {
    let hms = |secs: u64| hpcbox_pbs::duration::Duration::from_secs(secs).to_string();
    for (resource, value) in [
        ("cput", hms(usage.cput)),
        ("mem", format!("{}kb", usage.mem_kb)),
        ("ncpus", usage.ncpus.to_string()),
        ("vmem", format!("{}kb", usage.vmem_kb)),
        ("walltime", hms(usage.walltime)),
    ] {
        attrs.set("resources_used", Some(resource), value, JOB_ATTRIBUTE_ORDER);
    }
}

fn end_job(job: &mut Job, sub: u32, now: i64) {
    if let Some(task) = job.task(None) {
        end_task(task, "F", sub, now);
    }
}

fn end_task(task: TaskRef<'_>, letter: &str, sub: u32, now: i64) {
    set(task.attrs, "job_state", letter);
    set(task.attrs, "substate", sub.to_string());
    set(task.attrs, "mtime", now.to_string());
    set(task.attrs, "obittime", now.to_string());
    *task.finished = true;
}

#[cfg(test)]
mod tests {
    use super::arrays::remaining_ranges;
    use super::*;

    #[test]
    fn tasks_of_ended_jobs_are_ended_when_their_agent_reports_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.sqlite")).unwrap();
        let mut core = Core::open("srv", store, TimeZone::UTC).unwrap();
        let report = |task, job: &str| crate::protocol::TaskReport {
            task,
            job_id: job.into(),
            origin: None,
        };
        core.tasks_reported("n2", &[report(7, "3.srv"), report(8, "3.srv")]);
        assert!(core.tasks.is_empty());
        assert!(matches!(
            core.outbox.as_slice(),
            [(node, ServerMessage::Kill { job_id, grace: 0 })] if node == "n2" && job_id == "3.srv"
        ));
    }

    #[test]
    fn task_numbers_of_a_restarted_server_are_new() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let first = Core::open("srv", Store::open(&path).unwrap(), TimeZone::UTC).unwrap();
        let first_task = first.next_task;
        drop(first);
        let again = Core::open("srv", Store::open(&path).unwrap(), TimeZone::UTC).unwrap();
        assert!(again.next_task >= first_task + (1 << 32));
    }

    #[test]
    fn exec_vnode_names() {
        assert_eq!(
            exec_vnodes("(n1:ncpus=1:mem=1024kb)+(n2:ncpus=2)"),
            ["n1", "n2"]
        );
        assert!(exec_vnodes("").is_empty());
    }

    #[test]
    fn remaining_indices_as_pbs_writes_them() {
        let range = |start, end, step| ArraySpec::new(start, end, step);
        assert_eq!(
            remaining_ranges(range(1, 8, 1), [4, 6].into_iter()),
            "1-3,5,7-8"
        );
        assert_eq!(remaining_ranges(range(1, 9, 2), [7].into_iter()), "1-5:2,9");
        assert_eq!(remaining_ranges(range(1, 3, 1), [1, 2, 3].into_iter()), "-");
        assert_eq!(remaining_ranges(range(1, 3, 1), std::iter::empty()), "1-3");
        assert_eq!(remaining_ranges(range(0, 10, 5), [0].into_iter()), "5-10:5");
        assert_eq!(remaining_ranges(range(2, 2, 1), std::iter::empty()), "2");
    }

    proptest::proptest! {
        #[test]
        fn remaining_ranges_list_exactly_the_unstarted_indices(
            start in 0u32..20, len in 1u32..40, step in 1u32..4,
            picks in proptest::collection::vec(proptest::bool::ANY, 40),
        ) {
            let range = ArraySpec::new(start, start + (len - 1) * step, step);
            let started: Vec<u32> = range.indices().zip(&picks).filter(|(_, p)| **p).map(|(i, _)| i).collect();
            let text = remaining_ranges(range, started.iter().copied());
            let mut listed = Vec::new();
            if text != "-" {
                for part in text.split(',') {
                    let (run, s) = part.split_once(':').map_or((part, 1), |(r, s)| (r, s.parse().unwrap()));
                    let (a, b) = run.split_once('-').map_or((run, run), |ab| ab);
                    let (a, b): (u32, u32) = (a.parse().unwrap(), b.parse().unwrap());
                    listed.extend((a..=b).step_by(s as usize));
                }
            }
            let expected: Vec<u32> = range.indices().filter(|i| !started.contains(i)).collect();
            proptest::prop_assert_eq!(listed, expected);
        }
    }
}

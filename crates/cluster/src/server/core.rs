//! The server's state and every decision it takes, without sockets: requests and agent reports
//! go in, answers and messages for agents come out. The daemon around it ([`super::daemon::run`]) only
//! moves bytes.

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

/// Attributes shared by every subjob of an array: the array's, under the subjob's id, with
/// `^array_index^` in the output paths replaced and the array-only attributes dropped.
fn subjob_attrs(array: &StatusObject, index: u32) -> StatusObject {
    let id = match array.name.parse::<JobId>() {
        Ok(parent) => parent.subjob(index).to_string(),
        Err(_) => format!("{}[{index}]", array.name),
    };
    let mut attrs = StatusObject::new(id);
    for attr in &array.attrs {
        if matches!(
            attr.name.as_str(),
            "array"
                | "array_indices_submitted"
                | "array_indices_remaining"
                | "array_state_count"
                | "max_run_subjobs"
                | "comment"
        ) {
            continue;
        }
        let mut attr = attr.clone();
        attr.value = attr.value.replace("^array_index^", &index.to_string());
        attrs.attrs.push(attr);
    }
    set(&mut attrs, "array_index", index.to_string());
    set(&mut attrs, "array_id", array.name.clone());
    attrs
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
    pub fn open(name: &str, store: Store, tz: TimeZone) -> Result<Core, StoreError> {
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

    // ---------------------------------------------------------------------------------------
    // Client requests

    /// Queues a job for `user` and returns its id once it is durable.
    pub fn submit(
        &mut self,
        req: &SubmitRequest,
        user: &str,
        uid: u32,
        now: i64,
    ) -> Answer<String> {
        let queue = req
            .options
            .destination()
            .map_err(|e| {
                ApiError::with_text(PbsErrno::UnknownQueue.code(), e.to_string().trim_end())
            })?
            .queue
            .unwrap_or_else(|| DEFAULT_QUEUE.to_string());
        if !self.queues.contains_key(&queue) {
            return Err(err(PbsErrno::UnknownQueue));
        }
        if req.options.interactive {
            return Err(ApiError::with_text(
                PbsErrno::NotSupported.code(),
                "interactive jobs (-I) are not supported by hpcbox yet",
            ));
        }
        let array = req.options.array.is_some();
        let server = self.name.clone();
        let (defs, nodes) = (&self.defs, &self.nodes);
        let stored = self
            .store
            .submit(|seq| {
                let mut job_id = JobId::new(seq, server.as_str());
                if array {
                    job_id.array = ArrayPart::Whole;
                }
                build_job(req, &job_id, &queue, user, uid, now, defs, nodes)
            })
            .map_err(|e| ApiError::with_text(PbsErrno::System.code(), e.to_string()))?;
        let (seq, job) = stored?;
        if let Err(e) = self.sched.apply(Event::Submit(Box::new(job.spec.clone()))) {
            // Refused by the scheduler (a dependency on an unknown job, …): not queued after all.
            let _ = self.store.remove_job(seq);
            return Err(match e {
                hpcbox_sched::SchedError::UnknownJob(on) => ApiError::with_text(
                    PbsErrno::UnknownJobId.code(),
                    format!("{} {on}.{}", PbsErrno::UnknownJobId.text(), self.name),
                ),
                other => ApiError::with_text(PbsErrno::BadAttributeValue.code(), other.to_string()),
            });
        }
        let id = job.attrs.name.clone();
        self.jobs.insert(seq, job);
        Ok(id)
    }

    /// `qstat`: the jobs asked for (all when none), with an error per unknown id; with
    /// `subjobs` (`qstat -t`) an array's subjobs follow it.
    pub fn status(&self, req: &StatusRequest) -> Vec<StatusItem> {
        let shown = |attrs: &StatusObject| -> StatusItem {
            if req.attributes.is_empty() {
                return StatusItem::Job(attrs.clone());
            }
            let mut selected = StatusObject::new(attrs.name.clone());
            selected.attrs = attrs
                .attrs
                .iter()
                .filter(|a| req.attributes.contains(&a.name))
                .cloned()
                .collect();
            StatusItem::Job(selected)
        };
        let expand = |job: &Job| -> Vec<StatusItem> {
            let mut items = vec![shown(&job.attrs)];
            if let (true, Some(range)) = (req.subjobs, job.spec.array) {
                items.extend(
                    range
                        .indices()
                        .filter_map(|i| job.subjob_view(i))
                        .map(|view| shown(&view)),
                );
            }
            items
        };
        if req.ids.is_empty() {
            return self
                .jobs
                .values()
                .filter(|job| req.history || !job.finished)
                .flat_map(expand)
                .collect();
        }
        let mut items = Vec::new();
        for given in &req.ids {
            match self.locate(given) {
                Err(error) => items.push(StatusItem::Error {
                    id: self.full_id(given),
                    error,
                }),
                Ok((job, _)) if job.finished && !req.history => items.push(StatusItem::Error {
                    id: self.full_id(given),
                    error: err(PbsErrno::HistoryJob),
                }),
                Ok((job, Some(index))) => {
                    if let Some(view) = job.subjob_view(index) {
                        items.push(shown(&view));
                    }
                }
                Ok((job, None)) => items.extend(expand(job)),
            }
        }
        items
    }

    /// `qdel`, `qhold`, `qrls`, `qsig` of one job, on behalf of `user` (`uid` 0 may act on any).
    pub fn act(&mut self, id: &str, action: &Action, user: &str, uid: u32, now: i64) -> Answer<()> {
        let (job, index) = self.locate(id)?;
        let seq = job.seq;
        if index.is_some() {
            return self.act_on_subjob(seq, index, action, user);
        }
        if job.finished {
            return Err(err(PbsErrno::HistoryJob));
        }
        if uid != 0 && job.uid != uid {
            return Err(err(PbsErrno::Permission));
        }
        match action {
            Action::Delete { force } => self.delete(seq, user, *force, now),
            Action::Hold { .. } => self.hold(seq, true, now),
            Action::Release { .. } => self.hold(seq, false, now),
            Action::Signal { signal } => self.signal(seq, signal),
            Action::Alter { options } => self.alter(seq, options, now),
        }
    }

    /// `qalter`: the job is rebuilt from its submission with `delta`'s options over it, as if
    /// they had been on its `qsub` command line; only while no part of it has started.
    fn alter(&mut self, seq: u64, delta: &QsubOptions, now: i64) -> Answer<()> {
        let job = &self.jobs[&seq];
        if job.run.is_some() || !job.subjobs.is_empty() {
            return Err(err(PbsErrno::ModifyWhileRunning));
        }
        let Some(mut request) = job.request.clone() else {
            return Err(ApiError::with_text(
                PbsErrno::System.code(),
                "this job was submitted before hpcbox kept submissions; it cannot be altered",
            ));
        };
        request.options = QsubOptions::merge(&request.options, delta);
        request.script = job.script.clone();
        let id: JobId = job
            .attrs
            .name
            .parse()
            .map_err(|_| err(PbsErrno::UnknownJobId))?;
        let queue = job.attrs.get("queue").unwrap_or(DEFAULT_QUEUE).to_string();
        let ctime = job
            .attrs
            .get("ctime")
            .and_then(|t| t.parse().ok())
            .unwrap_or(now);
        let (owner, uid) = (job.owner.clone(), job.uid);
        let mut rebuilt = build_job(
            &request,
            &id,
            &queue,
            &owner,
            uid,
            ctime,
            &self.defs,
            &self.nodes,
        )?;
        let alter = hpcbox_sched::Alter {
            priority: Some(rebuilt.spec.priority),
            walltime: Some(rebuilt.spec.walltime),
            select: Some(rebuilt.spec.select.clone()),
            place: Some(rebuilt.spec.place),
        };
        self.sched
            .apply(Event::Alter {
                job: SchedId::job(seq),
                alter,
            })
            .map_err(|e| ApiError::with_text(PbsErrno::BadAttributeValue.code(), e.to_string()))?;
        let job = self.jobs.get_mut(&seq).expect("job exists");
        for name in ["job_state", "substate", "Hold_Types", "comment"] {
            match job.attrs.get(name) {
                Some(value) => set(&mut rebuilt.attrs, name, value),
                None => rebuilt.attrs.attrs.retain(|a| a.name != name),
            }
        }
        set(&mut rebuilt.attrs, "mtime", now.to_string());
        rebuilt.spec.hold = job.spec.hold;
        job.attrs = rebuilt.attrs;
        job.spec = rebuilt.spec;
        job.request = rebuilt.request;
        self.persist(seq);
        Ok(())
    }

    /// `qdel` / `qsig` of one subjob; holds apply to whole arrays only, as in PBS.
    fn act_on_subjob(
        &mut self,
        seq: u64,
        index: Option<u32>,
        action: &Action,
        user: &str,
    ) -> Answer<()> {
        let job = self.jobs.get_mut(&seq).expect("job exists");
        let Some(task) = job.task(index) else {
            return match action {
                Action::Delete { .. } => {
                    let id = SchedId { seq, index };
                    self.sched
                        .apply(Event::Delete(id))
                        .map_err(|e| ApiError::with_text(PbsErrno::BadState.code(), e.to_string()))
                }
                _ => Err(err(PbsErrno::BadState)),
            };
        };
        if *task.finished {
            return Err(err(PbsErrno::HistoryJob));
        }
        let Some(node) = task.run.as_ref().map(|run| run.node.clone()) else {
            return Err(err(PbsErrno::BadState));
        };
        let job_id = task.attrs.name.clone();
        let message = match action {
            Action::Delete { force } => {
                *task.deleted_by = Some(user.to_string());
                ServerMessage::Kill {
                    job_id,
                    grace: if *force { 0 } else { self.kill_delay },
                }
            }
            Action::Signal { signal } => ServerMessage::Signal {
                job_id,
                signal: signal.clone(),
            },
            Action::Hold { .. } | Action::Release { .. } | Action::Alter { .. } => {
                return Err(err(PbsErrno::BadState))
            }
        };
        self.outbox.push((node, message));
        self.persist(seq);
        Ok(())
    }

    fn delete(&mut self, seq: u64, user: &str, force: bool, now: i64) -> Answer<()> {
        if self.jobs[&seq].is_array() {
            return self.delete_array(seq, user, force, now);
        }
        let running_on = self.jobs[&seq].run.as_ref().map(|run| run.node.clone());
        if let Some(node) = &running_on {
            let job_id = self.jobs[&seq].attrs.name.clone();
            let grace = if force { 0 } else { self.kill_delay };
            self.outbox
                .push((node.clone(), ServerMessage::Kill { job_id, grace }));
        }
        if running_on.is_some() && !force {
            // It ends when its agent reports the kill done.
            self.jobs.get_mut(&seq).expect("job exists").deleted_by = Some(user.to_string());
            self.persist(seq);
            return Ok(());
        }
        // Queued, or forced: over now.
        let _ = self.sched.apply(Event::Delete(SchedId::job(seq)));
        let job = self.jobs.get_mut(&seq).expect("job exists");
        if running_on.is_some() {
            let terminated = JobEnd::Terminated {
                by: Some(user.to_string()),
            };
            if let Some(comment) = finish_comment(job.attrs.get("comment"), &terminated) {
                set(&mut job.attrs, "comment", comment);
            }
        }
        end_job(job, substate::TERMINATED, now);
        self.persist(seq);
        Ok(())
    }

    /// Deletes an array: its queued subjobs go at once, its running ones are killed.
    fn delete_array(&mut self, seq: u64, user: &str, force: bool, now: i64) -> Answer<()> {
        let _ = self.sched.apply(Event::Delete(SchedId::job(seq)));
        let grace = if force { 0 } else { self.kill_delay };
        let job = self.jobs.get_mut(&seq).expect("job exists");
        for (&index, sub) in job.subjobs.iter_mut().filter(|(_, sub)| !sub.finished) {
            if let Some(run) = &sub.run {
                job.changed.insert(index);
                sub.deleted_by = Some(user.to_string());
                let kill = ServerMessage::Kill {
                    job_id: sub.attrs.name.clone(),
                    grace,
                };
                self.outbox.push((run.node.clone(), kill));
            }
        }
        end_job(job, substate::TERMINATED, now);
        self.persist(seq);
        Ok(())
    }

    fn hold(&mut self, seq: u64, hold: bool, now: i64) -> Answer<()> {
        let job = self.jobs.get_mut(&seq).expect("job exists");
        if job.run.is_some() {
            return Err(err(PbsErrno::BadState));
        }
        let event = if hold {
            Event::Hold(SchedId::job(seq))
        } else {
            Event::Release(SchedId::job(seq))
        };
        self.sched
            .apply(event)
            .map_err(|e| ApiError::with_text(PbsErrno::BadState.code(), e.to_string()))?;
        job.spec.hold = hold;
        set(&mut job.attrs, "Hold_Types", if hold { "u" } else { "n" });
        let (state, sub) = if hold {
            ("H", substate::HELD)
        } else {
            ("Q", substate::QUEUED)
        };
        set(&mut job.attrs, "job_state", state);
        set(&mut job.attrs, "substate", sub.to_string());
        set(&mut job.attrs, "mtime", now.to_string());
        self.persist(seq);
        Ok(())
    }

    fn signal(&mut self, seq: u64, signal: &str) -> Answer<()> {
        let job = &self.jobs[&seq];
        let Some(run) = &job.run else {
            return Err(err(PbsErrno::BadState));
        };
        self.outbox.push((
            run.node.clone(),
            ServerMessage::Signal {
                job_id: job.attrs.name.clone(),
                signal: signal.to_string(),
            },
        ));
        Ok(())
    }

    /// `pbsnodes -a`: every vnode's attributes.
    pub fn node_status(&self) -> Vec<StatusObject> {
        self.nodes
            .iter()
            .map(|(name, node)| self.node_object(name, node))
            .collect()
    }

    fn node_object(&self, name: &str, node: &Node) -> StatusObject {
        let view = self.sched.node(name);
        let state = match (&view, node.connected) {
            (_, false) if node.offline => "down,offline".to_string(),
            (_, false) => "down".to_string(),
            (Some(view), true) => view.state.to_string(),
            (None, true) => "state-unknown".to_string(),
        };
        let jobs: Vec<String> = self
            .jobs
            .values()
            .filter(|job| job.run.as_ref().is_some_and(|run| run.node == name) && !job.finished)
            .map(|job| format!("{}/0", job.attrs.name))
            .collect();
        let r = &node.report;
        let mut obj = StatusObject::new(name)
            .with("Mom", r.host.as_str())
            .with("Port", "15002")
            .with("pbs_version", env!("CARGO_PKG_VERSION"))
            .with("ntype", "PBS")
            .with("state", state)
            .with("pcpus", r.ncpus.to_string());
        if !jobs.is_empty() {
            obj = obj.with("jobs", jobs.join(", "));
        }
        obj = obj
            .with_resource("resources_available", "arch", "linux")
            .with_resource("resources_available", "host", r.host.as_str())
            .with_resource("resources_available", "mem", format!("{}kb", r.mem_kb))
            .with_resource("resources_available", "ncpus", r.ncpus.to_string())
            .with_resource("resources_available", "vnode", name);
        if let Some(view) = &view {
            let used = |total: u64, free: u64| total.saturating_sub(free);
            obj = obj
                .with_resource(
                    "resources_assigned",
                    "mem",
                    format!("{}kb", used(view.total.mem, view.free.mem)),
                )
                .with_resource(
                    "resources_assigned",
                    "ncpus",
                    used(view.total.ncpus, view.free.ncpus).to_string(),
                );
        }
        if let Some(comment) = &node.comment {
            obj = obj.with("comment", comment.as_str());
        }
        obj.with("resv_enable", "True")
            .with("sharing", "default_shared")
            .with("last_state_change_time", node.state_changed.to_string())
    }

    /// `pbsnodes -o` (offline) and `-r` (back in service) of vnode `name`, with an optional
    /// comment; root only, as PBS allows managers and operators only.
    pub fn set_node_offline(
        &mut self,
        name: &str,
        offline: bool,
        comment: Option<String>,
        uid: u32,
        now: i64,
    ) -> Answer<()> {
        if uid != 0 {
            return Err(err(PbsErrno::Permission));
        }
        let Some(node) = self.nodes.get_mut(name) else {
            return Err(err(PbsErrno::UnknownNode));
        };
        node.offline = offline;
        if comment.is_some() {
            node.comment = comment;
        }
        node.state_changed = now;
        let event = match (offline, node.connected) {
            (true, _) => Event::NodeOffline(name.to_string()),
            (false, true) => Event::NodeUp(name.to_string()),
            (false, false) => Event::NodeDown(name.to_string()),
        };
        let _ = self.sched.apply(event);
        let _ = self.store.put_object(ObjectKind::Node, name, &*node);
        Ok(())
    }

    /// `qstat -Q`: every queue's attributes.
    pub fn queue_status(&self) -> Vec<StatusObject> {
        self.queues
            .values()
            .map(|queue| {
                let jobs: Vec<&Job> = self
                    .jobs
                    .values()
                    .filter(|j| !j.finished && j.attrs.get("queue") == Some(queue.name.as_str()))
                    .collect();
                let count = |letter: &str| {
                    jobs.iter()
                        .filter(|j| j.attrs.get("job_state") == Some(letter))
                        .count()
                };
                StatusObject::new(queue.name.as_str())
                    .with("queue_type", "Execution")
                    .with("total_jobs", jobs.len().to_string())
                    .with(
                        "state_count",
                        format!(
                            "Transit:0 Queued:{} Held:{} Waiting:{} Running:{} Exiting:{} Begun:0 ",
                            count("Q"),
                            count("H"),
                            count("W"),
                            count("R"),
                            count("E")
                        ),
                    )
                    .with("enabled", if queue.enabled { "True" } else { "False" })
                    .with("started", if queue.started { "True" } else { "False" })
            })
            .collect()
    }

    /// `qstat -B`: the server's attributes.
    pub fn server_status(&self) -> StatusObject {
        let count = |letter: &str| {
            self.jobs
                .values()
                .filter(|j| !j.finished && j.attrs.get("job_state") == Some(letter))
                .count()
        };
        let total = self.jobs.values().filter(|j| !j.finished).count();
        StatusObject::new(self.name.as_str())
            .with("server_state", "Active")
            .with("server_host", self.name.as_str())
            .with("scheduling", "True")
            .with("total_jobs", total.to_string())
            .with(
                "state_count",
                format!(
                    "Transit:0 Queued:{} Held:{} Waiting:{} Running:{} Exiting:{} Begun:0 ",
                    count("Q"),
                    count("H"),
                    count("W"),
                    count("R"),
                    count("E")
                ),
            )
            .with("default_queue", DEFAULT_QUEUE)
            .with("pbs_version", env!("CARGO_PKG_VERSION"))
            .with("job_history_enable", "True")
            .with(
                "job_history_duration",
                hpcbox_pbs::duration::Duration::from_secs(self.history_seconds).to_string(),
            )
    }

    /// The job an id names, and the subjob index when it names one subjob.
    fn locate(&self, given: &str) -> Answer<(&Job, Option<u32>)> {
        let id: JobId = given.parse().map_err(|_| err(PbsErrno::UnknownJobId))?;
        let ours = id
            .server
            .as_deref()
            .is_none_or(|s| s == self.name || s.starts_with(&format!("{}.", self.name)));
        let job = self
            .jobs
            .get(&id.seq)
            .filter(|_| ours)
            .ok_or_else(|| err(PbsErrno::UnknownJobId))?;
        match (id.array, job.spec.array) {
            (ArrayPart::NotArray, None) | (ArrayPart::Whole, Some(_)) => Ok((job, None)),
            (ArrayPart::Index(i), Some(range)) if range.contains(i) => Ok((job, Some(i))),
            _ => Err(err(PbsErrno::UnknownJobId)),
        }
    }

    /// `given` completed with this server's name when it names none.
    pub fn full_id(&self, given: &str) -> String {
        match given.parse::<JobId>() {
            Ok(id) => id.or_server(&self.name).to_string(),
            Err(_) => given.to_string(),
        }
    }

    // ---------------------------------------------------------------------------------------
    // Agents

    /// An agent said hello for its vnode: the vnode joins (or comes back), and jobs the
    /// server thinks run there but the agent no longer has are ended.
    pub fn agent_hello(&mut self, report: NodeReport, running: &[String], now: i64) {
        let name = report.name.clone();
        self.install_node(&name, &report);
        let _ = self.sched.apply(Event::NodeUp(name.clone()));
        let (offline, comment) = self
            .nodes
            .get(&name)
            .map_or((false, None), |old| (old.offline, old.comment.clone()));
        if offline {
            let _ = self.sched.apply(Event::NodeOffline(name.clone()));
        }
        let node = Node {
            report,
            connected: true,
            state_changed: now,
            offline,
            comment,
        };
        let _ = self.store.put_object(ObjectKind::Node, &name, &node);
        self.nodes.insert(name.clone(), node);
        let runs_here = |attrs: &StatusObject, run: &Option<Run>, finished: bool| {
            !finished
                && run.as_ref().is_some_and(|run| run.node == name)
                && !running.contains(&attrs.name)
        };
        let mut lost: Vec<(u64, Option<u32>)> = Vec::new();
        for job in self.jobs.values() {
            if runs_here(&job.attrs, &job.run, job.finished) {
                lost.push((job.seq, None));
            }
            for (&i, sub) in &job.subjobs {
                if runs_here(&sub.attrs, &sub.run, sub.finished) {
                    lost.push((job.seq, Some(i)));
                }
            }
        }
        let why = format!("Job requeued: node {name} restarted without it");
        for (seq, index) in lost {
            // Whatever an earlier run of the agent left of the job dies before it reruns.
            if let Some(job_id) = self.task_name(seq, index) {
                let kill = ServerMessage::Kill { job_id, grace: 0 };
                self.outbox.push((name.clone(), kill));
            }
            if !self.requeue(seq, index, &why, now) {
                let status = hpcbox_pbs::exit::JOB_EXEC_FAIL2;
                self.task_ended(seq, index, status, Usage::default(), now);
            }
        }
    }

    /// The id of the job (or subjob), as its agent knows it.
    fn task_name(&self, seq: u64, index: Option<u32>) -> Option<String> {
        let job = self.jobs.get(&seq)?;
        match index {
            None => Some(job.attrs.name.clone()),
            Some(i) => job.subjobs.get(&i).map(|sub| sub.attrs.name.clone()),
        }
    }

    /// How many times the job (or subjob) has been started.
    fn run_count(&self, seq: u64, index: Option<u32>) -> u32 {
        let job = self.jobs.get(&seq);
        let attrs = match index {
            None => job.map(|j| &j.attrs),
            Some(i) => job.and_then(|j| j.subjobs.get(&i)).map(|s| &s.attrs),
        };
        attrs
            .and_then(|a| a.get("run_count"))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    /// Puts a job (or subjob) that was running back in its queue, as PBS requeues the jobs of
    /// a node that failed: it starts again from the beginning. False, changing nothing, when
    /// the job is not rerunnable (`qsub -r n`) or the scheduler refuses.
    fn requeue(&mut self, seq: u64, index: Option<u32>, why: &str, now: i64) -> bool {
        let Some(job) = self.jobs.get(&seq) else {
            return false;
        };
        if job.attrs.get("Rerunable") == Some("False") {
            return false;
        }
        if self
            .sched
            .apply(Event::Requeue(SchedId { seq, index }))
            .is_err()
        {
            return false;
        }
        let job = self.jobs.get_mut(&seq).expect("job exists");
        match index {
            None => {
                job.run = None;
                for gone in ["exec_host", "exec_vnode", "stime"] {
                    job.attrs.remove(gone);
                }
                set(&mut job.attrs, "job_state", "Q");
                set(&mut job.attrs, "substate", substate::QUEUED.to_string());
                set(&mut job.attrs, "comment", why);
                set(&mut job.attrs, "mtime", now.to_string());
            }
            Some(i) => {
                job.subjobs.remove(&i);
                job.unfinished.remove(&i);
                job.changed.remove(&i);
                if let Err(e) = self.store.remove_subjob(seq, i) {
                    tracing::error!("could not store the requeue of {seq}[{i}]: {e}");
                }
                let job = self.jobs.get_mut(&seq).expect("job exists");
                refresh_array(job, now);
            }
        }
        tracing::info!(seq, ?index, why, "requeued");
        self.persist(seq);
        true
    }

    /// The agent of vnode `name` went away: the vnode is down until it comes back. Its jobs
    /// are kept: the agent keeps running them and re-reports them when it reconnects.
    pub fn agent_gone(&mut self, name: &str, now: i64) {
        let _ = self.sched.apply(Event::NodeDown(name.to_string()));
        if let Some(node) = self.nodes.get_mut(name) {
            node.connected = false;
            node.state_changed = now;
        }
    }

    /// A message from an agent about one of its jobs.
    pub fn agent_message(&mut self, message: AgentMessage, now: i64) {
        let job_id = match &message {
            AgentMessage::Hello { .. } | AgentMessage::Heartbeat => return,
            AgentMessage::Started { job_id, .. }
            | AgentMessage::StartFailed { job_id, .. }
            | AgentMessage::Ended { job_id, .. }
            | AgentMessage::Usage { job_id, .. } => job_id.clone(),
        };
        let Some((seq, index)) = self.running_task(&job_id) else {
            return;
        };
        match message {
            AgentMessage::Hello { .. } | AgentMessage::Heartbeat => {}
            AgentMessage::Started { session, .. } => {
                let job = self.jobs.get_mut(&seq).expect("job exists");
                if let Some(task) = job.task(index) {
                    set(task.attrs, "substate", substate::RUNNING.to_string());
                    set(task.attrs, "session_id", session.to_string());
                }
                let _ = self.sched.apply(Event::StartConfirmed {
                    job: SchedId { seq, index },
                    at: now.max(0) as u64,
                });
                self.persist(seq);
            }
            AgentMessage::StartFailed {
                exit_status,
                message,
                ..
            } => {
                let why = format!("Job failed to start: {message}");
                // A subjob starts afresh when requeued (its run count with it): retried only
                // as a whole job, so that a start failing for good cannot loop.
                let retry = exit_status == hpcbox_pbs::exit::JOB_EXEC_RETRY
                    && index.is_none()
                    && self.run_count(seq, index) < MAX_START_RETRIES;
                if retry && self.requeue(seq, index, &format!("{why}; requeued"), now) {
                    return;
                }
                let job = self.jobs.get_mut(&seq).expect("job exists");
                if let Some(task) = job.task(index) {
                    set(task.attrs, "comment", why);
                }
                self.task_ended(seq, index, exit_status, Usage::default(), now);
            }
            AgentMessage::Ended {
                exit_status, usage, ..
            } => self.task_ended(seq, index, exit_status, usage, now),
            AgentMessage::Usage { usage, .. } => {
                let job = self.jobs.get_mut(&seq).expect("job exists");
                if let Some(task) = job.task(index) {
                    set_usage(task.attrs, &usage);
                }
            }
        }
    }

    /// The job (and subjob) an agent's job id names, if it still runs.
    fn running_task(&mut self, job_id: &str) -> Option<(u64, Option<u32>)> {
        let (job, index) = self.locate(job_id).ok()?;
        let seq = job.seq;
        let job = self.jobs.get_mut(&seq)?;
        let task = job.task(index)?;
        (!*task.finished).then_some((seq, index))
    }

    fn task_ended(
        &mut self,
        seq: u64,
        index: Option<u32>,
        exit_status: i32,
        usage: Usage,
        now: i64,
    ) {
        let _ = self.sched.apply(Event::Finish {
            job: SchedId { seq, index },
            exit_status,
        });
        let job = self.jobs.get_mut(&seq).expect("job exists");
        let Some(task) = job.task(index) else {
            return;
        };
        set_usage(task.attrs, &usage);
        set(task.attrs, "Exit_status", exit_status.to_string());
        let end = match task.deleted_by.clone() {
            Some(by) => JobEnd::Terminated { by: Some(by) },
            None if exit_status == 0 => JobEnd::Finished,
            None => JobEnd::Failed {
                exit_status: Some(i64::from(exit_status)),
            },
        };
        if let Some(comment) = finish_comment(task.attrs.get("comment"), &end) {
            set(task.attrs, "comment", comment);
        }
        let sub = match end {
            JobEnd::Finished => substate::FINISHED,
            JobEnd::Failed { .. } => substate::FAILED,
            JobEnd::Terminated { .. } => substate::TERMINATED,
        };
        // A subjob that is over shows `X`; a job, `F`.
        let letter = if index.is_some() { "X" } else { "F" };
        end_task(task, letter, sub, now);
        if let Some(i) = index {
            job.unfinished.remove(&i);
            refresh_array(job, now);
        }
        self.persist(seq);
    }

    // ---------------------------------------------------------------------------------------
    // Scheduling

    /// Runs a scheduling cycle at `now` and acts on its decisions: starts go to agents,
    /// comments to the waiting jobs.
    pub fn schedule(&mut self, now: i64) {
        self.purge_history(now);
        self.release_waiting(now);
        for decision in self.sched.cycle(now.max(0) as u64) {
            match decision {
                Decision::Run(start) => self.start(&start, now),
                Decision::Comment { job, comment } => {
                    if let Some(record) = self.jobs.get_mut(&job.seq) {
                        set(&mut record.attrs, "comment", comment.to_string());
                    }
                }
                Decision::Delete { job, reason } => {
                    if let Some(record) = self.jobs.get_mut(&job.seq) {
                        set(&mut record.attrs, "comment", reason.to_string());
                        end_job(record, substate::TERMINATED, now);
                        self.persist(job.seq);
                    }
                }
            }
        }
    }

    /// Jobs in state W whose execution time has come become eligible (Q), unless held.
    fn release_waiting(&mut self, now: i64) {
        let due: Vec<u64> = self
            .jobs
            .values()
            .filter(|job| !job.finished && job.attrs.get("job_state") == Some("W"))
            .filter(|job| {
                job.attrs
                    .get("Execution_Time")
                    .and_then(|t| t.parse::<i64>().ok())
                    .is_some_and(|at| at <= now)
            })
            .map(|job| job.seq)
            .collect();
        for seq in due {
            let job = self.jobs.get_mut(&seq).expect("job exists");
            let held = job.attrs.get("Hold_Types") != Some("n");
            let (state, sub) = if held {
                ("H", substate::HELD)
            } else {
                let _ = self.sched.apply(Event::Release(SchedId::job(seq)));
                job.spec.hold = false;
                ("Q", substate::QUEUED)
            };
            set(&mut job.attrs, "job_state", state);
            set(&mut job.attrs, "substate", sub.to_string());
            self.persist(seq);
        }
    }

    fn start(&mut self, start: &hpcbox_sched::Start, now: i64) {
        let (seq, index) = (start.job.seq, start.job.index);
        let Some(first) = start.chunks.first() else {
            return;
        };
        let node = first.vnode.to_string();
        let exec_vnode = start.exec_vnode();
        let exec_host = start
            .chunks
            .iter()
            .map(|c| {
                let host = &self
                    .nodes
                    .get(&*c.vnode)
                    .map_or(c.vnode.to_string(), |n| n.report.host.clone());
                let slot = c.cpus.first().copied().unwrap_or(0);
                match c.resources.ncpus {
                    1 => format!("{host}/{slot}"),
                    n => format!("{host}/{slot}*{n}"),
                }
            })
            .collect::<Vec<_>>()
            .join("+");
        let cpus = self.machine_cpus(start, &node);
        let mpiprocs = self
            .jobs
            .get(&seq)
            .map(|job| chunk_mpiprocs(&job.attrs))
            .unwrap_or_default();
        let nodefile_hosts: Vec<(String, u32)> = start
            .chunks
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let host = self
                    .nodes
                    .get(&*c.vnode)
                    .map_or(c.vnode.to_string(), |n| n.report.host.clone());
                let procs = mpiprocs
                    .get(i)
                    .copied()
                    .unwrap_or(u32::from(c.resources.ncpus > 0));
                (host, procs)
            })
            .collect();
        let Some(job) = self.jobs.get_mut(&seq) else {
            return;
        };
        if let Some(i) = index {
            let sub = SubJob {
                attrs: subjob_attrs(&job.attrs, i),
                run: None,
                finished: false,
                deleted_by: None,
            };
            job.subjobs.insert(i, sub);
            job.changed.insert(i);
            job.unfinished.insert(i);
            refresh_array(job, now);
        }
        let (owner, script, argv) = (job.owner.clone(), job.script.clone(), job.argv.clone());
        let Some(task) = job.task(index) else {
            return;
        };
        let attrs = task.attrs;
        set(attrs, "job_state", "R");
        set(attrs, "substate", substate::PRERUN.to_string());
        set(attrs, "exec_host", exec_host);
        set(attrs, "exec_vnode", exec_vnode.clone());
        set(attrs, "stime", now.to_string());
        set(attrs, "mtime", now.to_string());
        let runs = attrs
            .get("run_count")
            .and_then(|n| n.parse::<u32>().ok())
            .unwrap_or(0);
        set(attrs, "run_count", (runs + 1).to_string());
        if let Some(comment) = job_run_comment(now, &self.tz, &exec_vnode) {
            set(attrs, "comment", comment);
        }
        *task.run = Some(Run {
            node: node.clone(),
            started: now,
        });
        let hosts: Vec<(&str, u32)> = nodefile_hosts
            .iter()
            .map(|(h, n)| (h.as_str(), *n))
            .collect();
        let mut message = job_start_message(attrs, first, &hpcbox_pbs::jobenv::nodefile(&hosts));
        message.owner = owner;
        message.script = script;
        message.argv = argv;
        message.cpus = cpus;
        self.outbox
            .push((node, ServerMessage::Start(Box::new(message))));
        self.persist(seq);
    }

    /// The machine CPU ids of every chunk of `start` on the host of vnode `first` (all its
    /// ranks start there until remote ranks start through their own agents), for pinning;
    /// empty when some vnode there is unpinned.
    fn machine_cpus(&self, start: &hpcbox_sched::Start, first: &str) -> Vec<usize> {
        let Some(host) = self.nodes.get(first).map(|n| n.report.host.as_str()) else {
            return Vec::new();
        };
        let mut cpus = Vec::new();
        for chunk in &start.chunks {
            let Some(node) = self.nodes.get(&*chunk.vnode) else {
                continue;
            };
            if node.report.host != host {
                continue;
            }
            if node.report.cpu_ids.is_empty() {
                return Vec::new();
            }
            for &cpu in &chunk.cpus {
                if let Some(&id) = node.report.cpu_ids.get(cpu as usize) {
                    if !cpus.contains(&id) {
                        cpus.push(id);
                    }
                }
            }
        }
        cpus.sort_unstable();
        cpus
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

/// Where a started subjob stands, for the scheduler after a restart.
fn restored_state(sub: &SubJob) -> SubjobState {
    match &sub.run {
        Some(run) if !sub.finished => SubjobState::Running {
            vnodes: exec_vnodes(sub.attrs.get("exec_vnode").unwrap_or_default()),
            at: run.started.max(0) as u64,
        },
        _ => SubjobState::Ended {
            ok: sub.attrs.get("Exit_status") == Some("0"),
        },
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

/// Brings an array's own attributes up to date with its subjobs: `array_state_count`,
/// `array_indices_remaining`, its state (`B` once a subjob started, `F` when all are over)
/// and, at the end, its exit status (0 when every subjob exited 0, else 1).
fn refresh_array(job: &mut Job, now: i64) {
    let Some(range) = job.spec.array else {
        return;
    };
    let total = range.len() as usize;
    let running = job.unfinished.len();
    let expired = job.subjobs.len() - running;
    let queued = total.saturating_sub(job.subjobs.len());
    set(
        &mut job.attrs,
        "array_state_count",
        format!("Queued:{queued} Running:{running} Exiting:0 Expired:{expired} "),
    );
    set(
        &mut job.attrs,
        "array_indices_remaining",
        remaining_ranges(range, job.subjobs.keys().copied()),
    );
    if job.finished {
        return;
    }
    if expired == total {
        let failed = job
            .subjobs
            .values()
            .any(|s| s.attrs.get("Exit_status") != Some("0"));
        set(
            &mut job.attrs,
            "Exit_status",
            if failed { "1" } else { "0" },
        );
        let sub = if failed {
            substate::FAILED
        } else {
            substate::FINISHED
        };
        end_job(job, sub, now);
    } else {
        set(&mut job.attrs, "job_state", "B");
        set(&mut job.attrs, "substate", substate::BEGUN.to_string());
    }
}

/// The indices of `range` not in `started` (sorted), as PBS writes `array_indices_remaining`:
/// runs `a-b` (`a-b:step`) and single indices, comma-separated, `-` when none. Walks the gaps
/// between started indices, so a large array costs its started subjobs, not its range.
fn remaining_ranges(range: ArraySpec, started: impl Iterator<Item = u32>) -> String {
    if range.is_empty() {
        return "-".to_string();
    }
    let last = range.start + (range.len() - 1) * range.step;
    let mut parts = Vec::new();
    let mut next = Some(range.start);
    let mut push_run = |from: u32, to: u32| {
        parts.push(match (from == to, range.step) {
            (true, _) => from.to_string(),
            (false, 1) => format!("{from}-{to}"),
            (false, step) => format!("{from}-{to}:{step}"),
        });
    };
    for index in started.filter(|&i| range.contains(i)) {
        if let Some(from) = next.filter(|&from| from < index) {
            push_run(from, index - range.step);
        }
        next = index.checked_add(range.step).filter(|&n| n <= last);
    }
    if let Some(from) = next {
        push_run(from, last);
    }
    if parts.is_empty() {
        "-".to_string()
    } else {
        parts.join(",")
    }
}

/// What an agent needs to run the job (or subjob) whose attributes are `attrs`; the caller
/// adds the owner, the script and the pinned CPUs.
fn job_start_message(
    attrs: &StatusObject,
    first: &hpcbox_sched::ChunkPlacement,
    nodefile: &str,
) -> JobStart {
    let get = |name: &str| attrs.get(name).map(str::to_string);
    let join = attrs.get("Join_Path").unwrap_or("n");
    let (output_path, error_path) = match join {
        "oe" => (get("Output_Path").unwrap_or_default(), None),
        "eo" => (get("Error_Path").unwrap_or_default(), None),
        _ => (get("Output_Path").unwrap_or_default(), get("Error_Path")),
    };
    let variables = attrs
        .get("Variable_List")
        .map(split_variable_list)
        .unwrap_or_default();
    let walltime = attrs
        .get_resource("Resource_List", "walltime")
        .and_then(|w| w.parse::<hpcbox_pbs::duration::Duration>().ok())
        .map(|d| d.as_secs());
    let mem_kb = attrs
        .get_resource("Resource_List", "mem")
        .and_then(|m| m.parse::<hpcbox_pbs::size::Size>().ok())
        .map(|s| s.kilobytes());
    JobStart {
        job_id: attrs.name.clone(),
        job_name: get("Job_Name").unwrap_or_default(),
        queue: get("queue").unwrap_or_default(),
        owner: String::new(),
        script: None,
        argv: Vec::new(),
        shell: get("Shell_Path_List"),
        variables,
        output_path,
        error_path,
        account: get("Account_Name"),
        threads: u32::try_from(first.resources.ncpus).unwrap_or(1).max(1),
        cpus: Vec::new(),
        nodefile: nodefile.to_string(),
        walltime_limit: walltime,
        mem_limit_kb: mem_kb,
        rerun: get("run_count").and_then(|n| n.parse::<u32>().ok()) > Some(1),
    }
}

/// The job record for a submission: PBS's attributes and the scheduler's view.
#[allow(clippy::too_many_arguments)]
fn build_job(
    req: &SubmitRequest,
    job_id: &JobId,
    queue: &str,
    user: &str,
    uid: u32,
    now: i64,
    defs: &ResourceDefs,
    nodes: &BTreeMap<String, Node>,
) -> Answer<Job> {
    let is_host = |word: &str| nodes.contains_key(word);
    let argv: Vec<&str> = req.argv.iter().map(String::as_str).collect();
    let submit_arguments = hpcbox_pbs::format::full::encode_submit_arguments(&argv);
    let submission = Submission {
        options: &req.options,
        operand: &req.operand,
        job_id,
        queue,
        owner: user,
        submit_host: &req.submit_host,
        workdir: &req.workdir,
        variables: &req.variables,
        submit_arguments: &submit_arguments,
        now,
        execution_time: req.execution_time,
    };
    let bad_value = |e: hpcbox_pbs::ParseError| {
        ApiError::with_text(
            PbsErrno::BadAttributeValue.code(),
            format!("Illegal attribute or resource value {e}"),
        )
    };
    let attrs = queued_job(&submission, defs, &is_host).map_err(bad_value)?;
    let resources = req.options.resource_list_with(defs).map_err(|e| {
        ApiError::with_text(PbsErrno::BadAttributeValue.code(), e.to_string().trim_end())
    })?;
    let (select, place) = resources
        .select_and_place(defs, &is_host)
        .map_err(bad_value)?;
    let select = select.with_defaults(&hpcbox_pbs::resource::ResourceList::new());
    let mut spec = JobSpec::new(job_id.seq, convert::chunks(&select));
    spec.queue = queue.to_string();
    spec.owner = user.to_string();
    spec.project = attrs.get("project").unwrap_or_default().to_string();
    spec.place = convert::place(&place);
    spec.walltime = resources.walltime().map(|w| w.as_secs());
    spec.priority = req.options.priority.unwrap_or(0);
    spec.submit_time = now.max(0) as u64;
    // A job waiting for its `-a` time is held from the scheduler until then (state W).
    let waiting = req.execution_time.is_some_and(|at| at > now);
    spec.hold = req.options.hold || waiting;
    spec.array = req.options.array.map(|range| hpcbox_sched::ArraySpec {
        start: range.start,
        end: range.end,
        step: range.step,
        max_running: range.max_running.or(req.options.max_run_subjobs),
    });
    if let Some(depend) = &req.options.depend {
        spec.depend = convert::dependencies(depend);
    }
    let argv = match &req.operand {
        Operand::Command { program, args } => std::iter::once(program.clone())
            .chain(args.iter().cloned())
            .collect(),
        _ => Vec::new(),
    };
    Ok(Job {
        seq: job_id.seq,
        owner: user.to_string(),
        uid,
        attrs,
        script: req.script.clone(),
        argv,
        spec,
        run: None,
        finished: false,
        deleted_by: None,
        subjobs: BTreeMap::new(),
        changed: BTreeSet::new(),
        unfinished: BTreeSet::new(),
        request: Some(SubmitRequest {
            script: None,
            ..req.clone()
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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

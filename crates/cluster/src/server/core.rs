//! The server's state and every decision it takes, without sockets: requests and agent reports
//! go in, answers and messages for agents come out. The daemon around it ([`super::daemon::run`]) only
//! moves bytes.

use std::collections::BTreeMap;

use hpcbox_pbs::errno::PbsErrno;
use hpcbox_pbs::format::history::{finish_comment, job_run_comment, JobEnd};
use hpcbox_pbs::jobid::{ArrayPart, JobId};
use hpcbox_pbs::newjob::{queued_job, Submission};
use hpcbox_pbs::qsub::Operand;
use hpcbox_pbs::resource::ResourceDefs;
use hpcbox_pbs::state::substate;
use hpcbox_pbs::status::{split_variable_list, StatusObject, JOB_ATTRIBUTE_ORDER};
use hpcbox_sched::{
    Decision, Event, JobId as SchedId, JobSpec, NodeSpec, QueueSpec, Resources, Scheduler,
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
}

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
        for (seq, finished, job) in core.store.jobs::<Job>()? {
            // A job that was running when the server stopped still runs under its agent, which
            // re-reports it. The scheduler cannot yet be told where it runs, so it is not given
            // the job again (which would start it twice); it learns of its end as usual.
            if !finished && job.run.is_none() {
                let _ = core.sched.apply(Event::Submit(Box::new(job.spec.clone())));
            }
            core.jobs.insert(seq, job);
        }
        Ok(core)
    }

    /// The server's name, the suffix of its job ids.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sets how long a deleted job gets between SIGTERM and SIGKILL.
    pub fn set_kill_delay(&mut self, seconds: u64) {
        self.kill_delay = seconds;
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
            .unwrap_or_else(|| "workq".to_string());
        if !self.queues.contains_key(&queue) {
            return Err(err(PbsErrno::UnknownQueue));
        }
        if req.options.array.is_some() || req.options.interactive {
            return Err(ApiError::with_text(
                PbsErrno::NotSupported.code(),
                "job arrays (-J) and interactive jobs (-I) are not supported by hpcbox yet",
            ));
        }
        let server = self.name.clone();
        let (defs, nodes) = (&self.defs, &self.nodes);
        let stored = self
            .store
            .submit(|seq| {
                let job_id = JobId::new(seq, server.as_str());
                build_job(req, &job_id, &queue, user, uid, now, defs, nodes)
            })
            .map_err(|e| ApiError::with_text(PbsErrno::System.code(), e.to_string()))?;
        let (seq, job) = stored?;
        self.sched
            .apply(Event::Submit(Box::new(job.spec.clone())))
            .map_err(|e| ApiError::with_text(PbsErrno::BadAttributeValue.code(), e.to_string()))?;
        let id = job.attrs.name.clone();
        self.jobs.insert(seq, job);
        Ok(id)
    }

    /// `qstat`: the jobs asked for (all when none), with an error per unknown id.
    pub fn status(&self, req: &StatusRequest) -> Vec<StatusItem> {
        if req.ids.is_empty() {
            return self
                .jobs
                .values()
                .filter(|job| req.history || !job.finished)
                .map(|job| StatusItem::Job(job.attrs.clone()))
                .collect();
        }
        req.ids
            .iter()
            .map(|given| match self.find(given) {
                Err(error) => StatusItem::Error {
                    id: self.full_id(given),
                    error,
                },
                Ok(job) if job.finished && !req.history => StatusItem::Error {
                    id: job.attrs.name.clone(),
                    error: err(PbsErrno::HistoryJob),
                },
                Ok(job) => StatusItem::Job(job.attrs.clone()),
            })
            .collect()
    }

    /// `qdel`, `qhold`, `qrls`, `qsig` of one job, on behalf of `user` (`uid` 0 may act on any).
    pub fn act(&mut self, id: &str, action: &Action, user: &str, uid: u32, now: i64) -> Answer<()> {
        let seq = self.find(id)?.seq;
        let job = &self.jobs[&seq];
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
        }
    }

    fn delete(&mut self, seq: u64, user: &str, force: bool, now: i64) -> Answer<()> {
        let running_on = self.jobs[&seq].run.as_ref().map(|run| run.node.clone());
        match running_on {
            Some(node) if !force => {
                let job = self.jobs.get_mut(&seq).expect("job exists");
                job.deleted_by = Some(user.to_string());
                let job_id = job.attrs.name.clone();
                self.outbox.push((
                    node,
                    ServerMessage::Kill {
                        job_id,
                        grace: self.kill_delay,
                    },
                ));
                self.persist(seq);
                Ok(())
            }
            _ => {
                let _ = self.sched.apply(Event::Delete(SchedId::job(seq)));
                let job = self.jobs.get_mut(&seq).expect("job exists");
                let was_running = job.run.is_some();
                if let Some(node) = job.run.as_ref().map(|r| r.node.clone()) {
                    let job_id = job.attrs.name.clone();
                    self.outbox
                        .push((node, ServerMessage::Kill { job_id, grace: 0 }));
                }
                let job = self.jobs.get_mut(&seq).expect("job exists");
                if was_running {
                    let comment = finish_comment(
                        job.attrs.get("comment"),
                        &JobEnd::Terminated {
                            by: Some(user.to_string()),
                        },
                    );
                    if let Some(comment) = comment {
                        set(&mut job.attrs, "comment", comment);
                    }
                }
                end_job(job, substate::TERMINATED, now);
                self.persist(seq);
                Ok(())
            }
        }
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
        obj.with("resv_enable", "True")
            .with("sharing", "default_shared")
            .with("last_state_change_time", node.state_changed.to_string())
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
            .with("default_queue", "workq")
            .with("pbs_version", env!("CARGO_PKG_VERSION"))
    }

    fn find(&self, given: &str) -> Answer<&Job> {
        let id: JobId = given.parse().map_err(|_| err(PbsErrno::UnknownJobId))?;
        let ours = id
            .server
            .as_deref()
            .is_none_or(|s| s == self.name || s.starts_with(&format!("{}.", self.name)));
        if !ours || id.array != ArrayPart::NotArray {
            return Err(err(PbsErrno::UnknownJobId));
        }
        self.jobs
            .get(&id.seq)
            .ok_or_else(|| err(PbsErrno::UnknownJobId))
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
        let node = Node {
            report,
            connected: true,
            state_changed: now,
        };
        let _ = self.store.put_object(ObjectKind::Node, &name, &node);
        self.nodes.insert(name.clone(), node);
        let lost: Vec<u64> = self
            .jobs
            .values()
            .filter(|job| {
                !job.finished
                    && job.run.as_ref().is_some_and(|run| run.node == name)
                    && !running.contains(&job.attrs.name)
            })
            .map(|job| job.seq)
            .collect();
        for seq in lost {
            self.job_ended(seq, hpcbox_pbs::exit::JOB_EXEC_FAIL2, Usage::default(), now);
        }
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

    /// A message from the agent of vnode `node`.
    pub fn agent_message(&mut self, message: AgentMessage, now: i64) {
        match message {
            AgentMessage::Hello { .. } => {}
            AgentMessage::Started { job_id, session } => {
                if let Some(seq) = self.seq_of(&job_id) {
                    let job = self.jobs.get_mut(&seq).expect("job exists");
                    set(&mut job.attrs, "substate", substate::RUNNING.to_string());
                    set(&mut job.attrs, "session_id", session.to_string());
                    let _ = self.sched.apply(Event::StartConfirmed {
                        job: SchedId::job(seq),
                        at: now.max(0) as u64,
                    });
                    self.persist(seq);
                }
            }
            AgentMessage::StartFailed {
                job_id,
                exit_status,
                message,
            } => {
                if let Some(seq) = self.seq_of(&job_id) {
                    let job = self.jobs.get_mut(&seq).expect("job exists");
                    set(
                        &mut job.attrs,
                        "comment",
                        format!("Job failed to start: {message}"),
                    );
                    self.job_ended(seq, exit_status, Usage::default(), now);
                }
            }
            AgentMessage::Ended {
                job_id,
                exit_status,
                usage,
            } => {
                if let Some(seq) = self.seq_of(&job_id) {
                    self.job_ended(seq, exit_status, usage, now);
                }
            }
            AgentMessage::Usage { job_id, usage } => {
                if let Some(seq) = self.seq_of(&job_id) {
                    let job = self.jobs.get_mut(&seq).expect("job exists");
                    set_usage(&mut job.attrs, &usage);
                }
            }
        }
    }

    fn seq_of(&self, job_id: &str) -> Option<u64> {
        let seq = self.find(job_id).ok()?.seq;
        (!self.jobs[&seq].finished).then_some(seq)
    }

    fn job_ended(&mut self, seq: u64, exit_status: i32, usage: Usage, now: i64) {
        let _ = self.sched.apply(Event::Finish {
            job: SchedId::job(seq),
            exit_status,
        });
        let job = self.jobs.get_mut(&seq).expect("job exists");
        set_usage(&mut job.attrs, &usage);
        set(&mut job.attrs, "Exit_status", exit_status.to_string());
        let end = match job.deleted_by.clone() {
            Some(by) => JobEnd::Terminated { by: Some(by) },
            None if exit_status == 0 => JobEnd::Finished,
            None => JobEnd::Failed {
                exit_status: Some(i64::from(exit_status)),
            },
        };
        if let Some(comment) = finish_comment(job.attrs.get("comment"), &end) {
            set(&mut job.attrs, "comment", comment);
        }
        let sub = match end {
            JobEnd::Finished => substate::FINISHED,
            JobEnd::Failed { .. } => substate::FAILED,
            JobEnd::Terminated { .. } => substate::TERMINATED,
        };
        end_job(job, sub, now);
        self.persist(seq);
    }

    // ---------------------------------------------------------------------------------------
    // Scheduling

    /// Runs a scheduling cycle at `now` and acts on its decisions: starts go to agents,
    /// comments to the waiting jobs.
    pub fn schedule(&mut self, now: i64) {
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

    fn start(&mut self, start: &hpcbox_sched::Start, now: i64) {
        let seq = start.job.seq;
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
        set(&mut job.attrs, "job_state", "R");
        set(&mut job.attrs, "substate", substate::PRERUN.to_string());
        set(&mut job.attrs, "exec_host", exec_host);
        set(&mut job.attrs, "exec_vnode", exec_vnode.clone());
        set(&mut job.attrs, "stime", now.to_string());
        set(&mut job.attrs, "mtime", now.to_string());
        let runs = job
            .attrs
            .get("run_count")
            .and_then(|n| n.parse::<u32>().ok())
            .unwrap_or(0);
        set(&mut job.attrs, "run_count", (runs + 1).to_string());
        if let Some(comment) = job_run_comment(now, &self.tz, &exec_vnode) {
            set(&mut job.attrs, "comment", comment);
        }
        job.run = Some(Run {
            node: node.clone(),
            started: now,
        });
        let hosts: Vec<(&str, u32)> = nodefile_hosts
            .iter()
            .map(|(h, n)| (h.as_str(), *n))
            .collect();
        let mut message = job_start_message(job, first, &hpcbox_pbs::jobenv::nodefile(&hosts));
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

    fn persist(&self, seq: u64) {
        if let Some(job) = self.jobs.get(&seq) {
            if let Err(e) = self.store.update_job(seq, job, job.finished) {
                tracing::error!("could not store job {seq}: {e}");
            }
        }
    }
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
    set(&mut job.attrs, "job_state", "F");
    set(&mut job.attrs, "substate", sub.to_string());
    set(&mut job.attrs, "mtime", now.to_string());
    set(&mut job.attrs, "obittime", now.to_string());
    job.finished = true;
}

fn job_start_message(job: &Job, first: &hpcbox_sched::ChunkPlacement, nodefile: &str) -> JobStart {
    let attrs = &job.attrs;
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
        owner: job.owner.clone(),
        script: job.script.clone(),
        argv: job.argv.clone(),
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
    spec.hold = req.options.hold;
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
    })
}

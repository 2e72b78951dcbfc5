//! What the server does with its node agents: hellos, reports of job ends and usage, and
//! requeues of the jobs a node lost.

use super::*;
use crate::protocol::TaskReport;

impl Core {
    /// An agent said hello for its vnode: the vnode joins (or comes back), and jobs the
    /// server thinks run there but the agent no longer has are requeued (or, when not
    /// rerunnable, ended).
    pub fn agent_hello(
        &mut self,
        report: NodeReport,
        running: &[String],
        tasks: &[TaskReport],
        now: i64,
    ) {
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
        self.tasks_reported(&name, tasks);
    }

    /// The id of the job (or subjob), as its agent knows it.
    pub(super) fn task_name(&self, seq: u64, index: Option<u32>) -> Option<String> {
        Some(self.jobs.get(&seq)?.task_attrs(index)?.name.clone())
    }

    /// How many times the job (or subjob) has been started.
    pub(super) fn run_count(&self, seq: u64, index: Option<u32>) -> u32 {
        self.jobs
            .get(&seq)
            .and_then(|job| job.task_attrs(index))
            .and_then(|a| a.get("run_count"))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    /// Puts a job (or subjob) that was running back in its queue, as PBS requeues the jobs of
    /// a node that failed: it starts again from the beginning. False, changing nothing, when
    /// the job is not rerunnable (`qsub -r n`) or the scheduler refuses.
    pub(super) fn requeue(&mut self, seq: u64, index: Option<u32>, why: &str, now: i64) -> bool {
        let Some(job) = self.jobs.get(&seq) else {
            return false;
        };
        // An interactive job's terminal went with its node: it cannot run again (PBS).
        if job.attrs.get("Rerunable") == Some("False") || job.interactive_target().is_some() {
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
        self.tasks_lost_with(name);
        let _ = self.sched.apply(Event::NodeDown(name.to_string()));
        if let Some(node) = self.nodes.get_mut(name) {
            node.connected = false;
            node.state_changed = now;
        }
    }

    /// A message from the agent of vnode `node` about one of its jobs.
    pub fn agent_message(&mut self, node: &str, message: AgentMessage, now: i64) {
        let message = match message {
            AgentMessage::TaskRequest { task, request } => {
                return self.task_request(node, task, request);
            }
            AgentMessage::TaskEnded {
                task,
                origin,
                exit_status,
                error,
            } => return self.task_finished(task, origin, exit_status, error),
            other => other,
        };
        let job_id = match &message {
            AgentMessage::Hello { .. }
            | AgentMessage::Heartbeat
            | AgentMessage::TaskRequest { .. }
            | AgentMessage::TaskEnded { .. } => return,
            AgentMessage::Started { job_id, .. }
            | AgentMessage::StartFailed { job_id, .. }
            | AgentMessage::Ended { job_id, .. }
            | AgentMessage::Usage { job_id, .. } => job_id.clone(),
        };
        let Some((seq, index)) = self.running_task(&job_id) else {
            return;
        };
        match message {
            AgentMessage::Hello { .. }
            | AgentMessage::Heartbeat
            | AgentMessage::TaskRequest { .. }
            | AgentMessage::TaskEnded { .. } => {}
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
    pub(super) fn running_task(&mut self, job_id: &str) -> Option<(u64, Option<u32>)> {
        let (job, index) = self.locate(job_id).ok()?;
        let seq = job.seq;
        let job = self.jobs.get_mut(&seq)?;
        let task = job.task(index)?;
        (!*task.finished).then_some((seq, index))
    }

    pub(super) fn task_ended(
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
        if let Some(name) = self.task_name(seq, index) {
            self.end_tasks_of(&name);
        }
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
}

//! Tasks of a job on its other hosts, as PBS's `pbs_tmrsh` starts them through the TM
//! interface: a process of the job asks its agent ([`AgentMessage::TaskRequest`]), the server
//! hands the task to the agent of the job's vnode on the host asked for
//! ([`ServerMessage::StartTask`]), and relays its end back ([`ServerMessage::TaskEnded`]).
//! When the job ends, the agents running its tasks end them.

use super::*;
use crate::protocol::{TaskOrigin, TaskReport, TaskStart, TmRequest};

/// A task handed to an agent, waiting for its end.
#[derive(Debug)]
pub(super) struct PendingTask {
    /// Who asked; `None` once answered (the task's agent went away) or when not known.
    origin: Option<TaskOrigin>,
    /// The job it belongs to, and the vnode whose agent runs it.
    job_id: String,
    target: String,
}

impl Core {
    /// Hands the task `origin`'s agent asked for to the agent of the job's vnode on the host
    /// asked for, or answers why not.
    pub(super) fn task_request(&mut self, origin: &str, task: u64, request: TmRequest) {
        let refuse = |core: &mut Core, why: String| {
            core.outbox.push((
                origin.to_string(),
                ServerMessage::TaskEnded {
                    task,
                    exit_status: 255,
                    error: Some(why),
                },
            ));
        };
        let Some((seq, index)) = self.running_task(&request.job_id) else {
            return refuse(self, format!("job {} is not running", request.job_id));
        };
        let job = self.jobs.get_mut(&seq).expect("job exists");
        let owner = job.owner.clone();
        let Some(attrs) = job.task(index).map(|t| t.attrs) else {
            return refuse(self, format!("job {} is not running", request.job_id));
        };
        let vnodes = exec_vnodes(attrs.get("exec_vnode").unwrap_or_default());
        if !vnodes.iter().any(|v| v == origin) {
            // Only the job's own agents speak for it.
            return refuse(
                self,
                format!("job {} does not run on {origin}", request.job_id),
            );
        }
        let (output_path, error_path) = records::output_paths(attrs);
        let target = vnodes.into_iter().find(|v| {
            self.nodes.get(v).is_some_and(|n| {
                n.connected && (n.report.host == request.host || *v == request.host)
            })
        });
        let Some(target) = target else {
            return refuse(
                self,
                format!("{} is not a host of job {}", request.host, request.job_id),
            );
        };
        let id = self.next_task;
        self.next_task += 1;
        let origin = TaskOrigin {
            node: origin.to_string(),
            ask: task,
        };
        let start = TaskStart {
            task: id,
            origin: Some(origin.clone()),
            job_id: request.job_id.clone(),
            owner,
            command: request.command,
            cwd: request.cwd,
            env: request.env,
            output_path,
            error_path,
        };
        self.outbox
            .push((target.clone(), ServerMessage::StartTask(Box::new(start))));
        self.tasks.insert(
            id,
            PendingTask {
                origin: Some(origin),
                job_id: request.job_id,
                target,
            },
        );
    }

    /// Relays the end of task `task` to the agent that asked for it: the one on record, else
    /// (a task started before this server restarted) the one its agent names.
    pub(super) fn task_finished(
        &mut self,
        task: u64,
        named: Option<TaskOrigin>,
        exit_status: i32,
        error: Option<String>,
    ) {
        let origin = match self.tasks.remove(&task) {
            Some(pending) => pending.origin,
            None => named,
        };
        if let Some(origin) = origin {
            let ended = ServerMessage::TaskEnded {
                task: origin.ask,
                exit_status,
                error,
            };
            self.outbox.push((origin.node, ended));
        }
    }

    /// The agent of vnode `node` (re)connected running `reported`: those of running jobs go
    /// on record again (a server that restarted since knew nothing of them); those of jobs
    /// that have ended are ended.
    pub(super) fn tasks_reported(&mut self, node: &str, reported: &[TaskReport]) {
        let mut ended: Vec<&str> = Vec::new();
        for report in reported {
            if self.running_task(&report.job_id).is_none() {
                if !ended.contains(&report.job_id.as_str()) {
                    ended.push(&report.job_id);
                }
                continue;
            }
            self.next_task = self.next_task.max(report.task + 1);
            self.tasks
                .entry(report.task)
                .or_insert_with(|| PendingTask {
                    origin: report.origin.clone(),
                    job_id: report.job_id.clone(),
                    target: node.to_string(),
                });
        }
        for job_id in ended {
            let kill = ServerMessage::Kill {
                job_id: job_id.to_string(),
                grace: 0,
            };
            self.outbox.push((node.to_string(), kill));
        }
    }

    /// The agent of vnode `node` went away: those who asked for the tasks it runs are told
    /// so; the tasks stay on record, so that the job's end still ends them there.
    pub(super) fn tasks_lost_with(&mut self, node: &str) {
        for pending in self.tasks.values_mut().filter(|p| p.target == node) {
            if let Some(origin) = pending.origin.take() {
                let ended = ServerMessage::TaskEnded {
                    task: origin.ask,
                    exit_status: 255,
                    error: Some(format!("the agent of {node} went away")),
                };
                self.outbox.push((origin.node, ended));
            }
        }
    }

    /// The job `job_id` has ended: the agents running tasks of it end them.
    pub(super) fn end_tasks_of(&mut self, job_id: &str) {
        let mut targets: Vec<String> = Vec::new();
        self.tasks.retain(|_, pending| {
            let ours = pending.job_id == job_id;
            if ours && !targets.contains(&pending.target) {
                targets.push(pending.target.clone());
            }
            !ours
        });
        for target in targets {
            let kill = ServerMessage::Kill {
                job_id: job_id.to_string(),
                grace: 0,
            };
            self.outbox.push((target, kill));
        }
    }
}

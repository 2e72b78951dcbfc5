//! Dependencies: `after`, `afterok`, `afternotok`, `afterany` and the `before…` kinds (which put
//! the matching `after…` on the named job), on jobs, whole arrays and single subjobs.
//!
//! A job with unsatisfied dependencies stays out of cycles. When a dependency can no longer be
//! satisfied (`afterok` on a job that failed, `after` on a job deleted before it ran), the job is
//! removed and the next cycle reports [`Decision::Delete`], as PBS's server deletes it.

use crate::decision::{Decision, DeleteReason};
use crate::error::SchedError;
use crate::model::{DependKind, Dependency, JobId, JobSpec};
use crate::sched::{Outcome, Scheduler};

/// What a dependency's target has done so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TargetStatus {
    started: bool,
    /// `Some(ok)` once it has ended (deleted counts as not ok).
    ended: Option<bool>,
}

/// Where a dependency stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DepState {
    Satisfied,
    Waiting,
    Never,
}

fn judge(kind: DependKind, st: TargetStatus) -> DepState {
    use DepState::*;
    match kind {
        DependKind::After | DependKind::Before => {
            if st.started {
                Satisfied
            } else if st.ended.is_some() {
                Never
            } else {
                Waiting
            }
        }
        DependKind::AfterOk | DependKind::BeforeOk => match st.ended {
            Some(true) => Satisfied,
            Some(false) => Never,
            None => Waiting,
        },
        DependKind::AfterNotOk | DependKind::BeforeNotOk => match st.ended {
            Some(false) => Satisfied,
            Some(true) => Never,
            None => Waiting,
        },
        DependKind::AfterAny | DependKind::BeforeAny => {
            if st.ended.is_some() {
                Satisfied
            } else {
                Waiting
            }
        }
    }
}

impl Scheduler {
    /// The status of a dependency target; `None` when unknown.
    fn target_status(&self, target: JobId) -> Option<TargetStatus> {
        if let Some(job) = self.jobs.get(&target.seq) {
            return match (&job.array, target.index) {
                (None, None) => Some(TargetStatus {
                    started: job.started,
                    ended: None,
                }),
                (None, Some(_)) => None,
                (Some(a), None) => Some(TargetStatus {
                    started: a.started_any,
                    ended: a.is_done().then(|| a.ok()),
                }),
                (Some(a), Some(i)) => {
                    if !a.spec.contains(i) {
                        None
                    } else if a.deleted.contains(&i) {
                        Some(TargetStatus {
                            started: false,
                            ended: Some(false),
                        })
                    } else if a.is_pending(i) {
                        Some(TargetStatus {
                            started: false,
                            ended: None,
                        })
                    } else if self.running.contains_key(&target) {
                        Some(TargetStatus {
                            started: true,
                            ended: None,
                        })
                    } else {
                        Some(TargetStatus {
                            started: true,
                            ended: Some(!a.failed.contains(&i)),
                        })
                    }
                }
            };
        }
        match (self.done.get(&target.seq)?, target.index) {
            (Outcome::Single { ran, ok }, _) => Some(TargetStatus {
                started: *ran,
                ended: Some(*ok),
            }),
            (Outcome::Array(a), None) => Some(TargetStatus {
                started: a.started_any,
                ended: Some(a.ok()),
            }),
            (Outcome::Array(a), Some(i)) => {
                if !a.spec.contains(i) {
                    None
                } else if a.deleted.contains(&i) {
                    Some(TargetStatus {
                        started: false,
                        ended: Some(false),
                    })
                } else {
                    Some(TargetStatus {
                        started: true,
                        ended: Some(!a.failed.contains(&i)),
                    })
                }
            }
        }
    }

    /// Refuses a submission whose dependencies name unknown jobs, can never be satisfied, or
    /// put a `before…` on a job that has already started.
    pub(crate) fn check_dependencies(&self, spec: &JobSpec) -> Result<(), SchedError> {
        for d in &spec.depend {
            let st = self
                .target_status(d.job)
                .ok_or(SchedError::UnknownJob(d.job))?;
            if d.kind.inverse().is_some() {
                let job = self
                    .jobs
                    .get(&d.job.seq)
                    .ok_or(SchedError::UnknownJob(d.job))?;
                if d.job.index.is_some() || st.started || !job.has_pending_work() {
                    return Err(SchedError::Invalid(format!(
                        "{}:{} names a job that has started or is a subjob",
                        d.kind.name(),
                        d.job
                    )));
                }
            } else if judge(d.kind, st) == DepState::Never {
                return Err(SchedError::Invalid(format!(
                    "dependency {}:{} can never be satisfied",
                    d.kind.name(),
                    d.job
                )));
            }
        }
        Ok(())
    }

    /// Records the (checked) dependencies of the new job `seq`.
    pub(crate) fn add_dependencies(&mut self, seq: u64, depend: &[Dependency]) {
        for d in depend {
            match d.kind.inverse() {
                Some(after) => {
                    let cond = Dependency::new(after, JobId::job(seq));
                    self.add_waiting(d.job.seq, cond);
                    self.refresh(d.job.seq);
                }
                None => {
                    let st = self.target_status(d.job);
                    if st.map(|st| judge(d.kind, st)) != Some(DepState::Satisfied) {
                        self.add_waiting(seq, *d);
                    }
                }
            }
        }
    }

    fn add_waiting(&mut self, seq: u64, cond: Dependency) {
        if let Some(job) = self.jobs.get_mut(&seq) {
            let mut list = job.waiting.take().map(Vec::from).unwrap_or_default();
            if !list.contains(&cond) {
                list.push(cond);
            }
            job.waiting = Some(list.into_boxed_slice());
            let deps = self.dependents.entry(cond.job.seq).or_default();
            if !deps.contains(&seq) {
                deps.push(seq);
            }
        }
    }

    /// Re-judges the jobs that depend on `seq` after it started, ended or was deleted: releases
    /// those now free to run, deletes those whose dependency can never be satisfied (and so on
    /// down the chain).
    pub(crate) fn wake_dependents(&mut self, seq: u64) {
        let mut work = vec![seq];
        while let Some(target) = work.pop() {
            let Some(list) = self.dependents.get(&target).cloned() else {
                continue;
            };
            for dep in list {
                if let Some(deleted) = self.rejudge(dep) {
                    work.push(deleted);
                }
            }
            if self.done.contains_key(&target) {
                self.dependents.remove(&target);
            }
        }
    }

    /// Re-judges one waiting job; returns its sequence number when it was deleted.
    fn rejudge(&mut self, seq: u64) -> Option<u64> {
        let conds: Vec<Dependency> = self.jobs.get(&seq)?.waiting.as_deref()?.to_vec();
        let mut keep = Vec::new();
        for c in conds {
            match self.target_status(c.job).map(|st| judge(c.kind, st)) {
                Some(DepState::Satisfied) => {}
                Some(DepState::Waiting) => keep.push(c),
                Some(DepState::Never) | None => {
                    self.remove_for_dependency(seq, c);
                    return Some(seq);
                }
            }
        }
        if let Some(job) = self.jobs.get_mut(&seq) {
            job.waiting = if keep.is_empty() {
                None
            } else {
                Some(keep.into_boxed_slice())
            };
        }
        self.refresh(seq);
        None
    }

    fn remove_for_dependency(&mut self, seq: u64, cond: Dependency) {
        self.unlist(seq);
        self.drop_job(seq);
        self.done.insert(
            seq,
            Outcome::Single {
                ran: false,
                ok: false,
            },
        );
        self.deferred.push(Decision::Delete {
            job: JobId::job(seq),
            reason: DeleteReason::Dependency {
                kind: cond.kind,
                on: cond.job,
            },
        });
    }

    /// Called when a job or subjob starts: `after` dependencies on it may now be satisfied.
    pub(crate) fn started(&mut self, seq: u64) {
        if self.dependents.contains_key(&seq) {
            self.wake_dependents(seq);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn judge_follows_pbs_meanings() {
        let running = TargetStatus {
            started: true,
            ended: None,
        };
        let ok = TargetStatus {
            started: true,
            ended: Some(true),
        };
        let failed = TargetStatus {
            started: true,
            ended: Some(false),
        };
        let deleted_queued = TargetStatus {
            started: false,
            ended: Some(false),
        };
        assert_eq!(judge(DependKind::After, running), DepState::Satisfied);
        assert_eq!(judge(DependKind::After, deleted_queued), DepState::Never);
        assert_eq!(judge(DependKind::AfterOk, running), DepState::Waiting);
        assert_eq!(judge(DependKind::AfterOk, ok), DepState::Satisfied);
        assert_eq!(judge(DependKind::AfterOk, failed), DepState::Never);
        assert_eq!(judge(DependKind::AfterNotOk, failed), DepState::Satisfied);
        assert_eq!(judge(DependKind::AfterNotOk, ok), DepState::Never);
        assert_eq!(judge(DependKind::AfterAny, failed), DepState::Satisfied);
        assert_eq!(judge(DependKind::AfterAny, running), DepState::Waiting);
    }
}

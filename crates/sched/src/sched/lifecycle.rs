//! Started and ending jobs: start confirmation, freeing allocations, requeue, finish,
//! delete and purge.

use super::{Outcome, Run, Scheduler};
use crate::error::SchedError;
use crate::model::JobId;

impl Scheduler {
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

    pub(super) fn requeue(&mut self, id: JobId) -> Result<(), SchedError> {
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

    pub(super) fn finish(&mut self, id: JobId, ok: bool) -> Result<(), SchedError> {
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

    pub(super) fn delete(&mut self, id: JobId) -> Result<(), SchedError> {
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

    pub(super) fn purge(&mut self, seq: u64) -> Result<(), SchedError> {
        self.done
            .remove(&seq)
            .ok_or(SchedError::UnknownJob(JobId::job(seq)))?;
        self.dependents.remove(&seq);
        Ok(())
    }
}

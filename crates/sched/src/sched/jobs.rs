//! Waiting jobs: submission, the eligible set, holds and alterations.

use super::{fingerprint, ArrayState, Job, Key, Scheduler, ShapeCache, Slot};
use crate::error::SchedError;
use crate::model::{Alter, ChunkSpec, JobId, JobSpec, Place};
use crate::place::{Chunk, Shape};

impl Scheduler {
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

    pub(super) fn set_hold(&mut self, id: JobId, hold: bool) -> Result<(), SchedError> {
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

    pub(super) fn alter(&mut self, id: JobId, alter: Alter) -> Result<(), SchedError> {
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
}

//! Queries: job states, comments, running jobs, counts and the memory estimate.

use std::collections::BTreeMap;

use super::{Job, Key, Node, Outcome, Run, RunChunk, Scheduler, Slot};
use crate::decision::Comment;
use crate::model::JobId;
use crate::place::{Chunk, Shape};

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

impl Scheduler {
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

//! Queues: creating and changing them, and re-keying their jobs when a priority changes.

use super::{Key, Queue, Scheduler};
use crate::error::SchedError;
use crate::model::QueueSpec;

impl Scheduler {
    pub(super) fn set_queue(&mut self, spec: QueueSpec) -> Result<(), SchedError> {
        if spec.name.is_empty() {
            return Err(SchedError::Invalid("empty queue name".into()));
        }
        match self.queue_index.get(&spec.name) {
            Some(&q) => {
                let old_prio = self.queues[usize::from(q)].spec.priority;
                self.queues[usize::from(q)].spec = spec;
                if old_prio != self.queues[usize::from(q)].spec.priority {
                    self.rekey_queue(q);
                }
            }
            None => {
                if self.queues.len() >= usize::from(u16::MAX) {
                    return Err(SchedError::Invalid("too many queues".into()));
                }
                let q = self.queues.len() as u16;
                self.queue_index.insert(spec.name.clone(), q);
                self.queues.push(Queue {
                    name: spec.name.as_str().into(),
                    spec,
                    running: 0,
                });
            }
        }
        Ok(())
    }

    fn rekey_queue(&mut self, q: u16) {
        let prio = self.queues[usize::from(q)].spec.priority;
        let mut seqs: Vec<u64> = self
            .jobs
            .values()
            .filter(|j| j.queue == q)
            .map(|j| j.key.seq)
            .collect();
        seqs.sort_unstable();
        for seq in seqs {
            self.rekey(seq, |k| k.queue_prio = -i64::from(prio));
        }
    }

    fn rekey(&mut self, seq: u64, change: impl FnOnce(&mut Key)) {
        if let Some(job) = self.jobs.get_mut(&seq) {
            let was = self.eligible.remove(&job.key);
            change(&mut job.key);
            if let Some(slot) = was {
                self.eligible.insert(job.key, slot);
            }
        }
    }
}

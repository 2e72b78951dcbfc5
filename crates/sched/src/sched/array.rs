//! Job arrays kept as one record: the lazy cursor over an array's subjob indices.

use std::collections::BTreeSet;

use crate::model::ArraySpec;

/// The subjobs of an array, expanded lazily: a cursor over the range plus the few indices that
/// left the simple "started below the cursor" pattern.
#[derive(Debug, Clone)]
pub(crate) struct ArrayState {
    pub(crate) spec: ArraySpec,
    /// Ordinal (0-based position in the range) of the next index never started.
    pub(crate) next: u32,
    /// Indices started then put back in the queue.
    pub(crate) requeued: BTreeSet<u32>,
    /// Indices deleted before they ran.
    pub(crate) deleted: BTreeSet<u32>,
    /// Indices that ended with a failure.
    pub(crate) failed: BTreeSet<u32>,
    pub(crate) running: u32,
    pub(crate) ended: u32,
    pub(crate) started_any: bool,
}

impl ArrayState {
    pub(super) fn new(spec: ArraySpec) -> Self {
        ArrayState {
            spec,
            next: 0,
            requeued: BTreeSet::new(),
            deleted: BTreeSet::new(),
            failed: BTreeSet::new(),
            running: 0,
            ended: 0,
            started_any: false,
        }
    }

    pub(crate) fn index_at(&self, ordinal: u32) -> u32 {
        self.spec.start + ordinal * self.spec.step
    }

    pub(crate) fn ordinal(&self, index: u32) -> u32 {
        (index - self.spec.start) / self.spec.step
    }

    /// Moves the cursor past deleted indices.
    pub(super) fn skip_deleted(&mut self) {
        while self.next < self.spec.len() && self.deleted.contains(&self.index_at(self.next)) {
            self.next += 1;
        }
    }

    /// The next subjob index to start, if any.
    pub(crate) fn peek(&self) -> Option<u32> {
        if let Some(&i) = self.requeued.first() {
            return Some(i);
        }
        (self.next < self.spec.len()).then(|| self.index_at(self.next))
    }

    /// Marks `index` (the one `peek` gave) as started.
    pub(crate) fn take(&mut self, index: u32) {
        if !self.requeued.remove(&index) {
            self.next += 1;
            self.skip_deleted();
        }
        self.running += 1;
        self.started_any = true;
    }

    /// Whether `index` waits to start.
    pub(crate) fn is_pending(&self, index: u32) -> bool {
        self.requeued.contains(&index)
            || (self.ordinal(index) >= self.next && !self.deleted.contains(&index))
    }

    pub(crate) fn is_done(&self) -> bool {
        self.ended >= self.spec.len()
    }

    /// Whole-array success: every subjob ran and ended with status 0.
    pub(crate) fn ok(&self) -> bool {
        self.failed.is_empty() && self.deleted.is_empty()
    }

    pub(super) fn heap_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + (self.requeued.len() + self.deleted.len() + self.failed.len()) * 8
    }
}

#[cfg(test)]
mod tests {
    use crate::model::{ArraySpec, Event, JobId};
    use crate::sched::tests::{job, sched};
    use crate::sched::JobState;

    #[test]
    fn an_array_of_100000_costs_what_one_job_costs() {
        let mut s = sched();
        s.apply(Event::Submit(Box::new(job(1)))).unwrap();
        let one = s.memory_estimate().job_bytes;
        let mut a = job(2);
        a.array = Some(ArraySpec::new(1, 100_000, 1));
        s.apply(Event::Submit(Box::new(a))).unwrap();
        let both = s.memory_estimate().job_bytes;
        let array = both - one;
        assert!(array < 4 * one, "array {array} bytes, job {one} bytes");
        // Expanding runs the first subjobs only.
        let runs = s.cycle(0);
        assert_eq!(
            runs.len(),
            1 + 3 + 1,
            "job 1, 3 subjobs beside it, a comment on the array"
        );
        assert_eq!(s.job_state(JobId::subjob(2, 4)), Some(JobState::Queued));
        assert_eq!(s.job_state(JobId::subjob(2, 100_001)), None);
    }
}

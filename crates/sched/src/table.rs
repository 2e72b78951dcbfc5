//! Job records in a slab: looked up by sequence number through a small index, or directly by
//! slab position, which cycles use (positions follow submit order, so a cycle walking jobs in
//! priority order mostly reads memory in order).

use crate::sched::Job;
use crate::util::IdMap;

#[derive(Debug, Clone, Default)]
pub(crate) struct JobTable {
    index: IdMap<u64, u32>,
    slab: Vec<Option<Job>>,
    free: Vec<u32>,
}

impl JobTable {
    pub(crate) fn get(&self, seq: &u64) -> Option<&Job> {
        let &i = self.index.get(seq)?;
        self.slab[i as usize].as_ref()
    }

    pub(crate) fn get_mut(&mut self, seq: &u64) -> Option<&mut Job> {
        let &i = self.index.get(seq)?;
        self.slab[i as usize].as_mut()
    }

    pub(crate) fn contains_key(&self, seq: &u64) -> bool {
        self.index.contains_key(seq)
    }

    /// Stores the job, setting `job.slot` to its position, which it returns.
    pub(crate) fn insert(&mut self, seq: u64, mut job: Job) -> u32 {
        let i = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slab.push(None);
                (self.slab.len() - 1) as u32
            }
        };
        job.slot = i;
        self.slab[i as usize] = Some(job);
        self.index.insert(seq, i);
        i
    }

    pub(crate) fn remove(&mut self, seq: &u64) -> Option<Job> {
        let i = self.index.remove(seq)?;
        self.free.push(i);
        self.slab[i as usize].take()
    }

    pub(crate) fn len(&self) -> usize {
        self.index.len()
    }

    /// Positions used so far (the slab's length).
    pub(crate) fn capacity(&self) -> usize {
        self.slab.len()
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &Job> {
        self.slab.iter().flatten()
    }

    pub(crate) fn at(&self, slot: u32) -> Option<&Job> {
        self.slab.get(slot as usize)?.as_ref()
    }

    pub(crate) fn at_mut(&mut self, slot: u32) -> Option<&mut Job> {
        self.slab.get_mut(slot as usize)?.as_mut()
    }
}

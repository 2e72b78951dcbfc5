//! Resources and vnodes: the vnode × resource matrices, custom resource columns, vnode
//! availability, the usable aggregate and the public view of a vnode.

use std::sync::Arc;

use super::{Avail, Node, Scheduler};
use crate::error::SchedError;
use crate::model::{NodeSpec, NodeState, Resources};
use crate::place::{ResIdx, MEM, NCPUS, NGPUS};
use crate::util::IdSet;

/// What a vnode looks like now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    /// Its name.
    pub name: String,
    /// free / job-busy / job-exclusive / offline / down.
    pub state: NodeState,
    /// `resources_available`.
    pub total: Resources,
    /// What is not assigned.
    pub free: Resources,
    /// How many jobs (and subjobs) run on it.
    pub jobs: u32,
}

/// The most CPUs (or GPUs) one vnode may have: ids are handed out from a bitmap.
const MAX_IDS_PER_NODE: u64 = 1 << 20;

impl Scheduler {
    pub(crate) fn stride(&self) -> usize {
        self.res_names.len()
    }

    /// The index of resource `name`, adding a column to the matrices when new.
    fn res_idx(&mut self, name: &str) -> Result<ResIdx, SchedError> {
        if let Some(&i) = self.res_index.get(name) {
            return Ok(i);
        }
        if self.res_names.len() >= usize::from(u16::MAX) {
            return Err(SchedError::Invalid("too many custom resources".into()));
        }
        let old = self.stride();
        let idx = old as ResIdx;
        self.res_names.push(name.into());
        self.res_index.insert(name.to_string(), idx);
        let widen = |m: &Vec<u64>| -> Vec<u64> {
            m.chunks(old.max(1))
                .take(m.len().checked_div(old).unwrap_or(0))
                .flat_map(|row| row.iter().copied().chain(std::iter::once(0)))
                .collect()
        };
        self.total = widen(&self.total);
        self.free = widen(&self.free);
        self.agg_valid = false;
        self.totals_gen = 0;
        Ok(idx)
    }

    /// Sparse amounts of `r`, interning custom names. Zero amounts are left out.
    pub(super) fn sparse(&mut self, r: &Resources) -> Result<Vec<(ResIdx, u64)>, SchedError> {
        let mut out = Vec::new();
        for (idx, amount) in [(NCPUS, r.ncpus), (MEM, r.mem), (NGPUS, r.ngpus)] {
            if amount > 0 {
                out.push((idx, amount));
            }
        }
        for (name, &amount) in &r.custom {
            if amount > 0 {
                let idx = self.res_idx(name)?;
                out.push((idx, amount));
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    /// The public form of sparse amounts.
    pub(crate) fn resources_of(&self, amounts: &[(ResIdx, u64)]) -> Resources {
        let mut r = Resources::default();
        for &(idx, a) in amounts {
            match idx {
                NCPUS => r.ncpus = a,
                MEM => r.mem = a,
                NGPUS => r.ngpus = a,
                _ => {
                    r.custom
                        .insert(self.res_names[usize::from(idx)].to_string(), a);
                }
            }
        }
        r
    }

    fn row_resources(&self, m: &[u64], node: usize) -> Resources {
        let s = self.stride();
        let row: Vec<(ResIdx, u64)> = m[node * s..(node + 1) * s]
            .iter()
            .enumerate()
            .map(|(i, &a)| (i as ResIdx, a))
            .collect();
        self.resources_of(&row)
    }

    pub(super) fn add_node(&mut self, spec: NodeSpec) -> Result<(), SchedError> {
        if self.node_index.contains_key(spec.name.as_str()) {
            return Err(SchedError::DuplicateNode(spec.name));
        }
        if spec.name.is_empty() {
            return Err(SchedError::Invalid("empty vnode name".into()));
        }
        let r = &spec.resources;
        if r.ncpus > MAX_IDS_PER_NODE || r.ngpus > MAX_IDS_PER_NODE {
            return Err(SchedError::Invalid(format!(
                "vnode {}: at most {MAX_IDS_PER_NODE} CPUs and GPUs",
                spec.name
            )));
        }
        let amounts = self.sparse(&spec.resources)?;
        let stride = self.stride();
        let mut row = vec![0u64; stride];
        for (idx, a) in amounts {
            row[usize::from(idx)] = a;
        }
        self.total.extend_from_slice(&row);
        self.free.extend_from_slice(&row);
        self.agg_valid = false;
        let name: Arc<str> = spec.name.as_str().into();
        self.node_index
            .insert(name.clone(), self.nodes.len() as u32);
        self.nodes.push(Node {
            name,
            avail: Avail::Up,
            njobs: 0,
            excl: false,
            cpus: IdSet::full(r.ncpus as u32),
            gpus: IdSet::full(r.ngpus as u32),
        });
        self.node_gen += 1;
        Ok(())
    }

    pub(super) fn set_avail(&mut self, name: &str, avail: Avail) -> Result<(), SchedError> {
        let &i = self
            .node_index
            .get(name)
            .ok_or_else(|| SchedError::UnknownNode(name.to_string()))?;
        self.account(i as usize, false);
        self.nodes[i as usize].avail = avail;
        self.account(i as usize, true);
        Ok(())
    }

    /// Adds (or takes out) a vnode's free amounts to the usable aggregate, if it is usable.
    pub(crate) fn account(&mut self, node: usize, add: bool) {
        let n = &self.nodes[node];
        if !self.agg_valid || n.avail != Avail::Up || n.excl {
            return;
        }
        let stride = self.stride();
        for (r, agg) in self.agg_free.iter_mut().enumerate() {
            let v = self.free[node * stride + r];
            *agg = if add {
                agg.saturating_add(v)
            } else {
                agg.saturating_sub(v)
            };
        }
    }

    /// Rebuilds the usable aggregate when it is not maintained.
    pub(crate) fn ensure_agg(&mut self) {
        if self.agg_valid {
            return;
        }
        let stride = self.stride();
        let mut agg = vec![0u64; stride];
        for (n, node) in self.nodes.iter().enumerate() {
            if node.avail == Avail::Up && !node.excl {
                for (r, a) in agg.iter_mut().enumerate() {
                    *a = a.saturating_add(self.free[n * stride + r]);
                }
            }
        }
        self.agg_free = agg;
        self.agg_valid = true;
    }

    /// A vnode's state and amounts.
    pub fn node(&self, name: &str) -> Option<NodeView> {
        let &i = self.node_index.get(name)?;
        let i = i as usize;
        let n = &self.nodes[i];
        let state = match n.avail {
            Avail::Down => NodeState::Down,
            Avail::Offline => NodeState::Offline,
            Avail::Up if n.excl => NodeState::JobExclusive,
            Avail::Up if self.free[i * self.stride()] == 0 && self.total[i * self.stride()] > 0 => {
                NodeState::JobBusy
            }
            Avail::Up => NodeState::Free,
        };
        Some(NodeView {
            name: n.name.to_string(),
            state,
            total: self.row_resources(&self.total, i),
            free: self.row_resources(&self.free, i),
            jobs: n.njobs,
        })
    }

    /// The vnodes' names, in the order they were added (the order placements try them).
    pub fn node_names(&self) -> impl Iterator<Item = &str> {
        self.nodes.iter().map(|n| &*n.name)
    }
}

#[cfg(test)]
mod tests {
    use crate::model::{ChunkSpec, Config, Event, JobSpec, NodeSpec, QueueSpec, Resources};
    use crate::sched::tests::sched;
    use crate::sched::Scheduler;

    #[test]
    fn custom_resources_are_consumed_by_name() {
        let mut s = sched();
        let node = NodeSpec::new("lic", Resources::cpus(4).with_custom("licenses", 2));
        s.apply(Event::AddNode(node)).unwrap();
        for seq in 1..=3 {
            let j = JobSpec::new(
                seq,
                vec![ChunkSpec::new(
                    1,
                    Resources::cpus(1).with_custom("licenses", 1),
                )],
            );
            s.apply(Event::Submit(Box::new(j))).unwrap();
        }
        let d: Vec<String> = s.cycle(0).iter().map(|d| d.to_string()).collect();
        assert_eq!(
            d,
            [
                "run 1 (lic:ncpus=1:licenses=1) lic:cpus=0",
                "run 2 (lic:ncpus=1:licenses=1) lic:cpus=1",
                "comment 3 Not Running: Insufficient amount of resource: licenses (R: 1 A: 0 T: 2)",
            ]
        );
        assert_eq!(s.node("lic").unwrap().free.custom["licenses"], 0);
    }

    #[test]
    fn ngpus_get_ids() {
        let mut s = Scheduler::new(Config::default());
        s.apply(Event::SetQueue(QueueSpec::new("workq"))).unwrap();
        s.apply(Event::AddNode(NodeSpec::new("g1", Resources::new(8, 0, 4))))
            .unwrap();
        let j = JobSpec::new(1, vec![ChunkSpec::new(2, Resources::new(1, 0, 2))]);
        s.apply(Event::Submit(Box::new(j))).unwrap();
        let d = s.cycle(0);
        assert_eq!(
            d[0].to_string(),
            "run 1 (g1:ncpus=1:ngpus=2)+(g1:ncpus=1:ngpus=2) g1:cpus=0 g1:gpus=0-1 g1:cpus=1 g1:gpus=2-3"
        );
    }
}

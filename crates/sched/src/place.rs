//! Mapping a job's chunks onto vnodes: `place=free|pack|scatter|vscatter` and `excl`, over any
//! view of what is available (now, at the top job's reservation, or on an empty complex).

use std::hash::{Hash, Hasher};

use crate::model::{Arrangement, Place};

/// Index of a resource: 0 `ncpus`, 1 `mem` (kb), 2 `ngpus`, then custom ones by first use.
pub(crate) type ResIdx = u16;
/// `ncpus`.
pub(crate) const NCPUS: ResIdx = 0;
/// `mem`.
pub(crate) const MEM: ResIdx = 1;
/// `ngpus`.
pub(crate) const NGPUS: ResIdx = 2;

/// One `select` term, amounts sparse: `(resource, amount)` sorted by resource, no zeros.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Chunk {
    pub(crate) count: u32,
    pub(crate) amounts: Vec<(ResIdx, u64)>,
}

impl Chunk {
    pub(crate) fn amount(&self, res: ResIdx) -> u64 {
        self.amounts
            .iter()
            .find(|(r, _)| *r == res)
            .map_or(0, |(_, a)| *a)
    }
}

/// A request shape (select + place), interned: jobs with the same request share one.
#[derive(Debug, Clone)]
pub(crate) struct Shape {
    pub(crate) chunks: Vec<Chunk>,
    pub(crate) place: Place,
    /// Sum over all chunks, sparse and sorted.
    pub(crate) total: Vec<(ResIdx, u64)>,
    /// Whether every chunk needs CPUs (lets a search skip vnodes with none free).
    pub(crate) all_need_cpu: bool,
    /// The order terms are placed in: those asking for more kinds of resource, then larger
    /// amounts, first (a greedy search then fails less often where a placement exists).
    pub(crate) order: Vec<u16>,
}

impl PartialEq for Shape {
    fn eq(&self, other: &Self) -> bool {
        self.chunks == other.chunks && self.place == other.place
    }
}

impl Eq for Shape {}

impl Hash for Shape {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.chunks.hash(state);
        self.place.hash(state);
    }
}

impl Shape {
    /// Builds the shape; `None` when a total overflows.
    pub(crate) fn new(chunks: Vec<Chunk>, place: Place) -> Option<Shape> {
        let mut total: Vec<(ResIdx, u64)> = Vec::new();
        for c in &chunks {
            for &(r, a) in &c.amounts {
                let add = a.checked_mul(u64::from(c.count))?;
                match total.iter_mut().find(|(tr, _)| *tr == r) {
                    Some((_, t)) => *t = t.checked_add(add)?,
                    None => total.push((r, add)),
                }
            }
        }
        total.sort_unstable();
        let all_need_cpu = chunks.iter().all(|c| c.amount(NCPUS) > 0);
        let mut order: Vec<u16> = (0..chunks.len() as u16).collect();
        order.sort_by(|&a, &b| {
            let (ca, cb) = (&chunks[usize::from(a)], &chunks[usize::from(b)]);
            cb.amounts
                .len()
                .cmp(&ca.amounts.len())
                .then_with(|| {
                    let amounts = |c: &Chunk| c.amounts.iter().map(|(_, x)| *x).collect::<Vec<_>>();
                    amounts(cb).cmp(&amounts(ca))
                })
                .then(a.cmp(&b))
        });
        Some(Shape {
            chunks,
            place,
            total,
            all_need_cpu,
            order,
        })
    }

    /// Number of chunk instances.
    pub(crate) fn instances(&self) -> u64 {
        self.chunks.iter().map(|c| u64::from(c.count)).sum()
    }
}

/// What a placement may use.
pub(crate) trait View {
    /// Number of vnodes.
    fn len(&self) -> usize;
    /// Stride of the amount matrix (number of resources).
    fn stride(&self) -> usize;
    /// Available amount of `res` on `node`.
    fn avail(&self, node: usize, res: ResIdx) -> u64;
    /// Whether a job (exclusive or not) may use `node` at all.
    fn usable(&self, node: usize, excl: bool) -> bool;
    /// Whether `node` runs no job (needed by exclusive jobs).
    fn idle(&self, node: usize) -> bool;
    /// Vnodes before this one have no CPU available (a search for CPUs may start here).
    fn first_with_cpu(&self) -> usize {
        0
    }
}

/// Scratch space for placements, reused across calls.
#[derive(Debug, Default, Clone)]
pub(crate) struct Placer {
    /// What the job being placed takes on each vnode (vnode × resource).
    used: Vec<u64>,
    /// Vnodes with something in `used`.
    touched: Vec<usize>,
    /// Whether a vnode is in `touched`.
    is_touched: Vec<bool>,
}

impl Placer {
    /// Places `shape` on `view`: for each chunk instance in `select` order, `(term, vnode)`.
    /// `None` when it does not fit.
    pub(crate) fn place(&mut self, shape: &Shape, view: &impl View) -> Option<Vec<(u16, u32)>> {
        self.reset(view.len(), view.stride());
        let result = match shape.place.arrangement {
            Arrangement::Free => self.place_free(shape, view),
            Arrangement::Pack => self.place_pack(shape, view),
            Arrangement::Scatter | Arrangement::Vscatter => self.place_scatter(shape, view),
        };
        self.clear();
        result
    }

    fn reset(&mut self, nodes: usize, stride: usize) {
        let need = nodes.saturating_mul(stride);
        if self.used.len() != need {
            self.used = vec![0; need];
            self.is_touched = vec![false; nodes];
            self.touched.clear();
        }
    }

    fn clear(&mut self) {
        let stride = if self.is_touched.is_empty() {
            0
        } else {
            self.used.len() / self.is_touched.len()
        };
        for &n in &self.touched {
            self.is_touched[n] = false;
            for v in &mut self.used[n * stride..(n + 1) * stride] {
                *v = 0;
            }
        }
        self.touched.clear();
    }

    fn eligible(shape: &Shape, view: &impl View, node: usize) -> bool {
        let excl = shape.place.is_exclusive();
        view.usable(node, excl) && (!excl || view.idle(node))
    }

    /// How many instances of `chunk` still fit on `node`, at most `cap`.
    fn capacity(&self, chunk: &Chunk, view: &impl View, node: usize, cap: u32) -> u32 {
        let stride = view.stride();
        let mut k = u64::from(cap);
        for &(r, a) in &chunk.amounts {
            let used = self.used[node * stride + usize::from(r)];
            let left = view.avail(node, r).saturating_sub(used);
            k = k.min(left / a);
            if k == 0 {
                return 0;
            }
        }
        u32::try_from(k).unwrap_or(cap)
    }

    fn take(&mut self, chunk: &Chunk, stride: usize, node: usize, k: u32) {
        if !self.is_touched[node] {
            self.is_touched[node] = true;
            self.touched.push(node);
        }
        for &(r, a) in &chunk.amounts {
            self.used[node * stride + usize::from(r)] += a * u64::from(k);
        }
    }

    fn start_for(chunk_needs_cpu: bool, view: &impl View) -> usize {
        if chunk_needs_cpu {
            view.first_with_cpu()
        } else {
            0
        }
    }

    fn place_free(&mut self, shape: &Shape, view: &impl View) -> Option<Vec<(u16, u32)>> {
        let mut out = Vec::with_capacity(shape.instances().min(4096) as usize);
        for &ci in &shape.order {
            let chunk = &shape.chunks[usize::from(ci)];
            let mut remaining = chunk.count;
            let mut node = Self::start_for(chunk.amount(NCPUS) > 0, view);
            while remaining > 0 && node < view.len() {
                if Self::eligible(shape, view, node) {
                    let k = self.capacity(chunk, view, node, remaining);
                    if k > 0 {
                        self.take(chunk, view.stride(), node, k);
                        out.extend((0..k).map(|_| (ci, node as u32)));
                        remaining -= k;
                    }
                }
                node += 1;
            }
            if remaining > 0 {
                return None;
            }
        }
        out.sort_by_key(|&(ci, _)| ci);
        Some(out)
    }

    fn place_pack(&mut self, shape: &Shape, view: &impl View) -> Option<Vec<(u16, u32)>> {
        let start = Self::start_for(shape.total.iter().any(|(r, _)| *r == NCPUS), view);
        let node = (start..view.len()).find(|&n| {
            Self::eligible(shape, view, n)
                && shape.total.iter().all(|&(r, a)| view.avail(n, r) >= a)
        })?;
        let mut out = Vec::new();
        for (ci, chunk) in shape.chunks.iter().enumerate() {
            out.extend((0..chunk.count).map(|_| (ci as u16, node as u32)));
        }
        Some(out)
    }

    fn place_scatter(&mut self, shape: &Shape, view: &impl View) -> Option<Vec<(u16, u32)>> {
        let mut out = Vec::new();
        for &ci in &shape.order {
            let chunk = &shape.chunks[usize::from(ci)];
            let mut node = Self::start_for(chunk.amount(NCPUS) > 0, view);
            for _ in 0..chunk.count {
                loop {
                    if node >= view.len() {
                        return None;
                    }
                    let ok = !self.is_touched[node]
                        && Self::eligible(shape, view, node)
                        && self.capacity(chunk, view, node, 1) == 1;
                    node += 1;
                    if ok {
                        break;
                    }
                }
                let n = node - 1;
                self.take(chunk, view.stride(), n, 1);
                out.push((ci, n as u32));
            }
        }
        out.sort_by_key(|&(ci, _)| ci);
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Sharing;

    struct Grid {
        avail: Vec<u64>,
        idle: Vec<bool>,
    }

    impl View for Grid {
        fn len(&self) -> usize {
            self.idle.len()
        }
        fn stride(&self) -> usize {
            1
        }
        fn avail(&self, node: usize, _res: ResIdx) -> u64 {
            self.avail[node]
        }
        fn usable(&self, _node: usize, _excl: bool) -> bool {
            true
        }
        fn idle(&self, node: usize) -> bool {
            self.idle[node]
        }
    }

    fn shape(count: u32, ncpus: u64, arrangement: Arrangement, sharing: Sharing) -> Shape {
        let chunk = Chunk {
            count,
            amounts: vec![(NCPUS, ncpus)],
        };
        Shape::new(vec![chunk], Place::new(arrangement, sharing)).unwrap()
    }

    fn grid(avail: &[u64]) -> Grid {
        Grid {
            avail: avail.to_vec(),
            idle: avail.iter().map(|&a| a == 4).collect(),
        }
    }

    #[test]
    fn free_fills_nodes_in_order() {
        let s = shape(5, 1, Arrangement::Free, Sharing::Shared);
        let p = Placer::default().place(&s, &grid(&[2, 0, 4])).unwrap();
        assert_eq!(p, vec![(0, 0), (0, 0), (0, 2), (0, 2), (0, 2)]);
    }

    #[test]
    fn free_fails_when_short() {
        let s = shape(7, 1, Arrangement::Free, Sharing::Shared);
        assert!(Placer::default().place(&s, &grid(&[2, 0, 4])).is_none());
    }

    #[test]
    fn pack_needs_one_node() {
        let s = shape(3, 1, Arrangement::Pack, Sharing::Shared);
        let p = Placer::default().place(&s, &grid(&[2, 2, 4])).unwrap();
        assert_eq!(p, vec![(0, 2); 3]);
        assert!(Placer::default().place(&s, &grid(&[2, 2, 2])).is_none());
    }

    #[test]
    fn scatter_uses_distinct_nodes() {
        let s = shape(2, 1, Arrangement::Scatter, Sharing::Shared);
        let p = Placer::default().place(&s, &grid(&[4, 0, 1])).unwrap();
        assert_eq!(p, vec![(0, 0), (0, 2)]);
        assert!(Placer::default().place(&s, &grid(&[4, 0, 0])).is_none());
    }

    #[test]
    fn excl_needs_idle_nodes() {
        let s = shape(1, 1, Arrangement::Free, Sharing::Excl);
        let p = Placer::default().place(&s, &grid(&[3, 4])).unwrap();
        assert_eq!(p, vec![(0, 1)]);
    }

    /// Two resources per vnode: cpus then mem.
    struct Two {
        avail: Vec<[u64; 2]>,
    }

    impl View for Two {
        fn len(&self) -> usize {
            self.avail.len()
        }
        fn stride(&self) -> usize {
            2
        }
        fn avail(&self, node: usize, res: ResIdx) -> u64 {
            self.avail[node][usize::from(res)]
        }
        fn usable(&self, _node: usize, _excl: bool) -> bool {
            true
        }
        fn idle(&self, _node: usize) -> bool {
            true
        }
    }

    #[test]
    fn demanding_terms_are_placed_first_but_reported_in_select_order() {
        // select=1:ncpus=2+1:ncpus=2:mem=8: only n1 has the memory. Placing the terms in
        // select order would put the first on n1 and leave the second nowhere.
        let plain = Chunk {
            count: 1,
            amounts: vec![(NCPUS, 2)],
        };
        let big = Chunk {
            count: 1,
            amounts: vec![(NCPUS, 2), (MEM, 8)],
        };
        let s = Shape::new(vec![plain, big], Place::default()).unwrap();
        let view = Two {
            avail: vec![[2, 8], [2, 0]],
        };
        let p = Placer::default().place(&s, &view).unwrap();
        assert_eq!(p, vec![(0, 1), (1, 0)]);
    }

    #[test]
    fn scratch_is_clean_between_calls() {
        let s = shape(4, 1, Arrangement::Free, Sharing::Shared);
        let mut placer = Placer::default();
        let g = grid(&[4]);
        assert!(placer.place(&s, &g).is_some());
        assert!(placer.place(&s, &g).is_some());
    }
}

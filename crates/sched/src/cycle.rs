//! One scheduling cycle: jobs in order (queue priority, job priority, submit time), each started
//! where it fits now; the first that does not fit becomes the top job. Under FIFO nothing after
//! it runs; under EASY backfill it gets a reservation at the earliest time the running jobs'
//! walltimes free enough for it (the shadow time), and a later job starts now only if it ends
//! before the shadow time or uses only what the reservation leaves.
//!
//! Cost: resources only shrink during a cycle, so a request shape that failed once fails for the
//! rest of the cycle and is not placed again (the shape cache); vnodes with no free CPU at the
//! front of the list are skipped; a failing job costs a few lookups.

use std::sync::Arc;

use crate::decision::{ChunkPlacement, Comment, Decision, Reason, Start};
use crate::error::SchedError;
use crate::model::{JobId, Policy};
use crate::place::{Placer, ResIdx, View, NCPUS, NGPUS};
use crate::sched::{fingerprint, Avail, Key, Release, Run, RunChunk, Scheduler, ShapeCache, Slot};

/// What is available now.
struct RealView<'a> {
    s: &'a Scheduler,
    first: usize,
}

impl View for RealView<'_> {
    fn len(&self) -> usize {
        self.s.nodes.len()
    }
    fn stride(&self) -> usize {
        self.s.stride()
    }
    fn avail(&self, node: usize, res: ResIdx) -> u64 {
        self.s.free[node * self.s.stride() + usize::from(res)]
    }
    fn usable(&self, node: usize, _excl: bool) -> bool {
        let n = &self.s.nodes[node];
        n.avail == Avail::Up && !n.excl
    }
    fn idle(&self, node: usize) -> bool {
        self.s.nodes[node].njobs == 0
    }
    fn first_with_cpu(&self) -> usize {
        self.first
    }
}

/// Every vnode empty: what could run on the complex as configured.
struct TotalView<'a> {
    s: &'a Scheduler,
}

impl View for TotalView<'_> {
    fn len(&self) -> usize {
        self.s.nodes.len()
    }
    fn stride(&self) -> usize {
        self.s.stride()
    }
    fn avail(&self, node: usize, res: ResIdx) -> u64 {
        self.s.total[node * self.s.stride() + usize::from(res)]
    }
    fn usable(&self, _node: usize, _excl: bool) -> bool {
        true
    }
    fn idle(&self, _node: usize) -> bool {
        true
    }
}

/// The complex at some future time, as running jobs end.
#[derive(Clone)]
struct ShadowView {
    free: Vec<u64>,
    njobs: Vec<u32>,
    excl: Vec<bool>,
    up: Vec<bool>,
    stride: usize,
    /// An upper bound of what is free on up vnodes, to skip hopeless placements.
    agg: Vec<u64>,
}

impl View for ShadowView {
    fn len(&self) -> usize {
        self.up.len()
    }
    fn stride(&self) -> usize {
        self.stride
    }
    fn avail(&self, node: usize, res: ResIdx) -> u64 {
        self.free[node * self.stride + usize::from(res)]
    }
    fn usable(&self, node: usize, _excl: bool) -> bool {
        self.up[node] && !self.excl[node]
    }
    fn idle(&self, node: usize) -> bool {
        self.njobs[node] == 0
    }
}

/// The top job's reservation.
struct Reservation {
    shadow: u64,
    /// Free now minus what the reservation needs (vnode × resource), minus what long backfilled
    /// jobs took since.
    left: Vec<u64>,
    /// Vnodes the reservation uses.
    reserved: Vec<bool>,
    /// Vnodes the reservation takes whole.
    excl_reserved: Vec<bool>,
}

/// What a job that would run past the shadow time may use.
struct BackfillView<'a> {
    s: &'a Scheduler,
    r: &'a Reservation,
    first: usize,
}

impl View for BackfillView<'_> {
    fn len(&self) -> usize {
        self.s.nodes.len()
    }
    fn stride(&self) -> usize {
        self.s.stride()
    }
    fn avail(&self, node: usize, res: ResIdx) -> u64 {
        let i = node * self.s.stride() + usize::from(res);
        self.s.free[i].min(self.r.left[i])
    }
    fn usable(&self, node: usize, excl: bool) -> bool {
        let n = &self.s.nodes[node];
        let blocked = n.excl || self.r.excl_reserved[node] || (excl && self.r.reserved[node]);
        n.avail == Avail::Up && !blocked
    }
    fn idle(&self, node: usize) -> bool {
        self.s.nodes[node].njobs == 0
    }
    fn first_with_cpu(&self) -> usize {
        self.first
    }
}

/// State of one cycle.
struct Ctx {
    /// Free amounts over usable vnodes, per resource.
    agg_free: Vec<u64>,
    /// Configured amounts over all vnodes.
    agg_total: Vec<u64>,
    /// Largest configured amount on one vnode.
    max_total: Vec<u64>,
    /// Largest free amount on one usable vnode (recomputed when `max_dirty`).
    max_free: Vec<u64>,
    max_dirty: bool,
    /// Vnodes before this one have no free CPU (or are unusable).
    first: usize,
    top_found: bool,
    fifo_blocked: bool,
    res: Option<Reservation>,
    /// Fingerprint of `Not Running: Job would break strict sorted order`.
    strict_fp: u64,
    /// Fingerprint of `Not Running: Job would conflict with reservation or top job`.
    conflict_fp: u64,
    /// Jobs started so far in this cycle.
    starts: u64,
}

impl Scheduler {
    /// Runs one scheduling cycle at time `now` (seconds; never before earlier times) and returns
    /// its decisions: starts, comment changes of waiting jobs, and deletions decided since the
    /// last cycle. The starts are in effect at once: their resources are taken until a
    /// `Finish`, `Requeue` or `Delete` event gives them back.
    pub fn cycle(&mut self, now: u64) -> Vec<Decision> {
        self.now = self.now.max(now);
        let now = self.now;
        self.cycle_no = self.cycle_no.wrapping_add(1);
        if self.cycle_no == 0 {
            self.shape_cache
                .iter_mut()
                .for_each(|c| *c = ShapeCache::default());
            self.cycle_no = 1;
        }
        self.top = None;
        let mut out = std::mem::take(&mut self.deferred);
        self.ensure_agg();
        self.ensure_totals();
        let mut ctx = self.new_ctx();
        let mut keys = std::mem::take(&mut self.scratch_keys);
        keys.clear();
        keys.extend(self.eligible.iter().map(|(k, s)| (*k, *s)));
        for &(key, slot_idx) in &keys {
            let slot = self.slots[slot_idx as usize];
            if !self.config.comments
                && (ctx.fifo_blocked
                    || (ctx.agg_free[usize::from(NCPUS)] == 0 && self.zero_cpu_eligible == 0))
            {
                break;
            }
            if self.settled(&slot, now, &ctx) {
                continue;
            }
            self.consider(key, slot_idx, now, &mut ctx, &mut out);
        }
        self.scratch_keys = keys;
        self.agg_free = std::mem::take(&mut ctx.agg_free);
        out
    }

    /// Rebuilds the configured totals when vnodes or resources changed.
    fn ensure_totals(&mut self) {
        let gen = self.node_gen;
        if self.totals_gen == gen {
            return;
        }
        let stride = self.stride();
        let mut agg_total = vec![0u64; stride];
        let mut max_total = vec![0u64; stride];
        for n in 0..self.nodes.len() {
            for r in 0..stride {
                let t = self.total[n * stride + r];
                agg_total[r] = agg_total[r].saturating_add(t);
                max_total[r] = max_total[r].max(t);
            }
        }
        self.agg_total = agg_total;
        self.max_total = max_total;
        self.totals_gen = gen;
    }

    fn new_ctx(&self) -> Ctx {
        let stride = self.stride();
        #[cfg(debug_assertions)]
        {
            let mut agg = vec![0u64; stride];
            for (n, node) in self.nodes.iter().enumerate() {
                if node.avail == Avail::Up && !node.excl {
                    for (r, a) in agg.iter_mut().enumerate() {
                        *a += self.free[n * stride + r];
                    }
                }
            }
            debug_assert_eq!(agg, self.agg_free, "maintained aggregate drifted");
        }
        Ctx {
            agg_free: self.agg_free.clone(),
            agg_total: self.agg_total.clone(),
            max_total: self.max_total.clone(),
            max_free: vec![0; stride],
            max_dirty: true,
            first: 0,
            top_found: false,
            fifo_blocked: false,
            res: None,
            strict_fp: fingerprint(&Comment::NotRunning(Reason::StrictOrdering)),
            conflict_fp: fingerprint(&Comment::NotRunning(Reason::ReservationConflict)),
            starts: 0,
        }
    }

    /// Whether the caches alone show that the job waits with the comment it already has, so
    /// its record need not be read (the common case: a long queue behind a full complex).
    fn settled(&self, slot: &Slot, now: u64, ctx: &Ctx) -> bool {
        if slot.array {
            return false;
        }
        let want = if ctx.fifo_blocked {
            ctx.strict_fp
        } else {
            let c = &self.shape_cache[slot.shape as usize];
            if !ctx.top_found || (c.never_gen == self.node_gen && c.never) {
                return false;
            }
            let want = if c.now_fail == self.cycle_no {
                c.now_fp
            } else if c.ok_cycle == self.cycle_no
                && c.ok_starts == ctx.starts
                && c.bf_fail == self.cycle_no
                && ctx
                    .res
                    .as_ref()
                    .is_some_and(|r| now.saturating_add(self.slot_walltime(slot)) > r.shadow)
            {
                ctx.conflict_fp
            } else {
                return false;
            };
            if self.limit_blocks(slot) {
                return false;
            }
            want
        };
        !self.config.comments || slot.comment_fp == want
    }

    /// The planning walltime of a job from its slot (as [`Scheduler::walltime_of`]).
    fn slot_walltime(&self, slot: &Slot) -> u64 {
        if slot.walltime != u64::MAX {
            return slot.walltime;
        }
        self.queues[usize::from(slot.queue)]
            .spec
            .default_walltime
            .unwrap_or(self.config.default_walltime)
    }

    /// Whether a running-job limit (other than an array's own) stops the job.
    fn limit_blocks(&self, slot: &Slot) -> bool {
        let q = &self.queues[usize::from(slot.queue)];
        let user = |m: Option<u32>, count: Option<&u32>| {
            m.is_some_and(|m| count.copied().unwrap_or(0) >= m)
        };
        !q.spec.started
            || self.config.max_run.is_some_and(|m| self.run_total >= m)
            || q.spec.max_run.is_some_and(|m| q.running >= m)
            || user(self.config.max_user_run, self.run_by_user.get(&slot.owner))
            || user(
                q.spec.max_user_run,
                self.run_by_queue_user.get(&(slot.queue, slot.owner)),
            )
    }

    /// Considers one job; an array goes on starting subjobs while they fit.
    fn consider(&mut self, key: Key, slot: u32, now: u64, ctx: &mut Ctx, out: &mut Vec<Decision>) {
        loop {
            let still = self
                .jobs
                .at(slot)
                .is_some_and(|j| j.key == key && j.has_pending_work());
            if !still || !self.attempt(slot, now, ctx, out) {
                return;
            }
            if !matches!(self.jobs.at(slot), Some(j) if j.array.is_some()) {
                return;
            }
        }
    }

    /// Tries to start the job (or its next subjob); sets its comment when it waits.
    fn attempt(&mut self, slot: u32, now: u64, ctx: &mut Ctx, out: &mut Vec<Decision>) -> bool {
        let Some(job) = self.jobs.at(slot) else {
            return false;
        };
        let seq = job.key.seq;
        if ctx.fifo_blocked {
            self.note(slot, Comment::NotRunning(Reason::StrictOrdering), out);
            return false;
        }
        if let Some(r) = self.limit_reason(job) {
            self.note(slot, Comment::NotRunning(r), out);
            return false;
        }
        let shape = job.shape as usize;
        let walltime = self.walltime_of(job);
        let id = JobId {
            seq,
            index: job.array.as_ref().and_then(|a| a.peek()),
        };
        if self.never_runs(shape, ctx) {
            let r = self.never_reason(shape, ctx);
            self.note(slot, Comment::CanNeverRun(r), out);
            return false;
        }
        let placed = match self.fit_now(shape, ctx) {
            Ok(p) => p,
            Err(reason) => {
                if !ctx.top_found {
                    ctx.top_found = true;
                    match self.config.policy {
                        Policy::Fifo => ctx.fifo_blocked = true,
                        Policy::Backfill => {
                            ctx.res = self.reserve(shape, now, ctx);
                            self.top = ctx.res.as_ref().map(|r| (id, r.shadow));
                        }
                    }
                }
                self.note(slot, Comment::NotRunning(reason), out);
                return false;
            }
        };
        let (placement, long) = match &ctx.res {
            None => (placed, false),
            Some(r) if now.saturating_add(walltime) <= r.shadow => (placed, false),
            Some(_) => match self.fit_backfill(shape, ctx) {
                Some(p) => (p, true),
                None => {
                    self.note(slot, Comment::NotRunning(Reason::ReservationConflict), out);
                    return false;
                }
            },
        };
        self.start(id, &placement, now, walltime, long, ctx, out);
        true
    }

    /// A running-job limit that stops the job now.
    fn limit_reason(&self, job: &crate::sched::Job) -> Option<Reason> {
        let q = &self.queues[usize::from(job.queue)];
        let count = |m: &crate::util::IdMap<u32, u32>, k: u32| m.get(&k).copied().unwrap_or(0);
        if !q.spec.started {
            return Some(Reason::QueueNotStarted);
        }
        if self.config.max_run.is_some_and(|m| self.run_total >= m) {
            return Some(Reason::ServerJobLimit);
        }
        if self
            .config
            .max_user_run
            .is_some_and(|m| count(&self.run_by_user, job.owner) >= m)
        {
            return Some(Reason::ServerUserLimit);
        }
        if q.spec.max_run.is_some_and(|m| q.running >= m) {
            return Some(Reason::QueueJobLimit {
                queue: q.name.clone(),
            });
        }
        if q.spec.max_user_run.is_some_and(|m| {
            self.run_by_queue_user
                .get(&(job.queue, job.owner))
                .copied()
                .unwrap_or(0)
                >= m
        }) {
            return Some(Reason::QueueUserLimit {
                queue: q.name.clone(),
            });
        }
        if let Some(a) = &job.array {
            if a.spec.max_running.is_some_and(|m| a.running >= m) {
                return Some(Reason::MaxRunSubjobs);
            }
        }
        None
    }

    /// Sets a waiting job's comment, reporting it when it changed.
    fn note(&mut self, slot: u32, comment: Comment, out: &mut Vec<Decision>) {
        if !self.config.comments {
            return;
        }
        if let Some(job) = self.jobs.at_mut(slot) {
            let seq = job.key.seq;
            if job.comment.as_deref() != Some(&comment) {
                self.slots[job.slot as usize].comment_fp = fingerprint(&comment);
                job.comment = Some(Box::new(comment.clone()));
                out.push(Decision::Comment {
                    job: JobId::job(seq),
                    comment,
                });
            }
        }
    }

    fn res_name(&self, r: ResIdx) -> Arc<str> {
        self.res_names[usize::from(r)].clone()
    }

    fn max_free(&self, ctx: &mut Ctx, r: ResIdx) -> u64 {
        if ctx.max_dirty {
            let stride = self.stride();
            ctx.max_free.iter_mut().for_each(|m| *m = 0);
            for (n, node) in self.nodes.iter().enumerate() {
                if node.avail == Avail::Up && !node.excl {
                    for (k, m) in ctx.max_free.iter_mut().enumerate() {
                        *m = (*m).max(self.free[n * stride + k]);
                    }
                }
            }
            ctx.max_dirty = false;
        }
        ctx.max_free[usize::from(r)]
    }

    /// Whether the shape cannot run even on the whole complex, empty (cached per vnode set).
    fn never_runs(&mut self, shape: usize, ctx: &Ctx) -> bool {
        let gen = self.node_gen;
        if self.shape_cache[shape].never_gen == gen {
            return self.shape_cache[shape].never;
        }
        let s = &self.shapes[shape];
        let fits_totals = s
            .total
            .iter()
            .all(|&(r, a)| ctx.agg_total[usize::from(r)] >= a);
        let never = !fits_totals || {
            let mut placer = std::mem::take(&mut self.placer);
            let placed = placer.place(&self.shapes[shape], &TotalView { s: self });
            self.placer = placer;
            placed.is_none()
        };
        self.shape_cache[shape].never_gen = gen;
        self.shape_cache[shape].never = never;
        never
    }

    fn never_reason(&self, shape: usize, ctx: &mut Ctx) -> Reason {
        let s = &self.shapes[shape];
        for &(r, a) in &s.total {
            if ctx.agg_total[usize::from(r)] < a {
                return Reason::InsufficientResource {
                    resource: self.res_name(r),
                    requested: a,
                    available: ctx.agg_free[usize::from(r)],
                    total: ctx.agg_total[usize::from(r)],
                };
            }
        }
        for c in &s.chunks {
            for &(r, a) in &c.amounts {
                if ctx.max_total[usize::from(r)] < a {
                    return Reason::InsufficientResource {
                        resource: self.res_name(r),
                        requested: a,
                        available: self.max_free(ctx, r),
                        total: ctx.max_total[usize::from(r)],
                    };
                }
            }
        }
        Reason::NoTotalNodes
    }

    fn advance_first(&self, ctx: &mut Ctx) {
        let stride = self.stride();
        while ctx.first < self.nodes.len() {
            let n = &self.nodes[ctx.first];
            let usable = n.avail == Avail::Up && !n.excl;
            if usable && self.free[ctx.first * stride + usize::from(NCPUS)] > 0 {
                break;
            }
            ctx.first += 1;
        }
    }

    /// Places the shape on what is free now, or says why it does not fit.
    fn fit_now(&mut self, shape: usize, ctx: &mut Ctx) -> Result<Vec<(u16, u32)>, Reason> {
        let cache = &self.shape_cache[shape];
        if cache.now_fail == self.cycle_no {
            if let Some(r) = &cache.now_reason {
                return Err(r.clone());
            }
        }
        let s = &self.shapes[shape];
        for &(r, a) in &s.total {
            if ctx.agg_free[usize::from(r)] < a {
                let reason = Reason::InsufficientResource {
                    resource: self.res_name(r),
                    requested: a,
                    available: ctx.agg_free[usize::from(r)],
                    total: ctx.agg_total[usize::from(r)],
                };
                return Err(self.fail_now(shape, reason));
            }
        }
        self.advance_first(ctx);
        let mut placer = std::mem::take(&mut self.placer);
        let placed = placer.place(
            &self.shapes[shape],
            &RealView {
                s: self,
                first: ctx.first,
            },
        );
        self.placer = placer;
        match placed {
            Some(p) => {
                let c = &mut self.shape_cache[shape];
                c.ok_cycle = self.cycle_no;
                c.ok_starts = ctx.starts;
                Ok(p)
            }
            None => {
                let reason = self.diagnose(shape, ctx);
                Err(self.fail_now(shape, reason))
            }
        }
    }

    fn fail_now(&mut self, shape: usize, reason: Reason) -> Reason {
        let c = &mut self.shape_cache[shape];
        c.now_fail = self.cycle_no;
        c.now_fp = fingerprint(&Comment::NotRunning(reason.clone()));
        c.now_reason = Some(reason.clone());
        reason
    }

    /// Why a shape whose totals are free does not fit: a chunk larger than any vnode's free
    /// amount, else not enough vnodes.
    fn diagnose(&self, shape: usize, ctx: &mut Ctx) -> Reason {
        let s = &self.shapes[shape];
        if !s.place.is_exclusive() {
            for c in &s.chunks {
                for &(r, a) in &c.amounts {
                    let max = self.max_free(ctx, r);
                    if max < a {
                        return Reason::InsufficientResource {
                            resource: self.res_name(r),
                            requested: a,
                            available: max,
                            total: ctx.max_total[usize::from(r)],
                        };
                    }
                }
            }
        }
        Reason::NoFreeNodes
    }

    /// Places a job that would still run at the shadow time on what the reservation leaves.
    fn fit_backfill(&mut self, shape: usize, ctx: &mut Ctx) -> Option<Vec<(u16, u32)>> {
        if self.shape_cache[shape].bf_fail == self.cycle_no {
            return None;
        }
        let res = ctx.res.as_ref()?;
        let mut placer = std::mem::take(&mut self.placer);
        let placed = placer.place(
            &self.shapes[shape],
            &BackfillView {
                s: self,
                r: res,
                first: ctx.first,
            },
        );
        self.placer = placer;
        if placed.is_none() {
            self.shape_cache[shape].bf_fail = self.cycle_no;
        }
        placed
    }

    /// The top job's reservation: the earliest planned end of running jobs after which the shape
    /// fits. Whether it fits only improves as jobs end, so the search probes end times 1, 2, 4,
    /// 8, … ends ahead, then bisects: O(log n) placements instead of one per running job.
    fn reserve(&mut self, shape: usize, now: u64, _ctx: &Ctx) -> Option<Reservation> {
        let stride = self.stride();
        let up: Vec<bool> = self.nodes.iter().map(|n| n.avail == Avail::Up).collect();
        let mut agg = vec![0u64; stride];
        for (n, _) in up.iter().enumerate().filter(|(_, &u)| u) {
            for (r, a) in agg.iter_mut().enumerate() {
                *a = a.saturating_add(self.free[n * stride + r]);
            }
        }
        let mut view = ShadowView {
            free: self.free.clone(),
            njobs: self.nodes.iter().map(|n| n.njobs).collect(),
            excl: self.nodes.iter().map(|n| n.excl).collect(),
            up,
            stride,
            agg,
        };
        // Running jobs by planned end, read only as far as the search goes; `bounds[g]` is one
        // past the last entry of the g-th distinct end time.
        let mut source = self.ends.iter();
        let mut ends: Vec<((u64, JobId), Release)> = Vec::new();
        let mut bounds: Vec<usize> = Vec::new();
        let mut exhausted = false;
        let mut placer = std::mem::take(&mut self.placer);
        // Exponential phase: `lo` is a group known not to fit (None: now), `lo_view` its view.
        let mut lo: Option<usize> = None;
        let mut lo_view: Option<ShadowView> = None;
        let mut applied = 0usize;
        let mut g = 0usize;
        let found = loop {
            while bounds.len() <= g && !exhausted {
                match source.next() {
                    Some((k, r)) => {
                        if ends.last().is_some_and(|e| e.0 .0 != k.0) {
                            bounds.push(ends.len());
                        }
                        ends.push((*k, *r));
                    }
                    None => {
                        if !ends.is_empty() {
                            bounds.push(ends.len());
                        }
                        exhausted = true;
                    }
                }
            }
            let Some(last) = bounds.len().checked_sub(1) else {
                break None;
            };
            let target = g.min(last);
            self.release_range(&ends[applied..bounds[target]], &mut view);
            applied = bounds[target];
            if let Some(p) = self.try_shadow(&mut placer, shape, &view) {
                break Some((target, p));
            }
            if exhausted && target == last {
                break None;
            }
            lo = Some(target);
            lo_view = Some(view.clone());
            g = 2 * g + 1;
        };
        let Some((mut hi, mut placement)) = found else {
            self.placer = placer;
            return None;
        };
        // Bisection between `lo` (does not fit) and `hi` (fits).
        loop {
            let from = lo.map_or(0, |l| l + 1);
            if from >= hi {
                break;
            }
            let mid = from + (hi - from) / 2;
            let Some(mut v) = lo_view.clone() else {
                break;
            };
            let start = lo.map_or(0, |l| bounds[l]);
            self.release_range(&ends[start..bounds[mid]], &mut v);
            match self.try_shadow(&mut placer, shape, &v) {
                Some(p) => {
                    hi = mid;
                    placement = p;
                }
                None => {
                    lo = Some(mid);
                    lo_view = Some(v);
                }
            }
        }
        self.placer = placer;
        let found = Some((ends[bounds[hi] - 1].0 .0.max(now), placement));
        let (shadow, placement) = found?;
        let s = &self.shapes[shape];
        let mut left = self.free.clone();
        let mut reserved = vec![false; self.nodes.len()];
        let mut excl_reserved = vec![false; self.nodes.len()];
        for &(term, node) in &placement {
            let n = node as usize;
            reserved[n] = true;
            excl_reserved[n] = s.place.is_exclusive();
            for &(r, a) in &s.chunks[usize::from(term)].amounts {
                let i = n * stride + usize::from(r);
                left[i] = left[i].saturating_sub(a);
            }
        }
        Some(Reservation {
            shadow,
            left,
            reserved,
            excl_reserved,
        })
    }

    /// Applies the ends of these running jobs to a future view.
    fn release_range(&self, ends: &[((u64, JobId), Release)], view: &mut ShadowView) {
        for ((_, id), rel) in ends {
            if rel.node == u32::MAX {
                if let Some(run) = self.running.get(id) {
                    self.release_into(run, view);
                }
                continue;
            }
            let n = rel.node as usize;
            for (r, &a) in rel.amounts.iter().enumerate() {
                view.free[n * view.stride + r] += a;
                if view.up[n] {
                    view.agg[r] = view.agg[r].saturating_add(a);
                }
            }
            view.njobs[n] = view.njobs[n].saturating_sub(1);
            if rel.excl {
                view.excl[n] = false;
            }
        }
    }

    /// Places the shape on a future view, if its totals can fit there at all.
    fn try_shadow(
        &self,
        placer: &mut Placer,
        shape: usize,
        view: &ShadowView,
    ) -> Option<Vec<(u16, u32)>> {
        let s = &self.shapes[shape];
        if !s.total.iter().all(|&(r, a)| view.agg[usize::from(r)] >= a) {
            return None;
        }
        placer.place(s, view)
    }

    fn release_into(&self, run: &Run, view: &mut ShadowView) {
        let stride = self.stride();
        let s = &self.shapes[run.shape as usize];
        let mut seen: Vec<u32> = Vec::new();
        for c in &run.chunks {
            let n = c.node as usize;
            for &(r, a) in &s.chunks[usize::from(c.term)].amounts {
                view.free[n * stride + usize::from(r)] += a;
                if view.up[n] {
                    view.agg[usize::from(r)] = view.agg[usize::from(r)].saturating_add(a);
                }
            }
            if !seen.contains(&c.node) {
                seen.push(c.node);
                view.njobs[n] = view.njobs[n].saturating_sub(1);
                if run.excl {
                    view.excl[n] = false;
                }
            }
        }
    }

    /// The inline release of a run: compact when it holds one vnode and only the built-in
    /// resources.
    fn release_of(&self, shape: u32, chunks: &[RunChunk], excl: bool) -> Release {
        let s = &self.shapes[shape as usize];
        let one_node = chunks.iter().all(|c| c.node == chunks[0].node);
        let builtin = s.total.iter().all(|&(r, _)| usize::from(r) < 3);
        if chunks.is_empty() || !one_node || !builtin {
            return Release {
                node: u32::MAX,
                excl,
                amounts: [0; 3],
            };
        }
        let mut amounts = [0u64; 3];
        for &(r, a) in &s.total {
            amounts[usize::from(r)] = a;
        }
        Release {
            node: chunks[0].node,
            excl,
            amounts,
        }
    }

    /// Starts job or subjob `id` on `placement` (chunk term and vnode, in select order),
    /// started and confirmed at `at`: a run the server found going on after a restart.
    pub(crate) fn place_running(
        &mut self,
        id: JobId,
        placement: &[(u16, u32)],
        at: u64,
    ) -> Result<(), SchedError> {
        let walltime = self
            .jobs
            .get(&id.seq)
            .map_or(self.config.default_walltime, |job| self.walltime_of(job));
        self.ensure_agg();
        self.ensure_totals();
        let mut ctx = self.new_ctx();
        let mut out = Vec::new();
        self.start(id, placement, at, walltime, false, &mut ctx, &mut out);
        self.agg_free = std::mem::take(&mut ctx.agg_free);
        self.confirm(id, at)
    }

    /// Takes the resources, records the run, and reports the start.
    #[allow(clippy::too_many_arguments)]
    fn start(
        &mut self,
        id: JobId,
        placement: &[(u16, u32)],
        now: u64,
        walltime: u64,
        long: bool,
        ctx: &mut Ctx,
        out: &mut Vec<Decision>,
    ) {
        let Some(job) = self.jobs.get(&id.seq) else {
            return;
        };
        let (shape_id, queue, owner) = (job.shape, job.queue, job.owner);
        let stride = self.stride();
        let excl = self.shapes[shape_id as usize].place.is_exclusive();
        let mut chunks = Vec::with_capacity(placement.len());
        let mut shown = Vec::with_capacity(placement.len());
        let mut seen: Vec<u32> = Vec::new();
        for &(term, node) in placement {
            let n = node as usize;
            let chunk = &self.shapes[shape_id as usize].chunks[usize::from(term)];
            for &(r, a) in &chunk.amounts {
                let i = n * stride + usize::from(r);
                self.free[i] -= a;
                ctx.agg_free[usize::from(r)] = ctx.agg_free[usize::from(r)].saturating_sub(a);
                if long {
                    if let Some(res) = ctx.res.as_mut() {
                        res.left[i] = res.left[i].saturating_sub(a);
                    }
                }
            }
            let cpus = self.nodes[n].cpus.take(chunk.amount(NCPUS));
            let gpus = self.nodes[n].gpus.take(chunk.amount(NGPUS));
            shown.push(ChunkPlacement {
                vnode: self.nodes[n].name.clone(),
                resources: self.resources_of(&chunk.amounts),
                cpus: cpus.clone(),
                gpus: gpus.clone(),
            });
            chunks.push(RunChunk {
                node,
                term,
                cpus,
                gpus,
            });
            if !seen.contains(&node) {
                seen.push(node);
                self.nodes[n].njobs += 1;
            }
        }
        if excl {
            for &node in &seen {
                let n = node as usize;
                self.nodes[n].excl = true;
                for r in 0..stride {
                    ctx.agg_free[r] = ctx.agg_free[r].saturating_sub(self.free[n * stride + r]);
                }
            }
        }
        ctx.max_dirty = true;
        ctx.starts += 1;
        let end = now.saturating_add(walltime);
        self.ends
            .insert((end, id), self.release_of(shape_id, &chunks, excl));
        self.running.insert(
            id,
            Run {
                start: now,
                end,
                shape: shape_id,
                excl,
                confirmed: false,
                chunks,
            },
        );
        if let Some(job) = self.jobs.get_mut(&id.seq) {
            match (&mut job.array, id.index) {
                (Some(a), Some(i)) => a.take(i),
                _ => job.started = true,
            }
            job.comment = None;
        }
        self.count_running(queue, owner, true);
        self.refresh(id.seq);
        out.push(Decision::Run(Start {
            job: id,
            chunks: shown,
            exclusive: excl,
        }));
        self.started(id.seq);
    }
}

#[cfg(test)]
mod tests {
    use crate::model::{ChunkSpec, Config, Event, JobId, JobSpec, NodeSpec, QueueSpec, Resources};
    use crate::{Decision, Scheduler};

    #[test]
    fn a_restored_job_holds_its_vnodes_until_it_finishes() {
        let mut s = Scheduler::new(Config::default());
        for name in ["n1", "n2"] {
            s.apply(Event::AddNode(NodeSpec::new(name, Resources::cpus(1))))
                .unwrap();
        }
        s.apply(Event::SetQueue(QueueSpec::new("workq"))).unwrap();
        let one_cpu = || vec![ChunkSpec::new(1, Resources::cpus(1))];
        let running = JobSpec::new(1, one_cpu());
        s.apply(Event::Restore {
            job: Box::new(running),
            vnodes: vec!["n2".into()],
            at: 5,
        })
        .unwrap();
        for seq in [2, 3] {
            s.apply(Event::Submit(Box::new(JobSpec::new(seq, one_cpu()))))
                .unwrap();
        }
        let starts: Vec<(u64, String)> = s
            .cycle(10)
            .into_iter()
            .filter_map(|d| match d {
                Decision::Run(start) => Some((start.job.seq, start.chunks[0].vnode.to_string())),
                _ => None,
            })
            .collect();
        assert_eq!(
            starts,
            [(2, "n1".to_string())],
            "n2 is taken by the restored job"
        );
        s.apply(Event::Finish {
            job: JobId::job(1),
            exit_status: 0,
        })
        .unwrap();
        let next: Vec<u64> = s
            .cycle(11)
            .into_iter()
            .filter_map(|d| match d {
                Decision::Run(start) => Some(start.job.seq),
                _ => None,
            })
            .collect();
        assert_eq!(next, [3]);
        let bad = JobSpec::new(4, one_cpu());
        let refused = s.apply(Event::Restore {
            job: Box::new(bad),
            vnodes: vec!["n1".into(), "n2".into()],
            at: 5,
        });
        assert!(refused.is_err());
        assert_eq!(s.job_state(JobId::job(4)), None);
    }

    #[test]
    fn reservation_is_the_first_end_after_which_the_top_job_fits() {
        let mut s = Scheduler::new(Config::default());
        s.apply(Event::SetQueue(QueueSpec::new("workq"))).unwrap();
        for n in ["n1", "n2"] {
            s.apply(Event::AddNode(NodeSpec::new(n, Resources::cpus(4))))
                .unwrap();
        }
        // Eight one-cpu jobs fill n1 then n2, ending at these times.
        let ends = [10, 20, 30, 40, 5, 50, 60, 70];
        for (i, w) in ends.iter().enumerate() {
            let mut j = JobSpec::new(i as u64 + 1, vec![ChunkSpec::new(1, Resources::cpus(1))]);
            j.walltime = Some(*w);
            s.apply(Event::Submit(Box::new(j))).unwrap();
        }
        s.cycle(0);
        let mut top = JobSpec::new(100, vec![ChunkSpec::new(1, Resources::cpus(4))]);
        top.walltime = Some(10);
        s.apply(Event::Submit(Box::new(top))).unwrap();
        s.cycle(1);
        // n1 is whole again at 40 (n2 only at 70), although 4 cpus are free in all at 30.
        assert_eq!(s.top_job_estimate(), Some((JobId::job(100), 40)));
    }
}

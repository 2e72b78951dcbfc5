//! Property tests: random complexes and random event sequences, checked against invariants
//! computed independently from the decisions.

use std::collections::{BTreeMap, BTreeSet};

use hpcbox_sched::{
    Arrangement, ArraySpec, ChunkSpec, Config, Decision, DependKind, Dependency, Event, JobId,
    JobSpec, NodeSpec, Place, Policy, QueueSpec, Resources, Scheduler, Sharing, Start,
};
use proptest::prelude::*;

const GB: u64 = 1024 * 1024;

#[derive(Debug, Clone)]
struct NewJob {
    terms: Vec<(u32, u64, u64)>,
    arrangement: u8,
    excl: bool,
    walltime: u64,
    priority: i32,
    array: Option<(u32, u32, u32, Option<u32>)>,
    dep: Option<(u8, u64)>,
    hold: bool,
}

#[derive(Debug, Clone)]
enum Op {
    Submit(NewJob),
    Cycle(u64),
    Finish(usize, i32),
    Requeue(usize),
    Delete(u64),
    Hold(u64),
    Release(u64),
    Node(usize, u8),
}

fn new_job() -> impl Strategy<Value = NewJob> {
    (
        prop::collection::vec((1u32..=3, 0u64..=3, 0u64..=4), 1..=2),
        0u8..4,
        prop::bool::weighted(0.2),
        1u64..=100,
        -2i32..=2,
        prop::option::weighted(0.2, (0u32..5, 0u32..6, 1u32..3, prop::option::of(1u32..3))),
        prop::option::weighted(0.3, (0u8..8, 1u64..6)),
        prop::bool::weighted(0.1),
    )
        .prop_map(
            |(terms, arrangement, excl, walltime, priority, array, dep, hold)| NewJob {
                terms,
                arrangement,
                excl,
                walltime,
                priority,
                array,
                dep,
                hold,
            },
        )
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => new_job().prop_map(Op::Submit),
        3 => (0u64..20).prop_map(Op::Cycle),
        3 => (0usize..64, 0i32..2).prop_map(|(i, s)| Op::Finish(i, s)),
        1 => (0usize..64).prop_map(Op::Requeue),
        1 => (1u64..40).prop_map(Op::Delete),
        1 => (1u64..40).prop_map(Op::Hold),
        1 => (1u64..40).prop_map(Op::Release),
        1 => (0usize..4, 0u8..3).prop_map(|(n, s)| Op::Node(n, s)),
    ]
}

fn cluster() -> impl Strategy<Value = Vec<(u64, u64)>> {
    prop::collection::vec((1u64..=8, 1u64..=8), 1..=4)
}

const KINDS: [DependKind; 8] = [
    DependKind::After,
    DependKind::AfterOk,
    DependKind::AfterNotOk,
    DependKind::AfterAny,
    DependKind::Before,
    DependKind::BeforeOk,
    DependKind::BeforeNotOk,
    DependKind::BeforeAny,
];

#[derive(Default)]
struct ArrayTrack {
    indices: Vec<u32>,
    started: BTreeSet<u32>,
    ended: BTreeMap<u32, bool>,
}

impl ArrayTrack {
    fn all_ended(&self) -> bool {
        self.indices.iter().all(|i| self.ended.contains_key(i))
    }

    fn end_rest(&mut self) {
        for &i in &self.indices {
            self.ended.entry(i).or_insert(false);
        }
    }
}

/// What the test knows, from the events it sent and the decisions it got.
#[derive(Default)]
struct Model {
    nodes: Vec<(String, u64, u64)>,
    up: Vec<bool>,
    running: BTreeMap<JobId, Start>,
    /// Single jobs: ever started, and how they ended.
    started: BTreeSet<u64>,
    ended: BTreeMap<u64, bool>,
    /// Arrays: every index, and which started and how they ended.
    arrays: BTreeMap<u64, ArrayTrack>,
    /// after-kind conditions each job must meet before it starts.
    conditions: BTreeMap<u64, Vec<Dependency>>,
    next_seq: u64,
    now: u64,
}

impl Model {
    fn end(&mut self, seq: u64, ok: bool) {
        match self.arrays.get_mut(&seq) {
            Some(a) => a.end_rest(),
            None => {
                self.ended.entry(seq).or_insert(ok);
            }
        }
    }

    fn allowed(&self, cond: &Dependency) -> bool {
        let seq = cond.job.seq;
        if let Some(a) = self.arrays.get(&seq) {
            let all_ok = a.ended.values().all(|&ok| ok);
            return match cond.kind {
                DependKind::After => !a.started.is_empty(),
                DependKind::AfterOk => a.all_ended() && all_ok,
                DependKind::AfterNotOk => a.all_ended() && !all_ok,
                DependKind::AfterAny => a.all_ended(),
                _ => unreachable!("only after-kinds are recorded"),
            };
        }
        match cond.kind {
            DependKind::After => self.started.contains(&seq),
            DependKind::AfterOk => self.ended.get(&seq) == Some(&true),
            DependKind::AfterNotOk => self.ended.get(&seq) == Some(&false),
            DependKind::AfterAny => self.ended.contains_key(&seq),
            _ => unreachable!("only after-kinds are recorded"),
        }
    }
}

fn spec_of(m: &mut Model, j: &NewJob) -> JobSpec {
    m.next_seq += 1;
    let seq = m.next_seq;
    let select = j
        .terms
        .iter()
        .map(|&(c, n, g)| ChunkSpec::new(c, Resources::new(n, g * GB, 0)))
        .collect();
    let mut spec = JobSpec::new(seq, select);
    let arrangement = [
        Arrangement::Free,
        Arrangement::Pack,
        Arrangement::Scatter,
        Arrangement::Vscatter,
    ][usize::from(j.arrangement)];
    let sharing = if j.excl {
        Sharing::Excl
    } else {
        Sharing::Shared
    };
    spec.place = Place::new(arrangement, sharing);
    spec.walltime = Some(j.walltime);
    spec.priority = j.priority;
    spec.submit_time = m.now;
    spec.hold = j.hold;
    spec.array = j.array.map(|(start, len, step, max)| ArraySpec {
        max_running: max,
        ..ArraySpec::new(start, start + len * step, step)
    });
    if let Some((k, back)) = j.dep {
        if back < seq {
            spec.depend = vec![Dependency::new(
                KINDS[usize::from(k)],
                JobId::job(seq - back),
            )];
        }
    }
    spec
}

/// Checks one start against the model, then records it.
fn check_start(m: &mut Model, s: &Start, shapes: &BTreeMap<u64, JobSpec>) -> Result<(), String> {
    let spec = &shapes[&s.job.seq];
    if let Some(conds) = m.conditions.get(&s.job.seq) {
        for c in conds {
            if !m.allowed(c) {
                return Err(format!("{} started before {:?}", s.job, c));
            }
        }
    }
    let vnodes: Vec<&str> = s.chunks.iter().map(|c| &*c.vnode).collect();
    let n_chunks: u32 = spec.select.iter().map(|c| c.count).sum();
    if vnodes.len() != n_chunks as usize {
        return Err(format!(
            "{}: {} chunks placed, {} asked",
            s.job,
            vnodes.len(),
            n_chunks
        ));
    }
    match spec.place.arrangement {
        Arrangement::Pack if vnodes.iter().any(|v| *v != vnodes[0]) => {
            return Err(format!("{}: pack over several vnodes", s.job))
        }
        Arrangement::Scatter | Arrangement::Vscatter
            if vnodes.iter().collect::<BTreeSet<_>>().len() != vnodes.len() =>
        {
            return Err(format!("{}: scatter reused a vnode", s.job))
        }
        _ => {}
    }
    for c in &s.chunks {
        let i = m.nodes.iter().position(|n| *n.0 == *c.vnode).unwrap();
        if !m.up[i] {
            return Err(format!("{} started on {} which is not up", s.job, c.vnode));
        }
    }
    match s.job.index {
        None => {
            m.started.insert(s.job.seq);
        }
        Some(i) => {
            m.arrays.get_mut(&s.job.seq).unwrap().started.insert(i);
        }
    }
    m.running.insert(s.job, s.clone());
    Ok(())
}

/// No vnode oversubscribed, CPU ids disjoint, exclusive jobs alone, and the scheduler's free
/// amounts agree with the starts it reported.
fn check_nodes(m: &Model, s: &Scheduler) -> Result<(), String> {
    for (name, ncpus, mem_gb) in &m.nodes {
        let mut cpus_used = 0u64;
        let mut mem_used = 0u64;
        let mut ids = BTreeSet::new();
        let mut jobs = BTreeSet::new();
        let mut excl = false;
        for (id, st) in &m.running {
            for c in st.chunks.iter().filter(|c| *c.vnode == **name) {
                cpus_used += c.resources.ncpus;
                mem_used += c.resources.mem;
                if c.cpus.len() as u64 != c.resources.ncpus {
                    return Err(format!(
                        "{id}: {} cpu ids for ncpus={}",
                        c.cpus.len(),
                        c.resources.ncpus
                    ));
                }
                for &cpu in &c.cpus {
                    if u64::from(cpu) >= *ncpus || !ids.insert(cpu) {
                        return Err(format!(
                            "{id}: cpu id {cpu} on {name} out of range or shared"
                        ));
                    }
                }
                jobs.insert(*id);
                excl |= st.exclusive;
            }
        }
        if cpus_used > *ncpus || mem_used > mem_gb * GB {
            return Err(format!(
                "{name} oversubscribed: {cpus_used} cpus, {mem_used} kb"
            ));
        }
        if excl && jobs.len() > 1 {
            return Err(format!("{name}: exclusive job shares it with {jobs:?}"));
        }
        let v = s.node(name).unwrap();
        if v.free.ncpus != ncpus - cpus_used || v.free.mem != mem_gb * GB - mem_used {
            return Err(format!("{name}: scheduler free {:?} disagrees", v.free));
        }
    }
    Ok(())
}

fn setup(nodes: &[(u64, u64)], policy: Policy) -> (Scheduler, Model) {
    let mut s = Scheduler::new(Config {
        policy,
        ..Config::default()
    });
    s.apply(Event::SetQueue(QueueSpec::new("workq"))).unwrap();
    let mut m = Model::default();
    for (i, &(c, g)) in nodes.iter().enumerate() {
        let name = format!("n{}", i + 1);
        s.apply(Event::AddNode(NodeSpec::new(
            &name,
            Resources::new(c, g * GB, 0),
        )))
        .unwrap();
        m.nodes.push((name, c, g));
        m.up.push(true);
    }
    (s, m)
}

/// Runs the operations, checking after every cycle; returns every decision in order.
fn drive(nodes: &[(u64, u64)], policy: Policy, ops: &[Op]) -> Result<Vec<Decision>, String> {
    let (mut s, mut m) = setup(nodes, policy);
    let mut specs: BTreeMap<u64, JobSpec> = BTreeMap::new();
    let mut all = Vec::new();
    for op in ops {
        match op {
            Op::Submit(j) => {
                let spec = spec_of(&mut m, j);
                if s.apply(Event::Submit(Box::new(spec.clone()))).is_ok() {
                    if let Some(a) = spec.array {
                        let track = ArrayTrack {
                            indices: a.indices().collect(),
                            ..ArrayTrack::default()
                        };
                        m.arrays.insert(spec.seq, track);
                    }
                    for d in &spec.depend {
                        match d.kind.inverse() {
                            Some(after) => m
                                .conditions
                                .entry(d.job.seq)
                                .or_default()
                                .push(Dependency::new(after, JobId::job(spec.seq))),
                            None => m.conditions.entry(spec.seq).or_default().push(*d),
                        }
                    }
                    specs.insert(spec.seq, spec);
                }
            }
            Op::Cycle(dt) => {
                m.now += dt;
                let ds = s.cycle(m.now);
                for d in &ds {
                    match d {
                        Decision::Run(st) => check_start(&mut m, st, &specs)?,
                        Decision::Delete { job, .. } => m.end(job.seq, false),
                        Decision::Comment { .. } => {}
                    }
                }
                check_nodes(&m, &s)?;
                all.extend(ds);
            }
            Op::Finish(i, status) => {
                if let Some(&id) = m.running.keys().nth(i % m.running.len().max(1)) {
                    s.apply(Event::Finish {
                        job: id,
                        exit_status: *status,
                    })
                    .map_err(|e| e.to_string())?;
                    m.running.remove(&id);
                    match id.index {
                        None => m.end(id.seq, *status == 0),
                        Some(i) => {
                            m.arrays
                                .get_mut(&id.seq)
                                .unwrap()
                                .ended
                                .insert(i, *status == 0);
                        }
                    }
                }
            }
            Op::Requeue(i) => {
                if let Some(&id) = m.running.keys().nth(i % m.running.len().max(1)) {
                    s.apply(Event::Requeue(id)).map_err(|e| e.to_string())?;
                    m.running.remove(&id);
                }
            }
            Op::Delete(seq) => {
                if s.apply(Event::Delete(JobId::job(*seq))).is_ok() {
                    m.running.retain(|id, _| id.seq != *seq);
                    m.end(*seq, false);
                }
            }
            Op::Hold(seq) => {
                let _ = s.apply(Event::Hold(JobId::job(*seq)));
            }
            Op::Release(seq) => {
                let _ = s.apply(Event::Release(JobId::job(*seq)));
            }
            Op::Node(n, state) => {
                let i = n % m.nodes.len();
                let name = m.nodes[i].0.clone();
                let e = match state {
                    0 => Event::NodeUp(name),
                    1 => Event::NodeOffline(name),
                    _ => Event::NodeDown(name),
                };
                s.apply(e).map_err(|e| e.to_string())?;
                m.up[i] = *state == 0;
            }
        }
    }
    Ok(all)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// No vnode is ever oversubscribed (amounts, CPU ids, exclusivity), placements honour
    /// `place`, starts go to up vnodes only, and no job starts before its dependencies allow.
    #[test]
    fn starts_respect_resources_and_dependencies(
        nodes in cluster(),
        backfill in any::<bool>(),
        ops in prop::collection::vec(op(), 1..80),
    ) {
        let policy = if backfill { Policy::Backfill } else { Policy::Fifo };
        if let Err(e) = drive(&nodes, policy, &ops) {
            return Err(TestCaseError::fail(e));
        }
    }

    /// The same events in the same order give the same decisions.
    #[test]
    fn deterministic(nodes in cluster(), ops in prop::collection::vec(op(), 1..60)) {
        let a = drive(&nodes, Policy::Backfill, &ops);
        let b = drive(&nodes, Policy::Backfill, &ops);
        prop_assert_eq!(a, b);
    }
}

/// A batch of jobs submitted together, single-term selects (first fit is then complete).
fn batch() -> impl Strategy<Value = Vec<(u32, u64, u8, u64, u64)>> {
    // (chunks, ncpus, arrangement, walltime, run time as a share of walltime in %)
    prop::collection::vec((1u32..=4, 1u64..=4, 0u8..3, 1u64..=50, 10u64..=100), 1..25)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Backfill never delays the top job: once a job is the top job with an estimated start,
    /// it starts no later than that estimate (jobs end by their walltime, no new arrivals).
    #[test]
    fn backfill_never_delays_the_top_job(nodes in cluster(), jobs in batch()) {
        let (mut s, _) = setup(&nodes, Policy::Backfill);
        let mut runs: BTreeMap<u64, u64> = BTreeMap::new();
        for (i, &(count, ncpus, arr, walltime, share)) in jobs.iter().enumerate() {
            let seq = i as u64 + 1;
            let mut spec = JobSpec::new(seq, vec![ChunkSpec::new(count, Resources::cpus(ncpus))]);
            spec.place = Place::new([Arrangement::Free, Arrangement::Pack, Arrangement::Scatter][usize::from(arr)], Sharing::Shared);
            spec.walltime = Some(walltime);
            s.apply(Event::Submit(Box::new(spec))).unwrap();
            runs.insert(seq, (walltime * share / 100).max(1));
        }
        let mut promised: BTreeMap<u64, u64> = BTreeMap::new();
        let mut ends: BTreeSet<(u64, u64)> = BTreeSet::new();
        let mut now = 0u64;
        for _ in 0..10_000 {
            for d in s.cycle(now) {
                if let Decision::Run(st) = d {
                    if let Some(&p) = promised.get(&st.job.seq) {
                        prop_assert!(now <= p, "job {} promised {} started {}", st.job, p, now);
                    }
                    ends.insert((now + runs[&st.job.seq], st.job.seq));
                }
            }
            if let Some((job, at)) = s.top_job_estimate() {
                promised.entry(job.seq).or_insert(at);
            }
            let Some(&(t, _)) = ends.iter().next() else { break };
            now = t;
            while let Some(&(t, seq)) = ends.iter().next() {
                if t != now { break; }
                ends.remove(&(t, seq));
                s.apply(Event::Finish { job: JobId::job(seq), exit_status: 0 }).unwrap();
            }
        }
    }

    /// An array starts exactly its indices (those not deleted before they ran), each once.
    #[test]
    fn arrays_expand_to_exactly_their_indices(
        start in 0u32..50,
        len in 1u32..40,
        step in 1u32..5,
        max in prop::option::of(1u32..4),
        cpus in 1u64..6,
        deletes in prop::collection::vec(0u32..40, 0..5),
    ) {
        let (mut s, _) = setup(&[(cpus, 1)], Policy::Backfill);
        let spec_range = ArraySpec { max_running: max, ..ArraySpec::new(start, start + (len - 1) * step, step) };
        let mut spec = JobSpec::new(1, vec![ChunkSpec::new(1, Resources::cpus(1))]);
        spec.array = Some(spec_range);
        s.apply(Event::Submit(Box::new(spec))).unwrap();
        let mut deleted = BTreeSet::new();
        for d in deletes {
            let idx = start + (d % len) * step;
            if s.apply(Event::Delete(JobId::subjob(1, idx))).is_ok() {
                deleted.insert(idx);
            }
        }
        let mut started: Vec<u32> = Vec::new();
        for t in 0..10_000u64 {
            let mut running = Vec::new();
            for d in s.cycle(t) {
                if let Decision::Run(st) = d {
                    started.push(st.job.index.unwrap());
                    running.push(st.job);
                }
            }
            if let Some(m) = max {
                prop_assert!(s.running_len() <= m as usize);
            }
            if running.is_empty() && s.running_len() == 0 {
                break;
            }
            for (id, _) in s.running_jobs() {
                s.apply(Event::Finish { job: id, exit_status: 0 }).unwrap();
            }
        }
        let expected: Vec<u32> = spec_range.indices().filter(|i| !deleted.contains(i)).collect();
        let mut sorted = started.clone();
        sorted.sort_unstable();
        prop_assert_eq!(&sorted, &expected);
        prop_assert_eq!(&started, &expected, "subjobs start in index order");
    }
}

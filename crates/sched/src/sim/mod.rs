//! Replays a workload in virtual time on simulated vnodes, through the real [`Scheduler`].
//!
//! At each instant where something happens, jobs that end are finished, jobs that arrive are
//! submitted, and one cycle runs. A job of `p` processors asks for `select=p:ncpus=1` (free
//! placement) and its requested time as walltime. The report gives utilization, mean and p95
//! wait, mean bounded slowdown (run time bounded below by 10 s), and the scheduler's own time
//! per cycle, measured with a clock the caller passes in (the core reads no clock).
//!
//! ```
//! use hpcbox_sched::sim::{self, SimConfig, Synthetic};
//! use hpcbox_sched::Policy;
//! let w = Synthetic::new(200, 64).generate();
//! let report = sim::run(&w, &SimConfig::new(4, 16, Policy::Backfill), &mut || std::time::Duration::ZERO);
//! assert_eq!(report.jobs, 200);
//! assert!(report.utilization > 0.0 && report.utilization <= 1.0);
//! ```

mod swf;
mod synth;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::time::Duration;

pub use swf::{parse_swf, SwfError};
pub use synth::{SplitMix64, Synthetic};

use crate::model::{ChunkSpec, Config, Event, JobSpec, NodeSpec, Policy, QueueSpec, Resources};
use crate::{Decision, Scheduler};

/// One job of a workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimJob {
    /// Its number in the trace.
    pub id: u64,
    /// Submit time (seconds).
    pub submit: u64,
    /// How long it runs once started (seconds).
    pub run_time: u64,
    /// Processors.
    pub procs: u32,
    /// Requested time (walltime), if known.
    pub requested_time: Option<u64>,
    /// User id.
    pub user: u32,
}

/// Jobs in submit order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    /// The jobs, sorted by submit time (stable).
    pub jobs: Vec<SimJob>,
    /// Lines of a trace left out (unknown run time or size).
    pub skipped: usize,
}

impl Workload {
    /// A workload of `jobs` (sorted here by submit time).
    pub fn new(mut jobs: Vec<SimJob>, skipped: usize) -> Self {
        jobs.sort_by_key(|j| j.submit);
        Workload { jobs, skipped }
    }
}

/// The simulated cluster and policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimConfig {
    /// Number of vnodes.
    pub nodes: u32,
    /// CPUs per vnode.
    pub cpus_per_node: u32,
    /// FIFO or EASY backfill.
    pub policy: Policy,
    /// Walltime assumed for jobs without a requested time.
    pub default_walltime: u64,
}

impl SimConfig {
    /// `nodes` vnodes of `cpus_per_node` CPUs under `policy`; jobs without a requested time are
    /// planned with [`crate::FIVE_YEARS`].
    pub fn new(nodes: u32, cpus_per_node: u32, policy: Policy) -> Self {
        SimConfig {
            nodes,
            cpus_per_node,
            policy,
            default_walltime: crate::FIVE_YEARS,
        }
    }
}

/// What a replay measured.
#[derive(Debug, Clone, PartialEq)]
pub struct SimReport {
    /// The policy.
    pub policy: Policy,
    /// Vnodes × CPUs.
    pub nodes: u32,
    /// CPUs per vnode.
    pub cpus_per_node: u32,
    /// Jobs that ran.
    pub jobs: usize,
    /// Jobs left out: larger than the cluster, or skipped by the trace parser.
    pub skipped: usize,
    /// From the first submit to the last end (seconds).
    pub makespan: u64,
    /// CPU-seconds used over CPU-seconds available during the makespan.
    pub utilization: f64,
    /// Mean wait (start − submit), seconds.
    pub mean_wait: f64,
    /// 95th percentile of wait, seconds.
    pub p95_wait: u64,
    /// Mean of max(1, (wait + run) / max(run, 10)).
    pub mean_bounded_slowdown: f64,
    /// Cycles run.
    pub cycles: u64,
    /// Mean scheduler time per cycle.
    pub cycle_mean: Duration,
    /// 95th percentile of scheduler time per cycle.
    pub cycle_p95: Duration,
    /// Longest cycle.
    pub cycle_max: Duration,
    /// Scheduler time in all (events and cycles).
    pub sched_total: Duration,
}

impl fmt::Display for SimReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let policy = match self.policy {
            Policy::Fifo => "FIFO",
            Policy::Backfill => "EASY backfill",
        };
        writeln!(
            f,
            "policy {policy} on {} vnodes x {} cpus",
            self.nodes, self.cpus_per_node
        )?;
        writeln!(
            f,
            "  jobs                 {} ({} skipped)",
            self.jobs, self.skipped
        )?;
        writeln!(f, "  makespan             {} s", self.makespan)?;
        writeln!(
            f,
            "  utilization          {:.1} %",
            self.utilization * 100.0
        )?;
        writeln!(f, "  mean wait            {:.0} s", self.mean_wait)?;
        writeln!(f, "  p95 wait             {} s", self.p95_wait)?;
        writeln!(
            f,
            "  mean bounded slowdown {:.2}",
            self.mean_bounded_slowdown
        )?;
        writeln!(f, "  cycles               {}", self.cycles)?;
        writeln!(
            f,
            "  cycle time           mean {:?}, p95 {:?}, max {:?}",
            self.cycle_mean, self.cycle_p95, self.cycle_max
        )?;
        write!(f, "  scheduler time       {:?}", self.sched_total)
    }
}

/// The same workload under FIFO and under EASY backfill.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// Under strict FIFO.
    pub fifo: SimReport,
    /// Under EASY backfill.
    pub backfill: SimReport,
}

impl fmt::Display for Comparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (a, b) = (&self.fifo, &self.backfill);
        writeln!(
            f,
            "{:<24}{:>22}{:>22}",
            format!("{} x {} cpus", a.nodes, a.cpus_per_node),
            "FIFO",
            "EASY backfill"
        )?;
        let rows: [(&str, String, String); 7] = [
            ("jobs", a.jobs.to_string(), b.jobs.to_string()),
            (
                "utilization %",
                format!("{:.1}", a.utilization * 100.0),
                format!("{:.1}", b.utilization * 100.0),
            ),
            (
                "mean wait s",
                format!("{:.0}", a.mean_wait),
                format!("{:.0}", b.mean_wait),
            ),
            ("p95 wait s", a.p95_wait.to_string(), b.p95_wait.to_string()),
            (
                "bounded slowdown",
                format!("{:.2}", a.mean_bounded_slowdown),
                format!("{:.2}", b.mean_bounded_slowdown),
            ),
            ("makespan s", a.makespan.to_string(), b.makespan.to_string()),
            (
                "cycle mean / p95",
                format!("{:?}/{:?}", a.cycle_mean, a.cycle_p95),
                format!("{:?}/{:?}", b.cycle_mean, b.cycle_p95),
            ),
        ];
        for (name, x, y) in rows {
            writeln!(f, "{name:<24}{x:>22}{y:>22}")?;
        }
        Ok(())
    }
}

/// Runs `workload` under both policies.
pub fn compare(
    workload: &Workload,
    config: &SimConfig,
    clock: &mut dyn FnMut() -> Duration,
) -> Comparison {
    let mut c = config.clone();
    c.policy = Policy::Fifo;
    let fifo = run(workload, &c, clock);
    c.policy = Policy::Backfill;
    let backfill = run(workload, &c, clock);
    Comparison { fifo, backfill }
}

fn build(config: &SimConfig) -> Scheduler {
    let mut s = Scheduler::new(Config {
        policy: config.policy,
        default_walltime: config.default_walltime,
        comments: false,
        ..Config::default()
    });
    for i in 0..config.nodes {
        let spec = NodeSpec::new(
            &format!("node{:04}", i + 1),
            Resources::cpus(u64::from(config.cpus_per_node)),
        );
        s.apply(Event::AddNode(spec))
            .expect("distinct simulated vnode names");
    }
    s.apply(Event::SetQueue(QueueSpec::new("workq")))
        .expect("valid queue");
    s
}

/// Replays `workload` on `config`'s cluster. `clock` reads a monotonic clock (e.g.
/// `Instant::now() - origin`); it is called around each cycle to measure the scheduler's time.
pub fn run(
    workload: &Workload,
    config: &SimConfig,
    clock: &mut dyn FnMut() -> Duration,
) -> SimReport {
    let mut sched = build(config);
    let capacity = u64::from(config.nodes) * u64::from(config.cpus_per_node);
    let mut start: Vec<Option<u64>> = vec![None; workload.jobs.len()];
    let mut skipped = workload.skipped;
    let mut ends: BinaryHeap<Reverse<(u64, u64)>> = BinaryHeap::new();
    let mut cycle_ns: Vec<u64> = Vec::new();
    let mut total = Duration::ZERO;
    let mut next = 0usize;
    loop {
        let t_submit = workload.jobs.get(next).map(|j| j.submit);
        let t_end = ends.peek().map(|Reverse((t, _))| *t);
        let now = match (t_submit, t_end) {
            (None, None) => break,
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) => a,
            (None, Some(b)) => b,
        };
        let t0 = clock();
        while let Some(&Reverse((t, seq))) = ends.peek() {
            if t != now {
                break;
            }
            ends.pop();
            sched
                .apply(Event::Finish {
                    job: crate::JobId::job(seq),
                    exit_status: 0,
                })
                .expect("simulated job was running");
        }
        while let Some(job) = workload.jobs.get(next) {
            if job.submit != now {
                break;
            }
            let seq = next as u64 + 1;
            next += 1;
            if u64::from(job.procs) > capacity || job.procs == 0 {
                skipped += 1;
                continue;
            }
            let mut spec = JobSpec::new(seq, vec![ChunkSpec::new(job.procs, Resources::cpus(1))]);
            spec.walltime = job.requested_time;
            spec.submit_time = job.submit;
            spec.owner = format!("u{}", job.user);
            sched
                .apply(Event::Submit(Box::new(spec)))
                .expect("simulated job is valid");
        }
        let t1 = clock();
        let decisions = sched.cycle(now);
        let t2 = clock();
        cycle_ns.push(t2.saturating_sub(t1).as_nanos() as u64);
        total += t2.saturating_sub(t0);
        for d in decisions {
            if let Decision::Run(s) = d {
                let i = (s.job.seq - 1) as usize;
                start[i] = Some(now);
                let end = now.saturating_add(workload.jobs[i].run_time);
                ends.push(Reverse((end, s.job.seq)));
            }
        }
    }
    report(workload, config, &start, skipped, cycle_ns, total)
}

fn report(
    workload: &Workload,
    config: &SimConfig,
    start: &[Option<u64>],
    skipped: usize,
    mut cycle_ns: Vec<u64>,
    total: Duration,
) -> SimReport {
    let capacity = u64::from(config.nodes) * u64::from(config.cpus_per_node);
    let mut waits: Vec<u64> = Vec::new();
    let mut slowdown = 0.0f64;
    let mut used = 0.0f64;
    let (mut first, mut last) = (u64::MAX, 0u64);
    for (job, st) in workload.jobs.iter().zip(start) {
        let Some(st) = *st else { continue };
        let wait = st - job.submit;
        waits.push(wait);
        let run = job.run_time as f64;
        slowdown += ((wait as f64 + run) / run.max(10.0)).max(1.0);
        used += f64::from(job.procs) * run;
        first = first.min(job.submit);
        last = last.max(st.saturating_add(job.run_time));
    }
    let n = waits.len();
    let makespan = last.saturating_sub(first);
    waits.sort_unstable();
    cycle_ns.sort_unstable();
    let pct = |v: &[u64]| -> u64 {
        if v.is_empty() {
            0
        } else {
            v[(v.len() * 95 / 100).min(v.len() - 1)]
        }
    };
    let cycles = cycle_ns.len() as u64;
    let cycle_sum: u64 = cycle_ns.iter().sum();
    SimReport {
        policy: config.policy,
        nodes: config.nodes,
        cpus_per_node: config.cpus_per_node,
        jobs: n,
        skipped,
        makespan,
        utilization: if makespan == 0 || capacity == 0 {
            0.0
        } else {
            used / (capacity as f64 * makespan as f64)
        },
        mean_wait: if n == 0 {
            0.0
        } else {
            waits.iter().sum::<u64>() as f64 / n as f64
        },
        p95_wait: pct(&waits),
        mean_bounded_slowdown: if n == 0 { 0.0 } else { slowdown / n as f64 },
        cycles,
        cycle_mean: Duration::from_nanos(cycle_sum.checked_div(cycles).unwrap_or(0)),
        cycle_p95: Duration::from_nanos(pct(&cycle_ns)),
        cycle_max: Duration::from_nanos(cycle_ns.last().copied().unwrap_or(0)),
        sched_total: total,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: u64, submit: u64, run: u64, procs: u32, req: u64) -> SimJob {
        SimJob {
            id,
            submit,
            run_time: run,
            procs,
            requested_time: Some(req),
            user: 1,
        }
    }

    fn zero() -> Duration {
        Duration::ZERO
    }

    #[test]
    fn backfill_fills_the_hole_fifo_leaves() {
        // 4 cpus. Job 1 takes 2 for 100 s; job 2 needs 4 (waits until 100); job 3 needs 2
        // for 50 s: backfill runs it at once, FIFO after job 2.
        let w = Workload::new(
            vec![
                job(1, 0, 100, 2, 100),
                job(2, 1, 100, 4, 100),
                job(3, 2, 50, 2, 50),
            ],
            0,
        );
        let c = compare(&w, &SimConfig::new(1, 4, Policy::Fifo), &mut zero);
        assert_eq!(c.fifo.jobs, 3);
        assert_eq!(c.fifo.makespan, 250);
        assert_eq!(c.backfill.makespan, 200);
        // waits: fifo 0, 99, 198; backfill 0, 99, 0
        assert_eq!(c.fifo.mean_wait, 99.0);
        assert_eq!(c.backfill.mean_wait, 33.0);
        assert!(c.backfill.utilization > c.fifo.utilization);
        let text = c.to_string();
        assert!(text.contains("EASY backfill"), "{text}");
    }

    #[test]
    fn replays_an_swf_trace() {
        let trace = "\
; UnixStartTime: 0
1 0 0 100 4 -1 -1 4 100 -1 1 1 1 -1 1 -1 -1 -1
2 10 0 50 8 -1 -1 8 60 -1 1 2 1 -1 1 -1 -1 -1
3 20 0 30 4 -1 -1 4 40 -1 1 1 1 -1 1 -1 -1 -1
4 30 0 -1 4 -1 -1 4 40 -1 5 1 1 -1 1 -1 -1 -1
";
        let w = parse_swf(trace).unwrap();
        let c = compare(&w, &SimConfig::new(2, 4, Policy::Backfill), &mut zero);
        // Job 2 needs both vnodes and waits for job 1 (until t=100). Job 3 fits beside job 1
        // and its walltime ends (t=60) before then: backfill runs it at once, FIFO after job 2
        // (t=150). Job 4 has no run time and is skipped.
        assert_eq!((c.fifo.jobs, c.fifo.skipped), (3, 1));
        assert_eq!(c.backfill.mean_wait, (0.0 + 90.0 + 0.0) / 3.0);
        assert_eq!(c.fifo.mean_wait, (0.0 + 90.0 + 130.0) / 3.0);
    }

    #[test]
    fn too_large_jobs_are_skipped_not_hung() {
        let w = Workload::new(vec![job(1, 0, 10, 9, 10), job(2, 0, 10, 1, 10)], 0);
        let r = run(&w, &SimConfig::new(2, 4, Policy::Backfill), &mut zero);
        assert_eq!((r.jobs, r.skipped), (1, 1));
        assert!(r.to_string().contains("jobs                 1 (1 skipped)"));
    }

    #[test]
    fn bounded_slowdown_uses_ten_seconds() {
        // One 1-s job that waits 9 s behind a 9-s job: (9 + 1) / max(1, 10) = 1.
        let w = Workload::new(vec![job(1, 0, 9, 1, 9), job(2, 0, 1, 1, 1)], 0);
        let r = run(&w, &SimConfig::new(1, 1, Policy::Fifo), &mut zero);
        assert_eq!(r.mean_bounded_slowdown, 1.0);
        assert_eq!(r.p95_wait, 9);
    }
}

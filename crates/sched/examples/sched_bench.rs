//! Scheduler benchmarks (run in release):
//!
//! `cargo run --release -p hpcbox-sched --example sched_bench [-- --jobs N --replay N]`
//!
//! 1. One cycle with 100,000 pending jobs on 1,000 vnodes (32 CPUs each), the complex full:
//!    the first cycle that sees them all (every comment new), a cycle with nothing changed, and
//!    cycles after one vnode's job ends (backfill scans the whole queue).
//! 2. A 1,000,000-job synthetic trace replayed with EASY backfill, and a busier 20,000-job
//!    trace under FIFO and backfill side by side.
//! 3. Memory per pending job, measured by a counting allocator and by the scheduler's own
//!    accounting; and an array of 100,000 subjobs against a single job.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hpcbox_sched::sim::{self, SimConfig, SplitMix64, Synthetic};
use hpcbox_sched::{
    ArraySpec, ChunkSpec, Config, Decision, Event, JobId, JobSpec, NodeSpec, Policy, QueueSpec,
    Resources, Scheduler,
};

/// Counts bytes currently allocated.
struct Counting;

static ALLOCATED: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call forwards to `System` with the caller's arguments; the counter is only
// bookkeeping.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            ALLOCATED.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as is.
        unsafe { System.dealloc(ptr, layout) };
        ALLOCATED.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as is.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            ALLOCATED.fetch_sub(layout.size(), Ordering::Relaxed);
            ALLOCATED.fetch_add(new_size, Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const NODES: u32 = 1000;
const CPUS: u64 = 32;
const GB: u64 = 1024 * 1024;

fn complex(config: Config) -> Scheduler {
    let mut s = Scheduler::new(config);
    s.apply(Event::SetQueue(QueueSpec::new("workq"))).unwrap();
    for i in 0..NODES {
        let spec = NodeSpec::new(
            &format!("node{:04}", i + 1),
            Resources::new(CPUS, 128 * GB, 0),
        );
        s.apply(Event::AddNode(spec)).unwrap();
    }
    s
}

/// A pending job: 1 to 64 CPUs in chunks of at most 32, walltime 10 min to 24 h, 16 users.
fn pending_job(seq: u64, rng: &mut SplitMix64) -> JobSpec {
    let cpus = 1u64 << (rng.next_u64() % 7);
    let (count, per) = if cpus > CPUS {
        ((cpus / CPUS) as u32, CPUS)
    } else {
        (1, cpus)
    };
    let mut j = JobSpec::new(
        seq,
        vec![ChunkSpec::new(count, Resources::new(per, per * 2 * GB, 0))],
    );
    j.walltime = Some(600 + rng.next_u64() % 86_400);
    j.priority = (rng.next_u64() % 3) as i32;
    j.submit_time = seq;
    j.owner = format!("user{}", rng.next_u64() % 16);
    j
}

fn time<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let t = Instant::now();
    let r = f();
    (r, t.elapsed())
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn cycle_bench(pending: usize, fragmented: bool) {
    let fill = if fragmented {
        "one-cpu jobs (32,000 running)"
    } else {
        "whole-vnode jobs"
    };
    println!(
        "## Cycle: {pending} pending jobs, {NODES} vnodes x {CPUS} cpus full of {fill}, EASY backfill"
    );
    let mut s = complex(Config::default());
    // Fill every vnode, each job ending at a different time.
    let (fill_jobs, fill_cpus) = if fragmented {
        (u64::from(NODES) * CPUS, 1)
    } else {
        (u64::from(NODES), CPUS)
    };
    let mut rng = SplitMix64::new(3);
    for i in 0..fill_jobs {
        let mut j = JobSpec::new(i + 1, vec![ChunkSpec::new(1, Resources::cpus(fill_cpus))]);
        j.walltime = Some(3600 + rng.next_u64() % 86_400);
        j.priority = 100;
        s.apply(Event::Submit(Box::new(j))).unwrap();
    }
    let (d, t) = time(|| s.cycle(0));
    println!("- fill cycle ({} starts): {}", d.len(), ms(t));
    let mut rng = SplitMix64::new(42);
    let base = fill_jobs + 1;
    for k in 0..pending as u64 {
        s.apply(Event::Submit(Box::new(pending_job(base + k, &mut rng))))
            .unwrap();
    }
    let (d, t) = time(|| s.cycle(1));
    println!(
        "- first cycle over them ({} decisions, all comments new): {}",
        d.len(),
        ms(t)
    );
    let (d, t) = time(|| s.cycle(2));
    println!(
        "- cycle with nothing changed ({} decisions): {}",
        d.len(),
        ms(t)
    );
    let mut times = Vec::new();
    let mut starts = 0;
    let mut comments = 0;
    for i in 0..20u64 {
        s.apply(Event::Finish {
            job: JobId::job(i + 1),
            exit_status: 0,
        })
        .unwrap();
        let (d, t) = time(|| s.cycle(3 + i));
        starts += d.iter().filter(|d| matches!(d, Decision::Run(_))).count();
        comments += d
            .iter()
            .filter(|d| matches!(d, Decision::Comment { .. }))
            .count();
        times.push(t);
    }
    times.sort();
    println!(
        "- cycle after one fill job ends (20 runs, {starts} starts, {comments} comment changes in all): median {}, max {}",
        ms(times[times.len() / 2]),
        ms(times[times.len() - 1])
    );
    println!("- eligible after: {}", s.eligible_len());
}

fn memory_bench(pending: usize) {
    println!("## Memory per pending job");
    let mut s = complex(Config::default());
    let mut rng = SplitMix64::new(7);
    let before = ALLOCATED.load(Ordering::Relaxed);
    for k in 0..pending as u64 {
        let spec = pending_job(k + 1, &mut rng);
        s.apply(Event::Submit(Box::new(spec))).unwrap();
    }
    let after_submit = ALLOCATED.load(Ordering::Relaxed);
    // Fill the complex so that every other job waits with a comment.
    let decisions = s.cycle(0);
    drop(decisions);
    let _ = s.cycle(1);
    let after_cycle = ALLOCATED.load(Ordering::Relaxed);
    let est = s.memory_estimate();
    let per = |after: usize| after.saturating_sub(before) / pending;
    println!(
        "- measured (allocator): {} bytes/job after submit; {} bytes/job once cycles ran (comments set, {} running)",
        per(after_submit),
        per(after_cycle),
        s.running_len()
    );
    println!(
        "- scheduler's own accounting: {} bytes/job ({} jobs)",
        est.bytes_per_job(),
        est.jobs
    );
    let one = {
        let mut s = complex(Config::default());
        let before = ALLOCATED.load(Ordering::Relaxed);
        s.apply(Event::Submit(Box::new(JobSpec::new(
            1,
            vec![ChunkSpec::new(1, Resources::cpus(1))],
        ))))
        .unwrap();
        ALLOCATED.load(Ordering::Relaxed) - before
    };
    let array = {
        let mut s = complex(Config::default());
        let before = ALLOCATED.load(Ordering::Relaxed);
        let mut j = JobSpec::new(1, vec![ChunkSpec::new(1, Resources::cpus(1))]);
        j.array = Some(ArraySpec::new(1, 100_000, 1));
        s.apply(Event::Submit(Box::new(j))).unwrap();
        ALLOCATED.load(Ordering::Relaxed) - before
    };
    println!("- one job: {one} bytes; an array of 100,000 subjobs: {array} bytes");
}

fn replay_bench(jobs: usize) {
    let cpus = u64::from(NODES) * CPUS;
    println!("## Replay: {jobs} synthetic jobs on {NODES} vnodes x {CPUS} cpus");
    let (w, t) = time(|| {
        let mut g = Synthetic::new(jobs, cpus);
        g.max_procs = 256;
        g.generate()
    });
    println!("- generated in {}", ms(t));
    let origin = Instant::now();
    let mut clock = move || origin.elapsed();
    let config = SimConfig::new(NODES, CPUS as u32, Policy::Backfill);
    let (r, t) = time(|| sim::run(&w, &config, &mut clock));
    println!("- replayed in {:.2} s", t.as_secs_f64());
    println!("```\n{r}\n```");
    let nodes = 64u32;
    let mut g = Synthetic::new(20_000, u64::from(nodes) * CPUS);
    g.max_procs = 1024;
    g.load = 0.95;
    let busy = g.generate();
    let config = SimConfig::new(nodes, CPUS as u32, Policy::Backfill);
    let (c, t) = time(|| sim::compare(&busy, &config, &mut clock));
    println!(
        "## FIFO vs EASY backfill: 20,000 synthetic jobs (1 to 1024 cpus, load 0.95) on {nodes} vnodes x {CPUS} cpus ({:.2} s for both)",
        t.as_secs_f64()
    );
    println!("```\n{c}```");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str, default: usize| -> usize {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let pending = arg("--jobs", 100_000);
    let replay = arg("--replay", 1_000_000);
    cycle_bench(pending, false);
    cycle_bench(pending, true);
    memory_bench(pending);
    replay_bench(replay);
}

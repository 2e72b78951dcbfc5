//! The pool's benchmark (run by `bench/pool/run.sh`, in release): prints `key value` lines.
//!
//! `cargo run --release -p hpcbox-pool --example pool_bench [pi_samples]`

use std::hint::black_box;
use std::time::{Duration, Instant};

use hpcbox_pool::Pool;
use rayon::prelude::*;

fn addit(x: i64) -> i64 {
    x + 1
}

/// Best of `runs` timings of `f` on an input made, untimed, by `input` before each run (as
/// Python's peer maps over a list that already exists).
fn best_on<I, T>(runs: usize, mut input: impl FnMut() -> I, mut f: impl FnMut(I) -> T) -> Duration {
    (0..runs)
        .map(|_| {
            let i = input();
            let t = Instant::now();
            black_box(f(i));
            t.elapsed()
        })
        .min()
        .unwrap_or_default()
}

fn per_item_us(d: Duration, n: usize) -> f64 {
    d.as_secs_f64() * 1e6 / n as f64
}

/// Counts the samples of `(seed, n)` that fall in the quarter circle (xorshift64*).
fn pi_hits((seed, n): (u64, u64)) -> u64 {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = || {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        (s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    };
    let mut hits = 0;
    for _ in 0..n {
        let (x, y) = (next(), next());
        hits += u64::from(x * x + y * y <= 1.0);
    }
    hits
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let pi_samples: u64 = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(1_000_000_000);
    // `with Pool(2) as p: p.map(f, [1])`, start to stop; first, while this process is small.
    // The median of 200 rounds (a busy machine makes single rounds wander).
    let mut rounds: Vec<f64> = (0..200)
        .map(|_| {
            let t = Instant::now();
            let p = Pool::new(2).unwrap();
            black_box(p.map(addit, vec![1]).unwrap());
            drop(p);
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    rounds.sort_by(f64::total_cmp);
    println!("proc_start_stop_ms {:.4}", rounds[rounds.len() / 2]);

    let n = 1_000_000usize;
    let items: Vec<i64> = (0..n as i64).collect();
    let want: Vec<i64> = items.iter().map(|x| x + 1).collect();

    let procs = Pool::new(2)?;
    assert_eq!(procs.map(addit, items.clone())?, want);
    let d = best_on(7, || items.clone(), |v| procs.map(addit, v).unwrap());
    println!("proc_map_default_us_per_item {:.5}", per_item_us(d, n));

    let n1 = 100_000usize;
    let small: Vec<i64> = (0..n1 as i64).collect();
    let d = best_on(
        3,
        || small.clone(),
        |v| procs.map_chunksize(addit, v, 1).unwrap(),
    );
    println!("proc_map_chunksize1_us_per_item {:.5}", per_item_us(d, n1));
    drop(procs);

    let threads = Pool::builder().threads().workers(2).build()?;
    assert_eq!(threads.map(|x: i64| x + 1, items.clone())?, want);
    // Thread workers and rayon: best of 25 each (a map takes well under a millisecond).
    let d = best_on(
        25,
        || items.clone(),
        |v| threads.map(|x: i64| x + 1, v).unwrap(),
    );
    println!("thread_map_default_us_per_item {:.5}", per_item_us(d, n));
    drop(threads);

    let rayon_pool = rayon::ThreadPoolBuilder::new().num_threads(2).build()?;
    // As a caller uses it: from this thread, handing each map to the pool (as ours is used).
    let d = best_on(
        25,
        || items.clone(),
        |v| rayon_pool.install(|| v.into_par_iter().map(|x| x + 1).collect::<Vec<i64>>()),
    );
    println!("rayon_map_us_per_item {:.5}", per_item_us(d, n));

    // Serial and pool runs interleaved, best of two each: a busy machine disturbs single runs.
    let p = Pool::new(2)?;
    let half = pi_samples / 2;
    let (mut serial_s, mut pool_s) = (f64::MAX, f64::MAX);
    let (mut serial, mut hits) = (0, 0);
    for _ in 0..2 {
        let t = Instant::now();
        serial = black_box(pi_hits(black_box((1, pi_samples))));
        serial_s = serial_s.min(t.elapsed().as_secs_f64());
        let t = Instant::now();
        hits = p
            .map_chunksize(pi_hits, vec![(2, half), (3, pi_samples - half)], 1)?
            .iter()
            .sum();
        pool_s = pool_s.min(t.elapsed().as_secs_f64());
    }
    drop(p);
    let pi = |h: u64| 4.0 * h as f64 / pi_samples as f64;
    println!("pi_samples {pi_samples}");
    println!("pi_serial_s {serial_s:.3}");
    println!("pi_pool2_s {pool_s:.3}");
    println!("pi_serial_value {:.6}", pi(serial));
    println!("pi_pool2_value {:.6}", pi(hits));
    Ok(())
}

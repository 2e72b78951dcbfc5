//! Profiling helper: `with Pool(2) as p: p.map(f, [1])`, repeated; prints the mean of the
//! whole and of its three parts (start, the map, the stop).
use std::time::Instant;

use hpcbox_pool::Pool;

fn addit(x: i64) -> i64 {
    x + 1
}

fn main() {
    let rounds: usize = std::env::args().nth(1).map_or(500, |s| s.parse().unwrap());
    let mut parts = [0f64; 3];
    let t = Instant::now();
    for _ in 0..rounds {
        let t0 = Instant::now();
        let p = Pool::new(2).unwrap();
        let t1 = Instant::now();
        std::hint::black_box(p.map(addit, vec![1]).unwrap());
        let t2 = Instant::now();
        drop(p);
        let t3 = Instant::now();
        for (part, (a, b)) in parts.iter_mut().zip([(t0, t1), (t1, t2), (t2, t3)]) {
            *part += (b - a).as_secs_f64();
        }
    }
    let ms = |s: f64| s * 1e3 / rounds as f64;
    println!(
        "{:.4} ms (start {:.4}, map {:.4}, stop {:.4})",
        ms(t.elapsed().as_secs_f64()),
        ms(parts[0]),
        ms(parts[1]),
        ms(parts[2])
    );
}

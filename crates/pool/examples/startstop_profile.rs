//! Profiling helper: `with Pool(2) as p: p.map(f, [1])`, repeated.
use hpcbox_pool::Pool;
fn addit(x: i64) -> i64 {
    x + 1
}
fn main() {
    let rounds: usize = std::env::args().nth(1).map_or(500, |s| s.parse().unwrap());
    let t = std::time::Instant::now();
    for _ in 0..rounds {
        let p = Pool::new(2).unwrap();
        std::hint::black_box(p.map(addit, vec![1]).unwrap());
    }
    println!("{:.4} ms", t.elapsed().as_secs_f64() * 1e3 / rounds as f64);
}

//! Profiling helper: a process-worker map of `x + 1` over 1e6 integers, repeated.
use hpcbox_pool::Pool;
fn addit(x: i64) -> i64 {
    x + 1
}
fn main() {
    let which = std::env::args().nth(1).unwrap_or_default();
    let items: Vec<i64> = (0..1_000_000).collect();
    if which == "cs1" {
        let p = Pool::new(2).unwrap();
        let small: Vec<i64> = (0..100_000).collect();
        for _ in 0..5 {
            std::hint::black_box(p.map_chunksize(addit, small.clone(), 1).unwrap());
        }
    } else if which == "threads" {
        let p = Pool::builder().threads().workers(2).build().unwrap();
        for _ in 0..200 {
            std::hint::black_box(p.map(|x: i64| x + 1, items.clone()).unwrap());
        }
    } else {
        let p = Pool::new(2).unwrap();
        for _ in 0..50 {
            std::hint::black_box(p.map(addit, items.clone()).unwrap());
        }
    }
}

//! Debug helper: which worker ran each pi chunk, and when.
use hpcbox_pool::Pool;
use std::time::{SystemTime, UNIX_EPOCH};
fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}
fn work((seed, n): (u64, u64)) -> (u32, f64, f64, u64) {
    let t0 = now();
    let mut s = seed | 1;
    let mut acc = 0u64;
    for _ in 0..n {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        acc = acc.wrapping_add(s >> 60);
    }
    (std::process::id(), t0, now(), acc)
}
fn main() {
    let p = Pool::new(2).unwrap();
    let t = now();
    let r = p
        .map_chunksize(
            work,
            std::env::args()
                .skip(1)
                .map(|a| (a.len() as u64, a.parse::<u64>().unwrap()))
                .collect::<Vec<_>>(),
            1,
        )
        .unwrap();
    for (pid, a, b, _) in r {
        println!("pid {pid} start {:.3} end {:.3}", a - t, b - t);
    }
}

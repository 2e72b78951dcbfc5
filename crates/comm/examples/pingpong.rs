//! Ping-pong latency and bandwidth between ranks 0 and 1, then allreduce and barrier times,
//! as the Open MPI recipe in the anchors measures: run with `mpiexec -n 2 pingpong [SIZES...]`.

use hpcbox_comm::{Communicator, Op, Result};
use std::time::Instant;

fn pingpong(w: &Communicator, size: usize) -> Result<()> {
    let iters = if size > 65536 { 200 } else { 20_000 };
    let mut buf = vec![1u8; size];
    w.barrier()?;
    let t = Instant::now();
    for _ in 0..iters {
        if w.rank() == 0 {
            w.send(1, 0, &buf)?;
            buf = w.recv::<u8>(1, 0)?.0;
        } else if w.rank() == 1 {
            buf = w.recv::<u8>(0, 0)?.0;
            w.send(0, 0, &buf)?;
        }
    }
    let one_way = t.elapsed().as_secs_f64() / iters as f64 / 2.0;
    if w.rank() == 0 {
        println!(
            "size {size}: one-way {:.2} us, bw {:.2} GB/s",
            one_way * 1e6,
            size as f64 / one_way / 1e9
        );
    }
    Ok(())
}

fn main() -> Result<()> {
    let w = hpcbox_comm::init()?;
    if w.size() < 2 {
        eprintln!("pingpong needs 2 ranks: mpiexec -n 2 pingpong");
        std::process::exit(2);
    }
    // Sizes in bytes may be given as arguments; the default is the anchors' four.
    let mut sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    if sizes.is_empty() {
        sizes = vec![8, 1024, 1 << 20, 16 << 20];
    }
    for size in sizes {
        pingpong(&w, size)?;
    }
    let iters = 20_000;
    w.barrier()?;
    let t = Instant::now();
    for _ in 0..iters {
        std::hint::black_box(w.allreduce(&[1.0f64], Op::Sum)?);
    }
    if w.rank() == 0 {
        println!(
            "allreduce 8B: {:.2} us",
            t.elapsed().as_secs_f64() / iters as f64 * 1e6
        );
    }
    let t = Instant::now();
    for _ in 0..iters {
        w.barrier()?;
    }
    if w.rank() == 0 {
        println!(
            "barrier: {:.2} us",
            t.elapsed().as_secs_f64() / iters as f64 * 1e6
        );
    }
    Ok(())
}

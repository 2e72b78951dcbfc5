//! Ping-pong latency and bandwidth between ranks 0 and 1, then allreduce and barrier times,
//! as the Open MPI recipe in the anchors measures: run with
//! `mpiexec -n 2 pingpong [SIZES...]`. Each figure is the best of ten batches, so that a busy
//! machine's pauses show less; the median batch is printed beside it.

use hpcbox_comm::{Communicator, Op, Result};
use std::time::Instant;

const BATCHES: usize = 10;

/// Seconds per iteration of `body` over `iters` iterations: (best batch, median batch).
fn timed(
    w: &Communicator,
    iters: usize,
    mut body: impl FnMut() -> Result<()>,
) -> Result<(f64, f64)> {
    let per_batch = (iters / BATCHES).max(1);
    let mut times = Vec::with_capacity(BATCHES);
    for _ in 0..BATCHES {
        w.barrier()?;
        let t = Instant::now();
        for _ in 0..per_batch {
            body()?;
        }
        times.push(t.elapsed().as_secs_f64() / per_batch as f64);
    }
    times.sort_by(f64::total_cmp);
    Ok((times[0], times[BATCHES / 2]))
}

fn pingpong(w: &Communicator, size: usize) -> Result<()> {
    let iters = if size > 65536 { 200 } else { 20_000 };
    let mut buf = vec![1u8; size];
    let (best, median) = timed(w, iters, || {
        if w.rank() == 0 {
            w.send(1, 0, &buf)?;
            buf = w.recv::<u8>(1, 0)?.0;
        } else if w.rank() == 1 {
            buf = w.recv::<u8>(0, 0)?.0;
            w.send(0, 0, &buf)?;
        }
        Ok(())
    })?;
    if w.rank() == 0 {
        let (b, m) = (best / 2.0, median / 2.0);
        println!(
            "size {size}: one-way {:.2} us, bw {:.2} GB/s (median {:.2} us, {:.2} GB/s)",
            b * 1e6,
            size as f64 / b / 1e9,
            m * 1e6,
            size as f64 / m / 1e9
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
    let (best, median) = timed(&w, 20_000, || {
        std::hint::black_box(w.allreduce(&[1.0f64], Op::Sum)?);
        Ok(())
    })?;
    if w.rank() == 0 {
        println!(
            "allreduce 8B: {:.2} us (median {:.2} us)",
            best * 1e6,
            median * 1e6
        );
    }
    let (best, median) = timed(&w, 20_000, || w.barrier())?;
    if w.rank() == 0 {
        println!(
            "barrier: {:.2} us (median {:.2} us)",
            best * 1e6,
            median * 1e6
        );
    }
    Ok(())
}

//! Ping-pong latency and bandwidth between ranks 0 and 1, then allreduce (8 B and 1 MiB) and
//! barrier times, measured exactly as `bench/comm/pingpong.c` measures Open MPI and MPICH:
//! the same sizes and iteration counts, in ten batches each after a barrier, the receive into
//! one reused buffer. Run with `hpcbox mpiexec -n 2 pingpong`. Rank 0 prints one line per
//! measure, `<measure> best <s-per-op> median <s-per-op>`, where the measure is `pp<bytes>`
//! (one-way time: round trip / 2), `allreduce8`, `allreduce1M` or `barrier`.

use hpcbox_comm::{Communicator, Op, Result};
use std::time::Instant;

const BATCHES: usize = 10;

/// Seconds per iteration of `body`, `iters` iterations in [`BATCHES`] batches, each after a
/// barrier: (best batch, median batch).
fn timed(
    w: &Communicator,
    iters: usize,
    mut body: impl FnMut() -> Result<()>,
) -> Result<(f64, f64)> {
    let per_batch = iters / BATCHES;
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

/// The C program's iteration count for a payload of `bytes`.
fn iterations(bytes: usize) -> usize {
    if bytes > 65536 {
        200
    } else {
        20_000
    }
}

fn report(w: &Communicator, what: &str, (best, median): (f64, f64)) {
    if w.rank() == 0 {
        println!("{what} best {best:.9e} median {median:.9e}");
    }
}

fn pingpong(w: &Communicator, size: usize) -> Result<()> {
    let mut buf = vec![1u8; size];
    let (best, median) = timed(w, iterations(size), || {
        if w.rank() == 0 {
            w.send(1, 0, &buf)?;
            w.recv_into(1, 0, &mut buf)?;
        } else if w.rank() == 1 {
            w.recv_into(0, 0, &mut buf)?;
            w.send(0, 0, &buf)?;
        }
        Ok(())
    })?;
    report(w, &format!("pp{size}"), (best / 2.0, median / 2.0));
    Ok(())
}

fn allreduce(w: &Communicator, what: &str, bytes: usize) -> Result<()> {
    // Into a buffer made once, as the C program's MPI_Allreduce(send, recv, ...).
    let x = vec![1.0f64; bytes / 8];
    let mut out = vec![0.0f64; bytes / 8];
    let times = timed(w, iterations(bytes), || {
        w.allreduce_into(&x, &mut out, Op::Sum)?;
        std::hint::black_box(&out);
        Ok(())
    })?;
    report(w, what, times);
    Ok(())
}

fn main() -> Result<()> {
    let w = hpcbox_comm::init()?;
    if w.size() < 2 {
        eprintln!("pingpong needs 2 ranks: mpiexec -n 2 pingpong");
        std::process::exit(2);
    }
    for size in [8, 1024, 1 << 20, 16 << 20] {
        pingpong(&w, size)?;
    }
    allreduce(&w, "allreduce8", 8)?;
    allreduce(&w, "allreduce1M", 1 << 20)?;
    let times = timed(&w, 20_000, || w.barrier())?;
    report(&w, "barrier", times);
    Ok(())
}

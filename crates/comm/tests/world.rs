//! Real multi-process worlds. This test binary (harness = false) is its own rank program:
//! the driver launches it through `hpcbox_comm::launch` with `HPCBOX_TEST_BODY` naming the
//! rank body to run, and checks what the ranks print and how they end.
//!
//! `cargo test -p hpcbox-comm --test world [filter]` runs the cases whose name contains filter.

use hpcbox_comm::launch::{
    hostname, launch_with, LaunchOutcome, LaunchSpec, OutputSink, StdinMode, Stream,
};
use hpcbox_comm::{wait_all, Error, Op, Request, ANY_SOURCE, ANY_TAG};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[macro_use]
mod common;

use common::{e, Case, Collect, Res};

// ---------------------------------------------------------------- deterministic randomness

struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15)
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn float(&mut self) -> f64 {
        // Wide dynamic range, so that the combine order shows in the last bits.
        ((self.next() >> 11) as f64 / (1u64 << 53) as f64 - 0.5)
            * 10f64.powi(self.below(12) as i32 - 4)
    }
}

fn env_u64(name: &str) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

// ---------------------------------------------------------------- rank bodies

fn body_hello() -> Res {
    let w = hpcbox_comm::init().map_err(e)?;
    println!("I am rank {} in group of {} processes.", w.rank(), w.size());
    Ok(())
}

fn body_p2p() -> Res {
    let w = hpcbox_comm::init().map_err(e)?;
    let (r, n) = (w.rank(), w.size());
    let (next, prev) = ((r + 1) % n, (r + n - 1) % n);

    // Typed ring.
    w.send(next, 10, &[r as f64, 0.5]).map_err(e)?;
    let (v, st) = w.recv::<f64>(prev, 10).map_err(e)?;
    check!(v == vec![prev as f64, 0.5], "ring got {v:?}");
    check!(
        st.source == prev && st.tag == 10 && st.len == 16 && st.count::<f64>() == 2,
        "{st:?}"
    );

    // Objects.
    w.send_obj(next, 11, &(format!("from {r}"), vec![r as u32; r]))
        .map_err(e)?;
    let ((s, v), st) = w.recv_obj::<(String, Vec<u32>)>(prev, 11).map_err(e)?;
    check!(
        s == format!("from {prev}") && v == vec![prev as u32; prev] && st.source == prev,
        "obj {s} {v:?}"
    );

    // recv_into: a buffer with room to spare, then one too small.
    w.send(next, 18, &[r as i64; 3]).map_err(e)?;
    w.send(next, 18, &[r as i64; 3]).map_err(e)?;
    let mut buf = [0i64; 5];
    let st = w.recv_into(prev, 18, &mut buf).map_err(e)?;
    check!(
        st.count::<i64>() == 3 && buf[..3] == [prev as i64; 3] && buf[3..] == [0, 0],
        "recv_into {buf:?}"
    );
    let err = w.recv_into(prev, 18, &mut buf[..2]).unwrap_err();
    check!(
        matches!(
            err,
            Error::Truncated {
                len: 3,
                room: 2,
                ..
            }
        ),
        "{err}"
    );

    // recv_into of a large message (single copy where it is on), straight into the buffer;
    // and a receive posted earlier keeps its precedence over a blocking one.
    let large = large_of(r);
    w.send(next, 19, &large).map_err(e)?;
    let mut into = vec![0u32; 100_003];
    let st = w.recv_into(prev, 19, &mut into).map_err(e)?;
    check!(
        st.count::<u32>() == 100_000
            && into[..100_000]
                .iter()
                .enumerate()
                .all(|(i, &x)| x == i as u32 ^ prev as u32)
            && into[100_000..] == [0, 0, 0],
        "large recv_into"
    );
    let early = w.irecv::<u32>(ANY_SOURCE, 20).map_err(e)?;
    w.send(next, 20, &[1u32]).map_err(e)?;
    w.send(next, 20, &large).map_err(e)?;
    let st = w.recv_into(prev, 20, &mut into).map_err(e)?;
    let (got, _) = early.wait().map_err(e)?;
    check!(
        got == [1] && st.count::<u32>() == 100_000 && into[..3] == large_of(prev)[..3],
        "posted receive precedence {got:?}"
    );

    // sendrecv.
    let (v, st) = w
        .sendrecv::<i32, i32>(&[r as i32, -1], next, 12, prev, 12)
        .map_err(e)?;
    check!(
        v == vec![prev as i32, -1] && st.source == prev,
        "sendrecv {v:?}"
    );

    // ANY_SOURCE / ANY_TAG at rank 0; tags name the sender.
    if r == 0 {
        let mut seen = Vec::new();
        for _ in 1..n {
            let (v, st) = w.recv::<u64>(ANY_SOURCE, ANY_TAG).map_err(e)?;
            check!(
                st.tag == st.source as i32 + 100 && v == vec![st.source as u64 * 3],
                "{st:?} {v:?}"
            );
            seen.push(st.source);
        }
        seen.sort_unstable();
        check!(seen == (1..n).collect::<Vec<_>>(), "sources {seen:?}");
    } else {
        w.send(0, r as i32 + 100, &[r as u64 * 3]).map_err(e)?;
    }
    w.barrier().map_err(e)?;

    // probe / iprobe.
    if r == 1 {
        w.send(0, 13, &[7u16, 8, 9]).map_err(e)?;
    }
    if r == 0 {
        let st = w.probe(1, 13).map_err(e)?;
        check!(
            st.len == 6 && st.count::<u16>() == 3 && st.kind == hpcbox_comm::Kind::U16,
            "{st:?}"
        );
        check!(
            w.iprobe(1, 13).map_err(e)?.is_some(),
            "iprobe lost the message"
        );
        let (v, _) = w.recv::<u16>(1, 13).map_err(e)?;
        check!(v == vec![7, 8, 9], "{v:?}");
        check!(
            w.iprobe(ANY_SOURCE, 13).map_err(e)?.is_none(),
            "message received twice"
        );
    }

    // A receive of the wrong type fails, naming both types, and consumes the message.
    if r == 0 {
        w.send(1, 14, &[1u32, 2]).map_err(e)?;
    }
    if r == 1 {
        let err = w.recv::<f32>(0, 14).unwrap_err().to_string();
        check!(
            err.contains("holds u32") && err.contains("asked for f32"),
            "{err}"
        );
    }
    check!(
        matches!(w.send(next, -5, &[0u8]), Err(Error::InvalidTag(-5))),
        "negative tag accepted"
    );
    check!(
        matches!(w.recv::<u8>(n, 0), Err(Error::RankOutOfRange { .. })),
        "rank n accepted"
    );

    // Non-blocking: receives posted before the sends, completed by wait_all.
    let recvs = (0..n)
        .filter(|&s| s != r)
        .map(|s| w.irecv::<u32>(s, 15))
        .collect::<Result<Vec<_>, _>>()
        .map_err(e)?;
    let sends = (0..n)
        .filter(|&d| d != r)
        .map(|d| w.isend(d, 15, &[r as u32, d as u32]))
        .collect::<Result<Vec<_>, _>>()
        .map_err(e)?;
    for (v, st) in wait_all(recvs).map_err(e)? {
        check!(v == vec![st.source as u32, r as u32], "irecv {v:?} {st:?}");
    }
    wait_all(sends).map_err(e)?;

    // Non-blocking objects; a send request polled with test().
    let req = w.irecv_obj::<Vec<String>>(prev, 19).map_err(e)?;
    let mut sent = w
        .isend_obj(next, 19, &vec![format!("a{r}"), "b".to_string()])
        .map_err(e)?;
    let (v, st) = req.wait().map_err(e)?;
    check!(
        v == vec![format!("a{prev}"), "b".to_string()] && st.source == prev,
        "irecv_obj {v:?}"
    );
    while !sent.test().map_err(e)? {
        std::thread::yield_now();
    }

    // test() polls until done.
    let mut req = w.irecv::<u8>(prev, 16).map_err(e)?;
    w.isend(next, 16, &[r as u8])
        .map_err(e)?
        .wait()
        .map_err(e)?;
    while !req.test().map_err(e)? {
        std::thread::yield_now();
    }
    check!(req.wait().map_err(e)?.0 == vec![prev as u8], "test/wait");

    // Large messages both ways at once (many times the ring): eager sends never deadlock.
    let big: Vec<u8> = (0..1_000_000u32)
        .map(|i| (i * 13 + r as u32) as u8)
        .collect();
    w.send(next, 17, &big).map_err(e)?;
    let (got, _) = w.recv::<u8>(prev, 17).map_err(e)?;
    check!(got.len() == big.len(), "big len {}", got.len());
    check!(
        got.iter()
            .enumerate()
            .all(|(i, &b)| b == (i as u32 * 13 + prev as u32) as u8),
        "big content"
    );
    w.barrier().map_err(e)
}

/// The combine order the library documents, computed serially: ranks `2i` and `2i + 1` pair
/// up for `i < size - p` (`p` the largest power of two not above the size), then the `p`
/// partial results combine as a balanced binary tree.
fn tree_reference<T: Copy>(parts: Vec<Vec<T>>, f: impl Fn(T, T) -> T) -> Vec<T> {
    let n = parts.len();
    let p = if n.is_power_of_two() {
        n
    } else {
        n.next_power_of_two() / 2
    };
    let combine = |a: &[T], b: &[T]| a.iter().zip(b).map(|(&x, &y)| f(x, y)).collect::<Vec<T>>();
    let mut level: Vec<Vec<T>> = (0..p)
        .map(|v| {
            if v < n - p {
                combine(&parts[2 * v], &parts[2 * v + 1])
            } else {
                parts[v + n - p].clone()
            }
        })
        .collect();
    while level.len() > 1 {
        level = level
            .chunks(2)
            .map(|pair| combine(&pair[0], &pair[1]))
            .collect();
    }
    level.swap_remove(0)
}

fn int_data(r: usize, len: usize) -> Vec<i64> {
    (0..len).map(|i| ((r * 7 + i * 3) % 5) as i64 - 1).collect()
}

fn float_data(r: usize, len: usize) -> Vec<f64> {
    let mut g = Rng::new(r as u64 * 1000 + 17);
    (0..len).map(|_| g.float()).collect()
}

const OPS: [Op; 10] = [
    Op::Sum,
    Op::Prod,
    Op::Min,
    Op::Max,
    Op::LAnd,
    Op::LOr,
    Op::LXor,
    Op::BAnd,
    Op::BOr,
    Op::BXor,
];

fn apply_i64(op: Op, a: i64, b: i64) -> i64 {
    let t = |x: bool| x as i64;
    match op {
        Op::Sum => a.wrapping_add(b),
        Op::Prod => a.wrapping_mul(b),
        Op::Min => a.min(b),
        Op::Max => a.max(b),
        Op::LAnd => t(a != 0 && b != 0),
        Op::LOr => t(a != 0 || b != 0),
        Op::LXor => t((a != 0) != (b != 0)),
        Op::BAnd => a & b,
        Op::BOr => a | b,
        Op::BXor => a ^ b,
    }
}

fn serial_fold(n: usize, len: usize, op: Op) -> Vec<i64> {
    (1..n).fold(int_data(0, len), |acc, r| {
        acc.iter()
            .zip(int_data(r, len))
            .map(|(&a, b)| apply_i64(op, a, b))
            .collect()
    })
}

fn large_of(r: usize) -> Vec<u32> {
    (0..100_000).map(|i| i ^ r as u32).collect()
}

fn bits(v: &[f64]) -> Vec<u64> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn body_collectives() -> Res {
    let w = hpcbox_comm::init().map_err(e)?;
    let (r, n) = (w.rank(), w.size());
    let dir = std::env::var("HPCBOX_TEST_DIR").map_err(|_| "HPCBOX_TEST_DIR unset".to_string())?;

    // Barrier: nobody leaves round k before everybody has entered it.
    for round in 0..3 {
        std::fs::write(format!("{dir}/b{round}-{r}"), b"").map_err(|x| x.to_string())?;
        w.barrier().map_err(e)?;
        for s in 0..n {
            check!(
                std::path::Path::new(&format!("{dir}/b{round}-{s}")).exists(),
                "barrier {round}: rank {s} missing"
            );
        }
    }

    let floats_all: Vec<Vec<f64>> = (0..n).map(|s| float_data(s, 33)).collect();
    for root in 0..n {
        // bcast
        let mut v: Vec<i64> = if r == root {
            (0..=root as i64).map(|i| i * 100 + 1).collect()
        } else {
            vec![-1; 7]
        };
        w.bcast(root, &mut v).map_err(e)?;
        check!(
            v == (0..=root as i64).map(|i| i * 100 + 1).collect::<Vec<_>>(),
            "bcast root {root}: {v:?}"
        );

        // reduce, every predefined op on integers.
        for op in OPS {
            let got = w.reduce(root, &int_data(r, 9), op).map_err(e)?;
            let want = (r == root).then(|| serial_fold(n, 9, op));
            check!(
                got == want,
                "reduce {op:?} root {root}: {got:?} vs {want:?}"
            );
        }
        // reduce of floats: bit-exact against the documented order.
        let got = w.reduce(root, &float_data(r, 33), Op::Sum).map_err(e)?;
        if r == root {
            let want = tree_reference(floats_all.clone(), |a, b| a + b);
            check!(
                got.as_deref().map(bits) == Some(bits(&want)),
                "float reduce root {root}"
            );
        }
        // Non-commutative user operations keep rank order.
        let first = w.reduce_with(root, &[r as u32 + 10], |a, _| a).map_err(e)?;
        let last = w.reduce_with(root, &[r as u32 + 10], |_, b| b).map_err(e)?;
        if r == root {
            check!(
                first == Some(vec![10]) && last == Some(vec![n as u32 + 9]),
                "first/last {first:?} {last:?}"
            );
        }

        // gather / gatherv
        let g = w.gather(root, &[r as i32, -(r as i32)]).map_err(e)?;
        let want = (r == root).then(|| (0..n as i32).flat_map(|s| [s, -s]).collect::<Vec<_>>());
        check!(g == want, "gather root {root}: {g:?}");
        let gv = w.gatherv(root, &vec![r as u8; r]).map_err(e)?;
        let want = (r == root).then(|| (0..n).map(|s| vec![s as u8; s]).collect::<Vec<_>>());
        check!(gv == want, "gatherv root {root}");

        // scatter / scatterv
        let all: Vec<u16> = (0..(3 * n) as u16).collect();
        let mine = w
            .scatter(root, (r == root).then_some(all.as_slice()))
            .map_err(e)?;
        check!(
            mine == all[3 * r..3 * r + 3].to_vec(),
            "scatter root {root}: {mine:?}"
        );
        let none: Vec<u16> = w.scatter(root, (r == root).then_some(&[][..])).map_err(e)?;
        check!(none.is_empty(), "empty scatter gave {none:?}");
        let parts: Vec<Vec<i16>> = (0..n).map(|s| vec![s as i16 * 2; s + 1]).collect();
        let mine = w
            .scatterv(root, (r == root).then_some(parts.as_slice()))
            .map_err(e)?;
        check!(
            mine == vec![r as i16 * 2; r + 1],
            "scatterv root {root}: {mine:?}"
        );

        // objects
        let text = w
            .bcast_obj(root, (r == root).then(|| format!("root is {root}")))
            .map_err(e)?;
        check!(text == format!("root is {root}"), "bcast_obj {text}");
        let names = w.gather_obj(root, &format!("r{r}")).map_err(e)?;
        let want = (r == root).then(|| (0..n).map(|s| format!("r{s}")).collect::<Vec<_>>());
        check!(names == want, "gather_obj {names:?}");
    }

    // allreduce, every op, ints; against the serial fold.
    for op in OPS {
        let got = w.allreduce(&int_data(r, 5), op).map_err(e)?;
        check!(got == serial_fold(n, 5, op), "allreduce {op:?}: {got:?}");
        let got = w.allreduce(&[r as u32 * 3 + 1], op).map_err(e)?;
        let want = (0..n as u32)
            .map(|s| s * 3 + 1)
            .reduce(|a, b| apply_i64(op, a as i64, b as i64) as u32);
        check!(
            Some(got[0]) == want,
            "allreduce u32 {op:?}: {got:?} vs {want:?}"
        );
    }
    // A large buffer (recursive halving and doubling): the same bits as the serial order.
    let big_all: Vec<Vec<f64>> = (0..n).map(|s| float_data(s, 20_001)).collect();
    let big = w.allreduce(&big_all[r], Op::Sum).map_err(e)?;
    check!(
        bits(&big) == bits(&tree_reference(big_all.clone(), |x, y| x + y)),
        "large allreduce order"
    );
    let first = w.allreduce_with(&big_all[r], |a, _| a).map_err(e)?;
    check!(
        bits(&first) == bits(&big_all[0]),
        "large allreduce operand order"
    );
    // Into a caller's buffer: the same bits, large and small, twice (the working space is
    // reused); a buffer of the wrong length is refused.
    for len in [20_001, 33, 0] {
        let mut out = vec![0.0f64; len];
        for _ in 0..2 {
            w.allreduce_into(&big_all[r][..len], &mut out, Op::Sum)
                .map_err(e)?;
            let want = w.allreduce(&big_all[r][..len], Op::Sum).map_err(e)?;
            check!(bits(&out) == bits(&want), "allreduce_into of {len}");
        }
    }
    check!(
        w.allreduce_into(&[1u8, 2], &mut [0u8; 3], Op::Sum).is_err(),
        "allreduce_into with a short buffer"
    );
    // Floats: the documented order, the same bits twice and on every rank.
    let a = w.allreduce(&float_data(r, 33), Op::Sum).map_err(e)?;
    let b = w.allreduce(&float_data(r, 33), Op::Sum).map_err(e)?;
    check!(bits(&a) == bits(&b), "allreduce not reproducible");
    check!(
        bits(&a) == bits(&tree_reference(floats_all.clone(), |x, y| x + y)),
        "allreduce order"
    );
    let everyone = w.allgatherv(&bits(&a)).map_err(e)?;
    check!(
        everyone.iter().all(|v| *v == bits(&a)),
        "ranks disagree on allreduce bits"
    );
    let mx = w.allreduce(&float_data(r, 33), Op::Max).map_err(e)?;
    check!(
        bits(&mx) == bits(&tree_reference(floats_all.clone(), f64::max)),
        "allreduce max"
    );
    let f = w.allreduce_with(&[r as u8, r as u8], |a, _| a).map_err(e)?;
    let l = w.allreduce_with(&[r as u8, r as u8], |_, b| b).map_err(e)?;
    check!(
        f == vec![0, 0] && l == vec![n as u8 - 1; 2],
        "allreduce_with first/last {f:?} {l:?}"
    );
    check!(
        matches!(
            w.allreduce(&[1.0f64], Op::BAnd),
            Err(Error::InvalidOp { .. })
        ),
        "BAnd on f64 accepted"
    );

    check!(
        w.allreduce::<f32>(&[], Op::Max).map_err(e)?.is_empty(),
        "empty allreduce"
    );
    // allgather / allgatherv / allgather_obj
    let ag = w.allgather(&[r as u64, 7]).map_err(e)?;
    check!(
        ag == (0..n as u64).flat_map(|s| [s, 7]).collect::<Vec<_>>(),
        "allgather {ag:?}"
    );
    let agv = w.allgatherv(&vec![r as i8; r % 3]).map_err(e)?;
    check!(
        agv == (0..n).map(|s| vec![s as i8; s % 3]).collect::<Vec<_>>(),
        "allgatherv {agv:?}"
    );
    let objs = w.allgather_obj(&(r, format!("x{r}"))).map_err(e)?;
    check!(
        objs == (0..n).map(|s| (s, format!("x{s}"))).collect::<Vec<_>>(),
        "allgather_obj"
    );

    // alltoall / alltoallv: block j of rank i is i*100 + j.
    let data: Vec<i32> = (0..n).flat_map(|j| [(r * 100 + j) as i32, -1]).collect();
    let got = w.alltoall(&data).map_err(e)?;
    check!(
        got == (0..n)
            .flat_map(|i| [(i * 100 + r) as i32, -1])
            .collect::<Vec<_>>(),
        "alltoall {got:?}"
    );
    let parts: Vec<Vec<f32>> = (0..n).map(|j| vec![(r * 10 + j) as f32; j + r]).collect();
    let got = w.alltoallv(&parts).map_err(e)?;
    check!(
        got == (0..n)
            .map(|i| vec![(i * 10 + r) as f32; r + i])
            .collect::<Vec<_>>(),
        "alltoallv"
    );

    // Many small collectives: oversubscribed worlds must keep moving.
    for i in 0..200u64 {
        let s = w.allreduce(&[i + r as u64], Op::Sum).map_err(e)?;
        check!(
            s[0] == n as u64 * i + (0..n as u64).sum::<u64>(),
            "iteration {i}"
        );
        if i % 20 == 0 {
            w.barrier().map_err(e)?;
        }
    }
    Ok(())
}

/// Collectives of 16 MiB, the largest message size the world is checked at, against the
/// serial reference: bcast, reduce and allreduce of 16 MiB of doubles (bit-identical to the
/// documented order), gather, scatter and allgather of 16 MiB in all, alltoall of 16 MiB
/// from each rank.
fn body_collectives_large() -> Res {
    const LEN: usize = 2 << 20; // doubles: 16 MiB
    let w = hpcbox_comm::init().map_err(e)?;
    let (r, n) = (w.rank(), w.size());
    let all: Vec<Vec<f64>> = (0..n).map(|s| float_data(s, LEN)).collect();
    let root = n - 1;
    let mut v = if r == root {
        all[root].clone()
    } else {
        Vec::new()
    };
    w.bcast(root, &mut v).map_err(e)?;
    check!(bits(&v) == bits(&all[root]), "bcast of 16 MiB");
    let want = tree_reference(all.clone(), |a, b| a + b);
    let sum = w.allreduce(&all[r], Op::Sum).map_err(e)?;
    check!(bits(&sum) == bits(&want), "allreduce of 16 MiB");
    let got = w.reduce(0, &all[r], Op::Sum).map_err(e)?;
    if r == 0 {
        check!(
            got.as_deref().map(bits) == Some(bits(&want)),
            "reduce of 16 MiB"
        );
    }
    let block = LEN / n;
    let gathered = w.allgather(&all[r][..block]).map_err(e)?;
    let want: Vec<f64> = all.iter().flat_map(|a| a[..block].to_vec()).collect();
    check!(bits(&gathered) == bits(&want), "allgather of 16 MiB");
    let got = w.gather(root, &all[r][..block]).map_err(e)?;
    if r == root {
        check!(
            got.as_deref().map(bits) == Some(bits(&want)),
            "gather of 16 MiB"
        );
    }
    let mine = w
        .scatter(root, (r == root).then_some(&all[root][..block * n]))
        .map_err(e)?;
    check!(
        bits(&mine) == bits(&all[root][r * block..(r + 1) * block]),
        "scatter of 16 MiB"
    );
    let exchanged = w.alltoall(&all[r][..block * n]).map_err(e)?;
    let want: Vec<f64> = all
        .iter()
        .flat_map(|a| a[r * block..(r + 1) * block].to_vec())
        .collect();
    check!(bits(&exchanged) == bits(&want), "alltoall of 16 MiB");
    Ok(())
}

/// Collectives over random shapes (roots, lengths from empty to single-copy size, ops,
/// ragged parts, colors), all drawn from one seed, so that every rank can compute every
/// rank's inputs and the serial reference.
fn body_collectives_random() -> Res {
    let seed = env_u64("HPCBOX_TEST_SEED");
    let w = hpcbox_comm::init().map_err(e)?;
    let (r, n) = (w.rank(), w.size());
    let ints = |rank: usize, salt: u64, len: usize| -> Vec<i64> {
        let mut g = Rng::new(salt ^ (rank as u64 + 1).wrapping_mul(0x100_0000_01b3));
        (0..len).map(|_| (g.next() % 2001) as i64 - 1000).collect()
    };
    let floats = |rank: usize, salt: u64, len: usize| -> Vec<f64> {
        let mut g = Rng::new(salt ^ (rank as u64 + 7).wrapping_mul(0x9e37_79b9));
        (0..len).map(|_| g.float()).collect()
    };
    // The plan: the same draws on every rank.
    let mut plan = Rng::new(seed);
    let length = |plan: &mut Rng| match plan.below(6) {
        0 => 0,
        1 => 20_000 + plan.below(20_000), // 160 KiB and more: single copy
        2 => 1 + plan.below(3),
        _ => plan.below(200),
    };
    for round in 0..4 {
        let root = plan.below(n);
        let len = length(&mut plan);
        let salt = plan.next();

        let mut v = if r == root {
            ints(root, salt, len)
        } else {
            vec![5; 3]
        };
        w.bcast(root, &mut v).map_err(e)?;
        check!(
            v == ints(root, salt, len),
            "round {round}: bcast from {root}, {len} elements"
        );

        let op = OPS[plan.below(OPS.len())];
        let want = (1..n).fold(ints(0, salt ^ 1, len), |acc, s| {
            acc.iter()
                .zip(ints(s, salt ^ 1, len))
                .map(|(&a, b)| apply_i64(op, a, b))
                .collect()
        });
        let got = w.reduce(root, &ints(r, salt ^ 1, len), op).map_err(e)?;
        check!(
            got == (r == root).then(|| want.clone()),
            "round {round}: reduce {op:?} at {root}"
        );
        let got = w.allreduce(&ints(r, salt ^ 1, len), op).map_err(e)?;
        check!(got == want, "round {round}: allreduce {op:?}");

        let all_f: Vec<Vec<f64>> = (0..n).map(|s| floats(s, salt, len)).collect();
        let got = w.allreduce(&floats(r, salt, len), Op::Sum).map_err(e)?;
        check!(
            bits(&got) == bits(&tree_reference(all_f, |a, b| a + b)),
            "round {round}: float allreduce"
        );

        let lens: Vec<usize> = (0..n).map(|_| length(&mut plan)).collect();
        let part = |s: usize| ints(s, salt ^ 2, lens[s]);
        let parts: Vec<Vec<i64>> = (0..n).map(part).collect();
        let got = w.gatherv(root, &part(r)).map_err(e)?;
        check!(
            got == (r == root).then(|| parts.clone()),
            "round {round}: gatherv at {root}"
        );
        check!(
            w.allgatherv(&part(r)).map_err(e)? == parts,
            "round {round}: allgatherv"
        );
        let got = w
            .scatterv(root, (r == root).then_some(parts.as_slice()))
            .map_err(e)?;
        check!(got == part(r), "round {round}: scatterv from {root}");

        // alltoallv: rank i sends rank j a vector of length L[i][j].
        let l: Vec<Vec<usize>> = (0..n)
            .map(|_| (0..n).map(|_| plan.below(3000)).collect())
            .collect();
        let piece = |i: usize, j: usize| ints(i * n + j, salt ^ 3, l[i][j]);
        let got = w
            .alltoallv(&(0..n).map(|j| piece(r, j)).collect::<Vec<_>>())
            .map_err(e)?;
        check!(
            got == (0..n).map(|i| piece(i, r)).collect::<Vec<_>>(),
            "round {round}: alltoallv"
        );

        // split: random colors (some ranks opt out) and keys.
        let colors: Vec<Option<u32>> = (0..n)
            .map(|_| plan.below(4).checked_sub(1).map(|c| c as u32))
            .collect();
        let keys: Vec<i32> = (0..n).map(|_| plan.below(5) as i32 - 2).collect();
        let sub = w.split(colors[r], keys[r]).map_err(e)?;
        match (colors[r], sub) {
            (None, None) => {}
            (Some(c), Some(sub)) => {
                let mut members: Vec<(i32, usize)> = (0..n)
                    .filter(|&s| colors[s] == Some(c))
                    .map(|s| (keys[s], s))
                    .collect();
                members.sort_unstable();
                check!(
                    sub.size() == members.len() && members[sub.rank()].1 == r,
                    "round {round}: split"
                );
                let total = sub.allreduce(&[r as u64], Op::Sum).map_err(e)?;
                check!(
                    total[0] == members.iter().map(|m| m.1 as u64).sum::<u64>(),
                    "round {round}: sub sum"
                );
            }
            (c, s) => return Err(format!("round {round}: color {c:?} gave {}", s.is_some())),
        }
    }
    w.barrier().map_err(e)
}

fn body_split() -> Res {
    let w = hpcbox_comm::init().map_err(e)?;
    let (r, n) = (w.rank(), w.size());
    // Color r % 3, rank 4 opts out; key reverses the order.
    let color = (r != 4).then_some((r % 3) as u32);
    let sub = w.split(color, -(r as i32)).map_err(e)?;
    check!(
        w.split(Some(0), 0).map_err(e)?.map(|c| c.size()) == Some(n),
        "world dup by split"
    );
    if r != 0 {
        w.send(0, 0, &[2u8, r as u8]).map_err(e)?;
    }
    let Some(sub) = sub else {
        check!(r == 4, "rank {r} got no communicator");
        return w.barrier().map_err(e);
    };
    let members: Vec<usize> = (0..n).rev().filter(|&s| s != 4 && s % 3 == r % 3).collect();
    check!(
        sub.size() == members.len(),
        "size {} vs {members:?}",
        sub.size()
    );
    check!(
        members[sub.rank()] == r,
        "rank {} in {members:?}",
        sub.rank()
    );
    let total = sub.allreduce(&[r as u64], Op::Sum).map_err(e)?;
    check!(
        total[0] == members.iter().map(|&s| s as u64).sum::<u64>(),
        "sub allreduce {total:?}"
    );

    // Same tag on both communicators: each message stays on its own.
    if sub.rank() != 0 {
        sub.send(0, 0, &[1u8, r as u8]).map_err(e)?;
    }
    if sub.rank() == 0 {
        for _ in 1..sub.size() {
            let (v, st) = sub.recv::<u8>(ANY_SOURCE, ANY_TAG).map_err(e)?;
            check!(
                v == vec![1, members[st.source] as u8],
                "sub message {v:?} {st:?}"
            );
        }
    }
    if r == 0 {
        for _ in 1..n {
            let (v, st) = w.recv::<u8>(ANY_SOURCE, ANY_TAG).map_err(e)?;
            check!(v == vec![2, st.source as u8], "world message {v:?} {st:?}");
        }
    }
    // A split of a split, and a dup.
    let d = sub.dup().map_err(e)?;
    let halves = d
        .split(Some((d.rank() % 2) as u32), 0)
        .map_err(e)?
        .ok_or("no half")?;
    let h = halves.allgather(&[r as u32]).map_err(e)?;
    let want: Vec<u32> = members
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 2 == d.rank() % 2)
        .map(|(_, &m)| m as u32)
        .collect();
    check!(h == want, "halves {h:?} vs {want:?}");
    w.barrier().map_err(e)
}

/// The longest message of the random traffic, in u32s.
const TRAFFIC_MAX_LEN: usize = 3 + 32_768 + 40_000;

/// One message of the random traffic: (destination, tag, length in u32s, ≥ 3).
fn traffic_plan(seed: u64, sender: usize, n: usize) -> Vec<(usize, i32, usize)> {
    let mut g = Rng::new(seed ^ (sender as u64 + 1).wrapping_mul(0x2545_f491_4f6c_dd1d));
    let count = g.below(30);
    (0..count)
        .map(|_| {
            let len = match g.below(16) {
                0 => 32_768 + g.below(40_000), // 128 KiB and more: single copy
                1..=2 => g.below(5000),
                _ => g.below(20),
            };
            (g.below(n), g.below(3) as i32, 3 + len)
        })
        .collect()
}

fn traffic_payload(sender: usize, k: usize, tag: i32, len: usize) -> Vec<u32> {
    let mut v = vec![sender as u32, k as u32, tag as u32];
    v.extend((3..len).map(|i| (sender * 7919 + k * 104_729 + i) as u32));
    v
}

fn body_traffic() -> Res {
    let seed = env_u64("HPCBOX_TEST_SEED");
    let w = hpcbox_comm::init().map_err(e)?;
    let (r, n) = (w.rank(), w.size());
    let plans: Vec<_> = (0..n).map(|s| traffic_plan(seed, s, n)).collect();
    // What arrives here, per (source, tag): k's in send order.
    let mut expected: BTreeMap<(usize, i32), Vec<usize>> = BTreeMap::new();
    for (s, plan) in plans.iter().enumerate() {
        for (k, &(d, t, _)) in plan.iter().enumerate() {
            if d == r {
                expected.entry((s, t)).or_default().push(k);
            }
        }
    }
    let total: usize = expected.values().map(Vec::len).sum();
    let mut g = Rng::new(seed.wrapping_mul(31) + r as u64);

    // Receive filters: some specific, then some of a middle class, then any/any, so that
    // every receive is satisfiable whatever each one takes.
    let mut filters: Vec<(usize, i32)> = Vec::new();
    let mut left = expected
        .iter()
        .map(|(&st, ks)| (st, ks.len()))
        .collect::<BTreeMap<_, _>>();
    for (&(s, t), c) in left.iter_mut() {
        let take = g.below(*c + 1);
        filters.extend(std::iter::repeat_n((s, t), take));
        *c -= take;
    }
    let by_source = g.below(2) == 0;
    let mut middle: BTreeMap<usize, usize> = BTreeMap::new();
    for (&(s, t), &c) in &left {
        *middle
            .entry(if by_source { s } else { t as usize })
            .or_default() += c;
    }
    for (&key, &c) in &middle {
        let take = g.below(c + 1);
        let f = if by_source {
            (key, ANY_TAG)
        } else {
            (ANY_SOURCE, key as i32)
        };
        filters.extend(std::iter::repeat_n(f, take));
    }
    filters.extend(std::iter::repeat_n(
        (ANY_SOURCE, ANY_TAG),
        total - filters.len(),
    ));

    // Some receives posted before any send.
    let early = g.below(filters.len() + 1);
    let pre = filters[..early]
        .iter()
        .map(|&(s, t)| w.irecv::<u32>(s, t))
        .collect::<Result<Vec<_>, _>>()
        .map_err(e)?;
    let mut sends = Vec::new();
    for (k, &(d, t, len)) in plans[r].iter().enumerate() {
        let p = traffic_payload(r, k, t, len);
        if g.below(2) == 0 {
            w.send(d, t, &p).map_err(e)?;
        } else {
            sends.push(w.isend(d, t, &p).map_err(e)?);
        }
    }
    let mut got: Vec<(usize, Vec<u32>, hpcbox_comm::Status)> = Vec::new();
    for &(s, t) in &filters[early..] {
        // Half into a buffer (the short way, when nothing else is pending), half by vector.
        let (v, st) = if g.below(2) == 0 {
            w.recv::<u32>(s, t).map_err(e)?
        } else {
            let mut buf = vec![0u32; TRAFFIC_MAX_LEN];
            let st = w.recv_into(s, t, &mut buf).map_err(e)?;
            buf.truncate(st.count::<u32>());
            (buf, st)
        };
        got.push((0, v, st));
    }
    let mut results: Vec<_> = wait_all(pre)
        .map_err(e)?
        .into_iter()
        .map(|(v, st)| (0, v, st))
        .collect();
    results.extend(got);
    for (i, x) in results.iter_mut().enumerate() {
        x.0 = i; // posting order: pre-posted first, then the blocking ones in order
    }
    wait_all(sends).map_err(e)?;

    let mut streams: BTreeMap<(usize, i32), Vec<usize>> = BTreeMap::new();
    for (i, v, st) in &results {
        let (fs, ft) = filters[*i];
        check!(v.len() >= 3, "short payload {v:?}");
        let (s, k, t) = (v[0] as usize, v[1] as usize, v[2] as i32);
        check!(
            st.source == s && st.tag == t && st.len == 4 * v.len(),
            "status {st:?} for ({s},{k},{t})"
        );
        check!(
            (fs == ANY_SOURCE || fs == s) && (ft == ANY_TAG || ft == t),
            "filter ({fs},{ft}) took ({s},{t})"
        );
        let len = plans[s].get(k).map(|p| p.2).ok_or("unknown message")?;
        check!(
            *v == traffic_payload(s, k, t, len),
            "payload of ({s},{k},{t})"
        );
        streams.entry((s, t)).or_default().push(k);
    }
    check!(
        streams == expected,
        "seed {seed}: rank {r} streams {streams:?} vs {expected:?}"
    );
    Ok(())
}

fn body_exit_early() -> Res {
    let w = hpcbox_comm::init().map_err(e)?;
    if w.rank() == 1 {
        std::process::exit(3);
    }
    // Waits forever for rank 1: the launcher must end this.
    w.recv::<u8>(1, 0).map_err(e)?;
    Err("received from a dead rank".into())
}

fn body_deadlock() -> Res {
    let w = hpcbox_comm::init().map_err(e)?;
    match w.rank() {
        0 => drop(w.recv::<u8>(1, 7).map_err(e)?),
        1 => w.barrier().map_err(e)?,
        _ => std::thread::sleep(Duration::from_secs(100)),
    }
    Err("the deadlock ended".into())
}

fn body_killed() -> Res {
    let w = hpcbox_comm::init().map_err(e)?;
    w.barrier().map_err(e)?;
    if w.rank() == w.size() - 1 {
        nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL).map_err(|x| x.to_string())?;
    }
    loop {
        w.allreduce(&[1u8], Op::Sum).map_err(e)?;
    }
}

fn body_panic() -> Res {
    let w = hpcbox_comm::init().map_err(e)?;
    if w.rank() == 0 {
        panic!("rank 0 gives up");
    }
    w.barrier().map_err(e)
}

fn body_orphan_wait() -> Res {
    let w = hpcbox_comm::init().map_err(e)?;
    if w.rank() != 0 {
        return Ok(());
    }
    // Everybody else has finished without sending: this must fail, not hang.
    match w.recv::<u8>(ANY_SOURCE, ANY_TAG) {
        Err(Error::PeersFinished) => {
            eprintln!("rank 0: {}", Error::PeersFinished);
            std::process::exit(7)
        }
        other => Err(format!("recv gave {other:?}")),
    }
}

fn body_sleep() -> Res {
    let w = hpcbox_comm::init().map_err(e)?;
    w.barrier().map_err(e)?;
    println!("ready {}", w.rank());
    std::thread::sleep(Duration::from_secs(30));
    Err("slept through the interrupt".into())
}

fn body_pid_sleep() -> Res {
    let w = hpcbox_comm::init().map_err(e)?;
    let dir = std::env::var("HPCBOX_TEST_DIR").map_err(|_| "HPCBOX_TEST_DIR unset".to_string())?;
    let pid = std::process::id();
    std::fs::write(format!("{dir}/pid-{}", w.rank()), pid.to_string())
        .map_err(|x| x.to_string())?;
    std::thread::sleep(Duration::from_secs(30));
    Err("outlived the launcher".into())
}

fn run_body(name: &str) -> Res {
    match name {
        "pid_sleep" => body_pid_sleep(),
        "sleep" => body_sleep(),
        "orphan_wait" => body_orphan_wait(),
        "hello" => body_hello(),
        "p2p" => body_p2p(),
        "collectives" => body_collectives(),
        "split" => body_split(),
        "collectives_random" => body_collectives_random(),
        "collectives_large" => body_collectives_large(),
        "traffic" => body_traffic(),
        "exit_early" => body_exit_early(),
        "killed" => body_killed(),
        "deadlock" => body_deadlock(),
        "panic" => body_panic(),
        _ => Err(format!("no rank body {name}")),
    }
}

// ---------------------------------------------------------------- driver

struct World {
    outcome: LaunchOutcome,
    lines: Vec<(usize, Stream, String)>,
}

fn world(np: usize, body: &str, env: &[(&str, String)]) -> World {
    world_of(
        std::env::current_exe()
            .expect("test binary path")
            .into_os_string(),
        np,
        body,
        env,
    )
}

fn world_of(program: std::ffi::OsString, np: usize, body: &str, env: &[(&str, String)]) -> World {
    let mut spec = LaunchSpec::new(np, program);
    spec.env = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    spec.env.push(("HPCBOX_TEST_BODY".into(), body.into()));
    spec.stdin = StdinMode::Null;
    spec.timeout = Some(Duration::from_secs(60));
    let sink = Arc::new(Collect::default());
    let outcome = launch_with(&spec, sink.clone()).expect("launch");
    let lines = std::mem::take(&mut *sink.0.lock().unwrap());
    World { outcome, lines }
}

fn expect_success(label: &str, w: &World) -> Res {
    if w.outcome.status != 0 {
        let text: Vec<String> = w
            .lines
            .iter()
            .map(|(r, _, l)| format!("[{r}] {l}"))
            .collect();
        return Err(format!(
            "{label}: status {} ({:?})\n{}",
            w.outcome.status,
            w.outcome.failure,
            text.join("\n")
        ));
    }
    Ok(())
}

fn tmpdir() -> std::path::PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let d = std::env::temp_dir().join(format!(
        "hpcbox-world-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The transports the worlds run over: shared memory with single copy of large messages,
/// with tiny rings (every message streams through in pieces), with receivers that decline
/// single copy (the fallback), and TCP.
fn transports() -> [(&'static str, Vec<(&'static str, String)>); 5] {
    [
        ("shm", vec![]),
        (
            "shm-small-ring",
            vec![
                ("HPCBOX_SHM_RING_BYTES", "4096".into()),
                ("HPCBOX_SHM_SINGLE_COPY", "off".into()),
            ],
        ),
        (
            "shm-declined",
            vec![("HPCBOX_SHM_SINGLE_COPY", "refuse".into())],
        ),
        (
            "shm-unhelped",
            vec![("HPCBOX_SHM_SINGLE_COPY", "unhelped".into())],
        ),
        ("tcp", vec![("HPCBOX_TRANSPORT", "tcp".into())]),
    ]
}

fn hello_lines(w: &World, np: usize) -> Res {
    let mut got: Vec<&str> = w
        .lines
        .iter()
        .filter(|l| l.1 == Stream::Stdout)
        .map(|l| l.2.as_str())
        .collect();
    got.sort_unstable();
    let mut want: Vec<String> = (0..np)
        .map(|r| format!("I am rank {r} in group of {np} processes."))
        .collect();
    want.sort_unstable();
    check!(got == want, "hello lines {got:?}");
    Ok(())
}

fn case_hello() -> Res {
    for np in 1..=4 {
        let w = world(np, "hello", &[]);
        expect_success("hello", &w)?;
        hello_lines(&w, np)?;
    }
    Ok(())
}

/// An example binary built beside this test (cargo test builds the examples next to the
/// test binaries' deps/ directory), or None when this run did not build examples.
fn example(name: &str) -> Option<std::path::PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let path = exe.parent()?.parent()?.join("examples").join(name);
    if !path.exists() {
        println!("  (examples/{name} not built; run `cargo test` without --test to include it)");
        return None;
    }
    Some(path)
}

fn case_hello_example() -> Res {
    let Some(example) = example("mpi_hello") else {
        return Ok(());
    };
    for np in [1, 3] {
        let w = world_of(example.clone().into_os_string(), np, "", &[]);
        expect_success("mpi_hello example", &w)?;
        hello_lines(&w, np)?;
    }
    Ok(())
}

fn case_p2p() -> Res {
    for (name, env) in transports() {
        for np in [2, 3, 5] {
            expect_success(&format!("p2p {name} np={np}"), &world(np, "p2p", &env))?;
        }
    }
    Ok(())
}

fn case_collectives() -> Res {
    for (name, env) in transports() {
        let sizes: &[usize] = if name == "shm" {
            &[1, 2, 3, 4, 5, 6, 7, 8]
        } else {
            &[3, 4]
        };
        for &np in sizes {
            let dir = tmpdir();
            let mut env = env.clone();
            env.push(("HPCBOX_TEST_DIR", dir.display().to_string()));
            let w = world(np, "collectives", &env);
            let _ = std::fs::remove_dir_all(&dir);
            expect_success(&format!("collectives {name} np={np}"), &w)?;
        }
    }
    Ok(())
}

fn case_collectives_large() -> Res {
    for (name, env) in transports() {
        let sizes: &[usize] = if name == "shm" { &[2, 3, 4] } else { &[3] };
        for &np in sizes {
            let w = world(np, "collectives_large", &env);
            expect_success(&format!("collectives_large {name} np={np}"), &w)?;
        }
    }
    Ok(())
}

fn case_collectives_property() -> Res {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestCaseError, TestRunner};
    let mut runner = TestRunner::new(Config {
        cases: 12,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(
            &(1usize..=6, any::<u64>(), 0usize..transports().len()),
            |(np, seed, t)| {
                let (name, mut env) = transports()[t].clone();
                env.push(("HPCBOX_TEST_SEED", seed.to_string()));
                let w = world(np, "collectives_random", &env);
                expect_success(
                    &format!("collectives_random {name} np={np} seed={seed}"),
                    &w,
                )
                .map_err(TestCaseError::fail)
            },
        )
        .map_err(|x| x.to_string())
}

fn case_split() -> Res {
    for np in [1, 2, 6, 7] {
        expect_success(&format!("split np={np}"), &world(np, "split", &[]))?;
    }
    Ok(())
}

fn case_traffic_property() -> Res {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestCaseError, TestRunner};
    let mut runner = TestRunner::new(Config {
        cases: 24,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(
            &(2usize..=5, any::<u64>(), 0usize..transports().len()),
            |(np, seed, t)| {
                let (name, mut env) = transports()[t].clone();
                env.push(("HPCBOX_TEST_SEED", seed.to_string()));
                let w = world(np, "traffic", &env);
                expect_success(&format!("traffic {name} np={np} seed={seed}"), &w)
                    .map_err(TestCaseError::fail)
            },
        )
        .map_err(|x| x.to_string())
}

fn case_rank_exits_early() -> Res {
    let t = Instant::now();
    let w = world(4, "exit_early", &[]);
    check!(
        t.elapsed() < Duration::from_secs(20),
        "took {:?}",
        t.elapsed()
    );
    check!(w.outcome.status == 3, "status {}", w.outcome.status);
    let msg = w.outcome.failure.map(|f| f.to_string()).unwrap_or_default();
    check!(
        msg == format!("rank 1 on {} exited with status 3", hostname()),
        "{msg}"
    );
    Ok(())
}

fn case_timeout_names_blocked_calls() -> Res {
    let exe = std::env::current_exe().expect("test binary path");
    let mut spec = LaunchSpec::new(3, exe.into_os_string());
    spec.env
        .push(("HPCBOX_TEST_BODY".into(), "deadlock".into()));
    spec.stdin = StdinMode::Null;
    spec.timeout = Some(Duration::from_secs(2));
    let outcome = launch_with(&spec, Arc::new(Collect::default())).expect("launch");
    check!(outcome.status == 124, "status {}", outcome.status);
    let msg = outcome.failure.map(|f| f.to_string()).unwrap_or_default();
    check!(
        msg == "timed out after 2 s; rank 0 blocked in recv(source=1, tag=7); \
                rank 1 blocked in barrier(); rank 2 running; all ranks killed",
        "{msg}"
    );
    Ok(())
}

fn case_rank_killed() -> Res {
    for (name, env) in transports() {
        let t = Instant::now();
        let w = world(3, "killed", &env);
        check!(
            t.elapsed() < Duration::from_secs(20),
            "{name}: took {:?}",
            t.elapsed()
        );
        check!(
            w.outcome.status == 137,
            "{name}: status {}",
            w.outcome.status
        );
        let msg = w.outcome.failure.map(|f| f.to_string()).unwrap_or_default();
        check!(
            msg == format!("rank 2 on {} killed by signal 9", hostname()),
            "{name}: {msg}"
        );
    }
    Ok(())
}

/// A rank waiting for messages from ranks that have all finished gets an error, not a hang.
fn case_wait_on_finished_ranks() -> Res {
    for (name, env) in transports() {
        let t = Instant::now();
        let w = world(3, "orphan_wait", &env);
        check!(
            t.elapsed() < Duration::from_secs(20),
            "{name}: took {:?}",
            t.elapsed()
        );
        check!(
            w.outcome.status == 7,
            "{name}: status {} {:?}",
            w.outcome.status,
            w.lines
        );
        check!(
            w.lines
                .iter()
                .any(|(r, _, l)| *r == 0 && l.contains("every other rank has finished")),
            "{name}: {:?}",
            w.lines
        );
    }
    Ok(())
}

fn case_rank_panics() -> Res {
    let w = world(3, "panic", &[]);
    check!(w.outcome.status == 101, "status {}", w.outcome.status);
    check!(
        w.lines
            .iter()
            .any(|(r, s, l)| *r == 0 && *s == Stream::Stderr && l.contains("rank 0 gives up")),
        "panic message not forwarded: {:?}",
        w.lines
    );
    Ok(())
}

/// A launcher killed by SIGKILL takes its ranks with it.
fn case_launcher_killed() -> Res {
    let Some(mpiexec) = example("mpiexec") else {
        return Ok(());
    };
    let dir = tmpdir();
    let mut child = std::process::Command::new(mpiexec)
        .args(["-n", "3"])
        .arg(std::env::current_exe().map_err(|x| x.to_string())?)
        .env("HPCBOX_TEST_BODY", "pid_sleep")
        .env("HPCBOX_TEST_DIR", &dir)
        .spawn()
        .map_err(|x| x.to_string())?;
    let t = Instant::now();
    let pid_file = |r: usize| std::fs::read_to_string(dir.join(format!("pid-{r}"))).ok();
    while (0..3).any(|r| pid_file(r).is_none()) && t.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().map_err(|x| x.to_string())?;
    child.wait().map_err(|x| x.to_string())?;
    for r in 0..3 {
        let pid: i32 = pid_file(r)
            .and_then(|p| p.trim().parse().ok())
            .ok_or(format!("rank {r} never started"))?;
        let alive = || {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                !s.rsplit(')')
                    .next()
                    .is_some_and(|r| r.trim_start().starts_with('Z'))
            })
        };
        let t = Instant::now();
        while alive() && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(10));
        }
        check!(!alive(), "rank {r} (pid {pid}) outlived its launcher");
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Ctrl-C at the launcher reaches every rank, and the launch ends with 128 + SIGINT.
fn case_interrupt() -> Res {
    /// Passes output lines on to the test.
    struct Lines(Mutex<std::sync::mpsc::Sender<String>>);
    impl OutputSink for Lines {
        fn line(&self, _: usize, _: Stream, line: &[u8]) {
            let _ = self
                .0
                .lock()
                .unwrap()
                .send(String::from_utf8_lossy(line).into_owned());
        }
    }
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let pid = nix::unistd::getpid();
    // Interrupt once every rank is up: the launcher is catching signals by then.
    let poke = std::thread::spawn(move || {
        let mut ready = 0;
        while ready < 3 {
            match rx.recv_timeout(Duration::from_secs(30)) {
                Ok(l) if l.starts_with("ready") => ready += 1,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).is_ok()
    });
    let mut spec = LaunchSpec::new(3, std::env::current_exe().map_err(|x| x.to_string())?);
    spec.env = vec![("HPCBOX_TEST_BODY".into(), "sleep".into())];
    spec.stdin = StdinMode::Null;
    spec.timeout = Some(Duration::from_secs(60));
    let t = Instant::now();
    let outcome = launch_with(&spec, Arc::new(Lines(Mutex::new(tx)))).map_err(e)?;
    check!(poke.join().unwrap_or(false), "the ranks never got ready");
    check!(
        t.elapsed() < Duration::from_secs(20),
        "took {:?}",
        t.elapsed()
    );
    check!(outcome.status == 130, "status {}", outcome.status);
    let w = World {
        outcome,
        lines: Vec::new(),
    };
    let msg = w.outcome.failure.map(|f| f.to_string()).unwrap_or_default();
    check!(msg.ends_with("killed by signal 2"), "{msg}");
    Ok(())
}

fn main() {
    let cases: &[(&str, Case)] = &[
        ("hello", case_hello),
        ("hello_example", case_hello_example),
        ("p2p", case_p2p),
        ("collectives", case_collectives),
        ("collectives_large", case_collectives_large),
        ("split", case_split),
        ("collectives_property", case_collectives_property),
        ("traffic_property", case_traffic_property),
        ("rank_exits_early", case_rank_exits_early),
        ("rank_killed", case_rank_killed),
        (
            "timeout_names_blocked_calls",
            case_timeout_names_blocked_calls,
        ),
        ("rank_panics", case_rank_panics),
        ("wait_on_finished_ranks", case_wait_on_finished_ranks),
        ("interrupt", case_interrupt),
        ("launcher_killed", case_launcher_killed),
        #[cfg(feature = "mpi")]
        ("system_mpi", case_system_mpi),
        ("no_world_left_behind", case_no_rendezvous_left),
    ];
    common::main(run_body, cases, "world");
}

/// With the `mpi` feature: the same rank bodies, started by the system MPI's own `mpirun`
/// (Open MPI's), talk through that MPI and pass as they do under `hpcbox mpiexec`. Skipped
/// when there is no `mpirun`, unless `HPCBOX_REQUIRE_MPI` is set.
#[cfg(feature = "mpi")]
fn case_system_mpi() -> Res {
    let mpirun = ["mpirun.openmpi", "mpirun"].into_iter().find(|m| {
        std::process::Command::new(m)
            .arg("--version")
            .output()
            .is_ok()
    });
    let Some(mpirun) = mpirun else {
        check!(
            std::env::var_os("HPCBOX_REQUIRE_MPI").is_none(),
            "HPCBOX_REQUIRE_MPI is set but there is no mpirun"
        );
        println!("(no mpirun: system_mpi skipped)");
        return Ok(());
    };
    let exe = std::env::current_exe().map_err(|x| x.to_string())?;
    for (body, sizes) in [
        ("hello", &[1usize, 3][..]),
        ("p2p", &[2, 3]),
        ("collectives", &[1, 2, 3, 4, 5]),
        ("split", &[4]),
        ("traffic", &[3]),
    ] {
        for &np in sizes {
            let dir = tmpdir();
            let out = std::process::Command::new(mpirun)
                .args(["--oversubscribe", "-np", &np.to_string()])
                .arg(&exe)
                .env("HPCBOX_TEST_BODY", body)
                .env("HPCBOX_TEST_DIR", &dir)
                .env("HPCBOX_TEST_SEED", "7")
                .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
                .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
                .output()
                .map_err(|x| x.to_string())?;
            let _ = std::fs::remove_dir_all(&dir);
            let text = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            check!(
                out.status.success(),
                "{body} np={np} under {mpirun}: {text}"
            );
            if body == "hello" {
                // One world of np ranks, not np worlds of one.
                let mut said: Vec<&str> = text.lines().filter(|l| l.starts_with("I am")).collect();
                said.sort_unstable();
                let want: Vec<String> = (0..np)
                    .map(|r| format!("I am rank {r} in group of {np} processes."))
                    .collect();
                check!(said == want, "{np} ranks said: {said:?}");
            }
        }
    }
    Ok(())
}

/// After all the worlds above, no rendezvous directory of this process's launches remains.
fn case_no_rendezvous_left() -> Res {
    let prefix = format!("hpcbox-{}-", std::process::id());
    for base in ["/dev/shm".into(), std::env::temp_dir()] {
        if let Ok(rd) = std::fs::read_dir(&base) {
            for entry in rd.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                check!(
                    !name.starts_with(&prefix),
                    "left behind: {}",
                    entry.path().display()
                );
            }
        }
    }
    Ok(())
}

//! Process workers against Python's documented `Pool` semantics, and the failures Python
//! handles badly: worker death by each signal, terminate latency, no leftover process.

use std::collections::HashSet;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use hpcbox_pool::{default_chunksize, Death, Pool, PoolError};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

fn addit(x: i64) -> i64 {
    x + 1
}

fn pid_of(_: u32) -> u32 {
    std::process::id()
}

fn add(a: i64, b: i64) -> i64 {
    a + b
}

fn panics_on_3_and_7(x: u32) -> u32 {
    if x == 3 || x == 7 {
        panic!("bad item {x}");
    }
    x * 10
}

/// A pipe the test reads and a task writes (or the other way round); fds survive the fork.
struct Pipe {
    r: OwnedFd,
    w: OwnedFd,
}

impl Pipe {
    fn new() -> Self {
        let (r, w) = nix::unistd::pipe().unwrap();
        Pipe { r, w }
    }

    fn read_u32(&self) -> u32 {
        let mut b = [0u8; 4];
        let mut got = 0;
        while got < 4 {
            let n = nix::unistd::read(&self.r, &mut b[got..]).unwrap();
            assert!(n > 0, "pipe closed");
            got += n;
        }
        u32::from_le_bytes(b)
    }

    fn write_byte(&self) {
        nix::unistd::write(&self.w, &[1]).unwrap();
    }
}

fn write_fd(fd: i32, bytes: &[u8]) {
    // SAFETY: writing a live buffer to a descriptor the test keeps open.
    let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
    assert_eq!(n as usize, bytes.len());
}

/// Reports its pid on `report`, then blocks until a byte arrives on `release`.
fn report_then_block((report, release): (i32, i32)) -> u32 {
    write_fd(report, &std::process::id().to_le_bytes());
    let mut b = [0u8; 1];
    // SAFETY: reading into a stack buffer.
    unsafe { libc::read(release, b.as_mut_ptr().cast(), 1) };
    std::process::id()
}

fn no_core_dump() {
    let zero = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: setrlimit with a valid struct.
    unsafe { libc::setrlimit(libc::RLIMIT_CORE, &zero) };
}

/// Raises `sig` with its default action (Rust's runtime handles SIGSEGV for stack overflows
/// and would otherwise let a raised, not faulted, SIGSEGV return).
fn raise(sig: i32) {
    no_core_dump();
    // SAFETY: resetting a handler and raising a signal at ourselves.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
}

fn segv_on_2(x: u32) -> u32 {
    if x == 2 {
        raise(libc::SIGSEGV);
    }
    x
}

fn abort_on_2(x: u32) -> u32 {
    if x == 2 {
        no_core_dump();
        std::process::abort();
    }
    x
}

fn term_on_2(x: u32) -> u32 {
    if x == 2 {
        raise(libc::SIGTERM);
    }
    x
}

fn kill_self_on_2(x: u32) -> u32 {
    if x == 2 {
        raise(libc::SIGKILL);
    }
    x
}

fn exit_on_2(x: u32) -> u32 {
    if x == 2 {
        std::process::exit(3);
    }
    x
}

/// Out of memory: the address space is capped, then a large allocation fails and Rust aborts.
fn oom_on_2(x: u32) -> u32 {
    if x == 2 {
        no_core_dump();
        let cap = libc::rlimit {
            rlim_cur: 256 << 20,
            rlim_max: 256 << 20,
        };
        // SAFETY: setrlimit with a valid struct.
        unsafe { libc::setrlimit(libc::RLIMIT_AS, &cap) };
        let v = std::hint::black_box(vec![1u8; 1 << 30]);
        return v[v.len() - 1] as u32;
    }
    x
}

/// Runs `f` over 0..6 one item per task; item 2 must fail with `death`, the rest succeed, and
/// the pool must go on working.
fn check_death<F>(f: F, death: Death)
where
    F: Fn(u32) -> u32 + Copy + Send + Sync + 'static,
{
    let pool = Pool::new(2).unwrap();
    let before: HashSet<u32> = pool.worker_pids().into_iter().collect();
    let results = pool.map_results(f, 0..6u32).unwrap();
    for (i, r) in results.iter().enumerate() {
        if i == 2 {
            match r {
                Err(PoolError::WorkerDied {
                    index,
                    death: d,
                    pid,
                    ..
                }) => {
                    assert_eq!(*index, 2);
                    assert_eq!(*d, death);
                    assert!(before.contains(pid) || *pid > 0);
                }
                other => panic!("item 2: expected a worker death, got {other:?}"),
            }
        } else {
            assert_eq!(r, &Ok(i as u32), "item {i}");
        }
    }
    assert_eq!(pool.worker_pids().len(), 2, "a replacement was started");
    assert_eq!(pool.map(addit, vec![1, 2, 3]).unwrap(), vec![2, 3, 4]);
}

#[test]
fn death_by_sigsegv() {
    check_death(segv_on_2, Death::Signal(libc::SIGSEGV));
}

#[test]
fn death_by_sigabrt() {
    check_death(abort_on_2, Death::Signal(libc::SIGABRT));
}

#[test]
fn death_by_sigterm() {
    check_death(term_on_2, Death::Signal(libc::SIGTERM));
}

#[test]
fn death_by_sigkill_from_inside() {
    check_death(kill_self_on_2, Death::Signal(libc::SIGKILL));
}

#[test]
fn death_by_exit() {
    check_death(exit_on_2, Death::Exit(3));
}

#[test]
fn death_by_out_of_memory() {
    check_death(oom_on_2, Death::Signal(libc::SIGABRT));
}

#[test]
fn death_message_names_the_signal() {
    let pool = Pool::new(1).unwrap();
    let err = pool.map(segv_on_2, 0..4u32).unwrap_err();
    let text = err.to_string();
    assert!(text.starts_with("item 2: worker process "), "{text}");
    assert!(text.contains("killed by signal 11 (SIGSEGV)"), "{text}");
}

#[test]
fn sigkill_from_outside_fails_the_held_task_and_the_pool_goes_on() {
    let (report, release) = (Pipe::new(), Pipe::new());
    let pool = Pool::new(1).unwrap();
    let first_pid = pool.worker_pids()[0];
    let r = pool
        .apply_async(
            report_then_block,
            (report.w.as_raw_fd(), release.r.as_raw_fd()),
        )
        .unwrap();
    let running = report.read_u32();
    assert_eq!(running, first_pid);
    kill(Pid::from_raw(running as i32), Signal::SIGKILL).unwrap();
    let err = r.get(Some(Duration::from_secs(30))).unwrap_err();
    assert_eq!(
        err,
        PoolError::WorkerDied {
            index: 0,
            pid: running,
            death: Death::Signal(9)
        }
    );
    assert!(err.to_string().contains("killed by signal 9 (SIGKILL)"));
    assert_eq!(pool.map(pid_of, 0..3u32).unwrap().len(), 3);
    let now = pool.worker_pids();
    assert_eq!(now.len(), 1);
    assert_ne!(now[0], first_pid, "the dead worker was replaced");
    drop(release);
}

fn gone(pid: u32) -> bool {
    kill(Pid::from_raw(pid as i32), None).is_err()
}

#[test]
fn terminate_with_long_tasks_is_fast_and_leaves_no_process() {
    let (report, release) = (Pipe::new(), Pipe::new());
    let pool = Pool::new(2).unwrap();
    let fds = (report.w.as_raw_fd(), release.r.as_raw_fd());
    let a = pool.apply_async(report_then_block, fds).unwrap();
    let b = pool.apply_async(report_then_block, fds).unwrap();
    let c = pool.apply_async(report_then_block, fds).unwrap(); // queued behind them
    let running = [report.read_u32(), report.read_u32()];
    let t = Instant::now();
    pool.terminate();
    let took = t.elapsed();
    assert!(took < Duration::from_secs(1), "terminate took {took:?}");
    for pid in running {
        assert!(gone(pid), "worker {pid} outlived terminate");
    }
    assert!(pool.worker_pids().is_empty());
    for r in [a, b, c] {
        assert_eq!(r.get(None), Err(PoolError::Terminated));
    }
    assert_eq!(pool.map(addit, vec![1]), Err(PoolError::Terminated));
    drop(release);
}

#[test]
fn no_worker_outlives_the_pool() {
    let pool = Pool::new(3).unwrap();
    assert_eq!(pool.map(addit, 0..100).unwrap().len(), 100);
    let pids = pool.worker_pids();
    assert_eq!(pids.len(), 3);
    for &pid in &pids {
        assert!(!gone(pid));
    }
    drop(pool);
    for pid in pids {
        assert!(gone(pid), "worker {pid} outlived the pool");
    }
}

#[test]
fn close_and_join_let_queued_work_finish() {
    let pool = Pool::new(2).unwrap();
    let r = pool.map_async(addit, 0..1000).unwrap();
    assert_eq!(pool.join(), Err(PoolError::NotClosed));
    pool.close();
    assert_eq!(pool.map(addit, vec![1]), Err(PoolError::Closed));
    assert!(matches!(pool.apply_async(addit, 1), Err(PoolError::Closed)));
    let pids = pool.worker_pids();
    pool.join().unwrap();
    assert_eq!(r.get(None).unwrap(), (1..1001).collect::<Vec<i64>>());
    for pid in pids {
        assert!(gone(pid));
    }
}

#[test]
fn map_keeps_order_and_handles_empty_input() {
    let pool = Pool::new(2).unwrap();
    let want: Vec<i64> = (1..=10_000).collect();
    assert_eq!(pool.map(addit, 0..10_000).unwrap(), want);
    assert_eq!(
        pool.map(addit, Vec::<i64>::new()).unwrap(),
        Vec::<i64>::new()
    );
    for cs in [1, 2, 3, 7, 10_000, 20_000] {
        assert_eq!(pool.map_chunksize(addit, 0..10_000, cs).unwrap(), want);
    }
    assert!(matches!(
        pool.map_chunksize(addit, 0..3, 0),
        Err(PoolError::InvalidArgument(_))
    ));
}

#[test]
fn chunks_are_runs_of_chunksize_items() {
    // Each worker exits after one task (chunk): the pid of each result shows its chunk.
    let pool = Pool::builder()
        .workers(2)
        .maxtasksperchild(1)
        .build()
        .unwrap();
    let pids = pool.map_chunksize(pid_of, 0..10u32, 3).unwrap();
    let groups: Vec<&[u32]> = pids.chunk_by(|a, b| a == b).collect();
    let sizes: Vec<usize> = groups.iter().map(|g| g.len()).collect();
    assert_eq!(sizes, vec![3, 3, 3, 1]);
    let distinct: HashSet<u32> = pids.iter().copied().collect();
    assert_eq!(distinct.len(), 4, "each chunk ran in a fresh worker");
    // Python's default: 10 items, 2 workers → chunks of 2.
    assert_eq!(default_chunksize(10, 2), 2);
    let pids = pool.map(pid_of, 0..10u32).unwrap();
    let sizes: Vec<usize> = pids.chunk_by(|a, b| a == b).map(|g| g.len()).collect();
    assert_eq!(sizes, vec![2, 2, 2, 2, 2]);
}

#[test]
fn maxtasksperchild_replaces_workers() {
    let pool = Pool::builder()
        .workers(2)
        .maxtasksperchild(2)
        .build()
        .unwrap();
    let first = pool.worker_pids();
    let pids = pool.map_chunksize(pid_of, 0..12u32, 1).unwrap();
    let distinct: HashSet<u32> = pids.iter().copied().collect();
    assert!(distinct.len() >= 6, "12 tasks, at most 2 per worker");
    for pid in &distinct {
        let n = pids.iter().filter(|p| *p == pid).count();
        assert!(n <= 2, "worker {pid} ran {n} tasks");
    }
    let later = pool.worker_pids();
    assert_eq!(later.len(), 2);
    assert!(later.iter().all(|p| !first.contains(p)));
    for pid in first {
        assert!(gone(pid), "retired worker {pid} was reaped");
    }
}

#[test]
fn panics_name_the_item_and_the_pool_goes_on() {
    let pool = Pool::new(2).unwrap();
    let err = pool
        .map_chunksize(panics_on_3_and_7, 0..10u32, 4)
        .unwrap_err();
    assert_eq!(
        err,
        PoolError::Panicked {
            index: 3,
            message: "bad item 3".into()
        },
        "the first error in item order"
    );
    let all = pool.map_results(panics_on_3_and_7, 0..10u32).unwrap();
    for (i, r) in all.iter().enumerate() {
        match i {
            3 | 7 => assert_eq!(
                r,
                &Err(PoolError::Panicked {
                    index: i,
                    message: format!("bad item {i}")
                })
            ),
            _ => assert_eq!(r, &Ok(i as u32 * 10)),
        }
    }
    assert_eq!(pool.apply(panics_on_3_and_7, 5).unwrap(), 50);
}

#[test]
fn imap_is_ordered_and_lazy() {
    let pool = Pool::new(2).unwrap();
    let got: Vec<i64> = pool
        .imap(addit, 0..500)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(got, (1..=500).collect::<Vec<_>>());
    assert_eq!(pool.imap(addit, Vec::<i64>::new()).unwrap().count(), 0);
    // An endless input: only what is consumed (plus a bounded window) is ever pulled.
    let pulled = std::cell::Cell::new(0usize);
    let endless = (0i64..).inspect(|_| pulled.set(pulled.get() + 1));
    let first: Vec<i64> = pool
        .imap_chunksize(addit, endless, 4)
        .unwrap()
        .take(10)
        .map(Result::unwrap)
        .collect();
    assert_eq!(first, (1..=10).collect::<Vec<_>>());
    // The window is 16 chunks of 4; 3 chunks were consumed.
    assert!(pulled.get() <= (16 + 3) * 4, "pulled {}", pulled.get());
}

#[test]
fn imap_yields_errors_per_item() {
    let pool = Pool::new(2).unwrap();
    let got: Vec<Result<u32, PoolError>> = pool.imap(panics_on_3_and_7, 0..9u32).unwrap().collect();
    assert_eq!(got.len(), 9);
    assert!(matches!(got[3], Err(PoolError::Panicked { index: 3, .. })));
    assert_eq!(got[8], Ok(80));
}

#[test]
fn imap_unordered_gives_every_result() {
    let pool = Pool::new(2).unwrap();
    let mut got: Vec<i64> = pool
        .imap_unordered(addit, 0..300)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    got.sort_unstable();
    assert_eq!(got, (1..=300).collect::<Vec<_>>());
    let mut got: Vec<i64> = pool
        .imap_unordered_chunksize(addit, 0..300, 7)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    got.sort_unstable();
    assert_eq!(got, (1..=300).collect::<Vec<_>>());
}

#[test]
fn starmap_spreads_arguments() {
    let pool = Pool::new(2).unwrap();
    assert_eq!(
        pool.starmap(add, vec![(1, 2), (3, 4), (5, 6)]).unwrap(),
        vec![3, 7, 11]
    );
    assert_eq!(pool.starmap(add, Vec::<(i64, i64)>::new()).unwrap(), vec![]);
    assert_eq!(
        pool.starmap_chunksize(add, (0..50).map(|i| (i, i)), 3)
            .unwrap(),
        (0..50).map(|i| 2 * i).collect::<Vec<_>>()
    );
    let r = pool.starmap_async(add, vec![(1, 1)]).unwrap();
    assert_eq!(r.get(None).unwrap(), vec![2]);
}

#[test]
fn apply_and_async_results() {
    let (report, release) = (Pipe::new(), Pipe::new());
    let pool = Pool::new(2).unwrap();
    assert_eq!(pool.apply(addit, 41).unwrap(), 42);
    let blocked = pool
        .apply_async(
            report_then_block,
            (report.w.as_raw_fd(), release.r.as_raw_fd()),
        )
        .unwrap();
    let pid = report.read_u32();
    assert!(!blocked.ready());
    assert_eq!(blocked.successful(), None);
    assert_eq!(
        blocked.get(Some(Duration::from_millis(10))),
        Err(PoolError::Timeout)
    );
    assert!(!blocked.wait(Some(Duration::from_millis(10))));
    release.write_byte();
    assert!(blocked.wait(None));
    assert!(blocked.ready());
    assert_eq!(blocked.successful(), Some(true));
    assert_eq!(blocked.get(None), Ok(pid));
    assert_eq!(blocked.get(None), Err(PoolError::Taken));
    let failed = pool.apply_async(panics_on_3_and_7, 3).unwrap();
    assert!(failed.wait(None));
    assert_eq!(failed.successful(), Some(false));
    assert!(matches!(
        failed.get(None),
        Err(PoolError::Panicked { index: 0, .. })
    ));
    let m = pool.map_async(addit, vec![1, 2]).unwrap();
    assert_eq!(m.get(None).unwrap(), vec![2, 3]);
}

/// A value whose serialization always fails.
#[derive(Debug, PartialEq)]
struct Unserializable;

impl Serialize for Unserializable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom(
            "this value refuses to be serialized",
        ))
    }
}

impl<'de> Deserialize<'de> for Unserializable {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <()>::deserialize(d).map(|_| Unserializable)
    }
}

/// A value that serializes but never deserializes.
#[derive(Debug, PartialEq)]
struct Undeserializable(u8);

impl Serialize for Undeserializable {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Undeserializable {
    fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Err(serde::de::Error::custom(
            "this value refuses to be deserialized",
        ))
    }
}

fn take_unserializable(_: Unserializable) -> u8 {
    1
}

fn make_unserializable(_: u8) -> Unserializable {
    Unserializable
}

fn take_undeserializable(x: Undeserializable) -> u8 {
    x.0
}

fn make_undeserializable(x: u8) -> Undeserializable {
    Undeserializable(x)
}

fn echo_bytes(v: Vec<u8>) -> usize {
    v.len()
}

fn make_bytes(n: usize) -> Vec<u8> {
    vec![7; n]
}

#[test]
fn unserializable_values_give_errors_not_hangs() {
    let pool = Pool::new(2).unwrap();
    let e = pool
        .map(take_unserializable, vec![Unserializable])
        .unwrap_err();
    assert!(
        matches!(
            &e,
            PoolError::Encode {
                index: 0,
                what: "arguments",
                ..
            }
        ),
        "{e:?}"
    );
    let e = pool.map(make_unserializable, vec![1u8, 2]).unwrap_err();
    assert!(
        matches!(
            &e,
            PoolError::Encode {
                index: 0,
                what: "results",
                ..
            }
        ),
        "{e:?}"
    );
    let e = pool
        .map(take_undeserializable, vec![Undeserializable(1)])
        .unwrap_err();
    assert!(
        matches!(
            &e,
            PoolError::Decode {
                index: 0,
                what: "arguments",
                ..
            }
        ),
        "{e:?}"
    );
    let e = pool.apply(make_undeserializable, 5u8).unwrap_err();
    assert!(
        matches!(
            &e,
            PoolError::Decode {
                index: 0,
                what: "results",
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(pool.map(addit, vec![1]).unwrap(), vec![2]);
}

#[test]
fn oversized_messages_give_errors_not_hangs() {
    let pool = Pool::builder()
        .workers(2)
        .max_message_bytes(1000)
        .build()
        .unwrap();
    let e = pool.apply(echo_bytes, vec![0u8; 2000]).unwrap_err();
    assert!(
        matches!(
            e,
            PoolError::TooLarge {
                index: 0,
                what: "arguments",
                limit: 1000,
                ..
            }
        ),
        "{e:?}"
    );
    let e = pool.apply(make_bytes, 5000).unwrap_err();
    assert!(
        matches!(
            e,
            PoolError::TooLarge {
                index: 0,
                what: "results",
                limit: 1000,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(pool.apply(make_bytes, 10).unwrap(), vec![7; 10]);
    // A limit smaller than any reply still gives an error.
    let tiny = Pool::builder()
        .workers(1)
        .max_message_bytes(9)
        .build()
        .unwrap();
    let e = tiny.apply(make_bytes, 10).unwrap_err();
    assert!(
        matches!(
            e,
            PoolError::TooLarge {
                what: "results",
                ..
            }
        ),
        "{e:?}"
    );
    // A large message within the default limit goes through.
    let big = Pool::new(1).unwrap();
    assert_eq!(big.apply(echo_bytes, vec![1u8; 8 << 20]).unwrap(), 8 << 20);
    assert_eq!(big.apply(make_bytes, 8 << 20).unwrap().len(), 8 << 20);
}

static INIT_VALUE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

fn read_init(_: u32) -> u32 {
    INIT_VALUE.load(std::sync::atomic::Ordering::SeqCst)
}

#[test]
fn initializer_runs_in_each_worker() {
    let pool = Pool::builder()
        .workers(2)
        .initializer(|| INIT_VALUE.store(42, std::sync::atomic::Ordering::SeqCst))
        .build()
        .unwrap();
    assert_eq!(
        pool.map_chunksize(read_init, 0..8u32, 1).unwrap(),
        vec![42; 8]
    );
}

#[test]
fn a_panicking_initializer_fails_the_work_instead_of_hanging() {
    let pool = Pool::builder()
        .workers(2)
        .initializer(|| panic!("no database"))
        .build()
        .unwrap();
    let e = pool.map(addit, 0..10).unwrap_err();
    assert_eq!(e, PoolError::InitializerFailed("no database".into()));
}

#[test]
fn builder_rejects_zero() {
    assert!(matches!(Pool::new(0), Err(PoolError::InvalidArgument(_))));
    assert!(matches!(
        Pool::builder().maxtasksperchild(0).build(),
        Err(PoolError::InvalidArgument(_))
    ));
    let p = Pool::builder().progress(true).build().unwrap();
    assert_eq!(p.workers(), hpcbox_pool::usable_cpus());
    assert_eq!(p.worker_pids().len(), p.workers());
    assert_eq!(p.map(addit, 0..5).unwrap(), vec![1, 2, 3, 4, 5]);
}

#[test]
fn structs_and_strings_travel() {
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Job {
        name: String,
        weights: Vec<f64>,
    }
    fn total(j: Job) -> (String, f64) {
        (j.name, j.weights.iter().sum())
    }
    let pool = Pool::new(2).unwrap();
    let jobs = vec![
        Job {
            name: "a".into(),
            weights: vec![1.0, 2.0],
        },
        Job {
            name: "b".into(),
            weights: vec![],
        },
    ];
    assert_eq!(
        pool.map(total, jobs).unwrap(),
        vec![("a".to_string(), 3.0), ("b".to_string(), 0.0)]
    );
    assert_eq!(
        pool.map(|s: String| s.len(), vec!["xyz".to_string()])
            .unwrap(),
        vec![3]
    );
}

#[test]
fn imap_survives_a_worker_death_and_a_dropped_pool() {
    let pool = Pool::new(2).unwrap();
    let got: Vec<Result<u32, PoolError>> = pool.imap(segv_on_2, 0..6u32).unwrap().collect();
    assert_eq!(got.len(), 6);
    assert!(matches!(
        got[2],
        Err(PoolError::WorkerDied { index: 2, .. })
    ));
    assert_eq!(got[5], Ok(5));
    // An imap that outlives its pool ends with errors, never a hang.
    let mut it = pool.imap(addit, 0..1000).unwrap();
    assert_eq!(it.next(), Some(Ok(1)));
    drop(pool);
    let rest: Vec<Result<i64, PoolError>> = it.collect();
    assert!(!rest.is_empty());
    assert!(rest.iter().any(|r| r == &Err(PoolError::Terminated)));
}

#[test]
fn pools_and_handles_cross_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Pool>();
    assert_send_sync::<hpcbox_pool::ThreadPool>();
    assert_send_sync::<hpcbox_pool::AsyncResult<Vec<i64>>>();
    let pool = std::sync::Arc::new(Pool::new(2).unwrap());
    let handles: Vec<_> = (0..4)
        .map(|k| {
            let pool = pool.clone();
            std::thread::spawn(move || pool.map(addit, k * 100..(k + 1) * 100).unwrap())
        })
        .collect();
    for (k, h) in handles.into_iter().enumerate() {
        let k = k as i64;
        assert_eq!(
            h.join().unwrap(),
            (k * 100 + 1..=(k + 1) * 100).collect::<Vec<_>>()
        );
    }
}

fn triple(x: i64) -> i64 {
    x * 3
}

fn segv_at_777_777(x: i64) -> i64 {
    if x == 777_777 {
        raise(libc::SIGSEGV);
    }
    x
}

#[test]
fn large_chunks_go_through_shared_lanes_and_survive_deaths() {
    let pool = Pool::new(2).unwrap();
    // 8 chunks of 75,000 numbers (600 KB each): each goes through a shared-memory lane.
    let want: Vec<i64> = (0..600_000).map(|x| x * 3).collect();
    assert_eq!(pool.map(triple, 0..600_000).unwrap(), want);
    // Postcard-encoded chunks of about 350 KB.
    let words: Vec<String> = (0..100_000).map(|i| format!("s{i}")).collect();
    let lens = pool
        .map_chunksize(|s: String| s.len(), words.clone(), 50_000)
        .unwrap();
    assert_eq!(lens, words.iter().map(String::len).collect::<Vec<_>>());
    // A reply larger than a lane comes back through the pipe.
    let big = pool.map_chunksize(make_bytes, vec![3 << 20, 5], 1).unwrap();
    assert_eq!((big[0].len(), big[1].len()), (3 << 20, 5));
    // A worker dies holding a lane: its chunk fails, the others (requeued ones included) succeed.
    let got = pool
        .map_results_chunksize(segv_at_777_777, 0..1_000_000, 100_000)
        .unwrap();
    for (i, r) in got.iter().enumerate() {
        if (700_000..800_000).contains(&i) {
            assert!(
                matches!(r, Err(PoolError::WorkerDied { index, death: Death::Signal(11), .. }) if *index == i),
                "item {i}: {r:?}"
            );
        } else {
            assert_eq!(r, &Ok(i as i64));
        }
    }
    assert_eq!(pool.map(triple, 0..600_000).unwrap(), want);
}

/// A pool of more workers than its supervisor feeds through lanes: the workers copy chunks of
/// numbers out of the caller themselves, with the same results.
#[test]
fn a_large_pools_workers_copy_numbers_themselves_with_the_same_results() {
    let pool = Pool::new(6).unwrap();
    let want: Vec<i64> = (0..600_000).map(|x| x * 3).collect();
    assert_eq!(pool.map(triple, 0..600_000).unwrap(), want);
    let halves: Vec<f64> = (0..300_000u32).map(|x| f64::from(x) / 2.0).collect();
    assert_eq!(pool.map(half, 0..300_000u32).unwrap(), halves);
}

fn half(x: u32) -> f64 {
    f64::from(x) / 2.0
}

fn panics_at_345_678(x: u32) -> f32 {
    assert!(x != 345_678, "no {x}");
    x as f32
}

#[test]
fn numeric_maps_of_any_chunk_size_match_serial_and_name_a_panicking_item() {
    let pool = Pool::new(2).unwrap();
    let want: Vec<f32> = (0..700_000u32).map(|x| x as f32).collect();
    let items = || (0..700_000u32).map(|x| if x == 345_678 { 0 } else { x });
    for chunksize in [1_000, 50_000, 350_000, 700_000] {
        let got = pool.map_chunksize(panics_at_345_678, items(), chunksize);
        let mut want = want.clone();
        want[345_678] = 0.0;
        assert_eq!(got.unwrap(), want, "chunksize {chunksize}");
        let err = pool
            .map_chunksize(panics_at_345_678, 0..700_000u32, chunksize)
            .unwrap_err();
        assert!(
            matches!(&err, PoolError::Panicked { index: 345_678, message } if message.contains("no 345678")),
            "chunksize {chunksize}: {err:?}"
        );
        // Every other item of the chunk keeps its value (f32 results replace u32 items in
        // place in the worker).
        let each = pool
            .map_results_chunksize(panics_at_345_678, 0..700_000u32, chunksize)
            .unwrap();
        for (i, got) in each.iter().enumerate() {
            match got {
                Ok(value) => assert_eq!(*value, i as f32, "chunksize {chunksize}, item {i}"),
                Err(err) => assert_eq!(i, 345_678, "chunksize {chunksize}: {err:?}"),
            }
        }
    }
}

#[test]
fn imap_next_with_a_timeout() {
    let (report, release) = (Pipe::new(), Pipe::new());
    let pool = Pool::new(1).unwrap();
    let fds = (report.w.as_raw_fd(), release.r.as_raw_fd());
    let mut it = pool.imap(report_then_block, vec![fds]).unwrap();
    assert_eq!(
        it.next_timeout(Duration::from_millis(20)),
        Some(Err(PoolError::Timeout))
    );
    let pid = report.read_u32();
    release.write_byte();
    assert_eq!(it.next_timeout(Duration::from_secs(30)), Some(Ok(pid)));
    assert_eq!(it.next_timeout(Duration::from_millis(1)), None);
}

#[test]
fn lanes_come_back_when_results_are_dropped_unread() {
    let pool = Pool::new(1).unwrap();
    for _ in 0..4 {
        let r = pool.map_async(triple, 0..600_000).unwrap();
        drop(r); // replies left in lanes are never read
    }
    let unread = pool.map_async(triple, 0..600_000).unwrap();
    assert!(unread.wait(None));
    drop(unread);
    let want: Vec<i64> = (0..600_000).map(|x| x * 3).collect();
    for _ in 0..3 {
        assert_eq!(pool.map(triple, 0..600_000).unwrap(), want);
    }
}

/// Results the size of their items come back in the items' own vector, as
/// `vec.into_iter().map(f).collect()` reuses it, whichever way the chunks travel: the pipe
/// (small chunks), a lane, the workers' own copies (a larger pool, or chunks too large for a
/// lane); a result of another size gets a vector of its own.
#[test]
fn results_that_fit_over_their_items_reuse_the_items_vector() {
    let n = 700_000;
    let want: Vec<i64> = (0..n).map(|x| x * 3).collect();
    for (workers, chunksize) in [(2, 1_000), (2, 50_000), (2, n as usize), (6, 50_000)] {
        let pool = Pool::new(workers).unwrap();
        let mut items: Vec<i64> = Vec::with_capacity(n as usize + 10);
        items.extend(0..n);
        let (at, capacity) = (items.as_ptr() as usize, items.capacity());
        let got = pool.map_chunksize(triple, items, chunksize).unwrap();
        assert_eq!(got, want, "{workers} workers, chunksize {chunksize}");
        assert_eq!((got.as_ptr() as usize, got.capacity()), (at, capacity));
    }
    let pool = Pool::new(2).unwrap();
    let halves = pool.map(half, vec![1u32, 2, 3]).unwrap();
    assert_eq!(halves, [0.5, 1.0, 1.5]);
}

/// Blocking calls from several threads at once, with asynchronous work beside them, all
/// finish with their own results (a caller drives the workers while it waits only as long
/// as no other caller needs them; then a supervisor thread takes them over).
#[test]
fn blocking_calls_from_several_threads_and_async_work_all_finish() {
    let pool = std::sync::Arc::new(Pool::new(2).unwrap());
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    for k in 0..4i64 {
        let (pool, done_tx) = (pool.clone(), done_tx.clone());
        std::thread::spawn(move || {
            for round in 0..30i64 {
                let base = k * 1_000 + round;
                let items: Vec<i64> = (base..base + 50).collect();
                let want: Vec<i64> = items.iter().map(|x| x + 1).collect();
                assert_eq!(pool.map(addit, items.clone()).unwrap(), want);
                assert_eq!(pool.apply(addit, base).unwrap(), base + 1);
                let each = pool.map_results(addit, items).unwrap();
                assert!(each.iter().zip(&want).all(|(got, want)| got == &Ok(*want)));
            }
            done_tx.send(k).unwrap();
        });
    }
    let pending = pool.map_async(triple, 0..10_000).unwrap();
    let streamed: Vec<i64> = pool
        .imap(addit, 0..500)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(streamed, (1..=500).collect::<Vec<_>>());
    for _ in 0..4 {
        let k = done_rx
            .recv_timeout(Duration::from_secs(120))
            .expect("a caller's blocking calls did not finish");
        assert!((0..4).contains(&k));
    }
    assert_eq!(
        pending.get(None).unwrap(),
        (0..10_000).map(|x| x * 3).collect::<Vec<_>>()
    );
}

/// A caller waiting in `map` (and driving the workers meanwhile) is ended by a `terminate`
/// from another thread, at once, and no worker is left.
#[test]
fn terminate_from_another_thread_ends_a_waiting_map() {
    let (report, release) = (Pipe::new(), Pipe::new());
    let pool = std::sync::Arc::new(Pool::new(2).unwrap());
    let fds = (report.w.as_raw_fd(), release.r.as_raw_fd());
    let waiting = {
        let pool = pool.clone();
        std::thread::spawn(move || pool.map_chunksize(report_then_block, vec![fds; 3], 1))
    };
    let running = [report.read_u32(), report.read_u32()];
    let t = Instant::now();
    pool.terminate();
    assert_eq!(waiting.join().unwrap(), Err(PoolError::Terminated));
    let took = t.elapsed();
    assert!(took < Duration::from_secs(1), "terminate took {took:?}");
    for pid in running {
        assert!(gone(pid), "worker {pid} outlived terminate");
    }
    drop(release);
}

/// A pool started in a thread that then ended keeps its workers, and so do workers started
/// while a short-lived thread drove the pool (a worker's parent-death signal follows the
/// thread that forked it: workers are forked by one thread that lives as long as the process).
#[test]
fn workers_outlive_the_threads_that_started_or_drove_their_pool() {
    let pool = std::thread::spawn(|| Pool::new(2).unwrap()).join().unwrap();
    let pids = pool.worker_pids();
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        pool.map(addit, 0..100).unwrap(),
        (1..=100).collect::<Vec<_>>()
    );
    assert_eq!(pool.worker_pids(), pids, "the workers were replaced");

    let pool = std::sync::Arc::new(
        Pool::builder()
            .workers(2)
            .maxtasksperchild(1)
            .build()
            .unwrap(),
    );
    let driver = pool.clone();
    std::thread::spawn(move || driver.map_chunksize(pid_of, 0..4u32, 1).unwrap())
        .join()
        .unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let pids = pool.worker_pids();
    let ran: HashSet<u32> = pool
        .map_chunksize(pid_of, 0..2u32, 1)
        .unwrap()
        .into_iter()
        .collect();
    assert!(
        ran.iter().all(|pid| pids.contains(pid)),
        "{ran:?} not among {pids:?}"
    );
}

/// A worker killed while nobody uses the pool is replaced by the next look at the pool, and
/// the next map runs on live workers.
#[test]
fn a_worker_killed_between_calls_is_replaced() {
    let pool = Pool::new(2).unwrap();
    let victim = pool.worker_pids()[0];
    kill(Pid::from_raw(victim as i32), Signal::SIGKILL).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let now = pool.worker_pids();
    assert_eq!(now.len(), 2);
    assert!(!now.contains(&victim), "{victim} still listed: {now:?}");
    assert_eq!(
        pool.map(addit, 0..10).unwrap(),
        (1..=10).collect::<Vec<_>>()
    );
}

/// Whether SIGUSR1 is blocked in this process's thread (from /proc's `SigBlk` mask).
fn sigusr1_blocked(_: u8) -> bool {
    let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
    let mask = status
        .lines()
        .find_map(|l| l.strip_prefix("SigBlk:"))
        .map(|hex| u64::from_str_radix(hex.trim(), 16).unwrap())
        .unwrap();
    mask & (1 << (libc::SIGUSR1 - 1)) != 0
}

/// Workers start with the signal mask of the thread that started (or drove) their pool, even
/// though, off the main thread, the forker thread forks them.
#[test]
fn workers_start_with_the_signal_mask_of_the_thread_that_asked() {
    use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow};
    let blocked = std::thread::spawn(|| {
        let mut usr1 = SigSet::empty();
        usr1.add(Signal::SIGUSR1);
        pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&usr1), None).unwrap();
        let pool = Pool::new(1).unwrap();
        pool.map(sigusr1_blocked, vec![0u8]).unwrap()
    });
    assert_eq!(blocked.join().unwrap(), vec![true]);
    let plain = std::thread::spawn(|| Pool::new(1).unwrap().map(sigusr1_blocked, vec![0u8]));
    assert_eq!(plain.join().unwrap().unwrap(), vec![false]);
}

//! Thread workers: the same surface with closures and no serialization.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::channel;
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use hpcbox_pool::{Pool, PoolError, ThreadPool};

fn thread_tag() -> String {
    format!("{:?}", std::thread::current().id())
}

#[test]
fn map_takes_capturing_closures_in_order() {
    let pool = ThreadPool::threads(3).unwrap();
    let offset = String::from("item-");
    let got = pool
        .map(move |x: usize| format!("{offset}{x}"), 0..100)
        .unwrap();
    assert_eq!(
        got,
        (0..100).map(|x| format!("item-{x}")).collect::<Vec<_>>()
    );
    assert_eq!(pool.map(|x: u8| x, Vec::new()).unwrap(), Vec::<u8>::new());
    assert_eq!(pool.worker_pids(), Vec::<u32>::new());
    for cs in [1, 5, 100, 1000] {
        assert_eq!(
            pool.map_chunksize(|x: u32| x * 2, 0..100, cs).unwrap(),
            (0..100).map(|x| x * 2).collect::<Vec<_>>()
        );
    }
}

#[test]
fn panics_name_the_item() {
    let pool = ThreadPool::threads(2).unwrap();
    let f = |x: u32| {
        if x % 5 == 4 {
            panic!("item {x} is bad");
        }
        x
    };
    assert_eq!(
        pool.map(f, 0..20).unwrap_err(),
        PoolError::Panicked {
            index: 4,
            message: "item 4 is bad".into()
        }
    );
    let all = pool.map_results(f, 0..10).unwrap();
    assert_eq!(all[3], Ok(3));
    assert!(matches!(all[9], Err(PoolError::Panicked { index: 9, .. })));
    assert_eq!(pool.apply(f, 3).unwrap(), 3);
}

/// Items that own memory, a panic among them: each item is dropped once, by the call that took
/// it or by the pool (a double drop or a leak would show under the allocator's checks or
/// Miri), and the other results are right.
#[test]
fn a_panic_among_owned_items_drops_each_once() {
    let pool = ThreadPool::threads(2).unwrap();
    let f = |s: String| {
        assert!(s != "item 1234", "no {s}");
        s.len()
    };
    let items = || (0..5000).map(|i| format!("item {i}"));
    let err = pool.map(f, items()).unwrap_err();
    assert!(
        matches!(err, PoolError::Panicked { index: 1234, .. }),
        "{err:?}"
    );
    let all = pool.map_results(f, items()).unwrap();
    for (i, got) in all.iter().enumerate() {
        match got {
            Ok(len) => assert_eq!(*len, format!("item {i}").len()),
            Err(err) => assert_eq!(i, 1234, "{err:?}"),
        }
    }
}

#[test]
fn chunks_run_on_one_thread_each() {
    // Each chunk runs as one task on one thread; with maxtasksperchild(1) every chunk gets a
    // fresh thread, so the tags show the chunks.
    let pool = Pool::builder()
        .threads()
        .workers(2)
        .maxtasksperchild(1)
        .build()
        .unwrap();
    let tags = pool.map_chunksize(|_: u32| thread_tag(), 0..10, 4).unwrap();
    let sizes: Vec<usize> = tags.chunk_by(|a, b| a == b).map(|g| g.len()).collect();
    assert_eq!(sizes, vec![4, 4, 2]);
    let distinct: HashSet<&String> = tags.iter().collect();
    assert_eq!(distinct.len(), 3);
}

#[test]
fn initializer_runs_once_per_worker() {
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    let pool = Pool::builder()
        .threads()
        .workers(3)
        .initializer(move || {
            c.fetch_add(1, Ordering::SeqCst);
        })
        .build()
        .unwrap();
    assert_eq!(pool.map(|x: i32| x, 0..10).unwrap().len(), 10);
    pool.close();
    pool.join().unwrap();
    assert_eq!(count.load(Ordering::SeqCst), 3);
}

#[test]
fn maxtasksperchild_replaces_threads_and_reruns_the_initializer() {
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    let pool = Pool::builder()
        .threads()
        .workers(2)
        .maxtasksperchild(2)
        .initializer(move || {
            c.fetch_add(1, Ordering::SeqCst);
        })
        .build()
        .unwrap();
    let tags = pool.map_chunksize(|_: u8| thread_tag(), 0..8, 1).unwrap();
    let distinct: HashSet<&String> = tags.iter().collect();
    assert!(distinct.len() >= 4, "8 tasks, at most 2 per thread");
    for tag in &distinct {
        assert!(tags.iter().filter(|t| t == tag).count() <= 2);
    }
    pool.close();
    pool.join().unwrap();
    // 2 first threads, then one replacement per retirement (4 retirements, the last ones
    // start replacements that find no work).
    assert!(count.load(Ordering::SeqCst) >= 4);
}

#[test]
fn a_panicking_initializer_fails_the_work() {
    let pool = Pool::builder()
        .threads()
        .workers(2)
        .initializer(|| panic!("no gpu"))
        .build()
        .unwrap();
    // Work queued before or after the failure is failed, never left waiting.
    let e = pool.map(|x: i32| x, 0..10).unwrap_err();
    assert_eq!(e, PoolError::InitializerFailed("no gpu".into()));
}

#[test]
fn terminate_returns_at_once_with_blocked_tasks() {
    let pool = ThreadPool::threads(2).unwrap();
    let started = Arc::new(Barrier::new(3));
    let (release_tx, release_rx) = channel::<()>();
    let release_rx = Arc::new(Mutex::new(release_rx));
    let block = {
        let started = started.clone();
        move |_: u8| {
            started.wait();
            let _ = release_rx.lock().unwrap().recv();
            1u8
        }
    };
    let running = pool.map_async(block.clone(), vec![0, 1]).unwrap();
    let queued = pool.apply_async(block, 2).unwrap();
    started.wait(); // both workers are inside a task
    let t = Instant::now();
    pool.terminate();
    assert!(t.elapsed() < Duration::from_secs(1));
    assert_eq!(queued.get(None), Err(PoolError::Terminated));
    drop(release_tx); // let the blocked tasks end
    assert_eq!(running.get(None).unwrap(), vec![1, 1]);
    assert_eq!(pool.map(|x: u8| x, vec![1]), Err(PoolError::Terminated));
}

#[test]
fn imap_is_lazy_and_ordered() {
    let pool = ThreadPool::threads(2).unwrap();
    let pulled = std::cell::Cell::new(0usize);
    let endless = (0u64..).inspect(|_| pulled.set(pulled.get() + 1));
    let got: Vec<u64> = pool
        .imap(|x: u64| x * x, endless)
        .unwrap()
        .take(20)
        .map(Result::unwrap)
        .collect();
    assert_eq!(got, (0..20).map(|x| x * x).collect::<Vec<_>>());
    assert!(pulled.get() <= 20 + 16, "pulled {}", pulled.get());
    let mut un: Vec<u64> = pool
        .imap_unordered(|x: u64| x + 1, 0..100)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    un.sort_unstable();
    assert_eq!(un, (1..=100).collect::<Vec<_>>());
}

#[test]
fn starmap_and_async() {
    let pool = ThreadPool::threads(2).unwrap();
    let base = 100;
    assert_eq!(
        pool.starmap(move |a: i32, b: i32| a * b + base, vec![(2, 3), (4, 5)])
            .unwrap(),
        vec![106, 120]
    );
    let r = pool.map_async(|x: i32| x - 1, vec![1, 2, 3]).unwrap();
    assert!(r.wait(None));
    assert_eq!(r.successful(), Some(true));
    assert_eq!(r.get(None).unwrap(), vec![0, 1, 2]);
    let a = pool.apply_async(|s: &'static str| s.len(), "four").unwrap();
    assert_eq!(a.get(Some(Duration::from_secs(30))).unwrap(), 4);
}

#[test]
fn close_then_join_finishes_queued_work() {
    let pool = ThreadPool::threads(2).unwrap();
    let r = pool.map_async(|x: u64| x * 3, 0..10_000).unwrap();
    assert_eq!(pool.join(), Err(PoolError::NotClosed));
    pool.close();
    assert!(matches!(
        pool.apply_async(|x: u8| x, 1),
        Err(PoolError::Closed)
    ));
    pool.join().unwrap();
    assert_eq!(
        r.get(None).unwrap(),
        (0..10_000).map(|x| x * 3).collect::<Vec<_>>()
    );
}

static LIVE: std::sync::atomic::AtomicIsize = std::sync::atomic::AtomicIsize::new(0);

/// Counts live values, to check that items and results are each dropped exactly once.
#[derive(Debug, PartialEq)]
struct Tracked(u32);

impl Tracked {
    fn new(x: u32) -> Self {
        LIVE.fetch_add(1, Ordering::SeqCst);
        Tracked(x)
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        LIVE.fetch_sub(1, Ordering::SeqCst);
    }
}

#[test]
fn items_and_results_are_dropped_exactly_once() {
    let pool = ThreadPool::threads(2).unwrap();
    let items: Vec<Tracked> = (0..1000).map(Tracked::new).collect();
    let got = pool
        .map_chunksize(|t: Tracked| Tracked::new(t.0 * 2), items, 7)
        .unwrap();
    assert_eq!(got.len(), 1000);
    assert!(got.iter().enumerate().all(|(i, t)| t.0 == 2 * i as u32));
    drop(got);
    assert_eq!(LIVE.load(Ordering::SeqCst), 0);
    // A failing map drops the results already written and the items not yet used.
    let items: Vec<Tracked> = (0..100).map(Tracked::new).collect();
    let e = pool
        .map_chunksize(
            |t: Tracked| {
                assert!(t.0 != 50, "fifty");
                Tracked::new(t.0)
            },
            items,
            10,
        )
        .unwrap_err();
    assert!(matches!(e, PoolError::Panicked { index: 50, .. }));
    assert_eq!(LIVE.load(Ordering::SeqCst), 0);
    // A result handle dropped after its work finished drops the values.
    let r = pool
        .map_async(|t: Tracked| t, (0..50).map(Tracked::new))
        .unwrap();
    assert!(r.wait(None));
    drop(r);
    assert_eq!(LIVE.load(Ordering::SeqCst), 0);
}

/// Results the size of their items come back in the items' own vector (as
/// `vec.into_iter().map(f).collect()` reuses it), right after a panic too; items that own
/// memory are never written over.
#[test]
fn results_that_fit_over_their_items_reuse_the_items_vector() {
    let pool = ThreadPool::threads(2).unwrap();
    let items: Vec<u64> = (0..100_000).collect();
    let at = items.as_ptr() as usize;
    let got = pool.map(|x: u64| x as f64 * 0.5, items).unwrap();
    assert_eq!(got.as_ptr() as usize, at);
    assert!(got.iter().enumerate().all(|(i, v)| *v == i as f64 * 0.5));
    let bad = |x: u64| {
        assert!(x != 60_000, "no {x}");
        x + 1
    };
    let err = pool
        .map(bad, (0..100_000).collect::<Vec<u64>>())
        .unwrap_err();
    assert!(
        matches!(err, PoolError::Panicked { index: 60_000, .. }),
        "{err:?}"
    );
    let strings: Vec<String> = (0..1_000).map(|i| i.to_string()).collect();
    let lens = pool.map(|s: String| s + "!", strings).unwrap();
    assert_eq!(lens[999], "999!");
}

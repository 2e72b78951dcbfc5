//! Properties: any input, any chunk size, any worker count gives the serial answer.

use hpcbox_pool::{default_chunksize, Death, Pool, PoolError, ThreadPool};
use proptest::prelude::*;

fn mix(x: i64) -> i64 {
    x.wrapping_mul(31).wrapping_add(7)
}

fn fails_on_multiples_of_7(x: u16) -> u16 {
    assert!(x.rem_euclid(7) > 0, "multiple of 7: {x}");
    x
}

/// Kills its worker (SIGKILL, as the OOM killer does) on multiples of 5.
fn dies_on_multiples_of_5(x: u16) -> u16 {
    if x.rem_euclid(5) == 0 {
        // SAFETY: raising a signal at ourselves.
        unsafe { libc::raise(libc::SIGKILL) };
    }
    x
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(8))]

    /// Every chunk holding an item that kills its worker fails as a whole with the signal;
    /// every other chunk succeeds; nothing hangs, whatever the chunking.
    #[test]
    fn worker_deaths_fail_exactly_their_chunks(items in proptest::collection::vec(0u16..200, 0..40),
                                               chunksize in 1usize..6) {
        let pool = Pool::new(2).unwrap();
        let got: Vec<Result<u16, PoolError>> = pool
            .imap_chunksize(dies_on_multiples_of_5, items.clone(), chunksize)
            .unwrap()
            .collect();
        prop_assert_eq!(got.len(), items.len());
        for (c, chunk) in items.chunks(chunksize).enumerate() {
            let doomed = chunk.iter().any(|x| x.rem_euclid(5) == 0);
            for (k, x) in chunk.iter().enumerate() {
                let i = c * chunksize + k;
                if doomed {
                    let died = matches!(&got[i], Err(PoolError::WorkerDied { index, death: Death::Signal(9), .. }) if *index == i);
                    prop_assert!(died, "item {} got {:?}", i, got[i]);
                } else {
                    prop_assert_eq!(&got[i], &Ok(*x));
                }
            }
        }
        prop_assert_eq!(pool.worker_pids().len(), 2);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn chunksize_matches_python(len in 0usize..100_000, workers in 1usize..64) {
        let c = default_chunksize(len, workers);
        // Python: chunksize, extra = divmod(len, workers * 4); if extra: chunksize += 1
        let (q, r) = (len / (workers * 4), len % (workers * 4));
        prop_assert_eq!(c, q + usize::from(r != 0));
        if len > 0 {
            prop_assert!(c >= 1);
            prop_assert!(len.div_ceil(c) <= workers * 4);
        }
    }

    #[test]
    fn process_map_equals_serial(items in proptest::collection::vec(any::<i64>(), 0..300),
                                 chunksize in 1usize..50, workers in 1usize..4) {
        let pool = Pool::new(workers).unwrap();
        let want: Vec<i64> = items.iter().copied().map(mix).collect();
        prop_assert_eq!(pool.map_chunksize(mix, items.clone(), chunksize).unwrap(), want.clone());
        prop_assert_eq!(pool.map(mix, items.clone()).unwrap(), want.clone());
        let lazy: Vec<i64> = pool.imap_chunksize(mix, items.clone(), chunksize).unwrap()
            .map(Result::unwrap).collect();
        prop_assert_eq!(lazy, want);
    }

    #[test]
    fn thread_map_equals_serial(items in proptest::collection::vec(any::<u16>(), 0..500),
                                chunksize in 1usize..64, workers in 1usize..5) {
        let pool = ThreadPool::threads(workers).unwrap();
        let got = pool.map_results(fails_on_multiples_of_7, items.clone()).unwrap();
        prop_assert_eq!(got.len(), items.len());
        for (i, (r, x)) in got.iter().zip(&items).enumerate() {
            if x % 7 == 0 {
                let is_panic = matches!(r, Err(PoolError::Panicked { index, .. }) if *index == i);
                prop_assert!(is_panic);
            } else {
                prop_assert_eq!(r, &Ok(*x));
            }
        }
        let first_bad = items.iter().position(|x| x % 7 == 0);
        match pool.map_chunksize(fails_on_multiples_of_7, items.clone(), chunksize) {
            Ok(v) => { prop_assert!(first_bad.is_none()); prop_assert_eq!(v, items); }
            Err(e) => prop_assert_eq!(e.index(), first_bad),
        }
    }
}

//! A program that restores SIGPIPE's default disposition must survive a worker's death.

use hpcbox_pool::{Pool, PoolError};

fn die_on_three(x: u64) -> u64 {
    if x == 3 {
        // SAFETY: raising a signal in the worker process itself.
        unsafe { libc::raise(libc::SIGKILL) };
    }
    x * 2
}

#[test]
fn a_dead_worker_does_not_kill_a_caller_with_default_sigpipe() {
    // SAFETY: restoring a signal's default disposition installs no handler.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let pool = Pool::new(2).unwrap();
    for _ in 0..20 {
        let items: Vec<u64> = (0..64).collect();
        let results = pool.map_results_chunksize(die_on_three, items, 1).unwrap();
        assert!(
            matches!(results[3], Err(PoolError::WorkerDied { .. })),
            "{:?}",
            results[3]
        );
        assert_eq!(results[4].as_ref().ok(), Some(&8));
    }
}

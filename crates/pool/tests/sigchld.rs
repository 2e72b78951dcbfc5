//! A program that ignores SIGCHLD (its children are reaped by the kernel, and `waitpid` finds
//! none) must still get right results, and no hang, when a worker dies.

use hpcbox_pool::Pool;

fn die_on_50_000(x: i64) -> i64 {
    if x == 50_000 {
        // SAFETY: raising a signal in the worker process itself.
        unsafe { libc::raise(libc::SIGKILL) };
    }
    x * 2
}

#[test]
fn a_caller_that_ignores_sigchld_gets_right_results_after_a_worker_death() {
    // SAFETY: ignoring a signal installs no handler.
    unsafe { libc::signal(libc::SIGCHLD, libc::SIG_IGN) };
    let pool = Pool::new(2).unwrap();
    let doubled: Vec<i64> = (0..200_000).map(|x| x * 2).collect();
    for _ in 0..5 {
        // Two maps at once, chunks of 200 KB, through lanes; their results go over their items.
        let dying = pool.map_async(die_on_50_000, (0..200_000).collect::<Vec<i64>>());
        let other = pool.map_async(die_on_50_000, (100_000..300_000).collect::<Vec<i64>>());
        assert!(dying.unwrap().get(None).is_err());
        let other = other.unwrap().get(None).unwrap();
        assert_eq!(
            other,
            (100_000..300_000).map(|x| x * 2).collect::<Vec<i64>>()
        );
        let fine = pool.map_chunksize(|x: i64| x * 2, (0..200_000).collect::<Vec<i64>>(), 100);
        assert_eq!(fine.unwrap(), doubled);
    }
}

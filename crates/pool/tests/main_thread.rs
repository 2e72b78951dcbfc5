//! The pool driven from the process's main thread, where workers are forked in place (libtest
//! runs tests on threads of their own, so this file has its own `main`): maps, replacements of
//! retired and killed workers, and a pool started by a thread that then ended.

use std::time::Duration;

use hpcbox_pool::Pool;

fn addit(x: i64) -> i64 {
    x + 1
}

fn pid_of(_: u32) -> u32 {
    std::process::id()
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            !stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

fn main() {
    // Forked here, by the main thread; driven here.
    let pool = Pool::new(2).unwrap();
    let pids = pool.worker_pids();
    assert_eq!(
        pool.map(addit, 0..1000).unwrap(),
        (1..=1000).collect::<Vec<_>>()
    );
    assert_eq!(pool.worker_pids(), pids);
    // A killed worker is replaced from here, and the pool goes on.
    // SAFETY: sending a signal to a worker of ours.
    unsafe { libc::kill(pids[0] as i32, libc::SIGKILL) };
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        pool.map(addit, 0..10).unwrap(),
        (1..=10).collect::<Vec<_>>()
    );
    assert!(!pool.worker_pids().contains(&pids[0]));
    drop(pool);

    // Retired workers are replaced from here.
    let pool = Pool::builder()
        .workers(2)
        .maxtasksperchild(1)
        .build()
        .unwrap();
    let ran = pool.map_chunksize(pid_of, 0..6u32, 1).unwrap();
    assert!(ran.windows(2).any(|w| w[0] != w[1]));

    // A pool started by a thread that ended keeps its workers (forked by the forker thread),
    // driven from here.
    let pool = std::thread::spawn(|| Pool::new(2).unwrap()).join().unwrap();
    let pids = pool.worker_pids();
    std::thread::sleep(Duration::from_millis(50));
    assert!(pids.iter().all(|&pid| alive(pid)), "{pids:?}");
    assert_eq!(
        pool.map(addit, 0..10).unwrap(),
        (1..=10).collect::<Vec<_>>()
    );
    assert_eq!(pool.worker_pids(), pids);
    println!("main_thread: ok");
}

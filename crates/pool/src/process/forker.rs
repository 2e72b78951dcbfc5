//! Where workers are forked: in the main thread when it asks, else in the process's forker
//! thread.
//!
//! A worker's parent-death signal (`PR_SET_PDEATHSIG`: it dies with the caller) is tied to the
//! *thread* that forked it, and a worker is a copy of that thread (its stack, its
//! thread-locals). Forked from a short-lived thread that started a pool or drove it, a worker
//! would die with that thread. The main thread ends only with the process, and forking there
//! is the cheapest fork there is (in a program with no other thread, no other CPU holds its
//! mappings); any other thread hands its forks to a thread that lives as long as the process
//! and does nothing else (a round trip between two threads: ~0.1 ms here).

use std::sync::mpsc::{channel, sync_channel, Sender, SyncSender};
use std::sync::{Mutex, OnceLock};

use nix::unistd::Pid;

use super::child::{child_main, ChildSetup};
use super::engine::block_sigpipe;
use crate::error::PoolError;

/// Workers to fork, and where their pids (or why not) go, in order.
struct Request {
    setups: Vec<ChildSetup>,
    reply: SyncSender<Vec<nix::Result<Pid>>>,
}

/// Forks one worker per set-up (each runs [`child_main`]); their pids, or why each could not
/// be forked, in order. An error when the forker thread cannot be started.
pub(super) fn fork_workers(setups: Vec<ChildSetup>) -> Result<Vec<nix::Result<Pid>>, PoolError> {
    if on_main_thread() {
        return Ok(setups.into_iter().map(fork_one).collect());
    }
    let (reply, answer) = sync_channel(1);
    forker()?
        .send(Request { setups, reply })
        .map_err(|_| gone())?;
    answer.recv().map_err(|_| gone())
}

fn gone() -> PoolError {
    PoolError::Spawn("the pool's forker thread is gone".into())
}

/// The forker thread's request line, started on first use.
fn forker() -> Result<Sender<Request>, PoolError> {
    static FORKER: OnceLock<Mutex<Option<Sender<Request>>>> = OnceLock::new();
    let slot = FORKER.get_or_init(|| Mutex::new(None));
    let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(tx) = slot.as_ref() {
        return Ok(tx.clone());
    }
    let (tx, rx) = channel::<Request>();
    std::thread::Builder::new()
        .name("hpcbox-pool-forker".into())
        .spawn(move || {
            block_sigpipe();
            for request in rx {
                let pids = request.setups.into_iter().map(fork_one).collect();
                let _ = request.reply.send(pids);
            }
        })
        .map_err(|e| PoolError::Spawn(format!("no forker thread: {e}")))?;
    *slot = Some(tx.clone());
    Ok(tx)
}

/// Whether this is the process's main thread (whose end is the process's end).
fn on_main_thread() -> bool {
    #[cfg(target_os = "linux")]
    // SAFETY: plain syscalls without arguments.
    return unsafe { libc::gettid() == libc::getpid() };
    #[cfg(not(target_os = "linux"))]
    true // no parent-death signal there: any thread may fork
}

fn fork_one(setup: ChildSetup) -> nix::Result<Pid> {
    // SAFETY: the child only runs `child_main`, which ends in `_exit`; see the crate docs for
    // what a forked child of a multi-threaded process may do.
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Child => child_main(setup),
        nix::unistd::ForkResult::Parent { child } => Ok(child),
    }
}

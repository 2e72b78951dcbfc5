//! Where workers are forked: in the main thread when it asks, else in the process's forker
//! thread.
//!
//! A worker's parent-death signal (`PR_SET_PDEATHSIG`: it dies with the caller) is tied to the
//! *thread* that forked it, and a worker is a copy of that thread (its stack, its
//! thread-locals). Forked from a short-lived thread that started a pool or drove it, a worker
//! would die with that thread. The main thread ends with the process (unless a program ends
//! it alone with `pthread_exit`), and forking there is the cheapest fork there is (in a
//! program with no other thread, no other CPU holds its mappings); any other thread hands its
//! forks to a thread that lives as long as the process and does nothing else (a round trip
//! between two threads: ~0.1 ms here), which forks with the asking thread's signal mask and a
//! stack as large as the main thread's.

use std::sync::mpsc::{channel, sync_channel, Sender, SyncSender};
use std::sync::Mutex;

use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow, Signal};
use nix::unistd::Pid;

use super::child::{child_main, ChildSetup};
use crate::error::PoolError;

/// Workers to fork, with the signal mask they start with, and where their pids (or why not)
/// go, in order.
struct Request {
    setups: Vec<ChildSetup>,
    mask: SigSet,
    reply: SyncSender<Vec<nix::Result<Pid>>>,
}

/// Forks one worker per set-up (each runs [`child_main`]); their pids, or why each could not
/// be forked, in order. An error when the forker thread cannot be started.
pub(super) fn fork_workers(setups: Vec<ChildSetup>) -> Result<Vec<nix::Result<Pid>>, PoolError> {
    if on_main_thread() {
        return Ok(setups.into_iter().map(fork_one).collect());
    }
    // Workers start with the asking thread's signal mask, as if forked there.
    let mut mask = SigSet::empty();
    let _ = pthread_sigmask(SigmaskHow::SIG_BLOCK, None, Some(&mut mask));
    let (reply, answer) = sync_channel(1);
    let sent = forker()?.send(Request {
        setups,
        mask,
        reply,
    });
    match sent.map(|()| answer.recv()) {
        Ok(Ok(pids)) => Ok(pids),
        _ => {
            forget_forker(); // the next call starts a new one
            Err(PoolError::Spawn("the pool's forker thread is gone".into()))
        }
    }
}

/// The forker's request line, with the process it belongs to: a process forked from this
/// one (without exec) inherits the line but not the thread, and must start its own.
static FORKER: Mutex<Option<(u32, Sender<Request>)>> = Mutex::new(None);

/// The forker thread's request line, started on first use in this process.
fn forker() -> Result<Sender<Request>, PoolError> {
    let mut slot = FORKER.lock().unwrap_or_else(|e| e.into_inner());
    match slot.take() {
        Some((pid, tx)) if pid == std::process::id() => {
            *slot = Some((pid, tx.clone()));
            return Ok(tx);
        }
        // A parent's line: its receiver lives in no thread here, and dropping it could take
        // locks of the parent's state; it is left alone.
        Some(stale) => std::mem::forget(stale),
        None => {}
    }
    let (tx, rx) = channel::<Request>();
    std::thread::Builder::new()
        .name("hpcbox-pool-forker".into())
        .stack_size(main_stack_size())
        .spawn(move || {
            for Request {
                setups,
                mask,
                reply,
            } in rx
            {
                let mut mask = mask;
                mask.add(Signal::SIGPIPE);
                let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&mask), None);
                let _ = reply.send(setups.into_iter().map(fork_one).collect());
            }
        })
        .map_err(|e| PoolError::Spawn(format!("no forker thread: {e}")))?;
    *slot = Some((std::process::id(), tx.clone()));
    Ok(tx)
}

fn forget_forker() {
    *FORKER.lock().unwrap_or_else(|e| e.into_inner()) = None;
}

/// The main thread's stack size (the soft `RLIMIT_STACK`, 8 MiB where unlimited), given to the
/// forker thread so that a worker, which runs on the stack of the thread it was forked from,
/// has as much room wherever it was forked.
fn main_stack_size() -> usize {
    const DEFAULT: usize = 8 << 20;
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills a struct of ours.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_STACK, &mut limit) } == 0;
    match usize::try_from(limit.rlim_cur) {
        Ok(n) if ok && limit.rlim_cur != libc::RLIM_INFINITY && n >= 64 << 10 => n,
        _ => DEFAULT,
    }
}

/// Whether this is the process's main thread (whose end is the process's end).
fn on_main_thread() -> bool {
    #[cfg(target_os = "linux")]
    // SAFETY: plain syscalls without arguments.
    return unsafe { libc::syscall(libc::SYS_gettid) == libc::c_long::from(libc::getpid()) };
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

//! The engine behind `Pool<Processes>`: the state shared with whoever drives the workers,
//! starting and stopping the pool, and submitting chunks.
//!
//! The workers are driven (jobs sent, replies read, deaths settled: [`Supervisor::step`]) by
//! the caller of a blocking operation (`map`, `starmap`, `apply`, …) from its own thread while
//! it waits, as long as no other caller needs them; from the first asynchronous operation, or
//! as soon as two callers would need them at once, by a supervisor thread of the pool's own,
//! for good. A pool used by one thread at a time thus needs no thread of its own, and its
//! results come without a hand-off between threads.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, OwnedFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Once};
use std::thread::JoinHandle;
use std::time::Instant;

use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow, Signal};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::child::{child_entry, ChildEntry};
use super::codec::{encode_task, raw_size};
use super::job::{decode_end, Job, JobEnd, RawItems};
use super::lanes::{Lanes, LANE_BYTES, LANE_MIN};
use super::supervisor::Supervisor;
use super::sys::{nonblocking_pipe, take_epipe};
use super::{KIND_TASK, TASK_HEADER};
use crate::buf::{OutBuf, Slice};
use crate::call::{
    Batch, BatchSender, Callable, Config, Engine, Kind, Payload, Processes, Reporter, Runs,
};
use crate::error::PoolError;

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    Run,
    Drain,
    Kill,
}

pub(super) struct State {
    pub(super) queue: VecDeque<Job>,
    pub(super) mode: Mode,
    pub(super) sleeping: bool,
    pub(super) woken: bool,
    pub(super) pids: Vec<u32>,
    pub(super) broken: Option<PoolError>,
    /// A supervisor thread drives the workers (for good).
    pub(super) background: bool,
    /// Callers waiting to drive the workers (or to hand them to a supervisor thread): the one
    /// driving hands them over instead of going on.
    pub(super) contenders: usize,
}

/// Blocks SIGPIPE in the calling thread (the supervisor thread, and each worker): a write to a
/// dead worker's pipe then fails with EPIPE, which the pool handles, even in a program that
/// restored SIGPIPE's default disposition, where the signal would kill the whole process.
pub(super) fn block_sigpipe() {
    let _ = pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&sigpipe()), None);
}

pub(super) struct Shared {
    state: Mutex<State>,
    pub(super) wake_w: OwnedFd,
    /// A read end of the wake pipe kept as long as its write end: once the supervisor has
    /// exited, a late wake finds a full or drained pipe (EAGAIN, ignored) rather than no reader,
    /// which would raise SIGPIPE and kill a program that restored SIGPIPE's default.
    pub(super) wake_reader: OwnedFd,
}

impl Shared {
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wakes the supervisor if it sleeps in poll (call with the lock held).
    fn wake(&self, st: &mut State) {
        if st.sleeping && !st.woken {
            st.woken = true;
            // SAFETY: writing one byte from a valid buffer to our own pipe.
            unsafe { libc::write(self.wake_w.as_raw_fd(), [1u8].as_ptr().cast(), 1) };
        }
    }
}

/// The engine behind `Pool<Processes>`.
#[doc(hidden)]
pub struct ProcessEngine {
    shared: Arc<Shared>,
    /// Who drives the workers; held by whoever drives them from a caller's thread.
    driver: Mutex<Driver>,
}

/// Who drives the workers.
enum Driver {
    /// Whichever caller holds the lock: the supervisor waits here between calls.
    Callers(Box<Supervisor>),
    /// The pool's supervisor thread.
    Thread(JoinHandle<()>),
    /// Nobody: the pool has stopped.
    Stopped,
}

/// Set in a worker process as soon as it is forked.
pub(super) static IN_WORKER: AtomicBool = AtomicBool::new(false);

/// Wraps the panic hook, once per process, so that a panic in a worker process prints nothing
/// (its message comes back to the caller in [`PoolError::Panicked`], as Python re-raises a
/// worker's exception) and, above all, never takes the locks of the default hook: another
/// thread of the caller may have held them (printing a panic, a backtrace) at the moment of the
/// fork, and the child would then wait on them forever. In the caller the previous hook runs.
fn quiet_worker_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !IN_WORKER.load(Ordering::Relaxed) {
                previous(info);
            }
        }));
    });
}

impl Kind for Processes {
    type Engine = ProcessEngine;

    fn start(cfg: Arc<Config>) -> Result<Arc<ProcessEngine>, PoolError> {
        quiet_worker_panics();
        let (wake_r, wake_w) = nonblocking_pipe().map_err(|e| PoolError::Spawn(e.to_string()))?;
        let wake_reader = wake_r
            .try_clone()
            .map_err(|e| PoolError::Spawn(e.to_string()))?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                mode: Mode::Run,
                sleeping: false,
                woken: false,
                pids: Vec::new(),
                broken: None,
                background: false,
                contenders: 0,
            }),
            wake_w,
            wake_reader,
        });
        let lanes = Lanes::new(cfg.workers).map(Arc::new);
        let mut sup = Supervisor {
            shared: shared.clone(),
            wake_r,
            cfg,
            workers: Vec::new(),
            pending: VecDeque::new(),
            last_sweep: Instant::now(),
            failed_spawn: None,
            lanes,
            driven_by_caller: false,
            cross_memory: cfg!(target_os = "linux"),
        };
        // The first workers are forked now (in this thread if it is the main one, else by the
        // forker thread: see `forker`): worker_pids() is right at once, and a failure is this
        // call's error.
        sup.start_workers()?;
        Ok(Arc::new(ProcessEngine {
            shared,
            driver: Mutex::new(Driver::Callers(Box::new(sup))),
        }))
    }
}

impl ProcessEngine {
    fn push(&self, job: Job) {
        let refused = {
            let mut st = self.shared.lock();
            if let Some(err) = &st.broken {
                err.clone()
            } else {
                match st.mode {
                    Mode::Run => {
                        st.queue.push_back(job);
                        self.shared.wake(&mut st);
                        return;
                    }
                    Mode::Drain => PoolError::Closed,
                    Mode::Kill => PoolError::Terminated,
                }
            }
        };
        (job.done)(JobEnd::Cancelled(refused));
    }

    fn stop(&self, mode: Mode) {
        {
            let mut st = self.shared.lock();
            if st.mode != Mode::Kill {
                st.mode = mode;
            }
            st.sleeping = true; // force a wake byte even if it is between polls
            st.woken = false;
            self.shared.wake(&mut st);
        }
        // A caller driving the workers sees the mode and lets go once its own work is settled.
        let mut driver = self.driver.lock().unwrap_or_else(|e| e.into_inner());
        match std::mem::replace(&mut *driver, Driver::Stopped) {
            Driver::Callers(mut sup) => {
                // Drained or killed from this thread: no thread to hand over to.
                let _sigpipe = SigpipeBlocked::new();
                run_guarded(&mut sup, Supervisor::run);
            }
            Driver::Thread(handle) => {
                let _ = handle.join();
            }
            Driver::Stopped => {}
        }
    }

    /// Takes the driver's lock, as a contender: whoever drives from a caller's thread now
    /// hands the workers to a supervisor thread and lets go.
    fn lock_driver(&self) -> MutexGuard<'_, Driver> {
        {
            let mut st = self.shared.lock();
            st.contenders += 1;
            self.shared.wake(&mut st);
        }
        let driver = self.driver.lock().unwrap_or_else(|e| e.into_inner());
        self.shared.lock().contenders -= 1;
        driver
    }

    /// Hands the workers to a supervisor thread, for good (a no-op once one has them).
    fn start_background(&self, driver: &mut Driver) {
        let sup = match std::mem::replace(driver, Driver::Stopped) {
            Driver::Callers(sup) => sup,
            other => {
                *driver = other;
                return;
            }
        };
        self.shared.lock().background = true;
        // The supervisor waits in a slot the thread empties, so that it is still here to
        // settle its work should no thread start.
        let slot = Arc::new(Mutex::new(Some(sup)));
        let theirs = slot.clone();
        let spawned = std::thread::Builder::new()
            .name("hpcbox-pool-supervisor".into())
            .spawn(move || {
                let taken = theirs.lock().unwrap_or_else(|e| e.into_inner()).take();
                if let Some(mut sup) = taken {
                    block_sigpipe();
                    run_guarded(&mut sup, Supervisor::run);
                }
            });
        *driver = match spawned {
            Ok(handle) => Driver::Thread(handle),
            Err(e) => {
                if let Some(mut sup) = slot.lock().unwrap_or_else(|e| e.into_inner()).take() {
                    let _sigpipe = SigpipeBlocked::new();
                    sup.fail_all(PoolError::Spawn(format!("no supervisor thread: {e}")));
                }
                Driver::Stopped
            }
        };
    }
}

/// Runs `f` on the supervisor; should it panic (a bug of ours), fails everything rather than
/// leave callers waiting.
fn run_guarded<R>(sup: &mut Supervisor, f: impl FnOnce(&mut Supervisor) -> R) -> Option<R> {
    match catch_unwind(AssertUnwindSafe(|| f(sup))) {
        Ok(r) => Some(r),
        Err(_) => {
            sup.fail_all(PoolError::Spawn("the pool's supervisor panicked".into()));
            None
        }
    }
}

/// SIGPIPE blocked in this thread while it drives the workers (a write to a dead worker's
/// pipe then fails with EPIPE, which the supervisor handles, even where the program restored
/// SIGPIPE's default); a SIGPIPE raised meanwhile is taken back before the mask is restored.
struct SigpipeBlocked {
    previous: SigSet,
}

impl SigpipeBlocked {
    fn new() -> SigpipeBlocked {
        let mut previous = SigSet::empty();
        let _ = pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&sigpipe()), Some(&mut previous));
        SigpipeBlocked { previous }
    }
}

impl Drop for SigpipeBlocked {
    fn drop(&mut self) {
        let ours = take_epipe();
        if self.previous.contains(Signal::SIGPIPE) {
            return; // blocked by the program itself: its pending signals are its own
        }
        // Only a SIGPIPE our own failed write raised: another one is the program's.
        // SAFETY: sigpending fills a sigset_t of ours.
        let pending = ours
            && unsafe {
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigpending(&mut set) == 0 && libc::sigismember(&set, libc::SIGPIPE) == 1
            };
        if pending {
            let zero = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: takes the pending SIGPIPE of this thread; null info, a zero timeout.
            unsafe {
                libc::sigtimedwait(sigpipe().as_ref(), std::ptr::null_mut(), &zero);
            }
        }
        let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&self.previous), None);
    }
}

fn sigpipe() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGPIPE);
    set
}

impl Engine for ProcessEngine {
    fn worker_pids(&self) -> Vec<u32> {
        // With nobody driving, first settle deaths and retirements since the last call.
        if let Ok(mut driver) = self.driver.try_lock() {
            if let Driver::Callers(sup) = &mut *driver {
                run_guarded(sup, |sup| sup.collect_exits(true));
            }
        }
        self.shared.lock().pids.clone()
    }

    fn join(&self) {
        self.stop(Mode::Drain);
    }

    fn terminate(&self) {
        self.stop(Mode::Kill);
    }

    fn drive(&self, done: &dyn Fn() -> bool) {
        if done() || self.shared.lock().background {
            return;
        }
        let mut driver = self.lock_driver();
        let Driver::Callers(sup) = &mut *driver else {
            return; // a supervisor thread took over meanwhile, or the pool stopped
        };
        let _sigpipe = SigpipeBlocked::new();
        sup.driven_by_caller = true;
        let handed_over = run_guarded(sup, |sup| {
            // Deaths while nobody drove: settled before any job goes to a dead worker.
            sup.collect_exits(true);
            loop {
                if done() {
                    return false;
                }
                if self.shared.lock().contenders > 0 {
                    return true; // another caller needs the workers too
                }
                if !sup.step() {
                    return false; // terminated or drained: every job settled
                }
            }
        });
        sup.driven_by_caller = false;
        match handed_over {
            Some(true) => self.start_background(&mut driver),
            Some(false) => {}
            None => *driver = Driver::Stopped, // a bug of ours: everything failed already
        }
    }

    fn ensure_background(&self) {
        if self.shared.lock().background {
            return;
        }
        let mut driver = self.lock_driver();
        self.start_background(&mut driver);
    }
}

impl<C, T> Runs<C, T> for Processes
where
    C: Callable<T> + Copy,
    T: Serialize + DeserializeOwned + Send + 'static,
    C::Output: Serialize + DeserializeOwned + Send + 'static,
{
    fn submit(
        engine: &Arc<ProcessEngine>,
        _call: &Arc<C>,
        items: Slice<T>,
        first: usize,
        cfg: &Config,
        tx: BatchSender<C::Output>,
        out: Option<Arc<OutBuf<C::Output>>>,
    ) {
        const {
            assert!(
                std::mem::size_of::<C>() == 0,
                "process workers need a fn item or a closure that captures nothing"
            )
        };
        let entry = child_entry::<C, T> as ChildEntry as usize as u64;
        let limit = cfg.max_message_bytes;
        let len = items.len();
        let raw_bytes = 1 + std::mem::size_of_val(items.as_slice());
        // SAFETY: `first` is this chunk's first position in the output vector.
        let xmem_dst = out
            .as_ref()
            .filter(|_| raw_size::<C::Output>().is_some() && raw_size::<T>().is_some())
            .map(|out| unsafe { out.slot(first) } as u64);
        let fits_lane = (LANE_MIN..=LANE_BYTES).contains(&raw_bytes);
        let (frame, raw): (Vec<u8>, Option<Box<dyn RawItems>>) = if raw_size::<T>().is_some()
            && (fits_lane || (xmem_dst.is_some() && raw_bytes >= LANE_MIN))
            && raw_bytes <= limit
        {
            // A lane-sized chunk of numbers: the supervisor copies it where it goes.
            let mut header = vec![0u8; TASK_HEADER];
            header[4] = KIND_TASK;
            header[5..13].copy_from_slice(&entry.to_le_bytes());
            (header, Some(Box::new(items)))
        } else {
            let encoded = encode_task(entry, items.as_slice(), limit);
            drop(items);
            match encoded {
                Ok(frame) => (frame, None),
                Err(err) => {
                    tx.send(Batch::failed(first, len, |i| err.at(i)));
                    return;
                }
            }
        };
        let reporter = Reporter::new(tx, first, len);
        engine.push(Job {
            frame,
            lane: None,
            xmem_dst: xmem_dst.filter(|_| raw.is_some()),
            xmem_wire: None,
            raw,
            done: Box::new(move |end| {
                let make = move || decode_end::<C::Output>(end, first, len, out);
                reporter.send(Payload::Lazy(Box::new(make)));
            }),
        });
    }
}

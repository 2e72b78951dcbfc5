//! The engine behind `Pool<Processes>`: the state shared with the supervisor thread, starting
//! and stopping the pool, and submitting chunks.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, OwnedFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Once};
use std::thread::JoinHandle;
use std::time::Instant;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::child::{child_entry, ChildEntry};
use super::codec::{encode_task, raw_size};
use super::job::{decode_end, Job, JobEnd, RawItems};
use super::lanes::{Lanes, LANE_BYTES, LANE_MIN};
use super::supervisor::Supervisor;
use super::sys::nonblocking_pipe;
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
}

/// Blocks SIGPIPE in the calling thread (the supervisor, and so the workers it forks): a write
/// to a dead worker's pipe then fails with EPIPE, which the pool handles, even in a program that
/// restored SIGPIPE's default disposition, where the signal would kill the whole process.
fn block_sigpipe() {
    use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow, Signal};
    let mut set = SigSet::empty();
    set.add(Signal::SIGPIPE);
    let _ = pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None);
}

pub(super) struct Shared {
    state: Mutex<State>,
    pub(super) wake_w: OwnedFd,
    /// A read end of the wake pipe kept as long as its write end: once the supervisor has
    /// exited, a late wake finds a full or drained pipe (EAGAIN, ignored) rather than no reader,
    /// which would raise SIGPIPE and kill a program that restored SIGPIPE's default.
    _wake_reader: OwnedFd,
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
    supervisor: Mutex<Option<JoinHandle<()>>>,
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
            }),
            wake_w,
            _wake_reader: wake_reader,
        });
        let lanes = Lanes::new(cfg.workers).map(Arc::new);
        let mut sup = Supervisor {
            shared: shared.clone(),
            wake_r,
            cfg,
            workers: Vec::new(),
            pending: VecDeque::new(),
            last_sweep: Instant::now(),
            lanes,
            cross_memory: cfg!(target_os = "linux"),
        };
        // Fork the first workers before returning, so worker_pids() is right at once.
        let (tx, rx) = std::sync::mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("hpcbox-pool-supervisor".into())
            .spawn(move || {
                block_sigpipe();
                let started = sup.start_workers();
                let failed = started.is_err();
                let _ = tx.send(started);
                if !failed && catch_unwind(AssertUnwindSafe(|| sup.run())).is_err() {
                    // A bug of ours: fail everything rather than leave callers waiting.
                    let err = PoolError::Spawn("the pool's supervisor thread panicked".into());
                    sup.shared.lock().broken = Some(err.clone());
                    sup.kill_all();
                    sup.cancel_all(err);
                }
            })
            .map_err(|e| PoolError::Spawn(e.to_string()))?;
        match rx.recv() {
            Ok(Ok(())) => Ok(Arc::new(ProcessEngine {
                shared,
                supervisor: Mutex::new(Some(handle)),
            })),
            Ok(Err(e)) => {
                let _ = handle.join();
                Err(e)
            }
            Err(_) => Err(PoolError::Spawn("supervisor thread failed".into())),
        }
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
        let handle = self
            .supervisor
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

impl Engine for ProcessEngine {
    fn worker_pids(&self) -> Vec<u32> {
        self.shared.lock().pids.clone()
    }

    fn join(&self) {
        self.stop(Mode::Drain);
    }

    fn terminate(&self) {
        self.stop(Mode::Kill);
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

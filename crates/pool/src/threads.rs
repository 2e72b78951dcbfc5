//! Thread workers: a fixed set of threads pulling chunk jobs from one shared queue.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use crate::buf::{OutBuf, Slice};
use crate::call::{
    BatchSender, Callable, Chunk, Config, Engine, Kind, Payload, Reporter, Runs, Threads,
};
use crate::error::{panic_message, PoolError};
use crate::spin_until;

/// A queued chunk: run with `None`, or cancelled with the error its items get.
type Job = Box<dyn FnOnce(Option<PoolError>, &AtomicBool) + Send>;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Run,
    Drain,
    Kill,
}

struct State {
    queue: VecDeque<Job>,
    mode: Mode,
    broken: Option<String>,
    handles: Vec<JoinHandle<()>>,
}

struct Shared {
    state: Mutex<State>,
    work: Condvar,
    /// Jobs in the queue, readable without the lock (for spinning workers).
    queued: AtomicUsize,
    killed: AtomicBool,
    cfg: Arc<Config>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The engine behind `Pool<Threads>`.
#[doc(hidden)]
pub struct ThreadEngine {
    shared: Arc<Shared>,
}

impl Kind for Threads {
    type Engine = ThreadEngine;

    fn start(cfg: Arc<Config>) -> Result<Arc<ThreadEngine>, PoolError> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                mode: Mode::Run,
                broken: None,
                handles: Vec::new(),
            }),
            work: Condvar::new(),
            queued: AtomicUsize::new(0),
            killed: AtomicBool::new(false),
            cfg: cfg.clone(),
        });
        for _ in 0..cfg.workers {
            let handle = spawn_worker(&shared)?;
            shared.lock().handles.push(handle);
        }
        Ok(Arc::new(ThreadEngine { shared }))
    }
}

fn spawn_worker(shared: &Arc<Shared>) -> Result<JoinHandle<()>, PoolError> {
    let shared = shared.clone();
    std::thread::Builder::new()
        .name("hpcbox-pool".into())
        .spawn(move || worker_main(&shared))
        .map_err(|e| PoolError::Spawn(e.to_string()))
}

fn worker_main(shared: &Arc<Shared>) {
    if let Some(init) = &shared.cfg.initializer {
        if let Err(p) = catch_unwind(AssertUnwindSafe(|| init())) {
            let msg = panic_message(p.as_ref());
            let queued = {
                let mut st = shared.lock();
                st.broken.get_or_insert(msg.clone());
                shared.queued.store(0, Ordering::Release);
                std::mem::take(&mut st.queue)
            };
            for job in queued {
                job(
                    Some(PoolError::InitializerFailed(msg.clone())),
                    &shared.killed,
                );
            }
            return;
        }
    }
    let mut done = 0usize;
    loop {
        let job = {
            let mut st = shared.lock();
            loop {
                if st.mode == Mode::Kill {
                    return;
                }
                if let Some(job) = st.queue.pop_front() {
                    shared.queued.fetch_sub(1, Ordering::AcqRel);
                    break job;
                }
                if st.mode == Mode::Drain {
                    return;
                }
                // Spin a little before sleeping: the next chunk usually comes within
                // microseconds, and a sleeping thread may wait milliseconds for a CPU.
                drop(st);
                spin_until(|| shared.queued.load(Ordering::Acquire) > 0);
                st = shared.lock();
                if st.queue.is_empty() && st.mode == Mode::Run {
                    st = shared.work.wait(st).unwrap_or_else(|e| e.into_inner());
                }
            }
        };
        job(None, &shared.killed);
        done += 1;
        if shared.cfg.maxtasks.is_some_and(|m| done >= m) {
            let mut st = shared.lock();
            if st.mode != Mode::Kill {
                if let Ok(h) = spawn_worker(shared) {
                    st.handles.push(h);
                }
            }
            return;
        }
    }
}

impl ThreadEngine {
    fn push(&self, job: Job) {
        let refused = {
            let mut st = self.shared.lock();
            if let Some(msg) = &st.broken {
                Some(PoolError::InitializerFailed(msg.clone()))
            } else {
                match st.mode {
                    Mode::Run => {
                        st.queue.push_back(job);
                        self.shared.queued.fetch_add(1, Ordering::AcqRel);
                        self.shared.work.notify_one();
                        return;
                    }
                    Mode::Drain => Some(PoolError::Closed),
                    Mode::Kill => Some(PoolError::Terminated),
                }
            }
        };
        job(refused, &self.shared.killed);
    }
}

impl Engine for ThreadEngine {
    fn worker_pids(&self) -> Vec<u32> {
        Vec::new()
    }

    fn join(&self) {
        {
            let mut st = self.shared.lock();
            if st.mode == Mode::Run {
                st.mode = Mode::Drain;
            }
            self.shared.work.notify_all();
        }
        loop {
            // Replacements (maxtasksperchild) may be pushed while we wait: take one at a time.
            let handle = {
                let mut st = self.shared.lock();
                if st.mode == Mode::Kill {
                    // Running tasks cannot be stopped: their threads are left to finish.
                    st.handles.clear();
                    return;
                }
                st.handles.pop()
            };
            match handle {
                Some(h) => {
                    let _ = h.join();
                }
                None => return,
            }
        }
    }

    fn terminate(&self) {
        let queued = {
            let mut st = self.shared.lock();
            st.mode = Mode::Kill;
            self.shared.killed.store(true, Ordering::SeqCst);
            self.shared.work.notify_all();
            st.handles.clear();
            self.shared.queued.store(0, Ordering::Release);
            std::mem::take(&mut st.queue)
        };
        for job in queued {
            job(Some(PoolError::Terminated), &self.shared.killed);
        }
    }
}

impl<C, T> Runs<C, T> for Threads
where
    C: Callable<T>,
    T: Send + 'static,
    C::Output: Send + 'static,
{
    fn submit(
        engine: &Arc<ThreadEngine>,
        call: &Arc<C>,
        items: Slice<T>,
        first: usize,
        _cfg: &Config,
        tx: BatchSender<C::Output>,
        out: Option<Arc<OutBuf<C::Output>>>,
    ) {
        let call = call.clone();
        let len = items.len();
        let reporter = Reporter::new(tx, first, len);
        engine.push(Box::new(move |cancel, killed| {
            let chunk = match cancel {
                Some(err) => Chunk::failed(first, len, |_| err.clone()),
                None => match out {
                    Some(out) => {
                        let chunk = run_chunk_into(&*call, items, first, killed, &out);
                        drop(out); // before reporting, so the caller can take the buffer
                        chunk
                    }
                    None => run_chunk(&*call, items, first, killed),
                },
            };
            reporter.send(Payload::Ready(chunk));
        }));
    }
}

/// Calls on each item, catching panics; stops early (items fail as terminated) once `killed`.
///
/// One `catch_unwind` covers a run of items, so the loop stays tight; after a panic the run
/// restarts at the next item.
fn run_chunk<C: Callable<T>, T>(
    call: &C,
    items: impl ExactSizeIterator<Item = T>,
    first: usize,
    killed: &AtomicBool,
) -> Chunk<C::Output> {
    let len = items.len();
    let mut it = items;
    let mut out: Vec<C::Output> = Vec::with_capacity(len);
    let mut failed: Vec<(usize, PoolError)> = Vec::new();
    loop {
        let run = catch_unwind(AssertUnwindSafe(|| loop {
            let before = out.len();
            for item in it.by_ref().take(1024) {
                out.push(call.invoke(item));
            }
            if out.len() == before || killed.load(Ordering::Relaxed) {
                return;
            }
        }));
        match run {
            Ok(()) => break,
            Err(p) => {
                let at = out.len() + failed.len();
                let message = panic_message(p.as_ref());
                failed.push((
                    at,
                    PoolError::Panicked {
                        index: first + at,
                        message,
                    },
                ));
            }
        }
    }
    let left = it.len();
    if failed.is_empty() && left == 0 {
        return Chunk::Ok(out);
    }
    for _ in it {
        let at = out.len() + failed.len();
        failed.push((at, PoolError::Terminated));
    }
    Chunk::Mixed(merge(out, failed, len))
}

/// [`run_chunk`] writing the values straight to their place in `out`; on a panic (or when
/// killed) the written values are taken back and the chunk ends as per-item results.
fn run_chunk_into<C: Callable<T>, T>(
    call: &C,
    mut items: Slice<T>,
    first: usize,
    killed: &AtomicBool,
    out: &OutBuf<C::Output>,
) -> Chunk<C::Output> {
    let len = items.len();
    let src = items.as_ptr();
    // Values written; after a panic, the item at `done` was read (moved out) too.
    let mut done = 0usize;
    let run = catch_unwind(AssertUnwindSafe(|| {
        // The count lives in a local the loop keeps in a register (which lets the compiler
        // vectorize simple functions), and reaches `done` when the loop ends or unwinds.
        let mut count = Count {
            total: &mut done,
            local: 0,
        };
        // SAFETY: positions first.. belong to this chunk.
        let dst = unsafe { out.slot(first) };
        // SAFETY (both calls): `src` holds `len` items read once each, `dst` room for `len`
        // values; each item is read before its value is written, so over it too.
        if dst.cast::<u8>().cast_const() == src.cast::<u8>() {
            // Results over their items (`split_for_map`): one pointer for both, so that the
            // compiler sees where each write goes and still vectorizes.
            unsafe {
                fill(
                    call,
                    src,
                    src.cast::<C::Output>().cast_mut(),
                    len,
                    killed,
                    &mut count,
                )
            }
        } else {
            unsafe { fill(call, src, dst, len, killed, &mut count) }
        }
    }));
    let taken = done + usize::from(run.is_err());
    // SAFETY: exactly the first `taken` items were read out above.
    unsafe { items.forget_front(taken) };
    if run.is_ok() && done == len {
        return Chunk::Written(len);
    }
    // SAFETY: positions first..first + done were written just above, by this chunk only.
    let values = unsafe { out.take_back(first, done) };
    let mut results: Vec<Result<C::Output, PoolError>> = Vec::with_capacity(len);
    results.extend(values.into_iter().map(Ok));
    match run {
        Err(p) => {
            results.push(Err(PoolError::Panicked {
                index: first + done,
                message: panic_message(p.as_ref()),
            }));
            let next = first + results.len();
            results.extend(run_chunk(call, items, next, killed).into_results());
        }
        Ok(()) => results.extend(items.map(|_| Err(PoolError::Terminated))),
    }
    Chunk::Mixed(results)
}

/// Writes `call` of item `i` of `src` to `dst + i`, from `count.local` on to `len`, checking
/// `killed` every 1,024 items.
///
/// # Safety
/// `src` must hold `len` initialized items, each read here once, and `dst` room for `len`
/// values; a value may be written over its own item, never over a later one.
#[inline(always)]
unsafe fn fill<C: Callable<T>, T>(
    call: &C,
    src: *const T,
    dst: *mut C::Output,
    len: usize,
    killed: &AtomicBool,
    count: &mut Count<'_>,
) {
    while count.local < len {
        let stop = (count.local + 1024).min(len);
        while count.local < stop {
            let at = count.local;
            // SAFETY: item `at` is initialized and read exactly once (the contract).
            let item = unsafe { src.add(at).read() };
            let value = call.invoke(item);
            // SAFETY: position `at` of `dst` is this chunk's, and its item was read.
            unsafe { dst.add(at).write(value) };
            count.local = at + 1;
        }
        if killed.load(Ordering::Relaxed) {
            return;
        }
    }
}

/// A count kept in a local while a loop runs and written to `total` when it ends, by unwinding
/// too (as the standard library's `SetLenOnDrop`).
struct Count<'a> {
    total: &'a mut usize,
    local: usize,
}

impl Drop for Count<'_> {
    fn drop(&mut self) {
        *self.total = self.local;
    }
}

/// Interleaves successes and failures (sorted by position) back into item order.
pub(crate) fn merge<R>(
    out: Vec<R>,
    failed: Vec<(usize, PoolError)>,
    len: usize,
) -> Vec<Result<R, PoolError>> {
    let mut ok = out.into_iter();
    let mut bad = failed.into_iter().peekable();
    (0..len)
        .filter_map(|i| match bad.peek() {
            Some((at, _)) if *at == i => bad.next().map(|(_, e)| Err(e)),
            _ => ok.next().map(Ok),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_chunk_catches_each_panic() {
        let killed = AtomicBool::new(false);
        let f = crate::Plain(|x: u32| {
            assert!(x != 2 && x != 3, "no {x}");
            x
        });
        let r = run_chunk(&f, vec![0, 1, 2, 3, 4].into_iter(), 10, &killed).into_results();
        assert_eq!(r[0], Ok(0));
        assert_eq!(r[1], Ok(1));
        assert!(
            matches!(&r[2], Err(PoolError::Panicked { index: 12, message }) if message == "no 2")
        );
        assert!(matches!(&r[3], Err(PoolError::Panicked { index: 13, .. })));
        assert_eq!(r[4], Ok(4));
        assert!(
            matches!(run_chunk(&f, vec![5].into_iter(), 0, &killed), Chunk::Ok(v) if v == vec![5])
        );
    }

    #[test]
    fn run_chunk_stops_when_killed() {
        let killed = AtomicBool::new(true);
        let f = crate::Plain(|x: u32| x);
        let r = run_chunk(&f, 0..3000u32, 0, &killed).into_results();
        assert_eq!(r.len(), 3000);
        assert_eq!(r[0], Ok(0));
        assert_eq!(r[2999], Err(PoolError::Terminated));
    }

    #[test]
    fn merge_restores_order() {
        let m = merge(
            vec![1, 3],
            vec![(0, PoolError::Closed), (2, PoolError::Taken)],
            4,
        );
        assert_eq!(
            m,
            vec![Err(PoolError::Closed), Ok(1), Err(PoolError::Taken), Ok(3)]
        );
    }
}

//! The pool and its methods, as Python's `multiprocessing.Pool` has them.

use std::collections::{BTreeMap, VecDeque};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::ProgressBar;

use crate::buf::{self, OutBuf};
use crate::call::{
    Batch, BatchSender, Callable, Chunk, Config, Countdown, Engine, Kind, Plain, Processes, Runs,
    Star, Threads,
};
use crate::error::PoolError;
use crate::process::MAX_MESSAGE;

/// The chunk size Python's `Pool.map` picks: the items split in about four chunks per worker.
///
/// `chunksize, extra = divmod(len, workers * 4); if extra: chunksize += 1`; 0 items give 0.
///
/// ```
/// use hpcbox_pool::default_chunksize;
/// assert_eq!(default_chunksize(1_000_000, 2), 125_000);
/// assert_eq!(default_chunksize(3, 2), 1);
/// assert_eq!(default_chunksize(0, 2), 0);
/// ```
pub fn default_chunksize(len: usize, workers: usize) -> usize {
    let per = workers.max(1).saturating_mul(4);
    len.div_ceil(per)
}

/// Builds a [`Pool`]: worker count, kind, initializer, `maxtasksperchild`, progress bar.
///
/// ```
/// use hpcbox_pool::Pool;
/// let pool = Pool::builder().threads().workers(2).build().unwrap();
/// assert_eq!(pool.map(|x: i32| x * 2, vec![1, 2, 3]).unwrap(), vec![2, 4, 6]);
/// ```
pub struct PoolBuilder<K: Kind = Processes> {
    workers: Option<usize>,
    initializer: Option<Arc<dyn Fn() + Send + Sync>>,
    maxtasks: Option<usize>,
    progress: bool,
    max_message_bytes: usize,
    kind: PhantomData<K>,
}

impl Default for PoolBuilder<Processes> {
    fn default() -> Self {
        PoolBuilder {
            workers: None,
            initializer: None,
            maxtasks: None,
            progress: false,
            max_message_bytes: 1 << 30,
            kind: PhantomData,
        }
    }
}

impl<K: Kind> PoolBuilder<K> {
    fn with_kind<K2: Kind>(self) -> PoolBuilder<K2> {
        PoolBuilder {
            workers: self.workers,
            initializer: self.initializer,
            maxtasks: self.maxtasks,
            progress: self.progress,
            max_message_bytes: self.max_message_bytes,
            kind: PhantomData,
        }
    }

    /// Thread workers: any `Fn + Send + Sync` closure, no serialization.
    pub fn threads(self) -> PoolBuilder<Threads> {
        self.with_kind()
    }

    /// Process workers (the default): isolation from crashes; `fn` items and serde values.
    pub fn processes(self) -> PoolBuilder<Processes> {
        self.with_kind()
    }

    /// Number of workers; default [`usable_cpus`](crate::usable_cpus). Zero is an error.
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = Some(n);
        self
    }

    /// Runs once in each worker as it starts (in the child, for process workers). A panic in
    /// it fails the pool's work with [`PoolError::InitializerFailed`] instead of looping.
    pub fn initializer(mut self, f: impl Fn() + Send + Sync + 'static) -> Self {
        self.initializer = Some(Arc::new(f));
        self
    }

    /// A worker is replaced by a fresh one after this many tasks (chunks), as in Python.
    pub fn maxtasksperchild(mut self, n: usize) -> Self {
        self.maxtasks = Some(n);
        self
    }

    /// Shows an indicatif progress bar on stderr for `map`, `starmap` and `imap` (drawn only
    /// when stderr is a terminal).
    pub fn progress(mut self, on: bool) -> Self {
        self.progress = on;
        self
    }

    /// The largest encoded message (a chunk of arguments or of results) to or from a process
    /// worker; larger ones fail with [`PoolError::TooLarge`]. Default 1 GiB, at most ~4 GiB.
    pub fn max_message_bytes(mut self, n: usize) -> Self {
        self.max_message_bytes = n;
        self
    }

    /// Starts the workers.
    pub fn build(self) -> Result<Pool<K>, PoolError> {
        let workers = self.workers.unwrap_or_else(crate::usable_cpus);
        if workers == 0 {
            return Err(PoolError::InvalidArgument(
                "number of workers must be at least 1".into(),
            ));
        }
        if self.maxtasks == Some(0) {
            return Err(PoolError::InvalidArgument(
                "maxtasksperchild must be at least 1".into(),
            ));
        }
        let cfg = Arc::new(Config {
            workers,
            maxtasks: self.maxtasks,
            initializer: self.initializer,
            max_message_bytes: self.max_message_bytes.min(MAX_MESSAGE),
            #[cfg(test)]
            failing_spawns: Default::default(),
        });
        let engine = K::start(cfg.clone())?;
        Ok(Pool {
            engine,
            cfg,
            progress: self.progress,
            spin: usable_cpus_at_first_pool() > workers,
            closed: AtomicBool::new(false),
            terminated: AtomicBool::new(false),
        })
    }
}

/// [`crate::usable_cpus`] as it was when this process built its first pool: reading the
/// affinity mask and the cgroup files costs more than starting a small pool otherwise does.
fn usable_cpus_at_first_pool() -> usize {
    static USABLE: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *USABLE.get_or_init(crate::usable_cpus)
}

/// A pool of workers with Python's `multiprocessing.Pool` methods.
///
/// `Pool` (that is `Pool<Processes>`) forks worker processes; `Pool<Threads>` ([`ThreadPool`])
/// runs threads. Dropping a pool terminates it and waits for its workers, as leaving Python's
/// `with Pool(...) as p:` block does.
///
/// ```
/// use hpcbox_pool::Pool;
///
/// fn addit(x: i32) -> i32 {
///     x + 1
/// }
///
/// let p = Pool::new(2).unwrap();
/// assert_eq!(p.map(addit, vec![1, 2, 3]).unwrap(), vec![2, 3, 4]);
/// ```
pub struct Pool<K: Kind = Processes> {
    engine: Arc<K::Engine>,
    pub(crate) cfg: Arc<Config>,
    progress: bool,
    /// A caller waiting for results spins briefly first, when a CPU is left for it.
    spin: bool,
    closed: AtomicBool,
    terminated: AtomicBool,
}

/// A pool of thread workers.
pub type ThreadPool = Pool<Threads>;

impl Pool<Processes> {
    /// A process pool of `workers` workers (as `Pool(workers)` in Python).
    pub fn new(workers: usize) -> Result<Self, PoolError> {
        Self::builder().workers(workers).build()
    }

    /// A builder, for process workers unless [`PoolBuilder::threads`] is called.
    pub fn builder() -> PoolBuilder<Processes> {
        PoolBuilder::default()
    }
}

impl Pool<Threads> {
    /// A thread pool of `workers` workers (as `ThreadPool(workers)` in Python).
    pub fn threads(workers: usize) -> Result<Self, PoolError> {
        Pool::builder().threads().workers(workers).build()
    }
}

impl<K: Kind> Pool<K> {
    /// The number of workers.
    pub fn workers(&self) -> usize {
        self.cfg.workers
    }

    /// The process ids of the live worker processes (empty for thread workers).
    pub fn worker_pids(&self) -> Vec<u32> {
        self.engine.worker_pids()
    }

    fn check_open(&self) -> Result<(), PoolError> {
        if self.terminated.load(Ordering::SeqCst) {
            Err(PoolError::Terminated)
        } else if self.closed.load(Ordering::SeqCst) {
            Err(PoolError::Closed)
        } else {
            Ok(())
        }
    }

    /// Submits `items` in chunks; the batches come back on the returned receiver. With
    /// `into_vec`, chunks write their values into the vector the operation returns
    /// ([`Submitted::out`]).
    fn submit_all<C, T>(
        &self,
        call: C,
        items: Vec<T>,
        chunksize: Option<usize>,
        into_vec: bool,
        wake_once: bool,
    ) -> Result<Submitted<C::Output>, PoolError>
    where
        C: Callable<T>,
        K: Runs<C, T>,
    {
        self.check_open()?;
        let n = items.len();
        let size = match chunksize {
            Some(0) => {
                return Err(PoolError::InvalidArgument(
                    "chunksize must be at least 1".into(),
                ))
            }
            Some(c) => c,
            None => default_chunksize(n, self.cfg.workers),
        };
        let (tx, rx) = channel();
        let call = Arc::new(call);
        let (slices, out) = if into_vec {
            let (slices, out) = buf::split_for_map(items, size);
            (slices, Some(out))
        } else {
            (buf::split(items, size), None)
        };
        let chunks = slices.len();
        let countdown = wake_once.then(|| Countdown::new(chunks));
        let tx = BatchSender::new(tx, countdown.clone());
        let mut first = 0;
        for slice in slices {
            let len = slice.len();
            K::submit(
                &self.engine,
                &call,
                slice,
                first,
                &self.cfg,
                tx.clone(),
                out.clone(),
            );
            first += len;
        }
        Ok(Submitted {
            rx,
            chunks,
            items: n,
            countdown,
            out,
        })
    }

    fn bar(&self, len: Option<usize>) -> Option<ProgressBar> {
        self.progress.then(|| match len {
            Some(n) => ProgressBar::new(n as u64),
            None => ProgressBar::no_length(),
        })
    }

    /// The handle of a map into a vector. `blocking`: for a caller that waits for it at once
    /// (it shows the progress bar, if the pool has one, and may drive the workers itself).
    fn gather_vec<C, T>(
        &self,
        call: C,
        items: Vec<T>,
        chunksize: Option<usize>,
        blocking: bool,
    ) -> Result<AsyncResult<Vec<C::Output>>, PoolError>
    where
        C: Callable<T>,
        C::Output: Send + 'static,
        K: Runs<C, T>,
    {
        let bar = if blocking {
            self.bar(Some(items.len()))
        } else {
            None
        };
        // Without a bar to move, the caller sleeps until the last chunk instead of waking
        // for each.
        let wake_once = bar.is_none();
        let sub = self.submit_all(call, items, chunksize, true, wake_once)?;
        let mut gather = Gather::new(sub.rx, sub.chunks, bar, finish_vec);
        gather.out = sub.out.map(|out| (out, sub.items));
        gather.spin = self.spin;
        gather.countdown = sub.countdown;
        self.set_driver(&mut gather, blocking);
        Ok(AsyncResult::new(gather))
    }

    /// Lets a blocking caller drive the workers while it waits (where it waits for one
    /// countdown); asynchronous work is driven without it.
    fn set_driver<R, O>(&self, gather: &mut Gather<R, O>, blocking: bool) {
        if blocking && gather.countdown.is_some() {
            gather.driver = Some(self.engine.clone());
        } else {
            self.engine.ensure_background();
        }
    }

    /// Applies `f` to every item, in order; waits for all; returns the first error in item
    /// order, if any (Python raises the first error too). Chunk size as Python's default.
    ///
    /// Where a result has its item's size and alignment and neither needs dropping (numbers,
    /// say), the results come back in the items' own vector, as
    /// `vec.into_iter().map(f).collect()` reuses it: nothing is allocated or freed.
    pub fn map<F, T, R>(
        &self,
        f: F,
        items: impl IntoIterator<Item = T>,
    ) -> Result<Vec<R>, PoolError>
    where
        K: Runs<Plain<F>, T>,
        Plain<F>: Callable<T, Output = R>,
        R: Send + 'static,
    {
        self.map_chunksize_opt(f, items, None)
    }

    /// [`map`](Self::map) with an explicit chunk size (items per task sent to a worker).
    pub fn map_chunksize<F, T, R>(
        &self,
        f: F,
        items: impl IntoIterator<Item = T>,
        chunksize: usize,
    ) -> Result<Vec<R>, PoolError>
    where
        K: Runs<Plain<F>, T>,
        Plain<F>: Callable<T, Output = R>,
        R: Send + 'static,
    {
        self.map_chunksize_opt(f, items, Some(chunksize))
    }

    fn map_chunksize_opt<F, T, R>(
        &self,
        f: F,
        items: impl IntoIterator<Item = T>,
        chunksize: Option<usize>,
    ) -> Result<Vec<R>, PoolError>
    where
        K: Runs<Plain<F>, T>,
        Plain<F>: Callable<T, Output = R>,
        R: Send + 'static,
    {
        let items: Vec<T> = items.into_iter().collect();
        self.gather_vec(Plain(f), items, chunksize, true)?.get(None)
    }

    /// Like [`map`](Self::map), but every item's own result: nothing is lost to the first
    /// error.
    pub fn map_results<F, T, R>(
        &self,
        f: F,
        items: impl IntoIterator<Item = T>,
    ) -> Result<Vec<Result<R, PoolError>>, PoolError>
    where
        K: Runs<Plain<F>, T>,
        Plain<F>: Callable<T, Output = R>,
        R: Send + 'static,
    {
        self.map_results_opt(f, items, None)
    }

    /// [`map_results`](Self::map_results) with an explicit chunk size.
    pub fn map_results_chunksize<F, T, R>(
        &self,
        f: F,
        items: impl IntoIterator<Item = T>,
        chunksize: usize,
    ) -> Result<Vec<Result<R, PoolError>>, PoolError>
    where
        K: Runs<Plain<F>, T>,
        Plain<F>: Callable<T, Output = R>,
        R: Send + 'static,
    {
        self.map_results_opt(f, items, Some(chunksize))
    }

    fn map_results_opt<F, T, R>(
        &self,
        f: F,
        items: impl IntoIterator<Item = T>,
        chunksize: Option<usize>,
    ) -> Result<Vec<Result<R, PoolError>>, PoolError>
    where
        K: Runs<Plain<F>, T>,
        Plain<F>: Callable<T, Output = R>,
        R: Send + 'static,
    {
        let items: Vec<T> = items.into_iter().collect();
        let bar = self.bar(Some(items.len()));
        let wake_once = bar.is_none();
        let sub = self.submit_all(Plain(f), items, chunksize, false, wake_once)?;
        let mut gather = Gather::new(sub.rx, sub.chunks, bar, finish_results);
        gather.countdown = sub.countdown;
        self.set_driver(&mut gather, true);
        AsyncResult::new(gather).get(None)
    }

    /// Starts a [`map`](Self::map) and returns at once; the handle gives the list.
    pub fn map_async<F, T, R>(
        &self,
        f: F,
        items: impl IntoIterator<Item = T>,
    ) -> Result<AsyncResult<Vec<R>>, PoolError>
    where
        K: Runs<Plain<F>, T>,
        Plain<F>: Callable<T, Output = R>,
        R: Send + 'static,
    {
        let items: Vec<T> = items.into_iter().collect();
        self.gather_vec(Plain(f), items, None, false)
    }

    /// Calls `f` with each tuple spread as arguments (`f(a, b)` for `(a, b)`), in order.
    pub fn starmap<F, A, R>(
        &self,
        f: F,
        items: impl IntoIterator<Item = A>,
    ) -> Result<Vec<R>, PoolError>
    where
        K: Runs<Star<F>, A>,
        Star<F>: Callable<A, Output = R>,
        R: Send + 'static,
    {
        let items: Vec<A> = items.into_iter().collect();
        self.gather_vec(Star(f), items, None, true)?.get(None)
    }

    /// [`starmap`](Self::starmap) with an explicit chunk size.
    pub fn starmap_chunksize<F, A, R>(
        &self,
        f: F,
        items: impl IntoIterator<Item = A>,
        chunksize: usize,
    ) -> Result<Vec<R>, PoolError>
    where
        K: Runs<Star<F>, A>,
        Star<F>: Callable<A, Output = R>,
        R: Send + 'static,
    {
        let items: Vec<A> = items.into_iter().collect();
        self.gather_vec(Star(f), items, Some(chunksize), true)?
            .get(None)
    }

    /// Starts a [`starmap`](Self::starmap) and returns at once.
    pub fn starmap_async<F, A, R>(
        &self,
        f: F,
        items: impl IntoIterator<Item = A>,
    ) -> Result<AsyncResult<Vec<R>>, PoolError>
    where
        K: Runs<Star<F>, A>,
        Star<F>: Callable<A, Output = R>,
        R: Send + 'static,
    {
        let items: Vec<A> = items.into_iter().collect();
        self.gather_vec(Star(f), items, None, false)
    }

    /// Calls `f(arg)` in a worker and waits for the result.
    pub fn apply<F, T, R>(&self, f: F, arg: T) -> Result<R, PoolError>
    where
        K: Runs<Plain<F>, T>,
        Plain<F>: Callable<T, Output = R>,
        R: Send + 'static,
    {
        self.apply_inner(f, arg, true)?.get(None)
    }

    /// Starts `f(arg)` in a worker and returns at once.
    pub fn apply_async<F, T, R>(&self, f: F, arg: T) -> Result<AsyncResult<R>, PoolError>
    where
        K: Runs<Plain<F>, T>,
        Plain<F>: Callable<T, Output = R>,
        R: Send + 'static,
    {
        self.apply_inner(f, arg, false)
    }

    fn apply_inner<F, T, R>(
        &self,
        f: F,
        arg: T,
        blocking: bool,
    ) -> Result<AsyncResult<R>, PoolError>
    where
        K: Runs<Plain<F>, T>,
        Plain<F>: Callable<T, Output = R>,
        R: Send + 'static,
    {
        let sub = self.submit_all(Plain(f), vec![arg], Some(1), false, blocking)?;
        let mut gather = Gather::new(sub.rx, sub.chunks, None, finish_one);
        gather.countdown = sub.countdown;
        self.set_driver(&mut gather, blocking);
        Ok(AsyncResult::new(gather))
    }

    /// Results in input order, lazily: items are pulled from `items` only as chunks complete
    /// (at most a few chunks per worker in flight), so memory stays bounded and the input may
    /// be endless. Chunk size 1, as Python's `imap`. Consume it before `join`.
    pub fn imap<'a, F, T, R>(
        &self,
        f: F,
        items: impl IntoIterator<Item = T> + 'a,
    ) -> Result<IMap<'a, R>, PoolError>
    where
        K: Runs<Plain<F>, T>,
        Plain<F>: Callable<T, Output = R>,
        T: 'a,
    {
        self.imap_inner(Plain(f), items, 1, true)
    }

    /// [`imap`](Self::imap) with an explicit chunk size.
    pub fn imap_chunksize<'a, F, T, R>(
        &self,
        f: F,
        items: impl IntoIterator<Item = T> + 'a,
        chunksize: usize,
    ) -> Result<IMap<'a, R>, PoolError>
    where
        K: Runs<Plain<F>, T>,
        Plain<F>: Callable<T, Output = R>,
        T: 'a,
    {
        self.imap_inner(Plain(f), items, chunksize, true)
    }

    /// Like [`imap`](Self::imap), but results come as they complete, in any order.
    pub fn imap_unordered<'a, F, T, R>(
        &self,
        f: F,
        items: impl IntoIterator<Item = T> + 'a,
    ) -> Result<IMap<'a, R>, PoolError>
    where
        K: Runs<Plain<F>, T>,
        Plain<F>: Callable<T, Output = R>,
        T: 'a,
    {
        self.imap_inner(Plain(f), items, 1, false)
    }

    /// [`imap_unordered`](Self::imap_unordered) with an explicit chunk size.
    pub fn imap_unordered_chunksize<'a, F, T, R>(
        &self,
        f: F,
        items: impl IntoIterator<Item = T> + 'a,
        chunksize: usize,
    ) -> Result<IMap<'a, R>, PoolError>
    where
        K: Runs<Plain<F>, T>,
        Plain<F>: Callable<T, Output = R>,
        T: 'a,
    {
        self.imap_inner(Plain(f), items, chunksize, false)
    }

    fn imap_inner<'a, C, T>(
        &self,
        call: C,
        items: impl IntoIterator<Item = T> + 'a,
        chunksize: usize,
        ordered: bool,
    ) -> Result<IMap<'a, C::Output>, PoolError>
    where
        C: Callable<T>,
        K: Runs<C, T>,
        T: 'a,
    {
        self.check_open()?;
        if chunksize == 0 {
            return Err(PoolError::InvalidArgument(
                "chunksize must be at least 1".into(),
            ));
        }
        // Results are pulled one by one: the workers are driven without the caller.
        self.engine.ensure_background();
        let mut it = items.into_iter();
        let (lo, hi) = it.size_hint();
        let bar = self.bar((Some(lo) == hi).then_some(lo));
        let (tx, rx) = channel();
        let tx = BatchSender::new(tx, None);
        let call = Arc::new(call);
        let engine = self.engine.clone();
        let cfg = self.cfg.clone();
        let mut first = 0;
        let feed = move || {
            let chunk: Vec<T> = it.by_ref().take(chunksize).collect();
            if chunk.is_empty() {
                return false;
            }
            let len = chunk.len();
            for slice in buf::split(chunk, len) {
                K::submit(&engine, &call, slice, first, &cfg, tx.clone(), None);
            }
            first += len;
            true
        };
        Ok(IMap {
            feed: Box::new(feed),
            exhausted: false,
            rx,
            inflight: 0,
            window: (self.cfg.workers * 8).max(16),
            ordered,
            next_first: 0,
            waiting: BTreeMap::new(),
            ready: VecDeque::new(),
            bar,
            spin: self.spin,
        })
    }

    /// Stops accepting new work; queued work still runs. Follow with [`join`](Self::join).
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }

    /// Waits for the queued work to finish and the workers to exit. As in Python, the pool
    /// must be closed or terminated first.
    pub fn join(&self) -> Result<(), PoolError> {
        if !self.closed.load(Ordering::SeqCst) && !self.terminated.load(Ordering::SeqCst) {
            return Err(PoolError::NotClosed);
        }
        self.engine.join();
        Ok(())
    }

    /// Stops at once: process workers are killed (SIGKILL) and reaped, queued and running work
    /// fails with [`PoolError::Terminated`]. Thread workers cannot be killed: queued work
    /// fails, running tasks stop after their current item and their threads are left to end.
    pub fn terminate(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.terminated.store(true, Ordering::SeqCst);
        self.engine.terminate();
    }
}

impl<K: Kind> Drop for Pool<K> {
    fn drop(&mut self) {
        self.terminate();
        self.engine.join();
    }
}

// ---------------------------------------------------------------------------------------------
// Waiting for results.

/// Receives, spinning briefly before blocking: a result usually comes within microseconds,
/// and a blocked thread may then wait milliseconds for a CPU on a busy machine.
fn recv_spin<T>(rx: &Receiver<T>, spin: bool) -> Result<T, std::sync::mpsc::RecvError> {
    if !spin {
        return rx.recv();
    }
    let mut got = None;
    crate::spin_until(|| match rx.try_recv() {
        Ok(v) => {
            got = Some(v);
            true
        }
        Err(TryRecvError::Empty) => false,
        Err(TryRecvError::Disconnected) => true,
    });
    match got {
        Some(v) => Ok(v),
        None => rx.recv(),
    }
}

/// A submitted operation: where its batches come, how many chunks and items, and the
/// countdown that wakes its caller once (when asked for).
struct Submitted<R> {
    rx: Receiver<Batch<R>>,
    chunks: usize,
    items: usize,
    countdown: Option<Arc<Countdown>>,
    /// The vector the chunks write their values into, when asked for.
    out: Option<Arc<OutBuf<R>>>,
}

/// Turns the chunks of an operation, sorted by first index, into its value.
type Finish<R, O> =
    fn(Vec<(usize, Chunk<R>)>, Option<(Arc<OutBuf<R>>, usize)>) -> Result<O, PoolError>;

/// Collects the batches of one operation and turns them into its value.
trait Collect<O>: Send {
    /// Receives batches until all are in or the deadline passes; true when all are in.
    fn pump(&mut self, deadline: Option<Instant>) -> bool;
    /// The value, once all batches are in.
    fn finish(&mut self) -> Result<O, PoolError>;
}

struct Gather<R, O> {
    rx: Receiver<Batch<R>>,
    left: usize,
    got: Vec<(usize, Chunk<R>)>,
    bar: Option<ProgressBar>,
    finish: Finish<R, O>,
    /// Where chunks whose items all succeed write their values, and the item count.
    out: Option<(Arc<OutBuf<R>>, usize)>,
    /// Whether to spin before blocking (only when a CPU is left over for it).
    spin: bool,
    /// When set, wait for it (one wake-up) rather than for each batch.
    countdown: Option<Arc<Countdown>>,
    /// When set, the waiting caller drives the workers itself until the countdown ends.
    driver: Option<Arc<dyn Engine>>,
}

impl<R, O> Gather<R, O> {
    fn new(
        rx: Receiver<Batch<R>>,
        chunks: usize,
        bar: Option<ProgressBar>,
        finish: Finish<R, O>,
    ) -> Self {
        Gather {
            rx,
            left: chunks,
            got: Vec::with_capacity(chunks),
            bar,
            finish,
            out: None,
            spin: false,
            countdown: None,
            driver: None,
        }
    }

    fn take(&mut self, batch: Batch<R>) {
        self.left -= 1;
        if let Some(bar) = &self.bar {
            bar.inc(batch.len as u64);
        }
        let first = batch.first;
        self.got.push((first, batch.into_chunk()));
    }
}

impl<R, O> Drop for Gather<R, O> {
    /// A handle dropped before its work finished: drop the values already written.
    fn drop(&mut self) {
        if let Some((out, _)) = &self.out {
            drop_written(out, &self.got);
        }
    }
}

/// Drops the values of the written chunks among `got`.
fn drop_written<R>(out: &OutBuf<R>, got: &[(usize, Chunk<R>)]) {
    for (first, chunk) in got {
        if let Chunk::Written(len) = chunk {
            // SAFETY: a Written chunk wrote exactly its range, which nothing else drops.
            unsafe { out.drop_range(*first, *len) };
        }
    }
}

impl<R: Send, O> Collect<O> for Gather<R, O> {
    fn pump(&mut self, deadline: Option<Instant>) -> bool {
        if let (Some(driver), Some(countdown), None) = (&self.driver, &self.countdown, deadline) {
            driver.drive(&|| countdown.is_done());
        }
        if let Some(countdown) = &self.countdown {
            if self.left > 0 && !countdown.wait(deadline) {
                return false;
            }
            // Every chunk sent its batch before counting down: they are all there.
            while self.left > 0 {
                match self.rx.try_recv() {
                    Ok(batch) => self.take(batch),
                    Err(_) => return false,
                }
            }
        }
        while self.left > 0 {
            let batch = match deadline {
                None => match recv_spin(&self.rx, self.spin) {
                    Ok(b) => b,
                    Err(_) => return false,
                },
                Some(d) => {
                    let wait = d.saturating_duration_since(Instant::now());
                    match self.rx.recv_timeout(wait) {
                        Ok(b) => b,
                        Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                            return false
                        }
                    }
                }
            };
            self.take(batch);
        }
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        true
    }

    fn finish(&mut self) -> Result<O, PoolError> {
        let mut got = std::mem::take(&mut self.got);
        got.sort_unstable_by_key(|(first, _)| *first);
        (self.finish)(got, self.out.take())
    }
}

/// The values in order, or the first error in item order.
fn finish_vec<R>(
    chunks: Vec<(usize, Chunk<R>)>,
    out: Option<(Arc<OutBuf<R>>, usize)>,
) -> Result<Vec<R>, PoolError> {
    let first_error = chunks.iter().find_map(|(_, c)| match c {
        Chunk::Mixed(v) => v.iter().find_map(|r| r.as_ref().err().cloned()),
        _ => None,
    });
    let Some((out, n)) = out else {
        if let Some(err) = first_error {
            return Err(err);
        }
        let mut values = Vec::new();
        for (_, chunk) in chunks {
            values.extend(chunk.into_results().into_iter().flatten());
        }
        return Ok(values);
    };
    if let Some(err) = first_error {
        drop_written(&out, &chunks);
        return Err(err);
    }
    for (first, chunk) in chunks {
        let values: Vec<R> = match chunk {
            Chunk::Written(_) => continue,
            Chunk::Ok(v) => v,
            Chunk::Mixed(v) => v.into_iter().flatten().collect(),
        };
        // SAFETY: this chunk's range was not written (it came back as values).
        unsafe { out.write(first, values) };
    }
    // SAFETY: every chunk's range is written now (by its worker, its decoder or just above),
    // and every writer is done: all batches are in.
    Ok(unsafe { OutBuf::into_vec(out, n) })
}

fn finish_results<R>(
    chunks: Vec<(usize, Chunk<R>)>,
    _out: Option<(Arc<OutBuf<R>>, usize)>,
) -> Result<Vec<Result<R, PoolError>>, PoolError> {
    Ok(chunks
        .into_iter()
        .flat_map(|(_, c)| c.into_results())
        .collect())
}

fn finish_one<R>(
    chunks: Vec<(usize, Chunk<R>)>,
    out: Option<(Arc<OutBuf<R>>, usize)>,
) -> Result<R, PoolError> {
    finish_results(chunks, out)?
        .into_iter()
        .next()
        .unwrap_or(Err(PoolError::Terminated))
}

/// The handle of an `apply_async`, `map_async` or `starmap_async`: Python's `AsyncResult`.
pub struct AsyncResult<O> {
    inner: Mutex<AsyncState<O>>,
}

struct AsyncState<O> {
    collect: Box<dyn Collect<O>>,
    value: Option<Result<O, PoolError>>,
    taken: bool,
}

impl<O> AsyncResult<O> {
    fn new(collect: impl Collect<O> + 'static) -> Self {
        AsyncResult {
            inner: Mutex::new(AsyncState {
                collect: Box::new(collect),
                value: None,
                taken: false,
            }),
        }
    }

    fn settle(&self, deadline: Option<Instant>) -> std::sync::MutexGuard<'_, AsyncState<O>> {
        let mut st = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if st.value.is_none() && !st.taken && st.collect.pump(deadline) {
            let value = st.collect.finish();
            st.value = Some(value);
        }
        st
    }

    /// Waits for the result, at most `timeout` (`None`: as long as it takes). On success the
    /// value is moved out: a second `get` gives [`PoolError::Taken`]. A timeout gives
    /// [`PoolError::Timeout`] and the work goes on.
    pub fn get(&self, timeout: Option<Duration>) -> Result<O, PoolError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut st = self.settle(deadline);
        if st.taken {
            return Err(PoolError::Taken);
        }
        match st.value.take() {
            Some(v) => {
                st.taken = true;
                v
            }
            None => Err(PoolError::Timeout),
        }
    }

    /// Waits until the result is ready, at most `timeout`; true when it is.
    pub fn wait(&self, timeout: Option<Duration>) -> bool {
        let deadline = timeout.map(|t| Instant::now() + t);
        let st = self.settle(deadline);
        st.value.is_some() || st.taken
    }

    /// True when the result is ready (does not wait).
    pub fn ready(&self) -> bool {
        self.wait(Some(Duration::ZERO))
    }

    /// Whether the work succeeded; `None` while it is not ready (Python raises there).
    pub fn successful(&self) -> Option<bool> {
        let st = self.settle(Some(Instant::now()));
        if st.taken {
            return Some(true);
        }
        st.value.as_ref().map(|v| v.is_ok())
    }
}

/// The iterator of [`Pool::imap`] and [`Pool::imap_unordered`]: one `Result` per item.
pub struct IMap<'a, R> {
    feed: Box<dyn FnMut() -> bool + 'a>,
    exhausted: bool,
    rx: Receiver<Batch<R>>,
    inflight: usize,
    window: usize,
    ordered: bool,
    next_first: usize,
    waiting: BTreeMap<usize, Batch<R>>,
    ready: VecDeque<Result<R, PoolError>>,
    bar: Option<ProgressBar>,
    spin: bool,
}

impl<R> IMap<'_, R> {
    fn top_up(&mut self) {
        while !self.exhausted && self.inflight < self.window {
            if (self.feed)() {
                self.inflight += 1;
            } else {
                self.exhausted = true;
            }
        }
    }

    /// Takes a chunk's results; a chunk waiting for an earlier one still counts as in
    /// flight, so the window bounds memory in ordered mode too.
    fn accept(&mut self, batch: Batch<R>) {
        if !self.ordered {
            self.inflight -= 1;
            self.ready.extend(batch.into_chunk().into_results());
            return;
        }
        self.waiting.insert(batch.first, batch);
        while let Some(b) = self.waiting.remove(&self.next_first) {
            self.inflight -= 1;
            self.next_first += b.len;
            self.ready.extend(b.into_chunk().into_results());
        }
    }

    fn take_ready(&mut self) -> Result<Batch<R>, TryRecvError> {
        self.rx.try_recv()
    }
}

impl<R> IMap<'_, R> {
    /// The next result, waiting at most `timeout` (Python's `next(timeout)`):
    /// `Some(Err(PoolError::Timeout))` when none came in time (the work goes on, call again),
    /// `None` at the end.
    pub fn next_timeout(&mut self, timeout: Duration) -> Option<Result<R, PoolError>> {
        self.next_until(Some(Instant::now() + timeout))
    }

    fn next_until(&mut self, deadline: Option<Instant>) -> Option<Result<R, PoolError>> {
        loop {
            if let Some(r) = self.ready.pop_front() {
                if let Some(bar) = &self.bar {
                    bar.inc(1);
                }
                return Some(r);
            }
            while let Ok(batch) = self.take_ready() {
                self.accept(batch);
            }
            if !self.ready.is_empty() {
                continue;
            }
            self.top_up();
            if self.inflight == 0 {
                if let Some(bar) = self.bar.take() {
                    bar.finish_and_clear();
                }
                return None;
            }
            let batch = match deadline {
                None => recv_spin(&self.rx, self.spin).ok(),
                Some(d) => match self
                    .rx
                    .recv_timeout(d.saturating_duration_since(Instant::now()))
                {
                    Ok(batch) => Some(batch),
                    Err(RecvTimeoutError::Timeout) => return Some(Err(PoolError::Timeout)),
                    Err(RecvTimeoutError::Disconnected) => None,
                },
            };
            match batch {
                Some(batch) => self.accept(batch),
                None => return None,
            }
        }
    }
}

impl<R> Iterator for IMap<'_, R> {
    type Item = Result<R, PoolError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_until(None)
    }
}

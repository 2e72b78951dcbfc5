//! The glue between the pool's methods and its two worker kinds: what can be called on an item,
//! and how a chunk of results comes back.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use crate::buf::{OutBuf, Slice};
use crate::error::PoolError;

/// Something a worker can call on one item. Implemented by [`Plain`] (a function of one
/// argument, used by `map`, `imap`, `apply`) and [`Star`] (a function of several arguments
/// taking a tuple, used by `starmap`); you do not implement it yourself.
pub trait Callable<T>: Send + Sync + 'static {
    /// What the call returns.
    type Output;
    /// Calls on one item.
    fn invoke(&self, arg: T) -> Self::Output;
}

/// A function of one argument, as `map` takes it.
#[derive(Debug, Clone, Copy)]
pub struct Plain<F>(pub F);

impl<F, T, R> Callable<T> for Plain<F>
where
    F: Fn(T) -> R + Send + Sync + 'static,
{
    type Output = R;
    fn invoke(&self, arg: T) -> R {
        (self.0)(arg)
    }
}

/// A function of several arguments called with a tuple, as `starmap` takes it.
#[derive(Debug, Clone, Copy)]
pub struct Star<F>(pub F);

macro_rules! star_impl {
    ($($name:ident),+) => {
        impl<Func, Ret, $($name),+> Callable<($($name,)+)> for Star<Func>
        where
            Func: Fn($($name),+) -> Ret + Send + Sync + 'static,
        {
            type Output = Ret;
            #[allow(non_snake_case)]
            fn invoke(&self, ($($name,)+): ($($name,)+)) -> Ret {
                (self.0)($($name),+)
            }
        }
    };
}
star_impl!(A);
star_impl!(A, B);
star_impl!(A, B, C);
star_impl!(A, B, C, D);
star_impl!(A, B, C, D, E);
star_impl!(A, B, C, D, E, G);

/// The results of one chunk: all values when every item succeeded (the common, cheap case),
/// or one result per item.
pub(crate) enum Chunk<R> {
    Ok(Vec<R>),
    Mixed(Vec<Result<R, PoolError>>),
    /// All items succeeded and their values were written into the operation's [`OutBuf`].
    Written(usize),
}

impl<R> Chunk<R> {
    /// The same error for each of `len` items starting at `first`, made by `err(index)`.
    pub(crate) fn failed(first: usize, len: usize, err: impl Fn(usize) -> PoolError) -> Self {
        Chunk::Mixed((first..first + len).map(|i| Err(err(i))).collect())
    }

    /// One result per item.
    pub(crate) fn into_results(self) -> Vec<Result<R, PoolError>> {
        match self {
            Chunk::Ok(v) => v.into_iter().map(Ok).collect(),
            Chunk::Mixed(v) => v,
            // Only operations that pass an OutBuf (and read it) get this.
            Chunk::Written(_) => Vec::new(),
        }
    }
}

/// A chunk's results as they travel back to the caller; process results are decoded lazily,
/// on the caller's thread, by `make`.
#[doc(hidden)]
pub struct Batch<R> {
    pub(crate) first: usize,
    pub(crate) len: usize,
    pub(crate) payload: Payload<R>,
}

pub(crate) enum Payload<R> {
    Ready(Chunk<R>),
    Lazy(Box<dyn FnOnce() -> Chunk<R> + Send>),
}

impl<R> Batch<R> {
    pub(crate) fn ready(first: usize, len: usize, chunk: Chunk<R>) -> Self {
        Batch {
            first,
            len,
            payload: Payload::Ready(chunk),
        }
    }

    pub(crate) fn failed(first: usize, len: usize, err: impl Fn(usize) -> PoolError) -> Self {
        Batch::ready(first, len, Chunk::failed(first, len, err))
    }

    pub(crate) fn into_chunk(self) -> Chunk<R> {
        match self.payload {
            Payload::Ready(c) => c,
            Payload::Lazy(make) => make(),
        }
    }
}

/// Where the batches of one operation go. With a [`Countdown`], a caller waiting for all of
/// them is woken once, by the last, instead of once per chunk.
#[doc(hidden)]
pub struct BatchSender<R> {
    tx: Sender<Batch<R>>,
    done: Option<Arc<Countdown>>,
}

impl<R> Clone for BatchSender<R> {
    fn clone(&self) -> Self {
        BatchSender {
            tx: self.tx.clone(),
            done: self.done.clone(),
        }
    }
}

impl<R> BatchSender<R> {
    pub(crate) fn new(tx: Sender<Batch<R>>, done: Option<Arc<Countdown>>) -> Self {
        BatchSender { tx, done }
    }

    /// Sends a chunk's batch (each chunk sends exactly one).
    pub(crate) fn send(&self, batch: Batch<R>) {
        let _ = self.tx.send(batch);
        if let Some(done) = &self.done {
            done.count_down();
        }
    }
}

/// Counts the chunks of an operation still to report.
#[doc(hidden)]
pub struct Countdown {
    left: AtomicUsize,
    finished: Mutex<bool>,
    cv: Condvar,
}

impl Countdown {
    pub(crate) fn new(chunks: usize) -> Arc<Self> {
        Arc::new(Countdown {
            left: AtomicUsize::new(chunks),
            finished: Mutex::new(chunks == 0),
            cv: Condvar::new(),
        })
    }

    fn count_down(&self) {
        if self.left.fetch_sub(1, Ordering::AcqRel) == 1 {
            *self.finished.lock().unwrap_or_else(|e| e.into_inner()) = true;
            self.cv.notify_all();
        }
    }

    /// Whether every chunk reported.
    pub(crate) fn is_done(&self) -> bool {
        self.left.load(Ordering::Acquire) == 0
    }

    /// Waits until every chunk reported, or the deadline; true when they all did.
    pub(crate) fn wait(&self, deadline: Option<Instant>) -> bool {
        let mut finished = self.finished.lock().unwrap_or_else(|e| e.into_inner());
        while !*finished {
            finished = match deadline {
                None => self.cv.wait(finished).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let wait = d.saturating_duration_since(Instant::now());
                    if wait.is_zero() {
                        return false;
                    }
                    self.cv
                        .wait_timeout(finished, wait)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
        true
    }
}

/// Sends a chunk's results exactly once; if the job is dropped unrun (a worker thread gone, a
/// supervisor failure), it reports the chunk as terminated, so no caller ever waits forever.
pub(crate) struct Reporter<R> {
    tx: Option<BatchSender<R>>,
    first: usize,
    len: usize,
}

impl<R> Reporter<R> {
    pub(crate) fn new(tx: BatchSender<R>, first: usize, len: usize) -> Self {
        Reporter {
            tx: Some(tx),
            first,
            len,
        }
    }

    pub(crate) fn send(mut self, payload: Payload<R>) {
        if let Some(tx) = self.tx.take() {
            tx.send(Batch {
                first: self.first,
                len: self.len,
                payload,
            });
        }
    }
}

impl<R> Drop for Reporter<R> {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            tx.send(Batch::failed(self.first, self.len, |_| {
                PoolError::Terminated
            }));
        }
    }
}

/// Settings every worker kind reads.
#[doc(hidden)]
pub struct Config {
    pub(crate) workers: usize,
    pub(crate) maxtasks: Option<usize>,
    pub(crate) initializer: Option<Arc<dyn Fn() + Send + Sync>>,
    pub(crate) max_message_bytes: usize,
    /// How many of the next worker starts fail as a failed fork would (tests only).
    #[cfg(test)]
    pub(crate) failing_spawns: AtomicUsize,
}

/// The part of a worker kind the pool drives: start, stop, observe.
#[doc(hidden)]
pub trait Engine: Send + Sync + 'static {
    /// Process ids of the live worker processes (empty for threads).
    fn worker_pids(&self) -> Vec<u32>;
    /// Lets queued work finish, stops the workers and waits for them.
    fn join(&self);
    /// Kills the workers, fails queued and running work, and waits for them.
    fn terminate(&self);
    /// Drives the workers from the calling thread until `done()`, where the engine lets a
    /// waiting caller do so (no one else needs them); returns at once otherwise, the work
    /// then being driven by others.
    fn drive(&self, _done: &dyn Fn() -> bool) {}
    /// Makes sure submitted work goes on with no caller driving it (asynchronous work).
    fn ensure_background(&self) {}
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::Threads {}
    impl Sealed for super::Processes {}
}

/// A worker kind: [`Threads`] or [`Processes`].
pub trait Kind: sealed::Sealed + Send + Sync + Sized + 'static {
    #[doc(hidden)]
    type Engine: Engine;
    #[doc(hidden)]
    fn start(cfg: Arc<Config>) -> Result<Arc<Self::Engine>, PoolError>;
}

/// Thread workers: any `Fn + Send + Sync + 'static` closure, items and results moved, no
/// serialization. A panicking task is caught; a crashing one (abort, segfault) takes the whole
/// process down, as any thread would.
#[derive(Debug, Clone, Copy, Default)]
pub struct Threads;

/// Process workers (the default, like Python's): forked at pool start, so a task that crashes,
/// leaks or uses a non-thread-safe library harms only its worker. Functions are `fn` items or
/// closures that capture nothing; items and results travel by serde (postcard).
#[derive(Debug, Clone, Copy, Default)]
pub struct Processes;

/// A worker kind that can run `C` on items of type `T`, a chunk ([`Slice`]) at a time; with an
/// [`OutBuf`], the values of a chunk whose items all succeed are written there. [`Threads`] runs any callable;
/// [`Processes`] runs zero-sized `Copy` callables (fn items, closures capturing nothing) on
/// serde types.
pub trait Runs<C: Callable<T>, T>: Kind {
    #[doc(hidden)]
    fn submit(
        engine: &Arc<Self::Engine>,
        call: &Arc<C>,
        items: Slice<T>,
        first: usize,
        cfg: &Config,
        tx: BatchSender<C::Output>,
        out: Option<Arc<OutBuf<C::Output>>>,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(a: i32, b: i32) -> i32 {
        a + b
    }

    #[test]
    fn star_spreads_tuples() {
        assert_eq!(Star(add).invoke((2, 3)), 5);
        assert_eq!(Star(|a: u8| a * 2).invoke((4,)), 8);
        let six = |a: i32, b: i32, c: i32, d: i32, e: i32, g: i32| a + b + c + d + e + g;
        assert_eq!(Star(six).invoke((1, 2, 3, 4, 5, 6)), 21);
        assert_eq!(Plain(|x: i32| x + 1).invoke(1), 2);
    }

    #[test]
    fn chunks_expand_to_results() {
        let c: Chunk<i32> = Chunk::Ok(vec![1, 2]);
        assert_eq!(c.into_results(), vec![Ok(1), Ok(2)]);
        let f: Chunk<i32> = Chunk::failed(3, 2, |_| PoolError::Terminated);
        assert_eq!(
            f.into_results(),
            vec![Err(PoolError::Terminated), Err(PoolError::Terminated)]
        );
        let lazy = Batch {
            first: 0,
            len: 1,
            payload: Payload::Lazy(Box::new(|| Chunk::Ok(vec![7]))),
        };
        assert_eq!(lazy.into_chunk().into_results(), vec![Ok(7)]);
    }
}

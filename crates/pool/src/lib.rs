//! hpcbox-pool: Python's `multiprocessing.Pool` for Rust programs, with thread or process
//! workers, that never hangs when a worker dies.
//!
//! ```
//! use hpcbox_pool::Pool;
//!
//! fn addit(x: i32) -> i32 {
//!     x + 1
//! }
//!
//! println!("{}", addit(4));
//! let p = Pool::new(2).unwrap(); // `with Pool(2) as p:`
//! println!("{:?}", p.map(addit, vec![1, 2, 3]).unwrap()); // [2, 3, 4]
//! // dropping `p` terminates and joins, as leaving the `with` block does
//! ```
//!
//! # The surface
//!
//! [`Pool`] has Python's methods: [`map`](Pool::map) (ordered, Python's default chunk size,
//! [`map_chunksize`](Pool::map_chunksize) to choose it), [`imap`](Pool::imap) (ordered, lazy:
//! the input is pulled as chunks complete, so memory is bounded; [`IMap::next_timeout`] is
//! Python's `next(timeout)`),
//! [`imap_unordered`](Pool::imap_unordered), [`starmap`](Pool::starmap),
//! [`apply`](Pool::apply), [`apply_async`](Pool::apply_async), [`map_async`](Pool::map_async)
//! (an [`AsyncResult`] with `get(timeout)`, `wait`, `ready`, `successful`),
//! [`close`](Pool::close), [`join`](Pool::join), [`terminate`](Pool::terminate). Beyond
//! Python: [`map_results`](Pool::map_results) keeps every item's own result, and
//! [`worker_pids`](Pool::worker_pids) lists the worker processes. [`PoolBuilder`] sets the
//! worker count (default [`usable_cpus`]: affinity mask, cgroup quota, `NCPUS` in a PBS job),
//! the `initializer`, `maxtasksperchild`, the worker kind and a progress bar.
//!
//! # Failure
//!
//! Every failure is a [`PoolError`] naming the item index: a panic gives
//! [`PoolError::Panicked`] with the message; a worker process that dies (SIGKILL, the OOM
//! killer, a segfault, an abort, `exit`) gives [`PoolError::WorkerDied`] naming the signal for
//! each item of the chunk it held, and a replacement is forked so the rest completes. Arguments
//! or results that cannot be serialized, or are larger than
//! [`max_message_bytes`](PoolBuilder::max_message_bytes), give an error, never a hang.
//! [`map`](Pool::map) returns the first error in item order, as Python raises the first error;
//! [`imap`](Pool::imap) yields a `Result` per item.
//!
//! # Two worker kinds
//!
//! [`Threads`] run any `Fn + Send + Sync + 'static` closure on moved values. [`Processes`] (the
//! default) isolate tasks from each other and from the caller: a crash, a leak or a
//! non-thread-safe library stays in its worker.
//!
//! ## How a process worker finds the function: fork
//!
//! The workers are forked (`fork(2)`, no exec) when the pool starts, and again for each
//! replacement. A child is a copy of the caller, so a function's
//! address means the same thing in both: each task frame carries the address of the function
//! (monomorphized for the argument and result types) that decodes the chunk, calls the function
//! on each item and encodes the results. This is why the function must be a `fn` item or a
//! closure that captures nothing (a zero-sized `Copy` type, checked at compile time): there is
//! no captured state to send. Values travel postcard-encoded, one chunk per frame, over a pair
//! of pipes per worker, written and read with `poll` by whoever drives the workers: the caller
//! of a blocking operation (`map`, `starmap`, `apply`) from its own thread while it waits, as
//! long as no other caller needs them; else, from the first asynchronous operation (`*_async`,
//! `imap`) or the first two callers at once, a supervisor thread of the pool's own. A chunk of
//! 32 KiB to 2 MiB (and its reply) goes instead through one of four shared-memory lanes of its
//! worker (an anonymous shared mapping made before the first fork), and only a short frame
//! goes down the pipe: the arguments are copied once into the lane, the worker writes its
//! results there, and the caller reads them from there into the result vector.
//!
//! Process workers take what Python's take, as Rust sees it: a `fn` item (`pool.map(addit,
//! items)`) or a closure that captures nothing (`pool.map(|x: i64| x * 2, items)`). A function
//! *pointer* (`fn(i64) -> i64` as a value) or a capturing closure is refused at compile time
//! ("process workers need a fn item or a closure that captures nothing"); use thread workers
//! for those, or pass the captured values as arguments.
//!
//! ```compile_fail
//! let p = hpcbox_pool::Pool::new(1).unwrap();
//! let k = 3i64;
//! p.map(move |x: i64| x * k, vec![1]).unwrap(); // captures k: refused for processes
//! ```
//!
//! ```
//! let p = hpcbox_pool::Pool::threads(1).unwrap();
//! let k = 3i64;
//! assert_eq!(p.map(move |x: i64| x * k, vec![1]).unwrap(), vec![3]); // threads take it
//! ```
//!
//! Chunks of primitive numbers (`i64`, `f64`, `u8`, ...) and their results travel as their raw
//! bytes (one copy, no per-item encoding): parent and child are one program on one machine.
//! Every other type goes through postcard. Results of `map` are written straight to their
//! place in the returned vector. On Linux, a `map` from numbers to numbers goes further: each
//! worker copies its chunk straight out of the caller's input vector and its results straight
//! into the caller's output vector (`process_vm_readv`/`process_vm_writev`), so the caller's
//! process copies nothing and the copies run in parallel in the workers. Where the kernel
//! forbids a child to read its parent (Yama `ptrace_scope` ≥ 1, a seccomp filter), the first
//! chunk is declined and the pool uses its lanes from then on.
//!
//! Forking costs about 100 µs per worker (re-executing the binary would cost milliseconds and
//! need an entry hook in `main`), and the initializer given to the builder can be any closure:
//! the child inherits it.
//!
//! Limits of fork:
//! - Workers are forked in the main thread when it starts or drives the pool, else by a forker
//!   thread of the process (with the asking thread's signal mask and a main-sized stack), so
//!   that they die with the process and not with a short-lived thread (Linux's parent-death
//!   signal follows the forking thread). Thread-locals in a worker are the forking thread's.
//! - Only the forking thread exists in the child. A lock held by another thread at that moment
//!   (a `Mutex` of yours, Rust's stdout lock while another thread prints) stays locked in the
//!   child: a task must not wait on locks shared with other threads of the caller. Memory
//!   allocation is safe (glibc's and musl's malloc handle fork).
//! - The child sees the caller's memory as it was at the fork: globals changed later are not
//!   seen (pass values as arguments), and code loaded later (`dlopen`) is unknown to workers
//!   forked earlier.
//! - Unix only (Linux, macOS, the BSDs). On Linux, workers get `PR_SET_PDEATHSIG` (SIGKILL):
//!   if the caller dies, so do they.
//! - A worker ends with `_exit`: the caller's destructors, `atexit` handlers and test harness
//!   never run in it. Processes a task itself starts are its own to reap.
//! - The first process pool wraps the panic hook (once, keeping the previous one for the
//!   caller): in a worker a panic prints nothing (its message comes back in
//!   [`PoolError::Panicked`]) and takes none of the default hook's locks, which another thread
//!   may have held at the fork. A hook set later replaces this one for workers forked after.
//! - A worker forked while another process pool exists also inherits that pool's pipe ends and
//!   shared lanes (unused, closed or unmapped when it exits).
//!
//! `terminate()` and dropping the pool SIGKILL the workers and reap them with `waitpid`: no
//! worker process outlives the pool.
//!
//! Thread workers cannot be killed: `terminate()` fails their queued work at once and running
//! tasks stop after their current item (their threads are left to finish it).
//!
//! # Differences from Python worth knowing
//!
//! - `imap` is lazy: it pulls input as results are consumed (at most 8 chunks per worker
//!   ahead), where Python's reads the whole input at once. Consume it before `join()`; after
//!   the pool is joined or dropped, it yields errors for the items it had not sent.
//! - Within a chunk each item has its own result: one panicking item does not fail the other
//!   items of its chunk (Python fails the whole chunk).
//! - `AsyncResult::get` moves the value out; a second `get` gives [`PoolError::Taken`].
//!   `successful()` gives `None` where Python raises (not ready).
//! - Idle thread workers spin for up to 50 µs before sleeping, and so does a caller waiting
//!   for results when the pool leaves it a CPU of its own: on a busy machine a sleeping thread
//!   can wait milliseconds to be scheduled again.
//!
//! # Default worker count
//!
//! [`usable_cpus`] is the number of CPUs this process may really use, not the machine's: the
//! affinity mask, the cgroup v2 `cpu.max` quota, and `NCPUS` inside a PBS job.

#[doc(hidden)]
pub mod buf;
mod call;
mod cpus;
mod error;
mod pool;
#[doc(hidden)]
pub mod process;
#[doc(hidden)]
pub mod threads;
mod xmem;

/// Spins (a few tens of microseconds at most) until `ready` holds; true if it did.
pub(crate) fn spin_until(mut ready: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    loop {
        for _ in 0..64 {
            if ready() {
                return true;
            }
            std::hint::spin_loop();
        }
        if start.elapsed() > std::time::Duration::from_micros(50) {
            return false;
        }
    }
}

pub use call::{Callable, Kind, Plain, Processes, Runs, Star, Threads};
pub use cpus::usable_cpus;
pub use error::{Death, PoolError};
pub use pool::{default_chunksize, AsyncResult, IMap, Pool, PoolBuilder, ThreadPool};

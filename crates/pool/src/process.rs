//! Process workers: children forked from a supervisor thread, fed chunk frames over pipes.
//!
//! Wire format (both directions, native to this machine only):
//! - parent → child: `u32 len | u8 kind | ...` where kind 0 is a task (`u64 entry | payload`:
//!   the address of the monomorphized `child_entry` and the postcard-encoded `Vec<T>`) and
//!   kind 1 asks the child to exit;
//! - child → parent: `u32 len | u8 tag | payload` where tag 0 is a chunk reply (postcard
//!   `Reply`) and tag 1 says the initializer panicked (payload: the message, UTF-8).
//!
//! Sending a function's address is sound because the child is a fork of this very process:
//! same binary, same mappings, same addresses.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, MutexGuard, Once};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::buf::{OutBuf, Slice};
use crate::call::{
    Batch, Callable, Chunk, Config, Engine, Kind, Payload, Processes, Reporter, Runs,
};
use crate::error::{panic_message, Death, PoolError};

const KIND_TASK: u8 = 0;
const KIND_EXIT: u8 = 1;
const TAG_REPLY: u8 = 0;
const TAG_INIT_FAILED: u8 = 1;
/// Bytes before a task's payload: len, kind, entry.
const TASK_HEADER: usize = 4 + 1 + 8;
/// Bytes before a reply's payload: len, tag.
const REPLY_HEADER: usize = 4 + 1;
/// The largest message a `u32` length prefix can carry, minus the header.
pub(crate) const MAX_MESSAGE: usize = (u32::MAX as usize) - 16;
/// Exit status of a child whose own loop failed (protocol error, broken pipe).
const CHILD_FAILED: i32 = 120;

/// What the child runs for one task frame: decode, call on each item, encode the reply frame.
type ChildEntry = fn(&[u8], usize) -> Vec<u8>;

/// A chunk reply from a worker.
#[derive(Serialize, Deserialize)]
enum Reply<R> {
    /// Every item succeeded.
    AllOk(Vec<R>),
    /// Per item: the value or the panic message.
    Mixed(Vec<Result<R, String>>),
    /// The chunk as a whole failed in the worker.
    Failed(ChunkFailure),
}

#[derive(Serialize, Deserialize)]
enum ChunkFailure {
    DecodeArgs(String),
    EncodeResults(String),
    ResultsTooLarge { size: u64, limit: u64 },
}

/// How a queued job ended, as the supervisor reports it.
enum JobEnd {
    /// The reply frame (payload starts at the offset).
    Reply(Vec<u8>, usize),
    /// The worker died while holding the job.
    Died(u32, Death),
    /// The job never ran.
    Cancelled(PoolError),
}

struct Job {
    frame: Vec<u8>,
    done: Box<dyn FnOnce(JobEnd) + Send>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Run,
    Drain,
    Kill,
}

struct State {
    queue: VecDeque<Job>,
    mode: Mode,
    sleeping: bool,
    woken: bool,
    pids: Vec<u32>,
    broken: Option<PoolError>,
}

struct Shared {
    state: Mutex<State>,
    wake_w: OwnedFd,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
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
static IN_WORKER: AtomicBool = AtomicBool::new(false);

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
        let (wake_r, wake_w) = pipe().map_err(|e| PoolError::Spawn(e.to_string()))?;
        set_nonblocking(&wake_r);
        set_nonblocking(&wake_w);
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
        });
        let mut sup = Supervisor {
            shared: shared.clone(),
            wake_r,
            cfg,
            workers: Vec::new(),
            pending: VecDeque::new(),
            last_sweep: Instant::now(),
        };
        // Fork the first workers before returning, so worker_pids() is right at once.
        let (tx, rx) = std::sync::mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("hpcbox-pool-supervisor".into())
            .spawn(move || {
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
        tx: Sender<Batch<C::Output>>,
        out: Option<Arc<OutBuf<C::Output>>>,
    ) {
        const {
            assert!(
                std::mem::size_of::<C>() == 0,
                "process workers need a fn item or a closure that captures nothing"
            )
        };
        let entry: ChildEntry = child_entry::<C, T>;
        let limit = cfg.max_message_bytes;
        let len = items.len();
        let encoded = encode_task(entry as usize as u64, items.as_slice(), limit);
        drop(items);
        let frame = match encoded {
            Ok(frame) => frame,
            Err(err) => {
                let _ = tx.send(Batch::failed(first, len, |i| err.at(i)));
                return;
            }
        };
        let reporter = Reporter::new(tx, first, len);
        engine.push(Job {
            frame,
            done: Box::new(move |end| {
                let make = move || decode_end::<C::Output>(end, first, len, out);
                reporter.send(Payload::Lazy(Box::new(make)));
            }),
        });
    }
}

/// A chunk-wide error before the item index is known.
enum FrameError {
    Encode(String),
    TooLarge(u64, u64),
}

impl FrameError {
    fn at(&self, index: usize) -> PoolError {
        match self {
            FrameError::Encode(reason) => PoolError::Encode {
                index,
                what: "arguments",
                reason: reason.clone(),
            },
            FrameError::TooLarge(size, limit) => PoolError::TooLarge {
                index,
                what: "arguments",
                size: *size,
                limit: *limit,
            },
        }
    }
}

/// Element types sent as their raw bytes instead of postcard: the primitive numbers, for which
/// every bit pattern is a valid value. Parent and child are one program on one machine, so
/// layout and byte order agree. This makes a chunk of numbers cost a memcpy, not a varint each.
fn raw_size<T: 'static>() -> Option<usize> {
    use std::any::TypeId;
    let id = TypeId::of::<T>();
    macro_rules! raw {
        ($($t:ty),*) => {
            $(if id == TypeId::of::<$t>() {
                return Some(std::mem::size_of::<$t>());
            })*
        };
    }
    raw!(u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize, f32, f64);
    None
}

const CODEC_POSTCARD: u8 = 0;
const CODEC_RAW: u8 = 1;

/// Appends a codec byte and the encoded items to `out`.
fn encode_items<T: Serialize + 'static>(items: &[T], mut out: Vec<u8>) -> Result<Vec<u8>, String> {
    match raw_size::<T>() {
        Some(size) => {
            out.reserve(1 + std::mem::size_of_val(items));
            out.push(CODEC_RAW);
            // SAFETY: T is a primitive number (raw_size): its memory is plain initialized bytes.
            let bytes = unsafe {
                std::slice::from_raw_parts(items.as_ptr().cast::<u8>(), items.len() * size)
            };
            out.extend_from_slice(bytes);
            Ok(out)
        }
        None => {
            out.push(CODEC_POSTCARD);
            postcard::to_extend(items, out).map_err(|e| e.to_string())
        }
    }
}

/// Reads what [`encode_items`] wrote.
fn decode_items<T: DeserializeOwned + 'static>(bytes: &[u8]) -> Result<Vec<T>, String> {
    match bytes.split_first() {
        Some((&CODEC_RAW, raw)) => {
            let size = raw_size::<T>().ok_or("raw bytes for a type sent by postcard")?;
            if raw.len() % size != 0 {
                return Err(format!("{} raw bytes for items of {size} bytes", raw.len()));
            }
            let n = raw.len() / size;
            let mut v = Vec::<T>::with_capacity(n);
            // SAFETY: v has room for n items; any bytes are a valid primitive number; the
            // source is a byte slice, so its alignment does not matter.
            unsafe {
                std::ptr::copy_nonoverlapping(raw.as_ptr(), v.as_mut_ptr().cast::<u8>(), raw.len());
                v.set_len(n);
            }
            Ok(v)
        }
        Some((&CODEC_POSTCARD, rest)) => postcard::from_bytes(rest).map_err(|e| e.to_string()),
        _ => Err("empty message or unknown codec".into()),
    }
}

fn encode_task<T: Serialize + 'static>(
    entry: u64,
    items: &[T],
    limit: usize,
) -> Result<Vec<u8>, FrameError> {
    let mut head = Vec::with_capacity(TASK_HEADER + 8 * items.len() + 16);
    head.resize(TASK_HEADER, 0);
    let mut frame = encode_items(items, head).map_err(FrameError::Encode)?;
    let payload = frame.len() - TASK_HEADER;
    if payload > limit {
        return Err(FrameError::TooLarge(payload as u64, limit as u64));
    }
    let len = (frame.len() - 4) as u32;
    frame[0..4].copy_from_slice(&len.to_le_bytes());
    frame[4] = KIND_TASK;
    frame[5..13].copy_from_slice(&entry.to_le_bytes());
    Ok(frame)
}

/// Turns a job's end into per-item results, on the caller's thread.
fn decode_end<R: DeserializeOwned + 'static>(
    end: JobEnd,
    first: usize,
    len: usize,
    out: Option<Arc<OutBuf<R>>>,
) -> Chunk<R> {
    if let (Some(out), JobEnd::Reply(buf, start)) = (&out, &end) {
        if let Some(raw) = raw_values::<R>(&buf[*start..], len) {
            // SAFETY: this chunk alone owns positions first..first + len; `raw` holds exactly
            // `len` values of the primitive number type R.
            unsafe { out.write_bytes(first, raw) };
            return Chunk::Written(len);
        }
    }
    let chunk = decode_end_owned(end, first, len);
    match (chunk, out) {
        (Chunk::Ok(values), Some(out)) if values.len() == len => {
            // SAFETY: as above.
            unsafe { out.write(first, values) };
            Chunk::Written(len)
        }
        (chunk, _) => chunk,
    }
}

/// The raw bytes of `len` values, when the reply is all values of a primitive number type.
fn raw_values<R: 'static>(reply: &[u8], len: usize) -> Option<&[u8]> {
    let size = raw_size::<R>()?;
    match reply {
        [REPLY_VALUES, CODEC_RAW, raw @ ..] if raw.len() == len.checked_mul(size)? => Some(raw),
        _ => None,
    }
}

fn decode_end_owned<R: DeserializeOwned + 'static>(
    end: JobEnd,
    first: usize,
    len: usize,
) -> Chunk<R> {
    match end {
        JobEnd::Cancelled(err) => Chunk::failed(first, len, |_| err.clone()),
        JobEnd::Died(pid, death) => Chunk::failed(first, len, |index| PoolError::WorkerDied {
            index,
            pid,
            death,
        }),
        JobEnd::Reply(buf, start) => decode_reply(&buf[start..], first, len),
    }
}

fn decode_reply<R: DeserializeOwned + 'static>(bytes: &[u8], first: usize, len: usize) -> Chunk<R> {
    let bad = |reason: String| {
        Chunk::failed(first, len, |index| PoolError::Decode {
            index,
            what: "results",
            reason: reason.clone(),
        })
    };
    let reply = match bytes.split_first() {
        Some((&REPLY_VALUES, values)) => decode_items::<R>(values).map(Reply::AllOk),
        Some((&REPLY_POSTCARD, rest)) => {
            postcard::from_bytes::<Reply<R>>(rest).map_err(|e| e.to_string())
        }
        _ => Err("empty reply".to_string()),
    };
    match reply {
        Err(e) => bad(e),
        Ok(Reply::AllOk(v)) if v.len() == len => Chunk::Ok(v),
        Ok(Reply::Mixed(v)) if v.len() == len => Chunk::Mixed(
            v.into_iter()
                .enumerate()
                .map(|(i, r)| {
                    r.map_err(|message| PoolError::Panicked {
                        index: first + i,
                        message,
                    })
                })
                .collect(),
        ),
        Ok(Reply::AllOk(_) | Reply::Mixed(_)) => bad(format!(
            "worker returned a wrong number of results for {len} items"
        )),
        Ok(Reply::Failed(ChunkFailure::DecodeArgs(reason))) => {
            Chunk::failed(first, len, |index| PoolError::Decode {
                index,
                what: "arguments",
                reason: reason.clone(),
            })
        }
        Ok(Reply::Failed(ChunkFailure::EncodeResults(reason))) => {
            Chunk::failed(first, len, |index| PoolError::Encode {
                index,
                what: "results",
                reason: reason.clone(),
            })
        }
        Ok(Reply::Failed(ChunkFailure::ResultsTooLarge { size, limit })) => {
            Chunk::failed(first, len, |index| PoolError::TooLarge {
                index,
                what: "results",
                size,
                limit,
            })
        }
    }
}

/// Runs in the child for one task frame. `C` is zero-sized and `Copy` (checked where this is
/// instantiated), so making a value of it out of nothing is the same as copying the caller's.
fn child_entry<C, T>(payload: &[u8], limit: usize) -> Vec<u8>
where
    C: Callable<T> + Copy,
    T: DeserializeOwned + 'static,
    C::Output: Serialize + 'static,
{
    // SAFETY: C is a zero-sized Copy type (asserted at compile time in `submit`): it has no
    // bytes and no invariant beyond existing, and a value of it existed in this process.
    let call: C = unsafe { std::ptr::NonNull::<C>::dangling().as_ptr().read() };
    let reply = match decode_items::<T>(payload) {
        Err(e) => Reply::Failed(ChunkFailure::DecodeArgs(e)),
        Ok(items) => run_items(call, items),
    };
    encode_reply(&reply, limit)
}

fn run_items<C: Callable<T>, T>(call: C, items: Vec<T>) -> Reply<C::Output> {
    let len = items.len();
    let mut it = items.into_iter();
    let mut out: Vec<C::Output> = Vec::with_capacity(len);
    let mut failed: Vec<(usize, String)> = Vec::new();
    // One catch_unwind per run of items keeps the loop tight; a panic restarts it.
    while let Err(p) = catch_unwind(AssertUnwindSafe(|| {
        for item in it.by_ref() {
            out.push(call.invoke(item));
        }
    })) {
        failed.push((out.len() + failed.len(), panic_message(p.as_ref())));
    }
    if failed.is_empty() {
        return Reply::AllOk(out);
    }
    let mut ok = out.into_iter();
    let mut bad = failed.into_iter().peekable();
    let mixed = (0..len)
        .filter_map(|i| match bad.peek() {
            Some((at, _)) if *at == i => bad.next().map(|(_, m)| Err(m)),
            _ => ok.next().map(Ok),
        })
        .collect();
    Reply::Mixed(mixed)
}

/// Reply bodies: values (all items succeeded; codec byte and items as [`encode_items`]), or a
/// postcard [`Reply`].
const REPLY_VALUES: u8 = 0;
const REPLY_POSTCARD: u8 = 1;

fn encode_reply<R: Serialize + 'static>(reply: &Reply<R>, limit: usize) -> Vec<u8> {
    let mut head = vec![0u8; REPLY_HEADER];
    let encoded = match reply {
        Reply::AllOk(values) => {
            head.push(REPLY_VALUES);
            encode_items(values, head)
        }
        _ => {
            head.push(REPLY_POSTCARD);
            postcard::to_extend(reply, head).map_err(|e| e.to_string())
        }
    };
    let failed = matches!(reply, Reply::Failed(_)); // small, and must not recurse
    let frame = match encoded {
        Ok(f) if failed || f.len() - REPLY_HEADER <= limit => f,
        Ok(f) => {
            let failure = ChunkFailure::ResultsTooLarge {
                size: (f.len() - REPLY_HEADER) as u64,
                limit: limit as u64,
            };
            return encode_reply::<R>(&Reply::Failed(failure), limit);
        }
        Err(e) => {
            let failure = ChunkFailure::EncodeResults(e);
            return encode_reply::<R>(&Reply::Failed(failure), limit);
        }
    };
    finish_reply(frame, TAG_REPLY)
}

fn finish_reply(mut frame: Vec<u8>, tag: u8) -> Vec<u8> {
    let len = (frame.len() - 4) as u32;
    frame[0..4].copy_from_slice(&len.to_le_bytes());
    frame[4] = tag;
    frame
}

// ---------------------------------------------------------------------------------------------
// The child side.

/// What a freshly forked child needs; built before the fork so the child allocates little.
struct ChildSetup {
    input: RawFd,
    output: RawFd,
    close: Vec<RawFd>,
    parent: libc::pid_t,
    initializer: Option<Arc<dyn Fn() + Send + Sync>>,
    limit: usize,
}

/// The worker process: never returns, never runs the parent's destructors or atexit handlers.
fn child_main(setup: ChildSetup) -> ! {
    let code = match catch_unwind(AssertUnwindSafe(|| child_loop(&setup))) {
        Ok(code) => code,
        Err(_) => CHILD_FAILED,
    };
    // SAFETY: _exit ends the process at once, which is what a forked child must do.
    unsafe { libc::_exit(code) }
}

fn child_loop(setup: &ChildSetup) -> i32 {
    IN_WORKER.store(true, Ordering::Relaxed);
    #[cfg(target_os = "linux")]
    // SAFETY: plain syscalls on this process.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
    }
    // SAFETY: getppid has no preconditions.
    if unsafe { libc::getppid() } != setup.parent {
        return CHILD_FAILED; // the parent died before the death signal was armed
    }
    for &fd in &setup.close {
        // SAFETY: these are the parent's ends of other pipes; the child never uses them.
        unsafe { libc::close(fd) };
    }
    // SAFETY: the child owns its two pipe ends from now on and never gives them back.
    let mut input = std::io::BufReader::with_capacity(1 << 16, unsafe {
        std::fs::File::from_raw_fd(setup.input)
    });
    // SAFETY: as above.
    let mut output = unsafe { std::fs::File::from_raw_fd(setup.output) };
    if let Some(init) = &setup.initializer {
        if let Err(p) = catch_unwind(AssertUnwindSafe(|| init())) {
            let mut frame = vec![0u8; REPLY_HEADER];
            frame.extend_from_slice(panic_message(p.as_ref()).as_bytes());
            let _ = output.write_all(&finish_reply(frame, TAG_INIT_FAILED));
            return CHILD_FAILED;
        }
    }
    let mut frame = Vec::new();
    loop {
        let mut len = [0u8; 4];
        if input.read_exact(&mut len).is_err() {
            return 0; // the parent closed the pipe: nothing more to do
        }
        let len = u32::from_le_bytes(len) as usize;
        if len == 0 || len > setup.limit.saturating_add(TASK_HEADER) {
            return CHILD_FAILED;
        }
        frame.clear();
        match (&mut input).take(len as u64).read_to_end(&mut frame) {
            Ok(n) if n == len => {}
            _ => return CHILD_FAILED,
        }
        match frame[0] {
            KIND_EXIT => return 0,
            KIND_TASK if len >= 9 => {
                let mut addr = [0u8; 8];
                addr.copy_from_slice(&frame[1..9]);
                let addr = u64::from_le_bytes(addr) as usize;
                // SAFETY: the parent wrote the address of a `ChildEntry` function of this same
                // program image (we are its fork), and nothing else writes this pipe.
                let entry: ChildEntry = unsafe { std::mem::transmute::<usize, ChildEntry>(addr) };
                let reply = entry(&frame[9..], setup.limit);
                if output.write_all(&reply).is_err() {
                    return CHILD_FAILED;
                }
            }
            _ => return CHILD_FAILED,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The parent side: one supervisor thread owns the workers.

struct Worker {
    pid: Pid,
    tx: OwnedFd,
    rx: OwnedFd,
    /// Jobs sent or being sent, oldest first; the front one is running.
    inflight: VecDeque<Job>,
    inflight_bytes: usize,
    /// How many of `inflight` are completely written, and bytes written of the next.
    sent: usize,
    offset: usize,
    assigned: usize,
    retiring: bool,
    exit_sent: bool,
    rbuf: Vec<u8>,
    eof: bool,
}

struct Supervisor {
    shared: Arc<Shared>,
    wake_r: OwnedFd,
    cfg: Arc<Config>,
    workers: Vec<Worker>,
    pending: VecDeque<Job>,
    last_sweep: Instant,
}

/// How often workers are checked with `waitpid` besides their pipe's end of file (which can
/// be delayed when a fork elsewhere in the program holds a copy of the pipe).
const SWEEP_EVERY: Duration = Duration::from_millis(100);

const EXIT_FRAME: [u8; 5] = [1, 0, 0, 0, KIND_EXIT];
const READ_CHUNK: usize = 1 << 16;
/// Prefetch: a worker gets at least 2 jobs, and up to 16 while they stay small.
const MIN_INFLIGHT: usize = 2;
const MAX_INFLIGHT: usize = 16;
const INFLIGHT_BYTES: usize = 256 << 10;

impl Supervisor {
    fn start_workers(&mut self) -> Result<(), PoolError> {
        for _ in 0..self.cfg.workers {
            if let Err(e) = self.spawn() {
                self.kill_all();
                return Err(e);
            }
        }
        self.publish_pids();
        Ok(())
    }

    fn spawn(&mut self) -> Result<(), PoolError> {
        let spawn_err = |e: nix::Error| PoolError::Spawn(e.to_string());
        let (in_r, in_w) = pipe().map_err(spawn_err)?;
        let (out_r, out_w) = pipe().map_err(spawn_err)?;
        let mut close = vec![
            self.wake_r.as_raw_fd(),
            self.shared.wake_w.as_raw_fd(),
            in_w.as_raw_fd(),
            out_r.as_raw_fd(),
        ];
        for w in &self.workers {
            close.push(w.tx.as_raw_fd());
            close.push(w.rx.as_raw_fd());
        }
        let setup = ChildSetup {
            input: in_r.as_raw_fd(),
            output: out_w.as_raw_fd(),
            close,
            // SAFETY: getpid has no preconditions.
            parent: unsafe { libc::getpid() },
            initializer: self.cfg.initializer.clone(),
            limit: self.cfg.max_message_bytes,
        };
        // SAFETY: the child only runs `child_main`, which ends in `_exit`; see the crate docs
        // for what a forked child of a multi-threaded process may do.
        match unsafe { nix::unistd::fork() }.map_err(spawn_err)? {
            nix::unistd::ForkResult::Child => child_main(setup),
            nix::unistd::ForkResult::Parent { child } => {
                drop(in_r);
                drop(out_w);
                set_nonblocking(&in_w);
                set_nonblocking(&out_r);
                #[cfg(target_os = "linux")]
                // SAFETY: fcntl on our own pipe; failure (size over the system limit) is fine.
                unsafe {
                    libc::fcntl(in_w.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20);
                    libc::fcntl(out_r.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20);
                }
                self.workers.push(Worker {
                    pid: child,
                    tx: in_w,
                    rx: out_r,
                    inflight: VecDeque::new(),
                    inflight_bytes: 0,
                    sent: 0,
                    offset: 0,
                    assigned: 0,
                    retiring: false,
                    exit_sent: false,
                    rbuf: Vec::new(),
                    eof: false,
                });
                Ok(())
            }
        }
    }

    fn publish_pids(&self) {
        let pids = self.workers.iter().map(|w| w.pid.as_raw() as u32).collect();
        self.shared.lock().pids = pids;
    }

    fn run(&mut self) {
        loop {
            let (mode, broken) = {
                let mut st = self.shared.lock();
                self.pending.extend(st.queue.drain(..));
                (st.mode, st.broken.clone())
            };
            if mode == Mode::Kill {
                self.kill_all();
                self.cancel_all(PoolError::Terminated);
                return;
            }
            if let Some(err) = broken {
                self.cancel_all(err);
            }
            self.dispatch();
            self.flush_all();
            let busy = self.workers.iter().any(|w| !w.inflight.is_empty());
            if mode == Mode::Drain && self.pending.is_empty() && !busy {
                self.shutdown();
                return;
            }
            self.wait_events(mode, busy);
            let sweep = self.last_sweep.elapsed() >= SWEEP_EVERY;
            if sweep {
                self.last_sweep = Instant::now();
            }
            self.collect_exits(sweep);
        }
    }

    /// Polls the wake pipe and the workers' pipes, then reads and writes what is ready.
    fn wait_events(&mut self, mode: Mode, busy: bool) {
        let mut fds = Vec::with_capacity(1 + 2 * self.workers.len());
        fds.push(pollfd(self.wake_r.as_raw_fd(), libc::POLLIN));
        for w in &self.workers {
            fds.push(pollfd(w.rx.as_raw_fd(), libc::POLLIN));
            let unsent = w.sent < w.inflight.len() || (w.retiring && !w.exit_sent);
            fds.push(pollfd(
                w.tx.as_raw_fd(),
                if unsent { libc::POLLOUT } else { 0 },
            ));
        }
        {
            let mut st = self.shared.lock();
            if !st.queue.is_empty() || st.mode != mode {
                return;
            }
            st.sleeping = true;
            st.woken = false;
        }
        // A worker whose death we could miss (its pipe held open by a fork elsewhere) is
        // found by the periodic reaping in `collect_exits`.
        let timeout = if busy { 100 } else { 1000 };
        // SAFETY: fds is a valid array of pollfd of the given length.
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        {
            let mut st = self.shared.lock();
            st.sleeping = false;
        }
        if fds[0].revents != 0 {
            drain_pipe(&self.wake_r);
        }
        for i in 0..self.workers.len() {
            let (r, t) = (fds[1 + 2 * i].revents, fds[2 + 2 * i].revents);
            if t & (libc::POLLOUT | libc::POLLERR | libc::POLLHUP) != 0 {
                self.workers[i].flush();
            }
            if r != 0 {
                self.read_worker_at(i);
            }
        }
    }

    fn read_worker_at(&mut self, i: usize) {
        let mut init_failed = None;
        let w = &mut self.workers[i];
        w.read_frames(self.cfg.max_message_bytes, &mut init_failed);
        if let Some(msg) = init_failed {
            let err = PoolError::InitializerFailed(msg);
            for job in w.inflight.drain(..) {
                (job.done)(JobEnd::Cancelled(err.clone()));
            }
            w.sent = 0;
            w.offset = 0;
            w.inflight_bytes = 0;
            self.shared.lock().broken = Some(err);
        }
    }

    /// Reaps workers that closed their pipe (or, on a `sweep`, died unnoticed), fails the job
    /// each held, and starts replacements.
    fn collect_exits(&mut self, sweep: bool) {
        let mut i = 0;
        let mut changed = false;
        while i < self.workers.len() {
            let status = if self.workers[i].eof {
                Some(reap(self.workers[i].pid))
            } else if !sweep {
                None
            } else {
                match waitpid(self.workers[i].pid, Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::StillAlive) => None,
                    Ok(status) => {
                        self.read_worker_at(i); // replies written just before dying
                        Some(death_of(status))
                    }
                    Err(_) => Some(Death::Unknown),
                }
            };
            let Some(death) = status else {
                i += 1;
                continue;
            };
            let w = self.workers.swap_remove(i);
            self.retire(w, death);
            changed = true;
        }
        if changed {
            let needed = self.cfg.workers.saturating_sub(self.workers.len());
            let mode = self.shared.lock().mode;
            let broken = self.shared.lock().broken.is_some();
            let wanted = !broken && (mode == Mode::Run || !self.pending.is_empty());
            if wanted {
                for _ in 0..needed {
                    if let Err(e) = self.spawn() {
                        if self.workers.is_empty() {
                            self.shared.lock().broken = Some(e);
                        }
                        break;
                    }
                }
            }
            self.publish_pids();
        }
    }

    /// Settles the jobs of a worker that ended: the running one failed, the rest go back.
    fn retire(&mut self, mut w: Worker, death: Death) {
        let started = w.sent > 0 || w.offset > 0;
        if started {
            if let Some(job) = w.inflight.pop_front() {
                (job.done)(JobEnd::Died(w.pid.as_raw() as u32, death));
            }
        }
        while let Some(job) = w.inflight.pop_back() {
            self.pending.push_front(job);
        }
    }

    fn dispatch(&mut self) {
        while !self.pending.is_empty() {
            let Some(w) = self
                .workers
                .iter_mut()
                .filter(|w| w.has_room())
                .min_by_key(|w| w.inflight.len())
            else {
                return;
            };
            let Some(job) = self.pending.pop_front() else {
                return;
            };
            w.inflight_bytes += job.frame.len();
            w.inflight.push_back(job);
            w.assigned += 1;
            if self.cfg.maxtasks.is_some_and(|m| w.assigned >= m) {
                w.retiring = true;
            }
        }
    }

    fn flush_all(&mut self) {
        for w in &mut self.workers {
            w.flush();
        }
    }

    fn cancel_all(&mut self, err: PoolError) {
        let queued: Vec<Job> = self.shared.lock().queue.drain(..).collect();
        for job in self.pending.drain(..).chain(queued) {
            (job.done)(JobEnd::Cancelled(err.clone()));
        }
        for w in &mut self.workers {
            for job in w.inflight.drain(..) {
                (job.done)(JobEnd::Cancelled(err.clone()));
            }
            w.sent = 0;
            w.offset = 0;
            w.inflight_bytes = 0;
        }
    }

    fn kill_all(&mut self) {
        for w in &self.workers {
            let _ = kill(w.pid, Signal::SIGKILL);
        }
        for w in self.workers.drain(..) {
            let _ = waitpid(w.pid, None);
        }
        self.shared.lock().pids.clear();
    }

    /// All work is done: ask each worker to exit, and wait for them.
    fn shutdown(&mut self) {
        for w in &self.workers {
            // SAFETY: writing a 5-byte buffer to the worker's pipe (atomic below PIPE_BUF).
            unsafe { libc::write(w.tx.as_raw_fd(), EXIT_FRAME.as_ptr().cast(), 5) };
        }
        for w in self.workers.drain(..) {
            reap(w.pid);
        }
        self.shared.lock().pids.clear();
    }
}

impl Worker {
    fn has_room(&self) -> bool {
        if self.retiring || self.eof {
            return false;
        }
        let n = self.inflight.len();
        n < MIN_INFLIGHT || (n < MAX_INFLIGHT && self.inflight_bytes < INFLIGHT_BYTES)
    }

    /// Writes as much of the unsent frames as the pipe takes, several frames per call.
    fn flush(&mut self) {
        while self.sent < self.inflight.len() {
            let mut iov: Vec<libc::iovec> = Vec::with_capacity(64);
            for (k, job) in self.inflight.iter().skip(self.sent).take(64).enumerate() {
                let skip = if k == 0 { self.offset } else { 0 };
                iov.push(libc::iovec {
                    iov_base: job.frame[skip..].as_ptr() as *mut libc::c_void,
                    iov_len: job.frame.len() - skip,
                });
            }
            // SAFETY: every iovec points into a live frame owned by self.inflight.
            let n = unsafe { libc::writev(self.tx.as_raw_fd(), iov.as_ptr(), iov.len() as i32) };
            if n < 0 {
                if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return; // EAGAIN, or EPIPE: the child died and its EOF will show
            }
            let mut n = n as usize;
            while n > 0 && self.sent < self.inflight.len() {
                let left = self.inflight[self.sent].frame.len() - self.offset;
                if n >= left {
                    n -= left;
                    self.sent += 1;
                    self.offset = 0;
                } else {
                    self.offset += n;
                    n = 0;
                }
            }
        }
        if self.retiring && !self.exit_sent && self.sent == self.inflight.len() {
            // SAFETY: a 5-byte write of a constant buffer.
            let n = unsafe { libc::write(self.tx.as_raw_fd(), EXIT_FRAME.as_ptr().cast(), 5) };
            self.exit_sent = n == 5;
        }
    }

    /// Reads what the pipe holds and completes the jobs whose replies arrived.
    fn read_frames(&mut self, limit: usize, init_failed: &mut Option<String>) {
        loop {
            let want = self.frame_need().max(READ_CHUNK);
            if self.rbuf.capacity() - self.rbuf.len() < want.min(READ_CHUNK) {
                self.rbuf.reserve(want);
            }
            let spare = self.rbuf.capacity() - self.rbuf.len();
            // SAFETY: reading into the vector's spare capacity, then growing len by what came.
            let n = unsafe {
                libc::read(
                    self.rx.as_raw_fd(),
                    self.rbuf.as_mut_ptr().add(self.rbuf.len()).cast(),
                    spare,
                )
            };
            if n == 0 {
                self.eof = true;
                break;
            }
            if n < 0 {
                let err = std::io::Error::last_os_error();
                match err.kind() {
                    std::io::ErrorKind::Interrupted => continue,
                    std::io::ErrorKind::WouldBlock => break,
                    _ => {
                        self.eof = true;
                        break;
                    }
                }
            }
            // SAFETY: the kernel initialized n bytes past len.
            unsafe { self.rbuf.set_len(self.rbuf.len() + n as usize) };
            if !self.parse_frames(limit, init_failed) {
                // A broken stream: kill the worker; its exit settles its jobs.
                let _ = kill(self.pid, Signal::SIGKILL);
                self.eof = true;
                break;
            }
        }
    }

    /// Bytes still missing for the frame at the start of the buffer (0 if unknown).
    fn frame_need(&self) -> usize {
        if self.rbuf.len() < 4 {
            return 0;
        }
        let len = u32::from_le_bytes([self.rbuf[0], self.rbuf[1], self.rbuf[2], self.rbuf[3]]);
        (4 + len as usize).saturating_sub(self.rbuf.len())
    }

    /// Completes jobs for every whole frame in the buffer; false on a malformed stream.
    fn parse_frames(&mut self, limit: usize, init_failed: &mut Option<String>) -> bool {
        let mut pos = 0;
        while self.rbuf.len() - pos >= 4 {
            let b = &self.rbuf[pos..pos + 4];
            let len = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
            if len == 0 || len > limit.max(1 << 20).saturating_add(64) {
                return false;
            }
            if self.rbuf.len() - pos < 4 + len {
                break;
            }
            let frame = if pos == 0 && self.rbuf.len() == 4 + len {
                std::mem::take(&mut self.rbuf) // a large frame, read straight into place
            } else {
                pos += 4 + len;
                self.rbuf[pos - 4 - len..pos].to_vec()
            };
            if frame[4] == TAG_INIT_FAILED {
                *init_failed = Some(String::from_utf8_lossy(&frame[REPLY_HEADER..]).into_owned());
                continue;
            }
            let Some(job) = self.inflight.pop_front() else {
                return false;
            };
            self.inflight_bytes -= job.frame.len();
            self.sent = self.sent.saturating_sub(1);
            (job.done)(JobEnd::Reply(frame, REPLY_HEADER));
        }
        if pos > 0 {
            self.rbuf.drain(..pos);
        }
        true
    }
}

fn pollfd(fd: RawFd, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

fn pipe() -> nix::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
}

fn set_nonblocking(fd: &OwnedFd) {
    // SAFETY: fcntl flag changes on a descriptor we own.
    unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
}

fn drain_pipe(fd: &OwnedFd) {
    let mut buf = [0u8; 64];
    // SAFETY: reading into a stack buffer of the given size.
    while unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
}

fn death_of(status: WaitStatus) -> Death {
    match status {
        WaitStatus::Exited(_, code) => Death::Exit(code),
        WaitStatus::Signaled(_, sig, _) => Death::Signal(sig as i32),
        _ => Death::Unknown,
    }
}

/// Waits for a worker that closed its pipe, so is exiting; one that lingers (it closed the
/// pipe itself) is killed after two seconds rather than waited on forever.
fn reap(pid: Pid) -> Death {
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut pause = Duration::from_micros(10);
    loop {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {}
            Ok(status) => return death_of(status),
            Err(_) => return Death::Unknown,
        }
        if Instant::now() >= deadline {
            let _ = kill(pid, Signal::SIGKILL);
            return waitpid(pid, None).map_or(Death::Unknown, death_of);
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(10));
    }
}

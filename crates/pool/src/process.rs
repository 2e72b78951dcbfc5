//! Process workers: children forked from a supervisor thread, fed chunk frames over pipes.
//!
//! Wire format (native to this machine only: parent and child are one program):
//! - parent → child: `u32 len | u8 kind | ...`; kind 0 is a task (`u64 entry | payload`), kind
//!   1 asks the child to exit, kind 2 is a task whose payload waits in a shared-memory lane
//!   (`u64 entry | u8 lane | u64 payload length`). `entry` is the address of the monomorphized
//!   `child_entry`; the payload is a codec byte (0 postcard, 1 raw numbers) and the items.
//! - child → parent: `u32 len | u8 tag | ...`; tag 0 is a reply (`u8 kind | body`: kind 0 the
//!   values, codec byte first; kind 1 a postcard `Reply`), tag 1 says the initializer panicked
//!   (the message, UTF-8), tag 2 a reply left in the lane's output area (`u8 lane | u64 len`).
//!
//! Sending a function's address is sound because the child is a fork of this very process:
//! same binary, same mappings, same addresses.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
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
    Batch, BatchSender, Callable, Chunk, Config, Engine, Kind, Payload, Processes, Reporter, Runs,
};
use crate::error::{panic_message, Death, PoolError};
use crate::xmem::{self, Span, SPAN_BYTES};

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

/// What the child runs for one task: decode, call on each item, encode the reply: into the
/// lane's output area when one is given and the reply is plain numbers that fit (the length
/// is returned), else as a reply frame.
type ChildEntry = fn(&[u8], usize, Option<&mut [u8]>) -> ChildReply;

enum ChildReply {
    Frame(Vec<u8>),
    InLane(usize),
}

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
    /// The reply's body.
    Reply(ReplyBody),
    /// The worker died while holding the job.
    Died(u32, Death),
    /// The job never ran.
    Cancelled(PoolError),
}

/// Where a reply's body is: in its frame (from the offset on), or left in a lane.
enum ReplyBody {
    Frame(Vec<u8>, usize),
    Lane(LaneView),
}

impl ReplyBody {
    fn bytes(&self) -> &[u8] {
        match self {
            ReplyBody::Frame(frame, start) => &frame[*start..],
            ReplyBody::Lane(view) => view.bytes(),
        }
    }
}

/// A reply left in a lane's output area, read in place by the caller's thread; the lane is
/// given back (for new jobs) when the view is dropped.
struct LaneView {
    lanes: Arc<Lanes>,
    index: usize,
    len: usize,
}

impl LaneView {
    fn bytes(&self) -> &[u8] {
        let (slot, lane) = (self.index / LANES, self.index % LANES);
        // SAFETY: the worker wrote `len` bytes there before its reply; the lane is held (no new
        // job is given to it) until this view is dropped.
        unsafe {
            std::slice::from_raw_parts(
                lane_area(self.lanes.base as usize, slot, lane, true),
                self.len,
            )
        }
    }
}

impl Drop for LaneView {
    fn drop(&mut self) {
        self.lanes.held[self.index].store(false, Ordering::Release);
    }
}

struct Job {
    /// The task frame; only its header while `raw` holds the items.
    frame: Vec<u8>,
    done: Box<dyn FnOnce(JobEnd) + Send>,
    /// When the payload went to a shared-memory lane: the lane and the short frame sent.
    lane: Option<(u8, Vec<u8>)>,
    /// A chunk of primitive numbers not encoded yet: the supervisor copies its bytes straight
    /// to a lane (or into the frame, when no lane is free), sparing the caller a copy.
    raw: Option<Box<dyn RawItems>>,
    /// Where a `raw` chunk's results go in the caller's output vector, when they are numbers
    /// too: the worker may then copy both ways itself ([`xmem`]).
    xmem_dst: Option<u64>,
    /// The short frame sent when the worker copies the chunk itself.
    xmem_wire: Option<Vec<u8>>,
}

impl Job {
    /// The bytes that go down the pipe for this job.
    fn wire(&self) -> &[u8] {
        match (&self.lane, &self.xmem_wire) {
            (Some((_, wire)), _) | (None, Some(wire)) => wire,
            (None, None) => &self.frame,
        }
    }

    /// The task's full size, whichever way it travels.
    fn size(&self) -> usize {
        self.frame.len() + self.raw.as_ref().map_or(0, |r| 1 + r.bytes().len())
    }

    /// The frame that tells a worker to copy this chunk from `src`, and its results to the
    /// output vector, itself; `None` unless the job is a raw chunk with numeric results.
    fn cross_memory_frame(&self) -> Option<Vec<u8>> {
        let (raw, dst) = (self.raw.as_ref()?, self.xmem_dst?);
        let bytes = raw.bytes();
        let span = Span {
            src: bytes.as_ptr() as u64,
            src_bytes: bytes.len() as u64,
            dst,
        };
        let mut frame = Vec::with_capacity(TASK_HEADER + 1 + SPAN_BYTES);
        frame.extend_from_slice(&((TASK_HEADER - 4 + 1 + SPAN_BYTES) as u32).to_le_bytes());
        frame.extend_from_slice(&self.frame[4..TASK_HEADER]); // kind and entry
        frame.push(CODEC_XMEM);
        frame.extend_from_slice(&span.encode());
        Some(frame)
    }

    /// Encodes `raw` items into the frame, for the pipe.
    fn materialize(&mut self) {
        if let Some(raw) = self.raw.take() {
            self.frame.reserve(1 + raw.bytes().len());
            self.frame.push(CODEC_RAW);
            self.frame.extend_from_slice(raw.bytes());
            let len = (self.frame.len() - 4) as u32;
            self.frame[0..4].copy_from_slice(&len.to_le_bytes());
        }
    }
}

/// The items of a chunk of primitive numbers, as their bytes.
trait RawItems: Send {
    fn bytes(&self) -> &[u8];
}

impl<T: Send + 'static> RawItems for Slice<T> {
    fn bytes(&self) -> &[u8] {
        let items = self.as_slice();
        // SAFETY: only made for primitive number types (`raw_size`), whose bytes are all
        // initialized, and borrowed as long as the items.
        unsafe {
            std::slice::from_raw_parts(items.as_ptr().cast::<u8>(), std::mem::size_of_val(items))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Shared-memory lanes: large payloads of a chunk travel through memory shared with the worker
// instead of through its pipe (which costs two kernel copies and many wakeups per megabyte).

/// Bytes of one lane area; larger messages go through the pipe.
const LANE_BYTES: usize = 2 << 20;
/// Smaller messages go through the pipe, which is cheaper for them.
const LANE_MIN: usize = 32 << 10;
/// Lanes per worker: each has an input area and an output area. Two carry jobs while the
/// replies of others are still being read by the caller.
const LANES: usize = 4;
const KIND_TASK_LANE: u8 = 2;
const TAG_REPLY_LANE: u8 = 2;
/// `u32 len | u8 kind | u64 entry | u8 lane | u64 payload length`.
const LANE_TASK_FRAME: usize = 4 + 1 + 8 + 1 + 8;
/// `u32 len | u8 tag | u8 lane | u64 body length`.
const LANE_REPLY_FRAME: usize = 4 + 1 + 1 + 8;

/// One shared mapping for all worker slots, made before the first fork so that every worker,
/// replacements included, has it at the same address.
struct Lanes {
    base: *mut u8,
    bytes: usize,
    /// Per lane (slot × LANES + lane): a reply is still being read from its output area.
    held: Vec<AtomicBool>,
}

// SAFETY: the mapping is plain memory; who touches which area is settled by the protocol (one
// side at a time per area, handed over by the pipe messages).
unsafe impl Send for Lanes {}
// SAFETY: as above.
unsafe impl Sync for Lanes {}

impl Lanes {
    fn new(workers: usize) -> Option<Lanes> {
        let bytes = workers.checked_mul(LANES * 2 * LANE_BYTES)?;
        #[cfg(target_os = "linux")]
        let flags = libc::MAP_SHARED | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;
        #[cfg(not(target_os = "linux"))]
        let flags = libc::MAP_SHARED | libc::MAP_ANON;
        // SAFETY: a fresh anonymous mapping, no address hint.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                -1,
                0,
            )
        };
        (base != libc::MAP_FAILED).then(|| Lanes {
            base: base.cast(),
            bytes,
            held: (0..workers * LANES)
                .map(|_| AtomicBool::new(false))
                .collect(),
        })
    }
}

impl Drop for Lanes {
    fn drop(&mut self) {
        // SAFETY: unmapping our own mapping; the workers (which have their own copy) are gone
        // or keep theirs.
        unsafe { libc::munmap(self.base.cast(), self.bytes) };
    }
}

/// The input (or output) area of `lane` of worker `slot`, in a mapping at `base`.
fn lane_area(base: usize, slot: usize, lane: usize, output: bool) -> *mut u8 {
    (base + ((slot * LANES + lane) * 2 + usize::from(output)) * LANE_BYTES) as *mut u8
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

/// Blocks SIGPIPE in the calling thread (the supervisor, and so the workers it forks): a write
/// to a dead worker's pipe then fails with EPIPE, which the pool handles, even in a program that
/// restored SIGPIPE's default disposition, where the signal would kill the whole process.
fn block_sigpipe() {
    use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow, Signal};
    let mut set = SigSet::empty();
    set.add(Signal::SIGPIPE);
    let _ = pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None);
}

struct Shared {
    state: Mutex<State>,
    wake_w: OwnedFd,
    /// A read end of the wake pipe kept as long as its write end: once the supervisor has
    /// exited, a late wake finds a full or drained pipe (EAGAIN, ignored) rather than no reader,
    /// which would raise SIGPIPE and kill a program that restored SIGPIPE's default.
    _wake_reader: OwnedFd,
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
/// The payload is a [`Span`]: the worker copies the items, and the results, itself.
const CODEC_XMEM: u8 = 2;

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
    if let (Some(_), JobEnd::Reply(body)) = (&out, &end) {
        if body.bytes() == [REPLY_WRITTEN] {
            return Chunk::Written(len);
        }
    }
    if let (Some(out), JobEnd::Reply(body)) = (&out, &end) {
        if let Some(raw) = raw_values::<R>(body.bytes(), len) {
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
        JobEnd::Reply(body) => decode_reply(body.bytes(), first, len),
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
fn child_entry<C, T>(payload: &[u8], limit: usize, lane: Option<&mut [u8]>) -> ChildReply
where
    C: Callable<T> + Copy,
    T: DeserializeOwned + 'static,
    C::Output: Serialize + 'static,
{
    // SAFETY: C is a zero-sized Copy type (asserted at compile time in `submit`): it has no
    // bytes and no invariant beyond existing, and a value of it existed in this process.
    let call: C = unsafe { std::ptr::NonNull::<C>::dangling().as_ptr().read() };
    if let Some((&CODEC_XMEM, span)) = payload.split_first() {
        return ChildReply::Frame(cross_memory_entry(call, span, limit));
    }
    let reply = match decode_items::<T>(payload) {
        Err(e) => Reply::Failed(ChunkFailure::DecodeArgs(e)),
        Ok(items) => run_items(call, items),
    };
    if let (Some(lane), Reply::AllOk(values), Some(_)) = (lane, &reply, raw_size::<C::Output>()) {
        let bytes = std::mem::size_of_val(values.as_slice());
        if 2 + bytes <= lane.len() && 2 + bytes <= limit {
            lane[0] = REPLY_VALUES;
            lane[1] = CODEC_RAW;
            // SAFETY: the values are primitive numbers (raw_size): plain initialized bytes.
            let raw = unsafe { std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), bytes) };
            lane[2..2 + bytes].copy_from_slice(raw);
            return ChildReply::InLane(2 + bytes);
        }
    }
    ChildReply::Frame(encode_reply(&reply, limit))
}

/// Runs a cross-memory chunk: copies the items out of the parent, runs them, and copies the
/// results into the parent's output vector; the reply says which happened.
fn cross_memory_entry<C, T>(call: C, span: &[u8], limit: usize) -> Vec<u8>
where
    C: Callable<T>,
    T: 'static,
    C::Output: Serialize + 'static,
{
    let small = |kind: u8| finish_reply(vec![0, 0, 0, 0, 0, kind], TAG_REPLY);
    let (Some(span), Some(size)) = (Span::decode(span), raw_size::<T>()) else {
        return small(REPLY_DECLINED);
    };
    let bytes = span.src_bytes as usize;
    #[cfg(test)]
    if tests::REFUSE_CROSS_MEMORY.load(Ordering::Relaxed) {
        return small(REPLY_DECLINED);
    }
    if !bytes.is_multiple_of(size) || raw_size::<C::Output>().is_none() {
        return small(REPLY_DECLINED);
    }
    // SAFETY: getppid has no preconditions.
    let parent = unsafe { libc::getppid() };
    let n = bytes / size;
    let mut items = Vec::<T>::with_capacity(n);
    // SAFETY: the spare capacity holds `bytes` bytes, filled below before `set_len`; any bytes
    // are a valid primitive number (raw_size).
    let spare = unsafe { std::slice::from_raw_parts_mut(items.as_mut_ptr().cast::<u8>(), bytes) };
    if xmem::read_from(parent, span.src, spare).is_err() {
        return small(REPLY_DECLINED);
    }
    // SAFETY: all n items were just written.
    unsafe { items.set_len(n) };
    let reply = run_items(call, items);
    if let Reply::AllOk(values) = &reply {
        // SAFETY: the values are primitive numbers (raw_size): plain initialized bytes.
        let raw = unsafe {
            std::slice::from_raw_parts(
                values.as_ptr().cast::<u8>(),
                std::mem::size_of_val(values.as_slice()),
            )
        };
        if xmem::write_to(parent, span.dst, raw).is_ok() {
            return small(REPLY_WRITTEN);
        }
    }
    encode_reply(&reply, limit)
}

fn run_items<C: Callable<T>, T>(call: C, items: Vec<T>) -> Reply<C::Output> {
    let len = items.len();
    let mut it = items.into_iter();
    let mut out: Vec<C::Output> = Vec::with_capacity(len);
    let mut failed: Vec<(usize, String)> = Vec::new();
    // One catch_unwind per run of items keeps the loop tight; a panic restarts it.
    // `extend` over an exact-size iterator writes in place (vectorizable), and on a panic
    // leaves `out` holding exactly the values made before it.
    while let Err(p) = catch_unwind(AssertUnwindSafe(|| {
        out.extend(it.by_ref().map(|item| call.invoke(item)));
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
/// Every result is already in the caller's output vector (a cross-memory chunk).
const REPLY_WRITTEN: u8 = 2;
/// The kernel refused the worker the caller's memory: send the chunk another way.
const REPLY_DECLINED: u8 = 3;

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
    /// The lanes mapping's address and this worker's slot in it.
    lanes: Option<(usize, usize)>,
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
                let ChildReply::Frame(reply) =
                    entry_at(&frame[1..9])(&frame[9..], setup.limit, None)
                else {
                    return CHILD_FAILED;
                };
                if output.write_all(&reply).is_err() {
                    return CHILD_FAILED;
                }
            }
            KIND_TASK_LANE if len == LANE_TASK_FRAME - 4 => {
                let (Some((base, slot)), lane) = (setup.lanes, usize::from(frame[9])) else {
                    return CHILD_FAILED;
                };
                let size = read_u64(&frame[10..18]) as usize;
                if lane >= LANES || size > LANE_BYTES {
                    return CHILD_FAILED;
                }
                // SAFETY: the parent filled this lane's input area with `size` bytes before
                // sending this frame, and leaves it alone until our reply.
                let input =
                    unsafe { std::slice::from_raw_parts(lane_area(base, slot, lane, false), size) };
                // SAFETY: the output area of this lane is ours until the parent reads our
                // reply (the parent reads it only after the frame below).
                let out = unsafe {
                    std::slice::from_raw_parts_mut(lane_area(base, slot, lane, true), LANE_BYTES)
                };
                let in_lane = match entry_at(&frame[1..9])(input, setup.limit, Some(&mut *out)) {
                    ChildReply::InLane(n) => Some(n),
                    ChildReply::Frame(reply) => {
                        let body = &reply[REPLY_HEADER..];
                        if reply[4] == TAG_REPLY && body.len() <= LANE_BYTES {
                            out[..body.len()].copy_from_slice(body);
                            Some(body.len())
                        } else if output.write_all(&reply).is_err() {
                            return CHILD_FAILED;
                        } else {
                            None
                        }
                    }
                };
                let sent = match in_lane {
                    Some(n) => {
                        let mut small = [0u8; LANE_REPLY_FRAME];
                        small[0..4].copy_from_slice(&((LANE_REPLY_FRAME - 4) as u32).to_le_bytes());
                        small[4] = TAG_REPLY_LANE;
                        small[5] = lane as u8;
                        small[6..14].copy_from_slice(&(n as u64).to_le_bytes());
                        output.write_all(&small)
                    }
                    None => Ok(()),
                };
                if sent.is_err() {
                    return CHILD_FAILED;
                }
            }
            _ => return CHILD_FAILED,
        }
    }
}

/// The child entry whose address is in these 8 bytes.
fn entry_at(bytes: &[u8]) -> ChildEntry {
    let addr = read_u64(bytes) as usize;
    // SAFETY: the parent wrote the address of a `ChildEntry` function of this same program
    // image (we are its fork), and nothing else writes this pipe.
    unsafe { std::mem::transmute::<usize, ChildEntry>(addr) }
}

fn read_u64(bytes: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[..8]);
    u64::from_le_bytes(b)
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
    /// This worker's place in the lanes mapping, and which of its lanes hold a job.
    slot: usize,
    lane_busy: [bool; LANES],
    /// Cross-memory jobs the worker declined, to be sent again another way.
    declined: Vec<Job>,
}

struct Supervisor {
    shared: Arc<Shared>,
    wake_r: OwnedFd,
    cfg: Arc<Config>,
    workers: Vec<Worker>,
    pending: VecDeque<Job>,
    last_sweep: Instant,
    lanes: Option<Arc<Lanes>>,
    /// Whether workers may copy numeric chunks to and from this process ([`xmem`]); cleared
    /// for good the first time one is refused.
    cross_memory: bool,
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
        let slot = (0..)
            .find(|s| self.workers.iter().all(|w| w.slot != *s))
            .unwrap_or(0);
        let setup = ChildSetup {
            lanes: self.lanes.as_ref().map(|l| (l.base as usize, slot)),
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
                    slot,
                    lane_busy: [false; LANES],
                    declined: Vec::new(),
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
                // Killed first: a worker must never write into a vector whose job is gone.
                self.kill_all();
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
        w.read_frames(
            self.cfg.max_message_bytes,
            self.lanes.as_ref(),
            &mut init_failed,
        );
        if !w.declined.is_empty() {
            self.cross_memory = false;
            for job in w.declined.drain(..).rev() {
                self.pending.push_front(job);
            }
        }
        let w = &mut self.workers[i];
        if let Some(msg) = init_failed {
            let err = PoolError::InitializerFailed(msg);
            for job in w.inflight.drain(..) {
                (job.done)(JobEnd::Cancelled(err.clone()));
            }
            w.sent = 0;
            w.offset = 0;
            w.inflight_bytes = 0;
            w.lane_busy = [false; LANES];
            self.shared.lock().broken = Some(err);
        }
    }

    /// Reaps workers that closed their pipe (or, on a `sweep`, died unnoticed), fails the job
    /// each held, and starts replacements.
    fn collect_exits(&mut self, sweep: bool) {
        let mut i = 0;
        let mut changed = false;
        let mut failed = Vec::new();
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
            failed.extend(self.retire(w, death));
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
        for (job, end) in failed {
            (job.done)(end);
        }
    }

    /// Settles the jobs of a worker that ended: the running one failed, the rest go back.
    ///
    /// The failed job is returned, to be reported once the replacement is started (so that a
    /// caller who sees the failure also sees the new worker).
    fn retire(&mut self, mut w: Worker, death: Death) -> Option<(Job, JobEnd)> {
        let started = w.sent > 0 || w.offset > 0;
        let failed = if started {
            w.inflight
                .pop_front()
                .map(|job| (job, JobEnd::Died(w.pid.as_raw() as u32, death)))
        } else {
            None
        };
        while let Some(mut job) = w.inflight.pop_back() {
            job.lane = None; // its lane belonged to the dead worker
            self.pending.push_front(job);
        }
        failed
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
            let Some(mut job) = self.pending.pop_front() else {
                return;
            };
            if self.cross_memory {
                job.xmem_wire = job.cross_memory_frame();
            }
            if let (Some(lanes), None) = (&self.lanes, &job.xmem_wire) {
                job.lane = w.put_in_lane(lanes, &job);
            }
            if job.lane.is_none() && job.xmem_wire.is_none() {
                job.materialize();
            }
            // Counted at full size even when in a lane: a worker holds few large jobs.
            w.inflight_bytes += job.size();
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
            w.lane_busy = [false; LANES];
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
    /// Copies a large task's payload to a free lane of this worker; the short frame to send
    /// instead of the task frame, or None (the frame goes down the pipe as it is).
    fn put_in_lane(&mut self, lanes: &Lanes, job: &Job) -> Option<(u8, Vec<u8>)> {
        let (codec, body) = match &job.raw {
            Some(raw) => (Some(CODEC_RAW), raw.bytes()),
            None => (None, job.frame.get(TASK_HEADER..)?),
        };
        let size = body.len() + usize::from(codec.is_some());
        if !(LANE_MIN..=LANE_BYTES).contains(&size) {
            return None;
        }
        let lane = (0..LANES).find(|&l| {
            !self.lane_busy[l] && !lanes.held[self.slot * LANES + l].load(Ordering::Acquire)
        })?;
        // SAFETY: a free lane's input area is ours (the worker reads it only after the frame
        // below), and the payload fits in it.
        unsafe {
            let mut area = lane_area(lanes.base as usize, self.slot, lane, false);
            if let Some(codec) = codec {
                area.write(codec);
                area = area.add(1);
            }
            std::ptr::copy_nonoverlapping(body.as_ptr(), area, body.len());
        }
        self.lane_busy[lane] = true;
        let mut wire = Vec::with_capacity(LANE_TASK_FRAME);
        wire.extend_from_slice(&((LANE_TASK_FRAME - 4) as u32).to_le_bytes());
        wire.push(KIND_TASK_LANE);
        wire.extend_from_slice(&job.frame[5..13]); // the entry address
        wire.push(lane as u8);
        wire.extend_from_slice(&(size as u64).to_le_bytes());
        Some((lane as u8, wire))
    }

    /// The job whose reply just arrived: the oldest in flight, its lane freed.
    fn complete_front(&mut self) -> Option<Job> {
        let job = self.inflight.pop_front()?;
        self.inflight_bytes -= job.size();
        self.sent = self.sent.saturating_sub(1);
        if let Some((lane, _)) = &job.lane {
            self.lane_busy[usize::from(*lane)] = false;
        }
        Some(job)
    }

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
                let wire = &job.wire()[skip..];
                iov.push(libc::iovec {
                    iov_base: wire.as_ptr() as *mut libc::c_void,
                    iov_len: wire.len(),
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
                let left = self.inflight[self.sent].wire().len() - self.offset;
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
    fn read_frames(
        &mut self,
        limit: usize,
        lanes: Option<&Arc<Lanes>>,
        init_failed: &mut Option<String>,
    ) {
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
            if !self.parse_frames(limit, lanes, init_failed) {
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
    fn parse_frames(
        &mut self,
        limit: usize,
        lanes: Option<&Arc<Lanes>>,
        init_failed: &mut Option<String>,
    ) -> bool {
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
            match frame[4] {
                TAG_INIT_FAILED => {
                    let msg = String::from_utf8_lossy(&frame[REPLY_HEADER..]);
                    *init_failed = Some(msg.into_owned());
                }
                TAG_REPLY => {
                    let Some(mut job) = self.complete_front() else {
                        return false;
                    };
                    if frame[REPLY_HEADER..] == [REPLY_DECLINED] && job.xmem_wire.is_some() {
                        job.xmem_wire = None;
                        self.declined.push(job);
                        continue;
                    }
                    (job.done)(JobEnd::Reply(ReplyBody::Frame(frame, REPLY_HEADER)));
                }
                TAG_REPLY_LANE if frame.len() == LANE_REPLY_FRAME => {
                    let (lane, size) = (usize::from(frame[5]), read_u64(&frame[6..14]) as usize);
                    let expected = self.inflight.front().and_then(|j| j.lane.as_ref());
                    let (Some(lanes), Some((l, _))) = (lanes, expected) else {
                        return false;
                    };
                    if usize::from(*l) != lane || size > LANE_BYTES {
                        return false;
                    }
                    let index = self.slot * LANES + lane;
                    lanes.held[index].store(true, Ordering::Release);
                    let view = LaneView {
                        lanes: lanes.clone(),
                        index,
                        len: size,
                    };
                    let Some(job) = self.complete_front() else {
                        return false;
                    };
                    (job.done)(JobEnd::Reply(ReplyBody::Lane(view)));
                }
                _ => return false,
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Makes workers forked from now on decline cross-memory chunks, as a kernel that forbids
    /// them would.
    pub(super) static REFUSE_CROSS_MEMORY: AtomicBool = AtomicBool::new(false);

    fn double(x: u32) -> f64 {
        f64::from(x) * 2.0
    }

    #[test]
    fn declined_cross_memory_chunks_go_through_lanes_and_pipes_instead() {
        REFUSE_CROSS_MEMORY.store(true, Ordering::Relaxed);
        let pool = crate::Pool::new(2).unwrap();
        REFUSE_CROSS_MEMORY.store(false, Ordering::Relaxed);
        let want: Vec<f64> = (0..1_000_000u32).map(double).collect();
        // Lane-sized chunks, then chunks too large for a lane.
        assert_eq!(pool.map(double, 0..1_000_000u32).unwrap(), want);
        assert_eq!(
            pool.map_chunksize(double, 0..1_000_000u32, 600_000)
                .unwrap(),
            want
        );
    }

    #[test]
    fn numbers_travel_raw_and_the_rest_by_postcard() {
        let nums = [1i64, -2, 3];
        let raw = encode_items(&nums, Vec::new()).unwrap();
        assert_eq!(raw[0], CODEC_RAW);
        assert_eq!(raw.len(), 1 + 24);
        assert_eq!(decode_items::<i64>(&raw).unwrap(), nums);
        let words = ["a".to_string(), "bc".into()];
        let enc = encode_items(&words, Vec::new()).unwrap();
        assert_eq!(enc[0], CODEC_POSTCARD);
        assert_eq!(decode_items::<String>(&enc).unwrap(), words);
        assert!(
            decode_items::<i64>(&[CODEC_RAW, 1, 2, 3]).is_err(),
            "not a whole number"
        );
        assert!(
            decode_items::<String>(&raw).is_err(),
            "raw bytes for a postcard type"
        );
        assert!(decode_items::<i64>(&[]).is_err());
        assert!(decode_items::<i64>(&[9]).is_err());
        assert_eq!(raw_size::<f64>(), Some(8));
        assert_eq!(raw_size::<bool>(), None, "not every byte is a bool");
        assert_eq!(raw_size::<(i32, i32)>(), None);
    }

    #[test]
    fn replies_decode_per_item() {
        let ok = encode_reply(&Reply::AllOk(vec![5u32, 6]), 1 << 20);
        assert_eq!(ok[4], TAG_REPLY);
        let chunk = decode_reply::<u32>(&ok[REPLY_HEADER..], 10, 2);
        assert!(matches!(chunk, Chunk::Ok(v) if v == vec![5, 6]));
        assert_eq!(
            raw_values::<u32>(&ok[REPLY_HEADER..], 2).map(<[u8]>::len),
            Some(8)
        );
        assert_eq!(raw_values::<u32>(&ok[REPLY_HEADER..], 3), None);

        let mixed = encode_reply(&Reply::Mixed(vec![Ok(1u32), Err("boom".into())]), 1 << 20);
        let r = decode_reply::<u32>(&mixed[REPLY_HEADER..], 10, 2).into_results();
        assert_eq!(r[0], Ok(1));
        assert_eq!(
            r[1],
            Err(PoolError::Panicked {
                index: 11,
                message: "boom".into()
            })
        );

        let wrong_count = decode_reply::<u32>(&ok[REPLY_HEADER..], 0, 3).into_results();
        assert!(matches!(
            wrong_count[2],
            Err(PoolError::Decode { index: 2, .. })
        ));
        let garbage = decode_reply::<u32>(&[REPLY_POSTCARD, 200, 1], 0, 1).into_results();
        assert!(matches!(
            garbage[0],
            Err(PoolError::Decode {
                what: "results",
                ..
            })
        ));
    }

    #[test]
    fn a_reply_over_the_limit_becomes_an_error() {
        let big = encode_reply(&Reply::AllOk(vec![0u8; 100]), 10);
        let r = decode_reply::<u8>(&big[REPLY_HEADER..], 0, 100).into_results();
        assert_eq!(r.len(), 100);
        assert!(matches!(
            r[99],
            Err(PoolError::TooLarge {
                index: 99,
                what: "results",
                limit: 10,
                ..
            })
        ));
    }

    #[test]
    fn task_frames_check_the_limit() {
        let frame = encode_task(7, &[1u8, 2, 3], 100).ok().unwrap();
        assert_eq!(
            u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize,
            frame.len() - 4
        );
        assert_eq!(frame[4], KIND_TASK);
        assert_eq!(read_u64(&frame[5..13]), 7);
        assert!(matches!(
            encode_task(7, &[0u8; 50], 10),
            Err(FrameError::TooLarge(51, 10))
        ));
    }

    #[test]
    fn deaths_are_read_from_wait_statuses() {
        let pid = Pid::from_raw(1);
        assert_eq!(death_of(WaitStatus::Exited(pid, 3)), Death::Exit(3));
        assert_eq!(
            death_of(WaitStatus::Signaled(pid, Signal::SIGKILL, false)),
            Death::Signal(9)
        );
        assert_eq!(death_of(WaitStatus::StillAlive), Death::Unknown);
    }
}

//! The child side: the forked worker process's loop, and what it runs for one task.

use std::io::{Read, Write};
use std::os::fd::{FromRawFd, RawFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::codec::{
    bare_reply, decode_items, decode_raw, encode_reply, finish_reply, raw_bytes, raw_size,
    read_u64, ChunkFailure, Reply, CODEC_LANE_XMEM, CODEC_RAW, CODEC_XMEM, LANE_XMEM_HEAD,
    REPLY_DECLINED, REPLY_VALUES, REPLY_WRITTEN,
};
use super::engine::{block_sigpipe, IN_WORKER};
use super::lanes::{
    lane_area, KIND_TASK_LANE, LANES, LANE_BYTES, LANE_REPLY_FRAME, LANE_TASK_FRAME, TAG_REPLY_LANE,
};
use super::sys::set_blocking;
use super::{
    CHILD_FAILED, KIND_EXIT, KIND_TASK, REPLY_HEADER, TAG_INIT_FAILED, TAG_REPLY, TASK_HEADER,
};
use crate::call::Callable;
use crate::error::panic_message;
use crate::xmem::{self, Span};

/// What the child runs for one task: decode, call on each item, encode the reply: into the
/// lane's output area when one is given and the reply is plain numbers that fit (the length
/// is returned), else as a reply frame.
pub(super) type ChildEntry = fn(&[u8], usize, Option<&mut [u8]>) -> ChildReply;

pub(super) enum ChildReply {
    Frame(Vec<u8>),
    InLane(usize),
}

/// Runs in the child for one task frame. `C` is zero-sized and `Copy` (checked where this is
/// instantiated), so making a value of it out of nothing is the same as copying the caller's.
pub(super) fn child_entry<C, T>(payload: &[u8], limit: usize, lane: Option<&mut [u8]>) -> ChildReply
where
    C: Callable<T> + Copy,
    T: DeserializeOwned + 'static,
    C::Output: Serialize + 'static,
{
    // SAFETY: C is a zero-sized Copy type (asserted at compile time in `submit`): it has no
    // bytes and no invariant beyond existing, and a value of it existed in this process.
    let call: C = unsafe { std::ptr::NonNull::<C>::dangling().as_ptr().read() };
    match payload.split_first() {
        Some((&CODEC_XMEM, span)) => {
            return ChildReply::Frame(cross_memory_entry(call, span, limit))
        }
        Some((&CODEC_LANE_XMEM, _)) => {
            return ChildReply::Frame(lane_to_caller_entry(call, payload, limit))
        }
        _ => {}
    }
    let reply = match decode_items::<T>(payload) {
        Err(e) => Reply::Failed(ChunkFailure::DecodeArgs(e)),
        Ok(items) => run_items(call, items.into_iter()),
    };
    if let (Some(lane), Reply::AllOk(values)) = (lane, &reply) {
        if let Some(raw) = raw_bytes(values).filter(|raw| 2 + raw.len() <= lane.len().min(limit)) {
            lane[0] = REPLY_VALUES;
            lane[1] = CODEC_RAW;
            lane[2..2 + raw.len()].copy_from_slice(raw);
            return ChildReply::InLane(2 + raw.len());
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
    let (Some(span), Some(size)) = (Span::decode(span), raw_size::<T>()) else {
        return bare_reply(REPLY_DECLINED);
    };
    let bytes = span.src_bytes as usize;
    #[cfg(test)]
    if tests::REFUSE_CROSS_MEMORY.load(Ordering::Relaxed) {
        return bare_reply(REPLY_DECLINED);
    }
    if !bytes.is_multiple_of(size) || raw_size::<C::Output>().is_none() {
        return bare_reply(REPLY_DECLINED);
    }
    // SAFETY: getppid has no preconditions.
    let parent = unsafe { libc::getppid() };
    let n = bytes / size;
    let mut items = Vec::<T>::with_capacity(n);
    // SAFETY: the spare capacity holds `bytes` bytes, filled below before `set_len`; any bytes
    // are a valid primitive number (raw_size).
    let spare = unsafe { std::slice::from_raw_parts_mut(items.as_mut_ptr().cast::<u8>(), bytes) };
    if xmem::read_from(parent, span.src, spare).is_err() {
        return bare_reply(REPLY_DECLINED);
    }
    // SAFETY: all n items were just written.
    unsafe { items.set_len(n) };
    let reply = run_items(call, items.into_iter());
    if let Ok(true) = write_to_caller(&reply, parent, span.dst) {
        return bare_reply(REPLY_WRITTEN);
    }
    encode_reply(&reply, limit)
}

/// Copies the values of an all-successful `reply` of numbers to `dst` in the caller's memory
/// (`parent`); `Ok(false)` when there is nothing such to copy.
fn write_to_caller<R: 'static>(
    reply: &Reply<R>,
    parent: libc::pid_t,
    dst: u64,
) -> std::io::Result<bool> {
    let Some(raw) = (match reply {
        Reply::AllOk(values) => raw_bytes(values),
        _ => None,
    }) else {
        return Ok(false);
    };
    xmem::write_to(parent, dst, raw).map(|()| true)
}

/// Runs a chunk of numbers left in a lane ([`CODEC_LANE_XMEM`]) and copies its results to the
/// caller's output vector; when the kernel refuses that, the results go back in the reply.
fn lane_to_caller_entry<C, T>(call: C, payload: &[u8], limit: usize) -> Vec<u8>
where
    C: Callable<T>,
    T: 'static,
    C::Output: Serialize + 'static,
{
    let raw = payload
        .get(LANE_XMEM_HEAD..)
        .ok_or_else(|| "a malformed lane".to_string());
    let reply = match raw.and_then(|raw| run_raw_items(call, raw)) {
        Ok(reply) => reply,
        Err(err) => {
            let failed = Reply::<C::Output>::Failed(ChunkFailure::DecodeArgs(err));
            return encode_reply(&failed, limit);
        }
    };
    let dst = read_u64(&payload[8..16]);
    if !CALLER_REFUSES_COPIES.load(Ordering::Relaxed) {
        // SAFETY: getppid has no preconditions.
        let parent = unsafe { libc::getppid() };
        #[cfg(test)]
        let parent = if tests::REFUSE_CROSS_MEMORY.load(Ordering::Relaxed) {
            0 // no such process: the copy fails, as where the kernel refuses it
        } else {
            parent
        };
        match write_to_caller(&reply, parent, dst) {
            Ok(true) => return bare_reply(REPLY_WRITTEN),
            // The kernel will refuse the next chunk too (Yama's ptrace_scope, a seccomp
            // filter): their results go back in the reply from now on, without trying.
            Err(err) if refusal(&err) => CALLER_REFUSES_COPIES.store(true, Ordering::Relaxed),
            _ => {}
        }
    }
    encode_reply(&reply, limit)
}

/// Set in a worker once the kernel refused it a copy into the caller.
static CALLER_REFUSES_COPIES: AtomicBool = AtomicBool::new(false);

/// Whether `err` is the kernel refusing cross-memory copies for good (not a passing failure).
fn refusal(err: &std::io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EPERM | libc::EACCES | libc::ENOSYS | libc::ESRCH)
    )
}

/// Runs items of a primitive number type ([`raw_size`]) where their bytes lie, without
/// copying them into a vector first when the bytes are aligned for them (a lane's are).
fn run_raw_items<C: Callable<T>, T: 'static>(
    call: C,
    raw: &[u8],
) -> Result<Reply<C::Output>, String> {
    let size = raw_size::<T>().ok_or("raw bytes for a type sent by postcard")?;
    if !raw.as_ptr().cast::<T>().is_aligned() || !raw.len().is_multiple_of(size) {
        return decode_raw::<T>(raw).map(|items| run_items(call, items.into_iter()));
    }
    // SAFETY: aligned (checked), raw.len() / size whole items within `raw`, and any bytes are
    // a valid primitive number; reading one leaves nothing to drop twice (numbers are Copy).
    let items = unsafe { std::slice::from_raw_parts(raw.as_ptr().cast::<T>(), raw.len() / size) };
    // SAFETY: as above: each item is a plain number read out of its place.
    Ok(run_items(
        call,
        items.iter().map(|item| unsafe { std::ptr::read(item) }),
    ))
}

fn run_items<C: Callable<T>, T>(
    call: C,
    items: impl ExactSizeIterator<Item = T>,
) -> Reply<C::Output> {
    let len = items.len();
    let mut it = items;
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

/// What a freshly forked child needs; built before the fork so the child allocates little.
pub(super) struct ChildSetup {
    pub(super) input: RawFd,
    pub(super) output: RawFd,
    pub(super) close: Vec<RawFd>,
    pub(super) parent: libc::pid_t,
    pub(super) initializer: Option<Arc<dyn Fn() + Send + Sync>>,
    pub(super) limit: usize,
    /// The lanes mapping's address and this worker's slot in it.
    pub(super) lanes: Option<(usize, usize)>,
}

/// The worker process: never returns, never runs the parent's destructors or atexit handlers.
pub(super) fn child_main(setup: ChildSetup) -> ! {
    let code = match catch_unwind(AssertUnwindSafe(|| child_loop(&setup))) {
        Ok(code) => code,
        Err(_) => CHILD_FAILED,
    };
    // SAFETY: _exit ends the process at once, which is what a forked child must do.
    unsafe { libc::_exit(code) }
}

fn child_loop(setup: &ChildSetup) -> i32 {
    IN_WORKER.store(true, Ordering::Relaxed);
    block_sigpipe(); // forked from the main thread, SIGPIPE may not be blocked here
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
    set_blocking(setup.input);
    set_blocking(setup.output);
    // SAFETY: the child owns its two pipe ends from now on and never gives them back.
    let mut input = std::io::BufReader::with_capacity(8 << 10, unsafe {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    /// Makes workers forked from now on decline cross-memory chunks, as a kernel that forbids
    /// them would.
    pub(super) static REFUSE_CROSS_MEMORY: AtomicBool = AtomicBool::new(false);

    fn double(x: u32) -> f64 {
        f64::from(x) * 2.0
    }

    /// Where the kernel refuses a worker the caller's memory, results come back in replies:
    /// through the lane of a lane-sized chunk, through the pipe for larger ones.
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
        // Results written over their items (`split_for_map`), both ways too.
        let items: Vec<u64> = (0..1_000_000).collect();
        let halves: Vec<f64> = items.iter().map(|&x| x as f64 / 2.0).collect();
        for chunksize in [125_000, 600_000] {
            let got = pool.map_chunksize(half, items.clone(), chunksize);
            assert_eq!(got.unwrap(), halves);
        }
    }

    fn half(x: u64) -> f64 {
        x as f64 / 2.0
    }
}

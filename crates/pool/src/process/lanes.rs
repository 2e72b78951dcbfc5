//! Shared-memory lanes: large payloads of a chunk travel through memory shared with the worker
//! instead of through its pipe (which costs two kernel copies and many wakeups per megabyte).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Bytes of one lane area; larger messages go through the pipe.
pub(super) const LANE_BYTES: usize = 2 << 20;
/// Smaller messages go through the pipe, which is cheaper for them.
pub(super) const LANE_MIN: usize = 32 << 10;
/// Lanes per worker: each has an input area and an output area. Two carry jobs while the
/// replies of others are still being read by the caller.
pub(super) const LANES: usize = 4;
pub(super) const KIND_TASK_LANE: u8 = 2;
pub(super) const TAG_REPLY_LANE: u8 = 2;
/// `u32 len | u8 kind | u64 entry | u8 lane | u64 payload length`.
pub(super) const LANE_TASK_FRAME: usize = 4 + 1 + 8 + 1 + 8;
/// `u32 len | u8 tag | u8 lane | u64 body length`.
pub(super) const LANE_REPLY_FRAME: usize = 4 + 1 + 1 + 8;

/// One shared mapping for all worker slots, made before the first fork so that every worker,
/// replacements included, has it at the same address.
pub(super) struct Lanes {
    pub(super) base: *mut u8,
    bytes: usize,
    /// Per lane (slot × LANES + lane): a reply is still being read from its output area.
    pub(super) held: Vec<AtomicBool>,
}

// SAFETY: the mapping is plain memory; who touches which area is settled by the protocol (one
// side at a time per area, handed over by the pipe messages).
unsafe impl Send for Lanes {}
// SAFETY: as above.
unsafe impl Sync for Lanes {}

impl Lanes {
    pub(super) fn new(workers: usize) -> Option<Lanes> {
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
pub(super) fn lane_area(base: usize, slot: usize, lane: usize, output: bool) -> *mut u8 {
    (base + ((slot * LANES + lane) * 2 + usize::from(output)) * LANE_BYTES) as *mut u8
}

/// A reply left in a lane's output area, read in place by the caller's thread; the lane is
/// given back (for new jobs) when the view is dropped.
pub(super) struct LaneView {
    pub(super) lanes: Arc<Lanes>,
    pub(super) index: usize,
    pub(super) len: usize,
}

impl LaneView {
    pub(super) fn bytes(&self) -> &[u8] {
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

//! Shared memory: one single-producer/single-consumer ring per ordered pair of ranks.
//!
//! Every rank creates its *inbox* file `inbox-<rank>` in the rendezvous directory, holding one
//! ring per sender; a sender maps the inbox of a destination the first time it writes to it.
//!
//! A ring is a tail counter (written by the consumer, on cache lines of its own) and a
//! power-of-two data area of 64-byte lines. The producer appends *records*: a record starts on
//! a line with a stamp word, `(line number + 1) << 24 | payload length`, followed by the
//! payload, and fills whole lines. The stamp is written last, with release ordering, so the
//! consumer learns of new bytes by polling the stamp in the line it reads next: a small
//! message costs one cache line moved from producer to consumer, no shared head counter, no
//! system call. Before publishing a record the producer clears the stamp word of the line
//! after it, where the next record will start, so that what the consumer polls there is
//! either zero, an older stamp (whose line number differs) or a fresh one, never a leftover
//! payload that happens to look like a stamp. The consumer publishes its tail (in lines)
//! after each record; the producer reads it only when the ring looks full. Counters only
//! grow. Messages larger than a record stream through the ring in several.

use super::{Transport, RENDEZVOUS_TIMEOUT};
use crate::{Error, Result};
use std::fs::{File, OpenOptions};
use std::mem::MaybeUninit;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Bytes from the start of a ring's counter block to its data (two cache lines, against
/// adjacent-line prefetching).
const LINE: usize = 128;
/// Size of a ring's counter block (the tail counter, then padding).
const RING_HEADER: usize = 2 * LINE;
/// Size of the inbox file's own header.
const FILE_HEADER: usize = 4096;
const MAGIC: u64 = u64::from_le_bytes(*b"HPCBOXR2");
/// Records start on lines of this many bytes.
const SLOT: usize = 64;
/// The stamp word at the start of a record.
const STAMP: usize = 8;
/// Bits of a stamp that hold the payload length.
const LEN_BITS: u32 = 24;
/// Largest payload of one record.
const MAX_RECORD: usize = (1 << LEN_BITS) - 1;
/// Records take up to this many bytes, or more, in any ring of at least 8 × this size (the
/// default sizes): a message this long with its envelope travels in one record there.
/// Smaller rings (tests' 4096-byte ones) split such messages.
pub(crate) const MIN_RECORD: usize = 4096;
/// Bits of a stamp that hold the line number (the rest of the word).
const LINE_MASK: u64 = (1 << (64 - LEN_BITS)) - 1;

/// A shared, writable memory mapping of a whole file.
struct Mapping {
    ptr: *mut u8,
    len: usize,
}

impl Mapping {
    fn map(file: &File, len: usize) -> std::io::Result<Mapping> {
        use std::os::fd::AsRawFd;
        // SAFETY: a fresh shared mapping of `len` bytes of an open file; the kernel picks
        // the address. The mapping is released in Drop.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Mapping {
            ptr: ptr.cast::<u8>(),
            len,
        })
    }

    /// Faults in the pages of `len` bytes from `offset`, writable, now rather than one by
    /// one as a ring's first lap reaches them (a page fault every 64 small messages, each
    /// several times a message's time). Best effort: kernels before 5.14 lack it.
    fn populate(&self, offset: usize, len: usize) {
        let page = 4096;
        let start = offset / page * page;
        let end = (offset + len).min(self.len);
        // SAFETY: a range within the mapping (start <= offset < end <= len), page-aligned as
        // madvise requires (the mapping is); MADV_POPULATE_WRITE changes no contents.
        unsafe {
            libc::madvise(
                self.ptr.add(start).cast(),
                end.saturating_sub(start),
                libc::MADV_POPULATE_WRITE,
            );
        }
    }

    fn word(&self, index: usize) -> &AtomicU64 {
        assert!((index + 1) * 8 <= FILE_HEADER.min(self.len));
        // SAFETY: in bounds (checked), 8-aligned (the mapping is page-aligned).
        unsafe { &*self.ptr.add(index * 8).cast::<AtomicU64>() }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `map` mapped; no Ring outlives its Mapping (both are
        // owned side by side by ShmTransport and dropped together).
        unsafe {
            libc::munmap(self.ptr.cast(), self.len);
        }
    }
}

/// One end of a ring: either the producer or the consumer, never both.
pub(crate) struct Ring {
    tail: *const AtomicU64,
    data: *mut u8,
    cap: usize,
    /// Lines in the data area.
    lines: u64,
    /// Producer: the line where the next record starts. Consumer: the line of the record
    /// being read (or of the next one).
    pos: u64,
    /// Producer: the last seen tail.
    seen: u64,
    /// Producer: the stamp words of lines from `pos` up to this one (exclusive) are clear
    /// (see [`Ring::clear_ahead`]).
    cleared: u64,
    /// Consumer: payload length of the record in hand (0: none).
    rec_len: usize,
    /// Consumer: bytes of that payload already read.
    rec_off: usize,
}

// SAFETY: a Ring is one end of a single-producer/single-consumer queue in memory that stays
// mapped while it lives; moving that end to another thread keeps one producer and one consumer.
unsafe impl Send for Ring {}

/// Lines taken by a record of `len` payload bytes.
fn lines_of(len: usize) -> u64 {
    (STAMP + len).div_ceil(SLOT) as u64
}

/// The stamp of a record of `len` bytes starting at line `line`.
fn stamp(line: u64, len: usize) -> u64 {
    ((line.wrapping_add(1) & LINE_MASK) << LEN_BITS) | len as u64
}

impl Ring {
    /// The end of the ring whose counter block starts at `base`.
    ///
    /// # Safety
    /// `base` must point to `RING_HEADER + cap` bytes, 128-aligned, that stay mapped while the
    /// Ring lives and were all zero when the ring was first used, and at most one producer
    /// and one consumer may use them at any time.
    pub(crate) unsafe fn new(base: *mut u8, cap: usize) -> Ring {
        debug_assert!(cap.is_power_of_two() && cap >= 2 * SLOT);
        let tail = base.cast::<AtomicU64>() as *const AtomicU64;
        // SAFETY: the data area follows the counters (the caller's contract).
        let data = unsafe { base.add(RING_HEADER) };
        // SAFETY: the counter is a valid atomic (the caller's contract).
        let t = unsafe { (*tail).load(Ordering::Acquire) };
        Ring {
            tail,
            data,
            cap,
            lines: (cap / SLOT) as u64,
            pos: t,
            seen: t,
            cleared: t,
            rec_len: 0,
            rec_off: 0,
        }
    }

    /// The stamp word of line `line`.
    fn stamp_at(&self, line: u64) -> &AtomicU64 {
        // lines is a power of two (cap is).
        let off = (line & (self.lines - 1)) as usize * SLOT;
        // SAFETY: off + 8 <= cap; lines are 64-aligned within a 128-aligned area.
        unsafe { &*self.data.add(off).cast::<AtomicU64>() }
    }

    /// Producer: lines free, as far as the last seen tail tells. The counters live in memory
    /// another process writes, so arithmetic never trusts them to be consistent.
    fn free_lines(&self) -> u64 {
        self.lines - self.pos.wrapping_sub(self.seen).min(self.lines)
    }

    /// Most payload bytes per record: publishing in pieces lets the consumer copy out one
    /// piece while the producer copies in the next.
    fn chunk(&self) -> usize {
        (self.cap / 8).clamp(MIN_RECORD, MAX_RECORD)
    }

    /// Producer: appends as much of `bufs` (concatenated) as fits, up to one record.
    pub(crate) fn push(&mut self, bufs: &[&[u8]]) -> usize {
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let want = total.min(self.chunk());
        if want == 0 {
            return 0;
        }
        // One line more than the record: the next record's stamp word is cleared too.
        if self.free_lines() < lines_of(want) + 1 {
            // SAFETY: valid counter (Ring::new's contract).
            self.seen = unsafe { (*self.tail).load(Ordering::Acquire) };
        }
        let free = self.free_lines() as usize;
        if free < 2 {
            return 0;
        }
        let n = want.min((free - 1) * SLOT - STAMP);
        // The record's first line last, just before its stamp: the consumer polls that line,
        // and each time it reads it while it is being written the line has to come back.
        let start = self.pos as usize * SLOT + STAMP;
        let head = n.min(SLOT - STAMP);
        if head < n {
            self.gather_in(start, bufs, head..n);
        }
        self.gather_in(start, bufs, 0..head);
        let next = self.pos + lines_of(n);
        if next >= self.cleared {
            self.stamp_at(next).store(0, Ordering::Relaxed);
            self.cleared = next + 1;
        }
        self.stamp_at(self.pos)
            .store(stamp(self.pos, n), Ordering::Release);
        self.pos = next;
        self.clear_ahead();
        n
    }

    /// Producer, after a publication: clears the stamp words of the lines ahead, a batch at
    /// a time and as far as the consumer's last seen tail allows, so that a publication
    /// seldom has to clear the line after its record first (a store that must take that line
    /// from the consumer's cache before the stamp can follow). Stores made after the stamp's
    /// do not delay it.
    fn clear_ahead(&mut self) {
        const BATCH: u64 = 32;
        if self.cleared > self.pos + BATCH / 2 {
            return;
        }
        let end = (self.pos + BATCH).min(self.seen + self.lines);
        for line in self.cleared.max(self.pos)..end {
            self.stamp_at(line).store(0, Ordering::Relaxed);
        }
        self.cleared = self.cleared.max(end);
    }

    /// Consumer: whether a record is in hand or published (one load of a stamp word).
    fn ready(&self) -> bool {
        self.rec_len > 0
            || self.stamp_at(self.pos).load(Ordering::Acquire) >> LEN_BITS
                == self.pos.wrapping_add(1) & LINE_MASK
    }

    /// Consumer: takes the record at `pos` in hand if it is published; whether one is.
    fn next_record(&mut self) -> bool {
        if self.rec_len > 0 {
            return true;
        }
        let w = self.stamp_at(self.pos).load(Ordering::Acquire);
        if w >> LEN_BITS != self.pos.wrapping_add(1) & LINE_MASK {
            return false;
        }
        // A zero length is never written; a corrupt one is clamped to the ring.
        let room = (self.lines as usize - 1) * SLOT - STAMP;
        self.rec_len = (w as usize & MAX_RECORD).min(room);
        self.rec_off = 0;
        self.rec_len > 0
    }

    /// Consumer: moves available bytes into `buf`, record after record while they last.
    pub(crate) fn pop(&mut self, buf: &mut [MaybeUninit<u8>]) -> usize {
        let mut done = 0;
        while done < buf.len() && self.next_record() {
            let n = (self.rec_len - self.rec_off).min(buf.len() - done);
            let at = self.pos as usize * SLOT + STAMP + self.rec_off;
            self.copy_out(at, &mut buf[done..done + n]);
            done += n;
            self.rec_off += n;
            if self.rec_off == self.rec_len {
                self.finish_record();
            }
        }
        done
    }

    /// Consumer: the payload of the next record, when it is published, none of it has been
    /// read, and it lies in one piece (not across the ring's end). Nothing moves until
    /// [`Ring::finish_record`].
    pub(crate) fn peek(&mut self) -> Option<&[u8]> {
        if !self.next_record() || self.rec_off > 0 {
            return None;
        }
        let off = (self.pos as usize * SLOT + STAMP) & (self.cap - 1);
        // SAFETY: off + rec_len <= cap (checked): published bytes of the data area, which the
        // producer leaves alone until the tail moves past them (after this borrow ends).
        (off + self.rec_len <= self.cap)
            .then(|| unsafe { std::slice::from_raw_parts(self.data.add(off), self.rec_len) })
    }

    /// Consumer: done with the record in hand; its lines go back to the producer. Nothing
    /// happens when no record is in hand.
    pub(crate) fn finish_record(&mut self) {
        if self.rec_len == 0 {
            return;
        }
        self.pos += lines_of(self.rec_len);
        self.rec_len = 0;
        // SAFETY: valid counter.
        unsafe { (*self.tail).store(self.pos, Ordering::Release) };
    }

    /// Copies bytes `range` of the concatenation of `bufs` to the ring, byte 0 going to
    /// offset `start`.
    fn gather_in(&self, start: usize, bufs: &[&[u8]], range: std::ops::Range<usize>) {
        let mut from = 0;
        for b in bufs {
            let (lo, hi) = (range.start.max(from), range.end.min(from + b.len()));
            if lo < hi {
                self.copy_in(start + lo, &b[lo - from..hi - from]);
            }
            from += b.len();
        }
    }

    fn copy_in(&self, at: usize, src: &[u8]) {
        let off = at & (self.cap - 1);
        let first = src.len().min(self.cap - off);
        // SAFETY: off + first <= cap and src.len() - first <= off <= cap; the lines are free
        // (between the producer's position and tail + cap), so the consumer does not read
        // them.
        unsafe {
            copy(src.as_ptr(), self.data.add(off), first);
            if first < src.len() {
                copy(src.as_ptr().add(first), self.data, src.len() - first);
            }
        }
    }

    fn copy_out(&self, at: usize, dst: &mut [MaybeUninit<u8>]) {
        let off = at & (self.cap - 1);
        let first = dst.len().min(self.cap - off);
        // SAFETY: bounds as in copy_in; the bytes are published (their record's stamp was
        // read with acquire ordering), so the producer does not touch them until tail moves
        // past them.
        unsafe {
            let dst_ptr = dst.as_mut_ptr().cast::<u8>();
            copy(self.data.add(off), dst_ptr, first);
            if first < dst.len() {
                copy(self.data, dst_ptr.add(first), dst.len() - first);
            }
        }
    }
}

/// Copies `len` bytes; small copies (envelopes, small payloads) inline, without a call or a
/// loop: two accesses that may overlap cover any length between one size and twice it.
///
/// # Safety
/// As `std::ptr::copy_nonoverlapping`.
#[inline(always)]
unsafe fn copy(src: *const u8, dst: *mut u8, len: usize) {
    /// Copies one `T` from `src + at` to `dst + at`, unaligned.
    ///
    /// # Safety
    /// Both ranges within the caller's.
    #[inline(always)]
    unsafe fn one<T: Copy>(src: *const u8, dst: *mut u8, at: usize) {
        // SAFETY: the caller's contract.
        unsafe {
            dst.add(at)
                .cast::<T>()
                .write_unaligned(src.add(at).cast::<T>().read_unaligned());
        }
    }
    // SAFETY (all below): each access lies within src[..len] and dst[..len] (the caller's
    // contract): the second of each pair ends at the last byte.
    unsafe {
        match len {
            33.. => std::ptr::copy_nonoverlapping(src, dst, len),
            16..=32 => {
                one::<u128>(src, dst, 0);
                one::<u128>(src, dst, len - 16);
            }
            8..=15 => {
                one::<u64>(src, dst, 0);
                one::<u64>(src, dst, len - 8);
            }
            4..=7 => {
                one::<u32>(src, dst, 0);
                one::<u32>(src, dst, len - 4);
            }
            1..=3 => {
                one::<u8>(src, dst, 0);
                one::<u8>(src, dst, len / 2);
                one::<u8>(src, dst, len - 1);
            }
            0 => {}
        }
    }
}

/// The shared-memory transport of one rank.
pub(crate) struct ShmTransport {
    dir: PathBuf,
    rank: usize,
    size: usize,
    cap: usize,
    /// Consumer ends of the rings in our inbox, by sender.
    rx: Vec<Option<Ring>>,
    /// Producer ends into other inboxes, by destination (opened on first write).
    tx: Vec<Option<Ring>>,
    first_try: Vec<Option<Instant>>,
    /// Mappings kept alive for the rings above; dropped after them.
    maps: Vec<Mapping>,
}

/// Size of one rank's inbox file in a world of `size` ranks with rings of `cap` bytes.
pub(crate) fn inbox_len(size: usize, cap: usize) -> usize {
    FILE_HEADER + size * (RING_HEADER + cap)
}

/// Bytes free for unprivileged users in the file system holding `dir`.
pub(crate) fn free_bytes(dir: &Path) -> Option<u64> {
    let st = nix::sys::statvfs::statvfs(dir).ok()?;
    Some((st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64))
}

/// Where the ring of `sender` starts in an inbox of rings of `cap` bytes.
fn ring_offset(sender: usize, cap: usize) -> usize {
    FILE_HEADER + sender * (RING_HEADER + cap)
}

fn ring_base(map: &Mapping, sender: usize, cap: usize) -> *mut u8 {
    // SAFETY (of the add): within the mapping of inbox_len(size, cap) bytes for sender < size.
    unsafe { map.ptr.add(ring_offset(sender, cap)) }
}

impl ShmTransport {
    /// Creates this rank's inbox in `dir`.
    pub(crate) fn new(dir: &Path, rank: usize, size: usize, cap: usize) -> Result<ShmTransport> {
        let len = inbox_len(size, cap);
        let tmp = dir.join(format!("inbox-{rank}.tmp"));
        let path = dir.join(format!("inbox-{rank}"));
        let ctx = |what: &str, p: &Path| format!("{what} {}", p.display());
        // The inbox is sparse, but a full tmpfs would turn a later write into SIGBUS: refuse
        // now, with a message, when even one full inbox would not fit.
        if let Some(free) = free_bytes(dir).filter(|&f| f < len as u64) {
            return Err(Error::InvalidArgument(format!(
                "{} has {free} bytes free, but a shared-memory inbox of this world needs {len}: \
                 lower HPCBOX_SHM_RING_BYTES or set HPCBOX_TRANSPORT=tcp",
                dir.display()
            )));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| Error::io(ctx("creating", &tmp), e))?;
        file.set_len(len as u64)
            .map_err(|e| Error::io(ctx("sizing", &tmp), e))?;
        let map = Mapping::map(&file, len).map_err(|e| Error::io(ctx("mapping", &tmp), e))?;
        map.word(1).store(size as u64, Ordering::Relaxed);
        map.word(2).store(cap as u64, Ordering::Relaxed);
        map.word(0).store(MAGIC, Ordering::Release);
        std::fs::rename(&tmp, &path).map_err(|e| Error::io(ctx("publishing", &path), e))?;
        let rx = (0..size)
            .map(|s| {
                // SAFETY: ring s of our own inbox, mapped for as long as `maps` holds it;
                // we are its only consumer.
                (s != rank).then(|| unsafe { Ring::new(ring_base(&map, s, cap), cap) })
            })
            .collect();
        Ok(ShmTransport {
            dir: dir.to_path_buf(),
            rank,
            size,
            cap,
            rx,
            tx: (0..size).map(|_| None).collect(),
            first_try: vec![None; size],
            maps: vec![map],
        })
    }

    /// Maps the inbox of `dest` once it exists; `Ok(false)` while it does not yet.
    fn open_peer(&mut self, dest: usize) -> Result<bool> {
        let path = self.dir.join(format!("inbox-{dest}"));
        let file = match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let since = *self.first_try[dest].get_or_insert_with(Instant::now);
                if since.elapsed() > RENDEZVOUS_TIMEOUT {
                    return Err(Error::Rendezvous {
                        rank: dest,
                        dir: self.dir.clone(),
                        secs: RENDEZVOUS_TIMEOUT.as_secs(),
                    });
                }
                return Ok(false);
            }
            Err(e) => return Err(Error::io(format!("opening {}", path.display()), e)),
        };
        let len = inbox_len(self.size, self.cap);
        let actual = file
            .metadata()
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?
            .len();
        let map = Mapping::map(&file, len)
            .map_err(|e| Error::io(format!("mapping {}", path.display()), e))?;
        let fits = actual == len as u64
            && map.word(0).load(Ordering::Acquire) == MAGIC
            && map.word(1).load(Ordering::Relaxed) == self.size as u64
            && map.word(2).load(Ordering::Relaxed) == self.cap as u64;
        if !fits {
            return Err(Error::InvalidArgument(format!(
                "{} was not made for a world of {} ranks with {}-byte rings",
                path.display(),
                self.size,
                self.cap
            )));
        }
        map.populate(ring_offset(self.rank, self.cap), RING_HEADER + self.cap);
        // SAFETY: our ring in the peer's inbox, mapped while `maps` holds it; we are its only producer.
        self.tx[dest] = Some(unsafe { Ring::new(ring_base(&map, self.rank, self.cap), self.cap) });
        self.maps.push(map);
        Ok(true)
    }
}

impl Transport for ShmTransport {
    fn route(&self, _peer: usize) -> &'static str {
        "shm"
    }

    fn write_some(&mut self, dest: usize, bufs: &[&[u8]]) -> Result<usize> {
        if self.tx[dest].is_none() && !self.open_peer(dest)? {
            return Ok(0);
        }
        Ok(self.tx[dest].as_mut().map_or(0, |r| r.push(bufs)))
    }

    fn read_some(&mut self, src: usize, buf: &mut [MaybeUninit<u8>]) -> Result<usize> {
        Ok(self.rx[src].as_mut().map_or(0, |r| r.pop(buf)))
    }

    fn peek_record(&mut self, src: usize) -> Option<&[u8]> {
        self.rx.get_mut(src)?.as_mut()?.peek()
    }

    fn finish_record(&mut self, src: usize) {
        if let Some(ring) = self.rx.get_mut(src).and_then(Option::as_mut) {
            ring.finish_record();
        }
    }

    fn has_input(&self) -> bool {
        self.rx.iter().flatten().any(Ring::ready)
    }

    fn has_input_from(&self, src: usize) -> bool {
        self.rx
            .get(src)
            .and_then(Option::as_ref)
            .is_some_and(Ring::ready)
    }
}

impl Drop for ShmTransport {
    fn drop(&mut self) {
        // Rings point into the mappings: clear them before the mappings go.
        self.rx.clear();
        self.tx.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[repr(align(128))]
    struct Line(#[allow(dead_code)] [u8; 128]);

    /// Storage for a ring in ordinary memory (128-aligned) and its base pointer.
    fn local(cap: usize) -> (Vec<Line>, *mut u8) {
        let lines = (RING_HEADER + cap) / 128;
        let mut v: Vec<Line> = (0..lines).map(|_| Line([0; 128])).collect();
        let p = v.as_mut_ptr().cast::<u8>();
        (v, p)
    }

    #[test]
    fn wraps_and_streams_larger_than_capacity() {
        let (_mem, base) = local(4096);
        // SAFETY: the storage outlives both ends; one producer, one consumer.
        let (mut p, mut c) = unsafe { (Ring::new(base, 4096), Ring::new(base, 4096)) };
        let msg: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut got = Vec::new();
        let mut sent = 0;
        let mut tmp = vec![MaybeUninit::new(0u8); 3000];
        while got.len() < msg.len() {
            sent += p.push(&[&msg[sent..]]);
            let n = c.pop(&mut tmp);
            got.extend(tmp[..n].iter().map(|b| unsafe { b.assume_init() }));
        }
        assert_eq!(got, msg);
    }

    #[test]
    fn two_threads_keep_order() {
        let (mem, base) = local(4096);
        let base = base as usize;
        let n = 200_000u32;
        let producer = std::thread::spawn(move || {
            // SAFETY: the storage lives until both threads are joined; one producer.
            let mut p = unsafe { Ring::new(base as *mut u8, 4096) };
            let data: Vec<u8> = (0..n).flat_map(|i| i.to_le_bytes()).collect();
            let mut off = 0;
            while off < data.len() {
                let k = p.push(&[&data[off..(off + 777).min(data.len())]]);
                off += k;
                if k == 0 {
                    std::thread::yield_now();
                }
            }
        });
        // SAFETY: as above; one consumer.
        let mut c = unsafe { Ring::new(base as *mut u8, 4096) };
        let mut got = Vec::with_capacity(n as usize * 4);
        let mut tmp = [MaybeUninit::new(0u8); 1000];
        while got.len() < n as usize * 4 {
            let k = c.pop(&mut tmp);
            got.extend(tmp[..k].iter().map(|b| unsafe { b.assume_init() }));
            if k == 0 {
                std::thread::yield_now();
            }
        }
        producer.join().unwrap();
        drop(mem);
        for (i, w) in got.chunks(4).enumerate() {
            assert_eq!(u32::from_le_bytes(w.try_into().unwrap()), i as u32);
        }
    }

    #[test]
    fn small_copies_move_exactly_their_bytes() {
        let src: Vec<u8> = (1..=48).collect();
        for len in 0..=40 {
            let mut dst = [0u8; 48];
            // SAFETY: both buffers hold at least `len` bytes.
            unsafe { copy(src.as_ptr(), dst.as_mut_ptr(), len) };
            assert_eq!(&dst[..len], &src[..len], "len {len}");
            assert!(dst[len..].iter().all(|&b| b == 0), "len {len}");
        }
    }

    #[test]
    fn peeked_records_are_whole_unread_and_in_one_piece() {
        let (_mem, base) = local(4096);
        // SAFETY: storage outlives both ends.
        let (mut p, mut c) = unsafe { (Ring::new(base, 4096), Ring::new(base, 4096)) };
        assert!(c.peek().is_none(), "nothing published yet");
        assert_eq!(p.push(&[b"first", b"!"]), 6);
        assert_eq!(c.peek(), Some(&b"first!"[..]));
        assert_eq!(c.peek(), Some(&b"first!"[..]), "peeking moves nothing");
        c.finish_record();
        assert!(c.peek().is_none());
        // A record partly read is not shown again.
        assert_eq!(p.push(&[b"second"]), 6);
        let mut two = [MaybeUninit::new(0u8); 2];
        assert_eq!(c.pop(&mut two), 2);
        assert!(c.peek().is_none());
        let mut rest = [MaybeUninit::new(0u8); 4];
        assert_eq!(c.pop(&mut rest), 4);
        // Records that run across the ring's end are left to pop.
        let mut sink = [MaybeUninit::new(0u8); 4096];
        let line = vec![7u8; SLOT - STAMP];
        while p.pos % c.lines != c.lines - 1 {
            assert_eq!(p.push(&[&line]), line.len());
            assert_eq!(c.pop(&mut sink), line.len());
        }
        let across = vec![9u8; 100];
        assert_eq!(p.push(&[&across]), 100);
        assert!(c.peek().is_none());
        assert_eq!(c.pop(&mut sink), 100);
        assert_eq!(p.push(&[b"after"]), 5);
        assert_eq!(c.peek(), Some(&b"after"[..]));
    }

    #[test]
    fn gathers_header_and_payload() {
        let (_mem, base) = local(4096);
        // SAFETY: storage outlives both ends.
        let (mut p, mut c) = unsafe { (Ring::new(base, 4096), Ring::new(base, 4096)) };
        assert_eq!(p.push(&[b"head", b"", b"body"]), 8);
        let mut out = [MaybeUninit::new(0u8); 16];
        assert_eq!(c.pop(&mut out), 8);
        // SAFETY: initialized above.
        let out: Vec<u8> = out[..8]
            .iter()
            .map(|b| unsafe { b.assume_init() })
            .collect();
        assert_eq!(out, b"headbody");
        // Full ring: a push takes only what fits (less than the capacity: stamps and a spare
        // line), then nothing until the consumer reads.
        let big = vec![1u8; 5000];
        let first = p.push(&[&big]);
        assert!(first > 3900 && first < 4096, "{first}");
        assert_eq!(p.push(&[&big]), 0);
        let mut sink = vec![MaybeUninit::new(0u8); 5000];
        assert_eq!(c.pop(&mut sink), first);
        assert!(p.push(&[&big]) > 3900);
    }
}

//! One worker process as the supervisor sees it: its pipes, the jobs it holds, and the frames
//! going each way.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::PoolError;

use super::codec::{read_u64, CODEC_LANE_XMEM, CODEC_RAW, LANE_XMEM_HEAD, REPLY_DECLINED};
use super::job::{Job, JobEnd, ReplyBody};
use super::lanes::{
    lane_area, LaneView, Lanes, KIND_TASK_LANE, LANES, LANE_BYTES, LANE_MIN, LANE_REPLY_FRAME,
    LANE_TASK_FRAME, TAG_REPLY_LANE,
};
use super::sys::{nonblocking_pipe, note_write_failure};
use super::{KIND_EXIT, REPLY_HEADER, TAG_INIT_FAILED, TAG_REPLY, TASK_HEADER};

pub(super) struct Worker {
    pub(super) pid: Pid,
    pub(super) tx: OwnedFd,
    pub(super) rx: OwnedFd,
    /// Jobs sent or being sent, oldest first; the front one is running.
    pub(super) inflight: VecDeque<Job>,
    pub(super) inflight_bytes: usize,
    /// How many of `inflight` are completely written, and bytes written of the next.
    pub(super) sent: usize,
    pub(super) offset: usize,
    pub(super) assigned: usize,
    pub(super) retiring: bool,
    pub(super) exit_sent: bool,
    pub(super) rbuf: Vec<u8>,
    pub(super) eof: bool,
    /// This worker's place in the lanes mapping, and which of its lanes hold a job.
    pub(super) slot: usize,
    pub(super) lane_busy: [bool; LANES],
    /// Cross-memory jobs the worker declined, to be sent again another way.
    pub(super) declined: Vec<Job>,
    /// Its replies could not all be read (a malformed stream, a failed read): which of its
    /// jobs ran is unknown, so none is sent again (a map's results may be over its items).
    pub(super) replies_lost: bool,
}

const EXIT_FRAME: [u8; 5] = [1, 0, 0, 0, KIND_EXIT];
/// The room a worker's first read asks for. Small, so that a pool that gets a few short
/// replies never allocates (and frees) 64 KiB per worker: a free of that size makes glibc
/// consolidate its heap, touching pages that a fork has just shared.
const FIRST_READ: usize = 4 << 10;
/// The room a read asks for once replies stream in (the buffer grows toward it and stays);
/// a frame larger than this is read into a buffer of its own size and handed on whole, a
/// smaller one is copied out of the buffer.
const READ_CHUNK: usize = 64 << 10;
/// Prefetch: a worker gets at least 2 jobs, and up to 16 while they stay small.
const MIN_INFLIGHT: usize = 2;
const MAX_INFLIGHT: usize = 16;
const INFLIGHT_BYTES: usize = 256 << 10;

impl Worker {
    /// A worker just forked: `tx` writes its tasks, `rx` reads its replies, `slot` is its
    /// place in the lanes mapping.
    pub(super) fn new(pid: Pid, tx: OwnedFd, rx: OwnedFd, slot: usize) -> Worker {
        Worker {
            pid,
            tx,
            rx,
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
            replies_lost: false,
        }
    }

    /// Ends every job sent to this worker with `err`, and forgets what it was sent.
    pub(super) fn cancel_inflight(&mut self, err: &PoolError) {
        for job in self.inflight.drain(..) {
            (job.done)(JobEnd::Cancelled(err.clone()));
        }
        self.sent = 0;
        self.offset = 0;
        self.inflight_bytes = 0;
        self.lane_busy = [false; LANES];
    }

    /// Copies a large task's payload to a free lane of this worker; the short frame to send
    /// instead of the task frame, or None (the frame goes down the pipe as it is). With
    /// `results_to_caller`, a chunk of numbers whose results are numbers has the worker copy
    /// the results straight to the caller ([`CODEC_LANE_XMEM`]).
    pub(super) fn put_in_lane(
        &mut self,
        lanes: &Lanes,
        job: &Job,
        results_to_caller: bool,
    ) -> Option<(u8, Vec<u8>)> {
        let mut head = [0u8; LANE_XMEM_HEAD];
        let (head, body): (&[u8], &[u8]) = match (&job.raw, job.xmem_dst) {
            (Some(raw), Some(dst)) if results_to_caller => {
                head[0] = CODEC_LANE_XMEM;
                head[8..16].copy_from_slice(&dst.to_le_bytes());
                (&head[..], raw.bytes())
            }
            (Some(raw), _) => (&[CODEC_RAW][..], raw.bytes()),
            (None, _) => (&[], job.frame.get(TASK_HEADER..)?),
        };
        let size = head.len() + body.len();
        if !(LANE_MIN..=LANE_BYTES).contains(&size) {
            return None;
        }
        let lane = (0..LANES).find(|&l| {
            !self.lane_busy[l] && !lanes.held[self.slot * LANES + l].load(Ordering::Acquire)
        })?;
        // SAFETY: a free lane's input area is ours (the worker reads it only after the frame
        // below), and the payload fits in it.
        unsafe {
            let area = lane_area(lanes.base as usize, self.slot, lane, false);
            std::ptr::copy_nonoverlapping(head.as_ptr(), area, head.len());
            std::ptr::copy_nonoverlapping(body.as_ptr(), area.add(head.len()), body.len());
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

    pub(super) fn has_room(&self) -> bool {
        if self.retiring || self.eof {
            return false;
        }
        let n = self.inflight.len();
        n < MIN_INFLIGHT || (n < MAX_INFLIGHT && self.inflight_bytes < INFLIGHT_BYTES)
    }

    /// Writes as much of the unsent frames as the pipe takes, several frames per call.
    pub(super) fn flush(&mut self) {
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
                note_write_failure();
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
            self.exit_sent = self.send_exit();
        }
    }

    /// Asks the worker to exit once its jobs are done; whether the frame went.
    pub(super) fn send_exit(&self) -> bool {
        // SAFETY: a 5-byte write of a constant buffer (atomic below PIPE_BUF).
        let n = unsafe { libc::write(self.tx.as_raw_fd(), EXIT_FRAME.as_ptr().cast(), 5) };
        if n < 0 {
            note_write_failure();
        }
        n == 5
    }

    /// Reads what the pipe holds and completes the jobs whose replies arrived; nothing once
    /// the stream has ended (or broken: the buffer may then start with a length that was
    /// refused, and must not be trusted for a reservation).
    pub(super) fn read_frames(
        &mut self,
        limit: usize,
        lanes: Option<&Arc<Lanes>>,
        init_failed: &mut Option<String>,
    ) {
        while !self.eof {
            let chunk = self.rbuf.capacity().clamp(FIRST_READ, READ_CHUNK);
            let want = self.frame_need().max(chunk);
            if self.rbuf.capacity() - self.rbuf.len() < want.min(chunk) {
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
                        self.replies_lost = true;
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
                self.replies_lost = true;
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
            let frame = if pos == 0 && self.rbuf.len() == 4 + len && len > READ_CHUNK {
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

/// A pid no process has (above any `pid_max`), for workers without a process: one killed
/// over a malformed stream signals nobody.
const NO_PROCESS: i32 = 0x3fff_fff0;

/// Feeds `stream` to a worker holding `jobs` sent jobs, as its replies in two parts cut at
/// `cut`, then closes the stream and fails the jobs left, as a pool's end does
/// (`cancel_inflight`); returns how the jobs ended, in the order they did: each job's index,
/// and its reply's body if a reply ended it. For the property test and the fuzz target:
/// whatever the bytes, nothing panics, nothing is reserved for a length the stream was
/// refused for, and replies before any garbage reach their jobs in order.
#[doc(hidden)]
pub fn settle_reply_stream(
    stream: &[u8],
    cut: usize,
    jobs: usize,
) -> Vec<(usize, Option<Vec<u8>>)> {
    let ended = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (rx, reply_w) = nonblocking_pipe().expect("a pipe");
    let (_task_r, tx) = nonblocking_pipe().expect("a pipe");
    let mut w = Worker::new(Pid::from_raw(NO_PROCESS), tx, rx, 0);
    for i in 0..jobs {
        let ended = ended.clone();
        w.inflight.push_back(Job {
            frame: Vec::new(),
            done: Box::new(move |end| {
                let body = match end {
                    JobEnd::Reply(body) => Some(body.bytes().to_vec()),
                    _ => None,
                };
                ended
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((i, body));
            }),
            lane: None,
            raw: None,
            xmem_dst: None,
            xmem_wire: None,
        });
    }
    w.sent = jobs;
    let (first, second) = stream.split_at(cut.min(stream.len()));
    let mut init_failed = None;
    for mut part in [first, second] {
        loop {
            // SAFETY: a write from a live slice to our own non-blocking pipe.
            let n = unsafe { libc::write(reply_w.as_raw_fd(), part.as_ptr().cast(), part.len()) };
            part = &part[usize::try_from(n).unwrap_or(0)..];
            w.read_frames(1 << 20, None, &mut init_failed);
            if part.is_empty() || w.eof {
                break;
            }
        }
    }
    drop(reply_w);
    w.read_frames(1 << 20, None, &mut init_failed);
    w.cancel_inflight(&PoolError::Terminated);
    let order = ended.lock().unwrap_or_else(|e| e.into_inner()).clone();
    order
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::codec::{encode_reply, Reply};
    use super::*;

    /// Each value's reply frame, one after the other, and each reply's body.
    fn replies(values: impl IntoIterator<Item = Vec<u8>>) -> (Vec<u8>, Vec<Vec<u8>>) {
        let (mut stream, mut bodies) = (Vec::new(), Vec::new());
        for v in values {
            let frame = encode_reply(&Reply::AllOk(v), 1 << 20);
            bodies.push(frame[REPLY_HEADER..].to_vec());
            stream.extend(frame);
        }
        (stream, bodies)
    }

    proptest! {
        /// Whatever a worker writes (good replies of any size, then any bytes, cut anywhere),
        /// each job it held ends once, in order, and the good replies reach their own jobs.
        #[test]
        fn any_reply_stream_ends_each_job_once(
            sizes in proptest::collection::vec(0usize..80_000, 0..4),
            tail in proptest::collection::vec(any::<u8>(), 0..300),
            jobs in 0usize..6,
            cut in any::<prop::sample::Index>(),
        ) {
            let (mut stream, bodies) = replies(sizes.iter().map(|&n| vec![n as u8; n]));
            stream.extend(&tail);
            let cut = cut.index(stream.len() + 1);
            let ends = settle_reply_stream(&stream, cut, jobs);
            let order: Vec<usize> = ends.iter().map(|e| e.0).collect();
            prop_assert_eq!(order, (0..jobs).collect::<Vec<_>>());
            for (end, body) in ends.iter().zip(&bodies) {
                prop_assert_eq!(end.1.as_ref(), Some(body));
            }
        }
    }

    /// A stream refused for its frame's length is not read again: that length must never size
    /// a reservation (the fuzz target's first find: 2 GiB reserved after a 4-byte stream).
    #[test]
    fn a_refused_length_sizes_no_buffer() {
        let (rx, reply_w) = nonblocking_pipe().unwrap();
        let (_task_r, tx) = nonblocking_pipe().unwrap();
        let mut w = Worker::new(Pid::from_raw(NO_PROCESS), tx, rx, 0);
        // SAFETY: a 4-byte write from a constant array.
        unsafe { libc::write(reply_w.as_raw_fd(), [0u8, 0, 0, 128].as_ptr().cast(), 4) };
        w.read_frames(1 << 20, None, &mut None);
        assert!(w.eof && w.replies_lost);
        w.read_frames(1 << 20, None, &mut None);
        assert!(w.rbuf.capacity() <= FIRST_READ, "{}", w.rbuf.capacity());
    }

    /// Replies of every size, many in one read, some larger than the buffer, and more than a
    /// pipe holds at once: each reaches its own job.
    #[test]
    fn replies_of_every_size_reach_their_jobs() {
        let sizes = (0..39)
            .map(|i| vec![i as u8; 300 * i])
            .chain([vec![1u8; 70_000], vec![2; 200_000]]);
        let (stream, bodies) = replies(sizes);
        let ends = settle_reply_stream(&stream, 1000, 41);
        let want: Vec<(usize, Option<Vec<u8>>)> =
            bodies.into_iter().map(Some).enumerate().collect();
        assert!(ends == want, "replies reached the wrong jobs or none");
    }
}

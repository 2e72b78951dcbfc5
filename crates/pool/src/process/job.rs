//! A job: one chunk on its way to a worker, and how it ended, turned back into per-item
//! results on the caller's thread.

use std::sync::Arc;

use serde::de::DeserializeOwned;

use super::codec::{decode_reply, raw_bytes, raw_values, CODEC_RAW, CODEC_XMEM, REPLY_WRITTEN};
use super::lanes::LaneView;
use super::TASK_HEADER;
use crate::buf::{OutBuf, Slice};
use crate::call::Chunk;
use crate::error::{Death, PoolError};
use crate::xmem::{Span, SPAN_BYTES};

/// How a queued job ended, as the supervisor reports it.
pub(super) enum JobEnd {
    /// The reply's body.
    Reply(ReplyBody),
    /// The worker died while holding the job.
    Died(u32, Death),
    /// The job never ran.
    Cancelled(PoolError),
}

/// Where a reply's body is: in its frame (from the offset on), or left in a lane.
pub(super) enum ReplyBody {
    Frame(Vec<u8>, usize),
    Lane(LaneView),
}

impl ReplyBody {
    /// The reply's body: the bytes after its frame's header.
    pub(super) fn bytes(&self) -> &[u8] {
        match self {
            ReplyBody::Frame(frame, start) => &frame[*start..],
            ReplyBody::Lane(view) => view.bytes(),
        }
    }
}

pub(super) struct Job {
    /// The task frame; only its header while `raw` holds the items.
    pub(super) frame: Vec<u8>,
    pub(super) done: Box<dyn FnOnce(JobEnd) + Send>,
    /// When the payload went to a shared-memory lane: the lane and the short frame sent.
    pub(super) lane: Option<(u8, Vec<u8>)>,
    /// A chunk of primitive numbers not encoded yet: the supervisor copies its bytes straight
    /// to a lane (or into the frame, when no lane is free), sparing the caller a copy.
    pub(super) raw: Option<Box<dyn RawItems>>,
    /// Where a `raw` chunk's results go in the caller's output vector, when they are numbers
    /// too: the worker may then copy both ways itself ([`xmem`](crate::xmem)).
    pub(super) xmem_dst: Option<u64>,
    /// The short frame sent when the worker copies the chunk itself.
    pub(super) xmem_wire: Option<Vec<u8>>,
}

impl Job {
    /// The bytes that go down the pipe for this job.
    pub(super) fn wire(&self) -> &[u8] {
        match (&self.lane, &self.xmem_wire) {
            (Some((_, wire)), _) | (None, Some(wire)) => wire,
            (None, None) => &self.frame,
        }
    }

    /// The task's full size, whichever way it travels.
    pub(super) fn size(&self) -> usize {
        self.frame.len() + self.raw.as_ref().map_or(0, |r| 1 + r.byte_len())
    }

    /// The frame that tells a worker to copy this chunk from `src`, and its results to the
    /// output vector, itself; `None` unless the job is a raw chunk with numeric results.
    pub(super) fn cross_memory_frame(&self) -> Option<Vec<u8>> {
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
    pub(super) fn materialize(&mut self) {
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
pub(super) trait RawItems: Send {
    /// The items' bytes; only before the chunk runs (its results may be written over them).
    fn bytes(&self) -> &[u8];
    /// How many bytes the items take, without looking at them.
    fn byte_len(&self) -> usize;
}

impl<T: Send + 'static> RawItems for Slice<T> {
    /// Only made for primitive number types ([`raw_size`](super::codec::raw_size)).
    fn bytes(&self) -> &[u8] {
        raw_bytes(self.as_slice()).unwrap_or_default()
    }

    fn byte_len(&self) -> usize {
        self.len() * std::mem::size_of::<T>()
    }
}

/// Turns a job's end into per-item results, on the caller's thread.
pub(super) fn decode_end<R: DeserializeOwned + 'static>(
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

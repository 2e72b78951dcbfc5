//! Encoding of items, task frames and reply frames (the wire format is in the parent
//! module's docs).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{KIND_TASK, REPLY_HEADER, TAG_REPLY, TASK_HEADER};
use crate::call::Chunk;
use crate::error::PoolError;

/// A chunk reply from a worker.
#[derive(Serialize, Deserialize)]
pub(super) enum Reply<R> {
    /// Every item succeeded.
    AllOk(Vec<R>),
    /// Per item: the value or the panic message.
    Mixed(Vec<Result<R, String>>),
    /// The chunk as a whole failed in the worker.
    Failed(ChunkFailure),
}

#[derive(Serialize, Deserialize)]
pub(super) enum ChunkFailure {
    DecodeArgs(String),
    EncodeResults(String),
    ResultsTooLarge { size: u64, limit: u64 },
}

/// A chunk-wide error before the item index is known.
pub(super) enum FrameError {
    Encode(String),
    TooLarge(u64, u64),
}

impl FrameError {
    pub(super) fn at(&self, index: usize) -> PoolError {
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
pub(super) fn raw_size<T: 'static>() -> Option<usize> {
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
pub(super) const CODEC_RAW: u8 = 1;
/// The payload is a [`Span`](crate::xmem::Span): the worker copies the items, and the results,
/// itself.
pub(super) const CODEC_XMEM: u8 = 2;
/// The payload, in a lane, is [`LANE_XMEM_HEAD`] bytes (this codec byte, padding, the `u64`
/// address of the chunk's place in the caller's output vector), then the items' raw bytes:
/// the supervisor copied the items (a plain memcpy), the worker copies the results to the
/// caller itself ([`xmem`](crate::xmem)).
pub(super) const CODEC_LANE_XMEM: u8 = 3;
/// Bytes before the items of a [`CODEC_LANE_XMEM`] payload (16: the items stay aligned).
pub(super) const LANE_XMEM_HEAD: usize = 16;

/// The bytes of `values` when `R` is a primitive number type ([`raw_size`]), else `None`.
pub(super) fn raw_bytes<R: 'static>(values: &[R]) -> Option<&[u8]> {
    raw_size::<R>()?;
    // SAFETY: R is a primitive number (raw_size): its memory is plain initialized bytes,
    // borrowed for as long as `values`.
    Some(unsafe {
        std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), std::mem::size_of_val(values))
    })
}

/// Appends a codec byte and the encoded items to `out`.
fn encode_items<T: Serialize + 'static>(items: &[T], mut out: Vec<u8>) -> Result<Vec<u8>, String> {
    match raw_bytes(items) {
        Some(bytes) => {
            out.reserve(1 + bytes.len());
            out.push(CODEC_RAW);
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
pub(super) fn decode_items<T: DeserializeOwned + 'static>(bytes: &[u8]) -> Result<Vec<T>, String> {
    match bytes.split_first() {
        Some((&CODEC_RAW, raw)) => decode_raw(raw),
        Some((&CODEC_POSTCARD, rest)) => postcard::from_bytes(rest).map_err(|e| e.to_string()),
        _ => Err("empty message or unknown codec".into()),
    }
}

/// Items of a primitive number type ([`raw_size`]) from their bytes (aligned or not).
pub(super) fn decode_raw<T: 'static>(raw: &[u8]) -> Result<Vec<T>, String> {
    let size = raw_size::<T>().ok_or("raw bytes for a type sent by postcard")?;
    if !raw.len().is_multiple_of(size) {
        return Err(format!("{} raw bytes for items of {size} bytes", raw.len()));
    }
    let n = raw.len() / size;
    let mut v = Vec::<T>::with_capacity(n);
    // SAFETY: v has room for n items; any bytes are a valid primitive number; the source is a
    // byte slice, so its alignment does not matter.
    unsafe {
        std::ptr::copy_nonoverlapping(raw.as_ptr(), v.as_mut_ptr().cast::<u8>(), raw.len());
        v.set_len(n);
    }
    Ok(v)
}

/// A reply frame that is only its kind ([`REPLY_WRITTEN`], [`REPLY_DECLINED`]).
pub(super) fn bare_reply(kind: u8) -> Vec<u8> {
    finish_reply(vec![0, 0, 0, 0, 0, kind], TAG_REPLY)
}

pub(super) fn encode_task<T: Serialize + 'static>(
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

/// The raw bytes of `len` values, when the reply is all values of a primitive number type.
pub(super) fn raw_values<R: 'static>(reply: &[u8], len: usize) -> Option<&[u8]> {
    let size = raw_size::<R>()?;
    match reply {
        [REPLY_VALUES, CODEC_RAW, raw @ ..] if raw.len() == len.checked_mul(size)? => Some(raw),
        _ => None,
    }
}

pub(super) fn decode_reply<R: DeserializeOwned + 'static>(
    bytes: &[u8],
    first: usize,
    len: usize,
) -> Chunk<R> {
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

/// A reply body's per-item results for a chunk of `len` items from `first`; for the
/// property tests and the fuzz target (each item a value or an error naming it).
#[doc(hidden)]
pub fn reply_results<R: DeserializeOwned + 'static>(
    body: &[u8],
    first: usize,
    len: usize,
) -> Vec<Result<R, PoolError>> {
    decode_reply::<R>(body, first, len).into_results()
}

/// Reply bodies: values (all items succeeded; codec byte and items as [`encode_items`]), or a
/// postcard [`Reply`].
pub(super) const REPLY_VALUES: u8 = 0;
const REPLY_POSTCARD: u8 = 1;
/// Every result is already in the caller's output vector (a cross-memory chunk).
pub(super) const REPLY_WRITTEN: u8 = 2;
/// The kernel refused the worker the caller's memory: send the chunk another way.
pub(super) const REPLY_DECLINED: u8 = 3;

pub(super) fn encode_reply<R: Serialize + 'static>(reply: &Reply<R>, limit: usize) -> Vec<u8> {
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

pub(super) fn finish_reply(mut frame: Vec<u8>, tag: u8) -> Vec<u8> {
    let len = (frame.len() - 4) as u32;
    frame[0..4].copy_from_slice(&len.to_le_bytes());
    frame[4] = tag;
    frame
}

pub(super) fn read_u64(bytes: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[..8]);
    u64::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// What a worker's reply says of a chunk of `len` items from `first`: every item gets
    /// a value or an error naming that item, and nothing panics, whatever the bytes.
    fn results_of<R: DeserializeOwned + 'static>(
        body: &[u8],
        first: usize,
        len: usize,
    ) -> Vec<Result<R, PoolError>> {
        let results = reply_results::<R>(body, first, len);
        assert_eq!(results.len(), len, "one result per item");
        for (k, r) in results.iter().enumerate() {
            if let Err(e) = r {
                assert_eq!(e.index(), Some(first + k), "{e}");
            }
        }
        results
    }

    proptest::proptest! {
        #[test]
        fn any_reply_gives_each_item_a_result_or_its_own_error(
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..96),
            first in 0usize..1_000_000,
            len in 0usize..12,
        ) {
            results_of::<u32>(&body, first, len);
            results_of::<f64>(&body, first, len);
            results_of::<String>(&body, first, len);
            results_of::<(i64, Vec<u8>, Option<bool>)>(&body, first, len);
            let _ = decode_items::<u16>(&body);
            let _ = decode_items::<Vec<String>>(&body);
        }

        #[test]
        fn replies_come_back_as_sent(
            values in proptest::collection::vec(
                proptest::option::of(proptest::prelude::any::<String>()), 0..12),
            first in 0usize..1_000,
        ) {
            let len = values.len();
            let all: Option<Vec<String>> = values.iter().cloned().collect();
            let reply = match all {
                Some(v) => Reply::AllOk(v),
                None => Reply::Mixed(
                    values.iter().map(|v| v.clone().ok_or_else(|| "boom".to_string())).collect(),
                ),
            };
            let frame = encode_reply(&reply, 1 << 20);
            let results = results_of::<String>(&frame[REPLY_HEADER..], first, len);
            for (r, v) in results.iter().zip(&values) {
                match (r, v) {
                    (Ok(got), Some(want)) => proptest::prop_assert_eq!(got, want),
                    (Err(PoolError::Panicked { message, .. }), None) => {
                        proptest::prop_assert_eq!(message, "boom")
                    }
                    other => proptest::prop_assert!(false, "{other:?}"),
                }
            }
        }
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
}

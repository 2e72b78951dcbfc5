//! The wire: the envelope that travels ahead of every payload, and the message a receive
//! gets.

/// Envelope length on the wire.
pub(crate) const HEADER: usize = 24;

/// Payloads above this are refused as corrupt (1 TiB).
pub(super) const MAX_LEN: u64 = 1 << 40;

/// What travels ahead of every payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Envelope {
    pub ctx: u64,
    pub src: u32,
    pub tag: i32,
    pub kind: u8,
    pub len: u64,
}

impl Envelope {
    pub(crate) fn encode(&self) -> [u8; HEADER] {
        let mut h = [0u8; HEADER];
        h[0..8].copy_from_slice(&self.ctx.to_le_bytes());
        h[8..12].copy_from_slice(&self.src.to_le_bytes());
        h[12..16].copy_from_slice(&self.tag.to_le_bytes());
        h[16..24].copy_from_slice(&(self.len | (u64::from(self.kind) << 56)).to_le_bytes());
        h
    }

    pub(crate) fn decode(h: &[u8; HEADER]) -> Envelope {
        let word = |r: std::ops::Range<usize>| {
            let mut b = [0u8; 8];
            b[..r.len()].copy_from_slice(&h[r]);
            u64::from_le_bytes(b)
        };
        let last = word(16..24);
        Envelope {
            ctx: word(0..8),
            src: word(8..12) as u32,
            tag: word(12..16) as u32 as i32,
            kind: (last >> 56) as u8,
            len: last & ((1 << 56) - 1),
        }
    }
}

/// The envelope and payload of a record of the transport that holds one message whole, if it
/// does (a long message streams through several).
pub(super) fn whole_message(record: &[u8]) -> Option<(Envelope, &[u8])> {
    let (hdr, body) = record.split_first_chunk::<HEADER>()?;
    let env = Envelope::decode(hdr);
    (env.len == body.len() as u64).then_some((env, body))
}

/// A received message.
#[derive(Debug)]
pub(crate) struct Message {
    pub ctx: u64,
    pub src: u32,
    pub tag: i32,
    pub kind: u8,
    pub data: Vec<u8>,
}

pub(super) fn message(env: Envelope, data: Vec<u8>) -> Message {
    Message {
        ctx: env.ctx,
        src: env.src,
        tag: env.tag,
        kind: env.kind,
        data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn envelope_round_trips(ctx: u64, src: u32, tag: i32, kind: u8, len in 0u64..(1 << 56)) {
            let e = Envelope { ctx, src, tag, kind, len };
            prop_assert_eq!(Envelope::decode(&e.encode()), e);
        }
    }
}

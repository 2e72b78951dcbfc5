//! The short way of a blocking receive. When nothing else is pending (no message queued to
//! send or partly read, no receive posted, nothing unexpected), a receive from one source
//! polls that source's stream itself and takes a message that arrives whole in one record
//! straight into the caller's buffer: no posting, no landing, no matching queues. Anything
//! else (another message first, one in pieces, a wait longer than a few microseconds) goes
//! the general way, with nothing consumed.

use super::wire::whole_message;
use super::{Engine, Envelope, Matcher, HEADER};
use crate::transport::shm::MIN_RECORD;

/// Payloads this small travel in one shared-memory record with their envelope (in rings of
/// the default sizes; see [`MIN_RECORD`]).
pub(crate) const SMALL: usize = MIN_RECORD - HEADER;

/// Polls of the short way before the wait is left to the general path (which also sweeps
/// the other streams and flushes queued sends).
const DIRECT_POLLS: u32 = 1024;

impl Engine {
    /// Receives a message that `m` matches, of elements of `kind`, `unit` bytes each, into
    /// `buf` the short way: its envelope and payload length, or `None` (nothing consumed)
    /// when the general path must do it.
    pub(crate) fn recv_direct(
        &mut self,
        m: Matcher,
        kind: u8,
        unit: usize,
        buf: &mut [u8],
    ) -> Option<(Envelope, usize)> {
        let src = m.from?;
        if !self.quiet(src) {
            return None;
        }
        // Oversubscribed, the sender may need this core: look once, then let the general
        // wait yield.
        let polls = if self.spin.is_zero() { 1 } else { DIRECT_POLLS };
        let t = self.transport.as_deref_mut()?;
        for _ in 0..polls {
            if !t.has_input_from(src) {
                std::hint::spin_loop();
                continue;
            }
            let (env, body) = whole_message(t.peek_record(src)?)?;
            let fits = env.kind == kind
                && body.len() <= buf.len()
                && body.len().is_multiple_of(unit.max(1))
                && m.accepts(env.ctx, env.src, env.tag);
            if !fits {
                return None;
            }
            buf[..body.len()].copy_from_slice(body);
            let len = body.len();
            t.finish_record(src);
            return Some((env, len));
        }
        None
    }

    /// Whether a receive from world rank `src` may take the next message of its stream
    /// without the matching queues: nothing to send first, nothing from `src` partly read,
    /// no receive posted before it, no unexpected message it could match.
    fn quiet(&self, src: usize) -> bool {
        self.queued == 0
            && self.posted.is_empty()
            && self.unexpected.is_empty()
            && self.landing.is_none()
            && self.lending.is_none()
            && src != self.rank
            && self.rx.get(src).is_some_and(|rx| rx.idle())
    }
}

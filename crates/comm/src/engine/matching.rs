//! Matching of arrivals against posted receives (MPI's posted and unexpected queues), and
//! the landing buffer of a blocking receive.

use super::progress::Body;
use super::sharing::Sharing;
use super::{Engine, Message};
use crate::{Error, Result};

/// What a receive accepts: a context, and a source and tag or any.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Matcher {
    pub ctx: u64,
    pub src: Option<u32>,
    pub tag: Option<i32>,
    /// The world rank of `src`, when there is one: a wait for it polls that rank's stream.
    pub from: Option<usize>,
}

impl Matcher {
    fn matches(&self, m: &Message) -> bool {
        self.accepts(m.ctx, m.src, m.tag)
    }

    pub(super) fn accepts(&self, ctx: u64, src: u32, tag: i32) -> bool {
        ctx == self.ctx && self.src.is_none_or(|s| s == src) && self.tag.is_none_or(|t| t == tag)
    }
}

/// The caller's buffer of a blocking receive ([`Engine::recv_into`]): the first message that
/// the receive takes lands there directly, read from the ring or pulled by single copy, when
/// it holds the expected kind of element and fits. Any other goes the ordinary way.
pub(super) struct Landing {
    /// The posted receive.
    pub(super) id: u64,
    m: Matcher,
    /// The element kind expected.
    kind: u8,
    /// The element size: a payload must be a whole number of elements.
    unit: usize,
    pub(super) ptr: *mut u8,
    pub(super) cap: usize,
    /// A message was claimed (its receive is no longer posted).
    claimed: bool,
    /// The payload length of the message that landed, once it is complete.
    pub(super) landed: Option<usize>,
    /// A payload being copied by both ends, waiting for the sender's part.
    pub(super) sharing: Option<Sharing>,
}

impl Landing {
    /// Whether a message with this envelope lands here: unclaimed, fitting, and taken by
    /// this receive rather than by one posted before it.
    pub(super) fn takes(
        &self,
        posted: &[(u64, Matcher)],
        ctx: u64,
        src: u32,
        tag: i32,
        kind: u8,
        len: u64,
    ) -> bool {
        !self.claimed
            && kind == self.kind
            && len <= self.cap as u64
            && len.is_multiple_of(self.unit as u64)
            && self.m.accepts(ctx, src, tag)
            && !posted
                .iter()
                .take_while(|(id, _)| *id != self.id)
                .any(|(_, m)| m.accepts(ctx, src, tag))
    }

    /// Claims the landing for a message: its receive leaves the posted list, so that no
    /// other message completes it meanwhile.
    pub(super) fn claim(&mut self, posted: &mut Vec<(u64, Matcher)>) {
        self.claimed = true;
        posted.retain(|(id, _)| *id != self.id);
    }
}

impl Engine {
    /// Hands an arrived message to the first matching posted receive, else queues it.
    pub(super) fn deliver(&mut self, msg: Message) {
        match self.posted.iter().position(|(_, m)| m.matches(&msg)) {
            Some(i) => {
                let (id, _) = self.posted.remove(i);
                self.completed.push((id, msg));
            }
            None => self.unexpected.push_back(msg),
        }
    }

    /// Posts a receive; it takes the first matching unexpected message if there is one.
    pub(crate) fn post_recv(&mut self, m: Matcher) -> u64 {
        let id = self.fresh_id();
        match self.unexpected.iter().position(|msg| m.matches(msg)) {
            Some(i) => {
                if let Some(msg) = self.unexpected.remove(i) {
                    self.completed.push((id, msg));
                }
            }
            None => self.posted.push((id, m)),
        }
        id
    }

    /// Whether posted receive `id` has its message.
    pub(crate) fn recv_done(&self, id: u64) -> bool {
        self.completed.iter().any(|(i, _)| *i == id)
    }

    /// Takes the message of a completed receive.
    pub(crate) fn take(&mut self, id: u64) -> Option<Message> {
        let i = self.completed.iter().position(|(i, _)| *i == id)?;
        Some(self.completed.swap_remove(i).1)
    }

    /// Forgets a receive whose request was dropped unfinished.
    pub(crate) fn cancel(&mut self, id: u64) {
        self.posted.retain(|(i, _)| *i != id);
        self.completed.retain(|(i, _)| *i != id);
    }

    /// Blocking receive.
    pub(crate) fn recv(&mut self, m: Matcher) -> Result<Message> {
        let id = self.post_recv(m);
        self.wait_focused(m.from, |e| e.recv_done(id))?;
        self.take(id)
            .ok_or_else(|| Error::InvalidArgument("receive completed without a message".into()))
    }

    /// Blocking receive into `buf`, expecting elements of `kind`, `unit` bytes each: a
    /// message that holds them and fits lands in `buf` directly (no copy through a vector).
    /// `between` (a large send, or nothing) runs after the receive is posted and before it
    /// is waited for, so that what the peer sends meanwhile lands in `buf` too. Returns the
    /// message and, when it landed, its length (its data is then empty); otherwise the
    /// caller copies or refuses it.
    pub(crate) fn recv_into(
        &mut self,
        m: Matcher,
        kind: u8,
        unit: usize,
        buf: &mut [u8],
        between: impl FnOnce(&mut Engine) -> Result<()>,
    ) -> Result<(Message, Option<usize>)> {
        let id = self.post_recv(m);
        let mut landed = None;
        if self.recv_done(id) {
            between(self)?;
        } else {
            self.landing = Some(Landing {
                id,
                m,
                kind,
                unit: unit.max(1),
                ptr: buf.as_mut_ptr(),
                cap: buf.len(),
                claimed: false,
                landed: None,
                sharing: None,
            });
            let waited =
                between(self).and_then(|()| self.wait_focused(m.from, |e| e.recv_done(id)));
            if waited.is_err() {
                self.finish_sharing();
            }
            let landing = self.landing.take();
            if let Err(e) = waited {
                if let Some(l) = &landing {
                    self.unland(l);
                }
                self.cancel(id);
                return Err(e);
            }
            landed = landing.and_then(|l| l.landed);
        }
        let msg = self
            .take(id)
            .ok_or_else(|| Error::InvalidArgument("receive completed without a message".into()))?;
        Ok((msg, landed))
    }

    /// After a failed wait: a message still landing in `l`'s buffer moves to a vector of its
    /// own (the buffer goes back to the caller), and then arrives as an unexpected one.
    fn unland(&mut self, l: &Landing) {
        for rx in &mut self.rx {
            if let Some((env, Body::Landed(have))) = &rx.body {
                let mut v = Vec::with_capacity(env.len as usize);
                // SAFETY: the first `have` bytes of the landing buffer hold the message's start.
                v.extend_from_slice(unsafe { std::slice::from_raw_parts(l.ptr, *have) });
                rx.body = Some((*env, Body::Owned(v)));
            }
        }
    }

    /// The envelope of the first unexpected message `m` matches, if any.
    pub(crate) fn peek(&self, m: Matcher) -> Option<(u32, i32, u8, usize)> {
        self.unexpected
            .iter()
            .find(|msg| m.matches(msg))
            .map(|msg| (msg.src, msg.tag, msg.kind, msg.data.len()))
    }

    /// Blocks until `m` matches an unexpected message, without receiving it.
    pub(crate) fn probe(&mut self, m: Matcher) -> Result<(u32, i32, u8, usize)> {
        let mut found = None;
        self.wait_focused(m.from, |e| {
            found = e.peek(m);
            found.is_some()
        })?;
        found.ok_or_else(|| Error::InvalidArgument("probe ended without a message".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Envelope;
    use crate::single_copy::SingleCopy;

    fn env(tag: i32, src: u32) -> Envelope {
        Envelope {
            ctx: 0,
            src,
            tag,
            kind: 1,
            len: 0,
        }
    }

    /// A matcher of a world of one (no rank to poll apart).
    fn matcher(ctx: u64, src: Option<u32>, tag: Option<i32>) -> Matcher {
        Matcher {
            ctx,
            src,
            tag,
            from: None,
        }
    }

    #[test]
    fn posted_receives_take_messages_in_posting_order() {
        let mut e = Engine::new(0, 1, None, SingleCopy::Off);
        let any = matcher(0, None, None);
        let tag1 = matcher(0, None, Some(1));
        let a = e.post_recv(tag1);
        let b = e.post_recv(any);
        e.send(0, env(1, 0), b"first").unwrap();
        e.send(0, env(1, 0), b"second").unwrap();
        assert_eq!(e.take(a).unwrap().data, b"first");
        assert_eq!(e.take(b).unwrap().data, b"second");
    }

    #[test]
    fn unexpected_messages_keep_order_per_tag() {
        let mut e = Engine::new(0, 1, None, SingleCopy::Off);
        for (tag, body) in [(2, "a"), (1, "b"), (2, "c")] {
            e.send(0, env(tag, 0), body.as_bytes()).unwrap();
        }
        let t2 = matcher(0, Some(0), Some(2));
        assert_eq!(e.recv(t2).unwrap().data, b"a");
        assert_eq!(e.recv(t2).unwrap().data, b"c");
        let other_ctx = matcher(2, None, None);
        assert!(e.peek(other_ctx).is_none());
        let err = e.recv(other_ctx).unwrap_err();
        assert!(err.to_string().contains("deadlock"), "{err}");
    }

    #[test]
    fn cancelled_receive_does_not_steal() {
        let mut e = Engine::new(0, 1, None, SingleCopy::Off);
        let any = matcher(0, None, None);
        let id = e.post_recv(any);
        e.cancel(id);
        e.send(0, env(0, 0), b"x").unwrap();
        assert_eq!(e.recv(any).unwrap().data, b"x");
    }
}

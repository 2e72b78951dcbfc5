//! Progress over the transport: framing of messages on its byte streams, the queues of
//! outgoing messages, sends, and rounds of reading what the other ranks sent.

use super::matching::Landing;
use super::wire::{message, whole_message, MAX_LEN};
use super::{Backoff, Engine, Envelope, Matcher, Message, HEADER, SWEEP_EVERY};
use crate::single_copy::{self, SingleCopy};
use crate::transport::Transport;
use crate::{Error, Result};
use std::mem::MaybeUninit;

/// Where the payload of a message being read goes.
pub(super) enum Body {
    /// A vector of its own: its length is what was read so far, its capacity the payload.
    Owned(Vec<u8>),
    /// Straight into the landing buffer of the blocking receive; bytes read so far.
    Landed(usize),
}

/// A partly read message from one source.
pub(super) struct Rx {
    hdr: [MaybeUninit<u8>; HEADER],
    have: usize,
    /// The envelope and the payload read so far.
    pub(super) body: Option<(Envelope, Body)>,
}

impl Rx {
    /// Whether no message from this source is partly read.
    pub(super) fn idle(&self) -> bool {
        self.have == 0 && self.body.is_none()
    }
}

impl Default for Rx {
    fn default() -> Rx {
        Rx {
            hdr: [MaybeUninit::new(0); HEADER],
            have: 0,
            body: None,
        }
    }
}

/// A queued outgoing message.
pub(super) struct Out {
    id: u64,
    hdr: [u8; HEADER],
    data: Vec<u8>,
    done: usize,
}

fn write_at(
    t: &mut dyn Transport,
    dest: usize,
    hdr: &[u8; HEADER],
    data: &[u8],
    done: usize,
) -> Result<usize> {
    match done.checked_sub(HEADER) {
        None => t.write_some(dest, &[&hdr[done..], data]),
        Some(off) => t.write_some(dest, &[&data[off..]]),
    }
}

/// Reads what `src` has sent; returns whether bytes moved and a message if one completed,
/// with whether it landed in `land`'s buffer (its data is then empty).
fn pump(
    t: &mut dyn Transport,
    src: usize,
    rx: &mut Rx,
    mut land: Option<&mut Landing>,
    posted: &mut Vec<(u64, Matcher)>,
) -> Result<(bool, Option<(Message, bool)>)> {
    let mut moved = false;
    if rx.idle() {
        if let Some(msg) = take_whole(t, src, land.as_deref_mut(), posted) {
            return Ok((true, Some(msg)));
        }
    }
    if rx.body.is_none() {
        let n = t.read_some(src, &mut rx.hdr[rx.have..])?;
        rx.have += n;
        moved = n > 0;
        if rx.have < HEADER {
            return Ok((moved, None));
        }
        rx.have = 0;
        // SAFETY: all HEADER bytes were written by the transport (have reached HEADER).
        let env = Envelope::decode(&rx.hdr.map(|b| unsafe { b.assume_init() }));
        if env.len > MAX_LEN {
            return Err(Error::InvalidArgument(format!(
                "corrupt envelope from rank {src}: length {}",
                env.len
            )));
        }
        let body = match land {
            Some(l) if l.takes(posted, env.ctx, env.src, env.tag, env.kind, env.len) => {
                l.claim(posted);
                return read_landed(t, src, rx, env, l, 0).map(|(_, m)| (true, m));
            }
            _ => Body::Owned(Vec::with_capacity(env.len as usize)),
        };
        rx.body = Some((env, body));
    }
    match rx.body.as_mut() {
        Some((env, Body::Landed(have))) => {
            let (env, have) = (*env, *have);
            let l = land.ok_or_else(|| Error::InvalidArgument("landing buffer lost".into()))?;
            let (m, msg) = read_landed(t, src, rx, env, l, have)?;
            Ok((moved | m, msg))
        }
        Some((env, Body::Owned(buf))) => {
            let want = env.len as usize;
            if buf.len() < want {
                let missing = want - buf.len();
                let spare = &mut buf.spare_capacity_mut()[..missing];
                let n = t.read_some(src, spare)?.min(spare.len());
                // SAFETY: the transport initialized the first n bytes of the spare capacity.
                unsafe { buf.set_len(buf.len() + n) };
                moved |= n > 0;
            }
            if buf.len() < want {
                return Ok((moved, None));
            }
            let Some((env, Body::Owned(data))) = rx.body.take() else {
                return Ok((moved, None));
            };
            Ok((true, Some((message(env, data), false))))
        }
        None => Ok((moved, None)),
    }
}

/// Takes a message that lies whole in the next record of the transport (see
/// [`Transport::peek_record`]) in one step, straight into `land`'s buffer when that takes it;
/// `None` (nothing read) when there is no such record.
fn take_whole(
    t: &mut dyn Transport,
    src: usize,
    land: Option<&mut Landing>,
    posted: &mut Vec<(u64, Matcher)>,
) -> Option<(Message, bool)> {
    let (env, body) = whole_message(t.peek_record(src)?)?;
    let taken = match land {
        Some(l) if l.takes(posted, env.ctx, env.src, env.tag, env.kind, env.len) => {
            l.claim(posted);
            // SAFETY: body.len() == env.len <= the landing's capacity (takes checked it), and
            // the landing buffer is valid for writes while it lives (Engine::recv_into).
            unsafe { std::ptr::copy_nonoverlapping(body.as_ptr(), l.ptr, body.len()) };
            l.landed = Some(body.len());
            (message(env, Vec::new()), true)
        }
        _ => (message(env, body.to_vec()), false),
    };
    t.finish_record(src);
    Some(taken)
}

/// Reads more of a message landing in `l`'s buffer, `have` bytes of it already there.
fn read_landed(
    t: &mut dyn Transport,
    src: usize,
    rx: &mut Rx,
    env: Envelope,
    l: &mut Landing,
    have: usize,
) -> Result<(bool, Option<(Message, bool)>)> {
    let want = env.len as usize;
    let mut have = have;
    if have < want {
        // SAFETY: have < want <= cap: the rest of the message lies within the landing
        // buffer, valid for writes while the landing lives (Engine::recv_into).
        let spare = unsafe {
            std::slice::from_raw_parts_mut(l.ptr.add(have).cast::<MaybeUninit<u8>>(), want - have)
        };
        have += t.read_some(src, spare)?.min(want - have);
    }
    if have < want {
        rx.body = Some((env, Body::Landed(have)));
        return Ok((have > 0, None));
    }
    rx.body = None;
    l.landed = Some(want);
    Ok((true, Some((message(env, Vec::new()), true))))
}

impl Engine {
    /// Whether the transport may have bytes for us (see [`Transport::has_input`]): from the
    /// awaited rank alone in a focused poll.
    pub(super) fn has_input(&self) -> bool {
        self.transport
            .as_deref()
            .is_some_and(|t| match self.focused() {
                Some(src) => t.has_input_from(src),
                None => t.has_input(),
            })
    }

    /// The one stream this poll looks at, or `None` for all of them.
    fn focused(&self) -> Option<usize> {
        self.focus
            .filter(|_| !self.polls.is_multiple_of(SWEEP_EVERY))
    }

    /// Writes what is queued towards `dest` as far as the transport takes it (nothing while
    /// a blocking send is writing there). True if bytes moved.
    pub(super) fn flush(&mut self, dest: usize) -> Result<bool> {
        let Some(t) = self.transport.as_deref_mut() else {
            return Ok(false);
        };
        let mut moved = false;
        if Some(dest) == self.writing {
            return Ok(false);
        }
        while let Some(out) = self.tx[dest].front_mut() {
            let n = write_at(t, dest, &out.hdr, &out.data, out.done)?;
            out.done += n;
            moved |= n > 0;
            if out.done < HEADER + out.data.len() {
                break;
            }
            self.tx[dest].pop_front();
            self.queued -= 1;
        }
        Ok(moved)
    }

    /// One round of progress: pushes queued sends, reads every source. True if bytes moved.
    pub(crate) fn progress(&mut self) -> Result<bool> {
        if self.transport.is_none() {
            return Ok(false);
        }
        let mut moved = false;
        if self.queued > 0 {
            for dest in 0..self.size {
                moved |= self.flush(dest)?;
            }
        }
        let (first, end) = match self.focused() {
            Some(src) => (src, src + 1),
            None => (0, self.size),
        };
        let Some(t) = self.transport.as_deref_mut() else {
            return Ok(false);
        };
        t.accept()?;
        let mut arrived = std::mem::take(&mut self.arrived);
        // At most one message per source and round: the caller may be waiting for just
        // that one, and looking at once for the next would wait on another cache line.
        for src in (first..end).filter(|&s| s != self.rank) {
            let land = self.landing.as_mut();
            let (m, msg) = pump(t, src, &mut self.rx[src], land, &mut self.posted)?;
            moved |= m;
            if let Some(msg) = msg {
                arrived.push((src, msg));
            }
        }
        let mut settled = Ok(());
        for (src, (msg, landed)) in arrived.drain(..) {
            if settled.is_ok() {
                settled = self.settle(src, msg, landed);
            }
        }
        self.arrived = arrived;
        settled.map(|()| moved)
    }

    /// Completes the blocking receive with a message that landed in its buffer, or handles
    /// an ordinary arrival.
    fn settle(&mut self, src: usize, msg: Message, landed: bool) -> Result<()> {
        match (landed, &self.landing) {
            (true, Some(l)) => {
                self.completed.push((l.id, msg));
                Ok(())
            }
            _ => self.arrive(src, msg),
        }
    }

    /// Sends a message and returns when its bytes are all handed to the transport.
    pub(crate) fn send(&mut self, dest: usize, env: Envelope, data: &[u8]) -> Result<()> {
        if dest == self.rank {
            self.deliver(message(env, data.to_vec()));
            return Ok(());
        }
        // What is queued there is most often an acknowledgement: send it now rather than
        // queue this message (a copy) behind it.
        if !self.tx[dest].is_empty() {
            self.flush(dest)?;
        }
        if !self.tx[dest].is_empty() {
            let id = self.isend(dest, env, data.to_vec())?;
            return self.wait_until(|e| e.send_done(dest, id));
        }
        if data.len() >= single_copy::MIN_BYTES
            && self.single_copy != SingleCopy::Off
            && !self.declined[dest]
        {
            return self.send_single_copy(dest, env, data);
        }
        self.send_direct(dest, env, data)
    }

    /// Writes a message straight to the transport, once what is queued towards `dest` (at
    /// most acknowledgements) has gone.
    pub(super) fn send_direct(&mut self, dest: usize, env: Envelope, data: &[u8]) -> Result<()> {
        if !self.tx[dest].is_empty() {
            self.wait_until(|e| e.tx[dest].is_empty())?;
        }
        self.writing = Some(dest);
        let sent = self.write_through(dest, env, data);
        self.writing = None;
        sent
    }

    fn write_through(&mut self, dest: usize, env: Envelope, data: &[u8]) -> Result<()> {
        let hdr = env.encode();
        let total = HEADER + data.len();
        let mut done = 0;
        let mut b = Backoff::new(self.spin);
        loop {
            let Some(t) = self.transport.as_deref_mut() else {
                return Ok(());
            };
            let n = write_at(t, dest, &hdr, data, done)?;
            done += n;
            if done == total {
                return Ok(());
            }
            // Drain what others send us meanwhile, so two ranks sending to each other never
            // wait on each other's full rings.
            if self.progress()? || n > 0 {
                b.reset();
            } else {
                b.snooze();
            }
        }
    }

    /// Queues a message (owning its bytes) and returns an id for [`Engine::send_done`].
    pub(crate) fn isend(&mut self, dest: usize, env: Envelope, data: Vec<u8>) -> Result<u64> {
        if dest == self.rank {
            let id = self.fresh_id();
            self.deliver(message(env, data));
            return Ok(id);
        }
        let id = self.enqueue(dest, env, data);
        self.progress()?;
        Ok(id)
    }

    /// Puts a message at the end of the queue towards `dest`; its id.
    pub(super) fn enqueue(&mut self, dest: usize, env: Envelope, data: Vec<u8>) -> u64 {
        let id = self.fresh_id();
        self.tx[dest].push_back(Out {
            id,
            hdr: env.encode(),
            data,
            done: 0,
        });
        self.queued += 1;
        id
    }

    /// Whether queued send `id` towards `dest` has left the queue (ids grow along a queue).
    pub(crate) fn send_done(&self, dest: usize, id: u64) -> bool {
        self.tx[dest].front().is_none_or(|o| o.id > id)
    }
}

//! The progress engine of one rank: framing of messages on the transport's byte streams,
//! matching of arrivals against posted receives (MPI's posted and unexpected queues), queues
//! of outgoing messages, and the spin-then-yield wait loop.
//!
//! A message on the wire is a 24-byte envelope (context id, source rank in its communicator,
//! tag, element kind and length) followed by its payload. Because each ordered pair of ranks
//! has one FIFO stream, messages from one sender arrive in the order they were sent, and the
//! first matching receive in posting order takes each of them: MPI's non-overtaking rule.

use crate::blocked;
use crate::rendezvous::Lifeline;
use crate::single_copy::{self, SingleCopy};
use crate::transport::Transport;
use crate::{Error, Result};
use std::collections::VecDeque;
use std::mem::MaybeUninit;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Envelope length on the wire.
pub(crate) const HEADER: usize = 24;
/// Payloads above this are refused as corrupt (1 TiB).
const MAX_LEN: u64 = 1 << 40;

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

/// A received message.
#[derive(Debug)]
pub(crate) struct Message {
    pub ctx: u64,
    pub src: u32,
    pub tag: i32,
    pub kind: u8,
    pub data: Vec<u8>,
}

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

    fn accepts(&self, ctx: u64, src: u32, tag: i32) -> bool {
        ctx == self.ctx && self.src.is_none_or(|s| s == src) && self.tag.is_none_or(|t| t == tag)
    }
}

/// Where the payload of a message being read goes.
enum Body {
    /// A vector of its own: its length is what was read so far, its capacity the payload.
    Owned(Vec<u8>),
    /// Straight into the landing buffer of the blocking receive; bytes read so far.
    Landed(usize),
}

/// A partly read message from one source.
struct Rx {
    hdr: [MaybeUninit<u8>; HEADER],
    have: usize,
    /// The envelope and the payload read so far.
    body: Option<(Envelope, Body)>,
}

/// The caller's buffer of a blocking receive ([`Engine::recv_into`]): the first message that
/// the receive takes lands there directly, read from the ring or pulled by single copy, when
/// it holds the expected kind of element and fits. Any other goes the ordinary way.
struct Landing {
    /// The posted receive.
    id: u64,
    m: Matcher,
    /// The element kind expected.
    kind: u8,
    /// The element size: a payload must be a whole number of elements.
    unit: usize,
    ptr: *mut u8,
    cap: usize,
    /// A message was claimed (its receive is no longer posted).
    claimed: bool,
    /// The payload length of the message that landed, once it is complete.
    landed: Option<usize>,
    /// A payload being copied by both ends, waiting for the sender's part.
    sharing: Option<Sharing>,
}

/// A landing payload whose upper part the sender writes (see [`single_copy`]).
struct Sharing {
    /// The world rank that sends it.
    src: usize,
    /// Its descriptor, to read the sender's part here should the sender fail to write it.
    descriptor: Vec<u8>,
    /// The receiver's part ends here; the sender's part runs to the payload's end.
    split: usize,
    /// The message that completes the receive once every byte is in.
    msg: Message,
}

impl Landing {
    /// Whether a message with this envelope lands here: unclaimed, fitting, and taken by
    /// this receive rather than by one posted before it.
    fn takes(
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
    fn claim(&mut self, posted: &mut Vec<(u64, Matcher)>) {
        self.claimed = true;
        posted.retain(|(id, _)| *id != self.id);
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
struct Out {
    id: u64,
    hdr: [u8; HEADER],
    data: Vec<u8>,
    done: usize,
}

/// Spin, then yield, then nap: busy-polling stays fast when every rank has a core, and an
/// oversubscribed or loaded node (more ranks than cores) still lets the rank that has work
/// run. The phases are timed, not counted, so they last the same on any machine.
pub(crate) struct Backoff {
    n: u32,
    since: Option<Instant>,
    spin: Duration,
}

/// How often a long wait looks whether every other rank has finished.
const FINISHED_LOOK: Duration = Duration::from_millis(100);

/// Notices, during one idle wait, that every other rank has finished: seen twice, a while
/// apart and with nothing arriving between, nothing more can come.
#[derive(Default)]
struct FinishedWatch {
    idle_since: Option<Instant>,
    last_look: Option<Instant>,
    finished_since: Option<Instant>,
}

impl FinishedWatch {
    /// How long the wait has been idle (zero before the first look).
    fn idle_for(&self) -> Duration {
        self.idle_since.map_or(Duration::ZERO, |t| t.elapsed())
    }

    /// True when the wait can never end; `others_finished` is asked at most every
    /// FINISHED_LOOK.
    fn look(&mut self, others_finished: impl FnOnce() -> bool) -> bool {
        let now = Instant::now();
        let idle_since = *self.idle_since.get_or_insert(now);
        let due = self.last_look.is_none_or(|t| now - t >= FINISHED_LOOK);
        if now - idle_since < FINISHED_LOOK || !due {
            return false;
        }
        self.last_look = Some(now);
        if !others_finished() {
            self.finished_since = None;
            return false;
        }
        let since = *self.finished_since.get_or_insert(now);
        now - since >= FINISHED_LOOK
    }
}

/// What a long wait said about where it is blocked (`blocked-<rank>` in the rendezvous
/// directory), taken back when the wait ends.
#[derive(Default)]
struct BlockedNote {
    said: Option<(PathBuf, usize)>,
}

impl BlockedNote {
    /// Says, once, which call this rank is blocked in (file rendezvous only).
    fn say(&mut self, peers: Option<&PeerWatch>, rank: usize) {
        if let (None, Some(PeerWatch::Dir(dir))) = (&self.said, peers) {
            blocked::publish(dir, rank, blocked::current());
            self.said = Some((dir.clone(), rank));
        }
    }
}

impl Drop for BlockedNote {
    fn drop(&mut self) {
        if let Some((dir, rank)) = &self.said {
            blocked::clear(dir, *rank);
        }
    }
}

/// Yielding lasts this long before the waiter naps.
const YIELD_FOR: Duration = Duration::from_millis(1);
/// A nap.
const NAP: Duration = Duration::from_micros(50);

impl Backoff {
    /// A backoff that spins for `spin` before yielding.
    pub(crate) fn new(spin: Duration) -> Backoff {
        Backoff {
            n: 0,
            since: None,
            spin,
        }
    }

    pub(crate) fn reset(&mut self) {
        self.n = 0;
        self.since = None;
    }

    pub(crate) fn snooze(&mut self) {
        self.n = self.n.wrapping_add(1);
        // Look at the clock only now and then while spinning.
        if !self.spin.is_zero() && !self.n.is_multiple_of(64) {
            std::hint::spin_loop();
            return;
        }
        let now = Instant::now();
        let waited = now - *self.since.get_or_insert(now);
        if waited < self.spin {
            std::hint::spin_loop();
        } else if waited < self.spin + YIELD_FOR {
            std::thread::yield_now();
        } else {
            std::thread::sleep(NAP);
        }
    }
}

/// One rank's engine, shared by all its communicators.
pub(crate) struct Engine {
    rank: usize,
    size: usize,
    transport: Option<Box<dyn Transport>>,
    rx: Vec<Rx>,
    tx: Vec<VecDeque<Out>>,
    queued: usize,
    unexpected: VecDeque<Message>,
    posted: Vec<(u64, Matcher)>,
    /// Messages of posted receives not yet taken (few: a linear scan beats hashing).
    completed: Vec<(u64, Message)>,
    /// Scratch list of messages completed in one progress round (kept to reuse its memory).
    arrived: Vec<(usize, (Message, bool))>,
    next_id: u64,
    /// Single-copy transfers of large messages (shared memory only).
    single_copy: SingleCopy,
    /// Acknowledgements received, by world rank.
    acks: Vec<u64>,
    /// Ranks that declined a single-copy transfer: to them, everything goes by ring.
    declined: Vec<bool>,
    /// The buffer of the blocking receive in progress, if any.
    landing: Option<Landing>,
    /// The rank a blocking send is writing to right now: its queue waits, so that queued
    /// bytes (acknowledgements) never land inside that message.
    writing: Option<usize>,
    /// The payload of the single-copy send waiting for its acknowledgement: its receiver and
    /// where it lies (its bytes stay borrowed by that send until then).
    lending: Option<(usize, *const u8, usize)>,
    spin: Duration,
    /// How this rank learns that peers have finished, and tells them it has.
    peers: Option<PeerWatch>,
    /// Working space of the collectives, kept from call to call (8-byte words: aligned for
    /// every plain-old-data type), so that a large reduction does not fault in fresh pages.
    pub(crate) scratch: Vec<u64>,
    /// The world rank a blocking receive waits for, if one: its stream is polled alone, the
    /// others once in [`SWEEP_EVERY`] rounds (with many ranks, a sweep of every stream per
    /// poll made an awaited message later).
    focus: Option<usize>,
    /// Polls of a wait so far, to time the sweeps.
    polls: u32,
}

/// A focused wait looks at every stream once in this many polls (so that no sender waits on
/// a full ring for long).
const SWEEP_EVERY: u32 = 16;

/// Where ranks say that they have finished.
pub(crate) enum PeerWatch {
    /// The rendezvous directory, where each rank leaves `finished-<rank>` when it ends.
    Dir(PathBuf),
    /// The lifeline to the launcher of a TCP rendezvous, which relays the news.
    Lifeline(Arc<Lifeline>),
}

impl PeerWatch {
    fn finished_marker(dir: &Path, rank: usize) -> PathBuf {
        dir.join(format!("finished-{rank}"))
    }

    /// Whether `rank` has said it finished.
    fn finished(&self, rank: usize) -> bool {
        match self {
            PeerWatch::Dir(dir) => Self::finished_marker(dir, rank).exists(),
            PeerWatch::Lifeline(l) => l.finished(rank),
        }
    }

    /// Says that `rank` (this one) has finished.
    fn announce(&self, rank: usize) {
        match self {
            PeerWatch::Dir(dir) => {
                let _ = std::fs::write(Self::finished_marker(dir, rank), b"");
            }
            PeerWatch::Lifeline(l) => l.announce_finished(),
        }
    }
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
    land: Option<&mut Landing>,
    posted: &mut Vec<(u64, Matcher)>,
) -> Result<(bool, Option<(Message, bool)>)> {
    let mut moved = false;
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

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("rank", &self.rank)
            .field("size", &self.size)
            .field("queued", &self.queued)
            .field("unexpected", &self.unexpected.len())
            .field("posted", &self.posted.len())
            .finish()
    }
}

impl Engine {
    /// An engine for world rank `rank` of `size`, over `transport` (None for a world of one).
    pub(crate) fn new(
        rank: usize,
        size: usize,
        transport: Option<Box<dyn Transport>>,
        single_copy: SingleCopy,
    ) -> Engine {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        if matches!(single_copy, SingleCopy::On | SingleCopy::Unhelped) {
            single_copy::allow_peers();
        }
        Engine {
            rank,
            size,
            transport,
            rx: (0..size).map(|_| Rx::default()).collect(),
            tx: (0..size).map(|_| VecDeque::new()).collect(),
            queued: 0,
            unexpected: VecDeque::new(),
            posted: Vec::new(),
            completed: Vec::new(),
            arrived: Vec::new(),
            next_id: 0,
            single_copy,
            acks: vec![0; size],
            declined: vec![false; size],
            writing: None,
            lending: None,
            landing: None,
            peers: None,
            scratch: Vec::new(),
            focus: None,
            polls: 0,
            spin: if size > cores {
                Duration::ZERO
            } else {
                Duration::from_micros(100)
            },
        }
    }

    /// Keeps single copy to the peers `same_node` marks (by world rank): to the others (on
    /// other nodes, where a descriptor's process id means nothing) everything streams.
    pub(crate) fn single_copy_only_to(&mut self, same_node: &[bool]) {
        for (declined, &same) in self.declined.iter_mut().zip(same_node) {
            *declined |= !same;
        }
    }

    /// Announces this rank finished through `peers` when the engine ends, and lets long
    /// waits notice that every other rank has finished, so that such a wait fails instead
    /// of hanging.
    pub(crate) fn watch_peers(&mut self, peers: PeerWatch) {
        self.peers = Some(peers);
    }

    /// Whether every other rank has ended its engine (all it sent is then in our streams).
    fn others_finished(&self) -> bool {
        self.peers.as_ref().is_some_and(|p| {
            (0..self.size)
                .filter(|&r| r != self.rank)
                .all(|r| p.finished(r))
        })
    }

    fn fresh_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Hands an arrived message to the first matching posted receive, else queues it.
    fn deliver(&mut self, msg: Message) {
        match self.posted.iter().position(|(_, m)| m.matches(&msg)) {
            Some(i) => {
                let (id, _) = self.posted.remove(i);
                self.completed.push((id, msg));
            }
            None => self.unexpected.push_back(msg),
        }
    }

    /// How messages to world rank `peer` travel (see [`Communicator::route_to`]).
    ///
    /// [`Communicator::route_to`]: crate::Communicator::route_to
    pub(crate) fn route(&self, peer: usize) -> &'static str {
        match &self.transport {
            _ if peer == self.rank => "self",
            Some(t) => t.route(peer),
            None => "self",
        }
    }

    /// Whether the transport may have bytes for us (see [`Transport::has_input`]): from the
    /// awaited rank alone in a focused poll.
    fn has_input(&self) -> bool {
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

    /// Waits as [`wait_until`](Self::wait_until), polling `from`'s stream first.
    fn wait_focused(
        &mut self,
        from: Option<usize>,
        done: impl FnMut(&mut Engine) -> bool,
    ) -> Result<()> {
        let (focus, polls) = (self.focus, self.polls);
        self.focus = from.filter(|&r| r != self.rank && r < self.size);
        self.polls = 1;
        let waited = self.wait_until(done);
        (self.focus, self.polls) = (focus, polls);
        waited
    }

    /// Writes what is queued towards `dest` as far as the transport takes it (nothing while
    /// a blocking send is writing there). True if bytes moved.
    fn flush(&mut self, dest: usize) -> Result<bool> {
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

    /// Handles a message from world rank `src`: acknowledgements, single-copy descriptors
    /// and requests here, everything else to matching.
    fn arrive(&mut self, src: usize, mut msg: Message) -> Result<()> {
        match msg.kind {
            single_copy::ACK => {
                self.acks[src] += 1;
                if msg.data.first() != Some(&0) {
                    self.declined[src] = true;
                }
                return Ok(());
            }
            single_copy::HELP => return self.help(src, &msg.data),
            single_copy::HELPED => return self.helped(src, msg.data.first() == Some(&0)),
            _ => {}
        }
        if msg.kind & single_copy::REMOTE != 0 {
            // Never from a peer single copy does not reach (another node: the descriptor's
            // process id would name some process of this one).
            let pull = self.single_copy != SingleCopy::Refuse && !self.declined[src];
            if pull && self.pull_landed(src, &msg)? {
                return Ok(());
            }
            let data = pull.then(|| single_copy::pull(&msg.data)).flatten();
            self.acknowledge(src, data.is_some());
            // When declined, the payload follows through the ring as an ordinary message.
            let Some(data) = data else {
                return Ok(());
            };
            msg.data = data;
            msg.kind &= !single_copy::REMOTE;
        }
        self.deliver(msg);
        Ok(())
    }

    /// Pulls the payload a descriptor names straight into the landing buffer, when the
    /// message lands there; whether it did (or, for a large one, has begun: the sender
    /// writes the rest, see [`single_copy`]).
    fn pull_landed(&mut self, src: usize, msg: &Message) -> Result<bool> {
        let Some(l) = self.landing.as_mut() else {
            return Ok(false);
        };
        let kind = msg.kind & !single_copy::REMOTE;
        let len = single_copy::described_len(&msg.data);
        if !l.takes(&self.posted, msg.ctx, msg.src, msg.tag, kind, len) {
            return Ok(false);
        }
        let done = Message {
            kind,
            data: Vec::new(),
            ..*msg
        };
        let len = len as usize;
        let Some(split) = single_copy::share(len) else {
            // SAFETY: the landing buffer is valid for writes of cap bytes while it lives.
            let Some(n) = (unsafe { single_copy::pull_into(&msg.data, l.ptr, l.cap) }) else {
                return Ok(false);
            };
            l.claim(&mut self.posted);
            l.landed = Some(n);
            self.completed.push((l.id, done));
            self.acknowledge(src, true);
            return Ok(true);
        };
        let probe = single_copy::probe_len(split);
        // SAFETY: len <= cap (takes), and the landing buffer is valid for cap bytes.
        if !unsafe { single_copy::pull_part(&msg.data, l.ptr, 0, probe) } {
            return Ok(false);
        }
        l.claim(&mut self.posted);
        let help = single_copy::Help {
            pid: std::process::id() as libc::pid_t,
            addr: l.ptr as usize + split,
            offset: split,
            len: len - split,
        };
        let ptr = l.ptr;
        l.sharing = Some(Sharing {
            src,
            descriptor: msg.data.clone(),
            split,
            msg: done,
        });
        self.queue_control(src, single_copy::HELP, help.encode().to_vec());
        self.flush(src)?;
        // SAFETY: as above.
        if !unsafe { single_copy::pull_part(&msg.data, ptr, probe, split) } {
            return Err(Error::InvalidArgument(format!(
                "single copy from rank {src} refused midway"
            )));
        }
        Ok(true)
    }

    /// The sender's side of a shared copy: writes the part asked for, if this rank is lending
    /// a payload to `src`, and answers.
    fn help(&mut self, src: usize, request: &[u8]) -> Result<()> {
        let written = match (self.lending, single_copy::Help::decode(request)) {
            _ if self.single_copy == SingleCopy::Unhelped => false,
            (Some((dest, ptr, len)), Some(help)) if dest == src => {
                // SAFETY: the blocking send that set `lending` keeps these bytes borrowed
                // until its acknowledgement, which comes after this answer.
                help.write_from(unsafe { std::slice::from_raw_parts(ptr, len) })
            }
            _ => false,
        };
        self.queue_control(src, single_copy::HELPED, vec![u8::from(!written)]);
        self.flush(src).map(drop)
    }

    /// The receiver's side: the sender's part is in (or it failed, and is read here); the
    /// receive completes and the sender may have its buffer back.
    fn helped(&mut self, src: usize, written: bool) -> Result<()> {
        let Some(l) = self.landing.as_mut() else {
            return Ok(());
        };
        let Some(sharing) = l.sharing.take_if(|s| s.src == src) else {
            return Ok(());
        };
        let len = single_copy::described_len(&sharing.descriptor) as usize;
        // SAFETY: len <= cap (the landing took it), and the buffer is valid for cap bytes.
        if !written
            && !unsafe { single_copy::pull_part(&sharing.descriptor, l.ptr, sharing.split, len) }
        {
            return Err(Error::InvalidArgument(format!(
                "single copy from rank {src} refused midway"
            )));
        }
        l.landed = Some(len);
        self.completed.push((l.id, sharing.msg));
        self.acknowledge(src, true);
        Ok(())
    }

    fn acknowledge(&mut self, dest: usize, copied: bool) {
        self.queue_control(dest, single_copy::ACK, vec![u8::from(!copied)]);
    }

    /// Queues a message of the single-copy protocol to `dest`.
    fn queue_control(&mut self, dest: usize, kind: u8, data: Vec<u8>) {
        let env = Envelope {
            ctx: 0,
            src: self.rank as u32,
            tag: 0,
            kind,
            len: data.len() as u64,
        };
        let id = self.fresh_id();
        self.tx[dest].push_back(Out {
            id,
            hdr: env.encode(),
            data,
            done: 0,
        });
        self.queued += 1;
    }

    /// Progresses until `done` holds. In a world of one nothing can arrive from elsewhere, so
    /// a wait that is not satisfied at once would last forever: that is reported instead.
    pub(crate) fn wait_until(&mut self, mut done: impl FnMut(&mut Engine) -> bool) -> Result<()> {
        let mut b = Backoff::new(self.spin);
        let mut idle: u32 = 0;
        let mut watch = FinishedWatch::default();
        let mut said = BlockedNote::default();
        loop {
            if done(self) {
                return Ok(());
            }
            self.polls = self.polls.wrapping_add(1);
            if self.transport.is_none() {
                return Err(Error::InvalidArgument(
                    "deadlock: a world of one rank waits for a message nobody sent".into(),
                ));
            }
            // While nothing is queued to send and nothing has arrived, poll cheaply.
            if (self.queued > 0 || self.has_input()) && self.progress()? {
                b.reset();
                idle = 0;
                watch = FinishedWatch::default();
                continue;
            }
            b.snooze();
            idle = idle.wrapping_add(1);
            // Off the fast path: look at the clock only now and then.
            if idle.is_multiple_of(1024) {
                if watch.look(|| self.others_finished()) {
                    return Err(Error::PeersFinished);
                }
                if watch.idle_for() >= blocked::AFTER {
                    said.say(self.peers.as_ref(), self.rank);
                }
            }
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

    /// Sends a descriptor of `data` and waits until `dest` has copied it out (or declined,
    /// and then streams it).
    fn send_single_copy(&mut self, dest: usize, env: Envelope, data: &[u8]) -> Result<()> {
        let descriptor = single_copy::describe(data);
        let remote = Envelope {
            kind: env.kind | single_copy::REMOTE,
            len: descriptor.len() as u64,
            ..env
        };
        let before = self.acks[dest];
        self.send_direct(dest, remote, &descriptor)?;
        // `data` stays borrowed, so alive and unchanged, until the receiver answers.
        self.lending = Some((dest, data.as_ptr(), data.len()));
        let answered = self.wait_until(|e| e.acks[dest] > before);
        self.lending = None;
        answered?;
        if self.declined[dest] {
            return self.send_direct(dest, env, data);
        }
        Ok(())
    }

    /// Writes a message straight to the transport, once what is queued towards `dest` (at
    /// most acknowledgements) has gone.
    fn send_direct(&mut self, dest: usize, env: Envelope, data: &[u8]) -> Result<()> {
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
        let id = self.fresh_id();
        if dest == self.rank {
            self.deliver(message(env, data));
            return Ok(id);
        }
        self.tx[dest].push_back(Out {
            id,
            hdr: env.encode(),
            data,
            done: 0,
        });
        self.queued += 1;
        self.progress()?;
        Ok(id)
    }

    /// Whether queued send `id` towards `dest` has left the queue (ids grow along a queue).
    pub(crate) fn send_done(&self, dest: usize, id: u64) -> bool {
        self.tx[dest].front().is_none_or(|o| o.id > id)
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
    /// `between` (a send, or nothing) runs after the receive is posted and before it is
    /// waited for, so that what the peer sends meanwhile lands in `buf` too. Returns the
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

    /// After a failed wait: a sender writing its part of a shared copy into the landing buffer
    /// is given a moment to finish (the buffer goes back to the caller next), unless its
    /// stream fails.
    fn finish_sharing(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(1);
        while self.landing.as_ref().is_some_and(|l| l.sharing.is_some())
            && Instant::now() < deadline
        {
            if self.progress().is_err() {
                return;
            }
            std::thread::yield_now();
        }
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

fn message(env: Envelope, data: Vec<u8>) -> Message {
    Message {
        ctx: env.ctx,
        src: env.src,
        tag: env.tag,
        kind: env.kind,
        data,
    }
}

impl Drop for Engine {
    /// Finalize: hands every queued send to the transport (bounded, so that a program whose
    /// peers are gone still ends).
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut b = Backoff::new(self.spin);
        while self.queued > 0 && Instant::now() < deadline {
            match self.progress() {
                Ok(true) => b.reset(),
                Ok(false) => b.snooze(),
                Err(_) => break,
            }
        }
        if let Some(peers) = &self.peers {
            peers.announce(self.rank);
        }
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

    fn env(tag: i32, src: u32) -> Envelope {
        Envelope {
            ctx: 0,
            src,
            tag,
            kind: 1,
            len: 0,
        }
    }

    #[test]
    fn posted_receives_take_messages_in_posting_order() {
        let mut e = Engine::new(0, 1, None, SingleCopy::Off);
        let any = Matcher {
            ctx: 0,
            src: None,
            tag: None,
            from: None,
        };
        let tag1 = Matcher {
            ctx: 0,
            src: None,
            tag: Some(1),
            from: None,
        };
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
        let t2 = Matcher {
            ctx: 0,
            src: Some(0),
            tag: Some(2),
            from: None,
        };
        assert_eq!(e.recv(t2).unwrap().data, b"a");
        assert_eq!(e.recv(t2).unwrap().data, b"c");
        let other_ctx = Matcher {
            ctx: 2,
            src: None,
            tag: None,
            from: None,
        };
        assert!(e.peek(other_ctx).is_none());
        let err = e.recv(other_ctx).unwrap_err();
        assert!(err.to_string().contains("deadlock"), "{err}");
    }

    #[test]
    fn finished_peers_are_believed_only_after_a_second_look() {
        let start = Instant::now();
        let mut w = FinishedWatch::default();
        while !w.look(|| true) {
            assert!(start.elapsed() < Duration::from_secs(5));
            std::thread::sleep(Duration::from_millis(5));
        }
        // Idle for one period, then seen finished twice one period apart.
        assert!(
            start.elapsed() >= 2 * FINISHED_LOOK,
            "{:?}",
            start.elapsed()
        );
        let mut w = FinishedWatch::default();
        let start = Instant::now();
        while start.elapsed() < 4 * FINISHED_LOOK {
            assert!(!w.look(|| false));
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn cancelled_receive_does_not_steal() {
        let mut e = Engine::new(0, 1, None, SingleCopy::Off);
        let any = Matcher {
            ctx: 0,
            src: None,
            tag: None,
            from: None,
        };
        let id = e.post_recv(any);
        e.cancel(id);
        e.send(0, env(0, 0), b"x").unwrap();
        assert_eq!(e.recv(any).unwrap().data, b"x");
    }
}

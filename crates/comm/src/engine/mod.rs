//! The progress engine of one rank: framing of messages on the transport's byte streams,
//! matching of arrivals against posted receives (MPI's posted and unexpected queues), queues
//! of outgoing messages, and the spin-then-yield wait loop.
//!
//! A message on the wire is a 24-byte envelope (context id, source rank in its communicator,
//! tag, element kind and length) followed by its payload. Because each ordered pair of ranks
//! has one FIFO stream, messages from one sender arrive in the order they were sent, and the
//! first matching receive in posting order takes each of them: MPI's non-overtaking rule.

mod direct;
mod matching;
mod progress;
mod sharing;
mod wait;
mod wire;

pub(crate) use direct::SMALL;
pub(crate) use matching::Matcher;
pub(crate) use wait::{Backoff, PeerWatch};
pub(crate) use wire::{Envelope, Message, HEADER};

use crate::single_copy::{self, SingleCopy};
use crate::transport::Transport;
use matching::Landing;
use progress::{Out, Rx};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

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

    fn fresh_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
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

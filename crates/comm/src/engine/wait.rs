//! Waiting: the spin/yield/nap backoff, the wait loop, and how a wait learns that every
//! other rank has finished (and says where it is blocked).

use super::Engine;
use crate::blocked;
use crate::rendezvous::Lifeline;
use crate::{Error, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    pub(super) fn announce(&self, rank: usize) {
        match self {
            PeerWatch::Dir(dir) => {
                let _ = std::fs::write(Self::finished_marker(dir, rank), b"");
            }
            PeerWatch::Lifeline(l) => l.announce_finished(),
        }
    }
}

impl Engine {
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

    /// Waits as [`wait_until`](Self::wait_until), polling `from`'s stream first.
    pub(super) fn wait_focused(
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
}

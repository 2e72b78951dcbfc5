//! Which call a rank is blocked in, for the launcher's `--timeout` message.
//!
//! Each public call that can block notes itself in a thread-local slot (the outermost call
//! wins: an `allreduce` stays an `allreduce` while it sends and receives). A wait that has
//! been idle for [`AFTER`] writes the call to `blocked-<rank>` in the rendezvous directory,
//! once, and removes it when the wait ends: nothing is written on the fast path. On timeout
//! the launcher reads these files before it kills the ranks.

use std::cell::Cell;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::comm::{ANY_SOURCE, ANY_TAG};

/// How long a wait idles before it says where it is blocked.
pub(crate) const AFTER: Duration = Duration::from_millis(250);

/// A call that can block, with its peer and tag where it has them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Call {
    name: &'static str,
    peer: Option<(&'static str, usize)>,
    tag: Option<i32>,
}

impl Call {
    /// A call with no peer or tag (a collective).
    pub(crate) fn new(name: &'static str) -> Call {
        Call {
            name,
            peer: None,
            tag: None,
        }
    }

    /// A point-to-point call: `role` names the peer (`dest`, `source`, `root`).
    pub(crate) fn with_peer(self, role: &'static str, peer: usize) -> Call {
        Call {
            peer: Some((role, peer)),
            ..self
        }
    }

    /// With a message tag.
    pub(crate) fn with_tag(self, tag: i32) -> Call {
        Call {
            tag: Some(tag),
            ..self
        }
    }
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut args = Vec::new();
        match self.peer {
            Some((role, ANY_SOURCE)) => args.push(format!("{role}=any")),
            Some((role, peer)) => args.push(format!("{role}={peer}")),
            None => {}
        }
        match self.tag {
            Some(ANY_TAG) => args.push("tag=any".to_string()),
            Some(tag) => args.push(format!("tag={tag}")),
            None => {}
        }
        write!(f, "{}({})", self.name, args.join(", "))
    }
}

thread_local! {
    static CURRENT: Cell<Option<Call>> = const { Cell::new(None) };
}

/// Notes `call` as this thread's current call unless an outer one is noted; the guard
/// forgets it when the call returns.
pub(crate) fn enter(call: Call) -> Entered {
    let outermost = CURRENT.with(|c| {
        let outermost = c.get().is_none();
        if outermost {
            c.set(Some(call));
        }
        outermost
    });
    Entered { outermost }
}

/// The call noted by [`enter`], while it runs.
pub(crate) fn current() -> Option<Call> {
    CURRENT.with(Cell::get)
}

/// Forgets the noted call when dropped (if it noted one).
pub(crate) struct Entered {
    outermost: bool,
}

impl Drop for Entered {
    fn drop(&mut self) {
        if self.outermost {
            CURRENT.with(|c| c.set(None));
        }
    }
}

/// The file where `rank` says which call it is blocked in.
fn blocked_file(dir: &Path, rank: usize) -> PathBuf {
    dir.join(format!("blocked-{rank}"))
}

/// Says that `rank` is blocked in `call` (best effort).
pub(crate) fn publish(dir: &Path, rank: usize, call: Option<Call>) {
    let text = call.map_or_else(|| "a wait".to_string(), |c| c.to_string());
    let _ = std::fs::write(blocked_file(dir, rank), text);
}

/// Takes back what [`publish`] said.
pub(crate) fn clear(dir: &Path, rank: usize) {
    let _ = std::fs::remove_file(blocked_file(dir, rank));
}

/// The call `rank` said it is blocked in, if it said so.
pub(crate) fn read(dir: &Path, rank: usize) -> Option<String> {
    std::fs::read_to_string(blocked_file(dir, rank)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_read_as_their_arguments() {
        let recv = Call::new("recv").with_peer("source", 1).with_tag(7);
        assert_eq!(recv.to_string(), "recv(source=1, tag=7)");
        let any = Call::new("probe")
            .with_peer("source", ANY_SOURCE)
            .with_tag(ANY_TAG);
        assert_eq!(any.to_string(), "probe(source=any, tag=any)");
        assert_eq!(Call::new("barrier").to_string(), "barrier()");
    }

    #[test]
    fn the_outermost_call_is_the_one_noted() {
        assert_eq!(current(), None);
        {
            let _outer = enter(Call::new("allreduce"));
            {
                let _inner = enter(Call::new("send").with_peer("dest", 1));
                assert_eq!(current(), Some(Call::new("allreduce")));
            }
            assert_eq!(current(), Some(Call::new("allreduce")));
        }
        assert_eq!(current(), None);
    }

    #[test]
    fn published_calls_are_read_back_and_cleared() {
        let dir = tempfile::tempdir().unwrap();
        publish(dir.path(), 3, Some(Call::new("barrier")));
        assert_eq!(read(dir.path(), 3).as_deref(), Some("barrier()"));
        clear(dir.path(), 3);
        assert_eq!(read(dir.path(), 3), None);
    }
}

//! Catching the launcher's termination signals while worlds run.

use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::Mutex;

const FORWARDED: [Signal; 4] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
];
/// Counts caught signals, so that every running launch sees each one.
static CAUGHT: AtomicU64 = AtomicU64::new(0);
static LAST: AtomicI32 = AtomicI32::new(0);
/// Number of launches holding the handlers, and the actions they replaced.
static INSTALLED: Mutex<(usize, Vec<(Signal, SigAction)>)> = Mutex::new((0, Vec::new()));

extern "C" fn record(sig: libc::c_int) {
    LAST.store(sig, Ordering::SeqCst);
    CAUGHT.fetch_add(1, Ordering::SeqCst);
}

/// Handlers installed while at least one guard lives; the previous actions come back
/// when the last one drops.
pub(super) struct Guard {
    seen: AtomicU64,
}

impl Guard {
    pub(super) fn install() -> Guard {
        let mut held = INSTALLED.lock().unwrap_or_else(|p| p.into_inner());
        if held.0 == 0 {
            let action = SigAction::new(
                SigHandler::Handler(record),
                SaFlags::SA_RESTART,
                SigSet::empty(),
            );
            for sig in FORWARDED {
                // SAFETY: the handler only stores into atomics (async-signal-safe).
                if let Ok(old) = unsafe { sigaction(sig, &action) } {
                    held.1.push((sig, old));
                }
            }
        }
        held.0 += 1;
        Guard {
            seen: AtomicU64::new(CAUGHT.load(Ordering::SeqCst)),
        }
    }

    /// The last signal caught since the previous call, if any was.
    pub(super) fn take(&self) -> Option<Signal> {
        let now = CAUGHT.load(Ordering::SeqCst);
        if self.seen.swap(now, Ordering::SeqCst) == now {
            return None;
        }
        Signal::try_from(LAST.load(Ordering::SeqCst)).ok()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let mut held = INSTALLED.lock().unwrap_or_else(|p| p.into_inner());
        held.0 -= 1;
        if held.0 == 0 {
            for (sig, old) in held.1.drain(..) {
                // SAFETY: puts back the action that was there before.
                let _ = unsafe { sigaction(sig, &old) };
            }
        }
    }
}

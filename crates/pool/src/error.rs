//! The errors a pool reports, each naming the item it concerns where there is one.

use std::fmt;

/// How a worker process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Death {
    /// Killed by this signal number (SIGKILL from the OOM killer, SIGSEGV, SIGABRT, ...).
    Signal(i32),
    /// Exited by itself (for example a task called `std::process::exit`) with this status.
    Exit(i32),
    /// The status could not be read (SIGCHLD ignored, or the child reaped by someone else).
    Unknown,
}

impl Death {
    /// The signal number when the worker was killed by a signal.
    pub fn signal(self) -> Option<i32> {
        match self {
            Death::Signal(sig) => Some(sig),
            _ => None,
        }
    }
}

impl fmt::Display for Death {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Death::Signal(sig) => match nix::sys::signal::Signal::try_from(sig) {
                Ok(name) => write!(f, "killed by signal {sig} ({})", name.as_str()),
                Err(_) => write!(f, "killed by signal {sig}"),
            },
            Death::Exit(code) => write!(f, "exited with status {code}"),
            Death::Unknown => f.write_str("ended with an unknown status"),
        }
    }
}

/// Everything that can go wrong in a pool.
///
/// Errors about one task name the index of the item (its position in the input).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PoolError {
    /// The function panicked on this item; the pool goes on.
    #[error("item {index}: task panicked: {message}")]
    Panicked {
        /// Position of the item in the input.
        index: usize,
        /// The panic message.
        message: String,
    },
    /// The worker process holding this item died; a replacement was started.
    #[error("item {index}: worker process {pid} {death} while holding it")]
    WorkerDied {
        /// Position of the item in the input.
        index: usize,
        /// Process id of the worker that died.
        pid: u32,
        /// How it ended.
        death: Death,
    },
    /// The item or its result could not be serialized.
    #[error("item {index}: cannot serialize {what}: {reason}")]
    Encode {
        /// Position of the item in the input.
        index: usize,
        /// "arguments" or "results".
        what: &'static str,
        /// The serializer's message.
        reason: String,
    },
    /// The item or its result could not be deserialized.
    #[error("item {index}: cannot deserialize {what}: {reason}")]
    Decode {
        /// Position of the item in the input.
        index: usize,
        /// "arguments" or "results".
        what: &'static str,
        /// The deserializer's message.
        reason: String,
    },
    /// A message to or from a worker process is larger than the pool's limit.
    #[error("item {index}: {what} message of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Position of the (first) item of the message in the input.
        index: usize,
        /// "arguments" or "results".
        what: &'static str,
        /// Encoded size in bytes.
        size: u64,
        /// The pool's `max_message_bytes`.
        limit: u64,
    },
    /// The initializer panicked in a worker; the pool cannot run tasks.
    #[error("worker initializer failed: {0}")]
    InitializerFailed(String),
    /// The pool was closed (or joined): it accepts no new work.
    #[error("pool is closed: it accepts no new work")]
    Closed,
    /// The pool was terminated before this work finished.
    #[error("pool was terminated before the work finished")]
    Terminated,
    /// `get` or `wait` ran out of time; the work goes on.
    #[error("timed out waiting for the result")]
    Timeout,
    /// `join` was called before `close` or `terminate`, as Python forbids.
    #[error("join() needs close() or terminate() first")]
    NotClosed,
    /// The value of an async result was already taken by an earlier `get`.
    #[error("the result was already taken by an earlier get()")]
    Taken,
    /// A worker could not be started.
    #[error("cannot start a worker: {0}")]
    Spawn(String),
    /// A parameter is out of range (zero workers, zero chunk size).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl PoolError {
    /// The index of the item the error concerns, where there is one.
    pub fn index(&self) -> Option<usize> {
        match self {
            PoolError::Panicked { index, .. }
            | PoolError::WorkerDied { index, .. }
            | PoolError::Encode { index, .. }
            | PoolError::Decode { index, .. }
            | PoolError::TooLarge { index, .. } => Some(*index),
            _ => None,
        }
    }

    /// The signal that killed the worker, for [`PoolError::WorkerDied`].
    pub fn signal(&self) -> Option<i32> {
        match self {
            PoolError::WorkerDied { death, .. } => death.signal(),
            _ => None,
        }
    }
}

/// The text of a panic payload (`&str` or `String`, as `panic!` produces).
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn death_names_the_signal() {
        assert_eq!(Death::Signal(9).to_string(), "killed by signal 9 (SIGKILL)");
        assert_eq!(
            Death::Signal(11).to_string(),
            "killed by signal 11 (SIGSEGV)"
        );
        assert_eq!(Death::Exit(3).to_string(), "exited with status 3");
        assert_eq!(Death::Signal(200).to_string(), "killed by signal 200");
    }

    #[test]
    fn errors_name_the_item() {
        let e = PoolError::WorkerDied {
            index: 4,
            pid: 77,
            death: Death::Signal(9),
        };
        assert_eq!(
            e.to_string(),
            "item 4: worker process 77 killed by signal 9 (SIGKILL) while holding it"
        );
        assert_eq!(e.index(), Some(4));
        assert_eq!(e.signal(), Some(9));
        let p = PoolError::Panicked {
            index: 2,
            message: "boom".into(),
        };
        assert_eq!(p.to_string(), "item 2: task panicked: boom");
        assert_eq!(p.signal(), None);
        assert_eq!(PoolError::Closed.index(), None);
    }

    #[test]
    fn panic_payloads() {
        let r = std::panic::catch_unwind(|| panic!("static"));
        assert_eq!(panic_message(r.unwrap_err().as_ref()), "static");
        let r = std::panic::catch_unwind(|| panic!("formatted {}", 1));
        assert_eq!(panic_message(r.unwrap_err().as_ref()), "formatted 1");
        let r = std::panic::catch_unwind(|| std::panic::panic_any(5u8));
        assert_eq!(
            panic_message(r.unwrap_err().as_ref()),
            "non-string panic payload"
        );
    }
}

//! The error type of every fallible call in this crate.

use std::path::PathBuf;

/// Everything that can go wrong in a rank or in the launcher.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A launcher variable (`HPCBOX_*`) is present but unusable.
    #[error("invalid launcher environment {var}={value:?}: {reason}")]
    Env {
        /// The variable's name.
        var: &'static str,
        /// Its value.
        value: String,
        /// Why it cannot be used.
        reason: &'static str,
    },
    /// An operating-system call failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A rank number outside `0..size`.
    #[error("rank {rank} is out of range for a communicator of size {size}")]
    RankOutOfRange {
        /// The rank asked for.
        rank: usize,
        /// The communicator's size.
        size: usize,
    },
    /// A negative tag given to a send (user tags are `0..=i32::MAX`).
    #[error("tag {0} is invalid: tags are 0..=2147483647")]
    InvalidTag(i32),
    /// A received message holds another element type than the receive asked for.
    #[error("message from rank {from} with tag {tag} holds {found}, but the receive asked for {expected}")]
    TypeMismatch {
        /// The sender's rank.
        from: usize,
        /// The message's tag.
        tag: i32,
        /// The element type the receive asked for.
        expected: &'static str,
        /// The element type the message holds.
        found: &'static str,
    },
    /// A message longer than the buffer given to receive it (MPI_ERR_TRUNCATE).
    #[error("message from rank {from} with tag {tag} holds {len} elements, but the buffer has room for {room}")]
    Truncated {
        /// The sender's rank.
        from: usize,
        /// The message's tag.
        tag: i32,
        /// Elements in the message.
        len: usize,
        /// Elements the buffer holds.
        room: usize,
    },
    /// A reduction operation that does not apply to the element type (e.g. `BAnd` on `f64`).
    #[error("operation {op:?} does not apply to {ty}")]
    InvalidOp {
        /// The operation.
        op: crate::Op,
        /// The element type.
        ty: &'static str,
    },
    /// Arguments of a collective that do not fit together (lengths, counts, roots).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// An object could not be encoded or decoded with postcard.
    #[error("object (de)serialization failed: {0}")]
    Serde(#[from] postcard::Error),
    /// A wait that can never end: every other rank of the world has finished.
    #[error("deadlock: every other rank has finished, so this wait can never end")]
    PeersFinished,
    /// A peer closed its connection in the middle of a message.
    #[error("rank {rank} closed its connection in the middle of a message")]
    PeerClosed {
        /// The peer's world rank.
        rank: usize,
    },
    /// A peer did not show up in the rendezvous directory in time.
    #[error("rank {rank} did not join the rendezvous in {} within {secs} s", dir.display())]
    Rendezvous {
        /// The peer's world rank.
        rank: usize,
        /// The rendezvous directory.
        dir: PathBuf,
        /// How long this rank waited.
        secs: u64,
    },
    /// The launcher could not start a rank.
    #[error("could not start rank {rank} ({program}): {source}")]
    Spawn {
        /// The rank that failed to start.
        rank: usize,
        /// The program.
        program: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// This crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

//! Byte streams between ranks. A transport moves bytes; framing, matching and progress live in
//! [`crate::engine`], the same for every transport.

pub(crate) mod hybrid;
#[cfg(feature = "mpi")]
pub(crate) mod mpi;
pub(crate) mod shm;
pub(crate) mod tcp;

use crate::Result;
use std::mem::MaybeUninit;

/// One ordered byte stream from every rank to every other rank, driven without blocking.
pub(crate) trait Transport {
    /// Appends a prefix of the concatenation of `bufs` to the stream towards world rank `dest`
    /// and returns its length; `Ok(0)` when nothing fits now.
    fn write_some(&mut self, dest: usize, bufs: &[&[u8]]) -> Result<usize>;

    /// Moves available bytes of the stream from world rank `src` into `buf` and returns how
    /// many (those bytes of `buf` are then initialized); `Ok(0)` when none are available now.
    fn read_some(&mut self, src: usize, buf: &mut [MaybeUninit<u8>]) -> Result<usize>;

    /// The next record from `src`, when the transport moves bytes in records (shared
    /// memory) and one has arrived that none of has been read, in one piece: a message sent
    /// whole lies in one record, so the engine can take it without staging its envelope and
    /// payload. The stream does not move until [`Transport::finish_record`].
    fn peek_record(&mut self, src: usize) -> Option<&[u8]> {
        let _ = src;
        None
    }

    /// Consumes the record [`Transport::peek_record`] showed.
    fn finish_record(&mut self, src: usize) {
        let _ = src;
    }

    /// Whether bytes may have arrived from anyone: a cheap look, so that a waiting rank can
    /// poll quickly and make full progress only when there is something to read. `true`
    /// when the transport cannot tell.
    fn has_input(&self) -> bool {
        true
    }

    /// Whether bytes may have arrived from `src`, as cheaply: `true` when the transport
    /// cannot tell.
    fn has_input_from(&self, src: usize) -> bool {
        let _ = src;
        self.has_input()
    }

    /// How this transport reaches world rank `peer`: `"shm"`, `"tcp"` or `"mpi"`.
    fn route(&self, peer: usize) -> &'static str;

    /// Takes in newly arrived peers (TCP connections); nothing to do for shared memory.
    fn accept(&mut self) -> Result<()> {
        Ok(())
    }
}

/// How long a rank waits for a peer to appear in the rendezvous directory.
pub(crate) const RENDEZVOUS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

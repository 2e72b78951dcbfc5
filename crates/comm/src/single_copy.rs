//! Single-copy transfer of large messages between ranks of one node (Linux cross-memory
//! attach): instead of streaming a large payload through a ring (one copy in, one copy out),
//! the sender sends a descriptor of its buffer and waits; the receiver copies the payload
//! straight out of the sender's memory with `process_vm_readv(2)` and acknowledges. Should
//! the kernel refuse (another user, a hardened ptrace policy), the receiver declines and the
//! sender streams the payload through the ring as usual.
//!
//! A large payload landing in a posted receive buffer is copied by both ends at once, as two
//! cores move more bytes than one: the receiver asks the sender (`HELP`) to write the upper
//! part of the payload straight into the receive buffer (`process_vm_writev(2)`) while it
//! reads the lower part itself; the sender answers `HELPED` when its part is in, or failed,
//! and then the receiver reads what is missing. The sender's buffer is free again only at the
//! acknowledgement, which follows `HELPED`.

/// Payloads of at least this many bytes go by single copy.
pub(crate) const MIN_BYTES: usize = 128 * 1024;
/// Kind-byte flag: the payload is a descriptor of the sender's buffer.
pub(crate) const REMOTE: u8 = 0x80;
/// Kind byte of an acknowledgement (payload: one byte, 0 = copied, 1 = declined).
pub(crate) const ACK: u8 = 0x7f;
/// Length of a descriptor.
pub(crate) const DESCRIPTOR: usize = 24;
/// Kind byte of a receiver's request that the sender write part of the payload itself
/// (payload: a [`Help`]).
pub(crate) const HELP: u8 = 0x7e;
/// Kind byte of the sender's answer to [`HELP`] (payload: one byte, 0 = written, 1 = not).
pub(crate) const HELPED: u8 = 0x7d;
/// Payloads of at least this many bytes landing in a posted buffer are copied by both ends.
pub(crate) const SHARE_MIN_BYTES: usize = 256 * 1024;
/// What the receiver reads before asking for help: a probe that the kernel allows the copy.
const PROBE_BYTES: usize = 4096;

/// Whether and how ranks use single copy (`HPCBOX_SHM_SINGLE_COPY`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SingleCopy {
    /// Large messages go by single copy when the kernel allows it (the default).
    On,
    /// Every message streams through the rings.
    Off,
    /// Receivers decline every descriptor, exercising the fallback (for tests).
    Refuse,
    /// Senders answer every request to write part of a payload with a refusal, so that
    /// receivers read it all themselves (for tests).
    Unhelped,
}

/// Lets the other ranks of the job read this process's memory even under Yama's restricted
/// ptrace policy (`ptrace_scope` 1), as MPI libraries do. Harmless where Yama is absent.
pub(crate) fn allow_peers() {
    // SAFETY: prctl with integer arguments only; failure (no Yama) is ignored.
    unsafe {
        libc::prctl(libc::PR_SET_PTRACER, libc::PR_SET_PTRACER_ANY, 0, 0, 0);
    }
}

/// The descriptor of `data` in this process.
pub(crate) fn describe(data: &[u8]) -> [u8; DESCRIPTOR] {
    let mut d = [0u8; DESCRIPTOR];
    d[0..8].copy_from_slice(&u64::from(std::process::id()).to_le_bytes());
    d[8..16].copy_from_slice(&(data.as_ptr() as u64).to_le_bytes());
    d[16..24].copy_from_slice(&(data.len() as u64).to_le_bytes());
    d
}

/// The pid, address and length a descriptor names; `None` if it is malformed.
fn parse(descriptor: &[u8]) -> Option<(libc::pid_t, usize, usize)> {
    let word = |i: usize| -> Option<u64> {
        Some(u64::from_le_bytes(
            descriptor.get(i..i + 8)?.try_into().ok()?,
        ))
    };
    let pid = libc::pid_t::try_from(word(0)?).ok()?;
    let addr = usize::try_from(word(8)?).ok()?;
    let len = usize::try_from(word(16)?).ok()?;
    Some((pid, addr, len))
}

/// The payload length a descriptor announces (`u64::MAX` if it is malformed).
pub(crate) fn described_len(descriptor: &[u8]) -> u64 {
    parse(descriptor).map_or(u64::MAX, |(_, _, len)| len as u64)
}

/// Which way [`copy_remote`] moves bytes.
#[derive(Clone, Copy)]
enum Way {
    /// From the other process into this one.
    Read,
    /// From this process into the other one.
    Write,
}

/// Moves `len` bytes between `local` in this process and `addr` in process `pid`; false if
/// the kernel refuses.
///
/// # Safety
/// `local` must be valid for `len` bytes: for writes when reading, for reads when writing.
unsafe fn copy_remote(way: Way, pid: libc::pid_t, addr: usize, local: *mut u8, len: usize) -> bool {
    let mut done = 0;
    while done < len {
        let here = libc::iovec {
            // SAFETY (of the add): done < len, within local (the caller's contract).
            iov_base: unsafe { local.add(done) }.cast(),
            iov_len: len - done,
        };
        let there = libc::iovec {
            iov_base: addr.wrapping_add(done) as *mut libc::c_void,
            iov_len: len - done,
        };
        // SAFETY: the local iovec lies within `local`; the remote one is checked by the
        // kernel against the other process's mappings.
        let n = unsafe {
            match way {
                Way::Read => libc::process_vm_readv(pid, &here, 1, &there, 1, 0),
                Way::Write => libc::process_vm_writev(pid, &here, 1, &there, 1, 0),
            }
        };
        if n <= 0 {
            return false;
        }
        done += n as usize;
    }
    true
}

/// Copies `len` bytes at `addr` in process `pid` to `dst`; false if the kernel refuses.
///
/// # Safety
/// `dst` must be valid for writes of `len` bytes.
unsafe fn read_remote(pid: libc::pid_t, addr: usize, dst: *mut u8, len: usize) -> bool {
    // SAFETY: the caller's contract.
    unsafe { copy_remote(Way::Read, pid, addr, dst, len) }
}

/// Copies the buffer a descriptor names out of its process; `None` if the kernel refuses or
/// the descriptor is malformed.
pub(crate) fn pull(descriptor: &[u8]) -> Option<Vec<u8>> {
    let (pid, addr, len) = parse(descriptor)?;
    let mut buf: Vec<u8> = Vec::new();
    buf.try_reserve_exact(len).ok()?;
    // SAFETY: buf has room for len bytes.
    if !unsafe { read_remote(pid, addr, buf.as_mut_ptr(), len) } {
        return None;
    }
    // SAFETY: the kernel wrote all len bytes.
    unsafe { buf.set_len(len) };
    Some(buf)
}

/// Copies the buffer a descriptor names into `dst`, which has room for `room` bytes; its
/// length, or `None` if it does not fit, the kernel refuses or the descriptor is malformed.
///
/// # Safety
/// `dst` must be valid for writes of `room` bytes.
pub(crate) unsafe fn pull_into(descriptor: &[u8], dst: *mut u8, room: usize) -> Option<usize> {
    let (pid, addr, len) = parse(descriptor).filter(|&(_, _, len)| len <= room)?;
    // SAFETY: len <= room (the caller's contract).
    unsafe { read_remote(pid, addr, dst, len) }.then_some(len)
}

/// A receiver's request: write `len` bytes from `offset` in the payload to `addr` in process
/// `pid`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Help {
    pub(crate) pid: libc::pid_t,
    pub(crate) addr: usize,
    pub(crate) offset: usize,
    pub(crate) len: usize,
}

impl Help {
    /// The request's bytes.
    pub(crate) fn encode(self) -> [u8; 32] {
        let mut b = [0u8; 32];
        b[0..8].copy_from_slice(&(self.pid as u64).to_le_bytes());
        b[8..16].copy_from_slice(&(self.addr as u64).to_le_bytes());
        b[16..24].copy_from_slice(&(self.offset as u64).to_le_bytes());
        b[24..32].copy_from_slice(&(self.len as u64).to_le_bytes());
        b
    }

    /// The request in `bytes`; `None` if malformed.
    pub(crate) fn decode(bytes: &[u8]) -> Option<Help> {
        let word = |i: usize| -> Option<u64> {
            Some(u64::from_le_bytes(bytes.get(i..i + 8)?.try_into().ok()?))
        };
        Some(Help {
            pid: libc::pid_t::try_from(word(0)?).ok()?,
            addr: usize::try_from(word(8)?).ok()?,
            offset: usize::try_from(word(16)?).ok()?,
            len: usize::try_from(word(24)?).ok()?,
        })
    }

    /// Writes the part of `payload` asked for into the receiver; false if the request does
    /// not fit the payload or the kernel refuses.
    pub(crate) fn write_from(self, payload: &[u8]) -> bool {
        let Some(part) = self
            .offset
            .checked_add(self.len)
            .and_then(|end| payload.get(self.offset..end))
        else {
            return false;
        };
        // SAFETY: `part` is valid for reads of its length; the kernel only reads it.
        unsafe {
            copy_remote(
                Way::Write,
                self.pid,
                self.addr,
                part.as_ptr().cast_mut(),
                part.len(),
            )
        }
    }
}

/// How a landing payload of `len` bytes is shared: the receiver reads `..split`, the sender
/// writes `split..`. `None` when it is too small to be worth two copiers.
pub(crate) fn share(len: usize) -> Option<usize> {
    (len >= SHARE_MIN_BYTES).then_some((len / 2) & !(PROBE_BYTES - 1))
}

/// Reads bytes `from..to` of the payload a descriptor names into `dst + from`; false if the
/// kernel refuses or the descriptor is malformed or shorter.
///
/// # Safety
/// `dst` must be valid for writes of `to` bytes.
pub(crate) unsafe fn pull_part(descriptor: &[u8], dst: *mut u8, from: usize, to: usize) -> bool {
    let Some((pid, addr, len)) = parse(descriptor) else {
        return false;
    };
    if from > to || to > len {
        return false;
    }
    // SAFETY: from <= to and dst is valid for `to` bytes (the caller's contract).
    unsafe { read_remote(pid, addr + from, dst.add(from), to - from) }
}

/// The first bytes read of a shared copy: enough to learn that the kernel allows it.
pub(crate) fn probe_len(split: usize) -> usize {
    split.min(PROBE_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pulls_from_this_process() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let d = describe(&data);
        // Reading one's own memory is always allowed.
        assert_eq!(pull(&d), Some(data.clone()));
        assert_eq!(described_len(&d), data.len() as u64);
        let mut into = vec![0u8; data.len() + 5];
        // SAFETY: into has room for into.len() bytes.
        let n = unsafe { pull_into(&d, into.as_mut_ptr(), into.len()) };
        assert_eq!(n, Some(data.len()));
        assert_eq!(&into[..data.len()], &data[..]);
        // SAFETY: as above; too little room is refused before any copy.
        assert_eq!(unsafe { pull_into(&d, into.as_mut_ptr(), 10) }, None);
    }

    #[test]
    fn a_shared_copy_moves_every_byte() {
        let data: Vec<u8> = (0..700_000u32).map(|i| (i % 253) as u8).collect();
        let d = describe(&data);
        let split = share(data.len()).expect("large enough to share");
        assert_eq!(split % 4096, 0);
        let mut into = vec![0u8; data.len()];
        let help = Help {
            pid: std::process::id() as libc::pid_t,
            addr: into.as_mut_ptr() as usize + split,
            offset: split,
            len: data.len() - split,
        };
        assert_eq!(Help::decode(&help.encode()), Some(help));
        assert!(help.write_from(&data));
        // SAFETY: into has room for data.len() bytes.
        assert!(unsafe { pull_part(&d, into.as_mut_ptr(), 0, split) });
        assert_eq!(into, data);
        assert!(
            !Help {
                len: data.len(),
                ..help
            }
            .write_from(&data),
            "past the payload"
        );
        assert_eq!(share(SHARE_MIN_BYTES - 1), None);
        assert_eq!(Help::decode(&[1, 2, 3]), None);
    }

    #[test]
    fn malformed_descriptors_are_refused() {
        assert_eq!(pull(&[0u8; 5]), None);
        let mut d = describe(b"abc");
        d[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(pull(&d), None);
    }
}

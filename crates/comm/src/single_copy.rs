//! Single-copy transfer of large messages between ranks of one node (Linux cross-memory
//! attach): instead of streaming a large payload through a ring (one copy in, one copy out),
//! the sender sends a descriptor of its buffer and waits; the receiver copies the payload
//! straight out of the sender's memory with `process_vm_readv(2)` and acknowledges. Should
//! the kernel refuse (another user, a hardened ptrace policy), the receiver declines and the
//! sender streams the payload through the ring as usual.

/// Payloads of at least this many bytes go by single copy.
pub(crate) const MIN_BYTES: usize = 128 * 1024;
/// Kind-byte flag: the payload is a descriptor of the sender's buffer.
pub(crate) const REMOTE: u8 = 0x80;
/// Kind byte of an acknowledgement (payload: one byte, 0 = copied, 1 = declined).
pub(crate) const ACK: u8 = 0x7f;
/// Length of a descriptor.
pub(crate) const DESCRIPTOR: usize = 24;

/// Whether and how ranks use single copy (`HPCBOX_SHM_SINGLE_COPY`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SingleCopy {
    /// Large messages go by single copy when the kernel allows it (the default).
    On,
    /// Every message streams through the rings.
    Off,
    /// Receivers decline every descriptor, exercising the fallback (for tests).
    Refuse,
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

/// Copies `len` bytes at `addr` in process `pid` to `dst`; false if the kernel refuses.
///
/// # Safety
/// `dst` must be valid for writes of `len` bytes.
unsafe fn read_remote(pid: libc::pid_t, addr: usize, dst: *mut u8, len: usize) -> bool {
    let mut done = 0;
    while done < len {
        let local = libc::iovec {
            // SAFETY (of the add): done < len, within dst (the caller's contract).
            iov_base: unsafe { dst.add(done) }.cast(),
            iov_len: len - done,
        };
        let remote = libc::iovec {
            iov_base: addr.wrapping_add(done) as *mut libc::c_void,
            iov_len: len - done,
        };
        // SAFETY: the local iovec lies within dst; the remote one is only read, by the
        // kernel, which checks it against the other process's mappings.
        let n = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
        if n <= 0 {
            return false;
        }
        done += n as usize;
    }
    true
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
    fn malformed_descriptors_are_refused() {
        assert_eq!(pull(&[0u8; 5]), None);
        let mut d = describe(b"abc");
        d[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(pull(&d), None);
    }
}

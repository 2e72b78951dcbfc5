//! Cross-memory maps: for a map of plain numbers, a process worker copies its chunk straight
//! out of the caller's input vector and its results straight into the caller's output vector
//! (Linux `process_vm_readv(2)` / `process_vm_writev(2)`). The caller's process then copies
//! nothing, and the copies run in the workers, in parallel.
//!
//! The kernel allows this when the worker may ptrace its parent: same user, and no Yama
//! `ptrace_scope` of 1 or more (which lets only ancestors trace descendants) nor a seccomp
//! filter against these calls. Where it refuses, the worker declines the chunk and the pool
//! sends that chunk, and every later one, through its shared-memory lanes instead.

use std::io;

/// Where a chunk is in the caller's memory: its input bytes, and where its results go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Span {
    /// Address of the chunk's first input item.
    pub src: u64,
    /// Bytes of input.
    pub src_bytes: u64,
    /// Address of the chunk's first output slot.
    pub dst: u64,
}

/// Bytes of an encoded [`Span`].
pub(crate) const SPAN_BYTES: usize = 24;

impl Span {
    /// The span as it travels in a task frame.
    pub(crate) fn encode(&self) -> [u8; SPAN_BYTES] {
        let mut bytes = [0u8; SPAN_BYTES];
        bytes[0..8].copy_from_slice(&self.src.to_le_bytes());
        bytes[8..16].copy_from_slice(&self.src_bytes.to_le_bytes());
        bytes[16..24].copy_from_slice(&self.dst.to_le_bytes());
        bytes
    }

    /// Reads what [`Span::encode`] wrote; `None` unless `bytes` is exactly one span.
    pub(crate) fn decode(bytes: &[u8]) -> Option<Span> {
        let bytes: &[u8; SPAN_BYTES] = bytes.try_into().ok()?;
        let word = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&bytes[i..i + 8]);
            u64::from_le_bytes(w)
        };
        Some(Span {
            src: word(0),
            src_bytes: word(8),
            dst: word(16),
        })
    }
}

/// Fills `local` from address `remote` of process `pid`.
pub(crate) fn read_from(pid: libc::pid_t, remote: u64, local: &mut [u8]) -> io::Result<()> {
    transfer(
        pid,
        remote,
        local.as_mut_ptr(),
        local.len(),
        Direction::Read,
    )
}

/// Copies `local` to address `remote` of process `pid`.
pub(crate) fn write_to(pid: libc::pid_t, remote: u64, local: &[u8]) -> io::Result<()> {
    transfer(
        pid,
        remote,
        local.as_ptr().cast_mut(),
        local.len(),
        Direction::Write,
    )
}

#[derive(Clone, Copy)]
enum Direction {
    Read,
    Write,
}

#[cfg(target_os = "linux")]
fn transfer(
    pid: libc::pid_t,
    remote: u64,
    local: *mut u8,
    len: usize,
    direction: Direction,
) -> io::Result<()> {
    let mut done = 0usize;
    // The kernel may move fewer bytes than asked (never splitting an iovec wrongly): go on.
    while done < len {
        let local_iov = libc::iovec {
            // SAFETY: done < len, within the caller's buffer.
            iov_base: unsafe { local.add(done) }.cast(),
            iov_len: len - done,
        };
        let remote_iov = libc::iovec {
            iov_base: (remote as usize + done) as *mut libc::c_void,
            iov_len: len - done,
        };
        // SAFETY: one valid local iovec over the caller's buffer; the remote side is checked
        // by the kernel against the other process's mappings.
        let n = unsafe {
            match direction {
                Direction::Read => libc::process_vm_readv(pid, &local_iov, 1, &remote_iov, 1, 0),
                Direction::Write => libc::process_vm_writev(pid, &local_iov, 1, &remote_iov, 1, 0),
            }
        };
        match n {
            n if n > 0 => done += n as usize,
            0 => return Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
            _ => {
                let err = io::Error::last_os_error();
                if err.kind() != io::ErrorKind::Interrupted {
                    return Err(err);
                }
            }
        }
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn transfer(_: libc::pid_t, _: u64, _: *mut u8, _: usize, _: Direction) -> io::Result<()> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_round_trip() {
        let span = Span {
            src: 0x7f00_1234_5678,
            src_bytes: 1 << 20,
            dst: u64::MAX,
        };
        assert_eq!(Span::decode(&span.encode()), Some(span));
        assert_eq!(Span::decode(&span.encode()[..23]), None);
    }

    #[test]
    fn a_process_reads_and_writes_its_own_memory() {
        let me = std::process::id() as libc::pid_t;
        let source = [1u8, 2, 3, 4, 5];
        let mut copy = [0u8; 5];
        read_from(me, source.as_ptr() as u64, &mut copy).unwrap();
        assert_eq!(copy, source);
        let mut target = [0u8; 5];
        write_to(me, target.as_mut_ptr() as u64, &source).unwrap();
        assert_eq!(std::hint::black_box(target), source);
    }

    #[test]
    fn an_unmapped_address_is_an_error_not_a_crash() {
        let me = std::process::id() as libc::pid_t;
        let mut copy = [0u8; 8];
        assert!(read_from(me, 8, &mut copy).is_err());
    }
}

//! Small system helpers: pipes, poll, reaping workers.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::error::Death;

pub(super) fn pollfd(fd: RawFd, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

thread_local! {
    /// Whether a write of this thread to a worker's pipe failed with EPIPE (and so raised a
    /// SIGPIPE, which a caller driving the workers takes back: see `SigpipeBlocked`).
    static EPIPE_SEEN: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Notes a failed write to a worker's pipe, for [`take_epipe`].
pub(super) fn note_write_failure() {
    if std::io::Error::last_os_error().raw_os_error() == Some(libc::EPIPE) {
        EPIPE_SEEN.with(|seen| seen.set(true));
    }
}

/// Whether a write of this thread failed with EPIPE since the last call.
pub(super) fn take_epipe() -> bool {
    EPIPE_SEEN.with(|seen| seen.replace(false))
}

/// A pipe whose ends are non-blocking and closed on exec (a worker makes its own ends
/// blocking again with [`set_blocking`]).
pub(super) fn nonblocking_pipe() -> nix::Result<(OwnedFd, OwnedFd)> {
    use nix::fcntl::OFlag;
    nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)
}

/// Clears `O_NONBLOCK` on a pipe end of [`nonblocking_pipe`] (its only status flag).
pub(super) fn set_blocking(fd: RawFd) {
    // SAFETY: a status flag change on a descriptor of this process.
    unsafe { libc::fcntl(fd, libc::F_SETFL, 0) };
}

pub(super) fn drain_pipe(fd: &OwnedFd) {
    let mut buf = [0u8; 64];
    // SAFETY: reading into a stack buffer of the given size.
    while unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
}

pub(super) fn death_of(status: WaitStatus) -> Death {
    match status {
        WaitStatus::Exited(_, code) => Death::Exit(code),
        WaitStatus::Signaled(_, sig, _) => Death::Signal(sig as i32),
        _ => Death::Unknown,
    }
}

/// Waits for a worker that closed its pipe, so is exiting; one that lingers (it closed the
/// pipe itself) is killed after two seconds rather than waited on forever.
pub(super) fn reap(pid: Pid) -> Death {
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut pause = Duration::from_micros(10);
    loop {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {}
            Ok(status) => return death_of(status),
            Err(_) => return Death::Unknown,
        }
        if Instant::now() >= deadline {
            let _ = kill(pid, Signal::SIGKILL);
            return waitpid(pid, None).map_or(Death::Unknown, death_of);
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deaths_are_read_from_wait_statuses() {
        let pid = Pid::from_raw(1);
        assert_eq!(death_of(WaitStatus::Exited(pid, 3)), Death::Exit(3));
        assert_eq!(
            death_of(WaitStatus::Signaled(pid, Signal::SIGKILL, false)),
            Death::Signal(9)
        );
        assert_eq!(death_of(WaitStatus::StillAlive), Death::Unknown);
    }
}

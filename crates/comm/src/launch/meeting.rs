//! Where the ranks meet: the rendezvous directory, or the TCP rendezvous when some rank runs
//! on another host.

use super::setup::{hostname, Site};
use super::{LaunchSpec, RankExit};
use crate::env::default_ring_bytes;
use crate::rendezvous::{route_to, Server};
use crate::transport::shm::{free_bytes, inbox_len};
use crate::{Error, Result};
use std::net::{IpAddr, Ipv4Addr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The variable that names the address remote ranks reach the launcher's rendezvous at.
pub const ENV_RENDEZVOUS_HOST: &str = "HPCBOX_RENDEZVOUS_HOST";

/// The rendezvous directory of one launch, removed on drop.
pub(super) struct RendezvousDir(PathBuf);

impl Drop for RendezvousDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(super) fn jobkey() -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    format!(
        "{}-{nanos:x}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// The rendezvous directory: in `/dev/shm` when it can hold every rank's inbox, else in the
/// temporary directory (a file system in memory keeps shared-memory traffic off the disk).
fn make_rendezvous(key: &str, np: usize) -> Result<RendezvousDir> {
    use std::os::unix::fs::DirBuilderExt;
    let shm = Path::new("/dev/shm");
    let need = inbox_len(np, default_ring_bytes(np)).saturating_mul(np) as u64;
    let base = if shm.is_dir() && free_bytes(shm).is_some_and(|f| f >= need) {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let dir = base.join(format!("hpcbox-{key}"));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|e| {
            Error::io(
                format!("creating rendezvous directory {}", dir.display()),
                e,
            )
        })?;
    Ok(RendezvousDir(dir))
}

/// Where one launch's ranks meet: the directory (every rank on this machine) or the TCP
/// rendezvous (some rank elsewhere). Dropping it removes the directory or stops the server.
pub(super) enum Meeting {
    /// The rendezvous directory.
    Dir(RendezvousDir),
    /// The TCP rendezvous, the `HPCBOX_RENDEZVOUS` value that reaches it, and the directory
    /// where this node's ranks of the world meet, if it has several (removed at the end,
    /// whatever became of them; other nodes' ranks remove theirs as they end).
    Tcp {
        server: Server,
        url: String,
        _here: RendezvousDir,
    },
}

impl Meeting {
    /// The directory for an all-local world, else a TCP rendezvous reachable at `host`.
    pub(super) fn open(spec: &LaunchSpec, sites: &[Site], key: &str) -> Result<Meeting> {
        let first_remote = sites.iter().find_map(|s| match s {
            Site::Remote(h) => Some(h.as_str()),
            Site::Local { .. } => None,
        });
        let Some(peer) = first_remote else {
            return Ok(Meeting::Dir(make_rendezvous(key, spec.np)?));
        };
        let server = Server::start(spec.np, key)?;
        let url = server.url(rendezvous_host(spec, peer));
        let here = RendezvousDir(crate::transport::hybrid::meeting_dir(key));
        Ok(Meeting::Tcp {
            server,
            url,
            _here: here,
        })
    }

    /// The value of `HPCBOX_RENDEZVOUS`.
    pub(super) fn value(&self) -> String {
        match self {
            Meeting::Dir(d) => d.0.to_string_lossy().into_owned(),
            Meeting::Tcp { url, .. } => url.clone(),
        }
    }

    /// The call `rank` said it is blocked in (file rendezvous only).
    fn blocked_call(&self, rank: usize) -> Option<String> {
        match self {
            Meeting::Dir(d) => crate::blocked::read(&d.0, rank),
            Meeting::Tcp { .. } => None,
        }
    }

    /// Ends every rank's lifeline (TCP rendezvous): remote ranks then end themselves.
    pub(super) fn stop(&self) {
        if let Meeting::Tcp { server, .. } = self {
            server.stop();
        }
    }
}

/// The ranks with no exit yet, each with the call it said it is blocked in.
pub(super) fn still_running(
    exits: &[Option<RankExit>],
    meeting: &Meeting,
) -> Vec<(usize, Option<String>)> {
    exits
        .iter()
        .enumerate()
        .filter(|(_, exit)| exit.is_none())
        .map(|(rank, _)| (rank, meeting.blocked_call(rank)))
        .collect()
}

/// The address remote ranks reach this machine at (see the module documentation).
fn rendezvous_host(spec: &LaunchSpec, peer: &str) -> IpAddr {
    spec.rendezvous_host
        .or_else(|| std::env::var(ENV_RENDEZVOUS_HOST).ok()?.parse().ok())
        .or_else(|| route_to(peer))
        .or_else(|| {
            (hostname(), 0)
                .to_socket_addrs()
                .ok()?
                .map(|a| a.ip())
                .find(|ip| ip.is_ipv4() && !ip.is_loopback())
        })
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

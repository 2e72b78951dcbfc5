//! A world that spans nodes, with several ranks on some: shared memory between the ranks of
//! one node, TCP to the others. Each node's ranks meet in a directory of that node's own
//! (`/dev/shm/hpcbox-world-<hash of the launch's key>`), made by whichever comes first; each
//! removes its inbox when it ends, and the last one out the directory.

use super::shm::ShmTransport;
use super::tcp::TcpTransport;
use super::Transport;
use crate::{Error, Result};
use std::mem::MaybeUninit;
use std::path::{Path, PathBuf};

/// Shared memory to the ranks of this node, TCP to the rest.
pub(crate) struct HybridTransport {
    shm: ShmTransport,
    tcp: TcpTransport,
    /// By world rank: whether it runs on this node.
    local: Vec<bool>,
    /// The node's meeting directory and this rank's inbox in it.
    dir: PathBuf,
    inbox: PathBuf,
}

impl HybridTransport {
    /// Over `tcp` to every rank, and shared memory to the ranks of `nodes` (by rank) that
    /// name this rank's node. `jobkey` names the launch (its hash names the directory).
    pub(crate) fn new(
        tcp: TcpTransport,
        rank: usize,
        nodes: &[String],
        jobkey: &str,
        ring_bytes: usize,
    ) -> Result<HybridTransport> {
        let local: Vec<bool> = nodes.iter().map(|n| *n == nodes[rank]).collect();
        let dir = meeting_dir(jobkey);
        let shm = make_inbox(&dir, rank, nodes.len(), ring_bytes)?;
        Ok(HybridTransport {
            shm,
            tcp,
            local,
            inbox: dir.join(format!("inbox-{rank}")),
            dir,
        })
    }
}

/// Whether any other rank of `nodes` runs on `rank`'s node.
pub(crate) fn shares_a_node(rank: usize, nodes: &[String]) -> bool {
    nodes
        .iter()
        .enumerate()
        .any(|(r, n)| r != rank && *n == nodes[rank])
}

/// The directory where the ranks of one node of the launch named by `jobkey` meet.
pub(crate) fn meeting_dir(jobkey: &str) -> PathBuf {
    let hash = jobkey.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    let shm = Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    base.join(format!("hpcbox-world-{hash:016x}"))
}

/// This rank's inbox in `dir`, made (with `dir`) now. A rank of this node that has already
/// finished removes the directory once no inbox is left in it, and may do so between the two
/// steps: then both are made again (no inbox of a live rank went with it).
fn make_inbox(dir: &Path, rank: usize, size: usize, ring_bytes: usize) -> Result<ShmTransport> {
    const ATTEMPTS: usize = 10;
    let mut attempt = 1;
    loop {
        make_private_dir(dir)?;
        match ShmTransport::new(dir, rank, size, ring_bytes) {
            Err(Error::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound && attempt < ATTEMPTS =>
            {
                attempt += 1;
            }
            made => return made,
        }
    }
}

/// Makes `dir` readable by this user alone, unless a rank of this node made it first.
fn make_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(Error::io(format!("creating {}", dir.display()), e)),
    }
}

impl Transport for HybridTransport {
    fn route(&self, peer: usize) -> &'static str {
        if self.local[peer] {
            self.shm.route(peer)
        } else {
            self.tcp.route(peer)
        }
    }

    fn write_some(&mut self, dest: usize, bufs: &[&[u8]]) -> Result<usize> {
        if self.local[dest] {
            self.shm.write_some(dest, bufs)
        } else {
            self.tcp.write_some(dest, bufs)
        }
    }

    fn read_some(&mut self, src: usize, buf: &mut [MaybeUninit<u8>]) -> Result<usize> {
        if self.local[src] {
            self.shm.read_some(src, buf)
        } else {
            self.tcp.read_some(src, buf)
        }
    }

    fn peek_record(&mut self, src: usize) -> Option<&[u8]> {
        if self.local[src] {
            self.shm.peek_record(src)
        } else {
            self.tcp.peek_record(src)
        }
    }

    fn finish_record(&mut self, src: usize) {
        if self.local[src] {
            self.shm.finish_record(src);
        } else {
            self.tcp.finish_record(src);
        }
    }

    fn has_input(&self) -> bool {
        self.shm.has_input() || self.tcp.has_input()
    }

    fn has_input_from(&self, src: usize) -> bool {
        if self.local[src] {
            self.shm.has_input_from(src)
        } else {
            self.tcp.has_input_from(src)
        }
    }

    fn accept(&mut self) -> Result<()> {
        self.tcp.accept()
    }
}

impl Drop for HybridTransport {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.inbox);
        // Succeeds for the last rank of the node to end.
        let _ = std::fs::remove_dir(&self.dir);
    }
}

//! The environment contract between the launcher and its ranks.
//!
//! | variable | meaning |
//! |---|---|
//! | `HPCBOX_RANK` | this process's rank in the world, `0..size` |
//! | `HPCBOX_SIZE` | number of ranks in the world |
//! | `HPCBOX_RENDEZVOUS` | a directory all ranks of the job share (shared-memory inboxes, TCP addresses), or `tcp://HOST:PORT`, the launcher's rendezvous for worlds that span hosts (TCP transport, see below) |
//! | `HPCBOX_JOBKEY` | a token unique to the launch; names the rendezvous directory |
//! | `HPCBOX_TRANSPORT` | `shm` (default: shared memory between the ranks of one node, TCP between nodes) or `tcp` (TCP between every pair, loopback within a node) |
//! | `HPCBOX_SHM_SINGLE_COPY` | `on` (default): messages ≥ 128 KiB are copied once, straight from the sender's memory; `off`: everything streams through the rings; `refuse`: receivers decline (tests the fallback); `unhelped`: senders never write their half of a shared copy (tests that fallback) |
//! | `HPCBOX_SHM_RING_BYTES` | capacity of each shared-memory ring, a power of two ≥ 4096 (default: [`default_ring_bytes`]) |
//!
//! A process without `HPCBOX_RANK` is a world of one (MPI's singleton init).
//!
//! What ranks leave in the rendezvous directory: `inbox-<rank>` (the shared-memory rings
//! towards that rank), `tcp-<rank>` (its listening address), `finished-<rank>` (it has ended
//! and sent everything). Whoever creates the directory removes it; the launcher does.
//!
//! With `tcp://HOST:PORT` there is no shared directory: each rank connects there, registers
//! its rank and its TCP listener's address, gets every rank's address back, and keeps the
//! connection as its lifeline (it ends when the launcher stops it or goes away). Every rank
//! of such a world uses TCP.

pub use crate::single_copy::SingleCopy;
use crate::{Error, Result};
use std::path::PathBuf;

/// This rank's number.
pub const ENV_RANK: &str = "HPCBOX_RANK";
/// The world's size.
pub const ENV_SIZE: &str = "HPCBOX_SIZE";
/// The rendezvous directory.
pub const ENV_RENDEZVOUS: &str = "HPCBOX_RENDEZVOUS";
/// The launch's unique token.
pub const ENV_JOBKEY: &str = "HPCBOX_JOBKEY";
/// The transport: `shm` or `tcp`.
pub const ENV_TRANSPORT: &str = "HPCBOX_TRANSPORT";
/// Single copy of large messages: `on`, `off` or `refuse`.
pub const ENV_SHM_SINGLE_COPY: &str = "HPCBOX_SHM_SINGLE_COPY";
/// The capacity in bytes of each shared-memory ring.
pub const ENV_SHM_RING_BYTES: &str = "HPCBOX_SHM_RING_BYTES";

/// Default capacity of a shared-memory ring: 1 MiB, less in large worlds so that one
/// rank's inbox (a ring per sender) stays within 16 MiB, and never below 64 KiB.
///
/// ```
/// use hpcbox_comm::env::default_ring_bytes;
/// assert_eq!(default_ring_bytes(2), 1 << 20);
/// assert_eq!(default_ring_bytes(64), 256 << 10);
/// assert_eq!(default_ring_bytes(100_000), 64 << 10);
/// ```
pub fn default_ring_bytes(size: usize) -> usize {
    const INBOX_BUDGET: usize = 16 << 20;
    let share = INBOX_BUDGET / size.max(1);
    let pow2 = if share.is_power_of_two() {
        share
    } else {
        share.next_power_of_two() / 2
    };
    pow2.clamp(64 << 10, 1 << 20)
}

/// How ranks reach each other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportKind {
    /// Single-producer/single-consumer rings in shared memory between the ranks of one
    /// node; TCP between nodes.
    Shm,
    /// TCP between every pair of ranks (over loopback within a node).
    Tcp,
}

/// Where the ranks of a world meet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rendezvous {
    /// A directory every rank shares (one node).
    Dir(PathBuf),
    /// The launcher's TCP rendezvous, `HOST:PORT` (worlds that span hosts).
    Tcp(String),
}

impl Rendezvous {
    /// Reads `HPCBOX_RENDEZVOUS`'s value: `tcp://HOST:PORT`, else a directory.
    ///
    /// ```
    /// use hpcbox_comm::env::Rendezvous;
    /// assert_eq!(Rendezvous::parse("tcp://10.0.0.1:4000"), Rendezvous::Tcp("10.0.0.1:4000".into()));
    /// assert_eq!(Rendezvous::parse("/dev/shm/x"), Rendezvous::Dir("/dev/shm/x".into()));
    /// ```
    pub fn parse(value: &str) -> Rendezvous {
        match value.strip_prefix(crate::rendezvous::SCHEME) {
            Some(addr) => Rendezvous::Tcp(addr.to_string()),
            None => Rendezvous::Dir(PathBuf::from(value)),
        }
    }
}

/// What a rank learns from the launcher.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorldEnv {
    /// This rank.
    pub rank: usize,
    /// The world's size.
    pub size: usize,
    /// Where the world meets (required when `size > 1`).
    pub rendezvous: Option<Rendezvous>,
    /// The launch's token (empty when the launcher gave none).
    pub jobkey: String,
    /// The transport to use.
    pub transport: TransportKind,
    /// Capacity of each shared-memory ring.
    pub ring_bytes: usize,
    /// Single copy of large messages over shared memory.
    pub single_copy: SingleCopy,
}

impl WorldEnv {
    /// The world of one: what a process started without a launcher sees.
    pub fn singleton() -> Self {
        WorldEnv {
            rank: 0,
            size: 1,
            rendezvous: None,
            jobkey: String::new(),
            transport: TransportKind::Shm,
            ring_bytes: default_ring_bytes(1),
            single_copy: SingleCopy::On,
        }
    }

    /// Reads the process environment.
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads the contract through `get` (a variable's value, or `None` when unset).
    ///
    /// ```
    /// use hpcbox_comm::env::WorldEnv;
    /// let w = WorldEnv::from_lookup(|k| match k {
    ///     "HPCBOX_RANK" => Some("1".into()),
    ///     "HPCBOX_SIZE" => Some("4".into()),
    ///     "HPCBOX_RENDEZVOUS" => Some("/dev/shm/hpcbox-x".into()),
    ///     _ => None,
    /// }).unwrap();
    /// assert_eq!((w.rank, w.size), (1, 4));
    /// ```
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let mut w = WorldEnv::singleton();
        let Some(rank) = get(ENV_RANK) else {
            return Ok(w);
        };
        w.rank = parse_number(ENV_RANK, &rank)?;
        let size =
            get(ENV_SIZE).ok_or_else(|| env_err(ENV_SIZE, "", "must be set with HPCBOX_RANK"))?;
        w.size = parse_number(ENV_SIZE, &size)?;
        if w.size == 0 || w.size > u32::MAX as usize {
            return Err(env_err(ENV_SIZE, &size, "must be in 1..=4294967295"));
        }
        if w.rank >= w.size {
            return Err(env_err(ENV_RANK, &rank, "must be below HPCBOX_SIZE"));
        }
        w.ring_bytes = default_ring_bytes(w.size);
        w.rendezvous = get(ENV_RENDEZVOUS)
            .filter(|d| !d.is_empty())
            .map(|d| Rendezvous::parse(&d));
        if w.size > 1 && w.rendezvous.is_none() {
            return Err(env_err(
                ENV_RENDEZVOUS,
                "",
                "must name a directory when HPCBOX_SIZE > 1",
            ));
        }
        w.jobkey = get(ENV_JOBKEY).unwrap_or_default();
        if let Some(t) = get(ENV_TRANSPORT) {
            w.transport = match t.as_str() {
                "" | "shm" => TransportKind::Shm,
                "tcp" => TransportKind::Tcp,
                _ => return Err(env_err(ENV_TRANSPORT, &t, "must be shm or tcp")),
            };
        }
        if let Some(v) = get(ENV_SHM_SINGLE_COPY) {
            w.single_copy = match v.as_str() {
                "" | "on" => SingleCopy::On,
                "off" => SingleCopy::Off,
                "refuse" => SingleCopy::Refuse,
                "unhelped" => SingleCopy::Unhelped,
                _ => {
                    return Err(env_err(
                        ENV_SHM_SINGLE_COPY,
                        &v,
                        "must be on, off, refuse or unhelped",
                    ))
                }
            };
        }
        if let Some(r) = get(ENV_SHM_RING_BYTES) {
            let n = parse_number(ENV_SHM_RING_BYTES, &r)?;
            if !n.is_power_of_two() || !(4096..=1 << 30).contains(&n) {
                return Err(env_err(
                    ENV_SHM_RING_BYTES,
                    &r,
                    "must be a power of two in 4096..=1073741824",
                ));
            }
            w.ring_bytes = n;
        }
        Ok(w)
    }
}

fn parse_number(var: &'static str, value: &str) -> Result<usize> {
    value
        .parse::<usize>()
        .map_err(|_| env_err(var, value, "not a non-negative integer"))
}

fn env_err(var: &'static str, value: &str, reason: &'static str) -> Error {
    Error::Env {
        var,
        value: value.to_string(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn world(pairs: &[(&str, &str)]) -> Result<WorldEnv> {
        WorldEnv::from_lookup(|k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn absent_rank_is_singleton() {
        assert_eq!(world(&[]).unwrap(), WorldEnv::singleton());
    }

    #[test]
    fn full_contract() {
        let w = world(&[
            ("HPCBOX_RANK", "2"),
            ("HPCBOX_SIZE", "3"),
            ("HPCBOX_RENDEZVOUS", "/tmp/r"),
            ("HPCBOX_JOBKEY", "k"),
            ("HPCBOX_TRANSPORT", "tcp"),
            ("HPCBOX_SHM_RING_BYTES", "8192"),
            ("HPCBOX_SHM_SINGLE_COPY", "refuse"),
        ])
        .unwrap();
        assert_eq!(w.rank, 2);
        assert_eq!(w.size, 3);
        assert_eq!(w.rendezvous, Some(Rendezvous::Dir("/tmp/r".into())));
        assert_eq!(w.jobkey, "k");
        assert_eq!(w.transport, TransportKind::Tcp);
        assert_eq!(w.ring_bytes, 8192);
        assert_eq!(w.single_copy, SingleCopy::Refuse);
    }

    #[test]
    fn bad_values_name_the_variable() {
        let e = world(&[("HPCBOX_RANK", "x"), ("HPCBOX_SIZE", "2")]).unwrap_err();
        assert!(e.to_string().contains("HPCBOX_RANK=\"x\""), "{e}");
        let e = world(&[
            ("HPCBOX_RANK", "2"),
            ("HPCBOX_SIZE", "2"),
            ("HPCBOX_RENDEZVOUS", "/r"),
        ])
        .unwrap_err();
        assert!(e.to_string().contains("below HPCBOX_SIZE"), "{e}");
        let e = world(&[("HPCBOX_RANK", "0"), ("HPCBOX_SIZE", "2")]).unwrap_err();
        assert!(e.to_string().contains("HPCBOX_RENDEZVOUS"), "{e}");
        let e = world(&[
            ("HPCBOX_RANK", "0"),
            ("HPCBOX_SIZE", "1"),
            ("HPCBOX_TRANSPORT", "ib"),
        ])
        .unwrap_err();
        assert!(e.to_string().contains("shm or tcp"), "{e}");
        let e = world(&[
            ("HPCBOX_RANK", "0"),
            ("HPCBOX_SIZE", "1"),
            ("HPCBOX_SHM_RING_BYTES", "5000"),
        ])
        .unwrap_err();
        assert!(e.to_string().contains("power of two"), "{e}");
        let e = world(&[("HPCBOX_RANK", "0"), ("HPCBOX_SIZE", "0")]).unwrap_err();
        assert!(e.to_string().contains("HPCBOX_SIZE"), "{e}");
    }

    #[test]
    fn a_tcp_rendezvous_keeps_shared_memory_within_nodes_unless_tcp_is_asked() {
        let env = [
            ("HPCBOX_RANK", "1"),
            ("HPCBOX_SIZE", "2"),
            ("HPCBOX_RENDEZVOUS", "tcp://127.0.0.1:5000"),
        ];
        let w = world(&env).unwrap();
        assert_eq!(w.rendezvous, Some(Rendezvous::Tcp("127.0.0.1:5000".into())));
        assert_eq!(w.transport, TransportKind::Shm);
        let w = world(&[env[0], env[1], env[2], ("HPCBOX_TRANSPORT", "tcp")]).unwrap();
        assert_eq!(w.transport, TransportKind::Tcp);
    }

    #[test]
    fn size_one_needs_no_rendezvous() {
        let w = world(&[("HPCBOX_RANK", "0"), ("HPCBOX_SIZE", "1")]).unwrap();
        assert_eq!(w.size, 1);
    }
}

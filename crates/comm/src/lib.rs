//! MPI-style message passing in pure Rust: ranks, point-to-point messages, collectives, and
//! the launcher behind `hpcbox mpiexec`.
//!
//! A program calls [`init`] once; it returns the world [`Communicator`]. Started by the
//! launcher ([`launch::launch`]), the process learns its rank, the world's size and a
//! rendezvous directory from the environment ([`env`](mod@env)); started alone it is a world of one.
//! Ranks on one node exchange messages through shared-memory rings; `HPCBOX_TRANSPORT=tcp`
//! switches to loopback TCP. A world that spans hosts (a hostfile naming other machines)
//! meets through the launcher's TCP rendezvous and uses TCP between hosts and shared memory
//! between the ranks of one host ([`Communicator::route_to`] tells which). Built with the `mpi`
//! feature, a program started by a system MPI's `mpirun` (Open MPI, MPICH, or `srun` with
//! PMI) calls MPI_Init and sends every message through that MPI instead, with the same API
//! and semantics (matching, ordering and the collectives' algorithms stay hpcbox's).
//!
//! ```
//! use hpcbox_comm::{Op, ANY_SOURCE, ANY_TAG};
//! let world = hpcbox_comm::init()?;
//! println!("I am rank {} in group of {} processes.", world.rank(), world.size());
//! let next = (world.rank() + 1) % world.size();
//! world.send(next, 0, &[world.rank() as u64])?;
//! let (got, status) = world.recv::<u64>(ANY_SOURCE, ANY_TAG)?;
//! assert_eq!(status.len, 8);
//! let total = world.allreduce(&got, Op::Sum)?;
//! assert_eq!(total, vec![(0..world.size() as u64).sum::<u64>()]);
//! # Ok::<(), hpcbox_comm::Error>(())
//! ```
//!
//! Semantics follow MPI: messages from one sender with one tag on one communicator arrive in
//! order; a receive matches on (source, tag, communicator); a message arriving before its
//! receive is posted waits in the receiver's unexpected queue. A send returns once its bytes
//! are handed to the transport, or, for a blocking send of 128 KiB or more over shared memory,
//! once the receiving rank has copied the payload straight out of the sender's memory
//! (single copy, see [`env`](mod@env)). A rank that waits keeps draining what others send it,
//! so ranks sending to each other never deadlock on buffer space. One thread per rank uses
//! the communicators (MPI_THREAD_SINGLE); call non-blocking operations' `wait`/`test` through
//! the [`Request`] trait.
//!
//! Failures end the job rather than hang it: the launcher kills every rank when one fails and
//! reports which ([`launch::Failure`]), and a rank left waiting after every other rank has
//! finished gets [`Error::PeersFinished`] instead of waiting forever.

mod blocked;
mod collective;
mod comm;
mod engine;
pub mod env;
mod error;
pub mod launch;
pub mod placement;
mod pod;
pub mod remote;
mod rendezvous;
mod request;
mod single_copy;
mod transport;

pub use comm::{Communicator, Status, ANY_SOURCE, ANY_TAG};
pub use error::{Error, Result};
pub use pod::{Kind, Op, Pod};
pub use request::{wait_all, PendingRecv, RecvObjRequest, RecvRequest, Request, SendRequest};

use env::{Rendezvous, TransportKind, WorldEnv};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Joins the world the launcher set up (MPI_Init), or a world of one without a launcher.
/// Call it once per process.
pub fn init() -> Result<Communicator> {
    #[cfg(feature = "mpi")]
    if transport::mpi::started_by_system_mpi() {
        return init_system_mpi();
    }
    init_with(&WorldEnv::from_env()?)
}

/// Joins the world of a system MPI's `mpirun` (the `mpi` feature): MPI_Init, and every
/// message through that MPI.
#[cfg(feature = "mpi")]
fn init_system_mpi() -> Result<Communicator> {
    let (transport, rank, size) = transport::mpi::MpiTransport::new()?;
    let engine = engine::Engine::new(rank, size, Some(Box::new(transport)), env::SingleCopy::Off);
    Ok(world_communicator(engine, rank, size))
}

/// Joins the world `env` describes (see [`init`]).
pub fn init_with(env: &WorldEnv) -> Result<Communicator> {
    static JOINED: AtomicBool = AtomicBool::new(false);
    let joined = match &env.rendezvous {
        Some(rendezvous) if env.size > 1 => {
            if JOINED.swap(true, Ordering::SeqCst) {
                return Err(Error::InvalidArgument(
                    "init: this process already joined its world".into(),
                ));
            }
            Some(connect(env, rendezvous)?)
        }
        _ => None,
    };
    let Some(link) = joined else {
        let engine = engine::Engine::new(env.rank, env.size, None, env::SingleCopy::Off);
        return Ok(world_communicator(engine, env.rank, env.size));
    };
    // Single copy reads another process's memory, so only between ranks of one node.
    let shares_memory = link
        .same_node
        .iter()
        .enumerate()
        .any(|(r, &same)| same && r != env.rank);
    let single_copy = if shares_memory {
        env.single_copy
    } else {
        env::SingleCopy::Off
    };
    let mut engine = engine::Engine::new(env.rank, env.size, Some(link.transport), single_copy);
    engine.single_copy_only_to(&link.same_node);
    engine.watch_peers(link.peers);
    Ok(world_communicator(engine, env.rank, env.size))
}

/// The world communicator over `engine`.
fn world_communicator(engine: engine::Engine, rank: usize, size: usize) -> Communicator {
    Communicator {
        engine: Rc::new(RefCell::new(engine)),
        ctx: 0,
        rank,
        group: (0..size as u32).collect::<Vec<u32>>().into(),
        derived: Cell::new(0),
    }
}

/// This rank's link to its world: the transport, how it hears that peers finished, and
/// which peers (by world rank) share its node's memory through that transport.
struct Link {
    transport: Box<dyn transport::Transport>,
    peers: engine::PeerWatch,
    same_node: Vec<bool>,
}

/// Joins the world at `rendezvous` (see [`Link`]).
fn connect(env: &WorldEnv, rendezvous: &Rendezvous) -> Result<Link> {
    use transport::{hybrid, shm::ShmTransport, tcp::TcpTransport};
    let link = |transport: Box<dyn transport::Transport>, peers, same_node| Link {
        transport,
        peers,
        same_node,
    };
    Ok(match (rendezvous, env.transport) {
        (Rendezvous::Dir(dir), TransportKind::Shm) => link(
            Box::new(ShmTransport::new(dir, env.rank, env.size, env.ring_bytes)?),
            engine::PeerWatch::Dir(dir.clone()),
            vec![true; env.size],
        ),
        (Rendezvous::Dir(dir), TransportKind::Tcp) => link(
            Box::new(TcpTransport::new(dir, env.rank, env.size)?),
            engine::PeerWatch::Dir(dir.clone()),
            vec![false; env.size],
        ),
        (Rendezvous::Tcp(addr), kind) => {
            let j = rendezvous::join(addr, &env.jobkey, env.rank, env.size)?;
            let tcp = TcpTransport::with_table(j.listener, env.rank, j.table)?;
            let peers = engine::PeerWatch::Lifeline(j.lifeline);
            if kind == TransportKind::Shm && hybrid::shares_a_node(env.rank, &j.nodes) {
                let same_node = j.nodes.iter().map(|n| *n == j.nodes[env.rank]).collect();
                let hybrid = hybrid::HybridTransport::new(
                    tcp,
                    env.rank,
                    &j.nodes,
                    &env.jobkey,
                    env.ring_bytes,
                )?;
                link(Box::new(hybrid), peers, same_node)
            } else {
                link(Box::new(tcp), peers, vec![false; env.size])
            }
        }
    })
}

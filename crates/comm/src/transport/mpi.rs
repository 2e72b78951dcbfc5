//! Byte streams through a system MPI (the `mpi` feature), for ranks started by that MPI's own
//! `mpirun`: the fabric is the MPI library's, and everything above the streams (matching,
//! collectives, communicators) is hpcbox's, as over shared memory or TCP.
//!
//! The streams travel on a duplicate of `MPI_COMM_WORLD`, so that a program's own MPI calls
//! never meet them. Each write becomes one `MPI_Isend` of a private copy of its bytes (MPI keeps
//! messages between two ranks on one communicator and tag in order, so the stream stays in
//! order); a read probes for the next message from its source and receives it, whole, into the
//! caller's buffer or a per-source inbox.

use super::Transport;
use crate::{Error, Result};
use mpi::ffi;
use std::mem::MaybeUninit;
use std::os::raw::c_int;

/// The tag of every stream message (on the duplicated communicator, so any tag would do).
const STREAM_TAG: c_int = 0;
/// The most bytes one write hands to MPI, so that a large message is not copied whole first.
const CHUNK: usize = 1 << 20;
/// Bytes in flight towards all peers past which writes wait for sends to complete.
const IN_FLIGHT_LIMIT: usize = 64 << 20;

/// Whether this process was started by a system MPI's launcher (Open MPI, MPICH's Hydra, a
/// PMIx or PMI launcher such as Slurm's `srun`) rather than by `hpcbox mpiexec`.
pub(crate) fn started_by_system_mpi() -> bool {
    let set = |v: &str| std::env::var_os(v).is_some();
    !set(crate::env::ENV_RANK)
        && ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMI_RANK", "PMIX_RANK"]
            .iter()
            .any(|v| set(v))
}

/// A send still in flight: its request and the bytes it reads.
struct InFlight {
    request: ffi::MPI_Request,
    bytes: Vec<u8>,
}

/// The streams of one rank over MPI. Dropping it ends MPI (MPI_Finalize), once every send has
/// been taken by its receiver and every rank has got that far.
pub(crate) struct MpiTransport {
    comm: ffi::MPI_Comm,
    /// Bytes received from each rank and not read yet, and how many of them are read.
    inbox: Vec<(Vec<u8>, usize)>,
    in_flight: Vec<InFlight>,
    in_flight_bytes: usize,
    /// Ends MPI when dropped, after the fields above are done with.
    universe: Option<mpi::environment::Universe>,
}

fn check(call: &str, code: c_int) -> Result<()> {
    if code == 0 {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "{call} failed (MPI error {code})"
        )))
    }
}

impl MpiTransport {
    /// Initializes MPI (MPI_Init) and returns the transport with this rank and the world's
    /// size.
    pub(crate) fn new() -> Result<(MpiTransport, usize, usize)> {
        let universe = mpi::initialize().ok_or_else(|| {
            Error::InvalidArgument("MPI was initialized already by someone else".into())
        })?;
        let (mut rank, mut size) = (0, 0);
        // SAFETY (of every FFI call in this file): MPI is initialized and single-threaded
        // here; the pointers passed are to live locals or fields of the right types.
        let comm = unsafe {
            check(
                "MPI_Comm_rank",
                ffi::MPI_Comm_rank(ffi::RSMPI_COMM_WORLD, &mut rank),
            )?;
            check(
                "MPI_Comm_size",
                ffi::MPI_Comm_size(ffi::RSMPI_COMM_WORLD, &mut size),
            )?;
            let mut comm = MaybeUninit::<ffi::MPI_Comm>::uninit();
            check(
                "MPI_Comm_dup",
                ffi::MPI_Comm_dup(ffi::RSMPI_COMM_WORLD, comm.as_mut_ptr()),
            )?;
            comm.assume_init()
        };
        let size = size as usize;
        let transport = MpiTransport {
            comm,
            inbox: (0..size).map(|_| (Vec::new(), 0)).collect(),
            in_flight: Vec::new(),
            in_flight_bytes: 0,
            universe: Some(universe),
        };
        Ok((transport, rank as usize, size))
    }

    /// Forgets the sends that have completed; with `wait`, until none is left.
    fn reap(&mut self) -> Result<()> {
        let mut i = 0;
        while i < self.in_flight.len() {
            let mut done: c_int = 0;
            // SAFETY: see `new`; the request is live until MPI_Test reports it complete.
            unsafe {
                check(
                    "MPI_Test",
                    ffi::MPI_Test(
                        &mut self.in_flight[i].request,
                        &mut done,
                        ffi::RSMPI_STATUS_IGNORE,
                    ),
                )?;
            }
            if done != 0 {
                let sent = self.in_flight.swap_remove(i);
                self.in_flight_bytes -= sent.bytes.len();
            } else {
                i += 1;
            }
        }
        Ok(())
    }

    /// The length of the next message from `src` (any rank for `ANY_SOURCE`) and its source,
    /// if one has arrived.
    fn probe(&self, src: c_int) -> Result<Option<(usize, c_int)>> {
        let mut found: c_int = 0;
        // SAFETY: see `new`; an all-zero MPI_Status is a valid value to be written over.
        let mut status: ffi::MPI_Status = unsafe { std::mem::zeroed() };
        unsafe {
            check(
                "MPI_Iprobe",
                ffi::MPI_Iprobe(src, STREAM_TAG, self.comm, &mut found, &mut status),
            )?;
        }
        if found == 0 {
            return Ok(None);
        }
        let mut len: c_int = 0;
        // SAFETY: see `new`.
        unsafe {
            check(
                "MPI_Get_count",
                ffi::MPI_Get_count(&status, ffi::RSMPI_UINT8_T, &mut len),
            )?;
        }
        Ok(Some((len as usize, status.MPI_SOURCE)))
    }

    /// Receives the next message from `src`, `len` bytes long, into `dst`.
    ///
    /// # Safety
    /// `dst` must be valid for writes of `len` bytes.
    unsafe fn receive(&self, src: c_int, dst: *mut u8, len: usize) -> Result<()> {
        // SAFETY: the caller's contract; see `new`.
        unsafe {
            check(
                "MPI_Recv",
                ffi::MPI_Recv(
                    dst.cast(),
                    len as c_int,
                    ffi::RSMPI_UINT8_T,
                    src,
                    STREAM_TAG,
                    self.comm,
                    ffi::RSMPI_STATUS_IGNORE,
                ),
            )
        }
    }

    /// Receives, whole, whatever has arrived from any rank into the inboxes.
    fn drain(&mut self) -> Result<bool> {
        let mut any = false;
        // SAFETY: reading an MPI constant, set at MPI_Init.
        let any_source = unsafe { ffi::RSMPI_ANY_SOURCE };
        while let Some((len, src)) = self.probe(any_source)? {
            let mut bytes = vec![0u8; len];
            // SAFETY: bytes holds len bytes.
            unsafe { self.receive(src, bytes.as_mut_ptr(), len)? };
            let (inbox, read) = &mut self.inbox[src as usize];
            inbox.drain(..*read);
            *read = 0;
            inbox.extend_from_slice(&bytes);
            any = true;
        }
        Ok(any)
    }

    /// The end of the streams: waits, draining what still arrives, until every send of this
    /// rank has been received and every rank has got that far (a non-blocking barrier), so
    /// that MPI_Finalize finds nothing in flight.
    fn finish(&mut self) -> Result<()> {
        while !self.in_flight.is_empty() {
            self.reap()?;
            self.drain()?;
        }
        // SAFETY: see `new`; the request is waited on below before anything else.
        let mut barrier = MaybeUninit::<ffi::MPI_Request>::uninit();
        unsafe {
            check(
                "MPI_Ibarrier",
                ffi::MPI_Ibarrier(self.comm, barrier.as_mut_ptr()),
            )?;
        }
        // SAFETY: MPI_Ibarrier wrote the request.
        let mut barrier = unsafe { barrier.assume_init() };
        loop {
            let mut done: c_int = 0;
            // SAFETY: see `new`.
            unsafe {
                check(
                    "MPI_Test",
                    ffi::MPI_Test(&mut barrier, &mut done, ffi::RSMPI_STATUS_IGNORE),
                )?;
            }
            if done != 0 {
                break;
            }
            self.drain()?;
            std::thread::yield_now();
        }
        // SAFETY: see `new`; nothing uses the communicator afterwards.
        unsafe { check("MPI_Comm_free", ffi::MPI_Comm_free(&mut self.comm)) }
    }
}

impl Transport for MpiTransport {
    fn route(&self, _peer: usize) -> &'static str {
        "mpi"
    }

    fn write_some(&mut self, dest: usize, bufs: &[&[u8]]) -> Result<usize> {
        if self.in_flight_bytes >= IN_FLIGHT_LIMIT {
            self.reap()?;
            if self.in_flight_bytes >= IN_FLIGHT_LIMIT {
                return Ok(0);
            }
        }
        let mut bytes = Vec::new();
        for buf in bufs {
            let room = CHUNK - bytes.len();
            bytes.extend_from_slice(&buf[..buf.len().min(room)]);
            if bytes.len() == CHUNK {
                break;
            }
        }
        if bytes.is_empty() {
            return Ok(0);
        }
        let mut request = MaybeUninit::<ffi::MPI_Request>::uninit();
        // SAFETY: see `new`; `bytes` stays alive and unmoved (its heap buffer) in `in_flight`
        // until MPI_Test reports the send complete.
        unsafe {
            check(
                "MPI_Isend",
                ffi::MPI_Isend(
                    bytes.as_ptr().cast(),
                    bytes.len() as c_int,
                    ffi::RSMPI_UINT8_T,
                    dest as c_int,
                    STREAM_TAG,
                    self.comm,
                    request.as_mut_ptr(),
                ),
            )?;
        }
        let n = bytes.len();
        self.in_flight_bytes += n;
        self.in_flight.push(InFlight {
            // SAFETY: MPI_Isend wrote the request.
            request: unsafe { request.assume_init() },
            bytes,
        });
        Ok(n)
    }

    fn read_some(&mut self, src: usize, buf: &mut [MaybeUninit<u8>]) -> Result<usize> {
        let (inbox, read) = &mut self.inbox[src];
        if *read < inbox.len() {
            let n = (inbox.len() - *read).min(buf.len());
            for (dst, &b) in buf.iter_mut().zip(&inbox[*read..*read + n]) {
                dst.write(b);
            }
            *read += n;
            if *read == inbox.len() {
                inbox.clear();
                *read = 0;
            }
            return Ok(n);
        }
        let Some((len, _)) = self.probe(src as c_int)? else {
            return Ok(0);
        };
        if len <= buf.len() {
            // SAFETY: buf has room for len bytes; MPI writes them.
            unsafe { self.receive(src as c_int, buf.as_mut_ptr().cast(), len)? };
            return Ok(len);
        }
        let mut bytes = vec![0u8; len];
        // SAFETY: bytes holds len bytes.
        unsafe { self.receive(src as c_int, bytes.as_mut_ptr(), len)? };
        self.inbox[src] = (bytes, 0);
        self.read_some(src, buf)
    }

    fn accept(&mut self) -> Result<()> {
        self.reap()
    }
}

impl Drop for MpiTransport {
    fn drop(&mut self) {
        if let Err(e) = self.finish() {
            eprintln!("hpcbox-comm: ending MPI: {e}");
        }
        drop(self.universe.take());
    }
}

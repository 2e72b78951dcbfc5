//! TCP: each rank listens on an ephemeral port. On one node it listens on loopback and
//! publishes `tcp-<rank>` (`ip:port`) in the rendezvous directory; in a world that spans
//! hosts the launcher's TCP rendezvous hands every rank the table of addresses. A sender connects to a destination on its first
//! write and introduces itself with its rank (4 bytes, little endian); each ordered pair of
//! ranks has its own connection, written by one side and read by the other.

use super::{Transport, RENDEZVOUS_TIMEOUT};
use crate::{Error, Result};
use std::io::{ErrorKind, IoSlice, Read, Write};
use std::mem::MaybeUninit;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where a rank finds its peers' addresses.
enum AddressBook {
    /// `tcp-<rank>` files in the rendezvous directory, appearing as ranks start.
    Dir(PathBuf),
    /// Every rank's address, from the launcher.
    Table(Vec<SocketAddr>),
}

/// The TCP transport of one rank.
pub(crate) struct TcpTransport {
    book: AddressBook,
    rank: usize,
    listener: TcpListener,
    tx: Vec<Option<TcpStream>>,
    rx: Vec<Option<TcpStream>>,
    first_try: Vec<Option<Instant>>,
    /// How many peers have connected to us (then no more accepts are needed).
    connected: usize,
}

fn io_err(what: String) -> impl FnOnce(std::io::Error) -> Error {
    move |e| Error::io(what, e)
}

impl TcpTransport {
    /// Listens on loopback and publishes the address in `dir`.
    pub(crate) fn new(dir: &Path, rank: usize, size: usize) -> Result<TcpTransport> {
        let listener =
            TcpListener::bind("127.0.0.1:0").map_err(io_err("binding a loopback port".into()))?;
        listener
            .set_nonblocking(true)
            .map_err(io_err("setting the listener non-blocking".into()))?;
        let addr = listener
            .local_addr()
            .map_err(io_err("reading the listener address".into()))?;
        let tmp = dir.join(format!("tcp-{rank}.tmp"));
        let path = dir.join(format!("tcp-{rank}"));
        std::fs::write(&tmp, addr.to_string())
            .map_err(io_err(format!("writing {}", tmp.display())))?;
        std::fs::rename(&tmp, &path).map_err(io_err(format!("publishing {}", path.display())))?;
        Ok(Self::over(
            AddressBook::Dir(dir.to_path_buf()),
            rank,
            size,
            listener,
        ))
    }

    /// Over `listener`, with every rank's address in `table` (a TCP rendezvous).
    pub(crate) fn with_table(
        listener: TcpListener,
        rank: usize,
        table: Vec<SocketAddr>,
    ) -> Result<TcpTransport> {
        listener
            .set_nonblocking(true)
            .map_err(io_err("setting the listener non-blocking".into()))?;
        let size = table.len();
        Ok(Self::over(AddressBook::Table(table), rank, size, listener))
    }

    fn over(book: AddressBook, rank: usize, size: usize, listener: TcpListener) -> TcpTransport {
        TcpTransport {
            book,
            rank,
            listener,
            tx: (0..size).map(|_| None).collect(),
            rx: (0..size).map(|_| None).collect(),
            first_try: vec![None; size],
            connected: 0,
        }
    }

    /// `dest`'s address; `Ok(None)` while it has not published it yet.
    fn lookup(&mut self, dest: usize) -> Result<Option<SocketAddr>> {
        let dir = match &self.book {
            AddressBook::Table(t) => return Ok(Some(t[dest])),
            AddressBook::Dir(dir) => dir,
        };
        let path = dir.join(format!("tcp-{dest}"));
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                let since = *self.first_try[dest].get_or_insert_with(Instant::now);
                if since.elapsed() > RENDEZVOUS_TIMEOUT {
                    return Err(Error::Rendezvous {
                        rank: dest,
                        dir: dir.clone(),
                        secs: RENDEZVOUS_TIMEOUT.as_secs(),
                    });
                }
                return Ok(None);
            }
            Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
        };
        let addr: SocketAddr = text.trim().parse().map_err(|_| {
            Error::InvalidArgument(format!("{} holds no address: {text:?}", path.display()))
        })?;
        Ok(Some(addr))
    }

    /// Connects to `dest` once its address is known; `Ok(false)` while it is not.
    fn connect(&mut self, dest: usize) -> Result<bool> {
        let Some(addr) = self.lookup(dest)? else {
            return Ok(false);
        };
        let what = format!("connecting to rank {dest} at {addr}");
        let mut s = TcpStream::connect(addr).map_err(io_err(what.clone()))?;
        s.set_nodelay(true).map_err(io_err(what.clone()))?;
        s.write_all(&(self.rank as u32).to_le_bytes())
            .map_err(io_err(what.clone()))?;
        s.set_nonblocking(true).map_err(io_err(what))?;
        self.tx[dest] = Some(s);
        Ok(true)
    }

    fn introduce(&mut self, mut s: TcpStream) -> Result<()> {
        let what = "greeting a connecting rank";
        s.set_nonblocking(false).map_err(io_err(what.into()))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(io_err(what.into()))?;
        let mut hello = [0u8; 4];
        s.read_exact(&mut hello).map_err(io_err(what.into()))?;
        s.set_read_timeout(None).map_err(io_err(what.into()))?;
        s.set_nonblocking(true).map_err(io_err(what.into()))?;
        let from = u32::from_le_bytes(hello) as usize;
        match self.rx.get_mut(from) {
            Some(slot @ None) => {
                *slot = Some(s);
                self.connected += 1;
                Ok(())
            }
            _ => Err(Error::InvalidArgument(format!(
                "unexpected connection claiming rank {from}"
            ))),
        }
    }
}

impl Transport for TcpTransport {
    fn route(&self, _peer: usize) -> &'static str {
        "tcp"
    }

    fn write_some(&mut self, dest: usize, bufs: &[&[u8]]) -> Result<usize> {
        if self.tx[dest].is_none() && !self.connect(dest)? {
            return Ok(0);
        }
        let Some(s) = self.tx[dest].as_mut() else {
            return Ok(0);
        };
        let slices: Vec<IoSlice<'_>> = bufs
            .iter()
            .filter(|b| !b.is_empty())
            .map(|b| IoSlice::new(b))
            .collect();
        match s.write_vectored(&slices) {
            Ok(n) => Ok(n),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => Ok(0),
            Err(e) => Err(Error::io(format!("sending to rank {dest}"), e)),
        }
    }

    fn read_some(&mut self, src: usize, buf: &mut [MaybeUninit<u8>]) -> Result<usize> {
        let Some(s) = self.rx[src].as_ref() else {
            return Ok(0);
        };
        if buf.is_empty() {
            return Ok(0);
        }
        // SAFETY: read(2) writes at most buf.len() bytes into buf and reports how many.
        let n = unsafe { libc::read(s.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        match n {
            // End of stream: the peer finished; whatever it sent has been read.
            0 => {
                self.rx[src] = None;
                Ok(0)
            }
            n if n > 0 => Ok(n as usize),
            _ => {
                let e = std::io::Error::last_os_error();
                match e.kind() {
                    ErrorKind::WouldBlock | ErrorKind::Interrupted => Ok(0),
                    _ => Err(Error::io(format!("receiving from rank {src}"), e)),
                }
            }
        }
    }

    fn accept(&mut self) -> Result<()> {
        if self.connected + 1 >= self.rx.len() {
            return Ok(());
        }
        loop {
            match self.listener.accept() {
                Ok((s, _)) => self.introduce(s)?,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {
                    return Ok(())
                }
                Err(e) => return Err(Error::io("accepting a connection", e)),
            }
        }
    }
}

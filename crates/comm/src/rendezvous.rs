//! The TCP rendezvous of worlds that span hosts (`HPCBOX_RENDEZVOUS=tcp://HOST:PORT`).
//!
//! The launcher listens ([`Server`]); every rank connects, registers its rank, the address
//! of its own TCP listener and its node ([`node_id`]) ([`join`]), and once all have registered
//! gets the full table back (ranks on one node then talk through shared memory). The connection then stays open as the rank's lifeline: the launcher
//! relays each rank's "finished" to the others (so a wait on finished peers fails instead of
//! hanging, as the finished-marker files do on one node), and when the launcher tells the
//! rank to stop or goes away, the rank kills itself (ssh does not forward signals, so this
//! is how remote ranks end when the world fails).
//!
//! Frames are a 4-byte little-endian length and a postcard message.

use crate::{Error, Result};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The prefix of a TCP rendezvous address in `HPCBOX_RENDEZVOUS`.
pub(crate) const SCHEME: &str = "tcp://";

/// Largest frame accepted (an address table of a very large world fits).
const MAX_FRAME: usize = 64 << 20;

/// What a rank tells the launcher.
#[derive(Serialize, Deserialize, Debug)]
enum ToLauncher {
    /// Registration: the launch's token, the rank, its listener's address.
    Hello {
        jobkey: String,
        rank: u32,
        addr: SocketAddr,
        node: String,
    },
    /// The rank has ended its engine and sent everything.
    Finished,
}

/// What the launcher tells a rank.
#[derive(Serialize, Deserialize, Debug)]
enum ToRank {
    /// Every rank's listener address, by rank.
    Table(Vec<(SocketAddr, String)>),
    /// This rank has finished.
    Finished(u32),
    /// End now: the world is over.
    Stop,
}

fn write_frame<T: Serialize>(w: &mut impl Write, msg: &T) -> std::io::Result<()> {
    let body = postcard::to_stdvec(msg).map_err(std::io::Error::other)?;
    let mut buf = (body.len() as u32).to_le_bytes().to_vec();
    buf.extend_from_slice(&body);
    w.write_all(&buf)
}

fn read_frame<T: DeserializeOwned>(r: &mut impl Read) -> std::io::Result<T> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::other("rendezvous frame too large"));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    postcard::from_bytes(&body).map_err(std::io::Error::other)
}

// ---------------------------------------------------------------- launcher side

/// Registrations so far, and the connections to every registered rank.
struct Registry {
    jobkey: String,
    addrs: Vec<Option<(SocketAddr, String)>>,
    conns: Vec<Option<TcpStream>>,
    registered: usize,
    stopped: bool,
}

impl Registry {
    /// Records `rank`'s registration; sends every rank the table once all are in.
    fn register(&mut self, rank: usize, entry: (SocketAddr, String), conn: TcpStream) -> bool {
        if rank >= self.addrs.len() || self.addrs[rank].is_some() || self.stopped {
            return false;
        }
        self.addrs[rank] = Some(entry);
        self.conns[rank] = Some(conn);
        self.registered += 1;
        if self.registered == self.addrs.len() {
            let table: Vec<(SocketAddr, String)> = self.addrs.iter().flatten().cloned().collect();
            self.broadcast(&ToRank::Table(table), None);
        }
        true
    }

    /// Sends `msg` to every connected rank but `except`.
    fn broadcast(&mut self, msg: &ToRank, except: Option<usize>) {
        for (r, conn) in self.conns.iter_mut().enumerate() {
            if let (Some(c), false) = (conn.as_mut(), Some(r) == except) {
                let _ = write_frame(c, msg);
            }
        }
    }

    /// Tells every rank to stop and closes every connection.
    fn stop(&mut self) {
        self.stopped = true;
        self.broadcast(&ToRank::Stop, None);
        for c in self.conns.iter_mut().filter_map(Option::take) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

/// The launcher's end of a TCP rendezvous: listens on every interface until dropped.
pub(crate) struct Server {
    port: u16,
    registry: Arc<Mutex<Registry>>,
    closing: Arc<AtomicBool>,
}

impl Server {
    /// Listens on an ephemeral port of every interface for the `size` ranks of launch
    /// `jobkey`.
    pub(crate) fn start(size: usize, jobkey: &str) -> Result<Server> {
        let listener = TcpListener::bind(("0.0.0.0", 0))
            .map_err(|e| Error::io("listening for the rendezvous", e))?;
        let port = listener
            .local_addr()
            .map_err(|e| Error::io("reading the rendezvous address", e))?
            .port();
        let registry = Arc::new(Mutex::new(Registry {
            jobkey: jobkey.to_string(),
            addrs: vec![None; size],
            conns: (0..size).map(|_| None).collect(),
            registered: 0,
            stopped: false,
        }));
        let closing = Arc::new(AtomicBool::new(false));
        let (reg, stop) = (registry.clone(), closing.clone());
        std::thread::spawn(move || accept_loop(listener, reg, stop));
        Ok(Server {
            port,
            registry,
            closing,
        })
    }

    /// The value of `HPCBOX_RENDEZVOUS` for ranks that reach this machine at `host`.
    pub(crate) fn url(&self, host: IpAddr) -> String {
        format!("{SCHEME}{}", SocketAddr::new(host, self.port))
    }

    /// Tells every rank to stop, closes the lifelines and stops accepting.
    pub(crate) fn stop(&self) {
        lock(&self.registry).stop();
        if !self.closing.swap(true, Ordering::SeqCst) {
            // Wakes the accept loop so that it sees `closing` and drops the listener.
            let _ = TcpStream::connect_timeout(
                &SocketAddr::from(([127, 0, 0, 1], self.port)),
                Duration::from_secs(1),
            );
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn lock(m: &Mutex<Registry>) -> std::sync::MutexGuard<'_, Registry> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Accepts connections until the server closes; each gets a thread of its own.
fn accept_loop(listener: TcpListener, reg: Arc<Mutex<Registry>>, closing: Arc<AtomicBool>) {
    for conn in listener.incoming() {
        if closing.load(Ordering::SeqCst) {
            return;
        }
        if let Ok(conn) = conn {
            let reg = reg.clone();
            std::thread::spawn(move || serve_rank(conn, &reg));
        }
    }
}

/// One rank's connection: its registration, then the finished notices it sends.
fn serve_rank(mut conn: TcpStream, reg: &Mutex<Registry>) {
    let _ = conn.set_nodelay(true);
    let _ = conn.set_read_timeout(Some(super::transport::RENDEZVOUS_TIMEOUT));
    let Ok(ToLauncher::Hello {
        jobkey,
        rank,
        addr,
        node,
    }) = read_frame(&mut conn)
    else {
        return;
    };
    let _ = conn.set_read_timeout(None);
    let rank = rank as usize;
    {
        let mut r = lock(reg);
        let Ok(writer) = conn.try_clone() else {
            return;
        };
        if jobkey != r.jobkey || !r.register(rank, (addr, node), writer) {
            return;
        }
    }
    while let Ok(ToLauncher::Finished) = read_frame(&mut conn) {
        lock(reg).broadcast(&ToRank::Finished(rank as u32), Some(rank));
    }
}

/// The address of this machine that reaches `peer` (the source address the kernel would
/// choose; no packet is sent), if `peer` resolves.
pub(crate) fn route_to(peer: &str) -> Option<IpAddr> {
    let target = (peer, 9)
        .to_socket_addrs()
        .ok()?
        .find(SocketAddr::is_ipv4)?;
    let sock = std::net::UdpSocket::bind(("0.0.0.0", 0)).ok()?;
    sock.connect(target).ok()?;
    Some(sock.local_addr().ok()?.ip())
}

// ---------------------------------------------------------------- rank side

/// A rank's lifeline to the launcher: which peers have finished, and the way to say that
/// this rank has.
pub(crate) struct Lifeline {
    finished: Arc<Vec<AtomicBool>>,
    to_launcher: Mutex<TcpStream>,
}

impl Lifeline {
    /// Whether `rank` has finished.
    pub(crate) fn finished(&self, rank: usize) -> bool {
        self.finished
            .get(rank)
            .is_some_and(|f| f.load(Ordering::SeqCst))
    }

    /// Tells the launcher (and through it every peer) that this rank has finished.
    pub(crate) fn announce_finished(&self) {
        let mut s = self.to_launcher.lock().unwrap_or_else(|p| p.into_inner());
        let _ = write_frame(&mut *s, &ToLauncher::Finished);
    }
}

/// What joining a TCP rendezvous gives a rank.
pub(crate) struct Joined {
    /// This rank's listener, bound to the address that reaches the launcher.
    pub(crate) listener: TcpListener,
    /// Every rank's listener address, by rank.
    pub(crate) table: Vec<SocketAddr>,
    /// Every rank's node ([`node_id`]), by rank.
    pub(crate) nodes: Vec<String>,
    /// The connection to the launcher.
    pub(crate) lifeline: Arc<Lifeline>,
}

/// What names this rank's node: ranks with equal names share a kernel and its shared memory.
/// `HPCBOX_NODE_ID` when set (tests that play several hosts on one machine), else the host
/// name and the kernel's boot id (containers on one kernel have host names of their own).
pub(crate) fn node_id() -> String {
    if let Some(id) = std::env::var_os("HPCBOX_NODE_ID").filter(|v| !v.is_empty()) {
        return id.to_string_lossy().into_owned();
    }
    let host = crate::launch::hostname();
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    format!("{host}/{}", boot.trim())
}

/// Registers `rank` of `size` with the launcher at `url` (`tcp://HOST:PORT`), waits for the
/// address table, and starts watching the lifeline.
pub(crate) fn join(url: &str, jobkey: &str, rank: usize, size: usize) -> Result<Joined> {
    let addr = url.strip_prefix(SCHEME).unwrap_or(url);
    let fail = |what: &str| {
        let what = format!("{what} (rendezvous {url})");
        move |e: std::io::Error| Error::io(what, e)
    };
    let mut conn = TcpStream::connect(addr).map_err(fail("connecting to the launcher"))?;
    conn.set_nodelay(true).map_err(fail("configuring"))?;
    // Listen where the launcher's connection leaves from: that interface reaches the others.
    let local = conn
        .local_addr()
        .map_err(fail("reading the local address"))?;
    let listener =
        TcpListener::bind((local.ip(), 0)).map_err(fail("binding this rank's listener"))?;
    let mine = listener
        .local_addr()
        .map_err(fail("reading the listener"))?;
    let hello = ToLauncher::Hello {
        jobkey: jobkey.to_string(),
        rank: rank as u32,
        addr: mine,
        node: node_id(),
    };
    write_frame(&mut conn, &hello).map_err(fail("registering"))?;
    conn.set_read_timeout(Some(super::transport::RENDEZVOUS_TIMEOUT))
        .map_err(fail("configuring"))?;
    let (table, nodes): (Vec<SocketAddr>, Vec<String>) = match read_frame(&mut conn) {
        Ok(ToRank::Table(t)) if t.len() == size => t.into_iter().unzip(),
        Ok(_) => die(),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => die(),
        Err(e) => return Err(fail("waiting for the other ranks")(e)),
    };
    conn.set_read_timeout(None).map_err(fail("configuring"))?;
    let finished = Arc::new((0..size).map(|_| AtomicBool::new(false)).collect());
    let reader = conn.try_clone().map_err(fail("watching the launcher"))?;
    watch_launcher(reader, Arc::clone(&finished));
    Ok(Joined {
        listener,
        table,
        nodes,
        lifeline: Arc::new(Lifeline {
            finished,
            to_launcher: Mutex::new(conn),
        }),
    })
}

/// Follows the launcher's notices; when it says stop or goes away, ends this process at
/// once (SIGKILL to itself, as the launcher's kill would end a local rank).
fn watch_launcher(mut conn: TcpStream, finished: Arc<Vec<AtomicBool>>) {
    std::thread::spawn(move || loop {
        match read_frame::<ToRank>(&mut conn) {
            Ok(ToRank::Finished(r)) => {
                if let Some(f) = finished.get(r as usize) {
                    f.store(true, Ordering::SeqCst);
                }
            }
            Ok(ToRank::Table(_)) => {}
            Ok(ToRank::Stop) | Err(_) => die(),
        }
    });
}

/// Ends this process at once, as the launcher's SIGKILL ends a local rank.
fn die() -> ! {
    let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    std::process::abort()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_get_the_table_and_hear_who_finished() {
        let server = Server::start(2, "key").unwrap();
        let url = server.url(IpAddr::from([127, 0, 0, 1]));
        let other = {
            let url = url.clone();
            std::thread::spawn(move || join(&url, "key", 1, 2).unwrap())
        };
        let zero = join(&url, "key", 0, 2).unwrap();
        let one = other.join().unwrap();
        assert_eq!(zero.table, one.table);
        assert_eq!(zero.table[0], zero.listener.local_addr().unwrap());
        assert_eq!(one.table[1], one.listener.local_addr().unwrap());
        // Both run in this process, so on one node.
        assert_eq!(zero.nodes, vec![node_id(), node_id()]);
        assert_eq!(zero.nodes, one.nodes);
        one.lifeline.announce_finished();
        let t = std::time::Instant::now();
        while !zero.lifeline.finished(1) && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(zero.lifeline.finished(1));
        assert!(!one.lifeline.finished(0));
        // Dropping the server here would end this test process: the lifelines would fire.
        std::mem::forget(server);
    }

    #[test]
    fn wrong_jobkey_is_refused() {
        let server = Server::start(1, "key").unwrap();
        let url = server.url(IpAddr::from([127, 0, 0, 1]));
        let mut conn = TcpStream::connect(url.strip_prefix(SCHEME).unwrap()).unwrap();
        let hello = ToLauncher::Hello {
            jobkey: "nope".into(),
            rank: 0,
            addr: "127.0.0.1:1".parse().unwrap(),
            node: "n".into(),
        };
        write_frame(&mut conn, &hello).unwrap();
        // The server drops the connection without an answer.
        assert!(read_frame::<ToRank>(&mut conn).is_err());
        assert_eq!(lock(&server.registry).registered, 0);
    }
}

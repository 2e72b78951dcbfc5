//! An interactive job's terminal (`qsub -I`): a pseudo-terminal on this node whose other end is
//! the `qsub` waiting on the submit host, reached over TCP as PBS's mom reaches it.
//!
//! The agent connects to `qsub`, the two prove to each other that they know the job's secret
//! ([`crate::interactive`]), and it reads the terminal's type, control characters and size
//! ([`hpcbox_pbs::interactive`]); the job's shell then runs on
//! the pseudo-terminal's slave side, and two threads copy bytes between the connection and the
//! master side until either ends: `qsub` leaving hangs the job up, as a closed terminal would
//! (the agent signals the job, which it knows still runs), and the job's last process closing
//! the terminal ends the connection.

use std::fs::File;
use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hpcbox_pbs::exit::JOB_EXEC_FAIL1;
use hpcbox_pbs::interactive::{Hello, Proof, TerminalSettings};
use nix::fcntl::OFlag;
use nix::sys::termios::{self, SetArg};
use nix::unistd::Uid;

use tokio::sync::mpsc::UnboundedSender;

use super::setup::{Prepared, StartError};
use crate::api::InteractiveTarget;
use crate::interactive::{self, pump, Ended, TERMINAL_CONTROL};
use crate::protocol::JobStart;

/// How long the agent tries each address of `qsub`'s host (the handshake after has its own
/// deadline, [`interactive::HANDSHAKE_TIMEOUT`]).
const REACH_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a finished job's last output may take to reach `qsub` before the connection is
/// closed under it.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

/// A job's terminal, connected to its `qsub` but not yet relaying.
#[derive(Debug)]
pub(crate) struct Terminal {
    master: File,
    /// The slave side (`/dev/pts/N`), which the job opens as its controlling terminal.
    pub path: PathBuf,
    socket: TcpStream,
    /// `qsub`'s terminal type, the job's `TERM`.
    pub term: String,
}

/// What the terminal side of interactive jobs tells the agent.
pub(crate) enum TerminalEvent {
    /// A job's `qsub` was reached, or not.
    Reached(Box<Reached>),
    /// The `qsub` of the job (its id) went away while the job's terminal was open.
    QsubLeft(String),
}

/// A terminal being relayed: ends when the job's processes have all closed it or `qsub` left.
#[derive(Debug)]
pub(crate) struct Relay {
    socket: TcpStream,
    from_terminal: JoinHandle<()>,
}

/// An interactive job whose `qsub` a thread tried to reach ([`reach`]).
pub(crate) struct Reached {
    /// The job.
    pub start: JobStart,
    /// Its files and launch, made before the attempt.
    pub prepared: Prepared,
    /// Its terminal, or why there is none.
    pub terminal: Result<Terminal, StartError>,
}

/// Reaches the `qsub` of interactive job `start` in a thread of its own and sends what came of
/// it to `done` (in this thread, should no thread start).
pub(crate) fn reach(start: JobStart, prepared: Prepared, done: UnboundedSender<TerminalEvent>) {
    let job = Arc::new(Mutex::new(Some((start, prepared))));
    let spawned = std::thread::Builder::new()
        .name("terminal-reach".into())
        .spawn({
            let (job, done) = (Arc::clone(&job), done.clone());
            move || attempt_to_reach(&job, &done)
        });
    if let Err(err) = spawned {
        tracing::warn!(%err, "no thread to reach an interactive qsub: reaching it here");
        attempt_to_reach(&job, &done);
    }
}

/// Reaches the `qsub` of the job in `job`, unless another attempt took it, and tells `done`.
fn attempt_to_reach(
    job: &Mutex<Option<(JobStart, Prepared)>>,
    done: &UnboundedSender<TerminalEvent>,
) {
    let taken = job.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some((start, prepared)) = taken {
        let _ = done.send(TerminalEvent::Reached(Box::new(reached(start, prepared))));
    }
}

fn reached(start: JobStart, prepared: Prepared) -> Reached {
    let owner = prepared.launch.credentials.as_ref().map(|c| c.uid);
    let terminal = match &start.interactive {
        Some(target) => open(target, &start.job_id, owner),
        None => Err(StartError {
            exit_status: JOB_EXEC_FAIL1,
            message: "not an interactive job".into(),
        }),
    };
    Reached {
        start,
        prepared,
        terminal,
    }
}

/// Connects to the `qsub` of job `job_id` and makes the job's terminal like `qsub`'s, owned by
/// `owner` (the agent's own user when `None`). A failure is PBS's `JOB_EXEC_FAIL1`.
fn open(
    target: &InteractiveTarget,
    job_id: &str,
    owner: Option<Uid>,
) -> Result<Terminal, StartError> {
    let fail = |what: &str, err: &dyn std::fmt::Display| StartError {
        exit_status: JOB_EXEC_FAIL1,
        message: format!(
            "cannot {what} the interactive qsub on {}:{}: {err}",
            target.host, target.port
        ),
    };
    let mut socket = connect(target).map_err(|err| fail("reach", &err))?;
    let settings =
        greet(&mut socket, job_id, &target.secret).map_err(|err| fail("talk to", &err))?;
    let (master, path) =
        pseudo_terminal(&settings, owner).map_err(|err| fail("make a terminal for", &err))?;
    Ok(Terminal {
        master,
        path,
        socket,
        term: settings.term,
    })
}

/// A connection to `target`: its host's addresses in turn, this machine's own when the name
/// does not resolve here (a virtual node of the submit host).
fn connect(target: &InteractiveTarget) -> io::Result<TcpStream> {
    let addrs: Vec<SocketAddr> = (target.host.as_str(), target.port)
        .to_socket_addrs()
        .map(Iterator::collect)
        .unwrap_or_else(|_| vec![SocketAddr::from(([127, 0, 0, 1], target.port))]);
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, REACH_TIMEOUT) {
            Ok(socket) => return Ok(socket),
            Err(err) => last = err,
        }
    }
    Err(last)
}

/// Names the job to `qsub`, checks `qsub`'s proof that it knows the job's secret, gives its
/// own, and reads the terminal's settings, all within [`interactive::HANDSHAKE_TIMEOUT`].
fn greet(socket: &mut TcpStream, job_id: &str, secret: &str) -> io::Result<TerminalSettings> {
    let deadline = Instant::now() + interactive::HANDSHAKE_TIMEOUT;
    socket.set_write_timeout(Some(interactive::HANDSHAKE_TIMEOUT))?;
    let hello = Hello {
        job_id: job_id.to_string(),
        nonce: interactive::nonce()?,
    };
    socket.write_all(hello.to_string().as_bytes())?;
    let line = interactive::read_line_by(socket, deadline)?;
    let proven = Proof::parse(&line).filter(|proof| {
        interactive::proves(
            secret,
            interactive::End::Qsub,
            job_id,
            &hello.nonce,
            &proof.mac,
        )
    });
    let Some(their_nonce) = proven.and_then(|proof| proof.nonce) else {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "what listens there does not know the job's secret",
        ));
    };
    let ours = Proof {
        mac: interactive::proof(secret, interactive::End::Node, job_id, &their_nonce),
        nonce: None,
    };
    socket.write_all(ours.to_string().as_bytes())?;
    let mut text = String::new();
    for _ in 0..3 {
        text.push_str(&interactive::read_line_by(socket, deadline)?);
    }
    socket.set_write_timeout(None)?;
    // Keys typed as soon as qsub said "ready" are still in the socket, for the relay.
    TerminalSettings::parse(&text).map_err(|err| io::Error::new(io::ErrorKind::InvalidData, err))
}

/// A pseudo-terminal with `settings`' control characters and size, its slave side owned by
/// `owner`: the master side and the slave's path.
fn pseudo_terminal(settings: &TerminalSettings, owner: Option<Uid>) -> io::Result<(File, PathBuf)> {
    let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)?;
    nix::pty::grantpt(&master)?;
    nix::pty::unlockpt(&master)?;
    let path = PathBuf::from(nix::pty::ptsname_r(&master)?);
    if let Some(uid) = owner {
        nix::unistd::chown(&path, Some(uid), None)?;
    }
    // Terminal settings made on the master side are the slave's (Linux).
    let mut modes = termios::tcgetattr(&master)?;
    for (index, value) in TERMINAL_CONTROL.into_iter().zip(settings.control) {
        modes.control_chars[index as usize] = value;
    }
    termios::tcsetattr(&master, SetArg::TCSANOW, &modes)?;
    let size = nix::libc::winsize {
        ws_row: settings.rows,
        ws_col: settings.cols,
        ws_xpixel: settings.xpixel,
        ws_ypixel: settings.ypixel,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from the pointer, which outlives the call.
    if unsafe { nix::libc::ioctl(master.as_raw_fd(), nix::libc::TIOCSWINSZ, &size) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let master: OwnedFd = master.into();
    Ok((File::from(master), path))
}

impl Terminal {
    /// Starts copying between `qsub` and the terminal of job `job_id`, which its processes
    /// now have open; `events` hears when `qsub` goes away first.
    pub fn relay(self, job_id: &str, events: UnboundedSender<TerminalEvent>) -> io::Result<Relay> {
        let Terminal { master, socket, .. } = self;
        let (mut to_master, mut from_socket) = (master.try_clone()?, socket.try_clone()?);
        let (mut from_master, mut to_socket) = (master, socket.try_clone()?);
        // Set before the terminal's end closes the connection, which ends the other copy too.
        let closed = Arc::new(AtomicBool::new(false));
        let closed_seen = Arc::clone(&closed);
        let job_id = job_id.to_string();
        std::thread::Builder::new()
            .name("terminal-in".into())
            .spawn(move || {
                let ended = pump(&mut from_socket, &mut to_master);
                // The connection ended before the terminal did: qsub went away.
                if ended == Ended::Source && !closed_seen.load(Ordering::Acquire) {
                    let _ = events.send(TerminalEvent::QsubLeft(job_id));
                }
            })?;
        let from_terminal = std::thread::Builder::new()
            .name("terminal-out".into())
            .spawn(move || {
                // The terminal's end (EIO) comes once every process of the job has closed it.
                if pump(&mut from_master, &mut to_socket) == Ended::Source {
                    closed.store(true, Ordering::Release);
                }
                let _ = to_socket.shutdown(Shutdown::Both);
            })?;
        Ok(Relay {
            socket,
            from_terminal,
        })
    }
}

impl Relay {
    /// Ends the relay once the job has ended: its last output goes to `qsub` (for a moment at
    /// most), then the connection closes, which tells `qsub` the job is over.
    pub async fn close(self) {
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        while !self.from_terminal.is_finished() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = self.socket.shutdown(Shutdown::Both);
    }
}

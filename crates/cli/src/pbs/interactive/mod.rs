//! `qsub -I`: an interactive job. As PBS's `qsub` does, it listens on a port of this host,
//! submits the job with that address (and a secret of its own), says it waits, and once the
//! job's node connects it hands this terminal over to the job's shell until the job ends.

mod session;

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hpcbox_cluster::api::{Action, InteractiveTarget, JobAction, StatusItem, StatusRequest};
use hpcbox_cluster::interactive::{self, End};
use hpcbox_pbs::interactive::{Hello, Proof};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

use super::qsub::submit;
use crate::submission::Prepared;

/// How often `qsub` asks the server whether the job it waits for still exists.
const CHECK_EVERY: Duration = Duration::from_secs(5);

/// How long `qsub` waits for an answer to "terminate the job?" (PBS's 60 seconds).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// Set by SIGINT and SIGTERM while the job waits.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);
/// Set by SIGTSTP while the job waits.
static SUSPEND_TRIED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_interrupt(_: nix::libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

extern "C" fn on_suspend(_: nix::libc::c_int) {
    SUSPEND_TRIED.store(true, Ordering::SeqCst);
}

/// Submits `prepared` as an interactive job and runs its session; `qsub`'s exit status.
pub fn run(prepared: &Prepared, argv: &[String]) -> i32 {
    use std::io::IsTerminal;
    if !std::io::stdin().is_terminal() || !std::io::stdout().is_terminal() {
        eprint!("qsub:\tstandard input and output must be a terminal for\n\tinteractive job submission\n");
        return 1;
    }
    if prepared.options.x11 {
        eprintln!(
            "qsub: X11 forwarding (-X) is not supported by hpcbox: the session has no display"
        );
    }
    let (listeners, port, secret) = match listen() {
        Ok(found) => found,
        Err(err) => {
            eprintln!("qsub: unable to listen for the interactive job: {err}");
            return 1;
        }
    };
    let mut request = prepared.request(argv);
    request.interactive = Some(InteractiveTarget {
        host: prepared.submitter.host.clone(),
        port,
        secret: secret.clone(),
    });
    let job_id = match submit(&request) {
        Ok(job_id) => job_id,
        Err(code) => return code,
    };
    let before = catch_waiting_signals();
    println!("qsub: waiting for job {job_id} to start");
    let node = wait_for_node(&listeners, &job_id, &secret);
    restore_signals(&before);
    match node {
        Ok(node) => session::serve(node, &job_id),
        Err(code) => code,
    }
}

/// Listening sockets on one port of every address of this host, IPv4 and IPv6 alike (so that
/// no other process can listen on that port for the family left out, and be reached by the
/// job's node instead), the port, and a fresh secret.
fn listen() -> std::io::Result<(Vec<TcpListener>, u16, String)> {
    let secret = hpcbox_cluster::random::random_hex(16)?;
    let Ok(six) = TcpListener::bind(("::", 0)) else {
        // No IPv6 here: nobody can listen there either.
        let four = TcpListener::bind(("0.0.0.0", 0))?;
        let port = four.local_addr()?.port();
        return Ok((vec![four], port, secret));
    };
    let port = six.local_addr()?.port();
    // Where IPv6 sockets take IPv4 too (Linux's default), this fails: the port is ours in both.
    match TcpListener::bind(("0.0.0.0", port)) {
        Ok(four) => Ok((vec![six, four], port, secret)),
        Err(err) if err.kind() == std::io::ErrorKind::AddrInUse => Ok((vec![six], port, secret)),
        Err(err) => Err(err),
    }
}

/// The signals caught while the job waits.
const WAITING_SIGNALS: [Signal; 3] = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGTSTP];

/// While the job waits: SIGINT and SIGTERM ask whether to delete it, SIGTSTP is refused (as
/// PBS's `qsub` does). Returns the actions they had, for [`restore_signals`].
fn catch_waiting_signals() -> Vec<(Signal, SigAction)> {
    let mut before = Vec::new();
    for signal in WAITING_SIGNALS {
        let handler = if signal == Signal::SIGTSTP {
            on_suspend
        } else {
            on_interrupt
        };
        // No SA_RESTART: a signal wakes the waiting poll.
        let action = SigAction::new(
            SigHandler::Handler(handler),
            SaFlags::empty(),
            SigSet::empty(),
        );
        // SAFETY: the handlers only store to atomics, which is async-signal-safe.
        if let Ok(old) = unsafe { sigaction(signal, &action) } {
            before.push((signal, old));
        }
    }
    before
}

/// Gives the signals back the actions they had before the wait (ignored ones stay ignored).
fn restore_signals(before: &[(Signal, SigAction)]) {
    for (signal, action) in before {
        // SAFETY: an action this process had before.
        let _ = unsafe { sigaction(*signal, action) };
    }
}

/// Waits until the node of `job_id` connects and proves it runs the job: the connection, or
/// `qsub`'s exit status when the job went away or the user gave it up.
fn wait_for_node(listeners: &[TcpListener], job_id: &str, secret: &str) -> Result<TcpStream, i32> {
    let mut last_check = Instant::now();
    // Each connection proves itself in a thread of its own, so that none holds up another
    // (the node's included); the first that proves itself is the node.
    let (proven_tx, proven) = std::sync::mpsc::channel::<TcpStream>();
    loop {
        if let Ok(node) = proven.try_recv() {
            return Ok(node);
        }
        if INTERRUPTED.swap(false, Ordering::SeqCst) {
            if wants_to_terminate() {
                return Err(bail_out(job_id));
            }
            // Interrupts while the question was asked were answered by it.
            INTERRUPTED.store(false, Ordering::SeqCst);
        }
        if SUSPEND_TRIED.swap(false, Ordering::SeqCst) {
            println!("Sorry, you cannot suspend qsub until the job is started");
        }
        if last_check.elapsed() >= CHECK_EVERY {
            last_check = Instant::now();
            if !job_exists(job_id) {
                eprintln!("qsub: job {job_id} apparently deleted");
                return Err(1);
            }
        }
        let mut fds: Vec<PollFd<'_>> = listeners
            .iter()
            .map(|l| PollFd::new(l.as_fd(), PollFlags::POLLIN))
            .collect();
        if !matches!(poll(&mut fds, PollTimeout::from(100u16)), Ok(n) if n > 0) {
            continue;
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|fd| fd.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        for (listener, _) in listeners.iter().zip(ready).filter(|(_, ready)| *ready) {
            let Ok((mut stream, _)) = listener.accept() else {
                continue;
            };
            let (job_id, secret, proven_tx) =
                (job_id.to_string(), secret.to_string(), proven_tx.clone());
            std::thread::spawn(move || {
                // PBS's words for a node that fails; qsub goes on waiting for the right one.
                match authenticate(&mut stream, &job_id, &secret) {
                    Ok(()) => {
                        let _ = proven_tx.send(stream);
                    }
                    Err(Refused::OtherJob) => {
                        eprintln!("qsub: invalid job name from execution server")
                    }
                    Err(Refused::NoProof) => {
                        eprintln!("qsub: failed authentication with execution host")
                    }
                }
            });
        }
    }
}

/// Why a connection was not taken for the job's node.
enum Refused {
    /// It named another job.
    OtherJob,
    /// It did not prove, in time, that it knows the job's secret.
    NoProof,
}

/// The node's hello, `qsub`'s proof over its nonce, and the node's over `qsub`'s
/// ([`hpcbox_pbs::interactive`]): each end shows it knows the job's secret without sending it.
fn authenticate(stream: &mut TcpStream, job_id: &str, secret: &str) -> Result<(), Refused> {
    let deadline = Instant::now() + interactive::HANDSHAKE_TIMEOUT;
    let line = interactive::read_line_by(stream, deadline).ok();
    let hello = line.as_deref().and_then(Hello::parse);
    let hello = hello.ok_or(Refused::NoProof)?;
    if hello.job_id != job_id {
        return Err(Refused::OtherJob);
    }
    let ours = interactive::nonce().map_err(|_| Refused::NoProof)?;
    let proof = Proof {
        mac: interactive::proof(secret, End::Qsub, job_id, &hello.nonce),
        nonce: Some(ours.clone()),
    };
    stream
        .set_write_timeout(Some(interactive::HANDSHAKE_TIMEOUT))
        .and_then(|()| stream.write_all(proof.to_string().as_bytes()))
        .map_err(|_| Refused::NoProof)?;
    let line = interactive::read_line_by(stream, deadline).ok();
    let theirs = line.as_deref().and_then(Proof::parse);
    if !theirs.is_some_and(|p| interactive::proves(secret, End::Node, job_id, &ours, &p.mac)) {
        return Err(Refused::NoProof);
    }
    stream
        .set_write_timeout(None)
        .map_err(|_| Refused::NoProof)?;
    Ok(())
}

/// Whether the job is still there to wait for (a server that cannot be reached now may be
/// restarting: it is waited for).
fn job_exists(job_id: &str) -> bool {
    let request = StatusRequest {
        ids: vec![job_id.to_string()],
        history: false,
        subjobs: false,
        attributes: vec!["job_state".into()],
    };
    match super::client().status(&request) {
        Err(_) => true,
        Ok(items) => items.iter().any(|item| {
            matches!(item, StatusItem::Job(job) if job.get("job_state").is_some_and(|s| s != "F"))
        }),
    }
}

/// PBS's question on an interrupt while the job waits; `true` to delete the job and leave. No
/// answer within a minute deletes it too.
fn wants_to_terminate() -> bool {
    let stdin = std::io::stdin();
    loop {
        print!("Do you wish to terminate the job and exit (y|[n])? ");
        let _ = std::io::stdout().flush();
        if !answer_comes(&stdin) {
            println!("Timeout -- deleting job");
            return true;
        }
        let mut answer = String::new();
        if stdin.read_line(&mut answer).unwrap_or(0) == 0 {
            return true;
        }
        match answer.chars().next() {
            Some('n' | 'N' | '\n') => return false,
            Some('y' | 'Y') => return true,
            _ => println!("yes or no please"),
        }
    }
}

/// Whether standard input has an answer within [`ANSWER_TIMEOUT`] (another interrupt while
/// it waits changes nothing, as PBS blocks it while asking).
fn answer_comes(stdin: &std::io::Stdin) -> bool {
    let deadline = Instant::now() + ANSWER_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut fds = [PollFd::new(stdin.as_fd(), PollFlags::POLLIN)];
        let timeout = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
        match poll(&mut fds, timeout) {
            Ok(n) if n > 0 => return true,
            Err(nix::errno::Errno::EINTR) if !left.is_zero() => continue,
            _ => return false,
        }
    }
}

/// Deletes the job `qsub` gave up waiting for, as PBS's `bailout`; `qsub`'s exit status.
fn bail_out(job_id: &str) -> i32 {
    println!("Job {job_id} is being deleted");
    let delete = JobAction {
        id: job_id.to_string(),
        action: Action::Delete { force: false },
    };
    match super::client().act(&delete) {
        Err(err) => super::unreachable("qsub", &err),
        Ok(_) => 0,
    }
}

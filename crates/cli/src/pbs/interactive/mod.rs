//! `qsub -I`: an interactive job. As PBS's `qsub` does, it listens on a port of this host,
//! submits the job with that address (and a secret of its own), says it waits, and once the
//! job's node connects it hands this terminal over to the job's shell until the job ends.

mod session;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hpcbox_cluster::api::{Action, InteractiveTarget, JobAction, StatusItem, StatusRequest};
use hpcbox_pbs::interactive::{Hello, MAX_LINE};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

use super::qsub::submit;
use crate::submission::Prepared;

/// How often `qsub` asks the server whether the job it waits for still exists.
const CHECK_EVERY: Duration = Duration::from_secs(5);

/// How long a connecting node may take to name its job.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

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
    let (listener, secret) = match listen() {
        Ok(found) => found,
        Err(err) => {
            eprintln!("qsub: unable to listen for the interactive job: {err}");
            return 1;
        }
    };
    let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
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
    catch_waiting_signals(true);
    println!("qsub: waiting for job {job_id} to start");
    let node = wait_for_node(&listener, &job_id, &secret);
    catch_waiting_signals(false);
    match node {
        Ok(node) => session::serve(node, &job_id),
        Err(code) => code,
    }
}

/// A listening socket on every address of this host (as PBS's), and a fresh secret.
fn listen() -> std::io::Result<(TcpListener, String)> {
    let listener = TcpListener::bind(("0.0.0.0", 0))?;
    let secret = hpcbox_cluster::random::random_hex(16)?;
    Ok((listener, secret))
}

/// While the job waits: SIGINT and SIGTERM ask whether to delete it, SIGTSTP is refused (as
/// PBS's `qsub` does); afterwards (`catch` false) they act as they normally do.
fn catch_waiting_signals(catch: bool) {
    let action = |handler: extern "C" fn(nix::libc::c_int)| {
        let handler = if catch {
            SigHandler::Handler(handler)
        } else {
            SigHandler::SigDfl
        };
        // No SA_RESTART: a signal wakes the waiting poll.
        SigAction::new(handler, SaFlags::empty(), SigSet::empty())
    };
    // SAFETY: the handlers only store to atomics, which is async-signal-safe.
    unsafe {
        let _ = sigaction(Signal::SIGINT, &action(on_interrupt));
        let _ = sigaction(Signal::SIGTERM, &action(on_interrupt));
        let _ = sigaction(Signal::SIGTSTP, &action(on_suspend));
    }
}

/// Waits until the node of `job_id` connects and proves it runs the job: the connection, or
/// `qsub`'s exit status when the job went away or the user gave it up.
fn wait_for_node(listener: &TcpListener, job_id: &str, secret: &str) -> Result<TcpStream, i32> {
    let mut last_check = Instant::now();
    loop {
        if INTERRUPTED.swap(false, Ordering::SeqCst) && wants_to_terminate() {
            return Err(bail_out(job_id));
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
        let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
        if !matches!(poll(&mut fds, PollTimeout::from(500u16)), Ok(n) if n > 0) {
            continue;
        }
        let Ok((mut stream, _)) = listener.accept() else {
            continue;
        };
        if named_job(&mut stream)
            .is_some_and(|hello| hello.job_id == job_id && hello.secret == secret)
        {
            return Ok(stream);
        }
        eprintln!("qsub: failed authentication with execution host");
    }
}

/// The job a connecting node names in its first line, if it names one in time.
fn named_job(stream: &mut TcpStream) -> Option<Hello> {
    stream.set_read_timeout(Some(HELLO_TIMEOUT)).ok()?;
    let mut line = String::new();
    BufReader::new(stream.try_clone().ok()?.take(MAX_LINE as u64))
        .read_line(&mut line)
        .ok()?;
    stream.set_read_timeout(None).ok()?;
    Hello::parse(&line)
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
        let mut fds = [PollFd::new(stdin.as_fd(), PollFlags::POLLIN)];
        let timeout = PollTimeout::try_from(ANSWER_TIMEOUT).unwrap_or(PollTimeout::MAX);
        if !matches!(poll(&mut fds, timeout), Ok(n) if n > 0) {
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

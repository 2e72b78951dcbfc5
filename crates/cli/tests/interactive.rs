//! End to end: `qsub -I` (and `qsub` reading a script typed at the terminal), driven from a
//! pseudo-terminal as a user at a terminal drives them.

mod common;

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{text, wait_until, Cluster};

/// `qsub args` on a terminal of its own, with everything it prints collected.
struct Terminal {
    child: Child,
    keyboard: std::fs::File,
    screen: Arc<Mutex<Vec<u8>>>,
}

impl Terminal {
    fn qsub(cluster: &Cluster, args: &[&str]) -> Terminal {
        let pty = nix::pty::openpty(None, None).unwrap();
        let slave = |fd: &OwnedFd| Stdio::from(fd.try_clone().unwrap());
        let mut command = cluster.command("qsub");
        command
            .args(args)
            .env("TERM", "xterm")
            .stdin(slave(&pty.slave))
            .stdout(slave(&pty.slave))
            .stderr(slave(&pty.slave));
        // As a login does: a session of its own with the terminal as its controlling one, so
        // that ^C typed there interrupts qsub.
        // SAFETY: setsid and ioctl are async-signal-safe and allocate nothing.
        unsafe {
            command.pre_exec(|| {
                nix::unistd::setsid()?;
                if nix::libc::ioctl(0, nix::libc::TIOCSCTTY, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().unwrap();
        drop(pty.slave);
        let keyboard = std::fs::File::from(pty.master);
        let screen = Arc::new(Mutex::new(Vec::new()));
        let (mut display, shown) = (keyboard.try_clone().unwrap(), Arc::clone(&screen));
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // Ends with EIO once qsub (the last holder of the terminal) has exited.
            while let Ok(n) = display.read(&mut buf) {
                if n == 0 {
                    break;
                }
                shown.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Terminal {
            child,
            keyboard,
            screen,
        }
    }

    fn screen(&self) -> String {
        text(&self.screen.lock().unwrap())
    }

    /// Waits (at most a minute) until the screen shows `what`.
    fn expect(&self, what: &str) {
        wait_until(&format!("{what:?} on the screen"), || {
            self.screen().contains(what)
        });
    }

    fn type_keys(&mut self, keys: &str) {
        self.keyboard.write_all(keys.as_bytes()).unwrap();
    }

    /// The job id from `qsub: waiting for job <id> to start`.
    fn job_id(&self) -> String {
        self.expect(" to start");
        let screen = self.screen();
        let after = screen.split("waiting for job ").nth(1).unwrap();
        after.split(' ').next().unwrap().to_string()
    }

    /// qsub's exit status, once it has exited (at most 30 s).
    fn exit_status(&mut self) -> i32 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap();
            }
            assert!(
                Instant::now() < deadline,
                "qsub never exited: {}",
                self.screen()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn an_interactive_job_runs_a_shell_on_this_terminal_until_it_exits() {
    let cluster = Cluster::up(&["--cpus", "1", "--mem", "256mb"]);
    let mut terminal = Terminal::qsub(&cluster, &["-I", "-l", "walltime=120"]);
    let id = terminal.job_id();
    terminal.expect(&format!("qsub: job {id} ready\r\n\r\n"));
    terminal.type_keys("echo \"in $PBS_ENVIRONMENT as $PBS_JOBID on $TERM\"; tty; exit 3\r");
    terminal.expect(&format!("in PBS_INTERACTIVE as {id} on xterm"));
    terminal.expect("/dev/pts/");
    terminal.expect(&format!("qsub: job {id} completed"));
    assert_eq!(terminal.exit_status(), 0);
    cluster.wait_state(&id, "F");
    assert_eq!(cluster.attr(&id, "Exit_status").as_deref(), Some("3"));
    assert_eq!(cluster.attr(&id, "interactive").as_deref(), Some("True"));
    assert_eq!(cluster.attr(&id, "Job_Name").as_deref(), Some("STDIN"));
}

#[test]
fn tilde_dot_leaves_the_session_and_hangs_up_its_job() {
    let cluster = Cluster::up(&["--cpus", "1", "--mem", "256mb"]);
    let mut terminal = Terminal::qsub(&cluster, &["-I"]);
    let id = terminal.job_id();
    terminal.expect("ready");
    terminal.type_keys("echo started; sleep 1000\r");
    terminal.expect("started\r\n");
    terminal.type_keys("~.");
    terminal.expect(&format!("qsub: job {id} completed"));
    assert_eq!(terminal.exit_status(), 0);
    // The shell got the hang-up a closed terminal gives, and the job ended with it.
    cluster.wait_state(&id, "F");
}

#[test]
fn a_limit_kill_is_told_on_the_terminal() {
    let cluster = Cluster::up(&["--cpus", "1", "--mem", "256mb"]);
    let mut terminal = Terminal::qsub(&cluster, &["-I", "-l", "walltime=2"]);
    let id = terminal.job_id();
    terminal.expect("ready");
    terminal.type_keys("sleep 1000\r");
    terminal.expect("=>> PBS: job killed: walltime");
    terminal.expect(&format!("qsub: job {id} completed"));
    assert_eq!(terminal.exit_status(), 0);
    cluster.wait_state(&id, "F");
    assert_eq!(cluster.attr(&id, "Exit_status").as_deref(), Some("-29"));
}

#[test]
fn a_waiting_interactive_job_may_be_given_up_or_deleted() {
    let cluster = Cluster::up(&["--cpus", "1", "--mem", "256mb"]);
    let busy = cluster.qsub("busy.pbs", "sleep 1000\n", &[]);
    cluster.wait_state(&busy, "R");

    // An interrupt asks whether to give up; "y" deletes the job.
    let mut terminal = Terminal::qsub(&cluster, &["-I"]);
    let id = terminal.job_id();
    terminal.type_keys("\x03");
    terminal.expect("Do you wish to terminate the job and exit (y|[n])? ");
    terminal.type_keys("maybe\n");
    terminal.expect("yes or no please");
    terminal.type_keys("y\n");
    terminal.expect(&format!("Job {id} is being deleted"));
    assert_eq!(terminal.exit_status(), 0);
    cluster.wait_state(&id, "F");

    // Deleted by someone else while it waits: qsub notices and says so.
    let mut terminal = Terminal::qsub(&cluster, &["-I"]);
    let id = terminal.job_id();
    assert!(cluster.run("qdel", &[&id]).status.success());
    terminal.expect(&format!("qsub: job {id} apparently deleted"));
    assert_eq!(terminal.exit_status(), 1);
}

#[test]
fn qsub_dash_i_needs_a_terminal() {
    let cluster = Cluster::up(&["--cpus", "1", "--mem", "256mb"]);
    let out = cluster
        .command("qsub")
        .arg("-I")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "qsub:\tstandard input and output must be a terminal for\n\tinteractive job submission\n"
    );
    let listed = cluster.run("qstat", &["-x"]);
    assert_eq!(text(&listed.stdout), "", "a job was submitted");
}

#[test]
fn a_script_typed_at_the_terminal_is_asked_for_and_read_to_its_end() {
    let cluster = Cluster::up(&["--cpus", "1", "--mem", "256mb"]);
    let mut terminal = Terminal::qsub(&cluster, &[]);
    terminal.expect("Job script will be read from standard input. Submit with CTRL+D.\r\n");
    terminal.type_keys("echo typed\n\x04");
    assert_eq!(terminal.exit_status(), 0);
    let screen = terminal.screen();
    let id = screen.lines().last().unwrap().trim().to_string();
    cluster.wait_state(&id, "F");
    assert_eq!(
        cluster.read(&format!("STDIN.o{}", common::seq(&id))),
        "typed\n"
    );
}

/// A `qsub -I` that does not answer (stopped here after its job was submitted held) holds up
/// only its own job: the node's agent reaches it in a thread of its own, and meanwhile starts
/// and ends another job; the interactive job then fails to start, as PBS's does.
#[test]
fn a_qsub_that_does_not_answer_holds_up_no_other_job() {
    let cluster = Cluster::up(&["--cpus", "2", "--mem", "256mb"]);
    let terminal = Terminal::qsub(&cluster, &["-I", "-h"]);
    let id = terminal.job_id();
    let qsub = nix::unistd::Pid::from_raw(terminal.child.id() as i32);
    nix::sys::signal::kill(qsub, nix::sys::signal::Signal::SIGSTOP).unwrap();
    assert!(cluster.run("qrls", &[&id]).status.success());
    cluster.wait_state(&id, "R");
    let other = cluster.qsub("other.pbs", "echo other\n", &[]);
    cluster.wait_state(&other, "F");
    // The agent gives a silent qsub seconds before the job fails: the other job came first.
    assert_eq!(cluster.attr(&id, "job_state").as_deref(), Some("R"));
    cluster.wait_state(&id, "F");
    assert_eq!(cluster.attr(&id, "Exit_status").as_deref(), Some("-1"));
    let comment = cluster.attr(&id, "comment").unwrap_or_default();
    assert!(comment.contains("interactive qsub"), "{comment}");
    nix::sys::signal::kill(qsub, nix::sys::signal::Signal::SIGCONT).unwrap();
}

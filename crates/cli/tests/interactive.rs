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
        let mut command = cluster.command("qsub");
        command.args(args);
        Terminal::run(command)
    }

    /// `command` on a terminal of its own, as the leader of its session.
    fn run(mut command: std::process::Command) -> Terminal {
        let pty = nix::pty::openpty(None, None).unwrap();
        let slave = |fd: &OwnedFd| Stdio::from(fd.try_clone().unwrap());
        command
            .env("TERM", "xterm")
            .stdin(slave(&pty.slave))
            .stdout(slave(&pty.slave))
            .stderr(slave(&pty.slave));
        // As a login does: a session of its own with the terminal as its controlling one, so
        // that ^C typed there interrupts what runs on it.
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

/// Output that ends no line (a prompt, a key's echo) shows at once.
#[test]
fn output_without_a_newline_shows_at_once() {
    let cluster = Cluster::up(&["--cpus", "1", "--mem", "256mb"]);
    let mut terminal = Terminal::qsub(&cluster, &["-I"]);
    terminal.expect("ready");
    terminal.type_keys("printf 'X%sZ' Y; sleep 1000\r");
    terminal.expect("XYZ");
    terminal.type_keys("~.");
    assert_eq!(terminal.exit_status(), 0);
}

/// The port a process listens on (TCP, either family), from its sockets' inodes in /proc.
fn listening_port(pid: u32) -> u16 {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|link| {
            let link = link.to_string_lossy().into_owned();
            Some(
                link.strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_string(),
            )
        })
        .collect();
    let tables = ["/proc/net/tcp", "/proc/net/tcp6"]
        .map(|path| std::fs::read_to_string(path).unwrap_or_default());
    tables
        .iter()
        .flat_map(|table| table.lines().skip(1))
        .find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let listening = fields.get(3) == Some(&"0A");
            let ours = fields
                .get(9)
                .is_some_and(|inode| inodes.iter().any(|i| i == inode));
            let port = fields.get(1)?.rsplit(':').next()?;
            (listening && ours).then(|| u16::from_str_radix(port, 16).ok())?
        })
        .expect("qsub listens on a port")
}

/// A process that connects to a waiting qsub naming its job, but cannot prove it knows the
/// job's secret, gets no terminal: qsub says so and goes on waiting.
#[test]
fn a_connection_that_cannot_prove_the_secret_gets_no_terminal() {
    use std::io::BufRead;
    let cluster = Cluster::up(&["--cpus", "1", "--mem", "256mb"]);
    let terminal = Terminal::qsub(&cluster, &["-I", "-h"]);
    let id = terminal.job_id();
    let port = listening_port(terminal.child.id());
    let mut impostor = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    writeln!(impostor, "hpcbox-interactive {id} 0123").unwrap();
    let mut reader = std::io::BufReader::new(impostor.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("proof "), "{line:?}");
    writeln!(impostor, "proof {}", "00".repeat(32)).unwrap();
    terminal.expect("qsub: failed authentication with execution host");
    // Nothing more came: no terminal settings, no session.
    let mut rest = String::new();
    impostor
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let _ = reader.read_line(&mut rest);
    assert_eq!(rest, "");
    assert!(
        !terminal.screen().contains("ready"),
        "{}",
        terminal.screen()
    );
    // The real node still gets it.
    assert!(cluster.run("qrls", &[&id]).status.success());
    terminal.expect(&format!("qsub: job {id} ready"));
}

/// A process that took a gone qsub's port gets no shell: the node asks it to prove it knows
/// the job's secret before it starts anything, and the job fails to start.
#[test]
fn a_process_in_a_gone_qsubs_place_gets_no_shell() {
    use std::io::{BufRead, Write as _};
    let cluster = Cluster::up(&["--cpus", "1", "--mem", "256mb"]);
    let mut terminal = Terminal::qsub(&cluster, &["-I", "-h"]);
    let id = terminal.job_id();
    let port = listening_port(terminal.child.id());
    terminal.child.kill().unwrap();
    terminal.child.wait().unwrap();
    let squatter = std::net::TcpListener::bind(("0.0.0.0", port)).unwrap();
    assert!(cluster.run("qrls", &[&id]).status.success());
    let (mut node, _) = squatter.accept().unwrap();
    let mut reader = std::io::BufReader::new(node.try_clone().unwrap());
    let mut hello = String::new();
    reader.read_line(&mut hello).unwrap();
    assert!(
        hello.starts_with(&format!("hpcbox-interactive {id} ")),
        "{hello:?}"
    );
    writeln!(node, "proof {} 4567", "00".repeat(32)).unwrap();
    node.write_all(b"TERM=xterm\nCC 3,28,127,21,4,26\nWINSIZE 24,80,0,0\nid\n")
        .unwrap();
    let mut rest = String::new();
    let _ = reader.read_line(&mut rest);
    assert_eq!(rest, "", "the node answered a process without the secret");
    cluster.wait_state(&id, "F");
    assert_eq!(cluster.attr(&id, "Exit_status").as_deref(), Some("-1"));
    let comment = cluster.attr(&id, "comment").unwrap_or_default();
    assert!(
        comment.contains("does not know the job's secret"),
        "{comment}"
    );
}

/// `~` and ^Z at a line's start stop qsub, as they stop PBS's: the shell qsub was started from
/// has the terminal back, and `fg` continues the session, raw again.
#[test]
fn tilde_and_suspend_stop_qsub_and_fg_continues_the_session() {
    let cluster = Cluster::up(&["--cpus", "1", "--mem", "256mb"]);
    let mut shell = std::process::Command::new("bash");
    shell
        .args(["--norc", "--noprofile", "-i"])
        .env("PS1", "outer$ ")
        .env("HPCBOX_HOME", &cluster.home)
        .current_dir(&cluster.work);
    let mut terminal = Terminal::run(shell);
    terminal.expect("outer$ ");
    terminal.type_keys(&format!("{} qsub -I\n", common::HPCBOX));
    terminal.expect("ready");
    terminal.type_keys("echo in-the-job\r");
    terminal.expect("in-the-job\r\n");
    terminal.type_keys("~\x1a");
    terminal.expect("Stopped");
    terminal.type_keys("echo in-the-outer-shell\n");
    terminal.expect("in-the-outer-shell\r\n");
    terminal.type_keys("fg\n");
    std::thread::sleep(Duration::from_millis(500));
    let before = terminal.screen().len();
    terminal.type_keys("echo back-in-the-job\r");
    terminal.expect("back-in-the-job\r\n");
    // Raw again: the keys went to the job's shell, not echoed by this terminal first.
    let after = terminal.screen()[before..].to_string();
    assert_eq!(
        after.matches("echo back-in-the-job").count(),
        1,
        "{after:?}"
    );
    terminal.type_keys("exit\r");
    terminal.expect("completed");
    terminal.type_keys("exit\n");
    assert_eq!(terminal.exit_status(), 0);
}

/// While qsub waits, its port is its own in both families: no other process can listen there
/// (over IPv6 beside qsub's IPv4, say) and be reached by the job's node in its place.
#[test]
fn a_waiting_qsubs_port_is_taken_in_both_families() {
    let cluster = Cluster::up(&["--cpus", "1", "--mem", "256mb"]);
    let terminal = Terminal::qsub(&cluster, &["-I", "-h"]);
    let id = terminal.job_id();
    let port = listening_port(terminal.child.id());
    for address in ["0.0.0.0", "::", "127.0.0.1"] {
        assert!(
            std::net::TcpListener::bind((address, port)).is_err(),
            "{address}:{port} was free"
        );
    }
    assert!(cluster.run("qdel", &[&id]).status.success());
}

/// A connection that says nothing holds up no other: the node, connecting after it, proves
/// itself while the silent one still waits.
#[test]
fn a_silent_connection_holds_up_no_node() {
    let cluster = Cluster::up(&["--cpus", "1", "--mem", "256mb"]);
    let terminal = Terminal::qsub(&cluster, &["-I", "-h"]);
    let id = terminal.job_id();
    let port = listening_port(terminal.child.id());
    let _silent = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    assert!(cluster.run("qrls", &[&id]).status.success());
    terminal.expect(&format!("qsub: job {id} ready"));
    assert!(
        !terminal.screen().contains("failed authentication"),
        "{}",
        terminal.screen()
    );
}

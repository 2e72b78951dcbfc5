//! The cluster every end-to-end test drives: `hpcbox` daemons in a temporary state directory,
//! run through the PBS commands as a user runs them, and stopped when dropped.
// Each test binary uses its own part of this module.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The binary under test.
pub const HPCBOX: &str = env!("CARGO_BIN_EXE_hpcbox");

/// A cluster of its own: state in `home`, jobs submitted from `work`; `hpcbox down` on drop.
pub struct Cluster {
    /// The temporary directory holding both.
    pub dir: tempfile::TempDir,
    /// The state directory (`HPCBOX_HOME`).
    pub home: PathBuf,
    /// Where jobs are submitted from.
    pub work: PathBuf,
}

impl Cluster {
    /// A state directory and a work directory, with nothing started in them yet.
    pub fn empty() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("state");
        let work = dir.path().join("work");
        std::fs::create_dir_all(&work).unwrap();
        Cluster { dir, home, work }
    }

    /// A cluster started by `hpcbox up args`.
    pub fn up(args: &[&str]) -> Cluster {
        let cluster = Cluster::empty();
        let out = cluster.run("up", args);
        assert!(out.status.success(), "hpcbox up: {}", text(&out.stderr));
        cluster
    }

    /// `hpcbox verb` in this cluster's environment, from the work directory.
    pub fn command(&self, verb: &str) -> Command {
        let mut command = Command::new(HPCBOX);
        command
            .arg(verb)
            .env("HPCBOX_HOME", &self.home)
            .env_remove("PBS_DPREFIX")
            .current_dir(&self.work);
        command
    }

    /// Runs `hpcbox verb args` to its end.
    pub fn run(&self, verb: &str, args: &[&str]) -> Output {
        self.command(verb).args(args).output().unwrap()
    }

    /// `qsub` of `script` (written to the work directory as `name`); returns the job id.
    pub fn qsub(&self, name: &str, script: &str, args: &[&str]) -> String {
        std::fs::write(self.work.join(name), script).unwrap();
        let mut all: Vec<&str> = args.to_vec();
        all.push(name);
        let out = self.run("qsub", &all);
        assert!(out.status.success(), "qsub: {}", text(&out.stderr));
        text(&out.stdout).trim().to_string()
    }

    /// An attribute of a job, from `qstat -x -f -w`.
    pub fn attr(&self, id: &str, name: &str) -> Option<String> {
        let out = self.run("qstat", &["-x", "-f", "-w", id]);
        let prefix = format!("    {name} = ");
        text(&out.stdout)
            .lines()
            .find_map(|line| line.strip_prefix(&prefix).map(str::to_string))
    }

    /// Waits (at most a minute) until job `id` is in `state`.
    pub fn wait_state(&self, id: &str, state: &str) {
        wait_until(&format!("job {id} in state {state}"), || {
            self.attr(id, "job_state").as_deref() == Some(state)
        });
    }

    /// A file of the work directory (empty when missing).
    pub fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.work.join(file)).unwrap_or_default()
    }

    /// The state directory.
    pub fn state(&self) -> &Path {
        &self.home
    }

    /// What to print when an assertion about job `id` fails: its `qstat -f`, and the last
    /// lines of the daemons' logs.
    pub fn diagnose(&self, id: &str) -> String {
        let mut out = text(&self.run("qstat", &["-x", "-f", "-w", id]).stdout);
        let logs = std::fs::read_dir(self.home.join("logs"))
            .into_iter()
            .flatten();
        for log in logs.flatten() {
            let lines = std::fs::read_to_string(log.path()).unwrap_or_default();
            let tail: Vec<&str> = lines.lines().rev().take(30).collect();
            out.push_str(&format!("\n--- {} (last lines)\n", log.path().display()));
            for line in tail.into_iter().rev() {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.run("down", &[]);
    }
}

/// Output bytes as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The sequence number of a job id (`12` of `12.srv` and `12[].srv`).
pub fn seq(id: &str) -> &str {
    let end = id.find(|c: char| !c.is_ascii_digit()).unwrap_or(id.len());
    &id[..end]
}

/// Waits (at most a minute, looking every 50 ms) until `done`.
pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The process id in file `path`.
pub fn read_pid(path: &Path) -> i32 {
    std::fs::read_to_string(path)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Sends SIGKILL to `pid` and waits (at most 10 s) until it is gone: the signal takes effect
/// asynchronously, and `hpcbox up` run before the process is gone finds it still there and
/// starts no new one.
pub fn kill_and_wait(pid: i32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while running(pid) {
        assert!(Instant::now() < deadline, "{pid} outlived SIGKILL");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Whether process `pid` runs (a zombie does not).
pub fn running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
    })
}

/// A running `hpcbox agent`, killed when dropped.
pub struct Agent(std::process::Child);

impl Agent {
    /// Starts `hpcbox agent args` with `HPCBOX_HOME` set to `home`, its output appended to
    /// `log`.
    pub fn start(args: &[&str], home: &Path, log: &Path) -> Agent {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = Command::new(HPCBOX)
            .arg("agent")
            .args(args)
            .env("HPCBOX_HOME", home)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        Agent(child)
    }

    /// Kills it (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}

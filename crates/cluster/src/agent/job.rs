//! A job while it runs on the node: its usage, its limits, how it is killed, and how it ends.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hpcbox_pbs::exit::{kill_message, shell_exit_status, LimitKill};
use nix::sys::signal::Signal;

use super::setup::JobFiles;
use super::terminal::Relay;
use crate::cgroup::MemCgroup;
use crate::exec::{self, RunningJob};
use crate::protocol::{AgentMessage, RunningReport, Usage};
use crate::usage::{total_usage, Exceeded, Limits};

/// How long the agent waits for a job's leftover processes to die after SIGKILL.
const LEFTOVER_WAIT: Duration = Duration::from_secs(5);

/// A started job.
#[derive(Debug)]
pub(crate) struct Job {
    id: String,
    process: RunningJob,
    files: JobFiles,
    /// Where the limit-kill message goes.
    messages: PathBuf,
    limits: Limits,
    started: Instant,
    /// Peak memory, most CPU time seen, walltime at the last sample.
    usage: Usage,
    last_report: Instant,
    /// The limit the agent killed the job for; its status replaces the shell's.
    limit_kill: Option<LimitKill>,
    /// When SIGTERM turns into SIGKILL.
    sigkill_at: Option<Instant>,
    /// The memory cgroup that holds the job to its `mem`, when it has one.
    cgroup: Option<MemCgroup>,
    /// The uid the job runs as.
    owner_uid: u32,
    /// An interactive job's terminal, relayed to its `qsub`.
    terminal: Option<Relay>,
}

impl Job {
    /// A job whose top process has just started.
    pub fn new(
        id: String,
        process: RunningJob,
        files: JobFiles,
        messages: PathBuf,
        limits: Limits,
        ncpus: u32,
    ) -> Job {
        let now = Instant::now();
        Job {
            id,
            process,
            files,
            messages,
            limits,
            started: now,
            usage: Usage {
                ncpus,
                ..Usage::default()
            },
            last_report: now,
            limit_kill: None,
            sigkill_at: None,
            cgroup: None,
            owner_uid: nix::unistd::geteuid().as_raw(),
            terminal: None,
        }
    }

    /// The job, run as `uid`.
    pub fn owned_by(self, owner_uid: u32) -> Job {
        Job { owner_uid, ..self }
    }

    /// The uid the job runs as.
    pub fn owner_uid(&self) -> u32 {
        self.owner_uid
    }

    /// The job, held to its `mem` by `cgroup` too.
    pub fn with_cgroup(self, cgroup: Option<MemCgroup>) -> Job {
        Job { cgroup, ..self }
    }

    /// The job, on a terminal relayed to its `qsub` (an interactive job).
    pub fn with_terminal(self, terminal: Option<Relay>) -> Job {
        Job { terminal, ..self }
    }

    /// The job's full id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The session its top process leads.
    pub fn session(&self) -> i32 {
        self.process.session().as_raw()
    }

    /// The job as a reconnecting agent re-reports it.
    pub fn running_report(&self) -> RunningReport {
        RunningReport {
            job_id: self.id.clone(),
            session: self.session(),
            usage: self.usage,
        }
    }

    /// A periodic usage report, when one is due.
    pub fn usage_report(&mut self, every: Duration, now: Instant) -> Option<AgentMessage> {
        if now.saturating_duration_since(self.last_report) < every {
            return None;
        }
        self.last_report = now;
        Some(AgentMessage::Usage {
            job_id: self.id.clone(),
            usage: self.usage,
        })
    }

    /// The job's exit status once its top process has ended: the limit kill's status, else
    /// the shell's.
    pub fn exit_status(&mut self) -> Option<i32> {
        let (code, signal) = match self.process.try_wait() {
            Ok(None) => return None,
            Ok(Some(ended)) => ended,
            Err(err) => {
                tracing::error!(job = %self.id, %err, "lost the job's top process");
                (None, None)
            }
        };
        // The kernel may have killed a process of the job for memory since the last sample
        // (and the shell then ended): that ends the job for its limit all the same.
        if self.limit_kill.is_none() {
            if let Some(exceeded) = self.cgroup_exceeded() {
                self.record_kill(exceeded);
            }
        }
        Some(
            self.limit_kill
                .map_or_else(|| shell_exit_status(code, signal), LimitKill::exit_status),
        )
    }

    /// Measures the job's processes now.
    pub fn sample(&mut self, now: Instant) {
        let pids = self.process.processes();
        let current = total_usage(&pids);
        let usage = &mut self.usage;
        usage.cput = usage.cput.max(current.cpu_seconds as u64);
        usage.mem_kb = usage.mem_kb.max(current.rss_kb);
        // The cgroup's peak counts what sampling misses between samples (and what the kernel
        // refused: its processes never got past the limit).
        if let Some(cgroup) = &self.cgroup {
            usage.mem_kb = usage.mem_kb.max(cgroup.peak_kb());
        }
        usage.vmem_kb = usage.vmem_kb.max(current.vsize_kb);
        usage.walltime = now.saturating_duration_since(self.started).as_secs();
    }

    /// Kills the job, as PBS's mom does, when its last sample is past one of its limits:
    /// the message to its stderr, then SIGTERM, then SIGKILL after `kill_delay`.
    pub fn enforce_limits(&mut self, kill_delay: Duration, now: Instant) {
        if self.limit_kill.is_some() {
            return;
        }
        let Some(exceeded) = self
            .limits
            .exceeded(&self.usage)
            .or_else(|| self.cgroup_exceeded())
        else {
            return;
        };
        self.record_kill(exceeded);
        self.terminate(kill_delay, now);
    }

    /// The memory limit as the job's cgroup saw it pass: a process of the job killed by the
    /// kernel for want of memory inside its limit.
    fn cgroup_exceeded(&self) -> Option<Exceeded> {
        let cgroup = self.cgroup.as_ref()?;
        let limit_kb = cgroup.limit_kb().filter(|_| cgroup.oom_kills() > 0)?;
        Some(Exceeded {
            limit: LimitKill::Mem,
            used: (cgroup.peak_kb().max(limit_kb) * 1024) as f64,
            allowed: limit_kb * 1024,
        })
    }

    /// Writes the kill message to the job's error file and remembers the limit, whose exit
    /// status replaces the shell's.
    fn record_kill(&mut self, exceeded: Exceeded) {
        let message = kill_message(exceeded.limit, exceeded.used, exceeded.allowed);
        tracing::info!(job = %self.id, message = message.trim_end(), "limit exceeded");
        if let Err(err) = append(&self.messages, &message) {
            tracing::warn!(job = %self.id, path = %self.messages.display(), %err, "cannot write the kill message");
        }
        self.limit_kill = Some(exceeded.limit);
    }

    /// SIGTERM to every process of the job now, SIGKILL after `grace` (or sooner, if an earlier
    /// kill set it sooner).
    pub fn terminate(&mut self, grace: Duration, now: Instant) {
        self.signal(Signal::SIGTERM);
        let deadline = now + grace;
        self.sigkill_at = Some(self.sigkill_at.map_or(deadline, |at| at.min(deadline)));
    }

    /// Sends SIGKILL once a kill's grace has run out (again at every call after, for processes
    /// the job made since).
    pub fn escalate(&mut self, now: Instant) {
        if self.sigkill_at.is_some_and(|at| at <= now) {
            self.signal(Signal::SIGKILL);
        }
    }

    /// Sends `signal` to every process of the job; returns how many got it.
    pub fn signal(&self, signal: Signal) -> usize {
        self.process.signal_all(signal)
    }

    /// Ends the job after its top process ended with `exit_status`: kills what remains of it,
    /// removes its files, and gives the report for the server.
    pub async fn finish(mut self, exit_status: i32) -> AgentMessage {
        self.sample(Instant::now());
        kill_leftovers(&self.id, &self.process).await;
        if let Some(terminal) = self.terminal.take() {
            terminal.close().await;
        }
        self.files.remove();
        if let Some(cgroup) = &self.cgroup {
            remove_cgroup(cgroup).await;
        }
        tracing::info!(job = %self.id, exit_status, "job ended");
        AgentMessage::Ended {
            job_id: self.id,
            exit_status,
            usage: self.usage,
        }
    }
}

/// SIGKILLs the job's remaining processes (daemons too: they die with the job, as in PBS) and
/// waits until they are gone.
async fn kill_leftovers(job_id: &str, process: &RunningJob) {
    let deadline = Instant::now() + LEFTOVER_WAIT;
    loop {
        let left = process.signal_all(Signal::SIGKILL);
        exec::reap_orphans();
        if left == 0 {
            return;
        }
        if Instant::now() >= deadline {
            tracing::warn!(job = job_id, left, "processes of the job survive SIGKILL");
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Removes the job's cgroup once the kernel lets it (its processes have just died).
async fn remove_cgroup(cgroup: &MemCgroup) {
    let deadline = Instant::now() + LEFTOVER_WAIT;
    while !cgroup.remove() {
        if Instant::now() >= deadline {
            tracing::warn!(cgroup = %cgroup.path().display(), "cannot remove the job's cgroup");
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Appends `text` to the job's file, creating it (mode 0600) if the job never did.
///
/// The file is the job owner's to place: a symbolic link there is not followed, so that an
/// agent running as root never writes through one into a file the owner could not write.
fn append(path: &Path, text: &str) -> io::Result<()> {
    use nix::fcntl::OFlag;
    use std::os::unix::fs::OpenOptionsExt;
    // O_NOCTTY: the file may be an interactive job's terminal, which must not become the
    // agent's own.
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_NOCTTY).bits())
        .open(path)?
        .write_all(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_appended_but_never_through_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let err = dir.path().join("job.e1");
        fs::write(&err, "job output\n").unwrap();
        append(&err, "=>> PBS: job killed\n").unwrap();
        assert_eq!(
            fs::read_to_string(&err).unwrap(),
            "job output\n=>> PBS: job killed\n"
        );
        let link = dir.path().join("link.e1");
        std::os::unix::fs::symlink(&err, &link).unwrap();
        assert!(append(&link, "again\n").is_err());
        assert!(!fs::read_to_string(&err).unwrap().contains("again"));
    }
}

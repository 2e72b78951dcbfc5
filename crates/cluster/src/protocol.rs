//! What the server and its node agents say to each other.
//!
//! An agent connects to the server (a Unix socket on one machine, TCP across machines) and the
//! two exchange [`AgentMessage`]s and [`ServerMessage`]s, one JSON object per line. The agent
//! speaks first with [`AgentMessage::Hello`], presenting the installation's token and
//! re-reporting the jobs it still runs, so that a restarted server finds them again.

use std::io;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// The longest line the server accepts from an agent, newline excluded: far more than any
/// report needs, little enough that a stranger cannot make the server buffer without end.
pub const MAX_AGENT_LINE: usize = 1 << 20;

/// How often a welcomed agent sends [`AgentMessage::Heartbeat`]. The server drops an agent it
/// has heard nothing from for three of these: over TCP, a machine that crashed or lost the
/// network sends no end of connection, and its node must still go down.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(30);

/// How much of a machine a job used, as `resources_used` shows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// CPU time of all the job's processes, in seconds.
    pub cput: u64,
    /// Peak resident memory, in kilobytes.
    pub mem_kb: u64,
    /// Peak virtual memory, in kilobytes.
    pub vmem_kb: u64,
    /// Elapsed time since the job started, in seconds.
    pub walltime: u64,
    /// CPUs assigned to the job.
    pub ncpus: u32,
}

/// A vnode as its agent reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeReport {
    /// The vnode's name (`node1`).
    pub name: String,
    /// The host it runs on, for `Mom` and `PBS_NODEFILE`.
    pub host: String,
    /// CPUs it offers.
    pub ncpus: u32,
    /// Memory it offers, in kilobytes.
    pub mem_kb: u64,
    /// GPUs it offers.
    pub ngpus: u32,
    /// The machine's CPU ids this vnode's CPUs map to, for pinning (empty: unpinned).
    pub cpu_ids: Vec<usize>,
}

/// A job the agent runs, as it re-reports it after reconnecting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunningReport {
    /// The job's full id.
    pub job_id: String,
    /// Its session id on the node.
    pub session: i32,
    /// What it has used so far.
    pub usage: Usage,
}

/// Agent → server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AgentMessage {
    /// The first message on a connection.
    Hello {
        /// The installation's secret, from the state directory's token file.
        token: String,
        /// The vnode this agent serves.
        node: NodeReport,
        /// Jobs still running on it.
        running: Vec<RunningReport>,
        /// Tasks of jobs (`pbs_tmrsh`) it still runs, so that a restarted server can still
        /// relay their ends and end them with their jobs.
        #[serde(default)]
        tasks: Vec<TaskReport>,
    },
    /// A job's processes started.
    Started {
        /// The job.
        job_id: String,
        /// Its session id.
        session: i32,
    },
    /// A job could not be started; `exit_status` is a PBS `JOB_EXEC_*` code.
    StartFailed {
        /// The job.
        job_id: String,
        /// Negative start-failure status (`JOB_EXEC_FAIL1`, `JOB_EXEC_RETRY`, …).
        exit_status: i32,
        /// What went wrong, for the job's comment and the logs.
        message: String,
    },
    /// Nothing to report but that the agent is alive (every [`HEARTBEAT_INTERVAL`]).
    Heartbeat,
    /// A job's top process ended and its files are in place.
    Ended {
        /// The job.
        job_id: String,
        /// PBS's `Exit_status`: the shell's code, 256 + signal, or a limit kill's status.
        exit_status: i32,
        /// What it used in all.
        usage: Usage,
    },
    /// Periodic usage of a running job.
    Usage {
        /// The job.
        job_id: String,
        /// What it has used so far.
        usage: Usage,
    },
    /// A process of a job this agent runs asks (`hpcbox tmrsh HOST COMMAND`, PBS's
    /// `pbs_tmrsh`) that a task of the job run on another of its hosts.
    TaskRequest {
        /// This agent's number for the request, which the answer names.
        task: u64,
        /// What the process asked: the job, the host (one of the job's), the command, where
        /// to start it and its environment (the asking process's, the job's marks included).
        request: TmRequest,
    },
    /// A task this agent was asked to run has ended (or never started: `error`).
    TaskEnded {
        /// The server's number for the task ([`TaskStart::task`]).
        task: u64,
        /// Who asked for it ([`TaskStart::origin`]): where the end goes, even from a server
        /// that has restarted since it started the task.
        #[serde(default)]
        origin: Option<TaskOrigin>,
        /// Its exit status as a shell gives it (128 + signal when killed).
        exit_status: i32,
        /// Why it could not run, if it could not.
        error: Option<String>,
    },
}

/// Who asked for a task: the vnode whose agent forwarded the request, and that agent's number
/// for it ([`AgentMessage::TaskRequest`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskOrigin {
    /// The asking agent's vnode.
    pub node: String,
    /// Its number for the request.
    pub ask: u64,
}

/// A task an agent runs, as it re-reports it when it (re)connects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskReport {
    /// The server's number for it.
    pub task: u64,
    /// The job it belongs to.
    pub job_id: String,
    /// Who asked for it.
    pub origin: Option<TaskOrigin>,
}

/// A task of a job to run on this agent's host ([`AgentMessage::TaskRequest`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskStart {
    /// The server's number for the task.
    pub task: u64,
    /// Who asked for it; the agent sends it back with the task's end.
    #[serde(default)]
    pub origin: Option<TaskOrigin>,
    /// The job it belongs to.
    pub job_id: String,
    /// The job's owner, whom it runs as when the agent runs as root.
    pub owner: String,
    /// What to run, as a shell command line.
    pub command: String,
    /// Where to start it.
    pub cwd: String,
    /// Its environment.
    pub env: Vec<(String, String)>,
    /// Where its standard output goes: the job's output file.
    pub output_path: String,
    /// Where its standard error goes; `None` when joined to the output.
    pub error_path: Option<String>,
}

/// Everything an agent needs to run a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobStart {
    /// The job's full id (`12.hpcbox`, `13[4].hpcbox`).
    pub job_id: String,
    /// `Job_Name`.
    pub job_name: String,
    /// The queue it ran from.
    pub queue: String,
    /// The owner's user name; the job runs as this user when the agent runs as root.
    pub owner: String,
    /// The script's text; `None` when the job is an executable (`qsub -- exe args`).
    pub script: Option<String>,
    /// The executable and its arguments, for `qsub -- exe args`.
    pub argv: Vec<String>,
    /// `-S`: the shell to use instead of the owner's login shell.
    pub shell: Option<String>,
    /// `Variable_List`.
    pub variables: Vec<(String, String)>,
    /// Where standard output goes (a path on this host).
    pub output_path: String,
    /// Where standard error goes; `None` when joined to the output (`-j oe`).
    pub error_path: Option<String>,
    /// `Account_Name`.
    pub account: Option<String>,
    /// CPUs of the first chunk on this node (`NCPUS`, `OMP_NUM_THREADS`).
    pub threads: u32,
    /// The machine's CPU ids the job is pinned to: those of its chunks on this host (empty:
    /// unpinned).
    pub cpus: Vec<usize>,
    /// The contents of `PBS_NODEFILE`.
    pub nodefile: String,
    /// Kill the job past this many seconds of elapsed time.
    pub walltime_limit: Option<u64>,
    /// Kill the job past this much resident memory, in kilobytes.
    pub mem_limit_kb: Option<u64>,
    /// A run after the first (the job was requeued): its output files start empty, so they
    /// hold this run's output alone, as PBS's do.
    #[serde(default)]
    pub rerun: bool,
    /// An interactive job (`qsub -I`): its shell runs on a terminal whose other end is the
    /// waiting `qsub`, instead of reading a script with its output in files.
    #[serde(default)]
    pub interactive: Option<crate::api::InteractiveTarget>,
}

/// The variable of a job's environment that names its agent's task socket (where
/// `pbs_tmrsh` asks for tasks on the job's other hosts).
pub const ENV_TM_SOCKET: &str = "HPCBOX_TM_SOCKET";

/// What `hpcbox tmrsh` (PBS's `pbs_tmrsh`) asks the agent of its job: one line of JSON on the
/// agent's task socket ([`ENV_TM_SOCKET`] in the job's environment).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TmRequest {
    /// The job (`PBS_JOBID`).
    pub job_id: String,
    /// The host to run the task on.
    pub host: String,
    /// What to run, as a shell command line.
    pub command: String,
    /// Where to start it.
    pub cwd: String,
    /// Its environment.
    pub env: Vec<(String, String)>,
}

/// The agent's answer to a [`TmRequest`] once the task has ended: one line of JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TmAnswer {
    /// The task's exit status as a shell gives it (128 + signal when killed; 255 when it
    /// could not run).
    pub exit_status: i32,
    /// Why it could not run, if it could not.
    pub error: Option<String>,
}

/// Server → agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// The hello was accepted.
    Welcome {
        /// The server's name, the suffix of job ids.
        server: String,
    },
    /// The hello was refused (bad token, unknown node); the connection closes.
    Refused {
        /// Why.
        reason: String,
    },
    /// Start a job.
    Start(Box<JobStart>),
    /// Send a signal (`SIGTERM`, `SIGUSR1`, … as PBS names them in `qsig`) to a job.
    Signal {
        /// The job.
        job_id: String,
        /// The signal's name.
        signal: String,
    },
    /// End a job: SIGTERM, then SIGKILL after `grace` seconds (PBS's `kill_delay`); on an
    /// agent that runs only tasks of it, end those.
    Kill {
        /// The job.
        job_id: String,
        /// Seconds between SIGTERM and SIGKILL.
        grace: u64,
    },
    /// Run a task of a job here.
    StartTask(Box<TaskStart>),
    /// The task this agent asked for has ended ([`AgentMessage::TaskRequest`]).
    TaskEnded {
        /// The agent's number for the request.
        task: u64,
        /// Its exit status as a shell gives it (128 + signal when killed).
        exit_status: i32,
        /// Why it could not run, if it could not.
        error: Option<String>,
    },
}

/// Encodes a message as one line of JSON, newline included.
pub fn encode_line<T: Serialize>(message: &T) -> io::Result<Vec<u8>> {
    let mut line = serde_json::to_vec(message)?;
    line.push(b'\n');
    Ok(line)
}

/// Decodes one line of JSON; malformed input is an error naming what was wrong, never a panic.
pub fn decode_line<T: for<'de> Deserialize<'de>>(line: &[u8]) -> io::Result<T> {
    serde_json::from_slice(line).map_err(|err| io::Error::new(io::ErrorKind::InvalidData, err))
}

/// Reads one line (without its newline) of at most `max` bytes; `None` at the end of input.
///
/// A longer line is an `InvalidData` error, raised as soon as `max` bytes have arrived without
/// a newline, so that the reader never holds more than about `max` bytes. A last line without
/// a newline is returned as it is. Not cancel-safe: a partial line is lost when the future is
/// dropped.
pub async fn read_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    max: usize,
) -> io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    loop {
        let buffer = reader.fill_buf().await?;
        if buffer.is_empty() {
            return Ok((!line.is_empty()).then_some(line));
        }
        let (taken, done) = match buffer.iter().position(|&b| b == b'\n') {
            Some(end) => (end, true),
            None => (buffer.len(), false),
        };
        if line.len() + taken > max {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a line longer than {max} bytes"),
            ));
        }
        line.extend_from_slice(&buffer[..taken]);
        reader.consume(taken + usize::from(done));
        if done {
            return Ok(Some(line));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_are_read_within_a_bound() {
        let mut input = &b"one\ntwo\n\nlast"[..];
        let mut lines = Vec::new();
        while let Some(line) = read_line(&mut input, 4).await.unwrap() {
            lines.push(String::from_utf8(line).unwrap());
        }
        assert_eq!(lines, ["one", "two", "", "last"]);
        let mut long = &b"abcdef\nok\n"[..];
        let err = read_line(&mut long, 5).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn messages_are_single_lines_that_round_trip() {
        let hello = AgentMessage::Hello {
            token: "t".into(),
            node: NodeReport {
                name: "node1".into(),
                host: "laptop".into(),
                ncpus: 1,
                mem_kb: 1 << 20,
                ngpus: 0,
                cpu_ids: vec![0],
            },
            running: vec![RunningReport {
                job_id: "1.hpcbox".into(),
                session: 42,
                usage: Usage::default(),
            }],
            tasks: vec![TaskReport {
                task: 7,
                job_id: "1.hpcbox".into(),
                origin: Some(TaskOrigin {
                    node: "node2".into(),
                    ask: 3,
                }),
            }],
        };
        let line = encode_line(&hello).unwrap();
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        assert!(line.starts_with(br#"{"type":"hello""#));
        assert_eq!(decode_line::<AgentMessage>(&line).unwrap(), hello);
        let heartbeat = encode_line(&AgentMessage::Heartbeat).unwrap();
        assert_eq!(heartbeat, b"{\"type\":\"heartbeat\"}\n");
        assert_eq!(
            decode_line::<AgentMessage>(&heartbeat).unwrap(),
            AgentMessage::Heartbeat
        );
        let kill = ServerMessage::Kill {
            job_id: "1.hpcbox".into(),
            grace: 10,
        };
        assert_eq!(
            decode_line::<ServerMessage>(&encode_line(&kill).unwrap()).unwrap(),
            kill
        );
    }

    #[test]
    fn malformed_lines_are_errors() {
        for bad in [
            &b""[..],
            b"{",
            b"{\"type\":\"nope\"}",
            b"\xff\xfe",
            b"[1,2]",
        ] {
            let err = decode_line::<AgentMessage>(bad).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        }
    }
}

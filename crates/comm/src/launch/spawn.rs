//! Starting the ranks: local ones directly, remote ones through the agent, all in the world's
//! process group.

use super::setup::{Setup, Site};
use super::stdio::{feed_stdin, forward_lines};
use super::{LaunchSpec, OutputSink, StdinMode, Stream};
use crate::remote;
use crate::{Error, Result};
use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::Arc;

/// Kills the whole world's process group.
pub(super) fn kill_world(pgid: i32) {
    let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
}

/// The command that starts `rank`: the program itself, or the agent that starts it.
fn rank_command(spec: &LaunchSpec, setup: &Setup, rank: usize) -> Command {
    let env = setup.env(spec, rank);
    match &setup.sites[rank] {
        Site::Local { cpu } => local_command(spec, env, *cpu),
        Site::Remote(host) => {
            let text = |s: &OsString| s.to_string_lossy().into_owned();
            let args: Vec<String> = spec.args.iter().map(text).collect();
            let line = remote::command_string(&setup.workdir, &env, &text(&spec.program), &args);
            remote::agent_command(&setup.agent, host, &line)
        }
    }
}

/// The program with `env`, pinned to `cpu` if given.
fn local_command(spec: &LaunchSpec, env: Vec<(String, String)>, cpu: Option<usize>) -> Command {
    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args).envs(env);
    let Some(set) = cpu.and_then(|c| {
        let mut set = nix::sched::CpuSet::new();
        set.set(c).ok().map(|()| set)
    }) else {
        return cmd;
    };
    // SAFETY: sched_setaffinity is one system call on memory prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            nix::sched::sched_setaffinity(Pid::from_raw(0), &set).map_err(std::io::Error::from)
        });
    }
    cmd
}

fn spawn_rank(spec: &LaunchSpec, setup: &Setup, rank: usize, pgid: i32) -> std::io::Result<Child> {
    let mut cmd = rank_command(spec, setup, rank);
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(if rank == 0 && spec.stdin != StdinMode::Null {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .process_group(pgid);
    let launcher = std::process::id() as libc::pid_t;
    // SAFETY: between fork and exec only async-signal-safe calls (prctl, getppid, _exit).
    unsafe {
        cmd.pre_exec(move || {
            // A rank dies with its launcher, even one killed by SIGKILL.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != launcher {
                libc::_exit(137);
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// The started ranks of one launch.
pub(super) struct World {
    /// Process id of each rank.
    pub(super) pids: Vec<i32>,
    /// Their process group (rank 0's pid).
    pub(super) pgid: i32,
    /// One message per output stream that reached its end.
    pub(super) output_done: mpsc::Receiver<()>,
}

/// Starts every rank with its output forwarded; on a failed start, ends those started.
pub(super) fn spawn_world(
    spec: &LaunchSpec,
    sink: Arc<dyn OutputSink>,
    setup: &Setup,
) -> Result<World> {
    let (done_tx, output_done) = mpsc::channel();
    let mut pids = Vec::with_capacity(spec.np);
    let mut pgid = 0;
    for rank in 0..spec.np {
        let mut child = match spawn_rank(spec, setup, rank, pgid) {
            Ok(c) => c,
            Err(source) => {
                setup.meeting.stop();
                if pgid != 0 {
                    kill_world(pgid);
                    for &pid in &pids {
                        let _ = waitpid(Pid::from_raw(pid), None);
                    }
                }
                return Err(Error::Spawn {
                    rank,
                    program: spec.program.to_string_lossy().into_owned(),
                    source,
                });
            }
        };
        let pid = child.id() as i32;
        if rank == 0 {
            pgid = pid;
        }
        pids.push(pid);
        if let Some(out) = child.stdout.take() {
            forward_lines(rank, Stream::Stdout, out, sink.clone(), done_tx.clone());
        }
        if let Some(err) = child.stderr.take() {
            forward_lines(rank, Stream::Stderr, err, sink.clone(), done_tx.clone());
        }
        if let Some(input) = child.stdin.take() {
            feed_stdin(&spec.stdin, input);
        }
    }
    Ok(World {
        pids,
        pgid,
        output_done,
    })
}

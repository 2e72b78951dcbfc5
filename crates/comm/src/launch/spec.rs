//! What to launch: the spec, rank 0's standard input, CPU binding.

// Named by the doc links below.
#[cfg(doc)]
use super::{launch, launch_with, OutputSink};
#[cfg(doc)]
use crate::placement::is_local;
#[cfg(doc)]
use crate::remote;
use std::ffi::OsString;
use std::net::IpAddr;
use std::time::Duration;

/// Where rank 0's standard input comes from; the other ranks read `/dev/null`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StdinMode {
    /// The launcher's own standard input, copied to rank 0 (as mpiexec does).
    Forward,
    /// Nothing: rank 0 reads end of file.
    Null,
    /// These bytes, then end of file.
    Bytes(Vec<u8>),
}

/// Whether local ranks are pinned to CPUs (`--bind-to`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Bind {
    /// Ranks run wherever the kernel puts them.
    #[default]
    None,
    /// The i-th local rank runs on the i-th of the launcher's usable CPUs (wrapping round).
    Core,
}

/// What to launch.
#[derive(Clone, Debug)]
pub struct LaunchSpec {
    /// Number of ranks.
    pub np: usize,
    /// The program every rank runs.
    pub program: OsString,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// Extra environment for every rank (the `HPCBOX_*` contract variables are set after
    /// these and win).
    pub env: Vec<(String, String)>,
    /// Prefix each output line with `[rank] ` (what [`launch`] does with it; a custom
    /// [`OutputSink`] given to [`launch_with`] decides for itself).
    pub tag_output: bool,
    /// End the world after this long.
    pub timeout: Option<Duration>,
    /// Rank 0's standard input.
    pub stdin: StdinMode,
    /// While the world runs, catch SIGINT, SIGTERM, SIGHUP and SIGQUIT sent to the launcher
    /// and pass them on to every rank (SIGKILL follows one second later). The ranks run in
    /// a process group of their own, so a terminal's Ctrl-C reaches only the launcher:
    /// without this, it would end the launcher and leave the ranks running.
    pub forward_signals: bool,
    /// The host of each rank, by rank (see [`crate::placement::place`]); empty: every rank
    /// on this machine. Hosts naming this machine ([`is_local`]) start locally.
    pub hosts: Vec<String>,
    /// CPU binding of the ranks on this machine.
    pub bind: Bind,
    /// The agent that starts remote ranks, as words (`AGENT HOST COMMAND` runs it); `None`:
    /// [`remote::agent_from_env`].
    pub agent: Option<Vec<String>>,
    /// The address of this machine that remote ranks connect to; `None`: chosen as the
    /// module documentation says.
    pub rendezvous_host: Option<IpAddr>,
}

impl LaunchSpec {
    /// `np` ranks of `program`, no arguments, untagged output, no timeout, stdin and
    /// signals forwarded.
    pub fn new(np: usize, program: impl Into<OsString>) -> LaunchSpec {
        LaunchSpec {
            np,
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            tag_output: false,
            timeout: None,
            stdin: StdinMode::Forward,
            forward_signals: true,
            hosts: Vec::new(),
            bind: Bind::None,
            agent: None,
            rendezvous_host: None,
        }
    }
}

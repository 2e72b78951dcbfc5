//! How a launch ended: each rank's exit, the first failure, the launcher's status.

use std::time::Duration;

/// Exit status of a launch that ran out of time (as `timeout(1)`).
pub const TIMEOUT_STATUS: i32 = 124;

/// How one rank ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RankExit {
    /// It exited with this status.
    Exited(i32),
    /// A signal (this number) killed it.
    Signaled(i32),
}

impl RankExit {
    /// How a remote rank ended, from how its agent did: a remote shell reports a rank
    /// killed by signal N as status 128 + N.
    pub fn from_agent(agent: RankExit) -> RankExit {
        match agent {
            RankExit::Exited(c) if (129..=128 + 64).contains(&c) => RankExit::Signaled(c - 128),
            other => other,
        }
    }

    /// Whether it exited with status 0.
    pub fn success(self) -> bool {
        self == RankExit::Exited(0)
    }

    /// The shell's view: the status, or 128 + the signal number.
    pub fn status(self) -> i32 {
        match self {
            RankExit::Exited(c) => c,
            RankExit::Signaled(s) => 128 + s,
        }
    }
}

/// Why a world ended early.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// A rank failed first; the launcher then killed the others.
    Rank {
        /// The rank.
        rank: usize,
        /// The node it ran on.
        host: String,
        /// How it ended.
        exit: RankExit,
    },
    /// The timeout ran out; the launcher killed every rank.
    Timeout {
        /// The timeout.
        after: Duration,
        /// Each rank still running then, with the call it said it was blocked in (`None`:
        /// not blocked in a call, or a world meeting over TCP, whose ranks do not say).
        running: Vec<(usize, Option<String>)>,
    },
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Rank {
                rank,
                host,
                exit: RankExit::Exited(c),
            } => write!(f, "rank {rank} on {host} exited with status {c}"),
            Failure::Rank {
                rank,
                host,
                exit: RankExit::Signaled(s),
            } => write!(f, "rank {rank} on {host} killed by signal {s}"),
            Failure::Timeout { after, running } => {
                write!(f, "timed out after {} s", after.as_secs_f64())?;
                for (rank, call) in running {
                    match call {
                        Some(call) => write!(f, "; rank {rank} blocked in {call}")?,
                        None => write!(f, "; rank {rank} running")?,
                    }
                }
                write!(f, "; all ranks killed")
            }
        }
    }
}

/// How a launch ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaunchOutcome {
    /// The launcher's exit status: 0, the first failing rank's status (128 + signal when a
    /// signal killed it), or [`TIMEOUT_STATUS`].
    pub status: i32,
    /// How each rank ended, by rank.
    pub exits: Vec<RankExit>,
    /// What went wrong first, if anything; its Display is the message for the user.
    pub failure: Option<Failure>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_exit_reads_the_shell_status() {
        assert_eq!(
            RankExit::from_agent(RankExit::Exited(137)),
            RankExit::Signaled(9)
        );
        assert_eq!(
            RankExit::from_agent(RankExit::Exited(3)),
            RankExit::Exited(3)
        );
        assert_eq!(
            RankExit::from_agent(RankExit::Exited(255)),
            RankExit::Exited(255)
        );
        assert_eq!(
            RankExit::from_agent(RankExit::Signaled(9)),
            RankExit::Signaled(9)
        );
    }
}

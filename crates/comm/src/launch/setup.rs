//! What every rank of a launch shares: where each rank runs, where they meet, the agent.

use super::meeting::{jobkey, Meeting};
use super::{Bind, LaunchSpec, RankExit};
use crate::env::{ENV_JOBKEY, ENV_RANK, ENV_RENDEZVOUS, ENV_SIZE};
use crate::placement::is_local;
use crate::remote;
use crate::{Error, Result};
use nix::unistd::Pid;

/// Where one rank runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Site {
    /// On this machine, pinned to this CPU when binding.
    Local {
        /// The CPU.
        cpu: Option<usize>,
    },
    /// On this host, through the agent.
    Remote(String),
}

/// Every rank's site: remote where `spec.hosts` names another machine, else local, the
/// i-th local rank on `cpus[i % len]` when binding.
fn sites(spec: &LaunchSpec, cpus: &[usize]) -> Vec<Site> {
    let me = hostname();
    let mut local = 0;
    (0..spec.np)
        .map(|rank| match spec.hosts.get(rank) {
            Some(h) if !is_local(h, &me) => Site::Remote(h.clone()),
            _ => {
                let bind = spec.bind == Bind::Core && !cpus.is_empty();
                let cpu = bind.then(|| cpus[local % cpus.len()]);
                local += 1;
                Site::Local { cpu }
            }
        })
        .collect()
}

/// The CPUs this process may run on, in order.
pub fn usable_cpus() -> Vec<usize> {
    use nix::sched::{sched_getaffinity, CpuSet};
    let Ok(set) = sched_getaffinity(Pid::from_raw(0)) else {
        return Vec::new();
    };
    (0..CpuSet::count())
        .filter(|&c| set.is_set(c).unwrap_or(false))
        .collect()
}

/// What every rank of one launch shares.
pub(super) struct Setup {
    /// The launch's token.
    key: String,
    /// Where the ranks meet.
    pub(super) meeting: Meeting,
    /// Where each rank runs.
    pub(super) sites: Vec<Site>,
    /// The agent that starts remote ranks.
    pub(super) agent: Vec<String>,
    /// The directory remote ranks start in (the launcher's).
    pub(super) workdir: String,
    /// This machine's name.
    hostname: String,
}

impl Setup {
    /// The host `rank` runs on, as failure messages name it.
    pub(super) fn host(&self, rank: usize) -> &str {
        match &self.sites[rank] {
            Site::Local { .. } => &self.hostname,
            Site::Remote(h) => h,
        }
    }

    /// How `rank` ended, given how its process (the agent, for a remote rank) did.
    pub(super) fn rank_exit(&self, rank: usize, exit: RankExit) -> RankExit {
        match self.sites[rank] {
            Site::Local { .. } => exit,
            Site::Remote(_) => RankExit::from_agent(exit),
        }
    }

    /// The environment of `rank`: the spec's, then the `HPCBOX_*` contract.
    pub(super) fn env(&self, spec: &LaunchSpec, rank: usize) -> Vec<(String, String)> {
        let mut env = spec.env.clone();
        env.extend([
            (ENV_RANK.to_string(), rank.to_string()),
            (ENV_SIZE.to_string(), spec.np.to_string()),
            (ENV_RENDEZVOUS.to_string(), self.meeting.value()),
            (ENV_JOBKEY.to_string(), self.key.clone()),
        ]);
        env
    }
}

/// This node's name.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Sites, rendezvous and agent of a launch.
pub(super) fn prepare(spec: &LaunchSpec) -> Result<Setup> {
    let key = jobkey();
    let sites = sites(spec, &usable_cpus());
    let meeting = Meeting::open(spec, &sites, &key)?;
    let workdir =
        std::env::current_dir().map_err(|e| Error::io("reading the working directory", e))?;
    Ok(Setup {
        key,
        meeting,
        sites,
        agent: spec.agent.clone().unwrap_or_else(remote::agent_from_env),
        workdir: workdir.to_string_lossy().into_owned(),
        hostname: hostname(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sites_bind_local_ranks_in_turn_and_send_others_away() {
        let mut spec = LaunchSpec::new(4, "prog");
        spec.hosts = vec![
            "localhost".into(),
            "elsewhere".into(),
            hostname(),
            "127.0.0.1".into(),
        ];
        spec.bind = Bind::Core;
        let got = sites(&spec, &[4, 6]);
        let local = |c| Site::Local { cpu: Some(c) };
        assert_eq!(
            got,
            [
                local(4),
                Site::Remote("elsewhere".into()),
                local(6),
                local(4)
            ]
        );
        spec.bind = Bind::None;
        assert_eq!(sites(&spec, &[4, 6])[0], Site::Local { cpu: None });
    }
}

//! Measuring what a job's processes use, and deciding when a limit is exceeded.

use std::fs;

use hpcbox_pbs::exit::LimitKill;
use nix::unistd::Pid;

use crate::protocol::Usage;

/// The limits a node agent enforces on one job.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Elapsed seconds allowed (`walltime`).
    pub walltime: Option<u64>,
    /// Resident kilobytes allowed (`mem`).
    pub mem_kb: Option<u64>,
}

/// A limit the job went past: which, what it used and what it was allowed, in the units
/// [`hpcbox_pbs::exit::kill_message`] takes (seconds, bytes).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Exceeded {
    /// The limit.
    pub limit: LimitKill,
    /// What the job used.
    pub used: f64,
    /// What it was allowed.
    pub allowed: u64,
}

impl Limits {
    /// The first limit `usage` exceeds, walltime before memory, as PBS's mom checks them.
    pub fn exceeded(&self, usage: &Usage) -> Option<Exceeded> {
        if let Some(allowed) = self.walltime.filter(|&w| usage.walltime > w) {
            return Some(Exceeded {
                limit: LimitKill::Walltime,
                used: usage.walltime as f64,
                allowed,
            });
        }
        self.mem_kb
            .filter(|&m| usage.mem_kb > m)
            .map(|allowed| Exceeded {
                limit: LimitKill::Mem,
                used: (usage.mem_kb * 1024) as f64,
                allowed: allowed * 1024,
            })
    }
}

/// What one process uses now: CPU seconds (its own and its reaped children's), resident and
/// virtual kilobytes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessUsage {
    /// User plus system CPU time, in seconds, of the process and of the children it has
    /// waited for (which no longer show in `/proc`).
    pub cpu_seconds: f64,
    /// Resident set size, in kilobytes.
    pub rss_kb: u64,
    /// Virtual memory size, in kilobytes.
    pub vsize_kb: u64,
}

/// Reads `/proc/<pid>/stat`; `None` when the process is gone.
pub fn process_usage(pid: Pid) -> Option<ProcessUsage> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat, clock_ticks_per_second(), page_kb())
}

/// Parses a `/proc/<pid>/stat` line (the command name may hold spaces and parentheses).
fn parse_stat(stat: &str, ticks_per_second: f64, page_kb: u64) -> Option<ProcessUsage> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    // Fields from 3 (state) on; utime, stime, cutime and cstime are fields 14 to 17, vsize 23,
    // rss 24.
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    let ticks = [field(14)?, field(15)?, field(16)?, field(17)?]
        .into_iter()
        .fold(0u64, u64::saturating_add);
    Some(ProcessUsage {
        cpu_seconds: ticks as f64 / ticks_per_second,
        vsize_kb: field(23)? / 1024,
        rss_kb: field(24)? * page_kb,
    })
}

fn clock_ticks_per_second() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .map_or(100.0, |ticks| ticks as f64)
}

fn page_kb() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .map_or(4, |bytes| bytes as u64 / 1024)
}

/// The summed usage of `pids` now.
pub fn total_usage(pids: &[Pid]) -> ProcessUsage {
    pids.iter()
        .filter_map(|&pid| process_usage(pid))
        .fold(ProcessUsage::default(), |sum, p| ProcessUsage {
            cpu_seconds: sum.cpu_seconds + p.cpu_seconds,
            rss_kb: sum.rss_kb + p.rss_kb,
            vsize_kb: sum.vsize_kb + p.vsize_kb,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_in_pbs_order_and_units() {
        let limits = Limits {
            walltime: Some(120),
            mem_kb: Some(1024),
        };
        let within = Usage {
            walltime: 120,
            mem_kb: 1024,
            ..Usage::default()
        };
        assert_eq!(limits.exceeded(&within), None);
        let both = Usage {
            walltime: 152,
            mem_kb: 4096,
            ..Usage::default()
        };
        let first = limits.exceeded(&both).unwrap();
        assert_eq!(
            (first.limit, first.used, first.allowed),
            (LimitKill::Walltime, 152.0, 120)
        );
        let mem = limits
            .exceeded(&Usage {
                mem_kb: 2048,
                ..Usage::default()
            })
            .unwrap();
        assert_eq!(
            hpcbox_pbs::exit::kill_message(mem.limit, mem.used, mem.allowed),
            "=>> PBS: job killed: mem 2048kb exceeded limit 1024kb\n"
        );
        assert_eq!(Limits::default().exceeded(&both), None);
    }

    #[test]
    fn parses_stat_lines_with_awkward_names() {
        let line = "4242 (my (odd) prog) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0 \
                    12345 104857600 2560 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0";
        let usage = parse_stat(line, 100.0, 4).unwrap();
        assert_eq!(usage.cpu_seconds, 3.0);
        let waited = line.replace(" 250 50 0 0 ", " 250 50 100 20 ");
        assert_eq!(parse_stat(&waited, 100.0, 4).unwrap().cpu_seconds, 4.2);
        assert_eq!(usage.vsize_kb, 102_400);
        assert_eq!(usage.rss_kb, 10_240);
        assert_eq!(parse_stat("garbage", 100.0, 4), None);
        assert_eq!(parse_stat("1 (x) S 1 2", 100.0, 4), None);
    }

    #[test]
    fn measures_this_process() {
        let me = process_usage(Pid::this()).unwrap();
        assert!(me.rss_kb > 0 && me.vsize_kb >= me.rss_kb);
        assert_eq!(process_usage(Pid::from_raw(i32::MAX)), None);
    }
}

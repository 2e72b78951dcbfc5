//! How many CPUs this process may really use.

use std::path::{Path, PathBuf};

/// The number of CPUs this process may really use: the pool's default worker count.
///
/// The smallest of
/// - the CPUs in this process's affinity mask (`sched_getaffinity`, as `taskset` or a batch
///   system's cpuset leave it), not the machine's count;
/// - the cgroup v2 CPU quota (`cpu.max` of this process's cgroup and its ancestors, rounded up:
///   a quota of 150000 per 100000 µs gives 2);
///
/// and, inside a PBS job (`PBS_JOBID` set), the job's `NCPUS` when it is a positive number, which
/// then decides alone. Never less than 1.
///
/// ```
/// assert!(hpcbox_pool::usable_cpus() >= 1);
/// ```
pub fn usable_cpus() -> usize {
    let pbs_ncpus = std::env::var_os("PBS_JOBID").and_then(|_| std::env::var("NCPUS").ok());
    combine(affinity_cpus(), cgroup_quota_cpus(), pbs_ncpus.as_deref())
}

/// Combines the three sources as [`usable_cpus`] documents.
fn combine(affinity: Option<usize>, quota: Option<usize>, pbs_ncpus: Option<&str>) -> usize {
    if let Some(n) = pbs_ncpus.and_then(|s| s.trim().parse::<usize>().ok()) {
        if n > 0 {
            return n;
        }
    }
    let base = affinity.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    quota.map_or(base, |q| base.min(q)).max(1)
}

#[cfg(target_os = "linux")]
fn affinity_cpus() -> Option<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity fills it for pid 0 (this thread).
    let count = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return None;
        }
        libc::CPU_COUNT(&set)
    };
    usize::try_from(count).ok().filter(|&n| n > 0)
}

#[cfg(not(target_os = "linux"))]
fn affinity_cpus() -> Option<usize> {
    None
}

/// The tightest `cpu.max` quota on the way from this process's cgroup up to the root.
fn cgroup_quota_cpus() -> Option<usize> {
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let rel = cgroup_v2_path(&own)?;
    let root = Path::new("/sys/fs/cgroup");
    cgroup_dirs(root, rel)
        .iter()
        .filter_map(|dir| std::fs::read_to_string(dir.join("cpu.max")).ok())
        .filter_map(|text| parse_cpu_max(&text))
        .min()
}

/// The cgroup v2 path from `/proc/self/cgroup` (the `0::/path` line).
fn cgroup_v2_path(proc_cgroup: &str) -> Option<&str> {
    proc_cgroup
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .map(str::trim)
}

/// The directories from the process's own cgroup up to the mount root.
fn cgroup_dirs(root: &Path, rel: &str) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    let mut path = root.join(rel.trim_start_matches('/'));
    loop {
        dirs.push(path.clone());
        if path == root || !path.pop() || !path.starts_with(root) {
            break;
        }
    }
    dirs
}

/// CPUs allowed by a `cpu.max` text: `"max 100000"` is no limit, `"150000 100000"` is 2.
fn parse_cpu_max(text: &str) -> Option<usize> {
    let mut parts = text.split_whitespace();
    let quota = parts.next()?;
    let period: u64 = parts.next().map_or(Some(100_000), |p| p.parse().ok())?;
    if quota == "max" || period == 0 {
        return None;
    }
    let quota: u64 = quota.parse().ok()?;
    let cpus = quota.div_ceil(period).max(1);
    usize::try_from(cpus).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_max_texts() {
        assert_eq!(parse_cpu_max("max 100000\n"), None);
        assert_eq!(parse_cpu_max("200000 100000\n"), Some(2));
        assert_eq!(parse_cpu_max("150000 100000"), Some(2));
        assert_eq!(parse_cpu_max("50000 100000"), Some(1));
        assert_eq!(parse_cpu_max("100000 0"), None);
        assert_eq!(parse_cpu_max("junk 100000"), None);
        assert_eq!(parse_cpu_max(""), None);
    }

    #[test]
    fn proc_cgroup_lines() {
        assert_eq!(
            cgroup_v2_path("0::/user.slice/a.scope\n"),
            Some("/user.slice/a.scope")
        );
        assert_eq!(
            cgroup_v2_path("12:cpu,cpuacct:/x\n0::/\n"),
            Some("/"),
            "v1 lines are skipped"
        );
        assert_eq!(cgroup_v2_path("4:memory:/x\n"), None);
    }

    #[test]
    fn dirs_walk_up_to_the_root() {
        let root = Path::new("/sys/fs/cgroup");
        assert_eq!(
            cgroup_dirs(root, "/a/b"),
            vec![root.join("a/b"), root.join("a"), root.to_path_buf()]
        );
        assert_eq!(cgroup_dirs(root, "/"), vec![root.to_path_buf()]);
    }

    #[test]
    fn combining_sources() {
        assert_eq!(combine(Some(8), None, None), 8);
        assert_eq!(combine(Some(8), Some(2), None), 2);
        assert_eq!(combine(Some(2), Some(16), None), 2);
        assert_eq!(
            combine(Some(8), Some(2), Some("6")),
            6,
            "NCPUS decides in a job"
        );
        assert_eq!(combine(Some(3), None, Some("0")), 3, "NCPUS=0 is ignored");
        assert_eq!(combine(Some(3), None, Some("many")), 3);
        assert!(combine(None, None, None) >= 1);
    }

    #[test]
    fn usable_cpus_is_within_the_affinity_mask() {
        let n = usable_cpus();
        assert!(n >= 1);
        if std::env::var_os("PBS_JOBID").is_none() {
            if let Some(aff) = affinity_cpus() {
                assert!(n <= aff);
            }
        }
    }
}

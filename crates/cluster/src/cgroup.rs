//! Memory cgroups for jobs, where the kernel offers them and the agent may make them (root,
//! as PBS's cgroups hook runs): the kernel then holds a job to its `mem` at every allocation,
//! where the agent's sampling of resident sizes sees a job only once a second, and the cgroup
//! lists every process of the job, also one that left its session and cleared its
//! environment (the marks the agent otherwise finds a job's processes by).
//!
//! A job's cgroup is `<memory hierarchy>/hpcbox/<installation>/<job id>`: in the memory
//! controller's own hierarchy under cgroup v1 (`memory.limit_in_bytes`, and
//! `memory.memsw.limit_in_bytes` where swap is accounted, so that the job cannot swap past
//! its limit), or in the unified hierarchy under v2 (`memory.max`, `memory.swap.max`). The
//! job's first process enters it between fork and exec, so everything it starts is inside.
//! The kernel's out-of-memory kills inside the cgroup show in `memory.oom_control` (v1) or
//! `memory.events` (v2) as `oom_kill <count>`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Where the cgroup file systems are mounted.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Which cgroup interface a hierarchy speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// The memory controller's own hierarchy (`/sys/fs/cgroup/memory`).
    V1,
    /// The unified hierarchy (`/sys/fs/cgroup`, with `memory` among its controllers).
    V2,
}

/// Set to `off` to keep jobs out of cgroups (the agent's sampling and marks alone then).
pub const ENV_CGROUPS: &str = "HPCBOX_CGROUPS";

/// The hierarchy that holds memory cgroups on this machine, if any: v2 when the unified
/// hierarchy has the memory controller, else v1's memory hierarchy when it is mounted. None
/// when [`ENV_CGROUPS`] is `off`.
pub fn memory_hierarchy() -> Option<(PathBuf, Version)> {
    if std::env::var(ENV_CGROUPS).is_ok_and(|v| v == "off") {
        return None;
    }
    let root = Path::new(CGROUP_ROOT);
    let controllers = fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
    if controllers.split_whitespace().any(|c| c == "memory") {
        return Some((root.to_path_buf(), Version::V2));
    }
    let v1 = root.join("memory");
    v1.join("memory.limit_in_bytes")
        .exists()
        .then_some((v1, Version::V1))
}

/// A job's memory cgroup.
#[derive(Debug)]
pub struct MemCgroup {
    dir: PathBuf,
    version: Version,
    limit_kb: Option<u64>,
}

impl MemCgroup {
    /// Makes the cgroup of job `job_id` of installation `installation` under `hierarchy`,
    /// holding it to `limit_kb` when given. An error when the hierarchy does not allow it (not
    /// root, a read-only mount, no delegation).
    pub fn create(
        (hierarchy, version): (&Path, Version),
        installation: &str,
        job_id: &str,
        limit_kb: Option<u64>,
    ) -> io::Result<MemCgroup> {
        let parent = hierarchy.join("hpcbox").join(installation);
        if version == Version::V2 {
            // Each level must hand the memory controller down to the next one.
            enable_memory(hierarchy)?;
            fs::create_dir_all(&parent)?;
            enable_memory(&hierarchy.join("hpcbox"))?;
            enable_memory(&parent)?;
        }
        let dir = parent.join(job_id);
        fs::create_dir_all(&dir)?;
        let cgroup = MemCgroup {
            dir,
            version,
            limit_kb,
        };
        let Some(limit_kb) = limit_kb else {
            return Ok(cgroup);
        };
        let bytes = (limit_kb * 1024).to_string();
        let set = match version {
            Version::V1 => {
                fs::write(cgroup.dir.join("memory.limit_in_bytes"), &bytes).and_then(|()| {
                    // Absent without swap accounting; then there is nothing to hold back.
                    write_if_present(&cgroup.dir.join("memory.memsw.limit_in_bytes"), &bytes)
                })
            }
            Version::V2 => fs::write(cgroup.dir.join("memory.max"), &bytes)
                .and_then(|()| write_if_present(&cgroup.dir.join("memory.swap.max"), "0")),
        };
        match set {
            Ok(()) => Ok(cgroup),
            Err(err) => {
                let _ = cgroup.remove();
                Err(err)
            }
        }
    }

    /// The cgroup an earlier run of the agent made for job `job_id` of `installation`, if it
    /// is still there (the agent was killed while the job ran).
    pub fn left_behind(
        (hierarchy, version): (&Path, Version),
        installation: &str,
        job_id: &str,
    ) -> Option<MemCgroup> {
        let dir = hierarchy.join("hpcbox").join(installation).join(job_id);
        dir.is_dir().then_some(MemCgroup {
            dir,
            version,
            limit_kb: None,
        })
    }

    /// The file a process writes `0` to in order to enter the cgroup.
    pub fn procs_file(&self) -> PathBuf {
        self.dir.join("cgroup.procs")
    }

    /// The limit it holds the job to, if any.
    pub fn limit_kb(&self) -> Option<u64> {
        self.limit_kb
    }

    /// How many processes the kernel has killed in it for want of memory.
    pub fn oom_kills(&self) -> u64 {
        let file = match self.version {
            Version::V1 => "memory.oom_control",
            Version::V2 => "memory.events",
        };
        fs::read_to_string(self.dir.join(file))
            .map(|text| counter(&text, "oom_kill"))
            .unwrap_or(0)
    }

    /// The most memory its processes have held at once, in kilobytes (v2 kernels before 5.19
    /// keep no peak: the current use then).
    pub fn peak_kb(&self) -> u64 {
        let read = |name: &str| -> Option<u64> {
            fs::read_to_string(self.dir.join(name))
                .ok()?
                .trim()
                .parse()
                .ok()
        };
        let bytes = match self.version {
            Version::V1 => read("memory.max_usage_in_bytes"),
            Version::V2 => read("memory.peak").or_else(|| read("memory.current")),
        };
        bytes.unwrap_or(0) / 1024
    }

    /// Removes the cgroup, which its processes must have left; whether it is gone. A cgroup
    /// whose last process has just died may take a moment to be removable: try again.
    pub fn remove(&self) -> bool {
        match fs::remove_dir(&self.dir) {
            Ok(()) => true,
            Err(err) => err.kind() == io::ErrorKind::NotFound,
        }
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.dir
    }
}

/// The value of `key` in a cgroup counter file (`key value` lines); 0 when absent.
fn counter(text: &str, key: &str) -> u64 {
    text.lines()
        .filter_map(|line| line.split_once(' '))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0)
}

fn write_if_present(path: &Path, value: &str) -> io::Result<()> {
    match fs::OpenOptions::new().write(true).open(path) {
        Ok(mut file) => io::Write::write_all(&mut file, value.as_bytes()),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(err),
    }
}

/// Has `dir`'s children get the memory controller (cgroup v2), unless they have it already.
fn enable_memory(dir: &Path) -> io::Result<()> {
    let control = dir.join("cgroup.subtree_control");
    let enabled = fs::read_to_string(&control)?;
    if enabled.split_whitespace().any(|c| c == "memory") {
        return Ok(());
    }
    fs::write(control, "+memory")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_read_by_name() {
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        assert_eq!(counter(v1, "oom_kill"), 3);
        let v2 = "low 0\nhigh 0\nmax 7\noom 2\noom_kill 2\noom_group_kill 0\n";
        assert_eq!(counter(v2, "oom_kill"), 2);
        assert_eq!(counter("", "oom_kill"), 0);
        assert_eq!(counter("oom_kill x\n", "oom_kill"), 0);
    }

    #[test]
    fn a_cgroup_in_a_plain_directory_holds_its_settings() {
        // A stand-in hierarchy: the files a v1 memory cgroup has, as plain files.
        let root = tempfile::tempdir().unwrap();
        let job = root.path().join("hpcbox/inst/1.vm");
        fs::create_dir_all(&job).unwrap();
        for name in [
            "memory.limit_in_bytes",
            "memory.oom_control",
            "memory.max_usage_in_bytes",
        ] {
            fs::write(job.join(name), "").unwrap();
        }
        let cg = MemCgroup::create((root.path(), Version::V1), "inst", "1.vm", Some(2048)).unwrap();
        assert_eq!(
            fs::read_to_string(job.join("memory.limit_in_bytes")).unwrap(),
            "2097152"
        );
        assert!(!job.join("memory.memsw.limit_in_bytes").exists());
        fs::write(job.join("memory.oom_control"), "under_oom 0\noom_kill 1\n").unwrap();
        fs::write(job.join("memory.max_usage_in_bytes"), "2097152\n").unwrap();
        assert_eq!(cg.oom_kills(), 1);
        assert_eq!(cg.peak_kb(), 2048);
        assert_eq!(cg.procs_file(), job.join("cgroup.procs"));
    }
}

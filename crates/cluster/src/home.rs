//! The state directory: where the server keeps its database, socket, token and logs.

use std::path::{Path, PathBuf};

/// The state directory of one hpcbox installation and the files in it.
///
/// Resolved as DESIGN.md says: `$HPCBOX_HOME`, else `$XDG_STATE_HOME/hpcbox`, else
/// `~/.local/state/hpcbox`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// The state directory at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        StateDir { root: root.into() }
    }

    /// The state directory chosen by the environment, read through `lookup`.
    ///
    /// ```
    /// use hpcbox_cluster::home::StateDir;
    /// let dir = StateDir::from_env(|name| match name {
    ///     "XDG_STATE_HOME" => Some("/x".into()),
    ///     "HOME" => Some("/home/me".into()),
    ///     _ => None,
    /// });
    /// assert_eq!(dir.unwrap().root(), std::path::Path::new("/x/hpcbox"));
    /// ```
    pub fn from_env(lookup: impl Fn(&str) -> Option<String>) -> Option<StateDir> {
        let non_empty = |name: &str| lookup(name).filter(|value| !value.is_empty());
        if let Some(home) = non_empty("HPCBOX_HOME") {
            return Some(StateDir::new(home));
        }
        if let Some(state) = non_empty("XDG_STATE_HOME") {
            return Some(StateDir::new(Path::new(&state).join("hpcbox")));
        }
        non_empty("HOME").map(|home| StateDir::new(Path::new(&home).join(".local/state/hpcbox")))
    }

    /// The state directory of this process's environment.
    pub fn from_process_env() -> Option<StateDir> {
        StateDir::from_env(|name| std::env::var(name).ok())
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The SQLite database holding jobs, queues and nodes.
    pub fn database(&self) -> PathBuf {
        self.root.join("server.db")
    }

    /// The Unix socket of the server's local API.
    pub fn socket(&self) -> PathBuf {
        self.root.join("server.sock")
    }

    /// The secret agents and remote clients present (mode 0600).
    pub fn token(&self) -> PathBuf {
        self.root.join("token")
    }

    /// Where the daemons write their logs.
    pub fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }

    /// Where the agent keeps job files: node files and scripts (PBS's `$PBS_HOME/aux`).
    pub fn aux(&self) -> PathBuf {
        self.root.join("aux")
    }

    /// Where this installation's jobs get their `TMPDIR`s (`pbs.<jobid>` inside): a directory
    /// of its own under `temp`, named after the state directory. Two clusters on one machine
    /// (tests, several users) number their jobs alike; sharing `temp` itself, one's job
    /// `4[1].vm` removed the other's `TMPDIR` as it made its own.
    pub fn job_tmp_root(&self, temp: &Path) -> PathBuf {
        temp.join(format!("hpcbox-{}", path_tag(&self.root)))
    }
}

/// A short name that stands for `path`, the same from build to build: what tells apart the
/// shared places (temporary directories, cgroups) of installations on one machine.
pub fn path_tag(path: &Path) -> String {
    format!("{:016x}", fnv1a(path.as_os_str().as_encoded_bytes()))
}

/// FNV-1a, 64 bits: a name that stays the same from build to build for the same path.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence_follows_design() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        let all = env(&[
            ("HPCBOX_HOME", "/h"),
            ("XDG_STATE_HOME", "/x"),
            ("HOME", "/home/u"),
        ]);
        assert_eq!(StateDir::from_env(all).unwrap().root(), Path::new("/h"));
        let empty_override = env(&[("HPCBOX_HOME", ""), ("HOME", "/home/u")]);
        assert_eq!(
            StateDir::from_env(empty_override).unwrap().root(),
            Path::new("/home/u/.local/state/hpcbox")
        );
        assert_eq!(StateDir::from_env(env(&[])), None);
    }

    #[test]
    fn each_installation_has_its_own_tmp_root() {
        let temp = Path::new("/tmp");
        let a = StateDir::new("/home/a/.local/state/hpcbox").job_tmp_root(temp);
        let b = StateDir::new("/tmp/test/state").job_tmp_root(temp);
        assert_ne!(a, b);
        assert_eq!(a.parent(), Some(temp));
        assert_eq!(
            a,
            StateDir::new("/home/a/.local/state/hpcbox").job_tmp_root(temp)
        );
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn files_live_under_the_root() {
        let dir = StateDir::new("/s");
        for path in [
            dir.database(),
            dir.socket(),
            dir.token(),
            dir.logs(),
            dir.aux(),
        ] {
            assert!(path.starts_with("/s"), "{path:?}");
        }
    }
}

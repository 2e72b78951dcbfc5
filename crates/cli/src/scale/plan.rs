//! A submitted sweep's directory, shared by the submitter and the subjobs:
//!
//! ```text
//! DIR/plan.json          what to run: the command, the counts, the repeats, where
//! DIR/array              the job array's id, once submitted
//! DIR/results/K.json     subjob K's run: its count, repeat, seconds and exit status
//! DIR/logs/K.out, K.err  what the command of subjob K printed
//! ```
//!
//! Subjob K runs the K-th of [`runs`]`(procs, repeat)`.

use std::path::{Path, PathBuf};

use hpcbox_lesson::scaling::{runs, Run};
use serde_json::{json, Value};

/// What a submitted sweep runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Names this sweep, so that the subjobs of an earlier array that used the same
    /// directory leave it alone.
    pub token: String,
    /// Where the command runs: the submitter's working directory.
    pub workdir: PathBuf,
    /// The command, with `{n}` where the count goes.
    pub command: Vec<String>,
    /// The counts.
    pub procs: Vec<u32>,
    /// Runs per count.
    pub repeat: u32,
}

impl Plan {
    /// Every run, subjob K running the K-th.
    pub fn runs(&self) -> Vec<Run> {
        runs(&self.procs, self.repeat)
    }

    /// The plan of the sweep in `dir`.
    pub fn read(dir: &Path) -> Result<Plan, String> {
        let path = plan_file(dir);
        let value = read_json(&path)?;
        Plan::from_json(&value).ok_or_else(|| format!("{}: not a sweep's plan", path.display()))
    }

    /// Writes the plan into `dir`.
    pub fn write(&self, dir: &Path) -> Result<(), String> {
        write_json(&plan_file(dir), &self.to_json())
    }

    fn to_json(&self) -> Value {
        json!({
            "token": self.token,
            "workdir": self.workdir,
            "command": self.command,
            "procs": self.procs,
            "repeat": self.repeat,
        })
    }

    fn from_json(value: &Value) -> Option<Plan> {
        Some(Plan {
            token: value["token"].as_str()?.to_string(),
            workdir: PathBuf::from(value["workdir"].as_str()?),
            command: strings(&value["command"])?,
            procs: value["procs"]
                .as_array()?
                .iter()
                .map(|n| n.as_u64().and_then(|n| u32::try_from(n).ok()))
                .collect::<Option<_>>()?,
            repeat: u32::try_from(value["repeat"].as_u64()?).ok()?,
        })
    }
}

/// How one subjob's run ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The run.
    pub run: Run,
    /// Its wall time, seconds.
    pub seconds: f64,
    /// Its exit status (128 + the signal when a signal ended it); `None` when it did not start.
    pub exit_status: Option<i32>,
    /// Why it did not start.
    pub error: Option<String>,
}

impl Outcome {
    /// The outcome subjob `index` of the sweep in `dir` wrote; `None` when it wrote none.
    pub fn read(dir: &Path, index: usize) -> Option<Outcome> {
        let value = read_json(&result_file(dir, index)).ok()?;
        Outcome::from_json(&value)
    }

    /// Writes the outcome of subjob `index` into `dir`, whole or not at all.
    pub fn write(&self, dir: &Path, index: usize) -> Result<(), String> {
        write_json(&result_file(dir, index), &self.to_json())
    }

    fn to_json(&self) -> Value {
        json!({
            "procs": self.run.procs,
            "repeat": self.run.repeat,
            "seconds": self.seconds,
            "exit_status": self.exit_status,
            "error": self.error,
        })
    }

    fn from_json(value: &Value) -> Option<Outcome> {
        Some(Outcome {
            run: Run {
                procs: u32::try_from(value["procs"].as_u64()?).ok()?,
                repeat: u32::try_from(value["repeat"].as_u64()?).ok()?,
            },
            seconds: value["seconds"].as_f64()?,
            exit_status: value["exit_status"]
                .as_i64()
                .and_then(|s| i32::try_from(s).ok()),
            error: value["error"].as_str().map(str::to_string),
        })
    }
}

/// `DIR/plan.json`.
pub fn plan_file(dir: &Path) -> PathBuf {
    dir.join("plan.json")
}

/// `DIR/array`: the job array's id.
pub fn array_file(dir: &Path) -> PathBuf {
    dir.join("array")
}

/// `DIR/results`.
pub fn results_dir(dir: &Path) -> PathBuf {
    dir.join("results")
}

/// `DIR/logs`.
pub fn logs_dir(dir: &Path) -> PathBuf {
    dir.join("logs")
}

/// `DIR/results/K.json`.
fn result_file(dir: &Path, index: usize) -> PathBuf {
    results_dir(dir).join(format!("{index}.json"))
}

/// `DIR/logs/K.out` or `K.err`.
pub fn log_file(dir: &Path, index: usize, stream: &str) -> PathBuf {
    logs_dir(dir).join(format!("{index}.{stream}"))
}

fn strings(value: &Value) -> Option<Vec<String>> {
    value
        .as_array()?
        .iter()
        .map(|s| s.as_str().map(str::to_string))
        .collect()
}

fn read_json(path: &Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Writes `value` to a file beside `path`, then renames it over `path`, so that a reader
/// sees the whole file or none.
fn write_json(path: &Path, value: &Value) -> Result<(), String> {
    let partial = path.with_extension("partial");
    std::fs::write(&partial, value.to_string())
        .and_then(|()| std::fs::rename(&partial, path))
        .map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_and_outcomes_survive_their_files() {
        let dir = tempfile::tempdir().unwrap();
        let plan = Plan {
            token: "t".into(),
            workdir: "/w".into(),
            command: vec!["sh".into(), "-c".into(), "sleep 0.{n}".into()],
            procs: vec![1, 2],
            repeat: 2,
        };
        plan.write(dir.path()).unwrap();
        assert_eq!(Plan::read(dir.path()).unwrap(), plan);
        std::fs::create_dir(results_dir(dir.path())).unwrap();
        let outcome = Outcome {
            run: plan.runs()[1],
            seconds: 0.25,
            exit_status: Some(0),
            error: None,
        };
        assert_eq!(Outcome::read(dir.path(), 2), None);
        outcome.write(dir.path(), 2).unwrap();
        assert_eq!(Outcome::read(dir.path(), 2), Some(outcome));
    }
}

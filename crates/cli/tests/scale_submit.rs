//! `hpcbox scale --submit`: the sweep as one PBS job array on a real `hpcbox up` cluster in a
//! temporary state directory, reported as a local sweep is.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const HPCBOX: &str = env!("CARGO_BIN_EXE_hpcbox");

/// A cluster of its own, stopped when dropped.
struct Cluster {
    _dir: tempfile::TempDir,
    home: PathBuf,
    work: PathBuf,
}

impl Cluster {
    fn up(args: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("state");
        let work = dir.path().join("work");
        std::fs::create_dir_all(&work).unwrap();
        let cluster = Cluster {
            _dir: dir,
            home,
            work,
        };
        let out = cluster.run("up", args);
        assert!(out.status.success(), "hpcbox up: {}", text(&out.stderr));
        cluster
    }

    /// A cluster's state directory with no cluster up in it.
    fn down() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("state");
        let work = dir.path().to_path_buf();
        Cluster {
            _dir: dir,
            home,
            work,
        }
    }

    fn run(&self, verb: &str, args: &[&str]) -> Output {
        Command::new(HPCBOX)
            .arg(verb)
            .args(args)
            .env("HPCBOX_HOME", &self.home)
            .env_remove("PBS_DPREFIX")
            .current_dir(&self.work)
            .output()
            .unwrap()
    }

    /// `hpcbox scale --submit --plot PREFIX` with `args`; asserts that it succeeds.
    fn scale(&self, args: &[&str]) -> String {
        let mut all = vec!["--submit", "--plot", "study"];
        all.extend_from_slice(args);
        let out = self.run("scale", &all);
        assert!(out.status.success(), "hpcbox scale: {}", text(&out.stderr));
        text(&out.stdout)
    }

    /// An attribute of a job, from `qstat -x -f -w`.
    fn attr(&self, id: &str, name: &str) -> Option<String> {
        let out = self.run("qstat", &["-x", "-f", "-w", id]);
        let prefix = format!("    {name} = ");
        text(&out.stdout)
            .lines()
            .find_map(|line| line.strip_prefix(&prefix).map(str::to_string))
    }

    fn path(&self, name: &str) -> PathBuf {
        self.work.join(name)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.run("down", &[]);
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The job array's id, as the sweep's directory keeps it.
fn array_id(runs: &Path) -> String {
    std::fs::read_to_string(runs.join("array"))
        .unwrap()
        .trim()
        .to_string()
}

/// The procs column of a report's table.
fn counts(table: &str) -> Vec<u32> {
    table
        .lines()
        .skip(1)
        .map_while(|line| line.split_whitespace().next()?.parse().ok())
        .collect()
}

fn assert_plots(prefix: &Path, table: &str) {
    let svg = std::fs::read_to_string(prefix.with_extension("svg")).unwrap();
    assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(80)]);
    // The PNG needs a system font to draw its text; without one the report says so.
    match std::fs::read(prefix.with_extension("png")) {
        Ok(png) => assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n"),
        Err(_) => assert!(table.contains("plot not written"), "{table}"),
    }
}

#[test]
fn a_submitted_sweep_runs_as_one_job_array_and_reports_like_a_local_one() {
    let cluster = Cluster::up(&["--cpus", "2", "--mem", "256mb"]);
    let table = cluster.scale(&[
        "--procs",
        "1,2",
        "--repeat",
        "2",
        "--",
        "sh",
        "-c",
        "test \"$(pwd)\" = \"$PBS_O_WORKDIR\" && sleep 0.0{n}",
    ]);
    assert_eq!(counts(&table), [1, 2], "{table}");
    assert!(table.contains("speed-up"), "{table}");
    assert_plots(&cluster.path("study"), &table);
    let runs = cluster.path("study.runs");
    let id = array_id(&runs);
    assert!(id.contains("[]."), "{id}");
    assert_eq!(cluster.attr(&id, "job_state").as_deref(), Some("F"));
    assert_eq!(cluster.attr(&id, "Exit_status").as_deref(), Some("0"));
    assert_eq!(
        cluster.attr(&id, "array_state_count").as_deref(),
        Some("Queued:0 Running:0 Exiting:0 Expired:4 ")
    );
    let sub = id.replacen("[]", "[1]", 1);
    assert_eq!(
        cluster.attr(&sub, "Resource_List.ncpus").as_deref(),
        Some("2")
    );
    // The same sweep, collected again from its directory, as JSON.
    let out = cluster.run("scale", &["--json", "--collect", runs.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = report["rows"].as_array().unwrap();
    let procs: Vec<u64> = rows.iter().map(|r| r["procs"].as_u64().unwrap()).collect();
    assert_eq!(procs, [1, 2]);
    assert_eq!(rows[0]["speedup"], 1.0);
}

#[test]
fn a_failing_subjob_names_its_count() {
    let cluster = Cluster::up(&["--cpus", "2", "--mem", "256mb"]);
    let out = cluster.run(
        "scale",
        &[
            "--submit",
            "--procs",
            "1,2",
            "--repeat",
            "1",
            "--",
            "sh",
            "-c",
            "if test {n} = 2; then echo two is too many >&2; exit 3; fi",
        ],
    );
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("at 2 processes"), "{stderr}");
    assert!(stderr.contains("exit status 3"), "{stderr}");
    assert!(stderr.contains("two is too many"), "{stderr}");
    assert!(!stderr.contains("at 1 processes"), "{stderr}");
}

#[test]
fn no_wait_prints_the_array_and_collect_reports_it_later() {
    let cluster = Cluster::up(&["--cpus", "2", "--mem", "256mb"]);
    let out = cluster.run(
        "scale",
        &[
            "--submit",
            "--no-wait",
            "--procs",
            "1,2",
            "--repeat",
            "1",
            "--runs",
            "later",
            "--",
            "true",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let id = text(&out.stdout).trim().to_string();
    assert_eq!(id, array_id(&cluster.path("later")));
    let out = cluster.run("scale", &["--collect", "later", "--plot", "later"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(counts(&text(&out.stdout)), [1, 2]);
    assert_eq!(cluster.attr(&id, "job_state").as_deref(), Some("F"));
}

#[test]
fn submitting_says_what_is_missing() {
    // No cluster up.
    let none = Cluster::down();
    let out = none.run("scale", &["--submit", "--procs", "1,2", "--", "true"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("hpcbox up"),
        "{}",
        text(&out.stderr)
    );
    let cluster = Cluster::up(&["--cpus", "1", "--mem", "256mb"]);
    // One run is no array.
    let out = cluster.run(
        "scale",
        &["--submit", "--procs", "1", "--repeat", "1", "--", "true"],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("at least two"),
        "{}",
        text(&out.stderr)
    );
    // A count no node can hold.
    let out = cluster.run("scale", &["--submit", "--procs", "1,4", "--", "true"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("needs 4 CPUs"),
        "{}",
        text(&out.stderr)
    );
}

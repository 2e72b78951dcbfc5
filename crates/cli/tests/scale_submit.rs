//! `hpcbox scale --submit`: the sweep as one PBS job array on a real `hpcbox up` cluster in a
//! temporary state directory, reported as a local sweep is.

mod common;

use std::path::Path;

use common::{text, Cluster};

/// `hpcbox scale --submit --plot study` with `args` in `cluster`; asserts that it succeeds.
fn scale(cluster: &Cluster, args: &[&str]) -> String {
    let mut all = vec!["--submit", "--plot", "study"];
    all.extend_from_slice(args);
    let out = cluster.run("scale", &all);
    assert!(out.status.success(), "hpcbox scale: {}", text(&out.stderr));
    text(&out.stdout)
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
    let table = scale(
        &cluster,
        &[
            "--procs",
            "1,2",
            "--repeat",
            "2",
            "--",
            "sh",
            "-c",
            "test \"$(pwd)\" = \"$PBS_O_WORKDIR\" && sleep 0.0{n}",
        ],
    );
    assert_eq!(counts(&table), [1, 2], "{table}");
    assert!(table.contains("speed-up"), "{table}");
    assert_plots(&cluster.work.join("study"), &table);
    let runs = cluster.work.join("study.runs");
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
    assert_eq!(id, array_id(&cluster.work.join("later")));
    let out = cluster.run("scale", &["--collect", "later", "--plot", "later"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(counts(&text(&out.stdout)), [1, 2]);
    assert_eq!(cluster.attr(&id, "job_state").as_deref(), Some("F"));
}

#[test]
fn submitting_says_what_is_missing() {
    // No cluster up.
    let none = Cluster::empty();
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

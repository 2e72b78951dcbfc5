//! The binary's own verbs, without a cluster: version, check-script, sim, and answering to
//! PBS's names through a link.

use std::process::{Command, Output};

const HPCBOX: &str = env!("CARGO_BIN_EXE_hpcbox");

fn hpcbox(args: &[&str]) -> Output {
    Command::new(HPCBOX)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("PBS_DPREFIX")
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn answers_version_and_help() {
    let out = hpcbox(&["--version"]);
    assert_eq!(
        stdout(&out),
        format!("hpcbox {}\n", env!("CARGO_PKG_VERSION"))
    );
    let help = stdout(&hpcbox(&["--help"]));
    for verb in [
        "up",
        "down",
        "status",
        "qsub",
        "qstat",
        "check-script",
        "sim",
    ] {
        assert!(help.contains(verb), "--help lacks {verb}:\n{help}");
    }
}

#[test]
fn check_script_reads_the_lesson_script_as_qsub_does() {
    let out = hpcbox(&["check-script", "../../examples/lesson/testmpi.pbs"]);
    assert!(out.status.success());
    let text = stdout(&out);
    for line in [
        "    Job_Name = testmpi\n",
        "    queue = defaultQ\n",
        "    Resource_List.ncpus = 4\n",
        "    Resource_List.mem = 4gb\n",
        "    Resource_List.select = 4:ncpus=1:mem=1GB\n",
        "    Resource_List.walltime = 00:10:00\n",
        "    project = Training\n",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    let out = hpcbox(&[
        "check-script",
        "-N",
        "renamed",
        "../../examples/lesson/testmpi.pbs",
    ]);
    assert!(stdout(&out).contains("    Job_Name = renamed\n"));
}

#[test]
fn check_script_refuses_as_qsub_refuses() {
    let out = hpcbox(&[
        "check-script",
        "-r",
        "maybe",
        "../../examples/lesson/testmpi.pbs",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("qsub: illegal -r value\n"));
    let out = hpcbox(&["check-script", "no-such-script.pbs"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "qsub: script file:: No such file or directory\n"
    );
}

#[test]
fn sim_compares_fifo_and_backfill() {
    let out = hpcbox(&["sim", "--jobs", "300", "--nodes", "4", "--cpus", "4"]);
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(
        text.contains("FIFO") && text.contains("EASY backfill"),
        "{text}"
    );
    assert!(text.contains("utilization %"), "{text}");
}

#[test]
fn answers_to_pbs_names_through_a_link() {
    let dir = tempfile::tempdir().unwrap();
    let out = hpcbox(&["links", dir.path().to_str().unwrap()]);
    assert!(out.status.success());
    for name in [
        "qsub",
        "qstat",
        "qdel",
        "qhold",
        "qrls",
        "qsig",
        "qalter",
        "pbsnodes",
        "pbs_tmrsh",
    ] {
        assert!(dir.path().join(name).exists(), "no {name} link");
    }
    for name in ["qsub", "pbs_tmrsh"] {
        let out = Command::new(dir.path().join(name))
            .arg("--version")
            .output()
            .unwrap();
        assert_eq!(
            stdout(&out),
            format!("pbs_version = {}\n", env!("CARGO_PKG_VERSION")),
            "{name}"
        );
    }
    // Without a server, the commands say so and exit as PBS's do with no server (15034).
    let out = Command::new(dir.path().join("qstat"))
        .env("HPCBOX_HOME", dir.path().join("nowhere"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(15034 & 0xff));
    assert!(String::from_utf8_lossy(&out.stderr).contains("hpcbox up"));
}

#[test]
fn scale_reports_fits_and_plots_a_sweep() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("study");
    let out = hpcbox(&[
        "scale",
        "--procs",
        "1,2",
        "--repeat",
        "2",
        "--json",
        "--plot",
        prefix.to_str().unwrap(),
        "--",
        "sh",
        "-c",
        "test {n} -ge 1",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = report["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["procs"], 1);
    assert_eq!(rows[0]["speedup"], 1.0);
    assert!(report["sweet_spot"].is_u64());
    let svg = std::fs::read_to_string(prefix.with_extension("svg")).unwrap();
    assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(80)]);
    assert!(svg.contains("speed-up"));
    // The PNG needs a system font to draw its text; without one the report says so.
    match std::fs::read(prefix.with_extension("png")) {
        Ok(png) => assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n"),
        Err(_) => assert!(!report["plot_errors"].as_array().unwrap().is_empty()),
    }
    // A failing command stops the sweep with its error.
    let out = hpcbox(&["scale", "--procs", "1", "--", "sh", "-c", "exit 3"]);
    assert!(!out.status.success());
    // A threshold that is no fraction is refused before anything runs.
    for bad in ["-0.1", "nan", "inf", "ten"] {
        let out = hpcbox(&["scale", "--threshold", bad, "--", "sh", "-c", "exit 9"]);
        assert_eq!(out.status.code(), Some(2), "{bad}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("not a fraction"));
    }
}

/// A fake rsh agent in `dir`: `fake-rsh HOST COMMAND` runs COMMAND here with `FAKE_HOST=HOST`.
fn fake_rsh(dir: &std::path::Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("fake-rsh");
    let script = "#!/bin/sh\nFAKE_HOST=$1\nexport FAKE_HOST\nshift\nexec sh -c \"$1\"\n";
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// `hpcbox mpiexec -f hosts …` with the fake agent, over a hostfile of two 2-slot nodes.
fn mpiexec_on_two_nodes(args: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts");
    std::fs::write(&hosts, "# two nodes\nnodeA slots=2\nnodeB slots=2\n").unwrap();
    Command::new(HPCBOX)
        .args(["mpiexec", "-f", hosts.to_str().unwrap()])
        .args(args)
        .env("HPCBOX_RSH", fake_rsh(dir.path()))
        .env("HPCBOX_RENDEZVOUS_HOST", "127.0.0.1")
        .env_remove("PBS_NODEFILE")
        .output()
        .unwrap()
}

#[test]
fn mpiexec_starts_ranks_on_hostfile_hosts_through_the_agent() {
    let out = mpiexec_on_two_nodes(&[
        "-np",
        "4",
        "--tag-output",
        "sh",
        "-c",
        r#"echo "rank $HPCBOX_RANK of $HPCBOX_SIZE on $FAKE_HOST""#,
    ]);
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    for (rank, host) in [(0, "nodeA"), (1, "nodeA"), (2, "nodeB"), (3, "nodeB")] {
        let want = format!("[{rank}] rank {rank} of 4 on {host}\n");
        assert!(text.contains(&want), "{text}");
    }
    // Ranks that talk: computepi's ranks reduce their counts over the TCP rendezvous.
    let out = mpiexec_on_two_nodes(&[HPCBOX, "computepi", "--samples", "100000"]);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout(&out).contains("workers=4"), "{}", stdout(&out));
}

#[test]
fn mpiexec_names_the_failing_rank_and_its_host() {
    let out = mpiexec_on_two_nodes(&[
        "-n",
        "5",
        "sh",
        "-c",
        r#"if [ "$HPCBOX_RANK" = 3 ]; then exit 3; fi; exec sleep 30"#,
    ]);
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("oversubscribing"), "{err}");
    assert!(
        err.contains("mpiexec: rank 3 on nodeB exited with status 3"),
        "{err}"
    );
}

#[test]
fn mpiexec_binds_to_a_core() {
    let out = hpcbox(&[
        "mpiexec",
        "-n",
        "1",
        "--bind-to",
        "core",
        "sh",
        "-c",
        "grep Cpus_allowed_list /proc/self/status",
    ]);
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    let cpus = text.trim().rsplit('\t').next().unwrap();
    assert!(cpus.parse::<usize>().is_ok(), "not one CPU: {text}");
}

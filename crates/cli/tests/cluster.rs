//! End to end: real `hpcbox up` clusters in temporary state directories, driven by the PBS
//! commands as a user would drive them.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{kill_and_wait, read_pid, running, seq, text, Cluster, HPCBOX};

#[test]
fn a_job_runs_with_the_pbs_environment_and_its_output_lands_where_it_was_submitted() {
    let cluster = Cluster::up(&["--nodes", "2", "--cpus", "1", "--mem", "256mb"]);
    let script = "#!/bin/sh\n#PBS -N envjob\n#PBS -l select=2:ncpus=1\ncd $PBS_O_WORKDIR\n\
                  echo \"id=$PBS_JOBID name=$PBS_JOBNAME queue=$PBS_QUEUE env=$PBS_ENVIRONMENT\"\n\
                  echo \"ncpus=$NCPUS omp=$OMP_NUM_THREADS\"\nwc -l < $PBS_NODEFILE\n\
                  test -d \"$TMPDIR\" && echo tmpdir\npwd\necho oops >&2\n";
    let id = cluster.qsub("env.pbs", script, &[]);
    assert!(id.ends_with(&format!(".{}", id.split_once('.').unwrap().1)));
    cluster.wait_state(&id, "F");
    let out = cluster.read(&format!("envjob.o{}", seq(&id)));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        format!("id={id} name=envjob queue=workq env=PBS_BATCH")
    );
    assert_eq!(lines[1], "ncpus=1 omp=1");
    assert_eq!(lines[2], "2");
    assert_eq!(lines[3], "tmpdir");
    assert_eq!(lines[4], cluster.work.display().to_string());
    assert_eq!(cluster.read(&format!("envjob.e{}", seq(&id))), "oops\n");
    assert_eq!(cluster.attr(&id, "Exit_status").as_deref(), Some("0"));
    let comment = cluster.attr(&id, "comment").unwrap();
    assert!(
        comment.starts_with("Job run at ") && comment.ends_with(" and finished"),
        "{comment}"
    );
    // Without -x a finished job is history, in PBS's words and exit status.
    let out = cluster.run("qstat", &[&id]);
    assert_eq!(out.status.code(), Some(35));
    assert_eq!(
        text(&out.stderr),
        format!(
            "qstat: {id} Job has finished, use -x or -H to obtain historical job information\n"
        )
    );
}

#[test]
fn the_lessons_testmpi_script_runs_unmodified_on_four_virtual_nodes() {
    let cluster = Cluster::up(&[
        "--nodes", "4", "--cpus", "1", "--mem", "1GB", "--queue", "defaultQ",
    ]);
    let program = include_str!("../../../examples/lesson/mpi.py");
    std::fs::write(cluster.work.join("mpi.py"), program).unwrap();
    let script = include_str!("../../../examples/lesson/testmpi.pbs");
    let id = cluster.qsub("testmpi.pbs", script, &[]);
    cluster.wait_state(&id, "F");
    assert_eq!(cluster.attr(&id, "queue").as_deref(), Some("defaultQ"));
    assert_eq!(cluster.attr(&id, "project").as_deref(), Some("Training"));
    let vnodes = cluster.attr(&id, "exec_vnode").unwrap();
    assert_eq!(vnodes.matches("ncpus=1").count(), 4, "{vnodes}");
    // Without environment modules, `module load` fails as it would, and the job goes on.
    let errors = cluster.read(&format!("testmpi.e{}", seq(&id)));
    assert!(errors.contains("module"), "{errors}");
    if !system_mpi_with_mpi4py() {
        return;
    }
    // Open MPI, told the job's hosts, starts all four ranks on the two-core machine.
    assert_eq!(
        cluster.attr(&id, "Exit_status").as_deref(),
        Some("0"),
        "{errors}"
    );
    let mut lines: Vec<String> = cluster.read("mpi.out").lines().map(String::from).collect();
    lines.sort();
    let expected: Vec<String> = (0..4)
        .map(|rank| format!("I am rank {rank} in group of 4 processes."))
        .collect();
    assert_eq!(lines, expected, "{errors}");
}

/// Whether a job's login shell finds `mpiexec` and a `python` with mpi4py, as the lesson's
/// script needs. `.ci/run` installs both and sets `HPCBOX_REQUIRE_MPI`, which turns their
/// absence into a failure; elsewhere the MPI half of the test is skipped, saying so.
fn system_mpi_with_mpi4py() -> bool {
    // In a job's environment (the agent's base PATH, then the login profile), not this
    // process's: a PATH of this shell's own (a virtualenv, say) would find what a job does not.
    let home = std::env::var("HOME").unwrap_or_else(|_| "/".into());
    let probe = Command::new("env")
        .args([
            "-i",
            "PATH=/bin:/usr/bin",
            &format!("HOME={home}"),
            "bash",
            "-lc",
        ])
        .arg("command -v mpiexec && python -c 'import mpi4py'")
        .output()
        .is_ok_and(|out| out.status.success());
    let required = std::env::var_os("HPCBOX_REQUIRE_MPI").is_some();
    assert!(
        probe || !required,
        "HPCBOX_REQUIRE_MPI is set but a login shell has no mpiexec or mpi4py"
    );
    if !probe {
        eprintln!("skipping the MPI half: no mpiexec or mpi4py in a login shell (see .ci/run)");
    }
    probe
}

#[test]
fn qsub_dash_dash_runs_an_executable_given_first() {
    let cluster = Cluster::up(&["--cpus", "1", "--mem", "256mb"]);
    let out = cluster.run("qsub", &["--", "/bin/echo", "hello", "there"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let id = text(&out.stdout).trim().to_string();
    cluster.wait_state(&id, "F");
    assert_eq!(cluster.attr(&id, "Exit_status").as_deref(), Some("0"));
    assert_eq!(
        cluster.read(&format!("STDIN.o{}", seq(&id))),
        "hello there\n"
    );
}

#[test]
fn errors_are_pbs_errors() {
    let cluster = Cluster::up(&["--cpus", "1", "--mem", "256mb"]);
    std::fs::write(cluster.work.join("j.pbs"), "true\n").unwrap();
    let out = cluster.run("qsub", &["-q", "nosuch", "j.pbs"]);
    assert_eq!(
        (out.status.code(), text(&out.stderr)),
        (Some(170), "qsub: Unknown queue\n".into())
    );
    let out = cluster.run("qstat", &["999"]);
    assert_eq!(out.status.code(), Some(153));
    assert!(
        text(&out.stderr).starts_with("qstat: Unknown Job Id 999."),
        "{}",
        text(&out.stderr)
    );
    let out = cluster.run("qdel", &["999"]);
    assert_eq!(out.status.code(), Some(153));
    let out = cluster.run("qsub", &["-l", "ncpus=lots", "j.pbs"]);
    assert_ne!(out.status.code(), Some(0));
    let out = cluster.run("qsub", &["-W", "depend=afterok:999", "j.pbs"]);
    assert_eq!(out.status.code(), Some(153));
    assert!(
        text(&out.stderr).starts_with("qsub: Unknown Job Id 999."),
        "{}",
        text(&out.stderr)
    );
    // Nothing refused was queued.
    let out = cluster.run("qstat", &["-x"]);
    assert_eq!(text(&out.stdout), "");
}

#[test]
fn hold_release_delete_and_dependencies() {
    let cluster = Cluster::up(&["--cpus", "1", "--mem", "256mb"]);
    let held = cluster.qsub("held.pbs", "echo released\n", &["-h"]);
    assert_eq!(cluster.attr(&held, "job_state").as_deref(), Some("H"));
    let fails = cluster.qsub("fails.pbs", "exit 3\n", &[]);
    let after_ok = cluster.qsub(
        "ok.pbs",
        "echo never\n",
        &["-W", &format!("depend=afterok:{fails}")],
    );
    let after_not_ok = cluster.qsub(
        "notok.pbs",
        "echo ran\n",
        &["-W", &format!("depend=afternotok:{fails}")],
    );
    cluster.wait_state(&fails, "F");
    assert_eq!(cluster.attr(&fails, "Exit_status").as_deref(), Some("3"));
    cluster.wait_state(&after_not_ok, "F");
    assert_eq!(
        cluster.read(&format!("notok.pbs.o{}", seq(&after_not_ok))),
        "ran\n"
    );
    cluster.wait_state(&after_ok, "F");
    assert_eq!(
        cluster.attr(&after_ok, "Exit_status"),
        None,
        "afterok job must never run"
    );
    assert!(cluster.run("qrls", &[&held]).status.success());
    cluster.wait_state(&held, "F");
    assert_eq!(
        cluster.read(&format!("held.pbs.o{}", seq(&held))),
        "released\n"
    );
}

#[test]
fn qdel_ends_a_running_job_and_everything_it_started() {
    let cluster = Cluster::up(&["--cpus", "1", "--mem", "256mb"]);
    let marker = cluster.work.join("daemon.pid");
    let script = format!(
        "setsid sh -c 'echo $$ > {}; exec sleep 1000' &\nsleep 1000\n",
        marker.display()
    );
    let id = cluster.qsub("bg.pbs", &script, &[]);
    let daemon = wait_for_pid(&marker);
    assert!(cluster.run("qdel", &[&id]).status.success());
    cluster.wait_state(&id, "F");
    let exit = cluster.attr(&id, "Exit_status");
    assert_eq!(exit.as_deref(), Some("271"), "{}", cluster.diagnose(&id));
    assert_gone(daemon);
    let comment = cluster.attr(&id, "comment").unwrap();
    assert!(comment.contains("and terminated"), "{comment}");
}

/// Without cgroups, qdel still ends a daemon that double-forked out of the job and left its
/// session: its parent gone, the agent (a subreaper) adopted it, and finds it below itself by
/// the job's mark. (Where the agent can make cgroups, the test above passes through them.)
#[test]
fn qdel_without_cgroups_ends_a_daemon_the_agent_adopted() {
    let cluster = Cluster::empty();
    let out = cluster
        .command("up")
        .env(hpcbox_cluster::cgroup::ENV_CGROUPS, "off")
        .args(["--cpus", "1", "--mem", "256mb"])
        .output()
        .unwrap();
    assert!(out.status.success(), "hpcbox up: {}", text(&out.stderr));
    let marker = cluster.work.join("adopted.pid");
    let script = format!(
        "(setsid sh -c 'echo $$ > {}; exec sleep 1000' &)\nsleep 1000\n",
        marker.display()
    );
    let id = cluster.qsub("adopt.pbs", &script, &[]);
    let daemon = wait_for_pid(&marker);
    assert!(cluster.run("qdel", &[&id]).status.success());
    cluster.wait_state(&id, "F");
    assert_gone(daemon);
}

/// With a cgroup per job (root, a memory hierarchy), qdel ends even a process that left the
/// job's session and cleared its environment, so that neither mark the agent otherwise finds a
/// job's processes by is left on it.
#[test]
fn qdel_ends_a_process_that_left_the_session_and_cleared_its_environment() {
    if !memory_cgroups_usable() {
        eprintln!("skipped: no memory cgroup this process may make (root and a memory hierarchy)");
        return;
    }
    let cluster = Cluster::up(&["--cpus", "1", "--mem", "256mb"]);
    let marker = cluster.work.join("escaped.pid");
    let script = format!(
        "setsid env -i /bin/sh -c 'echo $$ > {}; exec sleep 1000' &\nsleep 1000\n",
        marker.display()
    );
    let id = cluster.qsub("esc.pbs", &script, &[]);
    let escaped = wait_for_pid(&marker);
    assert!(cluster.run("qdel", &[&id]).status.success());
    cluster.wait_state(&id, "F");
    // Its reaper may take a moment once the job has ended.
    let deadline = Instant::now() + Duration::from_secs(5);
    while running(escaped) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_gone(escaped);
}

#[test]
fn qdel_ends_the_ranks_a_system_mpiexec_started_in_the_job() {
    if !system_mpi_with_mpi4py() {
        return;
    }
    let cluster = Cluster::up(&["--nodes", "2", "--cpus", "1", "--mem", "256mb"]);
    let script = "#PBS -l select=2:ncpus=1\ncd $PBS_O_WORKDIR\n\
                  mpiexec -np 2 sh -c 'echo $$ > rank$OMPI_COMM_WORLD_RANK.pid; exec sleep 1000'\n";
    let id = cluster.qsub("ranks.pbs", script, &[]);
    let ranks: Vec<i32> = (0..2)
        .map(|rank| wait_for_pid(&cluster.work.join(format!("rank{rank}.pid"))))
        .collect();
    assert!(cluster.run("qdel", &[&id]).status.success());
    cluster.wait_state(&id, "F");
    for rank in ranks {
        assert_gone(rank);
    }
}

/// The process id a job writes to `file` (a whole line), once it is there.
fn wait_for_pid(file: &Path) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(file).is_ok_and(|s| s.ends_with('\n')) {
        assert!(
            Instant::now() < deadline,
            "the job never wrote {}",
            file.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    read_pid(file)
}

/// Asserts that process `pid` has exited (a zombie awaiting its reaper counts as gone).
fn assert_gone(pid: i32) {
    assert!(
        !running(pid),
        "process {pid} survived qdel: {}",
        std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default()
    );
}

#[test]
fn finished_jobs_leave_the_history_when_it_runs_out() {
    let cluster = Cluster::up(&["--cpus", "1", "--mem", "256mb", "--history", "3"]);
    let server = text(&cluster.run("qstat", &["-B", "-f"]).stdout);
    assert!(
        server.contains("    job_history_enable = True\n"),
        "{server}"
    );
    assert!(
        server.contains("    job_history_duration = 00:00:03\n"),
        "{server}"
    );
    let id = cluster.qsub("quick.pbs", "true\n", &[]);
    cluster.wait_state(&id, "F");
    let deadline = Instant::now() + Duration::from_secs(30);
    while cluster.attr(&id, "job_state").is_some() {
        assert!(Instant::now() < deadline, "job {id} never left the history");
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = cluster.run("qstat", &["-x", &id]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("Unknown Job Id"),
        "{}",
        text(&out.stderr)
    );
}

/// Kills the cluster's server with SIGKILL and starts it again with `up_args`.
fn kill_and_restart_server(cluster: &Cluster, up_args: &[&str]) {
    kill_and_wait(read_pid(&cluster.state().join("server.pid")));
    let out = cluster.run("up", up_args);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn an_array_running_across_a_server_restart_keeps_its_cpus_and_finishes() {
    let up = ["--cpus", "1", "--mem", "256mb"];
    let cluster = Cluster::up(&up);
    let id = cluster.qsub("arr.pbs", "sleep 4\n", &["-J", "1-3"]);
    let sub = |i: u32| id.replacen("[]", &format!("[{i}]"), 1);
    cluster.wait_state(&sub(1), "R");
    kill_and_restart_server(&cluster, &up);
    // Subjob 1 kept the one CPU across the restart: subjob 2 waits for it.
    assert_eq!(cluster.attr(&sub(1), "job_state").as_deref(), Some("R"));
    assert_eq!(cluster.attr(&sub(2), "job_state").as_deref(), Some("Q"));
    cluster.wait_state(&id, "F");
    assert_eq!(cluster.attr(&id, "Exit_status").as_deref(), Some("0"));
    for i in 1..=3 {
        assert_eq!(cluster.attr(&sub(i), "Exit_status").as_deref(), Some("0"));
    }
}

/// Submissions keep coming while the server is killed with SIGKILL: every id a `qsub`
/// printed is there after the restart (the rest failed, saying so).
#[test]
fn a_server_killed_mid_submission_loses_no_printed_id() {
    let up = ["--cpus", "1", "--mem", "256mb"];
    let cluster = Cluster::up(&up);
    let blocker = cluster.qsub("block.pbs", "sleep 30\n", &[]);
    std::fs::write(cluster.work.join("load.pbs"), "true\n").unwrap();
    let printed = std::thread::scope(|scope| {
        let submitter = scope.spawn(|| {
            let mut printed = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline {
                let out = cluster.run("qsub", &["-h", "load.pbs"]);
                if out.status.success() {
                    printed.push(text(&out.stdout).trim().to_string());
                }
            }
            printed
        });
        std::thread::sleep(Duration::from_millis(700));
        kill_and_restart_server(&cluster, &up);
        submitter.join().unwrap()
    });
    assert!(printed.len() > 10, "only {} submissions", printed.len());
    for id in &printed {
        assert_eq!(
            cluster.attr(id, "job_state").as_deref(),
            Some("H"),
            "{id} lost"
        );
    }
    assert_eq!(cluster.attr(&blocker, "job_state").as_deref(), Some("R"));
}

/// A node agent killed with SIGKILL while its job runs: when the agent is back, the server
/// has it kill what is left of the job and runs the job again from the start (PBS requeues
/// the jobs of a failed node); the job is never lost and never runs twice at once.
#[test]
fn a_job_whose_agent_was_killed_is_requeued_and_runs_again() {
    let up = ["--cpus", "1", "--mem", "256mb"];
    let cluster = Cluster::up(&up);
    let marker = cluster.work.join("first.pid");
    let script = format!(
        "cd $PBS_O_WORKDIR\nif [ ! -e {m} ]; then echo $$ > {m}; sleep 1000; fi\necho rerun\n",
        m = marker.display()
    );
    let id = cluster.qsub("rerun.pbs", &script, &[]);
    let first = wait_for_pid(&marker);
    let agent = std::fs::read_dir(cluster.state())
        .unwrap()
        .filter_map(|e| e.ok())
        .find(|e| e.file_name().to_string_lossy().starts_with("agent-"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .expect("an agent pid file");
    kill_and_wait(agent.trim().parse().unwrap());
    let out = cluster.run("up", &up);
    assert!(out.status.success(), "{}", text(&out.stderr));
    cluster.wait_state(&id, "F");
    assert_eq!(cluster.attr(&id, "Exit_status").as_deref(), Some("0"));
    assert_eq!(cluster.attr(&id, "run_count").as_deref(), Some("2"));
    assert_gone(first);
    let output = cluster.read(&format!("rerun.pbs.o{}", seq(&id)));
    assert_eq!(output, "rerun\n", "a rerun's output holds that run's alone");
}

#[test]
fn a_server_killed_with_sigkill_loses_no_job() {
    let cluster = Cluster::up(&["--cpus", "1", "--mem", "256mb"]);
    let blocker = cluster.qsub("block.pbs", "sleep 5\n", &[]);
    cluster.wait_state(&blocker, "R");
    let ids: Vec<String> = (0..5)
        .map(|k| cluster.qsub(&format!("j{k}.pbs"), &format!("echo {k}\n"), &[]))
        .collect();
    kill_and_restart_server(&cluster, &["--cpus", "1", "--mem", "256mb"]);
    // The running job kept its CPU across the restart: nothing else starts beside it.
    assert_eq!(cluster.attr(&blocker, "job_state").as_deref(), Some("R"));
    assert_eq!(cluster.attr(&ids[0], "job_state").as_deref(), Some("Q"));
    cluster.wait_state(&blocker, "F");
    assert_eq!(cluster.attr(&blocker, "Exit_status").as_deref(), Some("0"));
    for (k, id) in ids.iter().enumerate() {
        cluster.wait_state(id, "F");
        assert_eq!(
            cluster.read(&format!("j{k}.pbs.o{}", seq(id))),
            format!("{k}\n")
        );
    }
}

#[test]
fn the_demo_runs_the_lesson_end_to_end() {
    let out = Command::new(HPCBOX)
        .args(["demo", "--samples", "20000000"])
        .env_remove("HPCBOX_HOME")
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    for expected in [
        "$ qsub run_pi.pbs",
        "$ cat out_pi.o",
        "$ cat out_mpi.o",
        "speed-up",
        "hpcbox is down",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in\n{stdout}"
        );
    }
    let methods: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("method "))
        .skip(1)
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(methods, ["serial", "pool", "ranks"], "{stdout}");
}

#[test]
fn limits_kill_with_pbs_exit_statuses() {
    let cluster = Cluster::up(&["--cpus", "1", "--mem", "1GB"]);
    let walltime = cluster.qsub("wall.pbs", "sleep 60\n", &["-l", "walltime=1"]);
    let memory = cluster.qsub(
        "mem.pbs",
        "python3 -c 'import time; x = bytearray(300 << 20); time.sleep(60)'\n",
        &["-l", "mem=50mb"],
    );
    for (id, status, resource) in [(&walltime, "-29", "walltime"), (&memory, "-27", "mem")] {
        cluster.wait_state(id, "F");
        assert_eq!(
            cluster.attr(id, "Exit_status").as_deref(),
            Some(status),
            "{id}"
        );
        let comment = cluster.attr(id, "comment").unwrap();
        assert!(
            comment.ends_with(&format!("and exceeded resource {resource}")),
            "{comment}"
        );
    }
    let errors = cluster.read(&format!("wall.pbs.e{}", seq(&walltime)));
    assert!(
        errors.contains("=>> PBS: job killed: walltime "),
        "{errors}"
    );
    assert!(errors.contains(" exceeded limit 1"), "{errors}");
    let errors = cluster.read(&format!("mem.pbs.e{}", seq(&memory)));
    assert!(errors.contains("=>> PBS: job killed: mem "), "{errors}");
}

/// Where the kernel offers memory cgroups and the agent may make them (root), a job is held
/// to its `mem` at every allocation: a process that allocates past it dies there, before it
/// can print (the agent's once-a-second sampling alone would have let it), and the job ends
/// with PBS's memory status and message.
#[test]
fn a_memory_cgroup_holds_a_job_to_its_mem_at_once() {
    if !memory_cgroups_usable() {
        eprintln!("skipped: no memory cgroup this process may make (root and a memory hierarchy)");
        return;
    }
    let cluster = Cluster::up(&["--cpus", "1", "--mem", "1GB"]);
    let id = cluster.qsub(
        "cg.pbs",
        "python3 -c 'x = bytearray(300 << 20); print(\"allocated\", flush=True)'\necho after\nsleep 30\n",
        &["-l", "mem=50mb"],
    );
    cluster.wait_state(&id, "F");
    assert_eq!(cluster.attr(&id, "Exit_status").as_deref(), Some("-27"));
    let output = cluster.read(&format!("cg.pbs.o{}", seq(&id)));
    assert!(
        !output.contains("allocated"),
        "the allocation went through: {output}"
    );
    assert!(output.contains("after"), "{output}");
    let errors = cluster.read(&format!("cg.pbs.e{}", seq(&id)));
    assert!(
        errors.contains("=>> PBS: job killed: mem ") && errors.contains("exceeded limit 51200kb"),
        "{errors}"
    );
}

/// Whether this process can make a memory cgroup (as the agent, running as this user, will).
fn memory_cgroups_usable() -> bool {
    let Some((hierarchy, _)) = hpcbox_cluster::cgroup::memory_hierarchy() else {
        return false;
    };
    let probe = hierarchy.join(format!("hpcbox-probe-{}", std::process::id()));
    let made = std::fs::create_dir(&probe).is_ok();
    let _ = std::fs::remove_dir(&probe);
    made
}

#[test]
fn job_arrays_run_every_index_and_qdel_ends_the_rest() {
    let cluster = Cluster::up(&["--cpus", "2", "--mem", "256mb"]);
    let script = "#PBS -N arr\necho \"$PBS_ARRAY_INDEX of $PBS_ARRAY_ID as $PBS_JOBID\"\n";
    let id = cluster.qsub("arr.pbs", script, &["-J", "1-5:2"]);
    assert!(id.contains("[]."), "{id}");
    cluster.wait_state(&id, "F");
    assert_eq!(cluster.attr(&id, "Exit_status").as_deref(), Some("0"));
    assert_eq!(
        cluster.attr(&id, "array_state_count").as_deref(),
        Some("Queued:0 Running:0 Exiting:0 Expired:3 ")
    );
    for index in [1, 3, 5] {
        let sub = id.replacen("[]", &format!("[{index}]"), 1);
        assert_eq!(cluster.attr(&sub, "job_state").as_deref(), Some("X"));
        let out = cluster.read(&format!("arr.o{}.{index}", seq(&id)));
        assert_eq!(out, format!("{index} of {id} as {sub}\n"));
    }
    let listed = text(&cluster.run("qstat", &["-x", "-t", &id]).stdout);
    assert_eq!(listed.lines().count(), 2 + 4, "{listed}");
    // Deleting an array kills its running subjobs and drops its queued ones.
    let long = cluster.qsub("long.pbs", "sleep 1000\n", &["-J", "1-10"]);
    let first = long.replacen("[]", "[1]", 1);
    cluster.wait_state(&first, "R");
    assert!(cluster.run("qdel", &[&long]).status.success());
    cluster.wait_state(&long, "F");
    cluster.wait_state(&first, "X");
    assert_eq!(cluster.attr(&first, "Exit_status").as_deref(), Some("271"));
}

#[test]
fn another_user_may_not_delete_or_hold_a_job() {
    if !nix::unistd::getuid().is_root() {
        eprintln!("skipped: needs root to act as another user");
        return;
    }
    let cluster = Cluster::up(&["--cpus", "1", "--mem", "256mb"]);
    let id = cluster.qsub("mine.pbs", "sleep 1000\n", &["-h"]);
    // Let `nobody` reach the server's socket.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::Permissions::from_mode(0o755);
    std::fs::set_permissions(cluster.dir.path(), mode.clone()).unwrap();
    std::fs::set_permissions(cluster.state(), mode).unwrap();
    let as_nobody = |verb: &str| {
        Command::new("setpriv")
            .args([
                "--reuid=nobody",
                "--regid=nogroup",
                "--clear-groups",
                HPCBOX,
                verb,
                &id,
            ])
            .env("HPCBOX_HOME", cluster.state())
            .output()
            .unwrap()
    };
    for verb in ["qdel", "qrls"] {
        let out = as_nobody(verb);
        assert_eq!(
            out.status.code(),
            Some(15007 & 0xff),
            "{verb}: {}",
            text(&out.stderr)
        );
        assert_eq!(
            text(&out.stderr),
            format!("{verb}: Unauthorized Request  {id}\n")
        );
    }
    assert_eq!(cluster.attr(&id, "job_state").as_deref(), Some("H"));
    // Everyone may look.
    let out = as_nobody("qstat");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(cluster.run("qdel", &[&id]).status.success());
}

/// A job submitted by an ordinary user runs as that user, with the user's groups and home,
/// and its output belongs to the user. Needs root and a user named by `HPCBOX_TEST_USER`
/// with a home directory (`.ci/run` creates `hpcbox-test`); skipped, saying so, without.
#[test]
fn a_job_submitted_by_another_user_runs_as_that_user() {
    let user = match std::env::var("HPCBOX_TEST_USER") {
        Ok(user) if nix::unistd::getuid().is_root() => user,
        _ => {
            eprintln!("skipped: needs root and HPCBOX_TEST_USER (see .ci/run)");
            return;
        }
    };
    let account = nix::unistd::User::from_name(&user)
        .unwrap()
        .unwrap_or_else(|| panic!("HPCBOX_TEST_USER={user} is not a user"));
    let cluster = Cluster::up(&["--cpus", "1", "--mem", "256mb"]);
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let open = std::fs::Permissions::from_mode(0o755);
    std::fs::set_permissions(cluster.dir.path(), open.clone()).unwrap();
    std::fs::set_permissions(cluster.state(), open).unwrap();
    std::os::unix::fs::chown(&cluster.work, Some(account.uid.as_raw()), None).unwrap();
    let script = "id -un\nid -G\npwd\n";
    std::fs::write(cluster.work.join("who.pbs"), script).unwrap();
    let out = Command::new("setpriv")
        .args([
            &format!("--reuid={user}"),
            &format!("--regid={}", account.gid),
            "--init-groups",
            HPCBOX,
            "qsub",
            "who.pbs",
        ])
        .env("HPCBOX_HOME", cluster.state())
        .env("HOME", &account.dir)
        .current_dir(&cluster.work)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "qsub as {user}: {}",
        text(&out.stderr)
    );
    let id = text(&out.stdout).trim().to_string();
    cluster.wait_state(&id, "F");
    assert_eq!(
        cluster
            .attr(&id, "Job_Owner")
            .map(|o| o.starts_with(&format!("{user}@"))),
        Some(true)
    );
    assert_eq!(cluster.attr(&id, "Exit_status").as_deref(), Some("0"));
    let output = cluster.work.join(format!("who.pbs.o{}", seq(&id)));
    assert_eq!(
        std::fs::metadata(&output).unwrap().uid(),
        account.uid.as_raw()
    );
    let groups: Vec<String> =
        nix::unistd::getgrouplist(&std::ffi::CString::new(user.as_str()).unwrap(), account.gid)
            .unwrap()
            .iter()
            .map(|g| g.to_string())
            .collect();
    let text = std::fs::read_to_string(output).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], user);
    let mut shown: Vec<&str> = lines[1].split_whitespace().collect();
    let mut expected: Vec<&str> = groups.iter().map(String::as_str).collect();
    shown.sort_unstable();
    expected.sort_unstable();
    expected.dedup();
    assert_eq!(shown, expected, "the job's groups");
    assert_eq!(
        std::path::Path::new(lines[2]),
        account.dir.as_path(),
        "a job starts in its owner's home"
    );
}

/// Sends `request` (raw bytes) on the server's API socket; gives the status line of the
/// answer, or what the server did instead (closed the connection).
fn raw_request(cluster: &Cluster, request: &[u8]) -> String {
    use std::io::{Read, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(cluster.state().join("server.sock"))
        .expect("the API socket");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // No half-close after the request: hyper (without `half_close`) takes an EOF on the read
    // side as the client going away and may drop the answer. Every request here ends itself
    // (content-length, `connection: close`, or a parse error).
    let _ = stream.write_all(request);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    answer.lines().next().unwrap_or("(closed)").to_string()
}

fn post(path: &str, body: &[u8]) -> Vec<u8> {
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nhost: hpcbox\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

/// The API socket answers malformed requests with an HTTP error, never a crash: the server
/// serves the next request as before.
#[test]
fn malformed_api_requests_get_errors_and_the_server_goes_on() {
    let cluster = Cluster::up(&["--cpus", "1", "--mem", "256mb"]);
    let huge = vec![b'['; 64 << 20];
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"garbage\r\n\r\n".to_vec(), "HTTP/1.1 400"),
        (post("/v1/jobs", b"{not json"), "HTTP/1.1 400"),
        (post("/v1/jobs", b"{\"argv\": 7}"), "HTTP/1.1 422"),
        (post("/v1/status", b"[1, 2, 3]"), "HTTP/1.1 422"),
        (post("/v1/jobs/action", b"null"), "HTTP/1.1 422"),
        (post("/v1/nowhere", b"{}"), "HTTP/1.1 404"),
        (post("/v1/jobs", &huge), "HTTP/1.1 413"),
    ];
    for (request, expected) in cases {
        let status = raw_request(&cluster, &request);
        assert!(
            status.starts_with(expected),
            "{} gave {status}",
            String::from_utf8_lossy(&request[..request.len().min(60)])
        );
    }
    let id = cluster.qsub("after.pbs", "echo still here\n", &[]);
    cluster.wait_state(&id, "F");
    assert_eq!(
        cluster.read(&format!("after.pbs.o{}", seq(&id))),
        "still here\n"
    );
}

#[test]
fn a_job_waits_for_its_execution_time() {
    let cluster = Cluster::up(&["--cpus", "1", "--mem", "256mb"]);
    let at = jiff::Zoned::now()
        .checked_add(jiff::Span::new().seconds(3))
        .unwrap();
    let id = cluster.qsub(
        "later.pbs",
        "echo ran\n",
        &["-a", &at.strftime("%H%M.%S").to_string()],
    );
    assert_eq!(cluster.attr(&id, "job_state").as_deref(), Some("W"));
    cluster.wait_state(&id, "F");
    assert_eq!(cluster.read(&format!("later.pbs.o{}", seq(&id))), "ran\n");
}

#[test]
fn qalter_changes_a_queued_job_and_refuses_a_running_one() {
    let cluster = Cluster::up(&["--cpus", "1", "--mem", "256mb"]);
    let held = cluster.qsub(
        "a.pbs",
        "echo altered\n",
        &["-h", "-N", "a", "-l", "walltime=1:00:00"],
    );
    let out = cluster.run(
        "qalter",
        &["-N", "b", "-p", "5", "-l", "walltime=2:00:00", &held],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(cluster.attr(&held, "Job_Name").as_deref(), Some("b"));
    assert_eq!(cluster.attr(&held, "Priority").as_deref(), Some("5"));
    assert_eq!(cluster.attr(&held, "job_state").as_deref(), Some("H"));
    let out = cluster.run("qstat", &["-f", &held]);
    assert!(text(&out.stdout).contains("    Resource_List.walltime = 02:00:00\n"));
    // Its output now goes to the new name's file.
    assert!(cluster.run("qrls", &[&held]).status.success());
    cluster.wait_state(&held, "F");
    assert_eq!(cluster.read(&format!("b.o{}", seq(&held))), "altered\n");
    let running = cluster.qsub("r.pbs", "sleep 1000\n", &[]);
    cluster.wait_state(&running, "R");
    let out = cluster.run("qalter", &["-N", "x", &running]);
    assert_eq!(out.status.code(), Some(15015 & 0xff));
    assert!(text(&out.stderr).starts_with("qalter: Cannot modify attribute while job running"));
    assert!(cluster.run("qdel", &[&running]).status.success());
}

#[test]
fn an_offline_node_takes_no_new_job_until_it_is_back() {
    let cluster = Cluster::up(&["--cpus", "1", "--mem", "256mb"]);
    let nodes = text(&cluster.run("pbsnodes", &["-a"]).stdout);
    let node = nodes.lines().next().unwrap().to_string();
    let out = cluster.run("pbsnodes", &["-o", "-C", "disk check", &node]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&cluster.run("pbsnodes", &["-a"]).stdout);
    assert!(shown.contains("     state = offline\n"), "{shown}");
    assert!(shown.contains("     comment = disk check\n"), "{shown}");
    let id = cluster.qsub("wait.pbs", "echo ran\n", &[]);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(cluster.attr(&id, "job_state").as_deref(), Some("Q"));
    assert!(cluster.run("pbsnodes", &["-r", &node]).status.success());
    cluster.wait_state(&id, "F");
    let out = cluster.run("pbsnodes", &["-o", "nosuchnode"]);
    assert_eq!(out.status.code(), Some(15062 & 0xff));
    assert!(
        text(&out.stderr).starts_with("pbsnodes: Unknown node"),
        "{}",
        text(&out.stderr)
    );
}

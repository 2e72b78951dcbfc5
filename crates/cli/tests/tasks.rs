//! End to end: `pbs_tmrsh`, the launcher a job's system MPI starts its daemons on the job's
//! other hosts with. Two agents on this machine report two host names, as agents on two
//! machines would; a job holding a vnode of each asks, from its first host, for tasks on the
//! second.

mod common;

use std::process::Command;

use common::{kill_and_wait, read_pid, running, seq, text, wait_until, Agent, Cluster};

/// An `hpcbox agent` of this cluster for vnode `node` that reports host `host`.
fn agent(cluster: &Cluster, node: &str, host: &str) -> Agent {
    let args = [
        "--node", node, "--cpus", "1", "--mem", "256mb", "--host", host,
    ];
    let log = cluster.dir.path().join(format!("{node}.log"));
    Agent::start(&args, &cluster.home, &log)
}

/// A server with two one-CPU vnodes, `n1` on host `hostA` and `n2` on `hostB`.
fn two_hosts() -> (Cluster, [Agent; 2]) {
    let cluster = Cluster::empty();
    let out = cluster.run("up", &["--nodes", "0"]);
    assert!(out.status.success(), "hpcbox up: {}", text(&out.stderr));
    let agents = [
        agent(&cluster, "n1", "hostA"),
        agent(&cluster, "n2", "hostB"),
    ];
    wait_until("both vnodes free", || {
        let nodes = text(&cluster.run("pbsnodes", &["-a"]).stdout);
        nodes.matches("state = free").count() == 2
    });
    (cluster, agents)
}

#[test]
fn pbs_tmrsh_runs_a_task_on_another_host_of_the_job_and_gives_its_status() {
    let (cluster, _agents) = two_hosts();
    let script = r#"#PBS -l select=2:ncpus=1 -l place=scatter
cd $PBS_O_WORKDIR
echo "launcher $OMPI_MCA_plm_rsh_agent $HYDRA_LAUNCHER"
"$OMPI_MCA_plm_rsh_agent" hostB 'echo "$PBS_JOBID" > task.jobid; tr "\0" " " < /proc/$PPID/cmdline > task.parent; echo task says hi; exit 3'
echo "tmrsh status $?"
"$OMPI_MCA_plm_rsh_agent" nowhere true
echo "nowhere status $?"
"#;
    let id = cluster.qsub("tm.pbs", script, &[]);
    cluster.wait_state(&id, "F");
    let output = cluster.read(&format!("tm.pbs.o{}", seq(&id)));
    assert!(output.contains("/pbs_tmrsh rsh"), "{output}");
    assert!(output.contains("task says hi"), "{output}");
    assert!(output.contains("tmrsh status 3"), "{output}");
    assert!(output.contains("nowhere status 255"), "{output}");
    assert_eq!(cluster.read("task.jobid").trim(), id);
    // The task ran under the agent of hostB's vnode, not in the job's own process tree.
    let parent = cluster.read("task.parent");
    assert!(parent.contains("agent --node n2"), "{parent}");
    let errors = cluster.read(&format!("tm.pbs.e{}", seq(&id)));
    assert!(errors.contains("nowhere is not a host of job"), "{errors}");
}

/// Inside a job, `hpcbox mpiexec` starts its ranks on the job's hosts through their agents
/// (`pbs_tmrsh`): each rank runs under the agent of its host's vnode, ranks that talk
/// (computepi's reduce their counts over TCP) finish, their output in the job's file, and a
/// failing rank is named with its host.
#[test]
fn hpcbox_mpiexec_in_a_job_starts_its_ranks_through_the_agents() {
    let (cluster, _agents) = two_hosts();
    let hpcbox = common::HPCBOX;
    // Each rank notes the agent it runs under (its nearest ancestor that is one).
    let note_agent = r#"p=$PPID; while [ "$p" -gt 1 ]; do c=$(tr "\0" " " < /proc/$p/cmdline); case "$c" in *hpcbox" "agent*) echo "$c" > rank$HPCBOX_RANK.agent; break;; esac; p=$(cut -d" " -f4 /proc/$p/stat); done"#;
    // One rank fails: the launcher names it and exits with its status.
    let fail_one = r#"if [ "$HPCBOX_RANK" = 1 ]; then exit 3; fi; exec sleep 1"#;
    let script = format!(
        "#PBS -l select=2:ncpus=1 -l place=scatter\n\
         cd $PBS_O_WORKDIR\n\
         export HPCBOX_RENDEZVOUS_HOST=127.0.0.1\n\
         {hpcbox} mpiexec sh -c '{note_agent}'\n\
         echo \"agents $?\"\n\
         {hpcbox} mpiexec {hpcbox} computepi --samples 100000\n\
         echo \"pi $?\"\n\
         {hpcbox} mpiexec sh -c '{fail_one}'\n\
         echo \"failed $?\"\n"
    );
    let id = cluster.qsub("ranks.pbs", &script, &[]);
    cluster.wait_state(&id, "F");
    let output = cluster.read(&format!("ranks.pbs.o{}", seq(&id)));
    let errors = cluster.read(&format!("ranks.pbs.e{}", seq(&id)));
    assert!(output.contains("agents 0"), "{output}\n{errors}");
    assert!(output.contains("pi 0"), "{output}\n{errors}");
    assert!(output.contains("workers=2"), "{output}\n{errors}");
    assert!(output.contains("failed 3"), "{output}\n{errors}");
    assert!(errors.contains("exited with status 3"), "{errors}");
    // One rank under each host's agent.
    let mut nodes: Vec<String> = (0..2)
        .map(|rank| {
            let agent = cluster.read(&format!("rank{rank}.agent"));
            let node = agent
                .split("--node ")
                .nth(1)
                .and_then(|rest| rest.split(' ').next());
            node.unwrap_or_else(|| panic!("rank {rank}: {agent}"))
                .to_string()
        })
        .collect();
    nodes.sort();
    assert_eq!(nodes, ["n1", "n2"]);
}

/// The server is killed with SIGKILL while a task runs, which ends before the server is back:
/// its end still comes back to its `pbs_tmrsh`. Killed again while another task runs, the
/// restarted server still ends that task with its job.
#[test]
fn tasks_survive_a_server_killed_while_they_run() {
    let (cluster, _agents) = two_hosts();
    let script = r#"#PBS -l select=2:ncpus=1 -l place=scatter
cd $PBS_O_WORKDIR
"$OMPI_MCA_plm_rsh_agent" hostB 'echo $$ > first.pid; while [ ! -e go ]; do sleep 0.05; done; exit 4'
echo "tmrsh status $?"
"$OMPI_MCA_plm_rsh_agent" hostB 'echo $$ > second.pid; exec sleep 1000' &
sleep 1000
"#;
    let id = cluster.qsub("restart.pbs", script, &[]);
    wait_until("the first task started", || {
        cluster.work.join("first.pid").exists()
    });
    let first = read_pid(&cluster.work.join("first.pid"));
    let kill_server = || kill_and_wait(read_pid(&cluster.state().join("server.pid")));
    let start_server = || {
        let out = cluster.run("up", &["--nodes", "0"]);
        assert!(out.status.success(), "hpcbox up: {}", text(&out.stderr));
    };
    kill_server();
    std::fs::write(cluster.work.join("go"), "").unwrap();
    wait_until("the first task gone", || !running(first));
    start_server();
    wait_until("the second task started", || {
        cluster.work.join("second.pid").exists()
    });
    let output = cluster.read(&format!("restart.pbs.o{}", seq(&id)));
    assert!(output.contains("tmrsh status 4"), "{output}");
    let second = read_pid(&cluster.work.join("second.pid"));
    kill_server();
    start_server();
    assert!(cluster.run("qdel", &[&id]).status.success());
    cluster.wait_state(&id, "F");
    wait_until("the second task gone", || !running(second));
}

#[test]
fn a_task_ends_with_its_job() {
    let (cluster, _agents) = two_hosts();
    let script = r#"#PBS -l select=2:ncpus=1 -l place=scatter
cd $PBS_O_WORKDIR
"$OMPI_MCA_plm_rsh_agent" hostB 'echo $$ > task.pid; exec sleep 1000' &
sleep 1000
"#;
    let id = cluster.qsub("long.pbs", script, &[]);
    wait_until("the task started", || {
        cluster.work.join("task.pid").exists()
    });
    let task = read_pid(&cluster.work.join("task.pid"));
    assert!(cluster.run("qdel", &[&id]).status.success());
    cluster.wait_state(&id, "F");
    wait_until("the task gone", || !running(task));
}

/// The agent's task socket answers garbage and requests for jobs it does not run with an
/// error, and goes on serving.
#[test]
fn the_task_socket_refuses_what_it_cannot_serve() {
    use std::io::{BufRead, BufReader, Write};
    let (cluster, _agents) = two_hosts();
    let socket = cluster.home.join("aux").join("tm-n1.sock");
    let ask = |line: &str| -> String {
        let mut stream = std::os::unix::net::UnixStream::connect(&socket).unwrap();
        stream.write_all(line.as_bytes()).unwrap();
        let mut answer = String::new();
        BufReader::new(stream).read_line(&mut answer).unwrap();
        answer
    };
    let garbage = ask("garbage\n");
    assert!(garbage.contains("\"exit_status\":255") && garbage.contains("malformed request"));
    let stranger = ask(
        r#"{"job_id":"99.nowhere","host":"hostB","command":"true","cwd":"/","env":[]}
"#,
    );
    assert!(stranger.contains("does not run here"), "{stranger}");
    // Still serving jobs.
    let id = cluster.qsub(
        "after.pbs",
        "#PBS -l select=2:ncpus=1 -l place=scatter\n\"$OMPI_MCA_plm_rsh_agent\" hostB true\necho status $?\n",
        &[],
    );
    cluster.wait_state(&id, "F");
    assert!(cluster
        .read(&format!("after.pbs.o{}", seq(&id)))
        .contains("status 0"));
}

/// Whether a login shell finds Open MPI's `mpiexec.openmpi` (`.ci/run` installs it and sets
/// `HPCBOX_REQUIRE_MPI`, which turns its absence into a failure).
fn open_mpi() -> bool {
    let found = Command::new("bash")
        .args(["-lc", "command -v mpiexec.openmpi"])
        .output()
        .is_ok_and(|out| out.status.success());
    assert!(
        found || std::env::var_os("HPCBOX_REQUIRE_MPI").is_none(),
        "HPCBOX_REQUIRE_MPI is set but a login shell has no mpiexec.openmpi"
    );
    found
}

/// Open MPI's mpiexec, given the job's two hosts, starts its daemon on each through
/// `pbs_tmrsh` (their names are not this machine's, so it takes them for remote hosts), and
/// the ranks run under those daemons.
#[test]
fn open_mpi_starts_its_daemons_on_the_jobs_hosts_through_pbs_tmrsh() {
    if !open_mpi() {
        eprintln!("skipped: no Open MPI");
        return;
    }
    let (cluster, _agents) = two_hosts();
    // Both "hosts" are this one machine, where two daemons sharing hwloc's topology in
    // shared memory crash: the test turns that component off.
    let script = r#"#PBS -l select=2:ncpus=1 -l place=scatter
cd $PBS_O_WORKDIR
export OMPI_MCA_rtc=^hwloc
mpiexec.openmpi -np 2 sh -c 'echo "rank $OMPI_COMM_WORLD_RANK under $(cat /proc/$PPID/comm)"'
echo "mpiexec status $?"
"#;
    // Both daemons also share Open MPI's session directory, named after the one host name:
    // under load they now and then trip over each other there (a failed mkdir, a daemon that
    // never calls back). Real hosts do not share it; a second run settles such a case.
    let run = |name: &str| {
        let id = cluster.qsub(name, script, &[]);
        cluster.wait_state(&id, "F");
        let output = cluster.read(&format!("{name}.o{}", seq(&id)));
        let errors = cluster.read(&format!("{name}.e{}", seq(&id)));
        (output, errors)
    };
    let (mut output, mut errors) = run("ompi.pbs");
    let shared_host = [
        "unable to complete a TCP connection",
        "A call to mkdir was unable",
    ];
    if shared_host
        .iter()
        .any(|s| output.contains(s) || errors.contains(s))
    {
        eprintln!(
            "Open MPI's daemons collided on their one host; running again:\n{output}{errors}"
        );
        (output, errors) = run("ompi2.pbs");
    }
    assert!(output.contains("mpiexec status 0"), "{output}{errors}");
    for rank in 0..2 {
        assert!(
            output.contains(&format!("rank {rank} under orted")),
            "{output}{errors}"
        );
    }
}

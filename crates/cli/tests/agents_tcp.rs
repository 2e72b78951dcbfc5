//! End to end: a node agent that reaches its server over TCP, with a state directory of its
//! own, as it would from another machine; and a TCP listener that strangers cannot upset.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{kill_and_wait, read_pid, seq, text, wait_until, Agent, Cluster};

/// A server with no local node, accepting agents on a TCP port; stopped when dropped.
struct TcpCluster {
    cluster: Cluster,
    port: u16,
}

impl std::ops::Deref for TcpCluster {
    type Target = Cluster;

    fn deref(&self) -> &Cluster {
        &self.cluster
    }
}

impl TcpCluster {
    fn up() -> TcpCluster {
        let cluster = TcpCluster {
            cluster: Cluster::empty(),
            port: free_port(),
        };
        cluster.start();
        cluster
    }

    /// `hpcbox up` with no node of its own: starts the server when it does not run.
    fn start(&self) {
        let listen = format!("127.0.0.1:{}", self.port);
        let out = self.run("up", &["--nodes", "0", "--agents-listen", &listen]);
        assert!(out.status.success(), "hpcbox up: {}", text(&out.stderr));
        assert!(text(&out.stdout).contains("no node on this machine"));
    }

    /// An attribute of the node `tcpnode`, from `pbsnodes -a`.
    fn node_attr(&self, name: &str) -> Option<String> {
        let out = text(&self.run("pbsnodes", &["-a"]).stdout);
        let prefix = format!("     {name} = ");
        out.split("\n\n")
            .find(|block| block.starts_with("tcpnode\n"))?
            .lines()
            .find_map(|line| line.strip_prefix(&prefix).map(str::to_string))
    }

    fn wait_node(&self, state: &str) {
        wait_until(&format!("tcpnode {state}"), || {
            self.node_attr("state").as_deref() == Some(state)
        });
    }

    /// Kills the server with SIGKILL and starts it again, on the same port.
    fn restart_server(&self) {
        kill_and_wait(read_pid(&self.home.join("server.pid")));
        self.start();
    }

    /// An agent for `tcpnode` that knows the server only by its TCP address and token file,
    /// with a state directory (and `HPCBOX_HOME`) of its own.
    fn agent(&self) -> Agent {
        let server = format!("127.0.0.1:{}", self.port);
        let token = self.home.join("token").display().to_string();
        let own = self.dir.path().join("agent-state").display().to_string();
        let args = [
            "--node",
            "tcpnode",
            "--cpus",
            "1",
            "--mem",
            "256mb",
            "--server",
            &server,
            "--token-file",
            &token,
            "--state",
            &own,
        ];
        let elsewhere = self.dir.path().join("elsewhere");
        Agent::start(&args, &elsewhere, &self.dir.path().join("agent.log"))
    }
}

/// A TCP port nothing listens on now.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[test]
fn a_job_placed_by_host_runs_on_a_tcp_agent_and_its_output_lands() {
    let cluster = TcpCluster::up();
    let _agent = cluster.agent();
    cluster.wait_node("free");
    let host = cluster.node_attr("resources_available.host").unwrap();
    assert_eq!(cluster.node_attr("Mom"), Some(host.clone()));
    let select = format!("select=1:ncpus=1:host={host}");
    let script = "cat $PBS_NODEFILE\necho ran in $PBS_O_WORKDIR\n";
    let id = cluster.qsub("tcp.pbs", script, &["-N", "tcpjob", "-l", &select]);
    cluster.wait_state(&id, "F");
    assert_eq!(cluster.attr(&id, "Exit_status").as_deref(), Some("0"));
    assert_eq!(
        cluster.attr(&id, "exec_vnode").as_deref(),
        Some("(tcpnode:ncpus=1)")
    );
    assert_eq!(
        cluster.read(&format!("tcpjob.o{}", seq(&id))),
        format!("{host}\nran in {}\n", cluster.work.display())
    );
    // The agent kept its files in its own state directory, not the server's.
    assert!(cluster.dir.path().join("agent-state").join("aux").is_dir());
    assert!(!cluster.dir.path().join("elsewhere").exists());
}

#[test]
fn a_tcp_agent_keeps_its_job_across_a_server_restart_and_comes_back_after_its_own() {
    let cluster = TcpCluster::up();
    let mut agent = cluster.agent();
    cluster.wait_node("free");
    let id = cluster.qsub("long.pbs", "sleep 1000\n", &[]);
    cluster.wait_state(&id, "R");
    cluster.wait_node("job-busy");
    cluster.restart_server();
    // The agent reconnects by itself and re-reports the job, which still runs.
    cluster.wait_node("job-busy");
    assert_eq!(cluster.attr(&id, "job_state").as_deref(), Some("R"));
    assert!(cluster.run("qdel", &[&id]).status.success());
    cluster.wait_state(&id, "F");
    assert_eq!(cluster.attr(&id, "Exit_status").as_deref(), Some("271"));
    cluster.wait_node("free");
    // A lost agent is a down node; started again, the node is back and takes jobs.
    agent.kill();
    wait_until("tcpnode down", || {
        cluster
            .node_attr("state")
            .is_some_and(|s| s.contains("down"))
    });
    let _agent = cluster.agent();
    cluster.wait_node("free");
    let id = cluster.qsub("again.pbs", "echo again\n", &["-N", "again"]);
    cluster.wait_state(&id, "F");
    assert_eq!(cluster.read(&format!("again.o{}", seq(&id))), "again\n");
}

/// Sends `bytes` on a new connection to the agents' port and returns the server's answer.
fn answer_to(port: u16, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    // The server may stop reading a huge line early: a failed write is not the test's business.
    let _ = stream.write_all(bytes);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut answer = String::new();
    let _ = BufReader::new(stream).read_line(&mut answer);
    answer
}

#[test]
fn garbage_wrong_tokens_and_huge_lines_are_refused_and_the_server_goes_on() {
    let cluster = TcpCluster::up();
    let refused = |reason: &str| format!("{{\"type\":\"refused\",\"reason\":\"{reason}\"}}\n");
    let hello = |token: &str| {
        format!(
            "{{\"type\":\"hello\",\"token\":\"{token}\",\"node\":{{\"name\":\"evil\",\
             \"host\":\"evil\",\"ncpus\":64,\"mem_kb\":1,\"ngpus\":0,\"cpu_ids\":[]}},\
             \"running\":[]}}\n"
        )
    };
    let first_must_be_hello = refused("the first message must be a hello");
    assert_eq!(answer_to(cluster.port, b"garbage\n"), first_must_be_hello);
    assert_eq!(answer_to(cluster.port, b"\xff\xfe\n"), first_must_be_hello);
    assert_eq!(
        answer_to(cluster.port, b"{\"type\":\"hel"),
        first_must_be_hello
    );
    assert_eq!(
        answer_to(cluster.port, hello("wrong").as_bytes()),
        refused("bad token")
    );
    assert_eq!(
        answer_to(cluster.port, b""),
        refused("closed before the hello")
    );
    let huge = vec![b'x'; 3 << 20];
    let answer = answer_to(cluster.port, &huge);
    assert!(
        answer.is_empty() || answer.starts_with("{\"type\":\"refused\""),
        "{answer}"
    );
    // No stranger became a node, and the server still serves clients and real agents.
    assert!(!text(&cluster.run("pbsnodes", &["-a"]).stdout).contains("evil"));
    let _agent = cluster.agent();
    cluster.wait_node("free");
    let id = cluster.qsub("after.pbs", "echo fine\n", &["-N", "after"]);
    cluster.wait_state(&id, "F");
    assert_eq!(cluster.read(&format!("after.o{}", seq(&id))), "fine\n");
}

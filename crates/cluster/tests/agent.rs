//! The node agent against a fake server: a Unix listener in the test plays the server's side
//! of the protocol, and real jobs run on this machine.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hpcbox_cluster::agent::{self, AgentConfig};
use hpcbox_cluster::protocol::{
    decode_line, encode_line, AgentMessage, JobStart, NodeReport, ServerMessage, Usage,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Split};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixListener;
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// Long enough for a loaded 2-core machine; tests wait on events, never on this.
const PATIENCE: Duration = Duration::from_secs(30);

/// One test's world: a directory, the fake server's listener and the agent's configuration.
struct World {
    dir: tempfile::TempDir,
    listener: Option<UnixListener>,
    config: AgentConfig,
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("agent.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let node = NodeReport {
            name: "node1".into(),
            host: "testhost.example.com".into(),
            ncpus: 2,
            mem_kb: 1 << 20,
            ngpus: 0,
            cpu_ids: vec![],
        };
        let mut config = AgentConfig::new(node, socket, "secret", dir.path().join("aux"));
        config.tmp_root = dir.path().join("tmp");
        config.kill_delay = Duration::from_secs(1);
        config.poll_interval = Duration::from_millis(100);
        config.usage_interval = Duration::from_millis(200);
        config.base_env = vec![("PATH".into(), "/bin:/usr/bin".into())];
        World {
            dir,
            listener: Some(listener),
            config,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn spawn_agent(&self) -> Agent {
        Agent(tokio::spawn(agent::serve(self.config.clone())))
    }

    /// Accepts the agent's next connection and reads its hello.
    async fn accept(&self) -> (Conn, AgentMessage) {
        let listener = self.listener.as_ref().expect("listening");
        let (stream, _) = timeout(PATIENCE, listener.accept())
            .await
            .expect("the agent connects")
            .unwrap();
        let (read, write) = stream.into_split();
        let mut conn = Conn {
            lines: BufReader::new(read).split(b'\n'),
            write,
        };
        let hello = conn.recv().await;
        assert!(matches!(hello, AgentMessage::Hello { .. }), "{hello:?}");
        (conn, hello)
    }

    /// Accepts the agent and welcomes it.
    async fn welcome(&self) -> Conn {
        let (mut conn, hello) = self.accept().await;
        let AgentMessage::Hello { token, node, .. } = hello else {
            unreachable!()
        };
        assert_eq!((token.as_str(), node.name.as_str()), ("secret", "node1"));
        conn.send(&ServerMessage::Welcome {
            server: "test".into(),
        })
        .await;
        conn
    }

    /// Stops listening, as a server that went away: the socket file goes too.
    fn stop_listening(&mut self) {
        self.listener = None;
        fs::remove_file(&self.config.server_socket).unwrap();
    }

    fn listen_again(&mut self) {
        self.listener = Some(UnixListener::bind(&self.config.server_socket).unwrap());
    }

    /// A job running `script` under /bin/sh, output and error in the test directory.
    fn job(&self, id: &str, script: &str) -> JobStart {
        JobStart {
            job_id: id.into(),
            job_name: "testjob".into(),
            queue: "workq".into(),
            owner: me(),
            script: Some(script.into()),
            argv: vec![],
            shell: Some("/bin/sh".into()),
            variables: vec![(
                "PBS_O_WORKDIR".into(),
                self.dir.path().display().to_string(),
            )],
            output_path: format!("testhost:{}", self.path("out").display()),
            error_path: Some(format!("testhost:{}", self.path("err").display())),
            account: None,
            threads: 1,
            cpus: vec![],
            nodefile: "testhost\n".into(),
            walltime_limit: None,
            mem_limit_kb: None,
            rerun: false,
            interactive: None,
        }
    }
}

/// The agent task, aborted when the test ends.
struct Agent(JoinHandle<std::io::Result<()>>);

impl Drop for Agent {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The fake server's end of one connection.
struct Conn {
    lines: Split<BufReader<OwnedReadHalf>>,
    write: OwnedWriteHalf,
}

impl Conn {
    async fn recv(&mut self) -> AgentMessage {
        let line = timeout(PATIENCE, self.lines.next_segment())
            .await
            .expect("a message from the agent")
            .unwrap()
            .expect("the connection stays open");
        decode_line(&line).unwrap()
    }

    /// The next message that is not a periodic usage report.
    async fn recv_report(&mut self) -> AgentMessage {
        loop {
            match self.recv().await {
                AgentMessage::Usage { .. } => continue,
                other => return other,
            }
        }
    }

    async fn send_raw(&mut self, bytes: &[u8]) {
        self.write.write_all(bytes).await.unwrap();
    }

    async fn send(&mut self, message: &ServerMessage) {
        self.send_raw(&encode_line(message).unwrap()).await;
    }

    async fn start(&mut self, job: JobStart) -> i32 {
        let id = job.job_id.clone();
        self.send(&ServerMessage::Start(Box::new(job))).await;
        match self.recv_report().await {
            AgentMessage::Started { job_id, session } if job_id == id => session,
            other => panic!("expected {id} to start, got {other:?}"),
        }
    }

    /// Waits for `id`'s end: its exit status and usage.
    async fn ended(&mut self, id: &str) -> (i32, Usage) {
        match self.recv_report().await {
            AgentMessage::Ended {
                job_id,
                exit_status,
                usage,
            } if job_id == id => (exit_status, usage),
            other => panic!("expected {id} to end, got {other:?}"),
        }
    }
}

/// Job `seq` of this test process: ids differ between test processes running at once, since
/// the tests look for a job's processes by its `PBS_JOBID`.
fn id(seq: u32) -> String {
    format!("{seq}.t{}", std::process::id())
}

fn me() -> String {
    nix::unistd::User::from_uid(nix::unistd::Uid::effective())
        .unwrap()
        .unwrap()
        .name
}

fn home() -> PathBuf {
    nix::unistd::User::from_uid(nix::unistd::Uid::effective())
        .unwrap()
        .unwrap()
        .dir
}

/// `name=value` lines a job printed.
fn printed(path: &Path, name: &str) -> Option<String> {
    let text = fs::read_to_string(path).unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{name}=")).map(String::from))
}

/// Processes still carrying the job's `PBS_JOBID` in their environment.
fn processes_of(job_id: &str) -> Vec<String> {
    let marker = format!("PBS_JOBID={job_id}");
    fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| entry.ok())
        .filter(|entry| {
            entry
                .file_name()
                .to_str()
                .is_some_and(|name| name.parse::<u32>().is_ok())
        })
        .filter(|entry| {
            fs::read(entry.path().join("environ"))
                .is_ok_and(|environ| environ.split(|&b| b == 0).any(|e| e == marker.as_bytes()))
        })
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect()
}

/// Waits until `done`, checking every 20 ms.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    timeout(PATIENCE, async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}

#[tokio::test]
async fn a_job_runs_in_its_world_and_is_cleaned_up() {
    let world = World::new();
    let _agent = world.spawn_agent();
    let mut server = world.welcome().await;
    let outdir = world.path("outdir");
    fs::create_dir(&outdir).unwrap();
    let script = "\
echo \"start=$(pwd)\"
echo \"home=$HOME\"
for v in PBS_JOBID PBS_JOBNAME PBS_NODEFILE NCPUS TMPDIR PBS_ENVIRONMENT PBS_O_WORKDIR; do
  eval \"echo $v=\\$$v\"
done
echo \"nodes=$(cat \"$PBS_NODEFILE\")\"
echo \"tmpmode=$(stat -c %a \"$TMPDIR\")\"
cd $PBS_O_WORKDIR && echo \"workdir=$(pwd)\"
echo oops >&2
exit 3
";
    let mut job = world.job(&id(1), script);
    job.threads = 2;
    // A directory as the output path, and stderr joined to it.
    job.output_path = format!("testhost:{}/", outdir.display());
    job.error_path = None;
    server.start(job).await;
    let (status, usage) = server.ended(&id(1)).await;
    assert_eq!(status, 3);
    assert_eq!(usage.ncpus, 2);

    let out = outdir.join(format!("{}.OU", id(1)));
    let text = fs::read_to_string(&out).unwrap();
    let get = |name| printed(&out, name).unwrap_or_else(|| panic!("{name} in {text}"));
    let tmpdir = world.path(&format!("tmp/pbs.{}", id(1)));
    let nodefile = world.path(&format!("aux/{}", id(1)));
    assert_eq!(get("start"), home().display().to_string());
    assert_eq!(get("home"), home().display().to_string());
    assert_eq!(get("PBS_JOBID"), id(1));
    assert_eq!(get("PBS_JOBNAME"), "testjob");
    assert_eq!(get("PBS_NODEFILE"), nodefile.display().to_string());
    assert_eq!(get("NCPUS"), "2");
    assert_eq!(get("TMPDIR"), tmpdir.display().to_string());
    assert_eq!(get("PBS_ENVIRONMENT"), "PBS_BATCH");
    assert_eq!(get("PBS_O_WORKDIR"), world.dir.path().display().to_string());
    assert_eq!(get("nodes"), "testhost");
    assert_eq!(get("tmpmode"), "700");
    assert_eq!(get("workdir"), world.dir.path().display().to_string());
    assert!(text.ends_with("oops\n"), "{text}");

    assert!(!tmpdir.exists(), "TMPDIR is removed");
    assert!(!nodefile.exists(), "the node file is removed");
    let aux = job_files(&world);
    assert!(aux.is_empty(), "the script is removed: {aux:?}");
}

#[tokio::test]
async fn jobs_that_cannot_start_are_reported_and_leave_nothing_behind() {
    let world = World::new();
    let _agent = world.spawn_agent();
    let mut server = world.welcome().await;
    let mut job = world.job(&id(2), "true\n");
    job.shell = Some("/no/such/shell".into());
    server.send(&ServerMessage::Start(Box::new(job))).await;
    match server.recv_report().await {
        AgentMessage::StartFailed {
            job_id,
            exit_status,
            message,
        } => {
            assert_eq!(job_id, id(2));
            assert_eq!(exit_status, hpcbox_pbs::exit::JOB_EXEC_FAIL2);
            assert!(!message.is_empty());
        }
        other => panic!("expected a start failure, got {other:?}"),
    }
    let mut job = world.job(&id(3), "true\n");
    job.owner = "no-such-user-hpcbox".into();
    job.script = None;
    job.argv = vec!["/bin/true".into()];
    server.send(&ServerMessage::Start(Box::new(job))).await;
    match server.recv_report().await {
        AgentMessage::StartFailed { exit_status, .. }
            if nix::unistd::Uid::effective().is_root() =>
        {
            assert_eq!(exit_status, hpcbox_pbs::exit::JOB_EXEC_FAILUID)
        }
        // Not root: the job runs as the agent's own user.
        AgentMessage::Started { .. } => assert_eq!(server.ended(&id(3)).await.0, 0),
        other => panic!("unexpected {other:?}"),
    }
    assert!(!world.path(&format!("tmp/pbs.{}", id(2))).exists());
    let aux = job_files(&world);
    assert!(aux.is_empty(), "{aux:?}");
}

#[tokio::test]
async fn walltime_past_its_limit_kills_the_job() {
    let world = World::new();
    let _agent = world.spawn_agent();
    let mut server = world.welcome().await;
    let mut job = world.job(&id(4), "sleep 60\n");
    job.walltime_limit = Some(1);
    server.start(job).await;
    let (status, usage) = server.ended(&id(4)).await;
    assert_eq!(status, -29);
    assert!(usage.walltime > 1, "{usage:?}");
    let err = fs::read_to_string(world.path("err")).unwrap();
    let line = err
        .lines()
        .find(|line| line.starts_with("=>> PBS: job killed: walltime "))
        .unwrap_or_else(|| panic!("no kill message in {err:?}"));
    let used: u64 = line
        .strip_prefix("=>> PBS: job killed: walltime ")
        .and_then(|rest| rest.strip_suffix(" exceeded limit 1"))
        .and_then(|used| used.parse().ok())
        .unwrap_or_else(|| panic!("{line:?}"));
    assert!(used > 1);
    assert!(processes_of(&id(4)).is_empty());
}

#[tokio::test]
async fn memory_past_its_limit_kills_the_job() {
    let world = World::new();
    let _agent = world.spawn_agent();
    let mut server = world.welcome().await;
    let mut job = world.job(
        &id(5),
        "python3 -c \"x=bytearray(200<<20); import time; time.sleep(60)\"\n",
    );
    job.mem_limit_kb = Some(50_000);
    server.start(job).await;
    let (status, usage) = server.ended(&id(5)).await;
    assert_eq!(status, -27);
    // Past the limit by sampling; at it exactly where a memory cgroup held the job there.
    assert!(usage.mem_kb >= 50_000, "{usage:?}");
    let err = fs::read_to_string(world.path("err")).unwrap();
    let message = format!(
        "=>> PBS: job killed: mem {}kb exceeded limit 50000kb\n",
        usage.mem_kb
    );
    assert!(
        err.lines()
            .any(|line| line.starts_with("=>> PBS: job killed: mem ")
                && line.ends_with("kb exceeded limit 50000kb")),
        "expected something like {message:?} in {err:?}"
    );
}

#[tokio::test]
async fn killing_a_job_takes_its_daemons_too() {
    let world = World::new();
    let _agent = world.spawn_agent();
    let mut server = world.welcome().await;
    let pidfile = world.path("daemon.pid");
    // The daemon leaves the job's session; only its PBS_JOBID marks it as the job's.
    let script = format!(
        "setsid sh -c 'echo $$ > {pid}.new; mv {pid}.new {pid}; exec sleep 1000' &\nsleep 1000\n",
        pid = pidfile.display()
    );
    let session = server.start(world.job(&id(6), &script)).await;
    until("the daemon to start", || pidfile.exists()).await;
    let daemon: i32 = fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let daemon = nix::unistd::Pid::from_raw(daemon);
    assert_ne!(nix::unistd::getsid(Some(daemon)).unwrap().as_raw(), session);
    server
        .send(&ServerMessage::Kill {
            job_id: id(6),
            grace: 5,
        })
        .await;
    let (status, _) = server.ended(&id(6)).await;
    assert_eq!(status, 256 + 15);
    let left = processes_of(&id(6));
    assert!(left.is_empty(), "processes of the job remain: {left:?}");
}

/// The state letters (`S`, `T`, …) of the job's processes.
fn states_of(job_id: &str) -> Vec<char> {
    processes_of(job_id)
        .iter()
        .filter_map(|pid| {
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            stat[stat.rfind(')')? + 1..].trim_start().chars().next()
        })
        .collect()
}

#[tokio::test]
async fn signals_reach_every_process_of_the_job() {
    let world = World::new();
    let _agent = world.spawn_agent();
    let mut server = world.welcome().await;
    server.start(world.job(&id(7), "sleep 1000\n")).await;
    until("the job's sleep", || processes_of(&id(7)).len() >= 2).await;
    let signal = |name: &str| ServerMessage::Signal {
        job_id: id(7),
        signal: name.into(),
    };
    server.send(&signal("suspend")).await;
    until("the job to stop", || {
        let states = states_of(&id(7));
        !states.is_empty() && states.iter().all(|&s| s == 'T')
    })
    .await;
    server.send(&signal("resume")).await;
    until("the job to continue", || {
        states_of(&id(7)).iter().all(|&s| s != 'T')
    })
    .await;
    // Unknown jobs and signals are ignored; the agent goes on.
    server
        .send(&ServerMessage::Kill {
            job_id: "99.nope".into(),
            grace: 0,
        })
        .await;
    server.send(&signal("NOSUCHSIGNAL")).await;
    server.send(&signal("USR1")).await;
    assert_eq!(server.ended(&id(7)).await.0, 256 + 10);
}

#[tokio::test]
async fn jobs_outlive_the_server_and_their_reports_are_not_lost() {
    let mut world = World::new();
    let _agent = world.spawn_agent();
    let mut server = world.welcome().await;
    let wait_for = |go: &Path| {
        format!(
            "while [ ! -e {} ]; do sleep 0.05; done\necho done\n",
            go.display()
        )
    };
    let (go_a, go_b) = (world.path("go-a"), world.path("go-b"));
    let mut a = world.job(&id(8), &wait_for(&go_a));
    a.output_path = world.path("a.out").display().to_string();
    let mut b = world.job(&id(9), &wait_for(&go_b));
    b.output_path = world.path("b.out").display().to_string();
    server.start(a).await;
    let session_b = server.start(b).await;

    // The server goes away; job A ends meanwhile.
    drop(server);
    world.stop_listening();
    fs::write(&go_a, "").unwrap();
    until("job A's end to be processed", || {
        !world.path(&format!("aux/{}", id(8))).exists()
    })
    .await;
    assert_eq!(fs::read_to_string(world.path("a.out")).unwrap(), "done\n");

    // A new server: the hello lists job B only, then A's report arrives.
    world.listen_again();
    let (mut server, hello) = world.accept().await;
    let AgentMessage::Hello { running, .. } = hello else {
        unreachable!()
    };
    let running: Vec<_> = running
        .iter()
        .map(|r| (r.job_id.as_str(), r.session))
        .collect();
    assert_eq!(running, [(id(9).as_str(), session_b)]);
    server
        .send(&ServerMessage::Welcome {
            server: "test".into(),
        })
        .await;
    assert_eq!(server.ended(&id(8)).await.0, 0);
    // Job B is still measured and reported, then ends on the new connection.
    loop {
        if let AgentMessage::Usage { job_id, usage } = server.recv().await {
            assert_eq!(job_id, id(9));
            assert!(usage.walltime < 3600);
            break;
        }
    }
    fs::write(&go_b, "").unwrap();
    assert_eq!(server.ended(&id(9)).await.0, 0);
}

#[tokio::test]
async fn malformed_lines_from_the_server_are_skipped() {
    let world = World::new();
    let _agent = world.spawn_agent();
    let mut server = world.welcome().await;
    for garbage in [
        &b"not json\n"[..],
        b"{\"type\":\"nope\"}\n",
        b"\xff\xfe\x00\n",
        b"\n",
        b"[1,2]\n",
        b"{\"type\":\"start\"}\n",
    ] {
        server.send_raw(garbage).await;
    }
    server.start(world.job(&id(10), "echo fine\n")).await;
    assert_eq!(server.ended(&id(10)).await.0, 0);
    assert_eq!(fs::read_to_string(world.path("out")).unwrap(), "fine\n");
}

#[tokio::test]
async fn a_refused_agent_stops_with_an_error() {
    let world = World::new();
    let agent = world.spawn_agent();
    let (mut server, _) = world.accept().await;
    server
        .send(&ServerMessage::Refused {
            reason: "bad token".into(),
        })
        .await;
    let mut agent = agent;
    let result = timeout(PATIENCE, &mut agent.0).await.unwrap().unwrap();
    let err = result.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied);
    assert!(err.to_string().contains("bad token"), "{err}");
}

#[tokio::test]
async fn executables_run_without_a_script() {
    let world = World::new();
    let _agent = world.spawn_agent();
    let mut server = world.welcome().await;
    let mut job = world.job(&id(11), "");
    job.script = None;
    job.argv = vec![
        "/bin/sh".into(),
        "-c".into(),
        "echo \"$PBS_JOBID in $(pwd)\"".into(),
    ];
    server.start(job).await;
    assert_eq!(server.ended(&id(11)).await.0, 0);
    assert_eq!(
        fs::read_to_string(world.path("out")).unwrap(),
        format!("{} in {}\n", id(11), home().display())
    );
    let aux = job_files(&world);
    assert!(aux.is_empty(), "{aux:?}");
}

/// What the agent's aux directory holds besides its own task socket and `pbs_tmrsh` link: the
/// job files it made (node files, scripts).
fn job_files(world: &World) -> Vec<std::path::PathBuf> {
    fs::read_dir(world.path("aux"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            let name = path.file_name().unwrap().to_string_lossy();
            !(name.starts_with("tm-") && name.ends_with(".sock")) && name != "bin"
        })
        .collect()
}

//! `hpcbox up`, `down`, `status`, `server`, `agent` and `links`: the cluster on this machine.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use hpcbox_cluster::client::Client;
use hpcbox_cluster::home::StateDir;
use hpcbox_cluster::protocol::NodeReport;
use hpcbox_cluster::server::daemon::{self, ServerConfig};
use hpcbox_pbs::duration::Duration as PbsDuration;
use hpcbox_pbs::size::Size;

use crate::submission::host_name;

/// `hpcbox up`'s options.
#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// How many virtual nodes to start on this machine (0: none, for a server whose nodes
    /// all join from other machines through `--agents-listen`).
    #[arg(long, default_value_t = 1)]
    pub nodes: u32,
    /// CPUs per node (default: this machine's usable CPUs, shared out over the nodes).
    #[arg(long)]
    pub cpus: Option<u32>,
    /// Memory per node, as PBS writes sizes (`1GB`, `512mb`); default: this machine's memory
    /// shared out over the nodes.
    #[arg(long)]
    pub mem: Option<Size>,
    /// Another queue to create beside `workq` (repeatable), e.g. `--queue defaultQ`.
    #[arg(long = "queue")]
    pub queues: Vec<String>,
    /// How long finished jobs stay visible to `qstat -x` (PBS's `job_history_duration`,
    /// `HH:MM:SS` or seconds; default two weeks). Applies when the server starts.
    #[arg(long)]
    pub history: Option<PbsDuration>,
    /// Also accept node agents over TCP at `ADDR:PORT` (see `hpcbox server`). Applies when the
    /// server starts.
    #[arg(long, value_name = "ADDR:PORT")]
    pub agents_listen: Option<String>,
}

/// `hpcbox server`'s options.
#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    /// The server's name, the suffix of job ids (default: this host's short name).
    #[arg(long)]
    name: Option<String>,
    /// Another queue to create beside `workq` (repeatable).
    #[arg(long = "queue")]
    queues: Vec<String>,
    /// Seconds between SIGTERM and SIGKILL when a running job is deleted.
    #[arg(long, default_value_t = 10)]
    kill_delay: u64,
    /// How long finished jobs stay visible to `qstat -x` (`HH:MM:SS` or seconds).
    #[arg(long, default_value = "336:00:00")]
    history: PbsDuration,
    /// Also accept node agents over TCP at `ADDR:PORT` (`0.0.0.0:15001`), for nodes on other
    /// machines; they present the token of this state directory.
    #[arg(long, value_name = "ADDR:PORT")]
    agents_listen: Option<String>,
}

/// `hpcbox agent`'s options.
#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    /// The vnode's name.
    #[arg(long)]
    node: String,
    /// CPUs the vnode offers.
    #[arg(long)]
    cpus: u32,
    /// Memory the vnode offers.
    #[arg(long)]
    mem: Size,
    /// This machine's CPU ids the vnode's CPUs map to, comma-separated (default: unpinned).
    #[arg(long, value_delimiter = ',')]
    cpu_ids: Vec<usize>,
    /// The server's TCP address for agents (`HOST:PORT`, its `--agents-listen`); default: the
    /// agents' socket in the state directory.
    #[arg(long, value_name = "HOST:PORT")]
    server: Option<String>,
    /// The file holding the server's token (default: `token` in the state directory).
    #[arg(long, value_name = "PATH")]
    token_file: Option<PathBuf>,
    /// This agent's own state directory, for job scripts and node files (default: as for the
    /// other commands, `HPCBOX_HOME` or `~/.hpcbox`).
    #[arg(long, value_name = "DIR")]
    state: Option<PathBuf>,
    /// The host name the vnode reports, for `Mom`, `PBS_NODEFILE` and `pbs_tmrsh` (PBS's
    /// `PBS_MOM_NODE_NAME`; default: this machine's host name).
    #[arg(long, value_name = "NAME")]
    host: Option<String>,
}

/// The state directory of this process's environment, with its logs directory made.
pub fn state_dir() -> Result<StateDir, String> {
    let state =
        StateDir::from_process_env().ok_or("no state directory: set HPCBOX_HOME or HOME")?;
    std::fs::create_dir_all(state.logs())
        .map_err(|e| format!("{}: {e}", state.logs().display()))?;
    Ok(state)
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("hpcbox: {message}");
    ExitCode::FAILURE
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HPCBOX_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .init();
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// Runs the server in the foreground.
pub fn server(args: ServerArgs) -> ExitCode {
    init_logging();
    let state = match state_dir() {
        Ok(state) => state,
        Err(e) => return fail(e),
    };
    let config = ServerConfig {
        state,
        name: args.name.unwrap_or_else(short_host),
        queues: args.queues,
        kill_delay: args.kill_delay,
        history_seconds: args.history.as_secs(),
        agents_listen: args.agents_listen,
    };
    match runtime().and_then(|rt| rt.block_on(daemon::run(config))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

/// The agent's state directory: `--state`, or the usual one; made if missing.
fn agent_state(dir: Option<&Path>) -> Result<StateDir, String> {
    let Some(dir) = dir else {
        return state_dir();
    };
    let state = StateDir::new(dir);
    std::fs::create_dir_all(state.root()).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(state)
}

/// The token in `path`, trimmed.
fn read_token(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path)
        .map(|token| token.trim().to_string())
        .map_err(|e| format!("{}: {e} (is the server started?)", path.display()))
}

/// Runs a node agent in the foreground.
pub fn agent(args: AgentArgs) -> ExitCode {
    init_logging();
    let state = match agent_state(args.state.as_deref()) {
        Ok(state) => state,
        Err(e) => return fail(e),
    };
    let token_file = args.token_file.clone().unwrap_or_else(|| state.token());
    let token = match read_token(&token_file) {
        Ok(token) => token,
        Err(e) => return fail(e),
    };
    let config = hpcbox_cluster::agent::AgentConfig {
        node: NodeReport {
            name: args.node,
            host: args.host.unwrap_or_else(host_name),
            ncpus: args.cpus,
            mem_kb: args.mem.kilobytes(),
            ngpus: 0,
            cpu_ids: args.cpu_ids,
        },
        server_socket: daemon::agent_socket(&state),
        server_address: args.server,
        token,
        aux_dir: state.aux(),
        tmp_root: state.job_tmp_root(&std::env::temp_dir()),
        kill_delay: Duration::from_secs(10),
        poll_interval: Duration::from_secs(1),
        usage_interval: Duration::from_secs(10),
        base_env: hpcbox_cluster::agent::base_environment(|name| std::env::var(name).ok()),
        mom_port: 15002,
        tm: None,
    };
    match hpcbox_cluster::agent::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

fn short_host() -> String {
    host_name()
        .split('.')
        .next()
        .unwrap_or("localhost")
        .to_string()
}

fn pid_file(state: &StateDir, daemon: &str) -> PathBuf {
    state.root().join(format!("{daemon}.pid"))
}

/// Whether process `pid` runs (a zombie waiting for its parent to reap it does not).
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok(),
    }
}

fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Starts `hpcbox <args>` in the background, in its own session, logging to `log`.
fn spawn_daemon(args: &[String], log: &Path, pid_path: &Path) -> std::io::Result<()> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe()?;
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    let mut command = Command::new(exe);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    // SAFETY: setsid is async-signal-safe and the closure allocates nothing.
    unsafe {
        command.pre_exec(|| {
            nix::unistd::setsid()
                .map(|_| ())
                .map_err(std::io::Error::from)
        });
    }
    let child = command.spawn()?;
    std::fs::write(pid_path, child.id().to_string())
}

fn wait_for(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    while !ready() {
        if Instant::now() > deadline {
            return Err(format!("timed out waiting for {what}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Starts the server and `--nodes` agents in the background, and waits until the nodes are
/// up. Does nothing but report when the cluster already runs.
pub fn up(args: UpArgs) -> ExitCode {
    match start_cluster(&args) {
        Ok(message) => {
            print!("{message}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

/// Starts what is not yet running of the cluster `args` describes; returns what to tell the user.
pub fn start_cluster(args: &UpArgs) -> Result<String, String> {
    let state = state_dir()?;
    let client = Client::new(state.socket());
    let running = |daemon: &str| read_pid(&pid_file(&state, daemon)).is_some_and(alive);
    let nodes = args.nodes;
    let machine_cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let cpus = args.cpus.unwrap_or((machine_cpus / nodes.max(1)).max(1));
    let mem_kb = match &args.mem {
        Some(size) => size.kilobytes(),
        None => machine_memory_kb() / u64::from(nodes.max(1)),
    };
    let mut server_args = vec!["server".to_string()];
    for queue in &args.queues {
        server_args.extend(["--queue".to_string(), queue.clone()]);
    }
    if let Some(history) = &args.history {
        server_args.extend(["--history".to_string(), history.as_secs().to_string()]);
    }
    if let Some(address) = &args.agents_listen {
        server_args.extend(["--agents-listen".to_string(), address.clone()]);
    }
    // A server process that does not answer is starting or dying (SIGKILL takes effect
    // asynchronously): wait until it does one or the other before deciding.
    let answering = || client.server().is_ok();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while running("server") && !answering() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let already_up = running("server") && answering();
    if !running("server") {
        spawn_daemon(
            &server_args,
            &state.logs().join("server.log"),
            &pid_file(&state, "server"),
        )
        .map_err(|e| format!("cannot start the server: {e}"))?;
    }
    wait_for("the server", Duration::from_secs(10), || {
        client.server().is_ok()
    })?;
    let names = node_names(nodes);
    for (k, name) in names.iter().enumerate() {
        if running(&format!("agent-{name}")) {
            continue;
        }
        let first = (k as u32 * cpus) % machine_cpus;
        let ids: Vec<String> = (0..cpus)
            .map(|i| ((first + i) % machine_cpus).to_string())
            .collect();
        let agent_args = vec![
            "agent".to_string(),
            "--node".to_string(),
            name.clone(),
            "--cpus".to_string(),
            cpus.to_string(),
            "--mem".to_string(),
            format!("{mem_kb}kb"),
            "--cpu-ids".to_string(),
            ids.join(","),
        ];
        spawn_daemon(
            &agent_args,
            &state.logs().join(format!("agent-{name}.log")),
            &pid_file(&state, &format!("agent-{name}")),
        )
        .map_err(|e| format!("cannot start the agent of {name}: {e}"))?;
    }
    // Up, not necessarily free: after a server restart its nodes may still run jobs.
    let is_up =
        |state: Option<&str>| state.is_some_and(|s| !s.contains("down") && !s.contains("unknown"));
    wait_for("the nodes to be up", Duration::from_secs(15), || {
        client
            .nodes()
            .is_ok_and(|list| list.iter().filter(|n| is_up(n.get("state"))).count() >= names.len())
    })?;
    if already_up {
        return Ok(format!(
            "hpcbox is already up in {}; `hpcbox down` stops it\n",
            state.root().display()
        ));
    }
    let queues: Vec<&str> = std::iter::once(hpcbox_pbs::newjob::DEFAULT_QUEUE)
        .chain(args.queues.iter().map(String::as_str))
        .collect();
    let what = if nodes == 0 {
        "no node on this machine".to_string()
    } else {
        format!(
            "{nodes} node{} of {cpus} cpu{} and {} each",
            if nodes == 1 { "" } else { "s" },
            if cpus == 1 { "" } else { "s" },
            Size::from_kb(mem_kb),
        )
    };
    Ok(format!(
        "hpcbox is up: {what}, queue{} {}\n\
         state in {}\n\
         submit with `hpcbox qsub job.pbs` (or put links on PATH: `hpcbox links DIR`), \
         watch with `hpcbox qstat`, stop with `hpcbox down`\n",
        if queues.len() == 1 { "" } else { "s" },
        queues.join(", "),
        state.root().display()
    ))
}

fn node_names(nodes: u32) -> Vec<String> {
    if nodes == 1 {
        vec![short_host()]
    } else {
        (1..=nodes).map(|k| format!("node{k}")).collect()
    }
}

fn machine_memory_kb() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|line| line.starts_with("MemTotal:"))
                .and_then(|line| line.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(1 << 20)
}

fn daemon_pids(state: &StateDir) -> Vec<(String, PathBuf, i32)> {
    let Ok(entries) = std::fs::read_dir(state.root()) else {
        return Vec::new();
    };
    let mut pids: Vec<(String, PathBuf, i32)> = entries
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            let name = path
                .file_name()?
                .to_str()?
                .strip_suffix(".pid")?
                .to_string();
            let pid = read_pid(&path)?;
            Some((name, path, pid))
        })
        .collect();
    // Agents first, so that they see their jobs end while the server still listens.
    pids.sort_by_key(|(name, _, _)| name == "server");
    pids
}

/// Stops the daemons `hpcbox up` started: SIGTERM, then SIGKILL after ten seconds.
pub fn down() -> ExitCode {
    let state = match state_dir() {
        Ok(state) => state,
        Err(e) => return fail(e),
    };
    if stop_cluster(&state) {
        println!("hpcbox is down");
    } else {
        println!("hpcbox is not up in {}", state.root().display());
    }
    ExitCode::SUCCESS
}

/// Ends the jobs, then the daemons, of the cluster in `state`; false when none ran.
pub fn stop_cluster(state: &StateDir) -> bool {
    end_jobs(&Client::new(state.socket()));
    let daemons = daemon_pids(state);
    if daemons.is_empty() {
        return false;
    }
    for (name, path, pid) in daemons {
        let target = nix::unistd::Pid::from_raw(pid);
        if alive(pid) {
            let _ = nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGTERM);
            if wait_for(&name, Duration::from_secs(10), || !alive(pid)).is_err() {
                let _ = nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGKILL);
            }
        }
        let _ = std::fs::remove_file(path);
    }
    true
}

/// Deletes every job not yet finished and waits (up to 30 s) until none runs, so that stopping
/// the daemons leaves no job's process behind.
fn end_jobs(client: &Client) {
    let all = hpcbox_cluster::api::StatusRequest::default();
    let Ok(items) = client.status(&all) else {
        return;
    };
    for item in items {
        if let hpcbox_cluster::api::StatusItem::Job(job) = item {
            let _ = client.act(&hpcbox_cluster::api::JobAction {
                id: job.name.clone(),
                action: hpcbox_cluster::api::Action::Delete { force: false },
            });
        }
    }
    let _ = wait_for("the jobs to end", Duration::from_secs(30), || {
        client.status(&all).map_or(true, |items| items.is_empty())
    });
}

/// Tells whether the daemons run, and shows the nodes.
pub fn status() -> ExitCode {
    let state = match state_dir() {
        Ok(state) => state,
        Err(e) => return fail(e),
    };
    println!("state directory: {}", state.root().display());
    for (name, _, pid) in daemon_pids(&state) {
        let how = if alive(pid) { "running" } else { "not running" };
        println!("{name}: pid {pid}, {how}");
    }
    match Client::new(state.socket()).nodes() {
        Ok(nodes) => {
            for node in nodes {
                println!(
                    "node {}: {}",
                    node.name,
                    node.get("state").unwrap_or("state-unknown")
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("server: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Creates `qsub`, `qstat`, … links to this binary in `dir`.
pub fn links(dir: &Path) -> ExitCode {
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => return fail(e),
    };
    if let Err(e) = std::fs::create_dir_all(dir) {
        return fail(format!("{}: {e}", dir.display()));
    }
    for name in crate::pbs::COMMANDS {
        let link = dir.join(name);
        let _ = std::fs::remove_file(&link);
        if let Err(e) = std::os::unix::fs::symlink(&exe, &link) {
            return fail(format!("{}: {e}", link.display()));
        }
    }
    println!(
        "linked {} in {}",
        crate::pbs::COMMANDS.join(", "),
        dir.display()
    );
    ExitCode::SUCCESS
}

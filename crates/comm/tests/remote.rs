//! Worlds that span hosts, without ssh: a fake rsh agent (written by this test) drops the
//! host argument and runs the command string here, in a session of its own, so that, as on
//! a real remote host, no signal of the launcher reaches the rank. The ranks meet through the
//! launcher's TCP rendezvous. This test binary (harness = false) is its own rank program.
//!
//! `cargo test -p hpcbox-comm --test remote [filter]` runs the cases whose name contains filter.

use hpcbox_comm::launch::{launch_with, LaunchOutcome, LaunchSpec, StdinMode, Stream};
use hpcbox_comm::placement::{parse_hostfile, place};
use hpcbox_comm::{Error, Op};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[macro_use]
mod common;

use common::{e, Case, Collect, Res};

// ---------------------------------------------------------------- rank bodies

/// Rank, size, the host the agent was told, and the rendezvous kind.
fn body_hello() -> Res {
    let w = hpcbox_comm::init().map_err(e)?;
    let host = std::env::var("FAKE_HOST").unwrap_or_else(|_| "here".into());
    let meet = std::env::var("HPCBOX_RENDEZVOUS").unwrap_or_default();
    let kind = if meet.starts_with("tcp://") {
        "tcp"
    } else {
        "dir"
    };
    println!("rank {} of {} on {host} via {kind}", w.rank(), w.size());
    Ok(())
}

/// How this rank reaches every rank, in rank order.
fn body_routes() -> Res {
    let w = hpcbox_comm::init().map_err(e)?;
    let routes = (0..w.size())
        .map(|r| w.route_to(r))
        .collect::<Result<Vec<_>, _>>()
        .map_err(e)?;
    println!("routes {}", routes.join(","));
    w.barrier().map_err(e)
}

fn body_allreduce() -> Res {
    let w = hpcbox_comm::init().map_err(e)?;
    let got = w.allreduce(&[w.rank() as u64 + 1, 1], Op::Sum).map_err(e)?;
    let big: Vec<f64> = (0..50_000).map(|i| (i * (w.rank() + 1)) as f64).collect();
    let sum = w.allreduce(&big, Op::Sum).map_err(e)?;
    let n = w.size() as f64;
    check!(
        sum.iter()
            .enumerate()
            .all(|(i, &s)| s == i as f64 * n * (n + 1.0) / 2.0),
        "large allreduce wrong"
    );
    println!("sum {} count {}", got[0], got[1]);
    Ok(())
}

/// Every rank records its pid; after a barrier rank 3 exits with status 3, the others sleep.
fn body_fail() -> Res {
    let w = hpcbox_comm::init().map_err(e)?;
    let dir = std::env::var("TEST_DIR").map_err(|_| "TEST_DIR unset".to_string())?;
    std::fs::write(
        Path::new(&dir).join(format!("pid-{}", w.rank())),
        std::process::id().to_string(),
    )
    .map_err(|x| x.to_string())?;
    w.barrier().map_err(e)?;
    if w.rank() == 3 {
        std::process::exit(3);
    }
    std::thread::sleep(Duration::from_secs(60));
    Ok(())
}

/// Waits for a message from every other rank; they all finish without sending.
fn body_orphan() -> Res {
    let w = hpcbox_comm::init().map_err(e)?;
    if w.rank() != 0 {
        return Ok(());
    }
    match w.recv::<u8>(hpcbox_comm::ANY_SOURCE, 0) {
        Err(Error::PeersFinished) => {
            println!("peers finished");
            Ok(())
        }
        other => Err(format!("unexpected {other:?}")),
    }
}

fn run_body(name: &str) -> Res {
    match name {
        "hello" => body_hello(),
        "allreduce" => body_allreduce(),
        "routes" => body_routes(),
        "fail" => body_fail(),
        "orphan" => body_orphan(),
        _ => Err(format!("no rank body {name}")),
    }
}

// ---------------------------------------------------------------- driver

struct World {
    outcome: LaunchOutcome,
    lines: Vec<(usize, Stream, String)>,
    /// The hosts the agent was asked for, sorted.
    agent_hosts: Vec<String>,
}

impl World {
    fn stdout(&self, rank: usize) -> Vec<&str> {
        self.lines
            .iter()
            .filter(|(r, s, _)| *r == rank && *s == Stream::Stdout)
            .map(|(_, _, l)| l.as_str())
            .collect()
    }

    fn expect_success(&self, label: &str) -> Res {
        check!(
            self.outcome.status == 0,
            "{label}: status {} ({:?}) {:?}",
            self.outcome.status,
            self.outcome.failure,
            self.lines
        );
        Ok(())
    }
}

fn tmpdir() -> PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let d = std::env::temp_dir().join(format!(
        "hpcbox-remote-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Writes the fake agent into `dir`: `fake-rsh HOST COMMAND` appends HOST to `hosts.log`
/// and runs COMMAND with `sh`, in a new session, with `FAKE_HOST=HOST` and HOST as the node
/// the ranks report (`HPCBOX_NODE_ID`), so that ranks of one fake host share memory and
/// ranks of two do not.
fn fake_rsh(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("fake-rsh");
    let script = r#"#!/bin/sh
host=$1
shift
echo "$host" >> "$(dirname "$0")/hosts.log"
FAKE_HOST=$host
HPCBOX_NODE_ID=$host
export FAKE_HOST HPCBOX_NODE_ID
setsid -w sh -c "$1
exit \$?"
"#;
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Launches `np` ranks of `body` on the hosts of `hostfile` through the fake agent.
fn world(np: usize, hostfile: &str, body: &str, env: &[(&str, String)]) -> World {
    let dir = tmpdir();
    let hosts = parse_hostfile(hostfile).expect("hostfile");
    let mut spec = LaunchSpec::new(np, std::env::current_exe().expect("test binary path"));
    spec.hosts = place(np, &hosts, None).expect("placement").hosts;
    spec.agent = Some(vec![fake_rsh(&dir).display().to_string()]);
    spec.rendezvous_host = Some([127, 0, 0, 1].into());
    spec.env = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    spec.env.push(("HPCBOX_TEST_BODY".into(), body.into()));
    spec.stdin = StdinMode::Null;
    spec.timeout = Some(Duration::from_secs(60));
    let sink = Arc::new(Collect::default());
    let outcome = launch_with(&spec, sink.clone()).expect("launch");
    let lines = std::mem::take(&mut *sink.0.lock().unwrap());
    let log = std::fs::read_to_string(dir.join("hosts.log")).unwrap_or_default();
    let mut agent_hosts: Vec<String> = log.lines().map(str::to_string).collect();
    agent_hosts.sort();
    let _ = std::fs::remove_dir_all(&dir);
    World {
        outcome,
        lines,
        agent_hosts,
    }
}

const TWO_NODES: &str = "nodeA slots=2\nnodeB slots=2\n";

fn case_hello() -> Res {
    let w = world(4, TWO_NODES, "hello", &[]);
    w.expect_success("hello")?;
    for (rank, host) in [(0, "nodeA"), (1, "nodeA"), (2, "nodeB"), (3, "nodeB")] {
        let want = format!("rank {rank} of 4 on {host} via tcp");
        check!(w.stdout(rank) == [want.as_str()], "{:?}", w.lines);
    }
    check!(
        w.agent_hosts == ["nodeA", "nodeA", "nodeB", "nodeB"],
        "{:?}",
        w.agent_hosts
    );
    Ok(())
}

/// A world of local and remote ranks: the local one is started directly, all use TCP.
fn case_mixed_world() -> Res {
    let w = world(3, "localhost\nnodeA slots=2\n", "hello", &[]);
    w.expect_success("mixed")?;
    check!(
        w.stdout(0) == ["rank 0 of 3 on here via tcp"],
        "{:?}",
        w.lines
    );
    check!(
        w.stdout(2) == ["rank 2 of 3 on nodeA via tcp"],
        "{:?}",
        w.lines
    );
    check!(w.agent_hosts == ["nodeA", "nodeA"], "{:?}", w.agent_hosts);
    Ok(())
}

/// Ranks of one node talk through shared memory, ranks of two through TCP; everything
/// through TCP when asked (`HPCBOX_TRANSPORT=tcp`).
fn case_routes() -> Res {
    let w = world(4, TWO_NODES, "routes", &[]);
    w.expect_success("routes")?;
    for (rank, want) in [
        (0, "routes self,shm,tcp,tcp"),
        (1, "routes shm,self,tcp,tcp"),
        (2, "routes tcp,tcp,self,shm"),
        (3, "routes tcp,tcp,shm,self"),
    ] {
        check!(w.stdout(rank) == [want], "rank {rank}: {:?}", w.lines);
    }
    let w = world(3, "localhost\nnodeA slots=2\n", "routes", &[]);
    w.expect_success("mixed routes")?;
    check!(w.stdout(0) == ["routes self,tcp,tcp"], "{:?}", w.lines);
    check!(w.stdout(2) == ["routes tcp,shm,self"], "{:?}", w.lines);
    let w = world(
        4,
        TWO_NODES,
        "routes",
        &[("HPCBOX_TRANSPORT", "tcp".into())],
    );
    w.expect_success("tcp routes")?;
    check!(w.stdout(1) == ["routes tcp,self,tcp,tcp"], "{:?}", w.lines);
    Ok(())
}

fn case_allreduce() -> Res {
    for (np, hostfile) in [(4, TWO_NODES), (5, TWO_NODES), (3, "localhost\nnodeB:2\n")] {
        let w = world(np, hostfile, "allreduce", &[]);
        w.expect_success(&format!("allreduce np={np}"))?;
        let want = format!("sum {} count {np}", np * (np + 1) / 2);
        for rank in 0..np {
            check!(w.stdout(rank) == [want.as_str()], "np={np}: {:?}", w.lines);
        }
    }
    Ok(())
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('Z'))
    })
}

/// Rank 3 exits with status 3 on nodeB; the launcher names it, exits 3, and the other
/// ranks, out of reach of its signals, end through their lifelines.
fn case_remote_failure() -> Res {
    let dir = tmpdir();
    let w = world(
        4,
        TWO_NODES,
        "fail",
        &[("TEST_DIR", dir.display().to_string())],
    );
    check!(
        w.outcome.status == 3,
        "status {} {:?}",
        w.outcome.status,
        w.lines
    );
    let msg = w.outcome.failure.map(|f| f.to_string()).unwrap_or_default();
    check!(msg == "rank 3 on nodeB exited with status 3", "{msg}");
    for rank in 0..3 {
        let pid: i32 = std::fs::read_to_string(dir.join(format!("pid-{rank}")))
            .ok()
            .and_then(|p| p.trim().parse().ok())
            .ok_or(format!("rank {rank} never started"))?;
        let t = Instant::now();
        while alive(pid) && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(10));
        }
        check!(!alive(pid), "rank {rank} (pid {pid}) outlived the world");
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// A wait on peers that have all finished fails instead of hanging: the lifeline relays
/// "finished" as the marker files do on one node.
fn case_wait_on_finished_ranks() -> Res {
    let w = world(3, TWO_NODES, "orphan", &[]);
    w.expect_success("orphan")?;
    check!(w.stdout(0) == ["peers finished"], "{:?}", w.lines);
    Ok(())
}

fn main() {
    let cases: &[(&str, Case)] = &[
        ("hello", case_hello),
        ("mixed_world", case_mixed_world),
        ("routes", case_routes),
        ("allreduce", case_allreduce),
        ("remote_failure", case_remote_failure),
        ("wait_on_finished_ranks", case_wait_on_finished_ranks),
    ];
    common::main(run_body, cases, "remote");
}

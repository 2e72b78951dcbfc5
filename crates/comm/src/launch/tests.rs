//! Whole launches of `sh` worlds.

use super::meeting::jobkey;
use super::*;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Collects output lines for assertions.
#[derive(Default)]
struct Collect(Mutex<Vec<(usize, Stream, String)>>);

impl OutputSink for Collect {
    fn line(&self, rank: usize, stream: Stream, line: &[u8]) {
        let s = String::from_utf8_lossy(line).into_owned();
        self.0.lock().unwrap().push((rank, stream, s));
    }
}

fn sh(np: usize, script: &str) -> LaunchSpec {
    let mut s = LaunchSpec::new(np, "sh");
    s.args = vec!["-c".into(), script.into()];
    s.stdin = StdinMode::Null;
    s
}

fn run(spec: &LaunchSpec) -> (LaunchOutcome, Vec<(usize, Stream, String)>) {
    let sink = Arc::new(Collect::default());
    let out = launch_with(spec, sink.clone()).unwrap();
    let lines = std::mem::take(&mut *sink.0.lock().unwrap());
    (out, lines)
}

fn gone(pid: i32) -> bool {
    // Not running, or a zombie about to be reaped by init.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s
            .rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('Z')),
    }
}

#[test]
fn ranks_see_the_contract_and_output_is_forwarded() {
    let (out, lines) = run(&sh(
        3,
        r#"echo "rank $HPCBOX_RANK of $HPCBOX_SIZE"; test -d "$HPCBOX_RENDEZVOUS" && echo dir >&2"#,
    ));
    assert_eq!(out.status, 0);
    assert_eq!(out.failure, None);
    assert_eq!(out.exits, vec![RankExit::Exited(0); 3]);
    for r in 0..3 {
        assert!(
            lines.contains(&(r, Stream::Stdout, format!("rank {r} of 3"))),
            "{lines:?}"
        );
        assert!(
            lines.contains(&(r, Stream::Stderr, "dir".into())),
            "{lines:?}"
        );
    }
}

#[test]
fn rendezvous_directory_is_removed() {
    let (out, lines) = run(&sh(1, r#"echo "$HPCBOX_RENDEZVOUS""#));
    assert_eq!(out.status, 0);
    let dir = &lines[0].2;
    assert!(dir.contains("hpcbox-"), "{dir}");
    assert!(!Path::new(dir).exists());
}

#[test]
fn failing_rank_kills_the_others_quickly() {
    let t = Instant::now();
    let (out, _) = run(&sh(
        4,
        r#"if [ "$HPCBOX_RANK" = 2 ]; then exit 3; fi; exec sleep 30"#,
    ));
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert_eq!(out.status, 3);
    let msg = out.failure.unwrap().to_string();
    assert_eq!(
        msg,
        format!("rank 2 on {} exited with status 3", hostname())
    );
    assert_eq!(out.exits[2], RankExit::Exited(3));
    assert_eq!(out.exits[0], RankExit::Signaled(9));
}

#[test]
fn killed_rank_reports_its_signal_and_leaves_nothing_behind() {
    let dir = std::env::temp_dir().join(format!("hpcbox-launch-test-{}", jobkey()));
    std::fs::create_dir(&dir).unwrap();
    let script = format!(
        r#"sleep 30 & echo $! > {d}/child-$HPCBOX_RANK; if [ "$HPCBOX_RANK" = 1 ]; then sleep 0.2; kill -9 $$; fi; wait"#,
        d = dir.display()
    );
    let (out, _) = run(&sh(3, &script));
    assert_eq!(out.status, 137);
    assert_eq!(
        out.failure.unwrap().to_string(),
        format!("rank 1 on {} killed by signal 9", hostname())
    );
    for r in 0..3 {
        let pid: i32 = std::fs::read_to_string(dir.join(format!("child-{r}")))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let t = Instant::now();
        while !gone(pid) && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(gone(pid), "grandchild {pid} of rank {r} survived");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn timeout_kills_everything() {
    let mut spec = sh(2, "exec sleep 30");
    spec.timeout = Some(Duration::from_millis(300));
    let t = Instant::now();
    let (out, _) = run(&spec);
    assert!(t.elapsed() < Duration::from_secs(10));
    assert_eq!(out.status, TIMEOUT_STATUS);
    assert!(matches!(out.failure, Some(Failure::Timeout { .. })));
}

#[test]
fn stdin_goes_to_rank_zero_only() {
    let mut spec = sh(2, r#"read line; echo "got:$line""#);
    spec.stdin = StdinMode::Bytes(b"hello\n".to_vec());
    let (out, lines) = run(&spec);
    // Rank 1 reads /dev/null: `read` fails, its echo shows nothing.
    assert_eq!(out.status, 0);
    assert!(
        lines.contains(&(0, Stream::Stdout, "got:hello".into())),
        "{lines:?}"
    );
    assert!(
        lines.contains(&(1, Stream::Stdout, "got:".into())),
        "{lines:?}"
    );
}

#[test]
fn missing_program_is_an_error() {
    let spec = LaunchSpec::new(2, "/nonexistent/hpcbox-no-such-program");
    let e = launch_with(&spec, Arc::new(Collect::default())).unwrap_err();
    assert!(e.to_string().contains("could not start rank 0"), "{e}");
}

#[test]
fn bind_to_core_pins_each_local_rank_to_one_cpu() {
    let cpus = usable_cpus();
    let mut spec = sh(3, "grep Cpus_allowed_list /proc/self/status");
    spec.bind = Bind::Core;
    let (out, lines) = run(&spec);
    assert_eq!(out.status, 0);
    for rank in 0..3 {
        let want = format!("Cpus_allowed_list:\t{}", cpus[rank % cpus.len()]);
        assert!(lines.contains(&(rank, Stream::Stdout, want)), "{lines:?}");
    }
}

#[test]
fn hosts_must_match_the_ranks() {
    let mut spec = LaunchSpec::new(2, "true");
    spec.hosts = vec!["a".into()];
    let e = launch_with(&spec, Arc::new(Collect::default())).unwrap_err();
    assert!(e.to_string().contains("one per rank"), "{e}");
}

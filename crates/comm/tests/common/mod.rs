//! What the multi-process test binaries share (each is `harness = false` and its own rank
//! program): the result type and `check!`, an output sink that collects every rank's lines,
//! and the `main` that runs either one rank's body or the named cases.
// Each test binary uses its own part of this module.
#![allow(dead_code)]

use hpcbox_comm::launch::{OutputSink, Stream};
use hpcbox_comm::Error;
use std::sync::Mutex;
use std::time::Instant;

/// A case's or a rank body's outcome: the failure says what went wrong.
pub type Res = std::result::Result<(), String>;
/// One named case of a test binary.
pub type Case = fn() -> Res;

/// Fails the case with the place and the message when `cond` does not hold.
macro_rules! check {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!("{}:{}: {}", file!(), line!(), format!($($fmt)+)));
        }
    };
}

/// A library error as a case failure.
pub fn e(err: Error) -> String {
    err.to_string()
}

/// Every line the ranks wrote, with its rank and stream.
#[derive(Default)]
pub struct Collect(pub Mutex<Vec<(usize, Stream, String)>>);

impl OutputSink for Collect {
    fn line(&self, rank: usize, stream: Stream, line: &[u8]) {
        self.0
            .lock()
            .unwrap()
            .push((rank, stream, String::from_utf8_lossy(line).into_owned()));
    }
}

/// The test binary's `main`: a rank runs the body `HPCBOX_TEST_BODY` names (through
/// `run_body`); the driver runs the `cases` whose name holds the first argument that is no
/// option, and exits 1 if any of the `what` tests failed.
pub fn main(run_body: fn(&str) -> Res, cases: &[(&str, Case)], what: &str) {
    if let Ok(body) = std::env::var("HPCBOX_TEST_BODY") {
        if let Err(msg) = run_body(&body) {
            eprintln!("rank body {body} failed: {msg}");
            std::process::exit(1);
        }
        return;
    }
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let mut failed = 0;
    for (name, case) in cases {
        if filter.as_deref().is_some_and(|f| !name.contains(f)) {
            continue;
        }
        let t = Instant::now();
        match case() {
            Ok(()) => println!("test {name} ... ok ({:.2} s)", t.elapsed().as_secs_f64()),
            Err(msg) => {
                failed += 1;
                println!("test {name} ... FAILED\n{msg}");
            }
        }
    }
    if failed > 0 {
        println!("{failed} {what} test(s) failed");
        std::process::exit(1);
    }
}

//! A minimal stand-in for `hpcbox mpiexec` over the library's launcher:
//! `mpiexec [-n NP] [--tag-output] [--timeout SECS] PROGRAM [ARGS...]`.

use hpcbox_comm::launch::{launch, LaunchSpec};
use std::time::Duration;

fn main() {
    let mut args = std::env::args().skip(1).peekable();
    let mut spec = LaunchSpec::new(1, "");
    while let Some(a) = args.next_if(|a| a.starts_with('-')) {
        match a.as_str() {
            "-n" | "-np" => {
                spec.np = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| usage())
            }
            "--tag-output" => spec.tag_output = true,
            "--timeout" => {
                let secs: f64 = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| usage());
                spec.timeout = Some(Duration::from_secs_f64(secs));
            }
            _ => usage(),
        }
    }
    spec.program = args.next().unwrap_or_else(|| usage()).into();
    spec.args = args.map(Into::into).collect();
    match launch(&spec) {
        Ok(outcome) => {
            if let Some(f) = &outcome.failure {
                eprintln!("mpiexec: {f}");
            }
            std::process::exit(outcome.status);
        }
        Err(e) => {
            eprintln!("mpiexec: {e}");
            std::process::exit(1);
        }
    }
}

fn usage() -> ! {
    eprintln!("usage: mpiexec [-n NP] [--tag-output] [--timeout SECS] PROGRAM [ARGS...]");
    std::process::exit(2);
}

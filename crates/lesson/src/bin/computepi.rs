//! `computepi`: the lesson's Monte Carlo estimate of pi (see [`hpcbox_lesson::computepi`]).

fn main() -> std::process::ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    hpcbox_lesson::computepi::main(&argv)
}

//! `hpcbox`: the one binary of hpcbox.
//!
//! Called as `hpcbox <verb>`, or through a link named after a PBS command (`qsub`, `qstat`,
//! `qdel`, `qhold`, `qrls`, `qsig`, `qalter`, `pbsnodes`), which it then is.

mod check_script;
mod cluster;
mod demo;
mod mpiexec;
mod pbs;
mod scale;
mod sim;
mod submission;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// hpcbox: a process pool, MPI-style ranks and a PBS-compatible batch scheduler in one binary.
#[derive(Debug, Parser)]
#[command(name = "hpcbox", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the lesson end to end on a cluster of its own: pi serially, with a pool and with
    /// ranks, submitted as PBS jobs, with a table of time and speed-up.
    Demo(demo::DemoArgs),
    /// Start a cluster on this machine: the server and its node agents, in the background.
    Up(cluster::UpArgs),
    /// Stop the cluster that `hpcbox up` started.
    Down,
    /// Tell what runs: the server, its nodes and jobs.
    Status,
    /// Run the server in the foreground.
    Server(cluster::ServerArgs),
    /// Run a node agent in the foreground.
    Agent(cluster::AgentArgs),
    /// Create links named qsub, qstat, qdel, … to this binary in a directory.
    Links {
        /// The directory to put the links in.
        dir: std::path::PathBuf,
    },
    /// Start a program as N ranks of hpcbox-comm (`hpcbox mpiexec -n 4 ./prog`).
    Mpiexec(mpiexec::MpiexecArgs),
    /// Run a command at several process counts and report speed-up,
    /// efficiency, Amdahl's serial fraction and the sweet spot, with PNG and SVG plots.
    Scale(scale::ScaleArgs),
    /// One subjob of `hpcbox scale --submit`'s job array (run by the cluster, not by hand).
    #[command(hide = true)]
    ScaleSubjob(scale::SubjobArgs),
    /// Replay a workload (an SWF trace or a synthetic one) through the scheduler in virtual
    /// time, and report utilization, waits and bounded slowdown.
    Sim(sim::SimArgs),
    /// Read a PBS job script as qsub would and print the job it describes, without submitting.
    ///
    /// Directives are taken from the top of the script until its first executable line; qsub
    /// options given here override them, as on qsub's command line.
    CheckScript(check_script::Args),
    /// The lesson's Monte Carlo pi (`--serial`, `--pool N`, or as ranks under mpiexec).
    #[command(disable_help_flag = true)]
    Computepi(PbsArgs),
    /// PBS's qsub.
    #[command(disable_help_flag = true)]
    Qsub(PbsArgs),
    /// PBS's qstat.
    #[command(disable_help_flag = true)]
    Qstat(PbsArgs),
    /// PBS's qdel.
    #[command(disable_help_flag = true)]
    Qdel(PbsArgs),
    /// PBS's qhold.
    #[command(disable_help_flag = true)]
    Qhold(PbsArgs),
    /// PBS's qrls.
    #[command(disable_help_flag = true)]
    Qrls(PbsArgs),
    /// PBS's qsig.
    #[command(disable_help_flag = true)]
    Qsig(PbsArgs),
    /// PBS's qalter.
    #[command(disable_help_flag = true)]
    Qalter(PbsArgs),
    /// PBS's pbsnodes.
    #[command(disable_help_flag = true)]
    Pbsnodes(PbsArgs),
}

/// The arguments of a PBS command, passed as they are.
#[derive(Debug, clap::Args)]
struct PbsArgs {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    let called_as = argv
        .first()
        .and_then(|arg0| std::path::Path::new(arg0).file_name())
        .and_then(|name| name.to_str())
        .unwrap_or("hpcbox")
        .to_string();
    let rest = &argv[1.min(argv.len())..];
    if called_as == "computepi" {
        return hpcbox_lesson::computepi::main(rest);
    }
    if let Some(code) = pbs::run(&called_as, rest) {
        return code;
    }
    // `hpcbox qsub …` takes its arguments exactly as the `qsub` link does: before clap, which
    // would swallow a leading `--` (`hpcbox qsub -- /bin/true`).
    if let Some((verb, args)) = rest.split_first() {
        if let Some(code) = pbs::run(verb, args) {
            return code;
        }
    }
    let cli = Cli::parse_from(mpiexec::normalize(argv));
    match cli.command {
        Command::Demo(args) => demo::run(args),
        Command::Up(args) => cluster::up(args),
        Command::Down => cluster::down(),
        Command::Status => cluster::status(),
        Command::Server(args) => cluster::server(args),
        Command::Agent(args) => cluster::agent(args),
        Command::Links { dir } => cluster::links(&dir),
        Command::CheckScript(args) => check_script::run(args),
        Command::Sim(args) => sim::run(args),
        Command::Scale(args) => scale::run(args),
        Command::ScaleSubjob(args) => scale::subjob(args),
        Command::Mpiexec(args) => mpiexec::run(args),
        Command::Computepi(a) => hpcbox_lesson::computepi::main(&a.args),
        Command::Qsub(a) => pbs_command("qsub", &a),
        Command::Qstat(a) => pbs_command("qstat", &a),
        Command::Qdel(a) => pbs_command("qdel", &a),
        Command::Qhold(a) => pbs_command("qhold", &a),
        Command::Qrls(a) => pbs_command("qrls", &a),
        Command::Qsig(a) => pbs_command("qsig", &a),
        Command::Qalter(a) => pbs_command("qalter", &a),
        Command::Pbsnodes(a) => pbs_command("pbsnodes", &a),
    }
}

fn pbs_command(name: &str, args: &PbsArgs) -> ExitCode {
    pbs::run(name, &args.args).unwrap_or(ExitCode::FAILURE)
}

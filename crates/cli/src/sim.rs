//! `hpcbox sim`: replay a workload through hpcbox's scheduler in virtual time.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use hpcbox_sched::sim::{self, parse_swf, SimConfig, Synthetic, Workload};
use hpcbox_sched::Policy;

/// `hpcbox sim`'s options.
#[derive(Debug, clap::Args)]
pub struct SimArgs {
    /// A Standard Workload Format trace (Parallel Workloads Archive); without it, a synthetic
    /// workload is generated.
    #[arg(long)]
    swf: Option<PathBuf>,
    /// Simulated nodes.
    #[arg(long, default_value_t = 64)]
    nodes: u32,
    /// CPUs per simulated node.
    #[arg(long, default_value_t = 16)]
    cpus: u32,
    /// Jobs of the synthetic workload.
    #[arg(long, default_value_t = 10_000)]
    jobs: usize,
    /// Seed of the synthetic workload.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Offered load of the synthetic workload (1.0 fills the cluster).
    #[arg(long, default_value_t = 0.9)]
    load: f64,
    /// The policy: `backfill`, `fifo`, or `compare` for both on the same workload.
    #[arg(long, default_value = "compare")]
    policy: String,
}

/// Runs the simulation and prints its report.
pub fn run(args: SimArgs) -> ExitCode {
    let workload = match load(&args) {
        Ok(workload) => workload,
        Err(e) => {
            eprintln!("hpcbox sim: {e}");
            return ExitCode::FAILURE;
        }
    };
    let origin = Instant::now();
    let mut clock = move || origin.elapsed();
    let mut config = SimConfig::new(args.nodes, args.cpus, Policy::Backfill);
    match args.policy.as_str() {
        "compare" => print!("{}", sim::compare(&workload, &config, &mut clock)),
        "fifo" | "backfill" => {
            if args.policy == "fifo" {
                config.policy = Policy::Fifo;
            }
            print!("{}", sim::run(&workload, &config, &mut clock));
        }
        other => {
            eprintln!("hpcbox sim: unknown policy `{other}` (backfill, fifo or compare)");
            return ExitCode::from(2);
        }
    }
    ExitCode::SUCCESS
}

fn load(args: &SimArgs) -> Result<Workload, String> {
    match &args.swf {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
            parse_swf(&text).map_err(|e| format!("{}: {e}", path.display()))
        }
        None => {
            let mut synthetic =
                Synthetic::new(args.jobs, u64::from(args.nodes) * u64::from(args.cpus));
            synthetic.seed = args.seed;
            synthetic.load = args.load;
            synthetic.max_procs = synthetic.max_procs.min(args.nodes * args.cpus);
            Ok(synthetic.generate())
        }
    }
}

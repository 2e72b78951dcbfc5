//! `hpcbox scale`: run a command at several process counts, and report and plot how it scales.

use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use hpcbox_lesson::scaling::{rows, sweet_spot, Amdahl, Point, Row};
use plotters::prelude::*;

/// `hpcbox scale`'s options.
#[derive(Debug, clap::Args)]
pub struct ScaleArgs {
    /// Process counts to try, comma-separated (default: 1, 2, 4, … up to the usable CPUs).
    #[arg(long, value_delimiter = ',')]
    procs: Vec<u32>,
    /// Runs per count.
    #[arg(long, default_value_t = 3)]
    repeat: u32,
    /// The sweet spot is the count after which the next one cuts the time by less than this
    /// fraction.
    #[arg(long, default_value_t = 0.1)]
    threshold: f64,
    /// Where to write the plots: PREFIX.png and PREFIX.svg.
    #[arg(long, default_value = "scale")]
    plot: PathBuf,
    /// Print the results as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// The command, with `{n}` where the process count goes.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    command: Vec<String>,
}

/// Runs the sweep, prints the table (or JSON) and writes the plots.
pub fn run(args: ScaleArgs) -> ExitCode {
    let procs = if args.procs.is_empty() {
        default_counts(hpcbox_pool::usable_cpus() as u32)
    } else {
        args.procs.clone()
    };
    let points = match sweep(&args.command, &procs, args.repeat.max(1)) {
        Ok(points) => points,
        Err(e) => {
            eprintln!("hpcbox scale: {e}");
            return ExitCode::FAILURE;
        }
    };
    let fit = Amdahl::fit(&points);
    let table = rows(&points, fit.as_ref());
    let spot = sweet_spot(&points, args.threshold);
    let plots = plot(&args.plot, &table, fit.as_ref());
    if args.json {
        println!("{}", json(&table, fit.as_ref(), spot, &plots));
    } else {
        print!(
            "{}",
            report(&table, fit.as_ref(), spot, args.threshold, &plots)
        );
    }
    ExitCode::SUCCESS
}

/// 1, 2, 4, … up to `max`, and `max` itself.
fn default_counts(max: u32) -> Vec<u32> {
    let mut counts: Vec<u32> = std::iter::successors(Some(1u32), |n| n.checked_mul(2))
        .take_while(|&n| n < max)
        .collect();
    counts.push(max.max(1));
    counts
}

fn sweep(command: &[String], procs: &[u32], repeat: u32) -> Result<Vec<Point>, String> {
    let bar = indicatif::ProgressBar::new(u64::from(repeat) * procs.len() as u64);
    let mut points = Vec::new();
    for &n in procs {
        let argv: Vec<String> = command
            .iter()
            .map(|a| a.replace("{n}", &n.to_string()))
            .collect();
        let mut seconds = Vec::new();
        for _ in 0..repeat {
            bar.set_message(format!("{n} processes"));
            seconds.push(time_once(&argv)?);
            bar.inc(1);
        }
        points.push(Point { procs: n, seconds });
    }
    bar.finish_and_clear();
    Ok(points)
}

fn time_once(argv: &[String]) -> Result<f64, String> {
    let (program, args) = argv.split_first().ok_or("no command given")?;
    let started = Instant::now();
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    let seconds = started.elapsed().as_secs_f64();
    if !out.status.success() {
        return Err(format!(
            "`{}` failed ({}): {}",
            argv.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim_end()
        ));
    }
    Ok(seconds)
}

/// Which plot files were written, and why one was not.
struct Plots {
    written: Vec<PathBuf>,
    failed: Vec<String>,
}

fn plot(prefix: &std::path::Path, table: &[Row], fit: Option<&Amdahl>) -> Plots {
    let mut plots = Plots {
        written: Vec::new(),
        failed: Vec::new(),
    };
    let svg = prefix.with_extension("svg");
    match draw(
        SVGBackend::new(&svg, (800, 600)).into_drawing_area(),
        table,
        fit,
    ) {
        Ok(()) => plots.written.push(svg),
        Err(e) => plots.failed.push(format!("{}: {e}", svg.display())),
    }
    let png = prefix.with_extension("png");
    match draw(
        BitMapBackend::new(&png, (800, 600)).into_drawing_area(),
        table,
        fit,
    ) {
        Ok(()) => plots.written.push(png),
        Err(e) => plots.failed.push(format!("{}: {e}", png.display())),
    }
    plots
}

/// Speed-up (measured, ideal and Amdahl's) above, efficiency below, against process count.
fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, plotters::coord::Shift>,
    table: &[Row],
    fit: Option<&Amdahl>,
) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    let e = |err: &dyn std::fmt::Display| err.to_string();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let (top, bottom) = root.split_vertically(380);
    let max_n = table.iter().map(|r| r.procs).max().unwrap_or(1).max(2) as f64;
    let max_s = table
        .iter()
        .map(|r| r.speedup)
        .filter(|s| s.is_finite())
        .fold(max_n, f64::max);
    let mut chart = ChartBuilder::on(&top)
        .caption("speed-up", ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(45)
        .build_cartesian_2d(1f64..max_n, 0f64..max_s * 1.05)
        .map_err(|x| e(&x))?;
    chart
        .configure_mesh()
        .x_desc("processes")
        .y_desc("speed-up")
        .draw()
        .map_err(|x| e(&x))?;
    chart
        .draw_series(LineSeries::new(
            [(1.0, 1.0), (max_n, max_n)],
            BLACK.mix(0.3),
        ))
        .map_err(|x| e(&x))?
        .label("ideal")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], BLACK.mix(0.3)));
    if let Some(fit) = fit {
        let curve = (0..=100).map(|i| {
            let n = 1.0 + (max_n - 1.0) * f64::from(i) / 100.0;
            (n, fit.speedup(n))
        });
        chart
            .draw_series(LineSeries::new(curve, RED))
            .map_err(|x| e(&x))?
            .label(format!(
                "Amdahl, serial fraction {:.1}%",
                fit.serial_fraction * 100.0
            ))
            .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], RED));
    }
    let measured: Vec<(f64, f64)> = table
        .iter()
        .map(|r| (f64::from(r.procs), r.speedup))
        .collect();
    chart
        .draw_series(LineSeries::new(measured.clone(), BLUE))
        .map_err(|x| e(&x))?
        .label("measured")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], BLUE));
    chart
        .draw_series(measured.iter().map(|&p| Circle::new(p, 4, BLUE.filled())))
        .map_err(|x| e(&x))?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE)
        .border_style(BLACK.mix(0.3))
        .draw()
        .map_err(|x| e(&x))?;
    let mut eff = ChartBuilder::on(&bottom)
        .caption("efficiency", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(45)
        .build_cartesian_2d(1f64..max_n, 0f64..1.2f64)
        .map_err(|x| e(&x))?;
    eff.configure_mesh()
        .x_desc("processes")
        .y_desc("efficiency")
        .draw()
        .map_err(|x| e(&x))?;
    let efficiency: Vec<(f64, f64)> = table
        .iter()
        .map(|r| (f64::from(r.procs), r.efficiency))
        .collect();
    eff.draw_series(LineSeries::new(efficiency.clone(), BLUE))
        .map_err(|x| e(&x))?;
    eff.draw_series(efficiency.iter().map(|&p| Circle::new(p, 4, BLUE.filled())))
        .map_err(|x| e(&x))?;
    root.present().map_err(|x| e(&x))
}

fn report(
    table: &[Row],
    fit: Option<&Amdahl>,
    spot: Option<u32>,
    threshold: f64,
    plots: &Plots,
) -> String {
    let mut out = format!(
        "{:>6} {:>10} {:>9} {:>9} {:>11}\n",
        "procs", "time (s)", "± (s)", "speed-up", "efficiency"
    );
    for r in table {
        out.push_str(&format!(
            "{:>6} {:>10.3} {:>9.3} {:>9.2} {:>10.0}%\n",
            r.procs,
            r.mean,
            r.stddev,
            r.speedup,
            r.efficiency * 100.0
        ));
    }
    if let Some(fit) = fit {
        out.push_str(&format!(
            "Amdahl's law: serial fraction {:.1}%, so at most {:.1}x however many processes\n",
            fit.serial_fraction * 100.0,
            fit.max_speedup()
        ));
    }
    if let Some(n) = spot {
        out.push_str(&format!(
            "sweet spot: {n} processes (past it, the next count cuts the time by less than {:.0}%)\n",
            threshold * 100.0
        ));
    }
    for path in &plots.written {
        out.push_str(&format!("plot: {}\n", path.display()));
    }
    for failure in &plots.failed {
        out.push_str(&format!("plot not written: {failure}\n"));
    }
    out
}

fn json(
    table: &[Row],
    fit: Option<&Amdahl>,
    spot: Option<u32>,
    plots: &Plots,
) -> serde_json::Value {
    serde_json::json!({
        "rows": table.iter().map(|r| serde_json::json!({
            "procs": r.procs,
            "mean_seconds": r.mean,
            "stddev_seconds": r.stddev,
            "speedup": r.speedup,
            "efficiency": r.efficiency,
        })).collect::<Vec<_>>(),
        "serial_fraction": fit.map(|f| f.serial_fraction),
        "sweet_spot": spot,
        "plots": plots.written.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
        "plot_errors": plots.failed,
    })
}

//! What a sweep shows: the table (or JSON) of time, speed-up and efficiency, the Amdahl fit,
//! the sweet spot, and the PNG and SVG plots.

use std::path::{Path, PathBuf};

use hpcbox_lesson::scaling::{rows, sweet_spot, Amdahl, Point, Row};
use plotters::prelude::*;

/// How to show a sweep's results: the options of `hpcbox scale` that shape its report.
#[derive(Debug, Clone)]
pub struct Show {
    /// The sweet spot's threshold, a fraction.
    pub threshold: f64,
    /// The plots' path prefix.
    pub plot: PathBuf,
    /// JSON instead of a table.
    pub json: bool,
}

/// Fits, tabulates and plots `points`, and prints the report as `how` asks.
pub fn show(points: &[Point], how: &Show) {
    let fit = Amdahl::fit(points);
    let table = rows(points, fit.as_ref());
    let spot = sweet_spot(points, how.threshold);
    let plots = plot(&how.plot, &table, fit.as_ref());
    if how.json {
        println!("{}", json(&table, fit.as_ref(), spot, &plots));
    } else {
        print!(
            "{}",
            report(&table, fit.as_ref(), spot, how.threshold, &plots)
        );
    }
}

/// Which plot files were written, and why one was not.
struct Plots {
    written: Vec<PathBuf>,
    failed: Vec<String>,
}

/// The plots' one font, built in (pure Rust rendering: no fontconfig or FreeType to install).
const FONT: &[u8] = include_bytes!("../../../../assets/fonts/DejaVuSans.ttf");

/// Makes [`FONT`] plotters' "sans-serif", once.
fn register_font() -> Result<(), String> {
    static REGISTERED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            plotters::style::register_font("sans-serif", FontStyle::Normal, FONT)
                .map_err(|_| "the built-in font is not a valid font".to_string())
        })
        .clone()
}

/// Draws the SVG and the PNG beside `prefix`.
fn plot(prefix: &Path, table: &[Row], fit: Option<&Amdahl>) -> Plots {
    let mut plots = Plots {
        written: Vec::new(),
        failed: Vec::new(),
    };
    if let Err(e) = register_font() {
        plots.failed.push(e);
        return plots;
    }
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

/// The table, the fit, the sweet spot and the plots' paths, as text.
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
            "sweet spot: {n} processes (the fewest within {:.0}% of the fastest time)\n",
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

/// The same as [`report`], as JSON.
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

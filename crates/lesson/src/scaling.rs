//! The scaling study's arithmetic: timings per process count, speed-up and efficiency with
//! their spread, Amdahl's law fitted to the timings, and the sweet spot where adding processes
//! stops paying.

/// The timings of one process count.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// How many processes.
    pub procs: u32,
    /// The wall times of its runs, in seconds.
    pub seconds: Vec<f64>,
}

impl Point {
    /// The mean time.
    pub fn mean(&self) -> f64 {
        self.seconds.iter().sum::<f64>() / self.seconds.len().max(1) as f64
    }

    /// The sample standard deviation of the times (0 for one run).
    pub fn stddev(&self) -> f64 {
        let n = self.seconds.len();
        if n < 2 {
            return 0.0;
        }
        let mean = self.mean();
        let var = self.seconds.iter().map(|t| (t - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        var.sqrt()
    }
}

/// One row of the study's table.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// How many processes.
    pub procs: u32,
    /// Mean time, seconds.
    pub mean: f64,
    /// Standard deviation of the time, seconds.
    pub stddev: f64,
    /// Speed-up against one process (extrapolated by the fit when 1 was not measured).
    pub speedup: f64,
    /// Speed-up per process.
    pub efficiency: f64,
}

/// Amdahl's law fitted to the timings: `T(n) = T1 · (f + (1 − f)/n)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Amdahl {
    /// The time on one process, seconds.
    pub t1: f64,
    /// The serial fraction `f`, between 0 and 1.
    pub serial_fraction: f64,
}

impl Amdahl {
    /// Least squares of `T(n) = a + b/n` over the mean times (`a = T1·f`, `b = T1·(1 − f)`);
    /// `None` with fewer than two distinct counts.
    pub fn fit(points: &[Point]) -> Option<Amdahl> {
        let xs: Vec<(f64, f64)> = points
            .iter()
            .filter(|p| p.procs > 0 && !p.seconds.is_empty())
            .map(|p| (1.0 / f64::from(p.procs), p.mean()))
            .collect();
        let n = xs.len() as f64;
        let (sx, sy) = xs.iter().fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
        let sxx: f64 = xs.iter().map(|(x, _)| x * x).sum();
        let sxy: f64 = xs.iter().map(|(x, y)| x * y).sum();
        let denom = n * sxx - sx * sx;
        if xs.len() < 2 || denom.abs() < f64::EPSILON {
            return None;
        }
        let b = ((n * sxy - sx * sy) / denom).max(0.0);
        let a = ((sy - b * sx) / n).max(0.0);
        let t1 = a + b;
        (t1 > 0.0).then(|| Amdahl {
            t1,
            serial_fraction: (a / t1).clamp(0.0, 1.0),
        })
    }

    /// The speed-up the law predicts on `n` processes.
    pub fn speedup(&self, n: f64) -> f64 {
        1.0 / (self.serial_fraction + (1.0 - self.serial_fraction) / n)
    }

    /// The limit of the speed-up as processes grow: `1/f`.
    pub fn max_speedup(&self) -> f64 {
        1.0 / self.serial_fraction
    }
}

/// The table of a study: speed-up against the one-process time (measured, else the fit's).
pub fn rows(points: &[Point], fit: Option<&Amdahl>) -> Vec<Row> {
    let t1 = points
        .iter()
        .find(|p| p.procs == 1)
        .map(Point::mean)
        .or(fit.map(|f| f.t1))
        .unwrap_or(f64::NAN);
    points
        .iter()
        .map(|p| {
            let speedup = t1 / p.mean();
            Row {
                procs: p.procs,
                mean: p.mean(),
                stddev: p.stddev(),
                speedup,
                efficiency: speedup / f64::from(p.procs.max(1)),
            }
        })
        .collect()
}

/// The sweet spot: the fewest processes whose mean time is at most `threshold` (a fraction,
/// 0.1 for 10 %) longer than the fastest count's.
///
/// Measured against the fastest time rather than step by step: one noisy count (a plateau
/// from 3 to 4 processes on a busy machine) does not stop the search while larger counts still
/// halve the time, and the steps between counts may differ in size.
pub fn sweet_spot(points: &[Point], threshold: f64) -> Option<u32> {
    let measured = || points.iter().filter(|p| !p.seconds.is_empty());
    let fastest = measured().map(Point::mean).min_by(f64::total_cmp)?;
    measured()
        .filter(|p| p.mean() <= fastest * (1.0 + threshold))
        .map(|p| p.procs)
        .min()
}

/// One run of a sweep: a process count and which of its repeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    /// How many processes.
    pub procs: u32,
    /// Which repeat of that count, from 1.
    pub repeat: u32,
}

/// Every run of a sweep of `procs`, `repeat` times each, repeat by repeat (every count once,
/// then every count again), so that a drift of the machine over the sweep spreads over all
/// the counts instead of biasing the last ones.
pub fn runs(procs: &[u32], repeat: u32) -> Vec<Run> {
    (1..=repeat)
        .flat_map(|r| {
            procs.iter().map(move |&n| Run {
                procs: n,
                repeat: r,
            })
        })
        .collect()
}

/// The points of `procs` (in that order) from timed runs: each run's seconds go to its count.
pub fn points_of(procs: &[u32], timed: &[(Run, f64)]) -> Vec<Point> {
    procs
        .iter()
        .map(|&n| Point {
            procs: n,
            seconds: timed
                .iter()
                .filter(|(run, _)| run.procs == n)
                .map(|&(_, s)| s)
                .collect(),
        })
        .collect()
}

/// `command` with every `{n}` replaced by `procs`.
pub fn command_for(command: &[String], procs: u32) -> Vec<String> {
    command
        .iter()
        .map(|a| a.replace("{n}", &procs.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn amdahl_points(f: f64, t1: f64, counts: &[u32]) -> Vec<Point> {
        counts
            .iter()
            .map(|&n| Point {
                procs: n,
                seconds: vec![t1 * (f + (1.0 - f) / f64::from(n))],
            })
            .collect()
    }

    #[test]
    fn the_fit_recovers_the_law_from_exact_timings() {
        for f in [0.0, 0.05, 0.3, 1.0] {
            let fit = Amdahl::fit(&amdahl_points(f, 8.0, &[1, 2, 4, 8, 16])).unwrap();
            assert!((fit.serial_fraction - f).abs() < 1e-9, "{f}: {fit:?}");
            assert!((fit.t1 - 8.0).abs() < 1e-9);
        }
        // Without a one-process run the fit still finds T1.
        let fit = Amdahl::fit(&amdahl_points(0.1, 5.0, &[2, 4, 8])).unwrap();
        assert!((fit.t1 - 5.0).abs() < 1e-9 && (fit.serial_fraction - 0.1).abs() < 1e-9);
        assert!((fit.max_speedup() - 10.0).abs() < 1e-6);
        assert_eq!(Amdahl::fit(&amdahl_points(0.1, 5.0, &[4])), None);
    }

    #[test]
    fn rows_give_speedup_and_efficiency() {
        let points = amdahl_points(0.0, 4.0, &[1, 2, 4]);
        let rows = rows(&points, None);
        let speedups: Vec<f64> = rows.iter().map(|r| r.speedup).collect();
        assert_eq!(speedups, [1.0, 2.0, 4.0]);
        assert!(rows.iter().all(|r| (r.efficiency - 1.0).abs() < 1e-12));
    }

    #[test]
    fn the_sweet_spot_is_the_fewest_processes_near_the_fastest_time() {
        // f = 0.3, T1 = 10: 10, 6.5, 4.75, 3.875, 3.4375 s at 1, 2, 4, 8, 16.
        let points = amdahl_points(0.3, 10.0, &[1, 2, 4, 8, 16]);
        assert_eq!(sweet_spot(&points, 0.15), Some(8)); // 3.875 <= 3.4375 * 1.15 < 4.75
        assert_eq!(sweet_spot(&points, 0.10), Some(16));
        assert_eq!(sweet_spot(&points, 0.40), Some(4)); // 4.75 <= 3.4375 * 1.4 < 6.5
        assert_eq!(sweet_spot(&points[..1], 0.10), Some(1));
        assert_eq!(sweet_spot(&[], 0.10), None);
        // A plateau from 3 to 4 on a busy machine (a 16-core run) does not stop the search,
        // and a count past the fastest that is slower again is not the answer either.
        let times = [
            6.556, 3.942, 2.352, 2.275, 1.745, 1.435, 1.204, 0.980, 0.779, 0.816,
        ];
        let counts = [1, 2, 3, 4, 6, 8, 10, 12, 14, 16];
        let noisy: Vec<Point> = counts
            .iter()
            .zip(times)
            .map(|(&procs, t)| Point {
                procs,
                seconds: vec![t],
            })
            .collect();
        assert_eq!(sweet_spot(&noisy, 0.10), Some(14));
        assert_eq!(sweet_spot(&noisy, 0.30), Some(12));
        let spread = Point {
            procs: 2,
            seconds: vec![1.0, 3.0],
        };
        assert_eq!(spread.mean(), 2.0);
        assert!((spread.stddev() - 2f64.sqrt()).abs() < 1e-12);
    }

    #[test]
    fn runs_go_repeat_by_repeat_and_come_back_as_points() {
        let plan = runs(&[1, 2], 2);
        let pairs: Vec<(u32, u32)> = plan.iter().map(|r| (r.procs, r.repeat)).collect();
        assert_eq!(pairs, [(1, 1), (2, 1), (1, 2), (2, 2)]);
        let timed: Vec<(Run, f64)> = plan.iter().map(|&r| (r, f64::from(r.repeat))).collect();
        let points = points_of(&[1, 2], &timed);
        assert_eq!(points[0].procs, 1);
        assert_eq!(points[0].seconds, [1.0, 2.0]);
        assert_eq!(points[1].seconds, [1.0, 2.0]);
        let argv = command_for(&["-n".into(), "{n}".into(), "x{n}y".into()], 4);
        assert_eq!(argv, ["-n", "4", "x4y"]);
    }
}

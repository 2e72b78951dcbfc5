//! The Standard Workload Format of the Parallel Workloads Archive: one job per line, 18
//! whitespace-separated fields, `-1` for unknown, `;` starting header comments.
//!
//! Fields used (1-based, as the PWA numbers them): 1 job number, 2 submit time, 4 run time,
//! 5 allocated processors, 8 requested processors, 9 requested time, 12 user id.

use thiserror::Error;

use super::{SimJob, Workload};

/// A line that is not valid SWF.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("SWF line {line}: {reason}")]
pub struct SwfError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

/// Reads field `n` (1-based) as an integer; `-1` and absent fields are `None`.
fn field(fields: &[&str], n: usize, line: usize) -> Result<Option<i64>, SwfError> {
    let Some(text) = fields.get(n - 1) else {
        return Ok(None);
    };
    let value = match text.parse::<i64>() {
        Ok(v) => v,
        Err(_) => match text.parse::<f64>() {
            Ok(f) if f.is_finite() && f.abs() < 9.0e18 => f as i64,
            _ => {
                return Err(SwfError {
                    line,
                    reason: format!("field {n} `{text}` is not a number"),
                })
            }
        },
    };
    Ok((value >= 0).then_some(value))
}

/// Parses an SWF trace. Jobs with unknown run time or processor count are left out and
/// counted in [`Workload::skipped`]. A job's run time is cut to its requested time, as a
/// scheduler would kill it there.
///
/// ```
/// let w = hpcbox_sched::sim::parse_swf("; header\n1 0 5 100 4 -1 -1 4 200 -1 1 3 -1 -1 1 -1 -1 -1\n").unwrap();
/// assert_eq!(w.jobs.len(), 1);
/// assert_eq!((w.jobs[0].procs, w.jobs[0].run_time, w.jobs[0].requested_time), (4, 100, Some(200)));
/// ```
pub fn parse_swf(text: &str) -> Result<Workload, SwfError> {
    let mut jobs = Vec::new();
    let mut skipped = 0usize;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with(';') {
            continue;
        }
        let fields: Vec<&str> = trimmed.split_whitespace().collect();
        if fields.len() < 5 {
            return Err(SwfError {
                line,
                reason: format!("{} fields, expected 18", fields.len()),
            });
        }
        for n in 1..=fields.len() {
            field(&fields, n, line)?;
        }
        let id = field(&fields, 1, line)?;
        let submit = field(&fields, 2, line)?;
        let run = field(&fields, 4, line)?;
        let allocated = field(&fields, 5, line)?;
        let requested = field(&fields, 8, line)?.filter(|&p| p > 0);
        let req_time = field(&fields, 9, line)?.filter(|&t| t > 0);
        let user = field(&fields, 12, line)?.unwrap_or(0);
        let procs = requested.or(allocated.filter(|&p| p > 0));
        let (Some(id), Some(submit), Some(run), Some(procs)) = (id, submit, run, procs) else {
            skipped += 1;
            continue;
        };
        let Ok(procs) = u32::try_from(procs) else {
            skipped += 1;
            continue;
        };
        let req_time = req_time.map(|t| t as u64);
        let run = req_time.map_or(run as u64, |t| (run as u64).min(t));
        jobs.push(SimJob {
            id: id as u64,
            submit: submit as u64,
            run_time: run,
            procs,
            requested_time: req_time,
            user: u32::try_from(user).unwrap_or(u32::MAX),
        });
    }
    Ok(Workload::new(jobs, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SAMPLE: &str = "\
; Version: 2.2
; MaxProcs: 128
1 0 10 3600 32 -1 -1 32 7200 -1 1 1 1 -1 1 -1 -1 -1
2 60 -1 100 -1 -1 -1 8 -1 -1 1 2 1 -1 1 -1 -1 -1
3 120 0 -1 16 -1 -1 16 600 -1 0 1 1 -1 1 -1 -1 -1
4 180 0 900 4 -1 -1 -1 600 -1 1 7 1 -1 1 -1 -1 -1
";

    #[test]
    fn reads_the_fields_the_pwa_defines() {
        let w = parse_swf(SAMPLE).unwrap();
        assert_eq!(w.skipped, 1, "job 3 has no run time");
        let j: Vec<_> = w
            .jobs
            .iter()
            .map(|j| {
                (
                    j.id,
                    j.submit,
                    j.run_time,
                    j.procs,
                    j.requested_time,
                    j.user,
                )
            })
            .collect();
        assert_eq!(
            j,
            vec![
                (1, 0, 3600, 32, Some(7200), 1),
                (2, 60, 100, 8, None, 2),
                // allocated procs when requested is unknown; run time cut to the request
                (4, 180, 600, 4, Some(600), 7),
            ]
        );
    }

    #[test]
    fn rejects_garbage_with_its_line() {
        let e = parse_swf("; ok\n1 2 x 4 5\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(parse_swf("1 2\n").is_err());
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC*") {
            let _ = parse_swf(&s);
        }

        #[test]
        fn never_panics_on_numbers(v in proptest::collection::vec(-5i64..1_000_000_000_000i64, 0..20)) {
            let line: Vec<String> = v.iter().map(|x| x.to_string()).collect();
            let _ = parse_swf(&line.join(" "));
        }
    }
}

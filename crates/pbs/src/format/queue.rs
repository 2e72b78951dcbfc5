//! Queue tables: `qstat -Q` (`display_statque`) and `qstat -q` (`altdsp_statque`) in
//! `src/cmds/qstat.c`. `qstat -Qf` is [`super::full::render_queues`].
//!
//! ```text
//! Queue              Max   Tot Ena Str   Que   Run   Hld   Wat   Trn   Ext Type
//! ---------------- ----- ----- --- --- ----- ----- ----- ----- ----- ----- ----
//! workq                0     0 yes yes     0     0     0     0     0     0 Exe*
//! ```

use super::qstat::last;
use super::qstat_alt::{convert_size, SizeUnit};
use super::{left, right, truncate_marked};
use crate::status::StatusObject;

/// The `qstat -Q` header lines.
pub const HEADER: &str = "Queue              Max   Tot Ena Str   Que   Run   Hld   Wat   Trn   Ext Type\n\
                          ---------------- ----- ----- --- --- ----- ----- ----- ----- ----- ----- ----\n";

/// `qstat -Q` for `queues`; `header` for the first answer of the command (PBS prints the
/// header once, before the first queues it gets). An empty list prints only the header.
pub fn render(queues: &[StatusObject], header: bool) -> String {
    let mut out = if header {
        HEADER.to_string()
    } else {
        String::new()
    };
    for q in queues {
        out.push_str(&row(q));
    }
    out
}

/// One `qstat -Q` row: `%-16s %5s %5s %3s %3s %5s %5s %5s %5s %5s %5s %-4s`.
///
/// ```
/// use hpcbox_pbs::format::queue::row;
/// use hpcbox_pbs::status::StatusObject;
/// let q = StatusObject::new("workq")
///     .with("queue_type", "Execution")
///     .with("total_jobs", "1")
///     .with("state_count", "Transit:0 Queued:1 Held:0 Waiting:0 Running:0 Exiting:0 Begun:0 ")
///     .with("enabled", "True")
///     .with("started", "True");
/// assert_eq!(row(&q), "workq                0     1 yes yes     1     0     0     0     0     0 Exe*\n");
/// ```
pub fn row(queue: &StatusObject) -> String {
    let counts = last(queue, "state_count", None)
        .map(StateCounts::parse)
        .unwrap_or_default();
    let yes_no = |name| {
        if last(queue, name, None).is_some_and(is_true) {
            "yes"
        } else {
            "no"
        }
    };
    let mut out = String::new();
    left(&mut out, &truncate_marked(&queue.name, 16), 16, None);
    for (value, width) in [
        (count(queue, "max_running"), 5),
        (count(queue, "total_jobs"), 5),
        (yes_no("enabled").to_string(), 3),
        (yes_no("started").to_string(), 3),
        (counts.queued, 5),
        (counts.running, 5),
        (counts.held, 5),
        (counts.waiting, 5),
        (counts.transit, 5),
        (counts.exiting, 5),
    ] {
        out.push(' ');
        right(&mut out, &value, width, None);
    }
    out.push(' ');
    let kind = last(queue, "queue_type", None).map_or_else(
        || "not defined".to_string(),
        |t| truncate_marked(t, 4).into_owned(),
    );
    left(&mut out, &kind, 4, None);
    out.push('\n');
    out
}

/// A numeric column: the value cut to 5 characters with `*`, `0` when unset.
pub(crate) fn count(obj: &StatusObject, name: &str) -> String {
    last(obj, name, None).map_or_else(|| "0".to_string(), |v| truncate_marked(v, 5).into_owned())
}

/// `istrue`: `TRUE`, `True`, `true` or `1`.
pub(crate) fn is_true(value: &str) -> bool {
    matches!(value, "TRUE" | "True" | "true" | "1")
}

/// The per-state job counts of a `state_count` value as the tables show them (each cut to 5
/// characters with `*`, `0` when absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateCounts {
    /// `Queued:`.
    pub queued: String,
    /// `Running:`.
    pub running: String,
    /// `Held:`.
    pub held: String,
    /// `Waiting:`.
    pub waiting: String,
    /// `Transit:`.
    pub transit: String,
    /// `Exiting:`.
    pub exiting: String,
}

impl Default for StateCounts {
    fn default() -> Self {
        let zero = || "0".to_string();
        StateCounts {
            queued: zero(),
            running: zero(),
            held: zero(),
            waiting: zero(),
            transit: zero(),
            exiting: zero(),
        }
    }
}

impl StateCounts {
    /// Reads `Transit:0 Queued:1 Held:0 Waiting:0 Running:0 Exiting:0 Begun:0 ` as qstat's
    /// `states()` does, including its quirk: after a state it does not know it stops
    /// recognizing the states that follow.
    pub fn parse(value: &str) -> StateCounts {
        let mut counts = StateCounts::default();
        let mut rest = value.trim_start();
        while let Some(colon) = rest.find(':') {
            let name = &rest[..colon];
            rest = &rest[colon + 1..];
            let end = rest.find(' ').unwrap_or(rest.len());
            let number = &rest[..end];
            let slot = match name {
                "Queued" => Some(&mut counts.queued),
                "Running" => Some(&mut counts.running),
                "Held" => Some(&mut counts.held),
                "Waiting" => Some(&mut counts.waiting),
                "Transit" => Some(&mut counts.transit),
                "Exiting" => Some(&mut counts.exiting),
                _ => None,
            };
            match slot {
                Some(slot) => {
                    *slot = truncate_marked(number, 5).into_owned();
                    // Past the number and the one blank after it.
                    rest = rest.get(end + 1..).unwrap_or("");
                }
                // The blank stays, so the next name starts with it and matches nothing.
                None => rest = &rest[end..],
            }
        }
        counts
    }
}

/// `qstat -q`: `\nserver: <server>\n\n`, the header, one row per queue and the totals of
/// running and queued (queued + held + waiting) jobs.
pub fn render_summary(server: &str, queues: &[StatusObject], sizes: SizeUnit) -> String {
    let mut out = format!("\nserver: {server}\n\n");
    out.push_str("Queue            Memory CPU Time Walltime Node   Run   Que   Lm  State\n");
    out.push_str("---------------- ------ -------- -------- ---- ----- ----- ----  -----\n");
    let (mut total_run, mut total_queued) = (0i64, 0i64);
    for q in queues {
        let (run, queued) = run_and_queued(q);
        total_run = total_run.saturating_add(run);
        total_queued = total_queued.saturating_add(queued);
        summary_row(&mut out, q, run, queued, sizes);
    }
    out.push_str(&" ".repeat(47));
    out.push_str("----- -----\n");
    out.push_str(&format!(
        "{}{total_run:5} {total_queued:5}\n",
        " ".repeat(47)
    ));
    out
}

fn summary_row(out: &mut String, q: &StatusObject, run: i64, queued: i64, sizes: SizeUnit) {
    const BLANK: &str = "  --   ";
    let max = |resc| last(q, "resources_max", Some(resc));
    let memory = max("mem").map_or_else(
        || "--  ".to_string(),
        |m| convert_size(m, sizes).chars().take(5).collect(),
    );
    left(out, &q.name, 16, Some(16));
    out.push(' ');
    right(out, &memory, 6, Some(6));
    out.push(' ');
    right(out, max("cput").unwrap_or(BLANK), 8, Some(8));
    out.push(' ');
    right(out, max("walltime").unwrap_or(BLANK), 8, Some(8));
    out.push(' ');
    right(out, max("nodect").unwrap_or("-- "), 4, Some(4));
    out.push_str(&format!(" {run:5} {queued:5} "));
    right(
        out,
        last(q, "max_running", None).unwrap_or(BLANK),
        4,
        Some(4),
    );
    let flag = |name, on, off| {
        if last(q, name, None).is_some_and(|v| v.starts_with('T')) {
            on
        } else {
            off
        }
    };
    out.push_str("   ");
    out.push(flag("enabled", 'E', 'D'));
    out.push(' ');
    out.push(flag("started", 'R', 'S'));
    out.push('\n');
}

/// Running and queued (Queued + Held + Waiting) counts as `get_ct` reads them: by position,
/// after the first, second, third, fourth and fifth colon.
fn run_and_queued(q: &StatusObject) -> (i64, i64) {
    let Some(value) = last(q, "state_count", None) else {
        return (0, 0);
    };
    let fields: Vec<i64> = value
        .split(':')
        .skip(1)
        .map(|f| i64::from(super::ctime::atol(f) as i32))
        .collect();
    let at = |i: usize| fields.get(i).copied().unwrap_or(0);
    let queued = at(1).saturating_add(at(2)).saturating_add(at(3));
    (at(4), queued)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn unknown_state_hides_the_rest() {
        let c = StateCounts::parse("Queued:3 Foo:1 Running:2");
        assert_eq!(c.queued, "3");
        assert_eq!(c.running, "0");
        let c = StateCounts::parse("Queued:123456");
        assert_eq!(c.queued, "1234*");
    }

    #[test]
    fn summary_totals() {
        let q = StatusObject::new("thin")
            .with(
                "state_count",
                "Transit:0 Queued:95 Held:0 Waiting:0 Running:16 Exiting:0 Begun:0 ",
            )
            .with_resource("resources_max", "walltime", "96:00:00")
            .with("enabled", "True")
            .with("started", "True");
        let out = render_summary("login.hpc", &[q], SizeUnit::Natural);
        assert!(
            out.contains("thin               --      --    96:00:00  --     16    95   --   E R\n")
        );
        assert!(out.ends_with(&format!("{}   16    95\n", " ".repeat(47))));
    }

    proptest! {
        #[test]
        fn never_panics(value in ".*", name in ".*") {
            let q = StatusObject::new(name.clone())
                .with("state_count", value.clone())
                .with("max_running", value.clone())
                .with("queue_type", value.clone())
                .with_resource("resources_max", "mem", value.clone());
            let _ = row(&q);
            let _ = render_summary(&name, &[q], SizeUnit::Natural);
        }
    }
}

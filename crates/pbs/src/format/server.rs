//! The server table of `qstat -B` (`display_statserver` in `src/cmds/qstat.c`).
//! `qstat -Bf` is [`super::full::render_servers`].
//!
//! ```text
//! Server             Max   Tot   Que   Run   Hld   Wat   Trn   Ext Status
//! ---------------- ----- ----- ----- ----- ----- ----- ----- ----- -----------
//! sirna1               0     1     0     0     0     0     0     0 Active
//! ```

use super::qstat::last;
use super::queue::{count, StateCounts};
use super::{left, right, truncate_marked};
use crate::status::StatusObject;

/// The `qstat -B` header lines.
pub const HEADER: &str = "Server             Max   Tot   Que   Run   Hld   Wat   Trn   Ext Status\n\
                          ---------------- ----- ----- ----- ----- ----- ----- ----- ----- -----------\n";

/// `qstat -B` for `servers`; `header` for the first answer of the command.
pub fn render(servers: &[StatusObject], header: bool) -> String {
    let mut out = if header {
        HEADER.to_string()
    } else {
        String::new()
    };
    for s in servers {
        out.push_str(&row(s));
    }
    out
}

/// One row: `%-16s %5s %5s %5s %5s %5s %5s %5s %5s %-10s`, the status cut to 10 characters.
///
/// ```
/// use hpcbox_pbs::format::server::row;
/// use hpcbox_pbs::status::StatusObject;
/// let s = StatusObject::new("sirna1").with("server_state", "Active").with("total_jobs", "1");
/// assert_eq!(row(&s), "sirna1               0     1     0     0     0     0     0     0 Active    \n");
/// ```
pub fn row(server: &StatusObject) -> String {
    let counts = last(server, "state_count", None)
        .map(StateCounts::parse)
        .unwrap_or_default();
    let mut out = String::new();
    left(&mut out, &truncate_marked(&server.name, 16), 16, None);
    for value in [
        count(server, "max_running"),
        count(server, "total_jobs"),
        counts.queued,
        counts.running,
        counts.held,
        counts.waiting,
        counts.transit,
        counts.exiting,
    ] {
        out.push(' ');
        right(&mut out, &value, 5, None);
    }
    out.push(' ');
    let status = last(server, "server_state", None).unwrap_or("");
    left(&mut out, &truncate_marked(status, 10), 10, None);
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn long_values_are_cut() {
        let s = StatusObject::new("a-very-long-server-name")
            .with("server_state", "Hot_Start_Pending")
            .with("max_running", "1000000");
        assert_eq!(
            row(&s),
            "a-very-long-ser* 1000*     0     0     0     0     0     0     0 Hot_Start*\n"
        );
    }

    proptest! {
        #[test]
        fn short_rows_have_fixed_width(name in "[a-z]{1,16}", state in "[A-Za-z_]{0,10}") {
            let s = StatusObject::new(name).with("server_state", state);
            prop_assert_eq!(row(&s).chars().count(), 16 + 8 * 6 + 1 + 10 + 1);
        }
    }
}

//! The default `qstat` job table (`display_statjob` in `src/cmds/qstat.c`), also used by
//! `qstat -x` (the caller includes finished jobs) and `qstat -t`.
//!
//! ```text
//! Job id            Name             User              Time Use S Queue
//! ----------------  ---------------- ----------------  -------- - -----
//! 1234.pbs01        run_pi.pbs       alice             00:00:05 R workq
//! ```
//!
//! Row format `%-17s %-16s %-16s  %8s %1s %-16s` (`-w`: `%-30s %-15s %-15s  %8s %1s %-15s`).
//! The id is cut after the first label of the server name; a field longer than its column keeps
//! width−1 characters and a `*` (the name already at a length equal to its column); `@host` is
//! dropped from the owner and the queue; Time Use is `resources_used.cput`, `0` when unset.
//! A job without one of these attributes shows an empty field (PBS's printf would show
//! `(null)`; a PBS server always sends them).

use super::{before_at, left, right, show_nonprint, truncate_marked, TRUNCATION_MARK};
use crate::status::StatusObject;

/// How the default table is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TableOptions {
    /// `-w`: the wide table.
    pub wide: bool,
    /// The server's `max_job_sequence_id` is above 9999999: a 22-wide id column
    /// (`ALT_DISPLAY_INCR_WIDTH`); ignored with `wide`.
    pub long_ids: bool,
}

struct Widths {
    id: usize,
    name: usize,
    owner: usize,
    queue: usize,
}

impl TableOptions {
    fn widths(self) -> Widths {
        if self.wide {
            Widths {
                id: 30,
                name: 15,
                owner: 15,
                queue: 15,
            }
        } else {
            Widths {
                id: if self.long_ids { 22 } else { 17 },
                name: 16,
                owner: 16,
                queue: 16,
            }
        }
    }
}

/// The header PBS prints before the first rows from a server: the server's `comment` on its
/// own line when it has one, then the two header lines.
pub fn header(server: &StatusObject, opts: TableOptions) -> String {
    let mut out = String::new();
    if let Some(comment) = server.get("comment") {
        out.push_str(&show_nonprint(comment));
        out.push('\n');
    }
    out.push_str(if opts.wide {
        "Job id                         Name            User             Time Use S Queue\n\
         -----------------------------  --------------- ---------------  -------- - ---------------\n"
    } else if opts.long_ids {
        "Job id                 Name             User              Time Use S Queue\n\
         ---------------------  ---------------- ----------------  -------- - -----\n"
    } else {
        "Job id            Name             User              Time Use S Queue\n\
         ----------------  ---------------- ----------------  -------- - -----\n"
    });
    out
}

/// The table for `jobs` from one server. `server` is the server's status when this is the first
/// answer from that server (the header is printed then), `None` otherwise. No jobs, no output:
/// not even the header.
pub fn render(jobs: &[StatusObject], server: Option<&StatusObject>, opts: TableOptions) -> String {
    if jobs.is_empty() {
        return String::new();
    }
    let mut out = server.map(|s| header(s, opts)).unwrap_or_default();
    for job in jobs {
        out.push_str(&row(job, opts));
    }
    out
}

/// One row of the table, with its newline.
///
/// ```
/// use hpcbox_pbs::format::qstat::{row, TableOptions};
/// use hpcbox_pbs::status::StatusObject;
/// let job = StatusObject::new("3485900.epic.example.org")
///     .with("Job_Name", "test.sh")
///     .with("Job_Owner", "bioflow@epicuser1")
///     .with_resource("resources_used", "cput", "00:00:05")
///     .with("job_state", "F")
///     .with("queue", "debugq");
/// assert_eq!(
///     row(&job, TableOptions::default()),
///     "3485900.epic      test.sh          bioflow           00:00:05 F debugq          \n"
/// );
/// ```
pub fn row(job: &StatusObject, opts: TableOptions) -> String {
    let w = opts.widths();
    let id = short_job_id(&job.name);
    let name = last(job, "Job_Name", None).map_or_else(String::new, |n| cut_name(n, w.name));
    let owner = last(job, "Job_Owner", None).unwrap_or("");
    let cput = last(job, "resources_used", Some("cput")).unwrap_or("0");
    let state = last(job, "job_state", None).unwrap_or("");
    let queue = last(job, "queue", None).unwrap_or("");

    let mut out = String::new();
    left(&mut out, &truncate_marked(id, w.id), w.id, None);
    out.push(' ');
    left(&mut out, &name, w.name, None);
    out.push(' ');
    left(
        &mut out,
        &truncate_marked(before_at(owner), w.owner),
        w.owner,
        None,
    );
    out.push_str("  ");
    right(&mut out, &truncate_marked(cput, 8), 8, None);
    out.push(' ');
    right(&mut out, &truncate_marked(state, 1), 1, None);
    out.push(' ');
    left(
        &mut out,
        &truncate_marked(before_at(queue), w.queue),
        w.queue,
        None,
    );
    out.push('\n');
    out
}

/// The job id up to the end of the first label of its server name:
/// `1234.pbs01.example.com` → `1234.pbs01`.
///
/// ```
/// use hpcbox_pbs::format::qstat::short_job_id;
/// assert_eq!(short_job_id("1234.pbs01.example.com"), "1234.pbs01");
/// assert_eq!(short_job_id("1234[].srv"), "1234[].srv");
/// ```
pub fn short_job_id(id: &str) -> &str {
    match id.match_indices('.').nth(1) {
        Some((second_dot, _)) => &id[..second_dot],
        None => id,
    }
}

/// The job name cut as `display_statjob` cuts it: at a length equal to the column or more.
fn cut_name(name: &str, width: usize) -> String {
    if name.chars().count() >= width {
        let mut cut: String = name.chars().take(width.saturating_sub(1)).collect();
        cut.push(TRUNCATION_MARK);
        cut
    } else {
        name.to_string()
    }
}

/// The last value of `name[.resource]`: qstat keeps the last one it meets.
pub(crate) fn last<'a>(
    obj: &'a StatusObject,
    name: &str,
    resource: Option<&str>,
) -> Option<&'a str> {
    obj.attrs
        .iter()
        .rev()
        .find(|a| a.name == name && a.resource.as_deref() == resource)
        .map(|a| a.value.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn job(id: &str, name: &str, owner: &str, state: &str, queue: &str) -> StatusObject {
        StatusObject::new(id)
            .with("Job_Name", name)
            .with("Job_Owner", owner)
            .with("job_state", state)
            .with("queue", queue)
    }

    #[test]
    fn empty_list_prints_nothing() {
        let server = StatusObject::new("srv").with("comment", "hello");
        assert_eq!(render(&[], Some(&server), TableOptions::default()), "");
    }

    #[test]
    fn server_comment_precedes_the_header() {
        let server = StatusObject::new("srv").with("comment", "maintenance at 5");
        let out = render(
            &[job("1.srv", "a", "u@h", "Q", "workq")],
            Some(&server),
            TableOptions::default(),
        );
        assert!(out.starts_with("maintenance at 5\nJob id  "));
    }

    #[test]
    fn cut_fields() {
        let j = job(
            "12345678901234.server.example.com",
            "exactly16chars__",
            "averyveryverylonguser@host",
            "RR",
            "a_very_long_queue_name@srv",
        )
        .with_resource("resources_used", "cput", "1234:56:78");
        assert_eq!(
            row(&j, TableOptions::default()),
            "12345678901234.s* exactly16chars_* averyveryverylo*  1234:56* * a_very_long_que*\n"
        );
    }

    #[test]
    fn ids_without_two_dots_stay_whole() {
        assert_eq!(short_job_id("1234"), "1234");
        assert_eq!(short_job_id("1234.srv"), "1234.srv");
        assert_eq!(short_job_id("1234..x"), "1234.");
    }

    proptest! {
        #[test]
        fn rows_of_short_fields_have_fixed_width(
            seq in 0u32..99_999,
            server in "[a-z]{1,6}",
            name in "[A-Za-z0-9_.]{0,15}",
            owner in "[a-z]{1,16}",
            cput in "[0-9:]{0,8}",
            state in "[BEFHMQRSTUWX]",
            queue in "[a-z]{1,16}",
            wide in any::<bool>(),
            long_ids in any::<bool>(),
        ) {
            let mut j = job(&format!("{seq}.{server}"), &name, &owner, &state, &queue);
            j.attrs.push(crate::status::Attribute::with_resource("resources_used", "cput", cput));
            let opts = TableOptions { wide, long_ids };
            let r = row(&j, opts);
            let expected = if wide { 30 + 1 + 15 + 1 + 15 + 2 + 8 + 1 + 1 + 1 + 15 }
                else if long_ids { 22 + 1 + 16 + 1 + 16 + 2 + 8 + 1 + 1 + 1 + 16 }
                else { 17 + 1 + 16 + 1 + 16 + 2 + 8 + 1 + 1 + 1 + 16 };
            prop_assert_eq!(r.chars().count(), expected + 1);
            prop_assert!(r.ends_with('\n'));
        }

        #[test]
        fn rows_never_panic(id in ".*", name in ".*", owner in ".*", queue in ".*", state in ".*") {
            let j = job(&id, &name, &owner, &state, &queue);
            let _ = row(&j, TableOptions::default());
            let _ = row(&j, TableOptions { wide: true, long_ids: false });
        }
    }
}

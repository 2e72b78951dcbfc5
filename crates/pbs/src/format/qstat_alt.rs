//! The alternate job table of `qstat -a`, `-i`, `-r`, `-H`, `-u`, `-n`, `-s`, `-G`, `-M`, `-1`
//! (`altdsp_statjob` in `src/cmds/qstat.c`).
//!
//! ```text
//!
//! srv01:
//!                                                             Req'd  Req'd   Elap
//! Job ID          Username Queue    Jobname    SessID NDS TSK Memory Time  S Time
//! --------------- -------- -------- ---------- ------ --- --- ------ ----- - -----
//! 1234.srv01      alice    workq    run_pi.pbs  12345   1   4    4gb 01:00 R 00:05
//! ```
//!
//! Missing values show as ` -- `; a cut field keeps width−1 characters and a `*`. Req'd Time is
//! `Resource_List.walltime` (or `cput` when requested; then Elap Time is `resources_used.cput`),
//! both cut to their first five characters (`HH:MM`). `-n` adds the execution hosts on following
//! lines indented by three spaces, `-s` the job comment; with `-1` they follow on the row's line.
//! Estimated start times (`-T`) need the current time and are not rendered here.

use super::{before_at, left, right, show_nonprint, truncate_marked};
use crate::status::StatusObject;
use std::net::Ipv4Addr;

/// How sizes show in the Memory column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SizeUnit {
    /// The unit of the request, made larger until the number has at most four digits.
    #[default]
    Natural,
    /// `-M`: megawords.
    Megawords,
    /// `-G`: gigabytes.
    Gigabytes,
}

/// Which alternate table to print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AltOptions {
    /// `-w`: the wide table.
    pub wide: bool,
    /// The server's `max_job_sequence_id` is above 9999999: a 20-wide id column; ignored with
    /// `wide`.
    pub long_ids: bool,
    /// `-n`: the execution hosts after each row.
    pub nodes: bool,
    /// `-s`: the job comment after each row.
    pub comments: bool,
    /// `-1`: `-n` and `-s` output on the row's own line.
    pub one_line: bool,
    /// `-G` or `-M`.
    pub sizes: SizeUnit,
}

const BLANK: &str = " -- ";

/// The header PBS prints before the first rows from `server`: a blank line,
/// `<server>: <comment>`, then three header lines.
pub fn header(server: &StatusObject, opts: AltOptions) -> String {
    let mut out = format!("\n{}: ", server.name);
    if let Some(comment) = server.get("comment") {
        out.push_str(&show_nonprint(comment));
    }
    out.push('\n');
    if opts.wide {
        out.push_str(&" ".repeat(99));
        out.push_str("Req'd  Req'd   Elap\n");
        for (label, width) in [
            ("Job ID", 30),
            ("Username", 15),
            ("Queue", 15),
            ("Jobname", 15),
            ("SessID", 8),
            ("NDS", 4),
            ("TSK", 5),
        ] {
            left(&mut out, label, width, Some(width));
            out.push(' ');
        }
        out.push_str("Memory Time  S Time\n");
        for width in [30, 15, 15, 15, 8, 4, 5] {
            out.push_str(&"-".repeat(width));
            out.push(' ');
        }
        out.push_str("------ ----- - -----\n");
    } else if opts.long_ids {
        out.push_str(&" ".repeat(65));
        out.push_str("Req'd  Req'd   Elap\n");
        out.push_str("Job ID               Username Queue    Jobname    SessID NDS TSK Memory Time  S Time\n");
        out.push_str("-------------------- -------- -------- ---------- ------ --- --- ------ ----- - -----\n");
    } else {
        out.push_str(&" ".repeat(60));
        out.push_str("Req'd  Req'd   Elap\n");
        out.push_str(
            "Job ID          Username Queue    Jobname    SessID NDS TSK Memory Time  S Time\n",
        );
        out.push_str(
            "--------------- -------- -------- ---------- ------ --- --- ------ ----- - -----\n",
        );
    }
    out
}

/// The table for `jobs` from one server; `server` is given for the first answer from that
/// server (the header is printed then). No jobs, no output.
pub fn render(jobs: &[StatusObject], server: Option<&StatusObject>, opts: AltOptions) -> String {
    if jobs.is_empty() {
        return String::new();
    }
    let mut out = server.map(|s| header(s, opts)).unwrap_or_default();
    for job in jobs {
        out.push_str(&row(job, opts));
    }
    out
}

/// The values of one row as `altdsp_statjob` gathers them (the last occurrence wins).
struct Row {
    name: String,
    user: String,
    queue: String,
    jobname: String,
    session: String,
    nodect: String,
    tasks: String,
    memory: String,
    req_time: String,
    state: String,
    elapsed: String,
    exec_host: String,
    comment: String,
}

fn gather(job: &StatusObject, opts: AltOptions) -> Row {
    let wide = opts.wide;
    let cut = |v: &str, narrow: usize, wide_len: usize| {
        truncate_marked(v, if wide { wide_len } else { narrow }).into_owned()
    };
    let blank = || BLANK.to_string();
    let (mut user, mut queue, mut jobname, mut session) = (blank(), blank(), blank(), blank());
    let (mut nodect, mut tasks, mut memory) = (blank(), blank(), blank());
    let (mut walltime, mut cput, mut used_wall, mut used_cput) =
        (blank(), blank(), blank(), blank());
    let (mut state, mut exec_host, mut comment) = (blank(), blank(), blank());
    let mut use_cput = false;
    for a in &job.attrs {
        let v = a.value.as_str();
        match (a.name.as_str(), a.resource.as_deref()) {
            ("Job_Name", None) => jobname = cut(v, 10, 15),
            ("Job_Owner", None) => user = cut(before_at(v), 8, 15),
            ("job_state", None) => state = v.to_string(),
            ("queue", None) => queue = cut(v, 8, 15),
            ("session_id", None) => session = cut(v, 6, 8),
            ("Resource_List", Some("nodect")) => nodect = cut(v, 3, 4),
            ("Resource_List", Some("ncpus" | "mppe")) if v != "0" => tasks = cut(v, 3, 5),
            ("Resource_List", Some("mem")) => {
                memory = convert_size(v, opts.sizes).chars().take(5).collect();
            }
            ("Resource_List", Some("walltime")) => walltime = v.to_string(),
            ("Resource_List", Some("cput")) => {
                cput = v.to_string();
                use_cput = true;
            }
            ("exec_host", None) => exec_host = v.to_string(),
            ("resources_used", Some("walltime")) => used_wall = v.to_string(),
            ("resources_used", Some("cput")) => used_cput = v.to_string(),
            ("comment", None) => comment = cut_comment(v, wide),
            _ => {}
        }
    }
    let id_width = if wide {
        30
    } else if opts.long_ids {
        20
    } else {
        15
    };
    Row {
        name: truncate_marked(&job.name, id_width).into_owned(),
        user,
        queue,
        jobname,
        session,
        nodect,
        tasks,
        memory,
        req_time: if use_cput { cput } else { walltime },
        state,
        elapsed: if use_cput { used_cput } else { used_wall },
        exec_host,
        comment,
    }
}

/// Comments longer than 74 (wide: 114) characters are cut to 70 (110) and get `...`.
fn cut_comment(comment: &str, wide: bool) -> String {
    let (limit, keep) = if wide { (114, 110) } else { (74, 70) };
    if comment.chars().count() <= limit {
        return comment.to_string();
    }
    let mut out: String = comment.chars().take(keep).collect();
    out.push_str("...");
    out
}

/// One row with its `-n` and `-s` lines.
pub fn row(job: &StatusObject, opts: AltOptions) -> String {
    let r = gather(job, opts);
    let mut out = String::new();
    if opts.wide {
        left(&mut out, &r.name, 30, Some(30));
        out.push(' ');
        left(&mut out, &r.user, 15, Some(15));
        out.push(' ');
        left(&mut out, &r.queue, 15, Some(15));
        out.push(' ');
        left(&mut out, &r.jobname, 15, Some(15));
        out.push(' ');
        right(&mut out, &r.session, 8, Some(8));
        out.push(' ');
        right(&mut out, &r.nodect, 4, Some(4));
        out.push(' ');
        right(&mut out, &r.tasks, 5, Some(5));
        out.push(' ');
        right(&mut out, &r.memory, 6, Some(6));
        out.push(' ');
        right(&mut out, &r.req_time, 5, Some(5));
        out.push(' ');
        right(&mut out, &r.state, 1, None);
    } else {
        let id_width = if opts.long_ids { 20 } else { 15 };
        left(&mut out, &r.name, id_width, Some(id_width));
        out.push(' ');
        left(&mut out, &r.user, 8, Some(8));
        out.push(' ');
        left(&mut out, &r.queue, 8, Some(8));
        out.push(' ');
        left(&mut out, &r.jobname, 10, Some(10));
        out.push(' ');
        right(&mut out, &r.session, 6, Some(6));
        out.push(' ');
        right(&mut out, &r.nodect, 3, Some(3));
        out.push(' ');
        right(&mut out, &r.tasks, 3, Some(3));
        out.push(' ');
        right(&mut out, &r.memory, 6, Some(6));
        out.push(' ');
        right(&mut out, &r.req_time, 5, Some(5));
        out.push(' ');
        right(&mut out, &r.state, 1, Some(1));
    }
    out.push(' ');
    right(&mut out, &r.elapsed, 5, Some(5));
    out.push(if opts.one_line { ' ' } else { '\n' });
    if opts.nodes {
        out.push_str(&node_lines(&r.exec_host, opts.one_line));
    }
    if opts.comments && !r.comment.is_empty() {
        out.push_str("   ");
        out.push_str(&show_nonprint(&r.comment));
        out.push('\n');
    }
    out
}

/// The `-n` lines for an `exec_host` value (`prt_nodes`): host names without their domain
/// (IPv4 addresses kept whole), chunks joined by `+`, lines indented by three spaces and broken
/// before a chunk that would reach column 77 (the `+` stays at the end of the broken line).
/// With `one_line` the lines are printed without indent or breaks between them.
///
/// ```
/// use hpcbox_pbs::format::qstat_alt::node_lines;
/// assert_eq!(node_lines("n1.example.com/0*4+n2.example.com/0", false), "   n1/0*4+n2/0\n");
/// ```
pub fn node_lines(exec_host: &str, one_line: bool) -> String {
    let mut out = String::new();
    if exec_host.is_empty() {
        return out;
    }
    let mut line = String::new();
    let mut used = 0usize;
    for chunk in exec_host.split('+').filter(|c| !c.is_empty()) {
        let (host, rest) = match chunk.find('/') {
            Some(i) => chunk.split_at(i),
            None => (chunk, ""),
        };
        let short = if host.parse::<Ipv4Addr>().is_ok() {
            host
        } else {
            host.split('.').find(|p| !p.is_empty()).unwrap_or("")
        };
        let len = short.chars().count() + rest.chars().count();
        if used + len >= 77 {
            flush(&mut out, &line, one_line, false);
            line.clear();
            used = 0;
        }
        line.push_str(short);
        line.push_str(rest);
        line.push('+');
        used += len + 1;
    }
    if used > 0 {
        line.pop();
        flush(&mut out, &line, one_line, true);
    } else if one_line {
        out.push('\n');
    }
    out
}

fn flush(out: &mut String, line: &str, one_line: bool, last: bool) {
    if !one_line {
        out.push_str("   ");
    }
    out.push_str(&show_nonprint(line));
    if !one_line || last {
        out.push('\n');
    }
}

/// The size text of the Memory column (`cnv_size`): the number and unit of `value`
/// (`4gb`, `512mb`, `100kw`), converted for `-G`/`-M`, rounded up, and moved to a larger unit
/// while the number is above 9999.
///
/// ```
/// use hpcbox_pbs::format::qstat_alt::{convert_size, SizeUnit};
/// assert_eq!(convert_size("16gb", SizeUnit::Natural), "16gb");
/// assert_eq!(convert_size("655360kb", SizeUnit::Natural), "640mb");
/// assert_eq!(convert_size("1500mb", SizeUnit::Gigabytes), "2gb");
/// ```
pub fn convert_size(value: &str, unit: SizeUnit) -> String {
    const LETTERS: [char; 7] = [' ', 'k', 'm', 'g', 't', 'p', '?'];
    let (number, rest) = strtol(value);
    // C reads the long into an unsigned long.
    let mut n = number as u64;
    let mut rest_chars = rest.chars();
    let first = rest_chars.next();
    let second = rest_chars.next();
    let magnitude: u32 = match first {
        Some('k') => 1,
        Some('m') => 2,
        Some('g') => 3,
        Some('t') => 4,
        _ => 0,
    };
    let mut suffix = 'b';
    if first == Some('w') || (first.is_some() && second == Some('w')) {
        n = n.wrapping_shl(3);
        suffix = 'w';
    }
    let mut out_magnitude = match unit {
        SizeUnit::Natural => magnitude,
        SizeUnit::Megawords => {
            suffix = 'w';
            2
        }
        SizeUnit::Gigabytes => {
            suffix = 'b';
            3
        }
    };
    if out_magnitude < magnitude {
        n = n.wrapping_shl(10 * (magnitude - out_magnitude));
    } else if out_magnitude > magnitude {
        let shift = 10 * (out_magnitude - magnitude);
        n = n.wrapping_add((1u64 << shift) - 1) >> shift;
    }
    if suffix == 'w' {
        n = n.wrapping_add(7) >> 3;
    }
    while n > 9999 {
        n = n.wrapping_add(1023) >> 10;
        out_magnitude += 1;
    }
    let letter = LETTERS[usize::try_from(out_magnitude).unwrap_or(6).min(6)];
    format!("{n}{letter}{suffix}")
}

/// C's `strtol(value, &end, 10)`: the number and the text after it (all of `value` when there
/// are no digits).
fn strtol(value: &str) -> (i64, &str) {
    let trimmed = value.trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
    let sign_len = usize::from(trimmed.starts_with(['+', '-']));
    let digits = trimmed[sign_len..]
        .bytes()
        .take_while(u8::is_ascii_digit)
        .count();
    if digits == 0 {
        return (0, value);
    }
    let end = sign_len + digits;
    (super::ctime::atol(&trimmed[..end]), &trimmed[end..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sizes() {
        assert_eq!(convert_size("640mb", SizeUnit::Natural), "640mb");
        assert_eq!(convert_size("16777216kb", SizeUnit::Natural), "16gb");
        assert_eq!(convert_size("10000kb", SizeUnit::Natural), "10mb");
        assert_eq!(convert_size("512", SizeUnit::Natural), "512 b");
        assert_eq!(convert_size("1gb", SizeUnit::Megawords), "128mw");
        assert_eq!(convert_size("8kw", SizeUnit::Natural), "8kw");
        assert_eq!(convert_size("junk", SizeUnit::Natural), "0 b");
        assert_eq!(convert_size("2tb", SizeUnit::Gigabytes), "2048gb");
        // strtol saturates; the magnitude letter runs past 'p' to '?'.
        assert_eq!(
            convert_size("99999999999999999999pb", SizeUnit::Natural),
            "8192pb"
        );
    }

    #[test]
    fn node_lines_break_before_column_77() {
        let hosts: Vec<String> = (0..12).map(|i| format!("node{i:02}.x/0*8")).collect();
        let out = node_lines(&hosts.join("+"), false);
        for line in out.lines() {
            assert!(line.len() <= 3 + 77, "{line}");
            assert!(line.starts_with("   node"));
        }
        assert_eq!(
            out.replace("\n   ", "").trim(),
            hosts
                .iter()
                .map(|h| h.replace(".x", ""))
                .collect::<Vec<_>>()
                .join("+")
        );
        assert_eq!(node_lines("", false), "");
        assert_eq!(node_lines(" -- ", false), "    -- \n");
        assert_eq!(node_lines("10.0.0.5/0+a.b/1", true), "10.0.0.5/0+a/1\n");
    }

    #[test]
    fn comments_are_cut() {
        let long = "x".repeat(80);
        assert_eq!(cut_comment(&long, false), format!("{}...", "x".repeat(70)));
        assert_eq!(cut_comment(&long, true), long);
        assert_eq!(cut_comment(&"y".repeat(74), false), "y".repeat(74));
        assert_eq!(
            cut_comment(&"y".repeat(115), true),
            format!("{}...", "y".repeat(110))
        );
    }

    proptest! {
        #[test]
        fn rows_of_short_fields_have_fixed_width(
            id in "[0-9]{1,6}\\.[a-z]{1,5}",
            user in "[a-z]{1,8}",
            queue in "[a-z]{1,8}",
            name in "[a-z]{1,10}",
            state in "[QRHF]",
            wide in any::<bool>(),
            long_ids in any::<bool>(),
        ) {
            let job = StatusObject::new(id)
                .with("Job_Name", name)
                .with("Job_Owner", user)
                .with("queue", queue)
                .with("job_state", state)
                .with_resource("Resource_List", "walltime", "01:00:00");
            let opts = AltOptions { wide, long_ids, ..AltOptions::default() };
            let r = row(&job, opts);
            let expected = if wide { 30 + 15 + 15 + 15 + 8 + 4 + 5 + 6 + 5 + 1 + 5 + 10 }
                else if long_ids { 20 + 8 + 8 + 10 + 6 + 3 + 3 + 6 + 5 + 1 + 5 + 10 }
                else { 15 + 8 + 8 + 10 + 6 + 3 + 3 + 6 + 5 + 1 + 5 + 10 };
            prop_assert_eq!(r.chars().count(), expected + 1, "{:?}", r);
        }

        #[test]
        fn never_panics(value in ".*", host in ".*") {
            let _ = convert_size(&value, SizeUnit::Natural);
            let _ = convert_size(&value, SizeUnit::Gigabytes);
            let _ = convert_size(&value, SizeUnit::Megawords);
            let _ = node_lines(&host, false);
            let _ = node_lines(&host, true);
            let job = StatusObject::new(value.clone())
                .with("comment", value.clone())
                .with("exec_host", host.clone())
                .with_resource("Resource_List", "mem", value.clone());
            let _ = row(&job, AltOptions { nodes: true, comments: true, ..AltOptions::default() });
        }
    }
}

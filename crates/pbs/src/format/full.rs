//! The full display: `qstat -f` (jobs), `qstat -Qf` (queues), `qstat -Bf` (servers), and
//! [`parse`], which reads that text back into status objects.
//!
//! Each object prints as a title line (`Job Id: <id>`, `Queue: <name>`, `Server: <name>`), one
//! line `    name[.resc] = value` per attribute in the order given, and a blank line. Without
//! `-w` a long value is folded as `prt_attr` in `src/cmds/qstat.c` does (see [`write_attr`]).

use super::ctime::time_value;
use super::{push_nonprint, show_nonprint};
use crate::status::{Attribute, StatusObject};
use crate::ParseError;
use jiff::tz::TimeZone;

/// The column PBS folds at (`CHAR_LINE_LIMIT`).
pub const LINE_LIMIT: usize = 78;

/// Job attributes `qstat -f` prints in ctime form (`display_statjob`).
pub const JOB_TIME_ATTRIBUTES: &[&str] = &[
    "ctime",
    "etime",
    "stime",
    "obittime",
    "mtime",
    "qtime",
    "reserve_start",
    "reserve_end",
    "credential_validity",
    "Execution_Time",
];

/// How `qstat -f` prints attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FullOptions {
    /// `-w`: one line per attribute, no folding; newlines and form feeds shown as `\n`, `\f`.
    pub wide: bool,
}

/// Writes one attribute line `    name[.resc] = value` with its newline, folded unless
/// `one_line`, exactly as `prt_attr` prints it.
///
/// Folding: the column starts at 7 + the length of `name[.resc]`; the value is split at commas
/// (empty pieces dropped, as `strtok` does) and a piece that still fits before column 78 is
/// printed whole (the commas are printed but not counted). A piece that does not fit starts a
/// new line `\n\t` (column 9) unless it is the first, and is then printed one character at a
/// time, breaking with `\n\t` (column 8) whenever the column passes 78.
///
/// ```
/// use hpcbox_pbs::format::full::write_attr;
/// let mut out = String::new();
/// write_attr(&mut out, "Job_Name", None, "hello.sh", false);
/// assert_eq!(out, "    Job_Name = hello.sh\n");
/// ```
pub fn write_attr(
    out: &mut String,
    name: &str,
    resource: Option<&str>,
    value: &str,
    one_line: bool,
) {
    out.push_str("    ");
    out.push_str(name);
    if let Some(resc) = resource {
        out.push('.');
        out.push_str(resc);
    }
    out.push_str(" = ");
    if one_line {
        let fed = convert_feed_chars(value);
        // PBS shows control characters here only for attributes without a resource.
        match resource {
            Some(_) => out.push_str(&fed),
            None => out.push_str(&show_nonprint(&fed)),
        }
    } else {
        let name_len =
            name.chars().count() + resource.map_or(0, |r| r.chars().count().saturating_add(1));
        fold_value(out, value, name_len.saturating_add(7));
    }
    out.push('\n');
}

fn fold_value(out: &mut String, value: &str, start: usize) {
    let mut column = start;
    let mut first = true;
    let mut pieces = value.split(',').filter(|p| !p.is_empty()).peekable();
    while let Some(piece) = pieces.next() {
        let len = piece.chars().count();
        if len.saturating_add(column) < LINE_LIMIT {
            out.push_str(&show_nonprint(piece));
            column += len;
        } else {
            if !first {
                out.push_str("\n\t");
                column = 9;
            }
            for ch in piece.chars() {
                push_nonprint(out, ch);
                column += 1;
                if column > LINE_LIMIT {
                    column = 8;
                    out.push_str("\n\t");
                }
            }
        }
        if pieces.peek().is_some() {
            first = false;
            out.push(',');
        }
    }
}

/// Newlines and form feeds as the two characters `\n` and `\f` (`convert_feed_chars`).
fn convert_feed_chars(value: &str) -> String {
    value.replace('\n', "\\n").replace('\x0c', "\\f")
}

/// The value `qstat -f` shows for a job attribute: ctime text for time attributes (and
/// `estimated.start_time`, `UNKNOWN` when 0), `Submit_arguments` decoded (see
/// [`decode_submit_arguments`]), `executable` in its JSDL tag, the value itself otherwise.
pub fn job_display_value(attr: &Attribute, tz: &TimeZone) -> String {
    let is_start_estimate =
        attr.name == "estimated" && attr.resource.as_deref() == Some("start_time");
    if is_start_estimate && super::ctime::atol(&attr.value) == 0 {
        return "UNKNOWN".to_string();
    }
    if is_start_estimate || JOB_TIME_ATTRIBUTES.contains(&attr.name.as_str()) {
        return time_value(&attr.value, tz);
    }
    if attr.name == "Submit_arguments" {
        return decode_submit_arguments(&attr.value);
    }
    if attr.name == "executable" {
        return format!(
            "<jsdl-hpcpa:Executable>{}</jsdl-hpcpa:Executable>",
            attr.value
        );
    }
    attr.value.clone()
}

const ARGUMENT_TAG: &str = "jsdl-hpcpa:Argument";

/// `Submit_arguments` as a PBS server stores it (`encode_xml_arg_list`): each argument in
/// `<jsdl-hpcpa:Argument>…</jsdl-hpcpa:Argument>` with `<`, `>`, `"`, `'` and `&` escaped.
///
/// ```
/// use hpcbox_pbs::format::full::{decode_submit_arguments, encode_submit_arguments};
/// let stored = encode_submit_arguments(&["-N", "a<b", "run.pbs"]);
/// assert_eq!(
///     stored,
///     "<jsdl-hpcpa:Argument>-N</jsdl-hpcpa:Argument><jsdl-hpcpa:Argument>a&lt;b</jsdl-hpcpa:Argument>\
///      <jsdl-hpcpa:Argument>run.pbs</jsdl-hpcpa:Argument>"
/// );
/// assert_eq!(decode_submit_arguments(&stored), "-N a<b run.pbs");
/// ```
pub fn encode_submit_arguments(args: &[&str]) -> String {
    let mut out = String::new();
    for arg in args {
        out.push('<');
        out.push_str(ARGUMENT_TAG);
        out.push('>');
        for ch in arg.chars() {
            match ch {
                '<' => out.push_str("&lt;"),
                '>' => out.push_str("&gt;"),
                '"' => out.push_str("&quot;"),
                '\'' => out.push_str("&apos;"),
                '&' => out.push_str("&amp;"),
                c => out.push(c),
            }
        }
        out.push_str("</");
        out.push_str(ARGUMENT_TAG);
        out.push('>');
    }
    out
}

/// What `qstat -f` shows for a stored `Submit_arguments` (`decode_xml_arg_list_str`): the text
/// between the tags, entities decoded, arguments joined by a blank. Text outside any tag is
/// kept (a value stored without tags shows as is, unless it holds `<` or `>`); an unknown
/// entity is kept as written.
pub fn decode_submit_arguments(value: &str) -> String {
    value
        .split(['<', '>'])
        .filter(|t| !t.is_empty() && !t.contains(ARGUMENT_TAG))
        .map(decode_entities)
        .collect::<Vec<_>>()
        .join(" ")
}

fn decode_entities(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let tail = &rest[amp..];
        let decoded = [
            ("&lt;", '<'),
            ("&gt;", '>'),
            ("&amp;", '&'),
            ("&quot;", '"'),
            ("&apos;", '\''),
        ]
        .iter()
        .find(|(entity, _)| tail.starts_with(entity));
        match decoded {
            Some((entity, ch)) => {
                out.push(*ch);
                rest = &tail[entity.len()..];
            }
            None => {
                out.push('&');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// `qstat -f` for `jobs`: `Job Id: <id>`, the attributes, a blank line, per job.
/// Time attributes are shown in `tz` (see [`job_display_value`]).
pub fn render_jobs(jobs: &[StatusObject], tz: &TimeZone, opts: FullOptions) -> String {
    let mut out = String::new();
    for job in jobs {
        out.push_str("Job Id: ");
        out.push_str(&job.name);
        out.push('\n');
        for attr in &job.attrs {
            let value = job_display_value(attr, tz);
            write_attr(
                &mut out,
                &attr.name,
                attr.resource.as_deref(),
                &value,
                opts.wide,
            );
        }
        // display_statjob ends every job with its delimiter and a newline; with no attribute
        // at all both follow the title line.
        if job.attrs.is_empty() {
            out.push('\n');
        }
        out.push('\n');
    }
    out
}

/// `qstat -Qf` for `queues`: `Queue: <name>`, the attributes, a blank line, per queue.
pub fn render_queues(queues: &[StatusObject], opts: FullOptions) -> String {
    render_titled(queues, "Queue: ", opts, true)
}

/// `qstat -Bf` for `servers`: `Server: <name>`, the attributes, a blank line, per server.
pub fn render_servers(servers: &[StatusObject], opts: FullOptions) -> String {
    render_titled(servers, "Server: ", opts, false)
}

fn render_titled(
    objects: &[StatusObject],
    title: &str,
    opts: FullOptions,
    empty_gets_extra_line: bool,
) -> String {
    let mut out = String::new();
    for obj in objects {
        out.push_str(title);
        out.push_str(&obj.name);
        out.push('\n');
        for attr in &obj.attrs {
            write_attr(
                &mut out,
                &attr.name,
                attr.resource.as_deref(),
                &attr.value,
                opts.wide,
            );
        }
        if obj.attrs.is_empty() && empty_gets_extra_line {
            out.push('\n');
        }
        out.push('\n');
    }
    out
}

const TITLES: [&str; 3] = ["Job Id: ", "Queue: ", "Server: "];

/// Reads full-display text (`qstat -f`, `-Qf`, `-Bf`, folded or `-w`) back into objects.
///
/// Continuation lines (a tab first) are joined to the attribute above them without the line
/// break and tab PBS inserted, which gives back the value exactly unless it held empty
/// comma-separated fields (PBS drops them) or control characters (PBS shows them as `^X`).
/// Values are returned as displayed: time attributes stay in ctime form. Blank lines are
/// ignored; any other line must be a title or an attribute.
///
/// ```
/// use hpcbox_pbs::format::full::parse;
/// let text = "Job Id: 1.srv\n    Job_Name = a\n    Variable_List = A=1,\n\tB=2\n\n";
/// let jobs = parse(text).unwrap();
/// assert_eq!(jobs[0].name, "1.srv");
/// assert_eq!(jobs[0].get("Variable_List"), Some("A=1,B=2"));
/// ```
pub fn parse(text: &str) -> Result<Vec<StatusObject>, ParseError> {
    let mut objects: Vec<StatusObject> = Vec::new();
    for line in text.split('\n') {
        if let Some(rest) = line.strip_prefix('\t') {
            let attr = objects
                .last_mut()
                .and_then(|o| o.attrs.last_mut())
                .ok_or_else(|| ParseError::new(line, "continuation line before any attribute"))?;
            attr.value.push_str(rest);
        } else if let Some(name) = TITLES.iter().find_map(|t| line.strip_prefix(t)) {
            objects.push(StatusObject::new(name));
        } else if let Some(body) = line.strip_prefix("    ") {
            let obj = objects
                .last_mut()
                .ok_or_else(|| ParseError::new(line, "attribute line before any title line"))?;
            obj.attrs.push(parse_attr_line(body, line)?);
        } else if !line.is_empty() {
            return Err(ParseError::new(
                line,
                "not a title, attribute or continuation line",
            ));
        }
    }
    Ok(objects)
}

fn parse_attr_line(body: &str, line: &str) -> Result<Attribute, ParseError> {
    let (full_name, value) = body
        .split_once(" = ")
        .ok_or_else(|| ParseError::new(line, "attribute line without ` = `"))?;
    if full_name.is_empty() {
        return Err(ParseError::new(line, "attribute line without a name"));
    }
    Ok(match full_name.split_once('.') {
        Some((name, resc)) => Attribute::with_resource(name, resc, value),
        None => Attribute::new(full_name, value),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn attr(name: &str, value: &str) -> String {
        let mut out = String::new();
        write_attr(&mut out, name, None, value, false);
        out
    }

    #[test]
    fn short_values_stay_on_one_line() {
        assert_eq!(attr("queue", "workq"), "    queue = workq\n");
    }

    #[test]
    fn first_piece_too_long_is_cut_at_the_limit() {
        // Real qstat -fx (see tests/formats.rs): a comment of 72 characters.
        let value = "Job run at Sat Sep 14 at 08:37 on (project-root-dev8:ncpus=1) and finished";
        assert_eq!(
            attr("comment", value),
            "    comment = Job run at Sat Sep 14 at 08:37 on (project-root-dev8:ncpus=1) and\n\t finished\n"
        );
    }

    #[test]
    fn state_count_cut_matches_real_output() {
        // Real `qstat -Qf small` on Polaris (ALCF): the line ends after "Beg".
        let out = attr(
            "state_count",
            "Transit:0 Queued:27 Held:13 Waiting:0 Running:0 Exiting:0 Begun:0",
        );
        assert_eq!(
            out,
            "    state_count = Transit:0 Queued:27 Held:13 Waiting:0 Running:0 Exiting:0 Beg\n\tun:0\n"
        );
    }

    #[test]
    fn the_limit_is_exclusive_for_pieces_and_inclusive_for_characters() {
        // "    x = " puts the column at 8: a piece of 70 reaches 78, which is not < 78, so it is
        // printed by character, and only passing 78 breaks the line.
        let a = |n: usize| "a".repeat(n);
        assert_eq!(attr("x", &a(69)), format!("    x = {}\n", a(69)));
        assert_eq!(attr("x", &a(70)), format!("    x = {}\n", a(70)));
        // The 71st character reaches column 79: PBS breaks even when nothing follows.
        assert_eq!(attr("x", &a(71)), format!("    x = {}\n\t\n", a(71)));
        assert_eq!(attr("x", &a(72)), format!("    x = {}\n\ta\n", a(71)));
        // A second piece that does not fit starts on its own line at column 9.
        assert_eq!(
            attr("x", &format!("{},{}", a(60), a(20))),
            format!("    x = {},\n\t{}\n", a(60), a(20))
        );
    }

    #[test]
    fn empty_comma_fields_are_dropped() {
        assert_eq!(attr("v", ",a,,b,"), "    v = a,b\n");
        assert_eq!(attr("v", ""), "    v = \n");
    }

    #[test]
    fn one_line_converts_feeds() {
        let mut out = String::new();
        write_attr(&mut out, "comment", None, "a\nb\u{1}", true);
        write_attr(&mut out, "Resource_List", Some("x"), "a\u{1}", true);
        assert_eq!(out, "    comment = a\\nb^A\n    Resource_List.x = a\u{1}\n");
    }

    #[test]
    fn estimated_start_time_zero_is_unknown() {
        let a = Attribute::with_resource("estimated", "start_time", "0");
        assert_eq!(job_display_value(&a, &TimeZone::UTC), "UNKNOWN");
        let a = Attribute::with_resource("estimated", "exec_vnode", "0");
        assert_eq!(job_display_value(&a, &TimeZone::UTC), "0");
    }

    #[test]
    fn submit_arguments_round_trip() {
        let args = [
            "-v",
            "A='x y'",
            "-l",
            "select=1:ncpus=2",
            "a&b\"c>d",
            "run.pbs",
        ];
        let stored = encode_submit_arguments(&args);
        assert_eq!(decode_submit_arguments(&stored), args.join(" "));
        assert_eq!(decode_submit_arguments("hello.sh"), "hello.sh");
        assert_eq!(decode_submit_arguments("a &unknown; b"), "a &unknown; b");
        assert_eq!(decode_submit_arguments(""), "");
    }

    #[test]
    fn job_without_attributes() {
        let jobs = [StatusObject::new("1.srv")];
        assert_eq!(
            render_jobs(&jobs, &TimeZone::UTC, FullOptions::default()),
            "Job Id: 1.srv\n\n\n"
        );
        assert_eq!(
            render_servers(&[StatusObject::new("srv")], FullOptions::default()),
            "Server: srv\n\n"
        );
    }

    #[test]
    fn parse_errors_name_the_line() {
        let err = parse("    a = b\n").unwrap_err();
        assert_eq!(err.token, "    a = b");
        assert!(parse("Job Id: 1\n    novalue\n").is_err());
        assert!(parse("\tcontinued\n").is_err());
        assert!(parse("garbage\n").is_err());
        assert_eq!(parse("").unwrap(), Vec::new());
    }

    proptest! {
        #[test]
        fn folded_lines_stay_within_the_limit(
            name in "[A-Za-z_]{1,90}",
            value in "[ -~]{0,400}",
        ) {
            // PBS counts neither commas nor the title part it cannot fold, and lets the column
            // reach 79 before it breaks inside a piece; outside those cases no line is longer.
            let out = attr(&name, &value);
            let start = name.len() + 7;
            for (i, line) in out.trim_end_matches('\n').split('\n').enumerate() {
                let width = match line.strip_prefix('\t') {
                    Some(rest) => 8 + rest.chars().count(),
                    None => line.chars().count(),
                };
                let commas = line.matches(',').count();
                let limit = if i == 0 { (LINE_LIMIT + 1).max(start + 1) } else { LINE_LIMIT + 1 };
                prop_assert!(width - commas <= limit, "line {i}: {line:?}");
            }
        }

        #[test]
        fn folding_loses_nothing_but_empty_fields(
            value in "[ -~]{0,300}",
        ) {
            let out = attr("Variable_List", &value);
            let parsed = parse(&format!("Job Id: 1\n{out}\n")).unwrap();
            let pieces: Vec<&str> = value.split(',').filter(|p| !p.is_empty()).collect();
            let expected = pieces.join(",");
            prop_assert_eq!(parsed[0].get("Variable_List"), Some(expected.as_str()));
        }

        #[test]
        fn parse_never_panics(text in "(?s).{0,400}") {
            let _ = decode_submit_arguments(&text);
            let _ = parse(&text);
        }
    }
}

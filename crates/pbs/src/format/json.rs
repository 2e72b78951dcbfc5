//! `-F json` output of `qstat -f` (jobs), `qstat -Qf`, `qstat -Bf` and `pbsnodes -a`, as
//! OpenPBS master prints it with cJSON (`src/lib/Libjson/cJSON/pbs_cjson.c`, `cJSON_Print`):
//! tab indentation, `"key":<tab>value`, arrays on one line with `, ` between items, and a newline
//! after the closing brace.
//!
//! Values follow `pbs_json_insert_parsed`: a value that parses as JSON by cJSON's rules is
//! emitted as that JSON (numbers, `true`, arrays, objects, quoted strings), anything else as a
//! string. `Job_Name`, `project` and `Account_Name` are always strings. Objects may repeat a key
//! where PBS would (cJSON does not deduplicate), so [`Json`] keeps objects as ordered lists.
//!
//! Differences from PBS, all in inputs PBS cannot print at all: a `Variable_List` entry without
//! `=` (where `qstat` stops with `json error`) becomes an empty string, and a value holding a NUL
//! character is always a string.

use super::full::job_display_value;
use crate::status::StatusObject;
use jiff::tz::TimeZone;

/// A JSON value as cJSON holds it.
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number (cJSON keeps a double).
    Number(f64),
    /// A string.
    String(String),
    /// An array.
    Array(Vec<Json>),
    /// An object: keys in insertion order, repeats allowed.
    Object(Vec<(String, Json)>),
}

impl Json {
    /// The text `cJSON_Print` gives for this value (no trailing newline).
    ///
    /// ```
    /// use hpcbox_pbs::format::json::Json;
    /// let v = Json::Object(vec![
    ///     ("a".into(), Json::Number(1.0)),
    ///     ("b".into(), Json::Array(vec![Json::String("x".into()), Json::Null])),
    /// ]);
    /// assert_eq!(v.print(), "{\n\t\"a\":\t1,\n\t\"b\":\t[\"x\", null]\n}");
    /// ```
    pub fn print(&self) -> String {
        let mut out = String::new();
        print_value(&mut out, self, 0);
        out
    }
}

/// The value `pbs_json_insert_parsed` stores for `text`: the JSON it parses as, else a string.
///
/// ```
/// use hpcbox_pbs::format::json::{value_of, Json};
/// assert_eq!(value_of("42"), Json::Number(42.0));
/// assert_eq!(value_of("00:10:00"), Json::String("00:10:00".into()));
/// assert_eq!(value_of("True"), Json::String("True".into()));
/// ```
pub fn value_of(text: &str) -> Json {
    parse(text).unwrap_or_else(|| Json::String(text.to_string()))
}

/// Parses `text` as cJSON does with `require_null_terminated`: one value, blanks (any byte up to
/// space) around it, nothing else. cJSON is laxer than RFC 8259 about numbers (`01`, `1.`,
/// `-.5` parse, as C's `strtod` reads them) and nests at most 1000 levels.
pub fn parse(text: &str) -> Option<Json> {
    if text.contains('\0') {
        return None;
    }
    let mut p = Parser {
        bytes: text.as_bytes(),
        pos: 0,
        depth: 0,
    };
    if p.bytes.starts_with(b"\xEF\xBB\xBF") {
        p.pos = 3;
    }
    p.skip_blanks();
    let value = p.value()?;
    p.skip_blanks();
    (p.pos == p.bytes.len()).then_some(value)
}

const NESTING_LIMIT: usize = 1000;

struct Parser<'a> {
    bytes: &'a [u8],
    pos: usize,
    depth: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn skip_blanks(&mut self) {
        while self.peek().is_some_and(|b| b <= 32) {
            self.pos += 1;
        }
    }

    fn value(&mut self) -> Option<Json> {
        let rest = self.bytes.get(self.pos..)?;
        for (word, value) in [
            (&b"null"[..], Json::Null),
            (&b"false"[..], Json::Bool(false)),
            (&b"true"[..], Json::Bool(true)),
        ] {
            if rest.starts_with(word) {
                self.pos += word.len();
                return Some(value);
            }
        }
        match rest.first()? {
            b'"' => self.string().map(Json::String),
            b'-' | b'0'..=b'9' => self.number(),
            b'[' => self.nested(Self::array),
            b'{' => self.nested(Self::object),
            _ => None,
        }
    }

    fn nested(&mut self, f: fn(&mut Self) -> Option<Json>) -> Option<Json> {
        if self.depth >= NESTING_LIMIT {
            return None;
        }
        self.depth += 1;
        let v = f(self);
        self.depth -= 1;
        v
    }

    fn number(&mut self) -> Option<Json> {
        let rest = self.bytes.get(self.pos..)?;
        let run = rest
            .iter()
            .take_while(|b| matches!(b, b'0'..=b'9' | b'+' | b'-' | b'e' | b'E' | b'.'))
            .count();
        let len = strtod_prefix(rest.get(..run)?);
        if len == 0 {
            return None;
        }
        let text = std::str::from_utf8(rest.get(..len)?).ok()?;
        let n: f64 = text.parse().ok()?;
        self.pos += len;
        Some(Json::Number(n))
    }

    fn string(&mut self) -> Option<String> {
        // At the opening quote.
        self.pos += 1;
        let mut out: Vec<u8> = Vec::new();
        loop {
            let b = self.peek()?;
            self.pos += 1;
            match b {
                b'"' => return String::from_utf8(out).ok(),
                b'\\' => {
                    let e = self.peek()?;
                    self.pos += 1;
                    match e {
                        b'b' => out.push(8),
                        b'f' => out.push(12),
                        b'n' => out.push(b'\n'),
                        b'r' => out.push(b'\r'),
                        b't' => out.push(b'\t'),
                        b'"' | b'\\' | b'/' => out.push(e),
                        b'u' => {
                            let ch = self.utf16_escape()?;
                            let mut buf = [0u8; 4];
                            out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                        }
                        _ => return None,
                    }
                }
                _ => out.push(b),
            }
        }
    }

    /// After `\u`: four hex digits, and a second `\uXXXX` for a surrogate pair.
    fn utf16_escape(&mut self) -> Option<char> {
        let first = self.hex4()?;
        if (0xDC00..=0xDFFF).contains(&first) {
            return None;
        }
        if (0xD800..=0xDBFF).contains(&first) {
            if self.bytes.get(self.pos..self.pos + 2)? != b"\\u" {
                return None;
            }
            self.pos += 2;
            let second = self.hex4()?;
            if !(0xDC00..=0xDFFF).contains(&second) {
                return None;
            }
            let code = 0x10000 + (((first & 0x3FF) << 10) | (second & 0x3FF));
            return char::from_u32(code);
        }
        char::from_u32(first)
    }

    fn hex4(&mut self) -> Option<u32> {
        let digits = self.bytes.get(self.pos..self.pos + 4)?;
        let text = std::str::from_utf8(digits).ok()?;
        if !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        self.pos += 4;
        u32::from_str_radix(text, 16).ok()
    }

    fn array(&mut self) -> Option<Json> {
        self.pos += 1;
        self.skip_blanks();
        let mut items = Vec::new();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Some(Json::Array(items));
        }
        loop {
            self.skip_blanks();
            items.push(self.value()?);
            self.skip_blanks();
            match self.peek()? {
                b',' => self.pos += 1,
                b']' => {
                    self.pos += 1;
                    return Some(Json::Array(items));
                }
                _ => return None,
            }
        }
    }

    fn object(&mut self) -> Option<Json> {
        self.pos += 1;
        self.skip_blanks();
        let mut members = Vec::new();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Some(Json::Object(members));
        }
        loop {
            self.skip_blanks();
            if self.peek()? != b'"' {
                return None;
            }
            let key = self.string()?;
            self.skip_blanks();
            if self.peek()? != b':' {
                return None;
            }
            self.pos += 1;
            self.skip_blanks();
            let value = self.value()?;
            members.push((key, value));
            self.skip_blanks();
            match self.peek()? {
                b',' => self.pos += 1,
                b'}' => {
                    self.pos += 1;
                    return Some(Json::Object(members));
                }
                _ => return None,
            }
        }
    }
}

/// How many bytes of `run` C's `strtod` reads as a decimal number (0 when none): a sign, digits
/// with at most one `.` and at least one digit, then an exponent only if it has digits.
fn strtod_prefix(run: &[u8]) -> usize {
    let mut i = 0;
    if matches!(run.first(), Some(b'+' | b'-')) {
        i = 1;
    }
    let int_digits = run[i..].iter().take_while(|b| b.is_ascii_digit()).count();
    i += int_digits;
    let mut frac_digits = 0;
    if run.get(i) == Some(&b'.') {
        frac_digits = run[i + 1..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        if int_digits + frac_digits > 0 {
            i += 1 + frac_digits;
        }
    }
    if int_digits + frac_digits == 0 {
        return 0;
    }
    if matches!(run.get(i), Some(b'e' | b'E')) {
        let mut j = i + 1;
        if matches!(run.get(j), Some(b'+' | b'-')) {
            j += 1;
        }
        let exp_digits = run
            .get(j..)
            .map_or(0, |r| r.iter().take_while(|b| b.is_ascii_digit()).count());
        if exp_digits > 0 {
            i = j + exp_digits;
        }
    }
    i
}

fn print_value(out: &mut String, value: &Json, depth: usize) {
    match value {
        Json::Null => out.push_str("null"),
        Json::Bool(true) => out.push_str("true"),
        Json::Bool(false) => out.push_str("false"),
        Json::Number(n) => out.push_str(&print_number(*n)),
        Json::String(s) => print_string(out, s),
        Json::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                print_value(out, item, depth + 1);
            }
            out.push(']');
        }
        Json::Object(members) => {
            let inner = depth + 1;
            out.push_str("{\n");
            for (i, (key, item)) in members.iter().enumerate() {
                push_tabs(out, inner);
                print_string(out, key);
                out.push_str(":\t");
                print_value(out, item, inner);
                if i + 1 < members.len() {
                    out.push(',');
                }
                out.push('\n');
            }
            push_tabs(out, depth);
            out.push('}');
        }
    }
}

fn push_tabs(out: &mut String, n: usize) {
    out.push_str(&"\t".repeat(n));
}

fn print_string(out: &mut String, s: &str) {
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 32 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// cJSON's `print_number`: integers that fit a C `int` with `%d`, others with `%1.15g`, or
/// `%1.17g` when 15 digits do not give the same double back; NaN and infinities as `null`.
///
/// ```
/// use hpcbox_pbs::format::json::print_number;
/// assert_eq!(print_number(1726303075.0), "1726303075");
/// assert_eq!(print_number(4194304000.0), "4194304000");
/// assert_eq!(print_number(0.1), "0.1");
/// assert_eq!(print_number(1e300), "1e+300");
/// ```
pub fn print_number(d: f64) -> String {
    if !d.is_finite() {
        return "null".to_string();
    }
    let as_int = if d >= f64::from(i32::MAX) {
        i32::MAX
    } else if d <= f64::from(i32::MIN) {
        i32::MIN
    } else {
        // Truncation toward zero, as C's (int) cast.
        d as i32
    };
    if d == f64::from(as_int) {
        return as_int.to_string();
    }
    let short = format_g(d, 15);
    let back: f64 = short.parse().unwrap_or(f64::NAN);
    if (back - d).abs() <= back.abs().max(d.abs()) * f64::EPSILON {
        short
    } else {
        format_g(d, 17)
    }
}

/// C's `%1.<precision>g` for a finite, nonzero `d`.
fn format_g(d: f64, precision: usize) -> String {
    let sci = format!("{:.*e}", precision - 1, d);
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i64 = exp.parse().unwrap_or(0);
    let p = i64::try_from(precision).unwrap_or(17);
    if exp < -4 || exp >= p {
        let mantissa = strip_fraction_zeros(mantissa);
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.unsigned_abs())
    } else {
        let decimals = usize::try_from(p - 1 - exp).unwrap_or(0);
        strip_fraction_zeros(&format!("{d:.decimals$}")).to_string()
    }
}

fn strip_fraction_zeros(text: &str) -> &str {
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.')
    } else {
        text
    }
}

/// Attributes `qstat -F json` always prints as strings (`batch_item_json_type_triage`, which
/// goes by name for every kind of object).
const STRING_ATTRIBUTES: &[&str] = &["Job_Name", "project", "Account_Name"];

/// The first keys of every `-F json` document: `timestamp`, `pbs_version`, `pbs_server`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prologue<'a> {
    /// Seconds since the epoch when the command ran (`time(0)`).
    pub timestamp: i64,
    /// The client's PBS version string.
    pub pbs_version: &'a str,
    /// The default server name.
    pub pbs_server: &'a str,
}

impl Prologue<'_> {
    fn members(&self) -> Vec<(String, Json)> {
        vec![
            // The C code passes the time through a double.
            ("timestamp".into(), Json::Number(self.timestamp as f64)),
            ("pbs_version".into(), Json::String(self.pbs_version.into())),
            ("pbs_server".into(), Json::String(self.pbs_server.into())),
        ]
    }
}

/// `qstat -f -F json` for `jobs` (and `-x`): the prologue, then `Jobs` keyed by job id, present
/// only when at least one job is printed. Time attributes show as ctime text in `tz`.
pub fn render_jobs(jobs: &[StatusObject], tz: &TimeZone, prologue: &Prologue<'_>) -> String {
    let objects = jobs
        .iter()
        .map(|job| (job.name.clone(), job_object(job, tz)))
        .collect();
    document(prologue, "Jobs", objects, false)
}

/// `qstat -Qf -F json` for `queues`: the prologue, then `Queue` keyed by queue name.
pub fn render_queues(queues: &[StatusObject], prologue: &Prologue<'_>) -> String {
    let objects = queues
        .iter()
        .map(|q| (q.name.clone(), queue_object(q)))
        .collect();
    document(prologue, "Queue", objects, false)
}

/// `qstat -Bf -F json` for `servers`: the prologue, then `Server` keyed by server name.
pub fn render_servers(servers: &[StatusObject], prologue: &Prologue<'_>) -> String {
    let objects = servers
        .iter()
        .map(|s| {
            let mut b = AttrObject::default();
            for a in &s.attrs {
                b.insert(&a.name, a.resource.as_deref(), &a.value);
            }
            (s.name.clone(), Json::Object(b.members))
        })
        .collect();
    document(prologue, "Server", objects, false)
}

/// `pbsnodes -a -F json` (and `-av`) for `nodes`: the prologue, then `nodes` keyed by node
/// name, always present.
pub fn render_nodes(nodes: &[StatusObject], prologue: &Prologue<'_>) -> String {
    let objects = nodes
        .iter()
        .map(|n| (n.name.clone(), node_object(n)))
        .collect();
    document(prologue, "nodes", objects, true)
}

fn document(
    prologue: &Prologue<'_>,
    key: &str,
    objects: Vec<(String, Json)>,
    always: bool,
) -> String {
    let mut root = prologue.members();
    if always || !objects.is_empty() {
        root.push((key.to_string(), Json::Object(objects)));
    }
    let mut out = Json::Object(root).print();
    out.push('\n');
    out
}

/// Builds one object's members the way `prt_attr` inserts them (its special cases go by
/// attribute name, whatever the object).
#[derive(Default)]
struct AttrObject {
    members: Vec<(String, Json)>,
    /// The member index and name of the resource object consecutive resources go into.
    open_resource: Option<(usize, String)>,
}

impl AttrObject {
    fn insert(&mut self, name: &str, resource: Option<&str>, value: &str) {
        if let Some(resc) = resource {
            let index = match &self.open_resource {
                Some((i, open)) if open == name => *i,
                _ => {
                    self.members
                        .push((name.to_string(), Json::Object(Vec::new())));
                    let i = self.members.len() - 1;
                    self.open_resource = Some((i, name.to_string()));
                    i
                }
            };
            if let Some((_, Json::Object(inner))) = self.members.get_mut(index) {
                inner.push((resc.to_string(), value_of(value)));
            }
        } else if name == "Variable_List" {
            // The open resource object stays open across Variable_List, as in qstat.c.
            self.members.push((name.to_string(), variable_list(value)));
        } else {
            self.open_resource = None;
            let v = if STRING_ATTRIBUTES.contains(&name) {
                Json::String(value.to_string())
            } else {
                value_of(value)
            };
            self.members.push((name.to_string(), v));
        }
    }
}

fn job_object(job: &StatusObject, tz: &TimeZone) -> Json {
    let mut b = AttrObject::default();
    for a in &job.attrs {
        let value = job_display_value(a, tz);
        b.insert(&a.name, a.resource.as_deref(), &value);
    }
    Json::Object(b.members)
}

/// `Variable_List` as an object: entries split at commas not escaped by `\`, each at its first
/// `=`; the `\` before an escaped comma is dropped.
///
/// ```
/// use hpcbox_pbs::format::json::{variable_list, Json};
/// let v = variable_list("A=1,B=x\\,y=z");
/// assert_eq!(v, Json::Object(vec![
///     ("A".into(), Json::Number(1.0)),
///     ("B".into(), Json::String("x,y=z".into())),
/// ]));
/// ```
pub fn variable_list(value: &str) -> Json {
    Json::Object(
        crate::status::split_variable_list(value)
            .into_iter()
            .map(|(name, value)| (name, value_of(&value)))
            .collect(),
    )
}

/// New-style queue restrictions (`[o:PBS_ALL=10]`) that `qstat -Qf -F json` gathers per name.
fn is_restriction(value: &str) -> bool {
    value.starts_with('[') && value.ends_with(']') && value.contains('=')
}

fn queue_object(queue: &StatusObject) -> Json {
    let mut b = AttrObject::default();
    let mut plain: Vec<(String, String)> = Vec::new();
    let mut by_resource: Vec<(String, String)> = Vec::new();
    let mut resource_attr: Option<&str> = None;
    for a in &queue.attrs {
        if !is_restriction(&a.value) {
            b.insert(&a.name, a.resource.as_deref(), &a.value);
            continue;
        }
        match &a.resource {
            Some(resc) => {
                accumulate(&mut by_resource, resc, &a.value);
                resource_attr = Some(&a.name);
            }
            None => accumulate(&mut plain, &a.name, &a.value),
        }
    }
    for (k, v) in plain {
        b.members.push((k, Json::String(v)));
    }
    if let Some(name) = resource_attr {
        let inner = by_resource
            .into_iter()
            .map(|(k, v)| (k, Json::String(v)))
            .collect();
        b.members.push((name.to_string(), Json::Object(inner)));
    }
    Json::Object(b.members)
}

fn accumulate(list: &mut Vec<(String, String)>, key: &str, value: &str) {
    match list.iter_mut().find(|(k, _)| k == key) {
        Some((_, v)) => {
            v.push(',');
            v.push_str(value);
        }
        None => list.push((key.to_string(), value.to_string())),
    }
}

fn node_object(node: &StatusObject) -> Json {
    let mut members: Vec<(String, Json)> = Vec::new();
    let mut open: Option<(usize, String)> = None;
    for a in &node.attrs {
        match (&a.resource, a.name.as_str()) {
            (Some(resc), name @ ("resources_available" | "resources_assigned")) => {
                let index = match &open {
                    Some((i, n)) if n == name => *i,
                    _ => {
                        members.push((name.to_string(), Json::Object(Vec::new())));
                        open = Some((members.len() - 1, name.to_string()));
                        members.len() - 1
                    }
                };
                let v = value_of(&a.value);
                let is_empty = match &v {
                    Json::String(s) => s.starts_with('0'),
                    Json::Number(n) => *n == 0.0,
                    _ => false,
                };
                if name == "resources_assigned" && is_empty {
                    continue;
                }
                if let Some((_, Json::Object(inner))) = members.get_mut(index) {
                    inner.push((resc.clone(), v));
                }
            }
            (_, "jobs") => {
                open = None;
                members.push(("jobs".into(), node_jobs(&a.value)));
            }
            _ => {
                open = None;
                members.push((a.name.clone(), value_of(&a.value)));
            }
        }
    }
    Json::Object(members)
}

/// The `jobs` attribute of a node as a list of job ids: blanks removed, `/slot` cut, a job
/// listed once per run of consecutive slots.
fn node_jobs(value: &str) -> Json {
    let compact: String = value.chars().filter(|c| *c != ' ').collect();
    let mut ids: Vec<Json> = Vec::new();
    let mut previous = "";
    for slot in compact.split(',').filter(|s| !s.is_empty()) {
        let id = slot.split('/').next().unwrap_or(slot);
        if id != previous {
            ids.push(Json::String(id.to_string()));
        }
        previous = id;
    }
    Json::Array(ids)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn cjson_number_rules() {
        assert_eq!(parse("01"), Some(Json::Number(1.0)));
        assert_eq!(parse("1."), Some(Json::Number(1.0)));
        assert_eq!(parse("-.5"), Some(Json::Number(-0.5)));
        assert_eq!(parse(" 7 "), Some(Json::Number(7.0)));
        assert_eq!(parse("1e5"), Some(Json::Number(100000.0)));
        assert_eq!(parse("1e"), None);
        assert_eq!(parse("1-2"), None);
        assert_eq!(parse("+1"), None);
        assert_eq!(parse(".5"), None);
        assert_eq!(parse("-"), None);
        assert_eq!(parse("0x10"), None);
        assert_eq!(parse("1:00:00"), None);
        assert_eq!(parse("4gb"), None);
        assert_eq!(parse(""), None);
    }

    #[test]
    fn cjson_literals_and_structures() {
        assert_eq!(parse("true"), Some(Json::Bool(true)));
        assert_eq!(parse("True"), None);
        assert_eq!(parse("nullx"), None);
        assert_eq!(
            parse("[1, \"a\\u00e9\"]"),
            Some(Json::Array(vec![
                Json::Number(1.0),
                Json::String("aé".into())
            ]))
        );
        assert_eq!(
            parse("{\"a\":1,\"a\":2}"),
            Some(Json::Object(vec![
                ("a".into(), Json::Number(1.0)),
                ("a".into(), Json::Number(2.0))
            ]))
        );
        assert_eq!(parse("[1,]"), None);
        assert_eq!(parse("\"\\x\""), None);
        assert_eq!(parse("\"\\udc00\""), None);
        assert_eq!(parse("\"\\ud83d\\ude00\""), Some(Json::String("😀".into())));
        assert_eq!(parse(&"[".repeat(1001)), None);
    }

    #[test]
    fn cjson_printing() {
        assert_eq!(Json::Object(vec![]).print(), "{\n}");
        let nested = Json::Object(vec![(
            "a".into(),
            Json::Array(vec![Json::Object(vec![("b".into(), Json::Null)])]),
        )]);
        // Arrays raise the depth too, so the inner object is indented twice.
        assert_eq!(
            nested.print(),
            "{\n\t\"a\":\t[{\n\t\t\t\"b\":\tnull\n\t\t}]\n}"
        );
        assert_eq!(
            Json::String("q\"\\\u{1}\t/é".into()).print(),
            "\"q\\\"\\\\\\u0001\\t/é\""
        );
    }

    #[test]
    fn cjson_number_printing() {
        assert_eq!(print_number(-0.0), "0");
        assert_eq!(print_number(-7.0), "-7");
        assert_eq!(print_number(2147483647.0), "2147483647");
        assert_eq!(print_number(2147483648.0), "2147483648");
        assert_eq!(print_number(1.5), "1.5");
        assert_eq!(print_number(1e15), "1e+15");
        assert_eq!(print_number(123456789012345680.0), "1.2345678901234568e+17");
        assert_eq!(print_number(0.0001), "0.0001");
        assert_eq!(print_number(0.00001), "1e-05");
        assert_eq!(print_number(f64::NAN), "null");
        assert_eq!(print_number(f64::INFINITY), "null");
    }

    #[test]
    fn node_jobs_collapse_slots() {
        assert_eq!(
            node_jobs("25224.srv/0, 25224.srv/1, 25225.srv/2"),
            Json::Array(vec![
                Json::String("25224.srv".into()),
                Json::String("25225.srv".into())
            ])
        );
    }

    #[test]
    fn variable_list_edges() {
        assert_eq!(variable_list(""), Json::Object(vec![]));
        assert_eq!(
            variable_list("A=1,"),
            Json::Object(vec![("A".into(), Json::Number(1.0))])
        );
        assert_eq!(
            variable_list("A,=x,B=a=b"),
            Json::Object(vec![
                ("A".into(), Json::String(String::new())),
                (String::new(), Json::String("x".into())),
                ("B".into(), Json::String("a=b".into())),
            ])
        );
        assert_eq!(
            variable_list("P=C:\\dir"),
            Json::Object(vec![("P".into(), Json::String("C:\\dir".into()))])
        );
    }

    fn arb_json() -> impl Strategy<Value = Json> {
        let leaf = prop_oneof![
            Just(Json::Null),
            any::<bool>().prop_map(Json::Bool),
            any::<f64>().prop_map(Json::Number),
            ".*".prop_map(Json::String),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Json::Array),
                proptest::collection::vec((".*", inner), 0..4).prop_map(Json::Object),
            ]
        })
    }

    proptest! {
        #[test]
        fn printed_json_is_valid_json(v in arb_json()) {
            let text = v.print();
            prop_assert!(serde_json::from_str::<serde_json::Value>(&text).is_ok(), "{}", text);
        }

        #[test]
        fn printed_values_parse_back(v in arb_json()) {
            // cJSON's own printer and parser agree, except that non-finite numbers print null.
            let text = v.print();
            prop_assert!(parse(&text).is_some(), "{}", text);
        }

        #[test]
        fn parse_never_panics(text in "(?s).{0,200}") {
            let _ = parse(&text);
            let _ = value_of(&text);
            let _ = variable_list(&text);
        }

        #[test]
        fn finite_numbers_round_trip(d in any::<f64>().prop_filter("finite", |d| d.is_finite())) {
            let text = print_number(d);
            let back: f64 = text.parse().unwrap();
            prop_assert!((back - d).abs() <= back.abs().max(d.abs()) * f64::EPSILON);
        }
    }
}

//! Job scripts: finding the `#PBS` directives in them the way `qsub` does.
//!
//! `qsub` reads the script line by line (OpenPBS `cmds/qsub_sup.c` `get_script`, with
//! `lib/Libcmds/check_job_script.c`):
//!
//! - a line whose first non-blank text is the prefix (`#PBS` unless changed) is a directive; the
//!   rest of the line is split into arguments like a command line ([`split_directive`]);
//! - a directive ending in `\` (blanks allowed after it) is joined with the next line;
//! - scanning for directives stops at the first executable line: one that is not blank, does not
//!   start with `:` in column 1, and whose first non-blank character is not `#`;
//! - in OpenPBS master, any line ending in CR LF is refused (`qsub: script contains cr, lf`).
//!
//! ```
//! use hpcbox_pbs::script::{directives, DirectivePrefix};
//! let script = "#!/bin/sh\n#PBS -N hello\n#PBS -l select=1:ncpus=2 \\\n   -q workq\necho hi\n#PBS -N ignored\n";
//! let found = directives(script, &DirectivePrefix::default()).unwrap();
//! assert_eq!(found.len(), 2);
//! assert_eq!(found[0].args, ["-N", "hello"]);
//! assert_eq!(found[1].line, 3);
//! assert_eq!(found[1].args, ["-l", "select=1:ncpus=2", "-q", "workq"]);
//! ```

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ParseError;

/// The prefix `qsub` looks for when nothing else is said (`PBS_DPREFIX_DEFAULT`).
pub const DEFAULT_PREFIX: &str = "#PBS";

/// The most bytes `qsub -C` keeps of a prefix (`MAX_QSUB_PREFIX_LEN`); longer ones are cut.
pub const MAX_PREFIX_LEN: usize = 32;

/// The directive prefix in force, or none when directive scanning is turned off.
///
/// ```
/// use hpcbox_pbs::script::DirectivePrefix;
/// assert_eq!(DirectivePrefix::default().as_str(), Some("#PBS"));
/// // qsub -C "" turns scanning off, whatever PBS_DPREFIX says.
/// assert!(DirectivePrefix::resolve(Some(""), Some("#X")).is_disabled());
/// assert_eq!(DirectivePrefix::resolve(None, Some("#X")).as_str(), Some("#X"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DirectivePrefix(Option<String>);

impl DirectivePrefix {
    /// The prefix `p`; an empty `p` turns scanning off (as an empty prefix does in PBS).
    pub fn new(p: &str) -> Self {
        if p.is_empty() {
            DirectivePrefix(None)
        } else {
            DirectivePrefix(Some(p.to_string()))
        }
    }

    /// No directives are read at all (`qsub -C ""`).
    pub fn disabled() -> Self {
        DirectivePrefix(None)
    }

    /// The prefix `qsub` uses (`set_dir_prefix`): the value of `-C` (cut to
    /// [`MAX_PREFIX_LEN`] bytes; empty turns scanning off), else `PBS_DPREFIX` when it is set
    /// (empty also turns scanning off), else `#PBS`.
    ///
    /// `c_option` is the value of `-C` on the command line, `pbs_dprefix` the caller's
    /// `$PBS_DPREFIX` (this crate reads no environment). A `-C` given as a directive does not
    /// count: the prefix is chosen before the script is read.
    pub fn resolve(c_option: Option<&str>, pbs_dprefix: Option<&str>) -> Self {
        match (c_option, pbs_dprefix) {
            (Some(c), _) => DirectivePrefix::new(truncate_bytes(c, MAX_PREFIX_LEN)),
            (None, Some(env)) => DirectivePrefix::new(env),
            (None, None) => DirectivePrefix::default(),
        }
    }

    /// The prefix text, or `None` when scanning is off.
    pub fn as_str(&self) -> Option<&str> {
        self.0.as_deref()
    }

    /// Whether directive scanning is off.
    pub fn is_disabled(&self) -> bool {
        self.0.is_none()
    }
}

impl Default for DirectivePrefix {
    /// `#PBS`.
    fn default() -> Self {
        DirectivePrefix(Some(DEFAULT_PREFIX.to_string()))
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn truncate_bytes(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// One directive found in a script.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Directive {
    /// The 1-based line it starts on (continuation lines follow it).
    pub line: usize,
    /// Its arguments, split as `qsub` splits them, without a leading `qsub`.
    pub args: Vec<String>,
}

/// Why `qsub` refuses a script while reading its directives.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ScriptError {
    /// A line ends in CR LF (OpenPBS master since 3dab1be; v23.06 accepts such scripts).
    CrLf {
        /// The 1-based line number (the last line of a joined directive).
        line: usize,
    },
    /// A directive opens a quote it does not close.
    UnmatchedQuote {
        /// The 1-based line the directive starts on.
        line: usize,
        /// The quote character that was opened, `"` or `'`.
        quote: char,
    },
}

impl ScriptError {
    /// The 1-based line the error is on.
    pub fn line(&self) -> usize {
        match self {
            ScriptError::CrLf { line } | ScriptError::UnmatchedQuote { line, .. } => *line,
        }
    }

    /// `qsub`'s exit status for this error: 1.
    pub fn exit_code(&self) -> i32 {
        1
    }
}

impl fmt::Display for ScriptError {
    /// `qsub`'s message, without the newline.
    ///
    /// For an unmatched quote PBS prints `qsub: unmatched %c` with the character it stopped
    /// at, which is always the terminating NUL: the message is `qsub: unmatched ` followed by a
    /// NUL byte. That is reproduced here byte for byte.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScriptError::CrLf { .. } => f.write_str("qsub: script contains cr, lf"),
            ScriptError::UnmatchedQuote { .. } => f.write_str("qsub: unmatched \0"),
        }
    }
}

impl std::error::Error for ScriptError {}

impl From<ScriptError> for ParseError {
    fn from(e: ScriptError) -> Self {
        match e {
            ScriptError::CrLf { line } => {
                ParseError::new(format!("line {line}"), "script contains cr, lf")
            }
            ScriptError::UnmatchedQuote { line, quote } => {
                ParseError::new(format!("line {line}"), format!("unmatched {quote}"))
            }
        }
    }
}

/// What reading a script gave: the directives in order, and the error that stopped the read.
///
/// `qsub` acts on each directive as it reads it, so a bad option in a directive is reported
/// before a CR LF further down, and a CR LF is reported before anything on later lines.
/// [`Scan::directives`] holds every directive `qsub` would act on before [`Scan::error`]
/// (a directive on the CR LF line itself is acted on first).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Scan {
    /// The directives read before the error, if any.
    pub directives: Vec<Directive>,
    /// What stopped the read, if anything did.
    pub error: Option<ScriptError>,
}

/// Whether `b` is a blank as C's `isspace` sees it in the C locale.
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// The lines of `script` as `fgets` gives them: each with its `\n`, the last one maybe without.
fn lines_with_ends(script: &str) -> impl Iterator<Item = &str> {
    script.split_inclusive('\n')
}

/// The text after the prefix when `line` is a directive (`pbs_ispbsdir`): leading blanks are
/// skipped, then the prefix must follow, case-sensitively.
fn directive_body<'a>(line: &'a str, prefix: &str) -> Option<&'a str> {
    let start = line.len()
        - line
            .trim_start_matches(|c: char| c.is_ascii() && is_c_space(c as u8))
            .len();
    line[start..].strip_prefix(prefix)
}

/// Whether `line` stops directive scanning (`pbs_isexecutable`).
fn is_executable(line: &str) -> bool {
    let bytes = line.as_bytes();
    if bytes.first() == Some(&b':') || line.starts_with("#!") {
        return false;
    }
    match bytes.iter().find(|&&b| !is_c_space(b)) {
        Some(&first) => first != b'#',
        None => false,
    }
}

/// Where the `\` that continues `line` is (`pbs_extendable_line`): the line must end in `\`
/// followed only by blanks.
fn continuation_at(line: &str) -> Option<usize> {
    let trimmed = line.trim_end_matches(|c: char| c.is_ascii() && is_c_space(c as u8));
    trimmed.strip_suffix('\\').map(str::len)
}

/// Whether `line` ends in CR LF (`check_crlf`).
fn ends_in_crlf(line: &str) -> bool {
    line.ends_with("\r\n")
}

/// Reads `script` as `qsub` does and returns its directives and what stopped the read.
///
/// Never fails and never panics; see [`Scan`] for how errors are ordered.
pub fn scan(script: &str, prefix: &DirectivePrefix) -> Scan {
    let mut out = Scan::default();
    let mut lines = lines_with_ends(script).enumerate().map(|(i, l)| (i + 1, l));
    let mut executable = false;
    while let Some((number, line)) = lines.next() {
        let mut last_line = number;
        let mut whole = line.to_string();
        let body = if executable {
            None
        } else {
            prefix
                .as_str()
                .and_then(|p| directive_body(line, p).map(|_| p))
        };
        if let Some(p) = body {
            if let Some(cut) = continuation_at(&whole) {
                whole.truncate(cut);
                for (next_number, next) in lines.by_ref() {
                    last_line = next_number;
                    match continuation_at(next) {
                        Some(cut) => whole.push_str(&next[..cut]),
                        None => {
                            whole.push_str(next);
                            break;
                        }
                    }
                }
            }
            let text = directive_body(&whole, p).unwrap_or_default();
            match split_directive(text) {
                Ok(args) => out.directives.push(Directive { line: number, args }),
                Err(quote) => {
                    out.error = Some(ScriptError::UnmatchedQuote {
                        line: number,
                        quote,
                    });
                    return out;
                }
            }
        } else if !executable && is_executable(line) {
            executable = true;
        }
        if ends_in_crlf(&whole) {
            out.error = Some(ScriptError::CrLf { line: last_line });
            return out;
        }
    }
    out
}

/// The directives of `script`, or the first error `qsub` would stop at while reading it.
///
/// This is [`scan`] with the error taken first: use [`scan`] to act on the directives before
/// the error in PBS's order.
pub fn directives(script: &str, prefix: &DirectivePrefix) -> Result<Vec<Directive>, ScriptError> {
    let scan = scan(script, prefix);
    match scan.error {
        Some(e) => Err(e),
        None => Ok(scan.directives),
    }
}

/// Splits the text of a directive into arguments as `qsub` does (`make_argv`).
///
/// Blanks separate arguments; `"…"` and `'…'` quote text (no escapes inside) and may sit
/// anywhere in an argument; `\` outside quotes takes the next character literally. An
/// unclosed quote is an error carrying the quote character.
///
/// ```
/// use hpcbox_pbs::script::split_directive;
/// assert_eq!(split_directive(r#" -N "my job" -v A=1\ 2"#).unwrap(), ["-N", "my job", "-v", "A=1 2"]);
/// assert_eq!(split_directive("-N 'open").unwrap_err(), '\'');
/// ```
pub fn split_directive(text: &str) -> Result<Vec<String>, char> {
    let bytes = text.as_bytes();
    let mut args = Vec::new();
    let mut current: Vec<u8> = Vec::new();
    let mut in_token = false;
    let mut i = 0;
    while i < bytes.len() && is_c_space(bytes[i]) {
        i += 1;
    }
    while let Some(&b) = bytes.get(i) {
        match b {
            b'"' | b'\'' => {
                in_token = true;
                let close = bytes[i + 1..].iter().position(|&c| c == b);
                match close {
                    Some(len) => {
                        current.extend_from_slice(&bytes[i + 1..i + 1 + len]);
                        i += len + 2;
                    }
                    None => return Err(b as char),
                }
            }
            b'\\' => {
                in_token = true;
                if let Some(&next) = bytes.get(i + 1) {
                    current.push(next);
                }
                i += 2;
            }
            _ if is_c_space(b) => {
                args.push(String::from_utf8_lossy(&current).into_owned());
                current.clear();
                in_token = false;
                while i < bytes.len() && is_c_space(bytes[i]) {
                    i += 1;
                }
            }
            _ => {
                in_token = true;
                current.push(b);
                i += 1;
            }
        }
    }
    if in_token {
        args.push(String::from_utf8_lossy(&current).into_owned());
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args_of(script: &str) -> Vec<Vec<String>> {
        directives(script, &DirectivePrefix::default())
            .unwrap()
            .into_iter()
            .map(|d| d.args)
            .collect()
    }

    #[test]
    fn blank_colon_and_hash_lines_do_not_stop_scanning() {
        let script = "#!/bin/sh\n\n   \n: colon line\n# comment\n   # indented comment\n\t#PBS -N a\n#PBS -q b\n";
        assert_eq!(args_of(script), [vec!["-N", "a"], vec!["-q", "b"]]);
    }

    #[test]
    fn first_executable_line_stops_scanning() {
        let script = "#PBS -N a\necho hi\n#PBS -q b\n";
        assert_eq!(args_of(script), [vec!["-N", "a"]]);
        // A colon counts only in column 1.
        assert_eq!(args_of(" : x\n#PBS -N a\n"), Vec::<Vec<String>>::new());
        // Any text not starting with # stops it, even `#` later on the line.
        assert_eq!(
            args_of("x=1 #PBS -N a\n#PBS -N b\n"),
            Vec::<Vec<String>>::new()
        );
    }

    #[test]
    fn line_numbers_are_one_based_and_count_continuations() {
        let script = "#!/bin/sh\n#PBS -l select=1 \\\n  :ncpus=2\n#PBS -N x\n";
        let found = directives(script, &DirectivePrefix::default()).unwrap();
        assert_eq!(found[0].line, 2);
        assert_eq!(found[0].args, ["-l", "select=1", ":ncpus=2"]);
        assert_eq!(found[1].line, 4);
    }

    #[test]
    fn continuation_allows_trailing_blanks_and_chains() {
        let script = "#PBS -N a \\  \n -q b\\\n -p 5\n";
        assert_eq!(args_of(script), [vec!["-N", "a", "-q", "b", "-p", "5"]]);
        // The continued line is consumed even if it looks like a command.
        let script = "#PBS -N \\\njob\n#PBS -q b\n";
        assert_eq!(args_of(script), [vec!["-N", "job"], vec!["-q", "b"]]);
        // A backslash on the last line just goes away.
        assert_eq!(args_of("#PBS -N a\\"), [vec!["-N", "a"]]);
    }

    #[test]
    fn only_directives_continue() {
        // A comment ending in `\` is not a directive: the next line stands on its own.
        let script = "# comment \\\n#PBS -N a\n";
        assert_eq!(args_of(script), [vec!["-N", "a"]]);
    }

    #[test]
    fn quoting_and_escapes() {
        assert_eq!(
            args_of("#PBS -N \"a b\" -v 'X=1, 2'\n"),
            [vec!["-N", "a b", "-v", "X=1, 2"]]
        );
        assert_eq!(args_of("#PBS -Nab\"c d\"e\n"), [vec!["-Nabc de"]]);
        assert_eq!(args_of("#PBS -N a\\ b\n"), [vec!["-N", "a b"]]);
        assert_eq!(args_of("#PBS -N \"\"\n"), [vec!["-N", ""]]);
        // A `#` inside a directive is just text: PBS has no trailing comments.
        assert_eq!(args_of("#PBS -N a # b\n"), [vec!["-N", "a", "#", "b"]]);
    }

    #[test]
    fn unmatched_quote_is_an_error_with_its_line() {
        let err = directives("#!/bin/sh\n#PBS -N \"a\n", &DirectivePrefix::default()).unwrap_err();
        assert_eq!(
            err,
            ScriptError::UnmatchedQuote {
                line: 2,
                quote: '"'
            }
        );
        assert_eq!(err.to_string(), "qsub: unmatched \0");
        assert_eq!(err.exit_code(), 1);
    }

    #[test]
    fn prefix_is_case_sensitive_and_changeable() {
        assert_eq!(args_of("#pbs -N a\n#PBS -N b\n"), [vec!["-N", "b"]]);
        let custom = DirectivePrefix::new("#MY");
        let found = directives("#PBS -N a\n#MY -N b\n", &custom).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].args, ["-N", "b"]);
        // The prefix need not be followed by a blank.
        assert_eq!(args_of("#PBS-N a\n"), [vec!["-N", "a"]]);
    }

    #[test]
    fn empty_prefix_disables_scanning() {
        let off = DirectivePrefix::resolve(Some(""), None);
        assert!(off.is_disabled());
        assert_eq!(directives("#PBS -N a\n", &off).unwrap(), Vec::new());
        assert!(DirectivePrefix::resolve(None, Some("")).is_disabled());
        assert_eq!(
            DirectivePrefix::resolve(None, None),
            DirectivePrefix::default()
        );
        assert_eq!(
            DirectivePrefix::resolve(Some("#Q"), Some("#X")).as_str(),
            Some("#Q")
        );
        let long = "#".repeat(40);
        assert_eq!(
            DirectivePrefix::resolve(Some(&long), None)
                .as_str()
                .map(str::len),
            Some(MAX_PREFIX_LEN)
        );
    }

    #[test]
    fn crlf_is_refused_on_any_line() {
        let err = directives(
            "#!/bin/sh\n#PBS -N a\necho\r\n",
            &DirectivePrefix::default(),
        )
        .unwrap_err();
        assert_eq!(err, ScriptError::CrLf { line: 3 });
        assert_eq!(err.to_string(), "qsub: script contains cr, lf");
        // A lone CR at the very end (no LF) is not CR LF.
        assert!(directives("#PBS -N a\r", &DirectivePrefix::default()).is_ok());
    }

    #[test]
    fn scan_keeps_directives_before_the_error() {
        let s = scan(
            "#PBS -N a\n#PBS -q b\r\n#PBS -p 1\n",
            &DirectivePrefix::default(),
        );
        assert_eq!(s.directives.len(), 2);
        assert_eq!(s.directives[1].args, ["-q", "b"]);
        assert_eq!(s.error, Some(ScriptError::CrLf { line: 2 }));
    }

    #[test]
    fn empty_directive_has_no_args() {
        assert_eq!(
            args_of("#PBS\n#PBS   \n"),
            [Vec::<String>::new(), Vec::new()]
        );
    }

    #[test]
    fn vertical_tab_and_form_feed_are_blanks() {
        assert_eq!(args_of("\x0b#PBS\x0c-N\x0ba\n"), [vec!["-N", "a"]]);
    }

    #[test]
    fn multibyte_text_survives_escapes() {
        assert_eq!(args_of("#PBS -N \\é\n"), [vec!["-N", "é"]]);
        assert_eq!(args_of("#PBS -N ü'ö'\n"), [vec!["-N", "üö"]]);
    }
}

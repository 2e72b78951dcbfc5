//! `qsub`'s errors: what went wrong and the text and exit status `qsub` reports it with.

use std::fmt;

use super::{BAD_W, RETMSG_SIZE, USAGE};
use crate::script::ScriptError;
use crate::ParseError;

/// What went wrong, for callers that want to match on it; the text is in [`QsubError`]'s
/// `Display`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum QsubErrorKind {
    /// A usage error: bad option, missing argument, misplaced operand, or an option value
    /// refused on the command line. Exit 2, usage printed.
    Usage,
    /// An option in a directive was refused. Exit 1.
    Directive {
        /// The 1-based line of the directive.
        line: usize,
    },
    /// The job attributes were refused before sending (`qsub: illegal -<opt> value`). Exit 2,
    /// usage printed.
    IllegalValue {
        /// The option letter.
        option: char,
    },
    /// The job name is longer than [`MAX_JOB_NAME`](super::MAX_JOB_NAME). Exit 2.
    JobNameTooLong,
    /// A resource value was refused by the library (`PBSE_BADATVAL`). Exit 166.
    ResourceValue {
        /// The resource name.
        resource: String,
    },
    /// The `-q` destination is malformed. Exit 2.
    Destination,
    /// A `-v` list could not be turned into an environment. Exit 1.
    Environment,
    /// `-m` holds `j` but the job is not an array. Exit 1.
    MailWithoutArray,
    /// `-X` was given without `-I`. Exit 1.
    X11WithoutInteractive,
    /// The script was refused while reading it. Exit 1.
    Script(ScriptError),
    /// The server's `default_qsub_arguments` were refused: exit 255 (`qsub` exits with -1),
    /// or 1 for an unmatched quote.
    DefaultArguments,
}

/// An error exactly as `qsub` reports it: its standard error text and exit status.
///
/// ```
/// use hpcbox_pbs::qsub::parse_args;
/// let err = parse_args(["-r", "x", "job.sh"]).unwrap_err();
/// assert_eq!(err.exit_code(), 2);
/// assert!(err.to_string().starts_with("qsub: illegal -r value\nusage: qsub"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QsubError {
    kind: QsubErrorKind,
    text: String,
    exit_code: i32,
}

impl QsubError {
    pub(super) fn new(kind: QsubErrorKind, lines: &[String], usage: bool, exit_code: i32) -> Self {
        let mut text = String::new();
        for line in lines {
            text.push_str(line);
            text.push('\n');
        }
        if usage {
            text.push_str(USAGE);
        }
        QsubError {
            kind,
            text,
            exit_code,
        }
    }

    pub(super) fn usage(lines: &[String]) -> Self {
        QsubError::new(QsubErrorKind::Usage, lines, true, 2)
    }

    /// The kind of error.
    pub fn kind(&self) -> &QsubErrorKind {
        &self.kind
    }

    /// The status `qsub` exits with.
    pub fn exit_code(&self) -> i32 {
        self.exit_code
    }
}

impl fmt::Display for QsubError {
    /// Everything `qsub` writes to standard error for this error, newlines included.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::error::Error for QsubError {}

impl From<ScriptError> for QsubError {
    fn from(e: ScriptError) -> Self {
        let line = e.to_string();
        QsubError::new(QsubErrorKind::Script(e), &[line], false, 1)
    }
}

/// The line `qsub` prints after a refused directive: `qsub: directive error: ` and each
/// argument followed by a blank, cut where PBS's buffer would be full.
pub(super) fn directive_error_line(args: &[String]) -> String {
    let prefix = "qsub: directive error: ";
    let mut line = String::from(prefix);
    let mut room = RETMSG_SIZE - 2 - prefix.len();
    for arg in args {
        if room > arg.len() + 1 {
            line.push_str(arg);
            line.push(' ');
            room -= arg.len() + 1;
        } else {
            break;
        }
    }
    line
}

/// The error for a `-W depend=` value the library refuses; for a subjob it first prints its
/// own line, as `parse_depend_item` does.
pub(super) fn depend_error(e: &ParseError) -> QsubError {
    let mut lines = Vec::new();
    if e.reason == crate::depend::SUBJOB_DEPENDENCY {
        lines.push(e.reason.clone());
    }
    lines.push(BAD_W.to_string());
    QsubError::new(QsubErrorKind::IllegalValue { option: 'W' }, &lines, true, 2)
}

/// `qsub: illegal -<option> value` followed by the usage, exit 2.
pub(super) fn illegal_value(option: char) -> QsubError {
    QsubError::new(
        QsubErrorKind::IllegalValue { option },
        &[format!("qsub: illegal -{option} value")],
        true,
        2,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directive_error_line_is_bounded() {
        let big = "x".repeat(5000);
        assert_eq!(
            directive_error_line(&["-N".into(), big]),
            "qsub: directive error: -N "
        );
    }
}

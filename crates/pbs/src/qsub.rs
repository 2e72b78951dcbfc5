//! `qsub`'s options as a typed model: parsing a command line and `#PBS` directives the way
//! OpenPBS's `qsub` does (`cmds/qsub.c` `process_opts`), merging them with PBS's precedence,
//! validating them with PBS's rules and reporting errors in PBS's words.
//!
//! The flow of a submission is:
//!
//! 1. [`parse_args`] reads the command line (getopt `a:A:c:C:e:fhIj:J:k:l:m:M:N:o:p:q:r:R:S:u:v:VW:XzP:`);
//! 2. the caller picks the directive prefix ([`QsubArgs::directive_prefix`]) and reads the script
//!    with [`crate::script::scan`];
//! 3. [`QsubArgs::finish`] acts on the directives in order (the command line wins), then runs the
//!    checks `qsub` and its library run before sending the job, and gives the final
//!    [`QsubOptions`] or the [`QsubError`] `qsub` would print.
//!
//! ```
//! use hpcbox_pbs::qsub::parse_args;
//! use hpcbox_pbs::script::scan;
//! let args = parse_args(["-N", "cli", "-l", "walltime=1:00:00", "job.pbs"]).unwrap();
//! let script = "#PBS -N script\n#PBS -l walltime=2:00:00,mem=1gb\n#PBS -q workq\nhostname\n";
//! let opts = args.finish(&scan(script, &args.directive_prefix(None))).unwrap();
//! assert_eq!(opts.name.as_deref(), Some("cli"));
//! assert_eq!(opts.resource("walltime"), Some("1:00:00"));
//! assert_eq!(opts.resource("mem"), Some("1gb"));
//! assert_eq!(opts.queue.as_deref(), Some("workq"));
//! ```
//!
//! This crate reads no environment and no clock: `-v VAR` keeps an "inherit" marker that
//! [`VariableList::resolve`] fills in from a lookup the caller passes, and `-a` keeps the date
//! fields as written ([`ExecutionTime`]).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::array::ArrayRange;
use crate::depend::DependList;
use crate::destination::Destination;
use crate::getopt::{getopt, Getopt, Opt};
use crate::resource::{ResourceDefs, ResourceList, ResourceValue};
use crate::script::{Directive, DirectivePrefix, Scan, ScriptError};
use crate::ParseError;

/// The options `qsub` takes, as given to getopt.
pub const GETOPT_ARGS: &str = "a:A:c:C:e:fhIj:J:k:l:m:M:N:o:p:q:r:R:S:u:v:VW:XzP:";

/// What `qsub` prints on a usage error (both of its usage strings).
pub const USAGE: &str = concat!(
    "usage: qsub [-a date_time] [-A account_string] [-c interval]\n",
    "\t[-C directive_prefix] [-e path] [-f ] [-h ] [-I [-X]] [-j oe|eo] [-J X-Y[:Z]]\n",
    "\t[-k keep] [-l resource_list] [-m mail_options] [-M user_list]\n",
    "\t[-N jobname] [-o path] [-p priority] [-P project] [-q queue] [-r y|n]\n",
    "\t[-R o|e|oe] [-S path] [-u user_list] [-W otherattributes=value...]\n",
    "\t[-v variable_list] [-V ] [-z] [script | -- command [arg1 ...]]\n",
    "       qsub --version\n",
);

/// The longest job name PBS accepts (`PBS_MAXJOBNAME`).
pub const MAX_JOB_NAME: usize = 230;

/// The job name `qsub` uses for a job read from standard input or given as `-- command`.
pub const STDIN_JOB_NAME: &str = "STDIN";

const BAD_W: &str = "qsub: illegal -W value";
const INTER_ARRAY: &str = "qsub: interactive and array job submission cannot be used together";
const NO_RERUN_ARRAY: &str = "qsub:  cannot submit non-rerunable Array Job";
const MULTIPLE_MAX_RUN: &str = "qsub: multiple max_run_subjobs values found";
const INTER_BLOCK_WARN: &str =
    "qsub (Warning) : setting \"block\" attribute as \"true\" for an interactive job will not return job's exit status";
const INTER_RERUN_WARN: &str = "qsub (Warning): Interactive jobs will be treated as not rerunnable";
/// `PBSE_BADATVAL`: the error code of a resource value the library refuses.
const PBSE_BADATVAL: i32 = 15014;
/// The size of `qsub`'s message buffer (`MAXPATHLEN`), which bounds a directive error line.
const RETMSG_SIZE: usize = 4096;

// ---------------------------------------------------------------------------------------------
// Errors

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
    /// The job name is longer than [`MAX_JOB_NAME`]. Exit 2.
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
    fn new(kind: QsubErrorKind, lines: &[String], usage: bool, exit_code: i32) -> Self {
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

    fn usage(lines: &[String]) -> Self {
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
fn directive_error_line(args: &[String]) -> String {
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

// ---------------------------------------------------------------------------------------------
// Value types

/// `-a`: the date and time as written, `[[[[CC]YY]MM]DD]hhmm[.SS]`.
///
/// PBS turns it into a time with the local clock (a missing part means the next such time);
/// this crate keeps the fields and leaves that to the caller.
///
/// ```
/// use hpcbox_pbs::qsub::ExecutionTime;
/// let t: ExecutionTime = "2512312359.30".parse().unwrap();
/// assert_eq!(t.full_year(), Some(2025));
/// assert_eq!((t.month, t.day, t.hour, t.minute, t.second), (Some(12), Some(31), 23, 59, Some(30)));
/// assert_eq!(t.to_string(), "2512312359.30");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ExecutionTime {
    /// `CC`, only with `YY`.
    pub century: Option<u8>,
    /// `YY`.
    pub year: Option<u8>,
    /// `MM`, 1 to 12.
    pub month: Option<u8>,
    /// `DD`, 1 to 31.
    pub day: Option<u8>,
    /// `hh`, 0 to 23.
    pub hour: u8,
    /// `mm`, 0 to 59.
    pub minute: u8,
    /// `SS`, 0 to 59.
    pub second: Option<u8>,
}

impl ExecutionTime {
    /// The year PBS means: `CCYY`, or for `YY` alone 19YY when YY > 68 and 20YY otherwise.
    pub fn full_year(&self) -> Option<i32> {
        let yy = i32::from(self.year?);
        Some(match self.century {
            Some(cc) => i32::from(cc) * 100 + yy,
            None if yy > 68 => 1900 + yy,
            None => 2000 + yy,
        })
    }

    /// The moment this `-a` time names, seen from `now` as `cvtdate` sees it: missing parts
    /// are taken from `now`, and a time that would be past moves to the next day, month or
    /// year, whichever part was left out. `None` for a date that does not exist.
    ///
    /// ```
    /// use hpcbox_pbs::qsub::ExecutionTime;
    /// let now: jiff::Zoned = "2026-11-25T21:40:00+00:00[UTC]".parse().unwrap();
    /// let later: ExecutionTime = "2200".parse().unwrap();
    /// assert_eq!(later.resolve(&now).unwrap().to_string(), "2026-11-25T22:00:00Z");
    /// let earlier: ExecutionTime = "0900".parse().unwrap();
    /// assert_eq!(earlier.resolve(&now).unwrap().to_string(), "2026-11-26T09:00:00Z");
    /// ```
    pub fn resolve(&self, now: &jiff::Zoned) -> Option<jiff::Timestamp> {
        let today = now.date();
        let at = |year: i32, month: i8, day: i8| -> Option<jiff::Zoned> {
            let date = jiff::civil::Date::new(i16::try_from(year).ok()?, month, day).ok()?;
            let time = jiff::civil::Time::new(
                i8::try_from(self.hour).ok()?,
                i8::try_from(self.minute).ok()?,
                i8::try_from(self.second.unwrap_or(0)).ok()?,
                0,
            )
            .ok()?;
            date.to_datetime(time)
                .to_zoned(now.time_zone().clone())
                .ok()
        };
        let year = self.full_year().unwrap_or(i32::from(today.year()));
        let month = self.month.map_or(today.month(), |m| m as i8);
        let day = self.day.map_or(today.day(), |d| d as i8);
        let first = at(year, month, day)?;
        if first >= *now {
            return Some(first.timestamp());
        }
        let next = if self.day.is_none() {
            first.checked_add(jiff::Span::new().days(1)).ok()?
        } else if self.month.is_none() {
            first.checked_add(jiff::Span::new().months(1)).ok()?
        } else if self.year.is_none() {
            first.checked_add(jiff::Span::new().years(1)).ok()?
        } else {
            first
        };
        Some(next.timestamp())
    }
}

/// Two ASCII digits as a number (the caller has checked they are digits).
fn two_digits(pair: &[u8]) -> u8 {
    pair.iter().fold(0, |n, d| n * 10 + (d - b'0'))
}

impl FromStr for ExecutionTime {
    type Err = ParseError;

    /// PBS's `cvtdate` rules.
    fn from_str(text: &str) -> Result<Self, ParseError> {
        let bad = |why: &str| ParseError::new(text, why);
        let (date, second) = match text.split_once('.') {
            Some((date, ss)) => {
                if ss.len() != 2 || !ss.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad("seconds are two digits after `.`"));
                }
                let ss = two_digits(ss.as_bytes());
                if ss > 59 {
                    return Err(bad("seconds go up to 59"));
                }
                (date, Some(ss))
            }
            None => (text, None),
        };
        if !date.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("a date is digits: [[[[CC]YY]MM]DD]hhmm[.SS]"));
        }
        if !matches!(date.len(), 4 | 6 | 8 | 10 | 12) {
            return Err(bad("a date is [[[[CC]YY]MM]DD]hhmm[.SS]"));
        }
        let fields: Vec<u8> = date.as_bytes().chunks(2).map(two_digits).collect();
        let n = fields.len();
        let field = |from_end: usize| (n >= from_end).then(|| fields[n - from_end]);
        let t = ExecutionTime {
            century: field(6),
            year: field(5),
            month: field(4),
            day: field(3),
            hour: fields[n - 2],
            minute: fields[n - 1],
            second,
        };
        if t.month.is_some_and(|m| !(1..=12).contains(&m)) {
            return Err(bad("the month is 01 to 12"));
        }
        if t.day.is_some_and(|d| !(1..=31).contains(&d)) {
            return Err(bad("the day is 01 to 31"));
        }
        if t.hour > 23 {
            return Err(bad("the hour is 00 to 23"));
        }
        if t.minute > 59 {
            return Err(bad("the minute is 00 to 59"));
        }
        Ok(t)
    }
}

impl fmt::Display for ExecutionTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for part in [self.century, self.year, self.month, self.day]
            .into_iter()
            .flatten()
        {
            write!(f, "{part:02}")?;
        }
        write!(f, "{:02}{:02}", self.hour, self.minute)?;
        if let Some(ss) = self.second {
            write!(f, ".{ss:02}")?;
        }
        Ok(())
    }
}

/// `-j`: whether to join the output and error streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Join {
    /// `oe`: standard error goes to the output file.
    OutputAndError,
    /// `eo`: standard output goes to the error file.
    ErrorAndOutput,
    /// `n`: no joining.
    None,
}

impl FromStr for Join {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, ParseError> {
        match s {
            "oe" => Ok(Join::OutputAndError),
            "eo" => Ok(Join::ErrorAndOutput),
            "n" => Ok(Join::None),
            _ => Err(ParseError::new(s, "-j takes oe, eo or n")),
        }
    }
}

impl fmt::Display for Join {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Join::OutputAndError => "oe",
            Join::ErrorAndOutput => "eo",
            Join::None => "n",
        })
    }
}

/// `-k`: which streams to keep on the execution host, and whether to write them directly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Keep {
    /// `o`: keep standard output.
    pub output: bool,
    /// `e`: keep standard error.
    pub error: bool,
    /// `d`: write directly to the final destination (needs `o`, `e` or `n`).
    pub direct: bool,
}

impl FromStr for Keep {
    type Err = ParseError;

    /// Letters `o`, `e`, `d`, `n` in any order; `n` cannot go with `o` or `e`; `d` needs one
    /// of them (`verify_keepfiles_common`).
    fn from_str(s: &str) -> Result<Self, ParseError> {
        let mut keep = Keep::default();
        let mut none = false;
        for c in s.chars() {
            match c {
                'o' => keep.output = true,
                'e' => keep.error = true,
                'd' => keep.direct = true,
                'n' => none = true,
                _ => return Err(ParseError::new(s, "-k takes the letters o, e, d and n")),
            }
        }
        let keeps = keep.output || keep.error;
        if s.is_empty() || (keeps && none) || (keep.direct && !keeps && !none) {
            return Err(ParseError::new(
                s,
                "-k takes o and/or e, or n, with an optional d",
            ));
        }
        Ok(keep)
    }
}

impl fmt::Display for Keep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.output && !self.error {
            f.write_str("n")?;
        }
        for (on, letter) in [(self.output, "o"), (self.error, "e"), (self.direct, "d")] {
            if on {
                f.write_str(letter)?;
            }
        }
        Ok(())
    }
}

/// `-m`: when mail is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct MailPoints {
    /// `a`: when the job is aborted.
    pub abort: bool,
    /// `b`: when it begins.
    pub begin: bool,
    /// `e`: when it ends.
    pub end: bool,
    /// `j`: for subjobs too (array jobs only; not alone).
    pub subjobs: bool,
}

impl MailPoints {
    /// `n`: no mail.
    pub fn is_none(&self) -> bool {
        !(self.abort || self.begin || self.end || self.subjobs)
    }
}

impl FromStr for MailPoints {
    type Err = ParseError;

    /// `n`, or letters from `a`, `b`, `e`, `j` (`j` only with another letter), after leading
    /// blanks (`verify_value_mailpoints`).
    fn from_str(s: &str) -> Result<Self, ParseError> {
        let letters = s.trim_start_matches(|c: char| c.is_ascii_whitespace() || c == '\x0b');
        if letters == "n" {
            return Ok(MailPoints::default());
        }
        let mut m = MailPoints::default();
        for c in letters.chars() {
            match c {
                'a' => m.abort = true,
                'b' => m.begin = true,
                'e' => m.end = true,
                'j' => m.subjobs = true,
                _ => {
                    return Err(ParseError::new(
                        s,
                        "-m takes n or the letters a, b, e and j",
                    ))
                }
            }
        }
        // PBS refuses `j` alone but lets `jj` through; both mean nothing without a, b or e.
        if !(m.abort || m.begin || m.end) {
            return Err(ParseError::new(s, "-m needs a, b or e (j only with them)"));
        }
        Ok(m)
    }
}

impl fmt::Display for MailPoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_none() {
            return f.write_str("n");
        }
        let letters = [
            (self.abort, "a"),
            (self.begin, "b"),
            (self.end, "e"),
            (self.subjobs, "j"),
        ];
        for (on, letter) in letters {
            if on {
                f.write_str(letter)?;
            }
        }
        Ok(())
    }
}

/// `-R`: which output files to remove after the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct RemoveFiles {
    /// `o`: the output file.
    pub output: bool,
    /// `e`: the error file.
    pub error: bool,
}

impl FromStr for RemoveFiles {
    type Err = ParseError;

    /// One or more of the letters `o` and `e` (`verify_removefiles_common`).
    fn from_str(s: &str) -> Result<Self, ParseError> {
        let mut r = RemoveFiles::default();
        for c in s.chars() {
            match c {
                'o' => r.output = true,
                'e' => r.error = true,
                _ => return Err(ParseError::new(s, "-R takes o, e or oe")),
            }
        }
        if s.is_empty() {
            return Err(ParseError::new(s, "-R takes o, e or oe"));
        }
        Ok(r)
    }
}

impl fmt::Display for RemoveFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.output {
            f.write_str("o")?;
        }
        if self.error {
            f.write_str("e")?;
        }
        Ok(())
    }
}

/// `-c`: checkpointing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Checkpoint {
    /// `n`: never.
    Never,
    /// `s`: when the server shuts down.
    Shutdown,
    /// `c`: at the execution host's default interval (CPU time).
    Cpu,
    /// `w`: at the execution host's default interval (wall time).
    Wall,
    /// `c=N`: every N minutes of CPU time.
    CpuMinutes(u64),
    /// `w=N`: every N minutes of wall time.
    WallMinutes(u64),
}

impl FromStr for Checkpoint {
    type Err = ParseError;

    /// `n`, `s`, `c`, `w`, `c=N` or `w=N` after leading blanks (`verify_value_checkpoint`;
    /// `u`, "unspecified", is what the server stores when `-c` is absent and `qsub` refuses it).
    fn from_str(text: &str) -> Result<Self, ParseError> {
        let s = text.trim_start_matches(|c: char| c.is_ascii_whitespace() || c == '\x0b');
        let minutes = |digits: &str| {
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(ParseError::new(text, "the interval is a number of minutes"));
            }
            digits
                .parse()
                .map_err(|_| ParseError::new(text, "the interval is too large"))
        };
        match s {
            "n" => Ok(Checkpoint::Never),
            "s" => Ok(Checkpoint::Shutdown),
            "c" => Ok(Checkpoint::Cpu),
            "w" => Ok(Checkpoint::Wall),
            _ => match s.split_at_checked(2) {
                Some(("c=", n)) => minutes(n).map(Checkpoint::CpuMinutes),
                Some(("w=", n)) => minutes(n).map(Checkpoint::WallMinutes),
                _ => Err(ParseError::new(text, "-c takes n, s, c, w, c=N or w=N")),
            },
        }
    }
}

impl fmt::Display for Checkpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Checkpoint::Never => f.write_str("n"),
            Checkpoint::Shutdown => f.write_str("s"),
            Checkpoint::Cpu => f.write_str("c"),
            Checkpoint::Wall => f.write_str("w"),
            Checkpoint::CpuMinutes(n) => write!(f, "c={n}"),
            Checkpoint::WallMinutes(n) => write!(f, "w={n}"),
        }
    }
}

/// `-W sandbox=`: where the job runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Sandbox {
    /// `HOME`: the user's home directory.
    Home,
    /// `O_WORKDIR`: the submission directory.
    OWorkdir,
    /// `PRIVATE`: a directory PBS creates for the job.
    Private,
}

impl FromStr for Sandbox {
    type Err = ParseError;

    /// Case-insensitive, as PBS compares it.
    fn from_str(s: &str) -> Result<Self, ParseError> {
        match s.to_ascii_uppercase().as_str() {
            "HOME" => Ok(Sandbox::Home),
            "O_WORKDIR" => Ok(Sandbox::OWorkdir),
            "PRIVATE" => Ok(Sandbox::Private),
            _ => Err(ParseError::new(s, "sandbox is HOME, O_WORKDIR or PRIVATE")),
        }
    }
}

impl fmt::Display for Sandbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Sandbox::Home => "HOME",
            Sandbox::OWorkdir => "O_WORKDIR",
            Sandbox::Private => "PRIVATE",
        })
    }
}

/// The value of one `-v` entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum VariableValue {
    /// `VAR` alone: the value is taken from `qsub`'s environment.
    Inherit,
    /// `VAR=value`, quotes removed and `\,` turned into `,`.
    Given(String),
}

/// One `-v` entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Variable {
    /// The variable's name.
    pub name: String,
    /// Its value, or where to take it from.
    pub value: VariableValue,
}

/// `-v`: the variables to export to the job.
///
/// ```
/// use hpcbox_pbs::qsub::{VariableList, VariableValue};
/// let v: VariableList = r#"A=1,B="x,y",HOME,C=a\,b"#.parse().unwrap();
/// assert_eq!(v.0[1].value, VariableValue::Given("x,y".into()));
/// assert_eq!(v.0[2].value, VariableValue::Inherit);
/// assert_eq!(v.0[3].value, VariableValue::Given("a,b".into()));
/// let env = v.resolve(|name| (name == "HOME").then(|| "/home/u".to_string())).unwrap();
/// assert_eq!(env[2], ("HOME".to_string(), "/home/u".to_string()));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct VariableList(pub Vec<Variable>);

/// The entries of a `-v` list, split on commas outside quotes and not after `\`
/// (`comma_token`).
fn comma_tokens(list: &str) -> Vec<&str> {
    let bytes = list.as_bytes();
    let mut tokens = Vec::new();
    let mut quote = 0u8;
    let mut start = 0;
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'\'' | b'"' => quote = if quote == b { 0 } else { b },
            b',' if quote == 0 => {
                tokens.push(&list[start..i]);
                start = i + 1;
            }
            b'\\' if i + 1 < bytes.len() => i += 1,
            _ => {}
        }
        i += 1;
    }
    if start < bytes.len() {
        tokens.push(&list[start..]);
    }
    tokens
}

/// A `-v` value with its quoting removed (`copy_env_value` without global quoting): a quote
/// starts or ends a quoted part, a quote of the other kind inside one is literal, `\,` is a
/// comma, and an unquoted comma ends the value. `None` when a quote is left open.
fn unquote_value(raw: &str) -> Option<String> {
    let mut out = String::new();
    let mut quote: Option<char> = None;
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quote) {
            ('"' | '\'', Some(q)) if q == c => quote = None,
            ('"' | '\'', Some(_)) => out.push(c),
            ('"' | '\'', None) => quote = Some(c),
            ('\\', _) if chars.peek() == Some(&',') => {
                out.push(',');
                chars.next();
            }
            (',', None) => break,
            _ => out.push(c),
        }
    }
    quote.is_none().then_some(out)
}

impl FromStr for VariableList {
    type Err = ParseError;

    fn from_str(list: &str) -> Result<Self, ParseError> {
        let mut vars = Vec::new();
        for token in comma_tokens(list) {
            let (name, value) = match token.split_once('=') {
                Some((name, raw)) => match unquote_value(raw) {
                    Some(v) => (name, VariableValue::Given(v)),
                    None => return Err(ParseError::new(token, "unterminated quote")),
                },
                None => (token, VariableValue::Inherit),
            };
            // An empty entry names no variable; qsub cannot take "" from its environment.
            if name.is_empty() {
                return Err(ParseError::new(token, "no variable name"));
            }
            vars.push(Variable {
                name: name.to_string(),
                value,
            });
        }
        Ok(VariableList(vars))
    }
}

impl fmt::Display for VariableList {
    /// The list as `-v` takes it back: values with a comma get `\,`, values with quotes are
    /// quoted with the other quote.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, var) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(&var.name)?;
            if let VariableValue::Given(value) = &var.value {
                let escaped = value.replace(',', "\\,");
                if value.contains('"') {
                    write!(f, "='{escaped}'")?;
                } else if value.contains('\'') {
                    write!(f, "=\"{escaped}\"")?;
                } else {
                    write!(f, "={escaped}")?;
                }
            }
        }
        Ok(())
    }
}

impl VariableList {
    /// The `name=value` pairs to send, taking inherited values from `lookup` (the caller's
    /// environment). As in PBS, inherited `PBS_O_*` names and the job cookies are dropped, and a
    /// name `lookup` does not know is an error (`qsub: cannot send environment with the job`).
    pub fn resolve(
        &self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Vec<(String, String)>, QsubError> {
        let mut out = Vec::new();
        for var in &self.0 {
            match &var.value {
                VariableValue::Given(v) => out.push((var.name.clone(), v.clone())),
                VariableValue::Inherit if is_reserved_variable(&var.name) => {}
                VariableValue::Inherit => match lookup(&var.name) {
                    Some(v) => out.push((var.name.clone(), v)),
                    None => return Err(environment_error(Vec::new())),
                },
            }
        }
        Ok(out)
    }
}

/// Names `qsub -v NAME` never takes from the environment: its own `PBS_O_*` and the job
/// cookies.
fn is_reserved_variable(name: &str) -> bool {
    ["PBS_O_", "PBS_JOBCOOKIE", "PBS_INTERACTIVE_COOKIE"]
        .iter()
        .any(|p| name.starts_with(p))
}

fn environment_error(mut lines: Vec<String>) -> QsubError {
    lines.push("qsub: cannot send environment with the job".into());
    QsubError::new(QsubErrorKind::Environment, &lines, false, 1)
}

/// One `-l name[=value]` resource as `qsub` sends it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ResourceRequest {
    /// The resource name.
    pub name: String,
    /// The value, quotes removed (empty for a bare name).
    pub value: String,
}

/// Why a `-l` value could not be split: PBS's error number and the byte offset it points at.
struct ResourceSyntaxError {
    code: u8,
    offset: usize,
}

/// Reads one value of a `-l` list from byte `start` (`pbs_quote_parse` with no blanks
/// allowed): returns the value and where it stopped.
fn quoted_value(bytes: &[u8], start: usize) -> Result<(Vec<u8>, usize), ResourceSyntaxError> {
    let mut i = start;
    while bytes.get(i).is_some_and(|&b| is_c_space(b)) {
        i += 1;
    }
    let mut out = Vec::new();
    let mut quote: Option<u8> = None;
    while let Some(&b) = bytes.get(i) {
        let printable = (0x20..0x7f).contains(&b);
        if !printable && !is_c_space(b) {
            return Err(ResourceSyntaxError { code: 2, offset: i });
        }
        match quote {
            Some(q) if b == q => quote = None,
            Some(_) if b == b'&' => return Err(ResourceSyntaxError { code: 2, offset: i }),
            Some(_) => out.push(b),
            None if b == b'"' || b == b'\'' => quote = Some(b),
            None if b == b',' || is_c_space(b) => return Ok((out, i)),
            None if b == b'&' => return Err(ResourceSyntaxError { code: 2, offset: i }),
            None => out.push(b),
        }
        i += 1;
    }
    if quote.is_some() {
        return Err(ResourceSyntaxError { code: 4, offset: i });
    }
    Ok((out, i))
}

/// Whether `b` is a blank as C's `isspace` sees it.
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// Splits a `-l` value into resources (`set_resources`).
fn split_resources(text: &str) -> Result<Vec<ResourceRequest>, ResourceSyntaxError> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut r = 0;
    while r < bytes.len() {
        while bytes.get(r).is_some_and(|&b| is_c_space(b)) {
            r += 1;
        }
        let eq = bytes[r..]
            .iter()
            .position(|&b| b == b'=' || b == b',')
            .map_or(bytes.len(), |p| r + p);
        if eq == r {
            return Err(ResourceSyntaxError { code: 1, offset: r });
        }
        let name_end = bytes[r..eq]
            .iter()
            .position(|&b| is_c_space(b))
            .map_or(eq, |p| r + p);
        let name = String::from_utf8_lossy(&bytes[r..name_end]).into_owned();
        let (value, next) = if bytes.get(eq) == Some(&b'=') {
            let mut t = eq + 1;
            while bytes.get(t).is_some_and(|&b| is_c_space(b)) {
                t += 1;
            }
            if bytes[r..].starts_with(b"preempt_targets") {
                (bytes[t..].to_vec(), bytes.len())
            } else {
                quoted_value(bytes, t)?
            }
        } else {
            (Vec::new(), eq)
        };
        out.push(ResourceRequest {
            name,
            value: String::from_utf8_lossy(&value).into_owned(),
        });
        r = next;
        if bytes.get(r) == Some(&b',') {
            r += 1;
            if r == bytes.len() {
                return Err(ResourceSyntaxError { code: 1, offset: r });
            }
        }
    }
    Ok(out)
}

/// The lines `qsub` prints for a `-l` value it cannot split (`pbs_prt_parse_err`).
fn resource_error_lines(value: &str, err: &ResourceSyntaxError) -> Vec<String> {
    if err.code == 1 {
        return vec!["qsub: illegal -l value".into()];
    }
    let what = if err.code == 2 {
        "illegal character"
    } else {
        "no closing quote"
    };
    vec![
        "qsub: illegal -l value".into(),
        format!(" {what}:"),
        value.to_string(),
        format!("{}^", " ".repeat(err.offset)),
    ]
}

/// What follows the options on the command line.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum Operand {
    /// Nothing: the script is read from standard input.
    #[default]
    None,
    /// `-`: the script is read from standard input.
    Stdin,
    /// A script file.
    Script(String),
    /// `-- program [args…]`: run this instead of a script.
    Command {
        /// The program.
        program: String,
        /// Its arguments.
        args: Vec<String>,
    },
}

impl Operand {
    /// The job name `qsub` gives when there is no `-N`: the script's base name, or `STDIN`.
    pub fn default_job_name(&self) -> String {
        match self {
            Operand::Script(path) => path.rsplit('/').next().unwrap_or(path).to_string(),
            _ => STDIN_JOB_NAME.to_string(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The options

/// Every option `qsub` takes, as set by the command line and directives.
///
/// A field is `None`/`false`/empty when the option was not given; defaults (no hold, `-j n`,
/// `-k n`, `-m a`, priority 0, rerunnable) are the server's business and are not filled in.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct QsubOptions {
    /// `-a`: do not run before this time (`Execution_Time`).
    pub execution_time: Option<ExecutionTime>,
    /// `-A`: the account string (`Account_Name`).
    pub account: Option<String>,
    /// `-c`: checkpointing (`Checkpoint`).
    pub checkpoint: Option<Checkpoint>,
    /// `-C`: the directive prefix (only the command line's changes how the script is read).
    pub directive_prefix: Option<String>,
    /// `-e`: the error path (`Error_Path`).
    pub error_path: Option<String>,
    /// `-f`: stay in the foreground.
    pub foreground: bool,
    /// `-h`: submit with a user hold (`Hold_Types=u`).
    pub hold: bool,
    /// `-I` or `-W interactive=true`: an interactive job.
    pub interactive: bool,
    /// `-j`: join output and error (`Join_Path`).
    pub join: Option<Join>,
    /// `-J`: an array job with these indices (and `%max`, `max_run_subjobs`).
    pub array: Option<ArrayRange>,
    /// `-k`: keep files on the execution host (`Keep_Files`).
    pub keep: Option<Keep>,
    /// `-l`: the resources, in the order `qsub` sends them (see [`QsubOptions::resource`]).
    pub resources: Vec<ResourceRequest>,
    /// `-m`: mail points (`Mail_Points`).
    pub mail_points: Option<MailPoints>,
    /// `-M`: mail recipients (`Mail_Users`).
    pub mail_users: Option<String>,
    /// `-N`: the job name (`Job_Name`).
    pub name: Option<String>,
    /// `-o`: the output path (`Output_Path`).
    pub output_path: Option<String>,
    /// `-p`: priority, −1024 to 1023 (`Priority`).
    pub priority: Option<i32>,
    /// `-P`: the project (`project`).
    pub project: Option<String>,
    /// `-q`: the destination as written, `queue`, `@server` or `queue@server` (see
    /// [`QsubOptions::destination`]).
    pub queue: Option<String>,
    /// `-r`: whether the job can be rerun (`Rerunable`).
    pub rerunnable: Option<bool>,
    /// `-R`: output files to remove (`Remove_Files`).
    pub remove_files: Option<RemoveFiles>,
    /// `-S`: the shell path list (`Shell_Path_List`).
    pub shell: Option<String>,
    /// `-u`: the user list (`User_List`).
    pub user_list: Option<String>,
    /// `-v`: variables to export (`Variable_List`). A later `-v` replaces an earlier one
    /// whole; lists are not combined.
    pub variables: Option<VariableList>,
    /// `-V`: export all of `qsub`'s environment.
    pub export_all: bool,
    /// `-W depend=`.
    pub depend: Option<DependList>,
    /// `-W stagein=`.
    pub stagein: Option<String>,
    /// `-W stageout=`.
    pub stageout: Option<String>,
    /// `-W sandbox=`.
    pub sandbox: Option<Sandbox>,
    /// `-W group_list=`.
    pub group_list: Option<String>,
    /// `-W block=true`: wait for the job to end and exit with its status.
    pub block: bool,
    /// `-W max_run_subjobs=`.
    pub max_run_subjobs: Option<u32>,
    /// Every other `-W name=value` (`umask`, `run_count`, `cred`, …) in the order sent; the
    /// server keeps the last of each name.
    pub attributes: Vec<(String, String)>,
    /// `-X`: X11 forwarding (interactive jobs only). `qsub` also needs `DISPLAY` set; the
    /// caller checks that (`qsub: DISPLAY not set`, a usage error).
    pub x11: bool,
    /// `-z`: do not print the job id.
    pub quiet: bool,
}

impl QsubOptions {
    /// The value the server ends up with for resource `name` (the last one sent).
    pub fn resource(&self, name: &str) -> Option<&str> {
        self.resources
            .iter()
            .rev()
            .find(|r| r.name == name)
            .map(|r| r.value.as_str())
    }

    /// The resources with repeated names collapsed to the value the server keeps, in the order
    /// of first appearance.
    pub fn effective_resources(&self) -> Vec<ResourceRequest> {
        let mut out: Vec<ResourceRequest> = Vec::new();
        for r in &self.resources {
            match out.iter_mut().find(|o| o.name == r.name) {
                Some(o) => o.value = r.value.clone(),
                None => out.push(r.clone()),
            }
        }
        out
    }

    /// The resources decoded by kind with the built-in resource table, as the library checks
    /// them before sending the job. A value it refuses gives
    /// `qsub: Illegal attribute or resource value Resource_List.<name>`, exit 166
    /// (`PBSE_BADATVAL` & 255).
    pub fn resource_list(&self) -> Result<ResourceList, QsubError> {
        self.resource_list_with(&ResourceDefs::builtin())
    }

    /// [`QsubOptions::resource_list`] with the site's resource table.
    pub fn resource_list_with(&self, defs: &ResourceDefs) -> Result<ResourceList, QsubError> {
        let mut list = ResourceList::new();
        for r in self.effective_resources() {
            let name = defs.canonical_name(&r.name);
            match ResourceValue::parse(&name, defs.kind_of(&r.name), &r.value, defs) {
                Ok(value) => list.set(name, value),
                Err(_) => {
                    return Err(QsubError::new(
                        QsubErrorKind::ResourceValue {
                            resource: r.name.clone(),
                        },
                        &[format!(
                            "qsub: Illegal attribute or resource value Resource_List.{}",
                            r.name
                        )],
                        false,
                        PBSE_BADATVAL & 0xff,
                    ))
                }
            }
        }
        Ok(list)
    }

    /// The `-W` attribute `name` as the server keeps it (the last one sent).
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The `-q` destination, parsed; an absent `-q` is the default queue of the default server.
    pub fn destination(&self) -> Result<Destination, QsubError> {
        match &self.queue {
            None => Ok(Destination::default()),
            Some(q) => q.parse().map_err(|_| {
                QsubError::new(
                    QsubErrorKind::Destination,
                    &[format!("qsub: illegally formed destination: {q}")],
                    false,
                    2,
                )
            }),
        }
    }

    /// Options set only by directives, as `qsub` would read them with no command-line options.
    pub fn from_directives(directives: &[Directive]) -> Result<QsubOptions, QsubError> {
        let mut state = Processor::default();
        for d in directives {
            state.directive(d)?;
        }
        state.finish(None, None).map(|(opts, _)| opts)
    }

    /// Combines options from directives with options from the command line, with PBS's
    /// precedence: an option set on the command line wins over the directives; `-l` resources
    /// merge by name (command line first, then directive resources whose name the command line
    /// does not set); `-v` is taken whole from one side; other `-W` attributes are all sent,
    /// command line first.
    ///
    /// [`QsubArgs::finish`] does this while reading the script, with PBS's error order; this is
    /// the same merge for options held apart.
    pub fn merge(directives: &QsubOptions, command_line: &QsubOptions) -> QsubOptions {
        fn pick<T: Clone>(cli: &Option<T>, dir: &Option<T>) -> Option<T> {
            cli.clone().or_else(|| dir.clone())
        }
        let c = command_line;
        let d = directives;
        let mut resources = c.resources.clone();
        for r in &d.resources {
            if !resources.iter().any(|x| x.name == r.name) {
                resources.push(r.clone());
            }
        }
        let mut attributes = c.attributes.clone();
        attributes.extend(d.attributes.iter().cloned());
        QsubOptions {
            execution_time: pick(&c.execution_time, &d.execution_time),
            account: pick(&c.account, &d.account),
            checkpoint: pick(&c.checkpoint, &d.checkpoint),
            directive_prefix: pick(&c.directive_prefix, &d.directive_prefix),
            error_path: pick(&c.error_path, &d.error_path),
            foreground: c.foreground || d.foreground,
            hold: c.hold || d.hold,
            interactive: c.interactive || d.interactive,
            join: pick(&c.join, &d.join),
            array: pick(&c.array, &d.array),
            keep: pick(&c.keep, &d.keep),
            resources,
            mail_points: pick(&c.mail_points, &d.mail_points),
            mail_users: pick(&c.mail_users, &d.mail_users),
            name: pick(&c.name, &d.name),
            output_path: pick(&c.output_path, &d.output_path),
            priority: pick(&c.priority, &d.priority),
            project: pick(&c.project, &d.project),
            queue: pick(&c.queue, &d.queue),
            rerunnable: pick(&c.rerunnable, &d.rerunnable),
            remove_files: pick(&c.remove_files, &d.remove_files),
            shell: pick(&c.shell, &d.shell),
            user_list: pick(&c.user_list, &d.user_list),
            variables: pick(&c.variables, &d.variables),
            export_all: c.export_all || d.export_all,
            depend: pick(&c.depend, &d.depend),
            stagein: pick(&c.stagein, &d.stagein),
            stageout: pick(&c.stageout, &d.stageout),
            sandbox: pick(&c.sandbox, &d.sandbox),
            group_list: pick(&c.group_list, &d.group_list),
            block: (c.block || d.block) && !(c.interactive || d.interactive),
            max_run_subjobs: pick(&c.max_run_subjobs, &d.max_run_subjobs),
            attributes,
            x11: c.x11 || d.x11,
            quiet: c.quiet || d.quiet,
        }
    }

    /// The options as a `qsub` argument list (without the program name), one option per
    /// argument pair in getopt order; parsing it gives these options back. This is also how
    /// `Submit_arguments` is shown.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        let mut push = |opt: &str, value: Option<String>| {
            args.push(opt.to_string());
            if let Some(v) = value {
                args.push(v);
            }
        };
        if let Some(t) = self.execution_time {
            push("-a", Some(t.to_string()));
        }
        if let Some(v) = Option::clone(&self.account) {
            push("-A", Some(v));
        }
        if let Some(c) = self.checkpoint {
            push("-c", Some(c.to_string()));
        }
        if let Some(v) = Option::clone(&self.directive_prefix) {
            push("-C", Some(v));
        }
        if let Some(v) = Option::clone(&self.error_path) {
            push("-e", Some(v));
        }
        if self.foreground {
            push("-f", None);
        }
        if self.hold {
            push("-h", None);
        }
        if self.interactive {
            push("-I", None);
        }
        if let Some(j) = self.join {
            push("-j", Some(j.to_string()));
        }
        if let Some(a) = self.array {
            push("-J", Some(a.to_string()));
        }
        if let Some(k) = self.keep {
            push("-k", Some(k.to_string()));
        }
        for r in &self.resources {
            push("-l", Some(render_resource(r)));
        }
        if let Some(m) = self.mail_points {
            push("-m", Some(m.to_string()));
        }
        if let Some(v) = Option::clone(&self.mail_users) {
            push("-M", Some(v));
        }
        if let Some(v) = Option::clone(&self.name) {
            push("-N", Some(v));
        }
        if let Some(v) = Option::clone(&self.output_path) {
            push("-o", Some(v));
        }
        if let Some(p) = self.priority {
            push("-p", Some(p.to_string()));
        }
        if let Some(v) = Option::clone(&self.project) {
            push("-P", Some(v));
        }
        if let Some(v) = Option::clone(&self.queue) {
            push("-q", Some(v));
        }
        if let Some(r) = self.rerunnable {
            push("-r", Some(if r { "y" } else { "n" }.to_string()));
        }
        if let Some(r) = self.remove_files {
            push("-R", Some(r.to_string()));
        }
        if let Some(v) = Option::clone(&self.shell) {
            push("-S", Some(v));
        }
        if let Some(v) = Option::clone(&self.user_list) {
            push("-u", Some(v));
        }
        if let Some(v) = &self.variables {
            push("-v", Some(v.to_string()));
        }
        if self.export_all {
            push("-V", None);
        }
        let w: [(&str, Option<String>); 7] = [
            ("depend", self.depend.as_ref().map(ToString::to_string)),
            ("stagein", self.stagein.clone()),
            ("stageout", self.stageout.clone()),
            ("sandbox", self.sandbox.map(|s| s.to_string())),
            ("group_list", self.group_list.clone()),
            ("block", self.block.then(|| "true".to_string())),
            (
                "max_run_subjobs",
                self.max_run_subjobs.map(|n| n.to_string()),
            ),
        ];
        for (key, value) in w {
            if let Some(v) = value {
                push("-W", Some(format!("{key}={v}")));
            }
        }
        for (key, value) in &self.attributes {
            push("-W", Some(format!("{key}={value}")));
        }
        if self.x11 {
            push("-X", None);
        }
        if self.quiet {
            push("-z", None);
        }
        args
    }
}

/// A resource as a `-l` argument: the value is quoted when it holds a comma or a blank.
fn render_resource(r: &ResourceRequest) -> String {
    let needs_quotes = r.value.bytes().any(|b| b == b',' || is_c_space(b));
    if needs_quotes && !r.value.contains('"') {
        format!("{}=\"{}\"", r.name, r.value)
    } else if needs_quotes {
        format!("{}='{}'", r.name, r.value)
    } else if r.value.is_empty() {
        r.name.clone()
    } else {
        format!("{}={}", r.name, r.value)
    }
}

/// Checks a job name as the library does for a submission (`verify_value_jobname`,
/// `check_job_name`): not empty, at most [`MAX_JOB_NAME`] characters, only letters, digits and
/// `-_+.` (a digit may come first: that is only refused for `qalter`-style requests).
pub fn check_job_name(name: &str) -> Result<(), QsubError> {
    if name.len() > MAX_JOB_NAME {
        return Err(QsubError::new(
            QsubErrorKind::JobNameTooLong,
            &["qsub: Job name is too long ".to_string()],
            false,
            2,
        ));
    }
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '+' | '.');
    if name.is_empty() || !name.chars().all(ok) {
        return Err(illegal_value('N'));
    }
    Ok(())
}

/// The error for a `-W depend=` value the library refuses; for a subjob it first prints its
/// own line, as `parse_depend_item` does.
fn depend_error(e: &ParseError) -> QsubError {
    let mut lines = Vec::new();
    if e.reason == crate::depend::SUBJOB_DEPENDENCY {
        lines.push(e.reason.clone());
    }
    lines.push(BAD_W.to_string());
    QsubError::new(QsubErrorKind::IllegalValue { option: 'W' }, &lines, true, 2)
}

/// `qsub: illegal -<option> value` followed by the usage, exit 2.
fn illegal_value(option: char) -> QsubError {
    QsubError::new(
        QsubErrorKind::IllegalValue { option },
        &[format!("qsub: illegal -{option} value")],
        true,
        2,
    )
}

// ---------------------------------------------------------------------------------------------
// Option processing

/// Who set an option: PBS lets the command line win over directives, and a later directive
/// win over an earlier one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    CommandLine,
    Directive,
}

/// What one pass produced besides the options: messages for the user and whether the pass
/// failed.
#[derive(Default)]
struct PassResult {
    lines: Vec<String>,
    failed: bool,
}

impl PassResult {
    fn fail(&mut self, line: impl Into<String>) {
        self.lines.push(line.into());
        self.failed = true;
    }
}

/// The state `qsub` builds while it reads the command line and then the directives.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Processor {
    /// What the command line set (those options no directive may change).
    cli: QsubOptions,
    /// Everything set so far.
    opts: QsubOptions,
    /// `-r` as last set (PBS's `roptarg`).
    rerun_no: bool,
    /// Whether `-r y` was given (PBS's `roptarg_inter`).
    rerun_yes: bool,
    /// Whether a `max_run_subjobs` was set by `-J …%N` or `-W` (PBS's `max_run_opt`).
    max_run_seen: bool,
    /// Values the library will refuse when the job is sent, first first.
    pending: Vec<QsubError>,
    /// Warnings printed along the way.
    warnings: Vec<String>,
}

/// Whether the pass `pass` may set an option the command line set when `cli_set` is true.
fn may_set(pass: Pass, cli_set: bool) -> bool {
    pass == Pass::CommandLine || !cli_set
}

impl Processor {
    /// Records a value the library would refuse (reported after the script is read).
    fn defer(&mut self, error: QsubError) {
        self.pending.push(error);
    }

    /// Acts on one option, as `process_opts` does for one `case`.
    fn apply(
        &mut self,
        c: char,
        value: Option<String>,
        pass: Pass,
        out: &mut PassResult,
    ) -> Result<(), QsubError> {
        let v = value.unwrap_or_default();
        let cli = self.cli.clone();
        let opts = &mut self.opts;
        match c {
            'a' if may_set(pass, cli.execution_time.is_some()) => match v.parse() {
                Ok(t) => opts.execution_time = Some(t),
                Err(_) => out.fail("qsub: illegal -a value"),
            },
            'A' if may_set(pass, cli.account.is_some()) => opts.account = Some(v),
            'P' if may_set(pass, cli.project.is_some()) => opts.project = Some(v),
            'c' if may_set(pass, cli.checkpoint.is_some()) => {
                if v.trim_start_matches(|c: char| c.is_ascii() && is_c_space(c as u8)) == "u" {
                    out.fail("qsub: illegal -c value");
                } else {
                    match v.parse() {
                        Ok(cp) => opts.checkpoint = Some(cp),
                        Err(_) => self.pending.push(illegal_value('c')),
                    }
                }
            }
            'C' if may_set(pass, cli.directive_prefix.is_some()) => opts.directive_prefix = Some(v),
            'e' if may_set(pass, cli.error_path.is_some()) => {
                if v.is_empty() {
                    self.pending.push(illegal_value('e'));
                }
                opts.error_path = Some(v);
            }
            'o' if may_set(pass, cli.output_path.is_some()) => {
                if v.is_empty() {
                    self.pending.push(illegal_value('o'));
                }
                opts.output_path = Some(v);
            }
            'h' if may_set(pass, cli.hold) => opts.hold = true,
            'f' => opts.foreground = true,
            'I' => self.interactive(pass, out),
            'j' if may_set(pass, cli.join.is_some()) => match v.parse() {
                Ok(j) => opts.join = Some(j),
                Err(_) => self.defer(illegal_value('j')),
            },
            'J' => self.array(&v, pass, out),
            'k' if may_set(pass, cli.keep.is_some()) => match v.parse() {
                Ok(k) => opts.keep = Some(k),
                Err(_) => self.defer(illegal_value('k')),
            },
            'l' => self.resources(&v, pass, out),
            'm' if may_set(pass, cli.mail_points.is_some()) => match v.parse() {
                Ok(m) => opts.mail_points = Some(m),
                Err(_) => self.defer(illegal_value('m')),
            },
            'M' if may_set(pass, cli.mail_users.is_some()) => {
                if v.is_empty() {
                    self.pending.push(illegal_value('M'));
                }
                opts.mail_users = Some(v);
            }
            'N' if may_set(pass, cli.name.is_some()) => opts.name = Some(v),
            'p' if may_set(pass, cli.priority.is_some()) => match parse_priority(&v) {
                Some(p) => opts.priority = Some(p),
                None => self.defer(illegal_value('p')),
            },
            'q' if may_set(pass, cli.queue.is_some()) => opts.queue = Some(v),
            'r' if may_set(pass, cli.rerunnable.is_some()) => self.rerun(&v, out),
            'R' if may_set(pass, cli.remove_files.is_some()) => match v.parse() {
                Ok(r) => opts.remove_files = Some(r),
                Err(_) => self.defer(illegal_value('R')),
            },
            'S' if may_set(pass, cli.shell.is_some()) => {
                if v.is_empty() {
                    self.pending.push(illegal_value('S'));
                }
                opts.shell = Some(v);
            }
            'u' if may_set(pass, cli.user_list.is_some()) => {
                if v.is_empty() {
                    self.pending.push(illegal_value('u'));
                }
                opts.user_list = Some(v);
            }
            'v' if may_set(pass, cli.variables.is_some()) => match v.parse() {
                Ok(list) => opts.variables = Some(list),
                Err(_) => return Err(environment_error(std::mem::take(&mut out.lines))),
            },
            'V' if may_set(pass, cli.export_all) => opts.export_all = true,
            'W' => self.w_option(&v, pass, out),
            'X' if may_set(pass, cli.x11) => opts.x11 = true,
            'z' if may_set(pass, cli.quiet) => opts.quiet = true,
            _ => {}
        }
        Ok(())
    }

    fn interactive(&mut self, pass: Pass, out: &mut PassResult) {
        if self.opts.array.is_some() {
            out.fail(INTER_ARRAY);
            return;
        }
        if !may_set(pass, self.cli.interactive) {
            return;
        }
        self.opts.interactive = true;
        if self.opts.block {
            self.warnings.push(INTER_BLOCK_WARN.into());
            self.opts.block = false;
        }
        if self.rerun_yes {
            self.warnings.push(INTER_RERUN_WARN.into());
        }
    }

    fn array(&mut self, v: &str, pass: Pass, out: &mut PassResult) {
        if self.opts.interactive {
            out.fail(INTER_ARRAY);
            return;
        }
        if self.rerun_no {
            out.fail(NO_RERUN_ARRAY);
            return;
        }
        if !may_set(pass, self.cli.array.is_some()) {
            return;
        }
        let has_max = v.contains('%');
        match v.parse::<ArrayRange>() {
            Ok(range) => {
                if has_max && self.max_run_seen {
                    out.fail(MULTIPLE_MAX_RUN);
                    return;
                }
                self.max_run_seen |= has_max;
                self.opts.array = Some(range);
            }
            Err(_) => self.defer(illegal_value('J')),
        }
    }

    fn rerun(&mut self, v: &str, out: &mut PassResult) {
        match v {
            "y" => {
                self.rerun_yes = true;
                self.rerun_no = false;
                if self.opts.interactive {
                    self.warnings.push(INTER_RERUN_WARN.into());
                }
                self.opts.rerunnable = Some(true);
            }
            "n" if self.opts.array.is_some() => out.fail(NO_RERUN_ARRAY),
            "n" => {
                self.rerun_no = true;
                self.opts.rerunnable = Some(false);
            }
            _ => out.fail("qsub: illegal -r value"),
        }
    }

    fn resources(&mut self, v: &str, pass: Pass, out: &mut PassResult) {
        match split_resources(v) {
            Ok(list) => {
                for r in list {
                    let known = self.opts.resources.iter().any(|x| x.name == r.name);
                    if pass == Pass::CommandLine || !known {
                        self.opts.resources.push(r);
                    }
                }
            }
            Err(e) => {
                out.lines.extend(resource_error_lines(v, &e));
                out.failed = true;
            }
        }
    }

    fn w_option(&mut self, v: &str, pass: Pass, out: &mut PassResult) {
        let v = v.trim_start_matches(|c: char| c.is_ascii() && is_c_space(c as u8));
        if v.is_empty() {
            out.fail(BAD_W);
            return;
        }
        let Some(pairs) = parse_equal_string(v) else {
            out.fail(BAD_W);
            return;
        };
        for (key, value) in pairs {
            if !self.w_pair(&key, &value, pass, out) {
                return;
            }
        }
    }

    /// One `-W name=value`; false when the rest of the `-W` value is skipped after an error.
    fn w_pair(&mut self, key: &str, value: &str, pass: Pass, out: &mut PassResult) -> bool {
        let cli = self.cli.clone();
        let opts = &mut self.opts;
        match key {
            "depend" if may_set(pass, cli.depend.is_some()) => match value.parse::<DependList>() {
                Ok(d) => opts.depend = Some(d),
                Err(e) => self.pending.push(depend_error(&e)),
            },
            "stagein" if may_set(pass, cli.stagein.is_some()) => {
                opts.stagein = Some(value.to_string())
            }
            "stageout" if may_set(pass, cli.stageout.is_some()) => {
                opts.stageout = Some(value.to_string())
            }
            "sandbox" if may_set(pass, cli.sandbox.is_some()) => match value.parse() {
                Ok(s) => opts.sandbox = Some(s),
                Err(_) => self.pending.push(illegal_value('W')),
            },
            "group_list" if may_set(pass, cli.group_list.is_some()) => {
                opts.group_list = Some(value.to_string())
            }
            "interactive" if may_set(pass, cli.interactive) => {
                if opts.array.is_some() {
                    out.fail(INTER_ARRAY);
                    return false;
                }
                if value.eq_ignore_ascii_case("true") {
                    opts.interactive = true;
                } else if !value.eq_ignore_ascii_case("false") {
                    out.fail(BAD_W);
                    return false;
                }
                if self.rerun_yes {
                    self.warnings.push(INTER_RERUN_WARN.into());
                }
                if opts.block && opts.interactive {
                    self.warnings.push(INTER_BLOCK_WARN.into());
                    opts.block = false;
                    return false;
                }
            }
            "block" if may_set(pass, cli.block) => {
                if value.eq_ignore_ascii_case("true") {
                    opts.block = true;
                } else if !value.eq_ignore_ascii_case("false") {
                    out.fail(BAD_W);
                    return false;
                }
                if opts.interactive && opts.block {
                    self.warnings.push(INTER_BLOCK_WARN.into());
                    opts.block = false;
                    return false;
                }
            }
            "reserve_start" | "reserve_end" => {
                if value.parse::<ExecutionTime>().is_err() {
                    out.fail(BAD_W);
                    return false;
                }
                opts.attributes.push((key.to_string(), value.to_string()));
            }
            "max_run_subjobs" => {
                if self.max_run_seen {
                    out.fail(MULTIPLE_MAX_RUN);
                    return false;
                }
                self.max_run_seen = true;
                match value.parse() {
                    Ok(n) => self.opts.max_run_subjobs = Some(n),
                    Err(_) => self.pending.push(illegal_value('W')),
                }
            }
            "depend" | "stagein" | "stageout" | "sandbox" | "group_list" | "interactive"
            | "block" => {}
            _ => opts.attributes.push((key.to_string(), value.to_string())),
        }
        true
    }

    /// The checks `process_opts` makes after the options of one pass.
    fn after_pass(&mut self, pass: Pass, out: &PassResult) -> Result<(), QsubError> {
        if pass == Pass::CommandLine && self.opts.x11 && !self.opts.interactive && !out.failed {
            let mut lines = out.lines.clone();
            lines.push("qsub: X11 Forwarding possible only for interactive jobs".into());
            return Err(QsubError::new(
                QsubErrorKind::X11WithoutInteractive,
                &lines,
                false,
                1,
            ));
        }
        let mail_j = self.opts.mail_points.is_some_and(|m| m.subjobs);
        if !out.failed && self.opts.array.is_none() && mail_j {
            let mut lines = out.lines.clone();
            lines.push("qsub: mail option 'j' can not be used without array job".into());
            return Err(QsubError::new(
                QsubErrorKind::MailWithoutArray,
                &lines,
                false,
                1,
            ));
        }
        Ok(())
    }

    /// Acts on one directive (`do_dir` with the script's priority).
    fn directive(&mut self, d: &Directive) -> Result<(), QsubError> {
        self.low_priority_pass(&d.args, QsubErrorKind::Directive { line: d.line }, 1)
    }

    /// Acts on the server's `default_qsub_arguments` (`do_dir` with the lowest priority):
    /// they only set what neither the command line nor the script set.
    fn defaults(&mut self, text: &str) -> Result<(), QsubError> {
        let args = crate::script::split_directive(text).map_err(|_| {
            QsubError::new(
                QsubErrorKind::DefaultArguments,
                &["qsub: unmatched \0".to_string()],
                false,
                1,
            )
        })?;
        self.cli = self.opts.clone();
        self.low_priority_pass(&args, QsubErrorKind::DefaultArguments, 255)
    }

    /// One pass below the command line: options first, then PBS's checks that the pass holds
    /// options only. A refused pass prints its messages and the directive error line.
    fn low_priority_pass(
        &mut self,
        args: &[String],
        kind: QsubErrorKind,
        exit_code: i32,
    ) -> Result<(), QsubError> {
        let g = getopt("qsub", GETOPT_ARGS, args);
        let mut out = PassResult::default();
        for opt in g.opts {
            match opt {
                Opt::Invalid(line) => out.fail(line),
                Opt::Flag(c, v) => self.apply(c, v, Pass::Directive, &mut out)?,
            }
        }
        self.after_pass(Pass::Directive, &out)?;
        let stray = g.last_value_ddash || !g.operands.is_empty() || g.ended_by_ddash;
        if out.failed || stray {
            let mut lines = out.lines;
            lines.push(directive_error_line(args));
            return Err(QsubError::new(kind, &lines, false, exit_code));
        }
        Ok(())
    }

    /// The checks made once all options are read: the destination, then the values the
    /// library refuses, the job name first (`default_name` when there is no `-N`).
    fn finish(
        mut self,
        default_name: Option<&str>,
        default_qsub_arguments: Option<&str>,
    ) -> Result<(QsubOptions, Vec<String>), QsubError> {
        self.opts.destination()?;
        if let Some(defaults) = default_qsub_arguments {
            self.defaults(defaults)?;
        }
        if let Some(name) = self.opts.name.as_deref().or(default_name) {
            check_job_name(name)?;
        }
        if let Some(first) = self.pending.into_iter().next() {
            return Err(first);
        }
        self.opts.resource_list()?;
        Ok((self.opts, self.warnings))
    }
}

/// `-p`: an optionally signed decimal number after leading blanks, −1024 to 1023.
fn parse_priority(v: &str) -> Option<i32> {
    let t = v.trim_start_matches(|c: char| c.is_ascii() && is_c_space(c as u8));
    let digits = t.strip_prefix(['-', '+']).unwrap_or(t);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let p: i32 = t.parse().ok()?;
    (-1024..=1023).contains(&p).then_some(p)
}

/// Splits a `-W` value into `name=value` pairs exactly as `parse_equal_string` does: a value
/// runs to the last comma before the next `=`; blanks around names and `=` are dropped, and
/// blanks before such a comma; a value may open with a quote, whose closing quote then reads as
/// a blank. `None` where PBS reports an error.
fn parse_equal_string(text: &str) -> Option<Vec<(String, String)>> {
    // A NUL-terminated copy, changed in place as the C code changes its buffer; C sees
    // nothing after a NUL.
    let visible = text.split('\0').next().unwrap_or_default();
    let mut b: Vec<u8> = visible.as_bytes().to_vec();
    b.push(0);
    let c_str = |b: &[u8], from: usize| {
        let end = b[from..]
            .iter()
            .position(|&c| c == 0)
            .map_or(b.len(), |p| from + p);
        String::from_utf8_lossy(&b[from..end]).into_owned()
    };
    let mut pairs = Vec::new();
    let mut pc = 0usize;
    loop {
        while is_c_space(b[pc]) {
            pc += 1;
        }
        match b[pc] {
            0 => return Some(pairs),
            b'=' | b',' => return None,
            _ => {}
        }
        let name = pc;
        while !is_c_space(b[pc]) && b[pc] != b'=' && b[pc] != 0 {
            pc += 1;
        }
        while is_c_space(b[pc]) {
            b[pc] = 0;
            pc += 1;
        }
        if b[pc] != b'=' {
            return None;
        }
        b[pc] = 0;
        pc += 1;
        while is_c_space(b[pc]) {
            pc += 1;
        }
        let quote = b[pc];
        let quoting = quote == b'"' || quote == b'\'';
        if quoting {
            pc += 1;
        }
        let value = pc;
        if quoting {
            while b[pc] != quote && b[pc] != 0 {
                pc += 1;
            }
            if b[pc] == 0 {
                return None;
            }
            b[pc] = b' ';
        }
        while b[pc] != b'=' && b[pc] != 0 {
            pc += 1;
        }
        if b[pc] == 0 {
            // The last pair: nothing is stripped, but a trailing comma is an error.
            let mut back = pc;
            loop {
                back -= 1;
                if !is_c_space(b[back]) {
                    break;
                }
            }
            if b[back] == b',' {
                return None;
            }
            pairs.push((c_str(&b, name), c_str(&b, value)));
            return Some(pairs);
        }
        // Back up to the comma that ends this value.
        loop {
            pc -= 1;
            if b[pc] == b',' {
                break;
            }
            if pc <= value {
                return None;
            }
        }
        let mut backup = pc;
        b[backup] = 0;
        pc += 1;
        loop {
            backup -= 1;
            if !is_c_space(b[backup]) {
                break;
            }
            b[backup] = 0;
        }
        pairs.push((c_str(&b, name), c_str(&b, value)));
    }
}

// ---------------------------------------------------------------------------------------------
// The command line

/// A parsed `qsub` command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QsubArgs {
    /// `--version` was the only argument: print `pbs_version = …` and exit 0.
    pub version: bool,
    /// The options on the command line.
    pub options: QsubOptions,
    /// The script or command.
    pub operand: Operand,
    /// Warnings `qsub` printed while reading the options.
    pub warnings: Vec<String>,
    /// The state the directives are read in.
    processor: Processor,
}

impl QsubArgs {
    /// The directive prefix to read the script with: `-C` from the command line, else
    /// `pbs_dprefix` (the caller's `$PBS_DPREFIX`), else `#PBS`.
    pub fn directive_prefix(&self, pbs_dprefix: Option<&str>) -> DirectivePrefix {
        DirectivePrefix::resolve(self.options.directive_prefix.as_deref(), pbs_dprefix)
    }

    /// Acts on the script's directives after the command line, as `qsub` does, then makes the
    /// checks `qsub` makes before sending the job. Gives the options the job is submitted with
    /// or the error `qsub` would print.
    ///
    /// Order of errors, as in PBS: a directive's error (exit 1), the script's own error
    /// (CR LF, unmatched quote), the destination, then the first value the library refuses.
    pub fn finish(&self, scan: &Scan) -> Result<QsubOptions, QsubError> {
        self.finish_with(scan, None).map(|(opts, _)| opts)
    }

    /// [`QsubArgs::finish`] with the server's `default_qsub_arguments` (a string of options,
    /// applied after the destination check, below the command line and the script), also
    /// returning every warning printed, command line first.
    ///
    /// ```
    /// use hpcbox_pbs::qsub::parse_args;
    /// use hpcbox_pbs::script::scan;
    /// let args = parse_args(["-l", "walltime=1:00:00", "job.pbs"]).unwrap();
    /// let s = scan("#PBS -q work\n", &args.directive_prefix(None));
    /// let (opts, _) = args.finish_with(&s, Some("-l walltime=10:00,mem=1gb -r n -q other")).unwrap();
    /// assert_eq!(opts.resource("walltime"), Some("1:00:00"));
    /// assert_eq!(opts.resource("mem"), Some("1gb"));
    /// assert_eq!(opts.queue.as_deref(), Some("work"));
    /// assert_eq!(opts.rerunnable, Some(false));
    /// ```
    pub fn finish_with(
        &self,
        scan: &Scan,
        default_qsub_arguments: Option<&str>,
    ) -> Result<(QsubOptions, Vec<String>), QsubError> {
        let mut p = self.processor.clone();
        p.cli = self.options.clone();
        for d in &scan.directives {
            p.directive(d)?;
        }
        if let Some(e) = &scan.error {
            return Err(e.clone().into());
        }
        let default_name = self.operand.default_job_name();
        p.finish(Some(&default_name), default_qsub_arguments)
    }
}

/// Parses `qsub`'s command line (the arguments after the program name), as `qsub` does before
/// it reads the script.
///
/// Errors here are the ones `qsub` reports before reading the script: usage errors (exit 2,
/// with the usage text) and the immediate ones (`-v` quoting, `-X` without `-I`, `-m j`
/// without `-J`). Values the library refuses later are reported by [`QsubArgs::finish`].
pub fn parse_args<I, S>(args: I) -> Result<QsubArgs, QsubError>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let args: Vec<String> = args.into_iter().map(Into::into).collect();
    if let [only] = args.as_slice() {
        if only.eq_ignore_ascii_case("--version") {
            return Ok(QsubArgs {
                version: true,
                options: QsubOptions::default(),
                operand: Operand::None,
                warnings: Vec::new(),
                processor: Processor::default(),
            });
        }
    }
    let mut g = getopt("qsub", GETOPT_ARGS, &args);
    let mut p = Processor::default();
    let mut out = PassResult::default();
    for opt in std::mem::take(&mut g.opts) {
        match opt {
            Opt::Invalid(line) => out.fail(line),
            Opt::Flag(c, v) => p.apply(c, v, Pass::CommandLine, &mut out)?,
        }
    }
    p.after_pass(Pass::CommandLine, &out)?;
    let operand = operand_of(&g);
    let operand = match operand {
        Some(op) if !out.failed && !g.permuted => op,
        _ => return Err(QsubError::usage(&out.lines)),
    };
    Ok(QsubArgs {
        version: false,
        options: p.opts.clone(),
        operand,
        warnings: p.warnings.clone(),
        processor: p,
    })
}

/// The operand after the options, or `None` for a usage error (`process_opts`' checks on
/// `optind`).
fn operand_of(g: &Getopt) -> Option<Operand> {
    if g.ended_by_ddash {
        let (program, args) = g.operands.split_first()?;
        return Some(Operand::Command {
            program: program.clone(),
            args: args.to_vec(),
        });
    }
    if g.last_value_ddash {
        // A `--` taken as an option's value cannot also mean "a command follows".
        return None;
    }
    match g.operands.as_slice() {
        [] => Some(Operand::None),
        [one] if one == "-" => Some(Operand::Stdin),
        [one] => Some(Operand::Script(one.clone())),
        _ => None,
    }
}

impl QsubArgs {
    /// The command line back as arguments (without the program name): the options of
    /// [`QsubOptions::to_args`] and then the operand.
    pub fn to_args(&self) -> Vec<String> {
        if self.version {
            return vec!["--version".into()];
        }
        let mut args = self.options.to_args();
        match &self.operand {
            Operand::None => {}
            Operand::Stdin => args.push("-".into()),
            Operand::Script(s) => args.push(s.clone()),
            Operand::Command {
                program,
                args: rest,
            } => {
                args.push("--".into());
                args.push(program.clone());
                args.extend(rest.iter().cloned());
            }
        }
        args
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::script::scan;

    fn args(list: &[&str]) -> QsubArgs {
        parse_args(list.iter().copied()).unwrap()
    }

    fn err(list: &[&str]) -> QsubError {
        parse_args(list.iter().copied()).unwrap_err()
    }

    fn finish(cli: &[&str], script: &str) -> Result<QsubOptions, QsubError> {
        let a = args(cli);
        a.finish(&scan(script, &a.directive_prefix(None)))
    }

    fn usage_with(lines: &[&str]) -> String {
        let mut s: String = lines.iter().map(|l| format!("{l}\n")).collect();
        s.push_str(USAGE);
        s
    }

    #[test]
    fn usage_text_is_pbs_text() {
        assert!(USAGE.starts_with(
            "usage: qsub [-a date_time] [-A account_string] [-c interval]\n\t[-C directive_prefix]"
        ));
        assert!(USAGE.ends_with("[script | -- command [arg1 ...]]\n       qsub --version\n"));
        assert_eq!(USAGE.lines().count(), 7);
        assert!(USAGE.contains("]]\n       qsub --version\n"));
    }

    #[test]
    fn attached_grouped_and_separate_values() {
        let a = args(&["-koe", "-lselect=1", "-hz", "-N", "x", "s.sh"]);
        assert_eq!(
            a.options.keep,
            Some(Keep {
                output: true,
                error: true,
                direct: false
            })
        );
        assert_eq!(a.options.resource("select"), Some("1"));
        assert!(a.options.hold && a.options.quiet);
        assert_eq!(a.options.name.as_deref(), Some("x"));
        assert_eq!(a.operand, Operand::Script("s.sh".into()));
        // A flag cluster may end in an option that takes the next argument.
        let a = args(&["-hN", "y"]);
        assert!(a.options.hold);
        assert_eq!(a.options.name.as_deref(), Some("y"));
        assert_eq!(a.operand, Operand::None);
    }

    #[test]
    fn operands() {
        assert_eq!(args(&[]).operand, Operand::None);
        assert_eq!(args(&["-"]).operand, Operand::Stdin);
        assert_eq!(
            args(&["-V", "--", "/bin/sleep", "10"]).operand,
            Operand::Command {
                program: "/bin/sleep".into(),
                args: vec!["10".into()]
            }
        );
        // A value that looks like an option is still the value.
        assert_eq!(args(&["-N", "-z"]).options.name.as_deref(), Some("-z"));
        // `--` given as a value, then `--` ending the options.
        let a = args(&["-N", "--", "--", "cmd"]);
        assert_eq!(a.options.name.as_deref(), Some("--"));
        assert_eq!(
            a.operand,
            Operand::Command {
                program: "cmd".into(),
                args: vec![]
            }
        );
    }

    #[test]
    fn version_only_alone() {
        assert!(args(&["--version"]).version);
        assert!(args(&["--VERSION"]).version);
        // Elsewhere it is a cluster: `-` is no option.
        let e = err(&["-z", "--version"]);
        assert!(e.to_string().starts_with("qsub: invalid option -- '-'\n"));
    }

    #[test]
    fn usage_errors_like_pbs() {
        for bad in [
            &["s.sh", "--", "sleep", "1"][..],
            &["s.sh", "--"],
            &["--"],
            &["a.sh", "b.sh"],
            &["s.sh", "-N", "x"],
            &["-N", "--"],
            &["-N", "--", "s.sh"],
        ] {
            let e = err(bad);
            assert_eq!(e.exit_code(), 2, "{bad:?}");
            assert_eq!(e.kind(), &QsubErrorKind::Usage);
            assert_eq!(e.to_string(), USAGE, "{bad:?}");
        }
        assert_eq!(
            err(&["-x"]).to_string(),
            usage_with(&["qsub: invalid option -- 'x'"])
        );
        assert_eq!(
            err(&["-N"]).to_string(),
            usage_with(&["qsub: option requires an argument -- 'N'"])
        );
        assert_eq!(
            err(&["-x", "-y", "s"]).to_string(),
            usage_with(&["qsub: invalid option -- 'x'", "qsub: invalid option -- 'y'"])
        );
    }

    #[test]
    fn option_errors_on_the_command_line_print_usage() {
        let cases: [(&[&str], &str); 6] = [
            (&["-r", "x"], "qsub: illegal -r value"),
            (&["-r", "yes"], "qsub: illegal -r value"),
            (&["-a", "2561"], "qsub: illegal -a value"),
            (&["-c", " u"], "qsub: illegal -c value"),
            (&["-W", ""], "qsub: illegal -W value"),
            (&["-W", "depend"], "qsub: illegal -W value"),
        ];
        for (argv, line) in cases {
            let e = err(argv);
            assert_eq!(e.to_string(), usage_with(&[line]), "{argv:?}");
            assert_eq!(e.exit_code(), 2);
        }
    }

    #[test]
    fn array_conflicts() {
        assert_eq!(
            err(&["-I", "-J", "1-3"]).to_string(),
            usage_with(&[INTER_ARRAY])
        );
        assert_eq!(
            err(&["-J", "1-3", "-I"]).to_string(),
            usage_with(&[INTER_ARRAY])
        );
        assert_eq!(
            err(&["-r", "n", "-J", "1-3"]).to_string(),
            usage_with(&[NO_RERUN_ARRAY])
        );
        assert_eq!(
            err(&["-J", "1-3", "-r", "n"]).to_string(),
            usage_with(&[NO_RERUN_ARRAY])
        );
        assert_eq!(
            err(&["-J", "1-3%2", "-W", "max_run_subjobs=3"]).to_string(),
            usage_with(&[MULTIPLE_MAX_RUN])
        );
        let a = args(&["-J", "1-9:2%3"]);
        assert_eq!(
            a.options.array.map(|r| r.to_string()),
            Some("1-9:2%3".into())
        );
    }

    #[test]
    fn immediate_errors_exit_one_without_usage() {
        let e = err(&["-m", "abj"]);
        assert_eq!(
            e.to_string(),
            "qsub: mail option 'j' can not be used without array job\n"
        );
        assert_eq!(e.exit_code(), 1);
        assert!(parse_args(["-m", "abj", "-J", "1-2"]).is_ok());
        let e = err(&["-X"]);
        assert_eq!(
            e.to_string(),
            "qsub: X11 Forwarding possible only for interactive jobs\n"
        );
        assert_eq!(e.exit_code(), 1);
        assert!(parse_args(["-I", "-X"]).is_ok());
        let e = err(&["-v", "A='x"]);
        assert_eq!(
            e.to_string(),
            "qsub: cannot send environment with the job\n"
        );
        assert_eq!(e.exit_code(), 1);
    }

    #[test]
    fn block_and_interactive() {
        let a = args(&["-W", "block=true", "-I"]);
        assert!(a.options.interactive && !a.options.block);
        assert_eq!(a.warnings, [INTER_BLOCK_WARN]);
        assert!(args(&["-W", "block=TRUE"]).options.block);
        assert!(!args(&["-W", "block=false"]).options.block);
        assert!(args(&["-W", "interactive=true"]).options.interactive);
        assert_eq!(err(&["-W", "block=yes"]).to_string(), usage_with(&[BAD_W]));
    }

    #[test]
    fn w_pairs_split_like_parse_equal_string() {
        let a = args(&[
            "-W",
            "depend=afterok:1.s:2.s,afterany:3, umask = 022,group_list=g1,g2",
        ]);
        assert_eq!(
            a.options
                .depend
                .as_ref()
                .map(ToString::to_string)
                .as_deref(),
            Some("afterok:1.s:2.s,afterany:3")
        );
        assert_eq!(a.options.attribute("umask"), Some("022"));
        assert_eq!(a.options.group_list.as_deref(), Some("g1,g2"));
        assert_eq!(parse_equal_string("a=1,"), None);
        assert_eq!(parse_equal_string("=1"), None);
        assert_eq!(parse_equal_string("a=b=c"), None);
        assert_eq!(
            parse_equal_string("a='x,y' ,b=2"),
            Some(vec![("a".into(), "x,y".into()), ("b".into(), "2".into())])
        );
        // At the end nothing is stripped: the closing quote reads as a blank.
        assert_eq!(
            parse_equal_string("a='x'"),
            Some(vec![("a".into(), "x ".into())])
        );
        assert_eq!(parse_equal_string("a='x"), None);
        assert_eq!(parse_equal_string(""), Some(vec![]));
    }

    #[test]
    fn resources_split_like_set_resources() {
        let a = args(&[
            "-l",
            "select=2:ncpus=4,walltime=1:00:00 mem=2gb",
            "-l",
            "place=\"scatter\"",
        ]);
        let names: Vec<_> = a
            .options
            .resources
            .iter()
            .map(|r| (r.name.as_str(), r.value.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("select", "2:ncpus=4"),
                ("walltime", "1:00:00"),
                ("mem", "2gb"),
                ("place", "scatter")
            ]
        );
        let q = args(&["-l", "software='a,b'"]);
        assert_eq!(q.options.resource("software"), Some("a,b"));
    }

    #[test]
    fn resource_syntax_errors() {
        assert_eq!(
            err(&["-l", "=1"]).to_string(),
            usage_with(&["qsub: illegal -l value"])
        );
        assert_eq!(
            err(&["-l", "a=1,"]).to_string(),
            usage_with(&["qsub: illegal -l value"])
        );
        assert_eq!(
            err(&["-l", "a=b&c"]).to_string(),
            usage_with(&[
                "qsub: illegal -l value",
                " illegal character:",
                "a=b&c",
                "   ^"
            ])
        );
        assert_eq!(
            err(&["-l", "a=\"bc"]).to_string(),
            usage_with(&[
                "qsub: illegal -l value",
                " no closing quote:",
                "a=\"bc",
                "     ^"
            ])
        );
    }

    #[test]
    fn command_line_wins_over_directives() {
        let script = "#PBS -N fromscript\n#PBS -q q1\n#PBS -l walltime=2:00:00,ncpus=2\n#PBS -v A=1\n#PBS -p 5\nrun\n";
        let o = finish(
            &["-N", "cli", "-l", "walltime=1:00:00", "-v", "B=2", "s"],
            script,
        )
        .unwrap();
        assert_eq!(o.name.as_deref(), Some("cli"));
        assert_eq!(o.queue.as_deref(), Some("q1"));
        assert_eq!(o.resource("walltime"), Some("1:00:00"));
        assert_eq!(o.resource("ncpus"), Some("2"));
        assert_eq!(o.variables.unwrap().to_string(), "B=2");
        assert_eq!(o.priority, Some(5));
    }

    #[test]
    fn later_directives_win_except_resources() {
        let script = "#PBS -N a\n#PBS -N b\n#PBS -l ncpus=1\n#PBS -l ncpus=2\n";
        let o = finish(&[], script).unwrap();
        assert_eq!(o.name.as_deref(), Some("b"));
        // set_resources does not add a name already on the list when reading directives.
        assert_eq!(o.resource("ncpus"), Some("1"));
        // On the command line every -l is sent, and the last one counts.
        let o = finish(&["-l", "ncpus=1", "-l", "ncpus=3"], "").unwrap();
        assert_eq!(o.resource("ncpus"), Some("3"));
    }

    #[test]
    fn generic_w_attributes_are_all_sent() {
        let o = finish(&["-W", "umask=022"], "#PBS -W umask=077\n").unwrap();
        assert_eq!(
            o.attributes,
            [
                ("umask".into(), "022".into()),
                ("umask".into(), "077".into())
            ]
        );
        assert_eq!(o.attribute("umask"), Some("077"));
    }

    #[test]
    fn directive_errors() {
        let e = finish(&[], "#!/bin/sh\n#PBS -l walltime=1:00:00,\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "qsub: illegal -l value\nqsub: directive error: -l walltime=1:00:00, \n"
        );
        assert_eq!(e.exit_code(), 1);
        assert_eq!(e.kind(), &QsubErrorKind::Directive { line: 2 });
        let e = finish(&[], "#PBS -N a extra\n").unwrap_err();
        assert_eq!(e.to_string(), "qsub: directive error: -N a extra \n");
        let e = finish(&[], "#PBS -Y\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "qsub: invalid option -- 'Y'\nqsub: directive error: -Y \n"
        );
        let e = finish(&[], "#PBS -- cmd\n").unwrap_err();
        assert_eq!(e.to_string(), "qsub: directive error: -- cmd \n");
    }

    #[test]
    fn directive_error_line_is_bounded() {
        let big = "x".repeat(5000);
        assert_eq!(
            directive_error_line(&["-N".into(), big]),
            "qsub: directive error: -N "
        );
    }

    #[test]
    fn error_order_follows_the_script() {
        // A directive error before a CR LF line wins; a CR LF line before it wins.
        let e = finish(&[], "#PBS -r x\necho\r\n").unwrap_err();
        assert_eq!(e.kind(), &QsubErrorKind::Directive { line: 1 });
        let e = finish(&[], "#!/bin/sh\r\n#PBS -r x\n").unwrap_err();
        assert_eq!(e.to_string(), "qsub: script contains cr, lf\n");
        assert_eq!(e.exit_code(), 1);
        // Library checks come after the whole script and the destination.
        let e = finish(&["-j", "xx"], "#PBS -q a@\n").unwrap_err();
        assert_eq!(e.to_string(), "qsub: illegally formed destination: a@\n");
        assert_eq!(e.exit_code(), 2);
        let e = finish(&["-j", "xx"], "#PBS -r x\n").unwrap_err();
        assert_eq!(e.exit_code(), 1);
        let e = finish(&["-j", "xx"], "").unwrap_err();
        assert_eq!(e.to_string(), usage_with(&["qsub: illegal -j value"]));
    }

    #[test]
    fn library_checks() {
        for (cli, letter) in [
            (&["-k", "on"][..], 'k'),
            (&["-k", "d"], 'k'),
            (&["-m", "x"], 'm'),
            (&["-m", "j"], 'm'),
            (&["-p", "1024"], 'p'),
            (&["-p", "-1025"], 'p'),
            (&["-R", "x"], 'R'),
            (&["-c", "c=x"], 'c'),
            (&["-N", "a b"], 'N'),
            (&["-N", ""], 'N'),
            (&["-J", "5-1"], 'J'),
            (&["-W", "sandbox=box"], 'W'),
            (&["-W", "depend=afterok:1[2]"], 'W'),
        ] {
            let e = finish(cli, "").unwrap_err();
            assert_eq!(
                e.kind(),
                &QsubErrorKind::IllegalValue { option: letter },
                "{cli:?}"
            );
            let text = e.to_string();
            assert!(text.ends_with(&usage_with(&[&format!("qsub: illegal -{letter} value")])));
            assert_eq!(e.exit_code(), 2);
        }
        let e = finish(&["-W", "depend=afterok:1[2]"], "").unwrap_err();
        assert!(e
            .to_string()
            .starts_with("cannot have dependancy on subjob or range\nqsub: illegal -W value\n"));
        let e = finish(&["-N", &"a".repeat(231)], "").unwrap_err();
        assert_eq!(e.to_string(), "qsub: Job name is too long \n");
        assert!(finish(&["-N", &"a".repeat(230)], "").is_ok());
        // A digit may start a name given to qsub; so may the script's base name.
        assert!(finish(&["-N", "1job"], "").is_ok());
        let a = args(&["dir/my job.sh"]);
        let e = a.finish(&Scan::default()).unwrap_err();
        assert_eq!(e.kind(), &QsubErrorKind::IllegalValue { option: 'N' });
        // A later valid name replaces an invalid one, as PBS replaces Job_Name in place.
        assert!(finish(&[], "#PBS -N 'a b'\n#PBS -N ab\n").is_ok());
    }

    #[test]
    fn resource_values_are_checked_by_kind() {
        let e = finish(&["-l", "ncpus=abc"], "").unwrap_err();
        assert_eq!(
            e.to_string(),
            "qsub: Illegal attribute or resource value Resource_List.ncpus\n"
        );
        assert_eq!(e.exit_code(), 166);
        assert!(finish(&["-l", "walltime=00:10:00,mem=1GB"], "").is_ok());
    }

    #[test]
    fn priority_and_checkpoint_values() {
        assert_eq!(parse_priority(" -1024"), Some(-1024));
        assert_eq!(parse_priority("+1023"), Some(1023));
        assert_eq!(parse_priority("5x"), None);
        assert_eq!(parse_priority("99999999999"), None);
        assert_eq!("c=10".parse::<Checkpoint>(), Ok(Checkpoint::CpuMinutes(10)));
        assert_eq!(" w".parse::<Checkpoint>(), Ok(Checkpoint::Wall));
        assert!("x=1".parse::<Checkpoint>().is_err());
    }

    #[test]
    fn execution_time_forms() {
        for (text, year) in [
            ("1230", None),
            ("311230", None),
            ("12311230.59", None),
            ("6901010000", Some(1969)),
            ("6801010000", Some(2068)),
            ("202601010000", Some(2026)),
        ] {
            let t: ExecutionTime = text.parse().unwrap();
            assert_eq!(t.full_year(), year);
            assert_eq!(t.to_string(), text);
        }
        for bad in [
            "123", "2400", "1260", "001230", "131230.", "1230.6", "1230.60", "12x0", "13011230",
            "1230.5a",
        ] {
            assert!(bad.parse::<ExecutionTime>().is_err(), "{bad}");
        }
    }

    #[test]
    fn keep_mail_and_remove_letters() {
        assert_eq!("nd".parse::<Keep>().unwrap().to_string(), "nd");
        assert_eq!("eo".parse::<Keep>().unwrap().to_string(), "oe");
        assert_eq!("ed".parse::<Keep>().unwrap().to_string(), "ed");
        assert_eq!("n".parse::<MailPoints>().unwrap().to_string(), "n");
        assert_eq!(" ebja".parse::<MailPoints>().unwrap().to_string(), "abej");
        assert!("an".parse::<MailPoints>().is_err());
        assert_eq!("eo".parse::<RemoveFiles>().unwrap().to_string(), "oe");
        assert_eq!("private".parse::<Sandbox>(), Ok(Sandbox::Private));
    }

    #[test]
    fn variable_lists() {
        let v: VariableList = "A=1,B,C='x,y',E=a\\,b,D=\"it's\",".parse().unwrap();
        let values: Vec<_> =
            v.0.iter()
                .map(|v| (v.name.as_str(), v.value.clone()))
                .collect();
        assert_eq!(
            values,
            [
                ("A", VariableValue::Given("1".into())),
                ("B", VariableValue::Inherit),
                ("C", VariableValue::Given("x,y".into())),
                ("E", VariableValue::Given("a,b".into())),
                ("D", VariableValue::Given("it's".into())),
            ]
        );
        assert_eq!(v.to_string(), "A=1,B,C=x\\,y,E=a\\,b,D=\"it's\"");
        assert_eq!(v.to_string().parse::<VariableList>().unwrap(), v);
        let env = |n: &str| (n == "B").then(|| "bee".to_string());
        assert_eq!(v.resolve(env).unwrap()[1], ("B".into(), "bee".into()));
        let missing: VariableList = "NOPE".parse().unwrap();
        assert_eq!(missing.resolve(env).unwrap_err().exit_code(), 1);
        // comma_token switches quote kinds, so a lone `'` inside "…" hides the commas after
        // it: PBS loses what follows, and so does this parser.
        let lost: VariableList = "D=\"it's\",E=1".parse().unwrap();
        assert_eq!(lost.0.len(), 1);
        assert_eq!(lost.0[0].value, VariableValue::Given("it's".into()));
        let reserved: VariableList = "PBS_O_HOME,PBS_JOBCOOKIE".parse().unwrap();
        assert_eq!(reserved.resolve(env).unwrap(), []);
    }

    #[test]
    fn directive_prefix_comes_from_the_command_line_only() {
        let a = args(&["-C", "#X"]);
        assert_eq!(a.directive_prefix(Some("#Y")).as_str(), Some("#X"));
        assert_eq!(args(&[]).directive_prefix(Some("#Y")).as_str(), Some("#Y"));
        assert!(args(&["-C", ""]).directive_prefix(None).is_disabled());
        // -C in a directive is accepted but changes nothing.
        let o = finish(&[], "#PBS -C #Z\n#Z -N z\n#PBS -N p\n").unwrap();
        assert_eq!(o.name.as_deref(), Some("p"));
    }

    #[test]
    fn default_job_names() {
        assert_eq!(
            Operand::Script("a/b/run.pbs".into()).default_job_name(),
            "run.pbs"
        );
        assert_eq!(Operand::None.default_job_name(), "STDIN");
        assert_eq!(Operand::Stdin.default_job_name(), "STDIN");
    }

    #[test]
    fn server_defaults_come_last() {
        let a = args(&["-N", "cli", "-l", "ncpus=2"]);
        let s = scan(
            "#PBS -q work\n#PBS -l mem=1gb\n",
            &DirectivePrefix::default(),
        );
        let defaults = "-N dflt -q other -l ncpus=8,mem=4gb,walltime=1:00:00 -h -W umask=077";
        let (o, _) = a.finish_with(&s, Some(defaults)).unwrap();
        assert_eq!(o.name.as_deref(), Some("cli"));
        assert_eq!(o.queue.as_deref(), Some("work"));
        assert_eq!(o.resource("ncpus"), Some("2"));
        assert_eq!(o.resource("mem"), Some("1gb"));
        assert_eq!(o.resource("walltime"), Some("1:00:00"));
        assert!(o.hold);
        assert_eq!(o.attribute("umask"), Some("077"));
        let e = a.finish_with(&s, Some("-r x")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "qsub: illegal -r value\nqsub: directive error: -r x \n"
        );
        assert_eq!(e.exit_code(), 255);
        assert_eq!(e.kind(), &QsubErrorKind::DefaultArguments);
        let e = a.finish_with(&s, Some("-N 'x")).unwrap_err();
        assert_eq!(e.exit_code(), 1);
        // The destination is checked before the defaults are read.
        let e = a.finish_with(
            &scan("#PBS -q a@\n", &DirectivePrefix::default()),
            Some("-r x"),
        );
        assert_eq!(e.unwrap_err().kind(), &QsubErrorKind::Destination);
    }

    #[test]
    fn merge_matches_reading_in_order() {
        let script = "#PBS -N d\n#PBS -l mem=1gb,ncpus=2\n#PBS -W umask=077\n#PBS -h\n";
        let cli = args(&["-N", "c", "-l", "ncpus=4", "-W", "umask=022"]);
        let sequential = cli
            .finish(&scan(script, &DirectivePrefix::default()))
            .unwrap();
        let dirs =
            QsubOptions::from_directives(&scan(script, &DirectivePrefix::default()).directives)
                .unwrap();
        assert_eq!(QsubOptions::merge(&dirs, &cli.options), sequential);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn round_trip<T>(text: &str) -> Result<(), TestCaseError>
        where
            T: FromStr + fmt::Display + PartialEq + fmt::Debug,
        {
            if let Ok(value) = text.parse::<T>() {
                prop_assert_eq!(value.to_string().parse::<T>().ok(), Some(value));
            }
            Ok(())
        }

        proptest! {
            #[test]
            fn letter_values_round_trip(text in "[oednabjsw= 0-9c]{0,5}") {
                round_trip::<Join>(&text)?;
                round_trip::<Keep>(&text)?;
                round_trip::<MailPoints>(&text)?;
                round_trip::<RemoveFiles>(&text)?;
                round_trip::<Checkpoint>(&text)?;
            }

            #[test]
            fn dates_round_trip(text in "[0-9]{4,12}(\\.[0-9]{2})?") {
                round_trip::<ExecutionTime>(&text)?;
            }

            #[test]
            fn sandboxes_round_trip(text in "(?i)(home|o_workdir|private|other)") {
                round_trip::<Sandbox>(&text)?;
            }

            #[test]
            fn variable_lists_round_trip(text in "([A-Z]{1,3}(=[a-z0-9,/ ]{0,4})?,){0,4}") {
                round_trip::<VariableList>(&text)?;
            }

            #[test]
            fn value_parsers_never_panic(text in "\\PC{0,24}") {
                let _ = text.parse::<ExecutionTime>();
                let _ = text.parse::<Checkpoint>();
                let _ = text.parse::<VariableList>();
                let _ = text.parse::<MailPoints>();
                let _ = parse_priority(&text);
                let _ = parse_equal_string(&text);
                let _ = split_resources(&text);
            }

            #[test]
            fn w_and_l_splitters_never_panic(text in "[ a-z=,'\"&\\\\]{0,30}") {
                let _ = parse_equal_string(&text);
                let _ = split_resources(&text);
            }
        }
    }
}

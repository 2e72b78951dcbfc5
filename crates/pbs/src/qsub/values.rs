//! The small option values: `-j`, `-k`, `-m`, `-R`, `-c` and `-W sandbox=`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ParseError;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}

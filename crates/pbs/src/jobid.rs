//! Job ids: `123`, `123.server`, array jobs `123[].server`, subjobs `123[7].server` and subjob
//! ranges `123[1-5].server`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::array::ArrayRange;
use crate::ParseError;

/// The most digits a sequence number may have (`PBS_MAXSEQNUM`).
pub const MAX_SEQ_DIGITS: usize = 12;

/// What an id says about job arrays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ArrayPart {
    /// An ordinary job: `123.srv`.
    NotArray,
    /// An array job as a whole: `123[].srv`.
    Whole,
    /// One subjob: `123[7].srv`.
    Index(u32),
    /// A range of subjobs, as `qdel` and `qstat -t` take them: `123[1-5:2].srv`.
    Range(ArrayRange),
}

/// A job id as PBS writes it: a sequence number, an optional array part and an optional server.
///
/// ```
/// use hpcbox_pbs::jobid::{ArrayPart, JobId};
/// let id: JobId = "1234[7].pbs01.example.com".parse().unwrap();
/// assert_eq!(id.seq, 1234);
/// assert_eq!(id.array, ArrayPart::Index(7));
/// assert_eq!(id.server.as_deref(), Some("pbs01.example.com"));
/// assert_eq!(id.parent().to_string(), "1234[].pbs01.example.com");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct JobId {
    /// The sequence number the server gave the job.
    pub seq: u64,
    /// Whether, and which part of, a job array the id names.
    pub array: ArrayPart,
    /// The server name after the first `.`, when present.
    pub server: Option<String>,
}

impl JobId {
    /// An ordinary job's id.
    pub fn new(seq: u64, server: impl Into<String>) -> Self {
        JobId {
            seq,
            array: ArrayPart::NotArray,
            server: Some(server.into()),
        }
    }

    /// The id of the array job this id belongs to (`123[7].s` → `123[].s`); an ordinary
    /// job's id is returned unchanged.
    pub fn parent(&self) -> JobId {
        let array = match self.array {
            ArrayPart::NotArray => ArrayPart::NotArray,
            _ => ArrayPart::Whole,
        };
        JobId {
            array,
            ..self.clone()
        }
    }

    /// The id of subjob `index` of this array.
    pub fn subjob(&self, index: u32) -> JobId {
        JobId {
            array: ArrayPart::Index(index),
            ..self.clone()
        }
    }

    /// Whether the id names an array job, a subjob or a range of subjobs.
    pub fn is_array(&self) -> bool {
        self.array != ArrayPart::NotArray
    }

    /// The id with `server` filled in when it names none, as the commands do with
    /// `PBS_SERVER` for a bare `123`.
    pub fn or_server(mut self, server: &str) -> JobId {
        if self.server.is_none() {
            self.server = Some(server.to_string());
        }
        self
    }
}

fn parse_seq(digits: &str, token: &str) -> Result<u64, ParseError> {
    if digits.is_empty() {
        return Err(ParseError::new(
            token,
            "a job id starts with its sequence number",
        ));
    }
    if digits.len() > MAX_SEQ_DIGITS {
        return Err(ParseError::new(
            token,
            format!("a sequence number has at most {MAX_SEQ_DIGITS} digits"),
        ));
    }
    digits
        .parse()
        .map_err(|_| ParseError::new(token, "bad sequence number"))
}

fn parse_array_part(inside: &str, token: &str) -> Result<ArrayPart, ParseError> {
    if inside.is_empty() {
        return Ok(ArrayPart::Whole);
    }
    if inside.contains('-') {
        if inside.contains('%') {
            return Err(ParseError::new(token, "a subjob range takes no `%` limit"));
        }
        let range: ArrayRange = inside
            .parse()
            .map_err(|e: ParseError| ParseError::new(token, e.reason))?;
        return Ok(ArrayPart::Range(range));
    }
    if !inside.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseError::new(token, "a subjob index is a number"));
    }
    inside
        .parse()
        .map(ArrayPart::Index)
        .map_err(|_| ParseError::new(token, "subjob index too large"))
}

impl FromStr for JobId {
    type Err = ParseError;

    fn from_str(text: &str) -> Result<Self, ParseError> {
        let digits_end = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (digits, mut rest) = text.split_at(digits_end);
        let seq = parse_seq(digits, text)?;
        let mut array = ArrayPart::NotArray;
        if let Some(after_open) = rest.strip_prefix('[') {
            let Some((inside, after_close)) = after_open.split_once(']') else {
                return Err(ParseError::new(text, "`[` without its `]`"));
            };
            array = parse_array_part(inside, text)?;
            rest = after_close;
        }
        let server = match rest {
            "" => None,
            _ => match rest.strip_prefix('.') {
                Some("") => return Err(ParseError::new(text, "no server name after `.`")),
                Some(server) if server.chars().all(|c| c.is_ascii_graphic()) => {
                    Some(server.to_string())
                }
                _ => {
                    return Err(ParseError::new(
                        text,
                        "a job id is seq[.server], seq[].server or seq[index].server",
                    ))
                }
            },
        };
        Ok(JobId { seq, array, server })
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.seq)?;
        match self.array {
            ArrayPart::NotArray => {}
            ArrayPart::Whole => f.write_str("[]")?,
            ArrayPart::Index(i) => write!(f, "[{i}]")?,
            ArrayPart::Range(r) => write!(f, "[{r}]")?,
        }
        if let Some(server) = &self.server {
            write!(f, ".{server}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        let cases = [
            ("123", 123, ArrayPart::NotArray, None),
            ("123.srv", 123, ArrayPart::NotArray, Some("srv")),
            ("123[].srv", 123, ArrayPart::Whole, Some("srv")),
            ("123[7].a.b.c", 123, ArrayPart::Index(7), Some("a.b.c")),
            ("9[]", 9, ArrayPart::Whole, None),
        ];
        for (text, seq, array, server) in cases {
            let id: JobId = text.parse().unwrap();
            assert_eq!(
                (id.seq, id.array, id.server.as_deref()),
                (seq, array, server)
            );
            assert_eq!(id.to_string(), text);
        }
        let range: JobId = "5[1-9:2].s".parse().unwrap();
        assert_eq!(
            range.array,
            ArrayPart::Range(ArrayRange::new(1, 9, 2).unwrap())
        );
    }

    #[test]
    fn refuses_malformed_ids() {
        for bad in [
            "",
            "abc",
            "12a",
            "12.",
            "12[",
            "12[x].s",
            "12[1-9%2]",
            "12 .s",
            "1234567890123",
        ] {
            let err = bad.parse::<JobId>().unwrap_err();
            assert_eq!(err.token, bad);
        }
    }

    #[test]
    fn parent_and_server_defaults() {
        let sub: JobId = "42[3]".parse().unwrap();
        assert_eq!(sub.parent().to_string(), "42[]");
        assert_eq!(sub.or_server("pbs").to_string(), "42[3].pbs");
        assert_eq!(JobId::new(1, "s").subjob(2).to_string(), "1[2].s");
        assert_eq!(JobId::new(1, "s").parent().to_string(), "1.s");
    }
}

//! Job array index ranges: `qsub -J X-Y[:Z][%max]` and the `[X-Y:Z]` part of subjob ids.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ParseError;

/// The largest index PBS accepts (it keeps indices in a C `int`).
pub const MAX_INDEX: u32 = i32::MAX as u32;

/// A range of array indices `start-end:step`, with an optional cap on how many subjobs run at
/// once (`%max`, PBS's `max_run_subjobs`).
///
/// As in PBS (`parse_subjob_index`), `start` must be below `end` and `step` at least 1.
///
/// ```
/// use hpcbox_pbs::array::ArrayRange;
/// let r: ArrayRange = "1-10:3%2".parse().unwrap();
/// assert_eq!(r.indices().collect::<Vec<_>>(), [1, 4, 7, 10]);
/// assert_eq!(r.len(), 4);
/// assert_eq!(r.max_running, Some(2));
/// assert_eq!(r.to_string(), "1-10:3%2");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ArrayRange {
    /// The first index.
    pub start: u32,
    /// The last index that may be reached (inclusive).
    pub end: u32,
    /// The distance between consecutive indices, at least 1.
    pub step: u32,
    /// At most this many subjobs run at the same time.
    pub max_running: Option<u32>,
}

impl ArrayRange {
    /// The range `start-end:step` with no cap on running subjobs.
    pub fn new(start: u32, end: u32, step: u32) -> Result<Self, ParseError> {
        let range = ArrayRange {
            start,
            end,
            step,
            max_running: None,
        };
        range.check(&range.to_string())?;
        Ok(range)
    }

    /// How many indices the range holds.
    pub fn len(&self) -> usize {
        ((self.end - self.start) / self.step) as usize + 1
    }

    /// Never true: a valid range holds at least two indices.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The indices in ascending order.
    pub fn indices(&self) -> impl Iterator<Item = u32> {
        (self.start..=self.end).step_by(self.step as usize)
    }

    /// Whether `index` is one of the range's indices.
    pub fn contains(&self, index: u32) -> bool {
        (self.start..=self.end).contains(&index) && (index - self.start).is_multiple_of(self.step)
    }

    /// The last index actually reached (`1-10:4` ends at 9).
    pub fn last(&self) -> u32 {
        self.end - (self.end - self.start) % self.step
    }

    fn check(&self, token: &str) -> Result<(), ParseError> {
        if self.start >= self.end {
            return Err(ParseError::new(
                token,
                "the first index must be below the last",
            ));
        }
        if self.step < 1 {
            return Err(ParseError::new(token, "the step must be at least 1"));
        }
        if self.end > MAX_INDEX {
            return Err(ParseError::new(
                token,
                format!("indices go up to {MAX_INDEX}"),
            ));
        }
        if self.max_running == Some(0) {
            return Err(ParseError::new(
                token,
                "the running limit after `%` must be at least 1",
            ));
        }
        Ok(())
    }
}

/// Parses an unsigned decimal number, naming `token` and `what` when it is not one.
fn number(digits: &str, token: &str, what: &str) -> Result<u32, ParseError> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseError::new(
            token,
            format!("{what} must be a number, not `{digits}`"),
        ));
    }
    digits
        .parse()
        .map_err(|_| ParseError::new(token, format!("{what} `{digits}` is too large")))
}

impl FromStr for ArrayRange {
    type Err = ParseError;

    fn from_str(text: &str) -> Result<Self, ParseError> {
        let (range, max_running) = match text.split_once('%') {
            Some((range, max)) => (range, Some(number(max, text, "the running limit")?)),
            None => (text, None),
        };
        let Some((start, rest)) = range.split_once('-') else {
            return Err(ParseError::new(text, "an array range is X-Y[:Z][%max]"));
        };
        let (end, step) = match rest.split_once(':') {
            Some((end, step)) => (end, number(step, text, "the step")?),
            None => (rest, 1),
        };
        let parsed = ArrayRange {
            start: number(start, text, "the first index")?,
            end: number(end, text, "the last index")?,
            step,
            max_running,
        };
        parsed.check(text)?;
        Ok(parsed)
    }
}

impl fmt::Display for ArrayRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.start, self.end)?;
        if self.step != 1 {
            write!(f, ":{}", self.step)?;
        }
        if let Some(max) = self.max_running {
            write!(f, "%{max}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pbs_forms() {
        let r: ArrayRange = "1-100:2%10".parse().unwrap();
        assert_eq!(
            (r.start, r.end, r.step, r.max_running),
            (1, 100, 2, Some(10))
        );
        assert_eq!(r.len(), 50);
        assert_eq!(r.last(), 99);
        assert!(r.contains(99) && !r.contains(100) && !r.contains(0));
        let plain: ArrayRange = "0-9".parse().unwrap();
        assert_eq!(plain.len(), 10);
        assert_eq!(plain.to_string(), "0-9");
    }

    #[test]
    fn refuses_what_pbs_refuses() {
        for (bad, why) in [
            ("5", "X-Y"),
            ("5-5", "below"),
            ("9-1", "below"),
            ("1-9:0", "step"),
            ("1-9%0", "running limit"),
            ("a-9", "first index"),
            ("1-", "last index"),
            ("-1-5", "first index"),
            ("1-99999999999", "too large"),
            ("1-4294967295", "indices go up to"),
        ] {
            let err = bad.parse::<ArrayRange>().unwrap_err();
            assert!(err.reason.contains(why), "{bad}: {err}");
            assert_eq!(err.token, bad);
        }
    }

    #[test]
    fn len_matches_indices() {
        for text in ["1-10:3", "0-1", "7-1000:7", "1-2:5"] {
            let r: ArrayRange = text.parse().unwrap();
            assert_eq!(r.len(), r.indices().count(), "{text}");
            assert_eq!(r.indices().last(), Some(r.last()));
        }
    }
}

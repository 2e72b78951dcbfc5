//! PBS time values: `walltime=01:30:00`, `cput=90:00`, `walltime=3600`.
//!
//! PBS accepts `[[HH:]MM:]SS[.frac]` with at most two colons, each field any number of digits
//! (`1:99:99` is allowed and means 1 h + 99 min + 99 s), and rounds a fraction to the nearest
//! second (`.5` and above round up, from the first three digits). It keeps whole seconds and
//! prints them as `HH:MM:SS`, hours growing past 99 (`100:00:00`).
//!
//! Source: OpenPBS `src/lib/Libattr/attr_fn_time.c` (`decode_time`, `encode_time`); the
//! `HH:MM` of `qstat -a` is the first five characters of that string (`src/cmds/qstat.c`).
//!
//! ```
//! use hpcbox_pbs::duration::Duration;
//! let d: Duration = "1:30:00".parse().unwrap();
//! assert_eq!(d.as_secs(), 5400);
//! assert_eq!(d.to_string(), "01:30:00");
//! assert_eq!(d.to_hhmm(), "01:30");
//! ```

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ParseError;

/// A PBS time value in whole seconds, at most [`Duration::MAX`].
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct Duration {
    secs: u64,
}

impl Duration {
    /// The longest time PBS accepts: `LONG_MAX - 1` seconds (`PBS_MAX_TIME`).
    pub const MAX: Duration = Duration {
        secs: i64::MAX as u64 - 1,
    };

    /// Zero seconds.
    pub const ZERO: Duration = Duration { secs: 0 };

    /// A duration of `secs` seconds, saturating at [`Duration::MAX`].
    pub fn from_secs(secs: u64) -> Duration {
        Duration {
            secs: secs.min(Duration::MAX.secs),
        }
    }

    /// The number of seconds.
    pub fn as_secs(&self) -> u64 {
        self.secs
    }

    /// `HH:MM`, as the Req'd Time column of `qstat -a` shows it (hours may exceed 99; qstat
    /// then cuts the text to five characters itself).
    pub fn to_hhmm(&self) -> String {
        format!("{:02}:{:02}", self.secs / 3600, self.secs % 3600 / 60)
    }
}

impl From<Duration> for std::time::Duration {
    fn from(d: Duration) -> std::time::Duration {
        std::time::Duration::from_secs(d.secs)
    }
}

impl FromStr for Duration {
    type Err = ParseError;

    /// Parses what `decode_time` accepts.
    fn from_str(s: &str) -> Result<Duration, ParseError> {
        if s.is_empty() {
            return Err(ParseError::new(s, "a time cannot be empty"));
        }
        let (clock, frac) = match s.split_once('.') {
            Some((clock, frac)) => (clock, Some(frac)),
            None => (s, None),
        };
        if let Some(bad) = s
            .chars()
            .find(|c| !c.is_ascii_digit() && !":.".contains(*c))
        {
            return Err(ParseError::new(
                s,
                format!("unexpected `{bad}` in a time (expected [[HH:]MM:]SS[.frac])"),
            ));
        }
        let fields: Vec<&str> = clock.split(':').collect();
        if fields.len() > 3 {
            return Err(ParseError::new(s, "a time has at most two colons"));
        }
        let last = fields.len() - 1;
        for (i, field) in fields.iter().enumerate() {
            // decode_time wants a digit before every ':' and '.'; a trailing ':' is allowed.
            if field.is_empty() && (i < last || frac.is_some()) {
                return Err(ParseError::new(s, "a digit must come before `:` and `.`"));
            }
        }
        let mut secs: u64 = 0;
        for field in &fields {
            let value = parse_field(field).ok_or_else(|| ParseError::new(s, "time is too long"))?;
            secs = secs
                .checked_mul(60)
                .and_then(|v| v.checked_add(value))
                .filter(|v| *v <= Duration::MAX.secs)
                .ok_or_else(|| ParseError::new(s, "time is too long"))?;
        }
        if let Some(frac) = frac {
            if frac.contains('.') || frac.contains(':') {
                return Err(ParseError::new(s, "only digits may follow `.` in a time"));
            }
            if frac.as_bytes().first().is_some_and(|d| *d >= b'5') {
                secs = (secs + 1).min(Duration::MAX.secs);
            }
        }
        Ok(Duration { secs })
    }
}

/// One field of a time: digits (empty means 0), within a C `long`.
fn parse_field(field: &str) -> Option<u64> {
    if field.is_empty() {
        return Some(0);
    }
    field.parse::<u64>().ok().filter(|v| *v <= i64::MAX as u64)
}

impl fmt::Display for Duration {
    /// `HH:MM:SS` as `encode_time` prints it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (h, m, s) = (self.secs / 3600, self.secs % 3600 / 60, self.secs % 60);
        write!(f, "{h:02}:{m:02}:{s:02}")
    }
}

impl TryFrom<String> for Duration {
    type Error = ParseError;

    fn try_from(s: String) -> Result<Duration, ParseError> {
        s.parse()
    }
}

impl From<Duration> for String {
    fn from(d: Duration) -> String {
        d.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: &str) -> u64 {
        s.parse::<Duration>().unwrap().as_secs()
    }

    #[test]
    fn parses_what_decode_time_accepts() {
        assert_eq!(secs("3600"), 3600);
        assert_eq!(secs("00:10:00"), 600);
        assert_eq!(secs("10:00"), 600);
        assert_eq!(secs("1:30:00"), 5400);
        assert_eq!(secs("100:00:00"), 360000);
        assert_eq!(secs("1:99:99"), 3600 + 99 * 60 + 99);
        assert_eq!(secs("0"), 0);
        assert_eq!(secs("10:"), 600);
        assert_eq!(secs("007"), 7);
    }

    #[test]
    fn rounds_fractions_to_the_nearest_second() {
        assert_eq!(secs("1.5"), 2);
        assert_eq!(secs("1.499"), 1);
        assert_eq!(secs("1.4999"), 1);
        assert_eq!(secs("00:00:01.9"), 2);
        assert_eq!(secs("5."), 5);
    }

    #[test]
    fn refuses_what_decode_time_refuses() {
        for bad in [
            "", ":10", "1::2", "1:2:3:4", "-1", "+1", "1h", ".5", "1:.5", "1.2.3", "1.5:00", " 1",
            "1 ",
        ] {
            assert!(
                bad.parse::<Duration>().is_err(),
                "{bad:?} should be refused"
            );
        }
        let err = "1h".parse::<Duration>().unwrap_err();
        assert_eq!(err.token, "1h");
        assert!(err.reason.contains("`h`"));
    }

    #[test]
    fn overflow_is_an_error() {
        assert!("9223372036854775807".parse::<Duration>().is_err());
        assert_eq!(secs("9223372036854775806"), Duration::MAX.as_secs());
        assert!("99999999999999999999".parse::<Duration>().is_err());
        assert!("9223372036854775807:00".parse::<Duration>().is_err());
    }

    #[test]
    fn prints_as_encode_time() {
        assert_eq!(Duration::from_secs(0).to_string(), "00:00:00");
        assert_eq!(Duration::from_secs(59).to_string(), "00:00:59");
        assert_eq!(Duration::from_secs(3661).to_string(), "01:01:01");
        assert_eq!(Duration::from_secs(360000).to_string(), "100:00:00");
        assert_eq!(Duration::from_secs(5400).to_hhmm(), "01:30");
        assert_eq!(Duration::from_secs(360000).to_hhmm(), "100:00");
        assert_eq!(Duration::from_secs(u64::MAX), Duration::MAX);
    }

    #[test]
    fn serde_uses_the_string_form() {
        let d = Duration::from_secs(600);
        assert_eq!(serde_json::to_string(&d).unwrap(), "\"00:10:00\"");
        assert_eq!(serde_json::from_str::<Duration>("\"600\"").unwrap(), d);
    }
}

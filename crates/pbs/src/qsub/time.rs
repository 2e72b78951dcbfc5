//! `-a`: the execution time as written.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ParseError;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}

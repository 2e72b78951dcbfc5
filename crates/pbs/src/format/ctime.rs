//! C `ctime()` text, which `qstat -f` and `pbsnodes -a` print for time attributes.
//!
//! The crate reads no clock and no `TZ`: the caller passes the [`jiff::tz::TimeZone`] the
//! command would use (the local zone of the machine printing).

use jiff::tz::TimeZone;
use jiff::Timestamp;

const WEEKDAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `ctime(&t)` without its trailing newline: `Www Mmm dd hh:mm:ss yyyy`, the day padded with a
/// space (asctime's `%3d`). `None` when the time is outside what jiff can represent (about
/// years −9999 to 9999), where PBS's own `ctime` would fail.
///
/// ```
/// use hpcbox_pbs::format::ctime::ctime;
/// use jiff::tz::TimeZone;
/// assert_eq!(ctime(1722841273, &TimeZone::UTC).as_deref(), Some("Mon Aug  5 07:01:13 2024"));
/// ```
pub fn ctime(timestamp_secs: i64, tz: &TimeZone) -> Option<String> {
    let ts = Timestamp::from_second(timestamp_secs).ok()?;
    let dt = tz.to_datetime(ts);
    let weekday = WEEKDAYS[usize::from(dt.weekday().to_monday_zero_offset().unsigned_abs())];
    let month = MONTHS[usize::from(dt.month().unsigned_abs()).checked_sub(1)?];
    Some(format!(
        "{weekday} {month}{:3} {:02}:{:02}:{:02} {}",
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second(),
        dt.year()
    ))
}

/// The number C's `atol` reads from `value`: leading blanks, an optional sign, then digits up to
/// the first non-digit; 0 when there are none; saturating where `strtol` does.
///
/// ```
/// use hpcbox_pbs::format::ctime::atol;
/// assert_eq!(atol(" 1726303075xyz"), 1726303075);
/// assert_eq!(atol("-12"), -12);
/// assert_eq!(atol("abc"), 0);
/// ```
pub fn atol(value: &str) -> i64 {
    let rest = value.trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
    let (negative, digits) = match rest.as_bytes().first() {
        Some(b'-') => (true, &rest[1..]),
        Some(b'+') => (false, &rest[1..]),
        _ => (false, rest),
    };
    let mut n: i64 = 0;
    for b in digits.bytes().take_while(u8::is_ascii_digit) {
        let d = i64::from(b - b'0');
        n = match n.checked_mul(10).and_then(|m| {
            if negative {
                m.checked_sub(d)
            } else {
                m.checked_add(d)
            }
        }) {
            Some(v) => v,
            None => return if negative { i64::MIN } else { i64::MAX },
        };
    }
    n
}

/// The text PBS prints for a time attribute holding `value` (seconds since the epoch as the
/// server encodes it): its [`ctime`], or the value itself when that time cannot be shown.
pub fn time_value(value: &str, tz: &TimeZone) -> String {
    ctime(atol(value), tz).unwrap_or_else(|| value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn matches_real_qstat_times() {
        // From a real `qstat -fx` (see tests/formats.rs): history_timestamp 1726303075 is the
        // mtime printed as "Sat Sep 14 08:37:55 2024" on a UTC server.
        assert_eq!(
            ctime(1726303075, &TimeZone::UTC).as_deref(),
            Some("Sat Sep 14 08:37:55 2024")
        );
        assert_eq!(
            ctime(0, &TimeZone::UTC).as_deref(),
            Some("Thu Jan  1 00:00:00 1970")
        );
    }

    #[test]
    fn uses_the_given_zone() {
        let tz = TimeZone::fixed(jiff::tz::offset(-5));
        assert_eq!(ctime(0, &tz).as_deref(), Some("Wed Dec 31 19:00:00 1969"));
    }

    #[test]
    fn out_of_range_falls_back_to_the_value() {
        assert_eq!(ctime(i64::MAX, &TimeZone::UTC), None);
        assert_eq!(
            time_value("99999999999999999999", &TimeZone::UTC),
            "99999999999999999999"
        );
        assert_eq!(atol("99999999999999999999"), i64::MAX);
        assert_eq!(atol("-99999999999999999999"), i64::MIN);
    }

    proptest! {
        #[test]
        fn ctime_is_24_characters_for_four_digit_years(t in 0i64..253_402_300_799) {
            let text = ctime(t, &TimeZone::UTC).unwrap_or_default();
            prop_assert_eq!(text.len(), 24);
        }

        #[test]
        fn atol_reads_back_any_i64(n in any::<i64>()) {
            prop_assert_eq!(atol(&n.to_string()), n);
        }

        #[test]
        fn time_value_never_panics(value in ".*") {
            let _ = time_value(&value, &TimeZone::UTC);
        }
    }
}

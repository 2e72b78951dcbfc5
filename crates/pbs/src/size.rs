//! PBS size values: `mem=1gb`, `vmem=512mb`, `file=8kw`, `pmem=100`.
//!
//! A size is a whole number, an optional multiplier `k m g t p` (powers of 1024) and an optional
//! unit `b` (bytes, the default) or `w` (words of 8 bytes), all case-insensitive. PBS keeps the
//! number, the shift and the unit apart and prints them back in lowercase (`1GB` is shown as
//! `1gb`, `100` as `100b`), and so does [`Size`]. Blanks and signs, which the C library would
//! let through `strtoull`, are refused, and so is an amount of more than 16 EiB.
//!
//! Source: OpenPBS `src/lib/Libattr/attr_fn_size.c` (`to_size`, `from_size`, `normalize_size`,
//! `get_kilobytes_from_attr`); the word size is `SIZEOF_WORD` (8) in `src/include/pbs_share.h`.
//!
//! ```
//! use hpcbox_pbs::size::Size;
//! let s: Size = "1GB".parse().unwrap();
//! assert_eq!(s.to_string(), "1gb");
//! assert_eq!(s.bytes(), 1 << 30);
//! assert_eq!(s, "1024mb".parse().unwrap());
//! ```

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ParseError;

/// Bytes in one PBS word (`SIZEOF_WORD`).
pub const WORD_BYTES: u64 = 8;

/// Whether a size counts bytes or 8-byte words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SizeUnit {
    /// Bytes, written `b` (the default when no unit is given).
    Bytes,
    /// Words of [`WORD_BYTES`] bytes, written `w`.
    Words,
}

impl SizeUnit {
    fn factor(self) -> u64 {
        match self {
            SizeUnit::Bytes => 1,
            SizeUnit::Words => WORD_BYTES,
        }
    }

    fn letter(self) -> char {
        match self {
            SizeUnit::Bytes => 'b',
            SizeUnit::Words => 'w',
        }
    }
}

/// A PBS size: a number, a binary multiplier (shift 0, 10, 20, 30, 40 or 50) and a unit.
///
/// Equality, ordering and hashing go by the amount of bytes, so `1gb == 1024mb`; the
/// representation is kept only for printing. Every `Size` holds at most `u64::MAX` bytes.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Size {
    num: u64,
    shift: u8,
    unit: SizeUnit,
}

impl Size {
    /// A size of `num` units shifted left by `shift` bits (0, 10, 20, 30, 40 or 50), or `None`
    /// when the shift is not one of those or the byte amount does not fit in 64 bits.
    ///
    /// ```
    /// use hpcbox_pbs::size::{Size, SizeUnit};
    /// assert_eq!(Size::new(8, 10, SizeUnit::Words).unwrap().to_string(), "8kw");
    /// assert!(Size::new(1, 7, SizeUnit::Bytes).is_none());
    /// ```
    pub fn new(num: u64, shift: u8, unit: SizeUnit) -> Option<Size> {
        if !matches!(shift, 0 | 10 | 20 | 30 | 40 | 50) {
            return None;
        }
        let size = Size { num, shift, unit };
        size.checked_bytes().map(|_| size)
    }

    /// A plain byte count, printed `<n>b`.
    pub fn from_bytes(bytes: u64) -> Size {
        Size {
            num: bytes,
            shift: 0,
            unit: SizeUnit::Bytes,
        }
    }

    /// A count of kilobytes, printed `<n>kb` as PBS prints sizes in exec_vnode and usage.
    /// Saturates at the largest count that fits in 64 bits of bytes (16 EiB).
    ///
    /// ```
    /// use hpcbox_pbs::size::Size;
    /// assert_eq!(Size::from_kb(4194304).to_string(), "4194304kb");
    /// assert_eq!(Size::from_kb(u64::MAX).bytes(), u64::MAX >> 10 << 10);
    /// ```
    pub fn from_kb(kb: u64) -> Size {
        Size {
            num: kb.min(u64::MAX >> 10),
            shift: 10,
            unit: SizeUnit::Bytes,
        }
    }

    /// The number as written, before multiplier and unit.
    pub fn num(&self) -> u64 {
        self.num
    }

    /// The binary shift of the multiplier: 0 (none), 10 (`k`), 20 (`m`), 30 (`g`), 40 (`t`),
    /// 50 (`p`).
    pub fn shift(&self) -> u8 {
        self.shift
    }

    /// Bytes or words.
    pub fn unit(&self) -> SizeUnit {
        self.unit
    }

    fn checked_bytes(&self) -> Option<u64> {
        let scaled = self.num.checked_mul(self.unit.factor())?;
        let shifted = scaled.checked_shl(u32::from(self.shift))?;
        (shifted >> self.shift == scaled).then_some(shifted)
    }

    /// The amount in bytes.
    pub fn bytes(&self) -> u64 {
        // Every constructor checks that the amount fits, so this cannot fail.
        self.checked_bytes().unwrap_or(u64::MAX)
    }

    /// The amount in kilobytes, rounded up as PBS does (`get_kilobytes_from_attr`), which is
    /// what exec_vnode (`mem=4194304kb`) and limit messages print.
    ///
    /// ```
    /// use hpcbox_pbs::size::Size;
    /// assert_eq!("4gb".parse::<Size>().unwrap().kilobytes(), 4194304);
    /// assert_eq!("1b".parse::<Size>().unwrap().kilobytes(), 1);
    /// ```
    pub fn kilobytes(&self) -> u64 {
        self.bytes().div_ceil(1024)
    }

    /// This size multiplied by `n`, keeping its multiplier and unit (how PBS sums a chunk's
    /// size over the chunk count); `None` on overflow.
    pub fn checked_mul(&self, n: u64) -> Option<Size> {
        Size::new(self.num.checked_mul(n)?, self.shift, self.unit)
    }

    /// The sum of two sizes, written as PBS writes it after `normalize_size`: words become
    /// bytes unless both are words, byte counts are rounded up to kilobytes, and the smaller
    /// of the two multipliers is used. `None` on overflow.
    ///
    /// ```
    /// use hpcbox_pbs::size::Size;
    /// let a: Size = "2gb".parse().unwrap();
    /// let b: Size = "512mb".parse().unwrap();
    /// assert_eq!(a.checked_add(&b).unwrap().to_string(), "2560mb");
    /// ```
    pub fn checked_add(&self, other: &Size) -> Option<Size> {
        let (a, b) = normalize(self, other)?;
        Size::new(a.num.checked_add(b.num)?, a.shift, a.unit)
    }
}

/// Brings two sizes to one unit and one shift, as `normalize_size` does.
fn normalize(a: &Size, b: &Size) -> Option<(Size, Size)> {
    let (mut a, mut b) = (*a, *b);
    if a.unit != b.unit {
        for s in [&mut a, &mut b] {
            if s.unit == SizeUnit::Words {
                s.num = s.num.checked_mul(WORD_BYTES)?;
                s.unit = SizeUnit::Bytes;
            }
        }
    }
    for s in [&mut a, &mut b] {
        if s.shift == 0 {
            s.num = s.num.div_ceil(1024);
            s.shift = 10;
        }
    }
    let shift = a.shift.min(b.shift);
    for s in [&mut a, &mut b] {
        let adj = u32::from(s.shift - shift);
        let widened = s.num.checked_shl(adj)?;
        if widened >> adj != s.num {
            return None;
        }
        s.num = widened;
        s.shift = shift;
    }
    Some((a, b))
}

fn shift_of(letter: char) -> Option<u8> {
    match letter.to_ascii_lowercase() {
        'k' => Some(10),
        'm' => Some(20),
        'g' => Some(30),
        't' => Some(40),
        'p' => Some(50),
        _ => None,
    }
}

fn unit_of(letter: char) -> Option<SizeUnit> {
    match letter.to_ascii_lowercase() {
        'b' => Some(SizeUnit::Bytes),
        'w' => Some(SizeUnit::Words),
        _ => None,
    }
}

fn shift_letter(shift: u8) -> &'static str {
    match shift {
        10 => "k",
        20 => "m",
        30 => "g",
        40 => "t",
        50 => "p",
        _ => "",
    }
}

impl FromStr for Size {
    type Err = ParseError;

    /// Parses `<digits>[k|m|g|t|p][b|w]`, case-insensitive, as `to_size` does.
    fn from_str(s: &str) -> Result<Size, ParseError> {
        let digits_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (digits, suffix) = s.split_at(digits_end);
        if digits.is_empty() {
            let why = if s.is_empty() {
                "a size cannot be empty"
            } else {
                "a size must start with a number"
            };
            return Err(ParseError::new(s, why));
        }
        let num: u64 = digits
            .parse()
            .map_err(|_| ParseError::new(s, "size is too large"))?;
        let mut chars = suffix.chars();
        let (shift, unit) = match (chars.next(), chars.next(), chars.next()) {
            (None, _, _) => (0, SizeUnit::Bytes),
            (Some(a), None, _) => match (shift_of(a), unit_of(a)) {
                (Some(shift), _) => (shift, SizeUnit::Bytes),
                (None, Some(unit)) => (0, unit),
                (None, None) => return Err(bad_unit(s, suffix)),
            },
            (Some(a), Some(b), None) => match (shift_of(a), unit_of(b)) {
                (Some(shift), Some(unit)) => (shift, unit),
                _ => return Err(bad_unit(s, suffix)),
            },
            _ => return Err(bad_unit(s, suffix)),
        };
        Size::new(num, shift, unit).ok_or_else(|| ParseError::new(s, "size is too large"))
    }
}

fn bad_unit(token: &str, suffix: &str) -> ParseError {
    ParseError::new(
        token,
        format!("unknown size unit `{suffix}` (expected k, m, g, t or p, then b or w)"),
    )
}

impl fmt::Display for Size {
    /// PBS's own spelling (`from_size`): the number, the multiplier letter and `b` or `w`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}{}{}",
            self.num,
            shift_letter(self.shift),
            self.unit.letter()
        )
    }
}

impl PartialEq for Size {
    fn eq(&self, other: &Size) -> bool {
        self.bytes() == other.bytes()
    }
}

impl Eq for Size {}

impl PartialOrd for Size {
    fn partial_cmp(&self, other: &Size) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Size {
    fn cmp(&self, other: &Size) -> Ordering {
        self.bytes().cmp(&other.bytes())
    }
}

impl Hash for Size {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.bytes().hash(state);
    }
}

impl TryFrom<String> for Size {
    type Error = ParseError;

    fn try_from(s: String) -> Result<Size, ParseError> {
        s.parse()
    }
}

impl From<Size> for String {
    fn from(s: Size) -> String {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(s: &str) -> Size {
        s.parse().unwrap()
    }

    #[test]
    fn parses_every_spelling() {
        assert_eq!(size("1GB").bytes(), 1 << 30);
        assert_eq!(size("1gb").bytes(), 1 << 30);
        assert_eq!(size("1g").bytes(), 1 << 30);
        assert_eq!(size("512mb").bytes(), 512 << 20);
        assert_eq!(size("8kw").bytes(), 8 * 1024 * 8);
        assert_eq!(size("100").bytes(), 100);
        assert_eq!(size("100b").bytes(), 100);
        assert_eq!(size("3w").bytes(), 24);
        assert_eq!(size("2Tb").bytes(), 2 << 40);
        assert_eq!(size("1pb").bytes(), 1 << 50);
    }

    #[test]
    fn prints_as_pbs_does() {
        assert_eq!(size("1GB").to_string(), "1gb");
        assert_eq!(size("100").to_string(), "100b");
        assert_eq!(size("8KW").to_string(), "8kw");
        assert_eq!(size("7W").to_string(), "7w");
        assert_eq!(size("0").to_string(), "0b");
        assert_eq!(Size::from_kb(4194304).to_string(), "4194304kb");
    }

    #[test]
    fn refuses_bad_sizes() {
        for bad in [
            "", "gb", "1x", "1gbb", "1bw", "1kbw", "-1", "+1", " 1", "1 ", "1.5gb",
        ] {
            assert!(bad.parse::<Size>().is_err(), "{bad:?} should be refused");
        }
        let err = "12XB".parse::<Size>().unwrap_err();
        assert_eq!(err.token, "12XB");
        assert!(err.reason.contains("`XB`"), "{}", err.reason);
    }

    #[test]
    fn overflow_is_an_error() {
        assert!("18446744073709551616".parse::<Size>().is_err());
        assert!("16384pb".parse::<Size>().is_err());
        assert!("2048pw".parse::<Size>().is_err());
        assert_eq!(size("16383pb").bytes(), 16383 << 50);
        assert_eq!(size("18446744073709551615").bytes(), u64::MAX);
    }

    #[test]
    fn compares_by_bytes() {
        assert_eq!(size("1gb"), size("1024mb"));
        assert_eq!(size("1kw"), size("8kb"));
        assert!(size("1gb") > size("1000mb"));
        assert!(size("1023") < size("1kb"));
        let mut v = vec![size("2gb"), size("1kb"), size("3mb")];
        v.sort();
        assert_eq!(v, vec![size("1kb"), size("3mb"), size("2gb")]);
    }

    #[test]
    fn kilobytes_round_up() {
        assert_eq!(size("1025").kilobytes(), 2);
        assert_eq!(size("1024").kilobytes(), 1);
        assert_eq!(size("0").kilobytes(), 0);
        assert_eq!(size("1kw").kilobytes(), 8);
        assert_eq!(size("4gb").kilobytes(), 4194304);
    }

    #[test]
    fn sums_as_pbs_normalizes() {
        let sum = |a: &str, b: &str| size(a).checked_add(&size(b)).unwrap().to_string();
        assert_eq!(sum("1gb", "1gb"), "2gb");
        assert_eq!(sum("2gb", "512mb"), "2560mb");
        assert_eq!(sum("100", "1"), "2kb");
        assert_eq!(sum("1kw", "1kw"), "2kw");
        assert_eq!(sum("1kw", "1kb"), "9kb");
        assert_eq!(size("1gb").checked_mul(4).unwrap().to_string(), "4gb");
        assert!(size("16383pb").checked_add(&size("1pb")).is_none());
        assert!(size("1pb").checked_mul(1 << 20).is_none());
    }

    #[test]
    fn serde_uses_the_string_form() {
        let json = serde_json::to_string(&size("512MB")).unwrap();
        assert_eq!(json, "\"512mb\"");
        let back: Size = serde_json::from_str("\"1gb\"").unwrap();
        assert_eq!(back, size("1gb"));
        assert!(serde_json::from_str::<Size>("\"1xb\"").is_err());
    }
}

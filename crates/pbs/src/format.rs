//! The exact text PBS Professional prints, as pure functions over [`crate::status`] data.
//!
//! Each renderer follows the OpenPBS command that prints the form (`src/cmds/qstat.c`,
//! `src/cmds/pbsnodes.c`, master cd7ab5e) byte for byte for ASCII input; widths and truncation
//! count characters where PBS counts bytes, so non-ASCII values stay valid UTF-8.
//!
//! - [`qsub_job_id`]: the line `qsub` prints;
//! - [`qstat`]: the default job table (`qstat`, `qstat -w`, `qstat -x`);
//! - [`qstat_alt`]: the alternate job table (`-a -i -r -H -u -n -s -G -M -1`);
//! - [`full`]: `qstat -f`, `qstat -Qf`, `qstat -Bf`, and [`full::parse`] to read them back;
//! - [`json`]: `qstat -f -F json`, `pbsnodes -a -F json`, in cJSON's formatting;
//! - [`queue`] and [`server`]: `qstat -Q`, `qstat -q`, `qstat -B`;
//! - [`pbsnodes`]: `pbsnodes -a` and `pbsnodes -l`;
//! - [`ctime`]: C `ctime()` text for time attributes;
//! - [`history`]: the comments a job gets when it runs and ends.

use std::borrow::Cow;

pub mod ctime;
pub mod full;
pub mod history;
pub mod json;
pub mod pbsnodes;
pub mod qstat;
pub mod qstat_alt;
pub mod queue;
pub mod server;

/// The character PBS puts in place of the last kept character of a cut field.
pub const TRUNCATION_MARK: char = '*';

/// The line `qsub` prints on success: the job id and a newline.
///
/// ```
/// assert_eq!(hpcbox_pbs::format::qsub_job_id("1234.server"), "1234.server\n");
/// ```
pub fn qsub_job_id(job_id: &str) -> String {
    format!("{job_id}\n")
}

/// Shows control characters other than newline and tab as `^X` (`^A` for 0x01, `^?` is not
/// used: only characters below 32 change), as PBS's `show_nonprint_chars` does.
///
/// ```
/// use hpcbox_pbs::format::show_nonprint;
/// assert_eq!(show_nonprint("a\u{1}b\tc"), "a^Ab\tc");
/// ```
pub fn show_nonprint(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_shown_as_caret) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for ch in text.chars() {
        push_nonprint(&mut out, ch);
    }
    Cow::Owned(out)
}

/// Appends one character as [`show_nonprint`] shows it.
pub(crate) fn push_nonprint(out: &mut String, ch: char) {
    if is_shown_as_caret(ch) {
        out.push('^');
        // ch < 32, so ch + 64 is an ASCII letter or one of @[\]^_.
        out.push(char::from((ch as u8).wrapping_add(64)));
    } else {
        out.push(ch);
    }
}

fn is_shown_as_caret(ch: char) -> bool {
    (ch as u32) < 32 && ch != '\n' && ch != '\t'
}

/// Cuts `value` to `width` characters, the last kept one replaced by `*`, when it is longer
/// than `width` (PBS's `trunc_value`); shorter values are returned unchanged.
///
/// ```
/// use hpcbox_pbs::format::truncate_marked;
/// assert_eq!(truncate_marked("1234.pbs01.example.com", 15), "1234.pbs01.exa*");
/// assert_eq!(truncate_marked("short", 15), "short");
/// ```
pub fn truncate_marked(value: &str, width: usize) -> Cow<'_, str> {
    if width == 0 || value.chars().count() <= width {
        return Cow::Borrowed(value);
    }
    let mut cut: String = value.chars().take(width - 1).collect();
    cut.push(TRUNCATION_MARK);
    Cow::Owned(cut)
}

/// printf `%-W.Ps`: at most `precision` characters, padded on the right to `width`.
pub(crate) fn left(out: &mut String, value: &str, width: usize, precision: Option<usize>) {
    pad(out, value, width, precision, false);
}

/// printf `%W.Ps`: at most `precision` characters, padded on the left to `width`.
pub(crate) fn right(out: &mut String, value: &str, width: usize, precision: Option<usize>) {
    pad(out, value, width, precision, true);
}

fn pad(out: &mut String, value: &str, width: usize, precision: Option<usize>, on_left: bool) {
    let kept: &str = match precision {
        Some(p) => match value.char_indices().nth(p) {
            Some((end, _)) => &value[..end],
            None => value,
        },
        None => value,
    };
    let fill = width.saturating_sub(kept.chars().count());
    if on_left {
        out.push_str(&" ".repeat(fill));
        out.push_str(kept);
    } else {
        out.push_str(kept);
        out.push_str(&" ".repeat(fill));
    }
}

/// The part of a user or queue name before `@` (`user@host` → `user`).
pub(crate) fn before_at(value: &str) -> &str {
    value.split('@').next().unwrap_or(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn printf_padding_and_precision() {
        let mut s = String::new();
        left(&mut s, "abc", 5, None);
        s.push('|');
        right(&mut s, "abc", 5, None);
        s.push('|');
        left(&mut s, "abcdef", 4, Some(4));
        s.push('|');
        right(&mut s, " -- ", 3, Some(3));
        s.push('|');
        left(&mut s, "toolong", 3, None);
        assert_eq!(s, "abc  |  abc|abcd| --|toolong");
    }

    #[test]
    fn caret_notation() {
        assert_eq!(show_nonprint("\u{0}\u{1b}\u{1f}"), "^@^[^_");
        assert_eq!(show_nonprint("plain\n"), "plain\n");
        assert_eq!(show_nonprint("é\u{7f}"), "é\u{7f}");
    }

    #[test]
    fn truncation_edges() {
        assert_eq!(truncate_marked("abcdef", 6), "abcdef");
        assert_eq!(truncate_marked("abcdefg", 6), "abcde*");
        assert_eq!(truncate_marked("abc", 1), "*");
        assert_eq!(truncate_marked("abc", 0), "abc");
        assert_eq!(truncate_marked("ééééé", 3), "éé*");
    }

    proptest! {
        #[test]
        fn truncation_never_exceeds_width(value in ".{0,40}", width in 1usize..30) {
            let cut = truncate_marked(&value, width);
            prop_assert!(cut.chars().count() <= width.max(value.chars().count().min(width)));
            prop_assert!(cut.chars().count() <= width);
        }

        #[test]
        fn padding_gives_exact_width_for_short_values(value in "[a-z]{0,10}", width in 10usize..20) {
            let mut out = String::new();
            left(&mut out, &value, width, None);
            prop_assert_eq!(out.chars().count(), width);
        }
    }
}

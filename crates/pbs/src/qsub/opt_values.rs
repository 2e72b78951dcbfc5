//! The `-p` and `-W` values as `qsub` reads them.

use super::resources::is_c_space;

/// `-p`: an optionally signed decimal number after leading blanks, −1024 to 1023.
pub(super) fn parse_priority(v: &str) -> Option<i32> {
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
pub(super) fn parse_equal_string(text: &str) -> Option<Vec<(String, String)>> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qsub::test_support::args;
    use crate::qsub::Checkpoint;

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
    fn priority_and_checkpoint_values() {
        assert_eq!(parse_priority(" -1024"), Some(-1024));
        assert_eq!(parse_priority("+1023"), Some(1023));
        assert_eq!(parse_priority("5x"), None);
        assert_eq!(parse_priority("99999999999"), None);
        assert_eq!("c=10".parse::<Checkpoint>(), Ok(Checkpoint::CpuMinutes(10)));
        assert_eq!(" w".parse::<Checkpoint>(), Ok(Checkpoint::Wall));
        assert!("x=1".parse::<Checkpoint>().is_err());
    }
}

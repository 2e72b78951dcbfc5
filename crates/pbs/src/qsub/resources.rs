//! `-l`: splitting a resource list as `qsub` does, and writing one back.

use serde::{Deserialize, Serialize};

/// One `-l name[=value]` resource as `qsub` sends it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ResourceRequest {
    /// The resource name.
    pub name: String,
    /// The value, quotes removed (empty for a bare name).
    pub value: String,
}

/// Why a `-l` value could not be split: PBS's error number and the byte offset it points at.
pub(super) struct ResourceSyntaxError {
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
pub(super) fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// Splits a `-l` value into resources (`set_resources`).
pub(super) fn split_resources(text: &str) -> Result<Vec<ResourceRequest>, ResourceSyntaxError> {
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
pub(super) fn resource_error_lines(value: &str, err: &ResourceSyntaxError) -> Vec<String> {
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

/// A resource as a `-l` argument: the value is quoted when it holds a comma or a blank.
pub(super) fn render_resource(r: &ResourceRequest) -> String {
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

#[cfg(test)]
mod tests {
    use crate::qsub::test_support::{args, err, usage_with};

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
}

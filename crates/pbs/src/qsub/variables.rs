//! `-v`: the variables to export to the job.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{QsubError, QsubErrorKind};
use crate::ParseError;

/// The value of one `-v` entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum VariableValue {
    /// `VAR` alone: the value is taken from `qsub`'s environment.
    Inherit,
    /// `VAR=value`, quotes removed and `\,` turned into `,`.
    Given(String),
}

/// One `-v` entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Variable {
    /// The variable's name.
    pub name: String,
    /// Its value, or where to take it from.
    pub value: VariableValue,
}

/// `-v`: the variables to export to the job.
///
/// ```
/// use hpcbox_pbs::qsub::{VariableList, VariableValue};
/// let v: VariableList = r#"A=1,B="x,y",HOME,C=a\,b"#.parse().unwrap();
/// assert_eq!(v.0[1].value, VariableValue::Given("x,y".into()));
/// assert_eq!(v.0[2].value, VariableValue::Inherit);
/// assert_eq!(v.0[3].value, VariableValue::Given("a,b".into()));
/// let env = v.resolve(|name| (name == "HOME").then(|| "/home/u".to_string())).unwrap();
/// assert_eq!(env[2], ("HOME".to_string(), "/home/u".to_string()));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct VariableList(pub Vec<Variable>);

/// The entries of a `-v` list, split on commas outside quotes and not after `\`
/// (`comma_token`).
fn comma_tokens(list: &str) -> Vec<&str> {
    let bytes = list.as_bytes();
    let mut tokens = Vec::new();
    let mut quote = 0u8;
    let mut start = 0;
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'\'' | b'"' => quote = if quote == b { 0 } else { b },
            b',' if quote == 0 => {
                tokens.push(&list[start..i]);
                start = i + 1;
            }
            b'\\' if i + 1 < bytes.len() => i += 1,
            _ => {}
        }
        i += 1;
    }
    if start < bytes.len() {
        tokens.push(&list[start..]);
    }
    tokens
}

/// A `-v` value with its quoting removed (`copy_env_value` without global quoting): a quote
/// starts or ends a quoted part, a quote of the other kind inside one is literal, `\,` is a
/// comma, and an unquoted comma ends the value. `None` when a quote is left open.
fn unquote_value(raw: &str) -> Option<String> {
    let mut out = String::new();
    let mut quote: Option<char> = None;
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quote) {
            ('"' | '\'', Some(q)) if q == c => quote = None,
            ('"' | '\'', Some(_)) => out.push(c),
            ('"' | '\'', None) => quote = Some(c),
            ('\\', _) if chars.peek() == Some(&',') => {
                out.push(',');
                chars.next();
            }
            (',', None) => break,
            _ => out.push(c),
        }
    }
    quote.is_none().then_some(out)
}

impl FromStr for VariableList {
    type Err = ParseError;

    fn from_str(list: &str) -> Result<Self, ParseError> {
        let mut vars = Vec::new();
        for token in comma_tokens(list) {
            let (name, value) = match token.split_once('=') {
                Some((name, raw)) => match unquote_value(raw) {
                    Some(v) => (name, VariableValue::Given(v)),
                    None => return Err(ParseError::new(token, "unterminated quote")),
                },
                None => (token, VariableValue::Inherit),
            };
            // An empty entry names no variable; qsub cannot take "" from its environment.
            if name.is_empty() {
                return Err(ParseError::new(token, "no variable name"));
            }
            vars.push(Variable {
                name: name.to_string(),
                value,
            });
        }
        Ok(VariableList(vars))
    }
}

impl fmt::Display for VariableList {
    /// The list as `-v` takes it back: values with a comma get `\,`, values with quotes are
    /// quoted with the other quote.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, var) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(&var.name)?;
            if let VariableValue::Given(value) = &var.value {
                let escaped = value.replace(',', "\\,");
                if value.contains('"') {
                    write!(f, "='{escaped}'")?;
                } else if value.contains('\'') {
                    write!(f, "=\"{escaped}\"")?;
                } else {
                    write!(f, "={escaped}")?;
                }
            }
        }
        Ok(())
    }
}

impl VariableList {
    /// The `name=value` pairs to send, taking inherited values from `lookup` (the caller's
    /// environment). As in PBS, inherited `PBS_O_*` names and the job cookies are dropped, and a
    /// name `lookup` does not know is an error (`qsub: cannot send environment with the job`).
    pub fn resolve(
        &self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Vec<(String, String)>, QsubError> {
        let mut out = Vec::new();
        for var in &self.0 {
            match &var.value {
                VariableValue::Given(v) => out.push((var.name.clone(), v.clone())),
                VariableValue::Inherit if is_reserved_variable(&var.name) => {}
                VariableValue::Inherit => match lookup(&var.name) {
                    Some(v) => out.push((var.name.clone(), v)),
                    None => return Err(environment_error(Vec::new())),
                },
            }
        }
        Ok(out)
    }
}

/// Names `qsub -v NAME` never takes from the environment: its own `PBS_O_*` and the job
/// cookies.
fn is_reserved_variable(name: &str) -> bool {
    ["PBS_O_", "PBS_JOBCOOKIE", "PBS_INTERACTIVE_COOKIE"]
        .iter()
        .any(|p| name.starts_with(p))
}

pub(super) fn environment_error(mut lines: Vec<String>) -> QsubError {
    lines.push("qsub: cannot send environment with the job".into());
    QsubError::new(QsubErrorKind::Environment, &lines, false, 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variable_lists() {
        let v: VariableList = "A=1,B,C='x,y',E=a\\,b,D=\"it's\",".parse().unwrap();
        let values: Vec<_> =
            v.0.iter()
                .map(|v| (v.name.as_str(), v.value.clone()))
                .collect();
        assert_eq!(
            values,
            [
                ("A", VariableValue::Given("1".into())),
                ("B", VariableValue::Inherit),
                ("C", VariableValue::Given("x,y".into())),
                ("E", VariableValue::Given("a,b".into())),
                ("D", VariableValue::Given("it's".into())),
            ]
        );
        assert_eq!(v.to_string(), "A=1,B,C=x\\,y,E=a\\,b,D=\"it's\"");
        assert_eq!(v.to_string().parse::<VariableList>().unwrap(), v);
        let env = |n: &str| (n == "B").then(|| "bee".to_string());
        assert_eq!(v.resolve(env).unwrap()[1], ("B".into(), "bee".into()));
        let missing: VariableList = "NOPE".parse().unwrap();
        assert_eq!(missing.resolve(env).unwrap_err().exit_code(), 1);
        // comma_token switches quote kinds, so a lone `'` inside "…" hides the commas after
        // it: PBS loses what follows, and so does this parser.
        let lost: VariableList = "D=\"it's\",E=1".parse().unwrap();
        assert_eq!(lost.0.len(), 1);
        assert_eq!(lost.0[0].value, VariableValue::Given("it's".into()));
        let reserved: VariableList = "PBS_O_HOME,PBS_JOBCOOKIE".parse().unwrap();
        assert_eq!(reserved.resolve(env).unwrap(), []);
    }
}

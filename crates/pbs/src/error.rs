//! The one error type of every parser in this crate.

use std::fmt;

/// A value that could not be parsed: the offending token and why.
///
/// ```
/// let err = hpcbox_pbs::ParseError::new("12XB", "unknown size unit `XB`");
/// assert_eq!(err.to_string(), "`12XB`: unknown size unit `XB`");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// The token that was refused, as the user wrote it.
    pub token: String,
    /// Why it was refused, in a few words.
    pub reason: String,
}

impl ParseError {
    /// An error for `token`, refused because of `reason`.
    pub fn new(token: impl Into<String>, reason: impl Into<String>) -> Self {
        ParseError {
            token: token.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}`: {}", self.token, self.reason)
    }
}

impl std::error::Error for ParseError {}

//! Job destinations: `queue`, `@server` or `queue@server`, as `qsub -q` takes them.

use std::fmt;
use std::str::FromStr;

use crate::ParseError;

/// The longest queue name PBS accepts (`PBS_MAXQUEUENAME`).
pub const MAX_QUEUE_NAME: usize = 15;

/// The longest server name PBS accepts (host name, a colon and a port).
pub const MAX_SERVER_NAME: usize = 255 + 5 + 2;

/// Where a job goes: a queue, a server, or both (`workq@pbs01`).
///
/// An empty queue means the server's default queue; no server means the default server.
///
/// ```
/// use hpcbox_pbs::destination::Destination;
/// let d: Destination = "defaultQ@pbs01".parse().unwrap();
/// assert_eq!(d.queue.as_deref(), Some("defaultQ"));
/// assert_eq!(d.server.as_deref(), Some("pbs01"));
/// assert_eq!(d.to_string(), "defaultQ@pbs01");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Destination {
    /// The queue, if one was named.
    pub queue: Option<String>,
    /// The server, if one was named after `@`.
    pub server: Option<String>,
}

/// A character PBS allows in queue and server names: printable, not blank, not `#` or `@`.
fn is_name_char(c: char) -> bool {
    c.is_ascii_graphic() && c != '#' && c != '@'
}

impl FromStr for Destination {
    type Err = ParseError;

    /// Parses a destination the way `parse_destination_id` does: leading blanks are skipped,
    /// the queue is at most [`MAX_QUEUE_NAME`] name characters, and `@` must be followed by a
    /// non-empty server name. Anything left over is an error.
    fn from_str(text: &str) -> Result<Self, ParseError> {
        let illegal =
            |why: &str| ParseError::new(text, format!("illegally formed destination: {why}"));
        let trimmed = text.trim_start();
        let (queue, server) = match trimmed.split_once('@') {
            Some((queue, server)) => (queue, Some(server)),
            None => (trimmed, None),
        };
        if let Some(bad) = queue.chars().find(|&c| !is_name_char(c)) {
            return Err(illegal(&format!("character {bad:?} in queue name")));
        }
        if queue.len() > MAX_QUEUE_NAME {
            return Err(illegal(&format!(
                "queue name longer than {MAX_QUEUE_NAME} characters"
            )));
        }
        let server = match server {
            None => None,
            Some("") => return Err(illegal("no server name after `@`")),
            Some(s) if s.chars().any(|c| !is_name_char(c)) => {
                return Err(illegal("bad character in server name"))
            }
            Some(s) if s.len() > MAX_SERVER_NAME => return Err(illegal("server name too long")),
            Some(s) => Some(s.to_string()),
        };
        Ok(Destination {
            queue: (!queue.is_empty()).then(|| queue.to_string()),
            server,
        })
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(queue) = &self.queue {
            f.write_str(queue)?;
        }
        if let Some(server) = &self.server {
            write!(f, "@{server}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_server_and_both() {
        let q: Destination = "workq".parse().unwrap();
        assert_eq!(
            (q.queue.as_deref(), q.server.as_deref()),
            (Some("workq"), None)
        );
        let s: Destination = "@pbs01.example.com".parse().unwrap();
        assert_eq!(
            (s.queue, s.server.as_deref()),
            (None, Some("pbs01.example.com"))
        );
        let both: Destination = "  q1@srv:15001".parse().unwrap();
        assert_eq!(both.to_string(), "q1@srv:15001");
    }

    #[test]
    fn refuses_what_pbs_refuses() {
        for bad in ["q@", "a b", "q#1", "q@s@t", "sixteen_chars_xx", "q@s t"] {
            let err = bad.parse::<Destination>().unwrap_err();
            assert!(
                err.reason.starts_with("illegally formed destination"),
                "{bad}: {err}"
            );
            assert_eq!(err.token, bad);
        }
        assert!("fifteen_chars_x".parse::<Destination>().is_ok());
    }
}

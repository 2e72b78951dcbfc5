//! What `qsub -I` and the agent of an interactive job's node share: the order of the terminal's
//! control characters, and the proofs each end gives that it knows the job's secret
//! ([`hpcbox_pbs::interactive`] has the lines that carry them).
//!
//! A proof is HMAC-SHA256 keyed with the secret, over the end's name, the job id and the other
//! end's nonce, so that neither the secret nor a proof the other end could replay ever
//! travels: a process that took `qsub`'s port after `qsub` went away gets no shell, and one that
//! connects to a waiting `qsub` gets no terminal.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Instant;

use hmac::{Hmac, KeyInit, Mac};
use nix::sys::termios::SpecialCharacterIndices as Cc;
use sha2::Sha256;

/// The terminal control characters in the order `qsub -I` and the job's node exchange them
/// ([`hpcbox_pbs::interactive::TerminalSettings::control`], PBS's order).
pub const TERMINAL_CONTROL: [Cc; 6] = [
    Cc::VINTR,
    Cc::VQUIT,
    Cc::VERASE,
    Cc::VKILL,
    Cc::VEOF,
    Cc::VSUSP,
];

/// Which end of an interactive session gives a proof.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The waiting `qsub -I`.
    Qsub,
    /// The agent of the job's node.
    Node,
}

impl End {
    fn name(self) -> &'static str {
        match self {
            End::Qsub => "qsub",
            End::Node => "node",
        }
    }
}

fn mac(secret: &str, end: End, job_id: &str, nonce: &str) -> Hmac<Sha256> {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    for part in [end.name(), job_id, nonce] {
        mac.update(part.as_bytes());
        mac.update(b"\n");
    }
    mac
}

/// `end`'s proof, for job `job_id`, that it knows `secret`, over the other end's `nonce` (hex).
///
/// ```
/// use hpcbox_cluster::interactive::{proof, proves, End};
/// let p = proof("s3cret", End::Qsub, "7.vm", "n0nce");
/// assert!(proves("s3cret", End::Qsub, "7.vm", "n0nce", &p));
/// assert!(!proves("s3cret", End::Node, "7.vm", "n0nce", &p));
/// assert!(!proves("other", End::Qsub, "7.vm", "n0nce", &p));
/// ```
pub fn proof(secret: &str, end: End, job_id: &str, nonce: &str) -> String {
    let tag = mac(secret, end, job_id, nonce).finalize().into_bytes();
    tag.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `given` (hex) is `end`'s proof over `nonce` for job `job_id` with `secret`; compared
/// in constant time.
pub fn proves(secret: &str, end: End, job_id: &str, nonce: &str, given: &str) -> bool {
    let Some(bytes) = unhex(given) else {
        return false;
    };
    mac(secret, end, job_id, nonce).verify_slice(&bytes).is_ok()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// How long a whole handshake may take, at either end (PBS's mom gives a start 30 seconds).
pub const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// One line (at most [`hpcbox_pbs::interactive::MAX_LINE`] bytes, newline included) from
/// `stream`, read byte by byte (nothing after it is taken from the stream) before `deadline`,
/// however slowly the other end sends it.
pub fn read_line_by(stream: &TcpStream, deadline: Instant) -> io::Result<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() < hpcbox_pbs::interactive::MAX_LINE {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        stream.set_read_timeout(Some(left))?;
        match (&*stream).read(&mut byte) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(_) => {
                line.push(byte[0]);
                if byte[0] == b'\n' {
                    stream.set_read_timeout(None)?;
                    return String::from_utf8(line)
                        .map_err(|err| io::Error::new(io::ErrorKind::InvalidData, err));
                }
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        "a line too long",
    ))
}

/// Which side of a [`pump`] ended it.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// Reading failed or came to its end.
    Source,
    /// Writing failed.
    Sink,
}

/// Copies `from` to `to` as it comes (each piece flushed: a prompt ends no line) until one of
/// them ends: an interactive session's bytes, either way.
pub fn pump(from: &mut impl Read, to: &mut impl Write) -> Ended {
    let mut buf = [0u8; 8192];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ended::Source,
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return Ended::Source,
        };
        if to.write_all(&buf[..n]).and_then(|()| to.flush()).is_err() {
            return Ended::Sink;
        }
    }
}

/// A fresh nonce for the other end to prove itself over.
pub fn nonce() -> std::io::Result<String> {
    crate::random::random_hex(16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_proof_is_hmac_sha256_over_the_end_job_and_nonce() {
        // RFC 4231 test case 2's key and a message of ours, checked against Python's
        // hmac.new(b"Jefe", b"qsub\n7.vm\nabc\n", "sha256").hexdigest().
        assert_eq!(
            proof("Jefe", End::Qsub, "7.vm", "abc"),
            "fcb61ab2e47f6f4a106fde1762351b6164f389436e386a1a028b7aadf6ffd0da"
        );
    }

    #[test]
    fn a_line_comes_whole_or_not_at_all_before_its_deadline() {
        use std::io::Write;
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let mut writer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (reader, _) = listener.accept().unwrap();
        writer.write_all(b"hello there\nmore").unwrap();
        let soon = Instant::now() + std::time::Duration::from_secs(5);
        assert_eq!(read_line_by(&reader, soon).unwrap(), "hello there\n");
        // "more" has no newline: the deadline ends the wait, however the bytes trickle.
        let short = Instant::now() + std::time::Duration::from_millis(200);
        let err = read_line_by(&reader, short).unwrap_err();
        assert!(
            matches!(
                err.kind(),
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
            ),
            "{err}"
        );
        writer.write_all(&[b'x'; 600]).unwrap();
        let later = Instant::now() + std::time::Duration::from_secs(5);
        assert_eq!(
            read_line_by(&reader, later).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
    }

    #[test]
    fn malformed_proofs_prove_nothing() {
        for given in ["", "a", "zz", "ab12", &"0".repeat(64)] {
            assert!(!proves("k", End::Node, "1.vm", "n", given), "{given:?}");
        }
    }
}

//! The ranks' standard streams: output lines forwarded to a sink, rank 0's input fed.

use super::StdinMode;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::ChildStdin;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Which output stream a line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// Receives the ranks' output, one line at a time (without its newline).
pub trait OutputSink: Send + Sync {
    /// One line from `rank` on `stream`.
    fn line(&self, rank: usize, stream: Stream, line: &[u8]);
}

/// Writes lines to the launcher's own stdout and stderr, `[rank] `-prefixed when tagging.
#[derive(Clone, Copy, Debug)]
pub struct StdSink {
    /// Prefix lines with `[rank] `.
    pub tag: bool,
}

impl StdSink {
    /// The bytes written for one line: `[rank] ` when tagging, the line, a newline.
    pub fn format(&self, rank: usize, line: &[u8]) -> Vec<u8> {
        let mut buf = Vec::with_capacity(line.len() + 8);
        if self.tag {
            buf.extend_from_slice(format!("[{rank}] ").as_bytes());
        }
        buf.extend_from_slice(line);
        buf.push(b'\n');
        buf
    }
}

impl OutputSink for StdSink {
    fn line(&self, rank: usize, stream: Stream, line: &[u8]) {
        let buf = self.format(rank, line);
        // Write errors (a closed pipe) cannot be reported anywhere better; drop the line.
        let _ = match stream {
            Stream::Stdout => std::io::stdout().lock().write_all(&buf),
            Stream::Stderr => std::io::stderr().lock().write_all(&buf),
        };
    }
}

/// Copies lines of `from` to the sink; signals `done` at end of file.
pub(super) fn forward_lines(
    rank: usize,
    stream: Stream,
    from: impl Read + Send + 'static,
    sink: Arc<dyn OutputSink>,
    done: mpsc::Sender<()>,
) {
    std::thread::spawn(move || {
        let mut r = BufReader::new(from);
        let mut line = Vec::new();
        loop {
            line.clear();
            match r.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if line.last() == Some(&b'\n') {
                        line.pop();
                    }
                    sink.line(rank, stream, &line);
                }
            }
        }
        let _ = done.send(());
    });
}

pub(super) fn feed_stdin(mode: &StdinMode, mut to: ChildStdin) {
    match mode {
        StdinMode::Null => {}
        StdinMode::Bytes(b) => {
            let b = b.clone();
            std::thread::spawn(move || {
                let _ = to.write_all(&b);
            });
        }
        // The copier may stay blocked reading the launcher's stdin after the world ends;
        // it holds nothing else, and the process exits soon after.
        StdinMode::Forward => {
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut std::io::stdin().lock(), &mut to);
            });
        }
    }
}

/// Output still in the pipes comes after the exits: waits for every stream's end, but not
/// for a stray process outside the group that still holds a pipe open.
pub(super) fn drain_output(output_done: &mpsc::Receiver<()>, np: usize) {
    let until = Instant::now() + Duration::from_secs(2);
    for _ in 0..2 * np {
        if output_done
            .recv_timeout(until.saturating_duration_since(Instant::now()))
            .is_err()
        {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn std_sink_tags() {
        assert_eq!(StdSink { tag: true }.format(12, b"hi"), b"[12] hi\n");
        assert_eq!(StdSink { tag: false }.format(12, b"hi"), b"hi\n");
    }
}

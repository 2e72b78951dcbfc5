//! The session of `qsub -I` once the job's node has connected: this terminal's settings go to
//! the node, the terminal goes raw, and keystrokes and the job's output are copied each way
//! until the job ends (or the user types `~.` at the start of a line, as in PBS).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;

use hpcbox_cluster::interactive::TERMINAL_CONTROL;
use hpcbox_pbs::interactive::TerminalSettings;
use nix::sys::termios::SpecialCharacterIndices as Cc;
use nix::sys::termios::{self, InputFlags, LocalFlags, OutputFlags, SetArg, Termios};

/// Hands this terminal to job `job_id` over `node`; `qsub`'s exit status once the job ended.
pub fn serve(mut node: TcpStream, job_id: &str) -> i32 {
    let saved = termios::tcgetattr(std::io::stdin()).ok();
    let settings = this_terminal(saved.as_ref());
    if let Err(err) = node.write_all(settings.to_string().as_bytes()) {
        eprintln!("qsub: lost the execution host: {err}");
        return 1;
    }
    // Raw before the word goes out: keys typed on seeing it go to the job, unechoed here.
    // Raw output turns no newline into a return and a newline: the word brings its own, so
    // that the screen shows what PBS's cooked one does.
    let raw = saved.as_ref().map(RawMode::enter);
    let end = if raw.is_some() { "\r\n" } else { "\n" };
    print!("qsub: job {job_id} ready{end}{end}");
    let _ = std::io::stdout().flush();
    if let Ok(keyboard_side) = node.try_clone() {
        std::thread::spawn(move || keyboard(keyboard_side));
    }
    show(&mut node);
    drop(raw);
    print!("\nqsub: job {job_id} completed\n");
    let _ = std::io::stdout().flush();
    0
}

/// Copies the job's output to this terminal as it comes: flushed at once, since a prompt or
/// an echoed key ends no line.
fn show(node: &mut TcpStream) {
    let mut out = std::io::stdout().lock();
    let mut buf = [0u8; 4096];
    loop {
        match node.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if out.write_all(&buf[..n]).and_then(|()| out.flush()).is_err() {
                    return;
                }
            }
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// What the node needs to know of this terminal: `$TERM`, the control characters and the
/// window size, with PBS's defaults for what cannot be asked.
fn this_terminal(modes: Option<&Termios>) -> TerminalSettings {
    let mut settings = TerminalSettings::default();
    if let Some(term) = std::env::var("TERM")
        .ok()
        .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_graphic()))
    {
        settings.term = term;
    }
    if let Some(modes) = modes {
        for (slot, index) in settings.control.iter_mut().zip(TERMINAL_CONTROL) {
            *slot = modes.control_chars[index as usize];
        }
    }
    let mut size = nix::libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one winsize through the pointer, which outlives the call.
    let asked = unsafe {
        nix::libc::ioctl(
            std::io::stdin().as_raw_fd(),
            nix::libc::TIOCGWINSZ,
            &mut size,
        )
    };
    if asked == 0 && size.ws_row > 0 && size.ws_col > 0 {
        settings.rows = size.ws_row;
        settings.cols = size.ws_col;
        settings.xpixel = size.ws_xpixel;
        settings.ypixel = size.ws_ypixel;
    }
    settings
}

/// This terminal in raw mode (PBS's `settermraw`) until dropped, when its modes come back.
struct RawMode(Termios);

impl RawMode {
    fn enter(saved: &Termios) -> RawMode {
        let mut raw = saved.clone();
        raw.local_flags &= !(LocalFlags::ICANON
            | LocalFlags::ISIG
            | LocalFlags::ECHO
            | LocalFlags::ECHOE
            | LocalFlags::ECHOK);
        raw.input_flags &= !(InputFlags::IGNBRK
            | InputFlags::INLCR
            | InputFlags::ICRNL
            | InputFlags::IXON
            | InputFlags::IXOFF);
        raw.output_flags = OutputFlags::OPOST;
        raw.control_chars[Cc::VMIN as usize] = 1;
        raw.control_chars[Cc::VTIME as usize] = 0;
        let _ = termios::tcsetattr(std::io::stdin(), SetArg::TCSANOW, &raw);
        RawMode(saved.clone())
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin(), SetArg::TCSANOW, &self.0);
    }
}

/// Copies keystrokes to the node until the keyboard ends or the user types `~.`; then closes
/// the connection, which ends the session (the node hangs the job's shell up).
fn keyboard(mut node: TcpStream) {
    let mut stdin = std::io::stdin().lock();
    let mut escape = Escape::default();
    let (mut buf, mut out) = ([0u8; 4096], Vec::with_capacity(4096));
    loop {
        let n = match stdin.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        out.clear();
        let ended = escape.feed(&buf[..n], &mut out);
        if node.write_all(&out).is_err() || ended {
            break;
        }
    }
    let _ = node.shutdown(Shutdown::Both);
}

/// Watches keystrokes for PBS's escape: `~.` typed at the start of a line ends the session; a
/// `~` followed by anything else is sent as typed.
#[derive(Debug)]
struct Escape {
    at_line_start: bool,
    tilde: bool,
}

impl Default for Escape {
    fn default() -> Self {
        Escape {
            at_line_start: true,
            tilde: false,
        }
    }
}

impl Escape {
    /// Adds what of `input` is to be sent to `out`; `true` once the escape was typed.
    fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> bool {
        for &byte in input {
            if self.tilde {
                self.tilde = false;
                if byte == b'.' {
                    return true;
                }
                out.push(b'~');
            } else if self.at_line_start && byte == b'~' {
                self.tilde = true;
                continue;
            }
            out.push(byte);
            self.at_line_start = matches!(byte, b'\r' | b'\n');
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typed(chunks: &[&[u8]]) -> (Vec<u8>, bool) {
        let mut escape = Escape::default();
        let mut out = Vec::new();
        for chunk in chunks {
            if escape.feed(chunk, &mut out) {
                return (out, true);
            }
        }
        (out, false)
    }

    #[test]
    fn tilde_dot_at_a_line_start_ends_the_session() {
        assert_eq!(typed(&[b"~."]), (vec![], true));
        assert_eq!(typed(&[b"ls\r~.more"]), (b"ls\r".to_vec(), true));
        assert_eq!(typed(&[b"ls\r~", b"."]), (b"ls\r".to_vec(), true));
    }

    #[test]
    fn other_tildes_are_sent_as_typed() {
        assert_eq!(typed(&[b"cd ~.\r"]), (b"cd ~.\r".to_vec(), false));
        assert_eq!(typed(&[b"~/bin\r"]), (b"~/bin\r".to_vec(), false));
        assert_eq!(typed(&[b"~", b"~x"]), (b"~~x".to_vec(), false));
    }
}

//! The session of `qsub -I` once the job's node has connected: this terminal's settings go to
//! the node, the terminal goes raw, and keystrokes and the job's output are copied each way
//! until the job ends. As in PBS, `~.` at the start of a line leaves, and `~` then the suspend
//! character (^Z) stops `qsub` until it is continued (`fg`).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Mutex;

use hpcbox_cluster::interactive::{self, TERMINAL_CONTROL};
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
        let cooked = saved.clone();
        std::thread::spawn(move || keyboard(keyboard_side, cooked));
    }
    interactive::pump(&mut node, &mut std::io::stdout().lock());
    drop(raw);
    print!("\nqsub: job {job_id} completed\n");
    let _ = std::io::stdout().flush();
    0
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

/// Whether the session is over; held while the terminal's modes change, so that a `qsub`
/// continued after its session ended never leaves the terminal raw.
static SESSION_OVER: Mutex<bool> = Mutex::new(false);

fn session_over() -> std::sync::MutexGuard<'static, bool> {
    SESSION_OVER.lock().unwrap_or_else(|e| e.into_inner())
}

/// This terminal in raw mode (PBS's `settermraw`) until dropped, when its modes come back.
struct RawMode(Termios);

impl RawMode {
    fn enter(saved: &Termios) -> RawMode {
        make_raw(saved);
        RawMode(saved.clone())
    }
}

/// Puts this terminal in raw mode (PBS's `settermraw`) from its modes `saved`.
fn make_raw(saved: &Termios) {
    {
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
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let mut over = session_over();
        *over = true;
        let _ = termios::tcsetattr(std::io::stdin(), SetArg::TCSANOW, &self.0);
    }
}

/// Copies keystrokes to the node until the keyboard ends or the user types `~.`; then closes
/// the connection, which ends the session (the node hangs the job's shell up). `cooked` is
/// the terminal's own modes (none when it had none), given back while `qsub` is stopped.
fn keyboard(mut node: TcpStream, cooked: Option<Termios>) {
    let mut stdin = std::io::stdin().lock();
    let char_of = |index: Cc, default: u8| {
        cooked
            .as_ref()
            .map_or(default, |modes| modes.control_chars[index as usize])
    };
    let mut escape = Escape::new(
        char_of(Cc::VSUSP, 26),
        [char_of(Cc::VKILL, 21), char_of(Cc::VINTR, 3)],
    );
    let (mut buf, mut out) = ([0u8; 4096], Vec::with_capacity(4096));
    'keys: loop {
        let n = match stdin.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut rest = &buf[..n];
        while !rest.is_empty() {
            out.clear();
            let (used, escaped) = escape.feed(rest, &mut out);
            rest = &rest[used..];
            if node.write_all(&out).is_err() {
                break 'keys;
            }
            match escaped {
                Some(Escaped::Leave) => break 'keys,
                Some(Escaped::Suspend) => stop_here(cooked.as_ref()),
                None => {}
            }
        }
    }
    let _ = node.shutdown(Shutdown::Both);
}

/// Stops `qsub` (its process group, as PBS's `stopme`) with the terminal in its own modes,
/// and makes it raw again once continued.
fn stop_here(cooked: Option<&Termios>) {
    let raw_again = |modes: &Termios| {
        if !*session_over() {
            make_raw(modes);
        }
    };
    if let Some(modes) = cooked {
        let over = session_over();
        if *over {
            return;
        }
        let _ = termios::tcsetattr(std::io::stdin(), SetArg::TCSANOW, modes);
    }
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(0), nix::sys::signal::SIGTSTP);
    if let Some(modes) = cooked {
        raw_again(modes);
        // A job-control shell that continues us (bash's `fg`) may put back the modes we
        // stopped with just after: raw again once it has.
        std::thread::sleep(RESUME_SETTLE);
        raw_again(modes);
    }
}

/// How long a shell that continued `qsub` may take to put the terminal's modes back.
const RESUME_SETTLE: std::time::Duration = std::time::Duration::from_millis(100);

/// What an escape typed at the start of a line asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Escaped {
    /// `~.`: leave the session.
    Leave,
    /// `~` and the suspend character: stop `qsub`.
    Suspend,
}

/// Watches keystrokes for PBS's escapes (`~.`, `~^Z`) at the start of a line; a `~` followed
/// by anything else is sent as typed. A line starts after a newline, a return, and (as in
/// PBS) the kill and interrupt characters.
#[derive(Debug)]
struct Escape {
    suspend: u8,
    kill_and_interrupt: [u8; 2],
    at_line_start: bool,
    tilde: bool,
}

impl Escape {
    /// A watch with these characters of the terminal's, at the start of a line.
    fn new(suspend: u8, kill_and_interrupt: [u8; 2]) -> Escape {
        Escape {
            suspend,
            kill_and_interrupt,
            at_line_start: true,
            tilde: false,
        }
    }

    /// Adds what of `input` is to be sent to `out` up to the first escape: how much of
    /// `input` it used, and the escape, if one came.
    fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> (usize, Option<Escaped>) {
        for (at, &byte) in input.iter().enumerate() {
            if self.tilde {
                self.tilde = false;
                if byte == b'.' {
                    return (at + 1, Some(Escaped::Leave));
                }
                if byte == self.suspend {
                    return (at + 1, Some(Escaped::Suspend));
                }
                out.push(b'~');
            } else if self.at_line_start && byte == b'~' {
                self.tilde = true;
                continue;
            }
            out.push(byte);
            self.at_line_start =
                matches!(byte, b'\r' | b'\n') || self.kill_and_interrupt.contains(&byte);
        }
        (input.len(), None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typed(chunks: &[&[u8]]) -> (Vec<u8>, bool) {
        let mut escape = Escape::new(26, [21, 3]);
        let mut out = Vec::new();
        for chunk in chunks {
            if escape.feed(chunk, &mut out).1 == Some(Escaped::Leave) {
                return (out, true);
            }
        }
        (out, false)
    }

    #[test]
    fn tilde_and_the_suspend_character_stop_qsub_and_typing_goes_on() {
        let mut escape = Escape::new(26, [21, 3]);
        let mut out = Vec::new();
        assert_eq!(
            escape.feed(b"ls\r~\x1ads", &mut out),
            (5, Some(Escaped::Suspend))
        );
        assert_eq!(out, b"ls\r");
        out.clear();
        assert_eq!(escape.feed(b"ds", &mut out), (2, None));
        assert_eq!(out, b"ds");
        // Not at a line's start: sent as typed.
        out.clear();
        assert_eq!(escape.feed(b"~\x1a", &mut out), (2, None));
        assert_eq!(out, b"~\x1a");
    }

    #[test]
    fn tilde_dot_at_a_line_start_ends_the_session() {
        assert_eq!(typed(&[b"~."]), (vec![], true));
        assert_eq!(typed(&[b"ls\r~.more"]), (b"ls\r".to_vec(), true));
        assert_eq!(typed(&[b"ls\r~", b"."]), (b"ls\r".to_vec(), true));
    }

    #[test]
    fn a_line_starts_after_an_interrupt_or_a_kill_too() {
        assert_eq!(typed(&[b"sleep 9\x03~."]), (b"sleep 9\x03".to_vec(), true));
        assert_eq!(typed(&[b"oops\x15~."]), (b"oops\x15".to_vec(), true));
    }

    #[test]
    fn other_tildes_are_sent_as_typed() {
        assert_eq!(typed(&[b"cd ~.\r"]), (b"cd ~.\r".to_vec(), false));
        assert_eq!(typed(&[b"~/bin\r"]), (b"~/bin\r".to_vec(), false));
        assert_eq!(typed(&[b"~", b"~x"]), (b"~~x".to_vec(), false));
    }
}

//! What `qsub -I` and the node running the interactive job say before they copy bytes.
//!
//! As in PBS, `qsub -I` listens on a port of the submit host and waits; the node that starts the
//! job connects there and names the job ([`Hello`]); `qsub` answers with its terminal's type,
//! control characters and window size ([`TerminalSettings`], PBS's `TERM=`, control character
//! array and `WINSIZE r,c,x,y`), and from then on each side copies what it reads to the other.
//! PBS authenticates the node with its own methods (`resvport`, munge); hpcbox has `qsub` pick a
//! secret that travels with the job to its node, and the node's [`Hello`] carries it back.
//!
//! Each message is one line of text, so that a byte stream reads them with a line reader.

use std::fmt;

/// The word a [`Hello`] line starts with.
const HELLO_WORD: &str = "hpcbox-interactive";

/// The longest message line either side accepts (a terminal type or a job id is short).
pub const MAX_LINE: usize = 512;

/// The node's first line: which job it runs and the secret `qsub` gave that job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The job's full id.
    pub job_id: String,
    /// The secret `qsub -I` submitted the job with.
    pub secret: String,
}

impl fmt::Display for Hello {
    /// `hpcbox-interactive <job id> <secret>` and a newline.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{HELLO_WORD} {} {}", self.job_id, self.secret)
    }
}

impl Hello {
    /// Reads a line [`Hello`]'s `Display` wrote (its newline optional); `None` for anything
    /// else.
    ///
    /// ```
    /// use hpcbox_pbs::interactive::Hello;
    /// let hello = Hello { job_id: "7.vm".into(), secret: "c0ffee".into() };
    /// assert_eq!(Hello::parse(&hello.to_string()), Some(hello));
    /// assert_eq!(Hello::parse("GET / HTTP/1.1\r\n"), None);
    /// ```
    pub fn parse(line: &str) -> Option<Hello> {
        let line = line.strip_suffix('\n').unwrap_or(line);
        let mut words = line.split(' ');
        let (Some(HELLO_WORD), Some(job_id), Some(secret), None) =
            (words.next(), words.next(), words.next(), words.next())
        else {
            return None;
        };
        let word = |w: &str| !w.is_empty() && w.bytes().all(|b| b.is_ascii_graphic());
        (word(job_id) && word(secret)).then(|| Hello {
            job_id: job_id.to_string(),
            secret: secret.to_string(),
        })
    }
}

/// The submitting terminal as `qsub -I` describes it to the job's node, which gives the job's
/// terminal the same.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TerminalSettings {
    /// `$TERM` of `qsub` (`unknown` when unset).
    pub term: String,
    /// The control characters, in PBS's order: interrupt, quit, erase, kill, end of file,
    /// suspend.
    pub control: [u8; 6],
    /// Rows and columns.
    pub rows: u16,
    /// Columns.
    pub cols: u16,
    /// Width in pixels (0 when unknown).
    pub xpixel: u16,
    /// Height in pixels (0 when unknown).
    pub ypixel: u16,
}

impl Default for TerminalSettings {
    /// What PBS assumes of a terminal it cannot ask: 20 rows of 80 columns, the usual control
    /// characters (^C ^\ DEL ^U ^D ^Z).
    fn default() -> Self {
        TerminalSettings {
            term: "unknown".into(),
            control: [3, 28, 127, 21, 4, 26],
            rows: 20,
            cols: 80,
            xpixel: 0,
            ypixel: 0,
        }
    }
}

impl fmt::Display for TerminalSettings {
    /// Three lines: `TERM=<type>`, `CC <six numbers>`, `WINSIZE <rows>,<cols>,<x>,<y>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.control;
        writeln!(f, "TERM={}", self.term)?;
        writeln!(f, "CC {a},{b},{c},{d},{e},{g}")?;
        writeln!(
            f,
            "WINSIZE {},{},{},{}",
            self.rows, self.cols, self.xpixel, self.ypixel
        )
    }
}

impl TerminalSettings {
    /// Reads the three lines [`TerminalSettings`]' `Display` wrote, or says what is wrong.
    ///
    /// ```
    /// use hpcbox_pbs::interactive::TerminalSettings;
    /// let ours = TerminalSettings { term: "xterm-256color".into(), rows: 50, cols: 132, ..Default::default() };
    /// assert_eq!(TerminalSettings::parse(&ours.to_string()), Ok(ours));
    /// assert!(TerminalSettings::parse("TERM=xterm\n").is_err());
    /// ```
    pub fn parse(text: &str) -> Result<TerminalSettings, String> {
        let mut lines = text.strip_suffix('\n').unwrap_or(text).split('\n');
        let mut line = |prefix: &str| {
            lines
                .next()
                .and_then(|line| line.strip_prefix(prefix))
                .ok_or_else(|| format!("expected a line starting {prefix:?}"))
        };
        let term = line("TERM=")?.to_string();
        if term.is_empty() || !term.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!("bad terminal type {term:?}"));
        }
        let control: [u8; 6] = numbers(line("CC ")?)?;
        let [rows, cols, xpixel, ypixel]: [u16; 4] = numbers(line("WINSIZE ")?)?;
        if lines.next().is_some() {
            return Err("more than three lines".into());
        }
        Ok(TerminalSettings {
            term,
            control,
            rows,
            cols,
            xpixel,
            ypixel,
        })
    }
}

/// Exactly `N` comma-separated decimal numbers of type `T`.
fn numbers<T: std::str::FromStr + Copy + Default, const N: usize>(
    text: &str,
) -> Result<[T; N], String> {
    let mut out = [T::default(); N];
    let mut parts = text.split(',');
    for slot in &mut out {
        let part = parts
            .next()
            .ok_or_else(|| format!("too few numbers in {text:?}"))?;
        *slot = part
            .parse()
            .map_err(|_| format!("bad number {part:?} in {text:?}"))?;
    }
    if parts.next().is_some() {
        return Err(format!("too many numbers in {text:?}"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_hello_is_one_line_of_three_words() {
        let hello = Hello {
            job_id: "12[3].srv".into(),
            secret: "ab12".into(),
        };
        assert_eq!(hello.to_string(), "hpcbox-interactive 12[3].srv ab12\n");
        for bad in [
            "",
            "hpcbox-interactive 12.srv\n",
            "hpcbox-interactive 12.srv ab extra\n",
            "hpcbox-interactive  12.srv ab\n",
            "pbs-interactive 12.srv ab\n",
            "hpcbox-interactive 12.srv a\tb\n",
        ] {
            assert_eq!(Hello::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn terminal_settings_are_three_lines_as_pbs_words_them() {
        let settings = TerminalSettings {
            term: "xterm".into(),
            control: [3, 28, 8, 21, 4, 26],
            rows: 24,
            cols: 80,
            xpixel: 640,
            ypixel: 480,
        };
        assert_eq!(
            settings.to_string(),
            "TERM=xterm\nCC 3,28,8,21,4,26\nWINSIZE 24,80,640,480\n"
        );
        for bad in [
            "TERM=\nCC 3,28,8,21,4,26\nWINSIZE 24,80,0,0\n",
            "TERM=xterm\nCC 3,28,8,21,4\nWINSIZE 24,80,0,0\n",
            "TERM=xterm\nCC 3,28,8,21,4,26\nWINSIZE 24,80,0\n",
            "TERM=xterm\nCC 3,28,8,21,4,26\nWINSIZE 24,80,0,70000\n",
            "TERM=xterm\nCC 3,28,8,21,4,256\nWINSIZE 24,80,0,0\n",
            "TERM=xterm\nCC 3,28,8,21,4,26\nWINSIZE 24,80,0,0\nmore\n",
        ] {
            assert!(TerminalSettings::parse(bad).is_err(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn hellos_round_trip(job_id in "[0-9]{1,6}(\\[[0-9]{1,4}\\])?\\.[a-z0-9.-]{1,20}", secret in "[0-9a-f]{1,64}") {
            let hello = Hello { job_id, secret };
            prop_assert_eq!(Hello::parse(&hello.to_string()), Some(hello));
        }

        #[test]
        fn terminal_settings_round_trip(term in "[!-~]{1,40}", control in any::<[u8; 6]>(), size in any::<[u16; 4]>()) {
            let settings = TerminalSettings { term, control, rows: size[0], cols: size[1], xpixel: size[2], ypixel: size[3] };
            prop_assert_eq!(TerminalSettings::parse(&settings.to_string()), Ok(settings));
        }

        #[test]
        fn any_text_is_read_or_refused_without_a_panic(text in "\\PC{0,80}") {
            let _ = Hello::parse(&text);
            let _ = TerminalSettings::parse(&text);
        }
    }
}

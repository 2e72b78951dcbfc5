//! What `qsub -I` and the node running the interactive job say before they copy bytes.
//!
//! As in PBS, `qsub -I` listens on a port of the submit host and waits; the node that starts the
//! job connects there and names the job ([`Hello`]); `qsub` answers with its terminal's type,
//! control characters and window size ([`TerminalSettings`], PBS's `TERM=`, control character
//! array and `WINSIZE r,c,x,y`), and from then on each side copies what it reads to the other.
//!
//! PBS authenticates the two ends with its own methods (`resvport`, munge). hpcbox has `qsub`
//! pick a secret that travels with the job to its node, and each end proves it knows it
//! without sending it: the node's [`Hello`] carries a nonce, `qsub` answers with its proof
//! over that nonce and a nonce of its own ([`Proof`]), and the node answers with its proof
//! over `qsub`'s; only then does the node start the job's shell, and `qsub` hand over its
//! terminal. (The proofs themselves are computed by hpcbox-cluster.)
//!
//! Each message is one line of text, so that a byte stream reads them with a line reader.

use std::fmt;

/// The word a [`Hello`] line starts with.
const HELLO_WORD: &str = "hpcbox-interactive";

/// The longest message line either side accepts (a terminal type or a job id is short).
pub const MAX_LINE: usize = 512;

/// The word a [`Proof`] line starts with.
const PROOF_WORD: &str = "proof";

/// The node's first line: which job it runs, and the nonce `qsub` is to prove itself over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The job's full id.
    pub job_id: String,
    /// A random word of the node's.
    pub nonce: String,
}

impl fmt::Display for Hello {
    /// `hpcbox-interactive <job id> <nonce>` and a newline.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{HELLO_WORD} {} {}", self.job_id, self.nonce)
    }
}

impl Hello {
    /// Reads a line [`Hello`]'s `Display` wrote (its newline optional); `None` for anything
    /// else.
    ///
    /// ```
    /// use hpcbox_pbs::interactive::Hello;
    /// let hello = Hello { job_id: "7.vm".into(), nonce: "c0ffee".into() };
    /// assert_eq!(Hello::parse(&hello.to_string()), Some(hello));
    /// assert_eq!(Hello::parse("GET / HTTP/1.1\r\n"), None);
    /// ```
    pub fn parse(line: &str) -> Option<Hello> {
        let [job_id, nonce] = words(line, HELLO_WORD)?;
        Some(Hello {
            job_id: job_id.to_string(),
            nonce: nonce.to_string(),
        })
    }
}

/// One end's proof that it knows the job's secret, over the other end's nonce; `qsub`'s
/// carries a nonce of its own, for the node's proof.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    /// The proof (hex).
    pub mac: String,
    /// The nonce the other end is to prove itself over (`qsub`'s proof only).
    pub nonce: Option<String>,
}

impl fmt::Display for Proof {
    /// `proof <mac> [<nonce>]` and a newline.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.nonce {
            Some(nonce) => writeln!(f, "{PROOF_WORD} {} {nonce}", self.mac),
            None => writeln!(f, "{PROOF_WORD} {}", self.mac),
        }
    }
}

impl Proof {
    /// Reads a line [`Proof`]'s `Display` wrote (its newline optional); `None` for anything
    /// else.
    ///
    /// ```
    /// use hpcbox_pbs::interactive::Proof;
    /// let proof = Proof { mac: "ab12".into(), nonce: Some("cd34".into()) };
    /// assert_eq!(Proof::parse(&proof.to_string()), Some(proof));
    /// assert_eq!(Proof::parse("proof ab12\n"), Some(Proof { mac: "ab12".into(), nonce: None }));
    /// assert_eq!(Proof::parse("proof\n"), None);
    /// ```
    pub fn parse(line: &str) -> Option<Proof> {
        if let Some([mac, nonce]) = words(line, PROOF_WORD) {
            return Some(Proof {
                mac: mac.to_string(),
                nonce: Some(nonce.to_string()),
            });
        }
        let [mac] = words(line, PROOF_WORD)?;
        Some(Proof {
            mac: mac.to_string(),
            nonce: None,
        })
    }
}

/// The `N` words after `first` in `line` (one space apart, each printable, its newline
/// optional), if that is all the line holds.
fn words<'a, const N: usize>(line: &'a str, first: &str) -> Option<[&'a str; N]> {
    let line = line.strip_suffix('\n').unwrap_or(line);
    let mut parts = line.split(' ');
    if parts.next() != Some(first) {
        return None;
    }
    let mut out = [""; N];
    for slot in &mut out {
        let word = parts.next()?;
        if word.is_empty() || !word.bytes().all(|b| b.is_ascii_graphic()) {
            return None;
        }
        *slot = word;
    }
    parts.next().is_none().then_some(out)
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
            nonce: "ab12".into(),
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
        fn hellos_round_trip(job_id in "[0-9]{1,6}(\\[[0-9]{1,4}\\])?\\.[a-z0-9.-]{1,20}", nonce in "[0-9a-f]{1,64}") {
            let hello = Hello { job_id, nonce };
            prop_assert_eq!(Hello::parse(&hello.to_string()), Some(hello));
        }

        #[test]
        fn proofs_round_trip(mac in "[0-9a-f]{1,64}", nonce in proptest::option::of("[0-9a-f]{1,64}")) {
            let proof = Proof { mac, nonce };
            prop_assert_eq!(Proof::parse(&proof.to_string()), Some(proof));
        }

        #[test]
        fn terminal_settings_round_trip(term in "[!-~]{1,40}", control in any::<[u8; 6]>(), size in any::<[u16; 4]>()) {
            let settings = TerminalSettings { term, control, rows: size[0], cols: size[1], xpixel: size[2], ypixel: size[3] };
            prop_assert_eq!(TerminalSettings::parse(&settings.to_string()), Ok(settings));
        }

        #[test]
        fn any_text_is_read_or_refused_without_a_panic(text in "\\PC{0,80}") {
            let _ = Hello::parse(&text);
            let _ = Proof::parse(&text);
            let _ = TerminalSettings::parse(&text);
        }
    }
}

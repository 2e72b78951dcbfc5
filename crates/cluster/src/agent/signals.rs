//! The signals `qsig` names, as the agent delivers them to a job's processes.

use nix::sys::signal::Signal;

/// The signal `name` stands for, as `qsig -s` accepts it: `SIGUSR1` or `USR1` (any case), a
/// number, or `suspend` / `resume`, which stop and continue the job (SIGSTOP / SIGCONT).
///
/// ```
/// use hpcbox_cluster::agent::parse_signal;
/// use nix::sys::signal::Signal;
/// assert_eq!(parse_signal("SIGUSR1"), Some(Signal::SIGUSR1));
/// assert_eq!(parse_signal("usr1"), Some(Signal::SIGUSR1));
/// assert_eq!(parse_signal("suspend"), Some(Signal::SIGSTOP));
/// assert_eq!(parse_signal("9"), Some(Signal::SIGKILL));
/// assert_eq!(parse_signal("SIGNOPE"), None);
/// ```
pub fn parse_signal(name: &str) -> Option<Signal> {
    let name = name.trim();
    if name.eq_ignore_ascii_case("suspend") {
        return Some(Signal::SIGSTOP);
    }
    if name.eq_ignore_ascii_case("resume") {
        return Some(Signal::SIGCONT);
    }
    if let Ok(number) = name.parse::<i32>() {
        return Signal::try_from(number).ok();
    }
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    full.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_numbers_and_qsig_words() {
        for (name, signal) in [
            ("SIGTERM", Signal::SIGTERM),
            ("TERM", Signal::SIGTERM),
            ("sigint", Signal::SIGINT),
            ("HUP", Signal::SIGHUP),
            ("15", Signal::SIGTERM),
            ("RESUME", Signal::SIGCONT),
            (" resume ", Signal::SIGCONT),
        ] {
            assert_eq!(parse_signal(name), Some(signal), "{name}");
        }
        for bad in ["", "0", "-1", "999", "SIG", "nope", "SIGSIGTERM", "1.5"] {
            assert_eq!(parse_signal(bad), None, "{bad}");
        }
    }
}

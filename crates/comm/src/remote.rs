//! Starting a rank on another host through an rsh-style agent (`ssh`, or `$HPCBOX_RSH`).
//!
//! The agent is invoked as `AGENT HOST COMMAND-STRING`, and the remote shell runs
//! COMMAND-STRING: `cd DIR && env VAR=VALUE … PROGRAM ARGS…`, every word shell-quoted.
//! The rank's output comes back through the agent's own stdout and stderr (with ssh; inside
//! an hpcbox job, where `hpcbox mpiexec` uses the job's `pbs_tmrsh`, it goes to the job's
//! output files instead, as PBS writes a task's).

use std::process::Command;

/// The variable naming the agent that starts remote ranks (words split on white space).
pub const ENV_RSH: &str = "HPCBOX_RSH";

/// The agent when `$HPCBOX_RSH` is unset: ssh that never prompts for a password.
pub const DEFAULT_AGENT: [&str; 3] = ["ssh", "-o", "BatchMode=yes"];

/// The agent's words: `$HPCBOX_RSH` split on white space when set and not blank, else
/// [`DEFAULT_AGENT`].
pub fn agent_from_env() -> Vec<String> {
    agent_words(std::env::var(ENV_RSH).ok().as_deref())
}

/// The agent's words given `$HPCBOX_RSH`'s value (see [`agent_from_env`]).
///
/// ```
/// use hpcbox_comm::remote::agent_words;
/// assert_eq!(agent_words(None), ["ssh", "-o", "BatchMode=yes"]);
/// assert_eq!(agent_words(Some("rsh -l bob")), ["rsh", "-l", "bob"]);
/// ```
pub fn agent_words(rsh: Option<&str>) -> Vec<String> {
    let words: Vec<String> = rsh
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    if words.is_empty() {
        DEFAULT_AGENT.iter().map(|w| w.to_string()).collect()
    } else {
        words
    }
}

/// `word` as one word of a POSIX shell command: as it is when it holds only characters
/// that need no quoting, else in single quotes (a `'` inside becomes `'\''`).
///
/// ```
/// use hpcbox_comm::remote::shell_quote;
/// assert_eq!(shell_quote("./a.out"), "./a.out");
/// assert_eq!(shell_quote("it's $HOME"), r#"'it'\''s $HOME'"#);
/// assert_eq!(shell_quote(""), "''");
/// ```
pub fn shell_quote(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_@%+=:,./-".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        return word.to_string();
    }
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// The command string a remote shell runs to start a rank: `cd DIR && env VAR=VALUE …
/// PROGRAM ARGS…`.
///
/// ```
/// use hpcbox_comm::remote::command_string;
/// let s = command_string("/home/a b", &[("HPCBOX_RANK".into(), "2".into())], "./prog", &["x y".into()]);
/// assert_eq!(s, "cd '/home/a b' && env HPCBOX_RANK=2 ./prog 'x y'");
/// ```
pub fn command_string(
    dir: &str,
    env: &[(String, String)],
    program: &str,
    args: &[String],
) -> String {
    let mut words = vec![
        "cd".to_string(),
        shell_quote(dir),
        "&&".into(),
        "env".into(),
    ];
    words.extend(env.iter().map(|(k, v)| shell_quote(&format!("{k}={v}"))));
    words.push(shell_quote(program));
    words.extend(args.iter().map(|a| shell_quote(a)));
    words.join(" ")
}

/// The agent's command that runs `command` on `host`: `AGENT… HOST COMMAND`.
pub fn agent_command(agent: &[String], host: &str, command: &str) -> Command {
    let (program, flags) = agent
        .split_first()
        .map_or(("ssh", &[][..]), |(p, f)| (p, f));
    let mut cmd = Command::new(program);
    cmd.args(flags).arg(host).arg(command);
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sh_echo(words: &[String]) -> Vec<u8> {
        let script = format!("printf '%s\\0' {}", words.join(" "));
        Command::new("sh")
            .args(["-c", &script])
            .output()
            .unwrap()
            .stdout
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// Whatever the word, `sh -c` reads back exactly that word.
        #[test]
        fn quoting_round_trips_through_sh(words in prop::collection::vec("[^\\x00]{0,12}", 1..4)) {
            let quoted: Vec<String> = words.iter().map(|w| shell_quote(w)).collect();
            let mut want = Vec::new();
            for w in &words {
                want.extend_from_slice(w.as_bytes());
                want.push(0);
            }
            prop_assert_eq!(sh_echo(&quoted), want);
        }
    }

    #[test]
    fn command_string_runs_in_the_directory_with_the_environment() {
        let dir = std::env::temp_dir();
        let s = command_string(
            &dir.display().to_string(),
            &[("A_VAR".into(), "it's here".into())],
            "sh",
            &["-c".into(), r#"echo "$(pwd) $A_VAR $0""#.into()],
        );
        let out = Command::new("sh").args(["-c", &s]).output().unwrap();
        let want = format!("{} it's here sh\n", dir.canonicalize().unwrap().display());
        assert_eq!(String::from_utf8_lossy(&out.stdout), want);
    }

    #[test]
    fn agent_command_puts_the_host_before_the_command() {
        let cmd = agent_command(&agent_words(None), "n1", "true");
        let args: Vec<_> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(cmd.get_program(), "ssh");
        assert_eq!(args, ["-o", "BatchMode=yes", "n1", "true"]);
    }
}

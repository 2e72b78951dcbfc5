//! GNU `getopt` as the PBS commands call it: short options from a spec string (`a:` takes a
//! value), grouped flags (`-hz`), attached values (`-lselect=1`), `--` ending the options, and
//! operands anywhere (noting when an option came after one, which GNU getopt reorders).

/// One option found by getopt, or getopt's complaint in its own words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opt {
    /// An option letter and its value, if it takes one.
    Flag(char, Option<String>),
    /// getopt's message for a bad option (`qstat: invalid option -- 'Z'`).
    Invalid(String),
}

/// What getopt made of a command line.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Getopt {
    /// The options in order.
    pub opts: Vec<Opt>,
    /// The operands in order.
    pub operands: Vec<String>,
    /// An option or `--` came after an operand (GNU getopt reorders the arguments then).
    pub permuted: bool,
    /// `--` ended the options.
    pub ended_by_ddash: bool,
    /// The last option's value was a separate `--`.
    pub last_value_ddash: bool,
}

/// Whether option `c` takes a value under `spec` (`None`: not an option of `spec`).
fn takes_value(spec: &str, c: char) -> Option<bool> {
    if c == ':' {
        return None;
    }
    let at = spec.find(c)?;
    Some(spec[at + c.len_utf8()..].starts_with(':'))
}

/// Parses `args` (without the program name) with `spec`; messages name `program`.
///
/// ```
/// use hpcbox_pbs::getopt::{getopt, Opt};
/// let args: Vec<String> = ["-fx", "-uALICE", "12"].iter().map(|s| s.to_string()).collect();
/// let g = getopt("qstat", "fxu:", &args);
/// assert_eq!(g.opts, [Opt::Flag('f', None), Opt::Flag('x', None), Opt::Flag('u', Some("ALICE".into()))]);
/// assert_eq!(g.operands, ["12"]);
/// ```
pub fn getopt(program: &str, spec: &str, args: &[String]) -> Getopt {
    let mut g = Getopt::default();
    let mut i = 0;
    while let Some(arg) = args.get(i) {
        i += 1;
        if arg == "--" {
            g.permuted |= !g.operands.is_empty();
            g.ended_by_ddash = true;
            g.operands.extend(args[i..].iter().cloned());
            break;
        }
        if arg.len() < 2 || !arg.starts_with('-') {
            g.operands.push(arg.clone());
            continue;
        }
        if !g.operands.is_empty() {
            g.permuted = true;
        }
        g.last_value_ddash = false;
        let cluster = &arg[1..];
        for (at, c) in cluster.char_indices() {
            match takes_value(spec, c) {
                None => g
                    .opts
                    .push(Opt::Invalid(format!("{program}: invalid option -- '{c}'"))),
                Some(false) => g.opts.push(Opt::Flag(c, None)),
                Some(true) => {
                    let rest = &cluster[at + c.len_utf8()..];
                    if !rest.is_empty() {
                        g.opts.push(Opt::Flag(c, Some(rest.to_string())));
                    } else if let Some(value) = args.get(i) {
                        i += 1;
                        g.last_value_ddash = value == "--";
                        g.opts.push(Opt::Flag(c, Some(value.clone())));
                    } else {
                        g.opts.push(Opt::Invalid(format!(
                            "{program}: option requires an argument -- '{c}'"
                        )));
                    }
                    break;
                }
            }
        }
    }
    g
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn complaints_in_getopts_words() {
        let g = getopt("qdel", "W:x", &args(&["-Z", "-W"]));
        assert_eq!(
            g.opts,
            [
                Opt::Invalid("qdel: invalid option -- 'Z'".into()),
                Opt::Invalid("qdel: option requires an argument -- 'W'".into())
            ]
        );
    }

    #[test]
    fn operands_before_options_are_noted() {
        let g = getopt("qstat", "f", &args(&["12", "-f"]));
        assert!(g.permuted);
        let g = getopt("qsub", "l:", &args(&["-l", "--", "x"]));
        assert!(g.last_value_ddash && !g.ended_by_ddash);
        let g = getopt("qsub", "l:", &args(&["--", "-l"]));
        assert!(g.ended_by_ddash && g.opts.is_empty());
        assert_eq!(g.operands, ["-l"]);
    }
}

//! Helpers the unit tests of `qsub` share.

use super::{parse_args, QsubArgs, QsubError, QsubOptions, USAGE};
use crate::script::scan;

pub(super) fn args(list: &[&str]) -> QsubArgs {
    parse_args(list.iter().copied()).unwrap()
}

pub(super) fn err(list: &[&str]) -> QsubError {
    parse_args(list.iter().copied()).unwrap_err()
}

pub(super) fn finish(cli: &[&str], script: &str) -> Result<QsubOptions, QsubError> {
    let a = args(cli);
    a.finish(&scan(script, &a.directive_prefix(None)))
}

pub(super) fn usage_with(lines: &[&str]) -> String {
    let mut s: String = lines.iter().map(|l| format!("{l}\n")).collect();
    s.push_str(USAGE);
    s
}

//! `pbsnodes -a` / `-av` (`prt_node` in `src/cmds/pbsnodes.c`) and `pbsnodes -l`.
//! `pbsnodes -a -F json` is [`super::json::render_nodes`].
//!
//! ```text
//! node01
//!      Mom = node01.example.com
//!      ntype = PBS
//!      state = free
//!      resources_available.ncpus = 8
//!      last_state_change_time = Mon Aug  5 07:01:13 2024
//!
//! ```

use super::ctime::time_value;
use super::qstat::last;
use super::{left, show_nonprint};
use crate::status::StatusObject;
use jiff::tz::TimeZone;

/// Node attributes `pbsnodes -a` prints in ctime form.
pub const NODE_TIME_ATTRIBUTES: &[&str] = &["last_state_change_time", "last_used_time"];

/// `pbsnodes -a` for `nodes`: per node its name, `     name[.resc] = value` per attribute (five
/// spaces, never folded), a blank line. Times show in `tz`.
pub fn render_all(nodes: &[StatusObject], tz: &TimeZone) -> String {
    let mut out = String::new();
    for node in nodes {
        out.push_str(&node.name);
        out.push('\n');
        for a in &node.attrs {
            out.push_str("     ");
            out.push_str(&a.name);
            if let Some(resc) = &a.resource {
                out.push('.');
                out.push_str(resc);
            }
            out.push_str(" = ");
            if NODE_TIME_ATTRIBUTES.contains(&a.name.as_str()) {
                out.push_str(&time_value(&a.value, tz));
            } else {
                out.push_str(&show_nonprint(&a.value));
            }
            out.push('\n');
        }
        out.push('\n');
    }
    out
}

/// Whether `pbsnodes -l` lists the node: its state contains `down` or `offline`.
pub fn is_down_or_offline(node: &StatusObject) -> bool {
    let state = node.get("state").unwrap_or("");
    state.contains("down") || state.contains("offline")
}

/// `pbsnodes -l`: one line `%-20s <state> <comment>` per node that is down or offline.
///
/// ```
/// use hpcbox_pbs::format::pbsnodes::render_list;
/// use hpcbox_pbs::status::StatusObject;
/// let nodes = [
///     StatusObject::new("node01").with("state", "free"),
///     StatusObject::new("node02").with("state", "offline").with("comment", "disk"),
/// ];
/// assert_eq!(render_list(&nodes), "node02               offline disk\n");
/// ```
pub fn render_list(nodes: &[StatusObject]) -> String {
    let mut out = String::new();
    for node in nodes.iter().filter(|n| is_down_or_offline(n)) {
        left(&mut out, &node.name, 20, None);
        out.push(' ');
        out.push_str(node.get("state").unwrap_or(""));
        out.push(' ');
        out.push_str(&show_nonprint(last(node, "comment", None).unwrap_or("")));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn down_without_comment_keeps_the_blank() {
        let nodes = [StatusObject::new("n1").with("state", "down,offline")];
        assert_eq!(render_list(&nodes), "n1                   down,offline \n");
    }

    #[test]
    fn control_characters_are_shown() {
        let nodes = [StatusObject::new("n1").with("comment", "a\u{7}b")];
        assert_eq!(
            render_all(&nodes, &TimeZone::UTC),
            "n1\n     comment = a^Gb\n\n"
        );
    }

    proptest! {
        #[test]
        fn never_panics(value in ".*") {
            let n = StatusObject::new(value.clone())
                .with("state", value.clone())
                .with("last_used_time", value.clone())
                .with_resource("resources_available", "ncpus", value);
            let _ = render_all(std::slice::from_ref(&n), &TimeZone::UTC);
            let _ = render_list(&[n]);
        }
    }
}

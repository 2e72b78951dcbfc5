//! `pbsnodes`: the vnodes and their state.

use hpcbox_pbs::format::json::{self, Prologue};
use hpcbox_pbs::format::pbsnodes;
use hpcbox_pbs::getopt::{getopt, Opt};

const USAGE: &str =
    "usage:\tpbsnodes [-o|-r] [-s server] [-C comment] [-F json|dsv] [-D delim] node node ...\n\
\tpbsnodes -l [-s server] [-F json|dsv] [-D delim] [node node ...]\n\
\tpbsnodes -a [-v] [-s server] [-F json|dsv] [-D delim] [node node ...]\n\
\tpbsnodes --version\n";

/// Runs `pbsnodes` with `args`; returns its exit status.
pub fn run(args: &[String]) -> i32 {
    let g = getopt("pbsnodes", "aloprsvF:C:D:S", args);
    let (mut list, mut as_json) = (false, false);
    let (mut change, mut comment): (Option<bool>, Option<String>) = (None, None);
    for opt in &g.opts {
        match opt {
            Opt::Invalid(message) => {
                eprint!("{message}\n{USAGE}");
                return 1;
            }
            Opt::Flag('l', _) => list = true,
            Opt::Flag('F', Some(format)) => as_json = format.eq_ignore_ascii_case("json"),
            Opt::Flag('o', _) => change = Some(true),
            Opt::Flag('r', _) => change = Some(false),
            Opt::Flag('C', value) => comment = value.clone(),
            Opt::Flag(_, _) => {}
        }
    }
    if let Some(offline) = change {
        return set_state(&g.operands, offline, comment);
    }
    let mut nodes = match super::client().nodes() {
        Ok(nodes) => nodes,
        Err(err) => return super::unreachable("pbsnodes", &err),
    };
    if !g.operands.is_empty() {
        nodes.retain(|node| g.operands.contains(&node.name));
    }
    let text = if as_json {
        let server = crate::submission::host_name();
        json::render_nodes(
            &nodes,
            &Prologue {
                timestamp: jiff::Timestamp::now().as_second(),
                pbs_version: env!("CARGO_PKG_VERSION"),
                pbs_server: &server,
            },
        )
    } else if list {
        pbsnodes::render_list(&nodes)
    } else {
        pbsnodes::render_all(&nodes, &super::local_time_zone())
    };
    super::emit(&text);
    0
}

/// `pbsnodes -o` / `-r`: takes the vnodes offline or puts them back in service.
fn set_state(nodes: &[String], offline: bool, comment: Option<String>) -> i32 {
    if nodes.is_empty() {
        eprint!("{USAGE}");
        return 1;
    }
    let client = super::client();
    let mut exit = 0;
    for node in nodes {
        let change = hpcbox_cluster::api::NodeChange {
            node: node.clone(),
            offline,
            comment: comment.clone(),
        };
        match client.set_node_state(&change) {
            Err(err) => return super::unreachable("pbsnodes", &err),
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                eprint!(
                    "{}",
                    hpcbox_pbs::errno::job_error_line("pbsnodes", error.code, node)
                );
                exit = hpcbox_pbs::errno::exit_code(error.code);
            }
        }
    }
    exit
}

//! Where ranks run: hostfiles and `PBS_NODEFILE`, and the mapping of ranks to hosts.
//!
//! Pure functions, no I/O. A hostfile lists hosts as Open MPI's do (`host`, `host slots=N`,
//! or `host:N`, with `#` comments and blank lines); a host named on several lines gets the
//! sum of their slots, and hosts keep the order of their first line. A `PBS_NODEFILE` has
//! one line per slot. Ranks fill each host's slots in order (Open MPI's default mapping by
//! slot); past the last slot they go round-robin over the hosts (oversubscription).
//!
//! ```
//! use hpcbox_comm::placement::{parse_hostfile, place};
//! let hosts = parse_hostfile("nodeA slots=2\nnodeB:2\n")?;
//! let p = place(5, &hosts, None)?;
//! assert_eq!(p.hosts, ["nodeA", "nodeA", "nodeB", "nodeB", "nodeA"]);
//! assert!(p.oversubscribed);
//! # Ok::<(), hpcbox_comm::Error>(())
//! ```

use crate::{Error, Result};

/// A host and how many ranks it takes before it is oversubscribed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostSlots {
    /// The host's name, as the hostfile spells it.
    pub host: String,
    /// Its slots (at least 1).
    pub slots: usize,
}

/// Ranks mapped to hosts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// The host of each rank, by rank.
    pub hosts: Vec<String>,
    /// Whether some host got more ranks than it has slots.
    pub oversubscribed: bool,
}

/// Parses a hostfile: `host`, `host slots=N` or `host:N` per line; `#` starts a comment.
/// Repeated hosts add their slots up.
///
/// ```
/// use hpcbox_comm::placement::{parse_hostfile, HostSlots};
/// let h = parse_hostfile("# cluster\nn1 slots=4\n\nn2\nn1\n")?;
/// assert_eq!(h, [HostSlots { host: "n1".into(), slots: 5 }, HostSlots { host: "n2".into(), slots: 1 }]);
/// # Ok::<(), hpcbox_comm::Error>(())
/// ```
pub fn parse_hostfile(text: &str) -> Result<Vec<HostSlots>> {
    let mut hosts = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let entry = parse_host_line(line)
            .map_err(|why| Error::InvalidArgument(format!("hostfile line {}: {why}", n + 1)))?;
        add_slots(&mut hosts, entry);
    }
    Ok(hosts)
}

/// Parses a `PBS_NODEFILE`: one line per slot, so a host named N times has N slots.
///
/// ```
/// use hpcbox_comm::placement::parse_nodefile;
/// let h = parse_nodefile("vm\nvm\nnode2\n");
/// assert_eq!((h[0].slots, h[1].slots), (2, 1));
/// ```
pub fn parse_nodefile(text: &str) -> Vec<HostSlots> {
    let mut hosts = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        add_slots(
            &mut hosts,
            HostSlots {
                host: line.to_string(),
                slots: 1,
            },
        );
    }
    hosts
}

/// One non-empty hostfile line without its comment.
fn parse_host_line(line: &str) -> std::result::Result<HostSlots, String> {
    let mut words = line.split_whitespace();
    let first = words.next().unwrap_or_default();
    let (host, mut slots) = match first.split_once(':') {
        Some((h, n)) => (h, Some(parse_slots(n)?)),
        None => (first, None),
    };
    for word in words {
        match word.split_once('=') {
            Some(("slots", n)) => slots = Some(parse_slots(n)?),
            // Open MPI's other keywords (max_slots=…) do not change the mapping.
            Some((_, _)) => {}
            None => return Err(format!("unexpected `{word}` after the host name")),
        }
    }
    if host.is_empty() {
        return Err("no host name".into());
    }
    Ok(HostSlots {
        host: host.to_string(),
        slots: slots.unwrap_or(1),
    })
}

fn parse_slots(n: &str) -> std::result::Result<usize, String> {
    match n.parse::<usize>() {
        Ok(s) if s > 0 => Ok(s),
        _ => Err(format!("slots must be a positive integer, not `{n}`")),
    }
}

/// Adds `entry`'s slots to its host, or appends it.
fn add_slots(hosts: &mut Vec<HostSlots>, entry: HostSlots) {
    match hosts.iter_mut().find(|h| h.host == entry.host) {
        Some(h) => h.slots = h.slots.saturating_add(entry.slots),
        None => hosts.push(entry),
    }
}

/// The slots the hosts offer: their own, or `ppn` each when given.
pub fn capacity(hosts: &[HostSlots], ppn: Option<usize>) -> usize {
    hosts
        .iter()
        .fold(0, |total, h| total.saturating_add(ppn.unwrap_or(h.slots)))
}

/// Maps `np` ranks to `hosts` by slot: rank 0 to the first host's first slot, and so on.
/// With `ppn`, each host takes exactly that many ranks (its slots do not matter) and `np`
/// may not exceed `ppn` times the hosts. Without it, ranks beyond the total slots go
/// round-robin over the hosts, and the placement says it is oversubscribed.
pub fn place(np: usize, hosts: &[HostSlots], ppn: Option<usize>) -> Result<Placement> {
    if hosts.is_empty() {
        return Err(Error::InvalidArgument("no hosts to place ranks on".into()));
    }
    if ppn == Some(0) {
        return Err(Error::InvalidArgument("--ppn must be at least 1".into()));
    }
    let total = capacity(hosts, ppn);
    if let (Some(p), true) = (ppn, np > total) {
        return Err(Error::InvalidArgument(format!(
            "{np} ranks at {p} per host need {} hosts, but only {} are given",
            np.div_ceil(p),
            hosts.len()
        )));
    }
    let mut placed: Vec<String> = hosts
        .iter()
        .flat_map(|h| std::iter::repeat_n(&h.host, ppn.unwrap_or(h.slots)))
        .take(np)
        .cloned()
        .collect();
    let extra = np.saturating_sub(total);
    placed.extend(hosts.iter().cycle().take(extra).map(|h| h.host.clone()));
    Ok(Placement {
        hosts: placed,
        oversubscribed: extra > 0,
    })
}

/// Whether `host` names this machine, whose name is `hostname`: `localhost`, a loopback
/// address, or the host name, short or fully qualified.
///
/// ```
/// use hpcbox_comm::placement::is_local;
/// assert!(is_local("localhost", "vm.example.org"));
/// assert!(is_local("vm", "vm.example.org"));
/// assert!(is_local("vm.example.org", "vm"));
/// assert!(!is_local("node1", "vm"));
/// ```
pub fn is_local(host: &str, hostname: &str) -> bool {
    let loopback = host
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback());
    if loopback || host.eq_ignore_ascii_case("localhost") || host.eq_ignore_ascii_case(hostname) {
        return true;
    }
    let short = |h: &str| h.split('.').next().unwrap_or(h).to_ascii_lowercase();
    // A short name matches a full one; two different domains never match.
    (!host.contains('.') || !hostname.contains('.')) && short(host) == short(hostname)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hs(host: &str, slots: usize) -> HostSlots {
        HostSlots {
            host: host.into(),
            slots,
        }
    }

    #[test]
    fn hostfile_forms_comments_and_repeats() {
        let text = "# head\n\nnodeA slots=2\nnodeB:3 # trailing\nnodeC max_slots=8\n  nodeA  \n";
        assert_eq!(
            parse_hostfile(text).unwrap(),
            [hs("nodeA", 3), hs("nodeB", 3), hs("nodeC", 1)]
        );
    }

    #[test]
    fn hostfile_errors_name_the_line() {
        let e = parse_hostfile("a\nb slots=0\n").unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("positive"), "{e}");
        let e = parse_hostfile("a b\n").unwrap_err().to_string();
        assert!(e.contains("line 1") && e.contains("`b`"), "{e}");
        let e = parse_hostfile(":4\n").unwrap_err().to_string();
        assert!(e.contains("no host name"), "{e}");
    }

    #[test]
    fn huge_slot_counts_saturate_instead_of_overflowing() {
        let text = format!("a slots={max}\na:{max}\nb slots={max}\n", max = usize::MAX);
        let hosts = parse_hostfile(&text).unwrap();
        assert_eq!(hosts[0].slots, usize::MAX);
        assert_eq!(capacity(&hosts, None), usize::MAX);
        assert_eq!(place(3, &hosts, None).unwrap().hosts, ["a", "a", "a"]);
    }

    #[test]
    fn nodefile_counts_lines() {
        assert_eq!(
            parse_nodefile("vm\nvm\n\nn2\nvm\n"),
            [hs("vm", 3), hs("n2", 1)]
        );
    }

    #[test]
    fn by_slot_then_round_robin() {
        let hosts = [hs("a", 2), hs("b", 1)];
        let p = place(3, &hosts, None).unwrap();
        assert_eq!(p.hosts, ["a", "a", "b"]);
        assert!(!p.oversubscribed);
        let p = place(6, &hosts, None).unwrap();
        assert_eq!(p.hosts, ["a", "a", "b", "a", "b", "a"]);
        assert!(p.oversubscribed);
        assert_eq!(place(1, &hosts, None).unwrap().hosts, ["a"]);
    }

    #[test]
    fn ppn_replaces_slots() {
        let hosts = [hs("a", 4), hs("b", 1)];
        assert_eq!(
            place(4, &hosts, Some(2)).unwrap().hosts,
            ["a", "a", "b", "b"]
        );
        let e = place(5, &hosts, Some(2)).unwrap_err().to_string();
        assert!(e.contains("need 3 hosts"), "{e}");
        assert!(place(1, &hosts, Some(0)).is_err());
        assert!(place(1, &[], None).is_err());
    }

    #[test]
    fn local_names() {
        assert!(is_local("127.0.0.1", "vm"));
        assert!(is_local("::1", "vm"));
        assert!(is_local("LOCALHOST", "vm"));
        assert!(is_local("vm", "vm"));
        assert!(!is_local("vm.a.org", "vm.b.org"));
        assert!(!is_local("vm2", "vm"));
        assert!(!is_local("10.0.0.1", "vm"));
    }

    fn hosts_strategy() -> impl Strategy<Value = Vec<HostSlots>> {
        prop::collection::vec(1usize..5, 1..6).prop_map(|slots| {
            slots
                .into_iter()
                .enumerate()
                .map(|(i, s)| hs(&format!("n{i}"), s))
                .collect()
        })
    }

    proptest! {
        #[test]
        fn every_rank_placed_once_and_slots_filled_in_order(
            hosts in hosts_strategy(), np in 1usize..40, ppn in prop::option::of(1usize..5)
        ) {
            let total = capacity(&hosts, ppn);
            let Ok(p) = place(np, &hosts, ppn) else {
                prop_assert!(ppn.is_some() && np > total);
                return Ok(());
            };
            prop_assert_eq!(p.hosts.len(), np);
            prop_assert_eq!(p.oversubscribed, np > total);
            for h in &hosts {
                let count = p.hosts.iter().filter(|x| **x == h.host).count();
                let cap = ppn.unwrap_or(h.slots);
                if let Some(ppn) = ppn {
                    prop_assert!(count <= ppn);
                }
                if np <= total {
                    prop_assert!(count <= cap);
                } else {
                    prop_assert!(count >= cap);
                }
            }
            // The first min(np, total) ranks fill slots host by host, in order.
            let order: Vec<usize> = p.hosts.iter().take(np.min(total))
                .map(|x| hosts.iter().position(|h| h.host == *x).unwrap()).collect();
            prop_assert!(order.windows(2).all(|w| w[0] <= w[1]));
        }
    }
}

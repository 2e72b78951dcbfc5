//! Job dependencies: the value of `qsub -W depend=…` and of the `depend` attribute.
//!
//! The syntax is PBS's (`lib/Libcmds/parse_depend.c`): a comma-separated list of
//! `type:value[:value…]`. For `on` (and the old `synccount`) the value is a count; for every
//! other type the values are job ids, each optionally followed by `@server`. The server shows
//! the list with every job qualified, as `afterok:10.srv@srv` ([`DependList::qualified`]).
//!
//! ```
//! use hpcbox_pbs::depend::{DependKind, DependList};
//! let list: DependList = "afterok:1.srv:2,on:3".parse().unwrap();
//! assert_eq!(list.0[0].kind, DependKind::AfterOk);
//! assert_eq!(list.to_string(), "afterok:1.srv:2,on:3");
//! assert_eq!(list.qualified("srv").to_string(), "afterok:1.srv@srv:2.srv@srv,on:3");
//! ```

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::jobid::{ArrayPart, JobId};
use crate::ParseError;

/// What PBS prints when a dependency names a subjob or a range of subjobs (sic).
pub const SUBJOB_DEPENDENCY: &str = "cannot have dependancy on subjob or range";

/// The kinds of dependency PBS knows, by their names in `-W depend=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DependKind {
    /// `on:N`: this job waits for N jobs that name it with a `before…` dependency.
    On,
    /// `synccount:N` (old synchronised starts; parsed, kept for compatibility).
    SyncCount,
    /// `after`: may start once the listed jobs have started.
    After,
    /// `afterok`: after the listed jobs end with exit status 0.
    AfterOk,
    /// `afternotok`: after the listed jobs end with a non-zero exit status.
    AfterNotOk,
    /// `afterany`: after the listed jobs end, however they end.
    AfterAny,
    /// `before`: the listed jobs may start once this one has started.
    Before,
    /// `beforeok`: the listed jobs may start after this one ends with status 0.
    BeforeOk,
    /// `beforenotok`: the listed jobs may start after this one fails.
    BeforeNotOk,
    /// `beforeany`: the listed jobs may start after this one ends.
    BeforeAny,
    /// `syncwith` (old synchronised starts; parsed, kept for compatibility).
    SyncWith,
    /// `runone`: only one of the listed jobs (and this one) runs; the others are deleted.
    RunOne,
}

impl DependKind {
    /// Every kind, in PBS's table order.
    pub const ALL: [DependKind; 12] = [
        DependKind::On,
        DependKind::SyncCount,
        DependKind::After,
        DependKind::AfterOk,
        DependKind::AfterNotOk,
        DependKind::AfterAny,
        DependKind::Before,
        DependKind::BeforeOk,
        DependKind::BeforeNotOk,
        DependKind::BeforeAny,
        DependKind::SyncWith,
        DependKind::RunOne,
    ];

    /// The name PBS uses.
    pub fn as_str(self) -> &'static str {
        match self {
            DependKind::On => "on",
            DependKind::SyncCount => "synccount",
            DependKind::After => "after",
            DependKind::AfterOk => "afterok",
            DependKind::AfterNotOk => "afternotok",
            DependKind::AfterAny => "afterany",
            DependKind::Before => "before",
            DependKind::BeforeOk => "beforeok",
            DependKind::BeforeNotOk => "beforenotok",
            DependKind::BeforeAny => "beforeany",
            DependKind::SyncWith => "syncwith",
            DependKind::RunOne => "runone",
        }
    }

    /// Whether the values are a count (`on`, `synccount`) rather than job ids.
    pub fn takes_count(self) -> bool {
        matches!(self, DependKind::On | DependKind::SyncCount)
    }
}

impl fmt::Display for DependKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DependKind {
    type Err = ParseError;

    /// Exact, case-sensitive names, as PBS compares them.
    fn from_str(s: &str) -> Result<Self, ParseError> {
        DependKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| ParseError::new(s, "unknown dependency type"))
    }
}

/// A job a dependency names: its id and, after `@`, the server that holds it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DependJob {
    /// The job (an ordinary job or a whole array, `123[]`; never one subjob).
    pub id: JobId,
    /// The server after `@`, if given.
    pub server: Option<String>,
}

impl fmt::Display for DependJob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.id)?;
        if let Some(server) = &self.server {
            write!(f, "@{server}")?;
        }
        Ok(())
    }
}

impl FromStr for DependJob {
    type Err = ParseError;

    /// `seq[.server][@server]`, `seq[][.server][@server]`; leading blanks are skipped.
    /// A subjob or a range of subjobs is refused, as PBS refuses it.
    fn from_str(text: &str) -> Result<Self, ParseError> {
        let trimmed = text.trim_start();
        let (id_text, server) = match trimmed.split_once('@') {
            Some((_, "")) => return Err(ParseError::new(text, "no server name after `@`")),
            Some((id, server)) => (id, Some(server)),
            None => (trimmed, None),
        };
        if let Some(server) = server {
            if !server.chars().all(|c| c.is_ascii_graphic() && c != '@') {
                return Err(ParseError::new(text, "bad character in server name"));
            }
        }
        let id: JobId = id_text
            .parse()
            .map_err(|e: ParseError| ParseError::new(text, e.reason))?;
        if matches!(id.array, ArrayPart::Index(_) | ArrayPart::Range(_)) {
            return Err(ParseError::new(text, SUBJOB_DEPENDENCY));
        }
        Ok(DependJob {
            id,
            server: server.map(str::to_string),
        })
    }
}

/// What a dependency is on: a count or a list of jobs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DependOn {
    /// The count of `on:N` / `synccount:N`.
    Count(u32),
    /// The jobs of every other kind (at least one).
    Jobs(Vec<DependJob>),
}

/// One `type:value[:value…]` item.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Dependency {
    /// The kind of dependency.
    pub kind: DependKind,
    /// What it is on; a count exactly when [`DependKind::takes_count`].
    pub on: DependOn,
}

impl Dependency {
    /// The jobs named, empty for a count.
    pub fn jobs(&self) -> &[DependJob] {
        match &self.on {
            DependOn::Jobs(jobs) => jobs,
            DependOn::Count(_) => &[],
        }
    }
}

impl fmt::Display for Dependency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind.as_str())?;
        match &self.on {
            DependOn::Count(n) => write!(f, ":{n}"),
            DependOn::Jobs(jobs) => jobs.iter().try_for_each(|j| write!(f, ":{j}")),
        }
    }
}

/// The values of one item, split on `:` not preceded by `\` (PBS's rule).
fn split_values(item: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let bytes = item.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b':' && (i == 0 || bytes[i - 1] != b'\\') {
            parts.push(&item[start..i]);
            start = i + 1;
        }
    }
    parts.push(&item[start..]);
    parts
}

impl FromStr for Dependency {
    type Err = ParseError;

    /// One item, surrounding blanks already removed. As in PBS, a single trailing `:` is
    /// allowed, an empty value anywhere else is not, and the type needs at least one value.
    fn from_str(item: &str) -> Result<Self, ParseError> {
        let mut parts = split_values(item);
        if parts.len() > 2 && parts.last() == Some(&"") {
            parts.pop();
        }
        let (kind_text, values) = match parts.split_first() {
            Some((k, v)) if !k.is_empty() => (*k, v),
            _ => return Err(ParseError::new(item, "no dependency type")),
        };
        let kind: DependKind = kind_text
            .parse()
            .map_err(|e: ParseError| ParseError::new(item, e.reason))?;
        if values.is_empty() || values.iter().any(|v| v.is_empty()) {
            return Err(ParseError::new(item, "empty value in dependency"));
        }
        let on = if kind.takes_count() {
            let [count] = values else {
                return Err(ParseError::new(item, "a count takes one value"));
            };
            if !count.bytes().all(|b| b.is_ascii_digit()) {
                return Err(ParseError::new(item, "the count must be a number"));
            }
            DependOn::Count(
                count
                    .parse()
                    .map_err(|_| ParseError::new(item, "the count is too large"))?,
            )
        } else {
            DependOn::Jobs(
                values
                    .iter()
                    .map(|v| v.parse::<DependJob>())
                    .collect::<Result<_, _>>()?,
            )
        };
        Ok(Dependency { kind, on })
    }
}

/// A whole dependency list, as `-W depend=` takes it and `qstat -f` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct DependList(pub Vec<Dependency>);

impl DependList {
    /// The list as the server keeps and shows it: each job id gets `.server` when it has no
    /// server part, and `@server` (its own server) when it has no `@` part.
    pub fn qualified(&self, default_server: &str) -> DependList {
        let qualify = |job: &DependJob| {
            let id = job.id.clone().or_server(default_server);
            let server = job
                .server
                .clone()
                .or_else(|| id.server.clone())
                .or_else(|| Some(default_server.to_string()));
            DependJob { id, server }
        };
        DependList(
            self.0
                .iter()
                .map(|d| Dependency {
                    kind: d.kind,
                    on: match &d.on {
                        DependOn::Count(n) => DependOn::Count(*n),
                        DependOn::Jobs(jobs) => DependOn::Jobs(jobs.iter().map(qualify).collect()),
                    },
                })
                .collect(),
        )
    }
}

impl fmt::Display for DependList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl FromStr for DependList {
    type Err = ParseError;

    /// Items are split on `,` and trimmed of blanks; the list must not be empty nor end in
    /// `,` (`parse_depend_list`).
    fn from_str(list: &str) -> Result<Self, ParseError> {
        if list.trim().is_empty() {
            return Err(ParseError::new(list, "empty dependency list"));
        }
        if list.trim_end().ends_with(',') {
            return Err(ParseError::new(list, "dependency list ends in `,`"));
        }
        list.split(',')
            .map(|item| {
                item.trim_matches(|c: char| c.is_ascii_whitespace() || c == '\x0b')
                    .parse()
            })
            .collect::<Result<Vec<_>, _>>()
            .map(DependList)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn every_kind_parses_and_prints() {
        for kind in DependKind::ALL {
            let text = if kind.takes_count() {
                format!("{kind}:2")
            } else {
                format!("{kind}:12.srv:13")
            };
            let d: Dependency = text.parse().unwrap();
            assert_eq!(d.kind, kind);
            assert_eq!(d.to_string(), text);
        }
    }

    #[test]
    fn server_suffix_forms() {
        let list: DependList = "afterok:10.srv@srv,before:11@other,afterany:12[]"
            .parse()
            .unwrap();
        let jobs = list.0[0].jobs();
        assert_eq!(jobs[0].id.to_string(), "10.srv");
        assert_eq!(jobs[0].server.as_deref(), Some("srv"));
        assert_eq!(list.0[1].jobs()[0].server.as_deref(), Some("other"));
        assert_eq!(
            list.to_string(),
            "afterok:10.srv@srv,before:11@other,afterany:12[]"
        );
        assert_eq!(
            list.qualified("srv").to_string(),
            "afterok:10.srv@srv,before:11.srv@other,afterany:12[].srv@srv"
        );
    }

    #[test]
    fn blanks_around_items_are_dropped() {
        let list: DependList = " afterok:1 , afternotok:2\t".parse().unwrap();
        assert_eq!(list.to_string(), "afterok:1,afternotok:2");
    }

    #[test]
    fn a_single_trailing_colon_is_allowed() {
        let d: Dependency = "afterok:1:".parse().unwrap();
        assert_eq!(d.to_string(), "afterok:1");
    }

    #[test]
    fn refuses_what_pbs_refuses() {
        for bad in [
            "",
            "afterok",
            "afterok:",
            "afterok::1",
            "AfterOK:1",
            "later:1",
            "afterok:1,",
            "afterok:1[2].srv",
            "afterok:1[1-3].srv",
            "afterok:x",
            "afterok:1@",
            "on:x",
            "on:1:2",
            ":1",
        ] {
            assert!(bad.parse::<DependList>().is_err(), "{bad:?} was accepted");
        }
        let err = "afterok:1[2]".parse::<DependList>().unwrap_err();
        assert_eq!(err.reason, "cannot have dependancy on subjob or range");
        assert_eq!(err.token, "1[2]");
    }

    fn arb_job() -> impl Strategy<Value = DependJob> {
        (
            0u64..1_000_000,
            any::<bool>(),
            proptest::option::of("[a-z][a-z0-9.-]{0,8}"),
            proptest::option::of("[a-z][a-z0-9.]{0,8}"),
        )
            .prop_map(|(seq, whole, server, at)| DependJob {
                id: JobId {
                    seq,
                    array: if whole {
                        ArrayPart::Whole
                    } else {
                        ArrayPart::NotArray
                    },
                    server,
                },
                server: at,
            })
    }

    fn arb_dependency() -> impl Strategy<Value = Dependency> {
        (
            proptest::sample::select(DependKind::ALL.to_vec()),
            proptest::collection::vec(arb_job(), 1..4),
            any::<u32>(),
        )
            .prop_map(|(kind, jobs, n)| Dependency {
                kind,
                on: if kind.takes_count() {
                    DependOn::Count(n)
                } else {
                    DependOn::Jobs(jobs)
                },
            })
    }

    proptest! {
        #[test]
        fn display_then_parse_gives_back_the_list(list in proptest::collection::vec(arb_dependency(), 1..4)) {
            let list = DependList(list);
            let text = list.to_string();
            prop_assert_eq!(text.parse::<DependList>().unwrap(), list);
        }

        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,40}") {
            let _ = text.parse::<DependList>();
        }

        #[test]
        fn dependency_like_text_never_panics(text in "[a-z:,@.\\[\\]0-9 \\\\-]{0,40}") {
            let _ = text.parse::<DependList>();
        }
    }
}

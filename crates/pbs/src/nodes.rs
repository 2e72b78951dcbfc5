//! Old-style node specifications, `-l nodes=2:ppn=4`, and how PBS Professional turns them into
//! a select and a place.
//!
//! A spec is parts joined by `+`, then optional `#` globals:
//!
//! - a part is a count (at least 1), a property list, or a count `:` a property list;
//! - a property is a word (letters, digits, `-`, `_`, `.`), or `ppn=N` (processes per node,
//!   N ≥ 1), or `cpp=N` / `ncpus=N` (CPUs per process);
//! - a global is `excl`, `shared`, or a property list added to every part.
//!
//! Conversion, as the server's `cvt_nodespec_to_select` does it:
//!
//! - every part becomes one chunk `N:ncpus=P×C`, where P is ppn and C is cpp;
//! - `mpiprocs=P` is added when P is not 1;
//! - a word that names a node becomes `host=word`, any other word `word=True` (words in reverse
//!   order, as PBS builds its list);
//! - a job-wide `ncpus` must be a multiple of the spec's CPU count (equal to it when `cpp` or
//!   `ncpus` appears) and multiplies each chunk's CPUs;
//! - a job-wide `mem` is divided evenly over the nodes (`mem=<kb>kb` per chunk);
//! - the place is `scatter`, `scatter:excl` with `#excl`, and `scatter:shared` with `#shared`.
//!
//! Sources (OpenPBS): `src/lib/Libattr/attr_resc_func.c` (`decode_nodes`: the syntax),
//! `src/server/node_manager.c` (`validate_nodespec`, `number`, `property`, `proplist`,
//! `ctcpus`, `mod_spec`, `cvt_nodespec_to_select`), `src/server/resc_attr.c` (`ctnodes`) and
//! `src/server/svr_jobfunc.c` (`set_select_and_place`).
//!
//! Differences, each a PBS oddity:
//!
//! - PBS writes `mem=<n>KB`; hpcbox prints sizes its canonical way, `<n>kb`.
//! - For `#shared`, PBS passes `scatter:share` to its own place decoder, which refuses it,
//!   leaving the place unset; hpcbox gives `scatter:shared`, which is what was meant.
//! - PBS spots `#excl` by a case-sensitive substring search but drops the word ignoring case;
//!   hpcbox treats `#EXCL` as `#excl`.
//! - Values such as `nodes=2:mem=1gb` are refused, as PBS refuses them: only `ppn`, `cpp` and
//!   `ncpus` take a value in a nodes spec.
//!
//! ```
//! use hpcbox_pbs::nodes;
//! let spec = nodes::parse("2:ppn=4+hostA:ppn=2#excl").unwrap();
//! let is_host = |n: &str| n == "hostA";
//! let (select, place) = spec.to_select_place(&is_host, None, None).unwrap();
//! assert_eq!(select.to_string(), "2:ncpus=4:mpiprocs=4+1:ncpus=2:host=hostA:mpiprocs=2");
//! assert_eq!(place.to_string(), "scatter:excl");
//! ```

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::place::{Place, Sharing};
use crate::resource::{check_name, ResourceDefs};
use crate::select::Select;
use crate::size::Size;
use crate::ParseError;

/// One property of a node part.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum NodeProp {
    /// A node name or a node property (a boolean resource).
    Name(String),
    /// `ppn=N`: processes (MPI ranks) per node.
    Ppn(u32),
    /// `cpp=N` or `ncpus=N`: CPUs per process.
    Cpp(u32),
}

/// One `+`-separated part: a count of nodes and their properties.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodePart {
    count: Option<u32>,
    props: Vec<NodeProp>,
}

impl NodePart {
    /// The number of nodes: the count written, or 1.
    pub fn count(&self) -> u32 {
        self.count.unwrap_or(1)
    }

    /// The count as written.
    pub fn count_given(&self) -> Option<u32> {
        self.count
    }

    /// The properties, in order.
    pub fn props(&self) -> &[NodeProp] {
        &self.props
    }
}

/// A `#` global: `excl`, `shared`, or properties added to every part.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Global {
    /// `#excl`: exclusive placement.
    Excl,
    /// `#shared`: shared placement.
    Shared,
    /// `#prop[:prop…]`: added to every part.
    Props(Vec<NodeProp>),
}

/// A parsed `nodes=` specification.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NodeSpec {
    parts: Vec<NodePart>,
    globals: Vec<Global>,
}

/// Parses a nodes specification (without `nodes=`).
pub fn parse(spec: &str) -> Result<NodeSpec, ParseError> {
    if spec.is_empty() {
        return Err(ParseError::new(
            spec,
            "a nodes specification cannot be empty",
        ));
    }
    let mut pieces = spec.split('#');
    let body = pieces.next().unwrap_or_default();
    if body.is_empty() {
        return Err(ParseError::new(
            spec,
            "a nodes specification starts with a count or a node",
        ));
    }
    let parts = body
        .split('+')
        .map(|text| parse_part(text, spec))
        .collect::<Result<Vec<_>, _>>()?;
    let globals = pieces
        .map(|text| parse_global(text, spec))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(NodeSpec { parts, globals })
}

fn parse_part(text: &str, spec: &str) -> Result<NodePart, ParseError> {
    if text.is_empty() {
        return Err(ParseError::new(
            spec,
            "empty part (`+` at the start, at the end or twice)",
        ));
    }
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (count, rest) = text.split_at(digits);
    // number(): digits followed by a letter are a name, not a count.
    if count.is_empty() || rest.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return Ok(NodePart {
            count: None,
            props: parse_props(text, spec)?,
        });
    }
    let count = parse_number(count, false)?;
    let props = match rest.strip_prefix(':') {
        Some(list) => parse_props(list, spec)?,
        None if rest.is_empty() => Vec::new(),
        None => {
            return Err(ParseError::new(
                text,
                "a node count must be followed by `:`, `+`, `#` or the end",
            ))
        }
    };
    Ok(NodePart {
        count: Some(count),
        props,
    })
}

fn parse_global(text: &str, spec: &str) -> Result<Global, ParseError> {
    if text.eq_ignore_ascii_case("excl") {
        Ok(Global::Excl)
    } else if text.eq_ignore_ascii_case("shared") {
        Ok(Global::Shared)
    } else if text.is_empty() {
        Err(ParseError::new(spec, "empty `#` global"))
    } else {
        Ok(Global::Props(parse_props(text, spec)?))
    }
}

fn parse_props(text: &str, spec: &str) -> Result<Vec<NodeProp>, ParseError> {
    text.split(':').map(|word| parse_prop(word, spec)).collect()
}

fn parse_prop(word: &str, spec: &str) -> Result<NodeProp, ParseError> {
    let Some(first) = word.chars().next() else {
        return Err(ParseError::new(
            spec,
            "empty property (`:` at the end or twice)",
        ));
    };
    let allowed = |c: char| c.is_ascii_alphanumeric() || "-_.=".contains(c);
    if !first.is_ascii_alphanumeric() || !word.chars().all(allowed) {
        return Err(ParseError::new(
            word,
            "a node or property is a letter or digit, then letters, digits, `-`, `_` or `.`",
        ));
    }
    if first.is_ascii_digit() && !word.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(ParseError::new(
            word,
            "a name starting with a digit may hold only letters and digits",
        ));
    }
    let Some((key, value)) = word.split_once('=') else {
        return Ok(NodeProp::Name(word.to_string()));
    };
    if key.eq_ignore_ascii_case("ppn") {
        Ok(NodeProp::Ppn(parse_number(value, false)?))
    } else if key.eq_ignore_ascii_case("cpp") || key.eq_ignore_ascii_case("ncpus") {
        Ok(NodeProp::Cpp(parse_number(value, true)?))
    } else {
        Err(ParseError::new(
            word,
            "only ppn, cpp and ncpus take a value in a nodes specification",
        ))
    }
}

/// `number()`: digits only; zero only where allowed.
fn parse_number(text: &str, zero_ok: bool) -> Result<u32, ParseError> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseError::new(text, "expected a number"));
    }
    let n: u32 = text
        .parse()
        .map_err(|_| ParseError::new(text, "number is too large"))?;
    if n == 0 && !zero_ok {
        return Err(ParseError::new(text, "zero is not allowed here"));
    }
    Ok(n)
}

impl NodeSpec {
    /// The parts, in order.
    pub fn parts(&self) -> &[NodePart] {
        &self.parts
    }

    /// The `#` globals, in order.
    pub fn globals(&self) -> &[Global] {
        &self.globals
    }

    /// The properties of `part` with the globals added, in the order PBS's `mod_spec`
    /// appends them (the last `#` global first).
    fn expanded<'a>(&'a self, part: &'a NodePart) -> impl Iterator<Item = &'a NodeProp> + 'a {
        let globals = self.globals.iter().rev().flat_map(|g| match g {
            Global::Props(props) => props.as_slice(),
            Global::Excl | Global::Shared => &[],
        });
        part.props.iter().chain(globals)
    }

    /// Processes and CPUs per process of `part` (the last `ppn` / `cpp` wins), and whether a
    /// `cpp` / `ncpus` was written.
    fn ppn_cpp(&self, part: &NodePart) -> (u32, u32, bool) {
        let (mut ppn, mut cpp, mut has_cpp) = (1, 1, false);
        for prop in self.expanded(part) {
            match prop {
                NodeProp::Ppn(n) => ppn = *n,
                NodeProp::Cpp(n) => {
                    cpp = *n;
                    has_cpp = true;
                }
                NodeProp::Name(_) => {}
            }
        }
        (ppn, cpp, has_cpp)
    }

    /// The number of nodes asked for (`ctnodes`, the job's `nodect`).
    pub fn node_count(&self) -> u64 {
        self.parts.iter().map(|p| u64::from(p.count())).sum()
    }

    /// The number of CPUs asked for (`ctcpus`): Σ count × ppn × cpp. Like PBS, a `cpp=0`
    /// anywhere makes it 1.
    pub fn cpu_count(&self) -> u64 {
        let mut total: u64 = 0;
        for part in &self.parts {
            let (ppn, cpp, _) = self.ppn_cpp(part);
            if self.expanded(part).any(|p| *p == NodeProp::Cpp(0)) {
                return 1;
            }
            let cpus = u64::from(part.count())
                .saturating_mul(u64::from(ppn))
                .saturating_mul(u64::from(cpp));
            total = total.saturating_add(cpus);
        }
        total
    }

    /// The place a converted job gets: `scatter`, with `excl` or `shared` from the globals.
    pub fn place(&self) -> Place {
        let sharing = if self.globals.contains(&Global::Excl) {
            Some(Sharing::Excl)
        } else if self.globals.contains(&Global::Shared) {
            Some(Sharing::Shared)
        } else {
            None
        };
        Place {
            sharing,
            ..Place::scatter()
        }
    }

    /// The select and place PBS makes of this spec. `is_host` says whether a word names a
    /// node (PBS compares with its node names ignoring case); `ncpus` and `mem` are the job's
    /// own `-l ncpus` / `-l mem`, if given.
    pub fn to_select_place(
        &self,
        is_host: &dyn Fn(&str) -> bool,
        ncpus: Option<i64>,
        mem: Option<&Size>,
    ) -> Result<(Select, Place), ParseError> {
        let factor = self.ncpus_factor(ncpus)?;
        let mem_kb = mem.map(|m| m.kilobytes() / self.node_count().max(1));
        let mut text = String::new();
        for (i, part) in self.parts.iter().enumerate() {
            if i > 0 {
                text.push('+');
            }
            text.push_str(&self.chunk_text(part, factor, mem_kb, is_host)?);
        }
        let select = Select::parse_with(&text, &ResourceDefs::builtin())?;
        Ok((select, self.place()))
    }

    /// The multiplier a job-wide `ncpus` puts on every chunk's CPUs.
    fn ncpus_factor(&self, ncpus: Option<i64>) -> Result<i64, ParseError> {
        let Some(nc) = ncpus else {
            return Ok(1);
        };
        let nt = i64::try_from(self.cpu_count()).unwrap_or(i64::MAX);
        let has_cpp = self.parts.iter().any(|p| self.ppn_cpp(p).2);
        if has_cpp && nt != nc {
            return Err(ParseError::new(
                self.to_string(),
                format!("ncpus={nc} differs from the {nt} cpus this nodes specification asks"),
            ));
        }
        if nc % nt != 0 {
            return Err(ParseError::new(
                self.to_string(),
                format!(
                    "ncpus={nc} is not a multiple of the {nt} cpus this nodes specification asks"
                ),
            ));
        }
        Ok(if !has_cpp && nc / nt > 1 { nc / nt } else { 1 })
    }

    fn chunk_text(
        &self,
        part: &NodePart,
        factor: i64,
        mem_kb: Option<u64>,
        is_host: &dyn Fn(&str) -> bool,
    ) -> Result<String, ParseError> {
        let (ppn, cpp, _) = self.ppn_cpp(part);
        let ncpus = i64::from(ppn)
            .checked_mul(i64::from(cpp))
            .and_then(|n| n.checked_mul(factor))
            .ok_or_else(|| ParseError::new(self.to_string(), "too many cpus"))?;
        let mut text = format!("{}:ncpus={ncpus}", part.count());
        if let Some(kb) = mem_kb {
            text.push_str(&format!(":mem={kb}kb"));
        }
        let names: Vec<&str> = self
            .expanded(part)
            .filter_map(|p| match p {
                NodeProp::Name(n) => Some(n.as_str()),
                _ => None,
            })
            .collect();
        for name in names.into_iter().rev() {
            if is_host(name) {
                text.push_str(&format!(":host={name}"));
            } else {
                check_name(name).map_err(|_| {
                    ParseError::new(name, "neither a node nor a property (resource) name")
                })?;
                text.push_str(&format!(":{name}=True"));
            }
        }
        if ppn != 1 {
            text.push_str(&format!(":mpiprocs={ppn}"));
        }
        Ok(text)
    }
}

impl fmt::Display for NodeProp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeProp::Name(n) => f.write_str(n),
            NodeProp::Ppn(n) => write!(f, "ppn={n}"),
            NodeProp::Cpp(n) => write!(f, "cpp={n}"),
        }
    }
}

fn write_props(f: &mut fmt::Formatter<'_>, props: &[NodeProp]) -> fmt::Result {
    for (i, prop) in props.iter().enumerate() {
        if i > 0 {
            f.write_str(":")?;
        }
        write!(f, "{prop}")?;
    }
    Ok(())
}

impl fmt::Display for NodePart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.count {
            Some(n) if self.props.is_empty() => write!(f, "{n}"),
            Some(n) => {
                write!(f, "{n}:")?;
                write_props(f, &self.props)
            }
            None if self.props.is_empty() => f.write_str("1"),
            None => write_props(f, &self.props),
        }
    }
}

impl fmt::Display for NodeSpec {
    /// Canonical form: parts joined by `+`, then `#excl`, `#shared` or `#props` for each
    /// global; `cpp` is written for `ncpus`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, part) in self.parts.iter().enumerate() {
            if i > 0 {
                f.write_str("+")?;
            }
            write!(f, "{part}")?;
        }
        for global in &self.globals {
            f.write_str("#")?;
            match global {
                Global::Excl => f.write_str("excl")?,
                Global::Shared => f.write_str("shared")?,
                Global::Props(props) => write_props(f, props)?,
            }
        }
        Ok(())
    }
}

impl FromStr for NodeSpec {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<NodeSpec, ParseError> {
        parse(s)
    }
}

impl TryFrom<String> for NodeSpec {
    type Error = ParseError;

    fn try_from(s: String) -> Result<NodeSpec, ParseError> {
        parse(&s)
    }
}

impl From<NodeSpec> for String {
    fn from(n: NodeSpec) -> String {
        n.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn convert(spec: &str, hosts: &[&str]) -> (String, String) {
        let is_host = |n: &str| hosts.iter().any(|h| h.eq_ignore_ascii_case(n));
        let (s, p) = parse(spec)
            .unwrap()
            .to_select_place(&is_host, None, None)
            .unwrap();
        (s.to_string(), p.to_string())
    }

    fn pair(s: &str, p: &str) -> (String, String) {
        (s.to_string(), p.to_string())
    }

    #[test]
    fn converts_counts_and_ppn() {
        assert_eq!(convert("2", &[]), pair("2:ncpus=1", "scatter"));
        assert_eq!(
            convert("2:ppn=4", &[]),
            pair("2:ncpus=4:mpiprocs=4", "scatter")
        );
        assert_eq!(
            convert("1:ppn=2:cpp=3", &[]),
            pair("1:ncpus=6:mpiprocs=2", "scatter")
        );
        assert_eq!(convert("3:ncpus=2", &[]), pair("3:ncpus=2", "scatter"));
    }

    #[test]
    fn converts_hosts_and_properties() {
        assert_eq!(
            convert("hostA+hostB:ppn=2", &["hosta", "hostb"]),
            pair(
                "1:ncpus=1:host=hostA+1:ncpus=2:host=hostB:mpiprocs=2",
                "scatter"
            )
        );
        assert_eq!(
            convert("2:ib:bigmem", &[]),
            pair("2:ncpus=1:bigmem=True:ib=True", "scatter")
        );
        assert_eq!(
            convert("node01.example.com", &["node01.example.com"]).0,
            "1:ncpus=1:host=node01.example.com"
        );
        assert_eq!(convert("123abc", &["123abc"]).0, "1:ncpus=1:host=123abc");
    }

    #[test]
    fn globals_apply_to_every_part() {
        assert_eq!(
            convert("2+1#excl", &[]),
            pair("2:ncpus=1+1:ncpus=1", "scatter:excl")
        );
        assert_eq!(
            convert("2#shared", &[]),
            pair("2:ncpus=1", "scatter:shared")
        );
        assert_eq!(convert("2#EXCL", &[]).1, "scatter:excl");
        assert_eq!(
            convert("2+1:ppn=3#ppn=2", &[]),
            pair("2:ncpus=2:mpiprocs=2+1:ncpus=2:mpiprocs=2", "scatter")
        );
        assert_eq!(convert("2#a#b", &[]).0, "2:ncpus=1:a=True:b=True");
    }

    #[test]
    fn job_wide_ncpus_and_mem() {
        let spec = parse("2:ppn=2").unwrap();
        let none = |_: &str| false;
        let mem: Size = "4gb".parse().unwrap();
        let (s, _) = spec.to_select_place(&none, Some(8), Some(&mem)).unwrap();
        assert_eq!(s.to_string(), "2:ncpus=4:mem=2097152kb:mpiprocs=2");
        let (s, _) = spec.to_select_place(&none, Some(4), None).unwrap();
        assert_eq!(s.to_string(), "2:ncpus=2:mpiprocs=2");
        assert!(spec.to_select_place(&none, Some(6), None).is_err());
        let cpp = parse("2:cpp=2").unwrap();
        assert!(cpp.to_select_place(&none, Some(8), None).is_err());
        assert!(cpp.to_select_place(&none, Some(4), None).is_ok());
    }

    #[test]
    fn counts() {
        let spec = parse("2:ppn=4+hostA:cpp=2").unwrap();
        assert_eq!(spec.node_count(), 3);
        assert_eq!(spec.cpu_count(), 10);
        assert_eq!(parse("2:cpp=0").unwrap().cpu_count(), 1);
        let huge = parse("4294967295:ppn=4294967295:cpp=4294967295").unwrap();
        assert_eq!(huge.cpu_count(), u64::MAX);
        let none = |_: &str| false;
        assert!(huge.to_select_place(&none, None, None).is_err());
        assert!(huge.to_select_place(&none, Some(4), None).is_err());
    }

    #[test]
    fn refuses_what_pbs_refuses() {
        for bad in [
            "",
            "#excl",
            "0",
            "0:ppn=1",
            "2:",
            "2:ppn=0",
            "2:ppn=x",
            "2:ppn=4x",
            "2:mem=1gb",
            "2+",
            "+2",
            "2++1",
            "2:-a",
            "a/1",
            "node 1",
            "2:ppn=99999999999",
            "12-ab",
            "2#",
            "2x-y",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be refused");
        }
        assert_eq!(
            parse("3:ppn=2:mem=1gb").unwrap_err().reason,
            "only ppn, cpp and ncpus take a value in a nodes specification"
        );
        let none = |_: &str| false;
        let e = parse("my.prop")
            .unwrap()
            .to_select_place(&none, None, None)
            .unwrap_err();
        assert_eq!(e.token, "my.prop");
        let e = parse("a:a")
            .unwrap()
            .to_select_place(&none, None, None)
            .unwrap_err();
        assert!(e.reason.contains("twice"));
    }

    #[test]
    fn prints_canonically() {
        assert_eq!(
            parse("2:PPN=4:NCPUS=2#Excl").unwrap().to_string(),
            "2:ppn=4:cpp=2#excl"
        );
        assert_eq!(
            parse("hostA+3#ib:fast").unwrap().to_string(),
            "hostA+3#ib:fast"
        );
    }
}

//! The `select` statement: `-l select=4:ncpus=1:mem=1GB+2:ncpus=8`.
//!
//! A select is one or more chunks joined by `+`. A chunk is an optional count (default 1)
//! and `resource=value` pairs joined by `:`; a value may be quoted with `"` or `'` to hold `:`
//! or `+`. [`Select::from_str`] takes the value **without** the leading `select=` (that is the
//! resource list's job, see [`crate::resource::ResourceList::parse_l`]).
//!
//! Rules, from OpenPBS: `src/lib/Libattr/attr_resc_func.c` (`decode_select`: the syntax),
//! `src/lib/Libifl/grunt_parse.c` (`parse_plus_spec`, `parse_chunk`,
//! `parse_resc_equal_string`), `src/server/vnparse.c` (`do_schedselect`: a resource at most
//! once per chunk, only host-level resources, defaults from `default_chunk`, booleans written
//! `True`/`False`, strings quoted when they hold `"'+:=()`), `src/server/svr_jobfunc.c`
//! (`set_chunk_sum`: at least one chunk in all; consumables summed as count × value) and
//! `src/resmom/start_exec.c` (an absent `mpiprocs` is 1, or 0 when `ncpus=0`; an absent
//! `ompthreads` is `ncpus`). A chunk without `ncpus` gets `ncpus=1` from the server's
//! `default_chunk.ncpus`, which PBS sets to 1 when a server is created (`pbsd_init.c`).
//!
//! Display prints the canonical form that PBS would echo in `Resource_List.select`: the count
//! only when it was given, built-in names in their own spelling, values in PBS's own form
//! (`mem=1gb`, `accelerator=True`).
//!
//! ```
//! use hpcbox_pbs::select::Select;
//! let s: Select = "4:ncpus=1:mem=1GB+2:ncpus=8".parse().unwrap();
//! assert_eq!(s.to_string(), "4:ncpus=1:mem=1gb+2:ncpus=8");
//! assert_eq!(s.total_chunks(), 6);
//! assert_eq!(s.total_ncpus(), 20);
//! assert_eq!(s.total("mem").unwrap().to_string(), "4gb");
//! ```

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::resource::{check_name, ResourceDefs, ResourceList, ResourceValue};
use crate::size::Size;
use crate::ParseError;

/// One chunk: how many, and the resources of each.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Chunk {
    count: Option<u32>,
    resources: Vec<(String, ResourceValue)>,
}

impl Chunk {
    /// A chunk with an explicit count and no resources yet.
    pub fn new(count: u32) -> Chunk {
        Chunk {
            count: Some(count),
            resources: Vec::new(),
        }
    }

    /// A chunk whose count is not written (it means 1, or `default_chunk.nchunk`).
    pub fn implicit() -> Chunk {
        Chunk::default()
    }

    /// The same chunk with `name=value` added; refuses an invalid name or one already there.
    pub fn with(
        mut self,
        name: impl Into<String>,
        value: ResourceValue,
    ) -> Result<Chunk, ParseError> {
        let name = name.into();
        check_name(&name)?;
        if self.get(&name).is_some() {
            return Err(ParseError::new(
                name,
                "resource requested twice in one chunk",
            ));
        }
        self.resources.push((name, value));
        Ok(self)
    }

    /// How many such chunks: the count written, or 1.
    pub fn count(&self) -> u32 {
        self.count.unwrap_or(1)
    }

    /// The count as written, `None` when the chunk did not give one.
    pub fn count_given(&self) -> Option<u32> {
        self.count
    }

    /// The value of `name` in this chunk, ignoring case.
    pub fn get(&self, name: &str) -> Option<&ResourceValue> {
        self.resources
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// The resources of this chunk, in order.
    pub fn resources(&self) -> impl Iterator<Item = (&str, &ResourceValue)> {
        self.resources.iter().map(|(n, v)| (n.as_str(), v))
    }

    /// CPUs per chunk: `ncpus`, or 1 (the server's `default_chunk.ncpus`).
    pub fn ncpus(&self) -> i64 {
        self.get("ncpus")
            .and_then(ResourceValue::as_long)
            .unwrap_or(1)
    }

    /// MPI ranks per chunk, as the mom counts them for `PBS_NODEFILE`: `mpiprocs`, or 1, or 0
    /// when `ncpus=0`.
    pub fn mpiprocs(&self) -> i64 {
        self.get("mpiprocs")
            .and_then(ResourceValue::as_long)
            .unwrap_or(if self.ncpus() == 0 { 0 } else { 1 })
    }

    /// Threads per rank (`OMP_NUM_THREADS`): `ompthreads`, or `ncpus`.
    pub fn ompthreads(&self) -> i64 {
        self.get("ompthreads")
            .and_then(ResourceValue::as_long)
            .unwrap_or_else(|| self.ncpus())
    }
}

/// A select statement: one or more chunks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Select {
    chunks: Vec<Chunk>,
}

impl Select {
    /// A select of `chunks`; refuses an empty list or one that asks for no chunk at all.
    pub fn new(chunks: Vec<Chunk>) -> Result<Select, ParseError> {
        let select = Select { chunks };
        if select.total_chunks() == 0 {
            return Err(ParseError::new(
                select.to_string(),
                "a select must ask for at least one chunk",
            ));
        }
        Ok(select)
    }

    /// Parses a select statement (without `select=`), typing values with `defs`.
    pub fn parse_with(s: &str, defs: &ResourceDefs) -> Result<Select, ParseError> {
        let spec = s.trim_matches(|c: char| c.is_ascii_whitespace());
        if spec.is_empty() {
            return Err(ParseError::new(s, "a select statement cannot be empty"));
        }
        let chunks = split_outside_quotes(spec, '+')?
            .into_iter()
            .map(|text| parse_chunk(text, spec, defs))
            .collect::<Result<Vec<_>, _>>()?;
        Select::new(chunks).map_err(|e| ParseError::new(spec, e.reason))
    }

    /// The chunks, in order.
    pub fn chunks(&self) -> &[Chunk] {
        &self.chunks
    }

    /// The number of chunks asked for in all (the job's `nodect`).
    pub fn total_chunks(&self) -> u64 {
        self.chunks.iter().map(|c| u64::from(c.count())).sum()
    }

    /// The sum over chunks of count × value of `name`, for chunks that give it, as
    /// `set_chunk_sum` makes the job-wide amount. `None` when no chunk gives it, when it is not
    /// a number or size, or on overflow. Defaults are not counted: see [`Select::total_ncpus`]
    /// and [`Select::with_defaults`].
    pub fn total(&self, name: &str) -> Option<ResourceValue> {
        let mut sum: Option<ResourceValue> = None;
        for chunk in &self.chunks {
            let Some(value) = chunk.get(name) else {
                continue;
            };
            let part = times(value, chunk.count())?;
            sum = Some(match sum {
                None => part,
                Some(acc) => add(&acc, &part)?,
            });
        }
        sum
    }

    /// CPUs in all, a chunk without `ncpus` counting 1.
    pub fn total_ncpus(&self) -> i64 {
        self.chunks
            .iter()
            .map(|c| i64::from(c.count()).saturating_mul(c.ncpus()))
            .fold(0i64, i64::saturating_add)
    }

    /// MPI ranks in all (lines of `PBS_NODEFILE`), with [`Chunk::mpiprocs`]'s defaults.
    pub fn total_mpiprocs(&self) -> i64 {
        self.chunks
            .iter()
            .map(|c| i64::from(c.count()).saturating_mul(c.mpiprocs()))
            .fold(0i64, i64::saturating_add)
    }

    /// The select with defaults filled in, as `do_schedselect` makes the job's `schedselect`:
    /// every resource of `defaults` that a chunk lacks is added to it; `nchunk` sets the count
    /// of chunks that did not give one; every count is then written.
    ///
    /// ```
    /// use hpcbox_pbs::{resource::ResourceList, select::Select};
    /// let s: Select = "mem=1gb+2:ncpus=4".parse().unwrap();
    /// let d = ResourceList::parse_l("ncpus=1").unwrap();
    /// assert_eq!(s.with_defaults(&d).to_string(), "1:mem=1gb:ncpus=1+2:ncpus=4");
    /// ```
    pub fn with_defaults(&self, defaults: &ResourceList) -> Select {
        let nchunk = defaults
            .get("nchunk")
            .and_then(ResourceValue::as_long)
            .and_then(|n| u32::try_from(n).ok());
        let chunks = self
            .chunks
            .iter()
            .map(|chunk| {
                let mut filled = chunk.clone();
                filled.count = Some(chunk.count.or(nchunk).unwrap_or(1));
                for (name, value) in defaults.iter() {
                    if !name.eq_ignore_ascii_case("nchunk") && filled.get(name).is_none() {
                        filled.resources.push((name.to_string(), value.clone()));
                    }
                }
                filled
            })
            .collect();
        Select { chunks }
    }
}

/// `value` × `count` for a number or a size.
fn times(value: &ResourceValue, count: u32) -> Option<ResourceValue> {
    Some(match value {
        ResourceValue::Long(v) => ResourceValue::Long(v.checked_mul(i64::from(count))?),
        ResourceValue::Float(v) => ResourceValue::Float(v * f64::from(count)),
        ResourceValue::Size(v) => ResourceValue::Size(v.checked_mul(u64::from(count))?),
        _ => return None,
    })
}

/// The sum of two numbers or sizes; adding to a zero size just takes the other (`set_size`).
fn add(a: &ResourceValue, b: &ResourceValue) -> Option<ResourceValue> {
    Some(match (a, b) {
        (ResourceValue::Long(x), ResourceValue::Long(y)) => ResourceValue::Long(x.checked_add(*y)?),
        (ResourceValue::Float(x), ResourceValue::Float(y)) => ResourceValue::Float(x + y),
        (ResourceValue::Size(x), ResourceValue::Size(y)) if x.num() == 0 => ResourceValue::Size(*y),
        (ResourceValue::Size(x), ResourceValue::Size(y)) => {
            ResourceValue::Size(Size::checked_add(x, y)?)
        }
        _ => return None,
    })
}

/// Splits `s` on `sep` where `sep` is not inside `"…"` or `'…'`.
pub(crate) fn split_outside_quotes(s: &str, sep: char) -> Result<Vec<&str>, ParseError> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut quote: Option<char> = None;
    for (i, c) in s.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c == sep => {
                parts.push(&s[start..i]);
                start = i + c.len_utf8();
            }
            None => {}
        }
    }
    if quote.is_some() {
        return Err(ParseError::new(s, "no closing quote"));
    }
    parts.push(&s[start..]);
    Ok(parts)
}

fn parse_chunk(text: &str, spec: &str, defs: &ResourceDefs) -> Result<Chunk, ParseError> {
    if text.is_empty() {
        return Err(ParseError::new(
            spec,
            "empty chunk (`+` at the start, at the end or twice)",
        ));
    }
    let parts = split_outside_quotes(text, ':')?;
    let (mut chunk, pairs) = match parts.split_first() {
        Some((first, rest)) if first.starts_with(|c: char| c.is_ascii_digit()) => {
            (Chunk::new(parse_count(first)?), rest)
        }
        _ => (Chunk::implicit(), &parts[..]),
    };
    for pair in pairs {
        let (name, raw) = pair.split_once('=').ok_or_else(|| {
            ParseError::new(*pair, "expected resource=value after `:` in a chunk")
        })?;
        check_name(name)?;
        let canonical = defs.canonical_name(name);
        if defs.get(name).is_some_and(|d| !d.host_level) {
            return Err(ParseError::new(
                name,
                format!("{canonical} cannot be requested in a chunk (not a host-level resource)"),
            ));
        }
        let value = ResourceValue::parse(&canonical, defs.kind_of(name), unquote(raw)?, defs)?;
        chunk = chunk.with(canonical, value)?;
    }
    Ok(chunk)
}

fn parse_count(text: &str) -> Result<u32, ParseError> {
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseError::new(
            text,
            "a chunk count must be a number followed by `:`, `+` or the end",
        ));
    }
    text.parse()
        .map_err(|_| ParseError::new(text, "chunk count is too large"))
}

/// The text of a chunk value: the inside of a quoted value, or a plain one.
fn unquote(raw: &str) -> Result<&str, ParseError> {
    match raw.chars().next() {
        Some(q @ ('"' | '\'')) => {
            let inner = &raw[1..];
            match inner.find(q) {
                Some(end) if end + 1 == inner.len() => Ok(&inner[..end]),
                _ => Err(ParseError::new(raw, "nothing may follow a closing quote")),
            }
        }
        _ => match raw
            .chars()
            .find(|c| !c.is_ascii_graphic() || matches!(c, '"' | '\''))
        {
            Some(bad) => Err(ParseError::new(
                raw,
                format!("{bad:?} in a chunk value must be quoted"),
            )),
            None => Ok(raw),
        },
    }
}

/// A chunk value as written in a select: quoted when it holds a character the select syntax
/// uses (PBS quotes on `"'+:=()`; blanks and commas are quoted too so that `-l` reads them
/// back).
fn quote_value(value: &ResourceValue) -> String {
    let text = value.to_string();
    let special = |c: char| "\"'+:=(), ".contains(c) || !c.is_ascii_graphic();
    if !text.is_empty() && !text.contains(special) {
        text
    } else if text.contains('"') {
        format!("'{text}'")
    } else {
        format!("\"{text}\"")
    }
}

impl fmt::Display for Chunk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        if self.count.is_some() || self.resources.is_empty() {
            write!(f, "{}", self.count())?;
            first = false;
        }
        for (name, value) in &self.resources {
            if !first {
                f.write_str(":")?;
            }
            first = false;
            write!(f, "{name}={}", quote_value(value))?;
        }
        Ok(())
    }
}

impl fmt::Display for Select {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, chunk) in self.chunks.iter().enumerate() {
            if i > 0 {
                f.write_str("+")?;
            }
            write!(f, "{chunk}")?;
        }
        Ok(())
    }
}

impl FromStr for Select {
    type Err = ParseError;

    /// Parses with the built-in resource table; see [`Select::parse_with`].
    fn from_str(s: &str) -> Result<Select, ParseError> {
        Select::parse_with(s, &ResourceDefs::builtin())
    }
}

impl TryFrom<String> for Select {
    type Error = ParseError;

    fn try_from(s: String) -> Result<Select, ParseError> {
        s.parse()
    }
}

impl From<Select> for String {
    fn from(s: Select) -> String {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::ResourceKind;

    fn sel(s: &str) -> Select {
        s.parse().unwrap()
    }

    fn err(s: &str) -> ParseError {
        s.parse::<Select>().unwrap_err()
    }

    #[test]
    fn parses_chunks_and_counts() {
        let s = sel("4:ncpus=1:mem=1GB+2:ncpus=8");
        assert_eq!(s.chunks().len(), 2);
        assert_eq!(s.chunks()[0].count(), 4);
        assert_eq!(s.chunks()[1].get("ncpus"), Some(&ResourceValue::Long(8)));
        assert_eq!(s.total_chunks(), 6);
        let s = sel("ncpus=2");
        assert_eq!(s.chunks()[0].count(), 1);
        assert_eq!(s.chunks()[0].count_given(), None);
        assert_eq!(s.to_string(), "ncpus=2");
        assert_eq!(sel("3").to_string(), "3");
        assert_eq!(sel("1:ncpus=1+ncpus=2").to_string(), "1:ncpus=1+ncpus=2");
    }

    #[test]
    fn prints_values_in_pbs_form() {
        assert_eq!(
            sel("2:NCPUS=1:mem=512MB:accelerator=y:Arch=linux").to_string(),
            "2:ncpus=1:mem=512mb:accelerator=True:arch=linux"
        );
        assert_eq!(sel("1:host=\"node:1\"").to_string(), "1:host=\"node:1\"");
        assert_eq!(sel("1:host='a\"b'").to_string(), "1:host='a\"b'");
        assert_eq!(sel("1:host=\"plain\"").to_string(), "1:host=plain");
        assert_eq!(sel("1:ngpus=\"2\"").to_string(), "1:ngpus=2");
    }

    #[test]
    fn quoted_values_keep_plus_and_colon() {
        let s = sel("1:vnode=\"a+b\"+2:ncpus=1");
        assert_eq!(s.chunks().len(), 2);
        assert_eq!(s.chunks()[0].get("vnode").unwrap().as_str(), Some("a+b"));
    }

    #[test]
    fn totals() {
        let s = sel("4:ncpus=2:mem=1gb+2:ncpus=8:mem=512mb+mem=1kb");
        assert_eq!(s.total("ncpus"), Some(ResourceValue::Long(24)));
        assert_eq!(s.total_ncpus(), 25);
        assert_eq!(s.total("mem").unwrap().to_string(), "5242881kb");
        assert_eq!(s.total("ngpus"), None);
        assert_eq!(sel("2:mem=1gb").total("mem").unwrap().to_string(), "2gb");
        assert_eq!(sel("1:arch=linux").total("arch"), None);
    }

    #[test]
    fn mpiprocs_and_ompthreads_defaults() {
        let s = sel("2:ncpus=4+1:ncpus=0+1:ncpus=8:mpiprocs=8+3");
        let mpi: Vec<i64> = s.chunks().iter().map(Chunk::mpiprocs).collect();
        assert_eq!(mpi, [1, 0, 8, 1]);
        let omp: Vec<i64> = s.chunks().iter().map(Chunk::ompthreads).collect();
        assert_eq!(omp, [4, 0, 8, 1]);
        assert_eq!(s.total_mpiprocs(), 2 + 8 + 3);
        assert_eq!(sel("1:ncpus=4:ompthreads=2").chunks()[0].ompthreads(), 2);
    }

    #[test]
    fn defaults_fill_chunks() {
        let d = ResourceList::parse_l("ncpus=1,mem=1gb,nchunk=2").unwrap();
        assert_eq!(
            sel("ncpus=4+3:mem=2gb").with_defaults(&d).to_string(),
            "2:ncpus=4:mem=1gb+3:mem=2gb:ncpus=1"
        );
    }

    #[test]
    fn refuses_what_pbs_refuses() {
        assert_eq!(err("").reason, "a select statement cannot be empty");
        assert!(err("+1:ncpus=1").reason.starts_with("empty chunk"));
        assert!(err("1:ncpus=1+").reason.starts_with("empty chunk"));
        assert!(err("1:ncpus=1++1").reason.starts_with("empty chunk"));
        assert!(err("1:").reason.starts_with("expected resource=value"));
        assert!(err("1:ncpus").reason.starts_with("expected resource=value"));
        assert!(err("2x:ncpus=1").reason.starts_with("a chunk count"));
        assert_eq!(
            err("99999999999:ncpus=1").reason,
            "chunk count is too large"
        );
        assert_eq!(
            err("0:ncpus=1").reason,
            "a select must ask for at least one chunk"
        );
        let e = err("1:ncpus=abc");
        assert_eq!(
            (e.token.as_str(), e.reason.as_str()),
            ("abc", "ncpus expects an integer")
        );
        let e = err("1:ncpus=1:ncpus=2");
        assert_eq!(e.reason, "resource requested twice in one chunk");
        let e = err("1:walltime=10:00");
        assert_eq!(e.token, "walltime");
        assert!(e.reason.contains("not a host-level resource"));
        assert!(err("1:ncpus=").reason.contains("no value"));
        assert!(err("1:host=\"a").reason.contains("no closing quote"));
        assert!(err("1:host=\"a\"b").reason.contains("closing quote"));
        assert!(err("1:host=a b").reason.contains("must be quoted"));
        assert!(err("1:_x=1").reason.starts_with("not a resource name"));
    }

    #[test]
    fn custom_resources_follow_their_definition() {
        assert_eq!(
            sel("1:scratch=10gb").chunks()[0]
                .get("scratch")
                .unwrap()
                .as_str(),
            Some("10gb")
        );
        let mut defs = ResourceDefs::builtin();
        defs.define("scratch", ResourceKind::Size).unwrap();
        let s = Select::parse_with("2:scratch=10GB", &defs).unwrap();
        assert_eq!(s.total("scratch").unwrap().to_string(), "20gb");
    }

    #[test]
    fn serde_uses_the_string_form() {
        let s = sel("2:ncpus=1");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"2:ncpus=1\"");
        assert_eq!(serde_json::from_str::<Select>("\"2:ncpus=1\"").unwrap(), s);
    }
}

//! Resources: their kinds, the built-in table, typed values and the `-l` resource list.
//!
//! `qsub -l select=2:ncpus=1:mem=1GB,walltime=00:10:00` gives a [`ResourceList`] of two
//! resources, `select` (a [`Select`]) and `walltime` (a [`Duration`]). Each value is decoded by
//! its resource's [`ResourceKind`], taken from [`ResourceDefs`]: the built-in table of PBS
//! Professional plus any custom resource a caller defines. A name that is not defined is a
//! custom resource the server will check, and its value is kept as a string.
//!
//! Sources (OpenPBS): `src/lib/Libattr/master_resc_def_all.xml` (built-in resources, their
//! types and flags), `src/lib/Libcmds/set_resource.c` (`set_resources`: how `-l` is split),
//! `src/lib/Libifl/pbs_quote_parse.c` (quoting of values), `src/lib/Libattr/attr_fn_l.c`,
//! `attr_fn_f.c`, `attr_fn_b.c` (`decode_l`, `decode_f`/`encode_f`, `is_true_or_false`),
//! `src/lib/Libattr/attr_resc_func.c` (`verify_resc_name`) and `src/server/svr_jobfunc.c`
//! (`set_select_and_place`).
//!
//! ```
//! use hpcbox_pbs::resource::{ResourceList, ResourceValue};
//! let mut l = ResourceList::parse_l("select=2:ncpus=1:mem=1GB,walltime=00:10:00").unwrap();
//! l.merge(ResourceList::parse_l("walltime=1:00:00").unwrap());
//! assert_eq!(l.to_string(), "select=2:ncpus=1:mem=1gb,walltime=01:00:00");
//! assert_eq!(l.get("walltime").and_then(ResourceValue::as_time).unwrap().as_secs(), 3600);
//! ```

use std::fmt;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::duration::Duration;
use crate::nodes::NodeSpec;
use crate::place::Place;
use crate::select::{Chunk, Select};
use crate::size::Size;
use crate::ParseError;

/// The type of a resource's value (`ATR_TYPE_*` in PBS).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ResourceKind {
    /// A signed integer (`long`): `ncpus=4`.
    Long,
    /// A floating-point number (`float`).
    Float,
    /// A size: `mem=1gb`.
    Size,
    /// A time kept in seconds: `walltime=01:00:00`.
    Time,
    /// A boolean: `accelerator=true`.
    Bool,
    /// A string: `arch=linux`.
    Str,
    /// A comma-separated list of strings (`string_array`), kept as one string.
    StringArray,
    /// The `select` statement.
    Select,
    /// The `place` statement.
    Place,
    /// The old `nodes` specification.
    Nodes,
}

impl ResourceKind {
    /// Whether values of this kind are kept as plain strings.
    pub fn is_string(self) -> bool {
        matches!(self, ResourceKind::Str | ResourceKind::StringArray)
    }

    fn expects(self) -> &'static str {
        match self {
            ResourceKind::Long => "an integer",
            ResourceKind::Float => "a number",
            ResourceKind::Size => "a size such as 1gb",
            ResourceKind::Time => "a time such as 01:30:00",
            ResourceKind::Bool => "a boolean (True, False, t, f, y, n, 1 or 0)",
            ResourceKind::Str | ResourceKind::StringArray => "a string",
            ResourceKind::Select => "a select statement",
            ResourceKind::Place => "a place statement",
            ResourceKind::Nodes => "a nodes specification",
        }
    }
}

/// The definition of one resource: name, kind and the flags that matter to parsing and
/// summing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceDef {
    /// The name as PBS spells it (lookups ignore case).
    pub name: String,
    /// The type of its values.
    pub kind: ResourceKind,
    /// Host-level: may be requested in a select chunk (`ATR_DFLAG_CVTSLT`, flag `h`).
    pub host_level: bool,
    /// Consumable: its chunk values are summed into the job-wide amount (flags `n`, `f`).
    pub consumable: bool,
}

impl ResourceDef {
    /// A job-wide, non-consumable resource of `kind`.
    pub fn new(name: impl Into<String>, kind: ResourceKind) -> ResourceDef {
        ResourceDef {
            name: name.into(),
            kind,
            host_level: false,
            consumable: false,
        }
    }

    /// The same definition, host-level or not.
    pub fn host_level(mut self, host_level: bool) -> ResourceDef {
        self.host_level = host_level;
        self
    }

    /// The same definition, consumable or not.
    pub fn consumable(mut self, consumable: bool) -> ResourceDef {
        self.consumable = consumable;
        self
    }
}

use ResourceKind as K;

/// The built-in resources of `master_resc_def_all.xml`: name, kind, host-level
/// (`ATR_DFLAG_CVTSLT`), consumable (`ATR_DFLAG_RASSN | ANASSN | FNASSN`). `ngpus` is not built
/// into OpenPBS, but nearly every site defines it as a host-level consumable integer, and so
/// does hpcbox.
const BUILTIN: &[(&str, ResourceKind, bool, bool)] = &[
    ("cput", K::Time, false, false),
    ("mem", K::Size, true, true),
    ("walltime", K::Time, false, false),
    ("soft_walltime", K::Time, false, false),
    ("min_walltime", K::Time, false, false),
    ("max_walltime", K::Time, false, false),
    ("ncpus", K::Long, true, true),
    ("naccelerators", K::Long, true, true),
    ("select", K::Select, false, false),
    ("place", K::Place, false, false),
    ("nodes", K::Nodes, false, false),
    ("nodect", K::Long, false, true),
    ("arch", K::Str, true, false),
    ("nchunk", K::Long, true, false),
    ("vntype", K::StringArray, true, false),
    ("mpiprocs", K::Long, true, true),
    ("ompthreads", K::Long, true, false),
    ("cpupercent", K::Long, false, false),
    ("energy", K::Float, false, false),
    ("file", K::Size, false, false),
    ("pmem", K::Size, false, false),
    ("vmem", K::Size, true, true),
    ("pvmem", K::Size, false, false),
    ("nice", K::Long, false, false),
    ("pcput", K::Time, false, false),
    ("nodemask", K::Str, false, false),
    ("hpm", K::Long, false, true),
    ("ssinodes", K::Long, false, false),
    ("host", K::Str, true, false),
    ("vnode", K::Str, true, false),
    ("resc", K::StringArray, false, false),
    ("software", K::Str, false, false),
    ("site", K::Str, false, false),
    ("exec_vnode", K::Str, false, false),
    ("start_time", K::Long, false, false),
    ("partition", K::Str, false, false),
    ("aoe", K::StringArray, true, false),
    ("eoe", K::StringArray, true, false),
    ("preempt_targets", K::StringArray, false, false),
    ("accelerator", K::Bool, true, false),
    ("accelerator_model", K::Str, true, false),
    ("accelerator_memory", K::Size, true, true),
    ("accelerator_group", K::StringArray, true, false),
    ("pstate", K::Str, false, false),
    ("hbmem", K::Size, true, true),
    ("pgov", K::Str, false, false),
    ("pcap_node", K::Long, false, false),
    ("pcap_accelerator", K::Long, false, false),
    ("ngpus", K::Long, true, true),
];

/// A table of resource definitions: the built-ins, plus the custom resources a caller defines.
///
/// ```
/// use hpcbox_pbs::resource::{ResourceDefs, ResourceKind};
/// let mut defs = ResourceDefs::builtin();
/// defs.define("scratch", ResourceKind::Size).unwrap();
/// assert_eq!(defs.kind_of("SCRATCH"), ResourceKind::Size);
/// assert_eq!(defs.kind_of("ncpus"), ResourceKind::Long);
/// assert_eq!(defs.kind_of("unknown"), ResourceKind::Str);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceDefs {
    defs: Vec<ResourceDef>,
}

impl Default for ResourceDefs {
    fn default() -> ResourceDefs {
        ResourceDefs::builtin()
    }
}

impl ResourceDefs {
    /// The built-in resources of PBS Professional.
    pub fn builtin() -> ResourceDefs {
        let defs = BUILTIN
            .iter()
            .map(|&(name, kind, host_level, consumable)| ResourceDef {
                name: name.to_string(),
                kind,
                host_level,
                consumable,
            })
            .collect();
        ResourceDefs { defs }
    }

    /// Defines a custom host-level, non-consumable resource (`qmgr -c "create resource NAME
    /// type=KIND, flag=h"`). Refuses an invalid or already defined name.
    pub fn define(&mut self, name: &str, kind: ResourceKind) -> Result<&mut Self, ParseError> {
        self.define_def(ResourceDef::new(name, kind).host_level(true))
    }

    /// Defines a custom resource with all its flags. Refuses an invalid or already defined
    /// name.
    pub fn define_def(&mut self, def: ResourceDef) -> Result<&mut Self, ParseError> {
        check_name(&def.name)?;
        if self.get(&def.name).is_some() {
            return Err(ParseError::new(def.name, "resource is already defined"));
        }
        self.defs.push(def);
        Ok(self)
    }

    /// The definition of `name`, ignoring case as PBS does.
    pub fn get(&self, name: &str) -> Option<&ResourceDef> {
        self.defs.iter().find(|d| d.name.eq_ignore_ascii_case(name))
    }

    /// The kind of `name`; [`ResourceKind::Str`] for an undefined (custom) resource.
    pub fn kind_of(&self, name: &str) -> ResourceKind {
        self.get(name).map_or(ResourceKind::Str, |d| d.kind)
    }

    /// Every definition, built-ins first.
    pub fn iter(&self) -> impl Iterator<Item = &ResourceDef> {
        self.defs.iter()
    }

    /// `name` spelled as its definition spells it, or as given when undefined.
    pub fn canonical_name(&self, name: &str) -> String {
        self.get(name)
            .map_or_else(|| name.to_string(), |d| d.name.clone())
    }
}

/// Checks a resource name as `verify_resc_name` does: a letter, then letters, digits, `_` or
/// `-`.
pub fn check_name(name: &str) -> Result<(), ParseError> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        Ok(())
    } else if name.is_empty() {
        Err(ParseError::new(name, "a resource name is missing"))
    } else {
        Err(ParseError::new(
            name,
            "not a resource name (a letter, then letters, digits, `_` or `-`)",
        ))
    }
}

/// A typed resource value.
#[derive(Debug, Clone, PartialEq)]
pub enum ResourceValue {
    /// An integer.
    Long(i64),
    /// A floating-point number.
    Float(f64),
    /// A size.
    Size(Size),
    /// A time.
    Time(Duration),
    /// A boolean, printed `True` / `False`.
    Bool(bool),
    /// A string, also a string array kept as one string, and any custom resource whose kind is
    /// not known.
    Str(String),
    /// A select statement.
    Select(Select),
    /// A place statement.
    Place(Place),
    /// An old-style nodes specification.
    Nodes(NodeSpec),
}

impl ResourceValue {
    /// Decodes `text` as the value of resource `name`, of kind `kind`. Errors name the text and
    /// say what `name` expects (`ncpus expects an integer`).
    pub fn parse(
        name: &str,
        kind: ResourceKind,
        text: &str,
        defs: &ResourceDefs,
    ) -> Result<ResourceValue, ParseError> {
        if text.is_empty() {
            return Err(ParseError::new(
                format!("{name}="),
                format!("{name} has no value"),
            ));
        }
        let expected = |detail: Option<ParseError>| {
            let mut reason = format!("{name} expects {}", kind.expects());
            if let Some(e) = detail {
                reason = format!("{reason}: {}", e.reason);
            }
            ParseError::new(text, reason)
        };
        Ok(match kind {
            ResourceKind::Long => {
                ResourceValue::Long(parse_long(text).ok_or_else(|| expected(None))?)
            }
            ResourceKind::Float => {
                ResourceValue::Float(parse_float(text).ok_or_else(|| expected(None))?)
            }
            ResourceKind::Size => ResourceValue::Size(text.parse().map_err(|e| expected(Some(e)))?),
            ResourceKind::Time => ResourceValue::Time(text.parse().map_err(|e| expected(Some(e)))?),
            ResourceKind::Bool => {
                ResourceValue::Bool(parse_bool(text).ok_or_else(|| expected(None))?)
            }
            ResourceKind::Str | ResourceKind::StringArray => ResourceValue::Str(text.to_string()),
            ResourceKind::Select => ResourceValue::Select(Select::parse_with(text, defs)?),
            ResourceKind::Place => ResourceValue::Place(Place::parse_with(text, defs)?),
            ResourceKind::Nodes => ResourceValue::Nodes(crate::nodes::parse(text)?),
        })
    }

    /// The kind of this value (a string value reports [`ResourceKind::Str`]).
    pub fn kind(&self) -> ResourceKind {
        match self {
            ResourceValue::Long(_) => ResourceKind::Long,
            ResourceValue::Float(_) => ResourceKind::Float,
            ResourceValue::Size(_) => ResourceKind::Size,
            ResourceValue::Time(_) => ResourceKind::Time,
            ResourceValue::Bool(_) => ResourceKind::Bool,
            ResourceValue::Str(_) => ResourceKind::Str,
            ResourceValue::Select(_) => ResourceKind::Select,
            ResourceValue::Place(_) => ResourceKind::Place,
            ResourceValue::Nodes(_) => ResourceKind::Nodes,
        }
    }

    /// The integer, if this is one.
    pub fn as_long(&self) -> Option<i64> {
        match self {
            ResourceValue::Long(v) => Some(*v),
            _ => None,
        }
    }

    /// The number, if this is a float.
    pub fn as_float(&self) -> Option<f64> {
        match self {
            ResourceValue::Float(v) => Some(*v),
            _ => None,
        }
    }

    /// The size, if this is one.
    pub fn as_size(&self) -> Option<&Size> {
        match self {
            ResourceValue::Size(v) => Some(v),
            _ => None,
        }
    }

    /// The time, if this is one.
    pub fn as_time(&self) -> Option<&Duration> {
        match self {
            ResourceValue::Time(v) => Some(v),
            _ => None,
        }
    }

    /// The boolean, if this is one.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            ResourceValue::Bool(v) => Some(*v),
            _ => None,
        }
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            ResourceValue::Str(v) => Some(v),
            _ => None,
        }
    }

    /// The select statement, if this is one.
    pub fn as_select(&self) -> Option<&Select> {
        match self {
            ResourceValue::Select(v) => Some(v),
            _ => None,
        }
    }

    /// The place statement, if this is one.
    pub fn as_place(&self) -> Option<&Place> {
        match self {
            ResourceValue::Place(v) => Some(v),
            _ => None,
        }
    }

    /// The nodes specification, if this is one.
    pub fn as_nodes(&self) -> Option<&NodeSpec> {
        match self {
            ResourceValue::Nodes(v) => Some(v),
            _ => None,
        }
    }
}

/// `decode_l`: an optional sign, then digits, within 64 bits.
fn parse_long(text: &str) -> Option<i64> {
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// `decode_f`: a decimal number; infinities and NaN are refused.
fn parse_float(text: &str) -> Option<f64> {
    let ok_chars = text
        .bytes()
        .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b));
    text.parse::<f64>()
        .ok()
        .filter(|v| ok_chars && v.is_finite())
}

/// `is_true_or_false`: exactly these spellings.
fn parse_bool(text: &str) -> Option<bool> {
    match text {
        "True" | "TRUE" | "true" | "t" | "T" | "1" | "y" | "Y" => Some(true),
        "False" | "FALSE" | "false" | "f" | "F" | "0" | "n" | "N" => Some(false),
        _ => None,
    }
}

/// The number of decimals `encode_f` prints (`float_digits` with at most 4 digits).
fn float_digits(value: f64) -> usize {
    const ERROR_FACTOR: f64 = 1000.0;
    let truncate = |x: f64| {
        if x > u64::MAX as f64 {
            u64::MAX as f64
        } else {
            x.trunc()
        }
    };
    let mut fl = value.abs();
    for digits in 0..4 {
        let num = truncate((fl - truncate(fl)) * ERROR_FACTOR);
        if !(1.0..ERROR_FACTOR - 1.0).contains(&num) {
            return digits;
        }
        fl *= 10.0;
    }
    4
}

/// `encode_f`'s `%-.*f` with [`float_digits`] decimals, less trailing zeros (which PBS prints
/// only when rounding to four decimals ends in 0, and which would not read back the same).
///
/// `float_digits` can pick fewer decimals for the printed number than for the number itself
/// (3.10012 prints `3.1001`, which prints `3.1`); the text is printed again until it is stable,
/// so that what hpcbox prints reads back to the same text.
fn format_float(value: f64) -> String {
    let mut text = format_float_once(value);
    for _ in 0..4 {
        let Some(again) = text.parse::<f64>().ok().map(format_float_once) else {
            break;
        };
        if again == text {
            break;
        }
        text = again;
    }
    text
}

fn format_float_once(value: f64) -> String {
    let text = format!("{:.*}", float_digits(value), value);
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

impl fmt::Display for ResourceValue {
    /// The value as PBS encodes it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResourceValue::Long(v) => write!(f, "{v}"),
            ResourceValue::Float(v) => f.write_str(&format_float(*v)),
            ResourceValue::Size(v) => write!(f, "{v}"),
            ResourceValue::Time(v) => write!(f, "{v}"),
            ResourceValue::Bool(true) => f.write_str("True"),
            ResourceValue::Bool(false) => f.write_str("False"),
            ResourceValue::Str(v) => f.write_str(v),
            ResourceValue::Select(v) => write!(f, "{v}"),
            ResourceValue::Place(v) => write!(f, "{v}"),
            ResourceValue::Nodes(v) => write!(f, "{v}"),
        }
    }
}

impl Serialize for ResourceValue {
    /// A value serializes as its PBS text.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// The resource whose value runs to the end of the `-l` argument, commas included
/// (`set_resources` compares the first 15 characters).
const PREEMPT_TARGETS: &str = "preempt_targets";

/// An ordered list of resources, as `-l` gives them and as `Resource_List` holds them.
///
/// Names are unique ignoring case; setting a resource again replaces its value in place.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ResourceList {
    entries: Vec<(String, ResourceValue)>,
}

impl ResourceList {
    /// An empty list.
    pub fn new() -> ResourceList {
        ResourceList::default()
    }

    /// Parses one `-l` argument with the built-in resource table.
    ///
    /// ```
    /// use hpcbox_pbs::resource::ResourceList;
    /// let l = ResourceList::parse_l("select=2:ncpus=8+1:ncpus=1,place=scatter:excl").unwrap();
    /// assert_eq!(l.len(), 2);
    /// let err = ResourceList::parse_l("ncpus=abc").unwrap_err();
    /// assert_eq!(err.token, "abc");
    /// assert_eq!(err.reason, "ncpus expects an integer");
    /// ```
    pub fn parse_l(arg: &str) -> Result<ResourceList, ParseError> {
        ResourceList::parse_l_with(arg, &ResourceDefs::builtin())
    }

    /// Parses one `-l` argument as `set_resources` splits it: `name=value` pairs separated by
    /// commas (or blanks); a value may be quoted with `"` or `'` to hold commas and blanks; the
    /// value of `preempt_targets` runs to the end. Each value is then decoded by its kind in
    /// `defs`; a name given twice keeps its last value.
    pub fn parse_l_with(arg: &str, defs: &ResourceDefs) -> Result<ResourceList, ParseError> {
        let mut list = ResourceList::new();
        let mut rest = arg;
        while !rest.is_empty() {
            rest = rest.trim_start_matches(is_c_space);
            let name_end = rest.find(['=', ',']).unwrap_or(rest.len());
            let name = rest[..name_end].trim_end_matches(is_c_space);
            if name.is_empty() {
                return Err(ParseError::new(arg, "a resource name is missing"));
            }
            check_name(name)?;
            let after_name = &rest[name_end..];
            let Some(value_part) = after_name.strip_prefix('=') else {
                return Err(ParseError::new(name, format!("{name} has no value")));
            };
            let (text, after) = if name.starts_with(PREEMPT_TARGETS) {
                (value_part.trim_start_matches(is_c_space).to_string(), "")
            } else {
                quote_parse(value_part)?
            };
            let canonical = defs.canonical_name(name);
            let value = ResourceValue::parse(&canonical, defs.kind_of(name), &text, defs)?;
            list.set(canonical, value);
            rest = after;
            if let Some(next) = rest.strip_prefix(',') {
                if next.is_empty() {
                    return Err(ParseError::new(arg, "a resource list cannot end with `,`"));
                }
                rest = next;
            }
        }
        Ok(list)
    }

    /// Adds `later` to this list: a resource of the same name replaces the earlier value,
    /// new ones are appended. This is how repeated `-l` options combine, and how the command
    /// line wins over directives: `directives.merge(command_line)`.
    pub fn merge(&mut self, later: ResourceList) {
        for (name, value) in later.entries {
            self.set(name, value);
        }
    }

    /// The value of `name`, ignoring case.
    pub fn get(&self, name: &str) -> Option<&ResourceValue> {
        self.position(name).map(|i| &self.entries[i].1)
    }

    /// Sets `name` to `value`: replaces the value in place when the name is there, appends
    /// otherwise.
    pub fn set(&mut self, name: impl Into<String>, value: ResourceValue) {
        let name = name.into();
        match self.position(&name) {
            Some(i) => self.entries[i].1 = value,
            None => self.entries.push((name, value)),
        }
    }

    /// Removes `name` and returns its value.
    pub fn remove(&mut self, name: &str) -> Option<ResourceValue> {
        self.position(name).map(|i| self.entries.remove(i).1)
    }

    /// The resources in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &ResourceValue)> {
        self.entries.iter().map(|(n, v)| (n.as_str(), v))
    }

    /// The number of resources.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The `select` statement, if given.
    pub fn select(&self) -> Option<&Select> {
        self.get("select").and_then(ResourceValue::as_select)
    }

    /// The `place` statement, if given.
    pub fn place(&self) -> Option<&Place> {
        self.get("place").and_then(ResourceValue::as_place)
    }

    /// The `nodes` specification, if given.
    pub fn nodes(&self) -> Option<&NodeSpec> {
        self.get("nodes").and_then(ResourceValue::as_nodes)
    }

    /// The `walltime`, if given.
    pub fn walltime(&self) -> Option<&Duration> {
        self.get("walltime").and_then(ResourceValue::as_time)
    }

    fn position(&self, name: &str) -> Option<usize> {
        self.entries
            .iter()
            .position(|(n, _)| n.eq_ignore_ascii_case(name))
    }

    /// The select and place a job gets from this list, as the server's
    /// `set_select_and_place` makes them:
    ///
    /// - a `nodes` spec is converted ([`NodeSpec::to_select_place`], with this list's
    ///   `ncpus` and `mem`; `is_host` tells which words are node names);
    /// - else a given `select` is kept, with the given `place` or an empty one (the scheduler
    ///   then places freely);
    /// - else the job-wide host-level resources become one chunk, `1:ncpus=4:mem=1gb`
    ///   (`1:ncpus=1` when the list is empty, as real PBS output shows), placed `pack` unless
    ///   `place` was given.
    pub fn select_and_place(
        &self,
        defs: &ResourceDefs,
        is_host: &dyn Fn(&str) -> bool,
    ) -> Result<(Select, Place), ParseError> {
        if let Some(nodes) = self.nodes() {
            let ncpus = self.get("ncpus").and_then(ResourceValue::as_long);
            let mem = self.get("mem").and_then(ResourceValue::as_size);
            return nodes.to_select_place(is_host, ncpus, mem);
        }
        if let Some(select) = self.select() {
            return Ok((select.clone(), self.place().cloned().unwrap_or_default()));
        }
        let place = self.place().cloned().unwrap_or_else(Place::pack);
        Ok((self.implied_select(defs)?, place))
    }

    /// The one-chunk select made from the job-wide host-level resources of this list.
    fn implied_select(&self, defs: &ResourceDefs) -> Result<Select, ParseError> {
        if self.is_empty() {
            let chunk = Chunk::new(1).with("ncpus", ResourceValue::Long(1))?;
            return Select::new(vec![chunk]);
        }
        let mut chunk = Chunk::new(1);
        for (name, value) in self.iter() {
            if defs.get(name).is_some_and(|d| d.host_level) {
                chunk = chunk.with(name, value.clone())?;
            }
        }
        Select::new(vec![chunk])
    }
}

impl<'a> IntoIterator for &'a ResourceList {
    type Item = (&'a str, &'a ResourceValue);
    type IntoIter = Box<dyn Iterator<Item = (&'a str, &'a ResourceValue)> + 'a>;

    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

/// `isspace` in the C locale.
fn is_c_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r')
}

/// `isprint` in the C locale.
fn is_c_print(c: char) -> bool {
    (' '..='~').contains(&c)
}

/// `pbs_quote_parse` without blanks in values: returns the value and the rest of the input,
/// which starts at the `,` or blank that ended the value (or is empty).
fn quote_parse(input: &str) -> Result<(String, &str), ParseError> {
    let start = input.trim_start_matches(is_c_space);
    let mut value = String::new();
    let mut quote_char: Option<char> = None;
    let mut quoting = false;
    for (i, c) in start.char_indices() {
        if !is_c_print(c) && !is_c_space(c) {
            return Err(ParseError::new(
                start,
                "illegal character in a resource value",
            ));
        }
        if quoting {
            if Some(c) == quote_char {
                quoting = false;
            } else if c == '&' {
                return Err(ParseError::new(
                    start,
                    "`&` is not allowed in a resource value",
                ));
            } else {
                value.push(c);
            }
        } else if c == '"' || c == '\'' {
            match quote_char {
                Some(q) if q != c => value.push(c),
                _ => {
                    quote_char = Some(c);
                    quoting = true;
                }
            }
        } else if c == ',' || is_c_space(c) {
            return Ok((value, &start[i..]));
        } else if c == '&' {
            return Err(ParseError::new(
                start,
                "`&` is not allowed in a resource value",
            ));
        } else {
            value.push(c);
        }
    }
    if quoting {
        return Err(ParseError::new(start, "no closing quote"));
    }
    Ok((value, ""))
}

/// A value as `-l` must write it to read it back: quoted when it holds a comma, a blank or a
/// quote.
fn quote_for_l(value: &str) -> String {
    let plain = !value
        .chars()
        .any(|c| c == ',' || c == '"' || c == '\'' || is_c_space(c));
    if plain {
        value.to_string()
    } else if !value.contains('"') {
        format!("\"{value}\"")
    } else {
        format!("'{value}'")
    }
}

impl fmt::Display for ResourceList {
    /// The list in `-l` form, `name=value,name=value`; `preempt_targets` comes last since its
    /// value runs to the end of the argument.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let is_pt = |n: &str| n.eq_ignore_ascii_case(PREEMPT_TARGETS);
        let ordered = self
            .iter()
            .filter(|(n, _)| !is_pt(n))
            .chain(self.iter().filter(|(n, _)| is_pt(n)));
        for (i, (name, value)) in ordered.enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            let text = value.to_string();
            if is_pt(name) {
                write!(f, "{name}={text}")?;
            } else {
                write!(f, "{name}={}", quote_for_l(&text))?;
            }
        }
        Ok(())
    }
}

impl Serialize for ResourceList {
    /// A list serializes as a map from name to PBS text, in order.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter().map(|(n, v)| (n, v.to_string())))
    }
}

impl<'de> Deserialize<'de> for ResourceList {
    /// Reads a map from name to PBS text, decoding values with the built-in table.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<ResourceList, D::Error> {
        let map: serde_json::Map<String, serde_json::Value> =
            Deserialize::deserialize(deserializer)?;
        let defs = ResourceDefs::builtin();
        let mut list = ResourceList::new();
        for (name, value) in map {
            let text = match value {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            let parsed = ResourceValue::parse(&name, defs.kind_of(&name), &text, &defs)
                .map_err(D::Error::custom)?;
            list.set(defs.canonical_name(&name), parsed);
        }
        Ok(list)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(arg: &str) -> ResourceList {
        ResourceList::parse_l(arg).unwrap()
    }

    fn err(arg: &str) -> ParseError {
        ResourceList::parse_l(arg).unwrap_err()
    }

    #[test]
    fn splits_on_commas_but_not_inside_select() {
        let list = l("select=2:ncpus=1:mem=1GB,walltime=00:10:00");
        let names: Vec<&str> = list.iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["select", "walltime"]);
        assert_eq!(list.select().unwrap().total_chunks(), 2);
        assert_eq!(list.walltime().unwrap().as_secs(), 600);
        assert_eq!(
            list.to_string(),
            "select=2:ncpus=1:mem=1gb,walltime=00:10:00"
        );
    }

    #[test]
    fn decodes_each_kind() {
        let list = l("ncpus=4,mem=2GB,walltime=3600,accelerator=y,arch=linux,energy=1.5");
        assert_eq!(list.get("ncpus"), Some(&ResourceValue::Long(4)));
        assert_eq!(list.get("mem").unwrap().as_size().unwrap().bytes(), 2 << 30);
        assert_eq!(list.get("walltime").unwrap().to_string(), "01:00:00");
        assert_eq!(list.get("accelerator"), Some(&ResourceValue::Bool(true)));
        assert_eq!(list.get("arch").unwrap().as_str(), Some("linux"));
        assert_eq!(list.get("energy").unwrap().as_float(), Some(1.5));
        assert_eq!(
            list.to_string(),
            "ncpus=4,mem=2gb,walltime=01:00:00,accelerator=True,arch=linux,energy=1.5"
        );
    }

    #[test]
    fn names_ignore_case_and_take_the_builtin_spelling() {
        let list = l("NCPUS=2,Walltime=10:00");
        assert_eq!(list.to_string(), "ncpus=2,walltime=00:10:00");
        assert_eq!(list.get("Ncpus"), Some(&ResourceValue::Long(2)));
    }

    #[test]
    fn unknown_names_are_custom_strings() {
        let list = l("ngpus=2,scratch=100gb");
        assert_eq!(list.get("ngpus"), Some(&ResourceValue::Long(2)));
        assert_eq!(list.get("scratch").unwrap().as_str(), Some("100gb"));
        let mut defs = ResourceDefs::builtin();
        defs.define("scratch", ResourceKind::Size).unwrap();
        let typed = ResourceList::parse_l_with("scratch=100gb", &defs).unwrap();
        assert_eq!(
            typed.get("scratch").unwrap().as_size().unwrap().to_string(),
            "100gb"
        );
        assert!(defs.define("ncpus", ResourceKind::Str).is_err());
        assert!(defs.define("1bad", ResourceKind::Str).is_err());
    }

    #[test]
    fn errors_name_the_token_and_why() {
        let e = err("ncpus=abc");
        assert_eq!(
            (e.token.as_str(), e.reason.as_str()),
            ("abc", "ncpus expects an integer")
        );
        let e = err("mem=12XB");
        assert_eq!(e.token, "12XB");
        assert!(e.reason.starts_with("mem expects a size"), "{}", e.reason);
        let e = err("walltime=1h");
        assert_eq!(e.token, "1h");
        assert!(e.reason.starts_with("walltime expects a time"));
        assert_eq!(
            err("accelerator=yes").reason,
            "accelerator expects a boolean (True, False, t, f, y, n, 1 or 0)"
        );
        assert_eq!(err("ncpus").reason, "ncpus has no value");
        assert_eq!(err("ncpus=").reason, "ncpus has no value");
        assert_eq!(
            err("ncpus=1,").reason,
            "a resource list cannot end with `,`"
        );
        assert_eq!(err(",ncpus=1").reason, "a resource name is missing");
        assert_eq!(err("=1").reason, "a resource name is missing");
        assert_eq!(err("ncpus=1 ").reason, "a resource name is missing");
        assert!(err("1cpu=1").reason.starts_with("not a resource name"));
        assert_eq!(err("arch='linux").reason, "no closing quote");
        assert!(err("arch=a&b").reason.contains('&'));
        assert!(err("arch=caf\u{e9}").reason.contains("illegal"));
    }

    #[test]
    fn booleans_as_pbs_spells_them() {
        for t in ["True", "TRUE", "true", "t", "T", "1", "y", "Y"] {
            assert_eq!(parse_bool(t), Some(true), "{t}");
        }
        for f in ["False", "FALSE", "false", "f", "F", "0", "n", "N"] {
            assert_eq!(parse_bool(f), Some(false), "{f}");
        }
        for bad in ["yes", "no", "tRUE", "2", ""] {
            assert_eq!(parse_bool(bad), None, "{bad}");
        }
    }

    #[test]
    fn longs_as_decode_l() {
        assert_eq!(parse_long("+5"), Some(5));
        assert_eq!(parse_long("-3"), Some(-3));
        assert_eq!(parse_long("007"), Some(7));
        for bad in ["", "+", "1.0", "1e3", " 1", "99999999999999999999"] {
            assert_eq!(parse_long(bad), None, "{bad}");
        }
    }

    #[test]
    fn floats_print_as_encode_f() {
        let show = |v: f64| ResourceValue::Float(v).to_string();
        assert_eq!(show(1.5), "1.5");
        assert_eq!(show(2.0), "2");
        assert_eq!(show(0.25), "0.25");
        assert_eq!(show(0.1), "0.1");
        assert_eq!(show(1.23456), "1.2346");
        assert_eq!(show(-1.75), "-1.75");
        assert_eq!(show(-3.1001191414247486), "-3.1");
        assert_eq!(show(368885303770.46796), "368885303770.468");
        assert!(parse_float("nan").is_none());
        assert!(parse_float("inf").is_none());
        assert!(parse_float("0x10").is_none());
        assert_eq!(parse_float("1e3"), Some(1000.0));
    }

    #[test]
    fn quoting_keeps_commas_and_blanks() {
        let list = l("software=\"a,b c\",arch=x");
        assert_eq!(list.get("software").unwrap().as_str(), Some("a,b c"));
        assert_eq!(list.to_string(), "software=\"a,b c\",arch=x");
        let list = l("software=a'b,c'd");
        assert_eq!(list.get("software").unwrap().as_str(), Some("ab,cd"));
        let list = l("software='say \"hi\"'");
        assert_eq!(list.get("software").unwrap().as_str(), Some("say \"hi\""));
        assert_eq!(list.to_string(), "software='say \"hi\"'");
        assert_eq!(l(" ncpus=1 mem=1gb").len(), 2);
    }

    #[test]
    fn preempt_targets_takes_the_rest() {
        let list = l("ncpus=1,preempt_targets=queue=a,queue=b");
        assert_eq!(
            list.get("preempt_targets").unwrap().as_str(),
            Some("queue=a,queue=b")
        );
        let mut list = l("preempt_targets=none");
        list.merge(l("ncpus=2"));
        assert_eq!(list.to_string(), "ncpus=2,preempt_targets=none");
        let back = ResourceList::parse_l(&list.to_string()).unwrap();
        assert_eq!(back.to_string(), list.to_string());
        assert_eq!(back.get("preempt_targets"), list.get("preempt_targets"));
    }

    #[test]
    fn merge_replaces_in_place_and_appends() {
        let mut list = l("ncpus=1,mem=1gb");
        list.merge(l("walltime=10:00,NCPUS=8"));
        assert_eq!(list.to_string(), "ncpus=8,mem=1gb,walltime=00:10:00");
        let repeated = l("ncpus=1,ncpus=2");
        assert_eq!(repeated.to_string(), "ncpus=2");
        assert_eq!(list.remove("mem").unwrap().to_string(), "1gb");
        assert_eq!(list.len(), 2);
    }

    #[test]
    fn select_and_place_from_job_wide_resources() {
        let defs = ResourceDefs::builtin();
        let no_hosts = |_: &str| false;
        let (s, p) = l("ncpus=4,mem=1gb,walltime=1:00:00")
            .select_and_place(&defs, &no_hosts)
            .unwrap();
        assert_eq!(
            (s.to_string().as_str(), p.to_string().as_str()),
            ("1:ncpus=4:mem=1gb", "pack")
        );
        let (s, p) = ResourceList::new()
            .select_and_place(&defs, &no_hosts)
            .unwrap();
        // A real `qstat -f` of a job submitted with no resources shows `1:ncpus=1`
        // (tests/formats.rs, REAL_QSTAT_FX).
        assert_eq!(
            (s.to_string().as_str(), p.to_string().as_str()),
            ("1:ncpus=1", "pack")
        );
        let (s, p) = l("walltime=10,place=scatter")
            .select_and_place(&defs, &no_hosts)
            .unwrap();
        assert_eq!(
            (s.to_string().as_str(), p.to_string().as_str()),
            ("1", "scatter")
        );
        let (s, _) = l("select=2:ncpus=2")
            .select_and_place(&defs, &no_hosts)
            .unwrap();
        assert_eq!(s.to_string(), "2:ncpus=2");
        let (s, p) = l("nodes=2:ppn=4")
            .select_and_place(&defs, &no_hosts)
            .unwrap();
        assert_eq!(
            (s.to_string().as_str(), p.to_string().as_str()),
            ("2:ncpus=4:mpiprocs=4", "scatter")
        );
    }

    #[test]
    fn serde_is_a_map_of_strings() {
        let list = l("select=2:ncpus=1,walltime=10:00,ncpus=2");
        let json = serde_json::to_string(&list).unwrap();
        assert_eq!(
            json,
            r#"{"select":"2:ncpus=1","walltime":"00:10:00","ncpus":"2"}"#
        );
        let back: ResourceList = serde_json::from_str(&json).unwrap();
        assert_eq!(back, list);
        let from_number: ResourceList = serde_json::from_str(r#"{"ncpus":4}"#).unwrap();
        assert_eq!(from_number.get("ncpus"), Some(&ResourceValue::Long(4)));
    }
}

//! The `place` statement: `-l place=scatter:excl`, `place=free:shared:group=switch`.
//!
//! Words joined by `:`, each at most once per kind: an arrangement (`free`, `pack`, `scatter`,
//! `vscatter`), a sharing (`excl`, `shared`, `exclhost`) and `group=<resource>`, where the
//! resource must be a string resource. The server matches the words ignoring case; the
//! scheduler compares them exactly in lowercase, so hpcbox accepts any case and always prints
//! lowercase. Without an arrangement the scheduler places freely.
//!
//! Sources (OpenPBS): `src/server/resc_attr.c` (`decode_place`, `place_words`),
//! `src/scheduler/node_info.cpp` (`parse_placespec`: default `free`, `exclhost` implies
//! `excl`), `src/include/pbs_internal.h` (the words). PBS lets `group=` repeat; hpcbox
//! refuses a second one, as it refuses any repeated kind.
//!
//! ```
//! use hpcbox_pbs::place::{Arrangement, Place, Sharing};
//! let p: Place = "Scatter:EXCL".parse().unwrap();
//! assert_eq!(p.arrangement, Some(Arrangement::Scatter));
//! assert_eq!(p.sharing, Some(Sharing::Excl));
//! assert_eq!(p.to_string(), "scatter:excl");
//! assert!("pack:scatter".parse::<Place>().is_err());
//! ```

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::resource::ResourceDefs;
use crate::ParseError;

/// How chunks are spread over hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Arrangement {
    /// Anywhere, as resources allow (the default).
    Free,
    /// All chunks on one host.
    Pack,
    /// Each chunk on its own host.
    Scatter,
    /// Each chunk on its own vnode.
    VScatter,
}

/// Whether the job shares what it runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Sharing {
    /// The job's vnodes are its own.
    Excl,
    /// The job shares vnodes with others.
    Shared,
    /// Whole hosts are the job's own (implies `excl`).
    ExclHost,
}

impl Arrangement {
    fn word(self) -> &'static str {
        match self {
            Arrangement::Free => "free",
            Arrangement::Pack => "pack",
            Arrangement::Scatter => "scatter",
            Arrangement::VScatter => "vscatter",
        }
    }
}

impl Sharing {
    fn word(self) -> &'static str {
        match self {
            Sharing::Excl => "excl",
            Sharing::Shared => "shared",
            Sharing::ExclHost => "exclhost",
        }
    }

    /// Whether the job's vnodes are exclusive to it (`excl` or `exclhost`).
    pub fn is_exclusive(self) -> bool {
        matches!(self, Sharing::Excl | Sharing::ExclHost)
    }
}

/// A place statement. Every part is optional; an empty place means the scheduler's defaults
/// (free placement, sharing as the vnodes say).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Place {
    /// `free`, `pack`, `scatter` or `vscatter`, if given.
    pub arrangement: Option<Arrangement>,
    /// `excl`, `shared` or `exclhost`, if given.
    pub sharing: Option<Sharing>,
    /// The resource of `group=<resource>`, if given.
    pub group: Option<String>,
}

impl Place {
    /// `place=pack`, what the server gives a job that asked only job-wide resources.
    pub fn pack() -> Place {
        Place {
            arrangement: Some(Arrangement::Pack),
            ..Place::default()
        }
    }

    /// `place=scatter`, what the server gives a job converted from `nodes=`.
    pub fn scatter() -> Place {
        Place {
            arrangement: Some(Arrangement::Scatter),
            ..Place::default()
        }
    }

    /// The arrangement the scheduler uses: the one given, or [`Arrangement::Free`].
    pub fn effective_arrangement(&self) -> Arrangement {
        self.arrangement.unwrap_or(Arrangement::Free)
    }

    /// Parses a place statement; `group=` must name a string resource of `defs` or an
    /// undefined (custom) one.
    pub fn parse_with(s: &str, defs: &ResourceDefs) -> Result<Place, ParseError> {
        if s.is_empty() {
            return Err(ParseError::new(s, "a place statement cannot be empty"));
        }
        let mut place = Place::default();
        for word in s.split(':') {
            place.add_word(word, s, defs)?;
        }
        Ok(place)
    }

    fn add_word(&mut self, word: &str, spec: &str, defs: &ResourceDefs) -> Result<(), ParseError> {
        if word.is_empty() {
            return Err(ParseError::new(spec, "empty word in a place statement"));
        }
        let twice = || ParseError::new(word, "conflicts with an earlier word of the same kind");
        if let Some(resource) = group_resource(word) {
            check_group(resource, defs)?;
            if self.group.is_some() {
                return Err(twice());
            }
            self.group = Some(defs.canonical_name(resource));
            return Ok(());
        }
        let lower = word.to_ascii_lowercase();
        let arrangement = match lower.as_str() {
            "free" => Some(Arrangement::Free),
            "pack" => Some(Arrangement::Pack),
            "scatter" => Some(Arrangement::Scatter),
            "vscatter" => Some(Arrangement::VScatter),
            _ => None,
        };
        let sharing = match lower.as_str() {
            "excl" => Some(Sharing::Excl),
            "shared" => Some(Sharing::Shared),
            "exclhost" => Some(Sharing::ExclHost),
            _ => None,
        };
        match (arrangement, sharing) {
            (Some(_), _) if self.arrangement.is_some() => Err(twice()),
            (Some(a), _) => {
                self.arrangement = Some(a);
                Ok(())
            }
            (_, Some(_)) if self.sharing.is_some() => Err(twice()),
            (_, Some(s)) => {
                self.sharing = Some(s);
                Ok(())
            }
            (None, None) => Err(ParseError::new(
                word,
                "not a place word (free, pack, scatter, vscatter, excl, shared, exclhost, group=<resource>)",
            )),
        }
    }
}

/// The resource of a `group=<resource>` word, matching `group` in any case.
fn group_resource(word: &str) -> Option<&str> {
    let (key, value) = word.split_once('=')?;
    key.eq_ignore_ascii_case("group").then_some(value)
}

fn check_group(resource: &str, defs: &ResourceDefs) -> Result<(), ParseError> {
    let valid = !resource.is_empty()
        && resource
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !valid {
        return Err(ParseError::new(
            resource,
            "group= needs a resource name (letters, digits, `_`, `-`)",
        ));
    }
    match defs.get(resource) {
        Some(def) if !def.kind.is_string() => Err(ParseError::new(
            resource,
            format!("group={} needs a string resource", def.name),
        )),
        _ => Ok(()),
    }
}

impl fmt::Display for Place {
    /// Canonical form: arrangement, sharing, group, lowercase, joined by `:`. An empty place
    /// prints `free`, which is what it means.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut words: Vec<String> = Vec::new();
        words.extend(self.arrangement.map(|a| a.word().to_string()));
        words.extend(self.sharing.map(|s| s.word().to_string()));
        words.extend(self.group.as_ref().map(|g| format!("group={g}")));
        if words.is_empty() {
            words.push(Arrangement::Free.word().to_string());
        }
        f.write_str(&words.join(":"))
    }
}

impl FromStr for Place {
    type Err = ParseError;

    /// Parses with the built-in resource table; see [`Place::parse_with`].
    fn from_str(s: &str) -> Result<Place, ParseError> {
        Place::parse_with(s, &ResourceDefs::builtin())
    }
}

impl TryFrom<String> for Place {
    type Error = ParseError;

    fn try_from(s: String) -> Result<Place, ParseError> {
        s.parse()
    }
}

impl From<Place> for String {
    fn from(p: Place) -> String {
        p.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn place(s: &str) -> Place {
        s.parse().unwrap()
    }

    #[test]
    fn parses_every_word() {
        assert_eq!(place("pack"), Place::pack());
        assert_eq!(place("scatter"), Place::scatter());
        let p = place("free:shared:group=switch");
        assert_eq!(p.arrangement, Some(Arrangement::Free));
        assert_eq!(p.sharing, Some(Sharing::Shared));
        assert_eq!(p.group.as_deref(), Some("switch"));
        assert_eq!(place("vscatter:exclhost").sharing, Some(Sharing::ExclHost));
        assert!(place("exclhost").sharing.unwrap().is_exclusive());
        assert_eq!(place("excl").effective_arrangement(), Arrangement::Free);
        assert_eq!(place("group=HOST").group.as_deref(), Some("host"));
    }

    #[test]
    fn prints_canonically() {
        assert_eq!(place("excl:scatter").to_string(), "scatter:excl");
        assert_eq!(
            place("group=switch:EXCL:Pack").to_string(),
            "pack:excl:group=switch"
        );
        assert_eq!(Place::default().to_string(), "free");
    }

    #[test]
    fn refuses_conflicts_and_unknown_words() {
        for bad in [
            "",
            "pack:scatter",
            "excl:shared",
            "excl:exclhost",
            "group=a:group=b",
            "scatter:",
            ":pack",
            "spread",
            "group=",
            "group=a.b",
            "group=ncpus",
            "group=mem",
            " pack",
            "packs",
            "pac",
        ] {
            assert!(bad.parse::<Place>().is_err(), "{bad:?} should be refused");
        }
        let e = "scatter:pack".parse::<Place>().unwrap_err();
        assert_eq!(e.token, "pack");
        let e = "group=ncpus".parse::<Place>().unwrap_err();
        assert_eq!(e.reason, "group=ncpus needs a string resource");
    }

    #[test]
    fn serde_uses_the_string_form() {
        let p = place("scatter:excl");
        assert_eq!(serde_json::to_string(&p).unwrap(), "\"scatter:excl\"");
        assert_eq!(
            serde_json::from_str::<Place>("\"scatter:excl\"").unwrap(),
            p
        );
    }
}

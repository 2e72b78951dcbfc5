//! Properties and golden forms of the PBS resource language: sizes, times, resource lists,
//! select, place and old-style nodes specs.

use std::str::FromStr;

use hpcbox_pbs::duration::Duration;
use hpcbox_pbs::nodes::{self, NodeSpec};
use hpcbox_pbs::place::{Arrangement, Place, Sharing};
use hpcbox_pbs::resource::{ResourceDefs, ResourceList, ResourceValue};
use hpcbox_pbs::select::{Chunk, Select};
use hpcbox_pbs::size::{Size, SizeUnit};
use proptest::prelude::*;

// ---------------------------------------------------------------- strategies

fn size() -> impl Strategy<Value = Size> {
    let unit = prop_oneof![Just(SizeUnit::Bytes), Just(SizeUnit::Words)];
    (0u8..=5, unit, any::<u64>()).prop_filter_map("fits in 64 bits", |(step, unit, raw)| {
        let shift = step * 10;
        // Keep the number small enough to fit most of the time.
        let num = raw >> (u32::from(shift) + 3);
        Size::new(num, shift, unit)
    })
}

fn duration() -> impl Strategy<Value = Duration> {
    prop_oneof![0u64..400_000, 0..=Duration::MAX.as_secs()].prop_map(Duration::from_secs)
}

fn arrangement() -> impl Strategy<Value = Arrangement> {
    prop_oneof![
        Just(Arrangement::Free),
        Just(Arrangement::Pack),
        Just(Arrangement::Scatter),
        Just(Arrangement::VScatter),
    ]
}

fn sharing() -> impl Strategy<Value = Sharing> {
    prop_oneof![
        Just(Sharing::Excl),
        Just(Sharing::Shared),
        Just(Sharing::ExclHost)
    ]
}

fn place() -> impl Strategy<Value = Place> {
    (
        proptest::option::of(arrangement()),
        proptest::option::of(sharing()),
        proptest::option::of("g[a-z0-9_-]{0,6}"),
    )
        .prop_filter("not empty", |(a, s, g)| {
            a.is_some() || s.is_some() || g.is_some()
        })
        .prop_map(|(arrangement, sharing, group)| Place {
            arrangement,
            sharing,
            group,
        })
}

/// A string value: printable ASCII, not empty, never both kinds of quote. With `plain`, no
/// quote at all and no `&` (so that it also goes through `-l`).
fn str_value(plain: bool) -> impl Strategy<Value = String> {
    let pattern = if plain {
        "[ -!#-%(-~]{1,12}"
    } else {
        "[ -~]{1,12}"
    };
    pattern.prop_filter("both quotes cannot be written", |s: &String| {
        !(s.contains('"') && s.contains('\''))
    })
}

fn chunk(plain: bool) -> impl Strategy<Value = Chunk> {
    (
        proptest::option::of(0u32..100),
        proptest::option::of(0i64..128),
        proptest::option::of(size()),
        proptest::option::of(1i64..64),
        proptest::option::of(str_value(plain)),
        proptest::option::of(any::<bool>()),
        proptest::option::of(str_value(plain)),
    )
        .prop_filter_map(
            "a chunk without count needs a resource",
            |(count, ncpus, mem, mpiprocs, host, accel, custom)| {
                let mut c = match count {
                    Some(n) => Chunk::new(n),
                    None => Chunk::implicit(),
                };
                let pairs = [
                    ("ncpus", ncpus.map(ResourceValue::Long)),
                    ("mem", mem.map(ResourceValue::Size)),
                    ("mpiprocs", mpiprocs.map(ResourceValue::Long)),
                    ("host", host.map(ResourceValue::Str)),
                    ("accelerator", accel.map(ResourceValue::Bool)),
                    ("site_res", custom.map(ResourceValue::Str)),
                ];
                for (name, value) in pairs {
                    if let Some(v) = value {
                        c = c.with(name, v).ok()?;
                    }
                }
                (count.is_some() || c.resources().next().is_some()).then_some(c)
            },
        )
}

fn select(plain: bool) -> impl Strategy<Value = Select> {
    proptest::collection::vec(chunk(plain), 1..4)
        .prop_filter_map("at least one chunk", |c| Select::new(c).ok())
}

fn node_prop() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9._-]{0,6}".prop_filter("not a placement word", |s: &String| {
            s != "excl" && s != "shared"
        }),
        (1u32..16).prop_map(|n| format!("ppn={n}")),
        (0u32..8).prop_map(|n| format!("cpp={n}")),
    ]
}

/// Node specs, built as text from valid pieces and parsed.
fn node_spec() -> impl Strategy<Value = NodeSpec> {
    let part = (
        proptest::option::of(1u32..50),
        proptest::collection::vec(node_prop(), 0..3),
    )
        .prop_filter_map(
            "a part needs a count or a property",
            |(count, props)| match (count, props.is_empty()) {
                (Some(n), true) => Some(n.to_string()),
                (Some(n), false) => Some(format!("{n}:{}", props.join(":"))),
                (None, false) => Some(props.join(":")),
                (None, true) => None,
            },
        );
    let global = prop_oneof![
        Just("excl".to_string()),
        Just("shared".to_string()),
        proptest::collection::vec(node_prop(), 1..3).prop_map(|p| p.join(":")),
    ];
    (
        proptest::collection::vec(part, 1..4),
        proptest::collection::vec(global, 0..3),
    )
        .prop_map(|(parts, globals)| {
            let mut text = parts.join("+");
            for g in globals {
                text.push('#');
                text.push_str(&g);
            }
            nodes::parse(&text).expect("built from valid pieces")
        })
}

fn resource_list() -> impl Strategy<Value = ResourceList> {
    (
        proptest::option::of(any::<i64>()),
        proptest::option::of(size()),
        proptest::option::of(duration()),
        proptest::option::of(any::<bool>()),
        proptest::option::of(str_value(true)),
        proptest::option::of(select(true)),
        proptest::option::of(place()),
        proptest::option::of(node_spec()),
        proptest::option::of((-400i32..400).prop_map(|k| f64::from(k) / 4.0)),
        proptest::option::of(str_value(true)),
        proptest::option::of("[a-z=,]{1,10}"),
    )
        .prop_map(
            |(ncpus, mem, walltime, accel, arch, sel, plc, nds, energy, custom, pt)| {
                let mut list = ResourceList::new();
                let entries = [
                    ("ncpus", ncpus.map(ResourceValue::Long)),
                    ("mem", mem.map(ResourceValue::Size)),
                    ("walltime", walltime.map(ResourceValue::Time)),
                    ("accelerator", accel.map(ResourceValue::Bool)),
                    ("arch", arch.map(ResourceValue::Str)),
                    ("select", sel.map(ResourceValue::Select)),
                    ("place", plc.map(ResourceValue::Place)),
                    ("nodes", nds.map(ResourceValue::Nodes)),
                    ("energy", energy.map(ResourceValue::Float)),
                    ("my_res", custom.map(ResourceValue::Str)),
                    ("preempt_targets", pt.map(ResourceValue::Str)),
                ];
                for (name, value) in entries {
                    if let Some(v) = value {
                        list.set(name, v);
                    }
                }
                list
            },
        )
}

/// Strings from the characters the resource language is made of.
fn token_soup() -> impl Strategy<Value = String> {
    "[0-9a-zA-Z:+=.,#'\" _-]{0,40}"
}

// ---------------------------------------------------------------- round trips

/// `cases` cases, and no regression files written next to the tests.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn size_round_trips(s in size()) {
        let back = Size::from_str(&s.to_string()).unwrap();
        prop_assert_eq!(back, s);
        prop_assert_eq!((back.num(), back.shift(), back.unit()), (s.num(), s.shift(), s.unit()));
        prop_assert_eq!(back.to_string(), s.to_string());
    }

    #[test]
    fn duration_round_trips(d in duration()) {
        prop_assert_eq!(Duration::from_str(&d.to_string()).unwrap(), d);
        prop_assert_eq!(Duration::from_str(&d.as_secs().to_string()).unwrap(), d);
    }

    #[test]
    fn place_round_trips(p in place()) {
        prop_assert_eq!(Place::from_str(&p.to_string()).unwrap(), p);
    }

    #[test]
    fn select_round_trips(s in select(false)) {
        let text = s.to_string();
        prop_assert_eq!(Select::from_str(&text).unwrap(), s, "{}", text);
    }

    #[test]
    fn nodes_round_trip(n in node_spec()) {
        prop_assert_eq!(nodes::parse(&n.to_string()).unwrap(), n);
    }

    #[test]
    fn resource_list_round_trips(l in resource_list()) {
        let text = l.to_string();
        let back = ResourceList::parse_l(&text);
        prop_assert!(back.is_ok(), "{} -> {:?}", text, back);
        prop_assert_eq!(back.unwrap(), l, "{}", text);
    }

    #[test]
    fn float_text_is_a_fixpoint(v in prop_oneof![-1.0e6f64..1.0e6, -10.0f64..10.0, any::<f64>().prop_filter("finite", |v| v.is_finite())]) {
        let once = ResourceValue::Float(v).to_string();
        let parsed = ResourceList::parse_l(&format!("energy={once}")).unwrap();
        prop_assert_eq!(parsed.get("energy").unwrap().to_string(), once);
    }
}

// ---------------------------------------------------------------- never panic

/// Every parser on `s`; what parses must print to text that parses back the same.
fn exercise(s: &str) {
    if let Ok(v) = Size::from_str(s) {
        assert_eq!(Size::from_str(&v.to_string()).unwrap(), v);
        let _ = (v.kilobytes(), v.checked_mul(3), v.checked_add(&v));
    }
    if let Ok(v) = Duration::from_str(s) {
        assert_eq!(Duration::from_str(&v.to_string()).unwrap(), v);
        let _ = v.to_hhmm();
    }
    if let Ok(v) = Select::from_str(s) {
        assert_eq!(Select::from_str(&v.to_string()).unwrap(), v, "{s}");
        let _ = (
            v.total("ncpus"),
            v.total("mem"),
            v.total_ncpus(),
            v.total_mpiprocs(),
        );
        let _ = v.with_defaults(&ResourceList::parse_l("ncpus=1,nchunk=2").unwrap());
    }
    if let Ok(v) = Place::from_str(s) {
        assert_eq!(Place::from_str(&v.to_string()).unwrap(), v, "{s}");
    }
    if let Ok(v) = nodes::parse(s) {
        assert_eq!(nodes::parse(&v.to_string()).unwrap(), v, "{s}");
        let some = |n: &str| n.contains(['o', '1']);
        let mem = Size::from_str("3gb").unwrap();
        let _ = v.to_select_place(&some, None, None);
        let _ = v.to_select_place(&some, Some(12), Some(&mem));
        let _ = v.to_select_place(&some, Some(0), Some(&mem));
        let _ = v.to_select_place(&some, Some(-4), None);
    }
    if let Ok(v) = ResourceList::parse_l(s) {
        let text = v.to_string();
        let back =
            ResourceList::parse_l(&text).unwrap_or_else(|e| panic!("{s:?} -> {text:?}: {e}"));
        assert_eq!(back.to_string(), text, "{s}");
        let _ = v.select_and_place(&ResourceDefs::builtin(), &|n: &str| n.starts_with('h'));
    }
}

proptest! {
    #![proptest_config(config(2048))]

    #[test]
    fn arbitrary_strings_never_panic(s in any::<String>()) {
        exercise(&s);
    }

    #[test]
    fn token_strings_never_panic(s in "[0-9a-z:+=.,#]{0,40}") {
        exercise(&s);
    }

    #[test]
    fn token_soup_never_panics(s in token_soup()) {
        exercise(&s);
        exercise(&format!("select={s}"));
        exercise(&format!("nodes={s}"));
        exercise(&format!("place={s}"));
    }
}

// ---------------------------------------------------------------- golden forms

/// Real `-l` arguments from PBS scripts and the PBS Professional documentation, each with its
/// canonical form.
#[test]
fn canonical_forms_of_real_requests() {
    let requests = [
        "select=1:ncpus=4:mem=16GB,walltime=02:00:00",
        "select=2:ncpus=8:mpiprocs=8:mem=32gb,walltime=48:00:00,place=scatter:excl",
        "select=4:ncpus=1:mem=1GB+2:ncpus=8",
        "select=1:ncpus=16:ngpus=2:mem=64gb:accelerator_model=a100",
        "select=3:ncpus=2:mpiprocs=2:ompthreads=1,place=pack:shared",
        "select=1:ncpus=1:host=node01+1:ncpus=1:host=node02,place=free:group=switch",
        "ncpus=4,mem=400mb,walltime=10:00",
        "walltime=3600,cput=1:30:00.6",
        "nodes=2:ppn=4,walltime=1:00:00",
        "nodes=node1+node2:ppn=2#excl",
        "place=Scatter:EXCL",
        "software=\"gaussian,vasp\",preempt_targets=queue=low,queue=lower",
    ];
    let mut out = String::new();
    for r in requests {
        let list = ResourceList::parse_l(r).unwrap();
        out.push_str(&format!("-l {r}\n   {list}\n"));
    }
    insta::assert_snapshot!("canonical_forms", out);
}

/// What PBS makes of old `nodes=` specs, with `node1`/`node2` being node names.
#[test]
fn nodes_conversions() {
    let is_host = |n: &str| ["node1", "node2"].contains(&n.to_ascii_lowercase().as_str());
    let cases: [(&str, Option<i64>, Option<&str>); 9] = [
        ("2", None, None),
        ("2:ppn=4", None, None),
        ("node1+node2:ppn=2", None, None),
        ("3:ppn=2:cpp=2", None, None),
        ("2:ib:bigmem", None, None),
        ("2:ppn=2#excl", Some(8), Some("16gb")),
        ("1+2:ppn=4#shared", None, Some("3gb")),
        ("4#ppn=2#ib", None, None),
        ("NODE1:ppn=4", None, None),
    ];
    let mut out = String::new();
    for (spec, ncpus, mem) in cases {
        let mem = mem.map(|m| Size::from_str(m).unwrap());
        let (select, place) = nodes::parse(spec)
            .unwrap()
            .to_select_place(&is_host, ncpus, mem.as_ref())
            .unwrap();
        let given: Vec<String> = [
            ncpus.map(|n| format!("ncpus={n}")),
            mem.map(|m| format!("mem={m}")),
        ]
        .into_iter()
        .flatten()
        .collect();
        let job_wide = if given.is_empty() {
            String::new()
        } else {
            format!(" (-l {})", given.join(","))
        };
        out.push_str(&format!(
            "nodes={spec}{job_wide}\n   select={select} place={place}\n"
        ));
    }
    insta::assert_snapshot!("nodes_conversions", out);
}

/// The errors a user sees for common mistakes.
#[test]
fn error_messages() {
    let bad = [
        "ncpus=abc",
        "mem=12XB",
        "walltime=1h",
        "select=2:ncpus=1+",
        "select=1:walltime=10:00",
        "select=1:ncpus=1:ncpus=2",
        "place=pack:scatter",
        "place=group=ncpus",
        "nodes=3:ppn=2:mem=1gb",
        "accelerator=yes",
        "ncpus=1,",
    ];
    let mut out = String::new();
    for b in bad {
        let e = ResourceList::parse_l(b).unwrap_err();
        out.push_str(&format!("-l {b}\n   {e}\n"));
    }
    insta::assert_snapshot!("error_messages", out);
}

#[test]
fn resource_list_as_json() {
    let list = ResourceList::parse_l(
        "select=2:ncpus=4:mem=2GB,place=scatter,walltime=1:00:00,accelerator=t,energy=2.5",
    )
    .unwrap();
    insta::assert_json_snapshot!("resource_list_json", list);
}

//! Submissions end to end: a script's directives, `qsub`'s command line, their merge, the
//! errors `qsub` prints, and round trips of the whole option model.

use hpcbox_pbs::array::ArrayRange;
use hpcbox_pbs::depend::{DependJob, DependKind, DependList, DependOn, Dependency};
use hpcbox_pbs::jobid::{ArrayPart, JobId};
use hpcbox_pbs::qsub::{
    parse_args, Checkpoint, ExecutionTime, Join, Keep, MailPoints, Operand, QsubOptions,
    RemoveFiles, ResourceRequest, Sandbox, Variable, VariableList, VariableValue,
};
use hpcbox_pbs::script::{directives, scan, DirectivePrefix};
use proptest::prelude::*;

/// The lesson's MPI job script, byte for byte.
const TESTMPI: &str = include_str!("fixtures/testmpi.pbs");

#[test]
fn testmpi_script_has_exactly_its_five_directives() {
    let found = directives(TESTMPI, &DirectivePrefix::default()).unwrap();
    let got: Vec<(usize, Vec<&str>)> = found
        .iter()
        .map(|d| (d.line, d.args.iter().map(String::as_str).collect()))
        .collect();
    assert_eq!(
        got,
        [
            (2, vec!["-P", "Training"]),
            (3, vec!["-N", "testmpi"]),
            (4, vec!["-l", "select=4:ncpus=1:mem=1GB"]),
            (5, vec!["-l", "walltime=00:10:00"]),
            (6, vec!["-q", "defaultQ"]),
        ]
    );
}

#[test]
fn testmpi_submission_options() {
    let args = parse_args(["testmpi.pbs"]).unwrap();
    let opts = args
        .finish(&scan(TESTMPI, &args.directive_prefix(None)))
        .unwrap();
    assert_eq!(opts.project.as_deref(), Some("Training"));
    assert_eq!(opts.name.as_deref(), Some("testmpi"));
    assert_eq!(opts.queue.as_deref(), Some("defaultQ"));
    assert_eq!(opts.resource("select"), Some("4:ncpus=1:mem=1GB"));
    assert_eq!(opts.resource("walltime"), Some("00:10:00"));
    let resources = opts.resource_list().unwrap();
    assert!(resources.select().is_some());
    assert!(resources.walltime().is_some());
    insta::assert_snapshot!("testmpi_args", opts.to_args().join(" "));
}

#[test]
fn testmpi_with_command_line_overrides() {
    let args = parse_args([
        "-N",
        "mine",
        "-l",
        "walltime=00:05:00",
        "-q",
        "short",
        "testmpi.pbs",
    ])
    .unwrap();
    let opts = args
        .finish(&scan(TESTMPI, &args.directive_prefix(None)))
        .unwrap();
    assert_eq!(opts.name.as_deref(), Some("mine"));
    assert_eq!(opts.queue.as_deref(), Some("short"));
    assert_eq!(opts.resource("walltime"), Some("00:05:00"));
    assert_eq!(opts.resource("select"), Some("4:ncpus=1:mem=1GB"));
    assert_eq!(opts.project.as_deref(), Some("Training"));
}

#[test]
fn testmpi_with_scanning_off_or_another_prefix() {
    for argv in [
        vec!["-C", "", "testmpi.pbs"],
        vec!["-C", "#MY", "testmpi.pbs"],
    ] {
        let args = parse_args(argv).unwrap();
        let opts = args
            .finish(&scan(TESTMPI, &args.directive_prefix(None)))
            .unwrap();
        assert_eq!(opts.name, None);
        assert!(opts.resources.is_empty());
    }
    // PBS_DPREFIX only counts without -C.
    let args = parse_args(["testmpi.pbs"]).unwrap();
    assert!(scan(TESTMPI, &args.directive_prefix(Some("#SBATCH")))
        .directives
        .is_empty());
}

#[test]
fn testmpi_with_windows_line_ends_is_refused() {
    let crlf = TESTMPI.replace('\n', "\r\n");
    let args = parse_args(["testmpi.pbs"]).unwrap();
    let err = args
        .finish(&scan(&crlf, &args.directive_prefix(None)))
        .unwrap_err();
    assert_eq!(err.to_string(), "qsub: script contains cr, lf\n");
    assert_eq!(err.exit_code(), 1);
}

/// Runs a whole submission and renders what qsub would print and exit with.
fn outcome(argv: &[&str], script: &str) -> String {
    let result = parse_args(argv.iter().copied()).and_then(|args| {
        args.finish(&scan(script, &args.directive_prefix(None)))
            .map(|o| o.to_args().join(" "))
    });
    match result {
        Ok(args) => format!("ok: {args}"),
        // The one NUL PBS prints (after "unmatched") is shown as \0.
        Err(e) => format!(
            "exit {}:\n{}",
            e.exit_code(),
            e.to_string().replace('\0', "\\0")
        ),
    }
}

#[test]
fn error_texts() {
    let cases: &[(&[&str], &str)] = &[
        (&["-x", "job.sh"], ""),
        (&["-N"], ""),
        (&["job.sh", "-N", "x"], ""),
        (&["-r", "maybe", "job.sh"], ""),
        (&["-l", "mem=1gb,", "job.sh"], ""),
        (&["-l", "software=a&b", "job.sh"], ""),
        (&["job.sh"], "#PBS -l walltime=1:00:00,\n"),
        (&["job.sh"], "#PBS -N ok\n#PBS -W depend\n"),
        (&["job.sh"], "#PBS -N \"open\n"),
        (&["job.sh"], "#!/bin/bash\r\n"),
        (&["-N", "bad name", "job.sh"], ""),
        (&["-N", &"n".repeat(231), "job.sh"], ""),
        (&["-q", "q@", "job.sh"], ""),
        (&["-l", "ncpus=many", "job.sh"], ""),
        (&["-m", "abj", "job.sh"], ""),
        (&["-W", "depend=afterok:12[3].srv", "job.sh"], ""),
        (&["-I", "-J", "1-10", "job.sh"], ""),
        (&["-v", "A='x", "job.sh"], ""),
    ];
    let rendered: Vec<String> = cases
        .iter()
        .map(|(argv, script)| {
            let shown: Vec<String> = argv
                .iter()
                .map(|a| {
                    if a.len() > 40 {
                        format!("<{} chars>", a.len())
                    } else {
                        a.to_string()
                    }
                })
                .collect();
            format!(
                "$ qsub {}  # script {:?}\n{}",
                shown.join(" "),
                script,
                outcome(argv, script)
            )
        })
        .collect();
    insta::assert_snapshot!("error_texts", rendered.join("\n----\n"));
}

// --- property tests ------------------------------------------------------------------------

fn arb_execution_time() -> impl Strategy<Value = ExecutionTime> {
    (
        0u8..24,
        0u8..60,
        proptest::option::of(0u8..60),
        0usize..5,
        (0u8..100, 0u8..100, 1u8..=12, 1u8..=31),
    )
        .prop_map(
            |(hour, minute, second, parts, (cc, yy, mm, dd))| ExecutionTime {
                century: (parts >= 4).then_some(cc),
                year: (parts >= 3).then_some(yy),
                month: (parts >= 2).then_some(mm),
                day: (parts >= 1).then_some(dd),
                hour,
                minute,
                second,
            },
        )
}

fn word() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_/.@:+-]{1,12}"
}

fn arb_resource() -> impl Strategy<Value = ResourceRequest> {
    prop_oneof![
        (1u32..64).prop_map(|n| ("ncpus", n.to_string())),
        (0u32..100, 0u32..60, 0u32..60)
            .prop_map(|(h, m, s)| ("walltime", format!("{h:02}:{m:02}:{s:02}"))),
        (1u32..512).prop_map(|n| ("mem", format!("{n}gb"))),
        (1u32..8, 1u32..16).prop_map(|(c, n)| ("select", format!("{c}:ncpus={n}"))),
        "[a-z]{1,6}(,[a-z]{1,6}){0,2}".prop_map(|s| ("software", s)),
        proptest::sample::select(vec!["scatter", "pack", "free", "scatter:excl"])
            .prop_map(|p| ("place", p.to_string())),
    ]
    .prop_map(|(name, value)| ResourceRequest {
        name: name.to_string(),
        value,
    })
}

fn arb_variables() -> impl Strategy<Value = VariableList> {
    proptest::collection::vec(
        (
            "[A-Z_][A-Z0-9_]{0,5}",
            proptest::option::of("[a-z0-9/.:, =-]{0,8}"),
        ),
        1..4,
    )
    .prop_map(|vars| {
        VariableList(
            vars.into_iter()
                .map(|(name, value)| Variable {
                    name,
                    value: value.map_or(VariableValue::Inherit, VariableValue::Given),
                })
                .collect(),
        )
    })
}

fn arb_depend() -> impl Strategy<Value = DependList> {
    let job = (
        1u64..100_000,
        any::<bool>(),
        proptest::option::of("[a-z]{1,6}"),
    )
        .prop_map(|(seq, whole, server)| DependJob {
            id: JobId {
                seq,
                array: if whole {
                    ArrayPart::Whole
                } else {
                    ArrayPart::NotArray
                },
                server: server.clone(),
            },
            server,
        });
    let item = (
        proptest::sample::select(DependKind::ALL.to_vec()),
        proptest::collection::vec(job, 1..3),
        1u32..10,
    )
        .prop_map(|(kind, jobs, n)| Dependency {
            kind,
            on: if kind.takes_count() {
                DependOn::Count(n)
            } else {
                DependOn::Jobs(jobs)
            },
        });
    proptest::collection::vec(item, 1..3).prop_map(DependList)
}

/// One of `choices` parsed as a `T`, or nothing.
fn letters<T>(choices: &'static [&'static str]) -> impl Strategy<Value = Option<T>>
where
    T: std::str::FromStr + std::fmt::Debug,
{
    proptest::option::of(proptest::sample::select(choices))
        .prop_map(|s| s.and_then(|s| s.parse().ok()))
}

prop_compose! {
    fn arb_options()(
        (execution_time, texts, checkpoint, directive_prefix, flags, join) in (
            proptest::option::of(arb_execution_time()),
            proptest::collection::vec(proptest::option::of(word()), 11),
            letters::<Checkpoint>(&["n", "s", "c", "w", "c=15", "w=60"]),
            proptest::option::of("#[A-Z]{0,4}"),
            proptest::collection::vec(any::<bool>(), 7),
            letters::<Join>(&["oe", "eo", "n"]),
        ),
        (array, keep, resources, mail_points, name, priority, queue) in (
            proptest::option::of((0u32..100, 1u32..100, 1u32..5, proptest::option::of(1u32..10))),
            letters::<Keep>(&["o", "e", "oe", "n", "od", "nd", "oed"]),
            proptest::collection::vec(arb_resource(), 0..4),
            letters::<MailPoints>(&["n", "a", "abe", "be", "abej", "ej"]),
            proptest::option::of("[A-Za-z0-9][A-Za-z0-9_.+-]{0,20}"),
            proptest::option::of(-1024i32..=1023),
            proptest::option::of("([a-z][a-zA-Z0-9_]{0,9})?(@[a-z][a-z0-9.]{0,8})?"),
        ),
        (rerunnable, remove_files, variables, depend, sandbox, max_run, attributes) in (
            proptest::option::of(any::<bool>()),
            letters::<RemoveFiles>(&["o", "e", "oe"]),
            proptest::option::of(arb_variables()),
            proptest::option::of(arb_depend()),
            proptest::option::of(proptest::sample::select(vec![Sandbox::Home, Sandbox::OWorkdir, Sandbox::Private])),
            proptest::option::of(1u32..20),
            proptest::collection::vec(
                (proptest::sample::select(vec!["umask", "run_count", "cred", "release_nodes_on_stageout"]), "[0-9a-z]{1,5}"),
                0..3,
            ),
        ),
    ) -> QsubOptions {
        let [account, error_path, mail_users, output_path, project, shell, user_list, stagein, stageout, group_list, _spare] =
            <[Option<String>; 11]>::try_from(texts).unwrap_or_default();
        let [foreground, hold, interactive, export_all, block, x11, quiet] =
            <[bool; 7]>::try_from(flags).unwrap_or_default();
        let array = if interactive {
            None
        } else {
            array.and_then(|(start, len, step, max)| {
                let mut r = ArrayRange::new(start, start + len, step).ok()?;
                r.max_running = max;
                Some(r)
            })
        };
        let max_run_subjobs = if array.is_some_and(|a| a.max_running.is_some()) { None } else { max_run };
        let mail_points = mail_points.filter(|m| array.is_some() || !m.subjobs);
        let rerunnable = rerunnable.filter(|r| *r || array.is_none());
        let queue = queue.filter(|q| !q.is_empty());
        QsubOptions {
            execution_time,
            account,
            checkpoint,
            directive_prefix,
            error_path,
            foreground,
            hold,
            interactive,
            join,
            array,
            keep,
            resources,
            mail_points,
            mail_users,
            name,
            output_path,
            priority,
            project,
            queue,
            rerunnable,
            remove_files,
            shell,
            user_list,
            variables,
            export_all,
            depend,
            stagein,
            stageout,
            sandbox,
            group_list,
            block: block && !interactive,
            max_run_subjobs,
            attributes: attributes.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            x11: x11 && interactive,
            quiet,
        }
    }
}

fn arb_operand() -> impl Strategy<Value = Operand> {
    prop_oneof![
        Just(Operand::None),
        Just(Operand::Stdin),
        "[a-z]{1,8}\\.pbs".prop_map(Operand::Script),
        (
            "/bin/[a-z]{1,6}",
            proptest::collection::vec("[a-z0-9-]{1,4}", 0..3)
        )
            .prop_map(|(program, args)| Operand::Command { program, args }),
    ]
}

/// Strings that look like qsub arguments: options, clusters, values, `--`, operands.
fn argv_like() -> impl Strategy<Value = Vec<String>> {
    proptest::collection::vec(
        prop_oneof![
            "-[a-zA-Z]{1,3}",
            "-[lWvJaNqkmp][ -~]{0,12}",
            Just("--".to_string()),
            Just("-".to_string()),
            "[ -~]{0,16}",
            "\\PC{0,8}",
        ],
        0..8,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn options_to_args_parse_back(opts in arb_options(), operand in arb_operand()) {
        let mut argv = opts.to_args();
        match &operand {
            Operand::None => {}
            Operand::Stdin => argv.push("-".into()),
            Operand::Script(s) => argv.push(s.clone()),
            Operand::Command { program, args } => {
                argv.push("--".into());
                argv.push(program.clone());
                argv.extend(args.iter().cloned());
            }
        }
        let parsed = parse_args(argv.clone());
        prop_assert!(parsed.is_ok(), "{:?} -> {}", argv, parsed.unwrap_err());
        let parsed = parsed.unwrap();
        prop_assert_eq!(&parsed.options, &opts, "argv {:?}", argv);
        prop_assert_eq!(&parsed.operand, &operand);
        prop_assert_eq!(parsed.to_args(), argv);
    }

    #[test]
    fn options_survive_json(opts in arb_options()) {
        let json = serde_json::to_string(&opts).unwrap();
        prop_assert_eq!(serde_json::from_str::<QsubOptions>(&json).unwrap(), opts);
    }

    #[test]
    fn options_as_directives_read_back(opts in arb_options()) {
        // The same options written as one directive per option give the same options.
        let args = opts.to_args();
        let mut script = String::from("#!/bin/sh\n");
        let mut i = 0;
        while i < args.len() {
            let takes_value = !matches!(args[i].as_str(), "-f" | "-h" | "-I" | "-V" | "-X" | "-z");
            let mut line = String::from("#PBS");
            let count = if takes_value { 2 } else { 1 };
            for a in &args[i..(i + count).min(args.len())] {
                line.push_str(" '");
                line.push_str(a);
                line.push('\'');
            }
            script.push_str(&line);
            script.push('\n');
            i += count;
        }
        prop_assume!(!args.iter().any(|a| a.contains('\'')));
        let found = directives(&script, &DirectivePrefix::default()).unwrap();
        let from_script = QsubOptions::from_directives(&found);
        // Library checks (names, resource kinds) may refuse some values; when they pass, the
        // options are the same.
        if let Ok(got) = from_script {
            // Reading directives, a resource already named is not named again.
            let mut want = opts.clone();
            want.resources.clear();
            for r in &opts.resources {
                if !want.resources.iter().any(|w| w.name == r.name) {
                    want.resources.push(r.clone());
                }
            }
            prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn merge_agrees_with_reading_in_order(cli in arb_options(), dirs in arb_options()) {
        let cli_args = parse_args(cli.to_args()).unwrap();
        let mut script = String::new();
        let dir_args = dirs.to_args();
        prop_assume!(!dir_args.iter().any(|a| a.contains('\'')));
        script.push_str("#PBS");
        for a in &dir_args {
            script.push_str(" '");
            script.push_str(a);
            script.push('\'');
        }
        script.push('\n');
        let s = scan(&script, &DirectivePrefix::default());
        let sequential = cli_args.finish(&s);
        let separate = QsubOptions::from_directives(&s.directives);
        if let (Ok(seq), Ok(d)) = (sequential, separate) {
            prop_assert_eq!(QsubOptions::merge(&d, &cli), seq);
        }
    }

    #[test]
    fn parse_args_never_panics(argv in argv_like()) {
        if let Ok(args) = parse_args(argv) {
            let _ = args.to_args();
            let _ = args.finish(&Default::default());
        }
    }

    #[test]
    fn scanning_and_finishing_never_panic(script in "(#PBS[ -~]{0,30}\\\\?\r?\n|[ :#a-z\"'\\\\]{0,10}\r?\n|\\PC{0,10}){0,8}") {
        let s = scan(&script, &DirectivePrefix::default());
        let _ = directives(&script, &DirectivePrefix::new("#"));
        if let Ok(args) = parse_args(["job.sh"]) {
            let _ = args.finish(&s);
        }
        let _ = QsubOptions::from_directives(&s.directives);
    }

    #[test]
    fn directives_never_panic_on_any_text(script in "\\PC{0,200}") {
        let _ = scan(&script, &DirectivePrefix::default());
    }

    #[test]
    fn depend_never_panics(text in "[ -~]{0,60}") {
        let _ = text.parse::<DependList>();
    }

    #[test]
    fn depend_display_parse(list in arb_depend()) {
        prop_assert_eq!(list.to_string().parse::<DependList>().unwrap(), list);
    }
}

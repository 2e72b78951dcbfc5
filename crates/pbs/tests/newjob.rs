//! A newly queued job's attributes, from the lesson's own script to `qstat -f` text.

use hpcbox_pbs::format::full::{self, FullOptions};
use hpcbox_pbs::jobid::JobId;
use hpcbox_pbs::newjob::{qualify_path, queued_job, Submission};
use hpcbox_pbs::qsub::parse_args;
use hpcbox_pbs::resource::ResourceDefs;
use hpcbox_pbs::script::scan;
use hpcbox_pbs::status::StatusObject;
use jiff::tz::TimeZone;

const TESTMPI: &str = include_str!("../../../examples/lesson/testmpi.pbs");
/// Wed Nov 25 21:40:05 2026 UTC.
const NOW: i64 = 1_795_642_805;

fn submit(argv: &[&str], script: &str, job_id: &str) -> StatusObject {
    let args = parse_args(argv.iter().copied()).unwrap();
    let options = args
        .finish(&scan(script, &args.directive_prefix(None)))
        .unwrap();
    let job_id: JobId = job_id.parse().unwrap();
    let variables = vec![
        ("PBS_O_HOME".to_string(), "/home/alice".to_string()),
        ("PBS_O_LOGNAME".to_string(), "alice".to_string()),
        ("PBS_O_PATH".to_string(), "/usr/bin:/bin".to_string()),
        (
            "PBS_O_WORKDIR".to_string(),
            "/home/alice/lesson".to_string(),
        ),
        ("PBS_O_SYSTEM".to_string(), "Linux".to_string()),
        ("PBS_O_HOST".to_string(), "laptop".to_string()),
    ];
    let queue = options.queue.clone().unwrap_or_else(|| "workq".into());
    let submission = Submission {
        options: &options,
        operand: &args.operand,
        job_id: &job_id,
        queue: &queue,
        owner: "alice",
        submit_host: "laptop",
        workdir: "/home/alice/lesson",
        variables: &variables,
        submit_arguments: &argv.join(" "),
        now: NOW,
        execution_time: None,
    };
    queued_job(&submission, &ResourceDefs::builtin(), &|_| false).unwrap()
}

#[test]
fn the_lessons_testmpi_job_as_qstat_f_shows_it() {
    let job = submit(&["testmpi.pbs"], TESTMPI, "1.hpcbox");
    assert_eq!(job.get("Job_Name"), Some("testmpi"));
    assert_eq!(job.get("queue"), Some("defaultQ"));
    assert_eq!(job.get("project"), Some("Training"));
    assert_eq!(job.get_resource("Resource_List", "ncpus"), Some("4"));
    assert_eq!(job.get_resource("Resource_List", "mem"), Some("4gb"));
    assert_eq!(job.get_resource("Resource_List", "nodect"), Some("4"));
    assert_eq!(job.get_resource("Resource_List", "place"), Some("free"));
    assert_eq!(
        job.get_resource("Resource_List", "select"),
        Some("4:ncpus=1:mem=1GB")
    );
    assert_eq!(
        job.get_resource("Resource_List", "walltime"),
        Some("00:10:00")
    );
    assert_eq!(
        job.get("Output_Path"),
        Some("laptop:/home/alice/lesson/testmpi.o1")
    );
    let text = full::render_jobs(
        std::slice::from_ref(&job),
        &TimeZone::UTC,
        FullOptions::default(),
    );
    let parsed = full::parse(&text).unwrap();
    let names = |job: &StatusObject| job.attrs.iter().map(|a| a.full_name()).collect::<Vec<_>>();
    assert_eq!(names(&parsed[0]), names(&job));
    assert_eq!(parsed[0].get("ctime"), Some("Wed Nov 25 21:40:05 2026"));
    insta::assert_snapshot!("testmpi_queued", text);
}

#[test]
fn defaults_for_a_bare_job() {
    let job = submit(&["-"], "sleep 1\n", "7.srv");
    assert_eq!(job.get("Job_Name"), Some("STDIN"));
    assert_eq!(job.get("job_state"), Some("Q"));
    assert_eq!(job.get("substate"), Some("10"));
    assert_eq!(job.get("Hold_Types"), Some("n"));
    assert_eq!(job.get("Join_Path"), Some("n"));
    assert_eq!(job.get("Rerunable"), Some("True"));
    assert_eq!(job.get("project"), Some("_pbs_project_default"));
    assert_eq!(
        job.get_resource("Resource_List", "select"),
        Some("1:ncpus=1")
    );
    assert_eq!(job.get_resource("Resource_List", "place"), Some("pack"));
    assert_eq!(job.get_resource("Resource_List", "ncpus"), Some("1"));
    let vars = job.get("Variable_List").unwrap();
    assert!(
        vars.ends_with("PBS_O_SYSTEM=Linux,PBS_O_QUEUE=workq,PBS_O_HOST=laptop"),
        "{vars}"
    );
}

#[test]
fn options_become_attributes() {
    let job = submit(
        &[
            "-h",
            "-N",
            "pi",
            "-j",
            "oe",
            "-o",
            "out/",
            "-J",
            "1-10:2",
            "-W",
            "depend=afterok:3",
            "-",
        ],
        "true\n",
        "8[].srv",
    );
    assert_eq!(job.get("job_state"), Some("H"));
    assert_eq!(job.get("Hold_Types"), Some("u"));
    assert_eq!(job.get("Join_Path"), Some("oe"));
    assert_eq!(
        job.get("Output_Path"),
        Some("laptop:/home/alice/lesson/out/")
    );
    assert_eq!(
        job.get("Error_Path"),
        Some("laptop:/home/alice/lesson/pi.e8.^array_index^")
    );
    assert_eq!(job.get("array_indices_submitted"), Some("1-10:2"));
    assert_eq!(
        job.get("array_state_count"),
        Some("Queued:5 Running:0 Exiting:0 Expired:0 ")
    );
    assert_eq!(job.get("depend"), Some("afterok:3.srv@srv"));
}

#[test]
fn old_style_nodes_are_converted() {
    let job = submit(&["-l", "nodes=2:ppn=4", "-"], "true\n", "9.srv");
    assert_eq!(job.get_resource("Resource_List", "nodes"), Some("2:ppn=4"));
    assert_eq!(job.get_resource("Resource_List", "ncpus"), Some("8"));
    assert_eq!(job.get_resource("Resource_List", "nodect"), Some("2"));
    assert_eq!(job.get_resource("Resource_List", "place"), Some("scatter"));
}

#[test]
fn paths_are_qualified_as_qsub_does() {
    assert_eq!(qualify_path("out.txt", "h", "/w"), "h:/w/out.txt");
    assert_eq!(qualify_path("/abs/x", "h", "/w"), "h:/abs/x");
    assert_eq!(qualify_path("other:/abs/x", "h", "/w"), "other:/abs/x");
    assert_eq!(qualify_path("a/b:c", "h", "/w"), "h:/w/a/b:c");
}

//! `qstat`: jobs, queues and the server, in PBS's own formats.

use hpcbox_cluster::api::{StatusItem, StatusRequest};
use hpcbox_pbs::errno;
use hpcbox_pbs::format::json::{self, Prologue};
use hpcbox_pbs::format::qstat::TableOptions;
use hpcbox_pbs::format::qstat_alt::{self, AltOptions};
use hpcbox_pbs::format::{full, qstat, queue, server};
use hpcbox_pbs::getopt::{getopt, Opt};
use hpcbox_pbs::status::StatusObject;
use jiff::tz::TimeZone;

/// What the default table shows, the only attributes it asks the server for.
const TABLE_ATTRIBUTES: [&str; 5] = [
    "Job_Name",
    "Job_Owner",
    "resources_used",
    "job_state",
    "queue",
];

/// `qstat`'s options (cmds/qstat.c).
const SPEC: &str = "1aeinpqrstu:wxBEF:GHJMQTW:f";

const USAGE: &str = "usage: \n\
qstat [-f] [-F json|dsv] [-D delim] [-w] [-E] [-J] [-p] [-t] [-x] [ job_identifier... | destination... ]\n\
qstat [-a|-i|-r|-H|-T] [-J] [-t] [-u user] [-n] [-s] [-G|-M] [-1] [-w] [ job_identifier... | destination... ]\n\
qstat -Q [-f] [-F json|dsv] [-D delim] [ destination... ]\n\
qstat -q [-G|-M] [ destination... ]\n\
qstat -B [-f] [-F json|dsv] [-D delim] [ server_name... ]\n\
qstat --version\n";

#[derive(Debug, Default)]
struct Options {
    full: bool,
    json: bool,
    wide: bool,
    history: bool,
    alternate: bool,
    nodes: bool,
    comments: bool,
    one_line: bool,
    user: Option<String>,
    queues: bool,
    server: bool,
    subjobs: bool,
    arrays_only: bool,
}

fn parse(args: &[String]) -> Result<(Options, Vec<String>), String> {
    let g = getopt("qstat", SPEC, args);
    let mut o = Options::default();
    for opt in g.opts {
        match opt {
            Opt::Invalid(message) => return Err(format!("{message}\n{USAGE}")),
            Opt::Flag('f', _) => o.full = true,
            Opt::Flag('F', Some(format)) if format.eq_ignore_ascii_case("json") => o.json = true,
            Opt::Flag('F', _) => return Err(format!("qstat: only -F json is supported\n{USAGE}")),
            Opt::Flag('w', _) => o.wide = true,
            Opt::Flag('x', _) | Opt::Flag('H', _) => o.history = true,
            Opt::Flag('n', _) => (o.alternate, o.nodes) = (true, true),
            Opt::Flag('s', _) => (o.alternate, o.comments) = (true, true),
            Opt::Flag('1', _) => o.one_line = true,
            Opt::Flag('u', user) => (o.alternate, o.user) = (true, user),
            Opt::Flag('a' | 'i' | 'r' | 'G' | 'M', _) => o.alternate = true,
            Opt::Flag('Q', _) => o.queues = true,
            Opt::Flag('B', _) => o.server = true,
            Opt::Flag('t', _) => o.subjobs = true,
            Opt::Flag('J', _) => o.arrays_only = true,
            Opt::Flag(_, _) => {}
        }
    }
    if o.json && !o.full {
        return Err(format!("qstat: -F json requires -f\n{USAGE}"));
    }
    Ok((o, g.operands))
}

/// Runs `qstat` with `args`; returns its exit status.
pub fn run(args: &[String]) -> i32 {
    if args.len() == 1 && args[0].eq_ignore_ascii_case("--version") {
        println!("pbs_version = {}", env!("CARGO_PKG_VERSION"));
        return 0;
    }
    let (options, ids) = match parse(args) {
        Ok(parsed) => parsed,
        Err(usage) => {
            eprint!("{usage}");
            return 2;
        }
    };
    let client = super::client();
    let server = match client.server() {
        Ok(server) => server,
        Err(err) => return super::unreachable("qstat", &err),
    };
    let tz = super::local_time_zone();
    if options.queues {
        return match client.queues() {
            Ok(queues) => {
                print!(
                    "{}",
                    render_objects(
                        &queues,
                        &options,
                        &server,
                        full::render_queues,
                        queue::render,
                        json::render_queues
                    )
                );
                0
            }
            Err(err) => super::unreachable("qstat", &err),
        };
    }
    if options.server {
        let servers = [server.clone()];
        print!(
            "{}",
            render_objects(
                &servers,
                &options,
                &server,
                full::render_servers,
                server::render,
                json::render_servers
            )
        );
        return 0;
    }
    let table_only = !(options.full || options.alternate || options.json);
    let request = StatusRequest {
        ids,
        history: options.history,
        subjobs: options.subjobs,
        attributes: if table_only {
            TABLE_ATTRIBUTES.iter().map(|a| a.to_string()).collect()
        } else {
            Vec::new()
        },
    };
    let items = match client.status(&request) {
        Ok(items) => items,
        Err(err) => return super::unreachable("qstat", &err),
    };
    let mut exit = 0;
    let mut jobs: Vec<StatusObject> = Vec::new();
    for item in items {
        match item {
            StatusItem::Job(job) => jobs.push(job),
            StatusItem::Error { id, error } => {
                eprint!("{}", errno::qstat_job_error_line(error.code, &id));
                exit = errno::exit_code(error.code);
            }
        }
    }
    if options.arrays_only {
        jobs.retain(|job| job.name.contains('['));
    }
    if let Some(user) = &options.user {
        jobs.retain(|job| {
            job.get("Job_Owner")
                .is_some_and(|owner| owner.split('@').next() == Some(user.as_str()))
        });
    }
    super::emit(&render_jobs(&jobs, &options, &server, &tz));
    exit
}

fn render_jobs(jobs: &[StatusObject], o: &Options, server: &StatusObject, tz: &TimeZone) -> String {
    if o.json {
        return json::render_jobs(jobs, tz, &prologue(server));
    }
    if o.full {
        return full::render_jobs(jobs, tz, full::FullOptions { wide: o.wide });
    }
    if o.alternate {
        let opts = AltOptions {
            wide: o.wide,
            nodes: o.nodes,
            comments: o.comments,
            one_line: o.one_line,
            ..AltOptions::default()
        };
        return qstat_alt::render(jobs, Some(server), opts);
    }
    qstat::render(
        jobs,
        Some(server),
        TableOptions {
            wide: o.wide,
            ..TableOptions::default()
        },
    )
}

fn prologue(server: &StatusObject) -> Prologue<'_> {
    Prologue {
        timestamp: jiff::Timestamp::now().as_second(),
        pbs_version: server
            .get("pbs_version")
            .unwrap_or(env!("CARGO_PKG_VERSION")),
        pbs_server: &server.name,
    }
}

fn render_objects(
    objects: &[StatusObject],
    o: &Options,
    server: &StatusObject,
    full_form: fn(&[StatusObject], full::FullOptions) -> String,
    table: fn(&[StatusObject], bool) -> String,
    json_form: fn(&[StatusObject], &Prologue<'_>) -> String,
) -> String {
    if o.json {
        json_form(objects, &prologue(server))
    } else if o.full {
        full_form(objects, full::FullOptions { wide: o.wide })
    } else {
        table(objects, true)
    }
}

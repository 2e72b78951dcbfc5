//! A new job's attributes, as a PBS server records them when it queues the job: `qsub`'s
//! options turned into `Job_Name`, `Resource_List.*`, `Output_Path` and the rest, with the
//! defaults PBS fills in (server/req_quejob.c, svr_jobfunc.c `set_resc_deflt`, `set_chunk_sum`).
//!
//! The result is a [`StatusObject`] in the server's attribute order, which every renderer of
//! [`crate::format`] takes as it is: `qstat -f` of a job just submitted.

use crate::depend::DependList;
use crate::jobenv::{default_output_path, Stream};
use crate::jobid::{ArrayPart, JobId};
use crate::qsub::{Operand, QsubOptions};
use crate::resource::{ResourceDefs, ResourceList, ResourceValue};
use crate::select::Select;
use crate::size::Size;
use crate::state::{substate, JobState};
use crate::status::{Attribute, StatusObject, JOB_ATTRIBUTE_ORDER};
use crate::ParseError;

/// The queue a job goes to when it names none: PBS's default queue.
pub const DEFAULT_QUEUE: &str = "workq";

/// The project a job gets when it names none.
pub const DEFAULT_PROJECT: &str = "_pbs_project_default";

/// What the server knows of a submission beyond the options themselves.
#[derive(Debug, Clone)]
pub struct Submission<'a> {
    /// The options, command line and directives merged.
    pub options: &'a QsubOptions,
    /// The script or command.
    pub operand: &'a Operand,
    /// The id the server gives the job.
    pub job_id: &'a JobId,
    /// The queue the job goes to (the one named, or the server's default).
    pub queue: &'a str,
    /// The submitting user.
    pub owner: &'a str,
    /// The submit host, as `Job_Owner` and the output paths name it.
    pub submit_host: &'a str,
    /// The submitter's working directory (`PBS_O_WORKDIR`), for relative `-o`/`-e` paths.
    pub workdir: &'a str,
    /// `Variable_List` as `qsub` sent it: `PBS_O_*` first, then `-v`/`-V` variables.
    pub variables: &'a [(String, String)],
    /// The command line as `Submit_arguments` records it.
    pub submit_arguments: &'a str,
    /// When the server received the job (seconds since the epoch).
    pub now: i64,
    /// `-a`: when the job may start (seconds since the epoch), already resolved by the caller.
    pub execution_time: Option<i64>,
}

/// The attributes of the newly queued job, in the server's order.
///
/// `defs` are the server's resource definitions; `is_host` tells which words of an old-style
/// `nodes=` spec name hosts.
pub fn queued_job(
    sub: &Submission<'_>,
    defs: &ResourceDefs,
    is_host: &dyn Fn(&str) -> bool,
) -> Result<StatusObject, ParseError> {
    let opts = sub.options;
    let name = opts
        .name
        .clone()
        .unwrap_or_else(|| sub.operand.default_job_name());
    let (state, sub_state) = initial_state(sub);
    let mut job = StatusObject::new(sub.job_id.to_string())
        .with("Job_Name", name.as_str())
        .with("Job_Owner", format!("{}@{}", sub.owner, sub.submit_host))
        .with("job_state", state.to_string())
        .with("queue", sub.queue)
        .with("server", sub.job_id.server.clone().unwrap_or_default())
        .with(
            "Checkpoint",
            opts.checkpoint.map_or("u".to_string(), |c| c.to_string()),
        )
        .with("ctime", sub.now.to_string())
        .with("Error_Path", stream_path(sub, &name, Stream::Error))
        .with("Hold_Types", if opts.hold { "u" } else { "n" })
        .with(
            "Join_Path",
            opts.join.map_or("n".to_string(), |j| j.to_string()),
        )
        .with(
            "Keep_Files",
            opts.keep.map_or("n".to_string(), |k| k.to_string()),
        )
        .with(
            "Mail_Points",
            opts.mail_points.map_or("a".to_string(), |m| m.to_string()),
        )
        .with("mtime", sub.now.to_string())
        .with("Output_Path", stream_path(sub, &name, Stream::Output))
        .with("Priority", opts.priority.unwrap_or(0).to_string())
        .with("qtime", sub.now.to_string())
        .with(
            "Rerunable",
            if opts.rerunnable.unwrap_or(true) {
                "True"
            } else {
                "False"
            },
        )
        .with("substate", sub_state.to_string())
        .with("Variable_List", variable_list(sub))
        .with("etime", sub.now.to_string())
        .with("Submit_arguments", sub.submit_arguments)
        .with(
            "project",
            opts.project
                .clone()
                .unwrap_or_else(|| DEFAULT_PROJECT.to_string()),
        )
        .with("Submit_Host", sub.submit_host);
    for (resource, value) in resource_list(opts, defs, is_host)? {
        job = job.with_resource("Resource_List", &resource, value);
    }
    add_optional(&mut job, sub)?;
    job.sort_attributes(JOB_ATTRIBUTE_ORDER);
    Ok(job)
}

fn initial_state(sub: &Submission<'_>) -> (JobState, u32) {
    if sub.options.hold {
        (JobState::Held, substate::HELD)
    } else if sub.execution_time.is_some_and(|at| at > sub.now) {
        (JobState::Waiting, substate::WAITING)
    } else {
        (JobState::Queued, substate::QUEUED)
    }
}

fn add_optional(job: &mut StatusObject, sub: &Submission<'_>) -> Result<(), ParseError> {
    let opts = sub.options;
    let mut add = |name: &str, value: Option<String>| {
        if let Some(value) = value {
            job.attrs.push(Attribute::new(name, value));
        }
    };
    add("Account_Name", opts.account.clone());
    add("Execution_Time", sub.execution_time.map(|t| t.to_string()));
    add("group_list", opts.group_list.clone());
    add("Mail_Users", opts.mail_users.clone());
    add("Shell_Path_List", opts.shell.clone());
    add("User_List", opts.user_list.clone());
    add("sandbox", opts.sandbox.map(|s| s.to_string()));
    add("stagein", opts.stagein.clone());
    add("stageout", opts.stageout.clone());
    add("interactive", opts.interactive.then(|| "True".to_string()));
    add(
        "depend",
        opts.depend.as_ref().map(|d| qualified_depend(d, sub)),
    );
    if let Some(range) = opts.array {
        let indices = format!("{}-{}{}", range.start, range.end, step_suffix(range.step));
        add("array", Some("True".to_string()));
        add("array_indices_submitted", Some(indices.clone()));
        add("array_indices_remaining", Some(indices));
        add(
            "array_state_count",
            Some(format!(
                "Queued:{} Running:0 Exiting:0 Expired:0 ",
                range.len()
            )),
        );
        add(
            "max_run_subjobs",
            opts.max_run_subjobs.map(|m| m.to_string()),
        );
    }
    if let Operand::Command { program, args } = sub.operand {
        add(
            "executable",
            Some(format!(
                "<jsdl-hpcpa:Executable>{program}</jsdl-hpcpa:Executable>"
            )),
        );
        if !args.is_empty() {
            let list: String = args
                .iter()
                .map(|a| format!("<jsdl-hpcpa:Argument>{a}</jsdl-hpcpa:Argument>"))
                .collect();
            add("argument_list", Some(list));
        }
    }
    for (name, value) in &opts.attributes {
        add(name, Some(value.clone()));
    }
    Ok(())
}

fn step_suffix(step: u32) -> String {
    if step == 1 {
        String::new()
    } else {
        format!(":{step}")
    }
}

fn qualified_depend(depend: &DependList, sub: &Submission<'_>) -> String {
    match &sub.job_id.server {
        Some(server) => depend.qualified(server).to_string(),
        None => depend.to_string(),
    }
}

/// `-o`/`-e` as `host:/absolute/path`, or PBS's default `<name>.o<seq>` in the working
/// directory. A path naming a directory (ending in `/`) is kept as given: the node agent puts
/// `<id>.OU`/`.ER` in it.
fn stream_path(sub: &Submission<'_>, name: &str, stream: Stream) -> String {
    let given = match stream {
        Stream::Output => sub.options.output_path.as_deref(),
        Stream::Error => sub.options.error_path.as_deref(),
    };
    match given {
        // An array job's paths end in `.^array_index^`, replaced in each subjob's.
        None if sub.job_id.array == ArrayPart::Whole => {
            let whole = JobId {
                array: ArrayPart::NotArray,
                ..sub.job_id.clone()
            };
            let path = default_output_path(sub.submit_host, sub.workdir, name, &whole, stream);
            format!("{path}.^array_index^")
        }
        None => default_output_path(sub.submit_host, sub.workdir, name, sub.job_id, stream),
        Some(path) => qualify_path(path, sub.submit_host, sub.workdir),
    }
}

/// `host:path` kept; a bare path gets the submit host, and the working directory when it is
/// relative, as `qsub` prepares it.
pub fn qualify_path(path: &str, host: &str, workdir: &str) -> String {
    if let Some((maybe_host, _)) = path.split_once(':') {
        if !maybe_host.contains('/') {
            return path.to_string();
        }
    }
    if path.starts_with('/') {
        format!("{host}:{path}")
    } else {
        format!("{host}:{}/{path}", workdir.trim_end_matches('/'))
    }
}

/// `Variable_List`: the submitted variables with `PBS_O_QUEUE` added after the `PBS_O_*` ones
/// and `PBS_O_HOST` added when missing, values' commas escaped, joined by commas.
fn variable_list(sub: &Submission<'_>) -> String {
    let mut vars: Vec<(String, String)> = sub.variables.to_vec();
    let insert_at = vars
        .iter()
        .position(|(name, _)| name == "PBS_O_HOST")
        .unwrap_or(vars.len());
    vars.insert(insert_at, ("PBS_O_QUEUE".into(), sub.queue.to_string()));
    if !vars.iter().any(|(name, _)| name == "PBS_O_HOST") {
        vars.push(("PBS_O_HOST".into(), sub.submit_host.to_string()));
    }
    crate::status::join_variable_list(&vars)
}

/// `Resource_List`: the requested resources, `select` and `place` as the server completes
/// them, and the job-wide sums of the consumables over the chunks, with `nodect`.
fn resource_list(
    opts: &QsubOptions,
    defs: &ResourceDefs,
    is_host: &dyn Fn(&str) -> bool,
) -> Result<Vec<(String, String)>, ParseError> {
    let requested = opts
        .resource_list_with(defs)
        .map_err(|err| ParseError::new(err.to_string().trim_end(), "refused resource list"))?;
    let (select, place) = requested.select_and_place(defs, is_host)?;
    let place = if place.to_string().is_empty() {
        "free".to_string()
    } else {
        place.to_string()
    };
    let mut list = ResourceList::new();
    for (name, value) in requested.iter() {
        if !matches!(name, "select" | "place" | "nodes") {
            list.set(name, value.clone());
        }
    }
    let schedselect = select.with_defaults(&ResourceList::new());
    for (name, total) in chunk_sums(&schedselect, defs) {
        list.set(&name, total);
    }
    list.set(
        "nodect",
        ResourceValue::Long(i64::try_from(select.total_chunks()).unwrap_or(i64::MAX)),
    );
    let mut out: Vec<(String, String)> = list
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect();
    // String-valued resources keep the text the user gave, as PBS stores them.
    let given = |name: &str| opts.resource(name).map(str::to_string);
    if let Some(nodes) = given("nodes") {
        out.push(("nodes".into(), nodes));
    }
    out.push(("place".into(), given("place").unwrap_or(place)));
    out.push((
        "select".into(),
        given("select").unwrap_or_else(|| select.to_string()),
    ));
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// The job-wide totals of every consumable the chunks name: count × value, summed.
fn chunk_sums(select: &Select, defs: &ResourceDefs) -> Vec<(String, ResourceValue)> {
    let mut sums: Vec<(String, ResourceValue)> = Vec::new();
    for chunk in select.chunks() {
        let count = chunk.count();
        for (name, value) in chunk.resources() {
            if !defs.get(name).is_some_and(|def| def.consumable) {
                continue;
            }
            let Some(scaled) = scale(value, count) else {
                continue;
            };
            match sums.iter_mut().find(|(n, _)| n == name) {
                Some((_, total)) => {
                    if let Some(sum) = add(total, &scaled) {
                        *total = sum;
                    }
                }
                None => sums.push((name.to_string(), scaled)),
            }
        }
    }
    sums
}

fn scale(value: &ResourceValue, count: u32) -> Option<ResourceValue> {
    Some(match value {
        ResourceValue::Long(n) => ResourceValue::Long(n.checked_mul(i64::from(count))?),
        ResourceValue::Float(x) => ResourceValue::Float(x * f64::from(count)),
        ResourceValue::Size(s) => ResourceValue::Size(s.checked_mul(u64::from(count))?),
        _ => return None,
    })
}

fn add(a: &ResourceValue, b: &ResourceValue) -> Option<ResourceValue> {
    Some(match (a, b) {
        (ResourceValue::Long(x), ResourceValue::Long(y)) => ResourceValue::Long(x.checked_add(*y)?),
        (ResourceValue::Float(x), ResourceValue::Float(y)) => ResourceValue::Float(x + y),
        (ResourceValue::Size(x), ResourceValue::Size(y)) => {
            ResourceValue::Size(Size::checked_add(x, y)?)
        }
        _ => return None,
    })
}

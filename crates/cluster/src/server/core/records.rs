//! A job's record from its submission, and the start message an agent gets for it.

use super::*;

/// What an agent needs to run the job (or subjob) whose attributes are `attrs`; the caller
/// adds the owner, the script and the pinned CPUs.
pub(super) fn job_start_message(
    attrs: &StatusObject,
    first: &hpcbox_sched::ChunkPlacement,
    nodefile: &str,
) -> JobStart {
    let get = |name: &str| attrs.get(name).map(str::to_string);
    let (output_path, error_path) = output_paths(attrs);
    let variables = attrs
        .get("Variable_List")
        .map(split_variable_list)
        .unwrap_or_default();
    let walltime = attrs
        .get_resource("Resource_List", "walltime")
        .and_then(|w| w.parse::<hpcbox_pbs::duration::Duration>().ok())
        .map(|d| d.as_secs());
    let mem_kb = attrs
        .get_resource("Resource_List", "mem")
        .and_then(|m| m.parse::<hpcbox_pbs::size::Size>().ok())
        .map(|s| s.kilobytes());
    JobStart {
        job_id: attrs.name.clone(),
        job_name: get("Job_Name").unwrap_or_default(),
        queue: get("queue").unwrap_or_default(),
        owner: String::new(),
        script: None,
        argv: Vec::new(),
        shell: get("Shell_Path_List"),
        variables,
        output_path,
        error_path,
        account: get("Account_Name"),
        threads: u32::try_from(first.resources.ncpus).unwrap_or(1).max(1),
        cpus: Vec::new(),
        nodefile: nodefile.to_string(),
        walltime_limit: walltime,
        mem_limit_kb: mem_kb,
        rerun: get("run_count").and_then(|n| n.parse::<u32>().ok()) > Some(1),
        interactive: None,
    }
}

/// Where a job's standard output and error go (`Output_Path`, `Error_Path`, `Join_Path`): the
/// error path is `None` when the two are joined.
pub(super) fn output_paths(attrs: &StatusObject) -> (String, Option<String>) {
    let get = |name: &str| attrs.get(name).map(str::to_string);
    match attrs.get("Join_Path").unwrap_or("n") {
        "oe" => (get("Output_Path").unwrap_or_default(), None),
        "eo" => (get("Error_Path").unwrap_or_default(), None),
        _ => (get("Output_Path").unwrap_or_default(), get("Error_Path")),
    }
}

/// The job record for a submission: PBS's attributes and the scheduler's view.
#[allow(clippy::too_many_arguments)]
pub(super) fn build_job(
    req: &SubmitRequest,
    job_id: &JobId,
    queue: &str,
    user: &str,
    uid: u32,
    now: i64,
    defs: &ResourceDefs,
    nodes: &BTreeMap<String, Node>,
) -> Answer<Job> {
    let is_host = |word: &str| nodes.contains_key(word);
    let argv: Vec<&str> = req.argv.iter().map(String::as_str).collect();
    let submit_arguments = hpcbox_pbs::format::full::encode_submit_arguments(&argv);
    let submission = Submission {
        options: &req.options,
        operand: &req.operand,
        job_id,
        queue,
        owner: user,
        submit_host: &req.submit_host,
        workdir: &req.workdir,
        variables: &req.variables,
        submit_arguments: &submit_arguments,
        now,
        execution_time: req.execution_time,
    };
    let bad_value = |e: hpcbox_pbs::ParseError| {
        ApiError::with_text(
            PbsErrno::BadAttributeValue.code(),
            format!("Illegal attribute or resource value {e}"),
        )
    };
    let attrs = queued_job(&submission, defs, &is_host).map_err(bad_value)?;
    let resources = req.options.resource_list_with(defs).map_err(|e| {
        ApiError::with_text(PbsErrno::BadAttributeValue.code(), e.to_string().trim_end())
    })?;
    let (select, place) = resources
        .select_and_place(defs, &is_host)
        .map_err(bad_value)?;
    let select = select.with_defaults(&hpcbox_pbs::resource::ResourceList::new());
    let mut spec = JobSpec::new(job_id.seq, convert::chunks(&select));
    spec.queue = queue.to_string();
    spec.owner = user.to_string();
    spec.project = attrs.get("project").unwrap_or_default().to_string();
    spec.place = convert::place(&place);
    spec.walltime = resources.walltime().map(|w| w.as_secs());
    spec.priority = req.options.priority.unwrap_or(0);
    spec.submit_time = now.max(0) as u64;
    // A job waiting for its `-a` time is held from the scheduler until then (state W).
    let waiting = req.execution_time.is_some_and(|at| at > now);
    spec.hold = req.options.hold || waiting;
    spec.array = req.options.array.map(|range| hpcbox_sched::ArraySpec {
        start: range.start,
        end: range.end,
        step: range.step,
        max_running: range.max_running.or(req.options.max_run_subjobs),
    });
    if let Some(depend) = &req.options.depend {
        spec.depend = convert::dependencies(depend);
    }
    let argv = match &req.operand {
        Operand::Command { program, args } => std::iter::once(program.clone())
            .chain(args.iter().cloned())
            .collect(),
        _ => Vec::new(),
    };
    Ok(Job {
        seq: job_id.seq,
        owner: user.to_string(),
        uid,
        attrs,
        script: req.script.clone(),
        argv,
        spec,
        run: None,
        finished: false,
        deleted_by: None,
        subjobs: BTreeMap::new(),
        changed: BTreeSet::new(),
        unfinished: BTreeSet::new(),
        request: Some(SubmitRequest {
            script: None,
            ..req.clone()
        }),
    })
}

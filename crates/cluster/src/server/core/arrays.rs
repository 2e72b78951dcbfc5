//! Job arrays: their subjobs' attributes and the array's own progress.

use super::*;

/// Attributes shared by every subjob of an array: the array's, under the subjob's id, with
/// `^array_index^` in the output paths replaced and the array-only attributes dropped.
pub(super) fn subjob_attrs(array: &StatusObject, index: u32) -> StatusObject {
    let id = match array.name.parse::<JobId>() {
        Ok(parent) => parent.subjob(index).to_string(),
        Err(_) => format!("{}[{index}]", array.name),
    };
    let mut attrs = StatusObject::new(id);
    for attr in &array.attrs {
        if matches!(
            attr.name.as_str(),
            "array"
                | "array_indices_submitted"
                | "array_indices_remaining"
                | "array_state_count"
                | "max_run_subjobs"
                | "comment"
        ) {
            continue;
        }
        let mut attr = attr.clone();
        attr.value = attr.value.replace("^array_index^", &index.to_string());
        attrs.attrs.push(attr);
    }
    set(&mut attrs, "array_index", index.to_string());
    set(&mut attrs, "array_id", array.name.clone());
    attrs
}

/// Where a started subjob stands, for the scheduler after a restart.
pub(super) fn restored_state(sub: &SubJob) -> SubjobState {
    match &sub.run {
        Some(run) if !sub.finished => SubjobState::Running {
            vnodes: exec_vnodes(sub.attrs.get("exec_vnode").unwrap_or_default()),
            at: run.started.max(0) as u64,
        },
        _ => SubjobState::Ended {
            ok: sub.attrs.get("Exit_status") == Some("0"),
        },
    }
}

/// Brings an array's own attributes up to date with its subjobs: `array_state_count`,
/// `array_indices_remaining`, its state (`B` once a subjob started, `F` when all are over)
/// and, at the end, its exit status (0 when every subjob exited 0, else 1).
pub(super) fn refresh_array(job: &mut Job, now: i64) {
    let Some(range) = job.spec.array else {
        return;
    };
    let total = range.len() as usize;
    let running = job.unfinished.len();
    let expired = job.subjobs.len() - running;
    let queued = total.saturating_sub(job.subjobs.len());
    set(
        &mut job.attrs,
        "array_state_count",
        format!("Queued:{queued} Running:{running} Exiting:0 Expired:{expired} "),
    );
    set(
        &mut job.attrs,
        "array_indices_remaining",
        remaining_ranges(range, job.subjobs.keys().copied()),
    );
    if job.finished {
        return;
    }
    if expired == total {
        let failed = job
            .subjobs
            .values()
            .any(|s| s.attrs.get("Exit_status") != Some("0"));
        set(
            &mut job.attrs,
            "Exit_status",
            if failed { "1" } else { "0" },
        );
        let sub = if failed {
            substate::FAILED
        } else {
            substate::FINISHED
        };
        end_job(job, sub, now);
    } else {
        set(&mut job.attrs, "job_state", "B");
        set(&mut job.attrs, "substate", substate::BEGUN.to_string());
    }
}

/// The indices of `range` not in `started` (sorted), as PBS writes `array_indices_remaining`:
/// runs `a-b` (`a-b:step`) and single indices, comma-separated, `-` when none. Walks the gaps
/// between started indices, so a large array costs its started subjobs, not its range.
pub(super) fn remaining_ranges(range: ArraySpec, started: impl Iterator<Item = u32>) -> String {
    if range.is_empty() {
        return "-".to_string();
    }
    let last = range.start + (range.len() - 1) * range.step;
    let mut parts = Vec::new();
    let mut next = Some(range.start);
    let mut push_run = |from: u32, to: u32| {
        parts.push(match (from == to, range.step) {
            (true, _) => from.to_string(),
            (false, 1) => format!("{from}-{to}"),
            (false, step) => format!("{from}-{to}:{step}"),
        });
    };
    for index in started.filter(|&i| range.contains(i)) {
        if let Some(from) = next.filter(|&from| from < index) {
            push_run(from, index - range.step);
        }
        next = index.checked_add(range.step).filter(|&n| n <= last);
    }
    if let Some(from) = next {
        push_run(from, last);
    }
    if parts.is_empty() {
        "-".to_string()
    } else {
        parts.join(",")
    }
}

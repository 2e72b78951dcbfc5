//! The comments a job carries into history (`qstat -x`): `Job run at …` when it starts
//! (`form_attr_comment` in `src/server/req_runjob.c`) and the ending the server appends when it
//! finishes (`update_job_finish_comment` in `src/server/svr_jobfunc.c`).

use jiff::tz::TimeZone;
use jiff::Timestamp;

use crate::exit::LimitKill;

/// The most characters a comment built by `form_attr_comment` holds (`COMMENT_BUF_SIZE` − 1).
pub const MAX_RUN_COMMENT: usize = 255;

/// `Job run at Www Mmm dd at hh:mm on <exec_vnode>`, the day zero-padded, in `tz`; an
/// `exec_vnode` that would pass 255 characters is cut and ends with `...`. `None` when the time
/// is outside jiff's range.
///
/// ```
/// use hpcbox_pbs::format::history::job_run_comment;
/// use jiff::tz::TimeZone;
/// assert_eq!(
///     job_run_comment(1726303065, &TimeZone::UTC, "(project-root-dev8:ncpus=1)").as_deref(),
///     Some("Job run at Sat Sep 14 at 08:37 on (project-root-dev8:ncpus=1)")
/// );
/// ```
pub fn job_run_comment(at_secs: i64, tz: &TimeZone, exec_vnode: &str) -> Option<String> {
    let ts = Timestamp::from_second(at_secs).ok()?;
    let when = tz.to_datetime(ts).strftime("%a %b %d at %H:%M").to_string();
    let mut comment = format!("Job run at {when} on ");
    let room = MAX_RUN_COMMENT.saturating_sub(comment.chars().count());
    if exec_vnode.chars().count() > room {
        comment.extend(exec_vnode.chars().take(room.saturating_sub(3)));
        comment.push_str("...");
    } else {
        comment.push_str(exec_vnode);
    }
    Some(comment)
}

/// How a job left the running state, for [`finish_comment`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobEnd {
    /// It ended with exit status 0 (substate 92).
    Finished,
    /// It ended otherwise (substate 93), with its `Exit_status` when set.
    Failed {
        /// The job's exit status; −24…−29 name the limit that killed it.
        exit_status: Option<i64>,
    },
    /// It was deleted while running (substate 91), by `by` when known.
    Terminated {
        /// The user who deleted it.
        by: Option<String>,
    },
}

/// The comment after the job ends: ` and finished`, ` and failed`,
/// ` and exceeded resource <limit>` or ` and terminated [by <user>]` appended. A terminated job
/// whose comment already mentions `terminated` keeps it; so does a job with no comment (`None`).
///
/// ```
/// use hpcbox_pbs::format::history::{finish_comment, JobEnd};
/// let c = "Job run at Sat Sep 14 at 08:37 on (n1:ncpus=1)";
/// assert_eq!(
///     finish_comment(Some(c), &JobEnd::Failed { exit_status: Some(-29) }).unwrap(),
///     format!("{c} and exceeded resource walltime")
/// );
/// ```
pub fn finish_comment(comment: Option<&str>, end: &JobEnd) -> Option<String> {
    let comment = comment?;
    let suffix = match end {
        JobEnd::Finished => "and finished".to_string(),
        JobEnd::Failed { exit_status } => match exit_status
            .and_then(|status| i32::try_from(status).ok())
            .and_then(LimitKill::from_exit_status)
        {
            Some(limit) => format!("and exceeded resource {}", limit.resource()),
            None => "and failed".to_string(),
        },
        JobEnd::Terminated { .. } if comment.contains("terminated") => {
            return Some(comment.to_string())
        }
        JobEnd::Terminated { by: Some(user) } => format!("and terminated by {user}"),
        JobEnd::Terminated { by: None } => "and terminated".to_string(),
    };
    Some(format!("{comment} {suffix}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn real_comments() {
        // Real `qstat -fx` (tests/formats.rs): "Job run at Sat Sep 14 at 08:37 on
        // (project-root-dev8:ncpus=1) and finished"; nextflow issue: "Tue May 07 at 09:31".
        let run = job_run_comment(1726303065, &TimeZone::UTC, "(project-root-dev8:ncpus=1)");
        assert_eq!(
            finish_comment(run.as_deref(), &JobEnd::Finished).as_deref(),
            Some("Job run at Sat Sep 14 at 08:37 on (project-root-dev8:ncpus=1) and finished")
        );
        assert_eq!(
            job_run_comment(1557221460, &TimeZone::UTC, "(cn02:ncpus=16)").as_deref(),
            Some("Job run at Tue May 07 at 09:31 on (cn02:ncpus=16)")
        );
    }

    #[test]
    fn endings() {
        let c = Some("Job run at x");
        let f = |e| finish_comment(c, &e).unwrap();
        assert_eq!(
            f(JobEnd::Failed {
                exit_status: Some(1)
            }),
            "Job run at x and failed"
        );
        assert_eq!(
            f(JobEnd::Failed { exit_status: None }),
            "Job run at x and failed"
        );
        assert_eq!(
            f(JobEnd::Failed {
                exit_status: Some(-27)
            }),
            "Job run at x and exceeded resource mem"
        );
        assert_eq!(
            f(JobEnd::Terminated {
                by: Some("alice@h".into())
            }),
            "Job run at x and terminated by alice@h"
        );
        assert_eq!(
            finish_comment(Some("already terminated"), &JobEnd::Terminated { by: None }).unwrap(),
            "already terminated"
        );
        assert_eq!(finish_comment(None, &JobEnd::Finished), None);
    }

    proptest! {
        #[test]
        fn run_comment_is_at_most_255(vnode in ".{0,400}", t in 0i64..4_000_000_000) {
            let c = job_run_comment(t, &TimeZone::UTC, &vnode).unwrap();
            prop_assert!(c.chars().count() <= MAX_RUN_COMMENT);
            prop_assert!(c.starts_with("Job run at "));
        }
    }
}

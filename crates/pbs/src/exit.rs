//! How a job ends, in PBS's numbers and words: exit statuses, limit kills and the messages
//! written to the job's stderr. The history comments (`… and finished`) are in
//! [`crate::format::history`].
//!
//! From OpenPBS: include/job.h (`JOB_EXEC_*`) and resmom/mom_main.c (limit messages).

/// The exit status PBS records for a job whose top shell was killed by `signal`: 256 + signal
/// (271 for SIGTERM, 265 for SIGKILL).
pub const fn signal_exit_status(signal: i32) -> i32 {
    256 + signal
}

/// `Exit_status` of a job from how its top shell ended: its exit code, or 256 + the signal that
/// killed it.
pub fn shell_exit_status(code: Option<i32>, signal: Option<i32>) -> i32 {
    match (code, signal) {
        (Some(code), _) => code,
        (None, Some(signal)) => signal_exit_status(signal),
        (None, None) => JOB_EXEC_FAIL2,
    }
}

/// Job start failed before its files were set up; not retried (`JOB_EXEC_FAIL1`).
pub const JOB_EXEC_FAIL1: i32 = -1;
/// Job start failed after its files were set up; not retried (`JOB_EXEC_FAIL2`).
pub const JOB_EXEC_FAIL2: i32 = -2;
/// Job start failed and will be retried: the job goes back to the queue (`JOB_EXEC_RETRY`).
pub const JOB_EXEC_RETRY: i32 = -3;
/// The job's user or group could not be used on the execution host (`JOB_EXEC_FAILUID`).
pub const JOB_EXEC_FAILUID: i32 = -10;

/// A resource limit whose excess makes the node agent kill the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitKill {
    /// Momentary CPU use above the `ncpus` request.
    NcpusBurst,
    /// Average CPU use above the `ncpus` request.
    NcpusSum,
    /// Virtual memory above `vmem`.
    Vmem,
    /// Resident memory above `mem`.
    Mem,
    /// CPU time above `cput`.
    Cput,
    /// Elapsed time above `walltime`.
    Walltime,
}

impl LimitKill {
    /// The `Exit_status` PBS records (v22.05 and later): −24 … −29.
    pub fn exit_status(self) -> i32 {
        match self {
            LimitKill::NcpusBurst => -24,
            LimitKill::NcpusSum => -25,
            LimitKill::Vmem => -26,
            LimitKill::Mem => -27,
            LimitKill::Cput => -28,
            LimitKill::Walltime => -29,
        }
    }

    /// The limit an `Exit_status` stands for, if it is one of them.
    pub fn from_exit_status(status: i32) -> Option<LimitKill> {
        [
            LimitKill::NcpusBurst,
            LimitKill::NcpusSum,
            LimitKill::Vmem,
            LimitKill::Mem,
            LimitKill::Cput,
            LimitKill::Walltime,
        ]
        .into_iter()
        .find(|limit| limit.exit_status() == status)
    }

    /// The resource as the history comment names it (`ncpus (burst)`, `walltime`, …).
    pub fn resource(self) -> &'static str {
        match self {
            LimitKill::NcpusBurst => "ncpus (burst)",
            LimitKill::NcpusSum => "ncpus (sum)",
            LimitKill::Vmem => "vmem",
            LimitKill::Mem => "mem",
            LimitKill::Cput => "cput",
            LimitKill::Walltime => "walltime",
        }
    }
}

/// What a limit kill writes to the job's stderr, newline included:
/// `=>> PBS: job killed: walltime 152 exceeded limit 120`.
///
/// `used` is what the job used: seconds for times, bytes for memory (printed in kb as PBS
/// prints them), CPUs for ncpus (fractional); `allowed` is the limit in the same unit.
///
/// ```
/// use hpcbox_pbs::exit::{kill_message, LimitKill};
/// assert_eq!(kill_message(LimitKill::Walltime, 152.0, 120),
///            "=>> PBS: job killed: walltime 152 exceeded limit 120\n");
/// assert_eq!(kill_message(LimitKill::Mem, 2048.0 * 1024.0, 1024 * 1024),
///            "=>> PBS: job killed: mem 2048kb exceeded limit 1024kb\n");
/// ```
pub fn kill_message(limit: LimitKill, used: f64, allowed: u64) -> String {
    // Whole units, as PBS's `%lu` conversions print them.
    let whole = used as u64;
    let detail = match limit {
        LimitKill::Mem | LimitKill::Vmem => {
            let name = if limit == LimitKill::Mem {
                "mem"
            } else {
                "vmem"
            };
            format!(
                "{name} {}kb exceeded limit {}kb",
                whole / 1024,
                allowed / 1024
            )
        }
        LimitKill::Cput | LimitKill::Walltime => {
            format!("{} {whole} exceeded limit {allowed}", limit.resource())
        }
        LimitKill::NcpusBurst => format!("ncpus {used:.1} exceeded limit {allowed} (burst)"),
        LimitKill::NcpusSum => format!("ncpus {used:.2} exceeded limit {allowed} (sum)"),
    };
    format!("=>> PBS: job killed: {detail}\n")
}

/// The exit code of `qsub -W block=true` for a job that ended with `exit_status`, or was
/// deleted before it ran (`None`): the status & 255, or 3.
///
/// ```
/// use hpcbox_pbs::exit::block_exit_code;
/// assert_eq!(block_exit_code(Some(271)), 15);
/// assert_eq!(block_exit_code(Some(-29)), 227);
/// assert_eq!(block_exit_code(None), 3);
/// ```
pub fn block_exit_code(exit_status: Option<i32>) -> i32 {
    exit_status.map_or(3, |status| status & 255)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_statuses() {
        assert_eq!(shell_exit_status(Some(0), None), 0);
        assert_eq!(shell_exit_status(Some(3), None), 3);
        assert_eq!(shell_exit_status(None, Some(15)), 271);
        assert_eq!(shell_exit_status(None, Some(9)), 265);
    }

    #[test]
    fn limit_statuses_round_trip() {
        for status in -29..=-24 {
            let limit = LimitKill::from_exit_status(status).unwrap();
            assert_eq!(limit.exit_status(), status);
        }
        assert_eq!(LimitKill::from_exit_status(-1), None);
    }

    #[test]
    fn kill_messages() {
        assert_eq!(
            kill_message(LimitKill::Cput, 61.4, 60),
            "=>> PBS: job killed: cput 61 exceeded limit 60\n"
        );
        assert_eq!(
            kill_message(LimitKill::Vmem, 4096.0, 2048),
            "=>> PBS: job killed: vmem 4kb exceeded limit 2kb\n"
        );
        assert_eq!(
            kill_message(LimitKill::NcpusBurst, 2.25, 1),
            "=>> PBS: job killed: ncpus 2.2 exceeded limit 1 (burst)\n"
        );
    }
}

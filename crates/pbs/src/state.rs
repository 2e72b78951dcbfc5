//! Job states and the letters `qstat` shows for them (include/job.h).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ParseError;

/// The state of a job, as PBS Professional names it.
///
/// ```
/// use hpcbox_pbs::state::JobState;
/// assert_eq!(JobState::Running.letter(), 'R');
/// assert_eq!("H".parse::<JobState>().unwrap(), JobState::Held);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum JobState {
    /// `T`: being moved to a new location.
    Transiting,
    /// `Q`: queued, eligible to run.
    Queued,
    /// `H`: held.
    Held,
    /// `W`: waiting for its execution time (`qsub -a`).
    Waiting,
    /// `R`: running.
    Running,
    /// `E`: exiting after having run.
    Exiting,
    /// `X`: a subjob that finished or was deleted.
    Expired,
    /// `B`: an array job with at least one subjob started.
    Begun,
    /// `S`: suspended.
    Suspended,
    /// `U`: suspended because the workstation became busy.
    UserBusy,
    /// `M`: moved to another server.
    Moved,
    /// `F`: finished (completed, failed or deleted).
    Finished,
}

impl JobState {
    /// Every state, in PBS's order of `JOB_STATE_LTR_*` letters as `qstat -s` lists them.
    pub const ALL: [JobState; 12] = [
        JobState::Transiting,
        JobState::Queued,
        JobState::Held,
        JobState::Waiting,
        JobState::Running,
        JobState::Exiting,
        JobState::Expired,
        JobState::Begun,
        JobState::Suspended,
        JobState::UserBusy,
        JobState::Moved,
        JobState::Finished,
    ];

    /// The one letter `qstat` prints in its `S` column and in `job_state = `.
    pub fn letter(self) -> char {
        match self {
            JobState::Transiting => 'T',
            JobState::Queued => 'Q',
            JobState::Held => 'H',
            JobState::Waiting => 'W',
            JobState::Running => 'R',
            JobState::Exiting => 'E',
            JobState::Expired => 'X',
            JobState::Begun => 'B',
            JobState::Suspended => 'S',
            JobState::UserBusy => 'U',
            JobState::Moved => 'M',
            JobState::Finished => 'F',
        }
    }

    /// The state whose letter is `letter`, if any.
    pub fn from_letter(letter: char) -> Option<JobState> {
        JobState::ALL.into_iter().find(|s| s.letter() == letter)
    }

    /// Whether the job is over: finished, moved or (for a subjob) expired. Such jobs show only
    /// under `qstat -x`.
    pub fn is_history(self) -> bool {
        matches!(
            self,
            JobState::Finished | JobState::Moved | JobState::Expired
        )
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.letter())
    }
}

impl FromStr for JobState {
    type Err = ParseError;

    fn from_str(text: &str) -> Result<Self, ParseError> {
        let mut chars = text.chars();
        match (chars.next(), chars.next()) {
            (Some(c), None) => JobState::from_letter(c),
            _ => None,
        }
        .ok_or_else(|| ParseError::new(text, "not a job state letter (one of TQHWREXBSUMF)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letters_are_unique_and_round_trip() {
        let letters: String = JobState::ALL.iter().map(|s| s.letter()).collect();
        assert_eq!(letters, "TQHWREXBSUMF");
        for state in JobState::ALL {
            assert_eq!(state.to_string().parse::<JobState>().unwrap(), state);
        }
    }

    #[test]
    fn refuses_other_text() {
        for bad in ["", "q", "RR", "Z"] {
            assert!(bad.parse::<JobState>().is_err(), "{bad}");
        }
    }

    #[test]
    fn history_states() {
        let history: Vec<_> = JobState::ALL
            .into_iter()
            .filter(|s| s.is_history())
            .collect();
        assert_eq!(
            history,
            [JobState::Expired, JobState::Moved, JobState::Finished]
        );
    }
}

/// Job substates (`substate = ` in `qstat -f`), from OpenPBS include/job.h: the finer steps
/// within a state that the server and its tools use.
pub mod substate {
    /// Queued, eligible to run.
    pub const QUEUED: u32 = 10;
    /// Held by a user or operator.
    pub const HELD: u32 = 20;
    /// Held until its dependencies allow it to run.
    pub const DEPEND_HOLD: u32 = 22;
    /// Waiting for its execution time (`qsub -a`).
    pub const WAITING: u32 = 30;
    /// Sent to its node agent, not yet running.
    pub const PRERUN: u32 = 41;
    /// Running.
    pub const RUNNING: u32 = 42;
    /// Exit processing has begun.
    pub const EXITING: u32 = 50;
    /// A subjob that is gone (finished or deleted).
    pub const EXPIRED: u32 = 69;
    /// An array job with subjobs started.
    pub const BEGUN: u32 = 70;
    /// Deleted while running.
    pub const TERMINATED: u32 = 91;
    /// Ended with exit status 0.
    pub const FINISHED: u32 = 92;
    /// Ended with another exit status.
    pub const FAILED: u32 = 93;
    /// Moved to another server.
    pub const MOVED: u32 = 94;
}

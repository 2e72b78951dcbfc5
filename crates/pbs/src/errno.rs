//! PBS error numbers (`src/include/pbs_error.h`), their texts (`pbse_to_txt`,
//! `src/lib/Liblog/pbs_messages.c`), and the error lines and exit codes of the commands.
//!
//! A command that fails on a server error exits with the error number truncated to a byte
//! (`exit(pbs_errno)`): `Unknown Job Id` (15001) exits 153, `Job has finished` (15139) 35,
//! `Unknown queue` (15018) 170. Some texts end with a blank, which the commands print as is.

use std::fmt;

/// `PBSE_HISTJOBDELETED`: a finished job's history was deleted on request; `qdel` reports
/// nothing for it. It has no text.
pub const PBSE_HISTJOBDELETED: i32 = 15158;

/// The commonly met PBS error numbers, with their numeric codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum PbsErrno {
    /// Unknown job identifier (`PBSE_UNKJOBID`).
    UnknownJobId = 15001,
    /// Undefined attribute (`PBSE_NOATTR`).
    NoAttribute = 15002,
    /// Attempt to set a read-only attribute (`PBSE_ATTRRO`).
    AttributeReadOnly = 15003,
    /// Invalid request (`PBSE_IVALREQ`).
    InvalidRequest = 15004,
    /// Unknown batch request (`PBSE_UNKREQ`).
    UnknownRequest = 15005,
    /// No permission: unauthorized request (`PBSE_PERM`).
    Permission = 15007,
    /// Access from host not allowed (`PBSE_BADHOST`).
    BadHost = 15008,
    /// Job already exists (`PBSE_JOBEXIST`).
    JobExists = 15009,
    /// System error (`PBSE_SYSTEM`).
    System = 15010,
    /// Internal server error (`PBSE_INTERNAL`).
    Internal = 15011,
    /// Unknown signal name (`PBSE_UNKSIG`).
    UnknownSignal = 15013,
    /// Bad attribute or resource value (`PBSE_BADATVAL`).
    BadAttributeValue = 15014,
    /// Attribute cannot be modified while the job runs (`PBSE_MODATRRUN`).
    ModifyWhileRunning = 15015,
    /// Request invalid for the job's state (`PBSE_BADSTATE`).
    BadState = 15016,
    /// Unknown queue (`PBSE_UNKQUE`).
    UnknownQueue = 15018,
    /// Invalid credential (`PBSE_BADCRED`).
    BadCredential = 15019,
    /// Queue not enabled (`PBSE_QUNOENB`).
    QueueNotEnabled = 15021,
    /// No access permission for the queue (`PBSE_QACESS`).
    QueueAccess = 15022,
    /// Bad user: no password entry (`PBSE_BADUSER`).
    BadUser = 15023,
    /// Feature not supported (`PBSE_NOSUP`).
    NotSupported = 15029,
    /// Batch protocol error (`PBSE_PROTOCOL`).
    Protocol = 15031,
    /// No server to connect to (`PBSE_NOSERVER`).
    NoServer = 15034,
    /// Unknown resource (`PBSE_UNKRESC`).
    UnknownResource = 15035,
    /// Job exceeds queue or server resource limits (`PBSE_EXCQRESC`).
    ExceedsQueueLimits = 15036,
    /// No default queue defined (`PBSE_QUENODFLT`).
    NoDefaultQueue = 15037,
    /// Job not rerunnable (`PBSE_NORERUN`).
    NotRerunnable = 15038,
    /// Resources temporarily unavailable (`PBSE_RESCUNAV`).
    ResourceUnavailable = 15044,
    /// Bad group (`PBSE_BADGRP`).
    BadGroup = 15045,
    /// Maximum number of jobs already in the queue (`PBSE_MAXQUED`).
    MaxQueued = 15046,
    /// Bad account attribute value (`PBSE_BADACCT`).
    BadAccount = 15049,
    /// Invalid dependency (`PBSE_BADDEPEND`).
    BadDependency = 15054,
    /// Request refused: the server is shutting down (`PBSE_SVRDOWN`).
    ServerShuttingDown = 15060,
    /// Named node is not in the list (`PBSE_UNKNODE`).
    UnknownNode = 15062,
    /// Node specification error (`PBSE_BADNODESPEC`).
    BadNodeSpec = 15089,
    /// Unable to contact the scheduler (`PBSE_NOSCHEDULER`).
    NoScheduler = 15099,
    /// Resource invalid in a select specification (`PBSE_INVALSELECTRESC`).
    InvalidSelectResource = 15108,
    /// The job has finished: history job id (`PBSE_HISTJOBID`).
    HistoryJob = 15139,
    /// Job history is not enabled (`PBSE_JOBHISTNOTSET`).
    JobHistoryNotSet = 15140,
    /// Attribute value out of range (`PBSE_ATVALERANGE`).
    ValueOutOfRange = 15144,
    /// Request invalid for a finished array subjob (`PBSE_NOHISTARRAYSUBJOB`).
    NoHistoryArraySubjob = 15159,
    /// Job name too long (`PBSE_JOBNBIG`).
    JobNameTooLong = 15173,
}

/// Every variant, for lookups by code.
const ALL: &[PbsErrno] = &[
    PbsErrno::UnknownJobId,
    PbsErrno::NoAttribute,
    PbsErrno::AttributeReadOnly,
    PbsErrno::InvalidRequest,
    PbsErrno::UnknownRequest,
    PbsErrno::Permission,
    PbsErrno::BadHost,
    PbsErrno::JobExists,
    PbsErrno::System,
    PbsErrno::Internal,
    PbsErrno::UnknownSignal,
    PbsErrno::BadAttributeValue,
    PbsErrno::ModifyWhileRunning,
    PbsErrno::BadState,
    PbsErrno::UnknownQueue,
    PbsErrno::BadCredential,
    PbsErrno::QueueNotEnabled,
    PbsErrno::QueueAccess,
    PbsErrno::BadUser,
    PbsErrno::NotSupported,
    PbsErrno::Protocol,
    PbsErrno::NoServer,
    PbsErrno::UnknownResource,
    PbsErrno::ExceedsQueueLimits,
    PbsErrno::NoDefaultQueue,
    PbsErrno::NotRerunnable,
    PbsErrno::ResourceUnavailable,
    PbsErrno::BadGroup,
    PbsErrno::MaxQueued,
    PbsErrno::BadAccount,
    PbsErrno::BadDependency,
    PbsErrno::ServerShuttingDown,
    PbsErrno::UnknownNode,
    PbsErrno::BadNodeSpec,
    PbsErrno::NoScheduler,
    PbsErrno::InvalidSelectResource,
    PbsErrno::HistoryJob,
    PbsErrno::JobHistoryNotSet,
    PbsErrno::ValueOutOfRange,
    PbsErrno::NoHistoryArraySubjob,
    PbsErrno::JobNameTooLong,
];

impl PbsErrno {
    /// The numeric code, `15001` for [`PbsErrno::UnknownJobId`].
    pub fn code(self) -> i32 {
        self as i32
    }

    /// The variant for `code`, if it is one of the common errors listed here.
    ///
    /// ```
    /// use hpcbox_pbs::errno::PbsErrno;
    /// assert_eq!(PbsErrno::from_code(15018), Some(PbsErrno::UnknownQueue));
    /// assert_eq!(PbsErrno::from_code(1), None);
    /// ```
    pub fn from_code(code: i32) -> Option<PbsErrno> {
        ALL.iter().copied().find(|e| e.code() == code)
    }

    /// The text PBS gives for the error (`pbse_to_txt`), trailing blanks included.
    ///
    /// ```
    /// use hpcbox_pbs::errno::PbsErrno;
    /// assert_eq!(PbsErrno::UnknownJobId.text(), "Unknown Job Id");
    /// assert_eq!(PbsErrno::Permission.text(), "Unauthorized Request ");
    /// ```
    pub fn text(self) -> &'static str {
        pbse_to_txt(self.code()).unwrap_or("")
    }

    /// The exit status of a command that ends on this error: the code truncated to a byte.
    ///
    /// ```
    /// use hpcbox_pbs::errno::PbsErrno;
    /// assert_eq!(PbsErrno::UnknownJobId.exit_code(), 153);
    /// assert_eq!(PbsErrno::HistoryJob.exit_code(), 35);
    /// assert_eq!(PbsErrno::UnknownQueue.exit_code(), 170);
    /// ```
    pub fn exit_code(self) -> i32 {
        exit_code(self.code())
    }
}

impl fmt::Display for PbsErrno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text())
    }
}

impl std::error::Error for PbsErrno {}

/// The exit status of a command that ends with error number `code` (`exit(code)`: its low byte).
pub fn exit_code(code: i32) -> i32 {
    code & 255
}

/// The text of error number `code` (`pbse_to_txt`), `None` for numbers without one.
///
/// ```
/// assert_eq!(hpcbox_pbs::errno::pbse_to_txt(15035), Some("Unknown resource"));
/// assert_eq!(hpcbox_pbs::errno::pbse_to_txt(15158), None);
/// ```
pub fn pbse_to_txt(code: i32) -> Option<&'static str> {
    ERROR_TEXTS
        .iter()
        .find(|(c, _)| *c == code)
        .map(|(_, text)| *text)
}

/// The error line of a command about a job (`prt_job_err`, used by `qstat`, `qhold`, `qrls`,
/// `qalter`, …): `<cmd>: <text> <job id>`; for a finished job `<cmd>: Job has finished`; for a
/// number without text `<cmd>: Server returned error <n> for job <id>`. With its newline.
///
/// ```
/// use hpcbox_pbs::errno::job_error_line;
/// assert_eq!(job_error_line("qstat", 15001, "1234.srv"), "qstat: Unknown Job Id 1234.srv\n");
/// ```
pub fn job_error_line(cmd: &str, code: i32, job_id: &str) -> String {
    match pbse_to_txt(code) {
        Some(text) if code == PbsErrno::HistoryJob.code() => format!("{cmd}: {text}\n"),
        Some(text) => format!("{cmd}: {text} {job_id}\n"),
        None => format!("{cmd}: Server returned error {code} for job {job_id}\n"),
    }
}

/// The line `qstat` prints for a job id it cannot show: for a finished job without `-x`,
/// `qstat: <id> Job has finished, use -x or -H to obtain historical job information`, otherwise
/// as [`job_error_line`]. With its newline.
///
/// ```
/// use hpcbox_pbs::errno::qstat_job_error_line;
/// assert_eq!(
///     qstat_job_error_line(15139, "1234.srv"),
///     "qstat: 1234.srv Job has finished, use -x or -H to obtain historical job information\n"
/// );
/// ```
pub fn qstat_job_error_line(code: i32, job_id: &str) -> String {
    if code == PbsErrno::HistoryJob.code() {
        format!(
            "qstat: {job_id} {}, use -x or -H to obtain historical job information\n",
            PbsErrno::HistoryJob.text()
        )
    } else {
        job_error_line("qstat", code, job_id)
    }
}

/// The line `qdel` prints for a job it could not delete: `qdel: <text> <job id>` for every
/// error with a text (a finished job included), nothing for [`PBSE_HISTJOBDELETED`] or numbers
/// without text. With its newline.
///
/// ```
/// use hpcbox_pbs::errno::qdel_error_line;
/// assert_eq!(qdel_error_line(15001, "1234.srv").as_deref(), Some("qdel: Unknown Job Id 1234.srv\n"));
/// assert_eq!(qdel_error_line(15158, "1234.srv"), None);
/// ```
pub fn qdel_error_line(code: i32, job_id: &str) -> Option<String> {
    if code == PBSE_HISTJOBDELETED {
        return None;
    }
    pbse_to_txt(code).map(|text| format!("qdel: {text} {job_id}\n"))
}

/// The line a command prints for a server error not about one job (`qsub`'s refusal,
/// `qstat -Q`, …): `<cmd>: <text>`, or `<cmd>: Error <n>` for a number without text. With its
/// newline.
///
/// ```
/// use hpcbox_pbs::errno::command_error_line;
/// assert_eq!(command_error_line("qsub", 15018), "qsub: Unknown queue\n");
/// ```
pub fn command_error_line(cmd: &str, code: i32) -> String {
    match pbse_to_txt(code) {
        Some(text) => format!("{cmd}: {text}\n"),
        None => format!("{cmd}: Error {code}\n"),
    }
}

/// Every error number that has a text, with the text, in `pbse_to_txt`'s table order
/// (OpenPBS master cd7ab5e).
pub const ERROR_TEXTS: &[(i32, &str)] = &[
    (15001, "Unknown Job Id"),
    (15002, "Undefined attribute "),
    (
        15003,
        "Cannot set attribute, read only or insufficient permission ",
    ),
    (15004, "Invalid request"),
    (15005, "Unknown request"),
    (15007, "Unauthorized Request "),
    (15008, "Access from host not allowed, or unknown host"),
    (15009, "Job with requested ID already exists"),
    (15010, "System error: "),
    (15011, "PBS server internal error"),
    (15012, "Dependent parent job currently in routing queue"),
    (15013, "Unknown/illegal signal name"),
    (15014, "Illegal attribute or resource value"),
    (15067, "Illegal value for node"),
    (15065, "Node name is too big"),
    (15068, "Mutually exclusive values for "),
    (15015, "Cannot modify attribute while job running "),
    (15016, "Request invalid for state of job"),
    (15018, "Unknown queue"),
    (15062, "Unknown node "),
    (15063, "Unknown node-attribute "),
    (15064, "Server has no node list"),
    (15019, "Invalid credential"),
    (15020, "Expired credential"),
    (15021, "Queue is not enabled"),
    (15022, "Access to queue is denied"),
    (15023, "Bad UID for job execution"),
    (15095, "Bad effective UID for reservation"),
    (15024, "Job routing over too many hops"),
    (15025, "Queue already exists"),
    (15027, "Cannot delete busy object"),
    (15028, "Queue name too long"),
    (15029, "No support for requested service"),
    (15030, "Cannot enable queue, incomplete definition"),
    (15031, "Batch protocol error"),
    (15033, "No free connections"),
    (15034, "No server specified"),
    (15035, "Unknown resource"),
    (15036, "Job violates queue and/or server resource limits"),
    (15037, "No default queue specified"),
    (15038, "job is not rerunnable"),
    (15039, "Job rejected by all possible destinations"),
    (15041, "Execution server rejected request"),
    (15053, "No master found for sync job set"),
    (15043, "Stage In of files failed"),
    (15044, "Resource temporarily unavailable"),
    (15045, "Bad GID for job execution"),
    (15096, "Bad effective GID for reservation"),
    (15046, "Maximum number of jobs already in queue"),
    (15047, "Checkpoint busy, may retry"),
    (15048, "Resource limit exceeds allowable"),
    (15049, "Invalid Account"),
    (15054, "Invalid Job Dependency"),
    (15055, "Duplicate entry in list "),
    (
        15057,
        "Cannot execute at specified host because of checkpoint or stagein files",
    ),
    (15060, "Request not allowed: Server shutting down"),
    (15026, "Incompatible type"),
    (15069, "Modification failed for "),
    (15070, "Server could not connect to MOM"),
    (15071, "No time-share node available"),
    (15075, "Reservation needs walltime"),
    (15076, "not a reservation job"),
    (15077, "too late for reservation"),
    (15078, "internal reservation-system error"),
    (15080, "Reservation with requested ID already exists"),
    (
        15181,
        "Reservation may not be created from a job already within a reservation",
    ),
    (15182, "Reservation may not be created from an array job"),
    (
        15183,
        "New select must be made up of a subset of the original chunks",
    ),
    (15081, "reservation failure"),
    (15082, "batch request generation failed"),
    (15083, "mgr batch request failed"),
    (15084, "Unknown Reservation Id"),
    (15085, "Delete already in progress"),
    (15086, "Bad time specification(s)"),
    (15088, "not a reservation"),
    (15089, "node(s) specification error"),
    (15091, "PBS license is invalid"),
    (15092, "Host machine not authorized to submit reservations"),
    (
        15093,
        "Requestor's group not authorized to submit reservations",
    ),
    (15094, "Requestor not authorized to make reservations"),
    (15100, "Resource is not of type string or array_of_strings"),
    (15107, "Array job exceeds server or queue size limit"),
    (15099, "Could not contact Scheduler"),
    (15108, "Resource invalid in \"select\" specification"),
    (
        15109,
        "\"-lresource=\" cannot be used with \"select\" or \"place\", resource is",
    ),
    (15110, "Cannot be used with select or place"),
    (15111, "Cannot have \"place\" without \"select\""),
    (15112, "invalid multi-level indirect reference for resource"),
    (15113, "indirect target undefined on node for resource"),
    (15115, "Cannot change state of stale node"),
    (15066, "Node name already exists"),
    (
        15116,
        "duplicated resource within a section of a select specification, resource is",
    ),
    (15117, "Server connection table full"),
    (15118, "pbs_license_min is < 0, or > pbs_license_max"),
    (15119, "pbs_license_max is < 0, or < pbs_license_min"),
    (15120, "pbs_license_linger_time is <= 0"),
    (15123, "Invalid Formula Format"),
    (15124, "Formula contains invalid keyword"),
    (15125, "Formula contains a resource of an invalid type"),
    (15126, "YEARLY recurrence duration cannot exceed 1 year"),
    (15127, "MONTHLY recurrence duration cannot exceed 1 month"),
    (15128, "WEEKLY recurrence duration cannot exceed 1 week"),
    (15129, "DAILY recurrence duration cannot exceed 24 hours"),
    (15130, "HOURLY recurrence duration cannot exceed 1 hour"),
    (15131, "MINUTELY recurrence duration cannot exceed 1 minute"),
    (15132, "SECONDLY recurrence duration cannot exceed 1 second"),
    (15133, "Undefined iCalendar syntax"),
    (
        15134,
        "Undefined iCalendar syntax. A valid COUNT or UNTIL is required",
    ),
    (15135, "Unrecognized PBS_TZID environment variable"),
    (15136, "hook error"),
    (15137, "Queue type must be set"),
    (
        15138,
        "Cannot set attribute when eligible_time_enable is OFF",
    ),
    (15139, "Job has finished"),
    (15140, "PBS is not configured to maintain job history"),
    (
        15141,
        "Cannot mix old and new style queue/run limit enforcement types",
    ),
    (15144, "attribute value is out of range"),
    (
        15145,
        "Cannot set provisioning attribute on host running PBS server and scheduler",
    ),
    (15146, "Cannot modify attribute while vnode is provisioning"),
    (15147, "Cannot change state of provisioning vnode"),
    (15148, "Cannot delete vnode if vnode is provisioning"),
    (
        15149,
        "Current AOE does not match with resources_available.aoe",
    ),
    (
        15153,
        "Local host does not have loopback interface configured or pingable.",
    ),
    (15155, "Invalid provisioning request in chunk(s)"),
    (15156, "job and reservation have conflicting specification"),
    (
        15162,
        "Cannot have \"max_walltime\" without \"min_walltime\"",
    ),
    (
        15163,
        "\"min_walltime\" can not be greater than \"max_walltime\"",
    ),
    (
        15164,
        "\"min_walltime\" and \"max_walltime\" are not valid resources for a reservation",
    ),
    (
        15165,
        "\"min_walltime\" and \"max_walltime\" are not valid resources for a job array",
    ),
    (15166, "Resource limits can not be set for the resource"),
    (
        15157,
        "Cannot run job which was altered/moved during current scheduling cycle.",
    ),
    (15159, "Request invalid for finished array subjob"),
    (15160, "force a qsub update"),
    (
        15161,
        "Failed to save job/resv, refer server logs for details",
    ),
    (
        15167,
        "vnode's parent mom has a pending copy hook or delete hook request",
    ),
    (
        15168,
        "mom not accepting remote hook files or root job scripts",
    ),
    (15169, "hook rejected request"),
    (15170, "hook rejected request, requiring job to be rerun"),
    (15171, "hook rejected request, requiring job to be deleted"),
    (15172, "Invalid object name"),
    (15173, "name is too long"),
    (15174, "Resource busy"),
    (15210, "Job moved to remote server"),
    (15175, "jobscript size exceeded the jobscript_max_size"),
    (15176, "jobscript max size exceeds 2GB"),
    (
        15177,
        "Job can not be resumed with the requested resume signal",
    ),
    (15211, "Scheduler already exists"),
    (15212, "Scheduler name is too long"),
    (15213, "Unknown Scheduler"),
    (15214, "Can not delete Scheduler"),
    (
        15215,
        "Another scheduler also has same value for its sched_priv directory",
    ),
    (
        15216,
        "Another scheduler also has same value for its sched_log directory",
    ),
    (15217, "Cannot assign a partition to route queue"),
    (
        15218,
        "Route queues are incompatible with the partition attribute",
    ),
    (15219, "Queue %s is not part of partition for node"),
    (15220, "Partition %s is not part of queue for node"),
    (15221, "Invalid partition in queue"),
    (15178, "Reservation not empty"),
    (
        15179,
        "Requested time(s) will interfere with a later occurrence",
    ),
    (15222, "Switching ALPS reservation failed"),
    (
        15180,
        "soft_walltime is not supported with Shrink to Fit jobs",
    ),
    (15223, "Operation is not permitted on default scheduler"),
    (
        15224,
        "Partition is already associated with other scheduler",
    ),
    (
        15225,
        "Cannot set max_job_sequence_id < 9999999, or > 999999999999",
    ),
    (
        15226,
        "Server's job_sort_formula value is incompatible with sched's",
    ),
    (15227, "Node is busy"),
    (15228, "Default partition name is not allowed"),
    (15229, "Finished job did not satisfy dependency"),
    (15230, "Scheduler already connected"),
    (15231, "Attribute has to be set on an array job"),
];

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn every_variant_has_a_text() {
        for e in ALL {
            assert!(!e.text().is_empty(), "{e:?}");
            assert_eq!(PbsErrno::from_code(e.code()), Some(*e));
        }
    }

    #[test]
    fn known_texts() {
        assert_eq!(
            PbsErrno::BadAttributeValue.text(),
            "Illegal attribute or resource value"
        );
        assert_eq!(
            PbsErrno::BadState.text(),
            "Request invalid for state of job"
        );
        assert_eq!(PbsErrno::BadUser.text(), "Bad UID for job execution");
        assert_eq!(PbsErrno::System.text(), "System error: ");
        assert_eq!(PbsErrno::Protocol.text(), "Batch protocol error");
        assert_eq!(PbsErrno::BadAccount.text(), "Invalid Account");
        assert_eq!(PbsErrno::NoServer.text(), "No server specified");
        assert_eq!(PbsErrno::UnknownResource.text(), "Unknown resource");
        assert_eq!(PbsErrno::HistoryJob.to_string(), "Job has finished");
    }

    #[test]
    fn lines() {
        assert_eq!(
            job_error_line("qhold", 15139, "1.srv"),
            "qhold: Job has finished\n"
        );
        assert_eq!(
            job_error_line("qstat", 15007, "1.srv"),
            "qstat: Unauthorized Request  1.srv\n"
        );
        assert_eq!(
            job_error_line("qstat", 1, "1.srv"),
            "qstat: Server returned error 1 for job 1.srv\n"
        );
        assert_eq!(
            qdel_error_line(15139, "1.srv").as_deref(),
            Some("qdel: Job has finished 1.srv\n")
        );
        assert_eq!(command_error_line("qsub", 99), "qsub: Error 99\n");
    }

    #[test]
    fn table_codes_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for (code, _) in ERROR_TEXTS {
            assert!(seen.insert(code), "{code}");
        }
    }

    proptest! {
        #[test]
        fn exit_code_is_a_byte(code in any::<i32>()) {
            let e = exit_code(code);
            prop_assert!((0..=255).contains(&e));
        }
    }
}

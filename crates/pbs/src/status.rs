//! The status data every PBS output form is drawn from, as PBS's `batch_status` is.
//!
//! A server answers a status request with a list of objects (jobs, queues, nodes or servers),
//! each a name and an ordered list of attributes; an attribute may carry a resource name
//! (`Resource_List.ncpus`). `qstat` in all its forms, `qstat -F json`, `pbsnodes` and the API
//! all render this one model.
//!
//! The attribute orders below are the orders in which a PBS server returns attributes: the index
//! order of the attribute definition tables (`src/lib/Libattr/master_*_attr_def.xml` in
//! OpenPBS), with the resources of one attribute sorted by name (the server keeps resource lists
//! sorted with `strcmp`, `add_resource_entry` in `src/lib/Libattr/attr_fn_resc.c`).

use serde::{Deserialize, Serialize};

/// One attribute of a status object: `name[.resource] = value`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Attribute {
    /// The attribute name, `Resource_List`.
    pub name: String,
    /// The resource name for resource attributes, `ncpus` in `Resource_List.ncpus`.
    pub resource: Option<String>,
    /// The value exactly as the server encodes it (times as seconds since the epoch).
    pub value: String,
}

impl Attribute {
    /// A plain attribute `name = value`.
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        Attribute {
            name: name.into(),
            resource: None,
            value: value.into(),
        }
    }

    /// A resource attribute `name.resource = value`.
    pub fn with_resource(
        name: impl Into<String>,
        resource: impl Into<String>,
        value: impl Into<String>,
    ) -> Self {
        Attribute {
            name: name.into(),
            resource: Some(resource.into()),
            value: value.into(),
        }
    }

    /// The name as PBS prints it: `name` or `name.resource`.
    ///
    /// ```
    /// use hpcbox_pbs::status::Attribute;
    /// assert_eq!(Attribute::with_resource("Resource_List", "ncpus", "4").full_name(), "Resource_List.ncpus");
    /// ```
    pub fn full_name(&self) -> String {
        match &self.resource {
            Some(resc) => format!("{}.{}", self.name, resc),
            None => self.name.clone(),
        }
    }
}

/// One object of a status reply: a job (name = full job id), a queue, a node or a server.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusObject {
    /// The full job id, queue, node or server name.
    pub name: String,
    /// The attributes in the order the server returns them.
    pub attrs: Vec<Attribute>,
}

impl StatusObject {
    /// An object with no attributes yet.
    pub fn new(name: impl Into<String>) -> Self {
        StatusObject {
            name: name.into(),
            attrs: Vec::new(),
        }
    }

    /// Appends `name = value` and returns the object (builder style).
    pub fn with(mut self, name: &str, value: impl Into<String>) -> Self {
        self.attrs.push(Attribute::new(name, value));
        self
    }

    /// Appends `name.resource = value` and returns the object (builder style).
    pub fn with_resource(mut self, name: &str, resource: &str, value: impl Into<String>) -> Self {
        self.attrs
            .push(Attribute::with_resource(name, resource, value));
        self
    }

    /// The value of the first attribute `name` that has no resource.
    ///
    /// ```
    /// use hpcbox_pbs::status::StatusObject;
    /// let job = StatusObject::new("1.srv").with("job_state", "R");
    /// assert_eq!(job.get("job_state"), Some("R"));
    /// assert_eq!(job.get("queue"), None);
    /// ```
    pub fn get(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|a| a.name == name && a.resource.is_none())
            .map(|a| a.value.as_str())
    }

    /// The value of the first attribute `name.resource`.
    ///
    /// ```
    /// use hpcbox_pbs::status::StatusObject;
    /// let job = StatusObject::new("1.srv").with_resource("Resource_List", "ncpus", "4");
    /// assert_eq!(job.get_resource("Resource_List", "ncpus"), Some("4"));
    /// ```
    pub fn get_resource(&self, name: &str, resource: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|a| a.name == name && a.resource.as_deref() == Some(resource))
            .map(|a| a.value.as_str())
    }

    /// Removes every attribute `name` (with or without a resource).
    ///
    /// ```
    /// use hpcbox_pbs::status::StatusObject;
    /// let mut job = StatusObject::new("1.srv").with("exec_host", "n1/0").with("queue", "q");
    /// job.remove("exec_host");
    /// assert_eq!((job.get("exec_host"), job.get("queue")), (None, Some("q")));
    /// ```
    pub fn remove(&mut self, name: &str) {
        self.attrs.retain(|a| a.name != name);
    }

    /// Sorts the attributes into `order` (see [`sort_attributes`]).
    pub fn sort_attributes(&mut self, order: &[&str]) {
        sort_attributes(&mut self.attrs, order);
    }

    /// Sets `name[.resource] = value`: replaces the attribute's value, or adds the attribute
    /// at its place in `order`.
    ///
    /// ```
    /// use hpcbox_pbs::status::{StatusObject, JOB_ATTRIBUTE_ORDER};
    /// let mut job = StatusObject::new("1.srv").with("Job_Name", "a").with("queue", "workq");
    /// job.set("job_state", None, "R", JOB_ATTRIBUTE_ORDER);
    /// job.set("Job_Name", None, "b", JOB_ATTRIBUTE_ORDER);
    /// let names: Vec<String> = job.attrs.iter().map(|a| a.full_name()).collect();
    /// assert_eq!(names, ["Job_Name", "job_state", "queue"]);
    /// assert_eq!(job.get("Job_Name"), Some("b"));
    /// ```
    pub fn set(
        &mut self,
        name: &str,
        resource: Option<&str>,
        value: impl Into<String>,
        order: &[&str],
    ) {
        let value = value.into();
        let existing = self
            .attrs
            .iter_mut()
            .find(|a| a.name == name && a.resource.as_deref() == resource);
        match existing {
            Some(attr) => attr.value = value,
            None => {
                self.attrs.push(match resource {
                    Some(resource) => Attribute::with_resource(name, resource, value),
                    None => Attribute::new(name, value),
                });
                self.sort_attributes(order);
            }
        }
    }
}

/// `Variable_List`'s entries: split at commas not escaped by `\` (the `\` is dropped), each at
/// its first `=` (an entry without one has an empty value); a trailing comma adds no entry.
///
/// ```
/// use hpcbox_pbs::status::{join_variable_list, split_variable_list};
/// let pairs = split_variable_list("A=1,B=x\\,y=z,C");
/// assert_eq!(pairs, [("A".into(), "1".into()), ("B".into(), "x,y=z".into()), ("C".into(), String::new())]);
/// assert_eq!(join_variable_list(&pairs), "A=1,B=x\\,y=z,C=");
/// ```
pub fn split_variable_list(value: &str) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    let mut entry = String::new();
    let mut chars = value.chars().peekable();
    let mut push = |entry: &mut String| {
        let text = std::mem::take(entry);
        let (name, value) = text.split_once('=').unwrap_or((&text, ""));
        pairs.push((name.to_string(), value.to_string()));
    };
    // A final comma ends the list rather than starting an empty entry.
    let mut open = false;
    while let Some(ch) = chars.next() {
        open = ch != ',';
        match ch {
            '\\' if chars.peek() == Some(&',') => entry.push(chars.next().unwrap_or(',')),
            ',' => push(&mut entry),
            _ => entry.push(ch),
        }
    }
    if open {
        push(&mut entry);
    }
    pairs
}

/// `Variable_List`'s text for `pairs`: `name=value` joined by commas, commas in values escaped.
pub fn join_variable_list(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(name, value)| format!("{name}={}", value.replace(',', "\\,")))
        .collect::<Vec<_>>()
        .join(",")
}

/// Sorts attributes as a PBS server returns them: by the position of their name in `order`
/// (names not in `order` last, keeping their relative order), then the resources of one
/// attribute by byte order of the resource name (a plain attribute before its resources).
///
/// ```
/// use hpcbox_pbs::status::{sort_attributes, Attribute, JOB_ATTRIBUTE_ORDER};
/// let mut attrs = vec![
///     Attribute::new("queue", "workq"),
///     Attribute::with_resource("Resource_List", "select", "1:ncpus=1"),
///     Attribute::new("Job_Name", "run.pbs"),
///     Attribute::with_resource("Resource_List", "ncpus", "1"),
/// ];
/// sort_attributes(&mut attrs, JOB_ATTRIBUTE_ORDER);
/// let names: Vec<String> = attrs.iter().map(|a| a.full_name()).collect();
/// assert_eq!(names, ["Job_Name", "queue", "Resource_List.ncpus", "Resource_List.select"]);
/// ```
pub fn sort_attributes(attrs: &mut [Attribute], order: &[&str]) {
    // Unknown names rank after every known one, grouped by their first appearance.
    let mut unknown: Vec<&str> = Vec::new();
    let ranks: Vec<usize> = attrs
        .iter()
        .map(|a| match order.iter().position(|n| *n == a.name) {
            Some(i) => i,
            None => {
                let i = unknown
                    .iter()
                    .position(|n| *n == a.name)
                    .unwrap_or_else(|| {
                        unknown.push(&a.name);
                        unknown.len() - 1
                    });
                order.len().saturating_add(i)
            }
        })
        .collect();
    let mut keyed: Vec<(usize, Attribute)> = ranks.into_iter().zip(attrs.iter().cloned()).collect();
    keyed.sort_by(|(ra, a), (rb, b)| {
        ra.cmp(rb)
            .then_with(|| a.resource.as_deref().cmp(&b.resource.as_deref()))
    });
    for (slot, (_, attr)) in attrs.iter_mut().zip(keyed) {
        *slot = attr;
    }
}

/// Job attributes in the order a PBS server returns them and `qstat -f` prints them: the index
/// order of OpenPBS `src/lib/Libattr/master_job_attr_def.xml` (master cd7ab5e). Attributes
/// flagged hidden (`*_acct`, `*_orig`, `resources_used_update`, `exec_vnode_deallocated`) are
/// listed too so that their place is known; the server never returns them to clients.
pub const JOB_ATTRIBUTE_ORDER: &[&str] = &[
    "Job_Name",
    "Job_Owner",
    "resources_used",
    "resources_used_acct",
    "resources_used_update",
    "job_state",
    "resv",
    "queue",
    "server",
    "Account_Name",
    "Checkpoint",
    "ctime",
    "depend",
    "Error_Path",
    "exec_host",
    "exec_host2",
    "exec_host_acct",
    "exec_host_orig",
    "exec_vnode",
    "exec_vnode_acct",
    "exec_vnode_deallocated",
    "exec_vnode_orig",
    "Execution_Time",
    "group_list",
    "Hold_Types",
    "interactive",
    "Join_Path",
    "Keep_Files",
    "Mail_Points",
    "Mail_Users",
    "mtime",
    "no_stdio_sockets",
    "Output_Path",
    "Priority",
    "qtime",
    "Remove_Files",
    "Rerunable",
    "Resource_List",
    "Resource_List_orig",
    "Resource_List_acct",
    "schedselect",
    "schedselect_orig",
    "stime",
    "obittime",
    "session_id",
    "Shell_Path_List",
    "sandbox",
    "jobdir",
    "stagein",
    "stageout",
    "substate",
    "User_List",
    "Variable_List",
    "euser",
    "egroup",
    "hashname",
    "hop_count",
    "queue_rank",
    "queue_type",
    "sched_hint",
    "security",
    "comment",
    "cookie",
    "alt_id",
    "alt_id2",
    "etime",
    "reserve_ID",
    "last_context_refresh",
    "gridname",
    "umask",
    "block",
    "cred",
    "run_count",
    "accounting_id",
    "eligible_time",
    "accrue_type",
    "sample_starttime",
    "job_kill_delay",
    "Stageout_status",
    "Exit_status",
    "Submit_arguments",
    "executable",
    "argument_list",
    "prov_vnode",
    "array",
    "array_id",
    "array_index",
    "array_state_count",
    "array_indices_submitted",
    "array_indices_remaining",
    "estimated",
    "destination",
    "node_set",
    "history_timestamp",
    "project",
    "forward_x11_cookie",
    "forward_x11_port",
    "ptime",
    "run_version",
    "gui",
    "topjob",
    "topjob_ineligible",
    "resources_released",
    "resource_released_list",
    "release_nodes_on_stageout",
    "tolerate_node_failures",
    "Submit_Host",
    "credential_id",
    "credential_validity",
    "create_resv_from_job",
    "max_run_subjobs",
];

/// Node (vnode) attributes in the order `pbsnodes -a` prints them: the index order of OpenPBS
/// `src/lib/Libattr/master_node_attr_def.xml` (master cd7ab5e).
pub const NODE_ATTRIBUTE_ORDER: &[&str] = &[
    "Mom",
    "Port",
    "pbs_version",
    "ntype",
    "state",
    "pcpus",
    "Priority",
    "jobs",
    "max_running",
    "max_user_run",
    "max_group_run",
    "no_tasks",
    "pnames",
    "resv",
    "resources_available",
    "resources_assigned",
    "queue",
    "comment",
    "resv_enable",
    "no_multinode_jobs",
    "sharing",
    "provision_enable",
    "current_aoe",
    "in_multivnode_host",
    "maintenance_jobs",
    "license",
    "license_info",
    "topology_info",
    "vnode_pool",
    "power_provisioning",
    "current_eoe",
    "partition",
    "poweroff_eligible",
    "last_state_change_time",
    "last_used_time",
];

/// Queue attributes in the order `qstat -Qf` prints them: the index order of OpenPBS
/// `src/lib/Libattr/master_queue_attr_def.xml` (master cd7ab5e).
pub const QUEUE_ATTRIBUTE_ORDER: &[&str] = &[
    "queue_type",
    "Priority",
    "max_queuable",
    "total_jobs",
    "state_count",
    "max_running",
    "max_queued",
    "max_queued_res",
    "acl_host_enable",
    "acl_hosts",
    "acl_user_enable",
    "acl_users",
    "from_route_only",
    "resources_max",
    "resources_min",
    "resources_default",
    "require_cred_enable",
    "require_cred",
    "max_array_size",
    "comment",
    "acl_group_enable",
    "acl_groups",
    "checkpoint_min",
    "rendezvous_retry",
    "reserved_expedite",
    "reserved_sync",
    "default_chunk",
    "resources_available",
    "resources_assigned",
    "kill_delay",
    "max_user_run",
    "max_group_run",
    "max_run",
    "max_run_res",
    "max_run_soft",
    "max_run_res_soft",
    "hasnodes",
    "max_user_res",
    "max_group_res",
    "max_user_run_soft",
    "max_group_run_soft",
    "max_user_res_soft",
    "max_group_res_soft",
    "node_group_key",
    "backfill_depth",
    "route_destinations",
    "alt_router",
    "route_held_jobs",
    "route_waiting_jobs",
    "route_retry_time",
    "route_lifetime",
    "enabled",
    "started",
    "queued_jobs_threshold",
    "queued_jobs_threshold_res",
    "partition",
];

/// Server attributes in the order `qstat -Bf` prints them: the index order of OpenPBS
/// `src/lib/Libattr/master_svr_attr_def.xml` (master cd7ab5e).
pub const SERVER_ATTRIBUTE_ORDER: &[&str] = &[
    "server_state",
    "server_host",
    "scheduling",
    "max_running",
    "max_queued",
    "max_queued_res",
    "max_run",
    "max_run_res",
    "max_run_soft",
    "max_run_res_soft",
    "max_user_run",
    "max_group_run",
    "max_user_res",
    "max_group_res",
    "max_user_run_soft",
    "max_group_run_soft",
    "max_user_res_soft",
    "max_group_res_soft",
    "pnames",
    "total_jobs",
    "state_count",
    "acl_host_enable",
    "acl_hosts",
    "acl_host_moms_enable",
    "acl_resv_host_enable",
    "acl_resv_hosts",
    "acl_resv_group_enable",
    "acl_resv_groups",
    "acl_user_enable",
    "acl_users",
    "acl_resv_user_enable",
    "acl_resv_users",
    "acl_roots",
    "managers",
    "operators",
    "default_queue",
    "log_events",
    "mailer",
    "mail_from",
    "query_other_jobs",
    "resources_available",
    "resources_default",
    "default_chunk",
    "resources_max",
    "resources_assigned",
    "resources_cost",
    "system_cost",
    "scheduler_iteration",
    "comment",
    "default_node",
    "node_pack",
    "flatuid",
    "resv_enable",
    "node_fail_requeue",
    "max_array_size",
    "resend_term_delay",
    "require_cred_enable",
    "require_cred",
    "node_group_enable",
    "node_group_key",
    "default_qdel_arguments",
    "default_qsub_arguments",
    "rpp_retry",
    "rpp_highwater",
    "pbs_license_info",
    "pbs_license_min",
    "pbs_license_max",
    "pbs_license_linger_time",
    "license_count",
    "pbs_version",
    "job_sort_formula",
    "eligible_time_enable",
    "reserve_retry_time",
    "reserve_retry_init",
    "job_history_enable",
    "job_history_duration",
    "provision_enable",
    "max_concurrent_provision",
    "provision_timeout",
    "resv_post_processing_time",
    "backfill_depth",
    "clear_topjob_estimates_enable",
    "job_requeue_timeout",
    "python_restart_max_hooks",
    "python_restart_max_objects",
    "python_restart_min_interval",
    "queued_jobs_threshold",
    "queued_jobs_threshold_res",
    "jobscript_max_size",
    "restrict_res_to_release_on_suspend",
    "power_provisioning",
    "show_hidden_attribs",
    "sync_mom_hookfiles_timeout",
    "rpp_max_pkt_check",
    "max_job_sequence_id",
    "has_runjob_hook",
    "acl_krb_realm_enable",
    "acl_krb_realms",
    "acl_krb_submit_realms",
    "cred_renew_enable",
    "cred_renew_tool",
    "cred_renew_period",
    "cred_renew_cache_period",
];

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn get_ignores_resource_attributes() {
        let job = StatusObject::new("1.srv")
            .with_resource("comment", "x", "no")
            .with("comment", "yes");
        assert_eq!(job.get("comment"), Some("yes"));
        assert_eq!(job.get_resource("comment", "x"), Some("no"));
        assert_eq!(job.get_resource("comment", "y"), None);
    }

    #[test]
    fn unknown_attributes_go_last_in_their_order() {
        let mut attrs = vec![
            Attribute::new("zeta", "1"),
            Attribute::new("alpha", "2"),
            Attribute::new("Submit_Host", "h"),
            Attribute::new("Job_Name", "n"),
        ];
        sort_attributes(&mut attrs, JOB_ATTRIBUTE_ORDER);
        let names: Vec<&str> = attrs.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["Job_Name", "Submit_Host", "zeta", "alpha"]);
    }

    #[test]
    fn resources_sort_by_byte_order() {
        let mut job = StatusObject::new("1.srv")
            .with_resource("resources_used", "walltime", "00:00:01")
            .with_resource("resources_used", "cput", "00:00:00")
            .with_resource("resources_used", "cpupercent", "0")
            .with("Job_Owner", "u@h");
        job.sort_attributes(JOB_ATTRIBUTE_ORDER);
        let names: Vec<String> = job.attrs.iter().map(Attribute::full_name).collect();
        assert_eq!(
            names,
            [
                "Job_Owner",
                "resources_used.cpupercent",
                "resources_used.cput",
                "resources_used.walltime"
            ]
        );
    }

    #[test]
    fn orders_have_no_duplicates() {
        for order in [
            JOB_ATTRIBUTE_ORDER,
            NODE_ATTRIBUTE_ORDER,
            QUEUE_ATTRIBUTE_ORDER,
            SERVER_ATTRIBUTE_ORDER,
        ] {
            let mut seen = std::collections::HashSet::new();
            for name in order {
                assert!(seen.insert(name), "{name} twice");
            }
        }
    }

    proptest! {
        #[test]
        fn sorting_is_idempotent_and_keeps_every_attribute(
            names in proptest::collection::vec(
                prop_oneof![
                    Just("Job_Name".to_string()),
                    Just("Resource_List".to_string()),
                    Just("queue".to_string()),
                    "[a-z]{1,3}",
                ],
                0..12,
            ),
            rescs in proptest::collection::vec(proptest::option::of("[a-z]{1,3}"), 12),
        ) {
            let mut attrs: Vec<Attribute> = names
                .iter()
                .zip(rescs.iter())
                .map(|(n, r)| Attribute { name: n.clone(), resource: r.clone(), value: String::new() })
                .collect();
            let before = attrs.len();
            sort_attributes(&mut attrs, JOB_ATTRIBUTE_ORDER);
            let once = attrs.clone();
            sort_attributes(&mut attrs, JOB_ATTRIBUTE_ORDER);
            prop_assert_eq!(attrs.len(), before);
            prop_assert_eq!(once, attrs);
        }
    }
}

//! The server's answers to clients: submissions, status, and actions on jobs, nodes and queues.

use super::*;

impl Core {
    /// Queues a job for `user` and returns its id once it is durable.
    pub fn submit(
        &mut self,
        req: &SubmitRequest,
        user: &str,
        uid: u32,
        now: i64,
    ) -> Answer<String> {
        let queue = req
            .options
            .destination()
            .map_err(|e| {
                ApiError::with_text(PbsErrno::UnknownQueue.code(), e.to_string().trim_end())
            })?
            .queue
            .unwrap_or_else(|| DEFAULT_QUEUE.to_string());
        if !self.queues.contains_key(&queue) {
            return Err(err(PbsErrno::UnknownQueue));
        }
        if req.options.interactive && req.interactive.is_none() {
            return Err(ApiError::with_text(
                PbsErrno::BadAttributeValue.code(),
                "an interactive job needs the address of its qsub",
            ));
        }
        let array = req.options.array.is_some();
        let server = self.name.clone();
        let (defs, nodes) = (&self.defs, &self.nodes);
        let stored = self
            .store
            .submit(|seq| {
                let mut job_id = JobId::new(seq, server.as_str());
                if array {
                    job_id.array = ArrayPart::Whole;
                }
                build_job(req, &job_id, &queue, user, uid, now, defs, nodes)
            })
            .map_err(|e| ApiError::with_text(PbsErrno::System.code(), e.to_string()))?;
        let (seq, job) = stored?;
        if let Err(e) = self.sched.apply(Event::Submit(Box::new(job.spec.clone()))) {
            // Refused by the scheduler (a dependency on an unknown job, …): not queued after all.
            let _ = self.store.remove_job(seq);
            return Err(match e {
                hpcbox_sched::SchedError::UnknownJob(on) => ApiError::with_text(
                    PbsErrno::UnknownJobId.code(),
                    format!("{} {on}.{}", PbsErrno::UnknownJobId.text(), self.name),
                ),
                other => ApiError::with_text(PbsErrno::BadAttributeValue.code(), other.to_string()),
            });
        }
        let id = job.attrs.name.clone();
        self.jobs.insert(seq, job);
        Ok(id)
    }

    /// `qstat`: the jobs asked for (all when none), with an error per unknown id; with
    /// `subjobs` (`qstat -t`) an array's subjobs follow it.
    pub fn status(&self, req: &StatusRequest) -> Vec<StatusItem> {
        let shown = |attrs: &StatusObject| -> StatusItem {
            if req.attributes.is_empty() {
                return StatusItem::Job(attrs.clone());
            }
            let mut selected = StatusObject::new(attrs.name.clone());
            selected.attrs = attrs
                .attrs
                .iter()
                .filter(|a| req.attributes.contains(&a.name))
                .cloned()
                .collect();
            StatusItem::Job(selected)
        };
        let expand = |job: &Job| -> Vec<StatusItem> {
            let mut items = vec![shown(&job.attrs)];
            if let (true, Some(range)) = (req.subjobs, job.spec.array) {
                items.extend(
                    range
                        .indices()
                        .filter_map(|i| job.subjob_view(i))
                        .map(|view| shown(&view)),
                );
            }
            items
        };
        if req.ids.is_empty() {
            return self
                .jobs
                .values()
                .filter(|job| req.history || !job.finished)
                .flat_map(expand)
                .collect();
        }
        let mut items = Vec::new();
        for given in &req.ids {
            match self.locate(given) {
                Err(error) => items.push(StatusItem::Error {
                    id: self.full_id(given),
                    error,
                }),
                Ok((job, _)) if job.finished && !req.history => items.push(StatusItem::Error {
                    id: self.full_id(given),
                    error: err(PbsErrno::HistoryJob),
                }),
                Ok((job, Some(index))) => {
                    if let Some(view) = job.subjob_view(index) {
                        items.push(shown(&view));
                    }
                }
                Ok((job, None)) => items.extend(expand(job)),
            }
        }
        items
    }

    /// `qdel`, `qhold`, `qrls`, `qsig` of one job, on behalf of `user` (`uid` 0 may act on any).
    pub fn act(&mut self, id: &str, action: &Action, user: &str, uid: u32, now: i64) -> Answer<()> {
        let (job, index) = self.locate(id)?;
        let seq = job.seq;
        if index.is_some() {
            return self.act_on_subjob(seq, index, action, user);
        }
        if job.finished {
            return Err(err(PbsErrno::HistoryJob));
        }
        if uid != 0 && job.uid != uid {
            return Err(err(PbsErrno::Permission));
        }
        match action {
            Action::Delete { force } => self.delete(seq, user, *force, now),
            Action::Hold { .. } => self.hold(seq, true, now),
            Action::Release { .. } => self.hold(seq, false, now),
            Action::Signal { signal } => self.signal(seq, signal),
            Action::Alter { options } => self.alter(seq, options, now),
        }
    }

    /// `qalter`: the job is rebuilt from its submission with `delta`'s options over it, as if
    /// they had been on its `qsub` command line; only while no part of it has started.
    pub(super) fn alter(&mut self, seq: u64, delta: &QsubOptions, now: i64) -> Answer<()> {
        let job = &self.jobs[&seq];
        if job.run.is_some() || !job.subjobs.is_empty() {
            return Err(err(PbsErrno::ModifyWhileRunning));
        }
        let Some(mut request) = job.request.clone() else {
            return Err(ApiError::with_text(
                PbsErrno::System.code(),
                "this job was submitted before hpcbox kept submissions; it cannot be altered",
            ));
        };
        request.options = QsubOptions::merge(&request.options, delta);
        request.script = job.script.clone();
        let id: JobId = job
            .attrs
            .name
            .parse()
            .map_err(|_| err(PbsErrno::UnknownJobId))?;
        let queue = job.attrs.get("queue").unwrap_or(DEFAULT_QUEUE).to_string();
        let ctime = job
            .attrs
            .get("ctime")
            .and_then(|t| t.parse().ok())
            .unwrap_or(now);
        let (owner, uid) = (job.owner.clone(), job.uid);
        let mut rebuilt = build_job(
            &request,
            &id,
            &queue,
            &owner,
            uid,
            ctime,
            &self.defs,
            &self.nodes,
        )?;
        let alter = hpcbox_sched::Alter {
            priority: Some(rebuilt.spec.priority),
            walltime: Some(rebuilt.spec.walltime),
            select: Some(rebuilt.spec.select.clone()),
            place: Some(rebuilt.spec.place),
        };
        self.sched
            .apply(Event::Alter {
                job: SchedId::job(seq),
                alter,
            })
            .map_err(|e| ApiError::with_text(PbsErrno::BadAttributeValue.code(), e.to_string()))?;
        let job = self.jobs.get_mut(&seq).expect("job exists");
        for name in ["job_state", "substate", "Hold_Types", "comment"] {
            match job.attrs.get(name) {
                Some(value) => set(&mut rebuilt.attrs, name, value),
                None => rebuilt.attrs.attrs.retain(|a| a.name != name),
            }
        }
        set(&mut rebuilt.attrs, "mtime", now.to_string());
        rebuilt.spec.hold = job.spec.hold;
        job.attrs = rebuilt.attrs;
        job.spec = rebuilt.spec;
        job.request = rebuilt.request;
        self.persist(seq);
        Ok(())
    }

    /// `qdel` / `qsig` of one subjob; holds apply to whole arrays only, as in PBS.
    pub(super) fn act_on_subjob(
        &mut self,
        seq: u64,
        index: Option<u32>,
        action: &Action,
        user: &str,
    ) -> Answer<()> {
        let job = self.jobs.get_mut(&seq).expect("job exists");
        let Some(task) = job.task(index) else {
            return match action {
                Action::Delete { .. } => {
                    let id = SchedId { seq, index };
                    self.sched
                        .apply(Event::Delete(id))
                        .map_err(|e| ApiError::with_text(PbsErrno::BadState.code(), e.to_string()))
                }
                _ => Err(err(PbsErrno::BadState)),
            };
        };
        if *task.finished {
            return Err(err(PbsErrno::HistoryJob));
        }
        let Some(node) = task.run.as_ref().map(|run| run.node.clone()) else {
            return Err(err(PbsErrno::BadState));
        };
        let job_id = task.attrs.name.clone();
        let message = match action {
            Action::Delete { force } => {
                *task.deleted_by = Some(user.to_string());
                ServerMessage::Kill {
                    job_id,
                    grace: if *force { 0 } else { self.kill_delay },
                }
            }
            Action::Signal { signal } => ServerMessage::Signal {
                job_id,
                signal: signal.clone(),
            },
            Action::Hold { .. } | Action::Release { .. } | Action::Alter { .. } => {
                return Err(err(PbsErrno::BadState))
            }
        };
        self.outbox.push((node, message));
        self.persist(seq);
        Ok(())
    }

    pub(super) fn delete(&mut self, seq: u64, user: &str, force: bool, now: i64) -> Answer<()> {
        if self.jobs[&seq].is_array() {
            return self.delete_array(seq, user, force, now);
        }
        let running_on = self.jobs[&seq].run.as_ref().map(|run| run.node.clone());
        if let Some(node) = &running_on {
            let job_id = self.jobs[&seq].attrs.name.clone();
            let grace = if force { 0 } else { self.kill_delay };
            self.outbox
                .push((node.clone(), ServerMessage::Kill { job_id, grace }));
        }
        if running_on.is_some() && !force {
            // It ends when its agent reports the kill done.
            self.jobs.get_mut(&seq).expect("job exists").deleted_by = Some(user.to_string());
            self.persist(seq);
            return Ok(());
        }
        // Queued, or forced: over now.
        let _ = self.sched.apply(Event::Delete(SchedId::job(seq)));
        let job = self.jobs.get_mut(&seq).expect("job exists");
        if running_on.is_some() {
            let terminated = JobEnd::Terminated {
                by: Some(user.to_string()),
            };
            if let Some(comment) = finish_comment(job.attrs.get("comment"), &terminated) {
                set(&mut job.attrs, "comment", comment);
            }
        }
        end_job(job, substate::TERMINATED, now);
        self.persist(seq);
        Ok(())
    }

    /// Deletes an array: its queued subjobs go at once, its running ones are killed.
    pub(super) fn delete_array(
        &mut self,
        seq: u64,
        user: &str,
        force: bool,
        now: i64,
    ) -> Answer<()> {
        let _ = self.sched.apply(Event::Delete(SchedId::job(seq)));
        let grace = if force { 0 } else { self.kill_delay };
        let job = self.jobs.get_mut(&seq).expect("job exists");
        for (&index, sub) in job.subjobs.iter_mut().filter(|(_, sub)| !sub.finished) {
            if let Some(run) = &sub.run {
                job.changed.insert(index);
                sub.deleted_by = Some(user.to_string());
                let kill = ServerMessage::Kill {
                    job_id: sub.attrs.name.clone(),
                    grace,
                };
                self.outbox.push((run.node.clone(), kill));
            }
        }
        end_job(job, substate::TERMINATED, now);
        self.persist(seq);
        Ok(())
    }

    pub(super) fn hold(&mut self, seq: u64, hold: bool, now: i64) -> Answer<()> {
        let job = self.jobs.get_mut(&seq).expect("job exists");
        if job.run.is_some() {
            return Err(err(PbsErrno::BadState));
        }
        let event = if hold {
            Event::Hold(SchedId::job(seq))
        } else {
            Event::Release(SchedId::job(seq))
        };
        self.sched
            .apply(event)
            .map_err(|e| ApiError::with_text(PbsErrno::BadState.code(), e.to_string()))?;
        job.spec.hold = hold;
        set(&mut job.attrs, "Hold_Types", if hold { "u" } else { "n" });
        let (state, sub) = if hold {
            ("H", substate::HELD)
        } else {
            ("Q", substate::QUEUED)
        };
        set(&mut job.attrs, "job_state", state);
        set(&mut job.attrs, "substate", sub.to_string());
        set(&mut job.attrs, "mtime", now.to_string());
        self.persist(seq);
        Ok(())
    }

    pub(super) fn signal(&mut self, seq: u64, signal: &str) -> Answer<()> {
        let job = &self.jobs[&seq];
        let Some(run) = &job.run else {
            return Err(err(PbsErrno::BadState));
        };
        self.outbox.push((
            run.node.clone(),
            ServerMessage::Signal {
                job_id: job.attrs.name.clone(),
                signal: signal.to_string(),
            },
        ));
        Ok(())
    }

    /// `pbsnodes -a`: every vnode's attributes.
    pub fn node_status(&self) -> Vec<StatusObject> {
        self.nodes
            .iter()
            .map(|(name, node)| self.node_object(name, node))
            .collect()
    }

    pub(super) fn node_object(&self, name: &str, node: &Node) -> StatusObject {
        let view = self.sched.node(name);
        let state = match (&view, node.connected) {
            (_, false) if node.offline => "down,offline".to_string(),
            (_, false) => "down".to_string(),
            (Some(view), true) => view.state.to_string(),
            (None, true) => "state-unknown".to_string(),
        };
        let jobs: Vec<String> = self
            .jobs
            .values()
            .filter(|job| job.run.as_ref().is_some_and(|run| run.node == name) && !job.finished)
            .map(|job| format!("{}/0", job.attrs.name))
            .collect();
        let r = &node.report;
        let mut obj = StatusObject::new(name)
            .with("Mom", r.host.as_str())
            .with("Port", "15002")
            .with("pbs_version", env!("CARGO_PKG_VERSION"))
            .with("ntype", "PBS")
            .with("state", state)
            .with("pcpus", r.ncpus.to_string());
        if !jobs.is_empty() {
            obj = obj.with("jobs", jobs.join(", "));
        }
        obj = obj
            .with_resource("resources_available", "arch", "linux")
            .with_resource("resources_available", "host", r.host.as_str())
            .with_resource("resources_available", "mem", format!("{}kb", r.mem_kb))
            .with_resource("resources_available", "ncpus", r.ncpus.to_string())
            .with_resource("resources_available", "vnode", name);
        if let Some(view) = &view {
            let used = |total: u64, free: u64| total.saturating_sub(free);
            obj = obj
                .with_resource(
                    "resources_assigned",
                    "mem",
                    format!("{}kb", used(view.total.mem, view.free.mem)),
                )
                .with_resource(
                    "resources_assigned",
                    "ncpus",
                    used(view.total.ncpus, view.free.ncpus).to_string(),
                );
        }
        if let Some(comment) = &node.comment {
            obj = obj.with("comment", comment.as_str());
        }
        obj.with("resv_enable", "True")
            .with("sharing", "default_shared")
            .with("last_state_change_time", node.state_changed.to_string())
    }

    /// `pbsnodes -o` (offline) and `-r` (back in service) of vnode `name`, with an optional
    /// comment; root only, as PBS allows managers and operators only.
    pub fn set_node_offline(
        &mut self,
        name: &str,
        offline: bool,
        comment: Option<String>,
        uid: u32,
        now: i64,
    ) -> Answer<()> {
        if uid != 0 {
            return Err(err(PbsErrno::Permission));
        }
        let Some(node) = self.nodes.get_mut(name) else {
            return Err(err(PbsErrno::UnknownNode));
        };
        node.offline = offline;
        if comment.is_some() {
            node.comment = comment;
        }
        node.state_changed = now;
        let event = match (offline, node.connected) {
            (true, _) => Event::NodeOffline(name.to_string()),
            (false, true) => Event::NodeUp(name.to_string()),
            (false, false) => Event::NodeDown(name.to_string()),
        };
        let _ = self.sched.apply(event);
        let _ = self.store.put_object(ObjectKind::Node, name, &*node);
        Ok(())
    }

    /// `qstat -Q`: every queue's attributes.
    pub fn queue_status(&self) -> Vec<StatusObject> {
        self.queues
            .values()
            .map(|queue| {
                let jobs: Vec<&Job> = self
                    .jobs
                    .values()
                    .filter(|j| !j.finished && j.attrs.get("queue") == Some(queue.name.as_str()))
                    .collect();
                StatusObject::new(queue.name.as_str())
                    .with("queue_type", "Execution")
                    .with("total_jobs", jobs.len().to_string())
                    .with("state_count", state_count(jobs.iter().copied()))
                    .with("enabled", if queue.enabled { "True" } else { "False" })
                    .with("started", if queue.started { "True" } else { "False" })
            })
            .collect()
    }

    /// `qstat -B`: the server's attributes.
    pub fn server_status(&self) -> StatusObject {
        let total = self.jobs.values().filter(|j| !j.finished).count();
        let unfinished = self.jobs.values().filter(|j| !j.finished);
        StatusObject::new(self.name.as_str())
            .with("server_state", "Active")
            .with("server_host", self.name.as_str())
            .with("scheduling", "True")
            .with("total_jobs", total.to_string())
            .with("state_count", state_count(unfinished))
            .with("default_queue", DEFAULT_QUEUE)
            .with("pbs_version", env!("CARGO_PKG_VERSION"))
            .with("job_history_enable", "True")
            .with(
                "job_history_duration",
                hpcbox_pbs::duration::Duration::from_secs(self.history_seconds).to_string(),
            )
    }

    /// The job an id names, and the subjob index when it names one subjob.
    pub(super) fn locate(&self, given: &str) -> Answer<(&Job, Option<u32>)> {
        let id: JobId = given.parse().map_err(|_| err(PbsErrno::UnknownJobId))?;
        let ours = id
            .server
            .as_deref()
            .is_none_or(|s| s == self.name || s.starts_with(&format!("{}.", self.name)));
        let job = self
            .jobs
            .get(&id.seq)
            .filter(|_| ours)
            .ok_or_else(|| err(PbsErrno::UnknownJobId))?;
        match (id.array, job.spec.array) {
            (ArrayPart::NotArray, None) | (ArrayPart::Whole, Some(_)) => Ok((job, None)),
            (ArrayPart::Index(i), Some(range)) if range.contains(i) => Ok((job, Some(i))),
            _ => Err(err(PbsErrno::UnknownJobId)),
        }
    }

    /// `given` completed with this server's name when it names none.
    pub fn full_id(&self, given: &str) -> String {
        match given.parse::<JobId>() {
            Ok(id) => id.or_server(&self.name).to_string(),
            Err(_) => given.to_string(),
        }
    }
}

/// PBS's `state_count` of `jobs`: how many are in each state.
fn state_count<'a>(jobs: impl Iterator<Item = &'a Job> + Clone) -> String {
    let count = |letter: &str| {
        jobs.clone()
            .filter(|j| j.attrs.get("job_state") == Some(letter))
            .count()
    };
    format!(
        "Transit:0 Queued:{} Held:{} Waiting:{} Running:{} Exiting:{} Begun:0 ",
        count("Q"),
        count("H"),
        count("W"),
        count("R"),
        count("E")
    )
}

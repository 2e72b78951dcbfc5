//! Scheduling cycles and the start of the jobs the scheduler places.

use super::*;

impl Core {
    /// Runs a scheduling cycle at `now` and acts on its decisions: starts go to agents,
    /// comments to the waiting jobs.
    pub fn schedule(&mut self, now: i64) {
        self.purge_history(now);
        self.release_waiting(now);
        for decision in self.sched.cycle(now.max(0) as u64) {
            match decision {
                Decision::Run(start) => self.start(&start, now),
                Decision::Comment { job, comment } => {
                    if let Some(record) = self.jobs.get_mut(&job.seq) {
                        set(&mut record.attrs, "comment", comment.to_string());
                    }
                }
                Decision::Delete { job, reason } => {
                    if let Some(record) = self.jobs.get_mut(&job.seq) {
                        set(&mut record.attrs, "comment", reason.to_string());
                        end_job(record, substate::TERMINATED, now);
                        self.persist(job.seq);
                    }
                }
            }
        }
    }

    /// Jobs in state W whose execution time has come become eligible (Q), unless held.
    /// Looked for once a second (not at every cycle, which looked at every job): times are
    /// whole seconds, and a job whose time has come is never submitted waiting, so none
    /// comes due within a second already looked at.
    pub(super) fn release_waiting(&mut self, now: i64) {
        if now <= self.last_release {
            return;
        }
        self.last_release = now;
        let due: Vec<u64> = self
            .jobs
            .values()
            .filter(|job| !job.finished && job.attrs.get("job_state") == Some("W"))
            .filter(|job| {
                job.attrs
                    .get("Execution_Time")
                    .and_then(|t| t.parse::<i64>().ok())
                    .is_some_and(|at| at <= now)
            })
            .map(|job| job.seq)
            .collect();
        for seq in due {
            let job = self.jobs.get_mut(&seq).expect("job exists");
            let held = job.attrs.get("Hold_Types") != Some("n");
            let (state, sub) = if held {
                ("H", substate::HELD)
            } else {
                let _ = self.sched.apply(Event::Release(SchedId::job(seq)));
                job.spec.hold = false;
                ("Q", substate::QUEUED)
            };
            set(&mut job.attrs, "job_state", state);
            set(&mut job.attrs, "substate", sub.to_string());
            self.persist(seq);
        }
    }

    pub(super) fn start(&mut self, start: &hpcbox_sched::Start, now: i64) {
        let (seq, index) = (start.job.seq, start.job.index);
        let Some(first) = start.chunks.first() else {
            return;
        };
        let node = first.vnode.to_string();
        let exec_vnode = start.exec_vnode();
        let exec_host = start
            .chunks
            .iter()
            .map(|c| {
                let host = &self
                    .nodes
                    .get(&*c.vnode)
                    .map_or(c.vnode.to_string(), |n| n.report.host.clone());
                let slot = c.cpus.first().copied().unwrap_or(0);
                match c.resources.ncpus {
                    1 => format!("{host}/{slot}"),
                    n => format!("{host}/{slot}*{n}"),
                }
            })
            .collect::<Vec<_>>()
            .join("+");
        let cpus = self.machine_cpus(start, &node);
        let mpiprocs = self
            .jobs
            .get(&seq)
            .map(|job| chunk_mpiprocs(&job.attrs))
            .unwrap_or_default();
        let nodefile_hosts: Vec<(String, u32)> = start
            .chunks
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let host = self
                    .nodes
                    .get(&*c.vnode)
                    .map_or(c.vnode.to_string(), |n| n.report.host.clone());
                let procs = mpiprocs
                    .get(i)
                    .copied()
                    .unwrap_or(u32::from(c.resources.ncpus > 0));
                (host, procs)
            })
            .collect();
        let Some(job) = self.jobs.get_mut(&seq) else {
            return;
        };
        if let Some(i) = index {
            let sub = SubJob {
                attrs: subjob_attrs(&job.attrs, i),
                run: None,
                finished: false,
                deleted_by: None,
            };
            job.subjobs.insert(i, sub);
            job.changed.insert(i);
            job.unfinished.insert(i);
            refresh_array(job, now);
        }
        let (owner, script, argv) = (job.owner.clone(), job.script.clone(), job.argv.clone());
        let interactive = job.interactive_target().cloned();
        let Some(task) = job.task(index) else {
            return;
        };
        let attrs = task.attrs;
        set(attrs, "job_state", "R");
        set(attrs, "substate", substate::PRERUN.to_string());
        set(attrs, "exec_host", exec_host);
        set(attrs, "exec_vnode", exec_vnode.clone());
        set(attrs, "stime", now.to_string());
        set(attrs, "mtime", now.to_string());
        let runs = attrs
            .get("run_count")
            .and_then(|n| n.parse::<u32>().ok())
            .unwrap_or(0);
        set(attrs, "run_count", (runs + 1).to_string());
        if let Some(comment) = job_run_comment(now, &self.tz, &exec_vnode) {
            set(attrs, "comment", comment);
        }
        *task.run = Some(Run {
            node: node.clone(),
            started: now,
        });
        let hosts: Vec<(&str, u32)> = nodefile_hosts
            .iter()
            .map(|(h, n)| (h.as_str(), *n))
            .collect();
        let mut message = job_start_message(attrs, first, &hpcbox_pbs::jobenv::nodefile(&hosts));
        message.owner = owner;
        message.script = script;
        message.argv = argv;
        message.cpus = cpus;
        message.interactive = interactive;
        self.outbox
            .push((node, ServerMessage::Start(Box::new(message))));
        self.persist(seq);
    }

    /// The machine CPU ids of every chunk of `start` on the host of vnode `first` (all its
    /// ranks start there until remote ranks start through their own agents), for pinning;
    /// empty when some vnode there is unpinned.
    pub(super) fn machine_cpus(&self, start: &hpcbox_sched::Start, first: &str) -> Vec<usize> {
        let Some(host) = self.nodes.get(first).map(|n| n.report.host.as_str()) else {
            return Vec::new();
        };
        let mut cpus = Vec::new();
        for chunk in &start.chunks {
            let Some(node) = self.nodes.get(&*chunk.vnode) else {
                continue;
            };
            if node.report.host != host {
                continue;
            }
            if node.report.cpu_ids.is_empty() {
                return Vec::new();
            }
            for &cpu in &chunk.cpus {
                if let Some(&id) = node.report.cpu_ids.get(cpu as usize) {
                    if !cpus.contains(&id) {
                        cpus.push(id);
                    }
                }
            }
        }
        cpus.sort_unstable();
        cpus
    }
}

//! Handing the scheduler back what runs after a server restart: jobs and arrays the agents
//! kept running are placed where they run, so their vnodes are not given to others.

use std::collections::BTreeSet;

use crate::error::SchedError;
use crate::model::{JobId, JobSpec, RestoredSubjob, SubjobState};
use crate::sched::Scheduler;

impl Scheduler {
    /// Submits a job that already runs and places it on `vnodes` (one per chunk, in select
    /// order), started and confirmed at `at`. Refused, changing nothing, for arrays, unknown
    /// vnodes or a vnode count that does not match the select.
    pub(crate) fn restore(
        &mut self,
        spec: JobSpec,
        vnodes: &[String],
        at: u64,
    ) -> Result<(), SchedError> {
        if spec.array.is_some() {
            return Err(SchedError::Invalid(
                "an array cannot be restored as one job".into(),
            ));
        }
        let placement = self.placement(&spec, vnodes)?;
        let seq = spec.seq;
        self.submit(spec)?;
        self.place_running(JobId::job(seq), &placement, at)
    }

    /// Submits an array with its whole range, then replays its subjobs in index order: ended
    /// ones count as ended, deleted ones as deleted, running ones are placed where they run.
    /// Refused, changing nothing, when the spec is no array, a subjob is outside its range or
    /// listed twice, the started subjobs are not the first indices not deleted, or a running
    /// subjob's vnodes do not fit the select.
    pub(crate) fn restore_array(
        &mut self,
        spec: JobSpec,
        mut subjobs: Vec<RestoredSubjob>,
    ) -> Result<(), SchedError> {
        let Some(range) = spec.array else {
            return Err(SchedError::Invalid(format!(
                "job {} is not an array",
                spec.seq
            )));
        };
        let seq = spec.seq;
        subjobs.sort_by_key(|s| s.index);
        let deleted: BTreeSet<u32> = subjobs
            .iter()
            .filter(|s| s.state == SubjobState::Deleted)
            .map(|s| s.index)
            .collect();
        let started: Vec<&RestoredSubjob> = subjobs
            .iter()
            .filter(|s| s.state != SubjobState::Deleted)
            .collect();
        let expected = range.indices().filter(|i| !deleted.contains(i));
        let in_order = started
            .iter()
            .map(|s| s.index)
            .eq(expected.take(started.len()));
        let unique = subjobs.windows(2).all(|w| w[0].index != w[1].index);
        if !in_order || !unique || !deleted.iter().all(|&i| range.contains(i)) {
            return Err(SchedError::Invalid(format!(
                "array {seq}: its subjobs did not start in index order"
            )));
        }
        let mut placements = Vec::new();
        for subjob in &subjobs {
            if let SubjobState::Running { vnodes, at } = &subjob.state {
                placements.push((subjob.index, self.placement(&spec, vnodes)?, *at));
            }
        }
        self.submit(spec)?;
        for index in deleted {
            self.delete_pending_index(seq, index);
        }
        let mut placements = placements.into_iter();
        for subjob in started {
            let id = JobId::subjob(seq, subjob.index);
            match &subjob.state {
                SubjobState::Ended { ok } => {
                    self.take_index(seq, subjob.index);
                    self.record_end(id, *ok, true);
                }
                SubjobState::Running { .. } => {
                    if let Some((_, placement, at)) = placements.next() {
                        self.place_running(id, &placement, at)?;
                    }
                }
                SubjobState::Deleted => {}
            }
        }
        Ok(())
    }

    /// Each chunk's select term and vnode index, for a job of `spec` running on `vnodes`.
    fn placement(&self, spec: &JobSpec, vnodes: &[String]) -> Result<Vec<(u16, u32)>, SchedError> {
        let terms: Vec<u16> = spec
            .select
            .iter()
            .enumerate()
            .flat_map(|(t, c)| std::iter::repeat_n(t as u16, c.count as usize))
            .collect();
        let nodes: Option<Vec<u32>> = vnodes
            .iter()
            .map(|v| self.node_index.get(v.as_str()).copied())
            .collect();
        match nodes.filter(|n| n.len() == terms.len()) {
            Some(nodes) => Ok(terms.into_iter().zip(nodes).collect()),
            None => Err(SchedError::Invalid(format!(
                "job {} runs on {vnodes:?}, which does not match its select",
                spec.seq
            ))),
        }
    }

    /// Marks the next index of array `seq` as started (it ran while the server was away).
    fn take_index(&mut self, seq: u64, index: u32) {
        if let Some(a) = self.jobs.get_mut(&seq).and_then(|j| j.array.as_mut()) {
            a.take(index);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::model::{
        ArraySpec, ChunkSpec, Config, Event, JobId, JobSpec, NodeSpec, QueueSpec, Resources,
        RestoredSubjob, SubjobState,
    };
    use crate::{Decision, JobState, Scheduler};

    fn two_nodes() -> Scheduler {
        let mut s = Scheduler::new(Config::default());
        for name in ["n1", "n2"] {
            s.apply(Event::AddNode(NodeSpec::new(name, Resources::cpus(1))))
                .unwrap();
        }
        s.apply(Event::SetQueue(QueueSpec::new("workq"))).unwrap();
        s
    }

    fn array(seq: u64, end: u32) -> JobSpec {
        let mut spec = JobSpec::new(seq, vec![ChunkSpec::new(1, Resources::cpus(1))]);
        spec.array = Some(ArraySpec::new(1, end, 1));
        spec
    }

    fn sub(index: u32, state: SubjobState) -> RestoredSubjob {
        RestoredSubjob { index, state }
    }

    fn starts(s: &mut Scheduler, now: u64) -> Vec<(JobId, String)> {
        s.cycle(now)
            .into_iter()
            .filter_map(|d| match d {
                Decision::Run(start) => Some((start.job, start.chunks[0].vnode.to_string())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_restored_array_keeps_its_running_subjobs_placed_and_runs_only_the_rest() {
        let mut s = two_nodes();
        let running = SubjobState::Running {
            vnodes: vec!["n2".into()],
            at: 5,
        };
        s.apply(Event::RestoreArray {
            job: Box::new(array(7, 5)),
            subjobs: vec![
                sub(3, SubjobState::Deleted),
                sub(2, running),
                sub(1, SubjobState::Ended { ok: true }),
            ],
        })
        .unwrap();
        assert_eq!(s.job_state(JobId::subjob(7, 2)), Some(JobState::Running));
        assert_eq!(s.job_state(JobId::subjob(7, 1)), Some(JobState::Finished));
        assert_eq!(s.job_state(JobId::subjob(7, 3)), Some(JobState::Finished));
        // n2 is held by subjob 2: only index 4 starts, on n1.
        assert_eq!(starts(&mut s, 10), [(JobId::subjob(7, 4), "n1".into())]);
        for index in [2, 4] {
            let job = JobId::subjob(7, index);
            s.apply(Event::Finish {
                job,
                exit_status: 0,
            })
            .unwrap();
        }
        assert_eq!(starts(&mut s, 11), [(JobId::subjob(7, 5), "n1".into())]);
        s.apply(Event::Finish {
            job: JobId::subjob(7, 5),
            exit_status: 0,
        })
        .unwrap();
        assert_eq!(s.job_state(JobId::job(7)), Some(JobState::Finished));
    }

    #[test]
    fn an_array_restored_out_of_order_is_refused_and_changes_nothing() {
        let mut s = two_nodes();
        let refused = s.apply(Event::RestoreArray {
            job: Box::new(array(8, 4)),
            subjobs: vec![sub(2, SubjobState::Ended { ok: true })],
        });
        assert!(refused.is_err());
        let misplaced = s.apply(Event::RestoreArray {
            job: Box::new(array(8, 4)),
            subjobs: vec![sub(
                1,
                SubjobState::Running {
                    vnodes: vec!["n9".into()],
                    at: 1,
                },
            )],
        });
        assert!(misplaced.is_err());
        assert_eq!(s.job_state(JobId::job(8)), None);
        s.apply(Event::Submit(Box::new(array(8, 2)))).unwrap();
        assert_eq!(starts(&mut s, 1).len(), 2);
    }
}

//! Golden scenarios, one per policy rule: a tiny complex, a few jobs, cycles; the decisions and
//! comments are snapshotted (tests/snapshots/) and were read line by line.

use hpcbox_sched::{
    Alter, Arrangement, ArraySpec, ChunkSpec, Config, DependKind, Dependency, Event, JobId,
    JobSpec, JobState, NodeSpec, Place, Policy, QueueSpec, Resources, Scheduler, Sharing,
};

const GB: u64 = 1024 * 1024;

/// A scenario: applies events and records every cycle's decisions.
struct Scenario {
    s: Scheduler,
    log: String,
}

impl Scenario {
    fn new(policy: Policy) -> Self {
        let mut s = Scheduler::new(Config {
            policy,
            ..Config::default()
        });
        s.apply(Event::SetQueue(QueueSpec::new("workq"))).unwrap();
        Scenario {
            s,
            log: String::new(),
        }
    }

    fn node(&mut self, name: &str, ncpus: u64, mem_gb: u64) -> &mut Self {
        let r = Resources::new(ncpus, mem_gb * GB, 0);
        self.s
            .apply(Event::AddNode(NodeSpec::new(name, r)))
            .unwrap();
        self
    }

    fn ev(&mut self, e: Event) -> &mut Self {
        self.log.push_str(&format!("> {}\n", describe(&e)));
        if let Err(err) = self.s.apply(e) {
            self.log.push_str(&format!("  refused: {err}\n"));
        }
        self
    }

    fn submit(&mut self, spec: JobSpec) -> &mut Self {
        self.ev(Event::Submit(Box::new(spec)))
    }

    fn finish(&mut self, job: JobId, exit_status: i32) -> &mut Self {
        self.ev(Event::Finish { job, exit_status })
    }

    fn cycle(&mut self, now: u64) -> &mut Self {
        self.log.push_str(&format!("cycle t={now}\n"));
        for d in self.s.cycle(now) {
            self.log.push_str(&format!("  {d}\n"));
        }
        if let Some((job, at)) = self.s.top_job_estimate() {
            self.log
                .push_str(&format!("  top job {job} estimated start {at}\n"));
        }
        self
    }
}

fn describe(e: &Event) -> String {
    match e {
        Event::Submit(j) => {
            let select: Vec<String> = j
                .select
                .iter()
                .map(|c| format!("{}:{}", c.count, c.resources))
                .collect();
            let mut s = format!(
                "submit {} select={} place={:?}:{:?}",
                j.seq,
                select.join("+"),
                j.place.arrangement,
                j.place.sharing
            );
            if let Some(w) = j.walltime {
                s.push_str(&format!(" walltime={w}"));
            }
            if j.priority != 0 {
                s.push_str(&format!(" priority={}", j.priority));
            }
            if j.queue != "workq" {
                s.push_str(&format!(" queue={}", j.queue));
            }
            if j.owner != "user" {
                s.push_str(&format!(" owner={}", j.owner));
            }
            if let Some(a) = j.array {
                s.push_str(&format!(" J={}-{}:{}", a.start, a.end, a.step));
                if let Some(m) = a.max_running {
                    s.push_str(&format!("%{m}"));
                }
            }
            for d in &j.depend {
                s.push_str(&format!(" depend={}:{}", d.kind.name(), d.job));
            }
            if j.hold {
                s.push_str(" hold");
            }
            s
        }
        other => format!("{other:?}"),
    }
}

fn job(seq: u64, count: u32, ncpus: u64) -> JobSpec {
    let mut j = JobSpec::new(seq, vec![ChunkSpec::new(count, Resources::cpus(ncpus))]);
    j.submit_time = seq;
    j
}

fn timed(seq: u64, count: u32, ncpus: u64, walltime: u64) -> JobSpec {
    let mut j = job(seq, count, ncpus);
    j.walltime = Some(walltime);
    j
}

#[test]
fn pbs_comment_texts_for_resources() {
    // OpenPBS's own test (pbs_allpart.py): 2 cpus, one busy.
    let mut t = Scenario::new(Policy::Backfill);
    t.node("n1", 2, 8);
    t.submit(job(1, 1, 1)).cycle(0);
    t.submit(job(2, 2, 1));
    t.submit(job(3, 3, 1));
    let mut mem = job(4, 1, 1);
    mem.select[0].resources.mem = 16 * GB;
    t.submit(mem);
    let mut mem2 = job(5, 1, 1);
    mem2.select[0].resources.mem = 8 * GB;
    mem2.select[0].resources.ncpus = 2;
    t.submit(mem2);
    t.cycle(1);
    insta::assert_snapshot!("pbs_comment_texts_for_resources", t.log);
}

#[test]
fn priority_then_submit_order_fifo() {
    let mut t = Scenario::new(Policy::Fifo);
    t.node("n1", 4, 8);
    t.submit(job(1, 1, 2));
    let mut high = job(2, 1, 4);
    high.priority = 10;
    t.submit(high);
    t.submit(job(3, 1, 2));
    t.submit(job(4, 1, 1));
    t.cycle(10);
    t.finish(JobId::job(2), 0).cycle(20);
    insta::assert_snapshot!("priority_then_submit_order_fifo", t.log);
}

#[test]
fn easy_backfill_short_job_runs_long_job_waits() {
    let mut t = Scenario::new(Policy::Backfill);
    t.node("n1", 4, 8);
    t.submit(timed(1, 1, 2, 100)).cycle(0);
    t.submit(timed(2, 1, 4, 100));
    t.submit(timed(3, 1, 2, 50));
    t.submit(timed(4, 1, 1, 200));
    t.submit(job(5, 1, 1)); // no walltime: planned as five years
    t.cycle(10);
    t.finish(JobId::job(3), 0).cycle(60);
    t.finish(JobId::job(1), 0).cycle(100);
    insta::assert_snapshot!("easy_backfill_short_job_runs_long_job_waits", t.log);
}

#[test]
fn easy_backfill_long_job_on_spare_resources() {
    let mut t = Scenario::new(Policy::Backfill);
    t.node("n1", 4, 8).node("n2", 4, 8);
    t.submit(timed(1, 1, 4, 100)).cycle(0);
    // Needs 6 cpus: reserved at t=100 on n1 (4) and n2 (2); n2 keeps 2 spare.
    t.submit(timed(2, 6, 1, 100));
    t.submit(timed(3, 1, 2, 1000));
    t.submit(timed(4, 1, 2, 1000));
    t.cycle(5);
    insta::assert_snapshot!("easy_backfill_long_job_on_spare_resources", t.log);
}

#[test]
fn placement_free_pack_scatter_excl() {
    let mut t = Scenario::new(Policy::Backfill);
    t.node("n1", 4, 8).node("n2", 4, 8).node("n3", 4, 8);
    let mut pack = job(1, 2, 1);
    pack.place = Place::new(Arrangement::Pack, Sharing::Shared);
    t.submit(pack);
    let mut scatter = job(2, 3, 1);
    scatter.place = Place::new(Arrangement::Scatter, Sharing::Shared);
    t.submit(scatter);
    let mut excl = job(3, 1, 1);
    excl.place = Place::new(Arrangement::Free, Sharing::Excl);
    t.submit(excl);
    t.submit(job(4, 5, 1));
    let mut excl2 = job(5, 1, 1);
    excl2.place = Place::new(Arrangement::Free, Sharing::Excl);
    t.submit(excl2);
    t.cycle(0);
    let states: Vec<String> = ["n1", "n2", "n3"]
        .iter()
        .map(|n| {
            let v = t.s.node(n).unwrap();
            format!(
                "{n} {} free ncpus={} jobs={}",
                v.state, v.free.ncpus, v.jobs
            )
        })
        .collect();
    t.log.push_str(&states.join("\n"));
    insta::assert_snapshot!("placement_free_pack_scatter_excl", t.log);
}

#[test]
fn cpu_ids_are_disjoint_and_reused() {
    let mut t = Scenario::new(Policy::Backfill);
    t.node("n1", 8, 8);
    t.submit(job(1, 1, 3)).submit(job(2, 2, 2)).cycle(0);
    t.finish(JobId::job(1), 0);
    t.submit(job(3, 1, 4)).cycle(1);
    insta::assert_snapshot!("cpu_ids_are_disjoint_and_reused", t.log);
}

#[test]
fn limits_queue_user_server() {
    let mut t = Scenario::new(Policy::Backfill);
    t.node("n1", 16, 8);
    let mut q = QueueSpec::new("small");
    q.max_run = Some(1);
    t.ev(Event::SetQueue(q));
    let mut u = QueueSpec::new("peruser");
    u.max_user_run = Some(1);
    t.ev(Event::SetQueue(u));
    let mut stopped = QueueSpec::new("stopped");
    stopped.started = false;
    t.ev(Event::SetQueue(stopped));
    let mut disabled = QueueSpec::new("closed");
    disabled.enabled = false;
    t.ev(Event::SetQueue(disabled));
    for (seq, queue, owner) in [
        (1, "small", "alice"),
        (2, "small", "bob"),
        (3, "peruser", "alice"),
        (4, "peruser", "alice"),
        (5, "peruser", "bob"),
        (6, "stopped", "alice"),
        (7, "closed", "alice"),
    ] {
        let mut j = job(seq, 1, 1);
        j.queue = queue.to_string();
        j.owner = owner.to_string();
        t.submit(j);
    }
    t.cycle(0);
    insta::assert_snapshot!("limits_queue_user_server", t.log);
}

#[test]
fn server_limits() {
    let mut s = Scheduler::new(Config {
        max_run: Some(2),
        max_user_run: Some(1),
        ..Config::default()
    });
    s.apply(Event::SetQueue(QueueSpec::new("workq"))).unwrap();
    let mut t = Scenario {
        s,
        log: String::new(),
    };
    t.node("n1", 16, 8);
    for (seq, owner) in [(1, "alice"), (2, "alice"), (3, "bob"), (4, "carol")] {
        let mut j = job(seq, 1, 1);
        j.owner = owner.to_string();
        t.submit(j);
    }
    t.cycle(0);
    insta::assert_snapshot!("server_limits", t.log);
}

#[test]
fn dependencies_after_kinds() {
    let mut t = Scenario::new(Policy::Backfill);
    t.node("n1", 1, 8);
    t.submit(job(1, 1, 1));
    let dep = |seq: u64, kind: DependKind, on: u64| {
        let mut j = job(seq, 1, 1);
        j.depend = vec![Dependency::new(kind, JobId::job(on))];
        j
    };
    t.submit(dep(2, DependKind::AfterOk, 1));
    t.submit(dep(3, DependKind::AfterNotOk, 1));
    t.submit(dep(4, DependKind::AfterAny, 1));
    t.submit(dep(5, DependKind::After, 1));
    t.submit(dep(6, DependKind::AfterOk, 3)); // deleted in turn when 3 is
    t.submit(dep(7, DependKind::AfterOk, 99)); // refused: unknown job
    t.cycle(0);
    t.log.push_str(&format!(
        "states: 2 {:?}, 5 {:?}\n",
        t.s.job_state(JobId::job(2)).unwrap(),
        t.s.job_state(JobId::job(5)).unwrap()
    ));
    t.finish(JobId::job(1), 0).cycle(1);
    t.finish(JobId::job(2), 0).cycle(2);
    t.finish(JobId::job(4), 0).cycle(3);
    insta::assert_snapshot!("dependencies_after_kinds", t.log);
}

#[test]
fn dependencies_before_kinds_and_failures() {
    let mut t = Scenario::new(Policy::Backfill);
    t.node("n1", 4, 8);
    t.submit(job(1, 1, 1));
    let mut b = job(2, 1, 1);
    b.depend = vec![Dependency::new(DependKind::BeforeOk, JobId::job(1))];
    t.submit(b);
    t.cycle(0);
    t.finish(JobId::job(2), 1).cycle(1);
    insta::assert_snapshot!("dependencies_before_kinds_and_failures", t.log);
}

#[test]
fn arrays_expand_lazily_with_limits_and_dependencies() {
    let mut t = Scenario::new(Policy::Backfill);
    t.node("n1", 2, 8);
    let mut a = job(1, 1, 1);
    a.array = Some(ArraySpec::new(1, 9, 2));
    t.submit(a);
    let mut capped = job(2, 1, 1);
    capped.array = Some(ArraySpec {
        max_running: Some(1),
        ..ArraySpec::new(0, 1, 1)
    });
    t.submit(capped);
    let mut after_one = job(3, 1, 1);
    after_one.depend = vec![Dependency::new(DependKind::AfterOk, JobId::subjob(1, 3))];
    t.submit(after_one);
    let mut after_all = job(4, 1, 1);
    after_all.depend = vec![Dependency::new(DependKind::AfterAny, JobId::job(1))];
    t.submit(after_all);
    t.cycle(0);
    t.ev(Event::Delete(JobId::subjob(1, 7)));
    t.finish(JobId::subjob(1, 1), 0).cycle(1);
    t.finish(JobId::subjob(1, 3), 0).cycle(2);
    t.log.push_str(&format!(
        "array state: {:?}\n",
        t.s.job_state(JobId::job(1)).unwrap()
    ));
    t.finish(JobId::subjob(1, 5), 0).cycle(3);
    t.finish(JobId::subjob(1, 9), 2).cycle(4);
    t.log.push_str(&format!(
        "array state: {:?}, 1[7] {:?}\n",
        t.s.job_state(JobId::job(1)).unwrap(),
        t.s.job_state(JobId::subjob(1, 7)).unwrap()
    ));
    insta::assert_snapshot!("arrays_expand_lazily_with_limits_and_dependencies", t.log);
}

#[test]
fn node_states_hold_release_alter_delete() {
    let mut t = Scenario::new(Policy::Backfill);
    t.node("n1", 2, 8).node("n2", 2, 8);
    t.ev(Event::NodeOffline("n1".into()));
    t.ev(Event::NodeDown("n2".into()));
    let mut held = job(1, 1, 1);
    held.hold = true;
    t.submit(held);
    t.submit(job(2, 1, 2));
    t.submit(job(3, 1, 2));
    t.cycle(0);
    t.ev(Event::NodeUp("n1".into()));
    t.ev(Event::Alter {
        job: JobId::job(3),
        alter: Alter {
            priority: Some(5),
            ..Alter::default()
        },
    });
    t.cycle(1);
    t.ev(Event::Release(JobId::job(1)));
    t.ev(Event::Delete(JobId::job(2)));
    t.ev(Event::Hold(JobId::job(3)));
    t.ev(Event::NodeUp("n2".into()));
    t.cycle(2);
    insta::assert_snapshot!("node_states_hold_release_alter_delete", t.log);
}

#[test]
fn queue_priority_orders_before_job_priority() {
    let mut t = Scenario::new(Policy::Fifo);
    t.node("n1", 1, 8);
    let mut express = QueueSpec::new("express");
    express.priority = 100;
    t.ev(Event::SetQueue(express));
    let mut j1 = job(1, 1, 1);
    j1.priority = 1000;
    t.submit(j1);
    let mut j2 = job(2, 1, 1);
    j2.queue = "express".into();
    t.submit(j2);
    t.cycle(0);
    assert_eq!(t.s.job_state(JobId::job(2)), Some(JobState::Running));
    insta::assert_snapshot!("queue_priority_orders_before_job_priority", t.log);
}

#[test]
fn requeue_and_confirmed_start_move_the_reservation() {
    let mut t = Scenario::new(Policy::Backfill);
    t.node("n1", 2, 8);
    t.submit(timed(1, 1, 2, 100)).cycle(0);
    t.submit(timed(2, 1, 2, 100)).cycle(1);
    t.ev(Event::StartConfirmed {
        job: JobId::job(1),
        at: 30,
    });
    t.cycle(31);
    t.ev(Event::Requeue(JobId::job(1)));
    t.cycle(32);
    insta::assert_snapshot!("requeue_and_confirmed_start_move_the_reservation", t.log);
}

#[test]
fn backfill_respects_exclusive_reservations() {
    let excl = |mut j: JobSpec, arrangement: Arrangement| {
        j.place = Place::new(arrangement, Sharing::Excl);
        j
    };
    // The top job takes both vnodes whole at t=100: nothing long may start on either.
    let mut t = Scenario::new(Policy::Backfill);
    t.node("n1", 4, 8).node("n2", 4, 8);
    t.submit(timed(1, 1, 2, 100)).cycle(0);
    t.submit(excl(timed(2, 2, 1, 100), Arrangement::Scatter));
    t.submit(timed(3, 1, 1, 1000));
    t.submit(timed(4, 1, 1, 50));
    t.cycle(1);
    // The top job shares n2 at t=100: a long exclusive job may not take n2 whole, a long
    // shared one may use what the reservation leaves there.
    t.log.push_str("---\n");
    let mut u = Scenario::new(Policy::Backfill);
    u.node("n1", 4, 8).node("n2", 4, 8);
    u.submit(timed(1, 1, 4, 100)).cycle(0);
    u.submit(timed(2, 6, 1, 100));
    u.submit(excl(timed(3, 1, 1, 1000), Arrangement::Free));
    u.submit(timed(4, 1, 2, 1000));
    u.cycle(1);
    t.log.push_str(&u.log);
    insta::assert_snapshot!("backfill_respects_exclusive_reservations", t.log);
}

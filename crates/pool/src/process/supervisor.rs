//! The parent side: the supervisor owns the workers, and is run by whoever drives them (a
//! waiting caller's thread, or the pool's supervisor thread: see `engine`).

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, OwnedFd};
#[cfg(test)]
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::child::ChildSetup;
use super::engine::{Mode, Shared};
use super::forker::fork_workers;
use super::job::{Job, JobEnd};
use super::lanes::Lanes;
use super::sys::{death_of, drain_pipe, nonblocking_pipe, pollfd, reap};
use super::worker::Worker;
use crate::call::Config;
use crate::error::{Death, PoolError};

pub(super) struct Supervisor {
    pub(super) shared: Arc<Shared>,
    pub(super) wake_r: OwnedFd,
    pub(super) cfg: Arc<Config>,
    pub(super) workers: Vec<Worker>,
    pub(super) pending: VecDeque<Job>,
    pub(super) last_sweep: Instant,
    /// When a replacement last failed to start: the next try waits a sweep period (callers
    /// sweep at every call; a failing fork is not to be repeated at each).
    pub(super) failed_spawn: Option<Instant>,
    pub(super) lanes: Option<Arc<Lanes>>,
    /// Run by a caller waiting for its work (not by the supervisor thread, nor by a stop):
    /// then a caller waiting to drive is a reason not to sleep.
    pub(super) driven_by_caller: bool,
    /// Whether workers may copy numeric chunks to and from this process
    /// ([`xmem`](crate::xmem)); cleared for good the first time one is refused.
    pub(super) cross_memory: bool,
}

/// A worker's pipes and lane slot, before its fork.
struct NewWorker {
    in_r: OwnedFd,
    in_w: OwnedFd,
    out_r: OwnedFd,
    out_w: OwnedFd,
    slot: usize,
}

/// How often workers are checked with `waitpid` besides their pipe's end of file (which can
/// be delayed when a fork elsewhere in the program holds a copy of the pipe).
const SWEEP_EVERY: Duration = Duration::from_millis(100);

/// The most workers whose chunks of numbers the supervisor copies into their lanes itself (a
/// memcpy runs several times as fast as a worker's copy out of this process through the
/// kernel); a pool of more has its workers copy for themselves, in parallel.
const LANE_FED_WORKERS: usize = 4;

impl Supervisor {
    pub(super) fn start_workers(&mut self) -> Result<(), PoolError> {
        if let Err(e) = self.spawn_workers(self.cfg.workers) {
            self.kill_all();
            return Err(e);
        }
        self.publish_pids();
        Ok(())
    }

    /// Forks `n` more workers (through the forker thread, in one request); the first error,
    /// if any could not be started (the others are kept).
    fn spawn_workers(&mut self, n: usize) -> Result<(), PoolError> {
        let spawn_err = |e: nix::Error| PoolError::Spawn(e.to_string());
        #[cfg(test)]
        if (self.cfg.failing_spawns)
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(spawn_err(nix::Error::EAGAIN));
        }
        let mut new: Vec<NewWorker> = Vec::with_capacity(n);
        for _ in 0..n {
            let (in_r, in_w) = nonblocking_pipe().map_err(spawn_err)?;
            let (out_r, out_w) = nonblocking_pipe().map_err(spawn_err)?;
            let slot = (0..)
                .find(|s| {
                    self.workers.iter().all(|w| w.slot != *s) && new.iter().all(|w| w.slot != *s)
                })
                .unwrap_or(0);
            new.push(NewWorker {
                in_r,
                in_w,
                out_r,
                out_w,
                slot,
            });
        }
        let setups = (0..new.len()).map(|k| self.setup_for(&new, k)).collect();
        let forked = fork_workers(setups)?;
        let mut first_err = None;
        for (w, pid) in new.into_iter().zip(forked) {
            match pid {
                Ok(pid) => self.adopt(w, pid),
                Err(e) => {
                    first_err.get_or_insert(spawn_err(e));
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// What the `k`th of workers `new` needs: its own ends, and every other descriptor of
    /// the pool's pipes to close (the other new workers' child ends too: one held by a
    /// sibling would hide that worker's end from the pool).
    fn setup_for(&self, new: &[NewWorker], k: usize) -> ChildSetup {
        let mut close = vec![
            self.wake_r.as_raw_fd(),
            self.shared.wake_w.as_raw_fd(),
            self.shared.wake_reader.as_raw_fd(),
        ];
        for w in &self.workers {
            close.push(w.tx.as_raw_fd());
            close.push(w.rx.as_raw_fd());
        }
        for (i, w) in new.iter().enumerate() {
            close.extend([w.in_w.as_raw_fd(), w.out_r.as_raw_fd()]);
            if i != k {
                close.extend([w.in_r.as_raw_fd(), w.out_w.as_raw_fd()]);
            }
        }
        ChildSetup {
            lanes: self.lanes.as_ref().map(|l| (l.base as usize, new[k].slot)),
            input: new[k].in_r.as_raw_fd(),
            output: new[k].out_w.as_raw_fd(),
            close,
            // SAFETY: getpid has no preconditions.
            parent: unsafe { libc::getpid() },
            initializer: self.cfg.initializer.clone(),
            limit: self.cfg.max_message_bytes,
        }
    }

    /// Takes a forked worker in: its child ends closed here, its pipes enlarged.
    fn adopt(&mut self, w: NewWorker, pid: Pid) {
        let NewWorker {
            in_r,
            in_w,
            out_r,
            out_w,
            slot,
        } = w;
        drop((in_r, out_w));
        #[cfg(target_os = "linux")]
        // SAFETY: fcntl on our own pipe; failure (size over the system limit) is fine.
        unsafe {
            libc::fcntl(in_w.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20);
            libc::fcntl(out_r.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20);
        }
        self.workers.push(Worker::new(pid, in_w, out_r, slot));
    }

    fn publish_pids(&self) {
        let pids = self.workers.iter().map(|w| w.pid.as_raw() as u32).collect();
        self.shared.lock().pids = pids;
    }

    /// Runs the workers until the pool is terminated or drained.
    pub(super) fn run(&mut self) {
        while self.step() {}
    }

    /// One round: takes queued jobs, sends what the workers have room for, waits for the
    /// next event (a reply, a worker's end, a wake) and settles it. False once the pool is
    /// terminated (workers killed, work failed) or drained (workers gone, work done).
    pub(super) fn step(&mut self) -> bool {
        let (mode, broken) = {
            let mut st = self.shared.lock();
            self.pending.extend(st.queue.drain(..));
            (st.mode, st.broken.clone())
        };
        if mode == Mode::Kill {
            self.kill_all();
            self.cancel_all(PoolError::Terminated);
            return false;
        }
        if let Some(err) = broken {
            // Killed first: a worker must never write into a vector whose job is gone.
            self.kill_all();
            if self.cancel_all(err) > 0 {
                return true; // their callers may be done: no wait for an event first
            }
        }
        self.dispatch();
        self.flush_all();
        let busy = self.workers.iter().any(|w| !w.inflight.is_empty());
        if mode == Mode::Drain && self.pending.is_empty() && !busy {
            self.shutdown();
            return false;
        }
        self.wait_events(mode, busy);
        let sweep = self.last_sweep.elapsed() >= SWEEP_EVERY;
        if sweep {
            self.last_sweep = Instant::now();
        }
        self.collect_exits(sweep);
        true
    }

    /// Polls the wake pipe and the workers' pipes, then reads and writes what is ready.
    fn wait_events(&mut self, mode: Mode, busy: bool) {
        let mut fds = Vec::with_capacity(1 + 2 * self.workers.len());
        fds.push(pollfd(self.wake_r.as_raw_fd(), libc::POLLIN));
        for w in &self.workers {
            fds.push(pollfd(w.rx.as_raw_fd(), libc::POLLIN));
            let unsent = w.sent < w.inflight.len() || (w.retiring && !w.exit_sent);
            fds.push(pollfd(
                w.tx.as_raw_fd(),
                if unsent { libc::POLLOUT } else { 0 },
            ));
        }
        {
            let mut st = self.shared.lock();
            let contended = self.driven_by_caller && st.contenders > 0;
            if !st.queue.is_empty() || st.mode != mode || contended {
                return; // new work, a new mode, or a caller waiting to drive: no sleep
            }
            st.sleeping = true;
            st.woken = false;
        }
        // A worker whose death we could miss (its pipe held open by a fork elsewhere) is
        // found by the periodic reaping in `collect_exits`.
        let timeout = if busy { 100 } else { 1000 };
        // SAFETY: fds is a valid array of pollfd of the given length.
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        {
            let mut st = self.shared.lock();
            st.sleeping = false;
        }
        if fds[0].revents != 0 {
            drain_pipe(&self.wake_r);
        }
        for i in 0..self.workers.len() {
            let (r, t) = (fds[1 + 2 * i].revents, fds[2 + 2 * i].revents);
            if t & (libc::POLLOUT | libc::POLLERR | libc::POLLHUP) != 0 {
                self.workers[i].flush();
            }
            if r != 0 {
                self.read_worker_at(i);
            }
        }
    }

    fn read_worker_at(&mut self, i: usize) {
        let mut init_failed = None;
        let w = &mut self.workers[i];
        w.read_frames(
            self.cfg.max_message_bytes,
            self.lanes.as_ref(),
            &mut init_failed,
        );
        if !w.declined.is_empty() {
            self.cross_memory = false;
            for job in w.declined.drain(..).rev() {
                self.pending.push_front(job);
            }
        }
        let w = &mut self.workers[i];
        if let Some(msg) = init_failed {
            let err = PoolError::InitializerFailed(msg);
            w.cancel_inflight(&err);
            self.shared.lock().broken = Some(err);
        }
    }

    /// Reaps workers that closed their pipe (or, on a `sweep`, died unnoticed), fails the job
    /// each held, and starts replacements (again at later sweeps while the pool is short, a
    /// sweep period after a failed try: a fork can fail for a while, as when the user's
    /// process limit is reached).
    pub(super) fn collect_exits(&mut self, sweep: bool) {
        let mut i = 0;
        let mut changed = false;
        let mut failed = Vec::new();
        while i < self.workers.len() {
            let status = if self.workers[i].eof {
                Some(reap(self.workers[i].pid))
            } else if !sweep {
                None
            } else {
                match waitpid(self.workers[i].pid, Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::StillAlive) => None,
                    // Ended, or gone (reaped elsewhere, SIGCHLD ignored): first the replies
                    // it wrote just before.
                    ended => {
                        self.read_worker_at(i);
                        Some(ended.map_or(Death::Unknown, death_of))
                    }
                }
            };
            let Some(death) = status else {
                i += 1;
                continue;
            };
            let w = self.workers.swap_remove(i);
            failed.extend(self.retire(w, death));
            changed = true;
        }
        let retry = self.failed_spawn.is_none_or(|t| t.elapsed() >= SWEEP_EVERY);
        let short = self.workers.len() < self.cfg.workers;
        if changed || (sweep && short && retry) {
            let needed = self.cfg.workers.saturating_sub(self.workers.len());
            let mode = self.shared.lock().mode;
            let broken = self.shared.lock().broken.is_some();
            let wanted = !broken && (mode == Mode::Run || !self.pending.is_empty());
            if wanted && needed > 0 {
                let started = self.spawn_workers(needed);
                self.failed_spawn = started.is_err().then(Instant::now);
                if let Err(e) = started {
                    if self.workers.is_empty() {
                        self.shared.lock().broken = Some(e);
                    }
                }
            }
            self.publish_pids();
        }
        for (job, end) in failed {
            (job.done)(end);
        }
    }

    /// Settles the jobs of a worker that ended: the running one failed, the rest go back.
    /// When its replies were lost, every job it was sent failed: any of them may have run, and
    /// a map's results may be over its items.
    ///
    /// The failed jobs are returned, to be reported once the replacement is started (so that a
    /// caller who sees the failure also sees the new worker).
    fn retire(&mut self, mut w: Worker, death: Death) -> Vec<(Job, JobEnd)> {
        let sent = w.sent + usize::from(w.offset > 0);
        let ran = if w.replies_lost { sent } else { sent.min(1) };
        let pid = w.pid.as_raw() as u32;
        let failed = w
            .inflight
            .drain(..ran.min(w.inflight.len()))
            .map(|job| (job, JobEnd::Died(pid, death)))
            .collect();
        while let Some(mut job) = w.inflight.pop_back() {
            job.lane = None; // its lane belonged to the dead worker
            self.pending.push_front(job);
        }
        failed
    }

    fn dispatch(&mut self) {
        while !self.pending.is_empty() {
            let Some(w) = self
                .workers
                .iter_mut()
                .filter(|w| w.has_room())
                .min_by_key(|w| w.inflight.len())
            else {
                return;
            };
            let Some(mut job) = self.pending.pop_front() else {
                return;
            };
            // For a few workers, a lane first: this thread's memcpy into it is faster than a
            // worker's copy out of this process (page by page through the kernel), and the
            // worker still writes numeric results straight to the caller. For more, the
            // workers' own copies, in parallel, outrun this one thread: they copy both ways.
            let feed = self.cfg.workers <= LANE_FED_WORKERS || !self.cross_memory;
            if let (Some(lanes), true) = (&self.lanes, feed) {
                job.lane = w.put_in_lane(lanes, &job, self.cross_memory);
            }
            if job.lane.is_none() && self.cross_memory {
                job.xmem_wire = job.cross_memory_frame();
            }
            // A larger pool's chunk the workers cannot copy themselves still takes a lane.
            if let (Some(lanes), None, None, false) = (&self.lanes, &job.lane, &job.xmem_wire, feed)
            {
                job.lane = w.put_in_lane(lanes, &job, false);
            }
            if job.lane.is_none() && job.xmem_wire.is_none() {
                job.materialize();
            }
            // Counted at full size even when in a lane: a worker holds few large jobs.
            w.inflight_bytes += job.size();
            w.inflight.push_back(job);
            w.assigned += 1;
            if self.cfg.maxtasks.is_some_and(|m| w.assigned >= m) {
                w.retiring = true;
            }
        }
    }

    fn flush_all(&mut self) {
        for w in &mut self.workers {
            w.flush();
        }
    }

    /// Fails every queued, pending and in-flight job with `err`; how many there were.
    pub(super) fn cancel_all(&mut self, err: PoolError) -> usize {
        let queued: Vec<Job> = self.shared.lock().queue.drain(..).collect();
        let mut settled = 0;
        for job in self.pending.drain(..).chain(queued) {
            (job.done)(JobEnd::Cancelled(err.clone()));
            settled += 1;
        }
        for w in &mut self.workers {
            settled += w.inflight.len();
            w.cancel_inflight(&err);
        }
        settled
    }

    /// Breaks the pool for good with `err`: later submissions are refused with it, the
    /// workers are killed, and every job fails with it.
    pub(super) fn fail_all(&mut self, err: PoolError) {
        self.shared.lock().broken = Some(err.clone());
        self.kill_all();
        self.cancel_all(err);
    }

    /// Kills and reaps every worker. The jobs they held go back to `pending`, for the caller
    /// to settle ([`cancel_all`](Self::cancel_all)) now that no worker can write for them;
    /// dropped with their worker, they would have reported "terminated" whatever the cause.
    pub(super) fn kill_all(&mut self) {
        for w in &self.workers {
            let _ = kill(w.pid, Signal::SIGKILL);
        }
        for mut w in self.workers.drain(..) {
            let _ = waitpid(w.pid, None);
            self.pending
                .extend(w.inflight.drain(..).chain(w.declined.drain(..)));
        }
        self.shared.lock().pids.clear();
    }

    /// All work is done: ask each worker to exit, and wait for them.
    fn shutdown(&mut self) {
        for w in &self.workers {
            w.send_exit();
        }
        for w in self.workers.drain(..) {
            reap(w.pid);
        }
        self.shared.lock().pids.clear();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::time::{Duration, Instant};

    use crate::Pool;

    fn addit(x: i64) -> i64 {
        x + 1
    }

    /// A replacement that could not be forked is tried again a sweep period later (not at
    /// each call in between): the pool does not stay short of a worker until another ends.
    #[test]
    fn a_failed_replacement_is_tried_again() {
        let pool = Pool::new(2).unwrap();
        let before = pool.worker_pids();
        pool.cfg.failing_spawns.store(1, Ordering::SeqCst);
        // SAFETY: killing our own worker.
        unsafe { libc::kill(before[0] as i32, libc::SIGKILL) };
        let killed = Instant::now();
        let deadline = killed + Duration::from_secs(10);
        let mut pids = pool.worker_pids();
        while (pids.len() < 2 || pids.contains(&before[0])) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            pids = pool.worker_pids();
        }
        assert_eq!(
            pool.cfg.failing_spawns.load(Ordering::SeqCst),
            0,
            "no fork failed"
        );
        assert_eq!(pids.len(), 2, "{pids:?}");
        assert!(
            killed.elapsed() >= super::SWEEP_EVERY,
            "tried again too soon"
        );
        assert!(!pids.contains(&before[0]));
        assert_eq!(pool.map(addit, vec![1, 2, 3]).unwrap(), [2, 3, 4]);
    }
}

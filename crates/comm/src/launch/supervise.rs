//! Waiting for the ranks: reaping them, ending the world on a failure, the timeout or a
//! caught signal.

use super::meeting::still_running;
use super::setup::Setup;
use super::signals;
use super::spawn::{kill_world, World};
use super::{Failure, LaunchSpec, RankExit};
use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How often the launcher looks for a caught signal.
const SIGNAL_TICK: Duration = Duration::from_millis(20);
/// How long ranks have to end after a forwarded signal before SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(1);

/// Reaps the group's ranks as they end, sending (pid, exit) for each.
fn reap(pgid: i32, events: mpsc::Sender<(i32, RankExit)>) {
    std::thread::spawn(move || loop {
        let exit = match waitpid(Pid::from_raw(-pgid), None) {
            Ok(WaitStatus::Exited(pid, code)) => (pid.as_raw(), RankExit::Exited(code)),
            Ok(WaitStatus::Signaled(pid, sig, _)) => (pid.as_raw(), RankExit::Signaled(sig as i32)),
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(_) => return,
        };
        if events.send(exit).is_err() {
            return;
        }
    });
}

/// Waits for every rank to end, killing the world on the first failure, on the timeout, or
/// one grace period after passing on a caught signal. Returns how each rank ended and the
/// first failure.
pub(super) fn supervise(
    spec: &LaunchSpec,
    world: &World,
    setup: &Setup,
    signals: Option<&signals::Guard>,
    start: Instant,
) -> (Vec<RankExit>, Option<Failure>) {
    let (ev_tx, ev_rx) = mpsc::channel();
    reap(world.pgid, ev_tx);
    let mut exits: Vec<Option<RankExit>> = vec![None; spec.np];
    let mut remaining = spec.np;
    let mut failure = None;
    let mut forwarded: Option<Instant> = None;
    let mut killed = false;
    let kill = |killed: &mut bool| {
        kill_world(world.pgid);
        setup.meeting.stop();
        *killed = true;
    };
    while remaining > 0 {
        let mut wait = match (spec.timeout, &failure) {
            (Some(t), None) => Some(t.saturating_sub(start.elapsed())),
            _ => None,
        };
        if signals.is_some() && !killed {
            wait = Some(wait.map_or(SIGNAL_TICK, |w| w.min(SIGNAL_TICK)));
        }
        let event = match wait {
            Some(w) => match ev_rx.recv_timeout(w) {
                Ok(ev) => Some(ev),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            },
            None => match ev_rx.recv() {
                Ok(ev) => Some(ev),
                Err(_) => break,
            },
        };
        if let Some(sig) = signals.and_then(signals::Guard::take) {
            let _ = killpg(Pid::from_raw(world.pgid), sig);
            forwarded.get_or_insert_with(Instant::now);
        }
        if forwarded.is_some_and(|t| t.elapsed() > KILL_GRACE) && !killed {
            kill(&mut killed);
        }
        if let (Some(after), None) = (spec.timeout, &failure) {
            if start.elapsed() >= after {
                let running = still_running(&exits, &setup.meeting);
                failure = Some(Failure::Timeout { after, running });
                kill(&mut killed);
            }
        }
        let Some((pid, exit)) = event else {
            continue;
        };
        let Some(rank) = world.pids.iter().position(|&p| p == pid) else {
            continue;
        };
        let exit = setup.rank_exit(rank, exit);
        exits[rank] = Some(exit);
        remaining -= 1;
        if failure.is_none() && !exit.success() {
            failure = Some(Failure::Rank {
                rank,
                host: setup.host(rank).to_string(),
                exit,
            });
            if remaining > 0 {
                kill(&mut killed);
            }
        }
    }
    // A rank never reaped (the reaper failed) was killed with the world.
    let exits = exits
        .into_iter()
        .map(|e| e.unwrap_or(RankExit::Signaled(Signal::SIGKILL as i32)))
        .collect();
    (exits, failure)
}

//! The launcher: starts the ranks of a world, on this node or on others, forwards their
//! output, and ends them all when one fails (`hpcbox mpiexec`).
//!
//! Every rank runs in one new process group, so that killing the group ends the ranks and
//! whatever they started, and gets SIGKILL should its launcher die (`PR_SET_PDEATHSIG`; tied
//! to the launching thread, which [`launch_with`] blocks until the world ends). The launcher
//! creates the rendezvous directory and removes it when the world is over.
//!
//! The rendezvous directory goes in `/dev/shm` when it has room for every rank's inbox, else
//! in the temporary directory.
//!
//! Ranks placed on other hosts ([`LaunchSpec::hosts`]) start through an rsh-style agent
//! ([`crate::remote`]: `$HPCBOX_RSH`, else `ssh -o BatchMode=yes`), whose pipes bring their
//! output back; the agents run in the world's process group like local ranks. A world with
//! a remote rank meets through a TCP rendezvous instead of the directory: the launcher
//! listens on every interface and gives each rank `HPCBOX_RENDEZVOUS=tcp://HOST:PORT`, where
//! HOST is [`LaunchSpec::rendezvous_host`], else `$HPCBOX_RENDEZVOUS_HOST`, else the address
//! of this machine that routes to the first remote host, else this host name's address.
//! Every rank keeps that connection open; when the world fails the launcher closes them,
//! and remote ranks, which no signal of the launcher reaches, end themselves.

mod meeting;
mod outcome;
mod setup;
mod signals;
mod spawn;
mod spec;
mod stdio;
mod supervise;
#[cfg(test)]
mod tests;

pub use meeting::ENV_RENDEZVOUS_HOST;
pub use outcome::{Failure, LaunchOutcome, RankExit, TIMEOUT_STATUS};
pub use setup::{hostname, usable_cpus};
pub use spec::{Bind, LaunchSpec, StdinMode};
pub use stdio::{OutputSink, StdSink, Stream};

use crate::{Error, Result};
use setup::prepare;
use spawn::spawn_world;
use std::sync::Arc;
use std::time::Instant;
use stdio::drain_output;
use supervise::supervise;

/// Runs `spec` with output to the launcher's stdout/stderr. See [`launch_with`].
pub fn launch(spec: &LaunchSpec) -> Result<LaunchOutcome> {
    launch_with(
        spec,
        Arc::new(StdSink {
            tag: spec.tag_output,
        }),
    )
}

/// Starts `spec.np` ranks of `spec.program` in one new process group, with the `HPCBOX_*`
/// environment of [`crate::env`], and waits for them. Each output line goes to `sink`. When a
/// rank exits with a non-zero status or is killed by a signal, or the timeout runs out, the
/// launcher kills every rank (SIGKILL to the group, so nothing they started is left; remote
/// ranks end when their lifeline closes) and reports the first failure. The rendezvous
/// directory is removed, and the TCP rendezvous closed, in every case.
///
/// ```no_run
/// use hpcbox_comm::launch::{launch, LaunchSpec};
/// let outcome = launch(&LaunchSpec::new(4, "./mpi_hello"))?;
/// if let Some(f) = &outcome.failure {
///     eprintln!("{f}");
/// }
/// std::process::exit(outcome.status);
/// # Ok::<(), hpcbox_comm::Error>(())
/// ```
pub fn launch_with(spec: &LaunchSpec, sink: Arc<dyn OutputSink>) -> Result<LaunchOutcome> {
    if spec.np == 0 {
        return Err(Error::InvalidArgument(
            "mpiexec needs at least one rank".into(),
        ));
    }
    if !spec.hosts.is_empty() && spec.hosts.len() != spec.np {
        return Err(Error::InvalidArgument(format!(
            "{} hosts given for {} ranks: give one per rank",
            spec.hosts.len(),
            spec.np
        )));
    }
    let start = Instant::now();
    // Caught from before the first spawn: a Ctrl-C while ranks start still reaches them.
    let signals = spec.forward_signals.then(signals::Guard::install);
    let setup = prepare(spec)?;
    let world = spawn_world(spec, sink, &setup)?;
    let (exits, failure) = supervise(spec, &world, &setup, signals.as_ref(), start);
    drop(signals);
    drain_output(&world.output_done, spec.np);
    drop(setup);
    let status = match &failure {
        None => 0,
        Some(Failure::Rank { exit, .. }) => exit.status(),
        Some(Failure::Timeout { .. }) => TIMEOUT_STATUS,
    };
    Ok(LaunchOutcome {
        status,
        exits,
        failure,
    })
}

//! The single-copy side of the engine: descriptors of large payloads, the acknowledgements
//! that answer them, and copies shared by both ends (HELP, HELPED).

use super::{Engine, Envelope, Message};
use crate::single_copy::{self, SingleCopy};
use crate::{Error, Result};
use std::time::{Duration, Instant};

/// A landing payload whose upper part the sender writes (see [`single_copy`]).
pub(super) struct Sharing {
    /// The world rank that sends it.
    src: usize,
    /// Its descriptor, to read the sender's part here should the sender fail to write it.
    descriptor: Vec<u8>,
    /// The receiver's part ends here; the sender's part runs to the payload's end.
    split: usize,
    /// The message that completes the receive once every byte is in.
    msg: Message,
}

impl Engine {
    /// Keeps single copy to the peers `same_node` marks (by world rank): to the others (on
    /// other nodes, where a descriptor's process id means nothing) everything streams.
    pub(crate) fn single_copy_only_to(&mut self, same_node: &[bool]) {
        for (declined, &same) in self.declined.iter_mut().zip(same_node) {
            *declined |= !same;
        }
    }

    /// Handles a message from world rank `src`: acknowledgements, single-copy descriptors
    /// and requests here, everything else to matching.
    pub(super) fn arrive(&mut self, src: usize, mut msg: Message) -> Result<()> {
        match msg.kind {
            single_copy::ACK => {
                self.acks[src] += 1;
                if msg.data.first() != Some(&0) {
                    self.declined[src] = true;
                }
                return Ok(());
            }
            single_copy::HELP => return self.help(src, &msg.data),
            single_copy::HELPED => return self.helped(src, msg.data.first() == Some(&0)),
            _ => {}
        }
        if msg.kind & single_copy::REMOTE != 0 {
            // Never from a peer single copy does not reach (another node: the descriptor's
            // process id would name some process of this one).
            let pull = self.single_copy != SingleCopy::Refuse && !self.declined[src];
            if pull && self.pull_landed(src, &msg)? {
                return Ok(());
            }
            let data = pull.then(|| single_copy::pull(&msg.data)).flatten();
            self.acknowledge(src, data.is_some());
            // When declined, the payload follows through the ring as an ordinary message.
            let Some(data) = data else {
                return Ok(());
            };
            msg.data = data;
            msg.kind &= !single_copy::REMOTE;
        }
        self.deliver(msg);
        Ok(())
    }

    /// Pulls the payload a descriptor names straight into the landing buffer, when the
    /// message lands there; whether it did (or, for a large one, has begun: the sender
    /// writes the rest, see [`single_copy`]).
    fn pull_landed(&mut self, src: usize, msg: &Message) -> Result<bool> {
        let Some(l) = self.landing.as_mut() else {
            return Ok(false);
        };
        let kind = msg.kind & !single_copy::REMOTE;
        let len = single_copy::described_len(&msg.data);
        if !l.takes(&self.posted, msg.ctx, msg.src, msg.tag, kind, len) {
            return Ok(false);
        }
        let done = Message {
            kind,
            data: Vec::new(),
            ..*msg
        };
        let len = len as usize;
        let Some(split) = single_copy::share(len) else {
            // SAFETY: the landing buffer is valid for writes of cap bytes while it lives.
            let Some(n) = (unsafe { single_copy::pull_into(&msg.data, l.ptr, l.cap) }) else {
                return Ok(false);
            };
            l.claim(&mut self.posted);
            l.landed = Some(n);
            self.completed.push((l.id, done));
            self.acknowledge(src, true);
            return Ok(true);
        };
        let probe = single_copy::probe_len(split);
        // SAFETY: len <= cap (takes), and the landing buffer is valid for cap bytes.
        if !unsafe { single_copy::pull_part(&msg.data, l.ptr, 0, probe) } {
            return Ok(false);
        }
        l.claim(&mut self.posted);
        let help = single_copy::Help {
            pid: std::process::id() as libc::pid_t,
            addr: l.ptr as usize + split,
            offset: split,
            len: len - split,
        };
        let ptr = l.ptr;
        l.sharing = Some(Sharing {
            src,
            descriptor: msg.data.clone(),
            split,
            msg: done,
        });
        self.queue_control(src, single_copy::HELP, help.encode().to_vec());
        self.flush(src)?;
        // SAFETY: as above.
        if !unsafe { single_copy::pull_part(&msg.data, ptr, probe, split) } {
            return Err(Error::InvalidArgument(format!(
                "single copy from rank {src} refused midway"
            )));
        }
        Ok(true)
    }

    /// The sender's side of a shared copy: writes the part asked for, if this rank is lending
    /// a payload to `src`, and answers.
    fn help(&mut self, src: usize, request: &[u8]) -> Result<()> {
        let written = match (self.lending, single_copy::Help::decode(request)) {
            _ if self.single_copy == SingleCopy::Unhelped => false,
            (Some((dest, ptr, len)), Some(help)) if dest == src => {
                // SAFETY: the blocking send that set `lending` keeps these bytes borrowed
                // until its acknowledgement, which comes after this answer.
                help.write_from(unsafe { std::slice::from_raw_parts(ptr, len) })
            }
            _ => false,
        };
        self.queue_control(src, single_copy::HELPED, vec![u8::from(!written)]);
        self.flush(src).map(drop)
    }

    /// The receiver's side: the sender's part is in (or it failed, and is read here); the
    /// receive completes and the sender may have its buffer back.
    fn helped(&mut self, src: usize, written: bool) -> Result<()> {
        let Some(l) = self.landing.as_mut() else {
            return Ok(());
        };
        let Some(sharing) = l.sharing.take_if(|s| s.src == src) else {
            return Ok(());
        };
        let len = single_copy::described_len(&sharing.descriptor) as usize;
        // SAFETY: len <= cap (the landing took it), and the buffer is valid for cap bytes.
        if !written
            && !unsafe { single_copy::pull_part(&sharing.descriptor, l.ptr, sharing.split, len) }
        {
            return Err(Error::InvalidArgument(format!(
                "single copy from rank {src} refused midway"
            )));
        }
        l.landed = Some(len);
        self.completed.push((l.id, sharing.msg));
        self.acknowledge(src, true);
        Ok(())
    }

    fn acknowledge(&mut self, dest: usize, copied: bool) {
        self.queue_control(dest, single_copy::ACK, vec![u8::from(!copied)]);
    }

    /// Queues a message of the single-copy protocol to `dest`.
    fn queue_control(&mut self, dest: usize, kind: u8, data: Vec<u8>) {
        let env = Envelope {
            ctx: 0,
            src: self.rank as u32,
            tag: 0,
            kind,
            len: data.len() as u64,
        };
        self.enqueue(dest, env, data);
    }

    /// Sends a descriptor of `data` and waits until `dest` has copied it out (or declined,
    /// and then streams it).
    pub(super) fn send_single_copy(
        &mut self,
        dest: usize,
        env: Envelope,
        data: &[u8],
    ) -> Result<()> {
        let descriptor = single_copy::describe(data);
        let remote = Envelope {
            kind: env.kind | single_copy::REMOTE,
            len: descriptor.len() as u64,
            ..env
        };
        let before = self.acks[dest];
        self.send_direct(dest, remote, &descriptor)?;
        // `data` stays borrowed, so alive and unchanged, until the receiver answers.
        self.lending = Some((dest, data.as_ptr(), data.len()));
        let answered = self.wait_until(|e| e.acks[dest] > before);
        self.lending = None;
        answered?;
        if self.declined[dest] {
            return self.send_direct(dest, env, data);
        }
        Ok(())
    }

    /// After a failed wait: a sender writing its part of a shared copy into the landing buffer
    /// is given a moment to finish (the buffer goes back to the caller next), unless its
    /// stream fails.
    pub(super) fn finish_sharing(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(1);
        while self.landing.as_ref().is_some_and(|l| l.sharing.is_some())
            && Instant::now() < deadline
        {
            if self.progress().is_err() {
                return;
            }
            std::thread::yield_now();
        }
    }
}

//! Communicators and point-to-point messages.

use crate::blocked::{self, Call};
use crate::engine::{Engine, Envelope, Matcher, Message, SMALL};
use crate::pod::{as_bytes, as_bytes_mut, from_bytes, Kind, Pod};
use crate::request::{RecvObjRequest, RecvRequest, Request, SendRequest};
use crate::{Error, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::cell::{Cell, RefCell};
use std::rc::Rc;

/// Receive from any source (MPI_ANY_SOURCE).
pub const ANY_SOURCE: usize = usize::MAX;
/// Receive any tag (MPI_ANY_TAG). User tags are `0..=i32::MAX`.
pub const ANY_TAG: i32 = -1;

/// What a receive or probe learns about a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status {
    /// The sender's rank in the communicator.
    pub source: usize,
    /// The message's tag.
    pub tag: i32,
    /// The payload's length in bytes.
    pub len: usize,
    /// The element type the message holds.
    pub kind: Kind,
}

impl Status {
    /// The number of `T` elements in the message (MPI_Get_count).
    pub fn count<T: Pod>(&self) -> usize {
        self.len / std::mem::size_of::<T>()
    }
}

/// A group of ranks that exchange messages in a context of their own (MPI_Comm).
///
/// Ranks are numbered `0..size()`. Messages from one sender with one tag arrive in the order
/// they were sent; a message only matches receives on the communicator it was sent on.
/// A communicator belongs to one thread (it is neither `Send` nor `Sync`).
pub struct Communicator {
    pub(crate) engine: Rc<RefCell<Engine>>,
    /// Point-to-point context id (even); collectives use `ctx + 1`.
    pub(crate) ctx: u64,
    pub(crate) rank: usize,
    /// World rank of each member, by rank in this communicator.
    pub(crate) group: Rc<[u32]>,
    /// How many communicators were derived from this one (split, dup).
    pub(crate) derived: Cell<u64>,
}

impl std::fmt::Debug for Communicator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Communicator")
            .field("rank", &self.rank)
            .field("size", &self.group.len())
            .field("ctx", &self.ctx)
            .finish()
    }
}

impl Communicator {
    /// This process's rank in the communicator (MPI_Comm_rank).
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// How messages to `rank` travel: `"self"`, `"shm"` (shared memory), `"tcp"` or `"mpi"`
    /// (the system MPI of the `mpi` feature).
    ///
    /// ```
    /// let world = hpcbox_comm::init()?;
    /// assert_eq!(world.route_to(world.rank())?, "self");
    /// # Ok::<(), hpcbox_comm::Error>(())
    /// ```
    pub fn route_to(&self, rank: usize) -> Result<&'static str> {
        let world = self.world_rank(rank)?;
        Ok(self.engine.borrow().route(world))
    }

    /// The number of ranks in the communicator (MPI_Comm_size).
    pub fn size(&self) -> usize {
        self.group.len()
    }

    pub(crate) fn world_rank(&self, rank: usize) -> Result<usize> {
        self.group
            .get(rank)
            .map(|&w| w as usize)
            .ok_or_else(|| Error::RankOutOfRange {
                rank,
                size: self.size(),
            })
    }

    pub(crate) fn matcher(&self, ctx: u64, source: usize, tag: i32) -> Result<Matcher> {
        let src = match source {
            ANY_SOURCE => None,
            s if s < self.size() => Some(s as u32),
            s => {
                return Err(Error::RankOutOfRange {
                    rank: s,
                    size: self.size(),
                })
            }
        };
        let tag = match tag {
            ANY_TAG => None,
            t if t >= 0 => Some(t),
            t => return Err(Error::InvalidTag(t)),
        };
        let from = src.map(|s| self.world_rank(s as usize)).transpose()?;
        Ok(Matcher {
            ctx,
            src,
            tag,
            from,
        })
    }

    pub(crate) fn envelope(&self, ctx: u64, tag: i32, kind: Kind, len: usize) -> Envelope {
        Envelope {
            ctx,
            src: self.rank as u32,
            tag,
            kind: kind as u8,
            len: len as u64,
        }
    }

    pub(crate) fn send_raw(
        &self,
        ctx: u64,
        dest: usize,
        tag: i32,
        kind: Kind,
        bytes: &[u8],
    ) -> Result<()> {
        let world = self.world_rank(dest)?;
        let env = self.envelope(ctx, tag, kind, bytes.len());
        self.engine.borrow_mut().send(world, env, bytes)
    }

    fn check_tag(tag: i32) -> Result<()> {
        if tag < 0 {
            return Err(Error::InvalidTag(tag));
        }
        Ok(())
    }

    /// Sends `data` to rank `dest` with `tag` (MPI_Send). Returns once the data is handed to
    /// the transport; the receiver may not have received it yet.
    ///
    /// ```
    /// let world = hpcbox_comm::init()?;
    /// world.send(0, 7, &[1.5f64, 2.5])?; // to itself, in a world of one
    /// let (v, st) = world.recv::<f64>(0, 7)?;
    /// assert_eq!((v, st.tag, st.count::<f64>()), (vec![1.5, 2.5], 7, 2));
    /// # Ok::<(), hpcbox_comm::Error>(())
    /// ```
    pub fn send<T: Pod>(&self, dest: usize, tag: i32, data: &[T]) -> Result<()> {
        let _call = blocked::enter(Call::new("send").with_peer("dest", dest).with_tag(tag));
        Self::check_tag(tag)?;
        self.send_raw(self.ctx, dest, tag, T::KIND, as_bytes(data))
    }

    /// Receives a message from `source` (or [`ANY_SOURCE`]) with `tag` (or [`ANY_TAG`])
    /// (MPI_Recv). Fails with [`Error::TypeMismatch`] if the message holds another type.
    pub fn recv<T: Pod>(&self, source: usize, tag: i32) -> Result<(Vec<T>, Status)> {
        let _call = blocked::enter(Call::new("recv").with_peer("source", source).with_tag(tag));
        let m = self.matcher(self.ctx, source, tag)?;
        let msg = self.engine.borrow_mut().recv(m)?;
        unpack(msg)
    }

    /// Receives a message into `buf` and returns its status (MPI_Recv into a buffer): the
    /// first `status.count::<T>()` elements of `buf` are set. A message longer than `buf`
    /// is consumed and reported as [`Error::Truncated`].
    pub fn recv_into<T: Pod>(&self, source: usize, tag: i32, buf: &mut [T]) -> Result<Status> {
        let _call = blocked::enter(Call::new("recv").with_peer("source", source).with_tag(tag));
        self.exchange_into::<T, T>(self.ctx, None, source, tag, buf)
    }

    /// Receives in context `ctx` into `buf` (as [`Communicator::recv_into`]) and sends `send`
    /// = (dest, data) when given. A small send goes first and the receive then tries the
    /// short way ([`Engine::recv_direct`]); a large one goes after the receive is posted, so
    /// that the message lands in `buf` even when it comes while the send is under way.
    pub(crate) fn exchange_into<S: Pod, T: Pod>(
        &self,
        ctx: u64,
        send: Option<(usize, &[S])>,
        source: usize,
        tag: i32,
        buf: &mut [T],
    ) -> Result<Status> {
        let m = self.matcher(ctx, source, tag)?;
        let unit = std::mem::size_of::<T>();
        let dest = send.map(|(d, _)| self.world_rank(d)).transpose()?;
        let mut send = send;
        // Posting first only spares a large message a copy.
        if send.is_none_or(|(_, data)| std::mem::size_of_val(data) <= SMALL) {
            let mut e = self.engine.borrow_mut();
            if let (Some(world), Some((_, data))) = (dest, send.take()) {
                let env = self.envelope(ctx, tag, S::KIND, std::mem::size_of_val(data));
                e.send(world, env, as_bytes(data))?;
            }
            if let Some((env, len)) = e.recv_direct(m, T::KIND as u8, unit, as_bytes_mut(buf)) {
                return Ok(status((env.src, env.tag, env.kind, len)));
            }
        }
        let between = |e: &mut Engine| match (dest, send) {
            (Some(world), Some((_, data))) => {
                let env = self.envelope(ctx, tag, S::KIND, std::mem::size_of_val(data));
                e.send(world, env, as_bytes(data))
            }
            _ => Ok(()),
        };
        let (msg, landed) = self.engine.borrow_mut().recv_into(
            m,
            T::KIND as u8,
            unit,
            as_bytes_mut(buf),
            between,
        )?;
        if let Some(len) = landed {
            return Ok(status((msg.src, msg.tag, msg.kind, len)));
        }
        let (v, st) = unpack::<T>(msg)?;
        let Some(dest) = buf.get_mut(..v.len()) else {
            return Err(Error::Truncated {
                from: st.source,
                tag: st.tag,
                len: v.len(),
                room: buf.len(),
            });
        };
        dest.copy_from_slice(&v);
        Ok(st)
    }

    /// Ends the whole job with exit status `code` (MPI_Abort): this rank exits at once, and
    /// the launcher, seeing a rank fail, kills the others and exits with `code`. Give a
    /// non-zero code: a rank that exits with 0 has simply finished.
    pub fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }

    /// Sends a serde value, encoded with postcard.
    pub fn send_obj<S: Serialize + ?Sized>(&self, dest: usize, tag: i32, value: &S) -> Result<()> {
        let _call = blocked::enter(Call::new("send").with_peer("dest", dest).with_tag(tag));
        Self::check_tag(tag)?;
        let bytes = postcard::to_stdvec(value)?;
        self.send_raw(self.ctx, dest, tag, Kind::Object, &bytes)
    }

    /// Receives a value sent with [`Communicator::send_obj`].
    pub fn recv_obj<S: DeserializeOwned>(&self, source: usize, tag: i32) -> Result<(S, Status)> {
        let _call = blocked::enter(Call::new("recv").with_peer("source", source).with_tag(tag));
        let m = self.matcher(self.ctx, source, tag)?;
        let msg = self.engine.borrow_mut().recv(m)?;
        unpack_obj(msg)
    }

    /// Sends `data` to `dest` and receives from `source`, without deadlock when two ranks
    /// exchange with each other (MPI_Sendrecv).
    pub fn sendrecv<T: Pod, U: Pod>(
        &self,
        data: &[T],
        dest: usize,
        send_tag: i32,
        source: usize,
        recv_tag: i32,
    ) -> Result<(Vec<U>, Status)> {
        let _call = blocked::enter(
            Call::new("sendrecv")
                .with_peer("source", source)
                .with_tag(recv_tag),
        );
        let req = self.irecv::<U>(source, recv_tag)?;
        self.send(dest, send_tag, data)?;
        req.wait()
    }

    /// Waits until a message matching `source` and `tag` can be received, and describes it
    /// without receiving it (MPI_Probe).
    pub fn probe(&self, source: usize, tag: i32) -> Result<Status> {
        let _call = blocked::enter(Call::new("probe").with_peer("source", source).with_tag(tag));
        let m = self.matcher(self.ctx, source, tag)?;
        let found = self.engine.borrow_mut().probe(m)?;
        Ok(status(found))
    }

    /// Like [`Communicator::probe`], but returns `None` at once when nothing matches yet
    /// (MPI_Iprobe).
    pub fn iprobe(&self, source: usize, tag: i32) -> Result<Option<Status>> {
        let m = self.matcher(self.ctx, source, tag)?;
        let mut e = self.engine.borrow_mut();
        e.progress()?;
        Ok(e.peek(m).map(status))
    }

    /// Starts a send and returns at once (MPI_Isend). The data is copied, so `data` may be
    /// reused immediately; the request completes when the copy is handed to the transport.
    pub fn isend<T: Pod>(&self, dest: usize, tag: i32, data: &[T]) -> Result<SendRequest> {
        Self::check_tag(tag)?;
        self.isend_raw(dest, tag, T::KIND, as_bytes(data).to_vec())
    }

    /// Starts sending a serde value (encoded with postcard).
    pub fn isend_obj<S: Serialize + ?Sized>(
        &self,
        dest: usize,
        tag: i32,
        value: &S,
    ) -> Result<SendRequest> {
        Self::check_tag(tag)?;
        self.isend_raw(dest, tag, Kind::Object, postcard::to_stdvec(value)?)
    }

    fn isend_raw(&self, dest: usize, tag: i32, kind: Kind, bytes: Vec<u8>) -> Result<SendRequest> {
        let world = self.world_rank(dest)?;
        let env = self.envelope(self.ctx, tag, kind, bytes.len());
        let id = self.engine.borrow_mut().isend(world, env, bytes)?;
        Ok(SendRequest::new(self.engine.clone(), world, id))
    }

    /// Posts a receive and returns at once (MPI_Irecv). Receives posted earlier take matching
    /// messages first.
    pub fn irecv<T: Pod>(&self, source: usize, tag: i32) -> Result<RecvRequest<T>> {
        let m = self.matcher(self.ctx, source, tag)?;
        let id = self.engine.borrow_mut().post_recv(m);
        Ok(RecvRequest::new(self.engine.clone(), id))
    }

    /// Posts a receive of a serde value.
    pub fn irecv_obj<S: DeserializeOwned>(
        &self,
        source: usize,
        tag: i32,
    ) -> Result<RecvObjRequest<S>> {
        let m = self.matcher(self.ctx, source, tag)?;
        let id = self.engine.borrow_mut().post_recv(m);
        Ok(RecvObjRequest::new(self.engine.clone(), id))
    }
}

fn status((src, tag, kind, len): (u32, i32, u8, usize)) -> Status {
    Status {
        source: src as usize,
        tag,
        len,
        kind: Kind::from_u8(kind).unwrap_or(Kind::U8),
    }
}

fn mismatch(msg: &Message, expected: &'static str) -> Error {
    Error::TypeMismatch {
        from: msg.src as usize,
        tag: msg.tag,
        expected,
        found: Kind::from_u8(msg.kind).map_or("an unknown type", Kind::name),
    }
}

/// Typed elements of a received message.
pub(crate) fn unpack<T: Pod>(msg: Message) -> Result<(Vec<T>, Status)> {
    if msg.kind != T::KIND as u8 {
        return Err(mismatch(&msg, T::KIND.name()));
    }
    let st = status((msg.src, msg.tag, msg.kind, msg.data.len()));
    let v = from_bytes(msg.data).ok_or(Error::TypeMismatch {
        from: st.source,
        tag: st.tag,
        expected: T::KIND.name(),
        found: "a ragged byte count",
    })?;
    Ok((v, st))
}

/// The decoded value of a received object message.
pub(crate) fn unpack_obj<S: DeserializeOwned>(msg: Message) -> Result<(S, Status)> {
    if msg.kind != Kind::Object as u8 {
        return Err(mismatch(&msg, Kind::Object.name()));
    }
    let st = status((msg.src, msg.tag, msg.kind, msg.data.len()));
    Ok((postcard::from_bytes(&msg.data)?, st))
}

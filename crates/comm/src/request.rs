//! Requests of non-blocking operations: test, wait, wait_all.

use crate::blocked::{self, Call};
use crate::comm::{unpack, unpack_obj, Status};
use crate::engine::Engine;
use crate::pod::Pod;
use crate::Result;
use serde::de::DeserializeOwned;
use std::cell::RefCell;
use std::marker::PhantomData;
use std::rc::Rc;

/// A pending operation (MPI_Request).
pub trait Request {
    /// What the operation yields.
    type Output;

    /// Makes progress once and tells whether the operation has completed (MPI_Test).
    fn test(&mut self) -> Result<bool>;

    /// Blocks until the operation completes and returns its result (MPI_Wait).
    fn wait(self) -> Result<Self::Output>;
}

/// Waits for every request and returns their results in order (MPI_Waitall). Progress is
/// global, so waiting for receives also completes pending sends, in any order.
pub fn wait_all<R: Request>(requests: Vec<R>) -> Result<Vec<R::Output>> {
    let _call = blocked::enter(Call::new("wait_all"));
    requests.into_iter().map(Request::wait).collect()
}

/// A pending [`isend`](crate::Communicator::isend).
#[derive(Debug)]
#[must_use = "a send request should be waited for"]
pub struct SendRequest {
    engine: Rc<RefCell<Engine>>,
    dest: usize,
    id: u64,
}

impl SendRequest {
    pub(crate) fn new(engine: Rc<RefCell<Engine>>, dest: usize, id: u64) -> Self {
        SendRequest { engine, dest, id }
    }
}

impl Request for SendRequest {
    type Output = ();

    fn test(&mut self) -> Result<bool> {
        let mut e = self.engine.borrow_mut();
        e.progress()?;
        Ok(e.send_done(self.dest, self.id))
    }

    fn wait(self) -> Result<()> {
        let (dest, id) = (self.dest, self.id);
        self.engine
            .borrow_mut()
            .wait_until(|e| e.send_done(dest, id))
    }
}

/// A pending receive posted by [`irecv`](crate::Communicator::irecv) or
/// [`irecv_obj`](crate::Communicator::irecv_obj). Dropping it unfinished cancels it.
#[must_use = "a receive request should be waited for"]
pub struct PendingRecv<T, const OBJ: bool> {
    engine: Rc<RefCell<Engine>>,
    id: u64,
    finished: bool,
    _t: PhantomData<fn() -> T>,
}

/// A pending typed receive.
pub type RecvRequest<T> = PendingRecv<T, false>;
/// A pending receive of a serde value.
pub type RecvObjRequest<S> = PendingRecv<S, true>;

impl<T, const OBJ: bool> std::fmt::Debug for PendingRecv<T, OBJ> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingRecv").field("id", &self.id).finish()
    }
}

impl<T, const OBJ: bool> PendingRecv<T, OBJ> {
    pub(crate) fn new(engine: Rc<RefCell<Engine>>, id: u64) -> Self {
        PendingRecv {
            engine,
            id,
            finished: false,
            _t: PhantomData,
        }
    }

    fn poll(&mut self) -> Result<bool> {
        let mut e = self.engine.borrow_mut();
        e.progress()?;
        Ok(e.recv_done(self.id))
    }

    fn message(mut self) -> Result<crate::engine::Message> {
        let id = self.id;
        let mut e = self.engine.borrow_mut();
        e.wait_until(|e| e.recv_done(id))?;
        self.finished = true;
        e.take(id).ok_or_else(|| {
            crate::Error::InvalidArgument("receive completed without a message".into())
        })
    }
}

impl<T, const OBJ: bool> Drop for PendingRecv<T, OBJ> {
    fn drop(&mut self) {
        if !self.finished {
            if let Ok(mut e) = self.engine.try_borrow_mut() {
                e.cancel(self.id);
            }
        }
    }
}

impl<T: Pod> Request for PendingRecv<T, false> {
    type Output = (Vec<T>, Status);

    fn test(&mut self) -> Result<bool> {
        self.poll()
    }

    fn wait(self) -> Result<(Vec<T>, Status)> {
        unpack(self.message()?)
    }
}

impl<S: DeserializeOwned> Request for PendingRecv<S, true> {
    type Output = (S, Status);

    fn test(&mut self) -> Result<bool> {
        self.poll()
    }

    fn wait(self) -> Result<(S, Status)> {
        unpack_obj(self.message()?)
    }
}

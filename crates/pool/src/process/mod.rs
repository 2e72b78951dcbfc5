//! Process workers: forked children, fed chunk frames over pipes by whoever drives them (a
//! waiting caller, or the pool's supervisor thread: see `engine`).
//!
//! Wire format (native to this machine only: parent and child are one program):
//! - parent → child: `u32 len | u8 kind | ...`; kind 0 is a task (`u64 entry | payload`), kind
//!   1 asks the child to exit, kind 2 is a task whose payload waits in a shared-memory lane
//!   (`u64 entry | u8 lane | u64 payload length`). `entry` is the address of the monomorphized
//!   `child_entry`; the payload is a codec byte (0 postcard, 1 raw numbers) and the items, or
//!   (2) where in the caller the worker copies the items from and the results to, or (3, in a
//!   lane) where in the caller the worker copies the results to, then the raw items.
//! - child → parent: `u32 len | u8 tag | ...`; tag 0 is a reply (`u8 kind | body`: kind 0 the
//!   values, codec byte first; kind 1 a postcard `Reply`), tag 1 says the initializer panicked
//!   (the message, UTF-8), tag 2 a reply left in the lane's output area (`u8 lane | u64 len`).
//!
//! Sending a function's address is sound because the child is a fork of this very process:
//! same binary, same mappings, same addresses.

mod child;
mod codec;
mod engine;
mod forker;
mod job;
mod lanes;
mod supervisor;
mod sys;
mod worker;

#[doc(hidden)]
pub use codec::reply_results;
pub use engine::ProcessEngine;
#[doc(hidden)]
pub use worker::settle_reply_stream;

const KIND_TASK: u8 = 0;
const KIND_EXIT: u8 = 1;
const TAG_REPLY: u8 = 0;
const TAG_INIT_FAILED: u8 = 1;
/// Bytes before a task's payload: len, kind, entry.
const TASK_HEADER: usize = 4 + 1 + 8;
/// Bytes before a reply's payload: len, tag.
const REPLY_HEADER: usize = 4 + 1;
/// The largest message a `u32` length prefix can carry, minus the header.
pub(crate) const MAX_MESSAGE: usize = (u32::MAX as usize) - 16;
/// Exit status of a child whose own loop failed (protocol error, broken pipe).
const CHILD_FAILED: i32 = 120;

//! The PBS-compatible server: durable state, the client API and dispatch to node agents.
//!
//! [`core::Core`] takes every decision and holds no socket; [`daemon::run`] puts it behind
//! the client API and the agents' socket.

mod convert;
pub mod core;
pub mod daemon;
pub mod token;

//! The hpcbox daemons: the PBS-compatible server and the node agent.
//!
//! - [`api`]: what the PBS commands ask the server, and its answers;
//! - [`client`]: how the commands reach the server;
//! - [`server`]: the server: its state, decisions and daemon;
//! - [`home`]: the state directory and the files in it;
//! - [`store`]: the server's durable state in SQLite;
//! - [`protocol`]: the messages between the server and its node agents;
//! - [`exec`]: how the agent runs a job's processes and finds every one of them again;
//! - [`random`]: secrets (the token, job cookies);
//! - [`usage`]: what a job uses, and when it goes past its limits;
//! - [`agent`]: the node agent, which runs the jobs the server sends it and reports on them.

pub mod agent;
pub mod api;
pub mod cgroup;
pub mod client;
pub mod exec;
pub mod home;
pub mod interactive;
pub mod protocol;
pub mod random;
pub mod server;
pub mod store;
pub mod usage;

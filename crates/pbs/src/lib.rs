//! The PBS Professional language as plain data and pure functions.
//!
//! hpcbox-pbs knows everything the rest of hpcbox needs to speak PBS exactly, and does no I/O
//! and reads no clock:
//!
//! - command lines as the PBS commands read them ([`getopt`]);
//! - job scripts and their `#PBS` directives ([`script`]), and `qsub`'s options as a typed
//!   model ([`qsub`]), with dependencies ([`depend`]);
//! - resources: sizes ([`size`]), durations ([`duration`]), resource lists ([`resource`]),
//!   select statements ([`select`]), placement ([`place`]) and old-style `nodes=` specs ([`nodes`]);
//! - job identity: ids ([`jobid`]), array ranges ([`array`](mod@array)), states ([`state`]) and
//!   destinations ([`destination`]);
//! - the job's world: its environment, node file and output paths ([`jobenv`]), and how it
//!   ends: exit statuses, limit kills and history comments ([`exit`]);
//! - a new job's attributes as the server records them from `qsub`'s options ([`newjob`]);
//! - what `qsub -I` and the node of an interactive job say before they copy bytes
//!   ([`interactive`]);
//! - the text PBS prints: `qstat` in all its forms, `pbsnodes`, and the error messages and exit
//!   codes of the commands ([`status`], [`format`](mod@format), [`errno`]).
//!
//! Every parser returns a [`ParseError`] that names the offending token and says why, and
//! never panics.

pub mod array;
pub mod depend;
pub mod destination;
pub mod duration;
pub mod errno;
pub mod error;
pub mod exit;
pub mod format;
pub mod getopt;
pub mod interactive;
pub mod jobenv;
pub mod jobid;
pub mod newjob;
pub mod nodes;
pub mod place;
pub mod qsub;
pub mod resource;
pub mod script;
pub mod select;
pub mod size;
pub mod state;
pub mod status;

pub use error::ParseError;

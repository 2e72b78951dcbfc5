//! The PBS commands (`qsub`, `qstat`, `qdel`, `qhold`, `qrls`, `qsig`, `qalter`, `pbsnodes`), as the
//! `hpcbox` binary answers them under their own names or as `hpcbox qsub …`.

pub mod interactive;
pub mod pbsnodes;
pub mod qalter;
pub mod qdel;
pub mod qstat;
pub mod qsub;
pub mod tmrsh;

use std::process::ExitCode;

use hpcbox_cluster::client::Client;
use hpcbox_cluster::home::StateDir;

/// The names the binary answers to when called through a link.
pub const COMMANDS: [&str; 9] = [
    "qsub",
    "qstat",
    "qdel",
    "qhold",
    "qrls",
    "qsig",
    "qalter",
    "pbsnodes",
    "pbs_tmrsh",
];

/// Runs PBS command `name` with `args` (after the program name), if it is one.
pub fn run(name: &str, args: &[String]) -> Option<ExitCode> {
    let code = match name {
        "qsub" => qsub::run(args),
        "qstat" => qstat::run(args),
        "qdel" | "qhold" | "qrls" | "qsig" => qdel::run(name, args),
        "qalter" => qalter::run(args),
        "pbsnodes" => pbsnodes::run(args),
        "pbs_tmrsh" | "tmrsh" => tmrsh::run(args),
        _ => return None,
    };
    Some(exit_code(code))
}

/// An exit status as PBS commands give it (the low 8 bits).
pub fn exit_code(code: i32) -> ExitCode {
    ExitCode::from((code & 0xff) as u8)
}

/// The client of the server of this user's state directory.
pub fn client() -> Client {
    let state = StateDir::from_process_env().unwrap_or_else(|| StateDir::new("/tmp/hpcbox"));
    Client::new(state.socket())
}

/// Prints `program: <why the server was not reached>` and gives PBS's exit status for it
/// (`pbs_errno` 15034, no server: 15034 & 255).
pub fn unreachable(program: &str, err: &hpcbox_cluster::client::ClientError) -> i32 {
    eprintln!("{program}: {err}");
    hpcbox_pbs::errno::exit_code(hpcbox_pbs::errno::PbsErrno::NoServer.code())
}

/// `id` with the server's name appended when it names none, as the commands print ids.
pub fn complete_id(client: &Client, id: &str) -> String {
    match (id.parse::<hpcbox_pbs::jobid::JobId>(), client.server()) {
        (Ok(parsed), Ok(server)) => parsed.or_server(&server.name).to_string(),
        _ => id.to_string(),
    }
}

/// This machine's time zone, for the times the commands print: `/etc/localtime` read as it is,
/// unless `$TZ` names another (then jiff finds it). jiff's own way to the system's zone first
/// lists its whole time zone database, which costs a command more than a millisecond.
pub fn local_time_zone() -> jiff::tz::TimeZone {
    if std::env::var_os("TZ").is_none() {
        let data = std::fs::read("/etc/localtime").unwrap_or_default();
        if let Ok(zone) = jiff::tz::TimeZone::tzif("Local", &data) {
            return zone;
        }
    }
    jiff::tz::TimeZone::system()
}

/// Writes a command's output. A reader that went away (`qstat | head`) ends the output
/// quietly, as the C commands end, rather than with a panic; SIGPIPE stays ignored because
/// the pool and the client rely on EPIPE being an error.
pub fn emit(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

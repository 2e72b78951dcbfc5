//! `pbs_tmrsh HOST COMMAND…` (also `hpcbox tmrsh`): runs COMMAND on HOST, one of the hosts of
//! the job this process belongs to, through the job's agents, as PBS Professional's
//! `pbs_tmrsh` does through its TM interface; exits with COMMAND's exit status. Open MPI and
//! MPICH start their daemons on a job's other hosts with it (the job's environment names it
//! as their rsh agent and launcher). The task's output goes to the job's output files.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;

use hpcbox_cluster::protocol::{decode_line, encode_line, TmAnswer, TmRequest, ENV_TM_SOCKET};

const USAGE: &str =
    "usage: pbs_tmrsh [-n] [-l username] host command [args ...]\n       pbs_tmrsh --version";

/// Runs `pbs_tmrsh` with `args` (after the program name); the exit status.
pub fn run(args: &[String]) -> i32 {
    if args.len() == 1 && args[0] == "--version" {
        println!("pbs_version = {}", env!("CARGO_PKG_VERSION"));
        return 0;
    }
    match request(args).and_then(|request| ask(&request)) {
        Ok(answer) => {
            if let Some(error) = &answer.error {
                eprintln!("pbs_tmrsh: {error}");
            }
            answer.exit_status
        }
        Err(message) => {
            eprintln!("pbs_tmrsh: {message}");
            255
        }
    }
}

/// The request `args` make, for the job this process belongs to.
fn request(args: &[String]) -> Result<TmRequest, String> {
    let (host, command) = host_and_command(args)?;
    let job_id = std::env::var("PBS_JOBID").map_err(|_| "not inside a job (no PBS_JOBID)")?;
    let cwd = std::env::current_dir()
        .map(|dir| dir.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "/".into());
    Ok(TmRequest {
        job_id,
        host,
        command,
        cwd,
        env: std::env::vars().collect(),
    })
}

/// The host and the command line in `args`: rsh's `-n` and `-l user` are taken and ignored
/// (the task runs as the job's owner, its input is empty), as PBS's `pbs_tmrsh` takes them;
/// the command's words are joined, for the other side's shell to split, as rsh and ssh do.
fn host_and_command(args: &[String]) -> Result<(String, String), String> {
    let mut rest = args;
    while let Some(first) = rest.first() {
        match first.as_str() {
            "-n" => rest = &rest[1..],
            "-l" if rest.len() > 1 => rest = &rest[2..],
            _ => break,
        }
    }
    match rest {
        [host, command @ ..] if !command.is_empty() => Ok((host.clone(), command.join(" "))),
        _ => Err(USAGE.to_string()),
    }
}

/// Asks the job's agent and waits for the task's end.
fn ask(request: &TmRequest) -> Result<TmAnswer, String> {
    let socket = std::env::var(ENV_TM_SOCKET)
        .map_err(|_| format!("the job's agent takes no task requests (no {ENV_TM_SOCKET})"))?;
    let mut stream = UnixStream::connect(&socket)
        .map_err(|err| format!("cannot reach the job's agent at {socket}: {err}"))?;
    let line = encode_line(request).map_err(|err| err.to_string())?;
    stream
        .write_all(&line)
        .map_err(|err| format!("cannot ask the job's agent: {err}"))?;
    let mut answer = String::new();
    BufReader::new(stream)
        .read_line(&mut answer)
        .map_err(|err| format!("no answer from the job's agent: {err}"))?;
    decode_line(answer.trim_end().as_bytes())
        .map_err(|err| format!("a malformed answer from the job's agent: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rsh_options_are_taken_and_the_words_joined() {
        let args: Vec<String> = ["-n", "-l", "bob", "node2", "orted", "-mca", "x y"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            host_and_command(&args),
            Ok(("node2".to_string(), "orted -mca x y".to_string()))
        );
        assert_eq!(host_and_command(&["node2".into()]), Err(USAGE.to_string()));
        assert_eq!(host_and_command(&[]), Err(USAGE.to_string()));
    }
}

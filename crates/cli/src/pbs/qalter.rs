//! `qalter`: change a queued job's attributes, with `qsub`'s own options.

use hpcbox_cluster::api::{Action, JobAction};
use hpcbox_pbs::errno;
use hpcbox_pbs::getopt::{getopt, Opt};
use hpcbox_pbs::qsub::parse_args;

/// `qalter`'s options (cmds/qalter.c): `qsub`'s less `-C -f -I -J -q -v -V -X -z`.
const SPEC: &str = "a:A:c:e:h:j:k:l:m:M:N:o:p:r:R:S:u:W:P:";

const USAGE: &str = "usage: qalter [-a date_time] [-A account_string] [-c interval] [-e path] \n\
\t[-h hold_list] [-j y|n] [-k keep] [-l resource_list] [-m mail_options] \n\
\t[-M user_list] [-N jobname] [-o path] [-p priority] [-r y|n] [-S path] \n\
\t[-u user_list] [-W dependency_list] [-P project_name] job_identifier...\n\
       qalter --version\n";

/// Runs `qalter` with `args`; returns its exit status.
pub fn run(args: &[String]) -> i32 {
    if args.len() == 1 && args[0].eq_ignore_ascii_case("--version") {
        println!("pbs_version = {}", env!("CARGO_PKG_VERSION"));
        return 0;
    }
    let g = getopt("qalter", SPEC, args);
    let mut options_argv: Vec<String> = Vec::new();
    for opt in &g.opts {
        match opt {
            Opt::Invalid(message) => {
                eprint!("{message}\n{USAGE}");
                return 2;
            }
            Opt::Flag(letter @ ('a' | 'h'), _) => {
                eprintln!(
                    "qalter: -{letter} is not supported by hpcbox yet (use qhold/qrls for holds)"
                );
                return 2;
            }
            Opt::Flag(letter, value) => {
                options_argv.push(format!("-{letter}"));
                options_argv.extend(value.clone());
            }
        }
    }
    if g.operands.is_empty() || options_argv.is_empty() {
        eprint!("{USAGE}");
        return 2;
    }
    // The options are qsub's: read them as qsub reads its command line.
    options_argv.push("-".into());
    let options = match parse_args(&options_argv) {
        Ok(parsed) => parsed.options,
        Err(e) => {
            eprint!("{}", e.to_string().replace("qsub:", "qalter:"));
            return e.exit_code();
        }
    };
    let client = super::client();
    let mut exit = 0;
    for id in &g.operands {
        let request = JobAction {
            id: id.clone(),
            action: Action::Alter {
                options: Box::new(options.clone()),
            },
        };
        match client.act(&request) {
            Err(e) => return super::unreachable("qalter", &e),
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                let id = super::complete_id(&client, id);
                eprint!("{}", errno::job_error_line("qalter", error.code, &id));
                exit = errno::exit_code(error.code);
            }
        }
    }
    exit
}

//! What a job's environment tells the system MPIs about its allocation.
//!
//! Open MPI and MPICH as Debian builds them have no PBS (tm) support: on their own they see
//! one host with its cores, and refuse `mpiexec -np 4` where the job holds four one-CPU
//! vnodes on a two-core machine. PBS Professional sites answer this with tm-enabled builds;
//! hpcbox hands both MPIs the job's `PBS_NODEFILE` as their default host file, one line per
//! MPI slot, so `mpiexec -np N` inside a job starts N ranks on the job's hosts. Vnodes of one
//! machine are written under that machine's host name, so their ranks start as local children
//! of `mpiexec`, inside the job's session, accounted to it and killed with it. For the job's
//! other hosts both MPIs get `pbs_tmrsh` as their launcher ([`add_task_launcher`]), which
//! starts their daemons there through the agents.

/// The variables that point Open MPI and MPICH (Hydra) at the job's node file, plus, for a
/// job that runs as root, Open MPI's two-key consent to run as root (it refuses otherwise;
/// PBS sites do not run root jobs, a laptop cluster started by root does).
///
/// A variable already in `env` (from `qsub -v`, say) is left as the user set it.
pub(crate) fn add_mpi_environment(env: &mut Vec<(String, String)>, nodefile: &str, root: bool) {
    let mut wanted = vec![
        ("OMPI_MCA_orte_default_hostfile", nodefile),
        ("HYDRA_HOST_FILE", nodefile),
    ];
    if root {
        wanted.push(("OMPI_ALLOW_RUN_AS_ROOT", "1"));
        wanted.push(("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1"));
    }
    for (name, value) in wanted {
        if !env.iter().any(|(set, _)| set == name) {
            env.push((name.to_string(), value.to_string()));
        }
    }
}

/// The variables that have both MPIs start their daemons on the job's other hosts through
/// `tmrsh` (hpcbox's `pbs_tmrsh`), which reaches this agent at `tm_socket`: Open MPI's rsh
/// agent and Hydra's launcher, as PBS Professional sets them. A user's own setting wins.
pub(crate) fn add_task_launcher(env: &mut Vec<(String, String)>, tm_socket: &str, tmrsh: &str) {
    let wanted = [
        (crate::protocol::ENV_TM_SOCKET, tm_socket),
        ("OMPI_MCA_plm_rsh_agent", tmrsh),
        ("HYDRA_LAUNCHER", "rsh"),
        ("HYDRA_LAUNCHER_EXEC", tmrsh),
    ];
    for (name, value) in wanted {
        if !env.iter().any(|(set, _)| set == name) {
            env.push((name.to_string(), value.to_string()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value<'a>(env: &'a [(String, String)], name: &str) -> Option<&'a str> {
        env.iter()
            .find(|(set, _)| set == name)
            .map(|(_, value)| value.as_str())
    }

    #[test]
    fn both_mpis_get_the_node_file() {
        let mut env = vec![("PBS_JOBID".to_string(), "1.host".to_string())];
        add_mpi_environment(&mut env, "/aux/1.host", false);
        assert_eq!(
            value(&env, "OMPI_MCA_orte_default_hostfile"),
            Some("/aux/1.host")
        );
        assert_eq!(value(&env, "HYDRA_HOST_FILE"), Some("/aux/1.host"));
        assert_eq!(value(&env, "OMPI_ALLOW_RUN_AS_ROOT"), None);
        assert_eq!(value(&env, "PBS_JOBID"), Some("1.host"));
    }

    #[test]
    fn root_jobs_get_open_mpis_consent() {
        let mut env = Vec::new();
        add_mpi_environment(&mut env, "/aux/1.host", true);
        assert_eq!(value(&env, "OMPI_ALLOW_RUN_AS_ROOT"), Some("1"));
        assert_eq!(value(&env, "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"), Some("1"));
    }

    #[test]
    fn the_users_own_setting_wins() {
        let mut env = vec![("HYDRA_HOST_FILE".to_string(), "/mine".to_string())];
        add_mpi_environment(&mut env, "/aux/1.host", false);
        assert_eq!(value(&env, "HYDRA_HOST_FILE"), Some("/mine"));
        assert_eq!(
            env.iter().filter(|(n, _)| n == "HYDRA_HOST_FILE").count(),
            1
        );
    }
}

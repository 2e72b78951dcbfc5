#!/usr/bin/env python3
"""Turn run.sh's key|value lines into bench/results/cluster-<date>.md."""
import re, sys, datetime
res, out = sys.argv[1], sys.argv[2]
kv = {}
for line in open(res):
    if "|" in line:
        k, v = line.rstrip("\n").split("|", 1)
        kv[k] = v
def num(k):
    m = re.match(r"\s*(?:N=\d+ in )?([0-9.]+)", kv.get(k, ""))
    return float(m.group(1)) if m else None
def ratio(peer, hp, lower_better):
    a, b = num(peer), num(hp)
    if a is None or b is None or a == 0 or b == 0:
        return "—"
    return "%.1fx" % (a / b if lower_better else b / a)
rows = [  # label, hpcbox key, slurm default, slurm tuned, lower is better, unit, aim
    ("submit → start, idle node", "hpcbox_submit_start_s", "slurm_default_submit_start_s", "slurm_tuned_submit_start_s", True, "s", "≤ 35 ms"),
    ("qsub / sbatch return (held, idle)", "hpcbox_qsub_return_ms", "slurm_sbatch_return_ms", None, True, "ms", "≤ 3 ms"),
    ("qsub / sbatch return (during N-job run)", "hpcbox_qsub_return_busy_ms", "slurm_default_sbatch_return_busy_ms", "slurm_tuned_sbatch_return_busy_ms", True, "ms", ""),
    ("N jobs `true`, separate submits, end to end", "hpcbox_njobs_rate", "slurm_default_njobs_rate", "slurm_tuned_njobs_rate", False, "jobs/s", "≥ 100 jobs/s"),
    ("array of %s `true`, end to end" % kv.get("n_array", "?"), "hpcbox_array_rate", "slurm_default_array_rate", "slurm_tuned_array_rate", False, "tasks/s", "1,000 in ≤ 10 s"),
    ("array of %s `true`, end to end" % kv.get("n_array_big", "10000"), "hpcbox_array_big_s", None, None, True, "s", "10,000 in < 100 s"),
    ("qstat / squeue with 1,000 held", "hpcbox_qstat_held_ms", "slurm_squeue_held_ms", None, True, "ms", "≤ 8 ms"),
    ("qstat with 10,000 held", "hpcbox_qstat_held_big_ms", None, None, True, "ms", "< 100 ms"),
]
L = []
L.append("# hpcbox vs Slurm, one node — %s\n" % datetime.date.today().isoformat())
L.append("Script: `bench/cluster/run.sh` (installs/starts Slurm 22.05 per `shared/recipes/slurm-local.md`, "
         "starts hpcbox in a temp `HPCBOX_HOME` with `--cpus 2 --mem 4GB`, measures all three in one run; "
         "`report.py` writes this file). hpcbox runs from a copy of the release binary in the run's directory, "
         "as an installed binary would (one the linker has just written starts ~0.35 ms slower until its "
         "pages are read back).\n")
L.append("Machine: `nproc` = %s, Model name: %s, `free -g` total %s GiB; load average at start %s, at end %s. "
         "Whole run: %s s.\n" % (kv.get("nproc"), kv.get("cpu"), kv.get("mem_total_GiB"), kv.get("load_at_start"),
                                 kv.get("load_at_end"), kv.get("total_run_s")))
if "slurm_error" in kv:
    L.append("**Slurm not measured in this run:** %s. Compare against ANCHORS.md's Slurm figures "
             "(not measured in the same run).\n" % kv["slurm_error"])
else:
    L.append("Slurm: %s. Default = no SchedulerParameters (batch_sched_delay 3 s); tuned = "
             "`SchedulerParameters=batch_sched_delay=0` + `scontrol reconfigure`.\n" % kv.get("slurm_version"))
L.append("Jobs are submitted by, and run as, an ordinary user (`%s`, Debian's default dotfiles): hpcbox runs "
         "each job under its owner's login shell as PBS does, Slurm runs the script with its `#!/bin/bash`.\n"
         % kv.get("bench_user", "hpcbench"))
L.append("Ratios are written as *how many times better hpcbox is*: peer/hpcbox for times, hpcbox/peer for rates "
         "(so > 1x means hpcbox is better).\n")
L.append("| work | hpcbox | Slurm default | ratio | Slurm tuned | ratio | aim |")
L.append("|---|---|---|---|---|---|---|")
for lab, h, d, t, lb, unit, aim in rows:
    L.append("| %s (%s) | %s | %s | %s | %s | %s | %s |" % (
        lab, unit, kv.get(h, "—"), kv.get(d, "—") if d else "—", ratio(d, h, lb) if d else "—",
        kv.get(t, "—") if t else "—", ratio(t, h, lb) if t else "—", aim))
L.append("")
L.append("N: hpcbox %s; Slurm default %s; Slurm tuned %s (fewer for Slurm because it is slow; rates are compared)."
         % (kv.get("hpcbox_njobs"), kv.get("slurm_default_njobs", "—"), kv.get("slurm_tuned_njobs", "—")))
L.append("Array: hpcbox %s s; Slurm default %s; Slurm tuned %s (Slurm runs capped; rate from the tasks done)."
         % (kv.get("hpcbox_array_s"), kv.get("slurm_default_array_s", "—"), kv.get("slurm_tuned_array_s", "—")))
L.append("Held jobs counted by qstat/squeue: hpcbox %s, Slurm %s.\n"
         % (kv.get("hpcbox_qstat_held_lines"), kv.get("slurm_squeue_held_lines", "—")))
L.append("## Raw\n\n```")
L += ["%s = %s" % (k, v) for k, v in kv.items()]
L.append("```\n")
open(out, "w").write("\n".join(L))

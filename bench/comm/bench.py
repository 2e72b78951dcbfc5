#!/usr/bin/env python3
"""Runs hpcbox-comm, Open MPI and MPICH side by side and writes the table.

Usage: bench.py OUT.md ROUNDS HELLO_RUNS  (run by bench/comm/run.sh, which sets the variables
below). The three ping-pong programs are run in interleaved rounds (hpcbox, Open MPI, MPICH,
then again), so that load from elsewhere falls on all three alike; each measure keeps its best
batch over all rounds. Hello world: wall time from spawning the launcher to its exit, best
(and median) of HELLO_RUNS runs each, interleaved too.
"""
import os
import platform
import statistics
import subprocess
import sys
import time

OUT, ROUNDS, HELLO_RUNS = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
E = os.environ
OMPI_ENV = dict(E, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
PEERS = {
    "hpcbox": (E["HPCBOX_MPIEXEC"].split() + ["-n", "2"], E["HPCBOX_PP"], E["HPCBOX_HELLO"], E),
    "openmpi": (["mpirun.openmpi", "-np", "2"], E["OMPI_PP"], E["OMPI_HELLO"], OMPI_ENV),
    "mpich": (["mpiexec.mpich", "-n", "2"], E["MPICH_PP"], E["MPICH_HELLO"], E),
}
NAMES = {"hpcbox": "hpcbox", "openmpi": "Open MPI", "mpich": "MPICH"}
# (key, label, unit, lower is better, scale from seconds-per-op or bytes)
MEASURES = [
    ("pp8", "ping-pong one-way latency, 8 B", "µs", True),
    ("pp1024", "ping-pong one-way latency, 1 KiB", "µs", True),
    ("pp1048576", "ping-pong bandwidth, 1 MiB", "GB/s", False),
    ("pp16777216", "ping-pong bandwidth, 16 MiB", "GB/s", False),
    ("allreduce8", "allreduce 8 B (1 double)", "µs", True),
    ("allreduce1M", "allreduce 1 MiB (131072 doubles)", "µs", True),
    ("barrier", "barrier", "µs", True),
]


def sh(cmd):
    return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()


def pingpong(peer):
    launcher, prog, _, env = PEERS[peer]
    p = subprocess.run(launcher + [prog], capture_output=True, text=True, env=env, timeout=600)
    if p.returncode != 0:
        sys.exit(f"{peer} ping-pong failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    got = {}
    for line in p.stdout.splitlines():
        parts = line.split()
        if len(parts) == 5 and parts[1] == "best":
            got[parts[0]] = (float(parts[2]), float(parts[4]))
    return got


def hello(peer):
    launcher, _, prog, env = PEERS[peer]
    t = time.perf_counter()
    p = subprocess.run(launcher + [prog], capture_output=True, text=True, env=env, timeout=120)
    dt = time.perf_counter() - t
    if p.returncode != 0 or p.stdout.count("I am rank") != 2:
        sys.exit(f"{peer} hello failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return dt


def value(key, seconds):
    """The figure shown: µs per operation, or GB/s for the bandwidth rows."""
    if key in ("pp1048576", "pp16777216"):
        return int(key[2:]) / seconds / 1e9
    return seconds * 1e6


load_before = sh("cat /proc/loadavg")
best = {p: {} for p in PEERS}
medians = {p: {k: [] for k, *_ in MEASURES} for p in PEERS}
for rnd in range(ROUNDS):
    for peer in PEERS:
        for k, (b, m) in pingpong(peer).items():
            best[peer][k] = min(best[peer].get(k, b), b)
            medians[peer].setdefault(k, []).append(m)
    print(f"ping-pong round {rnd + 1}/{ROUNDS} done, load {sh('cat /proc/loadavg')}", flush=True)
hellos = {p: [] for p in PEERS}
for _ in range(HELLO_RUNS):
    for peer in PEERS:
        hellos[peer].append(hello(peer))
load_after = sh("cat /proc/loadavg")

rows = []
for key, label, unit, lower in MEASURES:
    h, o, m = (value(key, best[p][key]) for p in PEERS)
    med = [value(key, statistics.median(medians[p][key])) for p in PEERS]
    # Ratio > 1 means hpcbox is better.
    r_o, r_m = (o / h, m / h) if lower else (h / o, h / m)
    aim = r_o >= 1.0
    rows.append((label, unit, h, o, m, r_o, r_m, med, "yes" if aim else "no"))
hb = {p: min(v) for p, v in hellos.items()}
hm = {p: statistics.median(v) for p, v in hellos.items()}
hello_row = (hb["hpcbox"], hb["openmpi"], hb["mpich"], hm)

fmt = lambda x, unit: f"{x:.3f}" if unit == "µs" else f"{x:.2f}"
lines = [
    "| measure | hpcbox | Open MPI | MPICH | Open MPI / hpcbox | MPICH / hpcbox | medians (h / O / M) | aim met |",
    "|---|---|---|---|---|---|---|---|",
]
for label, unit, h, o, m, r_o, r_m, med, aim in rows:
    lines.append(
        f"| {label} ({unit}) | {fmt(h, unit)} | {fmt(o, unit)} | {fmt(m, unit)} | "
        f"{r_o:.2f}x | {r_m:.2f}x | {' / '.join(fmt(x, unit) for x in med)} | {aim} |"
    )
h, o, m, hm = hello_row
aim = "yes" if o / h >= 10 and h <= m else "no"
lines.append(
    f"| hello world, 2 ranks, start to exit (ms) | {h * 1e3:.1f} | {o * 1e3:.1f} | {m * 1e3:.1f} | "
    f"{o / h:.1f}x | {m / h:.2f}x | {hm['hpcbox'] * 1e3:.1f} / {hm['openmpi'] * 1e3:.1f} / "
    f"{hm['mpich'] * 1e3:.1f} | {aim} |"
)
table = "\n".join(lines)
print(table)

machine = "\n".join([
    f"nproc: {sh('nproc')}",
    sh("lscpu | grep -E 'Model name|Hypervisor vendor|L2 cache|L3 cache' || true"),
    f"kernel: {platform.release()}",
    f"load average before: {load_before}",
    f"load average after:  {load_after}",
    f"Open MPI: {sh('mpirun.openmpi --version 2>&1 | head -1')}",
    f"MPICH: {sh('mpichversion 2>/dev/null | head -1') or sh('mpiexec.mpich --version 2>&1 | grep -i version | head -1')}",
    f"rustc: {sh('rustc --version')}",
])
with open(OUT, "w") as f:
    f.write(f"# bench/comm/run.sh raw output, {sh('date -u +%Y-%m-%dT%H:%MZ')}\n\n")
    f.write(f"{ROUNDS} interleaved rounds of each ping-pong program (best batch of all rounds; "
            f"the medians column is the median over rounds of each round's median batch), "
            f"hello world best of {HELLO_RUNS} runs each (median beside it). "
            "Ratios > 1 mean hpcbox is better.\n\n")
    f.write("```\n" + machine + "\n```\n\n" + table + "\n")
print(f"\nwritten to {OUT}")

#!/usr/bin/env bash
# The lesson's scaling study on this machine, 1 to N processes, with its peer in the same run:
# `computepi --pool n`, `hpcbox mpiexec -n n computepi` and the lesson's Python
# multiprocessing pi (bench/scale/pi_pool.py), each swept by `hpcbox scale` (speed-up,
# efficiency, Amdahl fit, sweet spot, plots). Then the collectives of hpcbox-comm at 2 to N
# ranks (examples/pingpong) and a hello world's start-to-exit time, beside a peer MPI's (a
# system MPI when `mpicc` and `mpirun` are there, or PEER_MPIRUN with prebuilt PEER_PP and
# PEER_HELLO from bench/comm/*.c).
#
# Usage: bench/scale/run.sh [max_procs] [samples] [python_samples] [out_dir]
#   defaults: the usable CPUs, 8e9, 2e7, bench/results/scale-<date>-<N>cpu
# HPCBOX_BIN names a directory with prebuilt hpcbox, computepi, pingpong, mpi_hello (else built
# here).
# Every step's output goes to out_dir/log.txt as it runs; the plots beside it.
set -uo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
max="${1:-$(nproc)}"
samples="${2:-8000000000}"
py_samples="${3:-20000000}"
out="${4:-$root/bench/results/scale-$(date -u +%Y-%m-%d)-${max}cpu}"
bin="${HPCBOX_BIN:-}"
if [ -z "$bin" ]; then
  (cd "$root" && cargo build --release -q -p hpcbox --bins && cargo build --release -q -p hpcbox-comm --examples)
  bin="${CARGO_TARGET_DIR:-$root/target}/release"
  export PATH="$bin/examples:$PATH"
fi
bin="$(cd "$bin" && pwd)"
export PATH="$bin:$PATH"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
log="$out/log.txt"
: >"$log"
say() { echo "$@" | tee -a "$log"; }
run() { say "\$ $*"; "$@" 2>&1 | tee -a "$log"; }

# 1, 2, 3, 4, then every even count up to max (and max itself).
procs="1"
for n in 2 3 4; do [ "$n" -le "$max" ] && procs="$procs,$n"; done
for ((n = 6; n <= max; n += 2)); do procs="$procs,$n"; done
case ",$procs," in *",$max,"*) ;; *) procs="$procs,$max" ;; esac

say "== machine ($(date -u +%Y-%m-%dT%H:%MZ))"
run nproc
lscpu | grep -E 'Model name|^CPU\(s\)|Thread|Core|Socket|NUMA node\(s\)|MHz' | tee -a "$log"
free -g | tee -a "$log"
say "load average: $(cat /proc/loadavg); kernel $(uname -r); $(python3 --version 2>&1)"

cd "$out"
say "== computepi --pool n, $samples samples"
run hpcbox scale --procs "$procs" --repeat 3 --plot pool -- computepi --pool '{n}' --samples "$samples"
say "== hpcbox mpiexec -n n computepi, $samples samples"
run hpcbox scale --procs "$procs" --repeat 3 --plot ranks -- hpcbox mpiexec -n '{n}' computepi --samples "$samples"
say "== Python multiprocessing.Pool(n) pi, $py_samples samples"
run hpcbox scale --procs "$procs" --repeat 2 --plot python -- python3 "$root/bench/scale/pi_pool.py" '{n}' "$py_samples"

# hello world (init, print rank, finalize) from start to exit: median of 11 runs, in ms.
hello_ms() {
  local times=() t0 t1
  for _ in $(seq 11); do
    t0=$(date +%s%N); "$@" >/dev/null 2>&1; t1=$(date +%s%N)
    times+=($(((t1 - t0) / 1000)))
  done
  printf '%s\n' "${times[@]}" | sort -n | sed -n 6p | awk '{printf "%.2f\n", $1 / 1000}'
}
counts() { for n in 2 4 8 16 32 64; do [ "$n" -le "$max" ] && echo "$n"; done; }

say "== hpcbox-comm (examples/pingpong, mpi_hello): seconds per operation, best and median batch"
for n in $(counts); do
  say "-- hpcbox, $n ranks"
  run timeout 120 hpcbox mpiexec -n "$n" pingpong
  say "-- hpcbox, $n ranks, --bind-to core"
  run timeout 120 hpcbox mpiexec -n "$n" --bind-to core pingpong
  say "hello world, $n ranks: $(hello_ms hpcbox mpiexec -n "$n" mpi_hello) ms"
done
# The peer: PEER_MPIRUN (e.g. mpirun.openmpi) with prebuilt PEER_PP and PEER_HELLO, else the
# system's mpicc and mpirun.
mpirun_="${PEER_MPIRUN:-}"
if [ -z "$mpirun_" ] && command -v mpicc >/dev/null && command -v mpirun >/dev/null; then
  mpicc -O2 "$root/bench/comm/pingpong.c" -o "$out/pp-system" && mpicc -O2 "$root/bench/comm/mpi-hello.c" -o "$out/hello-system" &&
    mpirun_=mpirun PEER_PP="$out/pp-system" PEER_HELLO="$out/hello-system"
fi
if [ -n "$mpirun_" ]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
  say "== peer: $($mpirun_ --version 2>&1 | head -1)"
  for n in $(counts); do
    say "-- peer, $n ranks (its default binding)"
    run timeout 120 $mpirun_ -np "$n" "$PEER_PP"
    say "hello world, $n ranks: $(hello_ms $mpirun_ -np "$n" "$PEER_HELLO") ms"
  done
  rm -f "$out/pp-system" "$out/hello-system"
else
  say "== no peer MPI here (PEER_MPIRUN, or mpicc and mpirun): hpcbox alone"
fi
say "== done $(date -u +%H:%M:%SZ)"

#!/usr/bin/env bash
# hpcbox-comm against Open MPI and MPICH, side by side in one run, 2 ranks on this machine.
# Usage: bench/comm/run.sh [rounds] [hello_runs]   (defaults 5 and 20)
# Installs the peers when missing (Debian packages), builds hpcbox (release), compiles
# bench/comm/pingpong.c and the recipe's hello world with each MPI's mpicc, then runs the three
# interleaved (bench/comm/bench.py) and prints a table with ratios. The raw table goes to
# bench/results/comm-raw-<date>.md (the written-up results are bench/results/comm-<date>.md).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
rounds="${1:-5}"
hello_runs="${2:-20}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"

need=()
command -v mpicc.openmpi >/dev/null && command -v mpirun.openmpi >/dev/null || need+=(openmpi-bin libopenmpi-dev)
command -v mpicc.mpich >/dev/null && command -v mpiexec.mpich >/dev/null || need+=(mpich libmpich-dev)
if [ ${#need[@]} -gt 0 ]; then
  sudo_=""; [ "$(id -u)" -eq 0 ] || sudo_="sudo"
  $sudo_ apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -q "${need[@]}"
fi

cargo build --release -q -p hpcbox --bins
cargo build --release -q -p hpcbox-comm --examples
rel="$CARGO_TARGET_DIR/release"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
hello_c=bench/comm/mpi-hello.c
mpicc.openmpi -O2 bench/comm/pingpong.c -o "$tmp/pp-ompi"
mpicc.openmpi -O2 "$hello_c" -o "$tmp/hello-ompi"
mpicc.mpich -O2 bench/comm/pingpong.c -o "$tmp/pp-mpich"
mpicc.mpich -O2 "$hello_c" -o "$tmp/hello-mpich"

export HPCBOX_MPIEXEC="$rel/hpcbox mpiexec" HPCBOX_PP="$rel/examples/pingpong" HPCBOX_HELLO="$rel/examples/mpi_hello"
export OMPI_PP="$tmp/pp-ompi" OMPI_HELLO="$tmp/hello-ompi"
export MPICH_PP="$tmp/pp-mpich" MPICH_HELLO="$tmp/hello-mpich"
mkdir -p bench/results
python3 bench/comm/bench.py "bench/results/comm-raw-$(date -u +%Y-%m-%d).md" "$rounds" "$hello_runs"

#!/usr/bin/env bash
# Diagnostics for run.sh's hpcbox figures: login-shell cost, CLI start-up cost, qstat cost by queue size.
set -u
HPCBOX=${HPCBOX:-$(cd "$(dirname "$0")/../.." && pwd)/target/release/hpcbox}
W=$(mktemp -d /tmp/clusterdiag.XXXX); cd "$W"; export HPCBOX_HOME=$W/home
trap '"$HPCBOX" down >/dev/null 2>&1' EXIT
med(){ python3 -c 'import sys,statistics as s; print("%.1f ms"%(1000*s.median(float(x) for x in sys.stdin.read().split())))'; }
t(){ local n=$1; shift; for i in $(seq "$n"); do a=$EPOCHREALTIME; "$@" >/dev/null 2>&1; b=$EPOCHREALTIME; echo "$b - $a" | bc -l; done | med; }
echo "bash -l -c true (job login shell, this user): $(t 10 bash -l -c true)"
echo "bash --noprofile --norc -c true: $(t 10 bash --noprofile --norc -c true)"
echo "hpcbox --help (CLI start-up): $(t 10 "$HPCBOX" --help)"
"$HPCBOX" up --cpus 2 --mem 4GB >/dev/null; sleep 1
printf '#!/bin/bash\ntrue\n' > j.sh
echo "qstat, 0 jobs: $(t 10 "$HPCBOX" qstat)"
for i in $(seq 100); do "$HPCBOX" qsub -h j.sh >/dev/null; done
echo "qstat, 100 held: $(t 10 "$HPCBOX" qstat)"
for i in $(seq 900); do "$HPCBOX" qsub -h j.sh >/dev/null; done
echo "qstat, 1000 held: $(t 10 "$HPCBOX" qstat)"
echo "qstat 0.vm (one job), 1000 held: $(t 10 "$HPCBOX" qstat 0.vm)"
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"

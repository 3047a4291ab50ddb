#!/bin/bash
# Rerun of the toy quality benchmark modes changed by #31 (time travel timestep, K/V token rule), one mode per
# process, sequential on one core; each mode's JSON is written when it finishes (resumable: done modes are skipped).
cd "$(dirname "$0")/../.."
D=bench/rerun-1204
run() { local name=$1; shift; [ -s $D/$name.json ] && { echo "skip $name"; return; }
  echo "== $name $(date)"; OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_quality.py "$@" --out $D/$name.json --strip-dir $D/strips || echo "FAILED $name"; }
mkdir -p $D/strips
run drag --modes drag --variant-modes drag
run paste --modes paste --variant-modes paste
run appearance --modes appearance --variant-modes
run remove --modes remove --variant-modes
run move --modes move --variant-modes move --variants diffeditor_schedule
echo "== done $(date)"

#!/bin/bash
# The gradient pass's memory per double block (#28 item 5), on the CPU at reduced depth (scripts/bench_dit.py
# --memory-depths): FLUX.1 [dev] fp32 at 512^2, FLUX.2 [dev] bf16 at 256^2; extrapolated in the JSON/log.
cd "$(dirname "$0")/.."
env OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_dit.py --families flux1-dev --size 512 --steps 4 \
  --memory-depths 1 2 --out bench/dit-memory-flux1-512.json
env OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_dit.py --families flux2-dev --dtype bf16 --size 256 --steps 4 \
  --memory-depths 1 2 --out bench/dit-memory-flux2-256.json

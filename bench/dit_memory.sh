#!/bin/bash
# The gradient pass's memory per double block (#28 item 5), on the CPU at reduced depth (scripts/bench_dit.py
# --memory-depths): FLUX.1 [dev] fp32 at 512^2, with the pack's activation checkpointing (nodes/dit.py
# CHECKPOINT_BLOCKS) and without (NO_CKPT=1: --no-checkpoint); FLUX.2 [dev] bf16 at 256^2 (WITH_FLUX2=1); SD3.5 Large
# fp32 at 512^2 (WITH_SD3=1; ONLY_SD3=1: that one alone).
cd "$(dirname "$0")/.."
S=""; F=""; [ -n "${NO_CKPT:-}" ] && { S="--no-checkpoint"; F="-no-checkpoint"; }
[ -z "${ONLY_SD3:-}" ] && env OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_dit.py --families flux1-dev --size 512 \
  --steps 4 --memory-depths 1 2 $S --out bench/dit-memory-flux1-512$F.json
[ -n "${WITH_FLUX2:-}" ] && env OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_dit.py --families flux2-dev \
  --dtype bf16 --size 256 --steps 4 --memory-depths 1 2 $S --out bench/dit-memory-flux2-256$F.json
[ -n "${WITH_SD3:-}${ONLY_SD3:-}" ] && env OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_dit.py --families sd35-large \
  --size 512 --steps 4 --memory-depths 2 4 $S --out bench/dit-memory-sd35-large-512$F.json
true

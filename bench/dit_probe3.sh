#!/bin/bash
# Settings-scene probes of the toy DiT's K/V injection region for move (#28): every image token replaced by the
# bank's K/V (as the UNet path) against only the tokens outside the edit region (KV-Edit's scheme).
cd "$(dirname "$0")/.."
N=${N:-6}
P="env OMP_NUM_THREADS=1 .venv/bin/python scripts/probe_toy.py --dit --scenes $N --mode move"
A="schedule=dragondiffusion guidance_end=0.8 keep_background=0 vacated_noise=0 anchor_end=0.8"
T="schedule=dragondiffusion guidance_end=0.8 keep_background=0 vacated_noise=0"
echo "# $(date -u +%F) toy DiT $(sha256sum toy/dragon_toy/weights/dragon_toy_dit.safetensors | cut -c1-12), settings scenes 0-$((N-1)), 50 steps"
for r in all outside; do
  echo "## K/V region $r: toy move settings ($A)"; $P --energy 40 --kv-region $r --set $A 2>&1 | grep "^move"
  echo "## K/V region $r: without the anchor"; $P --energy 40 160 --kv-region $r --set $T 2>&1 | grep "^move"
  echo "## K/V region $r: the pack's defaults"; $P --energy 0 40 --kv-region $r 2>&1 | grep "^move"
done

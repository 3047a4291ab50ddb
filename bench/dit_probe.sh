#!/bin/bash
# Settings-scene probes of the toy DiT's move edits (scripts/probe_toy.py --dit), for README's Flow / DiT section.
cd "$(dirname "$0")/.."
T="schedule=dragondiffusion guidance_end=0.8 keep_background=0 vacated_noise=0 anchor_end=0.8"
P="env OMP_NUM_THREADS=1 .venv/bin/python scripts/probe_toy.py --dit --mode move --scenes 6"
echo "# $(date -u +%F) toy DiT $(sha256sum toy/dragon_toy/weights/dragon_toy_dit.safetensors | cut -c1-12), settings scenes 0-5, 50 steps"
echo "## toy move settings ($T), K/V into single blocks (the pack's choice)"
$P --energy 0 40 --set $T 2>&1 | grep "^move"
echo "## the same, K/V into every block"
$P --energy 40 --kv-blocks all --set $T 2>&1 | grep "^move"
echo "## the same, no K/V"
$P --energy 40 --no-kv --set $T 2>&1 | grep "^move"
echo "## the pack's defaults (DiffEditor schedule, nothing kept), K/V into single blocks"
$P --energy 0 40 2>&1 | grep "^move"

#!/bin/bash
# Settings-scene probes of the toy DiT (#28 items 3-4): the guidance features' blocks, energy scales without the
# anchor, and drag's point patches against region patches (scripts/probe_toy.py --dit).
cd "$(dirname "$0")/.."
N=${N:-6}
P="env OMP_NUM_THREADS=1 .venv/bin/python scripts/probe_toy.py --dit --scenes $N"
T="schedule=dragondiffusion guidance_end=0.8 keep_background=0 vacated_noise=0"
echo "# $(date -u +%F) toy DiT $(sha256sum toy/dragon_toy/weights/dragon_toy_dit.safetensors | cut -c1-12), settings scenes 0-$((N-1)), 50 steps"
echo "## move, toy settings without the anchor ($T): energy scale, feature blocks (1 2) the pack's"
$P --mode move --energy 0 40 160 --set $T 2>&1 | grep "^move"
for b in "0 1" "2" "0"; do echo "## move, the same, feature blocks $b"; $P --mode move --energy 160 --blocks $b --set $T 2>&1 | grep "^move"; done
echo "## drag (keep_background=0), 3x3 point patches (radius 1, the official), energy 0 / 80 (default) / 320"
$P --mode drag --energy 0 80 320 --set keep_background=0 2>&1 | grep "^drag"
for r in 2 3; do echo "## drag, region patches radius $r"; $P --mode drag --energy 80 320 --patch-radius $r --set keep_background=0 2>&1 | grep "^drag"; done

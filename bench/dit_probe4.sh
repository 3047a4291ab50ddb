#!/bin/bash
# Settings-scene probe of feature normalisation on the toy DiT (#28 item 3): the energies on raw features (the pack's)
# against features minus their image's mean feature (--centre-features), move without the anchor and drag.
cd "$(dirname "$0")/.."
N=${N:-6}
P="env OMP_NUM_THREADS=1 .venv/bin/python scripts/probe_toy.py --dit --scenes $N"
T="schedule=dragondiffusion guidance_end=0.8 keep_background=0 vacated_noise=0"
echo "# $(date -u +%F) toy DiT $(sha256sum toy/dragon_toy/weights/dragon_toy_dit.safetensors | cut -c1-12), settings scenes 0-$((N-1)), 50 steps"
for c in "" "--centre-features"; do
  echo "## ${c:-raw features}: move without the anchor ($T)"; $P --mode move --energy 40 160 $c --set $T 2>&1 | grep "^move"
  echo "## ${c:-raw features}: drag (keep_background=0)"; $P --mode drag --energy 80 $c --set keep_background=0 2>&1 | grep "^drag"
done

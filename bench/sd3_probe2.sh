#!/bin/bash
# Settings-scene probe of the toy SD3's feature blocks with the guidance alone moving the object (#28): on the toy SD3
# the copied start noise alone moves it (bench/sd3-probe-features.txt: IoU 0.73 at energy 0), so there the blocks
# hardly differ; --no-copy starts from the plain inverted noise (scripts/probe_toy.py). B="0 1" picks one choice.
cd "$(dirname "$0")/.."
N=${N:-6}
P="env OMP_NUM_THREADS=1 .venv/bin/python scripts/probe_toy.py --sd3 --scenes $N --no-copy"
T="schedule=dragondiffusion guidance_end=0.8 keep_background=0 vacated_noise=0"
echo "# $(date -u +%F) toy SD3 $(sha256sum toy/dragon_toy/weights/dragon_toy_sd3.safetensors | cut -c1-12), settings scenes 0-$((N-1)), 50 steps, no start-noise copy"
if [ -n "${B:-}" ]; then set -- "$B"; else set -- "0 1" "1 2" "2 3" "3 4" "4 5"; fi
for b in "$@"; do
  echo "## move without the copy and the anchor ($T), feature blocks $b"
  $P --mode move --energy ${E:-0 160} --blocks $b --set $T 2>&1 | grep "^move"
done

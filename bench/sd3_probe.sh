#!/bin/bash
# Settings-scene probes of the toy SD3 (toy/dragon_toy/sd3.py, ComfyUI's MMDiT; #28, the third family): which joint
# blocks give the guidance features, which take the bank's K/V, drag's patch size, the K/V region
# (scripts/probe_toy.py --sd3). PART=features|kv|drag|energy (default: all), N scenes (6).
cd "$(dirname "$0")/.."
N=${N:-6}
P="env OMP_NUM_THREADS=1 .venv/bin/python scripts/probe_toy.py --sd3 --scenes $N"
A="schedule=dragondiffusion guidance_end=0.8 keep_background=0 vacated_noise=0 anchor_end=0.8"
T="schedule=dragondiffusion guidance_end=0.8 keep_background=0 vacated_noise=0"
echo "# $(date -u +%F) toy SD3 $(sha256sum toy/dragon_toy/weights/dragon_toy_sd3.safetensors | cut -c1-12), settings scenes 0-$((N-1)), 50 steps"
part() { [ -z "${PART:-}" ] || [ "$PART" = "$1" ]; }
if part features; then
  echo "## move, toy settings without the anchor ($T), energy 0 / 160, features: the pack's blocks"
  $P --mode move --energy 0 160 --set $T 2>&1 | grep "^move"
  for b in "0 1" "1 2" "2 3" "3 4" "4 5" "2" "3"; do
    echo "## move, the same, energy 160, feature blocks $b"; $P --mode move --energy 160 --blocks $b --set $T 2>&1 | grep "^move"
  done
fi
if part kv; then
  for kv in "late --mmdit-kv-from 0.5" "late --mmdit-kv-from 0.67" "late --mmdit-kv-from 0.34" "all" "none"; do
    echo "## K/V into: $kv; toy move settings ($A)"; $P --mode move --energy 40 --mmdit-kv $kv --set $A 2>&1 | grep "^move"
    echo "## K/V into: $kv; the pack's defaults"; $P --mode move --energy 40 --mmdit-kv $kv 2>&1 | grep "^move"
  done
  echo "## K/V region all (every image token replaced), late from 0.5; toy move settings"
  $P --mode move --energy 40 --kv-region all --set $A 2>&1 | grep "^move"
fi
if part drag; then
  for r in 1 2 3; do
    echo "## drag (keep_background=0), patch radius $r"; $P --mode drag --energy 80 320 --patch-radius $r --set keep_background=0 2>&1 | grep "^drag"
  done
fi
if part energy; then
  echo "## move, toy settings ($A): energy"; $P --mode move --energy 0 20 40 80 --set $A 2>&1 | grep "^move"
  echo "## paste, toy settings: energy"; $P --mode paste --energy 0 30 60 --set keep_background=0 anchor_end=0.8 centred_features=True 2>&1 | grep "^paste"
fi

"""A slice of the quality benchmark in CI: the toy model, real ComfyUI, move and drag (4 test scenes, 50 steps)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = REPO / "toy" / "dragon_toy" / "weights" / "dragon_toy_unet.safetensors"


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> dict:
    if not WEIGHTS.exists():
        pytest.fail(f"the toy model's weights are missing: {WEIGHTS} (they are part of the repository)")
    out = tmp_path_factory.mktemp("bench")
    # the benchmark's default settings, as in the full run: the toy model's (toy/dragon_toy/settings.py)
    cmd = [sys.executable, str(REPO / "scripts" / "bench_quality.py"), "--modes", "move", "drag", "--scenes", "4",
           "--steps", "50", "--variants", "none", "--out", str(out / "q.json"), "--strip-dir", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    return json.loads((out / "q.json").read_text())


@pytest.mark.parametrize("mode", ["move", "drag"])
def test_benchmark_scores_every_method_through_the_real_nodes(bench, mode):
    """The slice ran the real nodes in real ComfyUI and scored every method on every metric."""
    m = bench["modes"][mode]
    for name in ("dragon", "no_guidance", "copy_paste", "copy_paste_fill", "ground_truth"):
        s = m["methods"][name]
        for k in ("centroid_err", "iou", "in_target", "bg_psnr", "vacated_psnr", "vacated_texture_err", "ghost",
                  "full_psnr"):
            assert k in s and s[k]["n"] == 4, (name, k)
    for name in ("dragon", "no_guidance"):
        assert m["methods"][name]["seconds"]["mean"] > 0
        assert m["methods"][name]["full_psnr"]["mean"] < 99  # a real result, not the ground truth
    assert "no_guidance" in m["paired_vs_dragon"] and "iou" in m["paired_vs_dragon"]["no_guidance"]
    assert len(m["per_scene"]["dragon"]) == 4


def test_move_beats_the_no_guidance_baseline(bench):
    """Move at the toy settings (anchored object, kept background, vacated place started from its surroundings'
    noise, energy guidance) lands the object and keeps the image far better than regenerating from the same
    copied start noise without any of it (the same nodes with energy_scale 0, no K/V patch and the options off;
    the 40-scene run: IoU 0.37 -> 0.92, background 25.2 -> 52.3 dB, vacated 12.4 -> 25.6 dB, full 19.3 -> 33.7
    dB; README, Quality benchmark). Every one of these 4 scenes gains on all four, so the intervals must lie
    below zero. Without the anchor the IoU gain shrinks (0.72 on 40 scenes) but passes; without keep_background
    the background gain does (33.0 dB). This guards the product's move; the energy itself adds about 1 dB of
    vacated PSNR here (the 40-scene run's no_energy row), too little to assert on 4 scenes, so drag's test
    below guards the guidance."""
    p = bench["modes"]["move"]["paired_vs_dragon"]["no_guidance"]  # no guidance minus Dragon, per scene
    for k, margin in (("iou", -0.3), ("bg_psnr", -10.0), ("vacated_psnr", -5.0), ("full_psnr", -5.0)):
        assert p[k]["mean_diff"] < margin and p[k]["ci95"][1] < 0, (k, p[k])


def test_drag_beats_the_no_guidance_baseline(bench):
    """Drag's guidance more than halves what stays behind at the handles and fills it better, against the
    same nodes with energy_scale 0 and no K/V patch (the 40-scene run: ghost 0.65 -> 0.15, vacated PSNR
    +6.4 dB, full PSNR +2.9 dB; README, Quality benchmark). A guidance that does nothing, or pushes the
    wrong way, fails here (checked at the toy setting keep_background 0: with energy_scale 0 the ghost
    difference is 0.018, vacated -0.08 dB, full -0.12 dB). The object still
    travels only in part (IoU 0.13 -> 0.23: the energy pulls one 3x3-cell patch per point and the toy model
    carries little of the rest along), so this guards the guidance, not the edit's quality."""
    p = bench["modes"]["drag"]["paired_vs_dragon"]["no_guidance"]  # no guidance minus Dragon, per scene
    assert p["ghost"]["mean_diff"] > 0.2, p["ghost"]
    assert p["vacated_psnr"]["mean_diff"] < -2.0, p["vacated_psnr"]
    assert p["full_psnr"]["mean_diff"] < -1.0 and p["full_psnr"]["ci95"][1] < 0, p["full_psnr"]


def test_ground_truth_scores_as_the_ceiling(bench):
    """The metrics themselves: the exact expected image is perfect where it should be."""
    gt = bench["modes"]["move"]["methods"]["ground_truth"]
    assert gt["centroid_err"]["median"] < 0.5 and gt["iou"]["mean"] > 0.85 and gt["ghost"]["mean"] == 0
    cp = bench["modes"]["move"]["methods"]["copy_paste"]
    assert cp["ghost"]["mean"] > 0.5  # the object left in place is seen as a ghost

"""The synthetic scenes and the benchmark's metrics: exact ground truth, deterministic, fair scores."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.append(str(REPO / "toy"))
from dragon_toy import scenes  # noqa: E402

spec = importlib.util.spec_from_file_location("bench_quality", REPO / "scripts" / "bench_quality.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


@pytest.mark.parametrize("mode", scenes.MODES)
def test_cases_are_deterministic_and_distinct(mode):
    a, b, c = scenes.make_case(mode, 3), scenes.make_case(mode, 3), scenes.make_case(mode, 4)
    assert torch.equal(a.source, b.source) and torch.equal(a.expected, b.expected)
    assert not torch.equal(a.source, c.source)
    assert a.source.shape == (3, scenes.SIZE, scenes.SIZE) and 0 <= a.source.min() and a.source.max() <= 1


@pytest.mark.parametrize("seed", range(5))
def test_move_ground_truth_is_the_shape_shifted_by_the_offset(seed):
    c = scenes.make_case("move", seed)
    dx, dy = (int(v) for v in c.offset)
    assert 6 <= (dx * dx + dy * dy) ** 0.5 <= 10.5
    assert torch.equal(torch.roll(c.source_region, (dy, dx), (0, 1)), c.target_region)
    outside = bench._dilate(c.source_region + c.target_region, 2) == 0
    assert torch.allclose(c.source[:, outside], c.expected[:, outside])


def test_resize_and_removal_ground_truth():
    r = scenes.make_case("resize", 2)
    ratio = (r.target_region.sum() / r.source_region.sum()).item()
    assert abs(ratio - r.scale ** 2) < 0.25 * r.scale ** 2
    rm = scenes.make_case("remove", 2)
    assert torch.equal(rm.expected, rm.background) and rm.target_region.sum() == 0


@pytest.mark.parametrize("mode", scenes.MODES)
def test_ground_truth_scores_perfectly(mode):
    c = scenes.make_case(mode, 1)
    s = bench.score(c, c.expected)
    assert s["full_psnr"] == 99.0 and s["bg_psnr"] == 99.0
    if "iou" in s:
        assert s["iou"] > 0.8 and s["centroid_err"] < 0.6 and s["in_target"] > 0.95
    if "ghost" in s:
        assert s["ghost"] == 0 and s["vacated_texture_err"] < 1e-6


def test_metrics_catch_a_wrong_edit():
    c = scenes.make_case("move", 5)
    untouched = bench.score(c, c.source)  # nothing moved: the object is a ghost, the target is empty
    assert untouched["ghost"] > 0.9 and untouched["iou"] < 0.3 and untouched["centroid_err"] > 5
    flipped = scenes.make_case("move", 5)
    flipped.offset = (-c.offset[0], -c.offset[1])
    wrong = bench.score(c, bench.copy_paste(flipped, fill=True))
    assert wrong["iou"] < 0.3


def test_texture_error_does_not_reward_a_flat_fill():
    """A hole filled with the ring's mean colour matches the background's mean but not its texture."""
    c = scenes.make_case("remove", 7)
    flat = bench.score(c, bench.copy_paste(c, fill=True))
    perfect = bench.score(c, c.background)
    assert flat["vacated_texture_err"] > perfect["vacated_texture_err"] + 0.01
    assert flat["ghost"] == 0


def test_copy_paste_baseline_moves_the_object():
    c = scenes.make_case("move", 6)
    s = bench.score(c, bench.copy_paste(c, fill=True))
    assert s["iou"] > 0.8 and s["centroid_err"] < 0.6 and s["ghost"] == 0
    hole = bench.score(c, bench.copy_paste(c, fill=False))
    assert hole["ghost"] > 0.5


def test_toy_workflow_points_are_the_scene_points():
    spec = importlib.util.spec_from_file_location("make_workflows_t", REPO / "scripts" / "make_workflows.py")
    mw = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mw)
    case = scenes.make_case("move", mw.TOY_SCENE)
    assert [[p["x"], p["y"]] for p in mw.TOY_DRAG_POINTS] == case.points
    (hx, hy), (tx, ty) = case.points
    assert (tx - hx, ty - hy) == pytest.approx(case.offset, abs=1e-9)  # the pair is the scene's move


def test_drag_mask_is_the_editable_region_and_the_other_modes_give_the_object():
    """Drag's guidance mask covers the object and the place it is dragged to (else the target is held as
    background); the baselines still cut the painted object itself."""
    d = scenes.make_case("drag", 3)
    assert torch.equal(torch.maximum(d.guide_mask, d.object_mask), d.guide_mask)  # contains the object
    assert bool((d.guide_mask[d.target_region > 0] > 0).all())  # and the whole target
    assert d.guide_mask.sum() > d.object_mask.sum()
    m = scenes.make_case("move", 3)
    assert m.guide_mask is m.object_mask


def _summary(v: float) -> dict:
    return {"mean": v, "median": v, "n": 2}


def test_readme_tables_flip_the_stored_differences_to_dragon_minus_baseline():
    report = {"modes": {"move": {
        "methods": {"dragon": {"iou": _summary(0.5), "bg_psnr": _summary(100.0), "centroid_err": _summary(1.234)},
                    "no_guidance": {"iou": _summary(0.25)}},
        # stored as no guidance minus Dragon, per scene
        "paired_vs_dragon": {"no_guidance": {"iou": {"mean_diff": -0.25, "ci95": [-0.4, -0.1]}}}}}}
    text = bench.markdown_tables(report)
    assert "| move | Dragon | 1.23 | – | 0.50 | ∞ |" in text
    assert "| move | Dragon − no guidance | – | +0.25 [+0.10, +0.40] | – |" in text


def test_bench_settings_apply_to_all_modes_or_one():
    """--set energy_scale=80 move.schedule=dragondiffusion: every mode at 80, only move on the other schedule;
    the default variants then compare move with the schedule it does not use."""
    o = bench.parse_overrides(["energy_scale=80", "move.schedule=dragondiffusion", "move.guidance_end=0.8"])
    move, drag = bench.mode_overrides(o, "move"), bench.mode_overrides(o, "drag")
    assert move == {"energy_scale": 80.0, "schedule": "dragondiffusion", "guidance_end": 0.8}
    assert drag == {"energy_scale": 80.0}
    assert bench.default_variants(move) == ["no_kv", "diffeditor_schedule"]
    assert bench.default_variants(drag) == ["no_kv", "dragondiffusion_schedule"]
    # each start/trajectory option that is on gets its "off" variant, and then the energy is switched off too
    assert bench.default_variants({**move, "anchor_end": 0.8, "keep_background": 0.0}) == [
        "no_kv", "diffeditor_schedule", "no_anchor", "no_keep", "no_energy", "official"]
    assert bench.default_variants({**move, "vacated_trend": 6.0, "monotone_energy": True}) == [
        "no_kv", "diffeditor_schedule", "no_vacated_trend", "no_monotone", "no_energy", "official"]
    assert bench.parse_overrides(["move.ring_inpaint=true", "centred_features=0"]) == {
        "move.ring_inpaint": True, "centred_features": False}
    assert bench.default_variants({**drag, "vacated_noise": -1.0, "anchor_end": 0.0, "vacated_trend": -1.0}) == [
        "no_kv", "dragondiffusion_schedule"]
    from dragon_toy.settings import GUIDANCE, bench_args
    toy = bench.parse_overrides(bench_args())  # the benchmark's default: the toy model's settings
    assert all(bench.mode_overrides(toy, m) == GUIDANCE.get(m, {}) for m in bench.MODES)
    for bad in (["energy_scale"], ["mvoe.energy_scale=3"], ["energy_scale=high"], ["ring_inpaint=maybe"]):
        with pytest.raises(ValueError):
            bench.parse_overrides(bad)

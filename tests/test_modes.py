"""remove / paste / appearance / landmark: masks, start latents, K/V selection and energies (no ComfyUI)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.append(str(Path(__file__).resolve().parents[1]))
from dragon_core.energy import appearance_energy, landmark_energy, paste_energy, remove_energy  # noqa: E402
from dragon_core.errors import DragonInputError  # noqa: E402
from dragon_core.inversion import Inversion  # noqa: E402
from dragon_core.landmarks import pair_landmarks, parse_point_list, pose_points  # noqa: E402
from dragon_core.plan import build_plan, kv_selector  # noqa: E402
from dragon_core.spec import MODE_DEFAULTS, MODES, GuidanceSpec, PointPair  # noqa: E402

W, H = 128, 64  # non-square on purpose; latent 16x8, feature grid 32x16
LAT = (8, 16)


def _box(x0, y0, x1, y1, w=W, h=H):
    m = torch.zeros(h, w)
    m[y0:y1, x0:x1] = 1
    return m


def _inv(seed=0, shape=(1, 4, 8, 16), steps=4):
    g = torch.Generator().manual_seed(seed)
    lat = [torch.randn(shape, generator=g) for _ in range(steps + 1)]
    return Inversion(latents=lat, sigmas=torch.linspace(10, 0, steps + 1), model_key="m", latent_shape=shape)


def _spec(mode, **kw):
    return GuidanceSpec.for_mode(mode, W, H, **kw)


def _bbox(mask):
    ys, xs = torch.nonzero(mask, as_tuple=True)
    return int(xs.min()), int(xs.max()), int(ys.min()), int(ys.max())


def test_all_modes_have_defaults():
    assert set(MODES) == set(MODE_DEFAULTS)
    assert {"remove", "paste", "appearance", "landmark"} <= set(MODES)


# ---------------------------------------------------------------- remove

def test_remove_plan_targets_the_object_and_restarts_only_its_noise():
    spec = _spec("remove", object_mask=_box(32, 16, 64, 48))
    plan = build_plan(spec, LAT, torch.device("cpu"))
    assert _bbox(plan.target_cells) == (8, 15, 4, 11)  # 4 px per feature cell
    assert _bbox(plan.grad_mask[0, 0] > 0) == (4, 7, 2, 5)  # 8 px per latent cell
    assert torch.equal(plan.sde_mask, plan.grad_mask)
    x_t = torch.randn(1, 4, *LAT)
    x = plan.initial(x_t)
    changed = (x != x_t).any(dim=1)[0]
    assert torch.equal(changed, plan.grad_mask[0, 0] > 0)
    assert torch.equal(plan.initial(x_t), x)  # deterministic


def test_remove_kv_reads_only_background_tokens_on_every_layer():
    spec = _spec("remove", object_mask=_box(32, 16, 64, 48))
    plan = build_plan(spec, LAT, torch.device("cpu"))
    obj_lat = plan.grad_mask[0, 0] > 0
    for hh, ww in ((8, 16), (4, 8), (2, 4)):
        n = hh * ww
        k = torch.arange(n, dtype=torch.float32).view(1, n, 1).repeat(1, 1, 3)
        ks, vs = plan.kv_select(k, k.clone(), {"activations_shape": [2, 3, hh, ww]})
        got = set(ks[0, :, 0].long().tolist())
        f = 8 // hh
        touched = obj_lat.view(hh, f, ww, f).any(3).any(1).flatten()  # tokens touching the object
        assert got == set(torch.nonzero(~touched).flatten().tolist()), (hh, ww)
        assert ks.shape[0] == 1 and torch.equal(ks, vs)
    # without activations_shape the grid is found from the token count
    k = torch.arange(32, dtype=torch.float32).view(1, 32, 1)
    assert plan.kv_select(k, k, {})[0].shape[1] == plan.kv_select(k, k, {"activations_shape": [1, 1, 4, 8]})[0].shape[1]


def test_remove_energy_prefers_the_area_looking_like_its_surroundings():
    n_cells, c = 40, 8
    region, other = torch.arange(0, 10), torch.arange(10, 40)
    obj_f, bg_f = torch.randn(c, 1), torch.randn(c, 1)
    ref = torch.cat([obj_f.expand(c, 10), bg_f.expand(c, 30)], dim=1) + 0.01 * torch.randn(c, n_cells)
    gen_kept = ref.clone()
    gen_removed = torch.cat([bg_f.expand(c, 10), bg_f.expand(c, 30)], dim=1)
    kw = dict(region=region, other=other, inpaint_ref=other, w_content=6.0, w_contrast=1.0, w_inpaint=4.0)
    e_kept, c_kept = remove_energy([gen_kept], [ref], **kw)
    e_removed, c_removed = remove_energy([gen_removed], [ref], **kw)
    assert float(e_removed) < float(e_kept)
    assert float(c_removed) == pytest.approx(float(c_kept), rel=1e-3)


@pytest.mark.parametrize("mask,match", [
    (torch.ones(H, W), "covers the whole image"),
    (_box(0, 0, 2, 2), "too small"),
])
def test_remove_bad_masks(mask, match):
    with pytest.raises(DragonInputError, match=match) as e:
        build_plan(_spec("remove", object_mask=mask), LAT, torch.device("cpu"))
    assert "Dragon Guidance Setup" in str(e.value) and "'object_mask'" in str(e.value)


# ---------------------------------------------------------------- paste

def test_paste_places_the_scaled_object_in_one_coordinate_system():
    """The official paste (issue #18) resized the reference about the image centre but rolled the mask by
    unscaled offsets. Here: the object (16..32 px) scaled 2x about its own centre (24, 24), then shifted by
    (40, 8) -> pixels 48..80 x 16..48, on the feature grid, the latent grid and in the start latent alike."""
    inv2 = _inv(7)
    spec = _spec("paste", reference_mask=_box(16, 16, 32, 32), reference_inversion=inv2, offset=(40.0, 8.0),
                 scale=2.0)
    plan = build_plan(spec, LAT, torch.device("cpu"))
    assert _bbox(plan.target_cells) == (12, 19, 4, 11)
    assert _bbox(plan.grad_mask[0, 0] > 0) == (6, 9, 2, 5)
    assert plan.second is inv2
    x_t = torch.randn(1, 4, *LAT)
    x = plan.initial(x_t)
    changed = (x != x_t).any(dim=1)[0]
    assert torch.equal(changed, plan.grad_mask[0, 0] > 0)
    # target latent cell (2, 6) has its centre at pixel (52, 20) -> source pixel (18, 18) -> latent cell (2, 2)
    assert torch.equal(x[..., 2, 6], inv2.noise[..., 2, 2])
    assert torch.equal(x[..., 5, 9], inv2.noise[..., 3, 3])


def _same_mean_off(ref2: torch.Tensor, gen: torch.Tensor, used: torch.Tensor) -> None:
    """Shift the reference image's features outside the cells `used` so that its mean feature equals the
    generated image's (the cross-image energies compare features relative to each image's mean)."""
    free = torch.ones(ref2.shape[1], dtype=torch.bool)
    free[used] = False
    ref2[:, free] += (gen.sum(1, keepdim=True) - ref2.sum(1, keepdim=True)) / int(free.sum())


def test_paste_energy_pairs_target_cells_with_their_source_cells():
    spec = _spec("paste", reference_mask=_box(16, 16, 32, 32), reference_inversion=_inv(7), offset=(40.0, 8.0),
                 scale=2.0)
    plan = build_plan(spec, LAT, torch.device("cpu"))
    gh, gw = plan.feature_hw
    ref = [torch.randn(6, gh * gw)]
    ref2 = [torch.randn(6, gh * gw)]
    gen_before = [ref[0].clone()]
    gen_after = [ref[0].clone()]
    # target feature cell (4, 12): centre pixel (50, 18) -> source (17, 17) -> feature cell (4, 4)
    tgt = torch.nonzero(plan.target_cells.flatten()).flatten()
    from dragon_core.geometry import object_warp
    src = object_warp(spec, gh, gw, mask=spec.reference_mask).source_index
    assert int(src[(tgt == 4 * gw + 12).nonzero()[0, 0]]) == 4 * gw + 4
    gen_after[0][:, tgt] = ref2[0][:, src]
    _same_mean_off(ref2[0], gen_after[0], src)  # (so centred_features would pair them the same way)
    e_before, _ = plan.energy(gen_before, ref + ref2)
    e_after, c_after = plan.energy(gen_after, ref + ref2)
    assert float(e_after) < float(e_before)
    assert float(e_after) == pytest.approx(MODE_DEFAULTS["paste"].w_edit / 5)  # full similarity: w/(1+4)
    assert float(c_after) == pytest.approx(MODE_DEFAULTS["paste"].w_content / 5)


def test_paste_kv_reads_base_background_and_the_reference_object():
    spec = _spec("paste", reference_mask=_box(16, 16, 32, 32), reference_inversion=_inv(7), offset=(40.0, 8.0),
                 scale=2.0)
    plan = build_plan(spec, LAT, torch.device("cpu"))
    n = 8 * 16
    k = torch.stack([torch.arange(n), 1000 + torch.arange(n)]).float()[..., None]  # item 0 base, item 1 reference
    ks, _ = plan.kv_select(k, k, {"activations_shape": [2, 1, 8, 16]})
    got = ks[0, :, 0].long()
    base_tok, ref_tok = got[got < 1000], got[got >= 1000] - 1000
    target = (plan.grad_mask[0, 0] > 0).flatten()
    assert set(base_tok.tolist()) == set(torch.nonzero(~target).flatten().tolist())
    assert set(ref_tok.tolist()) == {r * 16 + c for r in (2, 3) for c in (2, 3)}  # the object's latent cells


def test_paste_reference_of_another_size_is_a_clear_error():
    spec = _spec("paste", reference_mask=_box(16, 16, 32, 32), reference_inversion=_inv(7, shape=(1, 4, 8, 12)))
    with pytest.raises(DragonInputError, match="'reference_inversion'.*12x8 but the base image's is 16x8.*Resize"):
        build_plan(spec, LAT, torch.device("cpu"))


# ---------------------------------------------------------------- appearance

def test_appearance_keeps_the_shape_and_matches_the_mean_feature():
    inv2 = _inv(3)
    spec = _spec("appearance", object_mask=_box(16, 16, 48, 48), reference_mask=_box(80, 8, 112, 40),
                 reference_inversion=inv2)
    plan = build_plan(spec, LAT, torch.device("cpu"))
    x_t = torch.randn(1, 4, *LAT)
    assert torch.equal(plan.initial(x_t), x_t)  # start from the base image's own noise
    assert _bbox(plan.grad_mask[0, 0] > 0) == (2, 5, 2, 5)
    gh, gw = plan.feature_hw
    obj = torch.nonzero(plan.target_cells.flatten()).flatten()
    ref = [torch.randn(5, gh * gw)]
    ref2 = [torch.randn(5, gh * gw)]
    refobj = torch.nonzero(torch.nn.functional.interpolate(spec.reference_mask[None, None], (gh, gw))[0, 0].flatten()
                           ).flatten()
    mean2 = ref2[0][:, refobj].mean(1, keepdim=True)
    gen = [ref[0].clone()]
    e0, _ = plan.energy(gen, ref + ref2)
    # any arrangement with the reference object's mean feature minimises the edit term: only the mean is matched
    shuffled = ref2[0][:, refobj[torch.randperm(len(refobj))]][:, : len(obj)]
    gen[0][:, obj] = shuffled - shuffled.mean(1, keepdim=True) + mean2
    _same_mean_off(ref2[0], gen[0], refobj)
    e1, c1 = plan.energy(gen, ref + ref2)
    assert float(e1) < float(e0) and float(e1) == pytest.approx(MODE_DEFAULTS["appearance"].w_edit / 5, rel=1e-4)
    assert float(c1) == pytest.approx(MODE_DEFAULTS["appearance"].w_content / 5)
    # K/V: base tokens away from the base object + reference tokens of the reference object
    n = 8 * 16
    k = torch.stack([torch.arange(n), 1000 + torch.arange(n)]).float()[..., None]
    got = plan.kv_select(k, k, {"activations_shape": [2, 1, 8, 16]})[0][0, :, 0].long()
    assert set((got[got >= 1000] - 1000).tolist()) == {r * 16 + c for r in range(1, 5) for c in range(10, 14)}
    assert not set(got[got < 1000].tolist()) & {r * 16 + c for r in range(2, 6) for c in range(2, 6)}


def test_centred_cross_image_energies_ignore_each_image_s_overall_look():
    """With centre (the centred_features opt-in) the edit terms of paste and appearance compare features
    relative to each image's mean: a shift of the reference image's features as a whole (its overall look,
    e.g. another background) changes nothing, while a change of its object does."""
    g = torch.Generator().manual_seed(0)
    gen, ref, ref2 = (torch.randn(6, 40, generator=g) for _ in range(3))
    obj, other = torch.arange(10), torch.arange(10, 40)
    shifted = ref2 + 3.0 * torch.randn(6, 1, generator=g)
    changed = ref2.clone()
    changed[:, obj] += 3.0 * torch.randn(6, 1, generator=g)
    for fn, kw in ((paste_energy, dict(target=obj, source=obj)), (appearance_energy, dict(obj=obj, ref_obj=obj))):
        e = [float(fn([gen], [ref], [r], other=other, w_edit=4.0, w_content=6.0, centre=True, **kw)[0])
             for r in (ref2, shifted, changed)]
        assert e[1] == pytest.approx(e[0], rel=1e-5) and abs(e[2] - e[0]) > 1e-3, (fn.__name__, e)


def test_appearance_energy_sums_stages():
    c, n = 4, 12
    fs = [torch.randn(c, n), torch.randn(c, n)]
    idx = torch.arange(4)
    e2, c2 = appearance_energy(fs, fs, fs, obj=idx, ref_obj=idx, other=torch.arange(4, 12), w_edit=3.5, w_content=5.0)
    assert float(e2) == pytest.approx(2 * 3.5 / 5, rel=1e-5) and float(c2) == pytest.approx(2 * 5.0 / 5, rel=1e-5)
    e, _ = paste_energy(fs, fs, fs, target=idx, source=idx, other=idx, w_edit=4.0, w_content=6.0)
    assert float(e) == pytest.approx(2 * 4.0 / 5, rel=1e-5)


# ---------------------------------------------------------------- landmark

def test_landmark_plan_is_global_and_pulls_targets_toward_their_sources():
    pairs = (PointPair((20.0, 20.0), (40.0, 24.0)), PointPair((100.0, 40.0), (90.0, 50.0)), PointPair((60.0, 10.0),
                                                                                                    (64.0, 12.0)))
    spec = _spec("landmark", pairs=pairs)
    plan = build_plan(spec, LAT, torch.device("cpu"))
    assert bool((plan.grad_mask == 1).all()) and bool((plan.sde_mask == 1).all())  # official face mode: global
    x_t = torch.randn(1, 4, *LAT)
    assert torch.equal(plan.initial(x_t), x_t)
    gh, gw = plan.feature_hw
    ref = [torch.randn(8, gh * gw)]
    gen = [ref[0].clone()]
    e0, c0 = plan.energy(gen, ref)
    from dragon_core.geometry import pair_patches
    for handle, target in pair_patches(pairs, W / gw, H / gh, gh, gw):
        gen[0][:, target] = ref[0][:, handle]
    e1, _ = plan.energy(gen, ref)
    assert float(e1) < float(e0) and float(e1) == pytest.approx(12.0 / 5, rel=1e-5)
    assert float(c0) == 0.0  # no consistency term by default (official)
    e, c = landmark_energy(gen, ref, patches=[], outside=torch.arange(3), w_edit=1.0, w_content=6.0)
    assert float(c) == pytest.approx(6.0 / 5)


def test_landmark_lists_pair_by_position_and_unequal_lists_are_an_error():
    src = parse_point_list("Dragon Landmarks", "source_points", "[[1, 2], {\"x\": 3, \"y\": 4}]")
    assert src == [(1.0, 2.0), (3.0, 4.0)]
    pairs = pair_landmarks("Dragon Landmarks", src, [(5.0, 6.0), (7.0, 8.0)], 16, 16)
    assert pairs == (PointPair((1.0, 2.0), (5.0, 6.0)), PointPair((3.0, 4.0), (7.0, 8.0)))
    with pytest.raises(DragonInputError, match="'target_points': has 1 points but source_points has 2"):
        pair_landmarks("Dragon Landmarks", src, [(5.0, 6.0)], 16, 16)
    with pytest.raises(DragonInputError, match="'target_points': point 0 .* outside the 16x16"):
        pair_landmarks("Dragon Landmarks", src, [(50.0, 6.0), (7.0, 8.0)], 16, 16)
    with pytest.raises(DragonInputError, match="'source_points': is not valid JSON"):
        parse_point_list("Dragon Landmarks", "source_points", "[[1, 2]")
    with pytest.raises(DragonInputError, match="'source_points': point 0 has a coordinate too large"):
        parse_point_list("Dragon Landmarks", "source_points", "[[1" + "0" * 400 + ", 2]]")


def test_pose_keypoints_scale_to_the_image_and_skip_undetected_points():
    pose = [{"canvas_width": 200, "canvas_height": 100,
             "people": [{"face_keypoints_2d": [10, 20, 1.0, 0, 0, 0.0, 100, 50, 0.9]}]}]
    pts = pose_points("Dragon Landmarks", "source_keypoints", pose, "face", 100, 50)
    assert pts == [(5.0, 10.0), None, (50.0, 25.0)]
    pairs = pair_landmarks("Dragon Landmarks", pts, [(1.0, 1.0), (2.0, 2.0), (3.0, 3.0)], 100, 50)
    assert len(pairs) == 2  # the undetected point drops its pair, the lists stay aligned
    with pytest.raises(DragonInputError, match="no person"):
        pose_points("Dragon Landmarks", "target_keypoints", [{"people": []}], "face", 100, 50)


@pytest.mark.parametrize("pose,match", [
    ({"people": [{"pose_keypoints_2d": [1, 2, 1]}, {"face_keypoints_2d": [10, 20, 1, 30, 40, 0.8]}]},
     "no detected face keypoints on its first person, but person 2 of 2 has them"),
    ({"people": [{"face_keypoints_2d": [10, 20, 0]}, {}, {"face_keypoints_2d": [10, 20, 0.5]}]},
     "but person 3 of 3 has them; the landmarks are read from the first person only. Crop the image"),
    ({"people": [{"face_keypoints_2d": [10, 20, 0, 1, 1, 0]}]}, "has no detected face keypoints. Pick another part"),
])
def test_keypoints_of_another_person_or_none_detected_say_so(pose, match):
    with pytest.raises(DragonInputError) as e:
        pose_points("Dragon Landmarks", "source_keypoints", pose, "face", 100, 50)
    assert str(e.value).startswith("Dragon Landmarks: input 'source_keypoints': ") and match in str(e.value)


@pytest.mark.parametrize("pose,match", [
    ("a pose", "is not a POSE_KEYPOINT (got str)"),
    ([[1, 2, 3]], "is not a POSE_KEYPOINT (got list)"),
    ({"people": "alice"}, "'people' entry that is not a list"),
    ({"people": [[10, 20, 1]]}, "a person that is not a keypoint record"),
    ({"people": [{"face_keypoints_2d": "10 20 1"}]}, "face_keypoints_2d is not a flat list of numbers"),
    ({"people": [{"face_keypoints_2d": [10, None, 1]}]}, "not a flat list of numbers"),
    ({"people": [{"face_keypoints_2d": [10, 20, 1, 30, 40]}]}, "has 5 numbers, not x, y, confidence triples"),
    ({"canvas_width": -5, "people": [{"face_keypoints_2d": [10, 20, 1]}]}, "has canvas_width -5"),
    ({"canvas_width": "wide", "people": [{"face_keypoints_2d": [10, 20, 1]}]}, "has canvas_width 'wide'"),
    ([], "is an empty list: it holds no frame, so no person"),
])
def test_malformed_pose_keypoints_are_a_clear_error(pose, match):
    """POSE_KEYPOINT comes from other packs' nodes: any structure must give a refusal that names the input (it
    raised raw Python errors), and an incomplete last keypoint is refused, not dropped silently."""
    with pytest.raises(DragonInputError) as e:
        pose_points("Dragon Landmarks", "source_keypoints", pose, "face", 100, 50)
    assert str(e.value).startswith("Dragon Landmarks: input 'source_keypoints': ") and match in str(e.value)
    assert "POSE_KEYPOINT output of an OpenPose/DWPose" in str(e.value)


def test_kv_selector_falls_back_to_own_tokens_for_an_unknown_layout():
    sel = kv_selector([(0, torch.zeros(8, 16, dtype=torch.bool), "whole")], LAT)
    k = torch.randn(2, 7, 3)  # 7 tokens: no grid of the latent
    ks, vs = sel(k, k, {})
    assert torch.equal(ks, k[:1])


# ---------------------------------------------------------------- Guidance Setup (in ComfyUI)

@pytest.mark.parametrize("mode,kwargs,match", [
    ("remove", dict(), "'object_mask': remove needs object_mask"),
    ("remove", dict(object_mask=torch.zeros(1, H, W)), "'object_mask': is empty"),
    ("paste", dict(ref=True), "'reference_inversion': paste needs"),
    ("paste", dict(inv=True), "'reference_mask': paste needs"),
    ("appearance", dict(object_mask="obj", inv=True, reference_mask=torch.zeros(1, H, W)), "'reference_mask': is empty"),
    ("appearance", dict(object_mask="obj", inv=True, reference_mask=torch.ones(1, 32, 32)),
     "'reference_mask': sizes disagree"),
    ("paste", dict(ref=True, inv=True, offset_x=4, pair=True),
     "'points': gives the offset as a point pair, and offset_x/offset_y give it too"),
    ("landmark", dict(object_mask="obj"), "'points': landmark needs"),
])
def test_guidance_setup_refuses_bad_mode_inputs(comfy, mode, kwargs, match):
    gd = comfy.module("nodes.guidance")
    sp = comfy.module("dragon_core.spec")
    errors = comfy.module("dragon_core.errors")
    inv_cls = comfy.module("dragon_core.inversion").Inversion
    kw = dict(kwargs)
    if kw.pop("ref", False):
        kw["reference_mask"] = _box(16, 16, 32, 32)[None]
    if kw.pop("inv", False):
        i = _inv(1)
        kw["reference_inversion"] = inv_cls(latents=i.latents, sigmas=i.sigmas, model_key="m",
                                            latent_shape=i.latent_shape)
    if kw.get("object_mask") == "obj":
        kw["object_mask"] = _box(16, 16, 32, 32)[None]
    if kw.pop("pair", False):
        kw["points"] = sp.DragPoints(pairs=(sp.PointPair((1.0, 1.0), (9.0, 9.0)),), width=W, height=H)
    with pytest.raises(errors.DragonInputError) as e:
        gd.build_spec(mode, **kw)
    assert "Dragon Guidance Setup" in str(e.value) and match in str(e.value), str(e.value)


def test_guidance_setup_builds_each_new_mode_with_its_defaults(comfy):
    gd = comfy.module("nodes.guidance")
    sp = comfy.module("dragon_core.spec")
    inv_cls = comfy.module("dragon_core.inversion").Inversion
    i = _inv(1)
    inv = inv_cls(latents=i.latents, sigmas=i.sigmas, model_key="m", latent_shape=i.latent_shape)
    obj, ref = _box(16, 16, 32, 32)[None], _box(64, 16, 96, 48)[None]
    pts = sp.DragPoints(pairs=(sp.PointPair((10.0, 10.0), (20.0, 12.0)),), width=W, height=H)
    specs = {
        "remove": gd.build_spec("remove", object_mask=obj),
        "paste": gd.build_spec("paste", reference_mask=ref, reference_inversion=inv, points=pts),
        "appearance": gd.build_spec("appearance", object_mask=obj, reference_mask=ref, reference_inversion=inv),
        "landmark": gd.build_spec("landmark", points=pts, object_mask=torch.zeros(1, H, W)),
    }
    for mode, spec in specs.items():
        d = sp.MODE_DEFAULTS[mode]
        assert (spec.energy_scale, spec.w_edit, spec.w_content, spec.kv_mode) == (d.energy_scale, d.w_edit,
                                                                                  d.w_content, d.kv_mode)
        assert (spec.width, spec.height) == (W, H)
    assert specs["paste"].offset == (10.0, 2.0) and specs["paste"].pairs == ()  # the pair gave the offset
    assert specs["landmark"].object_mask is None  # an empty editor mask means none
    assert specs["landmark"].sde_strength == 0.2
    assert specs["remove"].reference_inversion is None


def test_an_empty_reference_region_means_none(comfy):
    """The Dragon Mask/Point Editor's `reference` output is all zero when its layer is not painted: wired into
    reference_region it must act as unconnected (the surroundings), not fail; a painted one is kept."""
    gd = comfy.module("nodes.guidance")
    obj = _box(16, 16, 32, 32)[None]
    empty = gd.build_spec("move", object_mask=obj, reference_region=torch.zeros(1, H, W), offset_x=16)
    assert empty.reference_region is None
    plain = gd.build_spec("move", object_mask=obj, offset_x=16)
    assert (empty.offset, empty.energy_scale, empty.w_inpaint) == (plain.offset, plain.energy_scale, plain.w_inpaint)
    painted = gd.build_spec("move", object_mask=obj, reference_region=_box(64, 16, 96, 48)[None], offset_x=16)
    assert painted.reference_region is not None and float(painted.reference_region.sum()) == 32 * 32

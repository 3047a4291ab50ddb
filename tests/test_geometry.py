"""Masks, correspondences and energies on small hand-made tensors (no ComfyUI)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.append(str(Path(__file__).resolve().parents[1]))
from dragon_core.energy import drag_energy, move_energy  # noqa: E402
from dragon_core.errors import DragonInputError  # noqa: E402
from dragon_core.geometry import cell_of, keep_mask, object_warp, pair_patches, surroundings  # noqa: E402
from dragon_core.plan import build_plan  # noqa: E402
from dragon_core.points import parse_points  # noqa: E402
from dragon_core.spec import GuidanceSpec, PointPair  # noqa: E402


def _spec(mode="move", w=128, h=64, box=(8, 8, 24, 24), **kw) -> GuidanceSpec:
    mask = torch.zeros(h, w)
    x0, y0, x1, y1 = box
    mask[y0:y1, x0:x1] = 1
    return GuidanceSpec(mode=mode, width=w, height=h, object_mask=mask, **kw)


def test_cell_of_clamps_columns_by_width_on_non_square_grids():
    # 128x64 image, feature grid 32 wide x 16 high: a point at x=120 is column 30, not clamped to 16-2
    assert cell_of(120, 10, 4, 4, 16, 32, margin=1) == (2, 30)
    assert cell_of(127.9, 63.9, 4, 4, 16, 32, margin=1) == (14, 30)  # border: kept one cell inside
    assert cell_of(0, 0, 4, 4, 16, 32, margin=1) == (1, 1)


def test_drag_patches_on_a_wide_image_sit_at_the_points():
    (handle, target), = pair_patches((PointPair((100.0, 10.0), (120.0, 50.0)),), 4.0, 4.0, 16, 32)
    rows, cols = handle // 32, handle % 32
    assert set(cols.tolist()) == {24, 25, 26} and set(rows.tolist()) == {1, 2, 3}
    rows, cols = target // 32, target % 32
    assert set(cols.tolist()) == {29, 30, 31} and set(rows.tolist()) == {11, 12, 13}


def test_region_patches_are_wider_and_kept_inside_the_grid():
    """Radius 2 (DiTs' drag): 5x5 cells around each point, the centre moved inward at the border, none repeated."""
    (handle, target), = pair_patches((PointPair((100.0, 10.0), (120.0, 50.0)),), 4.0, 4.0, 16, 32, radius=2)
    assert handle.numel() == target.numel() == 25 and handle.unique().numel() == 25
    rows, cols = handle // 32, handle % 32
    assert set(cols.tolist()) == {23, 24, 25, 26, 27} and set(rows.tolist()) == {0, 1, 2, 3, 4}
    rows, cols = target // 32, target % 32
    assert set(cols.tolist()) == {27, 28, 29, 30, 31} and set(rows.tolist()) == {10, 11, 12, 13, 14}


def test_move_warp_shifts_the_footprint_by_the_offset_in_grid_units():
    spec = _spec(offset=(40.0, 8.0))
    warp = object_warp(spec, 16, 32)  # 4 px per cell
    ys, xs = torch.nonzero(warp.target, as_tuple=True)
    assert (int(xs.min()), int(xs.max()), int(ys.min()), int(ys.max())) == (12, 15, 4, 7)
    src = warp.source_index
    assert torch.equal(src % 32, xs - 10) and torch.equal(src // 32, ys - 2)


def test_start_latent_copy_lands_exactly_where_the_guidance_targets():
    """The official code shifted the noise by unscaled offsets; here both come from one mapping."""
    spec = _spec(offset=(40.0, 8.0))
    plan = build_plan(spec, (8, 16), torch.device("cpu"))
    x_t = torch.arange(4 * 8 * 16, dtype=torch.float32).view(1, 4, 8, 16)
    x = plan.initial(x_t)
    changed = (x != x_t).any(dim=1)[0]
    assert torch.equal(changed, plan.grad_mask[0, 0] > 0)
    assert torch.equal(x[..., 2:4, 6:8], x_t[..., 1:3, 1:3])  # object noise at its new place


def test_resize_past_the_border_is_clipped_not_an_error():
    spec = _spec(box=(96, 16, 124, 48), scale=1.8)
    plan = build_plan(spec, (8, 16), torch.device("cpu"))
    t = plan.target_cells
    assert t[:, -1].any() and t.sum() > object_warp(_spec(box=(96, 16, 124, 48)), 16, 32).target.sum()
    with pytest.raises(DragonInputError, match=r"'offset_x/offset_y': \(500, 0\) moves the object entirely out of the "
                                               r"128x64 image. Use a smaller offset"):
        build_plan(_spec(offset=(500.0, 0.0)), (8, 16), torch.device("cpu"))


def test_an_object_scaled_or_painted_too_small_gets_the_advice_that_fixes_it():
    """scale 0.05 leaves nothing of the object: the fix is a *larger* scale (it used to say smaller); an object
    below one feature cell is the mask's fault."""
    with pytest.raises(DragonInputError, match=r"'scale': 0.05 shrinks the object \(28x32 pixels\).*Use a larger "
                                               r"scale \(at least 0.29"):
        build_plan(_spec(box=(96, 16, 124, 48), scale=0.05), (8, 16), torch.device("cpu"))
    with pytest.raises(DragonInputError, match=r"'object_mask': the object is too small.*Paint a larger object"):
        build_plan(_spec(box=(96, 16, 97, 17)), (8, 16), torch.device("cpu"))


def test_drag_without_a_mask_builds_a_region_around_the_drag():
    spec = GuidanceSpec(mode="drag", width=128, height=64, pairs=(PointPair((20.0, 20.0), (60.0, 20.0)),))
    plan = build_plan(spec, (8, 16), torch.device("cpu"))
    m = plan.grad_mask[0, 0] > 0
    assert m[2, 2] and m[2, 7] and not m[7, 15]  # handle, target in; far corner out


def test_drag_without_points_is_an_error_naming_points():
    with pytest.raises(DragonInputError, match="'points'"):
        build_plan(GuidanceSpec(mode="drag", width=64, height=64), (8, 8), torch.device("cpu"))


def test_move_energy_is_lowest_when_the_target_shows_the_source():
    torch.manual_seed(0)
    gh, gw = 8, 8
    ref = [torch.randn(16, gh * gw)]
    target, source = torch.tensor([10, 11]), torch.tensor([1, 2])
    other, vac = torch.tensor([40, 41, 42]), torch.tensor([1, 2])
    iref = other
    kw = dict(target=target, source=source, other=other, vacated=vac, inpaint_ref=iref,
              w_edit=4, w_content=6, w_contrast=0.2, w_inpaint=0.8)
    good = ref[0].clone()
    good[:, target] = ref[0][:, source]
    bad = ref[0].clone()
    bad[:, target] = -ref[0][:, source]
    e_good, c_good = move_energy([good], ref, **kw)
    e_bad, c_bad = move_energy([bad], ref, **kw)
    assert e_good < e_bad
    assert abs(float(e_good) - 4 / 5) < 1e-5  # w/(1+4*1) at perfect correspondence
    changed = ref[0].clone()
    changed[:, other] = -ref[0][:, other]
    assert move_energy([changed], ref, **kw)[1] > move_energy([ref[0]], ref, **kw)[1]


def test_drag_energy_pulls_target_toward_handle_content():
    torch.manual_seed(1)
    ref = [torch.randn(8, 64)]
    patches = [(torch.tensor([9, 10, 11]), torch.tensor([33, 34, 35]))]
    good = ref[0].clone()
    good[:, patches[0][1]] = ref[0][:, patches[0][0]]
    kw = dict(patches=patches, outside=torch.tensor([60, 61]), w_edit=4, w_content=6, w_inpaint=0.2)
    assert drag_energy([good], ref, **kw)[0] < drag_energy([ref[0]], ref, **kw)[0]


@pytest.mark.parametrize("text,match", [
    ('[{"x": 1, "y": 2}]', "count must be even"),
    ("[1, 2", "not valid JSON"),
    ('{"x": 1}', "must be a JSON list"),
    ('[{"x": 1, "y": 2}, {"x": 999, "y": 2}]', "outside the 64x32 image"),
    ('[{"x": 1, "y": "a"}, {"x": 2, "y": 2}]', "non-numeric"),
    ('[{"handle": [1, 2]}]', "needs both"),
    ('[[1, 2, 3], [1, 2]]', "must be"),
])
def test_points_json_errors_name_the_input(text, match):
    with pytest.raises(DragonInputError) as e:
        parse_points("Dragon Mask/Point Editor", "points", text, 64, 32)
    assert "'points'" in str(e.value) and match in str(e.value)


def test_points_both_formats_parse_to_the_same_pairs():
    a = parse_points("n", "points", '[{"x": 1, "y": 2}, {"x": 3, "y": 4}]', 64, 32)
    b = parse_points("n", "points", '[{"handle": [1, 2], "target": [3, 4]}]', 64, 32)
    assert a == b == (PointPair((1.0, 2.0), (3.0, 4.0)),)


def test_surroundings_is_a_ring_around_the_object_as_wide_as_a_fifth_of_it():
    grid = torch.zeros(64, 64, dtype=torch.bool)
    small, big = grid.clone(), grid.clone()
    small[30:34, 30:34] = True  # 16 cells: the 2-cell minimum
    big[12:52, 12:52] = True  # 1600 cells: 0.2 * 40 = 8 cells
    for obj, width in ((small, 2), (big, 8)):
        ring = surroundings(obj, ~obj)
        ys, xs = torch.nonzero(obj, as_tuple=True)
        rs, cs = torch.nonzero(ring, as_tuple=True)
        assert not bool((ring & obj).any())
        assert (int(rs.min()), int(rs.max())) == (int(ys.min()) - width, int(ys.max()) + width)
        assert (int(cs.min()), int(cs.max())) == (int(xs.min()) - width, int(xs.max()) + width)
    # kept to the allowed cells; with none of them near, all of them
    allowed = ~small
    allowed[:, :32] = False
    assert not bool((surroundings(small, allowed) & ~allowed).any())
    far = torch.zeros(64, 64, dtype=torch.bool)
    far[0:4, 60:64] = True
    assert torch.equal(surroundings(small, far), far)


def _fill_energy_change(mode: str, far: bool, ring: bool = False) -> float:
    """How much the edit's fill term moves when the reference features of cells near the object (or far
    from it) change; the features of the generated image are left alone."""
    spec = _spec(mode, w=64, h=64, box=(16, 16, 32, 32), offset=(16.0, 0.0) if mode == "move" else (0.0, 0.0),
                 w_edit=0.0, w_content=0.0, w_contrast=0.0, w_inpaint=1.0, ring_inpaint=ring)
    plan = build_plan(spec, (8, 8), torch.device("cpu"))
    g = torch.Generator().manual_seed(0)
    gen, ref = torch.randn(8, 256, generator=g), torch.randn(8, 256, generator=g)
    e0 = sum(plan.energy([gen], [ref]))
    moved = ref.clone().view(8, 16, 16)
    if far:
        moved[:, 13:, 0:2] += 5.0  # the bottom-left corner, 5+ cells from the object
    else:
        moved[:, 3, 4:8] += 5.0  # the row just above the object
    return abs(float(sum(plan.energy([gen], [moved.view(8, 256)]))) - float(e0))


def test_ring_inpaint_fills_the_vacated_area_like_its_surroundings_not_the_whole_image():
    """Move with no reference region: by default (official) the fill term averages the whole rest of the
    image; with ring_inpaint only a ring around the object. Removal keeps the whole-image average (the ring
    did not fill better there)."""
    assert _fill_energy_change("move", far=False) > 1e-3
    assert _fill_energy_change("move", far=True) > 1e-3
    assert _fill_energy_change("move", far=False, ring=True) > 1e-3
    assert _fill_energy_change("move", far=True, ring=True) == 0.0
    assert _fill_energy_change("remove", far=True) > 1e-3


def test_keep_mask_keeps_all_but_the_grown_region_with_a_soft_edge():
    region = torch.zeros(1, 1, 16, 16)
    region[..., 6:9, 6:9] = 1
    keep = keep_mask(region, 2)[0, 0]
    assert bool((keep[4:11, 4:11] == 0).all())  # the region grown by 2 cells is edited freely
    edge = keep[3, 4:11]  # the ring just outside: partly kept
    assert bool(((edge > 0) & (edge < 1)).all())
    assert bool((keep[:2] == 1).all()) and bool((keep[:, 12:] == 1).all())  # farther out: kept
    assert bool((keep_mask(region, 0)[0, 0][6:9, 6:9] == 0).all()) and float(keep_mask(region, 0)[0, 0][5, 7]) > 0


def test_keep_background_margin_is_in_image_pixels():
    # 128x64 image on a 16x8 latent: 8 px per cell; a 20 px margin grows the region by 3 cells
    spec = _spec(offset=(40.0, 0.0), keep_background=20)
    plan = build_plan(spec, (8, 16), torch.device("cpu"))
    region = plan.sde_mask[0, 0] > 0
    ys, xs = torch.nonzero(region, as_tuple=True)
    free = plan.keep[0, 0] == 0
    fy, fx = torch.nonzero(free, as_tuple=True)
    assert int(fx.min()) == max(0, int(xs.min()) - 3) and int(fx.max()) == min(15, int(xs.max()) + 3)
    assert build_plan(_spec(offset=(40.0, 0.0)), (8, 16), torch.device("cpu")).keep is None  # -1: off


@pytest.mark.parametrize("mode", ["move", "remove"])
def test_vacated_start_noise_comes_from_the_surroundings(mode):
    """vacated_noise 0: the place the object leaves starts from its surroundings' mean start noise (not the
    object's inverted noise); 0.5 adds fresh noise of their spread; -1 keeps the mode's default start."""
    offset = (40.0, 0.0) if mode == "move" else (0.0, 0.0)
    g = torch.Generator().manual_seed(1)
    x_t = torch.randn(1, 4, 8, 16, generator=g)
    x_t[..., 1:3, 1:3] += 10.0  # the object's inverted noise, far from its surroundings'
    flat = build_plan(_spec(mode, offset=offset, vacated_noise=0.0), (8, 16), torch.device("cpu")).initial(x_t)
    noisy = build_plan(_spec(mode, offset=offset, vacated_noise=0.5), (8, 16), torch.device("cpu")).initial(x_t)
    default = build_plan(_spec(mode, offset=offset), (8, 16), torch.device("cpu")).initial(x_t)
    vac = flat[..., 1:3, 1:3]
    assert bool((vac - vac[..., :1, :1]).abs().max() < 1e-6)  # one value per channel
    assert float(vac.abs().max()) < 2.0  # the surroundings' level, not the object's (+10)
    assert float((noisy[..., 1:3, 1:3] - vac).std()) > 0.05
    if mode == "move":
        assert torch.equal(default[..., 1:3, 1:3], x_t[..., 1:3, 1:3])  # official: the object's noise stays
        assert torch.equal(flat[..., 1:3, 6:8], x_t[..., 1:3, 1:3])  # the copy to the target is unchanged
    else:
        assert float(default[..., 1:3, 1:3].abs().max()) < 8.0  # fresh noise
    outside = torch.ones(8, 16, dtype=torch.bool)
    outside[1:3, 1:3] = False
    if mode == "move":
        outside[1:3, 6:8] = False
    assert torch.equal(flat[0][:, outside], x_t[0][:, outside])


def test_paste_anchor_copies_from_the_reference_image_s_branch():
    """paste's anchor takes the object from the reference image's inverted latent (the base image has no object),
    at the same cells the start-noise copy uses; move's takes it from the base image's own branch."""
    from dragon_core.inversion import Inversion

    ref_lat = [torch.full((1, 4, 8, 16), float(k + 1)) for k in range(3)]
    inv2 = Inversion(latents=ref_lat, sigmas=torch.tensor([2.0, 1.0, 0.0]), model_key="m", latent_shape=(1, 4, 8, 16))
    paste = GuidanceSpec(mode="paste", width=128, height=64, reference_mask=_spec().object_mask, offset=(40.0, 8.0),
                         reference_inversion=inv2)
    plan = build_plan(paste, (8, 16), torch.device("cpu"))
    assert plan.anchor.second
    base = torch.zeros(1, 4, 8, 16)
    out = plan.anchor.apply(base, base, inv2.reference(1))
    assert torch.equal((out != 0).any(dim=1)[0], plan.grad_mask[0, 0] > 0)  # the target cells, nothing else
    assert bool((out[..., 2:4, 6:8] == 2.0).all()) and not bool(base.any())  # reference(1) = latents[1]; input kept
    start = plan.initial(base)
    assert torch.equal(start != 0, out != 0)  # the start copy uses the same cells
    move = build_plan(_spec(offset=(40.0, 8.0)), (8, 16), torch.device("cpu"))
    assert not move.anchor.second


def test_paste_anchors_only_the_object_s_interior_and_move_all_of_it():
    """The edge cells of a pasted object also hold the reference's background (a ring of its colour when
    anchored), so paste's anchor leaves them to the edit; move anchors every cell (its own background)."""
    from dragon_core.inversion import Inversion

    big = _spec(box=(8, 8, 56, 56)).object_mask  # 6x6 latent cells at 8 px per cell
    inv2 = Inversion(latents=[torch.zeros(1, 4, 8, 16)] * 2, sigmas=torch.tensor([1.0, 0.0]), model_key="m",
                     latent_shape=(1, 4, 8, 16))
    paste = GuidanceSpec(mode="paste", width=128, height=64, reference_mask=big, offset=(40.0, 0.0),
                         reference_inversion=inv2)
    plan = build_plan(paste, (8, 16), torch.device("cpu"))
    target = set(torch.nonzero(plan.grad_mask[0, 0].flatten()).flatten().tolist())
    assert len(target) == 36
    inner = {r * 16 + c for r in range(2, 6) for c in range(7, 11)}
    assert set(plan.anchor.target.tolist()) == inner
    assert torch.equal(plan.anchor.source, plan.anchor.target - 5)  # each from its own source cell
    move = build_plan(_spec(box=(8, 8, 56, 56), offset=(40.0, 0.0)), (8, 16), torch.device("cpu"))
    assert move.anchor.target.numel() == 36

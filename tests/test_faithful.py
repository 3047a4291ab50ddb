"""Faithfulness: with default inputs the pack computes the official DragonDiffusion/DiffEditor energies,
gradient masks and start latents (no ComfyUI, no official code).

The `official_*` functions (tests/official.py) are written from the method spec (shared/design/
dragondiffusion.md §2-3, the official code's conventions). The geometry is aligned
(objects and offsets on multiples of 8 px, away from the border), where the pack's geometry and the
official one must agree cell for cell; where they differ on purpose (odd offsets, unaligned masks, the
border) README's "Where we differ" says why, and test_geometry pins the pack's rule.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

sys.path.append(str(Path(__file__).resolve().parents[1]))
from dragon_core.energy import POLE_GUARD, attract_raw  # noqa: E402
from dragon_core.inversion import Inversion  # noqa: E402
from dragon_core.plan import build_plan  # noqa: E402
from dragon_core.spec import MODE_DEFAULTS, GuidanceSpec, PointPair  # noqa: E402

import official  # noqa: E402
from official import (select, s_hat_cells, official_appearance, official_drag, official_landmark,  # noqa: E402
                      official_move, official_paste)

CPU = torch.device("cpu")
W, H = 160, 96  # non-square; latent 20x12, feature grid 40x24
LAT = (12, 20)
GRID = (24, 40)
C = 5  # feature channels
STAGES = 2


def _box(x0, y0, x1, y1):
    m = torch.zeros(H, W)
    m[y0:y1, x0:x1] = 1
    return m


def _grid(mask_px: torch.Tensor) -> torch.Tensor:
    return official.grid_mask(mask_px, GRID)


def _lat(mask_grid: torch.Tensor) -> torch.Tensor:
    """Official gradient mask at latent resolution: nearest interpolation of a feature-grid mask, > 0."""
    return F.interpolate(mask_grid[None, None].double(), size=LAT)[0, 0] > 0


def _feats(seed: int, n: int = STAGES) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(C, *GRID, generator=g, dtype=torch.float64) for _ in range(n)]


def _near(base: list[torch.Tensor], seed: int, amount: float) -> list[torch.Tensor]:
    """Features like `base` plus some noise (typical similarities of a real edit: cos 0.5-0.99)."""
    g = torch.Generator().manual_seed(seed)
    return [f + amount * torch.randn(f.shape, generator=g, dtype=f.dtype) for f in base]


def _inv(seed=0, steps=4):
    g = torch.Generator().manual_seed(seed)
    lat = [torch.randn(1, 4, *LAT, generator=g) for _ in range(steps + 1)]
    return Inversion(latents=lat, sigmas=torch.linspace(10, 0, steps + 1), model_key="m", latent_shape=(1, 4, *LAT))


def _spec(mode, **kw):
    return GuidanceSpec.for_mode(mode, W, H, **kw)


def _flat(maps):
    return [f.flatten(1) for f in maps]


def _pack_energy(plan, gen, ref):
    """The pack's (E_edit, E_cons) and their gradients with respect to the generated features."""
    gen = [f.clone().requires_grad_(True) for f in gen]
    e_edit, e_cons = plan.energy(_flat(gen), _flat(ref))
    return e_edit, e_cons, _grads(e_edit, gen), _grads(e_cons, gen)


def _grads(e, gen):
    if not e.requires_grad:
        return [torch.zeros_like(f) for f in gen]
    return list(torch.autograd.grad(e, gen, retain_graph=True, allow_unused=True))


def _official(fn, gen, *args, **kw):
    gen = [f.clone().requires_grad_(True) for f in gen]
    e_edit, e_cons = fn(gen, *args, **kw)
    return e_edit, e_cons, _grads(e_edit, gen), _grads(e_cons, gen)


def _agree(pack, official):
    for a, b in zip(pack[:2], official[:2]):
        assert float(a.detach()) == pytest.approx(float(b.detach()), rel=1e-5, abs=1e-7)
    for ga, gb in zip(pack[2] + pack[3], official[2] + official[3]):
        gb = torch.zeros_like(ga) if gb is None else gb
        ga = torch.zeros_like(gb) if ga is None else ga
        assert torch.allclose(ga, gb, rtol=1e-5, atol=1e-9), float((ga - gb).abs().max())


# ---------------------------------------------------------------- energies and their gradients

MOVE_CASES = [  # (object box, dx, dy, reference region box or None)
    ((32, 24, 64, 56), 24, 8, None),
    ((40, 16, 72, 48), -16, 16, None),
    ((32, 24, 64, 56), 48, 0, (96, 8, 152, 40)),
    ((24, 32, 56, 64), 16, -8, (0, 0, 40, 40)),  # a reference region overlapping the object: used as painted
]


@pytest.mark.parametrize("box,dx,dy,ref_box", MOVE_CASES)
@pytest.mark.parametrize("mode", ["move", "resize"])
def test_move_energy_is_the_official_one(mode, box, dx, dy, ref_box):
    d = MODE_DEFAULTS[mode]
    mask = _box(*box)
    ref_px = _box(*ref_box) if ref_box else None
    plan = build_plan(_spec(mode, object_mask=mask, offset=(float(dx), float(dy)), reference_region=ref_px), LAT, CPU)
    ref = _feats(1)
    gen = _near(ref, 2, 0.8)
    got = _pack_energy(plan, gen, ref)
    want = _official(official_move, gen, ref, mask_px=mask, dx=dx, dy=dy, w_edit=d.w_edit, w_content=d.w_content,
                     w_contrast=d.w_contrast, w_inpaint=d.w_inpaint, ref_px=ref_px)
    _agree(got, want)


def test_move_energy_uses_the_raw_cosine_where_it_differs_from_s_hat():
    """The check above could pass with a form that happens to agree; here the edit term's features are
    anti-aligned in part (raw cosine about 0.1, s_hat about 0.55), where w/(1+4 cos) and w/(1+4 s_hat) are
    far apart."""
    d = MODE_DEFAULTS["move"]
    mask = _box(32, 24, 64, 56)
    plan = build_plan(_spec("move", object_mask=mask, offset=(32.0, 0.0)), LAT, CPU)
    ref = _feats(3)
    gen = _near(ref, 4, 2.5)
    e_edit = plan.energy(_flat(gen), _flat(ref))[0]
    want = official_move(gen, ref, mask_px=mask, dx=32, dy=0, w_edit=d.w_edit, w_content=d.w_content,
                         w_contrast=d.w_contrast, w_inpaint=d.w_inpaint)[0]
    assert float(e_edit) == pytest.approx(float(want), rel=1e-9)
    org, cur = _grid(mask), torch.roll(_grid(mask), (0, 8), (0, 1))
    s_hat_form = sum(0.5 * d.w_edit / (1 + 4 * s_hat_cells(select(g, cur), select(r, org)).mean()) for g, r in zip(gen, ref))
    assert abs(float(e_edit) - float(s_hat_form)) > 0.1 * float(e_edit)


@pytest.mark.parametrize("with_mask", [True, False])
def test_drag_energy_is_the_official_one(with_mask):
    d = MODE_DEFAULTS["drag"]
    pairs = [((52, 44), (76, 52)), ((100, 20), (92, 36))]
    mask = _box(32, 8, 128, 80) if with_mask else None
    spec = _spec("drag", object_mask=mask, pairs=tuple(PointPair(h, t) for h, t in pairs))
    plan = build_plan(spec, LAT, CPU)
    ref = _feats(5)
    gen = _near(ref, 6, 0.7)
    got = _pack_energy(plan, gen, ref)
    if mask is None:  # the official code needs a mask (it crashed without one); the pack's region stands in
        mask = _grid_from_feature_region(spec)
    want = _official(official_drag, gen, ref, pairs=pairs, mask_px=mask, w_edit=d.w_edit, w_content=d.w_content,
                     w_inpaint=d.w_inpaint)
    _agree(got, want)


def _grid_from_feature_region(spec):
    """A pixel mask whose official feature-grid sampling is the pack's drag region (for the maskless case)."""
    from dragon_core.geometry import drag_region
    region = drag_region(spec, *GRID)
    return region.double().repeat_interleave(4, 0).repeat_interleave(4, 1)


def test_landmark_energy_is_the_official_one():
    d = MODE_DEFAULTS["landmark"]
    pairs = [((40, 40), (48, 44)), ((120, 60), (112, 52)), ((80, 30), (84, 30))]
    plan = build_plan(_spec("landmark", pairs=tuple(PointPair(h, t) for h, t in pairs)), LAT, CPU)
    ref = _feats(7)
    gen = _near(ref, 8, 0.9)
    got = _pack_energy(plan, gen, ref)
    want = _official(official_landmark, gen, ref, pairs=pairs, w_edit=d.w_edit)
    _agree(got, want)


def test_appearance_energy_is_the_official_one():
    d = MODE_DEFAULTS["appearance"]
    base_px, rep_px = _box(32, 24, 64, 56), _box(88, 16, 136, 64)
    spec = _spec("appearance", object_mask=base_px, reference_mask=rep_px, reference_inversion=_inv())
    plan = build_plan(spec, LAT, CPU)
    ref, ref2 = _feats(9), _feats(10)
    gen = _near(ref, 11, 0.8)
    got = _pack_energy(plan, gen, ref + ref2)
    want = _official(official_appearance, gen, ref, ref2, base_px=base_px, rep_px=rep_px, w_edit=d.w_edit,
                     w_content=d.w_content)
    _agree(got, want)


@pytest.mark.parametrize("dx,dy", [(48, 8), (-24, 16)])
def test_paste_energy_is_the_official_one(dx, dy):
    d = MODE_DEFAULTS["paste"]
    obj_px = _box(64, 24, 96, 56)
    spec = _spec("paste", reference_mask=obj_px, reference_inversion=_inv(), offset=(float(dx), float(dy)))
    plan = build_plan(spec, LAT, CPU)
    ref, ref2 = _feats(12), _feats(13)
    gen = _near(ref, 14, 0.8)
    got = _pack_energy(plan, gen, ref + ref2)
    want = _official(official_paste, gen, ref, ref2, obj_px=obj_px, dx=dx, dy=dy, w_edit=d.w_edit,
                     w_content=d.w_content)
    _agree(got, want)


# ---------------------------------------------------------------- gradient masks and start latents

def test_move_gradient_mask_sde_mask_and_start_latent_are_the_official_ones():
    mask = _box(32, 24, 64, 56)
    dx, dy = 24, 8
    plan = build_plan(_spec("move", object_mask=mask, offset=(float(dx), float(dy))), LAT, CPU)
    org = _grid(mask)
    cur = torch.roll(org, (dy // 4, dx // 4), (0, 1))
    assert torch.equal(plan.grad_mask[0, 0] > 0, _lat(cur))
    assert torch.equal(plan.sde_mask[0, 0] > 0, _lat(cur | org))
    # start latent (official demo): z_T rolled by the offset in latent cells, pasted where the rolled mask is
    z = torch.randn(1, 4, *LAT, generator=torch.Generator().manual_seed(0))
    m_lat = F.interpolate(mask[None, None], size=LAT)[0, 0] > 0
    shift = (int(dy / 8), int(dx / 8))
    m_lat = torch.roll(m_lat, shift, (0, 1))
    want = torch.where(m_lat, torch.roll(z, shift, (-2, -1)), z)
    assert torch.equal(plan.initial(z), want)


def test_drag_gradient_mask_and_start_latent_are_the_official_ones():
    pairs = [((52, 44), (76, 52)), ((100, 20), (92, 36))]
    mask = _box(32, 8, 128, 80)
    plan = build_plan(_spec("drag", object_mask=mask, pairs=tuple(PointPair(h, t) for h, t in pairs)), LAT, CPU)
    assert torch.equal(plan.grad_mask[0, 0] > 0, F.interpolate(mask[None, None], size=LAT)[0, 0] > 0)
    assert torch.equal(plan.sde_mask, plan.grad_mask)
    z = torch.randn(1, 4, *LAT, generator=torch.Generator().manual_seed(1))
    want = z.clone()
    for (hx, hy), (tx, ty) in pairs:  # the handle's 3x3 latent patch copied to the target, in pair order
        hyc, hxc = min(max(hy // 4, 1), GRID[0] - 2) // 2, min(max(hx // 4, 1), GRID[1] - 2) // 2
        tyc, txc = min(max(ty // 4, 1), GRID[0] - 2) // 2, min(max(tx // 4, 1), GRID[1] - 2) // 2
        want[:, :, tyc - 1:tyc + 2, txc - 1:txc + 2] = z[:, :, hyc - 1:hyc + 2, hxc - 1:hxc + 2]
    assert torch.equal(plan.initial(z), want)


def test_paste_gradient_mask_and_start_latent_are_the_official_ones():
    obj_px = _box(64, 24, 96, 56)
    dx, dy = 48, 8
    inv2 = _inv(3)
    plan = build_plan(_spec("paste", reference_mask=obj_px, reference_inversion=inv2, offset=(float(dx), float(dy))),
                      LAT, CPU)
    cur = _grid(torch.roll(obj_px, (dy, dx), (0, 1)))
    m_lat = _lat(cur)
    assert torch.equal(plan.grad_mask[0, 0] > 0, m_lat)
    z = torch.randn(1, 4, *LAT, generator=torch.Generator().manual_seed(2))
    want = torch.where(m_lat, torch.roll(inv2.noise, (int(dy / 8), int(dx / 8)), (-2, -1)), z)
    assert torch.equal(plan.initial(z), want)


@pytest.mark.parametrize("mode", ["appearance", "landmark"])
def test_appearance_and_landmark_start_from_the_base_image_s_own_noise(mode):
    kw = (dict(object_mask=_box(32, 24, 64, 56), reference_mask=_box(88, 16, 136, 64), reference_inversion=_inv())
          if mode == "appearance" else dict(pairs=(PointPair((40, 40), (48, 44)),)))
    plan = build_plan(_spec(mode, **kw), LAT, CPU)
    z = torch.randn(1, 4, *LAT)
    assert torch.equal(plan.initial(z), z)
    if mode == "landmark":  # official face mode: the gradient on the whole latent, global SDE
        assert bool((plan.grad_mask == 1).all()) and bool((plan.sde_mask == 1).all())


# ---------------------------------------------------------------- the pole guard and the opt-ins

def test_pole_guard_keeps_the_official_term_above_minus_0_2_and_stays_finite_and_monotone_below():
    c = torch.linspace(-1.0, 1.0, 401, dtype=torch.float64, requires_grad=True)
    e = attract_raw(4.0, c)
    (g,) = torch.autograd.grad(e.sum(), c)
    above = c.detach() > POLE_GUARD
    official = 4.0 / (1 + 4 * c.detach())
    assert torch.allclose(e.detach()[above], official[above], rtol=1e-12)
    assert torch.allclose(g[above], -16.0 / (1 + 4 * c.detach()[above]) ** 2, rtol=1e-12)
    assert bool(torch.isfinite(e).all()) and bool(torch.isfinite(g).all())
    assert bool((g < 0).all())  # more similar is always lower energy, also past the pole
    assert bool((e.detach()[1:] < e.detach()[:-1]).all())


def test_monotone_opt_in_matches_the_official_step_where_features_agree():
    """monotone_energy: s_hat with MONOTONE_GAIN; its gradient equals the official one at cos 1 (the
    consistency term's regime) and is smaller where the official term steepens."""
    mask = _box(32, 24, 64, 56)
    spec = dict(object_mask=mask, offset=(24.0, 8.0))
    plan_official = build_plan(_spec("move", **spec), LAT, CPU)
    monotone = build_plan(_spec("move", monotone_energy=True, **spec), LAT, CPU)
    ref = _feats(15)
    for amount, lo, hi in ((1e-4, 0.999, 1.001), (0.8, 0.2, 1.0)):
        gen = _near(ref, 16, amount)
        g_off = _pack_energy(plan_official, gen, ref)[3]
        g_mono = _pack_energy(monotone, gen, ref)[3]
        ratio = (sum(float(g.norm() ** 2) for g in g_mono) / sum(float(g.norm() ** 2) for g in g_off)) ** 0.5
        assert lo < ratio < hi, (amount, ratio)


def test_ring_inpaint_opt_in_takes_the_vacated_look_from_around_the_object_only():
    mask = _box(32, 24, 64, 56)
    far = torch.zeros(C, *GRID, dtype=torch.float64)
    ref = _feats(17)
    gen = _near(ref, 18, 0.5)
    far[:, :, 36:] = 5.0  # change the reference far from the object (beyond the ring)
    ref_far = [f + far for f in ref]
    for ring, changes in ((False, True), (True, False)):
        plan = build_plan(_spec("move", object_mask=mask, offset=(24.0, 8.0), ring_inpaint=ring,
                                w_edit=0.0, w_content=0.0, w_contrast=0.0), LAT, CPU)
        e0 = float(plan.energy(_flat(gen), _flat(ref))[1])
        e1 = float(plan.energy(_flat(gen), _flat(ref_far))[1])
        assert (abs(e1 - e0) > 1e-6) == changes


@pytest.mark.parametrize("mode", ["paste", "appearance"])
def test_centred_features_opt_in_ignores_an_image_wide_offset_of_the_reference(mode):
    """Official raw features: a constant added to the whole reference image's features changes the edit
    term; centred_features removes each image's mean first, so it does not."""
    kw = dict(reference_mask=_box(64, 24, 96, 56), reference_inversion=_inv(), offset=(48.0, 8.0))
    if mode == "appearance":
        kw = dict(object_mask=_box(32, 24, 64, 56), reference_mask=_box(88, 16, 136, 64), reference_inversion=_inv())
    ref, ref2 = _feats(19), _feats(20)
    gen = _near(ref, 21, 0.5)
    shifted = [f + 3.0 for f in ref2]
    for centred, changes in ((False, True), (True, False)):
        plan = build_plan(_spec(mode, centred_features=centred, **kw), LAT, CPU)
        e0 = float(plan.energy(_flat(gen), _flat(ref + ref2))[0])
        e1 = float(plan.energy(_flat(gen), _flat(ref + shifted))[0])
        assert (abs(e1 - e0) > 1e-6) == changes


# ---------------------------------------------------------------- the K/V source

class _RecordingBackend:
    """A stand-in UNet for dragon_sample: records every pass; its 'features' are the latent itself."""

    def __init__(self, source: str, kv_from: float = 0.1):
        self.source, self.kv_from, self.calls = source, kv_from, []

    def denoise_cfg(self, x, sigma, state):
        self.calls.append((state.phase, state.step, x.clone(), float(sigma)))
        return torch.zeros_like(x)

    def denoise_cond(self, x, sigma, state):
        self.calls.append((state.phase, state.step, x.detach().clone(), float(sigma)))
        if state.capture:
            state.features[0] = F.interpolate(x.repeat(1, 2, 1, 1), scale_factor=2.0)
        return torch.zeros_like(x)

    def feature_blocks(self):
        return (0,)

    def kv_active(self, step, steps):
        return step / steps >= self.kv_from

    def kv_source(self):
        return self.source

    def batch_gradients(self):
        return False

    def step_done(self, i, x, denoised):
        pass

    def check_interrupt(self):
        pass


@pytest.mark.parametrize("source", ["inversion", "guidance"])
def test_kv_source_inversion_reads_the_official_bank_s_input(source):
    """The official bank holds, for denoising step i, the K/V of the inversion step that reached step i's level:
    the UNet at step i's timestep on the latent one level less noisy. With source "inversion" the K/V pass
    of step i runs on exactly that input (as the VP latent it was, expressed at step i's sigma), and guided
    steps take their features from a separate pass on the guidance latent of step i; with "guidance" one
    pass on the guidance latent gives both."""
    from dragon_core.attention import BranchState
    from dragon_core.sampler import dragon_sample
    from dragon_core.schedule import vp_scale

    n = 10
    g = torch.Generator().manual_seed(0)
    sig = torch.tensor([14.6, 8.0, 5.0, 3.0, 2.0, 1.2, 0.8, 0.5, 0.2, 0.1, 0.03])
    lat = [torch.randn(1, 4, *LAT, generator=g) for _ in range(n + 1)]
    inv = Inversion(latents=lat, sigmas=sig, model_key="m", latent_shape=(1, 4, *LAT))
    spec = _spec("move", object_mask=_box(32, 24, 64, 56), offset=(24.0, 8.0), schedule="dragondiffusion",
                 guidance_end=0.5)
    plan = build_plan(spec, LAT, CPU)
    be = _RecordingBackend(source)
    dragon_sample(be, inv, spec, plan, BranchState(), 0, CPU)
    for i in range(n):
        s = float(sig[i])
        calls = [(ph, x, sg) for ph, st, x, sg in be.calls if st == i and ph in ("reference", "plain")]
        kv = i / n >= 0.1
        guided = i / n < 0.5
        official_input = lat[n - i - 1] * float(vp_scale(float(sig[i + 1])) / vp_scale(s))
        if source == "inversion":
            refs = [x for ph, x, sg in calls if ph == "reference"]
            assert len(refs) == int(kv)
            if kv:
                assert torch.allclose(refs[0], official_input) and not torch.allclose(refs[0], inv.reference(i))
            feats = [x for ph, x, sg in calls if ph == "plain"]
            assert len(feats) == int(guided) and (not guided or torch.equal(feats[0], inv.reference(i)))
        else:
            assert [ph for ph, _, _ in calls] == (["reference"] if kv else ["plain"] if guided else [])
            if calls:
                assert torch.equal(calls[0][1], inv.reference(i))
        assert all(sg == s for _, _, sg in calls)


# ---------------------------------------------------------------- masked K/V tokens (paste, appearance)

def _official_tokens(mask_px: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Official masked injection (spec §5): the full-resolution mask sampled to the layer's token grid by
    nearest interpolation, i.e. the top-left pixel of each token's square, then > 0.5. Flat, raster order."""
    f = mask_px.shape[0] // h
    assert mask_px.shape[1] // w == f
    return (mask_px[::f, ::f] > 0.5).flatten()


def _selected(plan, h, w):
    """Which tokens the pack injects on an (h, w) layer: (base tokens, reference tokens), in order."""
    n = h * w
    k = torch.stack([torch.arange(n), 1000 + torch.arange(n)]).double()[..., None]  # item 0 base, 1 reference
    got = plan.kv_select(k, k, {"activations_shape": [2, 1, h, w]})[0][0, :, 0].long()
    return got[got < 1000], got[got >= 1000] - 1000


# 128^2 image: SD1's decoder self-attention grids are 16x16, 8x8 and 4x4
TOKEN_SIZE = 128
TOKEN_GRIDS = [(16, 16), (8, 8), (4, 4)]


@pytest.mark.parametrize("dx,dy", [(8, 16), (40, -8), (12, 20), (-28, 6)])  # 8-px aligned, then unaligned
def test_paste_injects_the_official_tokens_on_every_attention_grid(dx, dy):
    """The official picks base tokens where the shifted object mask, sampled at each token's top-left pixel, is
    off, and reference tokens where the object mask is on; on the coarse grids an area rule picks others even
    for 8-px offsets."""
    obj_px = torch.zeros(TOKEN_SIZE, TOKEN_SIZE)
    obj_px[40:72, 32:64] = 1
    inv2 = Inversion(latents=[torch.zeros(1, 4, 16, 16)] * 3, sigmas=torch.linspace(10, 0, 3), model_key="m",
                     latent_shape=(1, 4, 16, 16))
    spec = GuidanceSpec.for_mode("paste", TOKEN_SIZE, TOKEN_SIZE, reference_mask=obj_px, reference_inversion=inv2,
                                 offset=(float(dx), float(dy)))
    plan = build_plan(spec, (16, 16), CPU)
    target_px = torch.roll(obj_px, (dy, dx), (0, 1))  # Mb: the object's mask rolled by the offset
    for h, w in TOKEN_GRIDS:
        base, ref = _selected(plan, h, w)
        want_base = torch.nonzero(~_official_tokens(target_px, h, w)).flatten()
        want_ref = torch.nonzero(_official_tokens(obj_px, h, w)).flatten()
        assert torch.equal(base, want_base), (h, w, base.tolist(), want_base.tolist())
        assert torch.equal(ref, want_ref), (h, w, ref.tolist(), want_ref.tolist())


def test_appearance_injects_the_official_tokens_on_every_attention_grid():
    base_px, rep_px = torch.zeros(TOKEN_SIZE, TOKEN_SIZE), torch.zeros(TOKEN_SIZE, TOKEN_SIZE)
    base_px[20:60, 12:44] = 1  # unaligned with the 16- and 32-px token squares
    rep_px[68:108, 76:116] = 1
    inv2 = Inversion(latents=[torch.zeros(1, 4, 16, 16)] * 3, sigmas=torch.linspace(10, 0, 3), model_key="m",
                     latent_shape=(1, 4, 16, 16))
    spec = GuidanceSpec.for_mode("appearance", TOKEN_SIZE, TOKEN_SIZE, object_mask=base_px, reference_mask=rep_px,
                                 reference_inversion=inv2)
    plan = build_plan(spec, (16, 16), CPU)
    for h, w in TOKEN_GRIDS:
        base, ref = _selected(plan, h, w)
        assert torch.equal(base, torch.nonzero(~_official_tokens(base_px, h, w)).flatten()), (h, w)
        assert torch.equal(ref, torch.nonzero(_official_tokens(rep_px, h, w)).flatten()), (h, w)

"""The energy gradient of a half-precision UNet (ComfyUI runs SD1.5 in fp16 on most GPUs; checked on the CPU)."""
from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.append(str(Path(__file__).resolve().parents[1]))
import dragon_core.sampler as core  # noqa: E402
from dragon_core.attention import BranchState  # noqa: E402
from dragon_core.plan import build_plan  # noqa: E402
from dragon_core.sampler import SampleStats  # noqa: E402
from dragon_core.spec import GuidanceSpec  # noqa: E402

CPU = torch.device("cpu")
W = H = 512  # SD1.5's size: latent 64x64
LAT = (64, 64)
C = 640  # channels of SD1.5's second decoder feature stage


class _HalfFeatures:
    """A stand-in UNet whose decoder features (C channels of a few units each, like a UNet decoder's) come from
    the latent through two 1x1 convolutions with a SiLU, computed in `dtype`, so that the energy's gradient
    reaches the latent through `dtype` arithmetic, as in a fp16 UNet."""

    def __init__(self, dtype):
        g = torch.Generator().manual_seed(0)
        first = torch.randn(320, 4, 1, 1, generator=g) / 2
        last = torch.randn(C, 320, 1, 1, generator=g) * 16 / 320 ** 0.5
        self.weights = [w.half().to(dtype) for w in (first, last)]
        self.dtype = dtype

    def denoise_cond(self, x, sigma, state):
        if state.capture:
            h = F.conv2d(x.to(self.dtype), self.weights[0])
            state.features[0] = F.conv2d(F.silu(h), self.weights[1])
        return None

    def feature_blocks(self):
        return (0,)


def _gradient(dtype, edit_scale=40.0):
    torch.manual_seed(0)
    mask = torch.zeros(H, W)
    mask[160:320, 96:256] = 1
    spec = GuidanceSpec.for_mode("move", W, H, object_mask=mask, offset=(96.0, 16.0))
    plan = build_plan(spec, LAT, CPU)
    be = _HalfFeatures(dtype)
    g = torch.Generator().manual_seed(1)
    ref_latent = torch.randn(1, 4, *LAT, generator=g)
    x = ref_latent + 0.5 * torch.randn(1, 4, *LAT, generator=g)
    state = BranchState()
    state.reset_capture((0,), stop=True)
    be.denoise_cond(ref_latent, 1.0, state)
    ref = core._working(state.features, (0,), plan.feature_hw)
    stats = SampleStats(unet_calls={"grad": 0}, guided_steps=0, grad_norms=[])
    return core._guidance(be, x, 1.0, state, plan, ref, (0,), edit_scale, stats).double()


def _rel(a, b):
    return float((a - b).norm() / b.norm())


def test_energy_gradients_in_fp16_keep_their_digits(monkeypatch):
    """Per feature element the energies' gradients are about 1e-5..1e-8 (a mean over thousands of cells of a
    cosine over hundreds of channels): below fp16's normal range, where a backward in fp16 loses digits or
    flushes them to zero. The pack scales the energies before the backward (as the official s_E does) and the
    gradient back after: the fp16 gradient stays within fp16 rounding of the fp32 one."""
    exact = _gradient(torch.float32)
    half = _gradient(torch.float16)
    assert exact.abs().max() > 0
    assert _rel(half, exact) < 2e-3, _rel(half, exact)
    monkeypatch.setattr(core, "LOSS_SCALE", 1.0)
    unscaled = _gradient(torch.float16)
    assert _rel(unscaled, exact) > 5 * _rel(half, exact), (_rel(unscaled, exact), _rel(half, exact))
    # in fp32 the scaling is exact (a power of two): bit for bit the unscaled gradient
    assert torch.equal(_gradient(torch.float32), exact)


def test_an_fp16_unet_edits_through_comfyui_like_its_fp32_twin(comfy, monkeypatch):
    """The whole pipeline on a UNet whose weights and compute are fp16 (the GPU default), on the CPU: inversion,
    K/V bank, the gradient pass (weights aliased for autograd, SDPA), the edit. Its first energy gradient
    points where the fp32 model's does (same weights), and the edit is finite and near the fp32 edit (fp16
    rounding compounds over inversion and sampling: about 3 % here)."""
    Wt = Ht = 64
    core_mod = comfy.module("dragon_core.sampler")
    real = core_mod._guidance
    results = {}
    for dtype in (torch.float32, torch.float16):
        seen = []

        def probe(*a, **k):
            g = real(*a, **k)
            seen.append(g.clone())
            return g

        monkeypatch.setattr(core_mod, "_guidance", probe)
        with torch.inference_mode():
            model = comfy.tiny.tiny_sd1(1, dtype=dtype, half_values=True)
            cond = comfy.tiny.random_conditioning("sd1", 2)
            lat = comfy.tiny.scene_latent(4, Wt, Ht)
            inv, _ = comfy.module("nodes.invert").run_inversion(model, cond, lat, 4)
            assert inv.kv_bank is not None and len(inv.kv_bank.steps) == 4
            mask = torch.zeros(1, Ht, Wt)
            mask[:, 16:40, 8:32] = 1
            spec = comfy.module("nodes.guidance").build_spec("move", object_mask=mask, offset_x=16)
            out, job = comfy.module("nodes.sampler").run_dragon(model, cond, cond, inv, spec, 4, 4.0, 3)
        assert all(p.dtype == dtype for p in model.model.diffusion_model.parameters())
        results[dtype] = (out["samples"] if isinstance(out, dict) else out).double(), seen[0].double()
    (e32, g32), (e16, g16) = results[torch.float32], results[torch.float16]
    assert torch.isfinite(e16).all() and g16.abs().max() > 0
    assert float(F.cosine_similarity(g16.flatten(), g32.flatten(), dim=0)) > 0.999
    assert float((e16 - e32).norm() / e32.norm()) < 0.1

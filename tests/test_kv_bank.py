"""The K/V memory bank recorded by Dragon DDIM Invert (#22): the official bank, and the same edit as recomputing it.

Source "inversion" injects, at denoising step i, the decoder K/V of the inversion step that reached step i's
level. Dragon DDIM Invert records them (KVBank); the sampler then needs no reference pass for a banked step. On the
CPU a banked step is bit-for-bit the recomputed one (same input, same weights, same batch); cross-image modes
batch two banks (the recomputed pass runs both images as one batch) and differ by rounding only: under 1% of
what the choice of K/V source changes (measured 3e-4 of it on the tiny UNet).
"""
from __future__ import annotations

import pytest
import torch

W = H = 64
STEPS = 10


@pytest.fixture(scope="module")
def scene(comfy):
    inv_mod = comfy.module("nodes.invert")
    with torch.inference_mode():
        model = comfy.tiny.tiny_sd1(1)
        cond = comfy.tiny.random_conditioning("sd1", 2)
        lat = comfy.tiny.scene_latent(4, W, H)
        banked, _ = inv_mod.run_inversion(model, cond, lat, STEPS)
        plain, _ = inv_mod.run_inversion(model, cond, lat, STEPS, kv_bank_mb=0)
    return dict(model=model, cond=cond, lat=lat, banked=banked, plain=plain)


def _spec(comfy, mode, **kw):
    gd = comfy.module("nodes.guidance")
    if mode == "drag":
        sp = comfy.module("dragon_core.spec")
        DragPoints, PointPair = sp.DragPoints, sp.PointPair
        pts = DragPoints(pairs=(PointPair((20.0, 30.0), (36.0, 28.0)),), width=W, height=H)
        return gd.build_spec("drag", points=pts, **kw)
    mask = torch.zeros(1, H, W)
    mask[:, 16:40, 8:32] = 1
    if mode == "paste":
        return gd.build_spec("paste", reference_mask=mask, offset_x=16, **kw)
    return gd.build_spec(mode, object_mask=mask, offset_x=16, **kw)


def _edit(comfy, scene, inv, spec, source="inversion"):
    patched, _ = comfy.module("nodes.attention_patch").patch_model(scene["model"], "auto", 0.1, 1.0, source)
    with torch.inference_mode():
        return comfy.module("nodes.sampler").run_dragon(patched, scene["cond"], scene["cond"], inv, spec, STEPS,
                                                        4.0, 3)


def test_inversion_records_every_step_s_decoder_kv_and_leaves_the_trajectory_alone(comfy, scene):
    keys = comfy.module("nodes.unet_layout").decoder_attn1_keys(scene["model"].model.diffusion_model)
    bank = scene["banked"].kv_bank
    assert scene["plain"].kv_bank is None
    assert sorted(bank.steps) == list(range(STEPS)) and bank.dropped == 0
    for i, kv in bank.steps.items():
        assert list(kv) == keys
        for k, v in kv.values():
            assert k.shape == v.shape and k.shape[0] == 1 and k.device.type == "cpu"
    assert bank.nbytes == sum(t.numel() * t.element_size() for kv in bank.steps.values() for p in kv.values()
                              for t in p)
    for a, b in zip(scene["banked"].latents, scene["plain"].latents):
        assert torch.equal(a, b)
    # steps differ from each other (a bank of one step repeated would pass the shape checks)
    k0 = bank.steps[0][keys[0]][0]
    assert not torch.allclose(k0, bank.steps[STEPS - 1][keys[0]][0])


class _CountingAttention:
    """An attn1 replace patch another pack might have put there: plain attention, counting its calls."""

    def __init__(self, attention):
        self.attention, self.calls = attention, 0

    def __deepcopy__(self, memo):
        return self

    def __call__(self, q, k, v, extra_options):
        self.calls += 1
        return self.attention(q, k, v, extra_options["n_heads"], transformer_options=extra_options) * 1.5


def test_the_recorder_keeps_an_attention_patch_already_on_the_model(comfy, scene):
    from comfy.ldm.modules.attention import optimized_attention

    inv_mod = comfy.module("nodes.invert")
    keys = comfy.module("nodes.unet_layout").decoder_attn1_keys(scene["model"].model.diffusion_model)
    other = _CountingAttention(optimized_attention)
    m = scene["model"].clone()
    m.set_model_attn1_replace(other, *keys[0])
    with torch.inference_mode():
        with_other, _ = inv_mod.run_inversion(m, scene["cond"], scene["lat"], STEPS)
        without_bank, _ = inv_mod.run_inversion(m, scene["cond"], scene["lat"], STEPS, kv_bank_mb=0)
    assert other.calls == 2 * STEPS  # it still attends, in both runs
    for a, b in zip(with_other.latents, without_bank.latents):
        assert torch.equal(a, b)
    assert not torch.equal(with_other.latents[-1], scene["plain"].latents[-1])  # the patch does change the model
    # a Dragon Cross-Branch Attention Patch on Dragon DDIM Invert's model changes nothing outside a Dragon run
    patched, _ = comfy.module("nodes.attention_patch").patch_model(scene["model"], "auto", 0.1, 1.0)
    with torch.inference_mode():
        inv, _ = inv_mod.run_inversion(patched, scene["cond"], scene["lat"], STEPS)
    for i in range(STEPS):
        for key in keys:
            assert all(torch.equal(a, b) for a, b in zip(inv.kv_bank.steps[i][key],
                                                         scene["banked"].kv_bank.steps[i][key]))


@pytest.mark.parametrize("mode", ["move", "drag"])
def test_a_banked_edit_is_the_recomputed_edit_bit_for_bit_with_fewer_passes(comfy, scene, mode):
    spec = _spec(comfy, mode)
    out_b, job_b = _edit(comfy, scene, scene["banked"], spec)
    out_p, job_p = _edit(comfy, scene, scene["plain"], spec)
    injected = sum(1 for i in range(STEPS) if i / STEPS >= 0.1)
    assert job_b.stats.kv_banked == injected and job_p.stats.kv_banked == 0
    calls_b, calls_p = job_b.stats.unet_calls, job_p.stats.unet_calls
    assert calls_p["reference"] - calls_b["reference"] == injected
    assert {k: v for k, v in calls_b.items() if k != "reference"} == {k: v for k, v in calls_p.items()
                                                                      if k != "reference"}
    assert torch.equal(out_b, out_p), float((out_b - out_p).abs().max())
    # the K/V matter: from the other source (the guidance latent of the same step) the edit differs
    out_g, job_g = _edit(comfy, scene, scene["banked"], spec, source="guidance")
    assert job_g.stats.kv_banked == 0
    assert not torch.allclose(out_g, out_p, atol=1e-4)


def test_a_bank_over_budget_keeps_what_fits_and_the_sampler_recomputes_the_rest(comfy, scene, monkeypatch):
    inv_mod = comfy.module("nodes.invert")
    full = scene["banked"].kv_bank
    monkeypatch.setattr(inv_mod, "MB", full.nbytes // STEPS)  # kv_bank_mb=3: room for exactly 3 steps
    with torch.inference_mode():
        part, _ = inv_mod.run_inversion(scene["model"], scene["cond"], scene["lat"], STEPS, kv_bank_mb=3)
    bank = part.kv_bank
    assert sorted(bank.steps) == [STEPS - 3, STEPS - 2, STEPS - 1]  # the first three the inversion made
    assert bank.dropped == STEPS - 3 and bank.nbytes == 3 * (full.nbytes // STEPS)
    spec = _spec(comfy, "move")
    out_part, job = _edit(comfy, scene, part, spec)
    out_p, job_p = _edit(comfy, scene, scene["plain"], spec)
    assert job.stats.kv_banked == 3 and job_p.stats.unet_calls["reference"] - job.stats.unet_calls["reference"] == 3
    assert torch.equal(out_part, out_p)


def test_cross_image_modes_batch_both_banks(comfy, scene):
    inv_mod = comfy.module("nodes.invert")
    with torch.inference_mode():
        ref_lat = comfy.tiny.scene_latent(5, W, H)
        ref_b, _ = inv_mod.run_inversion(scene["model"], scene["cond"], ref_lat, STEPS)
        ref_p, _ = inv_mod.run_inversion(scene["model"], scene["cond"], ref_lat, STEPS, kv_bank_mb=0)
    out_b, job_b = _edit(comfy, scene, scene["banked"], _spec(comfy, "paste", reference_inversion=ref_b))
    out_p, job_p = _edit(comfy, scene, scene["plain"], _spec(comfy, "paste", reference_inversion=ref_p))
    assert job_b.stats.kv_banked > 0 and job_p.stats.kv_banked == 0
    # batch 2 from two banks vs one batch-2 pass: equal up to rounding, far below what the K/V themselves change
    out_g, _ = _edit(comfy, scene, scene["plain"], _spec(comfy, "paste", reference_inversion=ref_p), "guidance")
    kv_effect = float((out_g - out_p).abs().max())
    assert kv_effect > 0 and float((out_b - out_p).abs().max()) <= 1e-2 * kv_effect
    # one image without a bank: both are recomputed together, as before
    out_m, job_m = _edit(comfy, scene, scene["banked"], _spec(comfy, "paste", reference_inversion=ref_p))
    assert job_m.stats.kv_banked == 0 and torch.equal(out_m, out_p)


@pytest.mark.parametrize("bad", [-1, 2.5, "4096", True])
def test_kv_bank_mb_refuses_what_is_not_a_size(comfy, scene, bad):
    node = comfy.module("nodes.invert").DDIMInvert
    with pytest.raises(comfy.module("dragon_core.errors").DragonInputError) as e:
        node.execute(scene["model"], scene["cond"], {"samples": scene["lat"]}, STEPS, bad)
    assert "kv_bank_mb" in str(e.value)


def test_bank_bookkeeping_budget_and_a_step_the_unet_ran_twice():
    """Plain core: a step whose UNet ran twice (e.g. batched area conds) is not banked but does not fill the bank;
    the first step over budget fills it, and the steps after it are not even copied."""
    from dragon_core.attention import KVBank

    kv = torch.ones(1, 4, 8)  # 128 bytes each of k and v
    bank = KVBank(budget_bytes=2 * 256)
    bank.begin(9)
    bank.record(("output", 3, 0), kv, kv)
    bank.end()
    bank.begin(8)
    bank.record(("output", 3, 0), kv, kv)
    bank.record(("output", 3, 0), kv, kv)  # the same layer again in one step
    bank.end()
    assert sorted(bank.steps) == [9] and bank.dropped == 1 and not bank.full
    bank.begin(7)
    bank.record(("output", 3, 0), kv, kv)
    bank.end()
    bank.begin(6)
    bank.record(("output", 3, 0), kv, kv)
    bank.end()
    assert sorted(bank.steps) == [7, 9]  # step 6 did not fit
    assert bank.nbytes == 512 and bank.dropped == 2 and bank.full
    bank.begin(5)
    bank.record(("output", 3, 0), kv, kv)
    assert bank._pending == {}  # full: nothing is copied
    bank.end()
    assert bank.dropped == 3 and bank.get(5) is None and bank.get(9) is not None
    # the stored copies do not alias the UNet's tensors
    kv.add_(1)
    assert float(bank.get(9)[("output", 3, 0)][0].max()) == 1.0


def test_batched_gradients_in_a_cross_image_mode(comfy, scene, monkeypatch):
    """paste: the gradient pass compares the edit with two images' features; the batched form (two copies of the
    latent, one backward; off by default, for GPUs) gives the same edit up to rounding there too."""
    with torch.inference_mode():
        ref_inv, _ = comfy.module("nodes.invert").run_inversion(scene["model"], scene["cond"],
                                                                 comfy.tiny.scene_latent(5, W, H), STEPS)
    out, job = _edit(comfy, scene, scene["banked"], _spec(comfy, "paste", reference_inversion=ref_inv))
    unguided, _ = _edit(comfy, scene, scene["banked"], _spec(comfy, "paste", reference_inversion=ref_inv,
                                                             energy_scale=0.0))
    monkeypatch.setattr(comfy.module("nodes.backend"), "BATCHED_GRADIENTS", True)
    out_b, job_b = _edit(comfy, scene, scene["banked"], _spec(comfy, "paste", reference_inversion=ref_inv))
    assert job.stats.guided_steps == job_b.stats.guided_steps > 0
    effect = float((out - unguided).abs().max())
    assert effect > 0 and float((out - out_b).abs().max()) < 1e-3 * effect

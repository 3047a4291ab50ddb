"""Flow-matching DiTs (FLUX.1 / FLUX.2: ComfyUI's Flux transformer) through the nodes, on the toy DiT's architecture."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.append(str(Path(__file__).resolve().parents[1] / "toy"))

from dragon_toy import dit as toy_dit  # noqa: E402

S = 32  # the toy scenes' size: 16x16 image tokens
STEPS = 6


@pytest.fixture(scope="module")
def flux(comfy):
    """The toy DiT's architecture as a ComfyUI MODEL (seeded random weights, a non-zero output layer)."""
    torch.manual_seed(0)
    net = toy_dit.build_flux()
    with torch.no_grad():
        net.final_layer.linear.weight.normal_(0, 0.02)
    return toy_dit.load_model_patcher(state_dict=net.state_dict())


def _scene():
    g = torch.Generator().manual_seed(2)
    img = torch.rand(1, S, S, 3, generator=g) * 0.2 + 0.4
    img[:, 8:16, 8:16] = torch.tensor([0.9, 0.2, 0.1])
    mask = torch.zeros(1, S, S)
    mask[:, 8:16, 8:16] = 1
    return img, mask


def _run(comfy, model, mode="move", kv_bank_mb=64, points=None, offset=(8, 0), inv=None):
    inv_mod = comfy.module("nodes.invert")
    setup = comfy.module("nodes.guidance").DragonGuidanceSetup
    patch = comfy.module("nodes.attention_patch").CrossBranchAttentionPatch
    smp = comfy.module("nodes.sampler")
    img, mask = _scene()
    latent = {"samples": img.permute(0, 3, 1, 2) * 2 - 1}  # the toy's pixel-space "VAE"
    cond = toy_dit.conditioning()
    noise = None
    if inv is None:
        inv, noise = inv_mod.DDIMInvert.execute(model, cond, latent, STEPS, kv_bank_mb).args
    spec = setup.execute(mode, offset[0], offset[1], 1.0, -1.0, -1.0, -1.0, -1.0, -1.0, "diffeditor", 0.0, 0.6, -1.0,
                         object_mask=mask, points=points).args[0]
    patched = patch.execute(model, "auto", 0.0, 1.0, "inversion").args[0]
    out, job = smp.run_dragon(patched, cond, cond, inv, spec, STEPS, 1.0, 0)
    return inv, noise, out, job


def test_flux_is_recognised_and_inverted_along_its_own_flow_sigmas(comfy, flux):
    layout = comfy.module("nodes.layout").layout_of(flux, "Dragon DDIM Invert")
    assert layout.kind == "dit" and layout.space == "flow" and layout.family.name == "FLUX.1"
    assert layout.family.feature_blocks() == (1, 2) and layout.feature_hw(S, S) == (16, 16)
    inv, noise, _, _ = _run(comfy, flux, kv_bank_mb=0)
    assert inv.space == "flow"
    assert float(inv.sigmas[0]) == pytest.approx(1.0) and float(inv.sigmas[-1]) == 0.0
    ms = flux.get_model_object("model_sampling")
    import comfy.samplers as cs
    assert torch.allclose(inv.sigmas, cs.calculate_sigmas(ms, "simple", STEPS).float())
    assert len(inv.latents) == STEPS + 1 and torch.isfinite(noise["samples"]).all()


def test_the_memory_bank_holds_the_image_tokens_k_v_of_every_attention_block(comfy, flux):
    inv, _, _, job = _run(comfy, flux)
    bank = inv.kv_bank
    # flow inversion evaluates each step at its lower level ("current"): every level but the top (sigma 1, pure
    # noise, where the sampler computes it)
    assert inv.extra["evaluate_at"] == "current"
    assert sorted(bank.steps) == list(range(1, STEPS))
    keys = set(bank.steps[1])
    net = flux.model.diffusion_model
    assert keys == {("double", i) for i in range(len(net.double_blocks))} | {("single", i) for i in range(len(net.single_blocks))}
    k, v = bank.steps[1][("double", 0)]
    assert k.shape == (1, net.num_heads, 16 * 16, net.hidden_size // net.num_heads) == v.shape
    # the edit read them, and injected into the single-stream blocks (nodes/dit.py KV_BLOCKS) on every step
    assert job.stats.kv_banked == STEPS - 1
    injected = {key for key, _ in job.state.injected}
    assert injected == {("single", i) for i in range(len(net.single_blocks))}
    assert {step for _, step in job.state.injected} == set(range(STEPS))


def test_a_banked_flow_edit_is_the_recomputed_edit_bit_for_bit(comfy, flux):
    """The bank's K/V are what the sampler's reference pass computes for the same step (the bank only saves passes)."""
    inv_b, _, out_b, job_b = _run(comfy, flux, kv_bank_mb=64)
    _, _, out_p, job_p = _run(comfy, flux, kv_bank_mb=0)
    assert job_b.stats.kv_banked == STEPS - 1 and job_p.stats.kv_banked == 0
    assert job_p.stats.unet_calls["reference"] - job_b.stats.unet_calls["reference"] == STEPS - 1
    assert torch.equal(out_b, out_p), float((out_b - out_p).abs().max())


def test_a_guided_flow_edit_runs_through_the_nodes_and_its_gradient_reaches_the_latent(comfy, flux):
    _, _, out, job = _run(comfy, flux)
    assert out.shape == (1, 3, S, S) and torch.isfinite(out).all()
    assert job.stats.guided_steps > 0
    assert all(n > 0 for n in job.stats.grad_norms), job.stats.grad_norms
    assert job.stats.unet_calls["grad"] == job.stats.guided_steps


def test_drag_on_a_dit_compares_region_patches(comfy, flux):
    """DiTs drag with 5x5-token patches (nodes/dit.py DRAG_PATCH_RADIUS, measured on the toy DiT); UNets keep the
    official 3x3."""
    layout_of = comfy.module("nodes.layout").layout_of
    assert layout_of(flux, "x").patch_radius() == 2 and layout_of(comfy.tiny.tiny_sd1(0), "x").patch_radius() == 1
    points = comfy.module("dragon_core.points")
    pairs = points.parse_points("t", "points", '[{"x": 12, "y": 12}, {"x": 20, "y": 12}]', S, S)
    drag = comfy.module("dragon_core.spec").DragPoints(pairs=pairs, width=S, height=S)
    _, _, out, job = _run(comfy, flux, mode="drag", points=drag, offset=(0, 0))
    assert job.patch_radius == 2 and torch.isfinite(out).all() and job.stats.guided_steps > 0


def test_checkpointed_blocks_give_the_gradient_of_the_plain_pass(comfy, flux, monkeypatch):
    """Activation checkpointing of the double blocks in the gradient pass (nodes/dit.py CHECKPOINT_BLOCKS) changes
    memory, not the result: the same gradients and the same edit as without it."""
    dit = comfy.module("nodes.dit")
    assert dit.CHECKPOINT_BLOCKS
    calls = []
    real = torch.utils.checkpoint.checkpoint
    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", lambda *a, **k: calls.append(1) or real(*a, **k))
    _, _, out, job = _run(comfy, flux)
    assert len(calls) == job.stats.unet_calls["grad"] * 3  # every double block up to the last feature block (3)
    monkeypatch.setattr(dit, "CHECKPOINT_BLOCKS", False)
    _, _, out_plain, job_plain = _run(comfy, flux)
    assert len(calls) == job.stats.unet_calls["grad"] * 3
    # (the backward recomputes each block after the model's loop moved on: without _frozen it ran the last block's
    # weights, and the gradient was off by 0.4 %)
    assert job.stats.grad_norms == pytest.approx(job_plain.stats.grad_norms, rel=1e-6)
    assert torch.allclose(out, out_plain, atol=1e-6)


def test_a_flux_edit_runs_as_comfyui_executes_it(comfy, flux):
    """ComfyUI loads models and runs nodes under torch.inference_mode: weights are inference tensors, which autograd
    cannot save, also when the backward recomputes a checkpointed block after the gradient pass."""
    with torch.inference_mode():
        model = toy_dit.load_model_patcher(state_dict=flux.model.diffusion_model.state_dict())
        assert next(model.model.diffusion_model.parameters()).is_inference()
        _, _, out, job = _run(comfy, model)
    assert torch.isfinite(out).all() and job.stats.guided_steps > 0 and all(n > 0 for n in job.stats.grad_norms)


@pytest.fixture(scope="module")
def flux2(comfy):
    """A tiny FLUX.2 (ComfyUI's Flux class with FLUX.2's shared modulation, SiLU MLP, patch 1, 128 latent channels)."""
    import comfy.latent_formats
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.supported_models

    cfg = dict(image_model="flux2", in_channels=128, out_channels=128, vec_in_dim=None, context_in_dim=16,
               hidden_size=64, mlp_ratio=3.0, num_heads=2, depth=2, depth_single_blocks=2, axes_dim=[8, 8, 8, 8],
               theta=2000, patch_size=1, qkv_bias=False, guidance_embed=True, global_modulation=True,
               mlp_silu_act=True, ops_bias=False, default_ref_method="index", ref_index_scale=10.0)
    import dataclasses

    from comfy.ldm.flux.model import FluxParams

    if "txt_ids_dims" in {f.name for f in dataclasses.fields(FluxParams)}:  # ComfyUI 0.33+: as its detection gives
        cfg["txt_ids_dims"] = [3]
    mc = comfy.supported_models.Flux2(dict(cfg))
    mc.set_inference_dtype(torch.float32, None)
    model = mc.get_model({})
    torch.manual_seed(1)
    for p in model.diffusion_model.parameters():
        torch.nn.init.normal_(p, 0, 0.05)
    return comfy.model_patcher.ModelPatcher(model, load_device=mm.get_torch_device(), offload_device=mm.unet_offload_device())


def test_a_flux2_model_edits_through_the_same_nodes(comfy, flux2):
    layout = comfy.module("nodes.layout").layout_of(flux2, "Dragon Sampler")
    assert layout.family.name == "FLUX.2" and layout.channels == 128 and layout.feature_hw(4, 4) == (4, 4)
    assert comfy.module("nodes.unet_layout").pixels_per_latent(flux2) == 16  # FLUX.2's VAE: 1/16
    inv_mod = comfy.module("nodes.invert")
    setup = comfy.module("nodes.guidance").DragonGuidanceSetup
    patch = comfy.module("nodes.attention_patch").CrossBranchAttentionPatch
    smp = comfy.module("nodes.sampler")
    g = torch.Generator().manual_seed(3)
    latent = {"samples": torch.randn(1, 128, 4, 4, generator=g)}  # a 64x64 image
    cond = [[torch.randn(1, 3, 16, generator=g), {"pooled_output": None}]]
    inv, _ = inv_mod.DDIMInvert.execute(flux2, cond, latent, 4, 64).args
    # inverted along FLUX.2's own schedule (ComfyUI's Flux2Scheduler: its shift from the token count), not "simple"
    from comfy_extras.nodes_flux import get_schedule
    import comfy.samplers as cs

    assert torch.allclose(inv.sigmas, torch.as_tensor(get_schedule(4, 16), dtype=torch.float32))
    simple = cs.calculate_sigmas(flux2.get_model_object("model_sampling"), "simple", 4).float()
    assert not torch.allclose(inv.sigmas, simple, atol=1e-3)
    mask = torch.zeros(1, 64, 64)
    mask[:, 16:32, 16:32] = 1
    spec = setup.execute("move", 16, 0, 1.0, -1.0, -1.0, -1.0, -1.0, -1.0, "dragondiffusion", 0.0, 0.8, -1.0,
                         object_mask=mask).args[0]
    patched = patch.execute(flux2, "auto", 0.0, 1.0, "inversion").args[0]
    out, job = smp.run_dragon(patched, cond, cond, inv, spec, 4, 1.0, 0)
    assert out.shape == (1, 128, 4, 4) and torch.isfinite(out).all()
    assert job.stats.guided_steps > 0 and all(n > 0 for n in job.stats.grad_norms)
    assert job.stats.kv_banked == 3 and job.state.injected


def _move_spec(comfy):
    """Guidance Setup's spec of the toy scene's move by 8 pixels, at the pack's defaults."""
    _, mask = _scene()
    return comfy.module("nodes.guidance").DragonGuidanceSetup.execute(
        "move", 8, 0, 1.0, -1.0, -1.0, -1.0, -1.0, -1.0, "diffeditor", 0.0, 0.6, -1.0, object_mask=mask).args[0]


def test_a_flux_inversion_is_refused_by_a_unet_sampler_and_a_unet_latent_by_flux(comfy, flux):
    """Bad input: an inversion of the other kind of model; a latent of the wrong channel count."""
    DragonInputError = comfy.module("dragon_core.errors").DragonInputError
    inv_mod = comfy.module("nodes.invert")
    with pytest.raises(DragonInputError, match=r"Dragon DDIM Invert: input 'latent': has 4 channels but the model takes 3"):
        inv_mod.DDIMInvert.execute(flux, toy_dit.conditioning(), {"samples": torch.zeros(1, 4, 32, 32)}, 4, 0)
    inv, _, _, _ = _run(comfy, flux, kv_bank_mb=0)
    smp = comfy.module("nodes.sampler")
    unet = comfy.tiny.tiny_sd1(0)
    inv.model_key = comfy.module("nodes.unet_layout").model_key(unet)  # as if made with this model: the space tells
    spec = _move_spec(comfy)
    with pytest.raises(DragonInputError, match=r"Dragon Sampler: input 'inversion': was made with a flow-matching"):
        smp.validate(unet, inv, spec, STEPS)


def test_an_inversion_of_one_flux_family_is_refused_by_the_other(comfy, flux, flux2):
    """Bad input: a FLUX.1 inversion (and its memory bank) fed to a FLUX.2 model's Dragon Sampler."""
    DragonInputError = comfy.module("dragon_core.errors").DragonInputError
    inv, _, _, _ = _run(comfy, flux)
    assert inv.kv_bank is not None
    spec = _move_spec(comfy)
    with pytest.raises(DragonInputError, match=r"Dragon Sampler: input 'inversion': was made with another model\."):
        comfy.module("nodes.sampler").validate(flux2, inv, spec, STEPS)


def test_few_step_flow_inversion_is_warned_about(comfy, flux, caplog):
    img, _ = _scene()
    latent = {"samples": img.permute(0, 3, 1, 2) * 2 - 1}
    inv_mod = comfy.module("nodes.invert")
    with caplog.at_level("WARNING", logger="DragonDiffusion"):
        inv_mod.DDIMInvert.execute(flux, toy_dit.conditioning(), latent, 4, 0)
    assert any("4 steps on a flow model" in r.getMessage() and "30 or more" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level("WARNING", logger="DragonDiffusion"):
        inv_mod.DDIMInvert.execute(flux, toy_dit.conditioning(), latent, 30, 0)
    assert not any("on a flow model" in r.getMessage() for r in caplog.records)


def test_the_shipped_toy_dit_weights_load_into_this_comfyui(comfy):
    """The trained toy DiT (saved in the BFL layout, RMSNorm 'scale') loads through the model config as ComfyUI's
    checkpoint loader would (0.33 renames 'scale' to 'weight'), and the MODEL computes what the plain module does."""
    model = toy_dit.load_model_patcher()
    net = toy_dit.load_flux()
    g = torch.Generator().manual_seed(4)
    x, sigma = torch.randn(1, 3, S, S, generator=g), torch.tensor([0.6])
    with torch.no_grad():
        want = x - sigma * toy_dit.forward(net, x, sigma)
        got = model.model.apply_model(x, sigma, c_crossattn=toy_dit.conditioning()[0][0], guidance=torch.full((1,), 3.5))
    assert torch.allclose(got, want, atol=1e-5), float((got - want).abs().max())

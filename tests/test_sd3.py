"""SD3 / SD3.5 (ComfyUI's MMDiT) through the nodes, on the toy SD3's architecture (SD3.5-shaped: RMS q/k norms, an
image-only second attention in blocks 0-2, six joint blocks)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.append(str(Path(__file__).resolve().parents[1] / "toy"))

from dragon_toy import sd3 as toy_sd3  # noqa: E402
from test_dit import _scene  # noqa: E402  (the same 32x32 scene: a red square to move)

S = 32  # the toy scenes' size: 16x16 image tokens
STEPS = 6


def _random_sd3():
    torch.manual_seed(0)
    net = toy_sd3.build()
    with torch.no_grad():
        net.final_layer.linear.weight.normal_(0, 0.02)
    return net


@pytest.fixture(scope="module")
def sd3(comfy):
    """The toy SD3's architecture as a ComfyUI MODEL (seeded random weights, a non-zero output layer)."""
    return toy_sd3.load_model_patcher(state_dict=_random_sd3().state_dict())


def _run(comfy, model, kv_bank_mb=64, cfg=1.0):
    inv_mod = comfy.module("nodes.invert")
    setup = comfy.module("nodes.guidance").DragonGuidanceSetup
    patch = comfy.module("nodes.attention_patch").CrossBranchAttentionPatch
    img, mask = _scene()
    latent = {"samples": img.permute(0, 3, 1, 2) * 2 - 1}  # the toy's pixel-space "VAE"
    cond = toy_sd3.conditioning()
    inv, noise = inv_mod.DDIMInvert.execute(model, cond, latent, STEPS, kv_bank_mb).args
    spec = setup.execute("move", 8, 0, 1.0, -1.0, -1.0, -1.0, -1.0, -1.0, "diffeditor", 0.0, 0.6, -1.0,
                         object_mask=mask).args[0]
    patched = patch.execute(model, "auto", 0.0, 1.0, "inversion").args[0]
    out, job = comfy.module("nodes.sampler").run_dragon(patched, cond, cond, inv, spec, STEPS, cfg, 0)
    return inv, noise, out, job


def test_sd3_is_recognised_and_inverted_along_its_workflows_schedule(comfy, sd3):
    layout = comfy.module("nodes.layout").layout_of(sd3, "Dragon DDIM Invert")
    assert layout.kind == "dit" and layout.space == "flow" and layout.family.name == "SD3.5"
    assert layout.channels == 3 and layout.feature_hw(S, S) == (16, 16)
    dit = comfy.module("nodes.dit")
    end = round(dit.MMDIT_FEATURE_DEPTH * 6)
    assert layout.family.feature_blocks() == (end - 2, end - 1)
    inv, noise, _, _ = _run(comfy, sd3, kv_bank_mb=0)
    import comfy.samplers as cs

    # sgm_uniform with the model's shift, as ComfyUI's SD3/SD3.5 workflows sample ("simple" differs)
    ms = sd3.get_model_object("model_sampling")
    assert torch.allclose(inv.sigmas, cs.calculate_sigmas(ms, "sgm_uniform", STEPS).float())
    assert not torch.allclose(inv.sigmas, cs.calculate_sigmas(ms, "simple", STEPS).float(), atol=1e-4)
    assert len(inv.latents) == STEPS + 1 and torch.isfinite(noise["samples"]).all()


def test_the_hooks_leave_the_model_output_unchanged(comfy, sd3):
    """With the token-layout wrapper, the block replaces and the attention override on (no injection), the model
    computes exactly what it computes without them: the [B, N, H*d] <-> [B, H, N, d] views change nothing."""
    dit = comfy.module("nodes.dit")
    layout = comfy.module("nodes.layout").layout_of(sd3, "x")
    m = sd3.clone()
    dit.install_feature_capture(m, layout.family)
    dit.set_attention(m, dit.DitAttention(mode="auto"))
    g = torch.Generator().manual_seed(4)
    x, sigma = torch.randn(1, 3, S, S, generator=g), torch.tensor([0.6])
    ctx = toy_sd3.conditioning()[0][0]
    with torch.no_grad():
        want = sd3.model.apply_model(x, sigma, c_crossattn=ctx)
        to = {**m.model_options["transformer_options"], "wrappers": m.wrappers}
        got = m.model.apply_model(x, sigma, c_crossattn=ctx, transformer_options=to)
    assert "dragon_tokens" in to and to["dragon_family"].arch == "mmdit"  # the hooks did run
    assert torch.equal(got, want), float((got - want).abs().max())


def test_the_memory_bank_holds_every_joint_and_image_attention_and_late_blocks_take_it(comfy, sd3):
    inv, _, _, job = _run(comfy, sd3)
    bank = inv.kv_bank
    assert sorted(bank.steps) == list(range(1, STEPS))
    keys = set(bank.steps[1])
    n = 6
    # every joint block's attention, and SD3.5's image-only attention (blocks 0-2) under its own key
    assert keys == {("double", i) for i in range(n)} | {("image", i) for i in range(3)}
    k, v = bank.steps[1][("double", 0)]
    assert k.shape == (1, 2, 16 * 16, 64) == v.shape  # [B, heads, image tokens, 64]: the image part only
    ki, _ = bank.steps[1][("image", 0)]
    assert ki.shape == (1, 2, 16 * 16, 64) and not torch.equal(ki, k)
    family = comfy.module("nodes.layout").layout_of(sd3, "x").family
    injected = {key for key, _ in job.state.injected}
    assert injected == {key for key in keys if family.injects(key)} and injected
    assert {step for _, step in job.state.injected} == set(range(STEPS))
    # replace (move) goes into every joint block; concat (drag: the bank's K/V for every image token) only into the
    # later half, where it did not freeze the drag on the toy SD3 (bench/sd3-probe-drag-kv.txt)
    assert family.injects(("double", 0), "replace") and family.injects(("image", 0), "replace")
    assert not family.injects(("double", 2), "concat") and family.injects(("double", 3), "concat")


def test_a_banked_sd3_edit_is_the_recomputed_edit_bit_for_bit(comfy, sd3):
    _, _, out_b, job_b = _run(comfy, sd3, kv_bank_mb=64)
    _, _, out_p, job_p = _run(comfy, sd3, kv_bank_mb=0)
    assert job_b.stats.kv_banked == STEPS - 1 and job_p.stats.kv_banked == 0
    assert torch.equal(out_b, out_p), float((out_b - out_p).abs().max())


def test_sd3_gradient_pass_checkpoints_its_blocks_itself_with_the_plain_gradient(comfy, sd3, monkeypatch):
    """In the gradient pass the joint blocks run under the pack's checkpointing (inside the weight aliasing), not
    MMDiT's own (block_mixing's, whose recompute would run outside it); gradients as without checkpointing."""
    dit = comfy.module("nodes.dit")
    calls = []
    real = torch.utils.checkpoint.checkpoint

    def spy(fn, *a, **k):
        st = (k.get("transformer_options") or {}).get("dragon")
        calls.append((getattr(fn, "__name__", ""), getattr(st, "phase", None)))
        return real(fn, *a, **k)

    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", spy)
    _, _, out, job = _run(comfy, sd3)
    feats = comfy.module("nodes.layout").layout_of(sd3, "x").family.feature_blocks()
    ours = [c for c in calls if c[0] == "_recompute"]
    assert len(ours) == job.stats.unet_calls["grad"] * (max(feats) + 1)  # blocks up to the last feature block
    assert not any(name == "_block_mixing" and phase == "grad" for name, phase in calls)
    assert any(name == "_block_mixing" and phase == "generate" for name, phase in calls)  # (the spy sees them)
    monkeypatch.setattr(dit, "CHECKPOINT_BLOCKS", False)
    _, _, out_plain, job_plain = _run(comfy, sd3)
    assert job.stats.grad_norms == pytest.approx(job_plain.stats.grad_norms, rel=1e-6)
    assert all(n > 0 for n in job.stats.grad_norms)
    assert torch.allclose(out, out_plain, atol=1e-6)


def test_an_sd3_edit_runs_as_comfyui_executes_it_with_cfg(comfy, sd3):
    """Under torch.inference_mode (weights are inference tensors), with CFG (SD3 is not guidance-distilled)."""
    with torch.inference_mode():
        model = toy_sd3.load_model_patcher(state_dict=sd3.model.diffusion_model.state_dict())
        assert next(model.model.diffusion_model.parameters()).is_inference()
        _, _, out, job = _run(comfy, model, cfg=4.0)
    assert torch.isfinite(out).all() and job.stats.guided_steps > 0 and all(n > 0 for n in job.stats.grad_norms)


def test_an_sd3_inversion_is_refused_by_a_flux_sampler(comfy, sd3):
    """Bad input: an SD3 inversion with its memory bank fed to another DiT family's Dragon Sampler."""
    from dragon_toy import dit as toy_dit

    DragonInputError = comfy.module("dragon_core.errors").DragonInputError
    inv, _, _, _ = _run(comfy, sd3)
    flux = toy_dit.load_model_patcher(state_dict=toy_dit.build_flux().state_dict())
    _, mask = _scene()
    spec = comfy.module("nodes.guidance").DragonGuidanceSetup.execute(
        "move", 8, 0, 1.0, -1.0, -1.0, -1.0, -1.0, -1.0, "diffeditor", 0.0, 0.6, -1.0, object_mask=mask).args[0]
    with pytest.raises(DragonInputError, match=r"Dragon Sampler: input 'inversion': was made with another model\."):
        comfy.module("nodes.sampler").validate(flux, inv, spec, STEPS)


def test_an_sd3_model_with_a_wrong_latent_is_refused(comfy, sd3):
    DragonInputError = comfy.module("dragon_core.errors").DragonInputError
    with pytest.raises(DragonInputError, match=r"Dragon DDIM Invert: input 'latent': has 16 channels but the model takes 3"):
        comfy.module("nodes.invert").DDIMInvert.execute(sd3, toy_sd3.conditioning(),
                                                        {"samples": torch.zeros(1, 16, 32, 32)}, 4, 0)


def test_the_shipped_toy_sd3_weights_load_into_this_comfyui(comfy):
    """The trained toy SD3 loads through ComfyUI's SD3 model config and the MODEL computes what the plain module does
    (ComfyUI feeds MMDiT timestep = 1000 sigma and returns x - sigma v)."""
    model = toy_sd3.load_model_patcher()
    net = toy_sd3.load_net()
    g = torch.Generator().manual_seed(4)
    x, sigma = torch.randn(1, 3, S, S, generator=g), torch.tensor([0.6])
    with torch.no_grad():
        want = x - sigma * toy_sd3.forward(net, x, sigma)
        got = model.model.apply_model(x, sigma, c_crossattn=toy_sd3.conditioning()[0][0])
    assert torch.allclose(got, want, atol=1e-5), float((got - want).abs().max())
    assert float(want.std()) > 0.1  # a trained model, not the zero predictor it starts as

"""The released FLUX and SD3 architectures (ComfyUI's own configs, detected from the published key shapes) at a reduced depth
with random weights: an edit through the nodes end to end on the CPU (issue #28 item 5). Nothing is downloaded; what
is checked is that the real widths, heads, RoPE axes, patching and latent formats run, not edit quality."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.append(str(Path(__file__).resolve().parents[1] / "toy"))

from dragon_toy import real_dit  # noqa: E402

SIZE = 128  # image pixels: FLUX.1's latent 16x16 (8x8 tokens), FLUX.2's 8x8 (8x8 tokens)
STEPS = 4


FAMILY = {"flux1-dev": "FLUX.1", "flux1-schnell": "FLUX.1", "flux2-klein-4b": "FLUX.2", "sd3-medium": "SD3",
          "sd35-medium": "SD3.5", "sd35-large": "SD3.5"}
# blocks built: one double + one single for FLUX; MMDiT has only joint blocks (two: the last is pre-only, so one
# full block runs the text stream through; SD3.5 Medium's two both have its image-only attention)
DEPTH = {"sd3-medium": 2, "sd35-medium": 2, "sd35-large": 2}


@pytest.mark.parametrize("which", list(FAMILY))
def test_a_released_dit_architecture_edits_through_the_nodes(comfy, which, caplog):
    why = real_dit.supported(which)
    if why:
        pytest.skip(why)
    real = real_dit.FAMILIES[which]
    model = real_dit.load_model_patcher(which, depth=DEPTH.get(which, 1), depth_single=1)
    try:
        _edit(comfy, model, which, real, caplog)
    finally:  # ComfyUI keeps a loaded model referenced: free these 2-3 GB before the next test
        import comfy.model_management as mm

        mm.unload_all_models()
        mm.cleanup_models()


def _edit(comfy, model, which, real, caplog):
    layout = comfy.module("nodes.layout").layout_of(model, "Dragon DDIM Invert")
    assert layout.kind == "dit" and layout.space == "flow"
    assert layout.family.name == FAMILY[which]
    f = comfy.module("nodes.unet_layout").pixels_per_latent(model)
    assert f == (16 if real.flux2 else 8) and layout.channels == real.latent_channels
    cond = real_dit.conditioning(which)
    g = torch.Generator().manual_seed(5)
    latent = {"samples": torch.randn(1, real.latent_channels, SIZE // f, SIZE // f, generator=g)}
    inv, noise = comfy.module("nodes.invert").DDIMInvert.execute(model, cond, latent, STEPS, 256).args
    assert len(inv.latents) == STEPS + 1 and torch.isfinite(noise["samples"]).all()
    mask = torch.zeros(1, SIZE, SIZE)
    mask[:, 32:64, 32:64] = 1
    spec = comfy.module("nodes.guidance").DragonGuidanceSetup.execute(
        "move", 32, 16, 1.0, -1.0, -1.0, -1.0, -1.0, -1.0, "diffeditor", 0.0, 1.0, -1.0, object_mask=mask).args[0]
    patched = comfy.module("nodes.attention_patch").CrossBranchAttentionPatch.execute(
        model, "auto", 0.0, 1.0, "inversion").args[0]
    out, job = comfy.module("nodes.sampler").run_dragon(patched, cond, cond, inv, spec, STEPS, 1.0, 0)
    assert out.shape == latent["samples"].shape and torch.isfinite(out).all()
    assert job.stats.guided_steps > 0 and all(n > 0 and n == n for n in job.stats.grad_norms), job.stats.grad_norms
    assert job.stats.kv_banked > 0 and job.state.injected  # the memory bank's K/V went into the edit
    assert not any("non-finite" in r.getMessage() for r in caplog.records)

"""The speed/memory switches of #7 change no result, and do what they say (behaviour, not timing)."""
from __future__ import annotations

import pytest
import torch

W, H = 64, 64


@pytest.fixture(scope="module")
def setup(comfy):
    model, cond, _, inv = comfy.inverted_scene(1, 2, 4, W, H, 10)
    mask = torch.zeros(1, H, W)
    mask[:, 16:40, 8:32] = 1
    spec = comfy.module("nodes.guidance").build_spec("move", object_mask=mask, offset_x=16)
    return dict(model=model, cond=cond, inv=inv, spec=spec)


class _Probe:
    """output_block_patch recording, per Dragon phase, whether the UNet's modules carry our weight wrappers."""

    def __init__(self, unet, weight_copy):
        self.unet, self.weight_copy, self.seen = unet, weight_copy, set()

    def __deepcopy__(self, memo):
        return self

    def __call__(self, h, hsp, transformer_options):
        st = transformer_options.get("dragon")
        if st is not None:
            wrapped = any(isinstance(f, self.weight_copy) for m in self.unet.modules()
                          for f in getattr(m, "weight_function", []))
            self.seen.add((st.phase, wrapped))
        return h, hsp


def _edit(comfy, setup, model):
    with torch.inference_mode():
        out, job = comfy.module("nodes.sampler").run_dragon(model, setup["cond"], setup["cond"], setup["inv"],
                                                            setup["spec"], 10, 4.0, 3)
    return out, job


def test_weights_are_copied_only_in_the_gradient_pass_and_results_do_not_change(comfy, setup):
    be = comfy.module("nodes.backend")
    probe = _Probe(setup["model"].model.diffusion_model, be.WeightCopy)
    model = setup["model"].clone()
    model.set_model_output_block_patch(probe)
    out, job = _edit(comfy, setup, model)
    assert job.stats.unet_calls["grad"] > 0
    phases = dict(probe.seen)
    assert phases.get("grad") is True, probe.seen
    assert ("generate", True) not in probe.seen and ("reference", True) not in probe.seen, probe.seen
    assert ("generate", False) in probe.seen
    # the pre-#7 behaviour (copies in every pass, all kept until the backward) gives the same edit
    be.WEIGHT_COPY_ONLY_IN_GRAD = be.DROP_SAVED_WEIGHT_COPIES = False
    try:
        probe.seen.clear()
        before, _ = _edit(comfy, setup, model)
        assert ("generate", True) in probe.seen
    finally:
        be.WEIGHT_COPY_ONLY_IN_GRAD = be.DROP_SAVED_WEIGHT_COPIES = True
    assert torch.allclose(out, before, atol=1e-5, rtol=1e-5), float((out - before).abs().max())


@pytest.mark.parametrize("drop", [True, False])
def test_autograd_keeps_no_weight_copy_for_the_backward(comfy, setup, drop):
    import comfy.model_management as mm

    be = comfy.module("nodes.backend")
    clone = comfy.module("nodes.sampler").grad_ready_clone(setup["model"])
    x = setup["inv"].reference(3)
    be.DROP_SAVED_WEIGHT_COPIES = drop
    try:
        with torch.inference_mode():
            mm.load_models_gpu([clone])
            with torch.inference_mode(False), torch.enable_grad():
                z = x.clone().requires_grad_(True)
                with be.saved_weights():
                    out = clone.model.apply_model(z, torch.tensor([2.0]), c_crossattn=setup["cond"][0][0])
                held = len(be._COPY_SOURCE)
                (g,) = torch.autograd.grad(out.pow(2).sum(), z)
    finally:
        be.DROP_SAVED_WEIGHT_COPIES = True
    assert torch.isfinite(g).all() and g.abs().sum() > 0
    if drop:
        assert held == 0, f"{held} weight copies outlived the forward"
    else:
        assert held > 10  # autograd holds the copies: what `drop` avoids

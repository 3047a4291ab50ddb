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
        self.inference, self.memory = set(), set()

    def __deepcopy__(self, memo):
        return self

    def __call__(self, h, hsp, transformer_options):
        st = transformer_options.get("dragon")
        if st is not None:
            wrapped = any(isinstance(f, self.weight_copy) for m in self.unet.modules()
                          for f in getattr(m, "weight_function", []))
            self.seen.add((st.phase, wrapped))
            params = list(self.unet.parameters())
            self.inference.add((st.phase, all(p.is_inference() for p in params)))
            self.memory.add((st.phase, tuple(p.data_ptr() for p in params)))
        return h, hsp


def _edit(comfy, setup, model):
    with torch.inference_mode():
        out, job = comfy.module("nodes.sampler").run_dragon(model, setup["cond"], setup["cond"], setup["inv"],
                                                            setup["spec"], 10, 4.0, 3)
    return out, job


def test_the_gradient_pass_reads_the_loaded_weights_without_copies_and_puts_them_back(comfy, setup):
    """#22: autograd cannot save inference tensors (how ComfyUI loads weights); the gradient pass sees normal
    tensors on the loaded weights' own memory, and the model's parameters are its own again afterwards."""
    be = comfy.module("nodes.backend")
    unet = setup["model"].model.diffusion_model
    before = [(m, n, p) for m in unet.modules() for n, p in m._parameters.items() if p is not None]
    probe = _Probe(unet, be.WeightCopy)
    model = setup["model"].clone()
    model.set_model_output_block_patch(probe)
    out, job = _edit(comfy, setup, model)
    assert job.stats.unet_calls["grad"] > 0
    assert not any(wrapped for _, wrapped in probe.seen), probe.seen  # no weight wrapper acts in any pass
    assert ("grad", False) in probe.inference and ("grad", True) not in probe.inference  # normal tensors
    assert ("generate", True) in probe.inference  # the other passes run on the loaded weights as they are
    assert len({ptrs for _, ptrs in probe.memory}) == 1  # every pass on the same memory: nothing copied
    assert all(m._parameters[n] is p for m, n, p in before) and all(p.is_inference() for _, _, p in before)
    # #7's way (weight copies in the gradient pass only) and the pre-#7 way (copies in every pass, kept until
    # the backward) give the same edit
    be.ALIAS_WEIGHTS_IN_GRAD = False
    try:
        probe.seen.clear()
        copies, _ = _edit(comfy, setup, model)
        assert dict(probe.seen).get("grad") is True and ("generate", True) not in probe.seen, probe.seen
        be.WEIGHT_COPY_ONLY_IN_GRAD = be.DROP_SAVED_WEIGHT_COPIES = False
        probe.seen.clear()
        pre7, _ = _edit(comfy, setup, model)
        assert ("generate", True) in probe.seen
    finally:
        be.ALIAS_WEIGHTS_IN_GRAD = be.WEIGHT_COPY_ONLY_IN_GRAD = be.DROP_SAVED_WEIGHT_COPIES = True
    assert torch.equal(out, copies), float((out - copies).abs().max())
    assert torch.allclose(out, pre7, atol=1e-5, rtol=1e-5), float((out - pre7).abs().max())


def test_the_loaded_weights_come_back_when_the_gradient_pass_fails(comfy, setup):
    be = comfy.module("nodes.backend")
    unet = setup["model"].model.diffusion_model
    before = [(m, n, p) for m in unet.modules() for n, p in m._parameters.items() if p is not None]
    with pytest.raises(RuntimeError, match="interrupted"):
        with be.autograd_weights(unet, on=True):
            assert not any(p.is_inference() for p in unet.parameters())
            raise RuntimeError("interrupted")
    assert all(m._parameters[n] is p for m, n, p in before)


@pytest.mark.parametrize("drop", [True, False])
def test_autograd_keeps_no_weight_copy_for_the_backward(comfy, setup, drop):
    import comfy.model_management as mm

    be = comfy.module("nodes.backend")
    be.ALIAS_WEIGHTS_IN_GRAD = False  # #7's weight copies (bench_speed's weight_copies variant)
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
        be.DROP_SAVED_WEIGHT_COPIES = be.ALIAS_WEIGHTS_IN_GRAD = True
    assert torch.isfinite(g).all() and g.abs().sum() > 0
    if drop:
        assert held == 0, f"{held} weight copies outlived the forward"
    else:
        assert held > 10  # autograd holds the copies: what `drop` avoids


def test_batched_gradients_give_the_same_edit_with_one_backward_per_evaluation(comfy, setup, monkeypatch):
    """#22 (for GPUs, off by default): two copies of the latent in one gradient forward, one backward of
    E_edit(copy 0) + E_cons(copy 1), instead of one forward and two backward passes. The same edit up to rounding,
    measured against what the energy guidance itself changes."""
    be = comfy.module("nodes.backend")
    core = comfy.module("dragon_core.sampler")
    backwards, batches = [], []
    real_grad = torch.autograd.grad

    def counting_grad(*a, **k):
        backwards.append(1)
        return real_grad(*a, **k)

    class Batches:
        def __deepcopy__(self, memo):
            return self

        def __call__(self, h, hsp, transformer_options):
            st = transformer_options.get("dragon")
            if st is not None and st.phase == "grad":
                batches.append(h.shape[0])
            return h, hsp

    model = setup["model"].clone()
    model.set_model_output_block_patch(Batches())
    monkeypatch.setattr(core.torch.autograd, "grad", counting_grad)
    out, job = _edit(comfy, setup, model)
    calls, n_back, seen = job.stats.unet_calls["grad"], len(backwards), set(batches)
    backwards.clear()
    batches.clear()
    monkeypatch.setattr(be, "BATCHED_GRADIENTS", True)
    out_b, job_b = _edit(comfy, setup, model)
    assert seen == {1} and set(batches) == {2}
    assert job_b.stats.unet_calls["grad"] == calls and n_back == 2 * calls and len(backwards) == calls
    for (e1, c1), (e2, c2) in zip(job.stats.energies, job_b.stats.energies):
        assert e2 == pytest.approx(e1, rel=1e-5, abs=1e-6) and c2 == pytest.approx(c1, rel=1e-5, abs=1e-6)
    assert job_b.stats.grad_norms == pytest.approx(job.stats.grad_norms, rel=1e-4)
    spec = dict(setup["spec"].__dict__)
    spec["energy_scale"] = 0.0
    with torch.inference_mode():
        unguided, _ = comfy.module("nodes.sampler").run_dragon(model, setup["cond"], setup["cond"], setup["inv"],
                                                               type(setup["spec"])(**spec), 10, 4.0, 3)
    effect = float((out - unguided).abs().max())
    diff = float((out - out_b).abs().max())
    assert effect > 1e-3 and diff < 1e-3 * effect, (diff, effect)

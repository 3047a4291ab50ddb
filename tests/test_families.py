"""UNet families (SD1.x, SD2.x v-prediction, SDXL) and composition with IP-Adapter-style and LoRA patches."""
from __future__ import annotations

import importlib
import re

import pytest
import torch

W, H = 96, 64
STEPS = 5

# Real-size layouts of ComfyUI's model detection (SD1.5, SD2.1, SDXL base), built on the meta device.
FULL = {
    "sd15": dict(model_channels=320, num_res_blocks=[2, 2, 2, 2], channel_mult=[1, 2, 4, 4],
                 transformer_depth=[1, 1, 1, 1, 1, 1, 0, 0], transformer_depth_output=[1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
                 transformer_depth_middle=1, use_linear_in_transformer=False, context_dim=768, num_heads=8,
                 adm_in_channels=None),
    "sd21": dict(model_channels=320, num_res_blocks=[2, 2, 2, 2], channel_mult=[1, 2, 4, 4],
                 transformer_depth=[1, 1, 1, 1, 1, 1, 0, 0], transformer_depth_output=[1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
                 transformer_depth_middle=1, use_linear_in_transformer=True, context_dim=1024, num_head_channels=64,
                 adm_in_channels=None),
    "sdxl": dict(model_channels=320, num_res_blocks=[2, 2, 2], channel_mult=[1, 2, 4],
                 transformer_depth=[0, 0, 2, 2, 10, 10], transformer_depth_output=[0, 0, 0, 2, 2, 2, 10, 10, 10],
                 transformer_depth_middle=10, use_linear_in_transformer=True, context_dim=2048, num_head_channels=64,
                 num_classes="sequential", adm_in_channels=2816),
}
# (decoder self-attention layers, feature blocks, their channels): the official SD1.5 features are diffusers
# up_blocks 1 and 2 after their upsamplers = ComfyUI output blocks 5 and 8 (1280 and 640 channels);
# SDXL's stages at the same resolutions and widths are output blocks 2 and 5.
EXPECTED = {"sd15": (9, [5, 8], [1280, 640]), "sd21": (9, [5, 8], [1280, 640]), "sdxl": (36, [2, 5], [1280, 640])}


def counted_decoder_attn1(unet) -> set:
    """Decoder self-attention layers counted from module names (independently of unet_layout)."""
    keys = set()
    for name, _ in unet.named_modules():
        m = re.fullmatch(r"output_blocks\.(\d+)\.\d+\.transformer_blocks\.(\d+)\.attn1", name)
        if m:
            keys.add(("output", int(m.group(1)), int(m.group(2))))
    return keys


@pytest.mark.parametrize("family", list(FULL))
def test_full_size_layouts_give_the_decoder_keys_and_feature_stages_of_the_spec(comfy, family):
    ops = importlib.import_module("comfy.ops")
    UNetModel = importlib.import_module("comfy.ldm.modules.diffusionmodules.openaimodel").UNetModel
    layout = comfy.module("nodes.unet_layout")
    cfg = dict(image_size=32, in_channels=4, out_channels=4, use_spatial_transformer=True, legacy=False,
               use_checkpoint=False, use_temporal_attention=False, use_temporal_resblock=False, **FULL[family])
    unet = UNetModel(**cfg, device="meta", operations=ops.disable_weight_init)
    n_keys, blocks, channels = EXPECTED[family]
    keys = layout.decoder_attn1_keys(unet)
    assert len(keys) == len(set(keys)) == n_keys
    assert set(keys) == counted_decoder_attn1(unet)
    assert layout.feature_blocks(unet) == blocks
    assert [unet.output_blocks[b][-1].conv.out_channels for b in blocks] == channels


def tiny_sd2(comfy, seed: int = 0):
    """A tiny SD2.x-style UNet (linear projections, wider heads) with v-prediction."""
    model_base = importlib.import_module("comfy.model_base")
    supported = importlib.import_module("comfy.supported_models")
    mc = supported.SD20(dict(comfy.tiny.SD1_UNET, use_linear_in_transformer=True))
    mc.unet_config["num_head_channels"] = 16
    mc.unet_config["num_heads"] = -1
    mc.model_type = lambda state_dict, prefix="": model_base.ModelType.V_PREDICTION
    mc.set_inference_dtype(torch.float32, None)
    model = mc.get_model({})
    comfy.tiny.init_weights(model, seed)
    return comfy.tiny._patcher(model)


def _model(comfy, family, seed=0):
    return tiny_sd2(comfy, seed) if family == "sd2" else comfy.tiny.FAMILIES[family](seed)


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl"])
def test_tiny_family_edit_patches_exactly_its_decoder_keys_and_reads_its_feature_stages(comfy, family):
    model_sampling = importlib.import_module("comfy.model_sampling")
    mm = importlib.import_module("comfy.model_management")
    layout = comfy.module("nodes.unet_layout")
    ap = comfy.module("nodes.attention_patch")
    smp = comfy.module("nodes.sampler")
    gd = comfy.module("nodes.guidance")
    att = comfy.module("dragon_core.attention")
    with torch.inference_mode():
        model = _model(comfy, family)
        cond = comfy.tiny.random_conditioning("sdxl" if family == "sdxl" else "sd1", 1)
        inv, _ = comfy.module("nodes.invert").run_inversion(model, cond, comfy.tiny.scene_latent(3, W, H), STEPS)
        inv2, _ = comfy.module("nodes.invert").run_inversion(model, cond, comfy.tiny.scene_latent(4, W, H), STEPS)
    unet = model.model.diffusion_model
    if family == "sd2":
        assert isinstance(model.get_model_object("model_sampling"), model_sampling.V_PREDICTION)
    counted = counted_decoder_attn1(unet)
    assert counted and set(layout.decoder_attn1_keys(unet)) == counted
    patched, keys = ap.patch_model(model, "auto", 0.0, 1.0)
    assert set(patched.model_options["transformer_options"]["patches_replace"]["attn1"]) == counted
    obj = torch.zeros(1, H, W)
    obj[:, 16:40, 16:40] = 1
    ref = torch.zeros(1, H, W)
    ref[:, 16:48, 48:80] = 1
    spec = gd.build_spec("appearance", object_mask=obj, reference_mask=ref, reference_inversion=inv2)
    with torch.inference_mode():
        out, job = smp.run_dragon(patched, cond, cond, inv, spec, STEPS, 5.0, 1)
    assert torch.isfinite(out).all()
    assert {k for k, _ in job.state.injected} == counted
    # the feature stages: the last two decoder stages that end in an upsampler, at 1/2 and 1/1 of the latent
    stages = [b for b, blk in enumerate(unet.output_blocks) if type(blk[-1]).__name__ == "Upsample"]
    assert list(job.blocks) == stages[-2:]
    clone = smp.grad_ready_clone(model)
    st = att.BranchState()
    st.reset_capture(job.blocks, stop=True)
    to = dict(clone.model_options["transformer_options"], dragon=st)
    extra = {"y": torch.zeros(1, comfy.tiny.SDXL_UNET["adm_in_channels"])} if family == "sdxl" else {}
    with torch.inference_mode():
        mm.load_models_gpu([clone])
        with pytest.raises(att.StopUNet):
            clone.model.diffusion_model(inv.reference(1), torch.tensor([500.0]), context=cond[0][0],
                                        transformer_options=to, **extra)
    h, w = inv.latent_shape[-2:]
    assert [tuple(st.features[b].shape[-2:]) for b in job.blocks] == [(h // 2, w // 2), (h, w)]
    assert [st.features[b].shape[1] for b in job.blocks] == [unet.output_blocks[b][-1].conv.out_channels
                                                             for b in job.blocks]


class StandInIPAdapter:
    """An IP-Adapter-style attn2 replace patch (ComfyUI's patch API): text attention plus attention to extra
    image tokens with their own keys/values, added with a weight. Records the Dragon phases it ran in."""

    def __init__(self, weight: float = 0.5, tokens: int = 4, seed: int = 0):
        from comfy.ldm.modules.attention import optimized_attention

        self.attention, self.weight, self.tokens, self.seed = optimized_attention, weight, tokens, seed
        self.kv: dict = {}
        self.phases: list = []

    def __deepcopy__(self, memo):
        return self

    def __call__(self, q, k, v, extra_options):
        heads = extra_options["n_heads"]
        st = extra_options.get("dragon")
        self.phases.append(getattr(st, "phase", None))
        dim = q.shape[-1]
        if dim not in self.kv:
            g = torch.Generator().manual_seed(self.seed + dim)
            self.kv[dim] = (torch.randn(1, self.tokens, dim, generator=g), torch.randn(1, self.tokens, dim, generator=g))
        ki, vi = (t.to(q).expand(q.shape[0], -1, -1) for t in self.kv[dim])
        return self.attention(q, k, v, heads) + self.weight * self.attention(q, ki, vi, heads)


def add_ip(model, patch: StandInIPAdapter):
    from comfy.ldm.modules.attention import SpatialTransformer

    m = model.clone()
    unet = m.model.diffusion_model
    for name, blocks in (("input", unet.input_blocks), ("output", unet.output_blocks), ("middle", [unet.middle_block])):
        for i, blk in enumerate(blocks):
            for child in blk:
                if isinstance(child, SpatialTransformer):
                    for j in range(len(child.transformer_blocks)):
                        m.set_model_attn2_replace(patch, name, i, j)
    return m


def lora_deltas(model, seed: int = 5) -> dict:
    """Weight differences for some decoder and encoder layers (what a LoRA adds to the weights)."""
    g = torch.Generator().manual_seed(seed)
    sd = model.model.state_dict()
    keys = [k for k in sd if k.endswith("attn1.to_q.weight") or k.endswith("attn2.to_k.weight")
            or re.search(r"output_blocks\.\d+\.0\.in_layers\.2\.weight$", k)]
    assert len(keys) >= 6
    return {k: 0.3 * torch.randn(sd[k].shape, generator=g) for k in keys}


def _dragon(comfy, model, cond, mode="move"):
    smp = comfy.module("nodes.sampler")
    ap = comfy.module("nodes.attention_patch")
    gd = comfy.module("nodes.guidance")
    obj = torch.zeros(1, H, W)
    obj[:, 16:40, 16:40] = 1
    with torch.inference_mode():
        inv, _ = comfy.module("nodes.invert").run_inversion(model, cond, comfy.tiny.scene_latent(3, W, H), STEPS)
        patched, _ = ap.patch_model(model, "auto", 0.1, 1.0)
        spec = gd.build_spec(mode, object_mask=obj, offset_x=24) if mode == "move" else gd.build_spec(mode, object_mask=obj)
        out, job = smp.run_dragon(patched, cond, cond, inv, spec, STEPS, 4.0, 1)
    return out, job


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_lora_and_ip_adapter_patches_applied_before_the_dragon_nodes_both_take_effect(comfy, family):
    cond = comfy.tiny.random_conditioning(family, 1)
    with torch.inference_mode():
        base = comfy.tiny.FAMILIES[family](0)
    deltas = lora_deltas(base)
    lora = base.clone()
    assert set(lora.add_patches({k: (d,) for k, d in deltas.items()}, 1.0)) == set(deltas)
    ip = StandInIPAdapter()
    both = add_ip(lora, ip)
    opts_before = repr(both.model_options)
    out_both, job = _dragon(comfy, both, cond)
    assert repr(both.model_options) == opts_before  # the Dragon nodes patch clones, never their input
    # the IP patch ran inside the Dragon run: in the guidance branch's feature pass, the CFG generation and the
    # gradient pass (the injected K/V come from Dragon DDIM Invert's memory bank, recorded with the patch on: no
    # "reference" pass is needed)
    assert {"plain", "generate", "grad"} <= set(ip.phases)
    assert job.stats.kv_banked > 0 and "reference" not in ip.phases
    assert job.stats.guided_steps > 0
    # LoRA: same result as a model whose weights carry the deltas directly
    with torch.inference_mode():
        direct = comfy.tiny.FAMILIES[family](0)
    with torch.no_grad():
        sd = direct.model.state_dict()
        for k, d in deltas.items():
            sd[k].add_(d)
    out_direct, _ = _dragon(comfy, add_ip(direct, StandInIPAdapter()), cond)
    torch.testing.assert_close(out_both, out_direct, rtol=1e-4, atol=1e-4)
    # and each patch matters
    out_no_lora, _ = _dragon(comfy, add_ip(base, StandInIPAdapter()), cond)
    out_no_ip, _ = _dragon(comfy, lora, cond)
    assert (out_both - out_no_lora).abs().max() > 1e-3
    assert (out_both - out_no_ip).abs().max() > 1e-3

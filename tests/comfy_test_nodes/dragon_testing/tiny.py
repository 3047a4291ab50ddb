"""Tiny SD1-style, SDXL-style and DiT models built with ComfyUI's own model classes.

ComfyUI builds layers without initialising them (the weights are torch.empty garbage), so every
model here is initialised explicitly and deterministically from a seed.
"""
from __future__ import annotations

import torch

import comfy.model_management as mm
import comfy.model_patcher
import comfy.supported_models

CONTEXT_DIM = 64
POOLED_DIM = 64

# Three levels so that the decoder has two upsampling stages, like SD1.5's feature stages.
SD1_UNET = dict(
    use_checkpoint=False, image_size=32, use_spatial_transformer=True, legacy=False,
    in_channels=4, out_channels=4, model_channels=32, num_res_blocks=[1, 1, 1],
    channel_mult=[1, 2, 2], transformer_depth=[1, 1, 1], transformer_depth_output=[1, 1, 1, 1, 1, 1],
    transformer_depth_middle=1, context_dim=CONTEXT_DIM, use_linear_in_transformer=False,
    adm_in_channels=None, use_temporal_resblock=False, use_temporal_attention=False,
)
# SDXL's shape in miniature: no attention at the first level, deeper transformers lower down,
# linear projections, and the pooled-text + size "adm" vector.
SDXL_UNET = dict(
    use_checkpoint=False, image_size=32, use_spatial_transformer=True, legacy=False,
    in_channels=4, out_channels=4, model_channels=32, num_res_blocks=[1, 1, 1],
    channel_mult=[1, 2, 2], transformer_depth=[0, 1, 2], transformer_depth_output=[0, 0, 1, 1, 2, 2],
    transformer_depth_middle=2, context_dim=CONTEXT_DIM, use_linear_in_transformer=True,
    adm_in_channels=POOLED_DIM + 1536, num_classes="sequential",
    use_temporal_resblock=False, use_temporal_attention=False,
)


def init_weights(module: torch.nn.Module, seed: int, out_scale: float = 0.1) -> None:
    """Deterministic initialisation of every parameterised layer (ComfyUI leaves them empty)."""
    g = torch.Generator().manual_seed(seed)
    for name, m in module.named_modules():
        for pname, p in m.named_parameters(recurse=False):
            with torch.no_grad():
                if pname == "bias" or p.ndim == 1:
                    if isinstance(m, (torch.nn.GroupNorm, torch.nn.LayerNorm)) and pname == "weight":
                        p.fill_(1.0)
                    else:
                        p.zero_()
                else:
                    fan_in = p[0].numel()
                    p.copy_(torch.randn(p.shape, generator=g) / fan_in**0.5)
    # keep the eps prediction small and smooth, as a trained model's is near identity in x
    unet = getattr(module, "diffusion_model", module)
    if hasattr(unet, "out"):
        with torch.no_grad():
            unet.out[-1].weight.mul_(out_scale)


def _patcher(model) -> comfy.model_patcher.ModelPatcher:
    return comfy.model_patcher.ModelPatcher(model, load_device=mm.get_torch_device(),
                                            offload_device=mm.unet_offload_device())


def tiny_sd1(seed: int = 0, dtype: torch.dtype = torch.float32, half_values: bool = False
             ) -> comfy.model_patcher.ModelPatcher:
    """dtype: the UNet's weights and compute (fp16 as ComfyUI runs SD1.5 on most GPUs). half_values: the initial
    values rounded to fp16, so that an fp32 and an fp16 model of one seed hold the same weights."""
    mc = comfy.supported_models.SD15(dict(SD1_UNET))
    mc.unet_config["num_head_channels"] = -1
    mc.unet_config["num_heads"] = 4
    mc.set_inference_dtype(dtype, None)
    model = mc.get_model({})
    init_weights(model, seed)
    if half_values:
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(p.half().to(p.dtype))
    return _patcher(model)


def tiny_sdxl(seed: int = 0) -> comfy.model_patcher.ModelPatcher:
    mc = comfy.supported_models.SDXL(dict(SDXL_UNET))
    mc.unet_config["num_head_channels"] = 16
    mc.unet_config["num_heads"] = -1
    mc.set_inference_dtype(torch.float32, None)
    model = mc.get_model({})
    init_weights(model, seed)
    return _patcher(model)


def tiny_dit(seed: int = 0) -> comfy.model_patcher.ModelPatcher:
    """A tiny Lumina 2 / Z-Image DiT (ComfyUI's NextDiT): a flow DiT family the pack does not support yet, which it
    must refuse clearly."""
    cfg = dict(image_model="lumina2", patch_size=2, in_channels=16, dim=64, n_layers=1, n_refiner_layers=1, n_heads=2,
               n_kv_heads=2, multiple_of=16, ffn_dim_multiplier=1.0, norm_eps=1e-5, qk_norm=True,
               cap_feat_dim=CONTEXT_DIM, axes_dims=[8, 12, 12], axes_lens=[300, 512, 512])
    mc = comfy.supported_models.Lumina2(cfg)
    mc.set_inference_dtype(torch.float32, None)
    model = mc.get_model({})
    init_weights(model, seed)
    return _patcher(model)


FAMILIES = {"sd1": tiny_sd1, "sdxl": tiny_sdxl, "dit": tiny_dit}


def random_conditioning(family: str, seed: int, tokens: int = 77) -> list:
    g = torch.Generator().manual_seed(seed)
    cond = torch.randn(1, tokens, CONTEXT_DIM, generator=g)
    extra = {"pooled_output": torch.randn(1, POOLED_DIM, generator=g)}
    if family == "sdxl":
        extra.update(width=256, height=256, crop_w=0, crop_h=0, target_width=256, target_height=256)
    return [[cond, extra]]


def scene_latent(seed: int, width: int, height: int) -> torch.Tensor:
    """A smooth, structured latent (a blob on a gradient), standing in for an encoded photo."""
    g = torch.Generator().manual_seed(seed)
    h, w = height // 8, width // 8
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    base = torch.randn(4, 1, 1, generator=g) * (xx + 0.5 * yy)[None]
    cy, cx = (torch.rand(2, generator=g) - 0.5).tolist()
    blob = torch.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 0.1)[None] * torch.randn(4, 1, 1, generator=g) * 2
    return (base + blob)[None] / 0.18215 * 0.5

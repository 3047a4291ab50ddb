"""The toy flow DiT: ComfyUI's own Flux transformer, tiny, in pixel space, trained by flow matching.

The DiT counterpart of the toy UNet (model.py), for the pack's flow-matching path (issue #28): the same synthetic
scenes, the real Flux code paths (comfy.ldm.flux.model.Flux: double- and single-stream blocks, RoPE, the guidance
embedding, patches_replace["dit"], the attention override) at a size a CPU trains in under an hour. It is a
FLUX.1-dev-shaped model: ModelType.FLUX (ComfyUI's CONST prediction, ModelSamplingFlux with its shift), a guidance
embedding it reads but was not distilled on (trained with random guidance values, so every value gives the same
model), one text token from a fixed embedding (the conditioning is one zero token, as the UNet toy's). Its
"latent" is the picture itself (3 channels, ComfyUI's pixel-space latent format), 2x2 patches: a 32x32 scene is
16x16 image tokens.
"""
from __future__ import annotations

import os

import torch

CONTEXT_DIM = 16  # the text token's width (one zero token: the toy is unconditional)
WEIGHTS = os.path.join(os.path.dirname(__file__), "weights", "dragon_toy_dit.safetensors")
WEIGHTS_ENV = "DRAGON_TOY_DIT_WEIGHTS"  # candidate weights, without replacing the shipped ones

FLUX_CONFIG = dict(
    image_model="flux", in_channels=3, out_channels=3, vec_in_dim=None, context_in_dim=CONTEXT_DIM,
    hidden_size=128, mlp_ratio=4.0, num_heads=4, depth=3, depth_single_blocks=3, axes_dim=[8, 12, 12],
    theta=10000, patch_size=2, qkv_bias=True, guidance_embed=True,
)
SHIFT = 1.15  # ModelSamplingFlux's default shift (FLUX.1-dev's base shift); sigma = shift(u) for u in (0, 1]


def weights_path() -> str:
    """$DRAGON_TOY_DIT_WEIGHTS when set (a model under evaluation), else the shipped weights."""
    return os.environ.get(WEIGHTS_ENV) or WEIGHTS


def flux_config() -> dict:
    """FLUX_CONFIG as this ComfyUI's Flux class takes it: versions that know text-token position ids (0.33 and later)
    need txt_ids_dims, [] for FLUX.1 as their model detection gives it."""
    import dataclasses

    from comfy.ldm.flux.model import FluxParams

    cfg = dict(FLUX_CONFIG)
    if "txt_ids_dims" in {f.name for f in dataclasses.fields(FluxParams)}:
        cfg.setdefault("txt_ids_dims", [])
    return cfg


def build_flux(dtype=torch.float32):
    """A freshly initialised Flux transformer (ComfyUI's class) for training."""
    import comfy.ops
    from comfy.ldm.flux.model import Flux

    net = Flux(**flux_config(), dtype=dtype, device="cpu", operations=comfy.ops.disable_weight_init)
    # ComfyUI skips initialisation (its weights start as torch.empty: whatever the memory held); use PyTorch's
    # defaults. Its RMSNorm is Flux's own (a `scale`) up to 0.3.x and a torch.nn.RMSNorm (`weight`) from 0.33 on.
    bases = tuple(b for b in (torch.nn.Linear, torch.nn.LayerNorm, getattr(torch.nn, "RMSNorm", None)) if b)
    for m in net.modules():
        base = base_of(m, bases)
        if base is not None:
            base.reset_parameters(m)
        elif type(m).__name__ == "RMSNorm" and getattr(m, "scale", None) is not None:
            with torch.no_grad():
                m.scale.fill_(1.0)
    left = [n for n, m in net.named_modules() for p in m.parameters(recurse=False)
            if base_of(m, bases) is None and type(m).__name__ != "RMSNorm"]
    if left:  # a new ComfyUI that adds a kind of layer this does not know: better refused than random memory
        raise RuntimeError(f"build_flux: no initialisation for the parameters of {left[:4]}")
    with torch.no_grad():  # start as the zero predictor at the output, a common stabiliser
        net.final_layer.linear.weight.zero_()
        net.final_layer.linear.bias.zero_()
    return net


def base_of(m, bases: tuple):
    """The first of the torch.nn classes `bases` module m is an instance of, or None."""
    return next((b for b in bases if isinstance(m, b)), None)


def sigmas_for(u: torch.Tensor) -> torch.Tensor:
    """The flow time the model sees for u in (0, 1]: ModelSamplingFlux's shift (the distribution sampling uses)."""
    import math

    return math.exp(SHIFT) / (math.exp(SHIFT) + (1 / u - 1))


def call(net, x: torch.Tensor, sigma: torch.Tensor, ctx: torch.Tensor, guidance: torch.Tensor | None = None):
    """The model's velocity for pictures x [B, 3, H, W] at flow times sigma [B] with text tokens ctx (training and
    checks; in ComfyUI the model is called through its ModelPatcher)."""
    g = guidance if guidance is not None else torch.full((x.shape[0],), 3.5)
    return net(x, sigma, ctx, guidance=g)


def forward(net, x: torch.Tensor, sigma: torch.Tensor, guidance: torch.Tensor | None = None) -> torch.Tensor:
    return call(net, x, sigma, torch.zeros(x.shape[0], 1, CONTEXT_DIM, dtype=x.dtype), guidance)


def _read(path: str, env: str = WEIGHTS_ENV, arch: str = "flux") -> dict:
    from safetensors.torch import load_file

    if not os.path.isfile(path):
        hint = (f"; ${env} is set: point it at a file written by scripts/train_toy_dit.py, or unset it"
                if os.environ.get(env) == path else f"; run scripts/train_toy_dit.py --arch {arch}")
        raise FileNotFoundError(f"toy DiT weights not found at {path}{hint}")
    return {k: v.float() for k, v in load_file(path).items()}


def build(dtype=torch.float32):
    return build_flux(dtype)


def load_flux(path: str | None = None):
    """The trained toy DiT as a plain fp32 module (training-side checks)."""
    net = build_flux()
    net.load_state_dict(model_config().process_unet_state_dict(_read(path or weights_path())))
    return net.eval().requires_grad_(False)


load_net = load_flux
CONFIG = FLUX_CONFIG


def model_config():
    """ComfyUI's Flux model config for the toy: pixel-space latent, fp32."""
    import comfy.supported_models

    return pixel_space(comfy.supported_models.Flux(flux_config()), SHIFT)


def pixel_space(mc, shift: float):
    """A toy's ComfyUI model config: the picture is the latent (ChromaRadiance's identity format), its shift, fp32."""
    import comfy.latent_formats

    mc.latent_format = comfy.latent_formats.ChromaRadiance()
    mc.sampling_settings = {"shift": shift}
    mc.set_inference_dtype(torch.float32, None)
    return mc


def load_model_patcher(path: str | None = None, state_dict: dict | None = None):
    """The toy DiT as a ComfyUI MODEL (ModelPatcher), as a checkpoint loader gives a FLUX.1-dev model."""
    from .model import patcher_with

    mc = model_config()
    sd = state_dict if state_dict is not None else _read(path or weights_path())
    # as ComfyUI's checkpoint loader: 0.33+ renames the BFL files' RMSNorm "scale" to torch's "weight"
    return patcher_with(mc.get_model({}), mc.process_unet_state_dict(sd), "toy DiT weights do not fit the toy Flux")


def conditioning():
    """The toy's CONDITIONING: one zero text token (no pooled vector: the toy has no vector input)."""
    return [[torch.zeros(1, 1, CONTEXT_DIM), {"pooled_output": None}]]

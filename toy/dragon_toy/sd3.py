"""The toy SD3-family DiT: ComfyUI's own MMDiT (SD3 / SD3.5), tiny, in pixel space, trained by flow matching.

The third family's counterpart of the toy Flux (dit.py), issue #28: the same synthetic scenes, the real MMDiT code
paths (comfy.ldm.modules.diffusionmodules.mmdit: joint blocks over [text; image] tokens with attention on
[B, N, heads * d], SD3.5's RMS q/k norm and its extra image-only self-attention (x_block_self_attn) in the first
half of the blocks, the last block's text stream pre-only, patches_replace["dit"] double_block) at a size a CPU
trains in under an hour. It is an SD3.5-medium-shaped model: ModelType.FLOW (ComfyUI's CONST prediction,
ModelSamplingDiscreteFlow with SD3's shift 3.0, which is the toy Flux's shift: 3.0 ~ e^1.15), no pooled vector,
one text token from a fixed embedding (a zero token, as the other toys). Its "latent" is the picture itself
(3 channels, ComfyUI's pixel-space latent format), 2x2 patches: a 32x32 scene is 16x16 image tokens.

MMDiT's width is 64 x depth (its heads are 64 wide): depth 2 gives 128 channels in 2 heads; num_blocks sets the
number of joint blocks on its own (6).
"""
from __future__ import annotations

import os

import torch

from .dit import _read, base_of, pixel_space

CONTEXT_DIM = 16  # the text token's width (one zero token: the toy is unconditional)
WEIGHTS = os.path.join(os.path.dirname(__file__), "weights", "dragon_toy_sd3.safetensors")
WEIGHTS_ENV = "DRAGON_TOY_SD3_WEIGHTS"  # candidate weights, without replacing the shipped ones
POS_EMBED_MAX = 32  # positional table side, in tokens: pictures up to 64x64

CONFIG = dict(
    in_channels=3, out_channels=3, patch_size=2, depth=2, num_blocks=6, mlp_ratio=4.0, input_size=None,
    adm_in_channels=None, pos_embed_scaling_factor=None, pos_embed_max_size=POS_EMBED_MAX,
    num_patches=POS_EMBED_MAX ** 2, qk_norm="rms", x_block_self_attn_layers=[0, 1, 2],
    context_embedder_config={"target": "torch.nn.Linear", "params": {"in_features": CONTEXT_DIM, "out_features": 128}},
)
SHIFT = 3.0  # SD3's ModelSamplingDiscreteFlow shift; sigma = shift u / (1 + (shift - 1) u)
MULTIPLIER = 1000  # the model sees timestep = sigma * 1000


def weights_path() -> str:
    """$DRAGON_TOY_SD3_WEIGHTS when set (a model under evaluation), else the shipped weights."""
    return os.environ.get(WEIGHTS_ENV) or WEIGHTS


def build(dtype=torch.float32):
    """A freshly initialised MMDiT (ComfyUI's class, as SD3 models run it) for training."""
    import comfy.ops
    from comfy.ldm.modules.diffusionmodules.mmdit import OpenAISignatureMMDITWrapper, get_2d_sincos_pos_embed

    net = OpenAISignatureMMDITWrapper(**CONFIG, dtype=dtype, device="cpu", operations=comfy.ops.disable_weight_init)
    # ComfyUI skips initialisation (torch.empty): PyTorch's defaults, RMS norms at 1, the fixed sin-cos positions
    bases = (torch.nn.Linear, torch.nn.Conv2d, torch.nn.LayerNorm)
    left = []
    for n, m in net.named_modules():
        base = base_of(m, bases)
        if base is not None:
            base.reset_parameters(m)
        elif type(m).__name__ == "RMSNorm":
            with torch.no_grad():
                m.weight.fill_(1.0)
        elif list(m.parameters(recurse=False)):
            left.append(n)
    if left:  # a new ComfyUI that adds a kind of layer this does not know: better refused than random memory
        raise RuntimeError(f"toy SD3 build: no initialisation for the parameters of {left[:4]}")
    with torch.no_grad():
        net.pos_embed.copy_(torch.from_numpy(get_2d_sincos_pos_embed(net.hidden_size, POS_EMBED_MAX))[None])
        net.final_layer.linear.weight.zero_()  # start as the zero predictor at the output
        net.final_layer.linear.bias.zero_()
    return net


def sigmas_for(u: torch.Tensor) -> torch.Tensor:
    """The flow time for u in (0, 1]: ModelSamplingDiscreteFlow's shift (the distribution sampling uses)."""
    return SHIFT * u / (1 + (SHIFT - 1) * u)


def call(net, x: torch.Tensor, sigma: torch.Tensor, ctx: torch.Tensor, guidance: torch.Tensor | None = None):
    """The model's velocity for pictures x at flow times sigma (the model reads timestep = 1000 sigma; SD3 has no
    guidance embedding: `guidance` is ignored)."""
    return net(x, sigma * MULTIPLIER, context=ctx)


def forward(net, x: torch.Tensor, sigma: torch.Tensor, guidance: torch.Tensor | None = None) -> torch.Tensor:
    return call(net, x, sigma, torch.zeros(x.shape[0], 1, CONTEXT_DIM, dtype=x.dtype))


def load_net(path: str | None = None):
    """The trained toy as a plain fp32 module (training-side checks)."""
    net = build()
    net.load_state_dict(_read(path or weights_path(), WEIGHTS_ENV, "sd3"))
    return net.eval().requires_grad_(False)


def model_config():
    """ComfyUI's SD3 model config for the toy: pixel-space latent, fp32, SD3's shift."""
    import comfy.supported_models

    return pixel_space(comfy.supported_models.SD3(dict(CONFIG)), SHIFT)


def load_model_patcher(path: str | None = None, state_dict: dict | None = None):
    """The toy as a ComfyUI MODEL (ModelPatcher), as a checkpoint loader gives an SD3.5 model."""
    from .model import patcher_with

    mc = model_config()
    sd = state_dict if state_dict is not None else _read(path or weights_path(), WEIGHTS_ENV, "sd3")
    return patcher_with(mc.get_model({}), sd, "toy SD3 weights do not fit the toy MMDiT")


def conditioning():
    """The toy's CONDITIONING: one zero text token, no pooled vector."""
    return [[torch.zeros(1, 1, CONTEXT_DIM), {"pooled_output": None}]]

"""The toy model: ComfyUI's own SD UNet architecture, small, in pixel space.

It is an SD-type model (v-prediction as SD 2.x-768; SD's scaled-linear betas, the same UNetModel class,
SpatialTransformer self/cross-attention) with 3 channels at 32/16/8 px instead of 4 latent
channels, so the pack's nodes run on it exactly as on SD. Its "VAE" is ComfyUI's pixel-space
conversion (image*2-1). It is unconditional: the conditioning is one zero token.
"""
from __future__ import annotations

import os

import torch

CONTEXT_DIM = 32
WEIGHTS = os.path.join(os.path.dirname(__file__), "weights", "dragon_toy_unet.safetensors")
WEIGHTS_ENV = "DRAGON_TOY_WEIGHTS"  # candidate weights for the demo/benchmark, without replacing the shipped ones


def weights_path() -> str:
    """The weights the toy loader uses: $DRAGON_TOY_WEIGHTS when set (a model under evaluation), else the
    shipped ones."""
    return os.environ.get(WEIGHTS_ENV) or WEIGHTS

UNET_CONFIG = dict(
    use_checkpoint=False, image_size=32, use_spatial_transformer=True, legacy=False,
    in_channels=3, out_channels=3, model_channels=32, num_res_blocks=[1, 1, 1], channel_mult=[1, 2, 4],
    transformer_depth=[0, 1, 1], transformer_depth_output=[0, 0, 1, 1, 1, 1], transformer_depth_middle=1,
    context_dim=CONTEXT_DIM, use_linear_in_transformer=False, num_head_channels=32, num_heads=-1,
    adm_in_channels=None, use_temporal_resblock=False, use_temporal_attention=False,
)

# SD1.5's training noise schedule
BETA_START, BETA_END, TIMESTEPS = 0.00085, 0.012, 1000


def alphas_cumprod() -> torch.Tensor:
    betas = torch.linspace(BETA_START ** 0.5, BETA_END ** 0.5, TIMESTEPS, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, 0).float()


def build_unet(dtype=torch.float32):
    """A freshly initialised UNetModel (ComfyUI's class) for training."""
    import comfy.ops
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    unet = UNetModel(**UNET_CONFIG, dtype=dtype, device="cpu", operations=comfy.ops.disable_weight_init)
    for m in unet.modules():  # ComfyUI skips initialisation; use PyTorch's defaults
        for base in (torch.nn.Conv2d, torch.nn.Linear, torch.nn.GroupNorm, torch.nn.LayerNorm):
            if isinstance(m, base):
                base.reset_parameters(m)
                break
    with torch.no_grad():  # start as the zero predictor at the output, a common stabiliser
        unet.out[-1].weight.zero_()
        unet.out[-1].bias.zero_()
    return unet


# what the UNet predicts: the noise (SD1.x), or v = sqrt(abar)*eps - sqrt(1-abar)*x0 (SD2.x-768; the shipped model)
PREDICTIONS = ("eps", "v")


def _read(path: str, tensors: bool = True) -> tuple[dict, str]:
    """A weights file's fp32 state dict and its parametrisation ("prediction" metadata; older files: eps),
    in one read of the safetensors file (nothing is unpickled)."""
    from safetensors import safe_open

    if not os.path.isfile(path):
        hint = (f"; ${WEIGHTS_ENV} is set: point it at a file written by scripts/train_toy.py, or unset it"
                if os.environ.get(WEIGHTS_ENV) == path else "; run scripts/train_toy.py")
        raise FileNotFoundError(f"toy model weights not found at {path}{hint}")
    with safe_open(path, "pt") as f:
        pred = (f.metadata() or {}).get("prediction", "eps")
        if pred not in PREDICTIONS:
            raise ValueError(f"toy weights {path}: unknown prediction {pred!r} in their metadata "
                             f"(expected one of {PREDICTIONS})")
        sd = {k: f.get_tensor(k).float() for k in f.keys()} if tensors else {}
    return sd, pred


def prediction(path: str | None = None) -> str:
    """The parametrisation a weights file was trained with (reads only its header)."""
    return _read(path or weights_path(), tensors=False)[1]


def load_unet(path: str | None = None):
    """The trained toy UNet as a plain fp32 module, for training-side checks (toy/dragon_toy/check.py).
    Its `prediction` attribute says what it outputs."""
    sd, pred = _read(path or weights_path())
    unet = build_unet()
    unet.load_state_dict(sd)
    unet.prediction = pred
    return unet.eval().requires_grad_(False)


def load_model_patcher(path: str | None = None):
    """The trained toy model as a ComfyUI MODEL (ModelPatcher), like a checkpoint loader gives; eps- or
    v-prediction as its weights say."""
    import comfy.latent_formats
    import comfy.model_base
    import comfy.supported_models

    sd, pred = _read(path or weights_path())
    mc = comfy.supported_models.SD15(dict(UNET_CONFIG))
    mc.latent_format = comfy.latent_formats.ChromaRadiance()  # pixel space, identity latent
    mc.set_inference_dtype(torch.float32, None)
    if pred == "v":  # as ComfyUI loads an SD2.x-768 checkpoint
        model = comfy.model_base.BaseModel(mc, model_type=comfy.model_base.ModelType.V_PREDICTION)
    else:
        model = mc.get_model({})
    return patcher_with(model, sd, "toy weights do not fit the toy UNet")


def patcher_with(model, sd: dict, misfit: str):
    """A ComfyUI model with `sd` loaded into its diffusion model, as a MODEL (ModelPatcher); `misfit` starts the
    error when the weights are not this architecture's."""
    import comfy.model_management as mm
    import comfy.model_patcher

    missing, unexpected = model.diffusion_model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise RuntimeError(f"{misfit}: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return comfy.model_patcher.ModelPatcher(model, load_device=mm.get_torch_device(),
                                            offload_device=mm.unet_offload_device())


def pixel_vae():
    """ComfyUI's pixel-space VAE (encode: image*2-1, decode: the inverse)."""
    import comfy.sd

    return comfy.sd.VAE(sd={"pixel_space_vae": torch.tensor(1.0)})


def empty_conditioning() -> list:
    return [[torch.zeros(1, 1, CONTEXT_DIM), {}]]

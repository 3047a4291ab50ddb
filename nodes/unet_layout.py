"""Where things are inside a ComfyUI UNet, found from its structure rather than hard-coded.

The decoder self-attention keys and the feature stages are enumerated from the module tree, so
SD1.x, SD2.x, SDXL and the tiny test UNets all work from the same code.
"""
from __future__ import annotations

from comfy.ldm.modules.attention import SpatialTransformer
from comfy.ldm.modules.diffusionmodules.openaimodel import Upsample, UNetModel

from ..dragon_core.errors import DragonInputError

AttnKey = tuple[str, int, int]


def unet_of(model_patcher, node: str, input_name: str = "model") -> UNetModel:
    """The UNet of a MODEL, or a clear error for DiT/flow models the method does not cover."""
    base = getattr(model_patcher, "model", None)
    unet = getattr(base, "diffusion_model", None)
    if not isinstance(unet, UNetModel):
        kind = type(unet).__name__ if unet is not None else type(model_patcher).__name__
        raise DragonInputError(
            node, input_name,
            f"DragonDiffusion needs a UNet diffusion model (SD1.x, SD2.x or SDXL); this one is {kind}.",
            "Load an SD1.x/SD2.x/SDXL checkpoint.")
    return unet


def model_key(model_patcher) -> str:
    """Identifies the weights an inversion was made with (clones share the same BaseModel)."""
    base = model_patcher.model
    cfg = getattr(getattr(base, "model_config", None), "unet_config", {})
    return f"{type(base).__name__}:{id(base):x}:{hash(repr(sorted(cfg.items()))) & 0xffffffff:08x}"


def decoder_attn1_keys(unet: UNetModel) -> list[AttnKey]:
    """(("output", block, index)) for every decoder self-attention layer, in execution order."""
    keys = []
    for i, block in enumerate(unet.output_blocks):
        for child in block:
            if isinstance(child, SpatialTransformer):
                keys.extend(("output", i, j) for j in range(len(child.transformer_blocks)))
    return keys


def decoder_stages(unet: UNetModel) -> list[list[int]]:
    """Output blocks grouped by decoder stage: a stage ends with an upsampler or at the last block."""
    stages, cur = [], []
    for i, block in enumerate(unet.output_blocks):
        cur.append(i)
        if isinstance(block[-1], Upsample) or i == len(unet.output_blocks) - 1:
            stages.append(cur)
            cur = []
    return stages


def feature_blocks(unet: UNetModel) -> list[int]:
    """Output blocks whose outputs are DragonDiffusion's guidance features.

    The official code uses the 2nd and 3rd of SD1.5's four decoder stages (diffusers up_blocks 1
    and 2: 1280 ch at 1/16 and 640 ch at 1/8 of the image). By stage that is "the last two stages
    that end in an upsampler", which gives SDXL's stages 1 and 2 (the same resolutions and widths)
    and never needs the final stage, so the forward pass can stop early.
    """
    ends = [st[-1] for st in decoder_stages(unet) if isinstance(unet.output_blocks[st[-1]][-1], Upsample)]
    if not ends:
        raise DragonInputError("Dragon Sampler", "model", "the UNet's decoder has no upsampling stage.",
                               "Use an SD1.x/SD2.x/SDXL model.")
    return ends[-2:]


def latent_channels(unet: UNetModel) -> int:
    return int(unet.in_channels)


def downscale_levels(unet: UNetModel) -> int:
    """Number of downsampling steps: latent sides below 2**levels break the skip connections."""
    return len(unet.channel_mult) - 1


def pixels_per_latent(model_patcher) -> int:
    """Image pixels per latent cell: 1 for a pixel-space model (3-channel identity latent format,
    e.g. the project's toy models or Chroma Radiance), 8 for the SD and FLUX.1 VAEs, 16 for FLUX.2's."""
    fmt = getattr(getattr(model_patcher, "model", None), "latent_format", None)
    name = type(fmt).__name__ if fmt is not None else ""
    return {"ChromaRadiance": 1, "Flux2": 16}.get(name, 8)  # FLUX.2's VAE: 128 channels at 1/16

"""Small helpers shared by the nodes: input checks and ComfyUI sampling plumbing."""
from __future__ import annotations

import logging

import torch

from ..dragon_core.errors import DragonInputError
from ..dragon_core.schedule import ddim_timesteps

log = logging.getLogger("DragonDiffusion")


def check_latent(node: str, input_name: str, latent: dict, layout) -> torch.Tensor:
    """The single-image latent a Dragon node works on, or a clear error."""
    samples = latent.get("samples") if isinstance(latent, dict) else None
    if not isinstance(samples, torch.Tensor) or samples.ndim != 4:
        shape = tuple(samples.shape) if isinstance(samples, torch.Tensor) else type(samples).__name__
        raise DragonInputError(node, input_name, f"expected an image latent [1, C, H, W], got {shape}.",
                               "Connect the output of VAE Encode.")
    b, c, h, w = samples.shape
    if b != 1:
        raise DragonInputError(node, input_name, f"has a batch of {b}; DragonDiffusion edits one image at a time.",
                               "Use Latent From Batch to pick one image.")
    want_c = layout.channels
    if c != want_c:
        raise DragonInputError(node, input_name,
                               f"has {c} channels but the model takes {want_c}-channel latents.",
                               "Encode the image with the VAE that belongs to this model.")
    min_side = layout.min_side
    if h < min_side or w < min_side:
        raise DragonInputError(node, input_name,
                               f"is {w}x{h} latent pixels, smaller than the model's minimum of {min_side}x{min_side}.",
                               "Use a larger image.")
    if not torch.isfinite(samples).all():
        raise DragonInputError(node, input_name, "contains NaN or infinite values.", "Re-encode the image.")
    return samples


def check_conditioning(node: str, input_name: str, cond) -> None:
    """A CONDITIONING as ComfyUI's text encoders make it: a non-empty list of [tensor [B, tokens, dim], dict]."""
    fix = "Connect a CLIP Text Encode (or another conditioning node's) output."
    if not isinstance(cond, list) or len(cond) == 0:
        raise DragonInputError(node, input_name, "is empty or not a CONDITIONING.", fix)
    for i, c in enumerate(cond):
        if not isinstance(c, (list, tuple)) or len(c) < 2 or not isinstance(c[1], dict):
            raise DragonInputError(node, input_name, f"entry {i} is not a [tensor, options] pair of a CONDITIONING.", fix)
        if not isinstance(c[0], torch.Tensor) or c[0].ndim != 3:
            got = tuple(c[0].shape) if isinstance(c[0], torch.Tensor) else type(c[0]).__name__
            raise DragonInputError(node, input_name, f"entry {i} holds {got}, not a [batch, tokens, channels] "
                                   "text embedding.", fix)
        if not torch.isfinite(c[0]).all():
            raise DragonInputError(node, input_name, "contains NaN or infinite values.",
                                   "Re-encode the prompt; check the nodes that changed the conditioning.")


def single_mask(node: str, input_name: str, mask) -> torch.Tensor | None:
    """One MASK as a [H, W] float tensor in [0, 1] on the CPU (None passes through), or a clear error."""
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor) or mask.ndim not in (2, 3):
        raise DragonInputError(node, input_name, "must be a MASK.", "Connect a MASK output (e.g. Load Image's mask).")
    if mask.ndim == 3:
        if mask.shape[0] != 1:
            raise DragonInputError(node, input_name, f"has a batch of {mask.shape[0]} masks; give one.",
                                   "Pick one mask of the batch first.")
        mask = mask[0]
    if not torch.isfinite(mask).all():
        raise DragonInputError(node, input_name, "contains NaN or infinite values.",
                               "Check the nodes that made the mask; a mask holds values between 0 and 1.")
    return mask.detach().float().clamp(0, 1).cpu()


def ddim_sigmas(model_patcher, steps: int) -> torch.Tensor:
    """The official DDIM schedule as sigmas of the model's own noise schedule: timesteps 981, 961, ..., 1 for
    50 steps, ending at the level of timestep 0 (dragon_core.schedule.ddim_timesteps), descending."""
    ms = model_patcher.get_model_object("model_sampling")
    table = ms.sigmas.detach().float().cpu()
    return table[ddim_timesteps(steps, len(table))].clone()


def with_transformer_options(model_options: dict, **entries) -> dict:
    """A shallow copy of model_options whose transformer_options carry extra entries."""
    mo = dict(model_options)
    to = dict(mo.get("transformer_options", {}))
    to.update(entries)
    mo["transformer_options"] = to
    return mo

"""DDIM inversion and the latent half of the memory bank."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

from .attention import KVBank
from .schedule import SPACES, DenoiseFn, inversion_step


@dataclass
class Inversion:
    """The inverted trajectory of one image.

    `latents[k]` is the VE-space latent at `sigmas_ascending[k]`: latents[0] is the encoded image at the
    schedule's last level (official: alpha_bar of timestep 0), latents[-1] the inverted noise x_T. Denoising step i (from sigmas[i] to sigmas[i+1] of the
    descending schedule) reads latents[steps - i], the guidance branch at the same noise level.
    Tensors live on the CPU (ComfyUI caches node outputs; a few hundred KB at 512^2).
    """

    latents: list[torch.Tensor]
    sigmas: torch.Tensor  # descending, ends with 0, length steps + 1
    model_key: str  # identifies the model the trajectory belongs to
    latent_shape: tuple[int, ...]
    extra: dict = field(default_factory=dict)
    kv_bank: Optional[KVBank] = None  # the memory bank's K/V recorded during the inversion (None: not recorded)
    space: str = "ve"  # "ve" (ComfyUI's eps/v models) or "flow" (CONST: flow matching), schedule.SPACES

    @property
    def steps(self) -> int:
        return len(self.sigmas) - 1

    @property
    def noise(self) -> torch.Tensor:
        return self.latents[-1]

    def reference(self, step: int) -> torch.Tensor:
        """Guidance-branch latent at the start of denoising step `step`."""
        return self.latents[self.steps - step]


def invert(
    denoise: DenoiseFn,
    x0: torch.Tensor,
    sigmas: torch.Tensor,
    on_step: Optional[Callable[[int, torch.Tensor], None]] = None,
    space: str = "ve",
    evaluate_at: str = "target",
) -> list[torch.Tensor]:
    """Run DDIM inversion of the clean latent x0 over a descending schedule; return all latents (VE space),
    the start first.

    The official inversion takes the encoded image as the latent at the schedule's last level (alpha_bar of
    timestep 0, not 1: diffusers' final_alpha_cumprod with set_alpha_to_one False), so its first step
    estimates x0 from it with that alpha_bar. Here that level is sigmas[-1]; the VE latent there is
    x0 / sqrt(alpha_bar). A schedule ending at 0 takes x0 as it is. In flow space (x = (1-sigma) x0 + sigma eps) the
    model's input is the latent itself, so the encoded image is the latent at the last level as it is.
    `on_step(k, x)` is called after each step (progress, interruption).
    """
    sp = SPACES[space]
    asc = [float(s) for s in torch.flip(sigmas, dims=[0])]
    x = x0 / sp.model_scale(asc[0]) if asc[0] > 0 else x0
    out = [x.detach().to("cpu", copy=True)]
    for k in range(len(asc) - 1):
        x = inversion_step(denoise, x, asc[k], asc[k + 1], evaluate_at=evaluate_at, space=sp)
        out.append(x.detach().to("cpu", copy=True))
        if on_step is not None:
            on_step(k, x)
    return out

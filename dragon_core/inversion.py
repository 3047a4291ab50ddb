"""DDIM inversion and the latent half of the memory bank."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

from .schedule import DenoiseFn, inversion_step


@dataclass
class Inversion:
    """The inverted trajectory of one image.

    `latents[k]` is the VE-space latent at `sigmas_ascending[k]`: latents[0] is the clean latent,
    latents[-1] the inverted noise x_T. Denoising step i (from sigmas[i] to sigmas[i+1] of the
    descending schedule) reads latents[steps - i], the guidance branch at the same noise level.
    Tensors live on the CPU (ComfyUI caches node outputs; a few hundred KB at 512^2).
    """

    latents: list[torch.Tensor]
    sigmas: torch.Tensor  # descending, ends with 0, length steps + 1
    model_key: str  # identifies the model the trajectory belongs to
    latent_shape: tuple[int, ...]
    extra: dict = field(default_factory=dict)

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
) -> list[torch.Tensor]:
    """Run DDIM inversion over a descending schedule ending in 0; return all latents, clean first.

    `on_step(k, x)` is called after each step (progress, interruption).
    """
    asc = [float(s) for s in torch.flip(sigmas, dims=[0])]
    if asc[0] != 0.0:
        raise ValueError("the schedule must end at sigma 0")
    x = x0
    out = [x0.detach().to("cpu", copy=True)]
    for k in range(len(asc) - 1):
        x = inversion_step(denoise, x, asc[k], asc[k + 1])
        out.append(x.detach().to("cpu", copy=True))
        if on_step is not None:
            on_step(k, x)
    return out

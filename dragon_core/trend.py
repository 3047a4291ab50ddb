"""The vacated place's colour trend, held to its surroundings' in the source image (an option beyond the
official method: Dragon Guidance Setup's vacated_trend)."""
from __future__ import annotations

from dataclasses import dataclass

import torch


def _design(idx: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """[len(idx), 3]: 1, x, y (in units of the grid's size) of flat latent-grid indices."""
    y = torch.div(idx, w, rounding_mode="floor").float() / h
    x = (idx % w).float() / w
    return torch.stack([torch.ones_like(x), x, y], -1)


@dataclass
class TrendFill:
    """After a step, shift `region` (flat latent-grid indices) so that the plane fitted per channel to its
    predicted clean latent becomes the plane fitted to the clean source latent on `ring`, extrapolated;
    what the model drew there beyond that plane (its detail) is kept.

    Why: the inpainting energy matches the vacated place to its surroundings only in UNet features, and the
    fill it draws is smooth but often lighter or darker than the image around it, with a faint outline of
    the old place (toy model, settings scenes 6-17 of move: vacated PSNR 26.3 -> 27.4 dB with a 6 px ring;
    README, Quality benchmark). A plane rather than a mean: the light falls across the hole on a gradient.
    In the VE latent the sampler steps, x = x0 + sigma * eps, so a shift of the prediction x0 is the same
    shift of x.
    """

    region: torch.Tensor
    ring: torch.Tensor
    hw: tuple[int, int]

    def __post_init__(self) -> None:
        h, w = self.hw
        self._design = _design(self.region.cpu(), h, w)  # [R, 3]
        # least squares through the pseudo-inverse: a region or ring on one row or column is rank-deficient;
        # the fitted values stay exact, and the extrapolation takes the minimum-norm plane
        self._fit = torch.linalg.pinv(self._design)  # [3, R]: region values -> plane coefficients
        self._ring_fit = torch.linalg.pinv(_design(self.ring.cpu(), h, w))  # [3, N]: ring values -> coefficients

    def target(self, clean: torch.Tensor) -> torch.Tensor:
        """[B, C, R]: the surroundings' plane over the region, from the clean source latent [B, C, h, w]."""
        ring = clean.flatten(2)[:, :, self.ring.to(clean.device)].float()
        return ring @ self._ring_fit.to(ring.device).T @ self._design.to(ring.device).T

    def plane(self, x0: torch.Tensor) -> torch.Tensor:
        """[B, C, R]: the plane fitted per channel to x0 [B, C, h, w] over the region, at the region's cells."""
        have = x0.flatten(2)[:, :, self.region.to(x0.device)].float()
        return have @ self._fit.to(have.device).T @ self._design.to(have.device).T

    def apply(self, x: torch.Tensor, x0: torch.Tensor, want: torch.Tensor) -> torch.Tensor:
        """x shifted so that x0's plane over the region is `want` (from `target`)."""
        idx = self.region.to(x.device)
        shift = want.to(x.device) - self.plane(x0)
        x = x.clone()
        x.flatten(2)[:, :, idx] += shift.to(x.dtype)
        return x

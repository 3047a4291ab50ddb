"""Acceptance checks of a toy model, in plain PyTorch: DDIM inversion, reconstruction and how
Gaussian the inverted noise is.

DragonDiffusion starts its edit from the inverted noise x_T and copies the object's part of it to
the target place. That only works when x_T looks like the noise the model was trained on: an
undertrained model inverts images to structured x_T (a checkerboard with the scene still visible),
and sampling from a copied patch of it falls apart. Reconstruction PSNR alone does not show this
(inversion is deterministic, so it reconstructs well either way), hence the noise statistics.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import model as toy_model
from . import scenes


def ddim_timesteps(steps: int) -> list[int]:
    """SD's DDIM timesteps for `steps` steps (steps_offset 1): 981, 961, ..., 1 for 50."""
    stride = toy_model.TIMESTEPS // steps
    return [int(t) for t in range(toy_model.TIMESTEPS - stride + 1, 0, -stride)]


def _eps(unet, x: torch.Tensor, t: int) -> torch.Tensor:
    ctx = torch.zeros(x.shape[0], 1, toy_model.CONTEXT_DIM, dtype=x.dtype)
    return unet(x, torch.full((x.shape[0],), float(t)), context=ctx).float()


@torch.no_grad()
def invert(unet, x0: torch.Tensor, steps: int = 50) -> torch.Tensor:
    """Deterministic DDIM inversion of clean images x0 in [-1, 1] to VP-space noise x_T."""
    abar = toy_model.alphas_cumprod().double()
    ts = ddim_timesteps(steps)[::-1]
    x, a_prev = x0.double(), 1.0
    for t in ts:
        eps = _eps(unet, x.float(), t).double()
        x0_hat = (x - math.sqrt(1 - a_prev) * eps) / math.sqrt(a_prev)
        a = float(abar[t])
        x = math.sqrt(a) * x0_hat + math.sqrt(1 - a) * eps
        a_prev = a
    return x.float()


@torch.no_grad()
def sample(unet, x_t: torch.Tensor, steps: int = 50) -> torch.Tensor:
    """Deterministic DDIM sampling from VP-space noise x_T to images in [-1, 1]."""
    abar = toy_model.alphas_cumprod().double()
    ts = ddim_timesteps(steps)
    x = x_t.double()
    for k, t in enumerate(ts):
        a = float(abar[t])
        a_next = float(abar[ts[k + 1]]) if k + 1 < len(ts) else 1.0
        eps = _eps(unet, x.float(), t).double()
        x0_hat = (x - math.sqrt(1 - a) * eps) / math.sqrt(a)
        x = math.sqrt(a_next) * x0_hat + math.sqrt(1 - a_next) * eps
    return x.float()


@dataclass
class NoiseStats:
    """How far inverted noise is from i.i.d. N(0, 1), per image, averaged."""
    std: float  # 1 for white noise
    neighbour_corr: float  # mean correlation of horizontally/vertically adjacent values: 0 for white noise
    checkerboard: float  # correlation with the (-1)^(x+y) pattern, per channel, absolute: 0 for white noise
    image_corr: float  # correlation with the clean image (mean-removed): 0 for white noise

    def gaussian_enough(self) -> bool:
        """Thresholds that 32x32x3 white noise passes with a wide margin (|corr| ~ 0.02)."""
        return 0.8 < self.std < 1.25 and abs(self.neighbour_corr) < 0.15 and self.checkerboard < 0.15 \
            and abs(self.image_corr) < 0.25


def _corr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a = a - a.mean()
    b = b - b.mean()
    return (a * b).sum() / (a.norm() * b.norm() + 1e-12)


def noise_stats(x_t: torch.Tensor, x0: torch.Tensor) -> NoiseStats:
    """Statistics of VP-space noise x_t [B, C, H, W] inverted from images x0 of the same shape."""
    rows = []
    h, w = x_t.shape[-2:]
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    board = ((xx + yy) % 2 * 2 - 1).float()
    for z, img in zip(x_t.float(), x0.float()):
        nb = 0.5 * (_corr(z[:, :, 1:], z[:, :, :-1]) + _corr(z[:, 1:, :], z[:, :-1, :]))
        cb = torch.stack([_corr(c, board).abs() for c in z]).mean()
        rows.append((float(z.std()), float(nb), float(cb), float(_corr(z, img))))
    n = len(rows)
    return NoiseStats(*(sum(r[k] for r in rows) / n for k in range(4)))


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR of images in [-1, 1], on the [0, 1] scale, averaged over the batch."""
    mse = (((a - b) / 2) ** 2).flatten(1).mean(1).clamp_min(1e-10)
    return float((-10 * torch.log10(mse)).mean())


def copy_test(unet, seeds: list[int], steps: int = 50) -> float:
    """Mean background PSNR (dB, vs the source, outside the object and its target) after DDIM
    inversion, the official start-noise copy of the object's noise to its target place, and plain
    DDIM sampling. A model that is stable under this copy keeps its background (high dB); an
    unstable one changes the whole image from a small change of x_T, and DragonDiffusion's move,
    which starts from exactly this copy, cannot keep the background on it."""
    out = []
    for seed in seeds:
        c = scenes.make_case("move", seed)
        x0 = c.source[None] * 2 - 1
        x_t = invert(unet, x0, steps)
        dx, dy = (int(round(v)) for v in c.offset)
        obj = c.object_mask.bool()
        tgt = torch.roll(obj, (dy, dx), (0, 1))
        moved = x_t.clone()
        moved[..., tgt] = torch.roll(x_t, (dy, dx), (2, 3))[..., tgt]
        edit = sample(unet, moved, steps)
        keep = ~(obj | tgt)
        mse = (((edit - x0) / 2) ** 2)[..., keep].mean().clamp_min(1e-10)
        out.append(float(-10 * torch.log10(mse)))
    return sum(out) / len(out)


@torch.no_grad()
def feature_similarity(unet, seeds: list[int], blocks: list[int], t: int = 501) -> dict[int, float]:
    """Per decoder output block: mean s_hat = (1 + cos) / 2 between the features of an object's
    pixels and of the background pixels it is moved onto, at timestep t. The move energy pulls the
    second toward the first; near 1 means the features barely tell object from background and the
    energy has little to pull with (white noise features would give about 0.5)."""
    feats: dict[int, torch.Tensor] = {}
    hooks = [unet.output_blocks[b][-1].register_forward_hook(
        lambda m, i, o, b=b: feats.__setitem__(b, o)) for b in blocks]
    abar = float(toy_model.alphas_cumprod()[t])
    sims: dict[int, list[float]] = {b: [] for b in blocks}
    try:
        for seed in seeds:
            c = scenes.make_case("move", seed)
            x0 = c.source[None] * 2 - 1
            noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
            _eps(unet, math.sqrt(abar) * x0 + math.sqrt(1 - abar) * noise, t)
            dx, dy = (int(round(v)) for v in c.offset)
            tgt = c.target_region.bool().flatten()
            src = torch.roll(c.target_region.bool(), (-dy, -dx), (0, 1)).flatten()
            for b in blocks:
                f = F.interpolate(feats[b].float(), size=x0.shape[-2:], mode="nearest")[0].flatten(1)
                cos = F.cosine_similarity(f[:, tgt], f[:, src], dim=0)
                sims[b].append(float(((1 + cos) / 2).mean()))
    finally:
        for h in hooks:
            h.remove()
    return {b: sum(v) / len(v) for b, v in sims.items()}


TEST_SEEDS = list(range(1000, 1008))  # the benchmark's test scenes (settings scenes are < 1000)


def report(unet, steps: int = 50, seeds: list[int] = TEST_SEEDS) -> dict:
    """The acceptance figures of a toy model, as one flat dict (logged by train_toy.py, printed by
    scripts/check_toy.py)."""
    unet.eval()
    x0 = torch.stack([scenes.make_case("move", s).source for s in seeds]) * 2 - 1
    x_t = invert(unet, x0, steps)
    stats = noise_stats(x_t, x0)
    sims = feature_similarity(unet, seeds, list(range(len(unet.output_blocks) - 1)))
    return {
        "reconstruction_psnr": round(psnr(sample(unet, x_t, steps), x0), 2),
        "noise_std": round(stats.std, 3), "noise_neighbour_corr": round(stats.neighbour_corr, 3),
        "noise_checkerboard": round(stats.checkerboard, 3), "noise_image_corr": round(stats.image_corr, 3),
        "noise_gaussian_enough": stats.gaussian_enough(),
        "copy_test_bg_psnr": round(copy_test(unet, seeds[:4], steps), 2),
        **{f"object_vs_background_similarity_block{b}": round(v, 3) for b, v in sims.items()},
    }

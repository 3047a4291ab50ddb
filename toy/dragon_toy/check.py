"""Acceptance checks of a toy model, in plain PyTorch: DDIM inversion, reconstruction and how
Gaussian the inverted noise is, and what its decoder features carry.

DragonDiffusion starts its edit from the inverted noise x_T and copies the object's part of it to
the target place. That only works when x_T looks like the noise the model was trained on: an
undertrained model inverts images to structured x_T (rings around the objects, a bright border,
the background's stripes), and sampling from a copied patch of it falls apart. Reconstruction PSNR
alone does not show this (inversion is deterministic, so it reconstructs well either way), hence
the noise statistics and the copy test.
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
    """The UNet's noise estimate at VP latent x and timestep t, whatever it predicts (its `prediction`)."""
    ctx = torch.zeros(x.shape[0], 1, toy_model.CONTEXT_DIM, dtype=x.dtype)
    out = unet(x, torch.full((x.shape[0],), float(t)), context=ctx).float()
    if getattr(unet, "prediction", "eps") == "v":  # v = sqrt(a)*eps - sqrt(1-a)*x0, x = sqrt(a)*x0 + sqrt(1-a)*eps
        a = float(toy_model.alphas_cumprod()[t])
        out = math.sqrt(a) * out + math.sqrt(1 - a) * x.float()
    return out


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
    """How far inverted noise is from i.i.d. N(0, 1), averaged over a batch of images.

    Inverted noise of an undertrained model carries the scene as high-frequency rings around the
    objects and a bright frame at the image border; those barely change the plain correlations
    (rings oscillate) but show in the tails (kurtosis), the border energy and the spectrum."""
    std: float  # 1 for white noise
    neighbour_corr: float  # correlation of horizontally/vertically adjacent values: 0 for white noise
    image_corr: float  # correlation with the clean image (mean-removed): 0 for white noise
    kurtosis: float  # 3 for Gaussian values; rings and spikes raise it
    border_ratio: float  # mean square within 2 px of the border / inside: 1 for white noise
    spectral_flatness: float  # geometric / arithmetic mean of the power spectrum: about 0.98 for white noise

    def gaussian_enough(self) -> bool:
        """Thresholds that 8 white-noise 32x32x3 images pass with a wide margin."""
        return (0.8 < self.std < 1.25 and abs(self.neighbour_corr) < 0.15 and abs(self.image_corr) < 0.25
                and self.kurtosis < 3.5 and self.border_ratio < 1.3 and self.spectral_flatness > 0.93)


def _corr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a = a - a.mean()
    b = b - b.mean()
    return (a * b).sum() / (a.norm() * b.norm() + 1e-12)


def noise_stats(x_t: torch.Tensor, x0: torch.Tensor) -> NoiseStats:
    """Statistics of VP-space noise x_t [B, C, H, W] inverted from images x0 of the same shape."""
    z = x_t.float()
    nb = sum(0.5 * float(_corr(a[:, :, 1:], a[:, :, :-1]) + _corr(a[:, 1:, :], a[:, :-1, :])) for a in z) / len(z)
    img = sum(float(_corr(a, b)) for a, b in zip(z, x0.float())) / len(z)
    u = (z - z.mean()) / z.std()
    h, w = z.shape[-2:]
    edge = torch.zeros(h, w, dtype=torch.bool)
    edge[:2] = edge[-2:] = True
    edge[:, :2] = edge[:, -2:] = True
    energy = z.pow(2).mean((0, 1))
    power = torch.fft.fft2(z - z.mean((-2, -1), keepdim=True)).abs().pow(2).mean((0, 1)).flatten()[1:]
    return NoiseStats(std=float(z.std()), neighbour_corr=nb, image_corr=img, kurtosis=float(u.pow(4).mean()),
                      border_ratio=float(energy[edge].mean() / energy[~edge].mean()),
                      spectral_flatness=float(power.clamp_min(1e-20).log().mean().exp() / power.mean()))


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


def _features(unet, x0: torch.Tensor, t: int, noise: torch.Tensor, blocks: list[int]) -> dict[int, torch.Tensor]:
    """Decoder features (the output of each block's last layer) of clean images x0 noised to t with `noise`."""
    feats: dict[int, torch.Tensor] = {}
    hooks = [unet.output_blocks[b][-1].register_forward_hook(
        lambda m, i, o, b=b: feats.__setitem__(b, o.float())) for b in blocks]
    abar = float(toy_model.alphas_cumprod()[t])
    try:
        _eps(unet, math.sqrt(abar) * x0 + math.sqrt(1 - abar) * noise, t)
    finally:
        for h in hooks:
            h.remove()
    return feats


def _on_grid(mask: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return F.interpolate(mask[None, None].float(), size=f.shape[-2:], mode="nearest")[0, 0].bool()


@torch.no_grad()
def feature_similarity(unet, seeds: list[int], blocks: list[int], t: int = 501) -> dict[int, float]:
    """Per decoder output block: mean s_hat = (1 + cos) / 2 between the features of an object's
    pixels and of the background pixels it is moved onto, at timestep t. The move energy pulls the
    second toward the first; near 1 means the features barely tell object from background and the
    energy has little to pull with (white noise features would give about 0.5)."""
    sims: dict[int, list[float]] = {b: [] for b in blocks}
    for seed in seeds:
        c = scenes.make_case("move", seed)
        x0 = c.source[None] * 2 - 1
        feats = _features(unet, x0, t, torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed)), blocks)
        dx, dy = (int(round(v)) for v in c.offset)
        tgt = c.target_region.bool().flatten()
        src = torch.roll(c.target_region.bool(), (-dy, -dx), (0, 1)).flatten()
        for b in blocks:
            f = F.interpolate(feats[b], size=x0.shape[-2:], mode="nearest")[0].flatten(1)
            cos = F.cosine_similarity(f[:, tgt], f[:, src], dim=0)
            sims[b].append(float(((1 + cos) / 2).mean()))
    return {b: sum(v) / len(v) for b, v in sims.items()}


COLOUR_SHIFT = (0.3, -0.2, 0.1)  # a large global colour change, in the model's [-1, 1] pixel space


@dataclass
class FeatureContent:
    """What a decoder block's features carry, on the background (outside the object), per block.

    The energies compare the edit's features with the inverted image's; they can only hold what the
    features see. All three use features standardised per channel by the clean image's own spatial
    mean and spread (so a large constant per channel cannot make everything look alike)."""
    mean_share: dict[int, float]  # share of the raw features' energy in their per-channel spatial mean
    noise_similarity: dict[int, float]  # s_hat between two noisings of the same image: near 1 = follows the scene
    colour_similarity: dict[int, float]  # s_hat between the image and its colour-shifted copy, same noise:
    # near 1 = blind to colour (the consistency energy cannot hold the background's colour)


@torch.no_grad()
def feature_content(unet, seeds: list[int], blocks: list[int], t: int = 501,
                    shift: tuple[float, float, float] = COLOUR_SHIFT) -> FeatureContent:
    def standardised(f: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        return (f - ref.mean((-2, -1), keepdim=True)) / (ref.std((-2, -1), keepdim=True) + 1e-6)

    def s_hat(a: torch.Tensor, b: torch.Tensor, keep: torch.Tensor) -> float:
        return float(((1 + F.cosine_similarity(a, b, dim=1)[0]) / 2)[keep].mean())

    acc: dict[str, dict[int, list[float]]] = {k: {b: [] for b in blocks} for k in ("mean", "noise", "colour")}
    for seed in seeds:
        c = scenes.make_case("move", seed)
        x0 = c.source[None] * 2 - 1
        n1 = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
        n2 = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed + 7919))
        f1 = _features(unet, x0, t, n1, blocks)
        f2 = _features(unet, x0, t, n2, blocks)
        f3 = _features(unet, x0 + torch.tensor(shift).view(1, 3, 1, 1), t, n1, blocks)
        for b in blocks:
            keep = ~_on_grid(c.object_mask, f1[b])
            mean = f1[b].mean((-2, -1), keepdim=True)
            acc["mean"][b].append(float(mean.pow(2).sum() * f1[b][0, 0].numel() / f1[b].pow(2).sum()))
            g1 = standardised(f1[b], f1[b])
            acc["noise"][b].append(s_hat(g1, standardised(f2[b], f1[b]), keep))
            acc["colour"][b].append(s_hat(g1, standardised(f3[b], f1[b]), keep))
    avg = {k: {b: sum(v) / len(v) for b, v in d.items()} for k, d in acc.items()}
    return FeatureContent(mean_share=avg["mean"], noise_similarity=avg["noise"], colour_similarity=avg["colour"])


TEST_SEEDS = list(range(1000, 1008))  # the benchmark's test scenes (settings scenes are < 1000)


def report(unet, steps: int = 50, seeds: list[int] = TEST_SEEDS) -> dict:
    """The acceptance figures of a toy model, as one flat dict (logged by train_toy.py, printed by
    scripts/check_toy.py)."""
    unet.eval()
    x0 = torch.stack([scenes.make_case("move", s).source for s in seeds]) * 2 - 1
    x_t = invert(unet, x0, steps)
    stats = noise_stats(x_t, x0)
    blocks = list(range(len(unet.output_blocks) - 1))
    sims = feature_similarity(unet, seeds, blocks)
    content = feature_content(unet, seeds[:4], blocks)
    return {
        "reconstruction_psnr": round(psnr(sample(unet, x_t, steps), x0), 2),
        **{f"noise_{k}": round(v, 3) for k, v in vars(stats).items()},
        "noise_gaussian_enough": stats.gaussian_enough(),
        "copy_test_bg_psnr": round(copy_test(unet, seeds[:4], steps), 2),
        **{f"object_vs_background_similarity_block{b}": round(v, 3) for b, v in sims.items()},
        **{f"feature_{k}_block{b}": round(v, 3) for k, d in vars(content).items() for b, v in d.items()},
    }

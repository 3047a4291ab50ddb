"""What an edit asks for: the guidance spec and the per-mode defaults of the official demo."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch

MODES = ("move", "resize", "drag", "remove", "paste", "appearance", "landmark")
KV_MODES = ("replace", "concat")
CROSS_IMAGE_MODES = ("paste", "appearance")  # need a second (reference) image and its inversion


@dataclass(frozen=True)
class ModeDefaults:
    """Defaults of the official demo (DiffEditor path). energy_scale is the effective step lambda*s_E."""

    energy_scale: float
    w_edit: float
    w_content: float
    w_contrast: float
    w_inpaint: float
    kv_mode: str
    cfg: float = 4.0
    sde_strength: float = 0.4


MODE_DEFAULTS = {
    "move": ModeDefaults(energy_scale=40.0, w_edit=4.0, w_content=6.0, w_contrast=0.2, w_inpaint=0.8, kv_mode="replace"),
    "resize": ModeDefaults(energy_scale=40.0, w_edit=4.0, w_content=6.0, w_contrast=0.2, w_inpaint=0.8, kv_mode="replace"),
    "drag": ModeDefaults(energy_scale=80.0, w_edit=4.0, w_content=6.0, w_contrast=0.0, w_inpaint=0.2, kv_mode="concat"),
    # Removal has no official demo: the move energy's vacated-area terms (contrast pushes the object's look
    # away, inpaint pulls the area toward its surroundings) with the official move weights, K/V from the
    # background only. On the toy benchmark model a stronger contrast term (1.0) made the filled area worse.
    "remove": ModeDefaults(energy_scale=40.0, w_edit=0.0, w_content=6.0, w_contrast=0.2, w_inpaint=0.8,
                           kv_mode="replace"),
    "paste": ModeDefaults(energy_scale=60.0, w_edit=4.0, w_content=6.0, w_contrast=0.0, w_inpaint=0.0, kv_mode="replace"),
    "appearance": ModeDefaults(energy_scale=80.0, w_edit=3.5, w_content=5.0, w_contrast=0.0, w_inpaint=0.0,
                               kv_mode="replace", cfg=5.0),
    # official face mode: edit term only, global gradient, global SDE eta 0.2, K/V concatenated
    "landmark": ModeDefaults(energy_scale=120.0, w_edit=12.0, w_content=0.0, w_contrast=0.0, w_inpaint=0.0,
                             kv_mode="concat", sde_strength=0.2),
}
# Cross-image modes and removal inject K/V from chosen regions only ("masked two-source" K/V): the
# patch's replace/concat then acts on that selection.
MASKED_KV_MODES = ("remove", "paste", "appearance")


@dataclass(frozen=True)
class PointPair:
    """A handle and where it should go, in image pixels (x right, y down)."""

    handle: tuple[float, float]
    target: tuple[float, float]


@dataclass(frozen=True)
class DragPoints:
    pairs: tuple[PointPair, ...]
    width: int
    height: int


@dataclass
class GuidanceSpec:
    """Everything the Dragon Sampler needs besides the model, prompts and inversion.

    Geometry is kept in image pixels; it is mapped to the feature grid (1/4 of the image) and the
    latent grid (1/8) only when the sampler knows the latent size, by one function, so the masks
    and the initial-latent copy can never disagree (the official move/paste offset bug).
    """

    mode: str
    width: int
    height: int
    object_mask: Optional[torch.Tensor] = None  # [H, W] float in [0, 1]; drag: the editable region
    reference_region: Optional[torch.Tensor] = None  # move/remove: what the vacated area should look like
    reference_mask: Optional[torch.Tensor] = None  # paste/appearance: the object in the reference image
    reference_inversion: Optional[object] = None  # paste/appearance: the reference image's Inversion
    pairs: tuple[PointPair, ...] = ()
    offset: tuple[float, float] = (0.0, 0.0)
    scale: float = 1.0
    energy_scale: float = 40.0
    w_edit: float = 4.0
    w_content: float = 6.0
    w_contrast: float = 0.2
    w_inpaint: float = 0.8
    schedule: str = "diffeditor"
    guidance_start: float = 0.0
    guidance_end: float = 0.6
    sde_strength: float = 0.4
    time_travel: int = 3
    kv_mode: str = "replace"
    # image pixels around the edit region beyond which every step keeps the original image's latent; -1: off
    keep_background: int = -1
    # move/resize/remove: start the vacated place from its surroundings' mean start noise plus this share of
    # fresh noise of their spread; -1: the mode's default (move/resize: the object's inverted noise, as the
    # official code; remove: fresh noise of the image's spread)
    vacated_noise: float = -1.0
    # move/resize/paste: after each step before this fraction of the steps, the object's target place takes
    # the guidance branch's latent of the object (warped); 0: off (the official code copies the start noise only)
    anchor_end: float = 0.0
    # move/resize/remove: after every step the vacated place's predicted image takes the colour trend (a plane
    # per channel) of the source image in a ring this many image pixels wide around the object; -1: off
    vacated_trend: int = -1
    # opt-ins that change the official energies (README, Where we differ): s_hat with MONOTONE_GAIN in the move
    # terms (official: raw cosine); the vacated place's inpaint reference a ring around the object (official:
    # the whole rest of the image); cross-image terms on mean-free features (official: raw features)
    monotone_energy: bool = False
    ring_inpaint: bool = False
    centred_features: bool = False
    extra: dict = field(default_factory=dict)

    @classmethod
    def for_mode(cls, mode: str, width: int, height: int, **kw) -> "GuidanceSpec":
        """A spec with the mode's official defaults (energy scale, weights, K/V mode), `kw` on top."""
        d = MODE_DEFAULTS[mode]
        base = dict(energy_scale=d.energy_scale, w_edit=d.w_edit, w_content=d.w_content, w_contrast=d.w_contrast,
                    w_inpaint=d.w_inpaint, kv_mode=d.kv_mode)
        return cls(mode=mode, width=width, height=height, **{**base, **kw})

"""Masks and correspondences of an edit on the feature grid (1/4 image) and latent grid (1/8).

All geometry starts from image pixels. A grid cell (j, i) of a grid with cell size s pixels covers
the pixel centre ((i + 0.5) s, (j + 0.5) s). Every mapping to a grid goes through `cell_of`, so the
feature masks and the latent copy agree by construction.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .errors import DragonInputError
from .spec import GuidanceSpec, PointPair

NODE = "Dragon Sampler"
SETUP = "Dragon Guidance Setup"


def resize_mask(mask: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Binary mask on an h x w grid: a cell is in when more than half of its area is."""
    m = mask.float()[None, None]
    return (F.interpolate(m, size=(h, w), mode="area")[0, 0] > 0.5)


def cell_of(x: float, y: float, cell_w: float, cell_h: float, gh: int, gw: int, margin: int = 0) -> tuple[int, int]:
    """(row, col) of the grid cell holding pixel (x, y), clamped `margin` cells inside the border.

    Columns are clamped with the grid width and rows with its height (the official drag code
    clamped both with the height, which broke non-square images).
    """
    col = min(max(int(x // cell_w), margin), gw - 1 - margin)
    row = min(max(int(y // cell_h), margin), gh - 1 - margin)
    return row, col


def patch(row: int, col: int, gh: int, gw: int, radius: int = 1) -> torch.Tensor:
    """Flat indices of the (2r+1)^2 patch around a cell, raster order (the cell is kept inside)."""
    rr = torch.arange(row - radius, row + radius + 1).clamp(0, gh - 1)
    cc = torch.arange(col - radius, col + radius + 1).clamp(0, gw - 1)
    return (rr[:, None] * gw + cc[None, :]).flatten()


@dataclass
class Warp:
    """Target cells of a similarity transform of the object and the source cell of each."""

    target: torch.Tensor  # bool [gh, gw]
    source_index: torch.Tensor  # long [n_target]: flat source cell for each target cell (raster order)


def object_warp(spec: GuidanceSpec, gh: int, gw: int, mask: torch.Tensor | None = None) -> Warp:
    """Scale the object about its bounding-box centre by spec.scale, then shift by spec.offset.

    Target cells whose source falls outside the image or outside the object are dropped, so an
    object scaled past the border is clipped instead of failing (the official 'Resize out of
    bounds' error); an edit that leaves nothing of the object in the image is an error.
    `mask` (default: spec.object_mask) is the object; paste passes the reference image's mask, so
    the pasted object and its source cells live in one pixel coordinate system (the official paste
    scaled the image about its centre but offset the mask in unscaled units, issue #18).
    """
    mask = spec.object_mask if mask is None else mask
    cell = spec.width / gw
    ys, xs = torch.nonzero(mask > 0.5, as_tuple=True)
    cx = (float(xs.min()) + float(xs.max()) + 1) / 2
    cy = (float(ys.min()) + float(ys.max()) + 1) / 2
    r = spec.scale
    dx, dy = spec.offset
    jj, ii = torch.meshgrid(torch.arange(gh, dtype=torch.float64), torch.arange(gw, dtype=torch.float64), indexing="ij")
    px, py = (ii + 0.5) * cell, (jj + 0.5) * (spec.height / gh)
    sx, sy = cx + (px - cx - dx) / r, cy + (py - cy - dy) / r  # inverse transform: source pixel
    inside = (sx >= 0) & (sx < spec.width) & (sy >= 0) & (sy < spec.height)
    obj = resize_mask(mask, gh, gw)
    col = (sx / cell).floor().long().clamp(0, gw - 1)
    row = (sy / (spec.height / gh)).floor().long().clamp(0, gh - 1)
    src = row * gw + col
    target = inside & obj.flatten()[src.flatten()].view(gh, gw)
    if not bool(target.any()):
        if not bool(obj.any()):
            raise DragonInputError(SETUP, "reference_mask" if mask is not spec.object_mask else "object_mask",
                                   f"the object is too small: it covers no cell of the feature grid ({cell:g} image "
                                   "pixels a cell; a cell counts when more than half of it is masked).",
                                   "Paint a larger object.")
        bw, bh = float(xs.max()) - float(xs.min()) + 1, float(ys.max()) - float(ys.min()) + 1
        if r * min(bw, bh) < 2 * cell:
            raise DragonInputError(SETUP, "scale", f"{r:g} shrinks the object ({bw:g}x{bh:g} pixels) below the "
                                   f"feature grid's cells ({cell:g} image pixels): nothing of it would be left.",
                                   f"Use a larger scale (at least {2 * cell / min(bw, bh):.2f} for this object).")
        raise DragonInputError(SETUP, "offset_x/offset_y", f"({dx:g}, {dy:g}) moves the object entirely out of the "
                               f"{spec.width}x{spec.height} image.", "Use a smaller offset.")
    return Warp(target=target, source_index=src[target])


def drag_region(spec: GuidanceSpec, gh: int, gw: int) -> torch.Tensor:
    """The editable region on a grid: the given mask, or, without one, capsules around each drag.

    Without a mask (the official code crashed) each handle->target segment gets a capsule of radius
    max(3 cells, half the drag length), so the dragged content and its path may change and the rest
    of the image is held by the consistency energy.
    """
    if spec.object_mask is not None:
        return resize_mask(spec.object_mask, gh, gw)
    cell_x, cell_y = spec.width / gw, spec.height / gh
    jj, ii = torch.meshgrid(torch.arange(gh, dtype=torch.float64) + 0.5, torch.arange(gw, dtype=torch.float64) + 0.5,
                            indexing="ij")
    region = torch.zeros(gh, gw, dtype=torch.bool)
    for pr in spec.pairs:
        ax, ay = pr.handle[0] / cell_x, pr.handle[1] / cell_y
        bx, by = pr.target[0] / cell_x, pr.target[1] / cell_y
        vx, vy = bx - ax, by - ay
        length2 = vx * vx + vy * vy
        t = ((ii - ax) * vx + (jj - ay) * vy) / length2 if length2 > 0 else torch.zeros_like(ii)
        t = t.clamp(0, 1)
        d2 = (ii - ax - t * vx) ** 2 + (jj - ay - t * vy) ** 2
        radius = max(3.0, 0.5 * length2**0.5)
        region |= d2 <= radius**2
    return region


def pair_patches(pairs: tuple[PointPair, ...], cell_w: float, cell_h: float, gh: int, gw: int, radius: int = 1):
    """(handle patch, target patch) flat indices for each pair: (2r+1)^2 cells (the official 3x3 at radius 1), kept
    inside the grid."""
    out = []
    for pr in pairs:
        hr, hc = cell_of(*pr.handle, cell_w, cell_h, gh, gw, margin=radius)
        tr, tc = cell_of(*pr.target, cell_w, cell_h, gh, gw, margin=radius)
        out.append((patch(hr, hc, gh, gw, radius), patch(tr, tc, gh, gw, radius)))
    return out


def downsample_any(mask: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Bool mask on a coarser grid: a coarse cell is in when any fine cell in it is."""
    return F.adaptive_max_pool2d(mask.float()[None, None], (h, w))[0, 0] > 0


def surroundings(mask: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """The ring of cells around `mask` (bool, feature grid), kept to `allowed`: where a vacated area
    takes its look from when the user paints no reference region.

    The ring is a fifth of the object's size wide (sqrt of its cell count; at least 2 cells). The
    official code averages the whole rest of the image instead, which pulls the fill toward the
    image's mean look (on a gradient background, a colour the object's place never had). Falls back
    to all of `allowed` when the ring leaves none of it.
    """
    return ring_around(mask, allowed, max(2, round(0.2 * float(mask.sum()) ** 0.5)))


def ring_around(mask: torch.Tensor, allowed: torch.Tensor, cells: int) -> torch.Tensor:
    """The cells of `allowed` within `cells` of `mask` (bool grids); all of `allowed` when none is."""
    grown = F.max_pool2d(mask.float()[None, None], 2 * cells + 1, 1, cells)[0, 0] > 0.5
    ring = grown & allowed
    return ring if bool(ring.any()) else allowed


def keep_mask(edit_region: torch.Tensor, cells: int) -> torch.Tensor:
    """Where the sampler keeps the original image's latent: outside `edit_region` ([1, 1, h, w] float,
    latent grid) grown by `cells`, with a one-cell soft edge so the kept and edited parts blend."""
    grown = F.max_pool2d(edit_region.float(), 2 * cells + 1, 1, cells) if cells > 0 else edit_region.float()
    soft = F.avg_pool2d(grown, 3, 1, 1, count_include_pad=False)
    return 1 - torch.maximum(grown, soft).clamp(0, 1)


TOKEN_RULES = ("whole", "area", "nearest")


def token_mask(mask: torch.Tensor, h: int, w: int, rule: str) -> torch.Tensor:
    """A region on an attention layer's (h, w) token grid, flattened (raster order).

    "nearest" (the official masked K/V injection): the region's mask sampled at each token's top-left pixel
    (F.interpolate's nearest mode, what the official attention processor does with the full-resolution masks);
    `mask` is then the image-pixel mask. The other rules take a latent-grid mask (removal's own K/V choice):
    "whole" keeps only tokens wholly inside the region (to leave an object out: no token that touches it
    survives); "area" keeps tokens more than half inside, or, if that leaves none, any token touching it (a
    small object still has tokens on the coarse layers).
    """
    if rule not in TOKEN_RULES:
        raise ValueError(f"unknown token rule {rule!r}; expected one of {TOKEN_RULES}")
    m = mask.float()[None, None]
    if rule == "nearest":
        return (F.interpolate(m, size=(h, w), mode="nearest")[0, 0] > 0.5).flatten()
    if rule == "whole":
        out = -F.adaptive_max_pool2d(-m, (h, w))[0, 0] > 0.5
        if not bool(out.any()):
            out = F.interpolate(m, size=(h, w), mode="area")[0, 0] > 0.5
    else:
        out = F.interpolate(m, size=(h, w), mode="area")[0, 0] > 0.5
        if not bool(out.any()):
            out = F.adaptive_max_pool2d(m, (h, w))[0, 0] > 0
    return out.flatten()

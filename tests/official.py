"""The official DragonDiffusion/DiffEditor energies, written from the method spec
(shared/design/dragondiffusion.md §2-3): features as full [C, gh, gw] maps on the H/4 grid, masks as boolean
maps there built with the official nearest sampling (the top-left pixel of each 4x4 cell), cells paired in
raster order of equally sized masks, the official per-stage weights. Used by tests/test_faithful.py and
scripts/bench_faithful.py; independent of dragon_core.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def grid_mask(mask_px: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Official mask on the feature grid: F.interpolate (nearest) of the pixel mask, > 0.5."""
    return F.interpolate(mask_px[None, None].double(), size=grid)[0, 0] > 0.5


def cos_cells(a, b):  # [C, n] x [C, n] -> [n]
    return F.cosine_similarity(a, b, dim=0, eps=1e-6)


def select(f, m):  # [C, gh, gw], bool [gh, gw] -> [C, n] in raster order
    return f[:, m]


def s_hat_cells(a, b):
    return (1 + cos_cells(a, b)) / 2


def official_move(gen, ref, *, mask_px, dx, dy, w_edit, w_content, w_contrast, w_inpaint, ref_px=None):
    """§3.1: raw cosine in the edit and content terms, 0.5 per stage; contrast s_hat, 0.5 per stage;
    inpaint s_hat of the mean features, weight 1 per stage; inpaint reference: the painted region, else
    everything outside the object's old and new places."""
    grid = tuple(gen[0].shape[-2:])
    org = grid_mask(mask_px, grid)
    cur = torch.roll(org, (dy // 4, dx // 4), (0, 1))
    other = ~(cur | org)
    non_overlap = org & ~cur
    inpaint_ref = grid_mask(ref_px, grid) if ref_px is not None else other
    e_edit = e_cons = 0
    for fg, fr in zip(gen, ref):
        e_edit = e_edit + 0.5 * w_edit / (1 + 4 * cos_cells(select(fg, cur), select(fr, org)).mean())
        e_cons = e_cons + 0.5 * w_content / (1 + 4 * cos_cells(select(fr, other), select(fg, other)).mean())
        e_cons = e_cons + 0.5 * w_contrast * s_hat_cells(select(fg, non_overlap), select(fr, non_overlap)).mean()
        g_mean = select(fg, non_overlap).mean(1, keepdim=True)
        r_mean = select(fr, inpaint_ref).mean(1, keepdim=True)
        e_cons = e_cons + w_inpaint / (1 + 4 * s_hat_cells(g_mean, r_mean).mean())
    return e_edit, e_cons


def patch3(y, x, grid):
    """Official 3x3 drag patch around pixel (x, y) on the feature grid, clipped one cell inside."""
    m = torch.zeros(grid, dtype=torch.bool)
    yc = min(max(y // 4, 1), grid[0] - 2)
    xc = min(max(x // 4, 1), grid[1] - 2)
    m[yc - 1:yc + 2, xc - 1:xc + 2] = True
    return m


def official_drag(gen, ref, *, pairs, mask_px, w_edit, w_content, w_inpaint):
    """§3.2: s_hat everywhere; per pair the target patch pulled to the handle patch and the handle patch
    (minus the overlap) pushed off its old content; averaged over stages and pairs; consistency outside
    the editable mask, averaged over stages."""
    grid = tuple(gen[0].shape[-2:])
    other = ~grid_mask(mask_px, grid)
    e_edit = e_cons = 0
    for fg, fr in zip(gen, ref):
        for (hx, hy), (tx, ty) in pairs:
            tar, cur = patch3(hy, hx, grid), patch3(ty, tx, grid)
            e_edit = e_edit + w_edit / (1 + 4 * s_hat_cells(select(fg, cur), select(fr, tar)).mean())
            non_overlap = tar & ~cur
            e_edit = e_edit + w_inpaint * s_hat_cells(select(fg, non_overlap), select(fr, non_overlap)).mean()
        e_cons = e_cons + w_content / (1 + 4 * s_hat_cells(select(fr, other), select(fg, other)).mean())
    return e_edit / len(gen) / len(pairs), e_cons / len(gen)


def official_landmark(gen, ref, *, pairs, w_edit):
    """§3.3: the drag edit term without the vacating term; no consistency term."""
    grid = tuple(gen[0].shape[-2:])
    e_edit = 0
    for fg, fr in zip(gen, ref):
        for (hx, hy), (tx, ty) in pairs:
            e_edit = e_edit + w_edit / (1 + 4 * s_hat_cells(select(fg, patch3(ty, tx, grid)),
                                                      select(fr, patch3(hy, hx, grid))).mean())
    return e_edit / len(gen) / len(pairs), torch.zeros(())


def official_appearance(gen, ref, ref2, *, base_px, rep_px, w_edit, w_content):
    """§3.4: raw features; the base object's mean feature pulled to the reference object's; consistency
    outside the base object pixel by pixel; summed over stages."""
    grid = tuple(gen[0].shape[-2:])
    base, rep = grid_mask(base_px, grid), grid_mask(rep_px, grid)
    e_edit = e_cons = 0
    for fg, fr, fr2 in zip(gen, ref, ref2):
        e_cons = e_cons + w_content / (1 + 4 * s_hat_cells(select(fg, ~base), select(fr, ~base)).mean())
        g_mean = select(fg, base).mean(1, keepdim=True)
        r_mean = select(fr2, rep).mean(1, keepdim=True)
        e_edit = e_edit + w_edit / (1 + 4 * s_hat_cells(g_mean, r_mean).mean())
    return e_edit, e_cons


def official_paste(gen, ref, ref2, *, obj_px, dx, dy, w_edit, w_content):
    """§3.5 at scale 1: the target = the reference object's mask shifted; each target cell pulled to its
    source cell of the reference image (raster pairing); summed over stages."""
    cur = grid_mask(torch.roll(obj_px, (dy, dx), (0, 1)), tuple(gen[0].shape[-2:]))
    src = torch.roll(cur, (-(dy // 4), -(dx // 4)), (0, 1))
    e_edit = e_cons = 0
    for fg, fr, fr2 in zip(gen, ref, ref2):
        e_cons = e_cons + w_content / (1 + 4 * s_hat_cells(select(fg, ~cur), select(fr, ~cur)).mean())
        e_edit = e_edit + w_edit / (1 + 4 * s_hat_cells(select(fg, cur), select(fr2, src)).mean())
    return e_edit, e_cons

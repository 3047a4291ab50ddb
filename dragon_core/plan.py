"""An edit made concrete for one latent size: energy, gradient mask, SDE mask and start latent."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .energy import Feats, drag_energy, move_energy
from .errors import DragonInputError
from .geometry import cell_of, downsample_any, drag_region, object_warp, pair_patches, resize_mask, patch
from .spec import GuidanceSpec

EnergyFn = Callable[[Feats, Feats], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class EditPlan:
    energy: EnergyFn
    grad_mask: torch.Tensor  # [1, 1, h, w] float: where the edit gradient applies (1) vs consistency (0)
    sde_mask: torch.Tensor  # [1, 1, h, w] float: where regional SDE noise is injected
    feature_hw: tuple[int, int]
    initial: Callable[[torch.Tensor], torch.Tensor]  # x_T -> start latent
    # for tests and previews
    target_cells: torch.Tensor  # bool [gh, gw]


def _flat(mask: torch.Tensor) -> torch.Tensor:
    return torch.nonzero(mask.flatten(), as_tuple=True)[0]


def build_plan(spec: GuidanceSpec, latent_hw: tuple[int, int], device: torch.device) -> EditPlan:
    """Map the spec onto the latent of size (h, w): feature grid (2h, 2w), latent grid (h, w)."""
    h, w = latent_hw
    gh, gw = 2 * h, 2 * w
    if spec.mode in ("move", "resize"):
        return _move_plan(spec, h, w, gh, gw, device)
    if spec.mode == "drag":
        return _drag_plan(spec, h, w, gh, gw, device)
    raise DragonInputError("Dragon Sampler", "guidance", f"unknown mode {spec.mode!r}.")


def _move_plan(spec, h, w, gh, gw, device) -> EditPlan:
    warp = object_warp(spec, gh, gw)
    org = resize_mask(spec.object_mask, gh, gw)
    cur = warp.target
    other = ~(cur | org)
    vacated = org & ~cur
    if spec.reference_region is not None:
        ref_region = resize_mask(spec.reference_region, gh, gw) & ~org
        if not bool(ref_region.any()):
            raise DragonInputError("Dragon Guidance Setup", "reference_region",
                                   "covers no pixels outside the object.", "Paint an area beside the object.")
    else:
        ref_region = other
    idx = {k: _flat(v).to(device) for k, v in dict(target=cur, other=other, vacated=vacated, ref=ref_region).items()}
    source = warp.source_index.to(device)
    weights = dict(w_edit=spec.w_edit, w_content=spec.w_content, w_contrast=spec.w_contrast, w_inpaint=spec.w_inpaint)

    def energy(gen: Feats, ref: Feats):
        return move_energy(gen, ref, target=idx["target"], source=source, other=idx["other"],
                           vacated=idx["vacated"], inpaint_ref=idx["ref"], **weights)

    grad_mask = downsample_any(cur, h, w).float()[None, None].to(device)
    sde_mask = downsample_any(cur | org, h, w).float()[None, None].to(device)
    # the start latent: the object's inverted noise copied into its target footprint, same transform
    lat_warp = object_warp(spec, h, w)
    lat_target, lat_source = lat_warp.target.to(device), lat_warp.source_index.to(device)

    def initial(x_t: torch.Tensor) -> torch.Tensor:
        x = x_t.clone()
        flat_src = x_t.flatten(2)[:, :, lat_source]
        x.flatten(2)[:, :, _flat(lat_target)] = flat_src
        return x

    return EditPlan(energy=energy, grad_mask=grad_mask, sde_mask=sde_mask, feature_hw=(gh, gw),
                    initial=initial, target_cells=cur)


def _drag_plan(spec, h, w, gh, gw, device) -> EditPlan:
    if not spec.pairs:
        raise DragonInputError("Dragon Guidance Setup", "points", "drag mode needs at least one handle->target pair.",
                               "Click a handle and then its target in the Mask/Point Editor.")
    region = drag_region(spec, gh, gw)
    if not bool(region.any()):
        raise DragonInputError("Dragon Guidance Setup", "object_mask", "the editable region is empty.",
                               "Paint the area that may change, or leave the mask unconnected.")
    cw, ch = spec.width / gw, spec.height / gh
    patches = [(a.to(device), b.to(device)) for a, b in pair_patches(spec.pairs, cw, ch, gh, gw)]
    outside = _flat(~region).to(device)
    weights = dict(w_edit=spec.w_edit, w_content=spec.w_content, w_inpaint=spec.w_inpaint)

    def energy(gen: Feats, ref: Feats):
        return drag_energy(gen, ref, patches=patches, outside=outside, **weights)

    lat_region = downsample_any(region, h, w).float()[None, None].to(device)
    # start latent: each handle's 3x3 latent patch copied to its target (in pair order)
    lcw, lch = spec.width / w, spec.height / h
    lat_pairs = []
    for pr in spec.pairs:
        hr, hc = cell_of(*pr.handle, lcw, lch, h, w, margin=1)
        tr, tc = cell_of(*pr.target, lcw, lch, h, w, margin=1)
        lat_pairs.append((patch(hr, hc, h, w).to(device), patch(tr, tc, h, w).to(device)))

    def initial(x_t: torch.Tensor) -> torch.Tensor:
        x = x_t.clone()
        for src, dst in lat_pairs:
            x.flatten(2)[:, :, dst] = x_t.flatten(2)[:, :, src]
        return x

    target_cells = torch.zeros(gh * gw, dtype=torch.bool)
    for _, t in patches:
        target_cells[t.cpu()] = True
    return EditPlan(energy=energy, grad_mask=lat_region, sde_mask=lat_region, feature_hw=(gh, gw),
                    initial=initial, target_cells=target_cells.view(gh, gw))

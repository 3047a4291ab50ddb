"""An edit made concrete for one latent size: energy, gradient mask, SDE mask and start latent."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from .energy import (Feats, appearance_energy, drag_energy, landmark_energy, move_energy, paste_energy,
                     remove_energy)
from .errors import DragonInputError
from .geometry import (cell_of, downsample_any, drag_region, keep_mask, object_warp, pair_patches, patch,
                       resize_mask, ring_around, surroundings, token_mask)
from .inversion import Inversion
from .spec import GuidanceSpec
from .trend import TrendFill

SETUP = "Dragon Guidance Setup"
# (batch item of the reference pass, region, geometry.token_mask rule) -> which K/V tokens a masked injection
# reads; the region is an image-pixel mask for the rule "nearest", else a latent-grid mask
KVSource = tuple[int, torch.Tensor, str]

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
    # cross-image modes: the reference image's inversion; its latent runs as batch item 1 of the
    # reference pass and its features reach `energy` appended to the base image's (ref[n:])
    second: Optional[Inversion] = None
    # masked two-source K/V: (k, v, extra_options) of the reference pass -> the [1, n', C] tokens to inject
    kv_select: Optional[Callable] = None
    # [1, 1, h, w] float: where each step takes the original image's latent instead of the generated one
    keep: Optional[torch.Tensor] = None
    # move/resize/paste: the object's latent cells, copied from the guidance branch to the target after early steps
    anchor: Optional["LatentCopy"] = None
    # move/resize/remove: the vacated place's colour trend, held to its surroundings' in the source image
    trend: Optional[TrendFill] = None


@dataclass
class LatentCopy:
    """Latent-grid cells of a guidance-branch latent copied into the edit: target[k] <- source[k] (flat
    indices), from the base image's branch or (paste) the reference image's."""

    target: torch.Tensor
    source: torch.Tensor
    second: bool = False

    def apply(self, x: torch.Tensor, base: torch.Tensor, reference: Optional[torch.Tensor]) -> torch.Tensor:
        src = reference if self.second else base
        x = x.clone()
        x.flatten(2)[:, :, self.target] = src.to(x).flatten(2)[:, :, self.source]
        return x


def _interior(copy: LatentCopy, h: int, w: int) -> LatentCopy:
    """The cells of a copy whose 3x3 neighbourhood lies inside its target (all of it if none does).

    Why (paste): the edge cells of the pasted object also hold the *reference* image's background around it,
    and an anchor on them drew a ring of that colour around the pasted object. Left free, they are blended
    by the edit like the rest (toy settings scenes 6-13: full PSNR 24.7 -> 27.0 dB, IoU 0.90 -> 0.89). Move
    keeps them: there they hold the image's own background (vacated 26.3 -> 26.1 dB when eroded).
    """
    m = torch.zeros(h * w, device=copy.target.device)
    m[copy.target] = 1
    inner = -F.max_pool2d(-m.view(1, 1, h, w), 3, 1, 1).flatten()[copy.target] > 0.5
    if not bool(inner.any()):
        return copy
    return LatentCopy(copy.target[inner], copy.source[inner], copy.second)


def _flat(mask: torch.Tensor) -> torch.Tensor:
    return torch.nonzero(mask.flatten(), as_tuple=True)[0]


def build_plan(spec: GuidanceSpec, latent_hw: tuple[int, int], device: torch.device,
               feature_hw: tuple[int, int] | None = None, patch_radius: int = 1) -> EditPlan:
    """Map the spec onto the latent of size (h, w): feature grid `feature_hw` (default (2h, 2w), the UNets'; a DiT's
    is its image-token grid), latent grid (h, w). patch_radius: drag's feature patch around each point, in feature
    cells (the official 3x3: 1; DiTs use region patches, see nodes/dit.py)."""
    plan = _mode_plan(spec, latent_hw, device, feature_hw, patch_radius)
    if spec.keep_background >= 0:
        # the edit region is where the regional SDE noise may act: the object's old and new places (move,
        # resize), the editable region (drag), the object (remove, appearance, paste's target)
        h, w = latent_hw
        cells = math.ceil(spec.keep_background * max(h / spec.height, w / spec.width) - 1e-6)
        plan.keep = keep_mask(plan.sde_mask, cells)
    return plan


def _mode_plan(spec: GuidanceSpec, latent_hw: tuple[int, int], device: torch.device,
               feature_hw: tuple[int, int] | None = None, patch_radius: int = 1) -> EditPlan:
    h, w = latent_hw
    gh, gw = feature_hw if feature_hw is not None else (2 * h, 2 * w)
    if spec.mode in ("move", "resize"):
        return _move_plan(spec, h, w, gh, gw, device)
    if spec.mode == "drag":
        return _drag_plan(spec, h, w, gh, gw, device, patch_radius)
    if spec.mode == "remove":
        return _remove_plan(spec, h, w, gh, gw, device)
    if spec.mode == "paste":
        return _paste_plan(spec, h, w, gh, gw, device)
    if spec.mode == "appearance":
        return _appearance_plan(spec, h, w, gh, gw, device)
    if spec.mode == "landmark":
        return _landmark_plan(spec, h, w, gh, gw, device)
    raise DragonInputError("Dragon Sampler", "guidance", f"unknown mode {spec.mode!r}.",
                           "Connect a Dragon Guidance Setup of this version of the pack and queue again.")


def _move_plan(spec, h, w, gh, gw, device) -> EditPlan:
    warp = object_warp(spec, gh, gw)
    org = resize_mask(spec.object_mask, gh, gw)
    cur = warp.target
    other = ~(cur | org)
    vacated = org & ~cur
    if spec.reference_region is not None:  # official: the painted region as it is
        ref_region = resize_mask(spec.reference_region, gh, gw)
        if not bool((ref_region & ~org).any()):
            raise DragonInputError("Dragon Guidance Setup", "reference_region",
                                   "covers no pixels outside the object.", "Paint an area beside the object.")
    elif spec.ring_inpaint:  # opt-in: the object's surroundings
        ref_region = surroundings(org, other)
    else:  # official: the whole rest of the image
        ref_region = other
    idx = {k: _flat(v).to(device) for k, v in dict(target=cur, other=other, vacated=vacated, ref=ref_region).items()}
    source = warp.source_index.to(device)
    weights = dict(w_edit=spec.w_edit, w_content=spec.w_content, w_contrast=spec.w_contrast, w_inpaint=spec.w_inpaint,
                   monotone=spec.monotone_energy)

    def energy(gen: Feats, ref: Feats):
        return move_energy(gen, ref, target=idx["target"], source=source, other=idx["other"],
                           vacated=idx["vacated"], inpaint_ref=idx["ref"], **weights)

    grad_mask = downsample_any(cur, h, w).float()[None, None].to(device)
    sde_mask = downsample_any(cur | org, h, w).float()[None, None].to(device)
    # the start latent: the object's inverted noise copied into its target footprint, same transform
    lat_warp = object_warp(spec, h, w)
    lat_target, lat_source = lat_warp.target.to(device), lat_warp.source_index.to(device)

    lat_org = downsample_any(org, h, w).to(device)
    lat_vacated = lat_org & ~lat_target
    lat_ring = surroundings(lat_org, ~(lat_org | lat_target))

    copy = LatentCopy(_flat(lat_target), lat_source)

    def initial(x_t: torch.Tensor) -> torch.Tensor:
        x = x_t.clone()
        if spec.vacated_noise >= 0:
            _start_from_surroundings(x, x_t, lat_vacated, lat_ring, spec.vacated_noise)
        return copy.apply(x, x_t, None)

    trend = _trend(spec, lat_vacated, lat_org, ~(lat_org | lat_target), h, w)
    return EditPlan(energy=energy, grad_mask=grad_mask, sde_mask=sde_mask, feature_hw=(gh, gw),
                    initial=initial, target_cells=cur, anchor=copy, trend=trend)


def _trend(spec: GuidanceSpec, region: torch.Tensor, around: torch.Tensor, allowed: torch.Tensor, h: int,
           w: int) -> Optional[TrendFill]:
    """vacated_trend on the latent grid: `region` fitted to the `allowed` cells within vacated_trend image
    pixels (at least one cell) of `around` (the object's old place), or to the user's reference_region where
    one is painted."""
    if spec.vacated_trend < 0 or not bool(region.any()):
        return None
    region, around, allowed = region.cpu(), around.cpu(), allowed.cpu()
    ring = None
    if spec.reference_region is not None:
        ring = downsample_any(resize_mask(spec.reference_region, 2 * h, 2 * w), h, w).cpu() & allowed
    if ring is None or not bool(ring.any()):
        cells = max(1, math.ceil(spec.vacated_trend * max(h / spec.height, w / spec.width) - 1e-6))
        ring = ring_around(around, allowed, cells)
    if not bool(ring.any()):
        return None
    return TrendFill(_flat(region), _flat(ring), (h, w))


def _start_from_surroundings(x: torch.Tensor, x_t: torch.Tensor, region: torch.Tensor, ring: torch.Tensor,
                             noise: float) -> None:
    """Start `region` of x (latent grid, in place) from the mean start noise of `ring` plus `noise` times fresh
    noise of the ring's spread (per channel; seeded, so an edit is reproducible).

    Why: DDIM inversion does not give Gaussian noise; the inverted noise where an object was still encodes
    it, and the object comes back as a ghost. Starting from its surroundings' noise removes it (toy model, 40
    test scenes of move: vacated area +3.2 dB; README, Quality benchmark).
    """
    idx, ring_idx = _flat(region).to(x.device), _flat(ring).to(x.device)
    if not idx.numel() or not ring_idx.numel():
        return
    around = x_t.flatten(2)[:, :, ring_idx].float()
    mean, spread = around.mean(dim=2, keepdim=True), around.std(dim=2, keepdim=True, unbiased=False)
    g = torch.Generator(device="cpu").manual_seed(0)
    fresh = torch.randn((x.shape[0], x.shape[1], idx.numel()), generator=g).to(mean)
    x.flatten(2)[:, :, idx] = (mean + noise * spread * fresh).to(x.dtype)


def _drag_plan(spec, h, w, gh, gw, device, radius: int = 1) -> EditPlan:
    if not spec.pairs:
        raise DragonInputError("Dragon Guidance Setup", "points", "drag mode needs at least one handle->target pair.",
                               "Click a handle and then its target in the Dragon Mask/Point Editor.")
    region = drag_region(spec, gh, gw)
    if not bool(region.any()):
        raise DragonInputError("Dragon Guidance Setup", "object_mask", "the editable region is empty.",
                               "Paint the area that may change, or leave the mask unconnected.")
    cw, ch = spec.width / gw, spec.height / gh
    patches = [(a.to(device), b.to(device)) for a, b in pair_patches(spec.pairs, cw, ch, gh, gw, radius)]
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


def kv_selector(sources: list[KVSource], latent_hw: tuple[int, int]) -> Callable:
    """Masked two-source K/V: the tokens of each source region, taken from its batch item of the
    reference pass and concatenated (official appearance/paste: base background + reference object).

    The layer's token grid comes from ComfyUI's activations_shape, or else from halving the latent
    grid (ceil, as the UNet's stride-2 convolutions do) until it holds the layer's token count.
    """
    cache: dict = {}

    def grid_of(n_tokens: int, extra_options: dict) -> Optional[tuple[int, int]]:
        shape = extra_options.get("activations_shape") if isinstance(extra_options, dict) else None
        if shape is not None and len(shape) == 4 and shape[-2] * shape[-1] == n_tokens:
            return int(shape[-2]), int(shape[-1])
        hh, ww = latent_hw
        while hh * ww > n_tokens and (hh > 1 or ww > 1):
            hh, ww = (hh + 1) // 2, (ww + 1) // 2
        return (hh, ww) if hh * ww == n_tokens else None

    def select(k: torch.Tensor, v: torch.Tensor, extra_options: dict) -> tuple[torch.Tensor, torch.Tensor]:
        hw = grid_of(k.shape[1], extra_options)
        if hw is None:
            return k[:1], v[:1]
        key = (hw, k.device)
        if key not in cache:
            cache[key] = [(item, torch.nonzero(token_mask(m, *hw, rule), as_tuple=True)[0].to(k.device))
                          for item, m, rule in sources]
        parts = [(item, idx) for item, idx in cache[key] if idx.numel() and item < k.shape[0]]
        if not parts:
            return k[:1], v[:1]
        ks = torch.cat([k[item:item + 1, idx] for item, idx in parts], dim=1)
        vs = torch.cat([v[item:item + 1, idx] for item, idx in parts], dim=1)
        return ks, vs

    return select


def _nonempty(mask: torch.Tensor, input_name: str, what: str) -> torch.Tensor:
    if not bool(mask.any()):
        raise DragonInputError(SETUP, input_name, f"{what} is too small: it covers no cell of the feature grid "
                               "(4 image pixels per cell for SD models).", "Paint a larger area.")
    return mask


def _remove_plan(spec, h, w, gh, gw, device) -> EditPlan:
    obj = _nonempty(resize_mask(spec.object_mask, gh, gw), "object_mask", "the object to remove")
    other = ~obj
    if not bool(other.any()):
        raise DragonInputError(SETUP, "object_mask", "covers the whole image; removal fills the object from its "
                               "surroundings, so some of the image must stay unmasked.", "Paint only the object.")
    if spec.reference_region is not None:
        ref_region = resize_mask(spec.reference_region, gh, gw) & other
        if not bool(ref_region.any()):
            raise DragonInputError(SETUP, "reference_region", "covers no pixels outside the object.",
                                   "Paint an area beside the object whose look should fill it.")
    else:
        # the official whole-image average: unlike move, a ring around the object did not fill better here
        # (toy settings scenes 0-5: vacated 14.7 dB vs 15.1)
        ref_region = other
    idx = {k: _flat(v).to(device) for k, v in dict(region=obj, other=other, ref=ref_region).items()}
    weights = dict(w_content=spec.w_content, w_contrast=spec.w_contrast, w_inpaint=spec.w_inpaint)

    def energy(gen: Feats, ref: Feats):
        return remove_energy(gen, ref, region=idx["region"], other=idx["other"], inpaint_ref=idx["ref"], **weights)

    lat_obj = downsample_any(obj, h, w)
    grad_mask = lat_obj.float()[None, None].to(device)

    ring = surroundings(lat_obj, ~lat_obj)

    def initial(x_t: torch.Tensor) -> torch.Tensor:
        # the inverted noise under the object encodes the object: start the area from its surroundings' noise,
        # or (the default) from fresh noise of the image's spread (deterministic: reproducible without a seed)
        if spec.vacated_noise >= 0:
            x = x_t.clone()
            _start_from_surroundings(x, x_t, lat_obj, ring, spec.vacated_noise)
            return x
        g = torch.Generator(device="cpu").manual_seed(0)
        fresh = torch.randn(x_t.shape, generator=g).to(x_t) * x_t.float().std().to(x_t.dtype)
        return torch.where(grad_mask.bool(), fresh, x_t)

    return EditPlan(energy=energy, grad_mask=grad_mask, sde_mask=grad_mask, feature_hw=(gh, gw), initial=initial,
                    target_cells=obj, kv_select=kv_selector([(0, ~lat_obj, "whole")], (h, w)),
                    trend=_trend(spec, lat_obj, lat_obj, ~lat_obj, h, w))


def _reference_of(spec: GuidanceSpec, h: int, w: int) -> Inversion:
    inv2 = spec.reference_inversion
    if not isinstance(inv2, Inversion):
        raise DragonInputError(SETUP, "reference_inversion", f"{spec.mode} needs the reference image's inversion.",
                               "Encode the reference image, run Dragon DDIM Invert on it and connect its inversion.")
    rh, rw = inv2.latent_shape[-2:]
    if (rh, rw) != (h, w):
        raise DragonInputError(SETUP, "reference_inversion",
                               f"the reference image's latent is {rw}x{rh} but the base image's is {w}x{h}.",
                               "Resize the reference image to the base image's size (e.g. Upscale Image) before "
                               "VAE Encode, and build reference_mask on the resized image.")
    return inv2


def _paste_plan(spec, h, w, gh, gw, device) -> EditPlan:
    inv2 = _reference_of(spec, h, w)
    _nonempty(resize_mask(spec.reference_mask, gh, gw), "reference_mask", "the object to paste")
    warp = object_warp(spec, gh, gw, mask=spec.reference_mask)
    cur = warp.target
    other = ~cur
    idx = dict(target=_flat(cur).to(device), other=_flat(other).to(device), source=warp.source_index.to(device))
    weights = dict(w_edit=spec.w_edit, w_content=spec.w_content, centre=spec.centred_features)

    def energy(gen: Feats, ref: Feats):
        n = len(gen)
        return paste_energy(gen, ref[:n], ref[n:], target=idx["target"], source=idx["source"], other=idx["other"],
                            **weights)

    lat_cur = downsample_any(cur, h, w)
    grad_mask = lat_cur.float()[None, None].to(device)
    # start latent: the reference's inverted noise under the object, warped by the same mapping
    lat_warp = object_warp(spec, h, w, mask=spec.reference_mask)
    lat_target, lat_source = _flat(lat_warp.target).to(device), lat_warp.source_index.to(device)
    copy = LatentCopy(lat_target, lat_source, second=True)

    def initial(x_t: torch.Tensor) -> torch.Tensor:
        return copy.apply(x_t, x_t, inv2.noise)

    # K/V tokens as the official masked injection picks them: the target and the reference object sampled at
    # each token's top-left pixel (on the coarse grids this differs from any area rule, even for 8-px offsets)
    target_px = object_warp(spec, spec.height, spec.width, mask=spec.reference_mask).target
    sources = [(0, ~target_px, "nearest"), (1, spec.reference_mask > 0.5, "nearest")]
    return EditPlan(energy=energy, grad_mask=grad_mask, sde_mask=grad_mask, feature_hw=(gh, gw), initial=initial,
                    target_cells=cur, second=inv2, kv_select=kv_selector(sources, (h, w)),
                    anchor=_interior(copy, h, w))


def _appearance_plan(spec, h, w, gh, gw, device) -> EditPlan:
    inv2 = _reference_of(spec, h, w)
    obj = _nonempty(resize_mask(spec.object_mask, gh, gw), "object_mask", "the base object")
    ref_obj = _nonempty(resize_mask(spec.reference_mask, gh, gw), "reference_mask", "the reference object")
    other = ~obj
    if not bool(other.any()):
        raise DragonInputError(SETUP, "object_mask", "covers the whole image.", "Paint only the object.")
    idx = dict(obj=_flat(obj).to(device), ref_obj=_flat(ref_obj).to(device), other=_flat(other).to(device))
    weights = dict(w_edit=spec.w_edit, w_content=spec.w_content, centre=spec.centred_features)

    def energy(gen: Feats, ref: Feats):
        n = len(gen)
        return appearance_energy(gen, ref[:n], ref[n:], obj=idx["obj"], ref_obj=idx["ref_obj"], other=idx["other"],
                                 **weights)

    lat_obj = downsample_any(obj, h, w)
    grad_mask = lat_obj.float()[None, None].to(device)
    sources = [(0, spec.object_mask <= 0.5, "nearest"), (1, spec.reference_mask > 0.5, "nearest")]
    return EditPlan(energy=energy, grad_mask=grad_mask, sde_mask=grad_mask, feature_hw=(gh, gw),
                    initial=lambda x_t: x_t.clone(), target_cells=obj, second=inv2,
                    kv_select=kv_selector(sources, (h, w)))


def _landmark_plan(spec, h, w, gh, gw, device) -> EditPlan:
    if not spec.pairs:
        raise DragonInputError(SETUP, "points", "landmark mode needs at least one source->target pair.",
                               "Connect Dragon Landmarks or the Dragon Mask/Point Editor.")
    cw, ch = spec.width / gw, spec.height / gh
    patches = [(a.to(device), b.to(device)) for a, b in pair_patches(spec.pairs, cw, ch, gh, gw)]
    region = drag_region(spec, gh, gw)
    outside = _flat(~region).to(device)
    weights = dict(w_edit=spec.w_edit, w_content=spec.w_content)

    def energy(gen: Feats, ref: Feats):
        return landmark_energy(gen, ref, patches=patches, outside=outside, **weights)

    # official face mode: the edit gradient acts on the whole latent and the SDE noise is global; with a
    # consistency weight the edit gradient is kept to the region around the points
    if spec.w_content:
        grad_mask = downsample_any(region, h, w).float()[None, None].to(device)
    else:
        grad_mask = torch.ones(1, 1, h, w, device=device)
    target_cells = torch.zeros(gh * gw, dtype=torch.bool)
    for _, t in patches:
        target_cells[t.cpu()] = True
    return EditPlan(energy=energy, grad_mask=grad_mask, sde_mask=torch.ones(1, 1, h, w, device=device),
                    feature_hw=(gh, gw), initial=lambda x_t: x_t.clone(), target_cells=target_cells.view(gh, gw))

"""Dragon Guidance Setup: mode, masks, points and energy settings -> a guidance spec."""
from __future__ import annotations

import torch
from comfy_api.latest import io

from ..dragon_core.errors import DragonInputError
from ..dragon_core.plan import build_plan
from ..dragon_core.schedule import SCHEDULES
from ..dragon_core.inversion import Inversion
from ..dragon_core.spec import CROSS_IMAGE_MODES, MODE_DEFAULTS, MODES, DragPoints, GuidanceSpec
from .common import log, single_mask
from .types import CATEGORY, DragonGuidanceType, DragonInversionType, DragonPointsType

NODE = "Dragon Guidance Setup"
AUTO = -1.0
SD_PIXELS_PER_LATENT = 8


def _pick(value: float, default: float, name: str, allow_zero: bool = True) -> float:
    if value == AUTO:
        return default
    if value != value or abs(value) == float("inf"):  # NaN passes ComfyUI's min/max check
        raise DragonInputError(NODE, name, f"must be a finite number (or -1 for the mode's default), got {value}.",
                               "Set a number, or -1.")
    if value < 0 or (value == 0 and not allow_zero):
        raise DragonInputError(NODE, name, f"must be >= 0 (or -1 for the mode's default), got {value}.",
                               "Set 0 or more, or -1.")
    return float(value)


def build_spec(mode, object_mask=None, points: DragPoints | None = None, reference_region=None, offset_x=0, offset_y=0,
               scale=1.0, energy_scale=AUTO, w_edit=AUTO, w_content=AUTO, w_contrast=AUTO, w_inpaint=AUTO,
               schedule="diffeditor", guidance_start=0.0, guidance_end=0.6, sde_strength=AUTO, reference_mask=None,
               reference_inversion=None, keep_background=-1, vacated_noise=AUTO, anchor_end=0.0,
               vacated_trend=-1, monotone_energy=False, ring_inpaint=False, centred_features=False) -> GuidanceSpec:
    if mode not in MODES:
        raise DragonInputError(NODE, "mode", f"unknown mode {mode!r}.", f"Choose one of {', '.join(MODES)}.")
    if schedule not in SCHEDULES:
        raise DragonInputError(NODE, "schedule", f"unknown schedule {schedule!r}.", f"Choose one of {', '.join(SCHEDULES)}.")
    d = MODE_DEFAULTS[mode]
    mask = single_mask(NODE, "object_mask", object_mask)
    ref = single_mask(NODE, "reference_region", reference_region)
    ref_mask = single_mask(NODE, "reference_mask", reference_mask)
    if mode not in CROSS_IMAGE_MODES:
        if ref_mask is not None or reference_inversion is not None:
            log.info("Dragon Guidance Setup: %s ignores reference_mask/reference_inversion (paste/appearance use them).",
                     mode)
        ref_mask = reference_inversion = None
    elif reference_inversion is not None and not isinstance(reference_inversion, Inversion):
        raise DragonInputError(NODE, "reference_inversion", "must come from Dragon DDIM Invert.",
                               "Connect the inversion output of a Dragon DDIM Invert run on the reference image.")
    if mode == "paste" and mask is not None:
        log.info("Dragon Guidance Setup: paste ignores object_mask; reference_mask marks the object to paste.")
        mask = None
    if mode == "landmark" and mask is not None and float((mask > 0.5).float().max()) == 0:
        mask = None
    if ref is not None and float((ref > 0.5).float().max()) == 0:
        # e.g. the Dragon Mask/Point Editor's `reference` output with nothing painted on that layer
        log.info("Dragon Guidance Setup: reference_region is empty; the vacated area takes the look of its surroundings.")
        ref = None
    sizes = {}
    if mask is not None:
        sizes["object_mask"] = (mask.shape[1], mask.shape[0])
    if ref is not None:
        sizes["reference_region"] = (ref.shape[1], ref.shape[0])
    if ref_mask is not None:
        sizes["reference_mask"] = (ref_mask.shape[1], ref_mask.shape[0])
    if points is not None:
        if not isinstance(points, DragPoints):
            raise DragonInputError(NODE, "points", "must come from the Dragon Mask/Point Editor.",
                                   "Connect the points output of the Dragon Mask/Point Editor or Dragon Landmarks.")
        sizes["points"] = (points.width, points.height)
    if not sizes:
        need = {"drag": "points", "landmark": "points", "paste": "reference_mask"}.get(mode, "object_mask")
        raise DragonInputError(NODE, need, f"{mode} needs {need}.", "Connect the Dragon Mask/Point Editor.")
    if len(set(sizes.values())) > 1:
        desc = ", ".join(f"{k} {w}x{h}" for k, (w, h) in sizes.items())
        culprit = "reference_mask" if "reference_mask" in sizes else "object_mask"
        raise DragonInputError(NODE, culprit, f"sizes disagree: {desc}.",
                               "Build them all from the same image size; resize a reference image to the base "
                               "image's size (e.g. Upscale Image) before masking and encoding it.")
    width, height = next(iter(sizes.values()))
    if not 0.0 <= guidance_start < guidance_end <= 1.0:
        raise DragonInputError(NODE, "guidance_start/guidance_end",
                               f"need 0 <= start < end <= 1, got {guidance_start} and {guidance_end}.",
                               "Make guidance_end larger than guidance_start (official: 0 and 0.6).")
    if not (scale > 0 and scale == scale):
        raise DragonInputError(NODE, "scale", f"must be > 0, got {scale}.", "Use 1 to keep the object's size.")
    if not (keep_background == -1 or keep_background >= 0):
        raise DragonInputError(NODE, "keep_background",
                               f"must be -1 (off) or a margin >= 0 in pixels, got {keep_background}.", "Set -1 or 0 or more.")
    if not (vacated_noise == AUTO or 0.0 <= vacated_noise <= 1.0):
        raise DragonInputError(NODE, "vacated_noise",
                               f"must be -1 (the mode's default) or between 0 and 1, got {vacated_noise}.",
                               "Set -1, or a share between 0 and 1.")
    if not (0.0 <= anchor_end <= 1.0):
        raise DragonInputError(NODE, "anchor_end", f"must be between 0 (off) and 1, got {anchor_end}.",
                               "Set 0 (off) or a fraction of the steps.")
    if not (vacated_trend == -1 or vacated_trend >= 1):
        raise DragonInputError(NODE, "vacated_trend",
                               f"must be -1 (off) or a ring width >= 1 in pixels, got {vacated_trend}.", "Set -1 or 1 or more.")
    not_landmark = tuple(m for m in MODES if m != "landmark")
    for name, value, off, modes in (("vacated_noise", vacated_noise, AUTO, ("move", "resize", "remove")),
                                    ("anchor_end", anchor_end, 0.0, ("move", "resize", "paste")),
                                    ("vacated_trend", vacated_trend, -1, ("move", "resize", "remove")),
                                    ("keep_background", keep_background, -1, not_landmark),
                                    ("monotone_energy", bool(monotone_energy), False, ("move", "resize")),
                                    ("ring_inpaint", bool(ring_inpaint), False, ("move", "resize")),
                                    ("centred_features", bool(centred_features), False, CROSS_IMAGE_MODES)):
        if value != off and mode not in modes:  # an unused setting: say so, but a mode switch must not break a graph
            log.warning("Dragon Guidance Setup: %s applies to %s only; %s mode ignores it.", name, "/".join(modes),
                        mode)
    pairs = points.pairs if points is not None else ()
    offset = (float(offset_x), float(offset_y))
    if mode in ("move", "resize"):
        if mask is None:
            raise DragonInputError(NODE, "object_mask", f"{mode} needs the mask of the object.",
                                   "Connect the Dragon Mask/Point Editor's mask (or any MASK of the object).")
        covered = float((mask > 0.5).float().mean())
        if covered == 0:
            raise DragonInputError(NODE, "object_mask", "is empty (no pixel above 0.5).", "Paint the object to move.")
        if covered == 1:
            raise DragonInputError(NODE, "object_mask", "covers the whole image; there is nothing around the object to keep.",
                                   "Paint only the object.")
        if pairs:
            if len(pairs) != 1:
                raise DragonInputError(NODE, "points", f"{mode} takes one handle->target pair as the offset, got {len(pairs)}.",
                                       "Keep one pair, or use drag mode for several.")
            if offset != (0.0, 0.0):
                raise DragonInputError(NODE, "points", "gives the move as a point pair, and offset_x/offset_y give it too.",
                                       "Set offset_x and offset_y to 0, or remove the points.")
            offset = (pairs[0].target[0] - pairs[0].handle[0], pairs[0].target[1] - pairs[0].handle[1])
        if offset == (0.0, 0.0) and scale == 1.0:
            # nothing to do: the whole inversion and edit would run to give the image back
            what = "where the object goes" if mode == "move" else "a scale other than 1 (or where the object goes)"
            raise DragonInputError(NODE, "points" if mode == "move" else "scale",
                                   f"{mode} has no handle->target pair, offset_x and offset_y are 0 and scale is 1: "
                                   f"it needs {what}.",
                                   "In the Dragon Mask/Point Editor click the object, then the place it should go; or "
                                   "set offset_x/offset_y" + (" or scale." if mode == "resize" else "."))
        if mode == "move" and scale != 1.0:
            log.info("Dragon Guidance Setup: move with scale %.3g resizes the object as well.", scale)
    elif mode in ("remove", "appearance"):
        _check_object(mask, "object_mask", "the object to remove" if mode == "remove" else "the base object")
        if mode == "appearance":
            _check_reference(mode, ref_mask, reference_inversion)
    elif mode == "paste":
        _check_reference(mode, ref_mask, reference_inversion)
        if pairs:
            if len(pairs) != 1:
                raise DragonInputError(NODE, "points", f"paste takes one handle->target pair as the offset, got {len(pairs)}.",
                                       "Keep one pair.")
            if offset != (0.0, 0.0):
                raise DragonInputError(NODE, "points", "gives the offset as a point pair, and offset_x/offset_y give it too.",
                                       "Set offset_x and offset_y to 0, or remove the points.")
            offset = (pairs[0].target[0] - pairs[0].handle[0], pairs[0].target[1] - pairs[0].handle[1])
        pairs = ()
    elif mode == "landmark":
        if not pairs:
            raise DragonInputError(NODE, "points", "landmark needs at least one source->target pair.",
                                   "Connect Dragon Landmarks (two point lists) or the Dragon Mask/Point Editor.")
    else:  # drag
        if not pairs:
            raise DragonInputError(NODE, "points", "drag needs at least one handle->target pair.",
                                   "Click a handle and then its target in the Dragon Mask/Point Editor.")
        if mask is not None and float((mask > 0.5).float().max()) == 0:
            log.info("Dragon Guidance Setup: the drag mask is empty; using regions around the drags instead.")
            mask = None
    spec = GuidanceSpec(
        mode=mode, width=int(width), height=int(height), object_mask=mask, reference_region=ref, pairs=tuple(pairs),
        offset=offset, scale=float(scale),
        energy_scale=_pick(energy_scale, d.energy_scale, "energy_scale"),
        w_edit=_pick(w_edit, d.w_edit, "w_edit"), w_content=_pick(w_content, d.w_content, "w_content"),
        w_contrast=_pick(w_contrast, d.w_contrast, "w_contrast"), w_inpaint=_pick(w_inpaint, d.w_inpaint, "w_inpaint"),
        reference_mask=ref_mask, reference_inversion=reference_inversion,
        schedule=schedule, guidance_start=float(guidance_start), guidance_end=float(guidance_end),
        sde_strength=_pick(sde_strength, d.sde_strength if schedule == "diffeditor" else 0.0, "sde_strength"),
        kv_mode=d.kv_mode, keep_background=int(keep_background), vacated_noise=float(vacated_noise),
        anchor_end=float(anchor_end), vacated_trend=int(vacated_trend), monotone_energy=bool(monotone_energy),
        ring_inpaint=bool(ring_inpaint), centred_features=bool(centred_features))
    # the edit's geometry on the latent it will have: an object too small, an offset out of the image or an empty
    # region is refused here, on the node whose inputs are wrong, not when the sampler runs (it checks again on
    # the real latent). The node has no model: SD-family latents have 8 pixels a cell, and an image under 64
    # pixels a side cannot be one (the sampler refuses latents under 8 cells), so only a pixel-space model (the
    # project's toy) gets one; there the check runs on the image's own grid
    f = SD_PIXELS_PER_LATENT if min(int(width), int(height)) >= 8 * SD_PIXELS_PER_LATENT else 1
    with torch.inference_mode(False):
        build_plan(spec, (max(1, int(height) // f), max(1, int(width) // f)), torch.device("cpu"))
    return spec


def _check_object(mask, input_name: str, what: str) -> None:
    if mask is None:
        raise DragonInputError(NODE, input_name, f"needs the mask of {what}.", "Connect a MASK.")
    covered = float((mask > 0.5).float().mean())
    if covered == 0:
        raise DragonInputError(NODE, input_name, "is empty (no pixel above 0.5).", f"Paint {what}.")
    if covered == 1:
        raise DragonInputError(NODE, input_name, "covers the whole image; there is nothing around the object to keep "
                               "or fill from.", "Paint only the object.")


def _check_reference(mode: str, ref_mask, reference_inversion) -> None:
    if ref_mask is None:
        raise DragonInputError(NODE, "reference_mask", f"{mode} needs the mask of the object in the reference image.",
                               "Connect a MASK painted on the reference image.")
    if float((ref_mask > 0.5).float().max()) == 0:
        raise DragonInputError(NODE, "reference_mask", "is empty (no pixel above 0.5).",
                               "Paint the object in the reference image.")
    if reference_inversion is None:
        raise DragonInputError(NODE, "reference_inversion", f"{mode} needs the reference image's inversion.",
                               "Encode the reference image, run Dragon DDIM Invert on it and connect its inversion.")


def check_reference_inversion(spec: GuidanceSpec, inversion: Inversion) -> None:
    """paste/appearance: the reference image's inversion must match the base image's (called by the sampler)."""
    inv2 = spec.reference_inversion
    if inv2 is None:
        return
    if inv2.model_key != inversion.model_key:
        raise DragonInputError(NODE, "reference_inversion", "was made with another model than the base image's inversion.",
                               "Invert both images with the same model.")
    if inv2.steps != inversion.steps or not bool((inv2.sigmas == inversion.sigmas).all()):
        raise DragonInputError(NODE, "reference_inversion", f"has {inv2.steps} steps but the base image's inversion has "
                               f"{inversion.steps}.", "Use the same steps in both Dragon DDIM Invert nodes.")
    if tuple(inv2.latent_shape) != tuple(inversion.latent_shape):
        rh, rw = inv2.latent_shape[-2:]
        h, w = inversion.latent_shape[-2:]
        raise DragonInputError(NODE, "reference_inversion",
                               f"the reference image's latent is {rw}x{rh} but the base image's is {w}x{h}.",
                               "Resize the reference image to the base image's size (e.g. Upscale Image) before VAE "
                               "Encode, and paint reference_mask on the resized image.")


def _auto(name, tooltip, mx=100000.0, step=0.1):
    return io.Float.Input(name, default=AUTO, min=AUTO, max=mx, step=step, tooltip=tooltip + " -1 = the mode's default.")


class DragonGuidanceSetup(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DragonDiffusion_GuidanceSetup",
            display_name="Dragon Guidance Setup",
            category=CATEGORY,
            description=(
                "Describes the edit: what moves where (object mask + offset/scale, or handle->target points), "
                "and how strongly the feature-correspondence energy guides the sampler. Defaults are those of "
                "the official DragonDiffusion/DiffEditor demo."),
            inputs=[
                io.Combo.Input("mode", options=list(MODES), default="move",
                               tooltip="move: shift the masked object; resize: scale it about its centre; drag: pull handle points "
                                       "to targets; remove: fill the masked object like its surroundings; paste: put the "
                                       "reference image's object into this image (offset/scale); appearance: give the masked "
                                       "object the reference object's look; landmark: move many source points to target "
                                       "points, no mask (faces, poses)."),
                io.Mask.Input("object_mask", optional=True,
                              tooltip="move/resize/remove/appearance: the object in the base image. drag: the region allowed to "
                                      "change (optional; empty or unconnected = around the drags). landmark: optional, the region outside which "
                                      "w_content holds the image (default: around the points). paste: not used."),
                DragonPointsType.Input("points", optional=True,
                                       tooltip="Handle->target pairs from the Dragon Mask/Point Editor or Dragon Landmarks. move/resize/"
                                               "paste: one pair may give the offset. drag/landmark: the pairs to move."),
                io.Mask.Input("reference_region", optional=True,
                              tooltip="move/remove: an area whose look the vacated place should take (official 'reference region'). "
                                      "Unconnected: the rest of the image (move/resize with ring_inpaint: a ring around the object)."),
                io.Mask.Input("reference_mask", optional=True,
                              tooltip="paste/appearance: the object in the reference image (same size as the base image)."),
                DragonInversionType.Input("reference_inversion", optional=True,
                                          tooltip="paste/appearance: Dragon DDIM Invert of the reference image (same model, steps and "
                                                  "size as the base image's inversion)."),
                io.Int.Input("offset_x", default=0, min=-16384, max=16384,
                             tooltip="move/paste: horizontal shift in image pixels (right is positive)."),
                io.Int.Input("offset_y", default=0, min=-16384, max=16384,
                             tooltip="move/paste: vertical shift in image pixels (down is positive)."),
                io.Float.Input("scale", default=1.0, min=0.05, max=8.0, step=0.01,
                               tooltip="resize/move/paste: scale of the object about its bounding-box centre (parts leaving the "
                                       "image are clipped)."),
                _auto("energy_scale", "Guidance step size (lambda*s_E of the paper): move/resize/remove 40, paste 60, drag/appearance 80, "
                                      "landmark 120. 0 disables the energy guidance."),
                _auto("w_edit", "Weight of the edit energy (target looks like the source): 4; appearance 3.5, landmark 12; unused by remove."),
                _auto("w_content", "Weight of the consistency energy (the rest stays): 6; appearance 5; landmark 0 (official: none)."),
                _auto("w_contrast", "move/remove: weight pushing the vacated area away from the object: 0.2."),
                _auto("w_inpaint", "move/remove: weight filling the vacated area like its surroundings (0.8); drag: handle-vacating "
                                   "weight (0.2)."),
                io.Combo.Input("schedule", options=list(SCHEDULES), default="diffeditor",
                               tooltip="diffeditor: guide steps 0-9 then every other step, regional SDE and time travel (official default); "
                                       "dragondiffusion: guide every step of the window."),
                io.Float.Input("guidance_start", default=0.0, min=0.0, max=1.0, step=0.01,
                               tooltip="Energy guidance starts at this fraction of the steps."),
                io.Float.Input("guidance_end", default=0.6, min=0.0, max=1.0, step=0.01,
                               tooltip="Energy guidance stops at this fraction of the steps (official: step 30 of 50 = 0.6)."),
                _auto("sde_strength", "diffeditor: eta of the regional SDE noise inside the edit region (0.4; landmark 0.2 everywhere).", mx=1.0, step=0.05),
                io.Int.Input("keep_background", default=-1, min=-1, max=4096, optional=True,
                             tooltip="Keep everything farther than this many pixels from the edit region (the "
                                     "object's old and new places; drag: the editable region) exactly as it was: "
                                     "each step takes the original image's latent there. -1 = off (the official "
                                     "method: only the consistency energy holds the rest). Landmark edits the whole "
                                     "image, so it keeps nothing."),
                io.Float.Input("vacated_noise", default=AUTO, min=AUTO, max=1.0, step=0.05, optional=True,
                               tooltip="move/resize/remove: start the place the object leaves from the mean start "
                                       "noise of its surroundings plus this share of fresh noise (0 = none, 1 = fresh "
                                       "noise of their spread), so the object's inverted noise cannot bring it back "
                                       "as a ghost. -1 = the mode's default: move/resize keep the object's inverted "
                                       "noise (official), remove starts from fresh noise."),
                io.Float.Input("anchor_end", default=0.0, min=0.0, max=1.0, step=0.01, optional=True,
                               tooltip="move/resize/paste: until this fraction of the steps, the object's new place "
                                       "follows the original object's inverted path (moved, scaled) after every "
                                       "step, so its colours and shape hold while the picture forms; the later steps "
                                       "blend it in. 0 = off (the official method copies only the start noise)."),
                io.Int.Input("vacated_trend", default=-1, min=-1, max=4096, optional=True,
                             tooltip="move/resize/remove: after every step, the place the object leaves takes the "
                                     "colour trend (brightness and colour, with their gradient) of the image in a "
                                     "ring this many pixels wide around the object, or of reference_region when "
                                     "painted; the detail the model draws there is kept. Stops a lighter or darker "
                                     "patch where the object was. -1 = off (the official method)."),
                io.Boolean.Input("monotone_energy", default=False, optional=True,
                                 tooltip="move/resize: put (1+cos)/2 into the edit and consistency energies, weight "
                                         "doubled (the same step where the features agree). Off = the official "
                                         "w/(1+4 cos) of the raw cosine, whose pole at cos -0.25 is guarded."),
                io.Boolean.Input("ring_inpaint", default=False, optional=True,
                                 tooltip="move/resize without reference_region: fill the vacated place like a ring "
                                         "around the object (a fifth of its size wide). Off = the official: like the "
                                         "whole rest of the image on average."),
                io.Boolean.Input("centred_features", default=False, optional=True,
                                 tooltip="paste/appearance: compare each image's features relative to its own mean, "
                                         "so the reference image's overall colour does not come along with its "
                                         "object. Off = the official raw features."),
            ],
            outputs=[DragonGuidanceType.Output(display_name="guidance", tooltip="The guidance spec for the Dragon Sampler.")],
        )

    @classmethod
    def execute(cls, mode, offset_x, offset_y, scale, energy_scale, w_edit, w_content, w_contrast, w_inpaint,
                schedule, guidance_start, guidance_end, sde_strength, object_mask=None, points=None,
                reference_region=None, reference_mask=None, reference_inversion=None,
                keep_background=-1, vacated_noise=AUTO, anchor_end=0.0, vacated_trend=-1, monotone_energy=False,
                ring_inpaint=False, centred_features=False) -> io.NodeOutput:
        spec = build_spec(mode, object_mask, points, reference_region, offset_x, offset_y, scale, energy_scale, w_edit,
                          w_content, w_contrast, w_inpaint, schedule, guidance_start, guidance_end, sde_strength,
                          reference_mask, reference_inversion, keep_background, vacated_noise, anchor_end,
                          vacated_trend, monotone_energy, ring_inpaint, centred_features)
        return io.NodeOutput(spec)

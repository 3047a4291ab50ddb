"""Mask/Point Editor (backend): points JSON + masks on an image -> guidance inputs + preview.

The in-canvas editor (web/js/dragon_editor.js) writes the widget values this node reads: `points`
(JSON, image pixels), `points_size` (the WxH the points were placed on) and `editor_mask` /
`editor_reference` (file names of the painted brush layers, uploaded through ComfyUI's
/upload/image into the input folder). A brush layer is an RGBA PNG: alpha says where the user
painted or erased, red says which (255 paint, 0 erase); it is composited over the upstream MASK
input, so the brush can both add to and cut from a mask made elsewhere.
"""
from __future__ import annotations

import os
import re

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

import folder_paths
from comfy_api.latest import io, ui

from ..dragon_core.errors import DragonInputError
from ..dragon_core.points import parse_points
from ..dragon_core.spec import DragPoints, PointPair
from .common import log, single_mask
from .types import CATEGORY, DragonPointsType

NODE = "Mask/Point Editor"
MAX_SIDE = 16384
LOAD_IMAGE_NO_MASK = (64, 64)  # ComfyUI's Load Image returns zeros of this shape when the picture has no alpha
_SIZE_RE = re.compile(r"^\s*(\d+)\s*[xX×]\s*(\d+)\s*$")


def _disc(img: torch.Tensor, x: float, y: float, r: float, color) -> None:
    h, w = img.shape[:2]
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    sel = (xx + 0.5 - x) ** 2 + (yy + 0.5 - y) ** 2 <= r * r
    img[sel] = torch.tensor(color, dtype=img.dtype)


def _line(img: torch.Tensor, a, b, color, width: float) -> None:
    n = int(max(abs(b[0] - a[0]), abs(b[1] - a[1])) + 1)
    for t in torch.linspace(0, 1, max(n, 2)):
        _disc(img, a[0] + (b[0] - a[0]) * float(t), a[1] + (b[1] - a[1]) * float(t), width, color)


def render_preview(image: torch.Tensor, mask: torch.Tensor | None, points: DragPoints,
                   reference: torch.Tensor | None = None) -> torch.Tensor:
    """The image with the mask tinted white, the reference region blue, each handle (red) -> target (blue) drawn."""
    img = image[0].clone().float()
    if mask is not None:
        m = (mask[0] > 0.5).float()[..., None]
        img = img * (1 - 0.35 * m) + torch.tensor([1.0, 1.0, 1.0]) * 0.35 * m
    if reference is not None:
        m = (reference[0] > 0.5).float()[..., None]
        img = img * (1 - 0.35 * m) + torch.tensor([0.2, 0.5, 1.0]) * 0.35 * m
    r = max(2.0, min(points.width, points.height) / 80)
    for pr in points.pairs:
        _line(img, pr.handle, pr.target, (1.0, 1.0, 0.2), r / 2)
        _disc(img, *pr.handle, r, (0.95, 0.15, 0.15))
        _disc(img, *pr.target, r, (0.15, 0.35, 0.95))
    return img[None].clamp(0, 1)


def parse_size(text) -> tuple[int, int] | None:
    """'WxH' -> (W, H); empty -> None."""
    if text is None or (isinstance(text, str) and not text.strip()):
        return None
    m = _SIZE_RE.match(text) if isinstance(text, str) else None
    if not m or not (0 < int(m[1]) <= MAX_SIDE and 0 < int(m[2]) <= MAX_SIDE):
        raise DragonInputError(NODE, "points_size", f"must be WIDTHxHEIGHT in pixels (e.g. 512x512) or empty, got {str(text)[:40]!r}.",
                               "Leave it empty when the points are in this image's pixels.")
    return int(m[1]), int(m[2])


def scale_points(pairs: tuple[PointPair, ...], src: tuple[int, int], dst: tuple[int, int]) -> tuple[PointPair, ...]:
    """Points placed on a src=(W, H) image moved proportionally onto a dst=(W, H) image."""
    sx, sy = dst[0] / src[0], dst[1] / src[1]
    return tuple(PointPair((p.handle[0] * sx, p.handle[1] * sy), (p.target[0] * sx, p.target[1] * sy)) for p in pairs)


def input_file(input_name: str, name: str) -> str | None:
    """The path of a file named relative to ComfyUI's input folder, refusing anything outside it."""
    if not isinstance(name, str):
        raise DragonInputError(NODE, input_name, f"must be a file name, got {type(name).__name__}.")
    name = name.strip()
    if not name:
        return None
    if name.endswith(" [input]"):
        name = name[: -len(" [input]")].strip()
    elif re.search(r" \[(output|temp)\]$", name):
        raise DragonInputError(NODE, input_name, f"{name!r} is not in ComfyUI's input folder.",
                               "The editor uploads its masks to the input folder; repaint the mask.")
    fix = "Give a path relative to ComfyUI's input folder (the editor writes it), e.g. dragon_editor/mask_1a2b.png."
    if "\x00" in name or os.path.isabs(name) or re.match(r"^[A-Za-z]:", name):
        raise DragonInputError(NODE, input_name, f"{name[:80]!r} is not a relative path inside ComfyUI's input folder.", fix)
    base = os.path.realpath(folder_paths.get_input_directory())
    path = os.path.realpath(os.path.join(base, name))
    if os.path.commonpath([base, path]) != base:
        raise DragonInputError(NODE, input_name, f"{name[:80]!r} points outside ComfyUI's input folder.", fix)
    if not os.path.isfile(path):
        raise DragonInputError(NODE, input_name, f"{name[:80]!r} was not found in ComfyUI's input folder.",
                               "Repaint the mask in the editor (it uploads it again), or clear it.")
    return path


def load_layer(input_name: str, name: str, width: int, height: int) -> tuple[torch.Tensor, torch.Tensor, str | None] | None:
    """A painted brush layer as (value, coverage) [H, W] tensors, resized to the image with a note if needed."""
    path = input_file(input_name, name)
    if path is None:
        return None
    try:
        with Image.open(path) as im:
            if im.width * im.height > MAX_SIDE * MAX_SIDE:
                raise DragonInputError(NODE, input_name, f"is {im.width}x{im.height}, too large.")
            rgba = np.asarray(im.convert("RGBA"), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DragonInputError(NODE, input_name, f"{name[:80]!r} is not a readable image ({str(e)[:80]}).",
                               "Repaint the mask in the editor, or clear it.") from None
    t = torch.from_numpy(rgba.copy())
    value, cover = t[..., 0], t[..., 3]
    note = None
    if tuple(value.shape) != (height, width):
        note = f"{input_name} was painted on a {value.shape[1]}x{value.shape[0]} image; stretched to {width}x{height}."
        both = F.interpolate(torch.stack([value, cover])[None], size=(height, width), mode="bilinear", align_corners=False)[0]
        value, cover = both[0], both[1]
    return value, cover, note


def compose(base: torch.Tensor | None, layer, height: int, width: int) -> torch.Tensor | None:
    """The upstream mask with the brush layer over it (painted pixels replace it where painted)."""
    if layer is None:
        return base
    value, cover, _ = layer
    below = base if base is not None else torch.zeros(height, width)
    return (below * (1 - cover) + value * cover).clamp(0, 1)


def _fit(input_name: str, m: torch.Tensor | None, w: int, h: int, notes: list[str]) -> torch.Tensor | None:
    """The upstream mask if it matches the image. Load Image's placeholder for a picture without alpha (64x64
    zeros) counts as no mask, with a note; any other size mismatch is an error."""
    if m is None or tuple(m.shape) == (h, w):
        return m
    if tuple(m.shape) == LOAD_IMAGE_NO_MASK and float(m.max()) == 0.0:
        notes.append(f"The {input_name} input is an empty {m.shape[1]}x{m.shape[0]} mask (Load Image gives one for a "
                     f"picture without alpha); it is ignored.")
        return None
    raise DragonInputError(NODE, input_name, f"is {m.shape[1]}x{m.shape[0]} but the image is {w}x{h}.",
                           "Paint the mask on this image or resize it to match.")


def _save_temp(img: torch.Tensor, prefix: str) -> dict:
    return dict(ui.ImageSaveHelper.save_images(img, filename_prefix=prefix, folder_type=io.FolderType.temp,
                                               cls=None, compress_level=1)[0])


class MaskPointEditor(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DragonDiffusion_MaskPointEditor",
            display_name="Mask/Point Editor",
            category=CATEGORY,
            description=(
                "Handle->target points and the editable/object mask for an image, edited on the node's canvas: "
                "click a handle then its target, paint the mask with the brush. Points are image pixels; "
                "they alternate handle, target."),
            inputs=[
                io.Image.Input("image", tooltip="The image being edited (the one you encode and invert)."),
                io.String.Input("points", default="[]", multiline=True,
                                tooltip='JSON, image pixels: [{"x":..,"y":..}, ...] alternating handle, target, '
                                        'or [{"handle":[x,y],"target":[x,y]}, ...]. The canvas editor writes it.'),
                io.Mask.Input("mask", optional=True,
                              tooltip="Object (move/resize) or editable region (drag), e.g. from the mask editor of Load Image. "
                                      "Shown on the canvas; the brush paints over it."),
                io.Mask.Input("reference", optional=True,
                              tooltip="Optional reference region (move: what the vacated place should look like). "
                                      "Shown on the canvas; the reference brush paints over it."),
                io.String.Input("points_size", default="", optional=True,
                                tooltip="WIDTHxHEIGHT of the image the points were placed on (the editor writes it). When the "
                                        "image has another size the points are rescaled to it, with a note. Empty: this image's size."),
                io.String.Input("editor_mask", default="", optional=True,
                                tooltip="The mask brush layer: a PNG in ComfyUI's input folder that the editor uploads "
                                        "(alpha = painted, red = paint/erase). Empty: no brush strokes."),
                io.String.Input("editor_reference", default="", optional=True,
                                tooltip="The reference brush layer, like editor_mask. Empty: no brush strokes."),
            ],
            outputs=[
                io.Mask.Output(display_name="mask", tooltip="The mask at the image size (empty if none was given)."),
                DragonPointsType.Output(display_name="points", tooltip="The handle->target pairs for Dragon Guidance Setup."),
                io.Image.Output(display_name="preview", tooltip="The image with the mask and arrows drawn."),
                io.Mask.Output(display_name="reference",
                               tooltip="The reference region for Dragon Guidance Setup's reference_region (empty if none)."),
            ],
        )

    @classmethod
    def fingerprint_inputs(cls, **kwargs):
        """Re-run when a brush layer file changes on disk even if its name does not."""
        stamp = []
        for key in ("editor_mask", "editor_reference"):
            name = kwargs.get(key)
            try:
                st = os.stat(input_file(key, name)) if name else None
                stamp.append((name, st.st_mtime_ns, st.st_size) if st else name)
            except (DragonInputError, OSError):
                stamp.append(name)  # execute() reports the problem
        return tuple(stamp)

    @classmethod
    def execute(cls, image, points, mask=None, reference=None, points_size="", editor_mask="",
                editor_reference="") -> io.NodeOutput:
        if not isinstance(image, torch.Tensor) or image.ndim != 4:
            raise DragonInputError(NODE, "image", "must be an IMAGE.")
        if image.shape[0] != 1:
            raise DragonInputError(NODE, "image", f"has a batch of {image.shape[0]}; give one image.")
        _, h, w, _ = image.shape
        notes = []
        placed = parse_size(points_size) or (w, h)
        pairs = parse_points(NODE, "points", points, *placed)
        if placed != (w, h) and pairs:
            pairs = scale_points(pairs, placed, (w, h))
            notes.append(f"The points were placed on a {placed[0]}x{placed[1]} image; rescaled to this {w}x{h} image.")
        base = _fit("mask", single_mask(NODE, "mask", mask), w, h, notes)
        base_ref = _fit("reference", single_mask(NODE, "reference", reference), w, h, notes)
        layer = load_layer("editor_mask", editor_mask, w, h)
        layer_ref = load_layer("editor_reference", editor_reference, w, h)
        notes += [lay[2] for lay in (layer, layer_ref) if lay is not None and lay[2]]
        m = compose(base, layer, h, w)
        ref = compose(base_ref, layer_ref, h, w)
        for note in notes:
            log.warning("%s: %s", NODE, note)
        out_mask = m[None] if m is not None else torch.zeros(1, h, w)
        out_ref = ref[None] if ref is not None else torch.zeros(1, h, w)
        dp = DragPoints(pairs=pairs, width=w, height=h)
        preview = render_preview(image, out_mask if m is not None else None, dp, out_ref if ref is not None else None)
        shown = ui.PreviewImage(preview, cls=cls).as_dict()
        state = {"image": _save_temp(image[:1, ..., :3], "dragon_editor_image"), "width": w, "height": h,
                 "mask": _save_temp(base[None, ..., None].expand(-1, -1, -1, 3), "dragon_editor_mask") if base is not None else None,
                 "reference": (_save_temp(base_ref[None, ..., None].expand(-1, -1, -1, 3), "dragon_editor_ref")
                               if base_ref is not None else None),
                 "points": [[*p.handle, *p.target] for p in pairs], "notes": notes}
        shown["dragon_editor"] = [state]
        return io.NodeOutput(out_mask, dp, preview, out_ref, ui=shown)

"""Dragon Mask/Point Editor (backend): points JSON + masks on an image -> guidance inputs + preview.

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
import threading

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

import comfy.model_management
import folder_paths
from comfy_api.latest import io, ui

from ..dragon_core.errors import DragonInputError
from ..dragon_core.points import parse_points
from ..dragon_core.spec import DragPoints, PointPair
from .common import log, single_mask
from .types import CATEGORY, DragonPointsType

NODE = "Dragon Mask/Point Editor"
MAX_SIDE = 16384
LOAD_IMAGE_NO_MASK = (64, 64)  # ComfyUI's Load Image returns zeros of this shape when the picture has no alpha
_SIZE_RE = re.compile(r"^\s*(\d+)\s*[xX×]\s*(\d+)\s*$")


PREVIEW_CANVAS = 1024  # the overlay (arrows, points) is drawn on a canvas of at most this many pixels a side
_PAIRS_PER_CHUNK = 64  # Cancel is honoured between chunks
_ROWS_PER_CHUNK = 512  # and between bands of image rows


def _stamp(canvas: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor, radius: float) -> None:
    """Mark, on a bool canvas [h, w], every pixel whose centre lies within `radius` of one of the points
    (xs, ys): a disc stamped around each point, all points at once (cost: points x disc area)."""
    h, w = canvas.shape
    r = int(radius) + 1
    oy, ox = torch.meshgrid(torch.arange(-r, r + 1), torch.arange(-r, r + 1), indexing="ij")
    px = (xs.floor().long()[:, None] + ox.flatten()[None])
    py = (ys.floor().long()[:, None] + oy.flatten()[None])
    inside = ((px + 0.5 - xs[:, None]) ** 2 + (py + 0.5 - ys[:, None]) ** 2 <= radius * radius)
    inside &= (px >= 0) & (px < w) & (py >= 0) & (py < h)
    canvas.view(-1)[(py * w + px)[inside]] = True


def _centre_lines(canvas: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    """Mark the pixels of the centre lines a[k] -> b[k] ([n, 2] canvas pixels) on a bool canvas, all at once
    (cost: their total length)."""
    h, w = canvas.shape
    counts = (b - a).abs().max(dim=1).values.ceil().long().clamp(min=1) + 1
    seg = torch.repeat_interleave(torch.arange(len(a)), counts)
    start = torch.cumsum(counts, 0) - counts
    t = (torch.arange(int(counts.sum())) - start[seg]).float() / (counts[seg] - 1).clamp(min=1).float()
    pts = a[seg] + (b[seg] - a[seg]) * t[:, None]
    px, py = pts[:, 0].floor().long(), pts[:, 1].floor().long()
    ok = (px >= 0) & (px < w) & (py >= 0) & (py < h)
    canvas.view(-1)[(py * w + px)[ok]] = True


def _widen(canvas: torch.Tensor, radius: float) -> torch.Tensor:
    """The canvas's marks widened by `radius`: one convolution with a disc (cost: canvas x disc area)."""
    h, w = canvas.shape
    r = int(radius)
    oy, ox = torch.meshgrid(torch.arange(-r, r + 1), torch.arange(-r, r + 1), indexing="ij")
    disc = ((ox ** 2 + oy ** 2) <= radius * radius + 0.5).float()
    return F.conv2d(canvas.float().view(1, 1, h, w), disc[None, None], padding=r)[0, 0] > 0.5


def _tint(img: torch.Tensor, cover: torch.Tensor, color, alpha: float) -> None:
    """In place: img tinted toward `color` where `cover`."""
    img.lerp_(torch.tensor(color, dtype=img.dtype), cover.to(img.dtype)[..., None] * alpha)


# The overlay colours the canvas editor offers for the mask (web/js/dragon_editor.js has the same table); the
# reference region is always blue. The preview output draws what the canvas shows.
MASK_COLORS = {"red": (1.0, 0.275, 0.275), "green": (0.2, 0.85, 0.3), "blue": (0.235, 0.55, 1.0),
               "yellow": (1.0, 0.9, 0.15), "cyan": (0.1, 0.9, 0.95), "magenta": (1.0, 0.25, 0.9),
               "white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0)}
REFERENCE_COLOR = MASK_COLORS["blue"]
DEFAULT_OPACITY = 0.45


def render_preview(image: torch.Tensor, mask: torch.Tensor | None, points: DragPoints,
                   reference: torch.Tensor | None = None, mask_color: str = "red",
                   opacity: float = DEFAULT_OPACITY) -> torch.Tensor:
    """The image with the mask tinted in `mask_color` and the reference region blue at `opacity` (as on the
    node's canvas), each handle (red) -> target (blue) drawn.

    The arrows and points are drawn on a canvas of at most PREVIEW_CANVAS pixels a side and scaled up to the
    image, so the cost is the image's pixels plus the points' discs, whatever the image size and arrow length
    (drawing each arrow at full size cost its length times the image's pixels: 100 s for one on 2048x2048).
    Cancel is honoured while it draws."""
    img = image[0].float().clone()
    h, w = img.shape[:2]
    if reference is not None:
        _tint(img, reference[0] > 0.5, REFERENCE_COLOR, opacity)
    if mask is not None:
        _tint(img, mask[0] > 0.5, MASK_COLORS[mask_color], opacity)
    if points.pairs:
        f = max(1.0, max(w, h) / PREVIEW_CANVAS)  # image pixels per canvas pixel
        ch, cw = max(1, round(h / f)), max(1, round(w / f))
        sx, sy = cw / w, ch / h
        r = max(2.0, min(points.width, points.height) / 80) * min(sx, sy)
        pairs = torch.tensor([[*p.handle, *p.target] for p in points.pairs], dtype=torch.float32)
        pairs[:, 0::2] *= sx
        pairs[:, 1::2] *= sy
        # one label per canvas pixel, drawn in order (later on top): 1 arrow, 2 handle, 3 target
        label = torch.zeros(ch, cw, dtype=torch.uint8)
        for value, draw in ((1, lambda c, k: _centre_lines(c, k[:, :2], k[:, 2:])),
                            (2, lambda c, k: _stamp(c, k[:, 0], k[:, 1], r)),
                            (3, lambda c, k: _stamp(c, k[:, 2], k[:, 3], r))):
            layer = torch.zeros(ch, cw, dtype=torch.bool)
            for k in range(0, len(pairs), _PAIRS_PER_CHUNK):
                comfy.model_management.throw_exception_if_processing_interrupted()
                draw(layer, pairs[k:k + _PAIRS_PER_CHUNK])
            label[_widen(layer, r / 2) if value == 1 else layer] = value
        comfy.model_management.throw_exception_if_processing_interrupted()
        palette = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 0.2], [0.95, 0.15, 0.15], [0.15, 0.35, 0.95]])
        cols = (torch.arange(w) * cw // w).clamp(max=cw - 1)
        for y0 in range(0, h, _ROWS_PER_CHUNK):  # nearest upscale to the image, a band of rows at a time
            comfy.model_management.throw_exception_if_processing_interrupted()
            rows = (torch.arange(y0, min(h, y0 + _ROWS_PER_CHUNK)) * ch // h).clamp(max=ch - 1)
            band = label[rows][:, cols]
            drawn = band > 0
            img[y0:y0 + len(rows)][drawn] = palette[band[drawn].long()]
    return img.clamp_(0, 1)[None]


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
        raise DragonInputError(NODE, input_name, f"must be a file name, got {type(name).__name__}.",
                               "Leave it to the canvas editor, or send an empty string.")
    name = name.strip()
    if not name:
        return None
    if name[:5].lower() == "data:":  # URL schemes are case-insensitive
        # the canvas keeps strokes in the workflow until a queue uploads them (the page does that on Queue)
        raise DragonInputError(NODE, input_name, "holds brush strokes that were never uploaded (a data: URL).",
                               "Queue the workflow from the ComfyUI page, which uploads them, or export it in API "
                               "format from there; or name a PNG in ComfyUI's input folder.")
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


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# A brush layer may have at most this many pixels (8192 x 8192). Decoding one costs at peak about 6 bytes a pixel
# of the layer (its decoded RGBA and the two 8-bit channels kept from it) and, where the layer is stretched to
# another image size, about 10 bytes a pixel of the image (the channels resized in 8 bits, then as floats):
# measured by scripts/bench_preview.py --layer-mem 8192 (README, Limits). PIL's own decompression-bomb limit (89 M
# pixels) lies above it, so this check always speaks first.
MAX_LAYER_PIXELS = 8192 * 8192
# PNG greyscale of more than 8 bits: PIL opens it in one of these modes, values 0-65535 (a conversion to RGBA would
# clip them at 255: 300 of 65535 would read as full paint)
WIDE_GREY_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def png_size(input_name: str, name: str, path: str) -> tuple[int, int]:
    """(width, height) from a PNG's header, read before anything is decoded; a clear refusal for anything else."""
    fix = "Repaint the mask in the editor (it writes PNG brush layers), or clear it."
    try:
        with open(path, "rb") as f:
            head = f.read(24)
    except OSError:
        raise DragonInputError(NODE, input_name, f"{name[:80]!r} could not be read.", fix) from None
    if len(head) < 24 or head[:8] != PNG_SIGNATURE or head[12:16] != b"IHDR":
        raise DragonInputError(NODE, input_name, f"{name[:80]!r} is not a PNG file.", fix)
    w, h = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    if w * h > MAX_LAYER_PIXELS or w == 0 or h == 0:
        raise DragonInputError(NODE, input_name, f"{name[:80]!r} is {w}x{h} pixels; a brush layer may have at most "
                               f"{MAX_LAYER_PIXELS:,} ({int(MAX_LAYER_PIXELS ** 0.5)}x{int(MAX_LAYER_PIXELS ** 0.5)}).",
                               fix)
    return w, h


def load_layer(input_name: str, name: str, width: int, height: int) -> tuple[torch.Tensor, torch.Tensor, str | None] | None:
    """A painted brush layer as (value, coverage) [H, W] tensors, resized to the image with a note if needed."""
    path = input_file(input_name, name)
    if path is None:
        return None
    size = png_size(input_name, name, path)
    try:
        with Image.open(path, formats=["PNG"]) as im:
            if im.size != size:
                raise ValueError("header and image disagree")
            im.load()
            value, cover = _layer_channels(im, (width, height))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        # the message names the file as the user gave it; PIL's text may hold the server's paths
        raise DragonInputError(NODE, input_name, f"{name[:80]!r} is not a readable PNG ({type(e).__name__}).",
                               "Repaint the mask in the editor, or clear it.") from None
    note = None
    if size != (width, height):
        note = f"{input_name} was painted on a {size[0]}x{size[1]} image; stretched to {width}x{height}."
    return value, cover, note


def _layer_channels(im: Image.Image, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(value, coverage) of a decoded PNG as float [H, W] in 0-1 at `size` (width, height).

    Value is the red (or grey) channel scaled by its format's range, coverage the alpha (or the tRNS colour key;
    opaque without one). A layer of another size is resized bilinearly in its own 8- or 16-bit form, before
    anything becomes float, so memory grows with the image, not with both sizes in float."""
    stretch = im.size != size
    if im.mode in WIDE_GREY_MODES:
        key = im.info.get("transparency")
        grey = im.convert("F")  # exact for 16-bit values
        cover_im = None
        if isinstance(key, int):
            cover_im = Image.fromarray((np.asarray(im) != key).astype(np.uint8) * 255, "L")
        im.close()
        top = 65535.0
    else:
        rgba = im if im.mode == "RGBA" else im.convert("RGBA")  # palette, grey, RGB, 1-bit: PIL scales to 8 bits
        grey, cover_im = rgba.getchannel("R"), rgba.getchannel("A")
        del rgba
        im.close()  # the decoded image goes before anything else is made
        top = 255.0
    if stretch:
        grey = grey.resize(size, Image.BILINEAR)
        cover_im = cover_im.resize(size, Image.BILINEAR) if cover_im is not None else None
    value = torch.from_numpy(np.array(grey, dtype=np.float32)).div_(top)
    del grey
    if cover_im is None:
        cover = torch.ones_like(value)
    else:
        cover = torch.from_numpy(np.array(cover_im, dtype=np.float32)).div_(255.0)
    return value, cover


def compose(base: torch.Tensor | None, layer, height: int, width: int) -> torch.Tensor | None:
    """The upstream mask with the brush layer over it (painted pixels replace it where painted)."""
    if layer is None:
        return base
    value, cover, _ = layer
    below = base if base is not None else torch.zeros(height, width)
    return (below * (1 - cover) + value * cover).clamp(0, 1)


def _fit(input_name: str, m: torch.Tensor | None, w: int, h: int) -> torch.Tensor | None:
    """The upstream mask if it matches the image. Load Image's placeholder for a picture without alpha (64x64
    zeros) is no mask, silently: it is what every ordinary photo gives, nothing to warn about. Any other size
    mismatch is an error."""
    if m is None or tuple(m.shape) == (h, w):
        return m
    if tuple(m.shape) == LOAD_IMAGE_NO_MASK and float(m.max()) == 0.0:
        return None
    raise DragonInputError(NODE, input_name, f"is {m.shape[1]}x{m.shape[0]} but the image is {w}x{h}.",
                           "Paint the mask on this image or resize it to match.")


def _save_temp(img: torch.Tensor, prefix: str) -> dict:
    """A picture for the canvas, saved to ComfyUI's temp folder. Cancel is honoured while it is written: a large
    picture takes seconds to encode (8192x4096: about 7 s here), so the save runs on a worker thread (PNG encoding
    and the tensor conversion release the GIL) while this thread polls Cancel; a cancelled save finishes in the
    background into the temp folder, which ComfyUI clears."""
    return dict(interruptible(lambda: ui.ImageSaveHelper.save_images(
        img, filename_prefix=prefix, folder_type=io.FolderType.temp, cls=None, compress_level=1))[0])


def interruptible(fn, poll_s: float = 0.05):
    """fn() on a worker thread, returning its result or raising its error, and raising ComfyUI's interruption as
    soon as Cancel is pressed."""
    box: dict = {}

    def work():
        try:
            box["value"] = fn()
        except BaseException as e:  # handed to the caller's thread
            box["error"] = e

    worker = threading.Thread(target=work, name="dragon-save", daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(poll_s)
        comfy.model_management.throw_exception_if_processing_interrupted()
    if "error" in box:
        raise box["error"]
    return box["value"]


def canvas_ui(image: torch.Tensor, prefix: str, pairs, notes: list[str], mask: torch.Tensor | None = None,
              reference: torch.Tensor | None = None) -> dict:
    """The UI message for a node's canvas (web/js/dragon_editor.js): the picture, the upstream masks and the point
    pairs the run used. No "images" entry: the canvas shows the picture with its overlays (the Nodes 2.0 renderer
    would show a preview as a second picture under it); the preview output goes to a Preview Image."""
    def grey(m, name):
        return _save_temp(m[None, ..., None].expand(-1, -1, -1, 3), f"{prefix}_{name}") if m is not None else None

    _, h, w, _ = image.shape
    return {"dragon_editor": [{"image": _save_temp(image[:1, ..., :3], f"{prefix}_image"), "width": w, "height": h,
                               "mask": grey(mask, "mask"), "reference": grey(reference, "ref"),
                               "points": [[*p.handle, *p.target] for p in pairs], "notes": notes}]}


class MaskPointEditor(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DragonDiffusion_MaskPointEditor",
            display_name=NODE,
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
                io.Combo.Input("mask_color", options=list(MASK_COLORS), default="red", optional=True,
                               tooltip="Colour of the mask on the canvas and in the preview output (pick one that "
                                       "stands out from the object). The reference region is blue."),
                io.Float.Input("mask_opacity", default=DEFAULT_OPACITY, min=0.1, max=1.0, step=0.05, optional=True,
                               tooltip="Opacity of the mask and reference colours on the canvas and in the preview."),
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
                editor_reference="", mask_color="red", mask_opacity=DEFAULT_OPACITY) -> io.NodeOutput:
        if not isinstance(image, torch.Tensor) or image.ndim != 4:
            raise DragonInputError(NODE, "image", "must be an IMAGE.", "Connect Load Image (or any IMAGE output).")
        if image.shape[0] != 1:
            raise DragonInputError(NODE, "image", f"has a batch of {image.shape[0]}; the editor takes one image.",
                                   "Pick one image of the batch first (e.g. Image From Batch).")
        if mask_color not in MASK_COLORS:  # ComfyUI does not check V3 combo values
            raise DragonInputError(NODE, "mask_color", f"unknown colour {str(mask_color)[:40]!r}.",
                                   f"Choose one of {', '.join(MASK_COLORS)}.")
        if not isinstance(mask_opacity, (int, float)) or isinstance(mask_opacity, bool) or \
                not 0.0 < float(mask_opacity) <= 1.0:
            raise DragonInputError(NODE, "mask_opacity", f"must be a number in (0, 1], got {mask_opacity!r}.",
                                   f"Use {DEFAULT_OPACITY}.")
        _, h, w, _ = image.shape
        notes = []
        placed = parse_size(points_size) or (w, h)
        pairs = parse_points(NODE, "points", points, *placed)
        if placed != (w, h) and pairs:
            pairs = scale_points(pairs, placed, (w, h))
            notes.append(f"The points were placed on a {placed[0]}x{placed[1]} image; rescaled to this {w}x{h} image.")
        base = _fit("mask", single_mask(NODE, "mask", mask), w, h)
        base_ref = _fit("reference", single_mask(NODE, "reference", reference), w, h)
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
        preview = render_preview(image, out_mask if m is not None else None, dp, out_ref if ref is not None else None,
                                 mask_color, float(mask_opacity))
        return io.NodeOutput(out_mask, dp, preview, out_ref,
                             ui=canvas_ui(image, "dragon_editor", pairs, notes, base, base_ref))

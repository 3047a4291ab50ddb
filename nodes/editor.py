"""Mask/Point Editor (backend): points JSON + optional mask on an image -> guidance inputs + preview."""
from __future__ import annotations

import torch

from comfy_api.latest import io, ui

from ..dragon_core.errors import DragonInputError
from ..dragon_core.points import parse_points
from ..dragon_core.spec import DragPoints
from .common import single_mask
from .types import CATEGORY, DragonPointsType

NODE = "Mask/Point Editor"


def _disc(img: torch.Tensor, x: float, y: float, r: float, color) -> None:
    h, w = img.shape[:2]
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    sel = (xx + 0.5 - x) ** 2 + (yy + 0.5 - y) ** 2 <= r * r
    img[sel] = torch.tensor(color, dtype=img.dtype)


def _line(img: torch.Tensor, a, b, color, width: float) -> None:
    n = int(max(abs(b[0] - a[0]), abs(b[1] - a[1])) + 1)
    for t in torch.linspace(0, 1, max(n, 2)):
        _disc(img, a[0] + (b[0] - a[0]) * float(t), a[1] + (b[1] - a[1]) * float(t), width, color)


def render_preview(image: torch.Tensor, mask: torch.Tensor | None, points: DragPoints) -> torch.Tensor:
    """The image with the mask tinted and each handle (red) -> target (blue) drawn as an arrow."""
    img = image[0].clone().float()
    if mask is not None:
        m = (mask[0] > 0.5).float()[..., None]
        img = img * (1 - 0.35 * m) + torch.tensor([1.0, 1.0, 1.0]) * 0.35 * m
    r = max(2.0, min(points.width, points.height) / 80)
    for pr in points.pairs:
        _line(img, pr.handle, pr.target, (1.0, 1.0, 0.2), r / 2)
        _disc(img, *pr.handle, r, (0.95, 0.15, 0.15))
        _disc(img, *pr.target, r, (0.15, 0.35, 0.95))
    return img[None].clamp(0, 1)


class MaskPointEditor(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DragonDiffusion_MaskPointEditor",
            display_name="Mask/Point Editor",
            category=CATEGORY,
            description=(
                "Handle->target points and the editable/object mask for an image. Points are image pixels; "
                "they alternate handle, target."),
            inputs=[
                io.Image.Input("image", tooltip="The image being edited (the one you encode and invert)."),
                io.String.Input("points", default="[]", multiline=True,
                                tooltip='JSON, image pixels: [{"x":..,"y":..}, ...] alternating handle, target, '
                                        'or [{"handle":[x,y],"target":[x,y]}, ...].'),
                io.Mask.Input("mask", optional=True,
                              tooltip="Object (move/resize) or editable region (drag), e.g. from the mask editor of Load Image."),
            ],
            outputs=[
                io.Mask.Output(display_name="mask", tooltip="The mask at the image size (empty if none was given)."),
                DragonPointsType.Output(display_name="points", tooltip="The handle->target pairs for Dragon Guidance Setup."),
                io.Image.Output(display_name="preview", tooltip="The image with the mask and arrows drawn."),
            ],
        )

    @classmethod
    def execute(cls, image, points, mask=None) -> io.NodeOutput:
        if not isinstance(image, torch.Tensor) or image.ndim != 4:
            raise DragonInputError(NODE, "image", "must be an IMAGE.")
        if image.shape[0] != 1:
            raise DragonInputError(NODE, "image", f"has a batch of {image.shape[0]}; give one image.")
        _, h, w, _ = image.shape
        pairs = parse_points(NODE, "points", points, w, h)
        m = single_mask(NODE, "mask", mask)
        if m is not None and tuple(m.shape) != (h, w):
            raise DragonInputError(NODE, "mask", f"is {m.shape[1]}x{m.shape[0]} but the image is {w}x{h}.",
                                   "Paint the mask on this image or resize it to match.")
        out_mask = m[None] if m is not None else torch.zeros(1, h, w)
        dp = DragPoints(pairs=pairs, width=w, height=h)
        preview = render_preview(image, out_mask if mask is not None else None, dp)
        return io.NodeOutput(out_mask, dp, preview, ui=ui.PreviewImage(preview, cls=cls))

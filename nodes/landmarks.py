"""Dragon Landmarks: two point lists (or two detected poses/faces) -> point pairs for landmark mode."""
from __future__ import annotations

import torch

from comfy_api.latest import io

from ..dragon_core.errors import DragonInputError
from ..dragon_core.landmarks import POSE_PARTS, pair_landmarks, parse_point_list, pose_points
from ..dragon_core.spec import DragPoints
from .editor import canvas_ui, render_preview
from .types import CATEGORY, DragonPointsType

NODE = "Dragon Landmarks"
PoseKeypoint = io.Custom("POSE_KEYPOINT")


class DragonLandmarks(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DragonDiffusion_Landmarks",
            display_name="Dragon Landmarks",
            category=CATEGORY,
            description=(
                "Pairs a list of source points (e.g. this face's outline) with a list of target points (e.g. another "
                "face's) by position, for Dragon Guidance Setup's landmark mode. Click the pairs on the node's "
                "canvas, type them as JSON, or take them from a keypoint detector's POSE_KEYPOINT output "
                "(OpenPose/DWPose format). No mask is needed."),
            inputs=[
                io.Image.Input("image", tooltip="The image being edited (gives the size; the points are its pixels)."),
                io.String.Input("source_points", default="", multiline=True,
                                placeholder="source_points: where the landmarks are now, [[x, y], ...] in pixels",
                                tooltip='Where the landmarks are now, image pixels: [[x, y], ...] or [{"x":..,"y":..}, ...].'),
                io.String.Input("target_points", default="", multiline=True,
                                placeholder="target_points: where they should go, same order and count",
                                tooltip="Where they should go, same order and count as source_points."),
                io.Combo.Input("part", options=list(POSE_PARTS), default="face",
                               tooltip="Which keypoints of a POSE_KEYPOINT input to use."),
                PoseKeypoint.Input("source_keypoints", optional=True,
                                   tooltip="Replaces source_points: keypoints detected on this image (first person)."),
                PoseKeypoint.Input("target_keypoints", optional=True,
                                   tooltip="Replaces target_points: keypoints of the shape to match (first person), "
                                           "e.g. detected on another image of the same size."),
            ],
            outputs=[
                DragonPointsType.Output(display_name="points", tooltip="Source->target pairs for Dragon Guidance Setup."),
                io.Image.Output(display_name="preview", tooltip="The image with each source (red) -> target (blue) drawn."),
            ],
        )

    @classmethod
    def execute(cls, image, source_points, target_points, part, source_keypoints=None,
                target_keypoints=None) -> io.NodeOutput:
        if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[0] != 1:
            raise DragonInputError(NODE, "image", "must be one IMAGE.", "Connect Load Image (one image, not a batch).")
        _, h, w, _ = image.shape
        if source_keypoints is not None:
            src = pose_points(NODE, "source_keypoints", source_keypoints, part, w, h)
        else:
            src = parse_point_list(NODE, "source_points", source_points)
        if target_keypoints is not None:
            tgt = pose_points(NODE, "target_keypoints", target_keypoints, part, w, h)
        else:
            tgt = parse_point_list(NODE, "target_points", target_points)
        names = ("source_keypoints" if source_keypoints is not None else "source_points",
                 "target_keypoints" if target_keypoints is not None else "target_points")
        dp = DragPoints(pairs=pair_landmarks(NODE, src, tgt, w, h, names), width=w, height=h)
        preview = render_preview(image, None, dp)
        return io.NodeOutput(dp, preview, ui=canvas_ui(image, "dragon_landmarks", dp.pairs, []))

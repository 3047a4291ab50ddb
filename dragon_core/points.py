"""Parsing and validating handle->target points given as JSON."""
from __future__ import annotations

import json
import math

from .errors import DragonInputError
from .spec import PointPair

MAX_JSON_CHARS = 200_000
MAX_PAIRS = 512


def point_xy(node: str, input_name: str, obj, where: str) -> tuple[float, float]:
    """One point, {"x": .., "y": ..} or [x, y], as finite floats (not range-checked)."""
    if isinstance(obj, dict) and set(obj) >= {"x", "y"}:
        x, y = obj["x"], obj["y"]
    elif isinstance(obj, (list, tuple)) and len(obj) == 2:
        x, y = obj
    else:
        raise DragonInputError(node, input_name, f"{where} must be {{\"x\": .., \"y\": ..}} or [x, y], got {json.dumps(obj)[:80]}.",
                               "Write each point in one of those two forms.")
    if isinstance(x, bool) or isinstance(y, bool) or not isinstance(x, (int, float)) or not isinstance(y, (int, float)):
        raise DragonInputError(node, input_name, f"{where} has non-numeric coordinates {json.dumps(obj)[:80]}.",
                               "Give numbers: {\"x\": 10, \"y\": 20}.")
    try:  # a JSON integer may exceed any float (float() raises OverflowError)
        fx, fy = float(x), float(y)
    except OverflowError:
        raise DragonInputError(node, input_name, f"{where} has a coordinate too large to be a pixel position.",
                               "Give pixel positions inside the image.") from None
    if not (math.isfinite(fx) and math.isfinite(fy)):
        raise DragonInputError(node, input_name, f"{where} has a non-finite coordinate.",
                               "Give pixel positions inside the image.")
    return fx, fy


def load_json_list(node: str, input_name: str, text: str, example: str) -> list:
    """A JSON list from a STRING input ([] for blank text), bounded in size, or a clear error."""
    if not isinstance(text, str):
        raise DragonInputError(node, input_name, f"must be a JSON string, got {type(text).__name__}.",
                               'Send text like [{"x": 10, "y": 20}, {"x": 30, "y": 20}].')
    if len(text) > MAX_JSON_CHARS:
        raise DragonInputError(node, input_name, f"is {len(text)} characters long (limit {MAX_JSON_CHARS}).",
                               "Use fewer points.")
    stripped = text.strip()
    if not stripped:
        return []
    try:
        data = json.loads(stripped)
    except (ValueError, RecursionError) as e:
        raise DragonInputError(node, input_name, f"is not valid JSON ({str(e)[:120]}).", example) from None
    if not isinstance(data, list):
        raise DragonInputError(node, input_name, f"must be a JSON list, got {type(data).__name__}.",
                               'Write a list of points: [{"x": 10, "y": 20}, {"x": 30, "y": 20}].')
    return data


def parse_points(node: str, input_name: str, text: str, width: int, height: int) -> tuple[PointPair, ...]:
    """Points JSON -> pairs in image pixels.

    Accepted forms: a list of points alternating handle, target ([{"x":..,"y":..}, ...], as the
    points editor writes them), or a list of pairs ([{"handle": [x, y], "target": [x, y]}, ...]).
    Every coordinate must lie inside the image (0 <= x < width, 0 <= y < height).
    """
    data = load_json_list(node, input_name, text, 'Expected e.g. [{"x": 10, "y": 20}, {"x": 30, "y": 20}].')
    if not data:
        return ()
    if all(isinstance(p, dict) and ("handle" in p or "target" in p) for p in data):
        pairs = []
        for i, p in enumerate(data):
            if "handle" not in p or "target" not in p:
                raise DragonInputError(node, input_name, f"pair {i} needs both 'handle' and 'target'.",
                                       'Write it as {"handle": [x, y], "target": [x, y]}.')
            pairs.append(PointPair(point_xy(node, input_name, p["handle"], f"pair {i} handle"),
                                   point_xy(node, input_name, p["target"], f"pair {i} target")))
    else:
        pts = [point_xy(node, input_name, p, f"point {i}") for i, p in enumerate(data)]
        if len(pts) % 2:
            raise DragonInputError(node, input_name,
                                   f"has {len(pts)} points; points alternate handle, target, so the count must be even.",
                                   "Add the missing target or remove the last handle.")
        pairs = [PointPair(pts[i], pts[i + 1]) for i in range(0, len(pts), 2)]
    if len(pairs) > MAX_PAIRS:
        raise DragonInputError(node, input_name, f"has {len(pairs)} pairs (limit {MAX_PAIRS}).", "Give fewer pairs.")
    for i, pr in enumerate(pairs):
        for name, (x, y) in (("handle", pr.handle), ("target", pr.target)):
            if not (0 <= x < width and 0 <= y < height):
                raise DragonInputError(node, input_name,
                                       f"pair {i} {name} ({x:g}, {y:g}) is outside the {width}x{height} image.",
                                       "Coordinates are image pixels from the top-left corner.")
    return tuple(pairs)

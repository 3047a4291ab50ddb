"""Landmark lists (two equally long point lists, e.g. a face outline and another face's) -> point pairs."""
from __future__ import annotations


from .errors import DragonInputError
from .points import load_json_list, point_xy
from .spec import PointPair

MAX_POINTS = 512
POSE_PARTS = {"face": ("face_keypoints_2d",), "body": ("pose_keypoints_2d",),
              "hands": ("hand_left_keypoints_2d", "hand_right_keypoints_2d"),
              "all": ("pose_keypoints_2d", "face_keypoints_2d", "hand_left_keypoints_2d", "hand_right_keypoints_2d")}


def parse_point_list(node: str, input_name: str, text: str) -> list[tuple[float, float]]:
    """JSON [[x, y], ...] or [{"x": .., "y": ..}, ...] in image pixels -> points (not range-checked)."""
    data = load_json_list(node, input_name, text, 'Expected e.g. [[10, 20], [30, 40]] or [{"x": 10, "y": 20}].')
    return [point_xy(node, input_name, p, f"point {i}") for i, p in enumerate(data)]


def pose_points(node: str, input_name: str, pose, part: str, width: int, height: int
                ) -> list[tuple[float, float] | None]:
    """The first person of an OpenPose-style POSE_KEYPOINT (as DWPose/OpenPose preprocessors output) in image
    pixels; undetected keypoints (confidence 0) are None so that both lists stay aligned by index."""
    frame = pose[0] if isinstance(pose, list) and pose else pose
    people = frame.get("people") if isinstance(frame, dict) else None
    if not people:
        raise DragonInputError(node, input_name, "holds no person.", "Use an image where the detector finds one.")
    cw = float(frame.get("canvas_width") or width)
    ch = float(frame.get("canvas_height") or height)
    flat: list[float] = []
    for key in POSE_PARTS[part]:
        flat.extend(people[0].get(key) or [])
    if not flat:
        raise DragonInputError(node, input_name, f"has no {part} keypoints.", "Pick another part.")
    coords = [(flat[i], flat[i + 1], flat[i + 2]) for i in range(0, len(flat) - 2, 3)]
    normalised = all(0 <= x <= 1 and 0 <= y <= 1 for x, y, _ in coords)
    sx, sy = (width, height) if normalised else (width / cw, height / ch)
    return [(x * sx, y * sy) if c > 0 else None for x, y, c in coords]


def pair_landmarks(node: str, source: list, target: list, width: int, height: int,
                   names: tuple[str, str] = ("source_points", "target_points")) -> tuple[PointPair, ...]:
    """Pair two lists by index; undetected (None) entries drop their pair. Unequal lengths are an error."""
    if len(source) != len(target):
        raise DragonInputError(node, names[1], f"has {len(target)} points but {names[0]} has {len(source)}; "
                               "landmarks pair up by position, so both lists need the same length.",
                               "Give one target for every source point, in the same order.")
    pairs = []
    for i, (a, b) in enumerate(zip(source, target)):
        if a is None or b is None:
            continue
        for name, (x, y) in ((names[0], a), (names[1], b)):
            if not (0 <= x < width and 0 <= y < height):
                raise DragonInputError(node, name, f"point {i} ({x:g}, {y:g}) is outside the {width}x{height} image.",
                                       "Coordinates are image pixels from the top-left corner.")
        pairs.append(PointPair(a, b))
    if not pairs:
        raise DragonInputError(node, names[0], "gives no point pairs.", "Give at least one source and target point.")
    if len(pairs) > MAX_POINTS:
        raise DragonInputError(node, names[0], f"has {len(pairs)} pairs (limit {MAX_POINTS}).")
    return tuple(pairs)

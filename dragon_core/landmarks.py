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


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf")


def pose_points(node: str, input_name: str, pose, part: str, width: int, height: int
                ) -> list[tuple[float, float] | None]:
    """The first person of an OpenPose-style POSE_KEYPOINT (as DWPose/OpenPose preprocessors output) in image
    pixels; undetected keypoints (confidence 0) are None so that both lists stay aligned by index.

    The structure is checked: a frame (or a list of frames) with a `people` list whose first entry holds, per
    part, a flat list of x, y, confidence numbers (a multiple of three)."""
    fix = "Connect a POSE_KEYPOINT output of an OpenPose/DWPose preprocessor node."
    if part not in POSE_PARTS:
        raise DragonInputError(node, "part", f"unknown part {part!r}.", f"Choose one of {', '.join(POSE_PARTS)}.")
    if isinstance(pose, list) and not pose:
        raise DragonInputError(node, input_name, "is an empty list: it holds no frame, so no person.",
                               fix[:-1] + " run on an image where it finds a person.")
    frame = pose[0] if isinstance(pose, list) else pose
    if not isinstance(frame, dict):
        raise DragonInputError(node, input_name, f"is not a POSE_KEYPOINT (got {type(frame).__name__}).", fix)
    people = frame.get("people")
    if people is not None and not isinstance(people, list):
        raise DragonInputError(node, input_name, "has a 'people' entry that is not a list.", fix)
    if not people:
        raise DragonInputError(node, input_name, "holds no person.", "Use an image where the detector finds one.")
    person = people[0]
    if not isinstance(person, dict):
        raise DragonInputError(node, input_name, "has a person that is not a keypoint record.", fix)
    size = []
    for key, fallback in (("canvas_width", width), ("canvas_height", height)):
        v = frame.get(key) or fallback
        if not _number(v) or v <= 0:
            raise DragonInputError(node, input_name, f"has {key} {v!r}, not a positive number.", fix)
        size.append(float(v))
    cw, ch = size
    flat: list[float] = []
    for key in POSE_PARTS[part]:
        values = person.get(key) or []
        if not isinstance(values, list) or not all(_number(v) for v in values):
            raise DragonInputError(node, input_name, f"{key} is not a flat list of numbers.", fix)
        if len(values) % 3:
            raise DragonInputError(node, input_name, f"{key} has {len(values)} numbers, not x, y, confidence "
                                   "triples (a multiple of 3): its last keypoint is incomplete.", fix)
        flat.extend(float(v) for v in values)
    coords = [(flat[i], flat[i + 1], flat[i + 2]) for i in range(0, len(flat), 3)]
    if not any(c > 0 for _, _, c in coords):
        others = [k + 1 for k, p in enumerate(people[1:], start=1) if _detected(p, part)]
        if others:
            raise DragonInputError(node, input_name, f"has no detected {part} keypoints on its first person, but person "
                                   f"{others[0]} of {len(people)} has them; the landmarks are read from the first "
                                   "person only.", "Crop the image to the one person, or pick another part.")
        raise DragonInputError(node, input_name, f"has no detected {part} keypoints.", "Pick another part.")
    normalised = all(0 <= x <= 1 and 0 <= y <= 1 for x, y, _ in coords)
    sx, sy = (width, height) if normalised else (width / cw, height / ch)
    return [(x * sx, y * sy) if c > 0 else None for x, y, c in coords]


def _detected(person, part: str) -> bool:
    """Whether a person record holds at least one keypoint of `part` with a confidence above 0."""
    if not isinstance(person, dict):
        return False
    for key in POSE_PARTS[part]:
        values = person.get(key) or []
        if isinstance(values, list) and len(values) >= 3 and all(_number(v) for v in values):
            if any(values[i + 2] > 0 for i in range(0, len(values) - 2, 3)):
                return True
    return False


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
        raise DragonInputError(node, names[0], f"has {len(pairs)} pairs (limit {MAX_POINTS}).",
                               "Give fewer points (e.g. one part instead of all).")
    return tuple(pairs)

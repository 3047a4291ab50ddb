"""Fuzzing what users type or paint (points JSON, masks, mask files) and a scan for unsafe I/O.

Every input must end in a result or a clean DragonInputError naming the node and input, never in
another exception; no input may make the pack open a file outside ComfyUI's input folder; and
nothing in the pack unpickles.
"""
from __future__ import annotations

import ast
import json
import os
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import REPO

FUZZ = settings(max_examples=1000, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SMALL = settings(FUZZ, max_examples=200)

# ---------------------------------------------------------------------------------------------
# points JSON

finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
number = st.one_of(st.integers(min_value=-10**30, max_value=10**30), st.floats(), st.integers(-5, 200))
json_scalar = st.one_of(st.none(), st.booleans(), number, st.text(max_size=8))
json_value = st.recursive(json_scalar, lambda c: st.one_of(st.lists(c, max_size=4),
                                                           st.dictionaries(st.sampled_from(["x", "y", "handle",
                                                                                            "target", "z"]), c,
                                                                           max_size=4)), max_leaves=12)
xy = st.one_of(st.fixed_dictionaries({"x": number, "y": number}),
               st.fixed_dictionaries({"x": number, "y": number}, optional={"extra": json_scalar}),
               st.lists(number, min_size=2, max_size=2), st.lists(number, max_size=3), json_value)
pair = st.one_of(st.fixed_dictionaries({"handle": xy, "target": xy}),
                 st.fixed_dictionaries({}, optional={"handle": xy, "target": xy}))
points_doc = st.one_of(st.lists(xy, max_size=8), st.lists(pair, max_size=5), json_value)


def _dump(doc) -> str:
    return json.dumps(doc, allow_nan=True)


points_text = st.one_of(
    points_doc.map(_dump),
    st.text(max_size=200),
    st.text(alphabet="[]{},:\"xy0123456789.-eE NaInfity", max_size=120),
    st.integers(1, 3000).map(lambda n: "[" * n + "]" * (n % 7)),  # deep nesting
    st.integers(0, 500).map(lambda n: "[" + "9" * (n + 300) + ", 1]"),  # integers beyond float
)


def _check_clean(err, node: str, input_name: str) -> None:
    assert str(err).startswith(f"{node}: input '{input_name}': "), str(err)


@pytest.fixture(scope="module")
def core(comfy):
    return dict(points=comfy.module("dragon_core.points"), errors=comfy.module("dragon_core.errors"),
                spec=comfy.module("dragon_core.spec"), common=comfy.module("nodes.common"),
                guidance=comfy.module("nodes.guidance"), editor=comfy.module("nodes.editor"))


def test_parse_points_gives_pairs_inside_the_image_or_a_clean_error(core):
    parse, Err, PointPair = core["points"].parse_points, core["errors"].DragonInputError, core["spec"].PointPair

    @FUZZ
    @given(text=points_text, w=st.integers(1, 4096), h=st.integers(1, 4096))
    def run(text, w, h):
        try:
            pairs = parse("Dragon Mask/Point Editor", "points", text, w, h)
        except Err as e:
            _check_clean(e, "Dragon Mask/Point Editor", "points")
            return
        assert isinstance(pairs, tuple)
        for p in pairs:
            assert isinstance(p, PointPair)
            for x, y in (p.handle, p.target):
                assert isinstance(x, float) and isinstance(y, float) and 0 <= x < w and 0 <= y < h

    run()


# ---------------------------------------------------------------------------------------------
# POSE_KEYPOINT and CONDITIONING: structures that come from other packs' nodes

kp_list = st.one_of(st.lists(st.one_of(finite, st.integers(-10, 600)), max_size=14), json_value)
person = st.one_of(st.fixed_dictionaries({}, optional={k: kp_list for k in ("face_keypoints_2d", "pose_keypoints_2d",
                                                                            "hand_left_keypoints_2d")}), json_value)
frame = st.fixed_dictionaries({}, optional={"people": st.one_of(st.lists(person, max_size=2), json_value),
                                            "canvas_width": st.one_of(number, json_scalar),
                                            "canvas_height": st.one_of(number, json_scalar)})
pose_doc = st.one_of(frame, st.lists(frame, max_size=2), json_value)


def test_pose_keypoints_give_points_or_a_clean_error(comfy):
    lm, Err = comfy.module("dragon_core.landmarks"), comfy.module("dragon_core.errors").DragonInputError

    @FUZZ
    @given(pose=pose_doc, part=st.sampled_from(["face", "body", "hands", "all"]), w=st.integers(1, 2048),
           h=st.integers(1, 2048))
    def run(pose, part, w, h):
        try:
            pts = lm.pose_points("Dragon Landmarks", "source_keypoints", pose, part, w, h)
        except Err as e:
            _check_clean(e, "Dragon Landmarks", "source_keypoints")
            return
        assert pts and all(p is None or (isinstance(p[0], float) and isinstance(p[1], float)) for p in pts)

    run()


tensors = st.builds(lambda shape, fill: torch.full(shape, fill),
                    st.lists(st.integers(1, 4), min_size=0, max_size=4).map(tuple),
                    st.sampled_from([0.0, 1.0, float("nan"), float("inf")]))
cond_entry = st.one_of(st.tuples(tensors, st.dictionaries(st.text(max_size=4), json_scalar, max_size=2)).map(list),
                       st.lists(st.one_of(tensors, json_scalar), max_size=3), tensors, json_value)
cond_doc = st.one_of(st.lists(cond_entry, max_size=3), json_value, tensors)


def test_conditioning_is_taken_or_refused_cleanly(comfy):
    common, Err = comfy.module("nodes.common"), comfy.module("dragon_core.errors").DragonInputError

    @SMALL
    @given(cond=cond_doc)
    def run(cond):
        try:
            common.check_conditioning("Dragon Sampler", "positive", cond)
        except Err as e:
            _check_clean(e, "Dragon Sampler", "positive")
            return
        assert all(isinstance(c[0], torch.Tensor) and c[0].ndim == 3 and bool(torch.isfinite(c[0]).all()) for c in cond)

    run()


def test_parse_points_accepts_every_valid_document(core):
    """The flip side: well-formed points inside the image are never refused, in either form."""
    parse = core["points"].parse_points

    @SMALL
    @given(data=st.data(), w=st.integers(1, 2048), h=st.integers(1, 2048), as_pairs=st.booleans())
    def run(data, w, h, as_pairs):
        pts = data.draw(st.lists(st.tuples(st.floats(0, w, exclude_max=True), st.floats(0, h, exclude_max=True)),
                                 min_size=0, max_size=10).filter(lambda v: len(v) % 2 == 0))
        if as_pairs:
            doc = [{"handle": list(pts[i]), "target": list(pts[i + 1])} for i in range(0, len(pts), 2)]
        else:
            doc = [{"x": x, "y": y} for x, y in pts]
        pairs = parse("Dragon Mask/Point Editor", "points", json.dumps(doc), w, h)
        assert [c for p in pairs for c in (p.handle, p.target)] == [tuple(map(float, q)) for q in pts]

    run()


# ---------------------------------------------------------------------------------------------
# masks

dtypes = st.sampled_from([torch.float32, torch.float16, torch.float64, torch.bool, torch.uint8, torch.int64])
special = st.sampled_from([0.0, 1.0, 0.5, -1.0, 2.0, float("nan"), float("inf"), float("-inf"), 1e30])


@st.composite
def masks(draw, max_side=12):
    kind = draw(st.sampled_from(["tensor", "tensor", "tensor", "other"]))
    if kind == "other":
        return draw(st.one_of(st.none(), st.integers(), st.text(max_size=5), st.lists(st.floats(), max_size=3)))
    shape = draw(st.lists(st.integers(0, max_side), min_size=0, max_size=4))
    dtype = draw(dtypes)
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31)))
    t = torch.rand(shape, generator=g) if shape else torch.rand((), generator=g)
    if draw(st.booleans()) and t.numel():
        t.view(-1)[draw(st.integers(0, t.numel() - 1))] = draw(special)
    if dtype in (torch.bool, torch.uint8, torch.int64):
        t = torch.nan_to_num(t, nan=0.0, posinf=1.0, neginf=0.0).round()
    return t.to(dtype)


def test_single_mask_gives_a_clean_2d_mask_or_a_clean_error(core):
    single, Err = core["common"].single_mask, core["errors"].DragonInputError

    @FUZZ
    @given(mask=masks())
    def run(mask):
        try:
            m = single("Dragon Guidance Setup", "object_mask", mask)
        except Err as e:
            _check_clean(e, "Dragon Guidance Setup", "object_mask")
            return
        if mask is None:
            assert m is None
            return
        assert m.ndim == 2 and m.dtype == torch.float32 and torch.isfinite(m).all()
        if m.numel():
            assert float(m.min()) >= 0 and float(m.max()) <= 1

    run()


def test_guidance_setup_and_editor_take_any_mask_and_points_cleanly(core):
    """The two nodes that read masks and points, end to end on fuzzed inputs (small images)."""
    build_spec, Err = core["guidance"].build_spec, core["errors"].DragonInputError
    editor = core["editor"].MaskPointEditor
    DragPoints = core["spec"].DragPoints
    modes = [m for m in core["spec"].MODES if m in ("move", "resize", "drag")]

    sizes = st.one_of(st.just(""), st.text(max_size=12),
                      st.tuples(st.integers(-2, 20000), st.integers(-2, 20000)).map(lambda t: f"{t[0]}x{t[1]}"))

    @SMALL
    @given(mask=masks(), text=points_text, w=st.integers(1, 12), h=st.integers(1, 12), mode=st.sampled_from(modes),
           off=st.integers(-20, 20), scale=st.sampled_from([1.0, 0.5, 2.0]), size=sizes)
    def run(mask, text, w, h, mode, off, scale, size):
        image = torch.rand(1, h, w, 3)
        kw = {"points_size": size} if "points_size" in editor.execute.__func__.__code__.co_varnames else {}
        try:
            out = editor.execute(image=image, points=text, mask=mask, **kw)
            assert tuple(out.result[0].shape) == (1, h, w)
            pts = out.result[1]
        except Err as e:
            assert str(e).startswith("Dragon Mask/Point Editor: input '"), str(e)
            pts = DragPoints(pairs=(), width=w, height=h)
        try:
            build_spec(mode, object_mask=mask, points=pts, offset_x=off, scale=scale)
        except Err as e:
            assert str(e).startswith("Dragon Guidance Setup: input '"), str(e)

    run()


# ---------------------------------------------------------------------------------------------
# files: nothing outside ComfyUI's input folder is ever opened

_opened: list[str] | None = None


def _audit(event, args):
    if _opened is not None and event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        path = os.fsdecode(args[0])
        if not path.endswith((".py", ".pyc")):  # lazy module imports (PIL's plugins) are not the pack's reads
            _opened.append(path)


@pytest.fixture(scope="module")
def input_dir(tmp_path_factory, comfy):
    """A throw-away ComfyUI input folder with an image, a non-image, and a symlink leading outside."""
    import folder_paths
    from PIL import Image

    Image.init()  # load every image plugin now, not during the audited calls

    root = tmp_path_factory.mktemp("fuzz_io")
    inp, outside = root / "input", root / "outside"
    (inp / "sub").mkdir(parents=True)
    outside.mkdir()
    Image.new("RGBA", (8, 8), (255, 0, 0, 255)).save(inp / "sub" / "x.png")
    Image.new("RGBA", (8, 8), (255, 0, 0, 255)).save(outside / "secret.png")
    (inp / "bad.png").write_bytes(b"not an image")
    (inp / "link_out").symlink_to(outside, target_is_directory=True)
    (inp / "link_file.png").symlink_to(outside / "secret.png")
    old = folder_paths.get_input_directory()
    folder_paths.set_input_directory(str(inp))
    yield inp
    folder_paths.set_input_directory(old)


segment = st.sampled_from(["..", ".", "sub", "x.png", "bad.png", "link_out", "link_file.png", "secret.png", "",
                           "missing.png", "~", "%2e%2e", "..\\..", "C:", "\x00", "input", "outside"])
file_names = st.one_of(
    st.lists(segment, min_size=1, max_size=6).map("/".join),
    st.tuples(st.sampled_from(["", "/", "\\\\server\\", "C:\\", "file://"]), st.lists(segment, max_size=5).map("/".join),
              st.sampled_from(["", " [input]", " [output]", " [temp]", "  "])).map("".join),
    st.text(max_size=40),
    st.just(str(Path("/etc/passwd"))),
)


def test_mask_files_are_only_ever_read_inside_the_input_folder(core, input_dir):
    global _opened
    ed = core["editor"]
    if not hasattr(ed, "load_layer"):
        pytest.skip("the Dragon Mask/Point Editor reads no files in this version")
    Err = core["errors"].DragonInputError
    base = os.path.realpath(input_dir)
    sys.addaudithook(_audit)

    @SMALL
    @given(name=file_names)
    def run(name):
        global _opened
        _opened = []
        try:
            layer = ed.load_layer("mask_layer", name, 8, 8)
        except Err as e:
            assert str(e).startswith("Dragon Mask/Point Editor: input 'mask_layer': "), str(e)
            layer = None
        finally:
            opened, _opened = _opened, None
        for p in opened:
            real = os.path.realpath(p)
            assert os.path.commonpath([base, real]) == base, f"{name!r} opened {real} outside the input folder"
        if layer is not None:
            assert opened, "a layer came back without reading a file"

    try:
        run()
    finally:
        _opened = None
    # and the good case does read the file
    assert ed.load_layer("mask_layer", "sub/x.png", 8, 8) is not None


def test_brush_layers_of_any_png_mode_and_size_read_in_0_1_or_refuse_cleanly(core, input_dir):
    """Brush layers arrive from any tool that writes PNG: 1-bit, grey, grey+alpha, palette (with or without
    transparency), RGB, RGBA, 16-bit grey (with or without a colour key), any size against any image size. Each
    reads as finite value and coverage in 0-1 at the image's size, or refuses with the node and input named."""
    import numpy as np
    from PIL import Image

    ed, Err = core["editor"], core["errors"].DragonInputError
    path = os.path.join(input_dir, "fuzz_layer.png")

    @SMALL
    @given(mode=st.sampled_from(["1", "L", "LA", "P", "RGB", "RGBA", "I;16"]), lw=st.integers(1, 40),
           lh=st.integers(1, 40), w=st.integers(1, 48), h=st.integers(1, 48), seed=st.integers(0, 2**31 - 1),
           key=st.booleans())
    def run(mode, lw, lh, w, h, seed, key):
        rng = np.random.default_rng(seed)
        if mode == "I;16":
            im = Image.fromarray(rng.integers(0, 65536, (lh, lw), dtype=np.uint16))
            extra = dict(transparency=int(rng.integers(0, 65536))) if key else {}
        else:
            im = Image.fromarray(rng.integers(0, 256, (lh, lw, 4), dtype=np.uint8), "RGBA").convert(mode)
            extra = dict(transparency=int(rng.integers(0, 256))) if key and mode in ("P", "L") else {}
        im.save(path, **extra)
        try:
            value, cover, note = ed.load_layer("editor_mask", "fuzz_layer.png", w, h)
        except Err as e:
            _check_clean(e, "Dragon Mask/Point Editor", "editor_mask")
            return
        for t in (value, cover):
            assert t.shape == (h, w) and t.dtype == torch.float32 and bool(torch.isfinite(t).all())
            assert float(t.min()) >= 0.0 and float(t.max()) <= 1.0
        assert (note is None) == ((lw, lh) == (w, h))

    run()


# ---------------------------------------------------------------------------------------------
# static scan: no unpickling, no unchecked file access

FORBIDDEN_MODULES = {"pickle", "cPickle", "_pickle", "dill", "joblib", "marshal", "shelve", "cloudpickle",
                     "subprocess", "requests", "urllib", "http", "socket"}
FORBIDDEN_CALLS = {"eval", "exec", "compile", "__import__", "os.system", "os.popen", "os.exec", "torch.jit.load"}
# every place the pack touches a file, and why it cannot be steered outside ComfyUI's folders
FILE_CALLS = {"open", "Image.open", "load_file", "safe_open", "save_file", "torch.save", "np.save", "np.savez",
              "load_torch_file", "os.remove", "os.unlink", "os.rename", "os.replace", "os.makedirs", "os.mkdir",
              "shutil", "read_text", "write_text", "read_bytes", "write_bytes", "save", "os.symlink"}
ALLOWED_FILE_ACCESS = {
    ("nodes/editor.py", "Image.open"): "the path comes from input_file(), which refuses anything outside the input "
                                       "folder (fuzzed above)",
    ("nodes/editor.py", "open"): "png_size() reads the first 24 bytes of the path input_file() returned (inside the "
                                 "input folder), before anything is decoded",
    ("toy/dragon_toy/model.py", "safe_open"): "the toy model's weights (safetensors, read only): the bundled file, or "
                                              "$DRAGON_TOY_WEIGHTS set by whoever starts the server, never a prompt input",
    ("toy/dragon_toy/dit.py", "load_file"): "the toy DiT's weights (safetensors, read only): the bundled file, or "
                                            "$DRAGON_TOY_DIT_WEIGHTS set by whoever starts the server, never a prompt input",
}


SHIPPED = ("__init__.py", "nodes", "dragon_core", "toy")  # what ComfyUI loads (tests/, scripts/, bench/ are dev tools)


def _pack_files() -> list[Path]:
    files = [REPO / "__init__.py"]
    for d in SHIPPED[1:]:
        files += [p for p in (REPO / d).rglob("*.py") if "__pycache__" not in p.parts]
    return sorted(files)


def _name(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _name(node.value)
        return f"{inner}.{node.attr}" if inner else node.attr
    if isinstance(node, ast.Call):
        return _name(node.func)
    return ""


def _kw(call: ast.Call, name: str):
    for k in call.keywords:
        if k.arg == name:
            return k.value.value if isinstance(k.value, ast.Constant) else "<expr>"
    return None


def test_pack_never_unpickles_and_touches_files_only_where_reviewed():
    problems, file_access = [], set()
    files = _pack_files()
    assert any(f.parts[-2:] == ("nodes", "editor.py") for f in files)
    for f in files:
        rel = f.relative_to(REPO).as_posix()
        tree = ast.parse(f.read_text(), filename=rel)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                for m in mods:
                    if m.split(".")[0] in FORBIDDEN_MODULES:
                        problems.append(f"{rel}:{node.lineno} imports {m}")
            if not isinstance(node, ast.Call):
                continue
            name = _name(node.func)
            last = name.rsplit(".", 1)[-1]
            if name in FORBIDDEN_CALLS:
                problems.append(f"{rel}:{node.lineno} calls {name}")
            if last == "load" and name.split(".")[0] == "torch" and _kw(node, "weights_only") is not True:
                problems.append(f"{rel}:{node.lineno} torch.load without weights_only=True")
            if name.endswith("np.load") or name == "numpy.load":
                if _kw(node, "allow_pickle") not in (None, False):
                    problems.append(f"{rel}:{node.lineno} np.load with allow_pickle")
                file_access.add((rel, "np.load"))
            if last == "load_torch_file" and _kw(node, "safe_load") is not True:
                problems.append(f"{rel}:{node.lineno} load_torch_file without safe_load=True")
            hits = {fc for fc in FILE_CALLS
                    if name == fc or name.endswith("." + fc) or (fc == "shutil" and name.startswith("shutil."))}
            if len(hits) > 1:
                hits.discard("open")  # Image.open also ends in .open
            file_access |= {(rel, fc) for fc in hits}
    unreviewed = sorted(file_access - set(ALLOWED_FILE_ACCESS))
    problems += [f"{rel}: {call} is not in ALLOWED_FILE_ACCESS (check that no input can steer the path outside "
                 f"ComfyUI's input/output folders, then add it with the reason)" for rel, call in unreviewed]
    assert not problems, "\n".join(problems)

"""Mask/Point Editor backend: points validation and rescaling, brush layers from ComfyUI's input folder."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

W, H = 48, 32


@pytest.fixture()
def ed(comfy):
    return comfy.module("nodes.editor")


@pytest.fixture()
def errors(comfy):
    return comfy.module("dragon_core.errors")


@pytest.fixture()
def input_dir(comfy, tmp_path):
    """A fresh ComfyUI input folder for the test (restored afterwards)."""
    import folder_paths

    old = folder_paths.get_input_directory()
    d = tmp_path / "input"
    d.mkdir()
    folder_paths.set_input_directory(str(d))
    yield d
    folder_paths.set_input_directory(old)


def _img():
    return torch.rand(1, H, W, 3)


def _layer(path, value: np.ndarray, cover: np.ndarray):
    """An editor brush layer: alpha = brushed, red = paint (255) / erase (0)."""
    rgba = np.zeros(value.shape + (4,), np.uint8)
    rgba[..., 0] = (value * 255).round()
    rgba[..., 3] = (cover * 255).round()
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgba, "RGBA").save(path)


def _run(ed, points="[]", **kw):
    out = ed.MaskPointEditor.execute(kw.pop("image", None) if "image" in kw else _img(), points, **kw)
    return out


@pytest.mark.parametrize("points,match", [
    ("[{'x': 1}]", "not valid JSON"),
    ('{"x": 1, "y": 2}', "must be a JSON list"),
    ('[{"x": 1, "y": 2}]', "count must be even"),
    ('[{"x": 1, "y": 2}, {"x": 48, "y": 2}]', "outside the 48x32 image"),
    ('[{"x": -1, "y": 2}, {"x": 4, "y": 2}]', "outside"),
    ('[[1, 2, 3], [4, 5, 6]]', "must be"),
    ('[{"x": "a", "y": 2}, {"x": 4, "y": 2}]', "non-numeric"),
    ('[{"handle": [1, 2]}]', "needs both 'handle' and 'target'"),
])
def test_bad_points_are_a_clear_error_naming_the_input(ed, errors, points, match):
    with pytest.raises(errors.DragonInputError) as e:
        _run(ed, points)
    msg = str(e.value)
    assert "Mask/Point Editor" in msg and "'points'" in msg and match in msg, msg


@pytest.mark.parametrize("size", ["abc", "0x10", "10x", "99999x10", "12,10"])
def test_bad_points_size_is_a_clear_error(ed, errors, size):
    with pytest.raises(errors.DragonInputError, match="'points_size'.*WIDTHxHEIGHT"):
        _run(ed, "[]", points_size=size)


def test_points_placed_on_another_image_size_are_rescaled_with_a_note(ed, caplog):
    pts = json.dumps([{"x": 10, "y": 20}, {"x": 90, "y": 60}])
    # placed on a 96x64 image, the image is now 48x32: halved, and the note is in the UI message and the log
    out = _run(ed, pts, points_size="96x64")
    dp = out.args[1]
    assert [(p.handle, p.target) for p in dp.pairs] == [((5.0, 10.0), (45.0, 30.0))]
    st = out.ui["dragon_editor"][0]
    assert st["points"] == [[5.0, 10.0, 45.0, 30.0]]
    assert any("96x64" in n and "rescaled" in n for n in st["notes"]), st["notes"]
    assert any("rescaled" in r.getMessage() for r in caplog.records)
    # the same size: nothing changes, no note
    out = _run(ed, json.dumps([{"x": 10, "y": 20}, {"x": 40, "y": 30}]), points_size=f"{W}x{H}")
    assert out.args[1].pairs[0].handle == (10.0, 20.0) and out.ui["dragon_editor"][0]["notes"] == []
    # out of range for the size they were placed on is still an error
    with pytest.raises(Exception, match="outside the 96x64 image"):
        _run(ed, json.dumps([{"x": 10, "y": 20}, {"x": 96, "y": 60}]), points_size="96x64")


def test_brush_layer_paints_and_erases_over_the_upstream_mask(ed, input_dir):
    base = torch.zeros(1, H, W)
    base[:, 0:16, 0:24] = 1.0  # upstream box
    value = np.zeros((H, W))
    cover = np.zeros((H, W))
    value[20:30, 30:40] = 1.0
    cover[20:30, 30:40] = 1.0  # painted
    cover[0:8, 0:8] = 1.0  # erased (value 0) inside the upstream box
    _layer(input_dir / "dragon_editor" / "m.png", value, cover)
    out = _run(ed, "[]", mask=base, editor_mask="dragon_editor/m.png")
    m = out.args[0][0]
    want = base[0].clone()
    want[20:30, 30:40] = 1.0
    want[0:8, 0:8] = 0.0
    assert torch.equal(m, want)
    assert torch.equal(out.args[3], torch.zeros(1, H, W))  # no reference
    st = out.ui["dragon_editor"][0]
    assert st["mask"]["type"] == "temp" and st["image"]["type"] == "temp" and st["reference"] is None
    assert out.ui["images"], "the node still sends its preview image"


def test_reference_layer_without_upstream_and_the_annotated_name(ed, input_dir):
    value = np.zeros((H, W))
    value[5:10, 5:10] = 1.0
    _layer(input_dir / "dragon_editor" / "r.png", value, value)
    out = _run(ed, "[]", editor_reference="dragon_editor/r.png [input]")
    ref = out.args[3][0]
    assert ref.sum() == 25 and ref[5:10, 5:10].min() == 1.0
    assert out.args[0].sum() == 0  # the object mask stays empty


def test_a_layer_of_another_size_is_stretched_with_a_note(ed, input_dir):
    value = np.zeros((H * 2, W * 2))
    value[:, : W] = 1.0  # left half painted
    _layer(input_dir / "big.png", value, np.ones_like(value))
    out = _run(ed, "[]", editor_mask="big.png")
    m = out.args[0][0]
    assert m.shape == (H, W) and m[:, : W // 2 - 1].min() == 1.0 and m[:, W // 2 + 1:].max() == 0.0
    assert any("stretched" in n for n in out.ui["dragon_editor"][0]["notes"])


@pytest.mark.parametrize("name,match", [
    ("../secret.png", "outside ComfyUI's input folder"),
    ("dragon_editor/../../secret.png", "outside ComfyUI's input folder"),
    ("/etc/passwd", "not a relative path"),
    ("link/secret.png", "outside ComfyUI's input folder"),
    ("x.png [output]", "not in ComfyUI's input folder"),
    ("missing.png", "was not found"),
    ("notimage.png", "not a readable image"),
])
def test_layer_files_outside_the_input_folder_are_refused(ed, errors, input_dir, tmp_path, name, match):
    secret = tmp_path / "secret.png"
    _layer(secret, np.ones((H, W)), np.ones((H, W)))
    (input_dir / "link").mkdir()
    os.symlink(secret, input_dir / "link" / "secret.png")
    (input_dir / "notimage.png").write_text("not a png")
    with pytest.raises(errors.DragonInputError) as e:
        _run(ed, "[]", editor_mask=name)
    assert "'editor_mask'" in str(e.value) and match in str(e.value), str(e.value)


def test_fingerprint_follows_the_layer_file(ed, input_dir):
    p = input_dir / "m.png"
    _layer(p, np.zeros((H, W)), np.zeros((H, W)))
    a = ed.MaskPointEditor.fingerprint_inputs(editor_mask="m.png", editor_reference="")
    assert ed.MaskPointEditor.fingerprint_inputs(editor_mask="m.png", editor_reference="") == a
    _layer(p, np.ones((H, W)), np.ones((H, W)))
    os.utime(p, ns=(1, 1))  # a rewrite under the same name
    assert ed.MaskPointEditor.fingerprint_inputs(editor_mask="m.png", editor_reference="") != a


def test_old_inputs_still_work(ed):
    """Workflows from before the canvas editor: image, points, optional mask only."""
    m = torch.zeros(1, H, W)
    m[:, 4:8, 4:8] = 1
    out = ed.MaskPointEditor.execute(_img(), '[{"x": 1, "y": 2}, {"x": 3, "y": 4}]', m)
    assert torch.equal(out.args[0], m) and len(out.args[1].pairs) == 1 and out.args[2].shape == (1, H, W, 3)


def test_load_images_empty_placeholder_mask_counts_as_none_other_mismatches_are_errors(ed, errors):
    """Load Image gives a 64x64 zero mask for a picture without alpha: that is 'no mask', said in a note."""
    out = _run(ed, "[]", mask=torch.zeros(1, 64, 64))
    assert out.args[0].shape == (1, H, W) and out.args[0].sum() == 0
    assert any("empty 64x64 mask" in n for n in out.ui["dragon_editor"][0]["notes"])
    with pytest.raises(errors.DragonInputError, match="'mask': is 64x64 but the image is 48x32"):
        _run(ed, "[]", mask=torch.ones(1, 64, 64))
    with pytest.raises(errors.DragonInputError, match="'mask': is 16x16 but the image is 48x32"):
        _run(ed, "[]", mask=torch.zeros(1, 16, 16))  # only Load Image's placeholder is let through
    with pytest.raises(errors.DragonInputError, match="'reference': is 64x64 but the image is 48x32"):
        _run(ed, "[]", reference=torch.ones(1, 64, 64))

"""Dragon Mask/Point Editor backend: points validation and rescaling, brush layers from ComfyUI's input folder."""
from __future__ import annotations

import json
import os
import time

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
    assert "Dragon Mask/Point Editor" in msg and "'points'" in msg and match in msg, msg


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
    assert "images" not in out.ui  # the canvas shows the picture; no second copy under it (Nodes 2.0)


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


def test_a_16_bit_grey_layer_is_scaled_not_clipped(ed, input_dir):
    """PNG greyscale of 16 bits is paint in 0-65535: 300 is a trace (0.0046), not full paint (a conversion to RGBA
    clipped every value above 255 to 1). Without alpha the layer covers everything; a tRNS colour key uncovers
    its pixels. Stretched to the image, it keeps its 16-bit scale."""
    a = np.zeros((H, W), np.uint16)
    a[:, :16] = 300
    a[:, 16:32] = 65535
    a[:, 32:] = 32768
    Image.fromarray(a).save(input_dir / "g16.png")
    assert Image.open(input_dir / "g16.png").mode in ed.WIDE_GREY_MODES
    value, cover, note = ed.load_layer("editor_mask", "g16.png", W, H)
    assert note is None and bool((cover == 1).all())
    assert float(value[0, 0]) == pytest.approx(300 / 65535) and float(value[0, 20]) == 1.0
    assert float(value[0, 40]) == pytest.approx(32768 / 65535)
    im = Image.fromarray(a)
    im.info["transparency"] = 300
    im.save(input_dir / "g16key.png", transparency=300)
    value, cover, _ = ed.load_layer("editor_mask", "g16key.png", W, H)
    assert float(cover[:, :16].max()) == 0.0 and float(cover[:, 16:].min()) == 1.0
    value, cover, note = ed.load_layer("editor_mask", "g16.png", W * 2, H * 2)
    assert "stretched" in note and float(value[5, 5]) == pytest.approx(300 / 65535, rel=1e-3)
    assert float(value[5, 45]) == 1.0 and float(value[5, 90]) == pytest.approx(32768 / 65535, rel=1e-3)


def test_a_palette_layer_reads_its_colours_and_transparency(ed, input_dir):
    idx = np.zeros((H, W), np.uint8)
    idx[:, 24:] = 1
    idx[:4, :4] = 2
    im = Image.fromarray(idx, "P")
    im.putpalette([0, 0, 0, 255, 255, 255, 128, 128, 128] + [0] * (256 * 3 - 9))
    im.save(input_dir / "pal.png", transparency=bytes([255, 255, 0] + [255] * 253))
    value, cover, _ = ed.load_layer("editor_mask", "pal.png", W, H)
    assert float(value[10, 0]) == 0.0 and float(value[10, 30]) == 1.0
    assert float(cover[10, 0]) == 1.0 and float(cover[0, 0]) == 0.0  # index 2 is transparent


@pytest.mark.parametrize("name,match", [
    ("../secret.png", "outside ComfyUI's input folder"),
    ("dragon_editor/../../secret.png", "outside ComfyUI's input folder"),
    ("/etc/passwd", "not a relative path"),
    ("link/secret.png", "outside ComfyUI's input folder"),
    ("x.png [output]", "not in ComfyUI's input folder"),
    ("missing.png", "was not found"),
    ("notimage.png", "is not a PNG file"),
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


def _png_header(w: int, h: int) -> bytes:
    """The first bytes of a PNG of w x h (signature + IHDR), as PIL writes them."""
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))


@pytest.mark.parametrize("kind,match", [
    ("huge", "13000x13000 pixels; a brush layer may have at most 67,108,864 (8192x8192)"),
    ("jpeg", "is not a PNG file"),
    ("postscript", "is not a PNG file"),
    ("truncated", "is not a readable PNG"),
])
def test_brush_layer_must_be_a_png_of_bounded_size_checked_before_decoding(ed, errors, input_dir, kind, match):
    """A 13000x13000 PNG of a few KB once made the server decode 8 GB; other formats were decoded by content
    (a PostScript file named .png made PIL look for Ghostscript). Now: the header is read first, the size
    refused before any decoding, and only PNG is decoded; no message holds the server's paths."""
    p = input_dir / "layer.png"
    if kind == "huge":
        p.write_bytes(_png_header(13000, 13000) + b"\x00" * 64)
    elif kind == "jpeg":
        Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(p, format="JPEG")
    elif kind == "postscript":
        p.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n")
    else:
        p.write_bytes(_png_header(W, H) + b"\x00" * 10)
    with pytest.raises(errors.DragonInputError) as e:
        _run(ed, "[]", editor_mask="layer.png")
    msg = str(e.value)
    assert "'editor_mask'" in msg and match in msg and str(input_dir) not in msg, msg


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
    """Load Image gives a 64x64 zero mask for a picture without alpha: that is 'no mask', without a warning (every
    ordinary photo gives it)."""
    out = _run(ed, "[]", mask=torch.zeros(1, 64, 64))
    assert out.args[0].shape == (1, H, W) and out.args[0].sum() == 0
    assert out.ui["dragon_editor"][0]["notes"] == []
    with pytest.raises(errors.DragonInputError, match="'mask': is 64x64 but the image is 48x32"):
        _run(ed, "[]", mask=torch.ones(1, 64, 64))
    with pytest.raises(errors.DragonInputError, match="'mask': is 16x16 but the image is 48x32"):
        _run(ed, "[]", mask=torch.zeros(1, 16, 16))  # only Load Image's placeholder is let through
    with pytest.raises(errors.DragonInputError, match="'reference': is 64x64 but the image is 48x32"):
        _run(ed, "[]", reference=torch.ones(1, 64, 64))


def _pairs(comfy, pairs, w, h):
    sp = comfy.module("dragon_core.spec")
    return sp.DragPoints(pairs=tuple(sp.PointPair(a, b) for a, b in pairs), width=w, height=h)


@pytest.mark.parametrize("size", [(96, 64), (3000, 2000)])
def test_preview_draws_handles_targets_and_the_arrow_where_they_are(ed, comfy, size):
    """On a small image the overlay is drawn at full size; on a large one on a smaller canvas scaled up (the
    cost must not grow with arrow length x image pixels); either way the handle is red, the target blue, the
    arrow's middle yellow, and a pixel far from them keeps the image's colour with the mask's tint."""
    w, h = size
    img = torch.full((1, h, w, 3), 0.5)
    mask = torch.zeros(1, h, w)
    mask[:, : h // 8, : w // 8] = 1
    a, b = (0.2 * w, 0.5 * h), (0.8 * w, 0.6 * h)
    out = ed.render_preview(img, mask, _pairs(comfy, [(a, b)], w, h))[0]
    assert out.shape == (h, w, 3)

    def at(x, y):
        return out[int(y), int(x)].tolist()

    assert at(*a) == pytest.approx([0.95, 0.15, 0.15])
    assert at(*b) == pytest.approx([0.15, 0.35, 0.95])
    assert at((a[0] + b[0]) / 2, (a[1] + b[1]) / 2) == pytest.approx([1.0, 1.0, 0.2])
    red = ed.MASK_COLORS["red"]
    assert at(w * 0.05, h * 0.05) == pytest.approx([0.5 * 0.55 + 0.45 * c for c in red])  # masked: the default tint
    assert at(w * 0.5, h * 0.95) == pytest.approx([0.5] * 3)  # untouched


@pytest.mark.parametrize("color,opacity", [("green", 0.45), ("black", 0.9), ("white", 0.2)])
def test_the_preview_shows_the_mask_in_the_colour_and_opacity_chosen_for_the_canvas(ed, color, opacity):
    img = _img()
    mask = torch.zeros(1, H, W)
    mask[:, 4:12, 6:20] = 1
    ref = torch.zeros(1, H, W)
    ref[:, 20:28, 30:40] = 1
    out = _run(ed, image=img, mask=mask, reference=ref, mask_color=color, mask_opacity=opacity)
    prev = out.args[2][0]
    c = torch.tensor(ed.MASK_COLORS[color])
    assert torch.allclose(prev[8, 10], img[0, 8, 10] * (1 - opacity) + c * opacity, atol=1e-6)
    blue = torch.tensor(ed.REFERENCE_COLOR)
    assert torch.allclose(prev[24, 35], img[0, 24, 35] * (1 - opacity) + blue * opacity, atol=1e-6)
    assert torch.equal(prev[30, 2], img[0, 30, 2])


@pytest.mark.parametrize("kw,match", [(dict(mask_color="purple"), "mask_color"), (dict(mask_opacity=0.0), "mask_opacity"),
                                      (dict(mask_opacity=float("nan")), "mask_opacity"),
                                      (dict(editor_mask="data:image/png;base64,iVBORw0KGgo="), "never uploaded"),
                                      (dict(editor_mask="DATA:image/png;base64,iVBORw0KGgo="), "never uploaded")])
def test_overlay_settings_and_unuploaded_strokes_are_refused_clearly(ed, errors, kw, match):
    with pytest.raises(errors.DragonInputError, match=match):
        _run(ed, **kw)


def test_preview_of_many_long_arrows_on_a_large_image_is_bounded(ed, comfy):
    """512 corner-to-corner pairs on a 2048x2048 image: drawing each arrow at full size cost its length times
    the image's pixels (about 100 s for one pair at this size, hours for 512); the canvas drawing takes about
    a second here (scripts/bench_preview.py times it). The alarm only turns such a hang into a failure."""
    import signal

    n, s = 512, 2048
    pairs = [((float(i % 64), float(i // 64)), (float(s - 1 - i % 64), float(s - 1 - i // 64))) for i in range(n)]

    def too_slow(*_):
        raise TimeoutError("preview rendering did not finish in 60 s")

    old = signal.signal(signal.SIGALRM, too_slow)
    signal.alarm(60)
    try:
        out = ed.render_preview(torch.zeros(1, s, s, 3), None, _pairs(comfy, pairs, s, s))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert out[0, s // 2, s // 2].tolist() == pytest.approx([1.0, 1.0, 0.2])  # the arrows cross the middle


def test_preview_honours_cancel(ed, comfy):
    import comfy.model_management as mm

    mm.interrupt_current_processing(True)  # what the Cancel button does
    try:
        with pytest.raises(mm.InterruptProcessingException):
            ed.render_preview(torch.zeros(1, 64, 64, 3), None, _pairs(comfy, [((1.0, 1.0), (60.0, 60.0))], 64, 64))
    finally:
        mm.interrupt_current_processing(False)


@pytest.mark.parametrize("node", ["editor", "landmarks"])
def test_cancel_while_the_canvas_picture_is_written(ed, comfy, monkeypatch, node):
    """Writing a large picture for the canvas takes seconds (8192x4096: about 7 s here), and Cancel waited for it
    (Dragon Landmarks: 7.8 s). The write stands in here as a slow one (20 s unless stopped); Cancel pressed
    0.3 s in must end the node at once. The alarm only turns a wait for the whole write into a failure."""
    import signal
    import threading

    import comfy.model_management as mm
    from comfy_api.latest import ui

    def slow_save(*a, **k):
        for _ in range(2000):
            time.sleep(0.01)
        return [{"filename": "x.png", "subfolder": "", "type": "temp"}]

    monkeypatch.setattr(ui.ImageSaveHelper, "save_images", staticmethod(slow_save))

    def too_slow(*_):
        raise TimeoutError("Cancel waited for the picture to be written")

    timer = threading.Timer(0.3, mm.interrupt_current_processing, args=(True,))
    old = signal.signal(signal.SIGALRM, too_slow)
    signal.alarm(8)
    timer.start()
    try:
        with pytest.raises(mm.InterruptProcessingException):
            if node == "editor":
                _run(ed, "[]")
            else:
                comfy.module("nodes.landmarks").DragonLandmarks.execute(_img(), "[[1, 2]]", "[[3, 4]]", "face")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
        timer.cancel()
        mm.interrupt_current_processing(False)


def test_a_failed_canvas_picture_write_raises_its_own_error(ed, monkeypatch):
    from comfy_api.latest import ui

    def failing(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(ui.ImageSaveHelper, "save_images", staticmethod(failing))
    with pytest.raises(OSError, match="disk full"):
        _run(ed, "[]")


def test_points_from_kjnodes_points_editor_are_taken_as_handle_target_pairs(ed):
    """KJNodes' Points Editor (SAM/Wan users have theirs) writes its points as a JSON list of {"x", "y"} objects,
    indented, with float or int coordinates; connected to this node's `points` input they are read as the
    editor's own points: alternate handle, target."""
    kj = json.dumps([{"x": 10, "y": 12.5}, {"x": 30.25, "y": 20}, {"x": 5, "y": 5}, {"x": 9, "y": 7}], indent=4)
    out = _run(ed, kj)
    pairs = out.args[1].pairs
    assert [(p.handle, p.target) for p in pairs] == [((10, 12.5), (30.25, 20)), ((5, 5), (9, 7))]

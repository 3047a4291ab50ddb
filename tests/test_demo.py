"""The README's first command: scripts/demo (dev-env + scripts/demo.py) runs the example drag workflow on
the toy model in a real ComfyUI server and writes the before/after images where it says."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def _rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(np.float32) / 255


@pytest.mark.parametrize("model", ["unet", "dit"])
def test_demo_writes_before_after_and_expected(tmp_path, model):
    out = tmp_path / "demo"
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "demo.py"), "--out", str(out),
                        *(["--dit"] if model == "dit" else [])], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    assert f"on the toy {dict(unet='UNet', dit='DiT')[model]} in" in r.stdout
    written = [Path(p) for p in re.findall(r"^wrote (.+)$", r.stdout, re.M)]
    assert sorted(p.name for p in written) == ["after.png", "before.png", "before_after.png", "expected.png"]
    assert all(p.parent == out and p.is_file() for p in written)

    before, after, expected = (_rgb(out / f"{n}.png") for n in ("before", "after", "expected"))
    assert before.shape == after.shape == expected.shape == (256, 256, 3)  # the 32x32 scene saved enlarged 8x
    for img in (before, after, expected):  # nearest neighbour: each toy pixel an 8x8 block
        assert np.array_equal(img, np.repeat(np.repeat(img[::8, ::8], 8, 0), 8, 1))
    assert Image.open(out / "before_after.png").size == (3 * 258 - 2, 256)

    # before.png is the editor's preview (mask tinted, handle and target drawn); where it equals the expected
    # image, neither the preview nor the edit touches the scene: the edit must keep that background
    background = np.abs(before - expected).max(-1) < 1.5 / 255
    assert background.mean() > 0.5
    mse = float(((after - expected)[background] ** 2).mean())
    assert 10 * np.log10(1 / max(mse, 1e-10)) > 25.0
    assert np.abs(after - before).max() > 0.1  # the result is not the preview

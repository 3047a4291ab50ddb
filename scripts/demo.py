"""The pack's main job on the project's own toy model, with no download.

Starts the real ComfyUI with the pack and the toy model's nodes, runs the example drag workflow
(toy/dragon_toy/workflows/api/toy_drag.api.json: one handle->target pair moves the painted object) on a generated scene and
writes before/after images.
Run it through scripts/demo, which builds the environment first.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import comfy_server  # noqa: E402

WORKFLOW = ROOT / "toy" / "dragon_toy" / "workflows" / "api" / "toy_drag.api.json"
DIT_WORKFLOW = ROOT / "toy" / "dragon_toy" / "workflows" / "api" / "toy_dit_move.api.json"


def side_by_side(paths: list[Path], dst: Path) -> Path:
    """before | after | expected, at least 256 pixels high (the workflow saves them enlarged already)."""
    from PIL import Image

    ims = [Image.open(p).convert("RGB") for p in paths]
    w, h = ims[0].size
    zoom = max(1, 256 // h)
    canvas = Image.new("RGB", (len(ims) * (w + 2) - 2, h), "white")
    for i, im in enumerate(ims):
        canvas.paste(im, (i * (w + 2), 0))
    canvas.resize((canvas.width * zoom, canvas.height * zoom), Image.NEAREST).save(dst)
    return dst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default=str(ROOT / "demo_output"), help="where the before/after images go")
    ap.add_argument("--serve", action="store_true",
                    help="keep ComfyUI running afterwards (open the printed address; open the template 'Toy demo - move the painted object')")
    ap.add_argument("--dit", action="store_true",
                    help="the same edit on the project's toy flow DiT (ComfyUI's Flux class; template 'Toy demo - move "
                         "on the toy DiT'), the pack's path for FLUX models")
    args = ap.parse_args()
    comfy_server.ensure_environment()
    prompt = json.loads((DIT_WORKFLOW if args.dit else WORKFLOW).read_text())
    scene = next(n["inputs"]["scene"] for n in prompt.values() if n["class_type"] == "DragonToy_Scene")
    work = Path(tempfile.mkdtemp(prefix="dragon_demo_"))
    print("starting ComfyUI (CPU) with the pack and the toy model ...", flush=True)
    srv = comfy_server.start(work, [ROOT / "toy"], threads=2)
    try:
        t0 = time.time()
        h = srv.run_ok(prompt, timeout=900)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        written = []
        for nid, node in prompt.items():
            if node["class_type"] != "SaveImage":
                continue
            for p in srv.image_paths(h, nid):
                dst = out / (node["inputs"]["filename_prefix"].split("/")[-1] + ".png")
                shutil.copyfile(p, dst)
                written.append(dst)
        print(f"moved the object of toy scene {scene} on the toy {'DiT' if args.dit else 'UNet'} in {time.time() - t0:.1f} s: before.png shows the handle "
              f"(red) and target (blue), after.png the edit, expected.png the scene's own pair: the same toy scene "
              f"drawn with the object at the target, not a model output (the toy scenes are 32x32 pixels, saved "
              f"enlarged 8x; before_after.png shows the three side by side)")
        strip = side_by_side([out / "before.png", out / "after.png", out / "expected.png"], out / "before_after.png")
        for p in [*written, strip]:
            print("wrote", p)
        if args.serve:
            print(f"ComfyUI is running at {srv.url} (Ctrl-C to stop); open the template 'Toy demo - move the painted object'.")
            while srv.proc.poll() is None:
                time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        srv.stop()


if __name__ == "__main__":
    main()

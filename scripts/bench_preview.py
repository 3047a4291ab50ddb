#!/usr/bin/env python3
"""Time of the Dragon Mask/Point Editor's preview (also Dragon Landmarks'): 512 diagonal point pairs on a 4096x4096
image, the largest prompt the editor allows (issue #20; goal < 1 s). Prints seconds per render. With
--layer-mem N: the peak memory of decoding one N x N brush layer (the limit is 8192), end to end: as it is, and
stretched to an image of another size (--layer-to, default N - N/16 square).

    .venv/bin/python scripts/bench_preview.py [--size 4096] [--pairs 512] [--repeat 3]
    .venv/bin/python scripts/bench_preview.py --layer-mem 8192 [--layer-to 7680]
    .venv/bin/python scripts/bench_preview.py --cancel  # seconds from Cancel to the node's end, 8192x4096
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--pairs", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--layer-mem", type=int, metavar="N", help="measure the peak memory of decoding an N x N layer")
    ap.add_argument("--cancel", action="store_true",
                    help="time from Cancel to the end of the Dragon Mask/Point Editor and Dragon Landmarks on 8192x4096")
    ap.add_argument("--layer-to", type=int, metavar="M", help="the stretched case's image side (default N - N/16)")
    args = ap.parse_args()
    sys.path.insert(0, str(REPO / "scripts"))
    from bench_speed import setup_comfy

    import torch

    torch.set_num_threads(1)
    pack, _ = setup_comfy("cpu")
    editor = sys.modules[f"{pack.__name__}.nodes.editor"]
    spec = sys.modules[f"{pack.__name__}.dragon_core.spec"]
    if args.cancel:
        cancel_latency(pack)
        return
    if args.layer_mem:
        n = args.layer_mem
        layer_memory(editor, n, n)
        layer_memory(editor, n, args.layer_to or n - n // 16)
        return
    n, s = args.pairs, args.size
    g = torch.Generator().manual_seed(0)
    pairs = tuple(spec.PointPair((float(x0), float(y0)), (float(s - 1 - x0), float(s - 1 - y0)))
                  for x0, y0 in (torch.rand(n, 2, generator=g) * s * 0.1).tolist())  # corner to corner
    pts = spec.DragPoints(pairs=pairs, width=s, height=s)
    image = torch.rand(1, s, s, 3, generator=g)
    mask = (torch.rand(1, s, s, generator=g) > 0.5).float()
    times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        editor.render_preview(image, mask, pts)
        times.append(time.perf_counter() - t0)
    print(f"preview of {n} diagonal pairs on {s}x{s}: {min(times):.2f} s (best of {args.repeat}; "
          f"all: {', '.join(f'{t:.2f}' for t in times)}), 1 thread")


def cancel_latency(pack) -> None:
    """Cancel pressed 0.5, 2 and 4 s into a run of each canvas node on an 8192x4096 picture (68 point pairs for
    Landmarks): seconds from Cancel to the node's end (the run's whole time when it ended before Cancel)."""
    import threading

    import torch

    import comfy.model_management as mm

    editor = sys.modules[f"{pack.__name__}.nodes.editor"]
    landmarks = sys.modules[f"{pack.__name__}.nodes.landmarks"]
    img = torch.rand(1, 4096, 8192, 3, generator=torch.Generator().manual_seed(0))
    src = "[" + ",".join(f"[{100 + i * 100},{200 + i * 40}]" for i in range(68)) + "]"
    tgt = "[" + ",".join(f"[{150 + i * 100},{260 + i * 40}]" for i in range(68)) + "]"
    runs = {"Dragon Mask/Point Editor": lambda: editor.MaskPointEditor.execute(img, "[]"),
            "Dragon Landmarks": lambda: landmarks.DragonLandmarks.execute(img, src, tgt, "face")}
    for name, run in runs.items():
        t0 = time.perf_counter()
        run()
        whole = time.perf_counter() - t0
        lat = []
        for at in (0.5, 2.0, 4.0):
            pressed = {}

            def cancel():
                pressed["t"] = time.perf_counter()
                mm.interrupt_current_processing(True)

            timer = threading.Timer(at, cancel)
            timer.start()
            try:
                run()
                lat.append("ended first")
            except mm.InterruptProcessingException:
                lat.append(f"{time.perf_counter() - pressed['t']:.2f} s")
            finally:
                timer.cancel()
                mm.interrupt_current_processing(False)
        print(f"{name}, 8192x4096: whole run {whole:.1f} s; Cancel at 0.5 / 2 / 4 s ends it after "
              f"{' / '.join(lat)}")


def layer_memory(editor, n: int, m: int) -> None:
    """Peak resident memory while load_layer decodes an n x n RGBA brush layer from the input folder for an
    m x m image (stretched when m != n), the returned float tensors included."""
    import os
    import threading

    import numpy as np
    from PIL import Image

    import folder_paths

    sub = os.path.join(folder_paths.get_input_directory(), "dragon_editor")
    os.makedirs(sub, exist_ok=True)
    path = os.path.join(sub, "bench_layer_memory.png")
    a = np.zeros((n, n, 4), np.uint8)
    a[: n // 2, :, 0] = a[: n // 2, :, 3] = 255
    Image.fromarray(a, "RGBA").save(path)
    del a

    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    base = peak = rss()
    done = threading.Event()

    def poll():
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss())
            time.sleep(0.002)

    t = threading.Thread(target=poll)
    t.start()
    try:
        out = editor.load_layer("editor_mask", "dragon_editor/bench_layer_memory.png", m, m)
        assert tuple(out[0].shape) == (m, m)
        del out
    finally:
        done.set()
        t.join()
        os.remove(path)
    how = "as it is" if m == n else f"stretched to {m}x{m}"
    print(f"decoding a {n}x{n} brush layer {how}: peak +{(peak - base) / 2**20:.0f} MiB "
          f"({(peak - base) / (max(n, m) ** 2):.1f} bytes a pixel of the larger)")


if __name__ == "__main__":
    main()

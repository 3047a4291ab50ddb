#!/usr/bin/env python3
"""Time of the Mask/Point Editor's preview (also Dragon Landmarks'): 512 diagonal point pairs on a 4096x4096
image, the largest prompt the editor allows (issue #20; goal < 1 s). Prints seconds per render. With
--layer-mem N: the peak memory of decoding one N x N brush layer (the limit is 8192).

    .venv/bin/python scripts/bench_preview.py [--size 4096] [--pairs 512] [--repeat 3]
    .venv/bin/python scripts/bench_preview.py --layer-mem 8192
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
    args = ap.parse_args()
    sys.path.insert(0, str(REPO / "scripts"))
    from bench_speed import setup_comfy

    import torch

    torch.set_num_threads(1)
    pack, _ = setup_comfy("cpu")
    editor = sys.modules[f"{pack.__name__}.nodes.editor"]
    spec = sys.modules[f"{pack.__name__}.dragon_core.spec"]
    if args.layer_mem:
        layer_memory(editor, args.layer_mem)
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


def layer_memory(editor, n: int) -> None:
    """Peak resident memory while load_layer decodes an n x n RGBA brush layer from the input folder."""
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
        editor.load_layer("editor_mask", "dragon_editor/bench_layer_memory.png", n, n)
    finally:
        done.set()
        t.join()
        os.remove(path)
    print(f"decoding a {n}x{n} brush layer: peak +{(peak - base) / 2**20:.0f} MiB ({(peak - base) / (n * n):.1f} "
          "bytes a pixel)")


if __name__ == "__main__":
    main()

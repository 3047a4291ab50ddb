#!/usr/bin/env python3
"""Time of the Mask/Point Editor's preview (also Dragon Landmarks'): 512 diagonal point pairs on a 4096x4096
image, the largest prompt the editor allows (issue #20; goal < 1 s). Prints seconds per render.

    .venv/bin/python scripts/bench_preview.py [--size 4096] [--pairs 512] [--repeat 3]
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
    args = ap.parse_args()
    sys.path.insert(0, str(REPO / "scripts"))
    from bench_speed import setup_comfy

    import torch

    torch.set_num_threads(1)
    pack, _ = setup_comfy("cpu")
    editor = sys.modules[f"{pack.__name__}.nodes.editor"]
    spec = sys.modules[f"{pack.__name__}.dragon_core.spec"]
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


if __name__ == "__main__":
    main()

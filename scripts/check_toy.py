"""Acceptance report of the toy model's weights (toy/dragon_toy/check.py), in plain PyTorch.

    .venv/bin/python scripts/check_toy.py [--weights PATH] [--steps 50]

Prints, on the benchmark's test scenes: DDIM reconstruction PSNR, how Gaussian the inverted noise
is, the copy test (background PSNR after the official start-noise copy, with no guidance) and how
similar the decoder features of an object and of the background are (the move energy's lever), and
what the features carry: the scene or the noise, and the image's colour or not (FeatureContent).
See README, "Quality benchmark", for what the figures of the shipped weights mean for the edits.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.append(os.path.join(ROOT, ".comfyui"))  # ComfyUI's `comfy` package (after, never before)
sys.path.append(os.path.join(ROOT, "toy"))

import torch  # noqa: E402

from comfy.cli_args import args as comfy_args  # noqa: E402

comfy_args.cpu = True

from dragon_toy import check  # noqa: E402
from dragon_toy import model as toy_model  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default=toy_model.WEIGHTS)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.time()
    figures = check.report(toy_model.load_unet(args.weights), args.steps)
    print(json.dumps(figures, indent=1))
    print(f"# {time.time() - t0:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()

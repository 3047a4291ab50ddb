"""How much precision the energy gradient keeps when the UNet's backward runs in fp16 (the GPU default), with and
without the gradient pass's loss scaling (dragon_core.sampler.LOSS_SCALE).

No fp16 kernels worth timing on a CPU, so fp16 is simulated on the real SD1.5 architecture (random weights, fp32):
every layer's input gradient is rounded to fp16, as an fp16 backward stores it between layers. Prints, per mode,
the first guided step's gradient against the exact fp32 one (relative error, cosine, elements flushed to zero).

    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_half_grad.py --size 512 --modes move,drag
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--modes", default="move,drag")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    import bench_speed as bs

    pack, _ = bs.setup_comfy("cpu")
    import comfy.model_management as mm

    inv_mod = sys.modules[f"{pack.__name__}.nodes.invert"]
    smp = sys.modules[f"{pack.__name__}.nodes.sampler"]
    core = sys.modules[f"{pack.__name__}.dragon_core.sampler"]
    size, steps = args.size, 4
    pos, neg = bs.conditioning("sd15", 1, size, size), bs.conditioning("sd15", 2, size, size)
    with torch.inference_mode():
        model, _ = bs.build_model(pack, "sd15", torch.float32, None)
        mm.load_models_gpu([model])
        inv, _ = inv_mod.run_inversion(model, pos, bs.scene_latent(size, size), steps)
    half_grads = [False]

    def store_in_fp16(mod, grad_in, grad_out):
        if half_grads[0]:
            return tuple(None if g is None else g.half().float() for g in grad_in)
        return None

    for m in model.model.diffusion_model.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear, torch.nn.GroupNorm, torch.nn.LayerNorm)):
            m.register_full_backward_hook(store_in_fp16)
    default_scale = core.LOSS_SCALE

    def first_gradient(mode: str, half: bool, scale: float) -> torch.Tensor:
        half_grads[0] = half
        core.LOSS_SCALE = scale
        seen, real = [], core._guidance

        class Done(Exception):
            pass

        def probe(*a, **k):
            seen.append(real(*a, **k).clone())
            raise Done

        core._guidance = probe
        try:
            with torch.inference_mode():
                smp.run_dragon(model, pos, neg, inv, bs.guidance(pack, mode, size, size), steps, 4.0, 5)
        except Done:
            pass
        finally:
            core._guidance, core.LOSS_SCALE, half_grads[0] = real, default_scale, False
        return seen[0].double()

    print(f"SD1.5 architecture, random weights, {size}x{size}; fp16 gradient storage simulated")
    for mode in [m for m in args.modes.split(",") if m]:
        exact = first_gradient(mode, False, default_scale)
        for scale in (1.0, default_scale):
            g = first_gradient(mode, True, scale)
            cos = float(torch.nn.functional.cosine_similarity(g.flatten(), exact.flatten(), dim=0))
            print(f"{mode:5s} loss scale {scale:6.0f}: relative error {float((g - exact).norm() / exact.norm()):.5f}, "
                  f"cosine {cos:.6f}, zeros {int((g == 0).sum())} of {g.numel()}", flush=True)


if __name__ == "__main__":
    main()

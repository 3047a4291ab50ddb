#!/usr/bin/env python3
"""Speed and memory of a Dragon edit on the released FLUX and SD3 architectures (issue #28 item 5), random weights.

The models are ComfyUI's own configs detected from the published checkpoints' key shapes (toy/dragon_toy/real_dit.py),
built at the depth asked (the widths, heads, patching and latent format stay the real ones). Each edit goes through the
pack's code: DDIM Invert with the K/V memory bank, Guidance Setup (move), Cross-Branch Attention Patch, Dragon Sampler.
The floor is ComfyUI's own path for the same image: the inversion without the bank plus its KSampler (euler, same
steps, the family's workflow scheduler and CFG: FLUX simple and cfg 1, SD3/SD3.5 sgm_uniform and cfg 4.5, which
the edit also uses). Model passes (calls; with CFG a generation call carries the negative too) are counted per phase; the gradient pass (forward up to the last
feature block, then backward) is counted once but costs more than a plain pass.

    .venv/bin/python scripts/bench_dit.py                                    # CPU: FLUX.1 [dev] depth 1+1, 256^2, 8 steps
    .venv/bin/python scripts/bench_dit.py --memory-depths 1 2 --size 512     # + the gradient pass's memory per block
    python scripts/bench_dit.py --device cuda --families flux1-dev --full --size 1024 --steps 28   # a GPU

The memory of the gradient pass grows with the blocks it runs through (all of them up to the last feature block: FLUX
every double block, SD3 the joint blocks up to nodes/dit.py MMDIT_FEATURE_DEPTH of its depth): --memory-depths measures the edit's peak over the floor's at two depths and extrapolates the
difference per block the gradient pass runs to the released depth (printed as an extrapolation). Writes JSON after every row (--out).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
sys.path.append(str(REPO / "toy"))

from bench_speed import Mem, setup_comfy  # noqa: E402


def edit_once(pack, nodes_mod, model, which: str, size: int, steps: int, mem: Mem, sync) -> dict:
    """Floor (inversion + ComfyUI KSampler) and a Dragon move edit on one model; times, passes, peaks."""
    import torch

    from dragon_toy import real_dit

    inv_mod = sys.modules[f"{pack.__name__}.nodes.invert"]
    ap = sys.modules[f"{pack.__name__}.nodes.attention_patch"]
    smp = sys.modules[f"{pack.__name__}.nodes.sampler"]
    gd = sys.modules[f"{pack.__name__}.nodes.guidance"]
    real = real_dit.FAMILIES[which]
    f = 16 if real.flux2 else 8
    g = torch.Generator().manual_seed(3)
    lat = torch.randn(1, real.latent_channels, size // f, size // f, generator=g) * 0.5
    cond = real_dit.conditioning(which, tokens=64)
    row: dict = {}
    with torch.inference_mode():
        inv_mod.run_inversion(model, cond, lat, 2, kv_bank_mb=0)  # warm-up, not timed
        mem.start()
        sync()
        t = time.perf_counter()
        inv_mod.run_inversion(model, cond, lat, steps, kv_bank_mb=0)
        sync()
        t_inv = time.perf_counter() - t
        t = time.perf_counter()
        nodes_mod.common_ksampler(model, 7, steps, real.cfg, "euler", real.scheduler, cond, cond, {"samples": lat})
        sync()
        t_ks = time.perf_counter() - t
        # model calls: inversion + sampling (with CFG, ComfyUI batches the negative with the positive in one call, as the
        # Dragon Sampler's generation passes do: "cfg_batch")
        row["floor"] = {"invert_s": t_inv, "sample_s": t_ks, "total_s": t_inv + t_ks, "passes": 2 * steps,
                        "cfg_batch": 1 if real.cfg == 1.0 else 2, **mem.read()}
        mask = torch.zeros(1, size, size)
        mask[:, int(size * 0.35):int(size * 0.65), int(size * 0.2):int(size * 0.45)] = 1
        spec = gd.build_spec("move", object_mask=mask, offset_x=int(size * 0.25))
        patched, _ = ap.patch_model(model, "auto", 0.1, 1.0)
        mem.start()
        sync()
        t = time.perf_counter()
        inv, _ = inv_mod.run_inversion(model, cond, lat, steps)
        sync()
        t_inv = time.perf_counter() - t
        t = time.perf_counter()
        _, job = smp.run_dragon(patched, cond, cond, inv, spec, steps, real.cfg, 5)
        sync()
        t_dr = time.perf_counter() - t
    calls = dict(job.stats.unet_calls)
    row["edit"] = {"invert_s": t_inv, "dragon_sampler_s": t_dr, "total_s": t_inv + t_dr,
                   "passes": {"inversion": steps, **calls}, "passes_total": steps + sum(calls.values()),
                   "guided_steps": job.stats.guided_steps, "kv_banked_steps": job.stats.kv_banked,
                   "kv_bank_mib": inv.kv_bank.nbytes / 2**20 if inv.kv_bank is not None else 0.0, **mem.read()}
    row["edit_over_floor"] = row["edit"]["total_s"] / row["floor"]["total_s"]
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda if available")
    ap.add_argument("--families", nargs="+", default=["flux1-dev"],
                    help="toy/dragon_toy/real_dit.py FAMILIES: flux1-dev flux1-schnell flux2-dev flux2-klein-4b "
                         "sd3-medium sd35-medium sd35-large")
    ap.add_argument("--size", type=int, default=256, help="square image side in pixels")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--depth", type=int, default=1, help="double blocks, SD3: joint blocks (the released model's at "
                    "most; SD3 at least 2)")
    ap.add_argument("--single", type=int, default=1, help="single blocks")
    ap.add_argument("--full", action="store_true", help="the released depth")
    ap.add_argument("--memory-depths", type=int, nargs=2, metavar=("D1", "D2"),
                    help="also measure at these double-block depths (single blocks: --single) and extrapolate the "
                         "edit's extra peak memory per double block to the released depth")
    ap.add_argument("--no-checkpoint", action="store_true",
                    help="the gradient pass without activation checkpointing of the double blocks (nodes/dit.py "
                         "CHECKPOINT_BLOCKS), for the before/after of the memory figure")
    ap.add_argument("--dtype", default=None, help="fp32 / bf16 / fp16 (default fp32 on CPU, bf16 on CUDA)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="JSON (default bench/dit-speed-<device>.json)")
    args = ap.parse_args()
    out = Path(args.out).resolve() if args.out else None
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    cuda = device == "cuda"
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype or ("bf16" if cuda else "fp32")]
    pack, nodes_mod = setup_comfy(device)
    import comfy.model_management as mm

    if args.no_checkpoint:
        sys.modules[f"{pack.__name__}.nodes.dit"].CHECKPOINT_BLOCKS = False

    from dragon_toy import real_dit

    out = out or REPO / "bench" / f"dit-speed-{'gpu' if cuda else 'cpu'}.json"
    info = {"device": torch.cuda.get_device_name() if cuda else f"CPU ({platform.processor() or platform.machine()}, "
            f"{args.threads} thread(s))", "torch": torch.__version__, "dtype": str(dtype).split(".")[-1],
            "size": args.size, "steps": args.steps, "checkpoint_blocks": not args.no_checkpoint, "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
            "command": " ".join(sys.argv[1:]), "rows": [], "memory": []}
    mem = Mem(cuda)

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def save():
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(info, indent=1))

    def build(which: str, depth: int, single: int):
        model = real_dit.load_model_patcher(which, depth, single, dtype, init=False)
        mm.load_models_gpu([model])  # the weights go to the device first, then get their random values there
        real_dit.init_random(model.model.diffusion_model)
        return model

    dit_mod = sys.modules[f"{pack.__name__}.nodes.dit"]

    def grad_blocks(model, depth: int | None = None) -> int:
        """The blocks the gradient pass runs through (up to the last feature block), at the model's depth or `depth`."""
        import dataclasses

        fam = dit_mod.dit_family(model)
        return max(dataclasses.replace(fam, double_blocks=depth or fam.double_blocks).feature_blocks()) + 1

    for which in args.families:
        why = real_dit.supported(which)
        if why:
            print(f"{which}: skipped, {why}")
            continue
        real = real_dit.FAMILIES[which]
        depth, single = (real.depth, real.depth_single) if args.full else (args.depth, args.single)
        mmdit = isinstance(real, real_dit.RealMMDiT)
        if mmdit:
            depth, single = max(depth, 2), 0
        t = time.perf_counter()
        model = build(which, depth, single)
        params = sum(p.numel() for p in model.model.diffusion_model.parameters())
        blocks = f"{depth} joint blocks" if mmdit else f"{depth} double + {single} single blocks"
        print(f"\n=== {real.name}, {blocks} ({params / 1e9:.2f} B parameters, "
              f"{time.perf_counter() - t:.0f} s to build), {args.size}^2, {args.steps} steps, {info['dtype']} ===",
              flush=True)
        row = {"family": which, "name": real.name, "depth": depth, "single": single, "params_b": params / 1e9,
               **edit_once(pack, nodes_mod, model, which, args.size, args.steps, mem, sync)}
        info["rows"].append(row)
        save()
        fl, ed = row["floor"], row["edit"]
        peak = "cuda_max_allocated_gb" if cuda else "peak_rss_gb"
        print(f"floor {fl['total_s']:.1f} s ({fl['passes']} passes), edit {ed['total_s']:.1f} s ({ed['passes_total']} "
              f"passes: {ed['passes']}), edit/floor {row['edit_over_floor']:.2f}; peak {peak} floor {fl[peak]:.2f} "
              f"GB, edit {ed[peak]:.2f} GB; K/V bank {ed['kv_bank_mib']:.0f} MiB", flush=True)
        del model
        mm.unload_all_models()
        mm.soft_empty_cache()
        if args.memory_depths:
            if not row["edit"]["guided_steps"]:
                raise SystemExit(f"--steps {args.steps}: no guided step, so no gradient pass to measure; use 4 or more")
            extra, ran = {}, {}
            for d in args.memory_depths:
                model = build(which, d, single if mmdit else args.single)
                ran[d] = grad_blocks(model)
                n_full = grad_blocks(model, real.depth)
                r = edit_once(pack, nodes_mod, model, which, args.size, args.steps, mem, sync)
                extra[d] = r["edit"][peak] - r["floor"][peak]
                print(f"  depth {d} (gradient pass through {ran[d]} blocks): peak {peak} floor {r['floor'][peak]:.2f} "
                      f"GB, edit {r['edit'][peak]:.2f} GB, edit - floor {extra[d]:.2f} GB", flush=True)
                del model
                mm.unload_all_models()
                mm.soft_empty_cache()
            d1, d2 = args.memory_depths
            if ran[d2] == ran[d1]:
                raise SystemExit(f"--memory-depths {d1} {d2}: the gradient pass runs {ran[d1]} blocks at both")
            per_block = (extra[d2] - extra[d1]) / (ran[d2] - ran[d1])
            full = extra[d1] + (n_full - ran[d1]) * per_block
            m = {"family": which, "size": args.size, "measure": peak, "depths": args.memory_depths,
                 "grad_pass_blocks": ran, "edit_minus_floor_gb": extra, "per_grad_block_gb": per_block,
                 "grad_pass_blocks_at_released_depth": n_full,
                 "extrapolated_edit_minus_floor_gb_at_released_depth": full}
            info["memory"].append(m)
            save()
            print(f"  the edit's extra peak per block of the gradient pass {per_block:.3f} GB -> {n_full} blocks at the "
                  f"released depth: {full:.2f} GB over the floor (extrapolated, not measured)", flush=True)
    save()
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()

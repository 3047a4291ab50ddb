"""Diagnostic: edits on the toy model in-process (move/resize/drag/remove/paste/appearance), with variations.

    .venv/bin/python scripts/probe_toy.py --mode move --energy 0 40 150 --scenes 3 [--no-copy] [--schedule dragondiffusion]
    .venv/bin/python scripts/probe_toy.py --dit --mode move --energy 0 40 --blocks 1 2 [--inversion current]
    .venv/bin/python scripts/probe_toy.py --sd3 --mode move --energy 0 40 --mmdit-kv late --mmdit-kv-from 0.5

Drives the pack's own functions (run_inversion, patch_model, build_spec, run_dragon) on the settings
scenes (seeds 0+) and prints the benchmark's metrics per energy scale. `--no-copy` replaces the edit
plan's start latent with the plain inverted noise, to separate the start-noise copy from the guidance
(see README, Quality benchmark). Faster to iterate with than the server benchmark; not a result.
"""
from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMFY = ROOT / ".comfyui"
PACK = COMFY / "custom_nodes" / "comfyui-dragondiffusion"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=["move", "resize", "drag", "remove", "paste", "appearance"], default="move")
    ap.add_argument("--energy", type=float, nargs="+", default=[0.0, 40.0])
    ap.add_argument("--scenes", type=int, default=3)
    ap.add_argument("--first", type=int, default=0, help="first settings scene (seed); must stay below 1000")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--schedule", default="diffeditor")
    ap.add_argument("--no-copy", action="store_true", help="start from the plain inverted noise")
    ap.add_argument("--no-kv", action="store_true", help="no Cross-Branch Attention Patch")
    ap.add_argument("--global-fill", action="store_true",
                    help="fill the vacated area like the whole rest of the image (the official code), not its surroundings")
    ap.add_argument("--w-inpaint", type=float, default=-1.0)
    ap.add_argument("--w-contrast", type=float, default=-1.0)
    ap.add_argument("--w-content", type=float, default=-1.0)
    ap.add_argument("--set", nargs="+", default=[], metavar="[MODE.]KEY=VALUE",
                    help="other Dragon Guidance Setup inputs, e.g. guidance_end=0.8 sde_strength=0")
    ap.add_argument("--per-scene", action="store_true", help="print every scene's metrics")
    ap.add_argument("--trace", action="store_true", help="print the energies and gradient norms of every guided step")
    ap.add_argument("--save", help="folder for a picture per energy: source | expected | edit, one row per scene")
    ap.add_argument("--weights", help="toy weights to probe (default: the shipped ones)")
    ap.add_argument("--dit", action="store_true", help="the toy flow DiT (toy/dragon_toy/dit.py) instead of the toy UNet")
    ap.add_argument("--sd3", action="store_true", help="the toy SD3 (toy/dragon_toy/sd3.py, ComfyUI's MMDiT)")
    ap.add_argument("--mmdit-kv", choices=["late", "all", "none"],
                    help="SD3: the joint blocks K/V are injected into (nodes/dit.py MMDIT_KV_BLOCKS)")
    ap.add_argument("--mmdit-kv-from", type=float, help="SD3: where 'late' starts, a fraction of the depth")
    ap.add_argument("--mmdit-kv-concat", choices=["late", "same"],
                    help="SD3: concat K/V (drag) into the later blocks only, or as --mmdit-kv (nodes/dit.py MMDIT_KV_CONCAT)")
    ap.add_argument("--kv-blocks", choices=["single", "double", "all"],
                    help="DiT: the blocks K/V are injected into (nodes/dit.py KV_BLOCKS)")
    ap.add_argument("--centre-features", action="store_true",
                    help="every energy compares features minus their image's mean feature (per channel over the "
                         "feature grid), which removes channels that are large everywhere (DiTs' massive activations)")
    ap.add_argument("--kv-region", choices=["all", "outside"],
                    help="DiT: which image tokens a replace injection gives the bank's K/V (nodes/dit.py KV_REGION)")
    ap.add_argument("--inversion", choices=["target", "current"],
                    help="flow models: how each inversion step evaluates the model (nodes/invert.py FLOW_INVERSION)")
    ap.add_argument("--patch-radius", type=int, help="drag: the half-width of each point's feature patch "
                    "in feature cells (default: the pack's, nodes/layout.py patch_radius: 1 on UNets, the official 3x3, 2 on DiTs)")
    ap.add_argument("--blocks", type=int, nargs="+", help="decoder output blocks (UNet) or double blocks (DiT) used "
                    "as guidance features (default: the pack's choice, unet_layout.feature_blocks / DitFamily); SD3: joint blocks")
    args = ap.parse_args()
    if not (0 <= args.first and args.first + args.scenes <= 1000):
        ap.error("--first/--scenes: probe only the settings scenes (seeds below 1000); the test scenes are 1000+")
    if args.weights:  # relative to where it was called from, not ComfyUI's folder (chdir below)
        args.weights = str(Path(args.weights).resolve())

    sys.path.insert(0, str(COMFY))
    os.chdir(COMFY)
    import utils.extra_config  # noqa: F401  (before ComfyUI's nodes.py)
    from comfy.cli_args import args as comfy_args

    comfy_args.cpu = True
    import torch

    torch.set_num_threads(1)
    import nodes

    logging.disable(logging.WARNING)
    assert asyncio.run(nodes.load_custom_node(str(PACK))), "the pack did not load"
    pack = sys.modules[str(PACK).replace(".", "_x_")].__name__
    mod = {k: importlib.import_module(f"{pack}.{k}") for k in
           ("nodes.invert", "nodes.sampler", "nodes.guidance", "nodes.attention_patch", "dragon_core.points",
            "dragon_core.spec", "dragon_core.plan", "nodes.dit")}
    if args.global_fill:
        mod["dragon_core.plan"].surroundings = lambda mask, allowed: allowed
    sys.path.append(str(ROOT / "toy"))
    sys.path.append(str(ROOT / "scripts"))
    import bench_quality
    from dragon_toy import model as toy_model
    from dragon_toy import scenes

    smp = mod["nodes.sampler"]
    if args.no_copy:
        build = smp.build_plan

        def plain_start(*a, **k):
            plan = build(*a, **k)
            plan.initial = lambda x_t: x_t.clone()
            return plan

        smp.build_plan = plain_start
    if args.blocks:
        smp.feature_blocks = lambda unet: list(args.blocks)
        mod["nodes.dit"].DitFamily.feature_blocks = lambda self: tuple(args.blocks)
    if args.patch_radius is not None:
        importlib.import_module(f"{pack}.nodes.layout").Layout.patch_radius = lambda self: args.patch_radius
    if args.centre_features:
        core = importlib.import_module(f"{pack}.dragon_core.sampler")
        working = core._working
        core._working = lambda *a, **k: [f - f.mean(dim=1, keepdim=True) for f in working(*a, **k)]
    if args.kv_region:
        mod["nodes.dit"].KV_REGION = args.kv_region
    if args.kv_blocks:
        mod["nodes.dit"].KV_BLOCKS = args.kv_blocks
    if args.inversion:
        mod["nodes.invert"].FLOW_INVERSION = args.inversion
    if args.mmdit_kv:
        mod["nodes.dit"].MMDIT_KV_BLOCKS = args.mmdit_kv
    if args.mmdit_kv_concat:
        mod["nodes.dit"].MMDIT_KV_CONCAT = args.mmdit_kv_concat
    if args.mmdit_kv_from is not None:
        mod["nodes.dit"].MMDIT_KV_FROM = args.mmdit_kv_from
    try:  # the benchmark's --set syntax (MODE.KEY=VALUE applies to that mode only)
        settings = bench_quality.mode_overrides(bench_quality.parse_overrides(args.set), args.mode)
    except ValueError as e:
        ap.error(f"--set: {e}")
    if args.dit or args.sd3:
        from dragon_toy import dit as toy_dit
        from dragon_toy import sd3 as toy_sd3

        toy = toy_sd3 if args.sd3 else toy_dit
        model, vae, cond = toy.load_model_patcher(args.weights), toy_model.pixel_vae(), toy.conditioning()
    else:
        model, vae, cond = toy_model.load_model_patcher(args.weights), toy_model.pixel_vae(), toy_model.empty_conditioning()
    cross = args.mode in bench_quality.PASTE_LIKE
    window = bench_quality.CROSS_KV_WINDOW if cross else (0.1, 1.0)  # the benchmark's K/V windows
    sampling_model = model if args.no_kv else mod["nodes.attention_patch"].patch_model(model, "auto", *window)[0]
    for energy in args.energy:
        rows, pics, t0 = [], [], time.time()
        for seed in range(args.first, args.first + args.scenes):
            case = scenes.make_case(args.mode, seed)
            latent = vae.encode(case.source.permute(1, 2, 0)[None])
            inv, _ = mod["nodes.invert"].run_inversion(model, cond, latent, args.steps)
            kw = dict(object_mask=case.guide_mask[None], energy_scale=energy, schedule=args.schedule,
                      w_inpaint=args.w_inpaint, w_contrast=args.w_contrast,
                      w_content=args.w_content)
            kw.update(settings)
            if args.mode == "drag":
                text = json.dumps([{"x": x, "y": y} for x, y in case.points])
                pairs = mod["dragon_core.points"].parse_points("probe", "points", text, scenes.SIZE, scenes.SIZE)
                kw["points"] = mod["dragon_core.spec"].DragPoints(pairs=pairs, width=scenes.SIZE, height=scenes.SIZE)
            else:
                kw.update(offset_x=case.offset[0], offset_y=case.offset[1], scale=case.scale)
            if cross:
                ref_latent = vae.encode(case.reference.permute(1, 2, 0)[None])
                kw.update(reference_mask=case.reference_mask[None],
                          reference_inversion=mod["nodes.invert"].run_inversion(model, cond, ref_latent, args.steps)[0])
                kw.pop("scale")
                if args.mode == "paste":
                    kw.pop("object_mask")
            spec = mod["nodes.guidance"].build_spec(args.mode, **kw)
            out, job = smp.run_dragon(sampling_model, cond, cond, inv, spec, args.steps, 1.0, seed)
            if args.trace:
                print(f"  scene {seed}: E_edit " + " ".join(f"{e:.3f}" for e, _ in job.stats.energies)
                      + "\n    E_cons " + " ".join(f"{c:.3f}" for _, c in job.stats.energies)
                      + "\n    |g| " + " ".join(f"{n:.3g}" for n in job.stats.grad_norms), flush=True)
            edit = vae.decode(out)[0].permute(2, 0, 1).clamp(0, 1)
            rows.append(bench_quality.score(case, edit))
            if args.per_scene:
                print(f"  scene {seed}: " + " ".join(f"{k} {v:.3f}" for k, v in rows[-1].items()), flush=True)
            pics.append(torch.cat([case.source] + ([case.reference] if cross else []) + [case.expected, edit], dim=2))
        if args.save:
            from PIL import Image

            Path(args.save).mkdir(parents=True, exist_ok=True)
            grid = (torch.cat(pics, dim=1).permute(1, 2, 0).numpy() * 255).round().astype("uint8")
            img = Image.fromarray(grid)
            img.resize((img.width * 4, img.height * 4), Image.NEAREST).save(Path(args.save) / f"{args.mode}_{energy:g}.png")
        keys = ("iou", "centroid_err", "bg_psnr", "vacated_psnr", "ghost", "full_psnr")
        mean = {k: round(sum(r[k] for r in rows) / len(rows), 3) for k in keys if k in rows[0]}
        print(f"{args.mode} energy {energy:g} {'no-copy' if args.no_copy else 'copy'} {args.schedule}: {mean} "
              f"({(time.time() - t0) / len(rows):.1f} s/edit)", flush=True)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""First guided gradient of the pack's default ÷ the official formula, per mode, on the real SD1.5 and SDXL
UNet architectures (ComfyUI's own configs, random weights; issue #19).

Each mode runs through the pack's own path (DDIM Invert -> Guidance Setup -> Dragon Sampler, no K/V patch,
DragonDiffusion schedule) up to its first guided step, once with the pack's energy and once with the energy
replaced by the official formula written from the method spec (tests/official.py: full feature maps, the
official nearest-sampled masks, raster pairing, the official per-stage weights). Everything else (features,
gradient masks, scale) is the pack's, so the ratio isolates the energy. The geometry is aligned to 8 px, where
the pack's and the official masks agree cell for cell (tests/test_faithful.py). Also run: the energy opt-ins
(monotone_energy and ring_inpaint for move, centred_features for paste/appearance), the pack's defaults before
issue #19.

    .venv/bin/python scripts/bench_faithful.py                 # SD1.5 and SDXL at 128^2 (~5 min, 1 thread, 14 GB)
    .venv/bin/python scripts/bench_faithful.py --families sd15

Prints one row per family and mode: |g_pack| / |g_official| and the cosine between the two gradients; writes
JSON (--out).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SIZE = 128
MODES = ("move", "drag", "paste", "appearance", "landmark")
# aligned geometry at 128^2 (pixels): the object, the offset, the drag pairs, the reference object
BOX = (24, 40, 56, 80)  # x0, y0, x1, y1
OFFSET = (40, 8)
PAIRS = [((40, 56), (72, 64)), ((88, 32), (80, 48))]
REF_BOX = (64, 24, 104, 64)
OPT_INS = {"move": dict(monotone_energy=True, ring_inpaint=True), "paste": dict(centred_features=True),
           "appearance": dict(centred_features=True)}


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


class _FirstGuidedStep(Exception):
    pass


def _box(x0, y0, x1, y1):
    import torch

    m = torch.zeros(1, SIZE, SIZE)
    m[:, y0:y1, x0:x1] = 1
    return m


def _spec(pack, mode: str, ref_inv, **extra):
    gd = sys.modules[f"{pack.__name__}.nodes.guidance"]
    sp = sys.modules[f"{pack.__name__}.dragon_core.spec"]
    common = dict(schedule="dragondiffusion", **extra)
    pts = sp.DragPoints(pairs=tuple(sp.PointPair(h, t) for h, t in PAIRS), width=SIZE, height=SIZE)
    if mode == "move":
        return gd.build_spec("move", object_mask=_box(*BOX), offset_x=OFFSET[0], offset_y=OFFSET[1], **common)
    if mode == "drag":
        return gd.build_spec("drag", object_mask=_box(16, 16, 112, 104), points=pts, **common)
    if mode == "landmark":
        return gd.build_spec("landmark", points=pts, **common)
    if mode == "paste":
        return gd.build_spec("paste", reference_mask=_box(*REF_BOX), reference_inversion=ref_inv,
                             offset_x=-OFFSET[0], offset_y=OFFSET[1], **common)
    return gd.build_spec("appearance", object_mask=_box(*BOX), reference_mask=_box(*REF_BOX),
                         reference_inversion=ref_inv, **common)


def _official_energy(official, spec, plan):
    """plan.energy's signature, computing the official formula on full maps."""
    import torch

    gh, gw = plan.feature_hw
    d = dict(w_edit=spec.w_edit, w_content=spec.w_content)
    mode = spec.mode

    def maps(fs):
        return [f.double().view(f.shape[0], gh, gw) for f in fs]

    def energy(gen, ref):
        g, r = maps(gen), maps(ref)
        n = len(g)
        if mode == "move":
            e = official.official_move(g, r, mask_px=spec.object_mask, dx=int(spec.offset[0]), dy=int(spec.offset[1]),
                                       w_contrast=spec.w_contrast, w_inpaint=spec.w_inpaint, **d)
        elif mode == "drag":
            pairs = [(tuple(map(int, p.handle)), tuple(map(int, p.target))) for p in spec.pairs]
            e = official.official_drag(g, r, pairs=pairs, mask_px=spec.object_mask, w_inpaint=spec.w_inpaint, **d)
        elif mode == "landmark":
            pairs = [(tuple(map(int, p.handle)), tuple(map(int, p.target))) for p in spec.pairs]
            e = official.official_landmark(g, r, pairs=pairs, w_edit=spec.w_edit)
        elif mode == "paste":
            e = official.official_paste(g, r[:n], r[n:], obj_px=spec.reference_mask, dx=int(spec.offset[0]),
                                        dy=int(spec.offset[1]), **d)
        else:
            e = official.official_appearance(g, r[:n], r[n:], base_px=spec.object_mask, rep_px=spec.reference_mask, **d)
        return tuple(torch.as_tensor(x).to(gen[0].dtype) for x in e)

    return energy


def first_gradient(pack, model, cond, inv, spec, official=None):
    """The Dragon Sampler's first guided gradient g (latent shape), with the pack's or the official energy."""
    smp = sys.modules[f"{pack.__name__}.nodes.sampler"]
    core = sys.modules[f"{pack.__name__}.dragon_core.sampler"]
    build_plan, guidance = smp.build_plan, core._guidance
    seen = {}

    def plan_with_official(s, hw, device):
        plan = build_plan(s, hw, device)
        if official is not None:
            plan.energy = _official_energy(official, s, plan)
        return plan

    def record(*a, **k):
        seen["g"] = guidance(*a, **k).detach().clone()
        raise _FirstGuidedStep

    smp.build_plan, core._guidance = plan_with_official, record
    try:
        smp.run_dragon(model, cond, cond, inv, spec, inv.steps, 4.0, 1)
    except _FirstGuidedStep:
        pass
    finally:
        smp.build_plan, core._guidance = build_plan, guidance
    return seen["g"].double()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--families", nargs="*", default=["sd15", "sdxl"], choices=["sd15", "sdxl"])
    ap.add_argument("--steps", type=int, default=10, help="inversion steps (the first guided step is step 0)")
    ap.add_argument("--out", default=str(REPO / "bench" / "faithful.json"))
    args = ap.parse_args()

    speed = _load("bench_speed", REPO / "scripts" / "bench_speed.py")
    official = _load("official", REPO / "tests" / "official.py")
    import torch

    torch.set_num_threads(1)
    pack, _ = speed.setup_comfy("cpu")
    inv_mod = sys.modules[f"{pack.__name__}.nodes.invert"]
    rows = []
    for family in args.families:
        t0 = time.time()
        model, _ = speed.build_model(pack, family, torch.float32, None)
        cond = speed.conditioning(family, 1, SIZE, SIZE)
        with torch.inference_mode():
            inv, _ = inv_mod.run_inversion(model, cond, speed.scene_latent(SIZE, SIZE, 3), args.steps)
            ref_inv, _ = inv_mod.run_inversion(model, cond, speed.scene_latent(SIZE, SIZE, 4), args.steps)
            for mode in MODES:
                g_off = first_gradient(pack, model, cond, inv, _spec(pack, mode, ref_inv), official)
                row = {"family": family, "mode": mode, "size": SIZE, "steps": args.steps}
                for name, extra in (("default", {}), ("opt_ins", OPT_INS.get(mode))):
                    if extra is None:
                        continue
                    g = first_gradient(pack, model, cond, inv, _spec(pack, mode, ref_inv, **extra))
                    row[f"{name}_ratio"] = float(g.norm() / g_off.norm())
                    row[f"{name}_cosine"] = float((g * g_off).sum() / (g.norm() * g_off.norm()))
                rows.append(row)
                opt = (f"   opt-ins {row['opt_ins_ratio']:.3f} (cos {row['opt_ins_cosine']:.3f})"
                       if "opt_ins_ratio" in row else "")
                print(f"{family:5} {mode:10} default/official {row['default_ratio']:.5f} "
                      f"(cos {row['default_cosine']:.6f}){opt}", flush=True)
        del model
        print(f"{family}: {time.time() - t0:.0f} s", flush=True)
    Path(args.out).write_text(json.dumps({"command": " ".join(sys.argv), "machine": platform.machine(),
                                          "rows": rows}, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

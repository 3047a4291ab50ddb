"""Quality benchmark: fixed-seed synthetic edits with exact ground truth, through the real nodes.

    .venv/bin/python scripts/bench_quality.py                      # all modes, 40 scenes each
    .venv/bin/python scripts/bench_quality.py --modes move drag --scenes 5 --variants none

Starts the real ComfyUI (main.py --cpu) with the pack and the toy model's nodes, runs every scene
as an API prompt (Toy Scene -> VAE Encode -> DDIM Invert -> Dragon Guidance Setup -> Cross-Branch
Attention Patch -> Dragon Sampler -> VAE Decode -> Save Image), reads the saved PNGs back and
scores them against the scene's ground truth. Baselines in the same run: no guidance (inversion +
regeneration through the same nodes with energy_scale 0) and copy-paste with and without hole fill.
Variants (K/V injection off, DragonDiffusion schedule) are compared on the same scenes by paired
differences with bootstrap confidence intervals. Test scenes are seeds 1000+; seeds below 1000 are
for choosing settings (--tune) and never reported as results.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.append(str(ROOT / "toy"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from PIL import Image  # noqa: E402

import comfy_server  # noqa: E402
from make_workflows import CROSS_IMAGE as PASTE_LIKE  # noqa: E402
from make_workflows import CROSS_KV_WINDOW  # noqa: E402
from dragon_toy import scenes  # noqa: E402
from dragon_toy import dit as toy_dit  # noqa: E402
from dragon_toy import sd3 as toy_sd3  # noqa: E402
from dragon_toy.model import WEIGHTS, WEIGHTS_ENV  # noqa: E402
from dragon_toy.settings import DIT_GUIDANCE, SD3_GUIDANCE, bench_args  # noqa: E402

TEST_SEED_BASE = 1000
OBJ_TOL = 0.2  # RGB distance that counts as "the object's colour"
MODES = ("move", "resize", "drag", "paste", "appearance", "remove")
VARIANTS = {  # name -> changes to the main method; paired with "dragon" on the same scenes
    "no_kv": {"kv": False},
    "kv_guidance": {"kv_source": "guidance"},  # K/V of the guidance latent of each step, not the inversion's
    "dragondiffusion_schedule": {"schedule": "dragondiffusion"},
    "diffeditor_schedule": {"schedule": "diffeditor"},
    # the start/trajectory options of Guidance Setup, each switched back to the official behaviour
    "no_anchor": {"anchor_end": 0.0},
    "no_keep": {"keep_background": -1},
    "no_vacated_noise": {"vacated_noise": -1.0},
    "no_vacated_trend": {"vacated_trend": -1},
    # the energy opt-ins, each switched back to the official energy
    "no_monotone": {"monotone_energy": False},
    "no_ring_inpaint": {"ring_inpaint": False},
    "no_centred": {"centred_features": False},
    "no_energy": {"energy_scale": 0.0},  # everything but the energy guidance: what the energies add
}
OPT_INS = ("no_anchor", "no_keep", "no_vacated_noise", "no_vacated_trend", "no_monotone", "no_ring_inpaint",
           "no_centred")
# the pack's defaults: the official method, every opt-in off (the mode's energy scale and schedule stay the run's)
VARIANTS["official"] = {k: v for name in OPT_INS for k, v in VARIANTS[name].items()}
BOOL_KEYS = ("monotone_energy", "ring_inpaint", "centred_features")


# ---------------------------------------------------------------- graphs

class Graph:
    def __init__(self, object_info: dict):
        self.info = object_info
        self.nodes: dict[str, dict] = {}

    def node(self, class_type: str, **inputs) -> str:
        """A node with every required widget not given filled from its default (as the UI would)."""
        spec = self.info[class_type]["input"]
        for name, (kind, *opts) in spec.get("required", {}).items():
            if name not in inputs and opts and isinstance(opts[0], dict) and "default" in opts[0]:
                inputs[name] = opts[0]["default"]
            elif name not in inputs and isinstance(kind, list):
                inputs[name] = kind[0]
        nid = str(len(self.nodes) + 1)
        self.nodes[nid] = {"class_type": class_type, "inputs": inputs}
        return nid


def scene_prompt(info: dict, mode: str, seed: int, runs: dict[str, dict], steps: int, prefix: str,
                 loader_class: str = "DragonToy_ModelLoader") -> tuple[dict, dict]:
    """One prompt editing one scene several ways (the inversion is shared); returns (prompt, save node ids)."""
    g = Graph(info)
    loader = g.node(loader_class)
    model, vae, cond = [loader, 0], [loader, 1], [loader, 2]
    sc = g.node("DragonToy_Scene", mode=mode, scene=seed)
    enc = g.node("VAEEncode", pixels=[sc, 0], vae=vae)
    inv = g.node("DragonDiffusion_DDIMInvert", model=model, positive=cond, latent=[enc, 0], steps=steps)
    ref_inv = None
    if mode in PASTE_LIKE:
        renc = g.node("VAEEncode", pixels=[sc, 3], vae=vae)
        ref_inv = g.node("DragonDiffusion_DDIMInvert", model=model, positive=cond, latent=[renc, 0], steps=steps)
    saves = {}
    for name, run in runs.items():
        setup = dict(mode=mode, schedule=run.get("schedule", "diffeditor"))
        if mode == "drag":
            ed = g.node("DragonDiffusion_MaskPointEditor", image=[sc, 0], points=[sc, 5], mask=[sc, 2])
            setup.update(points=[ed, 1], object_mask=[ed, 0])
        elif mode in PASTE_LIKE:
            setup.update(reference_mask=[sc, 4], reference_inversion=[ref_inv, 0], offset_x=[sc, 6], offset_y=[sc, 7])
            if mode == "appearance":
                setup["object_mask"] = [sc, 2]
        else:
            setup.update(object_mask=[sc, 2], offset_x=[sc, 6], offset_y=[sc, 7], scale=[sc, 8])
        for k in ("energy_scale", "w_edit", "w_content", "w_contrast", "w_inpaint", "guidance_start", "guidance_end",
                  "sde_strength", "keep_background", "vacated_noise", "anchor_end", "vacated_trend", *BOOL_KEYS):
            if k in run:
                setup[k] = run[k]  # ComfyUI casts INT widgets
        gd = g.node("DragonDiffusion_GuidanceSetup", **setup)
        window = dict(zip(("start", "end"), CROSS_KV_WINDOW)) if mode in PASTE_LIKE else {}  # as the examples
        if "kv_source" in run:
            window["source"] = run["kv_source"]
        m = g.node("DragonDiffusion_CrossBranchAttention", model=model, **window) if run.get("kv", True) else loader
        smp = g.node("DragonDiffusion_Sampler", model=[m, 0], positive=cond, negative=cond, inversion=[inv, 0],
                     guidance=[gd, 0], steps=steps, cfg=1.0, seed=seed)
        dec = g.node("VAEDecode", samples=[smp, 0], vae=vae)
        saves[name] = g.node("SaveImage", images=[dec, 0], filename_prefix=f"{prefix}/{mode}_{seed}_{name}")
    return g.nodes, saves


# ---------------------------------------------------------------- baselines

def _dilate(m: torch.Tensor, px: int) -> torch.Tensor:
    return F.max_pool2d(m[None, None].float(), 2 * px + 1, 1, px)[0, 0] if px > 0 else m.float()


def _warp(img: torch.Tensor, mask: torch.Tensor, offset, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Object pixels moved by offset and scaled about the mask's bbox centre (bilinear)."""
    h, w = mask.shape
    ys, xs = torch.nonzero(mask > 0.5, as_tuple=True)
    cy, cx = (ys.min() + ys.max() + 1).item() / 2, (xs.min() + xs.max() + 1).item() / 2
    yy, xx = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    sx = (xx - cx - offset[0]) / scale + cx
    sy = (yy - cy - offset[1]) / scale + cy
    grid = torch.stack([sx / w * 2 - 1, sy / h * 2 - 1], -1)[None]
    both = torch.cat([img, mask[None].float()])[None]
    out = F.grid_sample(both, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
    return out[:3], out[3]


def copy_paste(case: scenes.Case, fill: bool) -> torch.Tensor:
    """The classical baseline: cut the object out, paste it at the target, optionally fill the hole
    with the mean colour of a ring around it."""
    src = case.source.clone()
    if case.mode == "appearance":  # recolour the object with the reference object's mean colour
        rm = case.reference_mask > 0.5
        mean = case.reference[:, rm].mean(1).view(3, 1, 1)
        m = case.object_mask[None] > 0.5
        return torch.where(m, mean.expand_as(src), src)
    if case.mode == "paste":
        obj, m = _warp(case.reference, case.reference_mask, case.offset, 1.0)
        return src * (1 - m) + obj * m
    hole = case.object_mask > 0.5
    out = src.clone()
    if fill:
        ring = (_dilate(case.object_mask, 2) > 0.5) & ~hole
        out[:, hole] = src[:, ring].mean(1, keepdim=True)
    if case.mode == "remove":
        return out
    obj, m = _warp(src, case.object_mask, case.offset, case.scale)
    return out * (1 - m) + obj * m


# ---------------------------------------------------------------- metrics

def psnr(a: torch.Tensor, b: torch.Tensor, where: torch.Tensor | None = None) -> float:
    d = (a - b) ** 2
    if where is not None:
        if where.sum() == 0:
            return float("nan")
        d = d[:, where]
    mse = float(d.mean())
    return 99.0 if mse < 1e-10 else 10 * math.log10(1.0 / mse)


def local_stats(img: torch.Tensor, k: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    x = img[None]
    mu = F.avg_pool2d(F.pad(x, (k // 2,) * 4, mode="replicate"), k, 1)
    var = F.avg_pool2d(F.pad(x * x, (k // 2,) * 4, mode="replicate"), k, 1) - mu * mu
    return mu[0], var.clamp_min(0).sqrt()[0]


def score(case: scenes.Case, out: torch.Tensor) -> dict:
    """All metrics of one result against the case's ground truth (NaN where a metric does not apply)."""
    color = torch.tensor(case.object_color).view(3, 1, 1)
    bg_has_color = (case.background - color).norm(dim=0) < OBJ_TOL
    obj = ((out - color).norm(dim=0) < OBJ_TOL) & ~bg_has_color
    tgt, src = case.target_region > 0.5, case.source_region > 0.5
    r: dict = {}
    if case.mode in ("move", "resize", "drag", "paste"):
        n = int(obj.sum())
        ys, xs = torch.nonzero(tgt, as_tuple=True)
        tc = torch.tensor([xs.float().mean(), ys.float().mean()])
        if n:
            oy, ox = torch.nonzero(obj, as_tuple=True)
            r["centroid_err"] = float((torch.tensor([ox.float().mean(), oy.float().mean()]) - tc).norm())
        else:
            r["centroid_err"] = float(math.hypot(*out.shape[-2:]))
        r["in_target"] = float((obj & (_dilate(tgt, 1) > 0.5)).sum()) / max(n, 1)
        r["iou"] = float((obj & tgt).sum()) / max(float((obj | tgt).sum()), 1.0)
    changed = _dilate((src | tgt).float(), 2) > 0.5
    r["bg_psnr"] = psnr(out, case.source, ~changed)
    vac = src & ~(_dilate(tgt.float(), 1) > 0.5)
    if vac.any():
        r["vacated_psnr"] = psnr(out, case.background, vac)
        mu, sd = local_stats(out)
        mu_t, sd_t = local_stats(case.expected)
        r["vacated_texture_err"] = float((mu - mu_t).abs()[:, vac].mean() + (sd - sd_t).abs()[:, vac].mean())
        r["ghost"] = float((obj & vac).sum()) / float(vac.sum())
    if tgt.any():
        r["object_psnr"] = psnr(out, case.expected, tgt)
    r["full_psnr"] = psnr(out, case.expected)
    return r


METRICS = ("centroid_err", "in_target", "iou", "bg_psnr", "vacated_psnr", "vacated_texture_err", "ghost",
           "object_psnr", "full_psnr", "seconds")
HIGHER_IS_BETTER = {"in_target", "iou", "bg_psnr", "vacated_psnr", "object_psnr", "full_psnr"}


def bootstrap_ci(x: np.ndarray, reps: int = 2000, seed: int = 0) -> tuple[float, float]:
    x = x[np.isfinite(x)]
    if len(x) < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = rng.choice(x, (reps, len(x))).mean(1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def summarise(rows: list[dict]) -> dict:
    out = {}
    for k in METRICS:
        v = np.array([r.get(k, float("nan")) for r in rows], dtype=float)
        v = v[np.isfinite(v)]
        if len(v):
            lo, hi = bootstrap_ci(v)
            out[k] = {"mean": float(v.mean()), "median": float(np.median(v)), "ci95": [lo, hi], "n": int(len(v))}
    return out


def paired(a: list[dict], b: list[dict]) -> dict:
    """Mean of (variant - main) per metric over the same scenes, with a bootstrap 95% CI."""
    out = {}
    for k in METRICS:
        d = np.array([x.get(k, float("nan")) - y.get(k, float("nan")) for x, y in zip(b, a)], dtype=float)
        d = d[np.isfinite(d)]
        if len(d):
            lo, hi = bootstrap_ci(d)
            out[k] = {"mean_diff": float(d.mean()), "ci95": [lo, hi], "n": int(len(d))}
    return out


# ---------------------------------------------------------------- running

def parse_overrides(items: list[str]) -> dict:
    """--set items -> {key or "mode.key": value}; numbers as floats, the schedule as its name."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{item!r} is not KEY=VALUE")
        mode, _, name = key.rpartition(".")
        if mode and mode not in MODES:
            raise ValueError(f"{item!r}: unknown mode {mode!r} (modes: {', '.join(MODES)})")
        if name in ("schedule", "kv_source"):
            out[key] = value
        elif name in BOOL_KEYS:
            if value.lower() not in ("true", "false", "1", "0", "1.0", "0.0"):
                raise ValueError(f"{item!r}: {name} is true or false")
            out[key] = value.lower() in ("true", "1", "1.0")
        else:
            out[key] = float(value)
    return out


def mode_overrides(overrides: dict, mode: str) -> dict:
    """The settings one mode runs with: the plain keys, then that mode's own (mode.key) on top."""
    run = {k: v for k, v in overrides.items() if "." not in k}
    run.update({k.split(".", 1)[1]: v for k, v in overrides.items() if k.startswith(mode + ".")})
    return run


def default_variants(main_run: dict) -> list[str]:
    """K/V off, the schedule the main method does not use, and each start/trajectory option the main method
    turns on switched off again; with any of those on, also the energy off (what the guidance itself adds)."""
    other = "diffeditor_schedule" if main_run.get("schedule") == "dragondiffusion" else "dragondiffusion_schedule"
    options = [v for v in OPT_INS if any(main_run.get(k, off) != off for k, off in VARIANTS[v].items())]
    return ["no_kv", other, *options, *(["no_energy", "official"] if options else [])]


def load_png(path: Path) -> torch.Tensor:
    return torch.from_numpy(np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1)


def strip(cases: list[scenes.Case], results: dict, path: Path, zoom: int = 4) -> None:
    """Rows of (source, reference or blank, expected, Dragon result, no guidance) per scene."""
    rows = []
    for c in cases:
        blank = torch.ones_like(c.source)
        cells = [c.source, c.reference if c.reference is not None else blank, c.expected,
                 results["dragon"].get(c.seed, blank), results.get("no_guidance", {}).get(c.seed, blank)]
        pad = torch.ones(3, c.source.shape[1], 2)
        rows.append(torch.cat([t for cell in cells for t in (cell, pad)][:-1], -1))
    grid = torch.cat([torch.cat([r, torch.ones(3, 2, r.shape[-1])], -2) for r in rows], -2)[:, :-2]
    img = Image.fromarray((grid.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    img.resize((img.width * zoom, img.height * zoom), Image.NEAREST).save(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    ap.add_argument("--scenes", type=int, default=40, help="test scenes per mode")
    ap.add_argument("--variants", nargs="*",
                    help="variants to compare (on --variant-modes); 'none' for none (default: no_kv, the other "
                         "schedule than the mode's main one, and each of keep_background, vacated_noise, vacated_trend and "
                         "anchor_end the main run sets switched off, with no_energy when any is set)")
    ap.add_argument("--variant-modes", nargs="*", default=["move", "drag"])
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--tune", action="store_true", help="use the settings scenes (seeds 0+), not the test scenes")
    ap.add_argument("--set", nargs="*", default=bench_args(), metavar="[MODE.]KEY=VALUE",
                    help="Guidance Setup inputs of the main method, e.g. energy_scale=80, or of one mode: "
                         "move.schedule=dragondiffusion (default: the toy model's, toy/dragon_toy/settings.py: "
                         f"{' '.join(bench_args())}; --set alone: every mode at the pack's defaults)")
    ap.add_argument("--dit", action="store_true",
                    help="the toy flow DiT (toy/dragon_toy/dit.py: ComfyUI's Flux class) instead of the toy UNet, with "
                         "its settings (toy/dragon_toy/settings.py DIT_GUIDANCE); writes bench/quality-dit.json and "
                         "bench/dit/strip_*.png unless --out/--strip-dir say otherwise")
    ap.add_argument("--sd3", action="store_true",
                    help="the toy SD3 (toy/dragon_toy/sd3.py: ComfyUI's MMDiT) with its settings (SD3_GUIDANCE); "
                         "writes bench/quality-sd3.json and bench/sd3/strip_*.png unless --out/--strip-dir say otherwise")
    ap.add_argument("--out")
    ap.add_argument("--strip-dir")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--weights",
                    help="toy model weights to benchmark (default: the shipped ones), e.g. a candidate from "
                         "scripts/train_toy.py --out /tmp/candidate.safetensors")
    ap.add_argument("--merge", nargs="+", metavar="JSON",
                    help="only merge the modes of earlier runs (e.g. two processes on two cores) into --out")
    ap.add_argument("--markdown", metavar="JSON",
                    help="only print the README's two tables (results, paired differences) of a finished run")
    ap.add_argument("--paired-runs", nargs=2, metavar=("MAIN", "OTHER"),
                    help="only print the Dragon result of OTHER minus MAIN per mode, paired on their common test "
                         "scenes (e.g. two runs at different --steps)")
    args = ap.parse_args()
    if args.dit and args.sd3:
        ap.error("--dit and --sd3: one toy model at a time")
    # (toy, its weights, their environment variable, its loader node, its settings, its name in the report)
    toy = (("sd3", toy_sd3.WEIGHTS, toy_sd3.WEIGHTS_ENV, "DragonToy_SD3Loader", SD3_GUIDANCE, "toy SD3") if args.sd3
           else ("dit", toy_dit.WEIGHTS, toy_dit.WEIGHTS_ENV, "DragonToy_DiTLoader", DIT_GUIDANCE, "toy DiT")
           if args.dit else ("", WEIGHTS, WEIGHTS_ENV, "DragonToy_ModelLoader", None, "toy UNet"))
    args.out = args.out or str(ROOT / "bench" / (f"quality-{toy[0]}.json" if toy[0] else "quality.json"))
    args.strip_dir = args.strip_dir or str(ROOT / "bench" / toy[0])
    args.weights = args.weights or toy[1]
    if toy[4] is not None and "--set" not in sys.argv:
        args.set = bench_args(toy[4])
    if args.markdown:
        print(markdown_tables(json.loads(Path(args.markdown).read_text())))
        return
    if args.paired_runs:
        print(paired_runs_table(*(json.loads(Path(p).read_text()) for p in args.paired_runs), args.paired_runs[1]))
        return
    if args.merge:
        runs = [json.loads(Path(p).read_text()) for p in args.merge]
        for p, run in zip(args.merge, runs):
            if run.get("weights", {}).get("sha256") != runs[0].get("weights", {}).get("sha256"):
                ap.error(f"--merge: {p} ran on other toy weights than {args.merge[0]}; merge runs of one model")
            for m in run["modes"].values():  # each mode keeps the settings, date and command it ran with
                m.setdefault("overrides", run.get("overrides", {}))
                m.setdefault("date", run.get("date"))
                m.setdefault("command", run.get("command"))
        merged = runs[0]
        for other in runs[1:]:
            merged["modes"].update(other["modes"])
            merged["command"] += " + " + other["command"]
            merged["wall_seconds"] = max(merged["wall_seconds"], other["wall_seconds"])
        Path(args.out).write_text(json.dumps(merged, indent=1))
        for mode, m in merged["modes"].items():
            print_table(mode, m)
        return
    weights = Path(args.weights).resolve()
    if not weights.is_file():
        ap.error(f"--weights: no file at {weights}")
    os.environ[toy[2]] = str(weights)  # read by the server's toy loader
    comfy_server.ensure_environment()
    try:
        overrides = parse_overrides(args.set)
    except ValueError as e:
        ap.error(f"--set: {e}")
    unknown = set(args.variants or []) - set(VARIANTS) - {"none"}
    if unknown:
        ap.error(f"--variants: unknown {sorted(unknown)}; choose from {sorted(VARIANTS)} or none")
    base = 0 if args.tune else TEST_SEED_BASE
    seeds = list(range(base, base + args.scenes))

    work = Path(tempfile.mkdtemp(prefix="dragon_bench_"))
    srv = comfy_server.start(work, [ROOT / "toy"], threads=args.threads)
    info = srv.get("/object_info")
    report: dict = {"command": " ".join(sys.argv[1:]), "steps": args.steps, "scenes": args.scenes,
                    "seeds": [seeds[0], seeds[-1]], "overrides": overrides, "threads": args.threads,
                    "model": toy[5],
                    "weights": {"path": str(weights.relative_to(ROOT) if weights.is_relative_to(ROOT) else weights),
                                "sha256": hashlib.sha256(weights.read_bytes()).hexdigest()},
                    "cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
                    "date": time.strftime("%Y-%m-%d"), "modes": {}}
    t_start = time.time()
    try:
        for mode in args.modes:
            main_run = mode_overrides(overrides, mode)
            runs = {"dragon": main_run, "no_guidance": {"energy_scale": 0.0, "kv": False}}
            if mode in args.variant_modes:
                for v in default_variants(main_run) if args.variants is None else args.variants:
                    if v != "none":
                        runs[v] = {**main_run, **VARIANTS[v]}
            rows: dict[str, list] = {name: [] for name in [*runs, "copy_paste", "copy_paste_fill", "ground_truth"]}
            images: dict[str, dict] = {name: {} for name in runs}
            cases = []
            for seed in seeds:
                case = scenes.make_case(mode, seed)
                cases.append(case)
                # one prompt per run so that ComfyUI's timestamps time each edit; the scene and its
                # inversion stay cached between them, so "dragon" (first) includes the inversion
                for name, run in runs.items():
                    prompt, saves = scene_prompt(info, mode, seed, {name: run}, args.steps, "bench",
                                                 toy[3])
                    h = srv.run_ok(prompt, timeout=600)
                    out = load_png(srv.image_paths(h, saves[name])[0])
                    images[name][seed] = out
                    rows[name].append({**score(case, out), "seconds": srv.seconds(h)})
                rows["copy_paste"].append(score(case, copy_paste(case, fill=False)))
                rows["copy_paste_fill"].append(score(case, copy_paste(case, fill=True)))
                rows["ground_truth"].append(score(case, case.expected))
                print(f"{mode} {seed}: " + "  ".join(
                    f"{n} iou={r[-1].get('iou', float('nan')):.2f} bg={r[-1]['bg_psnr']:.1f}"
                    for n, r in rows.items() if n in runs), flush=True)
            m = {"overrides": main_run, "methods": {n: summarise(r) for n, r in rows.items()},
                 "paired_vs_dragon": {n: paired(rows["dragon"], rows[n]) for n in runs if n != "dragon"},
                 "per_scene": {n: r for n, r in rows.items()}}
            report["modes"][mode] = m
            Path(args.strip_dir).mkdir(parents=True, exist_ok=True)
            strip(cases[:4], images, Path(args.strip_dir) / f"strip_{mode}.png")
            print_table(mode, m)
    finally:
        srv.stop()
    report["wall_seconds"] = time.time() - t_start
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out} ({report['wall_seconds'] / 60:.1f} min)")


def _stat(s: dict | None, k: str) -> float | None:
    """A method's summary figure for metric k (the median for centroid error, else the mean); None if unscored."""
    if not s or k not in s:
        return None
    return s[k]["median" if k == "centroid_err" else "mean"]


def _fmt(s: dict | None, k: str) -> str:
    v = _stat(s, k)
    if v is None:
        return "–"
    return f"{v:.3f}" if k in ("in_target", "iou", "ghost", "vacated_texture_err") else f"{v:.2f}"


README_NAMES = {"dragon": "Dragon", "kv_guidance": "Dragon, K/V of the guidance latent", "no_guidance": "no guidance",
                "no_kv": "Dragon, no K/V",
                "dragondiffusion_schedule": "Dragon, DragonDiffusion schedule",
                "diffeditor_schedule": "Dragon, DiffEditor schedule", "no_anchor": "Dragon, no anchor",
                "no_keep": "Dragon, background not kept",
                "no_vacated_noise": "Dragon, vacated place from its own noise",
                "no_vacated_trend": "Dragon, no vacated colour trend",
                "no_monotone": "Dragon, official raw-cosine energy", "no_ring_inpaint": "Dragon, official inpaint reference",
                "no_centred": "Dragon, official raw cross-image features",
                "official": "Dragon, official (every opt-in off)",
                "no_energy": "Dragon, energy_scale 0", "copy_paste": "copy-paste",
                "copy_paste_fill": "copy-paste + fill", "ground_truth": "ground truth (ceiling)"}


def _cell(s: dict | None, k: str) -> str:
    v = _stat(s, k)
    if v is None:
        return "–"
    if v >= 99 and k.endswith("psnr"):
        return "∞"  # identical pixels (the PSNR is capped at 100)
    return f"{v:.1f}" if k.endswith("psnr") or k == "seconds" else f"{v:.2f}"


def paired_runs_table(main: dict, other: dict, label: str) -> str:
    """Markdown rows: OTHER's Dragon minus MAIN's per mode, on the scenes both ran (same seeds, in order)."""
    cols = ("in_target", "iou", "bg_psnr", "vacated_psnr", "ghost", "full_psnr")
    out = []
    for mode in main["modes"]:
        if mode not in other["modes"]:
            continue
        if main["seeds"][0] != other["seeds"][0]:
            raise SystemExit(f"{mode}: the runs start at different scenes ({main['seeds'][0]}, {other['seeds'][0]})")
        a, b = main["modes"][mode]["per_scene"]["dragon"], other["modes"][mode]["per_scene"]["dragon"]
        n = min(len(a), len(b))
        d = paired(a[:n], b[:n])
        cells = [f"{d[k]['mean_diff']:+.2f} [{d[k]['ci95'][0]:+.2f}, {d[k]['ci95'][1]:+.2f}]" if k in d else "–"
                 for k in cols]
        out.append(f"| {mode} | {label} − main, {n} scenes | " + " | ".join(cells) + " |")
    return "\n".join(out)


def markdown_tables(report: dict) -> str:
    """The README's tables of a run: every method per mode, then Dragon minus each other method per scene
    (mean and bootstrap 95% interval; the JSON stores the other method minus Dragon)."""
    cols = ("centroid_err", "in_target", "iou", "bg_psnr", "vacated_psnr", "vacated_texture_err", "ghost",
            "full_psnr", "seconds")
    heads = ("centroid err (px)", "in target", "IoU", "bg PSNR", "vacated PSNR", "vacated texture err", "ghost",
             "full PSNR", "s/edit")
    out = ["| mode | method | " + " | ".join(heads) + " |", "|---|---|" + "---|" * len(cols)]
    for mode, m in report["modes"].items():
        for name, s in m["methods"].items():
            out.append(f"| {mode} | {README_NAMES.get(name, name)} | " + " | ".join(_cell(s, k) for k in cols) + " |")
    keys = ("in_target", "iou", "bg_psnr", "vacated_psnr", "ghost", "full_psnr")
    out += ["", "| mode | difference | " + " | ".join(heads[cols.index(k)] for k in keys) + " |",
            "|---|---|" + "---|" * len(keys)]
    for mode, m in report["modes"].items():
        for name, p in m["paired_vs_dragon"].items():
            cells = [f"{-p[k]['mean_diff']:+.2f} [{-p[k]['ci95'][1]:+.2f}, {-p[k]['ci95'][0]:+.2f}]"
                     if k in p else "–" for k in keys]
            out.append(f"| {mode} | Dragon − {README_NAMES.get(name, name)} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def print_table(mode: str, m: dict) -> None:
    cols = ("centroid_err", "in_target", "iou", "bg_psnr", "vacated_psnr", "vacated_texture_err", "ghost",
            "object_psnr", "full_psnr", "seconds")
    print(f"\n## {mode}\n| method | " + " | ".join(cols) + " |\n|" + "---|" * (len(cols) + 1))
    for name, s in m["methods"].items():
        print(f"| {name} | " + " | ".join(_fmt(s, k) for k in cols) + " |")
    for name, p in m["paired_vs_dragon"].items():
        cells = [f"{p[k]['mean_diff']:+.3f} [{p[k]['ci95'][0]:+.3f}, {p[k]['ci95'][1]:+.3f}]" if k in p else "–"
                 for k in cols]
        print(f"| {name} − dragon | " + " | ".join(cells) + " |")
    print(flush=True)


if __name__ == "__main__":
    main()

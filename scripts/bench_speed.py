#!/usr/bin/env python3
"""Speed and memory benchmark of a Dragon edit on the real SD1.5 / SDXL UNet architectures (issue #7).

The UNets are built by ComfyUI from its own model configs (model_detection's SD15 / SDXL unet_config,
comfy.supported_models) with small random weights: speed and memory do not depend on the values, and
no checkpoint download is needed. Each edit goes through the pack's own code paths: DDIM Invert
(run_inversion), Dragon Guidance Setup (build_spec), Cross-Branch Attention Patch (patch_model) and the
Dragon Sampler (run_dragon), inside ComfyUI's guider. The floor is a plain DDIM inversion plus ComfyUI's own
KSampler (ddim, ddim_uniform) over the same steps with the same CFG.

    .venv/bin/python scripts/bench_speed.py                      # CPU: SD1.5 256^2, 10 steps (~15 min, 1 thread)
    .venv/bin/python scripts/bench_speed.py --gpu                # GPU: SD1.5 512^2 + 768^2, SDXL 1024^2, fp16, 50 steps
    .venv/bin/python scripts/bench_speed.py --gpu --steps 25     # the optional shorter schedule

Every optimisation that can be switched off is run both ways in the same process (--variants), so the
output shows before/after on the same machine. Writes JSON (--out).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# ComfyUI's folder: scripts/dev-env's, or DRAGON_COMFYUI (scripts/gpu-bench carries a trimmed copy to a GPU machine)
COMFY = Path(os.environ.get("DRAGON_COMFYUI") or REPO / ".comfyui").resolve()
PACK_DIR = COMFY / "custom_nodes" / "comfyui-dragondiffusion"
GB = 1024 ** 3

# ComfyUI's own unet_config of the two families (comfy/model_detection.py, unet_config_from_diffusers_unet);
# model_config_from_unet_config() must map them to comfy.supported_models.SD15 / SDXL (checked below).
UNETS = {
    "sd15": dict(use_checkpoint=False, image_size=32, out_channels=4, use_spatial_transformer=True, legacy=False,
                 adm_in_channels=None, in_channels=4, model_channels=320, num_res_blocks=[2, 2, 2, 2],
                 transformer_depth=[1, 1, 1, 1, 1, 1, 0, 0], channel_mult=[1, 2, 4, 4], transformer_depth_middle=1,
                 use_linear_in_transformer=False, context_dim=768, num_heads=8,
                 transformer_depth_output=[1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
                 use_temporal_attention=False, use_temporal_resblock=False),
    "sdxl": dict(use_checkpoint=False, image_size=32, out_channels=4, use_spatial_transformer=True, legacy=False,
                 num_classes="sequential", adm_in_channels=2816, in_channels=4, model_channels=320,
                 num_res_blocks=[2, 2, 2], transformer_depth=[0, 0, 2, 2, 10, 10], channel_mult=[1, 2, 4],
                 transformer_depth_middle=10, use_linear_in_transformer=True, context_dim=2048, num_head_channels=64,
                 transformer_depth_output=[0, 0, 0, 2, 2, 2, 10, 10, 10],
                 use_temporal_attention=False, use_temporal_resblock=False),
}
CLASS = {"sd15": "SD15", "sdxl": "SDXL"}

# before/after switches: name -> (what it turns off, how)
VARIANTS = {
    "pack": "all optimisations on (the pack as shipped)",
    "no_kv_bank": "no K/V memory bank from DDIM Invert (kv_bank_mb 0): the official K/V recomputed on every injected "
                  "step, one batch-1 UNet pass each (the engine before #22)",
    "weight_copies": "the gradient pass copies every weight (through weight wrappers, #7's way) instead of using "
                     "normal-tensor aliases of the loaded weights (#22)",
    "copy_every_pass": "weight_copies, and copied in every pass of the Dragon clone, not only the gradient pass (pre-#7)",
    "keep_weight_copies": "weight_copies, and autograd keeps the copies until the backward (pre-#7)",
    "pre7": "all three of the above (the engine as it was before #7)",
    "full_unet_grad": "gradient pass runs the whole UNet instead of stopping after the deepest feature stage",
    "batched_gradients": "switched ON (off in the pack until measured on a GPU): the gradient pass runs two copies of "
                         "the latent in one forward and one backward, instead of one forward and two backward passes",
}


def setup_comfy(device: str):
    if str(COMFY) not in sys.path:
        sys.path.insert(0, str(COMFY))  # ComfyUI first: the pack's nodes/ must not shadow ComfyUI's nodes.py
    os.chdir(COMFY)
    import utils.extra_config  # noqa: F401  (ComfyUI's utils package before nodes.py)
    from comfy.cli_args import args

    args.cpu = device == "cpu"
    args.disable_api_nodes = True
    import nodes

    if not asyncio.run(nodes.load_custom_node(str(PACK_DIR))):
        raise SystemExit("ComfyUI could not load the pack")
    pack = sys.modules[str(PACK_DIR).replace(".", "_x_")]
    for sub in ("nodes", "dragon_core"):
        for f in (REPO / sub).glob("*.py"):
            if f.stem != "__init__":
                __import__(f"{pack.__name__}.{sub}.{f.stem}")
    return pack, nodes


class Mem:
    """Peak resident memory (polled) and CUDA max allocated, per window."""

    def __init__(self, cuda: bool):
        self.cuda, self.peak, self._stop = cuda, 0, False
        threading.Thread(target=self._poll, daemon=True).start()

    @staticmethod
    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _poll(self):
        while not self._stop:
            self.peak = max(self.peak, self.rss())
            time.sleep(0.005)

    def start(self):
        import torch

        self.peak = self.rss()
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()

    def read(self) -> dict:
        import torch

        out = {"peak_rss_gb": max(self.peak, self.rss()) / GB}
        if self.cuda:
            out["cuda_max_allocated_gb"] = torch.cuda.max_memory_allocated() / GB
            out["cuda_max_reserved_gb"] = torch.cuda.max_memory_reserved() / GB
        return out


def build_model(pack, family: str, dtype, manual_cast, seed: int = 0):
    """The real architecture via ComfyUI's model config, small random weights (values don't matter for speed)."""
    import torch

    import comfy.model_detection
    import comfy.model_management as mm
    import comfy.model_patcher

    cfg = dict(UNETS[family])
    mc = comfy.model_detection.model_config_from_unet_config(cfg)
    assert type(mc).__name__ == CLASS[family], type(mc)
    mc.set_inference_dtype(dtype, manual_cast)
    model = mc.get_model({})
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in model.modules():
            for name, p in mod.named_parameters(recurse=False):
                if name == "bias" or p.ndim == 1:
                    p.fill_(1.0 if (name == "weight" and isinstance(mod, (torch.nn.GroupNorm, torch.nn.LayerNorm)))
                            else 0.0)
                else:
                    p.normal_(0.0, 0.5 / p[0].numel() ** 0.5, generator=g)
        model.diffusion_model.out[-1].weight.mul_(0.1)
    params = sum(p.numel() for p in model.parameters())
    return comfy.model_patcher.ModelPatcher(model, load_device=mm.get_torch_device(),
                                            offload_device=mm.unet_offload_device()), params


def conditioning(family: str, seed: int, w: int, h: int) -> list:
    import torch

    g = torch.Generator().manual_seed(seed)
    if family == "sd15":
        return [[torch.randn(1, 77, 768, generator=g), {}]]
    return [[torch.randn(1, 77, 2048, generator=g),
             {"pooled_output": torch.randn(1, 1280, generator=g), "width": w, "height": h, "crop_w": 0, "crop_h": 0,
              "target_width": w, "target_height": h}]]


def scene_latent(w: int, h: int, seed: int = 3):
    """A smooth latent with a blob, standing in for an encoded photo."""
    import torch

    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h // 8), torch.linspace(-1, 1, w // 8), indexing="ij")
    blob = torch.exp(-((xx + 0.2) ** 2 + yy ** 2) / 0.1)[None] * torch.randn(4, 1, 1, generator=g) * 2
    return ((torch.randn(4, 1, 1, generator=g) * (xx + 0.5 * yy)[None] + blob)[None] / 0.18215 * 0.5)


def guidance(pack, mode: str, w: int, h: int):
    import torch

    gd = sys.modules[f"{pack.__name__}.nodes.guidance"]
    spec = sys.modules[f"{pack.__name__}.dragon_core.spec"]
    if mode == "move":
        mask = torch.zeros(1, h, w)
        mask[:, int(h * 0.35):int(h * 0.65), int(w * 0.2):int(w * 0.45)] = 1
        return gd.build_spec("move", object_mask=mask, offset_x=int(w * 0.25), schedule="diffeditor")
    pts = spec.DragPoints(pairs=(spec.PointPair((w * 0.35, h * 0.5), (w * 0.55, h * 0.45)),), width=w, height=h)
    return gd.build_spec("drag", points=pts, schedule="diffeditor")


def phase_of(state) -> str:
    """The probe's name for a UNet call of the Dragon Sampler: a plain pass that captures features is the guidance
    branch's feature pass (truncated), counted as reference work, not a re-inversion; no state: "other"."""
    ph = getattr(state, "phase", None)
    if ph == "plain" and state.capture:
        return "reference"
    return {"reference": "reference", "generate": "generate", "grad": "grad", "plain": "reinvert"}.get(ph, "other")


class Probe:
    """Per-phase wall time, UNet evaluations and the bytes the edit state holds, by wrapping the backend."""

    def __init__(self, pack, unet, cuda: bool):
        self.pack, self.unet, self.cuda = pack, unet, cuda
        self.reset()

    def reset(self):
        self.t = {"reference": 0.0, "generate": 0.0, "grad_forward": 0.0, "guidance_total": 0.0, "reinvert": 0.0}
        self.cpu = dict.fromkeys(self.t, 0.0)  # process CPU time: less sensitive than wall time to other load
        self.calls = {"reference": 0, "generate": 0, "grad": 0, "reinvert": 0, "other": 0}
        self.images_by = dict.fromkeys(self.calls, 0)  # UNet images (batch items) by phase
        self.images = 0
        self.kv_bytes = self.feat_bytes = 0

    def _sync(self):
        if self.cuda:
            import torch

            torch.cuda.synchronize()

    @contextmanager
    def timed(self, key):
        self._sync()
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self._sync()
            self.t[key] += time.perf_counter() - t0
            self.cpu[key] += time.process_time() - c0

    @contextmanager
    def installed(self):
        be = sys.modules[f"{self.pack.__name__}.nodes.backend"]
        core = sys.modules[f"{self.pack.__name__}.dragon_core.sampler"]
        orig_cfg, orig_cond, orig_guid = be.ComfyBackend.denoise_cfg, be.ComfyBackend.denoise_cond, core._guidance
        probe = self

        def nbytes(d):
            return sum(t.numel() * t.element_size() for v in d.values() for t in (v if isinstance(v, tuple) else (v,)))

        def denoise_cfg(self, x, sigma, state):
            with probe.timed("generate"):
                out = orig_cfg(self, x, sigma, state)
            probe.kv_bytes = max(probe.kv_bytes, nbytes(state.kv))
            return out

        def denoise_cond(self, x, sigma, state):
            phase = phase_of(state)
            with probe.timed({"grad": "grad_forward", "other": "reinvert"}.get(phase, phase)):
                out = orig_cond(self, x, sigma, state)
            if state.phase == "reference":
                probe.kv_bytes = max(probe.kv_bytes, nbytes(state.kv))
                probe.feat_bytes = max(probe.feat_bytes, nbytes(state.features))
            return out

        def _guidance(*a, **k):
            with probe.timed("guidance_total"):
                return orig_guid(*a, **k)

        def pre_hook(mod, args, kwargs):
            x = args[0] if args else kwargs.get("x")
            phase = phase_of((kwargs.get("transformer_options") or {}).get("dragon"))
            probe.calls[phase] += 1
            probe.images_by[phase] += int(x.shape[0])
            probe.images += int(x.shape[0])

        h = self.unet.register_forward_pre_hook(pre_hook, with_kwargs=True)
        be.ComfyBackend.denoise_cfg, be.ComfyBackend.denoise_cond, core._guidance = denoise_cfg, denoise_cond, _guidance
        try:
            yield
        finally:
            h.remove()
            be.ComfyBackend.denoise_cfg, be.ComfyBackend.denoise_cond, core._guidance = orig_cfg, orig_cond, orig_guid


def official_unet_images(pack, steps: int, schedule: str = "diffeditor", cross_image: bool = False) -> dict:
    """UNet images (batch items) of the official edit over the same schedule, counted from its code
    (shared/design/dragondiffusion.md §1.3-1.5, §7.2): inversion, one forward per step (cross-image modes invert
    [base, reference] as one batch of 2); generation, one CFG forward of 2 images per pass (a pass per step plus
    the time-travel repeats); guidance, per evaluation (every pass of a guided step) a no-grad truncated estimator
    forward on the stored latent (base and reference in cross-image modes) and a truncated forward with gradient
    of 1 image; time travel, one re-inversion forward of 1 image after every pass of a repeated step (the last
    one's result is discarded; the pack skips it). K/V come from the bank filled
    during the inversion. Truncated passes count as whole images; the backward passes (one per evaluation on
    both sides) are not forwards and are not counted."""
    sched = sys.modules[f"{pack.__name__}.dragon_core.schedule"]
    plan = sched.plan_steps(steps, schedule, 0.0, 0.6, 0.4, 3)
    passes = sum(p.repeats for p in plan)
    evaluations = sum(p.repeats for p in plan if p.guided)
    reinvert = sum(p.repeats for p in plan if p.repeats > 1)  # after every pass, the last one's discarded (§4.4)
    b = 2 if cross_image else 1
    return {"inversion": b * steps, "generate": 2 * passes, "estimator": b * evaluations, "grad": evaluations,
            "reinvert": reinvert, "total": b * steps + 2 * passes + (b + 1) * evaluations + reinvert}


def check_official_count(pack) -> None:
    """The count above reproduces the spec's own 50-step figures (§7.2): 50 inversion forwards, 50 + 8 CFG
    forwards of 2, 28 evaluations of 1 + 1 forwards, 12 re-inversions; 'D': 50 + 50 + 30 evaluations."""
    d = official_unet_images(pack, 50)
    assert (d["inversion"], d["generate"], d["grad"], d["estimator"], d["reinvert"]) == (50, 116, 28, 28, 12), d
    dd = official_unet_images(pack, 50, "dragondiffusion")
    assert (dd["generate"], dd["grad"], dd["reinvert"]) == (100, 30, 0), dd


@contextmanager
def variant(pack, name: str):
    """Switch one optimisation off (or, for batched_gradients, on) for the duration: one side of a before/after
    pair."""
    be = sys.modules[f"{pack.__name__}.nodes.backend"]
    att = sys.modules[f"{pack.__name__}.dragon_core.attention"]
    saved = (be.ALIAS_WEIGHTS_IN_GRAD, be.WEIGHT_COPY_ONLY_IN_GRAD, be.DROP_SAVED_WEIGHT_COPIES,
             be.BATCHED_GRADIENTS, att.BranchState.reset_capture)
    if name in ("weight_copies", "copy_every_pass", "keep_weight_copies", "pre7"):
        be.ALIAS_WEIGHTS_IN_GRAD = False
    if name in ("copy_every_pass", "pre7"):
        be.WEIGHT_COPY_ONLY_IN_GRAD = False
    if name in ("keep_weight_copies", "pre7"):
        be.DROP_SAVED_WEIGHT_COPIES = False
    if name == "full_unet_grad":
        orig = att.BranchState.reset_capture
        att.BranchState.reset_capture = lambda self, blocks, stop: orig(self, blocks, False)
    if name == "batched_gradients":
        be.BATCHED_GRADIENTS = True
    try:
        yield
    finally:
        be.ALIAS_WEIGHTS_IN_GRAD, be.WEIGHT_COPY_ONLY_IN_GRAD, be.DROP_SAVED_WEIGHT_COPIES, \
            be.BATCHED_GRADIENTS, att.BranchState.reset_capture = saved


def run_case(pack, nodes_mod, args, family: str, size: int, dtype_name: str, mem: Mem, out_runs: list, save):
    import torch

    import comfy.model_management as mm

    cuda = mm.get_torch_device().type == "cuda"
    dtypes = {"fp32": (torch.float32, None), "fp16": (torch.float16, None), "bf16": (torch.bfloat16, None),
              "bf16-fp32": (torch.bfloat16, torch.float32)}
    dtype, manual = dtypes[dtype_name]
    w = h = size
    steps = args.steps
    inv_mod = sys.modules[f"{pack.__name__}.nodes.invert"]
    ap = sys.modules[f"{pack.__name__}.nodes.attention_patch"]
    smp = sys.modules[f"{pack.__name__}.nodes.sampler"]
    print(f"\n=== {family} {w}x{h}, {steps} steps, weights {dtype_name}, cfg {args.cfg} ===", flush=True)
    t0 = time.perf_counter()
    with torch.inference_mode():
        model, params = build_model(pack, family, dtype, manual)
    print(f"built {CLASS[family]} UNet from ComfyUI's config: {params / 1e6:.0f} M parameters "
          f"({time.perf_counter() - t0:.0f} s to initialise)", flush=True)
    pos, neg = conditioning(family, 1, w, h), conditioning(family, 2, w, h)
    lat = scene_latent(w, h)
    unet = model.model.diffusion_model
    probe = Probe(pack, unet, cuda)
    base = {"model": family, "size": f"{w}x{h}", "steps": steps, "weights": dtype_name, "cfg": args.cfg,
            "params_m": round(params / 1e6, 1)}

    def sync():
        if cuda:
            torch.cuda.synchronize()

    with torch.inference_mode(), probe.installed():
        mm.load_models_gpu([model])
        # warm-up (kernel selection, allocator), not timed
        inv_mod.run_inversion(model, pos, lat, 2)
        for rep in range(args.repeat):
            # ---- floor: plain DDIM inversion + ComfyUI's KSampler (ddim / ddim_uniform), same steps and CFG
            probe.reset()
            mem.start()
            sync()
            t, c = time.perf_counter(), time.process_time()
            inv, _ = inv_mod.run_inversion(model, pos, lat, steps, kv_bank_mb=0)
            sync()
            t_inv, c_inv = time.perf_counter() - t, time.process_time() - c
            inv_calls = dict(probe.calls)
            t, c = time.perf_counter(), time.process_time()
            nodes_mod.common_ksampler(model, 7, steps, args.cfg, "ddim", "ddim_uniform", pos, neg, {"samples": lat})
            sync()
            t_ks, c_ks = time.perf_counter() - t, time.process_time() - c
            floor = {"invert_s": t_inv, "sample_s": t_ks, "total_s": t_inv + t_ks, "invert_cpu_s": c_inv,
                     "sample_cpu_s": c_ks, "total_cpu_s": c_inv + c_ks, "unet_calls": probe.calls["other"],
                     **mem.read()}
            print(f"[rep {rep + 1}] floor: invert {t_inv:.1f} s ({inv_calls['other']} UNet calls) + KSampler ddim "
                  f"{t_ks:.1f} s ({probe.calls['other'] - inv_calls['other']} calls) = {t_inv + t_ks:.1f} s "
                  f"(process CPU {c_inv + c_ks:.1f} s), peak RSS {floor['peak_rss_gb']:.2f} GB", flush=True)
            # the edit's DDIM Invert records the K/V memory bank (the same UNet passes as the floor's inversion)
            mem.start()
            sync()
            t, c = time.perf_counter(), time.process_time()
            inv_bank, _ = inv_mod.run_inversion(model, pos, lat, steps)
            sync()
            t_inv_bank, c_inv_bank = time.perf_counter() - t, time.process_time() - c
            bank = inv_bank.kv_bank
            print(f"[rep {rep + 1}] DDIM Invert with the K/V bank: {t_inv_bank:.1f} s (process CPU {c_inv_bank:.1f} s; "
                  f"plain {t_inv:.1f} s), bank {len(bank.steps)} of {steps} steps, {bank.nbytes / 2**20:.1f} MiB, "
                  f"peak RSS {mem.read()['peak_rss_gb']:.2f} GB", flush=True)
            inv_bytes = sum(x.numel() * x.element_size() for x in inv.latents)
            for mode in args.modes:
                spec = guidance(pack, mode, w, h)
                patched, _ = ap.patch_model(model, "auto", 0.1, 1.0)
                if rep > 0 and mode != args.modes[0]:
                    continue  # second repetition: only the main comparison
                for var in (args.variants if mode == args.modes[0] else ["pack"]):
                    if rep > 0 and var not in ("pack", "no_kv_bank"):
                        continue
                    banked = var != "no_kv_bank"
                    inv_used, t_i, c_i = (inv_bank, t_inv_bank, c_inv_bank) if banked else (inv, t_inv, c_inv)
                    probe.reset()
                    with variant(pack, var):
                        mm.load_models_gpu([model])
                        mem.start()
                        sync()
                        t, c = time.perf_counter(), time.process_time()
                        _, job = smp.run_dragon(patched, pos, neg, inv_used, spec, steps, args.cfg, 5)
                        sync()
                        t_dr, c_dr = time.perf_counter() - t, time.process_time() - c
                    m = mem.read()
                    pt = dict(probe.t)
                    backward = pt["guidance_total"] - pt["grad_forward"]
                    other = t_dr - (pt["reference"] + pt["generate"] + pt["guidance_total"] + pt["reinvert"])
                    edit_total = t_i + t_dr
                    bank_bytes = bank.nbytes if banked else 0
                    state = {"kv_bytes_per_step": probe.kv_bytes, "features_bytes": probe.feat_bytes,
                             "inversion_latents_bytes": inv_bytes, "kv_bank_bytes": bank_bytes,
                             "total_bytes": probe.kv_bytes + probe.feat_bytes + inv_bytes + bank_bytes,
                             "official_kv_bank_bytes": probe.kv_bytes * steps}
                    ours_images = {"inversion": inv_calls["other"], **{k: v for k, v in probe.images_by.items()
                                                                       if k != "other"}}
                    ours_images["total"] = sum(ours_images.values())
                    official = official_unet_images(pack, steps, spec.schedule, cross_image=False)
                    row = {**base, "rep": rep + 1, "mode": mode, "schedule": spec.schedule, "variant": var,
                           "kv_banked_steps": job.stats.kv_banked, "unet_images_by_phase": ours_images,
                           "official_unet_images": official,
                           "invert_s": t_i, "reference_s": pt["reference"], "generate_s": pt["generate"],
                           "grad_forward_s": pt["grad_forward"], "grad_backward_energy_s": backward,
                           "reinvert_s": pt["reinvert"], "other_s": other, "dragon_sampler_s": t_dr,
                           "edit_total_s": edit_total, "floor": floor, "edit_over_floor": edit_total / floor["total_s"],
                           "cpu_s": {**{k: round(v, 2) for k, v in probe.cpu.items()}, "invert": c_i,
                                     "dragon_sampler": c_dr, "edit_total": c_i + c_dr},
                           "edit_over_floor_cpu": (c_i + c_dr) / floor["total_cpu_s"],
                           "unet_calls": dict(probe.calls), "unet_images": probe.images,
                           "guided_steps": job.stats.guided_steps, "edit_state": state, **m,
                           "unet_copies": 1 if job is not None and patched.model is model.model else 2}
                    out_runs.append(row)
                    save()
                    c = probe.calls
                    print(f"[rep {rep + 1}] {mode:4s} {var:18s} edit {edit_total:6.1f} s = invert {t_i:.1f} + "
                          f"reference {pt['reference']:.1f} + generate {pt['generate']:.1f} + grad fwd "
                          f"{pt['grad_forward']:.1f} + grad bwd/energy {backward:.1f} + re-invert {pt['reinvert']:.1f}"
                          f" + other {other:.1f}; edit/floor {edit_total / floor['total_s']:.2f} (process CPU "
                          f"{c_i + c_dr:.1f} s, {(c_i + c_dr) / floor['total_cpu_s']:.2f}x); UNet calls "
                          f"ref {c['reference']} gen {c['generate']} grad {c['grad']} reinv {c['reinvert']}; "
                          f"UNet images {ours_images['total']} (inversion {ours_images['inversion']}, reference "
                          f"{ours_images['reference']}, generate {ours_images['generate']}, grad {ours_images['grad']}, "
                          f"re-invert {ours_images['reinvert']}; official {official['total']}), K/V banked on "
                          f"{job.stats.kv_banked} steps; "
                          f"peak RSS {m['peak_rss_gb']:.2f} GB"
                          + (f", CUDA max allocated {m['cuda_max_allocated_gb']:.2f} GB, reserved "
                             f"{m['cuda_max_reserved_gb']:.2f} GB" if cuda else "")
                          + f"; edit state {state['total_bytes'] / 2**20:.1f} MiB (K/V {probe.kv_bytes / 2**20:.1f}"
                          f" + features {probe.feat_bytes / 2**20:.1f} + inversion {inv_bytes / 2**20:.2f} + bank "
                          f"{bank_bytes / 2**20:.1f})",
                          flush=True)
    del model, patched
    mm.unload_all_models()
    mm.soft_empty_cache()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda if available")
    ap.add_argument("--gpu", action="store_true", help="GPU sizes: SD1.5 512^2 and 768^2, SDXL 1024^2, fp16, 50 steps")
    ap.add_argument("--sd15-sizes", default=None, help="comma-separated square sizes (default 256 on CPU)")
    ap.add_argument("--sdxl-sizes", default=None, help="comma-separated square sizes; empty = skip SDXL")
    ap.add_argument("--sdxl-cpu", action="store_true",
                    help="run SDXL on the CPU too (bf16 weights, fp32 compute; ~5 GB RAM, slow); skipped by default")
    ap.add_argument("--steps", type=int, default=None, help="default 10 on CPU, 50 with --gpu (25: the short schedule)")
    ap.add_argument("--cfg", type=float, default=4.0)
    ap.add_argument("--modes", default="move,drag")
    ap.add_argument("--variants", default=None,
                    help="before/after switches run on the first mode (default: pack,no_kv_bank,weight_copies,pre7,"
                         "full_unet_grad; with --gpu: pack,batched_gradients,no_kv_bank,weight_copies): " + "; ".join(f"{k}: {v}"
                                                                                  for k, v in VARIANTS.items()))
    ap.add_argument("--dtype", default=None, help="fp32 / fp16 / bf16 / bf16-fp32 (default fp32 on CPU, fp16 on GPU)")
    ap.add_argument("--repeat", type=int, default=2, help="repetitions of floor + edit (timings are noisy)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (others share the machine)")
    ap.add_argument("--out", default=None, help="JSON output (default bench/speed-<device>.json)")
    args = ap.parse_args()
    if args.out:
        args.out = str(Path(args.out).resolve())  # before setup_comfy() changes into ComfyUI's folder

    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    gpu = device == "cuda"
    if args.gpu and not gpu:
        raise SystemExit("--gpu needs CUDA")
    args.steps = args.steps or (50 if args.gpu else 10)
    args.modes = [m for m in args.modes.split(",") if m]
    if args.variants is None:
        args.variants = ("pack,batched_gradients,no_kv_bank,weight_copies" if args.gpu
                         else "pack,no_kv_bank,weight_copies,pre7,full_unet_grad")
    args.variants = [v for v in args.variants.split(",") if v]
    for v in args.variants:
        if v not in VARIANTS:
            raise SystemExit(f"unknown variant {v!r}; choose from {', '.join(VARIANTS)}")
    sd15 = args.sd15_sizes if args.sd15_sizes is not None else ("512,768" if args.gpu else "256")
    sdxl = args.sdxl_sizes if args.sdxl_sizes is not None else ("1024" if args.gpu else "256")
    dtype = args.dtype or ("fp16" if gpu else "fp32")
    pack, nodes_mod = setup_comfy(device)
    check_official_count(pack)
    import comfy.model_management as mm

    info = {"device": torch.cuda.get_device_name() if gpu else f"CPU ({platform.processor() or platform.machine()}, "
            f"{args.threads} thread(s) of {os.cpu_count()})", "torch": torch.__version__, "threads": args.threads,
            "comfy_device": str(mm.get_torch_device()), "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
            "command": " ".join(sys.argv[1:]), "variants": {v: VARIANTS[v] for v in args.variants}, "skipped": []}
    print(f"device {info['device']}, torch {torch.__version__}, torch.set_num_threads({args.threads}), "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}. Other processes share this machine: timings are "
          f"noisy, so floor and edit are run {args.repeat}x in the same process.", flush=True)
    print("edit = DDIM Invert + Dragon Sampler (decode-free); floor = the same DDIM inversion + ComfyUI KSampler "
          "(ddim, ddim_uniform, same steps and CFG). The inversion is timed once per repetition and counted in both.")
    mem = Mem(gpu)
    runs: list = []
    out = Path(args.out) if args.out else REPO / "bench" / f"speed-{'gpu' if gpu else 'cpu'}.json"
    out.parent.mkdir(parents=True, exist_ok=True)

    def save():  # after every row, so an interrupted run keeps what it measured
        out.write_text(json.dumps({**info, "runs": runs}, indent=1))

    for s in [int(x) for x in sd15.split(",") if x]:
        run_case(pack, nodes_mod, args, "sd15", s, dtype, mem, runs, save)
    xl_sizes = [int(x) for x in sdxl.split(",") if x]
    if xl_sizes and not gpu and not args.sdxl_cpu:
        why = ("SDXL skipped on the CPU: 2.6 G parameters are 10 GB in fp32 (5 GB in bf16, which this CPU has no "
               "native kernels for), and a 10-step edit at 1 thread takes far longer than the SD1.5 run; use "
               "--sdxl-cpu to run it anyway, or --gpu on a GPU.")
        print("\n" + why)
        info["skipped"].append(why)
    else:
        for s in xl_sizes:
            run_case(pack, nodes_mod, args, "sdxl", s, dtype if gpu else "bf16-fp32", mem, runs, save)
    save()
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()

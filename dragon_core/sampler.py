"""The dual-branch guided sampling loop of DragonDiffusion / DiffEditor."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Optional, Protocol

import torch
import torch.nn.functional as F

from .attention import BranchState
from .inversion import Inversion
from .plan import EditPlan
from .schedule import SPACES, ddim_step, inversion_step, plan_steps
from .spec import GuidanceSpec

log = logging.getLogger("DragonDiffusion")


class Backend(Protocol):
    """How the loop talks to a UNet. ComfyUI's implementation lives in nodes/backend.py."""

    def denoise_cfg(self, x: torch.Tensor, sigma: float, state: BranchState) -> torch.Tensor:
        """Generation branch: CFG x0 prediction (state.phase == 'generate': K/V injected)."""

    def denoise_cond(self, x: torch.Tensor, sigma: float, state: BranchState) -> Optional[torch.Tensor]:
        """Positive prompt only, no CFG; may stop early (StopUNet handled inside) and return None."""

    def feature_blocks(self) -> tuple[int, ...]:
        """Decoder blocks whose outputs are the guidance features."""

    def kv_active(self, step: int, steps: int) -> bool:
        """Whether cross-branch attention injects at this step (False without the patch)."""

    def kv_source(self) -> str:
        """Where the injected K/V come from (dragon_core.attention.KV_SOURCES)."""

    def batch_gradients(self) -> bool:
        """Whether the gradient pass runs two copies of the latent in one forward with one backward (see
        _guidance) instead of one forward with two backward passes."""

    def step_done(self, i: int, x: torch.Tensor, denoised: torch.Tensor) -> None:
        """Progress, preview and interruption after each step."""

    def check_interrupt(self) -> None:
        ...


@dataclass
class SampleStats:
    unet_calls: dict
    guided_steps: int
    grad_norms: list
    energies: list = field(default_factory=list)  # (E_edit, E_cons) at each guided evaluation, before its step
    kv_banked: int = 0  # steps whose injected K/V came from the inversion's bank (no reference pass)


def _working(features: dict, blocks: tuple[int, ...], hw: tuple[int, int], item: int = 0) -> list[torch.Tensor]:
    """Feature maps of batch item `item` on the feature grid, fp32, as [C, N]."""
    out = []
    for b in blocks:
        f = features[b][item:item + 1].float()
        if f.shape[-2:] != hw:
            f = F.interpolate(f, size=hw, mode="nearest")
        out.append(f[0].flatten(1))
    return out


def dragon_sample(backend: Backend, inversion: Inversion, spec: GuidanceSpec, plan: EditPlan,
                  state: BranchState, seed: int, device: torch.device) -> tuple[torch.Tensor, SampleStats]:
    sigmas = [float(s) for s in inversion.sigmas]
    space = SPACES[inversion.space]
    n = len(sigmas) - 1
    steps = plan_steps(n, spec.schedule, spec.guidance_start, spec.guidance_end, spec.sde_strength, spec.time_travel)
    blocks = backend.feature_blocks()
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    eta = plan.sde_mask * spec.sde_strength
    stats = SampleStats(unet_calls={"reference": 0, "generate": 0, "grad": 0, "reinvert": 0}, guided_steps=0,
                        grad_norms=[])
    state.steps = n
    state.kv_mode = spec.kv_mode
    state.kv_select = plan.kv_select
    state.edit_region = plan.sde_mask
    x = plan.initial(inversion.noise.to(device))
    anchor_steps = round(spec.anchor_end * n)
    trend_want = plan.trend.target(inversion.latents[0].to(device)) if plan.trend is not None else None
    for i in range(n):
        s, s1 = sigmas[i], sigmas[i + 1]
        sp = steps[i]
        state.step = i
        kv_on = backend.kv_active(i, n)
        ref_feats = None
        state.kv = {}
        kv_from_inversion = kv_on and backend.kv_source() == "inversion"
        banked = _banked_kv(plan, inversion, i, device) if kv_from_inversion else None
        if banked is not None:
            state.kv = banked  # recorded by Dragon DDIM Invert: the same K/V the pass below would compute
            stats.kv_banked += 1
        elif kv_from_inversion:
            # the official memory bank's K/V of this step: the inversion step that reached this level evaluated
            # the UNet on the latent one level less noisy, at this step's timestep
            state.phase = "reference"
            state.reset_capture((), stop=False)
            backend.denoise_cond(_branches(plan, inversion, lambda inv: _inversion_input(inv, i)).to(device), s,
                                 state)
            stats.unet_calls["reference"] += 1
        kv_here = kv_on and not kv_from_inversion
        if sp.guided or kv_here:
            # the guidance branch at this step: its features for the energy (and, with the "guidance" K/V
            # source, its K/V from the same pass)
            state.phase = "reference" if kv_here else "plain"
            state.reset_capture(blocks if sp.guided else (), stop=not kv_here)
            backend.denoise_cond(_branches(plan, inversion, lambda inv: inv.reference(i)).to(device), s, state)
            stats.unet_calls["reference"] += 1
            if sp.guided:
                ref_feats = _working(state.features, blocks, plan.feature_hw)
                if plan.second is not None:
                    ref_feats += _working(state.features, blocks, plan.feature_hw, item=1)
            state.reset_capture((), stop=False)
        noise = torch.randn(x.shape, generator=gen).to(device, x.dtype) if sp.sde else None
        x_next = x0 = x
        for r in range(sp.repeats):
            state.phase = "generate"
            den = backend.denoise_cfg(x, s, state)
            stats.unet_calls["generate"] += 1
            eps = space.eps(x, den, s)
            g = torch.zeros_like(eps)
            pure_noise = space.a(s) <= 0  # a flow schedule's first level: x holds no image, x0 only from the model
            if sp.guided and not pure_noise:
                g = _guidance(backend, x, s, state, plan, ref_feats, blocks, spec.energy_scale, stats,
                              batched=backend.batch_gradients(), model_scale=space.model_scale(s))
                stats.guided_steps += 1
            x0 = den if pure_noise else space.x0(x, eps + g, s)
            x_next = ddim_step(x, eps + g, eps, s, s1, eta=eta if sp.sde else 0.0, noise=noise, space=space, x0=x0)
            if r < sp.repeats - 1:
                # DiffEditor time travel: deterministically re-invert to this level and redo the step; as the
                # official Sampler, the noise is predicted at the lower level the latent is at (not at the
                # target level, as Dragon DDIM Invert does)
                state.phase = "plain"
                x = inversion_step(lambda xi, si: backend.denoise_cond(xi, float(si), state), x_next, s1, s,
                                   evaluate_at="current", space=space)
                stats.unet_calls["reinvert"] += 1
            backend.check_interrupt()
        if plan.trend is not None:
            # the vacated place's predicted image takes its surroundings' colour trend, keeping its detail
            x_next = plan.trend.apply(x_next, x0, trend_want)
        ref_next = inversion.reference(i + 1)  # the guidance branch at the level x_next has reached
        if plan.anchor is not None and i < anchor_steps:
            # the object's place follows the guidance branch's trajectory of the object (warped), as the start
            # noise copy does at step 0, so its colours cannot drift while the layout forms
            second = plan.second.reference(i + 1) if plan.second is not None else None
            x_next = plan.anchor.apply(x_next, ref_next, second)
        if plan.keep is not None:
            # outside the edit region the image stays exactly as it was: the original trajectory's latent
            keep = plan.keep.to(x_next)
            x_next = keep * ref_next.to(x_next) + (1 - keep) * x_next
        state.phase = "plain"
        state.kv = {}
        backend.step_done(i, x_next, x0)
        x = x_next
    if sigmas[-1] > 0 and space.name == "ve":
        # the official loop ends at the level of timestep 0 and decodes that latent as it is: the VP latent
        x = x * space.vp(sigmas[-1])
    return x, stats


def _branches(plan: EditPlan, inversion: Inversion, latent_of) -> torch.Tensor:
    """`latent_of(inversion)` of the base image's guidance branch, and in cross-image modes of the reference
    image's as batch item 1."""
    x = latent_of(inversion)
    if plan.second is not None:
        x = torch.cat([x, latent_of(plan.second).to(x)])
    return x


def _banked_kv(plan: EditPlan, inversion: Inversion, i: int, device: torch.device) -> Optional[dict]:
    """Step i's K/V from the inversions' banks, batched as the reference pass would batch them (base image, then
    the reference image in cross-image modes); None when a bank lacks the step (it is then recomputed)."""
    invs = [inversion] if plan.second is None else [inversion, plan.second]
    parts = [inv.kv_bank.get(i) if inv.kv_bank is not None else None for inv in invs]
    if any(p is None for p in parts) or any(p.keys() != parts[0].keys() for p in parts):
        return None
    out = {}
    for key in parts[0]:
        ks, vs = zip(*(p[key] for p in parts))
        k = ks[0] if len(ks) == 1 else torch.cat(ks)
        v = vs[0] if len(vs) == 1 else torch.cat(vs)
        out[key] = (k.to(device), v.to(device))
    return out


def _inversion_input(inversion: Inversion, i: int) -> torch.Tensor:
    """The model input of the inversion step that evaluated the model at denoising step i's level (what the memory
    bank recorded there): the latent one level less noisy, as the model saw it, expressed at step i's sigma (the VP
    latent for a UNet; x itself for a flow model); with the "current" inversion rule, the latent at step i's own
    level, evaluated there."""
    n = inversion.steps
    space = SPACES[inversion.space]
    if inversion.extra.get("evaluate_at") == "current":
        return inversion.latents[n - i]
    lower, s = float(inversion.sigmas[i + 1]), float(inversion.sigmas[i])
    return inversion.latents[n - i - 1] * (space.model_scale(lower) / space.model_scale(s))


# The energies are multiplied by this before the backward pass and the gradient divided by it after. A UNet in
# fp16 (ComfyUI's default on most GPUs) runs the backward in fp16, where the energies' raw gradients (a median of
# 5e-6 per element on the SD1.5 architecture at 256^2: a mean over many cells of a cosine over hundreds of
# channels) sit below fp16's normal range and lose digits, more so at larger sizes (scripts/bench_half_grad.py:
# 1.6 % error at 512^2 unscaled, 0.07 % scaled). The official code multiplies the energy by s_E (500-3000) before
# autograd, which does the same. A power of two, so that in fp32 the result is bit for bit the unscaled one, and
# independent of energy_scale (applied after), so that large user scales cannot overflow fp16.
LOSS_SCALE = 1024.0


def _guidance(backend: Backend, x: torch.Tensor, s: float, state: BranchState, plan: EditPlan,
              ref_feats: list[torch.Tensor], blocks: tuple[int, ...], scale: float, stats: SampleStats,
              batched: bool = False, model_scale: float | None = None) -> torch.Tensor:
    """g = scale * (M * dE_edit/dz + (1 - M) * dE_cons/dz), z the latent the model sees (z = model_scale * x: the VP
    latent for a UNet, x itself for a flow model; the gradient is added to the noise estimate in either space).

    As the official code: one forward, then a backward pass for each energy (they are masked separately, so one
    backward of their sum would mix them). `batched`: the forward runs on two copies of z instead; batch items
    are independent in the UNet, so one backward of E_edit(copy 0) + E_cons(copy 1) gives each gradient in its
    own copy, equal up to rounding: one backward fewer for a second image in the forward, which pays where a
    batch of two costs little more than one (GPUs; on the CPU it was about 12 % slower, #22)."""
    c = float(model_scale) if model_scale is not None else float(SPACES["ve"].vp(s))
    copies = 2 if batched else 1
    with torch.inference_mode(False), torch.enable_grad():
        z = (x.detach().clone() * c).repeat(copies, 1, 1, 1).requires_grad_(True)
        ref = [f.detach().clone() for f in ref_feats]
        state.phase = "grad"
        state.reset_capture(blocks, stop=True)
        backend.denoise_cond(z / c, s, state)
        stats.unet_calls["grad"] += 1
        gen = [_working(state.features, blocks, plan.feature_hw, item=j) for j in range(copies)]
        state.reset_capture((), stop=False)
        e_edit, e_cons = plan.energy(gen[0], ref)
        if batched:
            e_cons = plan.energy(gen[1], ref)[1]
        stats.energies.append((float(e_edit.detach()), float(e_cons.detach())))
        # loss scaling, as the official s_E before autograd: see LOSS_SCALE
        e_edit, e_cons = e_edit * LOSS_SCALE, e_cons * LOSS_SCALE
        if batched:
            terms = [e for e in (e_edit, e_cons) if e.requires_grad]
            dz = torch.autograd.grad(sum(terms), z, allow_unused=True)[0] if terms else None
            g_edit = dz[0:1] if dz is not None and e_edit.requires_grad else None
            g_cons = dz[1:2] if dz is not None and e_cons.requires_grad else None
        else:
            g_edit = torch.autograd.grad(e_edit, z, retain_graph=True, allow_unused=True)[0] \
                if e_edit.requires_grad else None
            g_cons = torch.autograd.grad(e_cons, z, allow_unused=True)[0] if e_cons.requires_grad else None
        del gen
    g = torch.zeros_like(x, dtype=torch.float32)
    if g_edit is not None:
        g = g + plan.grad_mask * g_edit.detach().float()
    if g_cons is not None:
        g = g + (1 - plan.grad_mask) * g_cons.detach().float()
    g = (scale / LOSS_SCALE) * g
    if not torch.isfinite(g).all():
        log.warning("DragonDiffusion: non-finite energy gradient at sigma %.3f; step left unguided.", s)
        return torch.zeros_like(x)
    stats.grad_norms.append(float(g.norm()))
    return g.to(x.dtype)

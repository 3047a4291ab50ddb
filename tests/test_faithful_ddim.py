"""Faithfulness of the DDIM conventions: Dragon DDIM Invert and the Dragon Sampler against an independent DDIM written
from the official equations (shared/design/dragondiffusion.md §1.3-1.4, diffusers' DDIMScheduler with SD's
config), on a tiny SD1-shaped UNet in real ComfyUI.

The reference works in the VP latent the UNet sees, with its own alpha_bar table (SD's scaled-linear betas),
integer timesteps k * (1000 // n) + 1 and the final level alpha_bar_0 (set_alpha_to_one False); it calls the
bare diffusion model, so ComfyUI's sigma parametrisation is checked too.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.append(str(Path(__file__).resolve().parents[1]))  # after ComfyUI: see conftest
from dragon_core.schedule import ddim_timesteps, vp_scale  # noqa: E402

STEPS = 10


def _alphas_cumprod() -> torch.Tensor:
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, 0)


def _timesteps(n: int) -> list[int]:
    return [k * (1000 // n) + 1 for k in range(n)]  # ascending: 1, 101, ... for 10 steps


def _eps(model, z: torch.Tensor, t: int, context: torch.Tensor) -> torch.Tensor:
    unet = model.model.diffusion_model
    return unet(z.float(), timesteps=torch.tensor([float(t)]), context=context).double()


def official_inversion(model, z0: torch.Tensor, context: torch.Tensor, n: int) -> list[torch.Tensor]:
    """diffusers' DDIM inversion as the official ddim_loop: the UNet at the *target* timestep on the current
    latent, x0 estimated with the current alpha_bar (alpha_bar_0 for the first step), re-noised to the target."""
    ac = _alphas_cumprod()
    stride = 1000 // n
    z = z0.double()
    out = [z]
    for t in _timesteps(n):
        a_t = ac[t - stride] if t - stride >= 0 else ac[0]
        a_next = ac[t]
        eps = _eps(model, z, t, context)
        x0 = (z - (1 - a_t).sqrt() * eps) / a_t.sqrt()
        z = a_next.sqrt() * x0 + (1 - a_next).sqrt() * eps
        out.append(z)
    return out


def official_sampling(model, z_t: torch.Tensor, cond: torch.Tensor, uncond: torch.Tensor, cfg: float, n: int
                      ) -> torch.Tensor:
    """The official edit loop with no energy, no SDE and no K/V injection: CFG on eps, deterministic DDIM,
    the last step to alpha_bar_0; the result is decoded as it is."""
    ac = _alphas_cumprod()
    stride = 1000 // n
    z = z_t.double()
    for t in reversed(_timesteps(n)):
        prev = t - stride
        a_t, a_prev = ac[t], (ac[prev] if prev >= 0 else ac[0])
        e_u, e_c = _eps(model, z, t, uncond), _eps(model, z, t, cond)
        eps = e_u + cfg * (e_c - e_u)
        x0 = (z - (1 - a_t).sqrt() * eps) / a_t.sqrt()
        z = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
    return z


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def test_official_timesteps_give_every_step_count_exactly():
    assert ddim_timesteps(50)[:3] == [981, 961, 941] and ddim_timesteps(50)[-2:] == [1, 0]
    assert ddim_timesteps(30)[:2] == [958, 925]  # diffusers: 29 * 33 + 1
    for n in range(1, 1001):
        ts = ddim_timesteps(n)
        assert len(ts) == n + 1 and ts[-1] == 0 and max(ts) <= 999
        assert all(a >= b for a, b in zip(ts, ts[1:]))


@pytest.fixture(scope="module")
def scene(comfy):
    return comfy.inverted_scene(model_seed=0, cond_seed=1, scene_seed=3, width=64, height=64, steps=STEPS)


def test_ddim_inversion_follows_the_official_equations(comfy, scene):
    model, cond, lat, inv = scene
    with torch.inference_mode():
        z0 = model.model.process_latent_in(lat)
        want = official_inversion(model, z0, cond[0][0], STEPS)
    asc = torch.flip(inv.sigmas, dims=[0])
    got = [x.double() * float(vp_scale(float(s))) for x, s in zip(inv.latents, asc)]
    assert len(got) == len(want) == STEPS + 1
    errs = [_rel(g, w) for g, w in zip(got, want)]
    assert max(errs) <= 1e-4, errs
    # and the start level is alpha_bar_0, not a clean image: the first step differs measurably from one
    # that starts at sigma 0 (what the pack did before)
    assert float(inv.sigmas[-1]) == pytest.approx(((1 - _alphas_cumprod()[0]) / _alphas_cumprod()[0]).sqrt(),
                                                  rel=1e-5)


def test_unguided_dragon_sampling_is_the_official_ddim_loop(comfy, scene):
    """energy_scale 0, the DragonDiffusion schedule (no SDE, no time travel) and no K/V patch: the Dragon
    Sampler is plain DDIM from the inverted noise; it must be the official loop, ending at alpha_bar_0."""
    model, cond, lat, inv = scene
    smp = comfy.module("nodes.sampler")
    gd = comfy.module("nodes.guidance")
    uncond = [[torch.zeros_like(cond[0][0]), dict(cond[0][1])]]
    with torch.inference_mode():
        # landmark: the one mode that starts from the inverted noise as it is (no noise copy), so with no energy,
        # no SDE (dragondiffusion schedule) and no K/V patch the sampler is plain DDIM
        sp = comfy.module("dragon_core.spec")
        pts = sp.DragPoints(pairs=(sp.PointPair((20.0, 20.0), (28.0, 20.0)),), width=64, height=64)
        spec = gd.build_spec("landmark", points=pts, schedule="dragondiffusion", energy_scale=0.0)
        out = smp.run_dragon(model, cond, uncond, inv, spec, STEPS, 4.0, 1)[0]
        z_t = inv.noise.double() * float(vp_scale(float(inv.sigmas[0])))
        want = official_sampling(model, z_t, cond[0][0], uncond[0][0], 4.0, STEPS)
        got = model.model.process_latent_in(out)
    assert _rel(got, want) <= 1e-4, _rel(got, want)


@pytest.mark.parametrize("steps", [7, 30])
def test_any_step_count_works_with_the_same_number_in_both_nodes(comfy, steps):
    """ComfyUI's ddim_uniform gave n + 1 steps for n not dividing 1000 (30 -> 31), and the sampler then refused
    the user's own number after the inversion had run. The official timesteps give exactly n for every n."""
    model, cond, lat, inv = comfy.inverted_scene(model_seed=0, cond_seed=1, scene_seed=3, width=64, height=64,
                                                 steps=steps)
    assert inv.steps == steps and len(inv.latents) == steps + 1
    mask = torch.zeros(64, 64)
    mask[16:40, 16:40] = 1
    spec = comfy.module("nodes.guidance").build_spec("move", object_mask=mask, offset_x=8, schedule="dragondiffusion",
                                                     energy_scale=0.0)
    with torch.inference_mode():
        out = comfy.module("nodes.sampler").run_dragon(model, cond, cond, inv, spec, steps, 4.0, 1)[0]
    assert out.shape == lat.shape and bool(torch.isfinite(out).all())

"""DDIM arithmetic and the two schedules, on hand-made denoisers (no ComfyUI)."""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.append(str(Path(__file__).resolve().parents[1]))  # after ComfyUI: see conftest
from dragon_core.inversion import invert  # noqa: E402
from dragon_core.schedule import ddim_step, inversion_step, plan_steps  # noqa: E402

SIGMAS = torch.tensor([14.6, 6.0, 2.5, 1.0, 0.4, 0.1, 0.0])


def test_inversion_then_ddim_is_exact_for_a_constant_x0_predictor():
    x0 = torch.randn(1, 4, 8, 8)
    denoise = lambda x, s: x0  # noqa: E731  the ideal denoiser of a one-image data set
    lat = invert(denoise, x0, SIGMAS)
    assert len(lat) == len(SIGMAS)
    assert torch.allclose(lat[0], x0)
    # the final latent is x0 + sigma_max * eps with eps consistent along the path
    x = lat[-1]
    for i in range(len(SIGMAS) - 1):
        s, s1 = float(SIGMAS[i]), float(SIGMAS[i + 1])
        eps = (x - denoise(x, s)) / s
        x = ddim_step(x, eps, eps, s, s1)
    assert torch.allclose(x, x0, atol=1e-5)


def test_inversion_step_predicts_noise_on_the_current_latent_at_the_target_level():
    seen = []

    def denoise(x, s):
        seen.append((x.clone(), float(s)))
        return torch.zeros_like(x)

    x = torch.ones(1, 1, 2, 2)
    out = inversion_step(denoise, x, 1.0, 3.0)
    x_in, s = seen[0]
    assert s == 3.0
    # the UNet input is the current VP latent x/sqrt(1+1) re-expressed at sigma 3
    assert torch.allclose(x_in, x * (10 / 2) ** 0.5)
    eps = x_in / 3.0
    assert torch.allclose(out, x + 2.0 * eps)


def test_time_travel_re_inversion_predicts_noise_at_the_lower_timestep():
    """DiffEditor's time travel (spec 4.4, official Sampler l.136-144) in the official VP arithmetic: the UNet at
    the lower timestep t-20 on z_{t-20} itself, x0 estimated with alpha_bar_{t-20}, re-noised to t with the same
    eps. An eps model that depends on the timestep tells the two evaluation points apart."""
    from dragon_core.schedule import alpha_bar, vp_scale

    def eps_model(z, sigma):  # VP latent, level -> eps; nonlinear in both
        return torch.tanh(z * (1 + 0.3 * sigma)) + 0.1 * sigma

    def denoise(x, sigma):  # ComfyUI's convention: VE latent in, x0 out
        s = float(sigma)
        return x - s * eps_model(x * float(vp_scale(s)), s)

    lo, hi = 0.8, 1.3
    z_lo = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    a_lo, a_hi = float(alpha_bar(lo)), float(alpha_bar(hi))
    eps = eps_model(z_lo, lo)
    x0 = (z_lo - (1 - a_lo) ** 0.5 * eps) / a_lo ** 0.5
    want = a_hi ** 0.5 * x0 + (1 - a_hi) ** 0.5 * eps  # VP latent at the higher level
    got = inversion_step(denoise, z_lo / a_lo ** 0.5, lo, hi, evaluate_at="current") * a_hi ** 0.5
    assert torch.allclose(got, want, atol=1e-12)
    # the Dragon DDIM Invert rule (the target timestep) is a different step here
    other = inversion_step(denoise, z_lo / a_lo ** 0.5, lo, hi) * a_hi ** 0.5
    assert float((other - want).abs().max()) > 1e-3


def test_guided_eps_moves_only_the_x0_estimate():
    x = torch.randn(1, 4, 4, 4)
    eps = torch.randn_like(x)
    g = torch.randn_like(x)
    plain = ddim_step(x, eps, eps, 2.0, 1.0)
    guided = ddim_step(x, eps + g, eps, 2.0, 1.0)
    assert torch.allclose(guided - plain, -2.0 * g, atol=1e-6)


def test_regional_sde_adds_noise_only_where_eta_is_set():
    x = torch.randn(1, 1, 4, 4)
    eps = torch.randn_like(x)
    noise = torch.randn_like(x)
    eta = torch.zeros_like(x)
    eta[..., :2, :] = 0.4
    out = ddim_step(x, eps, eps, 2.0, 1.0, eta=eta, noise=noise)
    det = ddim_step(x, eps, eps, 2.0, 1.0)
    assert torch.allclose(out[..., 2:, :], det[..., 2:, :])
    assert (out[..., :2, :] - det[..., :2, :]).abs().min() > 0


def test_schedules_match_the_official_step_sets_at_50_steps():
    dd = plan_steps(50, "dragondiffusion", 0.0, 0.6, 0.4)
    assert [i for i, p in enumerate(dd) if p.guided] == list(range(30))
    assert all(p.repeats == 1 and not p.sde for p in dd)
    de = plan_steps(50, "diffeditor", 0.0, 0.6, 0.4)
    assert [i for i, p in enumerate(de) if p.guided] == list(range(10)) + list(range(10, 29, 2))
    assert [i for i, p in enumerate(de) if p.repeats > 1] == [22, 24, 26, 28]
    assert [i for i, p in enumerate(de) if p.sde] == list(range(11, 20))
    assert not any(p.sde for p in plan_steps(50, "diffeditor", 0.0, 0.6, 0.0))


# ---- flow space (ComfyUI's CONST models: x = (1 - sigma) x0 + sigma eps) ----------------------------------------

def test_flow_space_ddim_step_is_an_euler_step_of_the_velocity():
    from dragon_core.schedule import FLOW

    g = torch.Generator().manual_seed(3)
    x0, eps = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
    s, s1 = 0.8, 0.55
    x = FLOW.latent(x0, eps, s)
    assert torch.allclose(x, 0.2 * x0 + 0.8 * eps)
    den = x0  # a perfect model
    e = FLOW.eps(x, den, s)
    assert torch.allclose(e, eps, atol=1e-5)
    v = eps - x0  # the flow model's output (CONST: denoised = x - sigma v)
    assert torch.allclose(x - s * v, den, atol=1e-5)
    assert torch.allclose(ddim_step(x, e, e, s, s1, space=FLOW), x + (s1 - s) * v, atol=1e-5)
    assert torch.allclose(ddim_step(x, e, e, s, 0.0, space=FLOW), x0, atol=1e-5)


def test_flow_space_sde_step_keeps_the_noise_level_of_its_target():
    """With eta = 1 and nothing of the image (x0 = 0) the stochastic step lands on noise of std sigma' (the flow
    latent's own noise level), as the VE step lands on std sigma'."""
    from dragon_core.schedule import FLOW, VE

    g = torch.Generator().manual_seed(4)
    eps, noise = torch.randn(1, 1, 256, 256, generator=g), torch.randn(1, 1, 256, 256, generator=g)
    for space, s, s1 in ((FLOW, 0.9, 0.6), (VE, 4.0, 2.0)):
        x = space.latent(torch.zeros_like(eps), eps, s)
        out = ddim_step(x, eps, eps, s, s1, eta=1.0, noise=noise, space=space)
        assert abs(float(out.std()) - s1) < 0.01 * s1, (space.name, float(out.std()), s1)
        det = ddim_step(x, eps, eps, s, s1, space=space)
        assert not torch.allclose(out, det)


def test_flow_inversion_and_sampling_retrace_a_straight_path_exactly():
    """For one image the flow is a straight line (the model's denoised is that image everywhere): Euler inversion up
    to sigma 1 lands on the line's noise, and DDIM/Euler sampling back returns the image, with either inversion rule."""
    from dragon_core.schedule import FLOW

    g = torch.Generator().manual_seed(5)
    img = torch.randn(1, 3, 8, 8, generator=g)
    sigmas = torch.tensor([1.0, 0.9, 0.7, 0.45, 0.2, 0.0])

    def denoise(x, s):
        return img.clone()

    for rule in ("current", "target"):
        lat = invert(denoise, img, sigmas, space="flow", evaluate_at=rule)
        assert len(lat) == 6 and torch.equal(lat[0], img)
        x = lat[-1]
        assert torch.isfinite(x).all()
        for i in range(5):
            s, s1 = float(sigmas[i]), float(sigmas[i + 1])
            den = denoise(x, s)
            e = FLOW.eps(x, den, s)
            x = ddim_step(x, e, e, s, s1, space=FLOW, x0=den)  # (at sigma 1 only the model's estimate has x0)
            assert torch.allclose(x, lat[4 - i], atol=1e-5), (rule, i)
        assert torch.allclose(x, img, atol=1e-5)

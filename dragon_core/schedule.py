"""DDIM arithmetic in ComfyUI's sigma spaces.

ComfyUI's eps/v models (SD1.x, SD2.x, SDXL) work on x = x0 + sigma*eps ("VE"); the UNet sees the VP latent
z = x / sqrt(1 + sigma^2) and alpha_bar = 1 / (1 + sigma^2). Flow-matching models (ComfyUI's CONST: FLUX, SD3,
Z-Image, Qwen-Image) work on x = (1 - sigma)*x0 + sigma*eps ("flow") and see x itself. Both are x = a*x0 + sigma*eps,
so one arithmetic serves both (Space): a deterministic DDIM step from sigma to sigma' is x' = a' x0_hat + sigma' eps,
which in flow space is exactly an Euler step of the velocity v = eps - x0. Energy guidance adds its gradient to eps
in either space (see dragon_core.sampler).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

# denoise(x, sigma) -> x0 prediction, ComfyUI's convention (x in VE space, sigma a 0-d/1-d tensor)
DenoiseFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Space:
    """How a latent mixes the image and the noise at level sigma: x = a(sigma) x0 + sigma eps."""

    name: str  # "ve" or "flow"

    def a(self, sigma: float) -> float:
        return 1.0 if self.name == "ve" else 1.0 - sigma

    def vp(self, sigma: float) -> float:
        """The factor that makes x unit-variance-preserving: z = vp * x = sqrt(alpha_bar) x0 + sqrt(1-alpha_bar) eps."""
        return (self.a(sigma) ** 2 + sigma ** 2) ** -0.5

    def alpha_bar(self, sigma: float) -> float:
        return (self.a(sigma) * self.vp(sigma)) ** 2

    def model_scale(self, sigma: float) -> float:
        """What the model's input is, times x: the VP latent for ComfyUI's eps/v models, x itself for CONST."""
        return self.vp(sigma) if self.name == "ve" else 1.0

    def eps(self, x: torch.Tensor, denoised: torch.Tensor, sigma: float) -> torch.Tensor:
        return (x - self.a(sigma) * denoised) / sigma

    def x0(self, x: torch.Tensor, eps: torch.Tensor, sigma: float) -> torch.Tensor:
        """The clean estimate of x given its noise (sigma < 1 in flow space, where a(1) = 0)."""
        return (x - sigma * eps) / self.a(sigma)

    def latent(self, x0: torch.Tensor, eps: torch.Tensor, sigma: float) -> torch.Tensor:
        return self.a(sigma) * x0 + sigma * eps


VE = Space("ve")
FLOW = Space("flow")
SPACES = {"ve": VE, "flow": FLOW}


def ddim_timesteps(steps: int, train_steps: int = 1000) -> list[int]:
    """The official DDIM timesteps, descending, then 0 for the final level: diffusers' DDIMScheduler with SD's
    config ("leading" spacing, steps_offset 1, set_alpha_to_one False): k * (T // n) + 1 for k < n, so 50
    steps give 981, 961, ..., 1, and the last step lands on alpha_bar of timestep 0, not on a clean image.

    Every n gives exactly n steps (ComfyUI's ddim_uniform gives n + 1 when n does not divide 1000). Above
    T // 2 steps the stride is 1 and the top timestep is capped at T - 1 (one step of zero length at 1000).
    """
    if steps < 1:
        raise ValueError("steps must be >= 1")
    stride = max(train_steps // steps, 1)
    ts = [min(k * stride + 1, train_steps - 1) for k in range(steps)]
    return ts[::-1] + [0]


def alpha_bar(sigma: torch.Tensor | float) -> torch.Tensor:
    sigma = torch.as_tensor(sigma, dtype=torch.float64)
    return 1.0 / (1.0 + sigma**2)


def vp_scale(sigma: torch.Tensor | float) -> torch.Tensor:
    """sqrt(alpha_bar): multiply a VE latent by this to get the VP latent the UNet sees."""
    return alpha_bar(sigma).sqrt()


def eps_from_denoised(x: torch.Tensor, denoised: torch.Tensor, sigma: float) -> torch.Tensor:
    return (x - denoised) / sigma


def inversion_step(denoise: DenoiseFn, x: torch.Tensor, sigma: float, sigma_next: float,
                   evaluate_at: str = "target", space: Space = VE) -> torch.Tensor:
    """One DDIM inversion step from sigma up to sigma_next (> sigma).

    evaluate_at="target" (Dragon DDIM Invert, as the official image inversion, diffusers' recipe): the noise is
    predicted on the *current* VP latent with the *target* timestep, x0 is estimated at the current level and
    re-noised to the target with the same eps. This is what makes sampling back from the inverted noise
    retrace the path closely.
    evaluate_at="current" (DiffEditor's time travel, the official Sampler's re-inversion): the noise is
    predicted at the latent's own, lower timestep, then the same x0 / re-noise arithmetic. A schedule whose
    lower level is 0 has no noise prediction there, so it falls back to the target level.
    In flow space "current" is an Euler step of the velocity at the lower level (ComfyUI's FlipSigmas + Euler);
    "target" feeds the model the same input x at the upper level.
    """
    if evaluate_at not in ("target", "current"):
        raise ValueError(f"evaluate_at must be 'target' or 'current', not {evaluate_at!r}")
    if evaluate_at == "current" and sigma > 0:
        den = denoise(x, torch.tensor(sigma, dtype=x.dtype, device=x.device))
        eps = space.eps(x, den, sigma)
        return space.latent(den, eps, sigma_next)
    s_next = torch.tensor(sigma_next, dtype=x.dtype, device=x.device)
    x_in = x * (space.model_scale(sigma) / space.model_scale(sigma_next))  # the model's input of x, at sigma_next
    den = denoise(x_in, s_next)
    eps = space.eps(x_in, den, sigma_next)
    return space.latent(space.x0(x, eps, sigma), eps, sigma_next)


def ddim_step(
    x: torch.Tensor,
    eps_x0: torch.Tensor,
    eps_dir: torch.Tensor,
    sigma: float,
    sigma_next: float,
    eta: torch.Tensor | float = 0.0,
    noise: torch.Tensor | None = None,
    space: Space = VE,
    x0: torch.Tensor | None = None,
) -> torch.Tensor:
    """DDIM update with the guided noise only in the x0 estimate (DiffEditor's split).

    eta may be a tensor broadcastable to x (regional SDE: eta inside the edit region, another
    value outside); `noise` is the shared noise draw for the stochastic part. `x0`: the clean estimate when the
    caller has it (needed at sigma 1 of a flow schedule, pure noise, where x and eps determine no x0).
    """
    if x0 is None:
        x0 = space.x0(x, eps_x0, sigma)
    if sigma_next == 0:
        return x0
    eta_t = torch.as_tensor(eta, dtype=x.dtype, device=x.device)
    if noise is None or not bool((eta_t != 0).any()):
        return space.latent(x0, eps_dir, sigma_next)
    a, a_next = space.alpha_bar(sigma), space.alpha_bar(sigma_next)
    var = (1 - a_next) / (1 - a) * (1 - a / a_next)
    s = eta_t * var**0.5  # VP std of the fresh noise
    # the VP update z' = sqrt(a') x0 + sqrt(1 - a' - s^2) eps + s noise, as x' = z' / vp(sigma')
    k = space.vp(sigma_next)
    dir_coef = torch.clamp((1 - a_next) - s**2, min=0.0).sqrt() / k
    return space.a(sigma_next) * x0 + dir_coef * eps_dir + (s / k) * noise


@dataclass(frozen=True)
class StepPlan:
    """What the sampler does at one step i of n."""

    guided: bool
    repeats: int  # > 1: DiffEditor time travel (deterministic re-inversion between passes)
    sde: bool  # regional SDE noise at this step


SCHEDULES = ("diffeditor", "dragondiffusion")


def plan_steps(n: int, schedule: str, start: float, end: float, sde_strength: float,
               time_travel: int = 3) -> list[StepPlan]:
    """Per-step plan of the two schedules of the official code, scaled to n steps.

    Guided steps are those with start <= i/n < end (DragonDiffusion: 0..29 of 50). DiffEditor
    guides every step below 20% of the schedule, then every other step (0..9, 10, 12, .., 28 of 50),
    runs `time_travel` passes on the guided steps from 44% on (22..28 of 50) and adds regional SDE
    noise on 22%..38% (11..19 of 50).
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; expected one of {SCHEDULES}")
    dense_until = round(0.2 * n)
    tt_from = round(0.44 * n)
    sde_from, sde_to = round(0.22 * n), round(0.38 * n)
    plans = []
    for i in range(n):
        in_window = start <= i / n < end
        if schedule == "dragondiffusion":
            plans.append(StepPlan(guided=in_window, repeats=1, sde=False))
            continue
        guided = in_window and (i < dense_until or i % 2 == 0)
        repeats = time_travel if (guided and i >= tt_from and i % 2 == 0) else 1
        sde = sde_strength > 0 and sde_from <= i <= sde_to
        plans.append(StepPlan(guided=guided, repeats=repeats, sde=sde))
    return plans

"""The official DiffEditor edit ("D+", the official demo's default), written from the method spec
(shared/design/dragondiffusion.md §1.3-1.4, §3, §4.2-4.4, §5) on a ComfyUI UNet called bare: inversion with its
memory bank, the guided loop with CFG, regional gradient guidance, regional SDE, time travel and K/V injection.

Independent of the pack: integer timesteps and SD's alpha_bar table in the VP latent the UNet sees; the memory bank
and the K/V injection through forward hooks on the decoder self-attention's key/value projections; the features
through forward hooks on the decoder stages; the energies of tests/official.py. 50 steps, so every window is the
official one (guided i < 30, every step below 10 then every other, time travel at i = 22, 24, 26, 28 with 3 passes,
SDE at 10 < i < 20, K/V from i = 5 or up to i = 35). Used by tests/test_faithful_edit.py.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
import torch.nn.functional as F

N = 50
STRIDE = 1000 // N


def alphas_cumprod() -> torch.Tensor:
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, 0)


AC = alphas_cumprod()


def a_of(t: int) -> float:
    """alpha_bar of timestep t; the level below timestep 1 is alpha_bar_0 (set_alpha_to_one False)."""
    return float(AC[t] if t >= 0 else AC[0])


def reference_attention(q, k, v, heads, **kw):
    """Plain softmax attention (differentiable, any key count): what every attention kernel computes."""
    b, n, c = q.shape
    d = c // heads
    q, k, v = (x.reshape(b, -1, heads, d).transpose(1, 2) for x in (q, k, v))
    w = torch.softmax(q @ k.transpose(-1, -2) * d ** -0.5, dim=-1)
    return (w @ v).transpose(1, 2).reshape(b, n, c)


def _override(func, *args, **kwargs):
    return reference_attention(*args, **kwargs)


@dataclass
class Hooks:
    """Forward hooks on the UNet: decoder attn1 key/value projections (record or inject) and decoder stages
    (features: the last two stages that end in an upsampler, SD1.5's up_blocks 1 and 2)."""

    unet: torch.nn.Module
    record: Optional[dict] = None  # layer -> [k, v] while recording
    inject: Optional[Callable] = None  # (layer, 'k'|'v', own output) -> output while injecting
    features: dict = field(default_factory=dict)
    capture: bool = False

    def __post_init__(self):
        from comfy.ldm.modules.attention import SpatialTransformer  # ComfyUI is importable once the fixture ran
        from comfy.ldm.modules.diffusionmodules.openaimodel import Upsample

        self.handles = []
        layer = 0
        for block in self.unet.output_blocks:
            for child in block:
                if isinstance(child, SpatialTransformer):
                    for tb in child.transformer_blocks:
                        for which, mod in (("k", tb.attn1.to_k), ("v", tb.attn1.to_v)):
                            self.handles.append(mod.register_forward_hook(self._kv_hook(layer, which)))
                        layer += 1
        self.layers = layer
        ends = [i for i, b in enumerate(self.unet.output_blocks) if isinstance(b[-1], Upsample)][-2:]
        for n, i in enumerate(ends):
            # ComfyUI runs a block's layers one by one (forward_timestep_embed): hook its last one, the upsampler
            self.handles.append(self.unet.output_blocks[i][-1].register_forward_hook(self._feat_hook(n)))

    def _kv_hook(self, layer, which):
        def hook(mod, inp, out):
            if self.record is not None:
                self.record.setdefault(layer, {})[which] = out.detach().clone()
            if self.inject is not None:
                return self.inject(layer, which, out)
            return out
        return hook

    def _feat_hook(self, n):
        def hook(mod, inp, out):
            if self.capture:
                self.features[n] = out
            return out
        return hook

    def remove(self):
        for h in self.handles:
            h.remove()


class OfficialEditor:
    """One model, one base prompt (the official estimator's), one negative prompt (CFG)."""

    def __init__(self, model, cond: torch.Tensor, uncond: torch.Tensor, image_hw: tuple[int, int]):
        self.unet = model.model.diffusion_model
        self.cond, self.uncond = cond, uncond
        self.H, self.W = image_hw
        self.hooks = Hooks(self.unet)

    def eps(self, z: torch.Tensor, t: int, context: torch.Tensor) -> torch.Tensor:
        ts = torch.full((z.shape[0],), float(t))
        return self.unet(z.float(), timesteps=ts, context=context.expand(z.shape[0], -1, -1),
                         transformer_options={"optimized_attention_override": _override}).double()

    # ------------------------------------------------------------ inversion and its memory bank
    def invert(self, z0: torch.Tensor, cond: Optional[torch.Tensor] = None) -> tuple[list, dict]:
        """§1.3: the UNet at the target timestep on the current latent; latents [z_0, z_1, z_21, ..., z_981];
        the bank keyed by the denoising index 49 - inversion step."""
        cond = self.cond if cond is None else cond
        z, out, bank = z0.double(), [z0.double()], {}
        for k in range(N):
            t = k * STRIDE + 1
            a_t, a_next = a_of(t - STRIDE), a_of(t)
            self.hooks.record = {}
            with torch.no_grad():
                e = self.eps(z, t, cond)
            bank[N - 1 - k] = self.hooks.record
            self.hooks.record = None
            x0 = (z - (1 - a_t) ** 0.5 * e) / a_t ** 0.5
            z = a_next ** 0.5 * x0 + (1 - a_next) ** 0.5 * e
            out.append(z)
        return out, bank

    # ------------------------------------------------------------ features (the estimator)
    def features(self, z: torch.Tensor, t: int) -> list[torch.Tensor]:
        """§2: the two decoder stages' outputs, nearest-resized to H/4 x W/4, as [C, gh, gw]."""
        self.hooks.capture, self.hooks.features = True, {}
        try:
            self.eps(z, t, self.cond)
        finally:
            self.hooks.capture = False
        grid = (self.H // 4, self.W // 4)
        return [F.interpolate(self.hooks.features[n].double(), size=grid)[0] for n in sorted(self.hooks.features)]

    @contextmanager
    def injecting(self, fn):
        self.hooks.inject = fn
        try:
            yield
        finally:
            self.hooks.inject = None


@dataclass
class OfficialMode:
    """What differs per mode (§3, §5): energy of (gen, ref, ref2) features, gradient and SDE masks at latent
    resolution, start latent, K/V window and how the bank's K/V enter."""

    energy: Callable
    grad_mask: torch.Tensor  # bool [h, w]
    sde_mask: torch.Tensor  # bool [h, w]
    initial: Callable  # (z_T, z_T of the reference image or None) -> start latent
    kv_window: Callable  # i -> bool
    kv: str  # 'replace', 'concat' or 'masked'
    scale: float  # lambda * s_E
    cfg: float
    eta: float  # SDE strength inside sde_mask (outside: 0)
    base_tokens: Optional[torch.Tensor] = None  # masked: full-resolution mask whose outside the base bank gives
    ref_tokens: Optional[torch.Tensor] = None  # masked: full-resolution mask whose inside the reference bank gives


def _token_mask(mask_px: torch.Tensor, n_tokens: int) -> torch.Tensor:
    """§5: factor = sqrt(H W / N), nearest interpolation of the full-resolution mask, > 0.5; flat."""
    H, W = mask_px.shape
    f = round((H * W / n_tokens) ** 0.5)
    return (F.interpolate(mask_px[None, None].double(), size=(H // f, W // f))[0, 0] > 0.5).flatten()


def official_edit(ed: OfficialEditor, mode: OfficialMode, latents: list, bank: dict, seed: int,
                  latents2: Optional[list] = None, bank2: Optional[dict] = None,
                  time_travel_at_target: bool = False) -> tuple[torch.Tensor, dict]:
    """§1.4's loop. Returns the final latent (at alpha_bar_0, decoded as it is) and call counts.
    time_travel_at_target: NOT the official; the re-inversion evaluated at t as Dragon DDIM Invert does (what the pack
    did before), for the tests to show they tell the two apart."""
    gen = torch.Generator(device="cpu").manual_seed(int(seed))  # the SDE draws (one per SDE step, shared n)
    z = mode.initial(latents[-1], latents2[-1] if latents2 else None)
    m_grad = mode.grad_mask.double()[None, None]
    m_sde = mode.sde_mask.double()[None, None]
    counts = {"guided": 0, "time_travel": 0}

    def inject_for(i):
        def fn(layer, which, own):
            k = bank[i][layer][which]
            if mode.kv == "masked":
                outside = ~_token_mask(mode.base_tokens, k.shape[1])
                inside = _token_mask(mode.ref_tokens, k.shape[1])
                k = torch.cat([k[:, outside], bank2[i][layer][which][:, inside]], dim=1)
            k = k.expand(own.shape[0], -1, -1)
            return torch.cat([own, k], dim=1) if mode.kv == "concat" else k
        return fn

    for i in range(N):
        t = (N - 1 - i) * STRIDE + 1
        a_t, a_prev = a_of(t), a_of(t - STRIDE)
        guided = i < 30 and (i < 10 or i % 2 == 0)
        repeats = 3 if (guided and 20 < i < 30 and i % 2 == 0) else 1
        sde = 10 < i < 20
        ref_feats = ref2_feats = None
        if guided:
            with torch.no_grad():
                ref_feats = ed.features(latents[N - i], t)
                if latents2 is not None:
                    ref2_feats = ed.features(latents2[N - i], t)
        noise = torch.randn(z.shape, generator=gen).double() if sde else None
        for r in range(repeats):
            with torch.no_grad(), (ed.injecting(inject_for(i)) if mode.kv_window(i) else _nothing()):
                e_u = ed.eps(z, t, ed.uncond)
                e_c = ed.eps(z, t, ed.cond)
            eps = e_u + mode.cfg * (e_c - e_u)
            g = torch.zeros_like(z)
            if guided:
                g = _gradient(ed, mode, z, t, ref_feats, ref2_feats, m_grad)
                counts["guided"] += 1
            x0 = (z - (1 - a_t) ** 0.5 * (eps + g)) / a_t ** 0.5
            if sde:
                sigma = mode.eta * m_sde * ((1 - a_prev) / (1 - a_t)) ** 0.5 * (1 - a_t / a_prev) ** 0.5
                z_prev = a_prev ** 0.5 * x0 + (1 - a_prev - sigma ** 2).sqrt() * eps + sigma * noise
            else:
                z_prev = a_prev ** 0.5 * x0 + (1 - a_prev) ** 0.5 * eps
            if r < repeats - 1:
                # §4.4: one exact DDIM inversion step back to t, the UNet at the lower timestep t - 20, conditional,
                # no K/V injection
                with torch.no_grad():
                    if time_travel_at_target:
                        e2 = ed.eps(z_prev * (a_t / a_prev) ** 0.5, t, ed.cond)
                    else:
                        e2 = ed.eps(z_prev, t - STRIDE, ed.cond)
                x0b = (z_prev - (1 - a_prev) ** 0.5 * e2) / a_prev ** 0.5
                z = a_t ** 0.5 * x0b + (1 - a_t) ** 0.5 * e2
                counts["time_travel"] += 1
        z = z_prev
    return z, counts


@contextmanager
def _nothing():
    yield


def _gradient(ed, mode, z, t, ref_feats, ref2_feats, m_grad):
    """§3 / §4.6: two autograd calls w.r.t. the latent, masked to their regions, times lambda * s_E."""
    with torch.enable_grad():
        zz = z.float().clone().requires_grad_(True)
        gen = ed.features(zz, t)
        e_edit, e_cons = mode.energy(gen, ref_feats, ref2_feats)
        g_edit = torch.autograd.grad(e_edit, zz, retain_graph=True)[0].double() if e_edit.requires_grad \
            else torch.zeros_like(z)
        g_cons = torch.autograd.grad(e_cons, zz)[0].double() if e_cons.requires_grad else torch.zeros_like(z)
    return mode.scale * (m_grad * g_edit + (1 - m_grad) * g_cons)

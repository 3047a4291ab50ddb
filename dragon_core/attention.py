"""Cross-branch self-attention: the generation branch reads the guidance branch's keys/values.

One `BranchState` travels with each UNet call (in ComfyUI: transformer_options["dragon"]) and says
what the call is: the guidance branch's reference pass (record K/V of this step), the generation
pass (inject them), or a plain pass. Only the current step's K/V are held, on the device: no
50-step bank in host RAM.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import torch

AttnFn = Callable[..., torch.Tensor]
Key = tuple[str, int, int]

PHASES = ("plain", "reference", "generate", "grad")
# Where the injected K/V of step i come from. "inversion" (official): what the UNet computed in the inversion
# step that reached this level, i.e. on the guidance-branch latent one level less noisy, at step i's timestep
# (the official memory bank). "guidance": the guidance branch's latent of step i itself, at its timestep.
KV_SOURCES = ("inversion", "guidance")


class StopUNet(Exception):
    """Raised once the last needed decoder feature is captured: the rest of the UNet is skipped."""


@dataclass(eq=False)
class BranchState:
    phase: str = "plain"
    step: int = 0
    steps: int = 1
    kv_mode: str = "replace"  # the edit's default ("auto" patches follow it)
    kv: dict = field(default_factory=dict)  # key -> (k, v) of the reference pass of this step
    capture: tuple[int, ...] = ()  # decoder block indices whose outputs to capture
    stop_after: int | None = None  # raise StopUNet after capturing this block
    features: dict = field(default_factory=dict)
    injected: Counter = field(default_factory=Counter)  # (key, step) -> injections (for tests, stats)
    # masked K/V (remove/paste/appearance): (k, v, extra_options) of the reference pass -> tokens to inject
    kv_select: Callable | None = None

    def __deepcopy__(self, memo):  # ComfyUI deep-copies model_options: share, don't copy
        return self

    def reset_capture(self, blocks: tuple[int, ...], stop: bool) -> None:
        self.capture = blocks
        self.stop_after = blocks[-1] if (stop and blocks) else None
        self.features = {}


class CrossBranchAttention:
    """attn1 replace patch for the decoder self-attention layers.

    mode: "replace" (K, V := the guidance branch's, as for move), "concat" (K, V := [own; guidance],
    as for drag) or "auto" (what the edit's mode asks for). Active on steps i with
    start <= i/steps < end. source: see KV_SOURCES. Outside a Dragon run (no BranchState in the options) it is exactly the
    model's own attention.
    """

    def __init__(self, attention: AttnFn, mode: str = "auto", start: float = 0.1, end: float = 1.0,
                 source: str = "inversion"):
        if mode not in ("auto", "replace", "concat"):
            raise ValueError(f"unknown mode {mode!r}")
        if source not in KV_SOURCES:
            raise ValueError(f"unknown source {source!r}")
        self.attention, self.mode, self.start, self.end, self.source = attention, mode, start, end, source

    def __deepcopy__(self, memo):
        return self

    def active(self, step: int, steps: int) -> bool:
        return self.start <= step / steps < self.end

    def __call__(self, q, k, v, extra_options):
        st = extra_options.get("dragon")
        if isinstance(st, BranchState) and st.phase in ("reference", "generate"):
            block = extra_options["block"]
            key = (block[0], block[1], extra_options.get("block_index", 0))
            if st.phase == "reference":
                st.kv[key] = (k.detach(), v.detach())
            elif key in st.kv and self.active(st.step, st.steps):
                kr, vr = st.kv[key]
                if st.kv_select is not None:
                    kr, vr = st.kv_select(kr, vr, extra_options)
                b = q.shape[0]
                kr = kr.to(q.dtype).expand(b, -1, -1)
                vr = vr.to(q.dtype).expand(b, -1, -1)
                mode = st.kv_mode if self.mode == "auto" else self.mode
                if mode == "replace":
                    k, v = kr, vr
                else:
                    k, v = torch.cat([k, kr], dim=1), torch.cat([v, vr], dim=1)
                st.injected[(key, st.step)] += 1
        return self.attention(q, k, v, extra_options["n_heads"], attn_precision=extra_options.get("attn_precision"),
                              transformer_options=extra_options)


class FeatureCapture:
    """output_block_patch: keeps the outputs of the feature blocks, optionally stops the UNet.

    ComfyUI calls it before output block `id` runs, so the output of block k is the `h` seen when
    id == k + 1.
    """

    def __deepcopy__(self, memo):
        return self

    def __call__(self, h, hsp, transformer_options):
        st = transformer_options.get("dragon")
        if isinstance(st, BranchState) and st.capture:
            k = transformer_options["block"][1] - 1
            if k in st.capture:
                st.features[k] = h
                if st.stop_after == k:
                    raise StopUNet()
        return h, hsp

"""Cross-branch self-attention: the generation branch reads the guidance branch's keys/values.

One `BranchState` travels with each UNet call (in ComfyUI: transformer_options["dragon"]) and says
what the call is: the guidance branch's reference pass (record K/V of this step), the generation
pass (inject them), or a plain pass. Only the current step's K/V are held on the device.

The official code fills a memory bank of K/V during DDIM inversion. `KVBank` is that bank, recorded by
`KVRecorder` while Dragon DDIM Invert runs, under a byte budget: a step it holds needs no reference pass at
edit time; a step it does not hold is recomputed from the same input (source "inversion").
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import weakref
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


def kv_key(extra_options: dict) -> Key:
    """The layer an attn1 call belongs to: ("output", block, transformer index)."""
    block = extra_options["block"]
    return (block[0], block[1], extra_options.get("block_index", 0))


def own_attention(attention: AttnFn, q, k, v, extra_options: dict) -> torch.Tensor:
    """The layer's attention as the model itself would run it, on the given q, k, v (attn1 replace patches end
    with this)."""
    return attention(q, k, v, extra_options["n_heads"], attn_precision=extra_options.get("attn_precision"),
                     transformer_options=extra_options)


def kv_nbytes(kv: dict) -> int:
    return sum(t.numel() * t.element_size() for pair in kv.values() for t in pair)


@dataclass(eq=False)
class KVBank:
    """The official memory bank's K/V: for denoising step i, every decoder self-attention layer's (K, V) from
    the inversion step that reached step i's level (the UNet at step i's timestep on the latent one level less
    noisy), i.e. exactly what the sampler's "inversion" source would recompute. Kept in the dtype the UNet
    computed them in (so a banked step equals a recomputed one), on `store` (host memory by default, as the
    official code does). Steps are kept in the order the inversion makes them while they fit in
    `budget_bytes`; once one does not fit, later ones (the same size) are not recorded at all."""

    budget_bytes: int
    store: str = "cpu"
    steps: dict = field(default_factory=dict)  # denoising step -> {key: (k, v)}
    nbytes: int = 0
    dropped: int = 0  # steps not kept (over budget, or the UNet ran more than once in that inversion step)
    full: bool = False
    _step: int | None = None
    _pending: dict = field(default_factory=dict)
    _twice: bool = False

    def __post_init__(self):
        # when the bank goes (a new inversion replaces it in ComfyUI's cache, or "Free model and node cache"
        # clears the cache), its memory must go back to the system, not only to the C heap (see _release)
        weakref.finalize(self, _release, self.steps).atexit = False

    def __deepcopy__(self, memo):  # ComfyUI deep-copies model_options: share, don't copy
        return self

    def begin(self, step: int) -> None:
        """The next UNet call is the inversion step that reached denoising step `step`'s level."""
        self._step, self._pending, self._twice = step, {}, False

    def record(self, key: Key, k: torch.Tensor, v: torch.Tensor) -> None:
        if self._step is None or self.full:
            return
        if key in self._pending:  # several UNet calls in one step (e.g. batched area conds): not a bank step
            self._twice = True
            return
        self._pending[key] = (k.detach().to(self.store, copy=True), v.detach().to(self.store, copy=True))

    def end(self) -> None:
        if self._step is not None and self._pending:
            size = kv_nbytes(self._pending)
            if not self._twice and self.nbytes + size <= self.budget_bytes:
                self.steps[self._step] = self._pending
                self.nbytes += size
            else:
                self.dropped += 1
                self.full = self.full or not self._twice
        elif self._step is not None and self.full:
            self.dropped += 1
        self._step, self._pending = None, {}

    def get(self, step: int) -> dict | None:
        return self.steps.get(step)


def _release(steps: dict) -> None:
    """A KVBank's finalizer: drop its tensors, then return the freed heap pages to the system. The bank is
    thousands of tensors of 64 KB to a few MB; glibc serves many of them from its heap (its mmap threshold rises
    with the first large frees) and keeps those pages after free(), so the process kept a dead bank's size
    (tests/test_reliability.py: 162 MB bank, 48 MB of it back without this)."""
    steps.clear()
    trim_heap()


@functools.cache
def _malloc_trim() -> Callable | None:
    """glibc's malloc_trim, or None where the C library has none."""
    try:
        name = ctypes.util.find_library("c")
        return getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
    except OSError:
        return None


def trim_heap() -> None:
    """malloc_trim(0): hand free heap memory back to the system; nothing elsewhere."""
    fn = _malloc_trim()
    if fn is not None:
        fn(0)


class KVRecorder:
    """attn1 replace patch of Dragon DDIM Invert's model clone: puts the layer's K/V into the bank, then attends as
    the layer would have (through the replace patch that was there before, if any)."""

    def __init__(self, bank: KVBank, attention: AttnFn, inner: Callable | None = None):
        self.bank, self.attention, self.inner = bank, attention, inner

    def __deepcopy__(self, memo):
        return self

    def __call__(self, q, k, v, extra_options):
        self.bank.record(kv_key(extra_options), k, v)
        if self.inner is not None:
            return self.inner(q, k, v, extra_options)
        return own_attention(self.attention, q, k, v, extra_options)


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
    # the edit region on the latent grid [1, 1, h, w] (the plan's sde_mask): where a DiT's "outside" K/V injection lets
    # the generation keep its own K/V (nodes/dit.py KV_REGION)
    edit_region: torch.Tensor | None = None

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
            key = kv_key(extra_options)
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
        return own_attention(self.attention, q, k, v, extra_options)


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

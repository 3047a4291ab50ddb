"""The dual-branch loop's Backend on ComfyUI: the guider's model, conds and attention."""
from __future__ import annotations

import weakref
from contextlib import contextmanager, nullcontext

import torch

import comfy.model_management
import comfy.samplers
from comfy.ldm.modules.attention import attention_pytorch

from ..dragon_core.attention import BranchState, CrossBranchAttention, StopUNet
from .compose import grad_safe_options
from .common import with_transformer_options
from .dit import DitAttention, attention_of


def _differentiable_attention(func, *args, **kwargs):
    """optimized_attention_override for the gradient pass: SDPA has a backward (sage does not)."""
    return attention_pytorch(*args, **kwargs)


# Speed/memory switches (#7, #22). All on is the pack's behaviour; scripts/bench_speed.py turns each off to measure
# what it saves. Not user settings.
ALIAS_WEIGHTS_IN_GRAD = True  # off: the gradient pass copies every weight through WeightCopy wrappers (#7's way)
WEIGHT_COPY_ONLY_IN_GRAD = True  # (aliasing off) off: every pass of the Dragon clone copies every weight (pre-#7)
DROP_SAVED_WEIGHT_COPIES = True  # (aliasing off) off: autograd keeps the gradient pass's weight copies until the backward
# on: the gradient pass runs two copies of the latent and one backward (dragon_core.sampler._guidance). Exact up to
# rounding; slower on the CPU, expected faster on GPUs, where it is to be measured before it becomes the default.
BATCHED_GRADIENTS = False

_COPY_SOURCE: dict[int, tuple[torch.nn.Module, str]] = {}  # storage address of a live weight copy -> its parameter


class WeightCopy:
    """Weight wrapper of the Dragon clone. With a wrapper present ComfyUI copies the weight at each forward; a copy
    taken outside inference mode can take part in autograd (loaded weights are inference tensors). Detached: only
    the latent needs a gradient. It notes which parameter a copy came from, so that the backward can read the
    parameter itself instead of autograd holding a second copy of the UNet (see saved_weights)."""

    def __init__(self, module: torch.nn.Module, param: str):
        self.module, self.param = module, param

    def __deepcopy__(self, memo):
        return self

    def __call__(self, w: torch.Tensor) -> torch.Tensor:
        w = w.detach()
        fs = getattr(self.module, f"{self.param}_function", [])
        if all(isinstance(f, WeightCopy) for f in fs):  # a LowVramPatch (LoRA) changed the values: keep the copy
            ptr = w.untyped_storage().data_ptr()
            _COPY_SOURCE[ptr] = (self.module, self.param)
            weakref.finalize(w, _COPY_SOURCE.pop, ptr, None)
        return w


def _pack(t: torch.Tensor):
    src = _COPY_SOURCE.get(t.untyped_storage().data_ptr()) if t.device.type != "meta" else None
    if src is None:
        return t
    return src, t.dtype, t.device, t.size(), t.stride(), t.storage_offset()


def _unpack(p):
    if not isinstance(p, tuple):
        return p
    (module, param), dtype, device, size, stride, offset = p
    w = getattr(module, param).to(device=device, dtype=dtype)
    return w.as_strided(size, stride, offset)


def saved_weights():
    """While the gradient pass runs forward, autograd saves a reference to the parameter in place of each weight
    copy: the copies are freed layer by layer instead of all being held until the backward."""
    if not DROP_SAVED_WEIGHT_COPIES:
        return nullcontext()
    return torch.autograd.graph.saved_tensors_hooks(_pack, _unpack)


@contextmanager
def weight_copies(wrapped: list, on: bool):
    """Our weight wrappers take part only when `on` (the gradient pass); the no-grad passes run on the weights."""
    if on or not WEIGHT_COPY_ONLY_IN_GRAD:
        yield
        return
    saved = []
    for m in wrapped:
        for attr in ("weight_function", "bias_function"):
            fs = m.__dict__.get(attr)
            if fs and any(isinstance(f, WeightCopy) for f in fs):
                saved.append((m, attr, fs))
                setattr(m, attr, [f for f in fs if not isinstance(f, WeightCopy)])
    try:
        yield
    finally:
        for m, attr, fs in saved:
            setattr(m, attr, fs)


def _alias(p: torch.nn.Parameter) -> torch.nn.Parameter:
    """A normal (non-inference) tensor on the same memory as `p`: no copy."""
    a = torch.empty(0, dtype=p.dtype, device=p.device)
    a.set_(p.untyped_storage(), p.storage_offset(), p.size(), p.stride())
    return torch.nn.Parameter(a, requires_grad=False)


@contextmanager
def autograd_weights(unet: torch.nn.Module, on: bool):
    """For the gradient pass: ComfyUI loads weights as inference tensors, which autograd cannot save for the
    backward. Each one is replaced, for the duration of the pass, by a normal tensor on the same memory (no copy,
    nothing written), and the model's own parameters are put back afterwards, also on errors. Weights ComfyUI
    casts or patches per layer (lowvram, LoRA patches applied on the fly, fp8) are fresh tensors anyway."""
    if not on:
        yield
        return
    swapped = [(m, name, p) for m in unet.modules() for name, p in m._parameters.items()
               if type(p) is torch.nn.Parameter and p.is_inference() and p.device.type != "meta"]
    try:
        for m, name, p in swapped:
            m._parameters[name] = _alias(p)
        yield
    finally:
        for m, name, p in swapped:
            m._parameters[name] = p


def cross_branch_patches(model_patcher) -> list:
    """The K/V injection patches on a model: CrossBranchAttention on a UNet's attn1, a DitAttention with a mode on
    a DiT (both answer active() and source)."""
    over = attention_of(model_patcher)
    if over is not None and over.mode is not None:
        return [over]
    attn1 = model_patcher.model_options.get("transformer_options", {}).get("patches_replace", {}).get("attn1", {})
    return [p for p in attn1.values() if isinstance(p, CrossBranchAttention)]


class ComfyBackend:
    """Runs UNet passes through the guider's own machinery (conds, hooks, ControlNet, wrappers)."""

    def __init__(self, model_k, extra_args: dict, feature_blocks: tuple[int, ...], kv_patches: list):
        self.model_k = model_k  # KSamplerX0Inpaint around the CFGGuider
        self.guider = model_k.inner_model
        self.base = self.guider.inner_model
        self.extra_args = extra_args
        self._blocks = feature_blocks
        self._kv = kv_patches
        # the modules carrying our weight wrappers (none unless bench_speed's weight_copies path is on), so that
        # the no-grad passes do not scan the whole UNet for them
        self._wrapped = [m for m in self.base.diffusion_model.modules()
                         if any(isinstance(f, WeightCopy) for attr in ("weight_function", "bias_function")
                                for f in m.__dict__.get(attr) or ())]

    def _sigma(self, x, sigma):
        return torch.full((x.shape[0],), float(sigma), device=x.device, dtype=x.dtype)

    def denoise_cfg(self, x, sigma, state: BranchState):
        mo = with_transformer_options(self.extra_args["model_options"], dragon=state)
        with weight_copies(self._wrapped, on=False):
            return self.model_k(x, self._sigma(x, sigma), **{**self.extra_args, "model_options": mo})

    def denoise_cond(self, x, sigma, state: BranchState):
        entries = {"dragon": state}
        own = self.extra_args["model_options"].get("transformer_options", {}).get("optimized_attention_override")
        if state.phase == "grad" and not isinstance(own, DitAttention):  # (a DitAttention takes care of it itself)
            entries["optimized_attention_override"] = _differentiable_attention
        mo = with_transformer_options(self.extra_args["model_options"], **entries)
        grad = state.phase == "grad"
        if grad:
            mo = grad_safe_options(mo)  # IP-Adapter-style patches: their value, a differentiable path
        alias = grad and ALIAS_WEIGHTS_IN_GRAD
        copies = grad and not alias
        try:
            with weight_copies(self._wrapped, on=copies), (saved_weights() if copies else nullcontext()), \
                    autograd_weights(self.base.diffusion_model, on=alias):
                return comfy.samplers.calc_cond_batch(self.base, [self.guider.conds["positive"]], x,
                                                      self._sigma(x, sigma), mo)[0]
        except StopUNet:
            return None

    def feature_blocks(self):
        return self._blocks

    def kv_active(self, step, steps):
        return any(p.active(step, steps) for p in self._kv)

    def kv_source(self):
        return self._kv[0].source if self._kv else "inversion"

    def batch_gradients(self):
        return BATCHED_GRADIENTS

    def step_done(self, i, x, denoised):
        pass  # replaced by the sampler function with the KSAMPLER callback

    def check_interrupt(self):
        comfy.model_management.throw_exception_if_processing_interrupted()

"""The dual-branch loop's Backend on ComfyUI: the guider's model, conds and attention."""
from __future__ import annotations

import torch

import comfy.model_management
import comfy.samplers
from comfy.ldm.modules.attention import attention_pytorch

from ..dragon_core.attention import BranchState, CrossBranchAttention, StopUNet
from .common import with_transformer_options


def _differentiable_attention(func, *args, **kwargs):
    """optimized_attention_override for the gradient pass: SDPA has a backward (sage does not)."""
    return attention_pytorch(*args, **kwargs)


def cross_branch_patches(model_patcher) -> list[CrossBranchAttention]:
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

    def _sigma(self, x, sigma):
        return torch.full((x.shape[0],), float(sigma), device=x.device, dtype=x.dtype)

    def denoise_cfg(self, x, sigma, state: BranchState):
        mo = with_transformer_options(self.extra_args["model_options"], dragon=state)
        return self.model_k(x, self._sigma(x, sigma), **{**self.extra_args, "model_options": mo})

    def denoise_cond(self, x, sigma, state: BranchState):
        entries = {"dragon": state}
        if state.phase == "grad":
            entries["optimized_attention_override"] = _differentiable_attention
        mo = with_transformer_options(self.extra_args["model_options"], **entries)
        try:
            return comfy.samplers.calc_cond_batch(self.base, [self.guider.conds["positive"]], x,
                                                  self._sigma(x, sigma), mo)[0]
        except StopUNet:
            return None

    def feature_blocks(self):
        return self._blocks

    def kv_active(self, step, steps):
        return any(p.active(step, steps) for p in self._kv)

    def step_done(self, i, x, denoised):
        pass  # replaced by the sampler function with the KSAMPLER callback

    def check_interrupt(self):
        comfy.model_management.throw_exception_if_processing_interrupted()

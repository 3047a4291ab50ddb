"""Composition with patches other node packs put on the MODEL (IP-Adapter-style attn2 replace patches)."""
from __future__ import annotations

import torch

from comfy.ldm.modules.attention import attention_pytorch

from ..dragon_core.attention import CrossBranchAttention


class StraightThrough:
    """A foreign attention replace patch inside the gradient pass: its output value, the plain attention's gradient.

    Patches such as IP-Adapter's compute extra image-token keys/values, often from tensors made under
    ComfyUI's inference mode, which autograd cannot save for the backward pass. Run under no_grad, the
    patch keeps its full effect on the features the energy compares; the gradient w.r.t. the latent
    flows through the layer's own text attention.
    """

    def __init__(self, patch):
        self.patch = patch

    def __deepcopy__(self, memo):
        return self

    def __call__(self, q, k, v, extra_options):
        with torch.no_grad():
            out = self.patch(q, k, v, extra_options)
        if not (q.requires_grad or k.requires_grad or v.requires_grad):
            return out
        plain = attention_pytorch(q, k, v, extra_options["n_heads"], attn_precision=extra_options.get("attn_precision"))
        return plain + (out - plain).detach()


def grad_safe_options(model_options: dict) -> dict:
    """model_options whose foreign attn1/attn2 replace patches run straight-through (gradient pass only)."""
    to = model_options.get("transformer_options", {})
    replace = to.get("patches_replace", {})
    if not any(not isinstance(p, (CrossBranchAttention, StraightThrough))
               for name in ("attn1", "attn2") for p in replace.get(name, {}).values()):
        return model_options
    new_replace = dict(replace)
    for name in ("attn1", "attn2"):
        if name in replace:
            new_replace[name] = {key: p if isinstance(p, (CrossBranchAttention, StraightThrough)) else StraightThrough(p)
                                 for key, p in replace[name].items()}
    mo = dict(model_options)
    mo["transformer_options"] = dict(to, patches_replace=new_replace)
    return mo

"""Autograd through model code written for inference: tensors whose `+=`, `-=`, `*=` make new tensors.

ComfyUI's DiT blocks update their streams in place (Flux: `img += gate * attn`, then `img += gate * mlp(norm(img))`),
which autograd refuses once a gradient is wanted through them ("modified by an inplace operation"): the norm saved
the stream the next `+=` overwrote. The energy guidance needs that gradient (and the toy DiT's training needs it).
Handing the model its inputs as OutOfPlace tensors makes every such update an out-of-place add, without touching
the model's code: results of torch operations on an OutOfPlace tensor are OutOfPlace again, so the whole forward
pass inherits it. Values are unchanged (the same operations, only new storage).
"""
from __future__ import annotations

import torch


class OutOfPlace(torch.Tensor):
    """A tensor whose augmented assignments (`a += b`, `a -= b`, `a *= b`) rebind to a new tensor."""

    def __iadd__(self, other):
        return self + other

    def __isub__(self, other):
        return self - other

    def __imul__(self, other):
        return self * other


def out_of_place(x):
    """x (a tensor, or a list/tuple/dict of them, nested) with every floating-point tensor viewed as OutOfPlace."""
    if isinstance(x, torch.Tensor):
        return x.as_subclass(OutOfPlace) if x.is_floating_point() and not isinstance(x, OutOfPlace) else x
    if isinstance(x, (list, tuple)):
        return type(x)(out_of_place(v) for v in x)
    if isinstance(x, dict):
        return {k: out_of_place(v) for k, v in x.items()}
    return x


def plain(x: torch.Tensor) -> torch.Tensor:
    """An OutOfPlace result as an ordinary tensor again (same storage, same autograd history)."""
    return x.as_subclass(torch.Tensor) if isinstance(x, OutOfPlace) else x

"""Gradients through ComfyUI's Flux blocks (they update their streams in place) via dragon_core.outofplace."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.append(str(Path(__file__).resolve().parents[1] / "toy"))

from dragon_core.outofplace import OutOfPlace, out_of_place, plain  # noqa: E402
from dragon_toy import dit  # noqa: E402



@pytest.fixture(autouse=True)
def differentiable(comfy):
    """ComfyUI's Flux class, imported in-process, with the kernels the pack's gradient pass runs (ComfyUI 0.33+
    runs RoPE through kernels that have a backward only while its training switch is on)."""
    with comfy.module("nodes.dit")._differentiable_kernels():
        yield


def _net():
    torch.manual_seed(0)
    net = dit.build_flux()
    with torch.no_grad():  # a non-zero output layer (the fresh model starts as the zero predictor)
        net.final_layer.linear.weight.normal_(0, 0.05)
    return net.requires_grad_(False)


def _inputs(n=2):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 3, 16, 16, generator=g)
    return x, torch.tensor([0.4, 0.8])[:n], torch.zeros(n, 1, dit.CONTEXT_DIM), torch.full((n,), 3.5)


def test_flux_refuses_a_gradient_through_its_in_place_updates():
    net = _net()
    x, s, ctx, g = _inputs()
    x.requires_grad_(True)
    out = net(x, s, ctx, guidance=g)
    with pytest.raises(RuntimeError, match="inplace"):
        out.square().sum().backward()


def test_out_of_place_inputs_give_the_same_values_and_the_true_gradient():
    net = _net()
    x, s, ctx, g = _inputs()
    ref = net(x, s, ctx, guidance=g)
    xg = x.clone().requires_grad_(True)
    out = net(out_of_place(xg), out_of_place(s), out_of_place(ctx), guidance=out_of_place(g))
    assert isinstance(out, OutOfPlace) and not isinstance(plain(out), OutOfPlace)
    assert torch.equal(plain(out), ref)
    w = torch.randn_like(ref)
    (plain(out) * w).sum().backward()
    # the gradient against a central difference along a random direction
    d = torch.randn_like(x)
    h = 1e-2
    with torch.no_grad():
        fp = (net(x + h * d, s, ctx, guidance=g) * w).sum()
        fm = (net(x - h * d, s, ctx, guidance=g) * w).sum()
    numeric = float((fp - fm) / (2 * h))
    analytic = float((xg.grad * d).sum())
    assert abs(numeric - analytic) <= 0.02 * abs(numeric) + 1e-3, (numeric, analytic)


def test_out_of_place_maps_nested_inputs_and_leaves_other_values():
    t = torch.ones(2)
    i = torch.ones(2, dtype=torch.long)
    got = out_of_place({"a": [t, (t, 3)], "b": i, "c": None})
    assert isinstance(got["a"][0], OutOfPlace) and isinstance(got["a"][1][0], OutOfPlace)
    assert got["a"][1][1] == 3 and got["c"] is None
    assert not isinstance(got["b"], OutOfPlace)  # integer tensors stay as they are
    a = out_of_place(torch.zeros(2))
    b = a
    a += 1  # rebinds a; b (the original) is untouched
    assert torch.equal(b, torch.zeros(2)) and torch.equal(plain(a), torch.ones(2))

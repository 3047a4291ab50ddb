"""What the toy models' trainers share (scripts/train_toy.py, scripts/train_toy_dit.py)."""
from __future__ import annotations

import torch


def optimizer_step(opt: torch.optim.Optimizer, loss: torch.Tensor, net: torch.nn.Module, ema: torch.nn.Module,
                   it: int) -> None:
    """One AdamW step with the gradient norm clipped to 1, then the EMA copy follows (decay warming up to 0.999)."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
    opt.step()
    with torch.no_grad():
        decay = min(0.999, (1 + it) / (10 + it))
        for pe, p in zip(ema.parameters(), net.parameters()):
            pe.lerp_(p, 1 - decay)

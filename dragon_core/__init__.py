"""DragonDiffusion / DiffEditor in plain PyTorch.

This package is the method, testable on its own: DDIM inversion, masks and energies, the
dual-branch guided sampling loop and the cross-branch attention. It never imports ComfyUI; the
`nodes/` package adapts it to ComfyUI's model, conditioning and attention machinery.
"""
from .errors import DragonInputError

__all__ = ["DragonInputError"]

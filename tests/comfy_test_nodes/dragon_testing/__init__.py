"""Test-only ComfyUI nodes (never shipped to users): tiny models, random conditioning, tensors out.

Loaded by the test server through --extra-model-paths-config, like ComfyUI core's testing_nodes.
"""
from __future__ import annotations

import os

import torch
from safetensors.torch import save_file

import folder_paths

from . import tiny


class TinyModel:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"family": (list(tiny.FAMILIES), {"tooltip": "Architecture family."}),
                             "seed": ("INT", {"default": 0, "min": 0, "max": 2**31})}}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "build"
    CATEGORY = "DragonDiffusion/testing"

    def build(self, family, seed):
        return (tiny.FAMILIES[family](seed),)


class RandomConditioning:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"family": (list(tiny.FAMILIES),), "seed": ("INT", {"default": 0, "min": 0, "max": 2**31})}}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "build"
    CATEGORY = "DragonDiffusion/testing"

    def build(self, family, seed):
        return (tiny.random_conditioning(family, seed),)


class SceneLatent:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"seed": ("INT", {"default": 0, "min": 0, "max": 2**31}),
                             "width": ("INT", {"default": 64, "min": 8, "max": 4096, "step": 8}),
                             "height": ("INT", {"default": 64, "min": 8, "max": 4096, "step": 8}),
                             "channels": ("INT", {"default": 4, "min": 1, "max": 16}),
                             "batch": ("INT", {"default": 1, "min": 1, "max": 8})}}

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "build"
    CATEGORY = "DragonDiffusion/testing"

    def build(self, seed, width, height, channels, batch):
        lat = tiny.scene_latent(seed, width, height)
        if channels != 4:
            lat = lat.repeat(1, (channels + 3) // 4, 1, 1)[:, :channels]
        return ({"samples": lat.repeat(batch, 1, 1, 1)},)


class BoxMask:
    @classmethod
    def INPUT_TYPES(cls):
        i = ("INT", {"default": 0, "min": 0, "max": 8192})
        return {"required": {"width": i, "height": i, "x0": i, "y0": i, "x1": i, "y1": i}}

    RETURN_TYPES = ("MASK",)
    FUNCTION = "build"
    CATEGORY = "DragonDiffusion/testing"

    def build(self, width, height, x0, y0, x1, y1):
        m = torch.zeros(1, height, width)
        m[:, y0:y1, x0:x1] = 1.0
        return (m,)


class SaveTensor:
    """Writes a LATENT or a MASK to output/dragon_test/<name>.safetensors."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"name": ("STRING", {"default": "t"})},
                "optional": {"latent": ("LATENT",), "mask": ("MASK",), "image": ("IMAGE",)}}

    RETURN_TYPES = ()
    FUNCTION = "save"
    OUTPUT_NODE = True
    CATEGORY = "DragonDiffusion/testing"

    def save(self, name, latent=None, mask=None, image=None):
        out_dir = os.path.join(folder_paths.get_output_directory(), "dragon_test")
        os.makedirs(out_dir, exist_ok=True)
        tensors = {}
        if latent is not None:
            tensors["latent"] = latent["samples"]
        if mask is not None:
            tensors["mask"] = mask
        if image is not None:
            tensors["image"] = image
        path = os.path.join(out_dir, f"{name}.safetensors")
        save_file({k: v.detach().cpu().contiguous().float() for k, v in tensors.items()}, path)
        return {"ui": {"tensors": [{"path": path, "keys": sorted(tensors)}]}}


NODE_CLASS_MAPPINGS = {
    "DragonTest_TinyModel": TinyModel,
    "DragonTest_RandomConditioning": RandomConditioning,
    "DragonTest_SceneLatent": SceneLatent,
    "DragonTest_SaveTensor": SaveTensor,
    "DragonTest_BoxMask": BoxMask,
}

"""Test-only ComfyUI nodes (never shipped to users): tiny models, random conditioning, tensors out.

Loaded by the test server through --extra-model-paths-config, like ComfyUI core's testing_nodes.
"""
from __future__ import annotations

import os
import time

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


class Pose:
    """A POSE_KEYPOINT (OpenPose format) from JSON text: what a DWPose/OpenPose preprocessor node outputs."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"keypoints": ("STRING", {"default": "[]", "multiline": True})}}

    RETURN_TYPES = ("POSE_KEYPOINT",)
    FUNCTION = "build"
    CATEGORY = "DragonDiffusion/testing"

    def build(self, keypoints):
        import json

        return (json.loads(keypoints),)


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


class Poison:
    """Puts one NaN/inf into whichever of a LATENT, MASK, IMAGE or CONDITIONING is connected (bad-input tests)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": (["nan", "inf", "-inf"],)},
                "optional": {"latent": ("LATENT",), "mask": ("MASK",), "image": ("IMAGE",),
                             "conditioning": ("CONDITIONING",)}}

    RETURN_TYPES = ("LATENT", "MASK", "IMAGE", "CONDITIONING")
    FUNCTION = "poison"
    CATEGORY = "DragonDiffusion/testing"

    def poison(self, value, latent=None, mask=None, image=None, conditioning=None):
        bad = float(value)

        def spoil(t):
            t = t.clone()
            t.view(-1)[t.numel() // 2] = bad
            return t

        return ({**latent, "samples": spoil(latent["samples"])} if latent is not None else None,
                spoil(mask) if mask is not None else None,
                spoil(image) if image is not None else None,
                [[spoil(c[0]), dict(c[1])] for c in conditioning] if conditioning is not None else None)


class _Fault:
    """output_block_patch that misbehaves only inside a Dragon run (transformer_options['dragon'])."""

    def __init__(self, action: str, delay: float, marker: str):
        self.action, self.delay, self.marker = action, delay, marker

    def __deepcopy__(self, memo):
        return self

    def __call__(self, h, hsp, transformer_options):
        st = transformer_options.get("dragon")
        phase = getattr(st, "phase", None)
        if phase is None:
            return h, hsp
        if self.action == "raise" and phase == "grad":
            raise RuntimeError("DragonTest: injected fault in the guidance step")
        if self.action == "slow":
            if self.marker and getattr(st, "step", 0) >= 1 and not os.path.exists(self.marker):
                with open(self.marker, "w") as f:
                    f.write(str(st.step))
            time.sleep(self.delay)
        return h, hsp


class GuidanceFault:
    """A clone of MODEL whose Dragon runs raise in the guidance (gradient) pass or run slowly.

    slow: every decoder block of a Dragon pass sleeps `delay` s, and `marker` (a file name in the
    output folder) is written once sampling reaches step 1, so a test can POST /interrupt mid-run.
    """

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "action": (["raise", "slow"],),
                             "delay": ("FLOAT", {"default": 0.01, "min": 0.0, "max": 1.0}),
                             "marker": ("STRING", {"default": ""})}}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "build"
    CATEGORY = "DragonDiffusion/testing"

    def build(self, model, action, delay, marker):
        m = model.clone()
        path = os.path.join(folder_paths.get_output_directory(), os.path.basename(marker)) if marker else ""
        m.set_model_output_block_patch(_Fault(action, delay, path))
        return (m,)


def model_state(model) -> dict:
    """What a node could have left on a shared ModelPatcher and on its torch modules."""
    to = model.model_options.get("transformer_options", {})
    wrapped = [n for n, mod in model.model.named_modules()
               if getattr(mod, "weight_function", None) or getattr(mod, "bias_function", None)]
    return {
        "model_options_keys": sorted(model.model_options),
        "transformer_options_keys": sorted(to),
        "patches": {k: len(v) for k, v in to.get("patches", {}).items()},
        "patches_replace": {k: len(v) for k, v in to.get("patches_replace", {}).items()},
        "weight_patches": len(model.patches),
        "object_patches": sorted(model.object_patches),
        "weight_wrappers": len(model.weight_wrapper_patches),
        "wrappers": len(getattr(model, "wrappers", {}) or {}),
        "callbacks": len(getattr(model, "callbacks", {}) or {}),
        "hooks": repr(getattr(model, "current_hooks", None)),
        "attachments": sorted(getattr(model, "attachments", {}) or {}),
        "injections": sorted(getattr(model, "injections", {}) or {}),
        "additional_models": sorted(getattr(model, "additional_models", {}) or {}),
        "wrapped_modules": len(wrapped),
        "non_inference_params": sum(not p.is_inference() for p in model.model.parameters()),
        "requires_grad_params": sum(p.requires_grad for p in model.model.parameters()),
    }


class ModelReport:
    """Passes MODEL through unchanged (the same object) and reports its patch state.

    `nonce` makes downstream nodes re-run on the same cached MODEL; connect `after` to order the
    report after another node's run.
    """

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "nonce": ("INT", {"default": 0, "min": 0, "max": 2**31})},
                "optional": {"after": ("LATENT",)}}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "report"
    OUTPUT_NODE = True
    CATEGORY = "DragonDiffusion/testing"

    def report(self, model, nonce, after=None):
        return {"ui": {"state": [model_state(model)], "model_id": [id(model)]}, "result": (model,)}


NODE_CLASS_MAPPINGS = {
    "DragonTest_TinyModel": TinyModel,
    "DragonTest_RandomConditioning": RandomConditioning,
    "DragonTest_SceneLatent": SceneLatent,
    "DragonTest_SaveTensor": SaveTensor,
    "DragonTest_BoxMask": BoxMask,
    "DragonTest_Pose": Pose,
    "DragonTest_Poison": Poison,
    "DragonTest_GuidanceFault": GuidanceFault,
    "DragonTest_ModelReport": ModelReport,
}

"""The toy model and its synthetic scenes as ComfyUI nodes, for the demo and the quality benchmark.

Not part of the pack's node list: ComfyUI loads this folder only when it is named in an
extra_model_paths.yaml `custom_nodes:` entry (scripts/demo and the benchmark do that), so users
who install the pack never see these nodes.
"""
from __future__ import annotations

import json

import torch

from . import model as toy_model
from . import scenes

CATEGORY = "DragonDiffusion/toy"


def _image(chw: torch.Tensor) -> torch.Tensor:
    """[3, H, W] -> ComfyUI IMAGE [1, H, W, 3]."""
    return chw.permute(1, 2, 0)[None].contiguous().float()


class ToyModelLoader:
    """MODEL, VAE and an (empty) CONDITIONING of the project's toy pixel-space model."""

    DESCRIPTION = ("Loads the project's small pixel-space diffusion model (32x32 synthetic scenes, no download): "
                   "the shipped weights, or the file named by $DRAGON_TOY_WEIGHTS when that is set.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    RETURN_TYPES = ("MODEL", "VAE", "CONDITIONING")
    RETURN_NAMES = ("model", "vae", "conditioning")
    OUTPUT_TOOLTIPS = ("The toy UNet (ComfyUI's SD UNet class, SD noise schedule; the shipped weights predict v).",
                       "Pixel-space conversion VAE (image*2-1).",
                       "One zero token: the model is unconditional; use it as positive and negative.")
    FUNCTION = "load"
    CATEGORY = CATEGORY

    def load(self):
        return toy_model.load_model_patcher(), toy_model.pixel_vae(), toy_model.empty_conditioning()


class ToyDiTLoader(ToyModelLoader):
    """MODEL, VAE and CONDITIONING of the project's toy flow DiT (ComfyUI's Flux class, tiny, pixel space)."""

    DESCRIPTION = ("Loads the project's small flow-matching DiT (ComfyUI's Flux transformer, 2.7 M parameters, 32x32 "
                   "synthetic scenes, no download): the shipped weights, or the file named by $DRAGON_TOY_DIT_WEIGHTS.")
    OUTPUT_TOOLTIPS = ("The toy DiT: a FLUX.1-dev-shaped model (flow matching, guidance embedding, shift 1.15).",
                       "Pixel-space conversion VAE (image*2-1).",
                       "One zero text token: the model is unconditional; use it as positive and negative.")

    def load(self):
        from . import dit

        return dit.load_model_patcher(), toy_model.pixel_vae(), dit.conditioning()


class ToySD3Loader(ToyModelLoader):
    """MODEL, VAE and CONDITIONING of the project's toy SD3 (ComfyUI's MMDiT, tiny, pixel space)."""

    DESCRIPTION = ("Loads the project's small SD3.5-shaped flow-matching DiT (ComfyUI's MMDiT, 3.8 M parameters, 32x32 "
                   "synthetic scenes, no download): the shipped weights, or the file named by $DRAGON_TOY_SD3_WEIGHTS.")
    OUTPUT_TOOLTIPS = ("The toy SD3: an SD3.5-Medium-shaped model (flow matching, shift 3, RMS q/k norms, image-only "
                       "attention in its first blocks; not guidance-distilled).",
                       "Pixel-space conversion VAE (image*2-1).",
                       "One zero text token: the model is unconditional; use it as positive and negative.")

    def load(self):
        from . import sd3

        return sd3.load_model_patcher(), toy_model.pixel_vae(), sd3.conditioning()


class ToyScene:
    """A benchmark scene with its ground truth, drawn from (mode, scene number)."""

    DESCRIPTION = "Draws a seeded 32x32 synthetic scene, the exact expected result of an edit, and its inputs."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "mode": (list(scenes.MODES), {"tooltip": "Which edit the scene is set up for."}),
            # not named "seed": the frontend would add a control that changes it after every run
            "scene": ("INT", {"default": 0, "min": 0, "max": 2**31 - 1, "tooltip": "Scene number."}),
        }}

    RETURN_TYPES = ("IMAGE", "IMAGE", "MASK", "IMAGE", "MASK", "STRING", "INT", "INT", "FLOAT")
    RETURN_NAMES = ("image", "expected", "object_mask", "reference", "reference_mask", "points", "offset_x",
                    "offset_y", "scale")
    OUTPUT_TOOLTIPS = (
        "The image to edit.", "The exact correct result of the edit.",
        "The mask a user would paint: the object; for drag the editable region (the object and where it goes).",
        "paste/appearance: the other image (else the image itself).", "The object in the reference image.",
        "drag, move: handle/target pairs as the Mask/Point Editor's JSON.", "Offset of the edit, pixels.",
        "Offset of the edit, pixels.", "resize: scale factor.")
    FUNCTION = "draw"
    CATEGORY = CATEGORY

    def draw(self, mode: str, scene: int):
        c = scenes.make_case(mode, scene)
        ref = c.reference if c.reference is not None else c.source
        ref_mask = c.reference_mask if c.reference_mask is not None else torch.zeros_like(c.object_mask)
        points = json.dumps([{"x": x, "y": y} for (x, y) in c.points])
        return (_image(c.source), _image(c.expected), c.guide_mask[None].float(), _image(ref), ref_mask[None].float(),
                points, int(c.offset[0]), int(c.offset[1]), float(c.scale))


NODE_CLASS_MAPPINGS = {
    "DragonToy_ModelLoader": ToyModelLoader,
    "DragonToy_DiTLoader": ToyDiTLoader,
    "DragonToy_SD3Loader": ToySD3Loader,
    "DragonToy_Scene": ToyScene,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "DragonToy_ModelLoader": "Toy Model Loader (DragonDiffusion demo)",
    "DragonToy_DiTLoader": "Toy DiT Loader (DragonDiffusion demo)",
    "DragonToy_SD3Loader": "Toy SD3 Loader (DragonDiffusion demo)",
    "DragonToy_Scene": "Toy Scene (DragonDiffusion demo)",
}

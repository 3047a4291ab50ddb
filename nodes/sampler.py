"""Dragon Sampler: dual-branch energy-guided DDIM sampling from an inversion."""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Optional

import torch

import comfy.model_management
import comfy.samplers
import latent_preview
from comfy_api.latest import io

from ..dragon_core.attention import BranchState, FeatureCapture
from ..dragon_core.errors import DragonInputError
from ..dragon_core.inversion import Inversion
from ..dragon_core.plan import build_plan
from ..dragon_core.sampler import SampleStats, dragon_sample
from ..dragon_core.spec import GuidanceSpec
from . import backend, dit
from .backend import ComfyBackend, WeightCopy, cross_branch_patches
from .common import check_conditioning, log
from .guidance import check_reference_inversion
from .layout import Layout, layout_of
from .types import CATEGORY, DragonGuidanceType, DragonInversionType
from .unet_layout import model_key, pixels_per_latent

NODE = "Dragon Sampler"


def grad_ready_clone(model, layout: Layout | None = None):
    """The Dragon clone: captures the guidance features, and its UNet weights can take part in autograd.

    By default the backend lets the gradient pass read the loaded weights through normal-tensor aliases
    (backend.autograd_weights), so the clone needs nothing more; with that switched off (bench_speed's
    weight_copies variant) it carries ComfyUI weight wrappers (WeightCopy) that copy the weights in the gradient
    pass only."""
    m = model.clone()
    if layout is not None and layout.family is not None:
        dit.install_feature_capture(m, layout.family)
    else:
        m.set_model_output_block_patch(FeatureCapture())
    if backend.ALIAS_WEIGHTS_IN_GRAD:
        return m
    for name, mod in m.model.diffusion_model.named_modules():
        if not hasattr(mod, "comfy_cast_weights"):
            continue
        for p in ("weight", "bias"):
            if getattr(mod, p, None) is not None:
                m.add_weight_wrapper(f"diffusion_model.{name}.{p}", WeightCopy(mod, p))
    return m


@dataclass
class DragonJob:
    spec: GuidanceSpec
    inversion: Inversion
    blocks: tuple[int, ...]
    kv_patches: list
    seed: int
    feature_hw: Optional[tuple[int, int]] = None
    patch_radius: int = 1
    state: BranchState = field(default_factory=BranchState)
    stats: Optional[SampleStats] = None


def _dragon_sampler_fn(model, x, sigmas, extra_args=None, callback=None, disable=None, job: DragonJob = None):
    backend = ComfyBackend(model, extra_args, job.blocks, job.kv_patches)
    if callback is not None:
        backend.step_done = lambda i, xi, den: callback({"i": i, "denoised": den, "x": xi, "sigma": sigmas[i],
                                                         "sigma_hat": sigmas[i]})
    with torch.inference_mode(False):
        plan = build_plan(job.spec, tuple(x.shape[-2:]), x.device, job.feature_hw, job.patch_radius)
    with torch.no_grad():  # only the guidance step takes gradients (it enables them itself)
        out, job.stats = dragon_sample(backend, job.inversion, job.spec, plan, job.state, job.seed, x.device)
    job.state.kv = {}
    return out.detach()  # the last guided step's graph must not ride along with the LATENT


def validate(model, inversion, guidance, steps) -> Layout:
    layout = layout_of(model, NODE)
    if not isinstance(inversion, Inversion):
        raise DragonInputError(NODE, "inversion", "must come from Dragon DDIM Invert.",
                               "Connect the inversion output of Dragon DDIM Invert run on the image you edit.")
    if not isinstance(guidance, GuidanceSpec):
        raise DragonInputError(NODE, "guidance", "must come from Dragon Guidance Setup.",
                               "Connect the guidance output of Dragon Guidance Setup.")
    if inversion.model_key != model_key(model):
        raise DragonInputError(NODE, "inversion", "was made with another model.",
                               "Feed Dragon DDIM Invert and the Dragon Sampler the same checkpoint (LoRA/patches on top are fine).")
    if inversion.space != layout.space:
        made = "a flow-matching (DiT)" if inversion.space == "flow" else "an SD (UNet)"
        raise DragonInputError(NODE, "inversion", f"was made with {made} model, not this one.",
                               "Feed Dragon DDIM Invert and the Dragon Sampler the same checkpoint.")
    if steps != inversion.steps:
        raise DragonInputError(NODE, "steps", f"is {steps} but the inversion has {inversion.steps} steps.",
                               "Use the same number of steps in Dragon DDIM Invert and the Dragon Sampler.")
    h, w = inversion.latent_shape[-2:]
    f = pixels_per_latent(model)
    if (guidance.width // f, guidance.height // f) != (w, h):
        raise DragonInputError(NODE, "guidance",
                               f"was made for a {guidance.width}x{guidance.height} image but the inverted latent is for "
                               f"{w * f}x{h * f}.", "Build the masks/points from the image you inverted.")
    with on_this_node("guidance"):
        check_reference_inversion(guidance, inversion)
        with torch.inference_mode(False):  # geometry errors now, before any model runs
            build_plan(guidance, (h, w), torch.device("cpu"), layout.feature_hw(h, w), layout.patch_radius())
    return layout


@contextmanager
def on_this_node(input_name: str):
    """A refusal about another node's input found while this node runs: ComfyUI shows it on this node, so it names
    this node and the input that carries the other's value, then says whose input is at fault."""
    try:
        yield
    except DragonInputError as e:
        if e.node == NODE:
            raise
        raise DragonInputError(NODE, input_name, f"{e.node}'s input '{e.input_name}': {e.problem}", e.fix) from None


def run_dragon(model, positive, negative, inversion: Inversion, guidance: GuidanceSpec, steps: int, cfg: float,
               seed: int) -> tuple[torch.Tensor, DragonJob]:
    layout = validate(model, inversion, guidance, steps)
    check_conditioning(NODE, "positive", positive)
    check_conditioning(NODE, "negative", negative)
    if not (cfg == cfg and abs(cfg) != float("inf")):  # NaN passes ComfyUI's min/max check
        raise DragonInputError(NODE, "cfg", f"must be a finite number, got {cfg}.", "Use e.g. 4.")
    clone = grad_ready_clone(model, layout)
    blocks = layout.feature_blocks()
    kv = cross_branch_patches(clone)
    if not kv:
        log.info("Dragon Sampler: no Dragon Cross-Branch Attention Patch on the model; sampling without K/V injection.")
    h, w = inversion.latent_shape[-2:]
    job = DragonJob(spec=guidance, inversion=inversion, blocks=blocks, kv_patches=kv, seed=seed,
                    feature_hw=layout.feature_hw(h, w), patch_radius=layout.patch_radius())
    guider = comfy.samplers.CFGGuider(clone)
    guider.set_conds(positive, negative)
    guider.set_cfg(cfg)
    sampler = comfy.samplers.KSAMPLER(_dragon_sampler_fn, extra_options={"job": job})
    zeros = torch.zeros(inversion.latent_shape)
    callback = latent_preview.prepare_callback(clone, inversion.steps)
    out = guider.sample(zeros, zeros, sampler, inversion.sigmas.clone(), callback=callback, disable_pbar=True, seed=seed)
    return out.to(comfy.model_management.intermediate_device()), job


class DragonSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DragonDiffusion_Sampler",
            display_name="Dragon Sampler",
            category=CATEGORY,
            description=(
                "Edits the inverted image: starts from the inverted noise (with the object's noise copied to its "
                "destination) and denoises with CFG while the gradient of the feature-correspondence energy "
                "steers the latent. The guidance branch is the inverted trajectory; with a Cross-Branch Attention "
                "Patch on the model its K/V are injected too."),
            inputs=[
                io.Model.Input("model", tooltip="The model used for Dragon DDIM Invert, optionally through Dragon Cross-Branch Attention Patch."),
                io.Conditioning.Input("positive", tooltip="Prompt describing the image (the one used for inversion is a good choice)."),
                io.Conditioning.Input("negative", tooltip="Negative prompt for CFG (an empty prompt is the official choice)."),
                DragonInversionType.Input("inversion", tooltip="From Dragon DDIM Invert, on the same model and image."),
                DragonGuidanceType.Input("guidance", tooltip="From Dragon Guidance Setup."),
                io.Int.Input("steps", default=50, min=1, max=1000, tooltip="Must equal the steps of Dragon DDIM Invert (official: 50)."),
                io.Float.Input("cfg", default=4.0, min=0.0, max=30.0, step=0.1, round=0.01,
                               tooltip="Classifier-free guidance scale (official demo: 4, 5 for appearance)."),
                io.Int.Input("seed", default=42, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Seed of the regional SDE noise (DiffEditor schedule); the rest is deterministic."),
            ],
            outputs=[io.Latent.Output(tooltip="The edited latent; decode it with VAE Decode.")],
        )

    @classmethod
    def execute(cls, model, positive, negative, inversion, guidance, steps, cfg, seed) -> io.NodeOutput:
        out, _ = run_dragon(model, positive, negative, inversion, guidance, steps, cfg, seed)
        return io.NodeOutput({"samples": out})

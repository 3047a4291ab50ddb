"""DDIM Invert: the guidance branch's trajectory (the latent half of the memory bank)."""
from __future__ import annotations

import torch

import comfy.model_management
import comfy.samplers
import latent_preview
from comfy_api.latest import io

from ..dragon_core.errors import DragonInputError
from ..dragon_core.inversion import Inversion, invert
from .common import check_conditioning, check_latent, ddim_sigmas
from .types import CATEGORY, DragonInversionType
from .unet_layout import model_key, unet_of

NODE = "DDIM Invert"


def _inversion_sampler(model, x, sigmas, extra_args=None, callback=None, disable=None, sink=None):
    """KSAMPLER function: DDIM inversion over ascending sigmas, recording every latent in `sink`."""
    extra_args = extra_args or {}
    s_in = x.new_ones([x.shape[0]])

    def denoise(x_in, sigma):
        return model(x_in, sigma * s_in, **extra_args)

    def on_step(k, xk):
        if callback is not None:
            callback({"i": k, "denoised": xk, "x": xk, "sigma": sigmas[k + 1], "sigma_hat": sigmas[k + 1]})

    sink.extend(invert(denoise, x, torch.flip(sigmas, dims=[0]), on_step))
    return sink[-1].to(x.device)


def run_inversion(model, positive, samples: torch.Tensor, steps: int) -> tuple[Inversion, torch.Tensor]:
    """Invert `samples` (an unscaled VAE latent) with the conditional prompt and no CFG."""
    sigmas = ddim_sigmas(model, steps)
    guider = comfy.samplers.CFGGuider(model)
    guider.inner_set_conds({"positive": positive})
    guider.set_cfg(1.0)
    sink: list[torch.Tensor] = []
    sampler = comfy.samplers.KSAMPLER(_inversion_sampler, extra_options={"sink": sink})
    ascending = torch.flip(sigmas, dims=[0])
    n = len(sigmas) - 1
    callback = latent_preview.prepare_callback(model, n)
    noise_out = guider.sample(torch.zeros_like(samples), samples, sampler, ascending,
                              callback=callback, disable_pbar=True, seed=0)
    inv = Inversion(latents=sink, sigmas=sigmas, model_key=model_key(model), latent_shape=tuple(samples.shape))
    return inv, noise_out.to(comfy.model_management.intermediate_device())


class DDIMInvert(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DragonDiffusion_DDIMInvert",
            display_name="DDIM Invert",
            category=CATEGORY,
            description=(
                "Runs deterministic DDIM inversion of an encoded image with the prompt and no CFG, and "
                "keeps every intermediate latent. The Dragon Sampler follows this trajectory as its "
                "guidance branch and starts from its final noise."),
            inputs=[
                io.Model.Input("model", tooltip="The SD1.x/SD2.x/SDXL model used for editing."),
                io.Conditioning.Input("positive", tooltip="A prompt describing the source image (may be empty text)."),
                io.Latent.Input("latent", tooltip="The source image, encoded with VAE Encode (one image)."),
                io.Int.Input("steps", default=50, min=1, max=1000,
                             tooltip="DDIM steps (the official DDIM timesteps: 981, 961, ..., 1 for 50). Give the Dragon Sampler the same number; the method's default is 50."),
            ],
            outputs=[
                DragonInversionType.Output(display_name="inversion", tooltip="The inverted trajectory (memory bank latents)."),
                io.Latent.Output(display_name="noise", tooltip="The inverted noise x_T as a latent."),
            ],
        )

    @classmethod
    def execute(cls, model, positive, latent, steps) -> io.NodeOutput:
        unet = unet_of(model, NODE)
        if not isinstance(steps, int) or steps < 1:
            raise DragonInputError(NODE, "steps", f"must be a whole number >= 1, got {steps!r}.", "Use 50 (official).")
        check_conditioning(NODE, "positive", positive)
        samples = check_latent(NODE, "latent", latent, unet)
        inv, noise = run_inversion(model, positive, samples, steps)
        return io.NodeOutput(inv, {"samples": noise})

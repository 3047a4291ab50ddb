"""Dragon DDIM Invert: the guidance branch's trajectory (the latent half of the memory bank)."""
from __future__ import annotations

import torch

import comfy.model_management
import comfy.samplers
import latent_preview
from comfy_api.latest import io

from comfy.ldm.modules.attention import optimized_attention

from ..dragon_core.attention import KVBank, KVRecorder
from ..dragon_core.errors import DragonInputError
from ..dragon_core.inversion import Inversion, invert
from . import dit
from .common import check_conditioning, check_latent, log
from .layout import Layout, layout_of
from .types import CATEGORY, DragonInversionType
from .unet_layout import decoder_attn1_keys, model_key

NODE = "Dragon DDIM Invert"
# Host memory for the K/V memory bank by default: a whole 50-step bank of SD1.5 at 768^2 in fp16 (3.1 GB, the
# official figure) or at 512^2 in fp32 (2.8 GB) fits; steps beyond the budget are recomputed at edit time.
DEFAULT_BANK_MB = 4096
MB = 1024 ** 2


# How flow-model inversion evaluates each step (dragon_core.schedule.inversion_step): "current" (the velocity at the
# lower level: the exact reverse of the Euler steps the sampler takes, ComfyUI's FlipSigmas + Euler) or "target" (as
# the UNet path and the official image inversion). On the toy DiT "current" reconstructed better (README, Flow / DiT).
FLOW_INVERSION = "current"
FLOW_MIN_STEPS = 30


def evaluate_rule(space: str) -> str:
    """Where each inversion step evaluates the model in this space: FLOW_INVERSION for flow models, "target" else."""
    return FLOW_INVERSION if space == "flow" else "target"
  # below this a flow model's inversion is warned about (README, Flow / DiT models)


def with_kv_recorder(model, bank: KVBank, layout: Layout):
    """A clone of `model` whose decoder self-attention layers also write their K/V into `bank` (an attn1 replace
    patch already there, e.g. a Dragon Cross-Branch Attention Patch, still does the attending). For a DiT: its
    attention override records the image tokens' K/V of every attention block."""
    m = model.clone()
    if layout.family is not None:
        dit.install_pass(m, layout.family)
        dit.set_attention(m, (dit.attention_of(model) or dit.DitAttention(mode=None)).with_bank(bank))
        return m
    attn1 = m.model_options.get("transformer_options", {}).get("patches_replace", {}).get("attn1", {})
    for block, idx, j in decoder_attn1_keys(layout.unet):
        inner = attn1.get((block, idx, j), attn1.get((block, idx)))
        m.set_model_attn1_replace(KVRecorder(bank, optimized_attention, inner), block, idx, j)
    return m


def _inversion_sampler(model, x, sigmas, extra_args=None, callback=None, disable=None, sink=None, bank=None,
                       space="ve"):
    """KSAMPLER function: DDIM inversion over ascending sigmas, recording every latent in `sink` and the
    decoder K/V of each step in `bank`."""
    extra_args = extra_args or {}
    s_in = x.new_ones([x.shape[0]])
    n, done = len(sigmas) - 1, [0]
    rule = evaluate_rule(space)

    def denoise(x_in, sigma):
        if bank is None:
            return model(x_in, sigma * s_in, **extra_args)
        k = done[0]
        done[0] += 1
        # the denoising step whose level this model call is at: inversion step k reaches the level of denoising
        # step n - 1 - k and (target rule) evaluates there; the current rule evaluates at the level it starts from,
        # denoising step n - k, except from the image level (k = 0), which is no denoising step's
        if rule == "current" and k == 0:
            return model(x_in, sigma * s_in, **extra_args)
        bank.begin(n - 1 - k if rule == "target" else n - k)
        try:
            return model(x_in, sigma * s_in, **extra_args)
        finally:
            bank.end()

    def on_step(k, xk):
        if callback is not None:
            callback({"i": k, "denoised": xk, "x": xk, "sigma": sigmas[k + 1], "sigma_hat": sigmas[k + 1]})

    sink.extend(invert(denoise, x, torch.flip(sigmas, dims=[0]), on_step, space=space, evaluate_at=rule))
    return sink[-1].to(x.device)


def run_inversion(model, positive, samples: torch.Tensor, steps: int,
                  kv_bank_mb: int = DEFAULT_BANK_MB, layout: Layout | None = None) -> tuple[Inversion, torch.Tensor]:
    """Invert `samples` (an unscaled VAE latent) with the conditional prompt and no CFG, recording the K/V memory
    bank within `kv_bank_mb` MB of host memory (0: none). Flow models invert along their own sigmas (Euler steps
    of the velocity, deterministic, n steps for the n sampling steps)."""
    layout = layout or layout_of(model, NODE)
    sigmas = layout.sigmas(model, steps, tuple(samples.shape[-2:]))
    bank = KVBank(budget_bytes=int(kv_bank_mb) * MB) if kv_bank_mb > 0 else None
    guider = comfy.samplers.CFGGuider(with_kv_recorder(model, bank, layout) if bank is not None else model)
    guider.inner_set_conds({"positive": positive})
    guider.set_cfg(1.0)
    sink: list[torch.Tensor] = []
    sampler = comfy.samplers.KSAMPLER(_inversion_sampler, extra_options={"sink": sink, "bank": bank,
                                                                         "space": layout.space})
    ascending = torch.flip(sigmas, dims=[0])
    n = len(sigmas) - 1
    callback = latent_preview.prepare_callback(model, n)
    guider.sample(torch.zeros_like(samples), samples, sampler, ascending, callback=callback, disable_pbar=True, seed=0)
    # the inverted noise as the inversion left it (the guider's output is rescaled by the model's inverse noise
    # scaling, which for a flow model divides by 1 - sigma: infinite at sigma 1)
    noise_out = model.model.process_latent_out(sink[-1].to(torch.float32))
    inv = Inversion(latents=sink, sigmas=sigmas, model_key=model_key(model), latent_shape=tuple(samples.shape),
                    kv_bank=bank, space=layout.space,
                    extra={"evaluate_at": evaluate_rule(layout.space)})
    if bank is not None and bank.dropped:
        log.info("Dragon DDIM Invert: the memory bank holds %d of %d steps (%.0f MB, kv_bank_mb %d); the other steps' K/V "
                 "are recomputed during the edit (one extra UNet pass each).", len(bank.steps), n,
                 bank.nbytes / MB, kv_bank_mb)
    return inv, noise_out.to(comfy.model_management.intermediate_device())


class DDIMInvert(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DragonDiffusion_DDIMInvert",
            display_name=NODE,
            category=CATEGORY,
            description=(
                "Runs deterministic DDIM inversion of an encoded image with the prompt and no CFG, and "
                "keeps every intermediate latent. The Dragon Sampler follows this trajectory as its "
                "guidance branch and starts from its final noise."),
            inputs=[
                io.Model.Input("model", tooltip="The model used for editing: SD1.x/SD2.x/SDXL, or FLUX.1/FLUX.2/SD3/SD3.5 (experimental)."),
                io.Conditioning.Input("positive", tooltip="A prompt describing the source image (may be empty text)."),
                io.Latent.Input("latent", tooltip="The source image, encoded with VAE Encode (one image)."),
                io.Int.Input("steps", default=50, min=1, max=1000,
                             tooltip="DDIM steps (the official DDIM timesteps: 981, 961, ..., 1 for 50; FLUX/SD3: the model's own flow schedule). Give the Dragon Sampler the same number; the method's default is 50 (FLUX/SD3: 30 or more)."),
                io.Int.Input("kv_bank_mb", default=DEFAULT_BANK_MB, min=0, max=1 << 20, step=256, optional=True,
                             tooltip="Host memory (MB) for the memory bank: the decoder self-attention keys/values "
                                     "of every inversion step, which the Dragon Cross-Branch Attention Patch injects "
                                     "(official). Steps that do not fit are recomputed during the edit, one extra "
                                     "UNet pass each, with the same result. SD1.5 needs about 1.4 GB at 512x512 "
                                     "(fp16; double in fp32), SDXL about 11 GB at 1024x1024. 0 records none. "
                                     "The bank stays in memory after the run, with this node's output in "
                                     "ComfyUI's cache (up to this many MB), so a re-run with new points skips "
                                     "the inversion; ComfyUI's 'Free model and node cache' releases it."),
            ],
            outputs=[
                DragonInversionType.Output(display_name="inversion", tooltip="The inverted trajectory (memory bank latents)."),
                io.Latent.Output(display_name="noise", tooltip="The inverted noise x_T as a latent."),
            ],
        )

    @classmethod
    def execute(cls, model, positive, latent, steps, kv_bank_mb=DEFAULT_BANK_MB) -> io.NodeOutput:
        layout = layout_of(model, NODE)
        if not isinstance(steps, int) or steps < 1:
            raise DragonInputError(NODE, "steps", f"must be a whole number >= 1, got {steps!r}.", "Use 50 (official).")
        if not isinstance(kv_bank_mb, int) or isinstance(kv_bank_mb, bool) or kv_bank_mb < 0:
            raise DragonInputError(NODE, "kv_bank_mb", f"must be a whole number of MB >= 0, got {kv_bank_mb!r}.",
                                   f"Use {DEFAULT_BANK_MB} (or 0 to record no memory bank).")
        check_conditioning(NODE, "positive", positive)
        samples = check_latent(NODE, "latent", latent, layout)
        if layout.space == "flow" and steps < FLOW_MIN_STEPS:
            log.warning("Dragon DDIM Invert: %d steps on a flow model: its Euler inversion is coarse below %d steps "
                        "(the toy DiT reconstructed at 11 dB with 10 steps, 19 with 30, 22 with 50); edits will drift "
                        "from the photo. Use %d or more steps, also for step-distilled models.", steps,
                        FLOW_MIN_STEPS, FLOW_MIN_STEPS)
        inv, noise = run_inversion(model, positive, samples, steps, kv_bank_mb, layout)
        return io.NodeOutput(inv, {"samples": noise})

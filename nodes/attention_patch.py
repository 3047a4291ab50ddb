"""Dragon Cross-Branch Attention Patch: decoder self-attention reads the guidance branch's K/V."""
from __future__ import annotations

from comfy.ldm.modules.attention import optimized_attention
from comfy_api.latest import io

from ..dragon_core.attention import KV_SOURCES, CrossBranchAttention
from ..dragon_core.errors import DragonInputError
from . import dit
from .layout import layout_of
from .types import CATEGORY
from .unet_layout import decoder_attn1_keys

NODE = "Dragon Cross-Branch Attention Patch"


def patch_model(model, mode: str, start: float, end: float, source: str = "inversion"):
    """A clone of `model` with the cross-branch patch on every decoder attn1 key it has; on a DiT, its attention
    override (the image tokens' K/V; injected into the blocks and tokens nodes/dit.py KV_BLOCKS / KV_REGION name)."""
    layout = layout_of(model, NODE)
    if layout.family is not None:
        m = model.clone()
        dit.install_pass(m, layout.family)
        dit.set_attention(m, dit.DitAttention(mode=mode, start=start, end=end, source=source))
        return m, []
    keys = decoder_attn1_keys(layout.unet)
    if not keys:
        raise DragonInputError(NODE, "model", "this UNet has no decoder self-attention layers to patch.",
                               "Use an SD1.x, SD2.x or SDXL checkpoint.")
    patch = CrossBranchAttention(optimized_attention, mode=mode, start=start, end=end, source=source)
    m = model.clone()
    for block, idx, j in keys:
        m.set_model_attn1_replace(patch, block, idx, j)
    return m, keys


class CrossBranchAttentionPatch(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DragonDiffusion_CrossBranchAttention",
            display_name=NODE,
            category=CATEGORY,
            description=(
                "Patches a clone of the model so that, during a Dragon Sampler run, the generation branch's "
                "decoder self-attention uses the keys/values of the guidance branch (the inverted image) at "
                "the same step. This carries the original appearance into the edit. On FLUX models: the "
                "single-stream blocks' image tokens outside the edit region (inside, the edit keeps its own); on "
                "SD3/SD3.5 every joint block's, likewise outside the edit region (drag's concat: the later half). "
                "Outside a Dragon run the patched model behaves exactly like the original."),
            inputs=[
                io.Model.Input("model", tooltip="The model to patch (it is cloned; the input is not changed)."),
                io.Combo.Input("mode", options=["auto", "replace", "concat"], default="auto",
                               tooltip="replace: use the guidance branch's K/V (official for move/resize); concat: attend to "
                                       "both branches (official for drag); auto: what the guidance mode asks for."),
                io.Float.Input("start", default=0.1, min=0.0, max=1.0, step=0.01,
                               tooltip="First step, as a fraction of the steps, at which K/V are injected (official: step 5 of 50 = 0.1)."),
                io.Float.Input("end", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="Injection stops at this fraction of the steps (1.0 = to the end)."),
                io.Combo.Input("source", options=list(KV_SOURCES), default="inversion", optional=True,
                               tooltip="inversion (official): the K/V the UNet computed during DDIM inversion for "
                                       "this step's timestep (on the latent one step less noisy), read from DDIM "
                                       "Invert's memory bank; steps the bank does not hold (see its kv_bank_mb) "
                                       "are recomputed, with the same result. guidance: the K/V of the guidance "
                                       "branch's latent of this very step, computed in the pass that also gives "
                                       "the energy's features (no bank needed)."),
            ],
            outputs=[io.Model.Output(tooltip="The patched clone of the model.")],
        )

    @classmethod
    def execute(cls, model, mode, start, end, source="inversion") -> io.NodeOutput:
        if mode not in ("auto", "replace", "concat"):  # ComfyUI does not check V3 combo values
            raise DragonInputError(NODE, "mode", f"unknown mode {mode!r}.", "Choose auto, replace or concat.")
        if not 0.0 <= start < end <= 1.0:
            raise DragonInputError(NODE, "start/end", f"need 0 <= start < end <= 1, got start={start}, end={end}.",
                                   "Make end larger than start (official: 0.1 and 1).")
        if source not in KV_SOURCES:
            raise DragonInputError(NODE, "source", f"unknown source {source!r}.", "Choose inversion or guidance.")
        m, _ = patch_model(model, mode, start, end, source)
        return io.NodeOutput(m)

"""Real DiT architectures with random weights, as ComfyUI detects them from a checkpoint (nothing downloaded).

A checkpoint's key names and tensor shapes are all ComfyUI's model detection reads, so a key set of "meta"
tensors (shapes without memory) with the published models' shapes gives exactly the config ComfyUI builds for
the real file: FLUX.1 [dev] and [schnell] (BFL layout: 3072 wide, 24 heads, 19 double + 38 single blocks, a 16-channel
latent in 2x2 patches, T5 4096 + CLIP 768) and FLUX.2 [dev] (6144 wide, 48 heads, 8 double + 48 single blocks,
shared modulation, a 128-channel latent, Mistral 15360) and [klein] 4B (3072 wide, 5 + 20 blocks); SD3 Medium
(MMDiT, 1536 wide, 24 joint blocks, 24 heads of 64, a 16-channel latent in 2x2 patches, T5 4096 + pooled CLIP 2048),
SD3.5 Medium (the same with RMS q/k norms, an image-only second attention in blocks 0-12, positions for 384x384
tokens) and SD3.5 Large (2432 wide, 38 blocks, 38 heads). The model is then built at a reduced depth (the widths,
heads, RoPE axes or position tables, patching and latent format stay the real ones) with random weights scaled so activations stay
of order one, for the pack's end-to-end tests and its DiT benchmark on the CPU (issue #28 item 5).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class RealDit:
    name: str
    hidden: int
    depth: int  # double-stream blocks of the released model
    depth_single: int
    latent_channels: int  # the checkpoint's img_in input width is this times patch^2
    patch: int
    context: int  # text-encoder width (txt_in input)
    vec: int | None  # pooled-text width (vector_in), None where the model has none
    guidance: bool  # guidance-distilled: a guidance embedding
    flux2: bool = False
    cfg: float = 1.0  # what the family's ComfyUI workflows sample with (guidance-distilled: 1, no negative pass)
    scheduler: str = "simple"

    def keys(self) -> dict:
        """The checkpoint keys ComfyUI's detection looks at, as meta tensors of the real shapes."""
        def t(*shape):
            return torch.empty(shape, device="meta")

        sd = {"img_in.weight": t(self.hidden, self.latent_channels * self.patch * self.patch),
              "txt_in.weight": t(self.hidden, self.context),
              "double_blocks.0.img_attn.norm.key_norm.scale": t(128)}  # (the head width of all of them)
        for i in range(self.depth):
            sd[f"double_blocks.{i}.img_attn.qkv.weight"] = t(3 * self.hidden, self.hidden)
        for i in range(self.depth_single):
            sd[f"single_blocks.{i}.linear1.weight"] = t(1, 1)
        if self.vec:
            sd["vector_in.in_layer.weight"] = t(self.hidden, self.vec)
        if self.guidance:
            sd["guidance_in.in_layer.weight"] = t(self.hidden, 256)
        if self.flux2:
            sd["double_stream_modulation_img.lin.weight"] = t(1, 1)
        return sd


@dataclass(frozen=True)
class RealMMDiT:
    """An SD3-family checkpoint's shapes (ComfyUI's MMDiT: its width is 64 x depth)."""

    name: str
    depth: int  # joint blocks
    pos_side: int  # the position table's side in tokens (pos_embed_max_size)
    qk_norm: bool  # SD3.5: RMS norms on q and k
    image_attention_blocks: int  # SD3.5 Medium: blocks 0..n-1 have a second, image-only attention
    latent_channels: int = 16
    patch: int = 2
    context: int = 4096  # T5-XXL (CLIP-L + CLIP-G padded to it)
    vec: int = 2048  # pooled CLIP-L + CLIP-G
    guidance: bool = False
    flux2: bool = False
    cfg: float = 4.5  # SD3/SD3.5 workflows: CFG 4-5.5 (two passes a step), euler or dpmpp_2m, sgm_uniform
    scheduler: str = "sgm_uniform"
    depth_single: int = 0

    @property
    def hidden(self) -> int:
        return 64 * self.depth

    def keys(self) -> dict:
        def t(*shape):
            return torch.empty(shape, device="meta")

        h = self.hidden
        sd = {"x_embedder.proj.weight": t(h, self.latent_channels, self.patch, self.patch),
              "y_embedder.mlp.0.weight": t(h, self.vec), "context_embedder.weight": t(h, self.context),
              "pos_embed": t(1, self.pos_side ** 2, h),
              "final_layer.linear.weight": t(self.patch ** 2 * self.latent_channels, h)}
        for i in range(self.depth):
            sd[f"joint_blocks.{i}.context_block.attn.qkv.weight"] = t(3 * h, h)
        if self.qk_norm:
            sd["joint_blocks.0.context_block.attn.ln_q.weight"] = t(64)
        for i in range(self.image_attention_blocks):
            sd[f"joint_blocks.{i}.x_block.attn2.qkv.weight"] = t(3 * h, h)
        return sd


FAMILIES = {
    "flux1-dev": RealDit("FLUX.1 [dev]", 3072, 19, 38, 16, 2, 4096, 768, True),
    "flux1-schnell": RealDit("FLUX.1 [schnell]", 3072, 19, 38, 16, 2, 4096, 768, False),
    "flux2-dev": RealDit("FLUX.2 [dev]", 6144, 8, 48, 128, 1, 15360, None, True, flux2=True),
    # step-distilled, Qwen3-4B text (3 layers of 2560); ComfyUI detects its 24 heads from 0.33 on (0.3.75 fixes 48)
    "flux2-klein-4b": RealDit("FLUX.2 [klein] 4B", 3072, 5, 20, 128, 1, 7680, None, False, flux2=True),
    "sd3-medium": RealMMDiT("SD3 Medium", 24, 192, False, 0),
    "sd35-medium": RealMMDiT("SD3.5 Medium", 24, 384, True, 13),
    "sd35-large": RealMMDiT("SD3.5 Large", 38, 192, True, 0),
}


def supported(which: str) -> str | None:
    """Why this ComfyUI cannot build `which` (None when it can): FLUX.2 [klein] needs the head count from the width,
    which ComfyUI's detection does from 0.33 on."""
    real = FAMILIES[which]
    if real.flux2 and real.hidden != 6144:
        import comfy.model_detection

        mc = comfy.model_detection.model_config_from_unet(real.keys(), "")
        if mc is None or mc.unet_config["num_heads"] * 128 != real.hidden:
            return f"this ComfyUI builds {real.name} with the wrong head count (its detection predates the model)"
    return None


def model_config(which: str, depth: int = 1, depth_single: int = 1, dtype=torch.float32):
    """ComfyUI's model config for the released model `which`, detected from its key shapes, at a reduced depth."""
    import comfy.model_detection

    real = FAMILIES[which]
    mc = comfy.model_detection.model_config_from_unet(real.keys(), "")
    if mc is None:
        raise RuntimeError(f"ComfyUI did not recognise {real.name}'s key set")
    if isinstance(real, RealMMDiT):  # (its width follows "depth": the block count is num_blocks)
        n = min(depth, real.depth)
        mc.unet_config["num_blocks"] = n
        mc.unet_config["x_block_self_attn_layers"] = [i for i in mc.unet_config["x_block_self_attn_layers"] if i < n]
    else:
        mc.unet_config["depth"] = min(depth, real.depth)
        mc.unet_config["depth_single_blocks"] = min(depth_single, real.depth_single)
    mc.set_inference_dtype(dtype, None)
    return mc


def init_random(net: torch.nn.Module, seed: int = 0) -> None:
    """Random weights a forward pass stays finite and of order one with: linear layers N(0, 1/fan_in) (biases 0),
    norms 1, MMDiT's position table N(0, 1/2) (the spread of its sin-cos values); ComfyUI leaves its weights
    uninitialised."""
    gens: dict = {}
    with torch.no_grad():
        pos = getattr(net, "pos_embed", None)
        if isinstance(pos, torch.Tensor):
            g = gens.setdefault(pos.device, torch.Generator(device=pos.device).manual_seed(seed))
            pos.normal_(0.0, 0.5 ** 0.5, generator=g)
        for m in net.modules():
            norm = "Norm" in type(m).__name__
            for p in m.parameters(recurse=False):
                if p.ndim >= 2:  # drawn where the weight lives (a GPU draws a 12 B model in seconds)
                    g = gens.setdefault(p.device, torch.Generator(device=p.device).manual_seed(seed))
                    p.normal_(0.0, p[0].numel() ** -0.5, generator=g)  # (a conv's fan-in: in x kernel)
                else:
                    p.fill_(1.0 if norm else 0.0)


def load_model_patcher(which: str, depth: int = 1, depth_single: int = 1, dtype=torch.float32, seed: int = 0,
                       init: bool = True):
    """A ModelPatcher of the released architecture `which` at a reduced depth with random weights (init=False: the
    caller draws them, e.g. after ComfyUI moved the model to the GPU)."""
    import comfy.model_management as mm
    import comfy.model_patcher

    model = model_config(which, depth, depth_single, dtype).get_model({})
    if init:
        init_random(model.diffusion_model, seed)
    return comfy.model_patcher.ModelPatcher(model, load_device=mm.get_torch_device(),
                                            offload_device=mm.unet_offload_device())


def conditioning(which: str, tokens: int = 8, seed: int = 0) -> list:
    """A CONDITIONING of random text-encoder outputs of the family's width (and pooled vector where it has one)."""
    real = FAMILIES[which]
    g = torch.Generator().manual_seed(seed + 1)
    extra = {"pooled_output": torch.randn(1, real.vec, generator=g) if real.vec else None}
    if real.guidance:
        extra["guidance"] = 3.5
    return [[torch.randn(1, tokens, real.context, generator=g), extra]]

"""Flow-matching DiT models (FLUX.1 and FLUX.2: ComfyUI's Flux transformer; SD3 and SD3.5: its MMDiT) through
ComfyUI's public extension points.

Nothing of the model's code is replaced (packs that replaced `forward_orig` broke on core updates):
- guidance features: the image stream after chosen double-stream blocks, kept by a `patches_replace["dit"]` block
  replace (DitBlock) that runs the original block and passes its output on; a pass that only needs features stops
  after the last one (StopUNet, as the UNet path); in the gradient pass the same replaces run every double block up
  to there under activation checkpointing;
- K/V: `transformer_options["optimized_attention_override"]`, which ComfyUI calls with q, k, v after RoPE for the
  joint [text; image] sequence (Flux: [B, heads, N, d]; MMDiT: [B, N, heads * d], and SD3.5's image-only second
  attention in its early blocks): the image-token part is what DDIM Invert's memory bank records, what the reference
  pass keeps and what the generation pass takes from the guidance branch outside the edit region (the text tokens
  stay the branch's own);
- gradients: a DIFFUSION_MODEL wrapper (`add_wrapper_with_key`; MMDiT: APPLY_MODEL) tells the hooks the token layout and, in the
  gradient pass, hands the model OutOfPlace inputs (its blocks add to their streams in place, which autograd
  refuses; dragon_core.outofplace).
MMDiT does not tell its attention which block runs (Flux sets transformer_options block_type/block_index): there a
DitBlock on every joint block names it ("double", i) for the bank's keys, and in the gradient pass runs the block
without MMDiT's own activation checkpointing (its recompute would run after the pass, outside the weight aliasing).
"""
from __future__ import annotations

import math
import types
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.utils.checkpoint

import comfy.model_management
import comfy.model_sampling
import comfy.patcher_extension
import comfy.samplers
from comfy.ldm.flux.model import Flux
from comfy.ldm.modules.diffusionmodules.mmdit import MMDiT, OpenAISignatureMMDITWrapper
from comfy.ldm.modules.attention import attention_pytorch

from ..dragon_core.attention import BranchState, KVBank, StopUNet
from ..dragon_core.errors import DragonInputError
from ..dragon_core.geometry import downsample_any
from ..dragon_core.outofplace import out_of_place, plain

WRAPPER_KEY = "dragondiffusion"
# Which attention blocks the Cross-Branch patch injects the guidance branch's image K/V into (the memory bank records
# every block): "single" (the single-stream blocks, the later part of the network, as the UNet path injects only
# the decoder's self-attention), "double", or "all". Chosen on the toy DiT (README, Flow / DiT models).
KV_BLOCKS = "single"
# Which image tokens take the guidance branch's K/V when a replace injection is active: "all" (every image token, as
# the UNet path's decoder self-attention) or "outside" (only the tokens outside the edit region; inside, the
# generation keeps its own K/V: KV-Edit's scheme). Chosen on the toy DiT (README, Flow / DiT models).
KV_REGION = "outside"
# The gradient pass runs each double block under activation checkpointing (DitBlock): FLUX.1 at 512^2 in fp32 kept
# 0.46 GB per double block without it (bench/dit-memory-flux1-512-no-checkpoint.json), 0.077 GB with it; about 16 GB
# against 3.5 GB in bf16 at 1024^2 over its 19 (extrapolated).
CHECKPOINT_BLOCKS = True
# Drag's feature patches on DiTs, half-width in tokens (DitFamily.drag_patch_radius; the UNets keep the official 1).
DRAG_PATCH_RADIUS = 2
# MMDiT (SD3/SD3.5) has only joint blocks. Its guidance features: the image stream of the two joint blocks ending at
# this fraction of the depth (1.0: the last two); K/V: injected into the joint blocks from MMDIT_KV_FROM of the depth
# on ("late"), into every block ("all", with the image-only attentions of SD3.5 Medium) or none. Measured on the toy
# SD3 (bench/sd3-probe-*.txt; README, Flow / DiT models): features from deeper blocks left the vacated place cleaner
# (guidance alone moving the object: blocks 0-1 18.6 dB, 2-3 19.2, 3-4 26.1, 4-5 26.9; IoU 0.70-0.72 for all);
# replace K/V (outside the edit region) into every block held the background best at the pack's defaults (39.3 dB
# against 31.7 for the later half and 33.1 for none; all alike with the toy settings); concat K/V (drag, every image
# token) into every block froze the drag (IoU 0.08 / 0.09 at energy 80 / 320 against 0.35 / 0.53 from half depth
# on, bench/sd3-probe-drag-kv.txt), so concat goes into the later half only.
MMDIT_FEATURE_DEPTH = 1.0
MMDIT_KV_BLOCKS = "all"
MMDIT_KV_FROM = 0.5
MMDIT_KV_CONCAT = "late"  # concat K/V: "late" (from MMDIT_KV_FROM on) or as MMDIT_KV_BLOCKS

# diffusion model classes of flow/DiT families not supported yet -> the name users know them by (AuraFlow's class is
# also called MMDiT: it is told from SD3's by its module)
NOT_YET = {
    "comfy.ldm.aura.mmdit.MMDiT": "AuraFlow",
    "NextDiT": "Lumina 2 / Z-Image",
    "QwenImageTransformer2DModel": "Qwen-Image", "Chroma": "Chroma", "ChromaRadiance": "Chroma Radiance",
    "HunyuanVideo": "HunyuanVideo", "WanModel": "Wan", "LTXVModel": "LTX-Video",
    "HiDreamImageTransformer2DModel": "HiDream", "CosmosPredict2": "Cosmos", "PixArt": "PixArt", "HunYuanDiT": "Hunyuan-DiT",
}
SUPPORTED = "SD1.x, SD2.x, SDXL, FLUX.1 (dev/schnell), FLUX.2, SD3 and SD3.5"


@dataclass(frozen=True)
class DitFamily:
    """What the nodes need to know about a supported DiT."""

    name: str  # "FLUX.1", "FLUX.2", "SD3" or "SD3.5"
    patch: int  # latent cells per token side
    double_blocks: int  # Flux: double-stream blocks; MMDiT: joint blocks
    single_blocks: int
    channels: int = 16  # latent channels
    arch: str = "flux"  # "flux" (ComfyUI's Flux class) or "mmdit" (its MMDiT, SD3/SD3.5)

    def feature_blocks(self) -> tuple[int, ...]:
        """Blocks whose image stream gives the guidance features. Flux: the last two double-stream blocks (DragFlow's
        choice on FLUX.1-dev, blocks 17 and 18 of 19), so the gradient pass stops before the single-stream blocks.
        MMDiT: the two joint blocks ending at MMDIT_FEATURE_DEPTH of its depth, the last two (measured on the toy SD3);
        its gradient pass runs every joint block."""
        if self.arch == "mmdit":
            end = min(self.double_blocks, max(1, round(MMDIT_FEATURE_DEPTH * self.double_blocks)))
            return tuple(range(max(0, end - 2), end))
        return tuple(range(max(0, self.double_blocks - 2), self.double_blocks))

    def injects(self, key: tuple, mode: str = "replace") -> bool:
        """Whether the Cross-Branch patch injects the guidance branch's K/V into the attention `key` (block type,
        index) in `mode` (replace / concat): Flux by block type (KV_BLOCKS); MMDiT by depth (MMDIT_KV_BLOCKS,
        MMDIT_KV_FROM; concat, which adds the bank's K/V for every image token, always from MMDIT_KV_FROM on)."""
        if self.arch == "mmdit":
            late = key[1] >= math.floor(MMDIT_KV_FROM * self.double_blocks)
            if mode == "concat" and MMDIT_KV_CONCAT == "late":
                return MMDIT_KV_BLOCKS != "none" and late
            return MMDIT_KV_BLOCKS == "all" or (MMDIT_KV_BLOCKS == "late" and late)
        return KV_BLOCKS in ("all", key[0])

    def drag_patch_radius(self) -> int:
        """Drag compares (2r+1)^2-token patches around each handle and target: r = 2, region patches. On the toy DiT
        (settings scenes, bench/dit-probe-features.txt) the official 3x3 point patches barely moved the handle
        (IoU 0.06 -> 0.09 over no energy), 5x5 patches did (0.37), 7x7 no better (0.33): DragFlow's finding that
        point-level supervision fails on DiT features and region-level works."""
        return DRAG_PATCH_RADIUS

    def flow_sigmas(self, model_patcher, steps: int, latent_hw: tuple[int, int] | None = None) -> torch.Tensor:
        """The schedule, 1 down to 0, the family's ComfyUI workflows sample with: FLUX.2 its Flux2Scheduler (a shift
        from the image's token count and the steps), where ComfyUI has it; FLUX.1 the model's own sigmas with its
        shift (the "simple" scheduler, which also follows a ModelSamplingFlux node on the model); SD3/SD3.5 the
        "sgm_uniform" scheduler of their ComfyUI workflows with the model's shift (ModelSamplingSD3)."""
        if self.name == "FLUX.2" and latent_hw is not None:
            try:
                from comfy_extras.nodes_flux import get_schedule
            except ImportError:
                get_schedule = None
            if get_schedule is not None:
                gh, gw = self.token_grid(*latent_hw)
                return torch.as_tensor(get_schedule(steps, gh * gw), dtype=torch.float32).cpu()
        ms = model_patcher.get_model_object("model_sampling")
        scheduler = "sgm_uniform" if self.arch == "mmdit" else "simple"
        return comfy.samplers.calculate_sigmas(ms, scheduler, steps).float().cpu()

    def token_grid(self, h: int, w: int) -> tuple[int, int]:
        """Image tokens per side for a latent of h x w (ComfyUI pads to the patch size)."""
        return math.ceil(h / self.patch), math.ceil(w / self.patch)


def dit_family(model_patcher) -> DitFamily | None:
    """The DiT family of a MODEL, None for anything else (UNets: their own path decides)."""
    net = getattr(getattr(model_patcher, "model", None), "diffusion_model", None)
    if type(net) is Flux:
        return DitFamily("FLUX.2" if net.params.global_modulation else "FLUX.1", int(net.patch_size),
                         len(net.double_blocks), len(net.single_blocks), int(net.params.in_channels))
    if type(net) in (MMDiT, OpenAISignatureMMDITWrapper) and hasattr(net, "joint_blocks"):
        sd35 = not isinstance(net.joint_blocks[0].x_block.attn.ln_q, torch.nn.Identity)  # SD3.5's q/k norm
        return DitFamily("SD3.5" if sd35 else "SD3", int(net.patch_size), len(net.joint_blocks), 0,
                         int(net.in_channels), "mmdit")
    return None


def refuse_unsupported(model_patcher, node: str, input_name: str = "model") -> None:
    """A clear refusal for a DiT/flow family the pack does not cover yet, for a model dit_family() did not take
    (UNets pass: their own check follows)."""
    net = getattr(getattr(model_patcher, "model", None), "diffusion_model", None)
    kind = type(net).__name__
    name = NOT_YET.get(f"{type(net).__module__}.{kind}") or NOT_YET.get(kind)
    if name:
        raise DragonInputError(node, input_name, f"this is a {name} model ({kind}), which DragonDiffusion does "
                               f"not support yet (supported: {SUPPORTED}).",
                               "Load a supported checkpoint; for this family, follow the pack's issues for progress.")


def is_flow(model_patcher) -> bool:
    """Flow matching: ComfyUI's CONST prediction (x = (1 - sigma) x0 + sigma noise)."""
    ms = model_patcher.get_model_object("model_sampling")
    return isinstance(ms, comfy.model_sampling.CONST)


def _transformer_options(args: tuple, kwargs: dict) -> dict | None:
    to = kwargs.get("transformer_options")
    if to is None and len(args) > 7 and isinstance(args[7], dict):  # Flux.forward's positional order
        to = args[7]
    return to


class DitPass:
    """DIFFUSION_MODEL wrapper (MMDiT: APPLY_MODEL, as its forward runs no DIFFUSION_MODEL wrappers): the token layout
    for the hooks ("dragon_tokens": text and image token counts, "dragon_grid": the image token grid,
    "dragon_family"), and OutOfPlace inputs in the gradient pass."""

    def __init__(self, family: DitFamily):
        self.family = family

    def __deepcopy__(self, memo):
        return self

    def _inputs(self, args: tuple, kwargs: dict):
        """(latent, text tokens, transformer_options) of the wrapped call."""
        if self.family.arch == "mmdit":  # BaseModel._apply_model(x, t, c_concat, c_crossattn, control, options)
            def get(i: int, name: str):
                return args[i] if len(args) > i else kwargs.get(name)

            return get(0, "x"), get(3, "c_crossattn"), get(5, "transformer_options")
        return args[0], args[2] if len(args) > 2 else kwargs.get("context"), _transformer_options(args, kwargs)

    def __call__(self, executor, *args, **kwargs):
        x, context, to = self._inputs(args, kwargs)
        if to is not None:
            gh, gw = self.family.token_grid(*x.shape[-2:])
            to["dragon_tokens"] = (int(context.shape[1]) if context is not None else 0, gh * gw)
            to["dragon_grid"] = (gh, gw)
            to["dragon_family"] = self.family
        st = to.get("dragon") if to is not None else None
        if isinstance(st, BranchState) and st.phase == "grad":
            args = tuple(a if isinstance(a, dict) else out_of_place(a) for a in args)
            kwargs = {k: (v if isinstance(v, dict) or k == "transformer_options" else out_of_place(v))
                      for k, v in kwargs.items()}
            with _differentiable_kernels():
                return plain(executor(*args, **kwargs))
        return executor(*args, **kwargs)


@contextmanager
def _differentiable_kernels():
    """ComfyUI 0.33+ runs Flux's RoPE through comfy-kitchen kernels that have no backward, except while its own
    training switch (model_management.in_training, set by its LoRA trainer) is on: on for the gradient pass only.
    Older versions have neither (their RoPE is plain PyTorch)."""
    mm = comfy.model_management
    before = getattr(mm, "in_training", None)
    if before is None:
        yield
        return
    mm.in_training = True
    try:
        yield
    finally:
        mm.in_training = before


class DitBlock:
    """patches_replace["dit"][("double_block", i)] on the double blocks the gradient pass runs through: runs the block
    (or the replace that was there) and, on a feature block, keeps its image stream as a feature map [B, C, gh, gw]
    when the Dragon state asks for block i (a pass that only needs features stops after the last one). In the
    gradient pass each block runs under activation checkpointing (CHECKPOINT_BLOCKS): autograd keeps only the block's
    inputs and recomputes its inside during the backward, so the pass's memory no longer grows by a block's
    activations per double block (bench_dit.py --memory-depths)."""

    def __init__(self, index: int, inner=None, capture: bool = True, block: torch.nn.Module | None = None,
                 mmdit: bool = False):
        self.index, self.inner, self.capture, self.block, self.mmdit = index, inner, capture, block, mmdit

    def __deepcopy__(self, memo):
        return self

    def _run(self, args: dict, extra: dict) -> dict:
        return self.inner(args, extra) if self.inner is not None else extra["original_block"](args)

    def _joint_block(self, args: dict) -> dict:
        """MMDiT's joint block as its `original_block` runs it, without the block's own activation checkpointing
        (which the gradient pass replaces by DitBlock's, inside the weight aliasing)."""
        txt, img = self.block(args["txt"], args["img"], c=args["vec"], use_checkpoint=False,
                              transformer_options=args["transformer_options"])
        return {"txt": txt, "img": img}

    def _recompute(self, args: dict, extra: dict) -> dict:
        """The block as the gradient pass runs it, also when the backward recomputes it (outside that pass): with the
        kernels that have a backward and the block's weights as normal tensors (ComfyUI loads them as inference
        tensors, which autograd cannot save; backend.autograd_weights)."""
        from .backend import autograd_weights  # (backend imports this module)

        with _differentiable_kernels(), autograd_weights(self.block, on=self.block is not None):
            return self._run(args, extra)

    def __call__(self, args: dict, extra: dict) -> dict:
        to = args.get("transformer_options") or {}
        st = to.get("dragon")
        if self.mmdit:  # MMDiT does not name its blocks to the attention (Flux does)
            to["block_type"], to["block_index"] = "double", self.index
            if isinstance(st, BranchState) and st.phase == "grad" and self.block is not None:
                extra = {**extra, "original_block": self._joint_block}
        if (CHECKPOINT_BLOCKS and isinstance(st, BranchState) and st.phase == "grad" and torch.is_grad_enabled()
                and _aliasing_weights()):
            # the backward recomputes the block after the model's loop has moved on: its `original_block` closure
            # reads the loop's current block then, and the shared transformer_options the current block index, so
            # both are frozen as they are now
            frozen = {**extra, "original_block": _frozen(extra["original_block"])}
            args = {**args, "transformer_options": dict(to)}
            out = torch.utils.checkpoint.checkpoint(self._recompute, args, frozen, use_reentrant=False)
        else:
            out = self._run(args, extra)
        if self.capture and isinstance(st, BranchState) and self.index in st.capture and "dragon_grid" in to:
            gh, gw = to["dragon_grid"]
            img = out["img"][:, :gh * gw]  # (reference latents, e.g. Kontext's, follow the image tokens)
            st.features[self.index] = plain(img).transpose(1, 2).reshape(img.shape[0], img.shape[2], gh, gw)
            if st.stop_after == self.index:
                raise StopUNet()
        return out


def _aliasing_weights() -> bool:
    """The gradient pass reads the weights through normal-tensor aliases (the default), which the recompute can
    repeat; bench_speed's weight_copies variant copies them inside the pass only, so it runs without checkpointing."""
    from .backend import ALIAS_WEIGHTS_IN_GRAD

    return ALIAS_WEIGHTS_IN_GRAD


def _frozen(fn):
    """A copy of the function `fn` with the values its closure holds now (a closure reads a loop's variables when it
    is called, not when it was made)."""
    if not isinstance(fn, types.FunctionType) or not fn.__closure__:
        return fn
    cells = []
    for c in fn.__closure__:
        try:
            cells.append(types.CellType(c.cell_contents))
        except ValueError:  # a variable not bound yet
            cells.append(types.CellType())
    out = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__, fn.__defaults__, tuple(cells))
    out.__kwdefaults__ = fn.__kwdefaults__
    return out


def _blocks(model_patcher, family: DitFamily):
    net = model_patcher.model.diffusion_model
    return net.joint_blocks if family.arch == "mmdit" else net.double_blocks


def _install_blocks(model_patcher, family: DitFamily, indices, features: tuple = (), keep: bool = False) -> None:
    """DitBlock on the double/joint blocks `indices` (feature capture on `features`); keep: leave a DitBlock that
    is there already as it is."""
    replaces = model_patcher.model_options.get("transformer_options", {}).get("patches_replace", {}).get("dit", {})
    blocks = _blocks(model_patcher, family)
    for i in indices:
        inner = replaces.get(("double_block", i))
        if keep and isinstance(inner, DitBlock):
            continue
        inner = inner.inner if isinstance(inner, DitBlock) else inner  # a model this pack patched already
        model_patcher.set_model_patch_replace(
            DitBlock(i, inner, capture=i in features, block=blocks[i], mmdit=family.arch == "mmdit"),
            "dit", "double_block", i)


def install_feature_capture(model_patcher, family: DitFamily) -> None:
    """On a clone: DitBlock on every double block up to the last feature block (feature capture on the feature
    blocks, checkpointing in the gradient pass; MMDiT: on every joint block, which also names them) and the
    token-layout wrapper."""
    features = family.feature_blocks()
    last = family.double_blocks if family.arch == "mmdit" else max(features) + 1
    _install_blocks(model_patcher, family, range(last), features)
    install_pass(model_patcher, family)


def install_pass(model_patcher, family: DitFamily) -> None:
    """On a clone: the token-layout wrapper (and on MMDiT the DitBlocks that name its blocks to the attention)."""
    kinds = comfy.patcher_extension.WrappersMP
    if family.arch == "mmdit":
        _install_blocks(model_patcher, family, range(family.double_blocks), keep=True)
    for kind in (kinds.DIFFUSION_MODEL, kinds.APPLY_MODEL):
        model_patcher.remove_wrappers_with_key(kind, WRAPPER_KEY)
    model_patcher.add_wrapper_with_key(kinds.APPLY_MODEL if family.arch == "mmdit" else kinds.DIFFUSION_MODEL,
                                       WRAPPER_KEY, DitPass(family))


def _split(t: torch.Tensor, to: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """[B, H, N, d] joint tokens -> (text, image, rest) along N (MMDiT: image tokens last, after the text and its
    register tokens, or alone in SD3.5's image-only attention)."""
    n_txt, n_img = to["dragon_tokens"]
    if getattr(to.get("dragon_family"), "arch", None) == "mmdit":
        n_txt = t.shape[2] - n_img
    return t[:, :, :n_txt], t[:, :, n_txt:n_txt + n_img], t[:, :, n_txt + n_img:]


class DitAttention:
    """optimized_attention_override for a DiT: the Cross-Branch Attention Patch's K/V injection, DDIM Invert's
    memory bank recording, and differentiable attention in the gradient pass.

    mode/start/end/source as CrossBranchAttention (dragon_core.attention). Keys are (block type, block index). The
    image tokens' K/V of the guidance branch replace the generation's own ("replace") or are added to them
    ("concat"); the text tokens stay. Outside a Dragon run it is the model's own attention.
    """

    def __init__(self, mode: str | None = "auto", start: float = 0.1, end: float = 1.0, source: str = "inversion",
                 bank: KVBank | None = None, inner=None):
        self.mode, self.start, self.end, self.source, self.bank, self.inner = mode, start, end, source, bank, inner
        self._region_tokens = None  # (edit region, token grid, its tokens) of the current run

    def __deepcopy__(self, memo):
        return self

    def with_bank(self, bank: KVBank) -> "DitAttention":
        return DitAttention(self.mode, self.start, self.end, self.source, bank, self.inner)

    def _tokens_in(self, region: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """The edit region (latent grid [1, 1, h, w]) as image tokens [1, 1, N, 1], bool: a token is in where any of
        its cells is. Once per run (the region is the run's plan's), not in every attention call."""
        cached = self._region_tokens
        if cached is None or cached[0] is not region or cached[1] != grid:
            tokens = downsample_any(region.reshape(region.shape[-2:]) > 0, *grid).view(1, 1, -1, 1)
            self._region_tokens = cached = (region, grid, tokens)
        return cached[2]

    def active(self, step: int, steps: int) -> bool:
        return self.mode is not None and self.start <= step / steps < self.end

    def _attend(self, func, q, k, v, args, kwargs):
        if self.inner is not None:
            return self.inner(func, q, k, v, *args, **kwargs)
        return func(q, k, v, *args, **kwargs)

    def __call__(self, func, q, k, v, *args, **kwargs):
        to = kwargs.get("transformer_options") or {}
        st = to.get("dragon")
        if "dragon_tokens" not in to:
            return self._attend(func, q, k, v, args, kwargs)
        if isinstance(st, BranchState) and st.phase == "grad":
            return attention_pytorch(q, k, v, *args, **kwargs)  # has a backward (sage and others may not)
        # Flux passes [B, H, N, d] (skip_reshape), MMDiT [B, N, H * d]: the hooks work on [B, H, N, d] views
        heads = None if kwargs.get("skip_reshape") else kwargs.get("heads", args[0] if args else None)
        key = (to.get("block_type"), to.get("block_index"))
        if heads is not None and q.shape[1] == to["dragon_tokens"][1]:
            key = ("image", key[1])  # SD3.5's image-only second attention of a joint block
        k4, v4 = _heads_first(k, heads), _heads_first(v, heads)
        k5, v5 = self._bank_and_inject(q.shape[0], q.dtype, k4, v4, key, to, st)
        if k5 is not k4:
            k, v = _heads_last(k5, heads), _heads_last(v5, heads)
        return self._attend(func, q, k, v, args, kwargs)

    def _bank_and_inject(self, b: int, dtype, k: torch.Tensor, v: torch.Tensor, key: tuple, to: dict, st):
        """K/V [B, H, N, d] of the attention `key` as the attention should see them: recorded into DDIM Invert's
        bank, kept by the reference pass, or with the guidance branch's image K/V in the generation pass."""
        if self.bank is not None and not isinstance(st, BranchState):  # DDIM Invert: record the image tokens
            _, ki, _ = _split(k, to)
            _, vi, _ = _split(v, to)
            self.bank.record(key, ki, vi)
        if not isinstance(st, BranchState):
            return k, v
        mode = st.kv_mode if self.mode == "auto" else self.mode
        if st.phase == "reference" and self.mode is not None:
            _, ki, _ = _split(k, to)
            _, vi, _ = _split(v, to)
            st.kv[key] = (ki.detach(), vi.detach())
        elif (st.phase == "generate" and key in st.kv and self.active(st.step, st.steps)
              and to["dragon_family"].injects(key, mode)):
            kr, vr = st.kv[key]
            if st.kv_select is not None:
                kr, vr = _select(st.kv_select, kr, vr, to)
            kr, vr = kr.to(dtype).expand(b, -1, -1, -1), vr.to(dtype).expand(b, -1, -1, -1)
            kt, ki, krest = _split(k, to)
            vt, vi, vrest = _split(v, to)
            if mode == "replace":
                if KV_REGION == "outside" and st.kv_select is None and st.edit_region is not None:
                    own = self._tokens_in(st.edit_region, to["dragon_grid"]).to(k.device)
                    kr, vr = torch.where(own, ki, kr), torch.where(own, vi, vr)
                k, v = torch.cat([kt, kr, krest], dim=2), torch.cat([vt, vr, vrest], dim=2)
            else:
                k, v = torch.cat([k, kr], dim=2), torch.cat([v, vr], dim=2)
            st.injected[(key, st.step)] += 1
        return k, v


def _heads_first(t: torch.Tensor, heads: int | None) -> torch.Tensor:
    """[B, N, H * d] (MMDiT's q and k; its v comes as [B, N, H, d]) -> a [B, H, N, d] view (heads None: t is that
    already)."""
    if heads is None:
        return t
    return (t if t.ndim == 4 else t.unflatten(-1, (heads, -1))).transpose(1, 2)


def _heads_last(t: torch.Tensor, heads: int | None) -> torch.Tensor:
    return t if heads is None else t.transpose(1, 2).flatten(2)


def _select(select, k: torch.Tensor, v: torch.Tensor, to: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The masked two-source K/V selection (dragon_core.plan.kv_selector) on [B, H, N, d] image tokens: it works on
    [B, N, C] with the token grid in activations_shape."""
    b, h, n, d = k.shape
    gh, gw = to["dragon_grid"]
    opts = {"activations_shape": (b, h * d, gh, gw)}
    ks, vs = select(k.permute(0, 2, 1, 3).reshape(b, n, h * d), v.permute(0, 2, 1, 3).reshape(b, n, h * d), opts)
    m = ks.shape[1]
    return ks.reshape(ks.shape[0], m, h, d).permute(0, 2, 1, 3), vs.reshape(vs.shape[0], m, h, d).permute(0, 2, 1, 3)


def attention_of(model_patcher) -> DitAttention | None:
    over = model_patcher.model_options.get("transformer_options", {}).get("optimized_attention_override")
    return over if isinstance(over, DitAttention) else None


def set_attention(model_patcher, attention: DitAttention) -> None:
    """On a clone: the DiT attention override (a foreign override already there is kept inside it)."""
    to = model_patcher.model_options.setdefault("transformer_options", {})
    old = to.get("optimized_attention_override")
    if old is not None and not isinstance(old, DitAttention) and attention.inner is None:
        attention.inner = old
    model_patcher.model_options["transformer_options"] = {**to, "optimized_attention_override": attention}

"""What the nodes need to know about a MODEL, for a UNet (SD1.x, SD2.x, SDXL) or a supported DiT (FLUX.1, FLUX.2, SD3/SD3.5)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..dragon_core.errors import DragonInputError
from .common import ddim_sigmas
from .dit import DitFamily, dit_family, is_flow, refuse_unsupported
from .unet_layout import downscale_levels, feature_blocks, latent_channels, unet_of


@dataclass(frozen=True, eq=False)
class Layout:
    kind: str  # "unet" or "dit"
    channels: int  # latent channels the model takes
    min_side: int  # the smallest latent side it takes
    space: str  # "ve" (eps/v models) or "flow" (CONST), dragon_core.schedule.SPACES
    family: DitFamily | None = None
    unet: object = None

    def feature_blocks(self) -> tuple[int, ...]:
        """The blocks whose outputs are the guidance features (UNet: decoder output blocks; DiT: double blocks)."""
        return self.family.feature_blocks() if self.family is not None else tuple(feature_blocks(self.unet))

    def feature_hw(self, h: int, w: int) -> tuple[int, int]:
        """The grid the energies work on for a latent of h x w: the official 2x the latent for UNets (their
        decoder features are interpolated to it), the image-token grid for DiTs."""
        return self.family.token_grid(h, w) if self.family is not None else (2 * h, 2 * w)

    def patch_radius(self) -> int:
        """Drag's feature patch half-width in feature cells: the official 3x3 (1) on UNets; region patches on DiTs."""
        return self.family.drag_patch_radius() if self.family is not None else 1

    def sigmas(self, model_patcher, steps: int, latent_hw: tuple[int, int] | None = None) -> torch.Tensor:
        """The inversion/sampling schedule: the official DDIM timesteps for UNets; for a DiT its family's flow
        schedule, 1 down to 0 (DitFamily.flow_sigmas: what its ComfyUI workflows sample with)."""
        if self.family is not None:
            return self.family.flow_sigmas(model_patcher, steps, latent_hw)
        return ddim_sigmas(model_patcher, steps)


def layout_of(model_patcher, node: str, input_name: str = "model") -> Layout:
    """The layout of a MODEL, or a clear refusal naming the node, the input and the model family."""
    family = dit_family(model_patcher)
    if family is not None:
        if not is_flow(model_patcher):
            raise DragonInputError(node, input_name, f"this {family.name} model does not sample as a flow-matching model "
                                   "(its model sampling was changed to another prediction type).",
                                   "Remove the node that changed its model sampling (e.g. a ModelSampling node set to eps or v).")
        return Layout("dit", family.channels, family.patch, "flow", family)
    refuse_unsupported(model_patcher, node, input_name)
    unet = unet_of(model_patcher, node, input_name)
    return Layout("unet", latent_channels(unet), 2 ** downscale_levels(unet), "ve", unet=unet)

"""ComfyUI nodes of the pack: thin adapters over dragon_core."""
from .attention_patch import CrossBranchAttentionPatch
from .editor import MaskPointEditor
from .guidance import DragonGuidanceSetup
from .invert import DDIMInvert
from .landmarks import DragonLandmarks
from .sampler import DragonSampler

NODES = [DDIMInvert, DragonGuidanceSetup, CrossBranchAttentionPatch, DragonSampler, MaskPointEditor, DragonLandmarks]

"""ComfyUI nodes of the pack: thin adapters over dragon_core."""
from .invert import DDIMInvert

NODES = [DDIMInvert]

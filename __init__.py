"""comfyui-dragondiffusion: drag-style image editing (DragonDiffusion / DiffEditor) for ComfyUI."""
from comfy_api.latest import ComfyExtension, io

from .nodes import NODES

WEB_DIRECTORY = "./web"


class DragonDiffusionExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)


async def comfy_entrypoint() -> DragonDiffusionExtension:
    return DragonDiffusionExtension()


__all__ = ["WEB_DIRECTORY", "comfy_entrypoint"]

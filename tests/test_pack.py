"""The pack as ComfyUI sees it: loads through ComfyUI's loader, nodes registered and documented."""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACK_NODE_IDS = {"DragonDiffusion_DDIMInvert"}


def test_pack_loads_through_comfyui_loader(comfy):
    missing = PACK_NODE_IDS - set(comfy.nodes.NODE_CLASS_MAPPINGS)
    assert not missing, f"nodes not registered: {missing}"
    assert comfy.pack.WEB_DIRECTORY == "./web"


def test_every_input_and_output_has_a_tooltip(comfy):
    for node_id, cls in comfy.nodes.NODE_CLASS_MAPPINGS.items():
        if not node_id.startswith("DragonDiffusion_"):
            continue
        schema = cls.GET_SCHEMA()
        assert schema.description, f"{node_id} has no description"
        for inp in schema.inputs:
            assert getattr(inp, "tooltip", None), f"{node_id}.{inp.id} has no tooltip"
        for out in schema.outputs:
            assert getattr(out, "tooltip", None), f"{node_id} output {out.display_name} has no tooltip"


def test_dragon_core_never_imports_comfyui():
    comfy_modules = {"comfy", "comfy_api", "comfy_extras", "comfy_execution", "nodes", "folder_paths",
                     "latent_preview", "server", "execution", "node_helpers"}
    for f in (REPO / "dragon_core").glob("*.py"):
        tree = ast.parse(f.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            for n in names:
                assert n.split(".")[0] not in comfy_modules, f"{f.name} imports {n}"

#!/usr/bin/env python3
"""Write the example workflows (UI format for the templates browser, API format for /prompt).

One graph description per edit produces both files, so they cannot drift apart. Run from the repo
root: python3 scripts/make_workflows.py  (tests/test_workflows.py checks the files are current).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "workflows"

# (class_type, title, widgets in schema order (name, value), links {input: (node, output index)})
# Output names/types per class, for the UI format.
OUTPUTS = {
    "CheckpointLoaderSimple": [("MODEL", "MODEL"), ("CLIP", "CLIP"), ("VAE", "VAE")],
    "LoadImage": [("IMAGE", "IMAGE"), ("MASK", "MASK")],
    "CLIPTextEncode": [("CONDITIONING", "CONDITIONING")],
    "VAEEncode": [("LATENT", "LATENT")],
    "VAEDecode": [("IMAGE", "IMAGE")],
    "SaveImage": [],
    "DragonDiffusion_DDIMInvert": [("inversion", "DRAGON_INVERSION"), ("noise", "LATENT")],
    "DragonDiffusion_MaskPointEditor": [("mask", "MASK"), ("points", "DRAGON_POINTS"), ("preview", "IMAGE")],
    "DragonDiffusion_GuidanceSetup": [("guidance", "DRAGON_GUIDANCE")],
    "DragonDiffusion_CrossBranchAttention": [("MODEL", "MODEL")],
    "DragonDiffusion_Sampler": [("LATENT", "LATENT")],
}
INPUT_TYPES = {"model": "MODEL", "clip": "CLIP", "vae": "VAE", "pixels": "IMAGE", "samples": "LATENT", "images": "IMAGE",
               "positive": "CONDITIONING", "negative": "CONDITIONING", "latent": "LATENT", "inversion": "DRAGON_INVERSION",
               "guidance": "DRAGON_GUIDANCE", "image": "IMAGE", "mask": "MASK", "object_mask": "MASK",
               "points": "DRAGON_POINTS"}
SETUP_DEFAULTS = [("offset_x", 0), ("offset_y", 0), ("scale", 1.0), ("energy_scale", -1.0), ("w_edit", -1.0),
                  ("w_content", -1.0), ("w_contrast", -1.0), ("w_inpaint", -1.0), ("schedule", "diffeditor"),
                  ("guidance_start", 0.0), ("guidance_end", 0.6), ("sde_strength", -1.0)]


def graph(mode: str, points: list, setup: dict, prompt: str) -> list:
    setup_w = [("mode", mode)] + [(k, setup.get(k, v)) for k, v in SETUP_DEFAULTS]
    guide_links = {"object_mask": (5, 0), "points": (5, 1)}
    return [
        (1, "CheckpointLoaderSimple", [("ckpt_name", "v1-5-pruned-emaonly.safetensors")], {}),
        (2, "LoadImage", [("image", "example.png"), ("upload", "image")], {}),
        (3, "CLIPTextEncode", [("text", prompt)], {"clip": (1, 1)}),
        (4, "CLIPTextEncode", [("text", "")], {"clip": (1, 1)}),
        (5, "DragonDiffusion_MaskPointEditor", [("points", json.dumps(points))], {"image": (2, 0), "mask": (2, 1)}),
        (6, "VAEEncode", [], {"pixels": (2, 0), "vae": (1, 2)}),
        (7, "DragonDiffusion_DDIMInvert", [("steps", 50)], {"model": (1, 0), "positive": (3, 0), "latent": (6, 0)}),
        (8, "DragonDiffusion_GuidanceSetup", setup_w, guide_links),
        (9, "DragonDiffusion_CrossBranchAttention", [("mode", "auto"), ("start", 0.1), ("end", 1.0)], {"model": (1, 0)}),
        (10, "DragonDiffusion_Sampler", [("steps", 50), ("cfg", 4.0), ("seed", 42), ("control_after_generate", "fixed")],
         {"model": (9, 0), "positive": (3, 0), "negative": (4, 0), "inversion": (7, 0), "guidance": (8, 0)}),
        (11, "VAEDecode", [], {"samples": (10, 0), "vae": (1, 2)}),
        (12, "SaveImage", [("filename_prefix", f"dragon_{mode}")], {"images": (11, 0)}),
    ]


EXAMPLES = {
    "dragon_move": ("move", [], {"offset_x": 96, "offset_y": 0}, "a photo"),
    "dragon_resize": ("resize", [], {"scale": 1.3}, "a photo"),
    "dragon_drag": ("drag", [{"x": 200, "y": 260}, {"x": 260, "y": 240}], {}, "a photo"),
}


def api_format(nodes: list) -> dict:
    out = {}
    for nid, ctype, widgets, links in nodes:
        inputs = {k: v for k, v in widgets if k not in ("upload", "control_after_generate")}
        inputs.update({k: [str(src), idx] for k, (src, idx) in links.items()})
        out[str(nid)] = {"class_type": ctype, "inputs": inputs, "_meta": {"title": ctype}}
    return out


def ui_format(nodes: list) -> dict:
    links, ui_nodes, link_id = [], [], 0
    out_links: dict[tuple[int, int], list[int]] = {}
    in_links: dict[tuple[int, str], int] = {}
    for nid, _, _, lk in nodes:
        for name, (src, idx) in lk.items():
            link_id += 1
            links.append([link_id, src, idx, nid, name, INPUT_TYPES[name]])
            out_links.setdefault((src, idx), []).append(link_id)
            in_links[(nid, name)] = link_id
    for order, (nid, ctype, widgets, lk) in enumerate(nodes):
        inputs = [{"name": name, "type": INPUT_TYPES[name], "link": in_links[(nid, name)]} for name in lk]
        outputs = [{"name": n, "type": t, "links": out_links.get((nid, i), []), "slot_index": i}
                   for i, (n, t) in enumerate(OUTPUTS[ctype])]
        col, row = divmod(order, 4)
        ui_nodes.append({"id": nid, "type": ctype, "pos": [40 + 380 * col, 40 + 300 * row], "size": [340, 260],
                         "flags": {}, "order": order, "mode": 0, "inputs": inputs, "outputs": outputs,
                         "properties": {"Node name for S&R": ctype}, "widgets_values": [v for _, v in widgets]})
    # UI links name the target slot by index
    for ln in links:
        target = next(n for n in ui_nodes if n["id"] == ln[3])
        ln[4] = [i["name"] for i in target["inputs"]].index(ln[4])
    return {"last_node_id": max(n[0] for n in nodes), "last_link_id": link_id, "nodes": ui_nodes, "links": links,
            "groups": [], "config": {}, "extra": {}, "version": 0.4}


def render() -> dict[str, str]:
    files = {}
    for name, (mode, points, setup, prompt) in EXAMPLES.items():
        nodes = graph(mode, points, setup, prompt)
        files[f"{name}.json"] = json.dumps(ui_format(nodes), indent=1) + "\n"
        files[f"{name}.api.json"] = json.dumps(api_format(nodes), indent=1) + "\n"
    return files


if __name__ == "__main__":
    OUT.mkdir(exist_ok=True)
    for fname, text in render().items():
        (OUT / fname).write_text(text)
        print("wrote", OUT / fname, file=sys.stderr)

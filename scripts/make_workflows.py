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
    "DragonDiffusion_Landmarks": [("points", "DRAGON_POINTS"), ("preview", "IMAGE")],
    "DragonDiffusion_GuidanceSetup": [("guidance", "DRAGON_GUIDANCE")],
    "DragonDiffusion_CrossBranchAttention": [("MODEL", "MODEL")],
    "DragonDiffusion_Sampler": [("LATENT", "LATENT")],
    "DragonToy_ModelLoader": [("model", "MODEL"), ("vae", "VAE"), ("conditioning", "CONDITIONING")],
    "DragonToy_Scene": [("image", "IMAGE"), ("expected", "IMAGE"), ("object_mask", "MASK"), ("reference", "IMAGE"),
                        ("reference_mask", "MASK"), ("points", "STRING"), ("offset_x", "INT"), ("offset_y", "INT"),
                        ("scale", "FLOAT")],
}
INPUT_TYPES = {"model": "MODEL", "clip": "CLIP", "vae": "VAE", "pixels": "IMAGE", "samples": "LATENT", "images": "IMAGE",
               "positive": "CONDITIONING", "negative": "CONDITIONING", "latent": "LATENT", "inversion": "DRAGON_INVERSION",
               "guidance": "DRAGON_GUIDANCE", "image": "IMAGE", "mask": "MASK", "object_mask": "MASK",
               "points": "DRAGON_POINTS", "reference_mask": "MASK", "reference_inversion": "DRAGON_INVERSION"}
SETUP_DEFAULTS = [("offset_x", 0), ("offset_y", 0), ("scale", 1.0), ("energy_scale", -1.0), ("w_edit", -1.0),
                  ("w_content", -1.0), ("w_contrast", -1.0), ("w_inpaint", -1.0), ("schedule", "diffeditor"),
                  ("guidance_start", 0.0), ("guidance_end", 0.6), ("sde_strength", -1.0), ("keep_background", -1),
                  ("vacated_noise", -1.0), ("anchor_end", 0.0), ("vacated_trend", -1),
                  ("monotone_energy", False), ("ring_inpaint", False), ("centred_features", False)]


CKPT = {"sd15": "v1-5-pruned-emaonly.safetensors", "sdxl": "sd_xl_base_1.0.safetensors"}
CROSS_IMAGE = ("paste", "appearance")
CROSS_KV_WINDOW = (0.0, 0.72)  # Cross-Branch Attention's start/end for paste/appearance (official: i <= 35 of 50)


def graph(mode: str, points: list, setup: dict, prompt: str, family: str = "sd15", landmarks=None,
          ref_prompt: str = "a photo") -> list:
    """The example graph of one mode. paste/appearance add the reference image (with its object painted in
    Load Image's mask editor), its own prompt and DDIM Invert; landmark takes its pairs from Dragon Landmarks."""
    setup_w = [("mode", mode)] + [(k, setup.get(k, v)) for k, v in SETUP_DEFAULTS]
    guide_links = {"points": (5, 1)} if mode == "paste" else {"object_mask": (5, 0), "points": (5, 1)}
    steps = 50
    start, end = CROSS_KV_WINDOW if mode in CROSS_IMAGE else (0.1, 1.0)
    window = [("mode", "auto"), ("start", start), ("end", end), ("source", "inversion")]
    if mode == "landmark":
        src, dst = landmarks
        editor = (5, "DragonDiffusion_Landmarks", [("source_points", json.dumps(src)), ("target_points", json.dumps(dst)),
                                                   ("part", "face")], {"image": (2, 0)})
        guide_links = {"points": (5, 0)}
    else:
        editor = (5, "DragonDiffusion_MaskPointEditor", [("points", json.dumps(points))], {"image": (2, 0), "mask": (2, 1)})
    nodes = [
        (1, "CheckpointLoaderSimple", [("ckpt_name", CKPT[family])], {}),
        (2, "LoadImage", [("image", "example.png"), ("upload", "image")], {}),
        (3, "CLIPTextEncode", [("text", prompt)], {"clip": (1, 1)}),
        (4, "CLIPTextEncode", [("text", "")], {"clip": (1, 1)}),
        editor,
        (6, "VAEEncode", [], {"pixels": (2, 0), "vae": (1, 2)}),
        (7, "DragonDiffusion_DDIMInvert", [("steps", steps)], {"model": (1, 0), "positive": (3, 0), "latent": (6, 0)}),
        (8, "DragonDiffusion_GuidanceSetup", setup_w, guide_links),
        (9, "DragonDiffusion_CrossBranchAttention", window, {"model": (1, 0)}),
        (10, "DragonDiffusion_Sampler", [("steps", steps), ("cfg", 5.0 if mode == "appearance" else 4.0), ("seed", 42),
                                         ("control_after_generate", "fixed")],
         {"model": (9, 0), "positive": (3, 0), "negative": (4, 0), "inversion": (7, 0), "guidance": (8, 0)}),
        (11, "VAEDecode", [], {"samples": (10, 0), "vae": (1, 2)}),
        (12, "SaveImage", [("filename_prefix", f"dragon_{mode}")], {"images": (11, 0)}),
    ]
    if mode in CROSS_IMAGE:
        nodes += [
            (13, "LoadImage", [("image", "reference.png"), ("upload", "image")], {}),
            (14, "VAEEncode", [], {"pixels": (13, 0), "vae": (1, 2)}),
            (15, "CLIPTextEncode", [("text", ref_prompt)], {"clip": (1, 1)}),
            (16, "DragonDiffusion_DDIMInvert", [("steps", steps)], {"model": (1, 0), "positive": (15, 0), "latent": (14, 0)}),
        ]
        guide_links.update(reference_mask=(13, 1), reference_inversion=(16, 0))
    return nodes


FACE_SRC = [[180, 300], [200, 360], [240, 410], [300, 430], [360, 410], [400, 360], [420, 300]]
FACE_DST = [[170, 300], [185, 370], [230, 425], [300, 445], [370, 425], [415, 370], [430, 300]]
EXAMPLES = {
    "dragon_move": ("move", [], {"offset_x": 96, "offset_y": 0}, "a photo"),
    "dragon_resize": ("resize", [], {"scale": 1.3}, "a photo"),
    "dragon_drag": ("drag", [{"x": 200, "y": 260}, {"x": 260, "y": 240}], {}, "a photo"),
    "dragon_remove": ("remove", [], {}, "a photo"),
    "dragon_paste": ("paste", [], {"offset_x": 120, "offset_y": 40, "scale": 0.8}, "a photo"),
    "dragon_appearance": ("appearance", [], {}, "a photo"),
    "dragon_landmark": ("landmark", [], {}, "a photo of a human face"),
}
# SDXL: the same graphs with an SDXL checkpoint (the nodes find SDXL's layers and conditioning themselves)
SDXL_EXAMPLES = ("dragon_move", "dragon_drag", "dragon_remove", "dragon_paste", "dragon_appearance", "dragon_landmark")


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


# The demo on the project's toy model (toy/, loaded as extra custom nodes by scripts/demo): drag the object of
# move scene 3 (a settings scene, not a test scene) by one handle->target pair. Guidance Setup in move mode moves
# the painted object whole; drag mode moves the content at each point and, on the toy, breaks the object up
# (README, Quality benchmark). TOY_DRAG_POINTS are that scene's points (tests/test_scenes.py checks them).
# Guidance Setup runs at the toy model's move settings (toy/dragon_toy/settings.py, chosen on the settings scenes;
# the mode's defaults are the official ones for SD1.5).
TOY_SCENE = 3
TOY_DRAG_POINTS = [{"x": 24.2, "y": 20.9}, {"x": 24.2, "y": 11.9}]


def toy_graph() -> list:
    sys.path.append(str(Path(__file__).resolve().parents[1] / "toy"))
    from dragon_toy.settings import GUIDANCE

    setup_w = [("mode", "move")] + [(k, GUIDANCE["move"].get(k, v)) for k, v in SETUP_DEFAULTS]
    return [
        (1, "DragonToy_ModelLoader", [], {}),
        (2, "DragonToy_Scene", [("mode", "move"), ("seed", TOY_SCENE)], {}),
        (3, "DragonDiffusion_MaskPointEditor", [("points", json.dumps(TOY_DRAG_POINTS))], {"image": (2, 0), "mask": (2, 2)}),
        (4, "VAEEncode", [], {"pixels": (2, 0), "vae": (1, 1)}),
        (5, "DragonDiffusion_DDIMInvert", [("steps", 50)], {"model": (1, 0), "positive": (1, 2), "latent": (4, 0)}),
        (6, "DragonDiffusion_GuidanceSetup", setup_w, {"object_mask": (3, 0), "points": (3, 1)}),
        (7, "DragonDiffusion_CrossBranchAttention", [("mode", "auto"), ("start", 0.1), ("end", 1.0), ("source", "inversion")], {"model": (1, 0)}),
        (8, "DragonDiffusion_Sampler", [("steps", 50), ("cfg", 1.0), ("seed", 42), ("control_after_generate", "fixed")],
         {"model": (7, 0), "positive": (1, 2), "negative": (1, 2), "inversion": (5, 0), "guidance": (6, 0)}),
        (9, "VAEDecode", [], {"samples": (8, 0), "vae": (1, 1)}),
        (10, "SaveImage", [("filename_prefix", "dragon_demo/after")], {"images": (9, 0)}),
        (11, "SaveImage", [("filename_prefix", "dragon_demo/before")], {"images": (3, 2)}),
        (12, "SaveImage", [("filename_prefix", "dragon_demo/expected")], {"images": (2, 1)}),
    ]


def render() -> dict[str, str]:
    files = {}
    variants = [(name, "sd15") for name in EXAMPLES] + [(name, "sdxl") for name in SDXL_EXAMPLES]
    for name, family in variants:
        mode, points, setup, prompt = EXAMPLES[name]
        nodes = graph(mode, points, setup, prompt, family, landmarks=(FACE_SRC, FACE_DST))
        fname = name if family == "sd15" else f"{name}_sdxl"
        files[f"{fname}.json"] = json.dumps(ui_format(nodes), indent=1) + "\n"
        files[f"{fname}.api.json"] = json.dumps(api_format(nodes), indent=1) + "\n"
    files["toy_drag.json"] = json.dumps(ui_format(toy_graph()), indent=1) + "\n"
    files["toy_drag.api.json"] = json.dumps(api_format(toy_graph()), indent=1) + "\n"
    return files


if __name__ == "__main__":
    OUT.mkdir(exist_ok=True)
    for fname, text in render().items():
        (OUT / fname).write_text(text)
        print("wrote", OUT / fname, file=sys.stderr)

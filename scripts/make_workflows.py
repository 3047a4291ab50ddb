#!/usr/bin/env python3
"""Write the example workflows (UI format for the templates browser, API format for /prompt).

One graph description per edit produces both files, so they cannot drift apart:
- workflows/<title>.json: UI format, with a <title>.jpg thumbnail. ComfyUI's templates browser lists exactly the
  .json files directly in workflows/ and shows the file name as the title and the .jpg as the picture.
- workflows/api/<name>.api.json: API format for POST /prompt (a subfolder: the browser would list them too, and
  they do not open there).
- toy/dragon_toy/workflows/: the toy model's demo graph, a template only where the demo loads the toy nodes
  (its API file in api/).
Run from the repo root: python3 scripts/make_workflows.py (tests/test_workflows.py checks the files are current).
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "workflows"

# (class_type, title, widgets in schema order (name, value), links {input: (node, output index)})
# Output names/types per class, for the UI format.
OUTPUTS = {
    "CheckpointLoaderSimple": [("MODEL", "MODEL"), ("CLIP", "CLIP"), ("VAE", "VAE")],
    "UNETLoader": [("MODEL", "MODEL")],
    "DualCLIPLoader": [("CLIP", "CLIP")],
    "CLIPLoader": [("CLIP", "CLIP")],
    "VAELoader": [("VAE", "VAE")],
    "FluxGuidance": [("CONDITIONING", "CONDITIONING")],
    "LoadImage": [("IMAGE", "IMAGE"), ("MASK", "MASK")],
    "CLIPTextEncode": [("CONDITIONING", "CONDITIONING")],
    "VAEEncode": [("LATENT", "LATENT")],
    "VAEDecode": [("IMAGE", "IMAGE")],
    "SaveImage": [],
    "ImageScaleBy": [("IMAGE", "IMAGE")],
    "DragonDiffusion_DDIMInvert": [("inversion", "DRAGON_INVERSION"), ("noise", "LATENT")],
    "DragonDiffusion_MaskPointEditor": [("mask", "MASK"), ("points", "DRAGON_POINTS"), ("preview", "IMAGE")],
    "DragonDiffusion_Landmarks": [("points", "DRAGON_POINTS"), ("preview", "IMAGE")],
    "DragonDiffusion_GuidanceSetup": [("guidance", "DRAGON_GUIDANCE")],
    "DragonDiffusion_CrossBranchAttention": [("MODEL", "MODEL")],
    "DragonDiffusion_Sampler": [("LATENT", "LATENT")],
    "DragonToy_ModelLoader": [("model", "MODEL"), ("vae", "VAE"), ("conditioning", "CONDITIONING")],
    "DragonToy_DiTLoader": [("model", "MODEL"), ("vae", "VAE"), ("conditioning", "CONDITIONING")],
    "DragonToy_Scene": [("image", "IMAGE"), ("expected", "IMAGE"), ("object_mask", "MASK"), ("reference", "IMAGE"),
                        ("reference_mask", "MASK"), ("points", "STRING"), ("offset_x", "INT"), ("offset_y", "INT"),
                        ("scale", "FLOAT")],
}
INPUT_TYPES = {"model": "MODEL", "clip": "CLIP", "vae": "VAE", "pixels": "IMAGE", "samples": "LATENT", "images": "IMAGE",
               "positive": "CONDITIONING", "negative": "CONDITIONING", "latent": "LATENT", "inversion": "DRAGON_INVERSION",
               "guidance": "DRAGON_GUIDANCE", "image": "IMAGE", "mask": "MASK", "object_mask": "MASK",
               "points": "DRAGON_POINTS", "reference_mask": "MASK", "reference_inversion": "DRAGON_INVERSION",
               "conditioning": "CONDITIONING"}
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
        (7, "DragonDiffusion_DDIMInvert", [("steps", steps), ("kv_bank_mb", 4096)], {"model": (1, 0), "positive": (3, 0), "latent": (6, 0)}),
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
            (16, "DragonDiffusion_DDIMInvert", [("steps", steps), ("kv_bank_mb", 4096)], {"model": (1, 0), "positive": (15, 0), "latent": (14, 0)}),
        ]
        guide_links.update(reference_mask=(13, 1), reference_inversion=(16, 0))
    return nodes


FACE_SRC = [[180, 300], [200, 360], [240, 410], [300, 430], [360, 410], [400, 360], [420, 300]]
FACE_DST = [[170, 300], [185, 370], [230, 425], [300, 445], [370, 425], [415, 370], [430, 300]]
EXAMPLES = {  # move and paste take their offset from the editor's point pair: the editor opens in Points mode
    "dragon_move": ("move", [{"x": 200, "y": 260}, {"x": 296, "y": 260}], {}, "a photo"),
    "dragon_resize": ("resize", [], {"scale": 1.3}, "a photo"),
    "dragon_drag": ("drag", [{"x": 200, "y": 260}, {"x": 260, "y": 240}], {}, "a photo"),
    "dragon_remove": ("remove", [], {}, "a photo"),
    "dragon_paste": ("paste", [{"x": 200, "y": 200}, {"x": 320, "y": 240}], {"scale": 0.8}, "a photo"),
    "dragon_appearance": ("appearance", [], {}, "a photo"),
    "dragon_landmark": ("landmark", [], {}, "a photo of a human face"),
}
# SDXL: the same graphs with an SDXL checkpoint (the nodes find SDXL's layers and conditioning themselves). Only as
# API files: one template per edit serves both families (see title())
SDXL_EXAMPLES = ("dragon_move", "dragon_drag", "dragon_remove", "dragon_paste", "dragon_appearance", "dragon_landmark")
# the templates browser's titles (the UI files' names): short enough for its cards (about 30 characters show)
TITLES = {"dragon_move": "move an object", "dragon_resize": "resize an object", "dragon_drag": "drag points",
          "dragon_remove": "remove an object", "dragon_paste": "paste from a photo",
          "dragon_appearance": "restyle from a photo", "dragon_landmark": "face landmarks"}
# one line per template: README's template table (the templates browser shows a pack's file names as title and
# description alike)
DESCRIPTIONS = {
    "dragon_move": "Paint an object, click where it should go: it moves there and its old place is filled in.",
    "dragon_resize": "Paint an object and set scale on Guidance Setup: it grows or shrinks about its centre.",
    "dragon_drag": "Click handle/target pairs: the content under each handle is dragged to its target.",
    "dragon_remove": "Paint an object: it is removed and the place filled from its surroundings.",
    "dragon_paste": "Paint an object in a second photo (reference.png): it is pasted into yours where you click.",
    "dragon_appearance": "Paint an object in each photo: yours takes the look of the reference photo's object.",
    "dragon_landmark": "Click face landmarks and where they should go (or feed a pose detector): the face follows.",
}
# the toy benchmark strip whose first scene illustrates each mode (source -> the pack's result)
THUMB_STRIP = {"move": "move", "resize": "resize", "drag": "drag", "remove": "remove", "paste": "paste",
               "appearance": "appearance", "landmark": "drag"}


# Flow-matching DiTs (issue #28): the same graphs with the model, text encoders and VAE loaded as ComfyUI's own FLUX
# templates load them, FluxGuidance on the prompt (guidance-distilled: cfg 1, no negative pass), 30 steps (Dragon DDIM
# Invert warns below 30 on flow models), and Guidance Setup at the toy DiT's settings (toy/dragon_toy/settings.py
# DIT_GUIDANCE, chosen on its settings scenes) as starting points: there is no official code for DiTs to be faithful to.
DIT_FAMILIES = {
    "flux1": dict(label="FLUX.1", unet="flux1-dev.safetensors",
                  clip=("DualCLIPLoader", [("clip_name1", "clip_l.safetensors"), ("clip_name2", "t5xxl_fp16.safetensors"),
                                           ("type", "flux")]), vae="ae.safetensors", guidance=3.5),
    "flux2": dict(label="FLUX.2", unet="flux2_dev_fp8mixed.safetensors",
                  clip=("CLIPLoader", [("clip_name", "mistral_3_small_flux2_bf16.safetensors"), ("type", "flux2")]),
                  vae="flux2-vae.safetensors", guidance=4.0),
    # SD3.5 as ComfyUI's own SD3.5 example loads it: one checkpoint with its three text encoders and VAE; not
    # guidance-distilled, so the negative prompt and CFG stay (4.5, the SD3.5 Large model card's); the toy SD3's
    # settings (SD3_GUIDANCE)
    "sd35": dict(label="SD3.5", ckpt="sd3.5_large_fp8_scaled.safetensors", cfg=4.5),
}
DIT_TITLES = {"dragon_move": "move", "dragon_drag": "drag points", "dragon_paste": "paste"}  # the FLUX templates
DIT_EXAMPLES = tuple(DIT_TITLES)
DIT_STEPS = 30
FILE_INPUTS = ("ckpt_name", "unet_name", "clip_name", "clip_name1", "clip_name2", "vae_name", "image")


def dit_graph(name: str, family: str) -> list:
    """The SD graph of `name` rebuilt for a DiT family: FLUX's loaders, FluxGuidance, steps, cfg 1, the toy DiT's
    settings; SD3.5's checkpoint, steps, its cfg, the toy SD3's settings."""
    sys.path.append(str(ROOT / "toy"))
    from dragon_toy.settings import DIT_GUIDANCE, SD3_GUIDANCE

    fam = DIT_FAMILIES[family]
    mode, points, _, prompt = EXAMPLES[name]
    if "ckpt" in fam:
        nodes = graph(mode, points, SD3_GUIDANCE.get(mode, {}), prompt, "sd15")
        out = []
        for nid, ctype, widgets, links in nodes:
            if ctype == "CheckpointLoaderSimple":
                widgets = [("ckpt_name", fam["ckpt"])]
            if ctype in ("DragonDiffusion_DDIMInvert", "DragonDiffusion_Sampler"):
                widgets = [(k, DIT_STEPS if k == "steps" else (fam["cfg"] if k == "cfg" else v)) for k, v in widgets]
            out.append((nid, ctype, widgets, links))
        return out
    nodes = graph(mode, points, DIT_GUIDANCE.get(mode, {}), prompt, "sd15")
    clip, vae, guided = (17, 0), (19, 0), (18, 0)
    remap = {(1, 1): clip, (1, 2): vae, (3, 0): guided, (4, 0): guided}
    out = [(1, "UNETLoader", [("unet_name", fam["unet"]), ("weight_dtype", "default")], {}),
           (17, fam["clip"][0], fam["clip"][1], {}),
           (18, "FluxGuidance", [("guidance", fam["guidance"])], {"conditioning": (3, 0)}),
           (19, "VAELoader", [("vae_name", fam["vae"])], {})]
    for nid, ctype, widgets, links in nodes:
        if nid in (1, 4):  # the checkpoint (now three loaders) and the negative prompt (cfg 1 does not run it)
            continue
        if ctype in ("DragonDiffusion_DDIMInvert", "DragonDiffusion_Sampler"):
            widgets = [(k, DIT_STEPS if k == "steps" else (1.0 if k == "cfg" else v)) for k, v in widgets]
        out.append((nid, ctype, widgets, {k: remap.get(v, v) for k, v in links.items()}))
        if nid == 15:  # paste's reference prompt: guided as the main one
            out.append((20, "FluxGuidance", [("guidance", fam["guidance"])], {"conditioning": (15, 0)}))
            remap[(15, 0)] = (20, 0)
    return out


def dit_title(name: str, family: str) -> str:
    return f"Dragon - {DIT_FAMILIES[family]['label']} {DIT_TITLES[name]}"


def title(name: str) -> str:
    """The template's file name, which the browser shows as its title and its description.

    One template per edit, for SD1.5 and SDXL alike: the graphs differ only in the checkpoint's name, which every user
    picks anyway, and the browser cannot be made to list one family before the other (frontends 1.32 and 1.58 keep
    a pack's templates in the server's order by default, and ComfyUI lists the folder in directory order, on ext4 a
    hash of the names)."""
    return f"Dragon - {TITLES[name]}"


def api_format(nodes: list) -> dict:
    out = {}
    for nid, ctype, widgets, links in nodes:
        inputs = {k: v for k, v in widgets if k not in ("upload", "control_after_generate")}
        inputs.update({k: [str(src), idx] for k, (src, idx) in links.items()})
        out[str(nid)] = {"class_type": ctype, "inputs": inputs, "_meta": {"title": ctype}}
    return out


# Node sizes for the layout, generous so that nothing overlaps whatever the frontend computes: input slots that
# are not widgets (linked or optional), a title bar, a row per slot and per widget; the editor holds its canvas.
SLOT_INPUTS = {"DragonDiffusion_GuidanceSetup": 6, "DragonDiffusion_MaskPointEditor": 3, "DragonDiffusion_Sampler": 5,
               "DragonDiffusion_DDIMInvert": 3, "DragonDiffusion_Landmarks": 3}
# (wide enough for each node's title beside the pack's badge in Nodes 2.0's title bar, web/js/dragon_nodes.js)
WIDTH = {"DragonDiffusion_MaskPointEditor": 460, "DragonDiffusion_Landmarks": 460, "DragonDiffusion_GuidanceSetup": 400,
         "DragonDiffusion_CrossBranchAttention": 480, "DragonDiffusion_DDIMInvert": 360, "DragonDiffusion_Sampler": 340,
         "CLIPTextEncode": 380, "LoadImage": 340, "SaveImage": 360}
EXTRA_HEIGHT = {"DragonDiffusion_MaskPointEditor": 420, "LoadImage": 300, "SaveImage": 280, "CLIPTextEncode": 90,
                "DragonDiffusion_Landmarks": 520}  # its two point lists and the editor's canvas
# groups: (title, colour, the nodes' class types)
GROUPS = [("1. paint: the object and where it goes", "#3f789e",
           ("LoadImage", "DragonDiffusion_MaskPointEditor", "DragonDiffusion_Landmarks", "DragonToy_Scene")),
          ("2. invert: the guidance branch", "#8A8", ("VAEEncode", "DragonDiffusion_DDIMInvert")),
          ("3. edit", "#b06634", ("DragonDiffusion_GuidanceSetup", "DragonDiffusion_CrossBranchAttention",
                                  "DragonDiffusion_Sampler", "VAEDecode", "ImageScaleBy", "SaveImage"))]  # whole columns each


def node_size(ctype: str, widgets: list, links: dict) -> list[int]:
    slots = max(len(OUTPUTS[ctype]), SLOT_INPUTS.get(ctype, len(links)))
    n_widgets = len([w for w in widgets if w[0] != "upload"]) + (1 if ctype == "LoadImage" else 0)
    return [WIDTH.get(ctype, 320), 46 + 22 * slots + 28 * n_widgets + EXTRA_HEIGHT.get(ctype, 0)]


# Columns left to right along the data flow; each group spans whole columns, so groups never overlap.
COLUMN = {"CheckpointLoaderSimple": 0, "CLIPTextEncode": 0, "DragonToy_ModelLoader": 0, "DragonToy_DiTLoader": 0,
          "UNETLoader": 0, "DualCLIPLoader": 0, "CLIPLoader": 0, "VAELoader": 0, "FluxGuidance": 0,
          "LoadImage": 1, "DragonToy_Scene": 1, "DragonDiffusion_MaskPointEditor": 2, "DragonDiffusion_Landmarks": 2,
          "VAEEncode": 3, "DragonDiffusion_DDIMInvert": 3,
          "DragonDiffusion_GuidanceSetup": 4, "DragonDiffusion_CrossBranchAttention": 4,
          "DragonDiffusion_Sampler": 5, "VAEDecode": 5, "ImageScaleBy": 6, "SaveImage": 7}


def layout(nodes: list) -> dict[int, tuple[list[int], list[int]]]:
    """{node id: (pos, size)}: nodes stacked in their column (COLUMN), columns side by side with a gap."""
    sizes = {nid: node_size(ctype, w, lk) for nid, ctype, w, lk in nodes}
    cols: dict[int, list[int]] = {}
    for nid, ctype, _, _ in nodes:
        cols.setdefault(COLUMN[ctype], []).append(nid)
    out, x = {}, 40
    for c in sorted(cols):
        y = 100
        for nid in cols[c]:
            out[nid] = ([x, y], sizes[nid])
            y += sizes[nid][1] + 60
        x += max(sizes[nid][0] for nid in cols[c]) + 80
    return out


def groups(nodes: list, placed: dict) -> list[dict]:
    out = []
    for title_, color, types in GROUPS:
        ids = [nid for nid, ctype, _, _ in nodes if ctype in types]
        if not ids:
            continue
        x0 = min(placed[i][0][0] for i in ids) - 20
        y0 = min(placed[i][0][1] for i in ids) - 60
        x1 = max(placed[i][0][0] + placed[i][1][0] for i in ids) + 20
        y1 = max(placed[i][0][1] + placed[i][1][1] for i in ids) + 20
        out.append({"title": title_, "bounding": [x0, y0, x1 - x0, y1 - y0], "color": color, "font_size": 24,
                    "flags": {}})
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
    placed = layout(nodes)
    for order, (nid, ctype, widgets, lk) in enumerate(nodes):
        inputs = [{"name": name, "type": INPUT_TYPES[name], "link": in_links[(nid, name)]} for name in lk]
        outputs = [{"name": n, "type": t, "links": out_links.get((nid, i), []), "slot_index": i}
                   for i, (n, t) in enumerate(OUTPUTS[ctype])]
        pos, size = placed[nid]
        ui_nodes.append({"id": nid, "type": ctype, "pos": pos, "size": size,
                         "flags": {}, "order": order, "mode": 0, "inputs": inputs, "outputs": outputs,
                         "properties": {"Node name for S&R": ctype}, "widgets_values": [v for _, v in widgets]})
    # UI links name the target slot by index
    for ln in links:
        target = next(n for n in ui_nodes if n["id"] == ln[3])
        ln[4] = [i["name"] for i in target["inputs"]].index(ln[4])
    grp = groups(nodes, placed)
    return {"last_node_id": max(n[0] for n in nodes), "last_link_id": link_id, "nodes": ui_nodes, "links": links,
            "groups": grp, "config": {}, "extra": view_state(grp), "version": 0.4}


VIEW = (1600, 900)  # the canvas area the opening view fits (a laptop's browser window less the side bars)


def view_state(grp: list[dict]) -> dict:
    """The view a template opens with: the whole graph (its groups) fitted to VIEW, and the renderer its layout
    was made for. "LG" (the classic renderer's sizes), as ComfyUI's own templates declare: a frontend that opens
    it in Nodes 2.0 scales the whole layout (positions, sizes, groups) by one factor, so nodes stay in their
    groups; without it some frontends scaled groups and node sizes but not positions."""
    x0 = min(g["bounding"][0] for g in grp)
    y0 = min(g["bounding"][1] for g in grp)
    x1 = max(g["bounding"][0] + g["bounding"][2] for g in grp)
    y1 = max(g["bounding"][1] + g["bounding"][3] for g in grp)
    scale = round(min(VIEW[0] / (x1 - x0 + 80), VIEW[1] / (y1 - y0 + 80)), 3)
    offset = [round(-x0 + 40 / scale, 1), round(-y0 + 40 / scale, 1)]
    return {"ds": {"scale": scale, "offset": offset}, "workflowRendererVersion": "LG"}


# The demo on the project's toy model (toy/, loaded as extra custom nodes by scripts/demo): drag the object of
# move scene 3 (a settings scene, not a test scene) by one handle->target pair. Guidance Setup in move mode moves
# the painted object whole; drag mode moves the content at each point and, on the toy, breaks the object up
# (README, Quality benchmark). TOY_DRAG_POINTS are that scene's points (tests/test_scenes.py checks them).
# Guidance Setup runs at the toy model's move settings (toy/dragon_toy/settings.py, chosen on the settings scenes;
# the mode's defaults are the official ones for SD1.5).
TOY_SCENE = 3
TOY_ZOOM = [("upscale_method", "nearest-exact"), ("scale_by", 8.0)]
TOY_DRAG_POINTS = [{"x": 24.2, "y": 20.9}, {"x": 24.2, "y": 11.9}]


def toy_graph(dit: bool = False) -> list:
    """The toy demo on the toy UNet, or (dit) on the toy flow DiT at its own settings."""
    sys.path.append(str(Path(__file__).resolve().parents[1] / "toy"))
    from dragon_toy.settings import DIT_GUIDANCE, GUIDANCE

    setup_w = [("mode", "move")] + [(k, (DIT_GUIDANCE if dit else GUIDANCE)["move"].get(k, v)) for k, v in SETUP_DEFAULTS]
    return [
        (1, "DragonToy_DiTLoader" if dit else "DragonToy_ModelLoader", [], {}),
        (2, "DragonToy_Scene", [("mode", "move"), ("scene", TOY_SCENE)], {}),
        (3, "DragonDiffusion_MaskPointEditor", [("points", json.dumps(TOY_DRAG_POINTS))], {"image": (2, 0), "mask": (2, 2)}),
        (4, "VAEEncode", [], {"pixels": (2, 0), "vae": (1, 1)}),
        (5, "DragonDiffusion_DDIMInvert", [("steps", 50), ("kv_bank_mb", 4096)], {"model": (1, 0), "positive": (1, 2), "latent": (4, 0)}),
        (6, "DragonDiffusion_GuidanceSetup", setup_w, {"object_mask": (3, 0), "points": (3, 1)}),
        (7, "DragonDiffusion_CrossBranchAttention", [("mode", "auto"), ("start", 0.1), ("end", 1.0), ("source", "inversion")], {"model": (1, 0)}),
        (8, "DragonDiffusion_Sampler", [("steps", 50), ("cfg", 1.0), ("seed", 42), ("control_after_generate", "fixed")],
         {"model": (7, 0), "positive": (1, 2), "negative": (1, 2), "inversion": (5, 0), "guidance": (6, 0)}),
        (9, "VAEDecode", [], {"samples": (8, 0), "vae": (1, 1)}),
        # the toy's 32x32 pictures are saved enlarged 8x, nearest neighbour (its pixels stay pixels)
        (10, "SaveImage", [("filename_prefix", "dragon_demo/after")], {"images": (13, 0)}),
        (11, "SaveImage", [("filename_prefix", "dragon_demo/before")], {"images": (14, 0)}),
        (12, "SaveImage", [("filename_prefix", "dragon_demo/expected")], {"images": (15, 0)}),
        (13, "ImageScaleBy", TOY_ZOOM, {"image": (9, 0)}),
        (14, "ImageScaleBy", TOY_ZOOM, {"image": (3, 2)}),
        (15, "ImageScaleBy", TOY_ZOOM, {"image": (2, 1)}),
    ]


def unclicked(nodes: list) -> list:
    """The templates open with no point pair in the editor: a user's photo has its object elsewhere (and another
    size), so a preset pair pointed at nothing; the editor's start hint asks for the clicks instead, and queueing
    without them is refused before anything runs. The API files keep the pair, so they run as they are."""
    return [(nid, ctype, [(k, "[]" if (ctype == "DragonDiffusion_MaskPointEditor" and k == "points") else v)
                          for k, v in widgets], links) for nid, ctype, widgets, links in nodes]


def render() -> dict[str, str]:
    """{path relative to the repository: text} of every workflow file."""
    files = {}
    variants = [(name, "sd15") for name in EXAMPLES] + [(name, "sdxl") for name in SDXL_EXAMPLES]
    for name, family in variants:
        mode, points, setup, prompt = EXAMPLES[name]
        nodes = graph(mode, points, setup, prompt, family, landmarks=(FACE_SRC, FACE_DST))
        fname = name if family == "sd15" else f"{name}_sdxl"
        if family == "sd15":
            files[f"workflows/{title(name)}.json"] = json.dumps(ui_format(unclicked(nodes)), indent=1) + "\n"
        files[f"workflows/api/{fname}.api.json"] = json.dumps(api_format(nodes), indent=1) + "\n"
    for family in DIT_FAMILIES:
        for name in DIT_EXAMPLES:
            nodes = dit_graph(name, family)
            files[f"workflows/{dit_title(name, family)}.json"] = json.dumps(ui_format(unclicked(nodes)), indent=1) + "\n"
            files[f"workflows/api/{name}_{family}.api.json"] = json.dumps(api_format(nodes), indent=1) + "\n"
    toy = toy_graph()
    files["toy/dragon_toy/workflows/Toy demo - move the painted object.json"] = json.dumps(ui_format(toy), indent=1) + "\n"
    files["toy/dragon_toy/workflows/api/toy_drag.api.json"] = json.dumps(api_format(toy), indent=1) + "\n"
    toy_dit = toy_graph(dit=True)
    files["toy/dragon_toy/workflows/Toy demo - move on the toy DiT.json"] = json.dumps(ui_format(toy_dit), indent=1) + "\n"
    files["toy/dragon_toy/workflows/api/toy_dit_move.api.json"] = json.dumps(api_format(toy_dit), indent=1) + "\n"
    return files


def thumbnails() -> dict[str, "object"]:
    """{workflows/<title>.jpg: PIL image}: what the template does, on the first test scene of the mode's toy benchmark
    (toy/dragon_toy/scenes.py, seed 1000) with the pack's result from its strip (bench/strip_*.png): the source with
    the edit drawn on it (move/drag/landmarks: the point pair's arrow; resize: the object and its new box; remove:
    the object outlined; paste: the reference photo, its object outlined; restyle: the object outlined, the reference
    object inset) -> the result, about 2:1 as the browser's cards show them. Needs torch (the toy scenes): run with .venv/bin/python."""
    import torch
    from PIL import Image, ImageDraw, ImageFont

    sys.path.insert(0, str(ROOT / "toy"))
    from dragon_toy import scenes

    cell, pad, zoom = 32, 2, 4  # scripts/bench_quality.py strip(): 32 px cells, 2 px apart, zoomed 4x
    z = cell * zoom
    font = ImageFont.load_default(size=17)
    yellow, red = (255, 230, 64), (255, 70, 70)

    def picture(t: torch.Tensor) -> "Image.Image":
        arr = (t.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype("uint8")
        return Image.fromarray(arr).resize((z, z), Image.NEAREST)

    def outline(img, mask: torch.Tensor, colour) -> None:
        """The mask's edge pixels, drawn on the zoomed picture."""
        m = mask > 0.5
        edge = m & ~(torch.nn.functional.max_pool2d((~m).float()[None, None], 3, 1, 1)[0, 0] < 0.5)
        d = ImageDraw.Draw(img)
        for y, x in torch.nonzero(edge).tolist():
            d.rectangle([x * zoom, y * zoom, x * zoom + zoom - 1, y * zoom + zoom - 1], outline=colour, width=1)

    def arrow(img, a, b) -> None:
        d = ImageDraw.Draw(img)
        (ax, ay), (bx, by) = [((x + 0.5) * zoom, (y + 0.5) * zoom) for x, y in (a, b)]
        d.line([(ax, ay), (bx, by)], fill=yellow, width=3)
        ang = math.atan2(by - ay, bx - ax)
        cos, sin = math.cos, math.sin
        d.polygon([(bx, by), (bx - 12 * cos(ang - 0.45), by - 12 * sin(ang - 0.45)),
                   (bx - 12 * cos(ang + 0.45), by - 12 * sin(ang + 0.45))], fill=yellow)
        for (x, y), c in (((ax, ay), red), ((bx, by), (42, 92, 245))):
            d.ellipse([x - 5, y - 5, x + 5, y + 5], fill=c, outline="white")

    out = {}
    # (file title, example, the strip the result comes from, the families it serves): the FLUX templates show the
    # toy DiT's result where its benchmark has run (bench/dit/), the SD3.5 ones the toy SD3's (bench/sd3/)
    cards = [(title(name), name, ROOT / "bench", "SD1.5 · SDXL") for name in EXAMPLES]
    cards += [(dit_title(name, f), name, ROOT / "bench" / ("sd3" if "ckpt" in DIT_FAMILIES[f] else "dit"),
               DIT_FAMILIES[f]["label"]) for f in DIT_FAMILIES for name in DIT_EXAMPLES]
    for card_title, name, strips, families in cards:
        mode = EXAMPLES[name][0]
        toy_mode = THUMB_STRIP[mode]
        case = scenes.make_case(toy_mode, 1000)
        if not (strips / f"strip_{toy_mode}.png").is_file():
            strips = ROOT / "bench"
        strip = Image.open(strips / f"strip_{toy_mode}.png").convert("RGB")
        x = 3 * (cell + pad) * zoom
        after = strip.crop((x, 0, x + z, z))
        before = picture(case.source)
        if mode in ("move", "drag", "landmark"):
            arrow(before, case.points[0], case.points[1])
        elif mode == "resize":
            outline(before, case.object_mask, red)
            outline(before, case.target_region, yellow)
        elif mode == "remove":
            outline(before, case.object_mask, red)
        elif mode == "paste":  # the reference photo, its object outlined -> that object in the result
            before = picture(case.reference)
            outline(before, case.reference_mask, yellow)
        elif mode == "appearance":  # the object outlined, the reference object's look inset in the far corner
            outline(before, case.object_mask, red)
            ys, xs = torch.nonzero(case.reference_mask > 0.5, as_tuple=True)
            y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
            inset = picture(case.reference[:, max(0, y0 - 2):y1 + 2, max(0, x0 - 2):x1 + 2]).resize((z // 2, z // 2))
            oy, ox = [float(v) for v in torch.nonzero(case.object_mask > 0.5).float().mean(0)]
            at = (z - z // 2 - 4 if ox < cell / 2 else 4, z - z // 2 - 4 if oy < cell / 2 else 4)
            ImageDraw.Draw(before).rectangle([at[0] - 2, at[1] - 2, at[0] + z // 2 + 1, at[1] + z // 2 + 1], fill="white")
            before.paste(inset, at)
        # before -> after, and under them the families it serves (the card's title names the edit)
        thumb = Image.new("RGB", (2 * z + 56, z + 40), "white")
        thumb.paste(before, (8, 8))
        thumb.paste(after, (z + 48, 8))
        draw = ImageDraw.Draw(thumb)
        y = z // 2 + 8
        draw.line([(z + 14, y), (z + 34, y)], fill=(40, 40, 40), width=3)
        draw.polygon([(z + 40, y), (z + 32, y - 6), (z + 32, y + 6)], fill=(40, 40, 40))
        draw.text((thumb.width // 2, z + 24), families, fill=(30, 30, 30), font=font, anchor="mm")
        out[f"workflows/{card_title}.jpg"] = thumb
    return out


if __name__ == "__main__":
    written = set()
    for rel, text in render().items():
        (ROOT / rel).parent.mkdir(parents=True, exist_ok=True)
        (ROOT / rel).write_text(text)
        written.add(ROOT / rel)
        print("wrote", rel, file=sys.stderr)
    for rel, img in thumbnails().items():
        img.save(ROOT / rel, quality=90)
        written.add(ROOT / rel)
        print("wrote", rel, file=sys.stderr)
    for stale in [*OUT.glob("*.json"), *OUT.glob("*.jpg"), *(OUT / "api").glob("*.json")]:
        if stale not in written:
            stale.unlink()
            print("removed", stale.relative_to(ROOT), file=sys.stderr)

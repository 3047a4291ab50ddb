"""Move, resize and drag through a real ComfyUI server's /prompt, on tiny SD1 and SDXL models."""
from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file

from graph import Graph

W, H = 96, 64


def edit_graph(mode: str, family: str = "sd1", steps: int = 10, points=None, mask_box=(16, 16, 40, 40), color=0,
               **setup):
    g = Graph()
    model = g.node("DragonTest_TinyModel", family=family, seed=0)
    cond = g.node("DragonTest_RandomConditioning", family=family, seed=1)
    lat = g.node("DragonTest_SceneLatent", seed=3, width=W, height=H, channels=4, batch=1)
    img = g.node("EmptyImage", width=W, height=H, batch_size=1, color=color)
    editor_inputs = dict(image=[img, 0], points=json.dumps(points or []))
    if mask_box is not None:
        mask = g.node("DragonTest_BoxMask", width=W, height=H, x0=mask_box[0], y0=mask_box[1], x1=mask_box[2],
                      y1=mask_box[3])
        editor_inputs["mask"] = [mask, 0]
    editor = g.node("DragonDiffusion_MaskPointEditor", **editor_inputs)
    inv = g.node("DragonDiffusion_DDIMInvert", model=[model, 0], positive=[cond, 0], latent=[lat, 0], steps=steps)
    defaults = dict(offset_x=0, offset_y=0, scale=1.0, energy_scale=-1.0, w_edit=-1.0, w_content=-1.0, w_contrast=-1.0,
                    w_inpaint=-1.0, schedule="diffeditor", guidance_start=0.0, guidance_end=0.6, sde_strength=-1.0)
    defaults.update(setup)
    guide_inputs = dict(mode=mode, points=[editor, 1], **defaults)
    if mask_box is not None:
        guide_inputs["object_mask"] = [editor, 0]
    guide = g.node("DragonDiffusion_GuidanceSetup", **guide_inputs)
    patched = g.node("DragonDiffusion_CrossBranchAttention", model=[model, 0], mode="auto", start=0.1, end=1.0)
    out = g.node("DragonDiffusion_Sampler", model=[patched, 0], positive=[cond, 0], negative=[cond, 0],
                 inversion=[inv, 0], guidance=[guide, 0], steps=steps, cfg=4.0, seed=42)
    save = g.node("DragonTest_SaveTensor", name=f"edit_{mode}_{family}", latent=[out, 0])
    src = g.node("DragonTest_SaveTensor", name=f"src_{mode}_{family}", latent=[lat, 0])
    return g.prompt(), save, src, editor


CASES = {
    "move": dict(mode="move", offset_x=24, offset_y=8),
    "resize": dict(mode="resize", scale=1.5),
    "drag": dict(mode="drag", points=[{"x": 20, "y": 20}, {"x": 40, "y": 30}, {"x": 70, "y": 50}, {"x": 60, "y": 40}]),
    "drag-no-mask": dict(mode="drag", mask_box=None, points=[{"x": 20, "y": 20}, {"x": 40, "y": 30}]),
}


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
@pytest.mark.parametrize("case", list(CASES))
def test_edit_workflow_returns_a_latent_of_the_input_shape(server, case, family):
    # a distinct image per case, so the editor node runs (cached nodes report no UI output)
    color = (list(CASES).index(case) + 1) * 40 + (family == "sdxl")
    prompt, save, src, editor = edit_graph(family=family, color=color, **CASES[case])
    log_before = len(server.log())
    h = server.run_ok(prompt)
    out = load_file(h["outputs"][save]["tensors"][0]["path"])["latent"]
    ref = load_file(h["outputs"][src]["tensors"][0]["path"])["latent"]
    assert out.shape == ref.shape
    assert out.isfinite().all()
    assert h["outputs"][editor]["dragon_editor"][0]["image"], "the editor's canvas gets its picture"
    new_log = server.log()[log_before:]
    assert "Traceback" not in new_log and "!!! Exception" not in new_log, new_log[-3000:]


@pytest.mark.parametrize("case,node,match", [
    (dict(mode="drag", points=[{"x": 20, "y": 20}]), "DragonDiffusion_MaskPointEditor", "count must be even"),
    (dict(mode="drag", points=[]), "DragonDiffusion_GuidanceSetup", "'points'"),
    (dict(mode="drag", points=[{"x": 20, "y": 20}, {"x": 400, "y": 30}]), "DragonDiffusion_MaskPointEditor", "outside"),
    (dict(mode="move", mask_box=(0, 0, 0, 0)), "DragonDiffusion_GuidanceSetup", "'object_mask': is empty"),
])
def test_edit_bad_input_is_a_node_error_and_the_server_carries_on(server, case, node, match):
    prompt, *_ = edit_graph(**case)
    err = server.error_of(server.run(prompt))
    assert err["node_type"] == node and match in err["exception_message"], err["exception_message"]
    server.run_ok(edit_graph(**CASES["move"])[0])

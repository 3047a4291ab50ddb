"""The bad-input table: every rejected input, through one real ComfyUI server.

Each case is a small API prompt built from one good edit with one thing spoiled. It must fail with
a message that names the node and the input (DragonInputError: "<node>: input '<name>': ..."), or,
where ComfyUI's own schema validation catches it first (min/max), be refused at /prompt with the
input named. After each case the server is still up and a good prompt runs.
"""
from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file

from conftest import PromptError
from graph import Graph

W, H = 64, 48  # non-square on purpose: latent 8x6
STEPS = 4

INVERT, SETUP, SAMPLER, PATCH, EDITOR = ("Dragon DDIM Invert", "Dragon Guidance Setup", "Dragon Sampler",
                                         "Dragon Cross-Branch Attention Patch", "Dragon Mask/Point Editor")
CLASS = {INVERT: "DragonDiffusion_DDIMInvert", SETUP: "DragonDiffusion_GuidanceSetup",
         SAMPLER: "DragonDiffusion_Sampler", PATCH: "DragonDiffusion_CrossBranchAttention",
         EDITOR: "DragonDiffusion_MaskPointEditor"}

GOOD_DRAG = [{"x": 20, "y": 20}, {"x": 30, "y": 24}]


def build(mode="move", points=None, mask_box=(16, 12, 36, 30), mask_size=(W, H), image_size=(W, H),
          image_batch=1, latent_size=(W, H), latent_channels=4, latent_batch=1, family="sd1", sampler_family=None,
          patch_family=None, sampler_model_seed=0, invert_steps=STEPS, sampler_steps=STEPS, poison=None,
          patch=dict(mode="auto", start=0.1, end=1.0), cfg=4.0, reference_box=None, reference_size=(W, H), color=0,
          **setup):
    """One edit graph (editor -> setup -> invert -> patch -> sampler -> save) with overrides."""
    g = Graph()
    model = g.node("DragonTest_TinyModel", family=family, seed=0)
    cond = g.node("DragonTest_RandomConditioning", family=family, seed=1)
    lat = g.node("DragonTest_SceneLatent", seed=3, width=latent_size[0], height=latent_size[1],
                 channels=latent_channels, batch=latent_batch)
    img = g.node("EmptyImage", width=image_size[0], height=image_size[1], batch_size=image_batch, color=color)
    lat_out, cond_out, img_out = [lat, 0], [cond, 0], [img, 0]
    mask_out = None
    if mask_box is not None:
        m = g.node("DragonTest_BoxMask", width=mask_size[0], height=mask_size[1], x0=mask_box[0], y0=mask_box[1],
                   x1=mask_box[2], y1=mask_box[3])
        mask_out = [m, 0]
    if poison is not None:
        what, value = poison
        src = {"latent": lat_out, "mask": mask_out, "image": img_out, "conditioning": cond_out}[what]
        p = g.node("DragonTest_Poison", value=value, **{what: src})
        out = [p, ["latent", "mask", "image", "conditioning"].index(what)]
        if what == "latent":
            lat_out = out
        elif what == "mask":
            mask_out = out
        elif what == "image":
            img_out = out
        else:
            cond_out = out
    pts = points if isinstance(points, str) else json.dumps(points or [])
    editor_inputs = dict(image=img_out, points=pts)
    if mask_out is not None:
        editor_inputs["mask"] = mask_out
    editor = g.node(CLASS[EDITOR], **editor_inputs)
    inv = g.node(CLASS[INVERT], model=[model, 0], positive=cond_out, latent=lat_out, steps=invert_steps)
    defaults = dict(offset_x=12 if mode == "move" and not points else 0, offset_y=0, scale=1.0, energy_scale=-1.0,
                    w_edit=-1.0, w_content=-1.0, w_contrast=-1.0, w_inpaint=-1.0, schedule="diffeditor",
                    guidance_start=0.0, guidance_end=0.6, sde_strength=-1.0)
    defaults.update(setup)
    guide_inputs = dict(mode=mode, points=[editor, 1], **defaults)
    if mask_out is not None:
        guide_inputs["object_mask"] = [editor, 0]
    if reference_box is not None:
        r = g.node("DragonTest_BoxMask", width=reference_size[0], height=reference_size[1], x0=reference_box[0],
                   y0=reference_box[1],
                   x1=reference_box[2], y1=reference_box[3])
        guide_inputs["reference_region"] = [r, 0]
    guide = g.node(CLASS[SETUP], **guide_inputs)
    pmodel = model
    if patch_family is not None:
        pmodel = g.node("DragonTest_TinyModel", family=patch_family, seed=0)
    patched = g.node(CLASS[PATCH], model=[pmodel, 0], **patch)
    smodel = [patched, 0]
    if sampler_family is not None or sampler_model_seed != 0:
        smodel = [g.node("DragonTest_TinyModel", family=sampler_family or family, seed=sampler_model_seed), 0]
    out = g.node(CLASS[SAMPLER], model=smodel, positive=cond_out, negative=cond_out, inversion=[inv, 0],
                 guidance=[guide, 0], steps=sampler_steps, cfg=cfg, seed=42)
    g.node("DragonTest_SaveTensor", name="bad_input_edit", latent=[out, 0])
    return g.prompt()


def _pts(n):
    return [{"x": 5 + (i * 7) % 50, "y": 5 + (i * 3) % 40} for i in range(n)]


def case(case_id, overrides, node, input_name, fragment, named=None):
    """A row: the node that raises, the input named, a fragment of the message, and the node the
    message names when it differs (the sampler re-checks the setup's geometry before any model runs)."""
    return pytest.param(overrides, node, named or node, input_name, fragment, id=case_id)


# (id, build overrides, node that raises, input named, fragment of the message[, node named])
CASES = [
    case("points-malformed-json", dict(mode="drag", points='[{"x": 1, "y": '), EDITOR, "points", "not valid JSON"),
    case("points-not-a-list", dict(mode="drag", points='{"x": 1, "y": 2}'), EDITOR, "points", "must be a JSON list"),
    case("points-huge-json", dict(mode="drag", points="[" + ",".join(['{"x": 1, "y": 1}'] * 12000) + "]"), EDITOR,
         "points", "characters long (limit"),
    case("points-too-many-pairs", dict(mode="drag", points=_pts(1100)), EDITOR, "points", "pairs (limit"),
    case("points-odd-count", dict(mode="drag", points=[{"x": 20, "y": 20}]), EDITOR, "points", "count must be even"),
    case("points-off-image", dict(mode="drag", points=[{"x": 20, "y": 20}, {"x": W, "y": 20}]), EDITOR, "points",
         "outside the 64x48 image"),
    case("points-negative", dict(mode="drag", points=[{"x": -1, "y": 20}, {"x": 30, "y": 20}]), EDITOR, "points",
         "outside"),
    case("points-non-numeric", dict(mode="drag", points='[{"x": "10", "y": 2}, {"x": 3, "y": 4}]'), EDITOR, "points",
         "non-numeric"),
    case("points-non-finite", dict(mode="drag", points='[[1e999, 2], [3, 4]]'), EDITOR, "points", "non-finite"),
    case("points-huge-integer", dict(mode="drag", points="[[" + "9" * 400 + ", 2], [3, 4]]"), EDITOR, "points",
         "too large"),
    case("points-half-pair", dict(mode="drag", points='[{"handle": [1, 2]}]'), EDITOR, "points", "needs both"),
    case("points-zero-for-drag", dict(mode="drag", points=[]), SETUP, "points", "needs at least one"),
    case("mask-empty", dict(mask_box=(0, 0, 0, 0)), SETUP, "object_mask", "is empty"),
    case("mask-all-ones", dict(mask_box=(0, 0, W, H)), SETUP, "object_mask", "covers the whole image"),
    case("mask-missing-for-move", dict(mask_box=None), SETUP, "object_mask", "needs the mask of the object"),
    case("mask-image-size-mismatch", dict(mask_size=(W, H + 8)), EDITOR, "mask", "but the image is 64x48"),
    case("mask-nan", dict(poison=("mask", "nan")), EDITOR, "mask", "NaN or infinite"),
    case("image-batch-2", dict(image_batch=2), EDITOR, "image", "batch of 2"),
    case("move-leaves-the-image", dict(offset_x=200), SETUP, "offset_x/offset_y", "out of the 64x48 image"),
    case("move-scaled-to-nothing", dict(scale=0.05), SETUP, "scale", "Use a larger scale"),
    case("move-points-and-offset", dict(points=[{"x": 20, "y": 20}, {"x": 30, "y": 20}], offset_x=5), SETUP, "points",
         "offset_x/offset_y give it too"),
    case("move-two-pairs", dict(points=_pts(4)), SETUP, "points", "takes one handle->target pair"),
    case("reference-inside-object", dict(reference_box=(16, 12, 36, 30)), SETUP, "reference_region",
         "covers no pixels outside the object", SETUP),
    case("reference-size-mismatch", dict(reference_box=(0, 0, 8, 8), reference_size=(W * 2, H * 2)), SETUP,
         "object_mask", "sizes disagree"),
    case("mode-unknown", dict(mode="warp"), SETUP, "mode", "unknown mode 'warp'"),
    case("schedule-unknown", dict(schedule="fast"), SETUP, "schedule", "unknown schedule 'fast'"),
    case("patch-mode-unknown", dict(patch=dict(mode="sideways", start=0.1, end=1.0)), PATCH, "mode", "unknown mode"),
    case("energy-scale-negative", dict(energy_scale=-0.5), SETUP, "energy_scale", "must be >= 0 (or -1"),
    case("weight-negative", dict(w_content=-0.25), SETUP, "w_content", "must be >= 0"),
    case("energy-scale-nan", dict(energy_scale=float("nan")), SETUP, "energy_scale", "finite"),
    case("window-reversed", dict(guidance_start=0.6, guidance_end=0.6), SETUP, "guidance_start/guidance_end",
         "start < end"),
    case("window-nan", dict(guidance_start=float("nan")), SETUP, "guidance_start/guidance_end", "start < end"),
    case("scale-nan", dict(scale=float("nan")), SETUP, "scale", "must be > 0"),
    case("patch-window-reversed", dict(patch=dict(mode="auto", start=0.5, end=0.2)), PATCH, "start/end", "start < end"),
    case("model-dit-invert", dict(family="dit", latent_channels=16, patch_family="sd1"), INVERT, "model",
         "Lumina 2 / Z-Image model"),
    case("model-dit-patch", dict(patch_family="dit"), PATCH, "model", "Lumina 2 / Z-Image model"),
    case("model-dit-sampler", dict(sampler_family="dit"), SAMPLER, "model", "Lumina 2 / Z-Image model"),
    case("model-other-weights", dict(sampler_model_seed=7), SAMPLER, "inversion", "was made with another model"),
    case("latent-batch-2", dict(latent_batch=2), INVERT, "latent", "batch of 2"),
    case("latent-channels", dict(latent_channels=3), INVERT, "latent", "has 3 channels"),
    case("latent-too-small", dict(latent_size=(16, 16)), INVERT, "latent", "smaller than the model's minimum"),
    case("latent-nan", dict(poison=("latent", "nan")), INVERT, "latent", "NaN or infinite"),
    case("latent-inf", dict(poison=("latent", "-inf")), INVERT, "latent", "NaN or infinite"),
    case("conditioning-nan", dict(poison=("conditioning", "nan")), INVERT, "positive", "NaN or infinite"),
    case("latent-inversion-size-mismatch", dict(latent_size=(W + 16, H)), SAMPLER, "guidance",
         "was made for a 64x48 image"),
    case("steps-mismatch", dict(sampler_steps=STEPS + 1), SAMPLER, "steps", "is 5 but the inversion has 4"),
    case("cfg-nan", dict(cfg=float("nan")), SAMPLER, "cfg", "finite"),
]

# refused by ComfyUI's own schema check at /prompt (min/max of the input), before anything runs
SCHEMA_CASES = [
    ("energy-scale-below-sentinel", dict(energy_scale=-3.0), SETUP, "energy_scale"),
    ("window-end-above-one", dict(guidance_end=1.5), SETUP, "guidance_end"),
    ("window-start-negative", dict(guidance_start=-0.1), SETUP, "guidance_start"),
    ("sde-strength-above-one", dict(sde_strength=2.0), SETUP, "sde_strength"),
    ("scale-zero", dict(scale=0.0), SETUP, "scale"),
    ("steps-zero", dict(invert_steps=0), INVERT, "steps"),
    ("patch-end-above-one", dict(patch=dict(mode="auto", start=0.1, end=2.0)), PATCH, "end"),
]

_good_counter = [0]


def _good_prompt_runs(server) -> None:
    """The server is alive and runs a fresh (uncached) prompt to success."""
    assert server.proc.poll() is None, "the ComfyUI server died"
    _good_counter[0] += 1
    g = Graph()
    img = g.node("EmptyImage", width=W, height=H, batch_size=1, color=1000 + _good_counter[0])
    ed = g.node(CLASS[EDITOR], image=[img, 0], points=json.dumps(GOOD_DRAG))
    save = g.node("DragonTest_SaveTensor", name=f"after_bad_{_good_counter[0]}", image=[ed, 2])
    h = server.run_ok(g.prompt())
    assert h["outputs"][save]["tensors"]


@pytest.mark.parametrize("overrides,node,named,input_name,fragment", CASES)
def test_bad_input_is_a_clear_node_error_and_the_server_carries_on(server, overrides, node, named, input_name,
                                                                   fragment):
    try:
        h = server.run(build(**overrides), timeout=120)
    except PromptError as e:
        # a ComfyUI that validates combo values before nodes run (0.33 does; 0.3.75 leaves V3 combos to the node)
        # refuses an unknown option itself, at queue time, naming the node, the input and the allowed values
        hits = [x for v in e.body["node_errors"].values() if v["class_type"] == CLASS[node] for x in v["errors"]
                if x["type"] == "value_not_in_list" and x["extra_info"]["input_name"] == input_name]
        assert hits and "unknown" in fragment, e.body
        _good_prompt_runs(server)
        return
    err = server.error_of(h)
    msg = err["exception_message"]
    assert err["node_type"] == CLASS[node], (err["node_type"], msg)
    assert err["exception_type"].endswith("DragonInputError"), (err["exception_type"], msg)
    assert f"{named}: input '{input_name}'" in msg and fragment in msg, msg
    _good_prompt_runs(server)


@pytest.mark.parametrize("overrides,node,input_name", [c[1:] for c in SCHEMA_CASES], ids=[c[0] for c in SCHEMA_CASES])
def test_out_of_range_value_is_refused_at_queue_time_naming_the_input(server, overrides, node, input_name):
    with pytest.raises(PromptError) as e:
        server.submit(build(**overrides))
    errors = [(v["class_type"], x) for v in e.value.body["node_errors"].values() for x in v["errors"]]
    hits = [x for cls, x in errors if cls == CLASS[node] and x["extra_info"]["input_name"] == input_name]
    assert hits, errors
    assert "smaller than min" in hits[0]["message"] or "bigger than max" in hits[0]["message"], hits
    _good_prompt_runs(server)


def test_the_table_covers_every_node():
    nodes_hit = {c.values[1] for c in CASES} | {c[2] for c in SCHEMA_CASES}
    assert nodes_hit == set(CLASS), nodes_hit
    assert len(CASES) + len(SCHEMA_CASES) >= 20


def test_after_the_whole_table_a_full_edit_still_succeeds(server):
    prompt = build(mode="drag", points=GOOD_DRAG, mask_box=None)
    h = server.run_ok(prompt, timeout=180)
    save = next(k for k, v in prompt.items() if v["class_type"] == "DragonTest_SaveTensor")
    out = load_file(h["outputs"][save]["tensors"][0]["path"])["latent"]
    assert out.shape == (1, 4, H // 8, W // 8) and out.isfinite().all()

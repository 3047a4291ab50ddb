"""The engine inside real ComfyUI (in-process), on tiny models built under inference mode."""
from __future__ import annotations

import pytest
import torch

W, H = 128, 96  # non-square on purpose


@pytest.fixture(scope="module")
def setup(comfy):
    model, cond, lat, inv = comfy.inverted_scene(0, 1, 3, W, H, 10)
    mask = torch.zeros(1, H, W)
    mask[:, 30:60, 20:50] = 1
    return dict(model=model, cond=cond, lat=lat, inv=inv, mask=mask)


def _spec(comfy, mode="move", **kw):
    gd = comfy.module("nodes.guidance")
    return gd.build_spec(mode, **kw)


def _ksampler(comfy, model, cond, lat, seed=5):
    import nodes

    with torch.inference_mode():
        return nodes.common_ksampler(model, seed, 6, 4.0, "euler", "normal", cond, cond, {"samples": lat})[0]["samples"]


def test_energy_gradient_is_nonzero_and_lowers_the_energy_under_inference_mode(comfy, setup):
    import comfy.model_management as mm
    from comfy.ldm.modules.attention import attention_pytorch

    smp = comfy.module("nodes.sampler")
    att = comfy.module("dragon_core.attention")
    plan_mod = comfy.module("dragon_core.plan")
    sampler_core = comfy.module("dragon_core.sampler")
    model, cond, inv = setup["model"], setup["cond"], setup["inv"]
    spec = _spec(comfy, object_mask=setup["mask"], offset_x=24)
    clone = smp.grad_ready_clone(model)
    unet_layout = comfy.module("nodes.unet_layout")
    blocks = tuple(unet_layout.feature_blocks(clone.model.diffusion_model))
    sigma = float(inv.sigmas[2])
    ctx = cond[0][0]

    def feats(z, state, grad_model=True):
        to = dict(clone.model_options["transformer_options"], dragon=state,
                  optimized_attention_override=lambda f, *a, **k: attention_pytorch(*a, **k))
        state.reset_capture(blocks, stop=True)
        try:
            clone.model.apply_model(z / float((1 / (1 + sigma**2)) ** 0.5), torch.tensor([sigma]), c_crossattn=ctx,
                                    transformer_options=to)
        except att.StopUNet:
            pass
        return sampler_core._working(state.features, blocks, plan.feature_hw)

    with torch.inference_mode():
        mm.load_models_gpu([clone])
        x_ref = inv.reference(2)
        with torch.inference_mode(False):
            plan = plan_mod.build_plan(spec, tuple(x_ref.shape[-2:]), torch.device("cpu"))
            st = att.BranchState()
            c = (1 / (1 + sigma**2)) ** 0.5
            with torch.no_grad():
                ref = [f.clone() for f in feats(x_ref.clone() * c, st)]
            with torch.enable_grad(), comfy.module("nodes.backend").autograd_weights(clone.model.diffusion_model,
                                                                                       on=True):
                z = (x_ref.clone() * c).requires_grad_(True)
                e_edit, _ = plan.energy(feats(z, st), ref)
                (g,) = torch.autograd.grad(e_edit, z)
            assert torch.isfinite(g).all() and g.abs().sum() > 0
            step = 0.5 * float(e_edit.detach()) / float(g.pow(2).sum()) * g
            with torch.no_grad():
                e_after, _ = plan.energy(feats(z.detach() - step, st), ref)
            assert float(e_after) < float(e_edit.detach())


def test_backward_needs_the_grad_ready_clone(comfy, setup):
    """Without the backend's autograd_weights the inference-tensor weights break backprop (the ComfyUI trap)."""
    import comfy.model_management as mm

    model, cond = setup["model"], setup["cond"]
    with torch.inference_mode():
        plain = model.clone()
        mm.load_models_gpu([plain])
        with torch.inference_mode(False), torch.enable_grad():
            z = torch.randn(1, 4, H // 8, W // 8, requires_grad=True)
            with pytest.raises(RuntimeError, match="[Ii]nference tensors"):
                out = plain.model.apply_model(z, torch.tensor([1.0]), c_crossattn=cond[0][0])
                out.sum().backward()


def test_attention_patch_hits_exactly_the_decoder_keys_inside_its_window(comfy, setup):
    ap = comfy.module("nodes.attention_patch")
    smp = comfy.module("nodes.sampler")
    layout = comfy.module("nodes.unet_layout")
    model, cond, inv = setup["model"], setup["cond"], setup["inv"]
    patched, keys = ap.patch_model(model, "auto", 0.2, 0.6)
    unet = model.model.diffusion_model
    expected = set(layout.decoder_attn1_keys(unet))
    n_decoder_transformers = sum(len(ch.transformer_blocks) for blk in unet.output_blocks for ch in blk
                                 if type(ch).__name__ == "SpatialTransformer")
    assert len(expected) == n_decoder_transformers == 6
    registered = set(patched.model_options["transformer_options"]["patches_replace"]["attn1"])
    assert registered == expected
    assert "patches_replace" not in model.model_options["transformer_options"]  # the input is not mutated
    with torch.inference_mode():
        _, job = smp.run_dragon(patched, cond, cond, inv, _spec(comfy, object_mask=setup["mask"], offset_x=24),
                                10, 4.0, 1)
    hit_keys = {k for k, _ in job.state.injected}
    hit_steps = {s for _, s in job.state.injected}
    assert hit_keys == expected
    assert hit_steps == {i for i in range(10) if 0.2 <= i / 10 < 0.6}
    # generation passes per step: 1 (+2 time-travel repeats); each injects once per key per pass
    assert all(v >= 1 for v in job.state.injected.values())


def test_patched_model_outside_a_dragon_run_equals_the_plain_model(comfy, setup):
    ap = comfy.module("nodes.attention_patch")
    model, cond, lat = setup["model"], setup["cond"], setup["lat"]
    patched, _ = ap.patch_model(model, "replace", 0.0, 1.0)
    assert torch.equal(_ksampler(comfy, model, cond, lat), _ksampler(comfy, patched, cond, lat))


def test_stock_ksampler_is_bit_identical_before_and_after_a_dragon_run(comfy, setup):
    ap = comfy.module("nodes.attention_patch")
    smp = comfy.module("nodes.sampler")
    model, cond, lat, inv = setup["model"], setup["cond"], setup["lat"], setup["inv"]
    before = _ksampler(comfy, model, cond, lat)
    patched, _ = ap.patch_model(model, "auto", 0.1, 1.0)
    with torch.inference_mode():
        out, job = smp.run_dragon(patched, cond, cond, inv, _spec(comfy, object_mask=setup["mask"], offset_x=24),
                                  10, 4.0, 1)
    assert out.shape == lat.shape and torch.isfinite(out).all()
    assert job.stats.guided_steps > 0 and max(job.stats.grad_norms) > 0
    after = _ksampler(comfy, model, cond, lat)
    assert torch.equal(before, after)
    assert not model.weight_wrapper_patches and "output_block_patch" not in \
        model.model_options["transformer_options"].get("patches", {})
    for p in model.model.parameters():
        assert p.is_inference()  # the shared weights were never replaced


def test_guidance_changes_the_result_and_schedules_count_passes(comfy, setup):
    smp = comfy.module("nodes.sampler")
    model, cond, inv = setup["model"], setup["cond"], setup["inv"]
    with torch.inference_mode():
        guided, job = smp.run_dragon(model, cond, cond, inv,
                                     _spec(comfy, object_mask=setup["mask"], offset_x=24, schedule="dragondiffusion"),
                                     10, 4.0, 1)
        unguided, job0 = smp.run_dragon(model, cond, cond, inv,
                                        _spec(comfy, object_mask=setup["mask"], offset_x=24, energy_scale=0.0,
                                              schedule="dragondiffusion"), 10, 4.0, 1)
    assert job.stats.unet_calls["grad"] == 6  # steps 0..5 of 10 (guidance_end 0.6)
    assert job.stats.unet_calls["reinvert"] == 0
    assert not torch.equal(guided, unguided)


@pytest.mark.parametrize("mode", ["move", "drag"])
def test_guided_sampling_descends_the_edit_energy_over_the_steps(comfy, setup, mode):
    """End to end through run_dragon: with guidance the edit energy measured along the trajectory ends
    lower than on the same trajectory nearly unguided (a flipped sign, a wrong source/target pairing
    or a gradient landing outside the edit region would raise it or leave it). The scale is this random
    tiny model's: its energy gradient is large next to its latent (|g| about 2.3 per unit of scale at
    the first step, the latent's norm about 28), so the defaults (40-80) overshoot on it; move's official
    raw-cosine terms are steeper still (0.1 already overshoots there: summed energy 9.5 against 10.1)."""
    smp = comfy.module("nodes.sampler")
    sp = comfy.module("dragon_core.spec")
    model, cond, inv = setup["model"], setup["cond"], setup["inv"]
    if mode == "move":
        kw = dict(object_mask=setup["mask"], offset_x=24)
    else:
        kw = dict(points=sp.DragPoints(pairs=(sp.PointPair((35.0, 45.0), (60.0, 50.0)),), width=W, height=H))
    runs = {}
    with torch.inference_mode():
        for name, scale in (("guided", 0.05 if mode == "move" else 0.3), ("nearly_unguided", 1e-6)):
            spec = _spec(comfy, mode, energy_scale=scale, schedule="dragondiffusion", **kw)
            _, job = smp.run_dragon(model, cond, cond, inv, spec, 10, 1.0, 1)
            runs[name] = [e for e, _ in job.stats.energies]
    g, u = runs["guided"], runs["nearly_unguided"]
    assert len(g) == len(u) == 6 and g[0] == pytest.approx(u[0])  # the same start, then the steps differ
    assert sum(g[2:]) < sum(u[2:]), (g, u)


@pytest.mark.parametrize("case,match", [
    ("steps", "'steps': is 12 but the inversion has 10"),
    ("size", "'guidance': was made for a 64x64 image"),
    ("model", "'inversion': was made with another model"),
])
def test_sampler_bad_inputs_name_the_input(comfy, setup, case, match):
    smp = comfy.module("nodes.sampler")
    errors = comfy.module("dragon_core.errors")
    model, cond, inv = setup["model"], setup["cond"], setup["inv"]
    spec = _spec(comfy, object_mask=setup["mask"], offset_x=24)
    steps = 10
    if case == "steps":
        steps = 12
    elif case == "size":
        m = torch.zeros(1, 64, 64)
        m[:, 10:20, 10:20] = 1
        spec = _spec(comfy, object_mask=m, offset_x=8)
    elif case == "model":
        with torch.inference_mode():
            model = comfy.tiny.tiny_sd1(1)
    with pytest.raises(errors.DragonInputError) as e:
        with torch.inference_mode():
            smp.run_dragon(model, cond, cond, inv, spec, steps, 4.0, 1)
    assert "Dragon Sampler" in str(e.value) and match in str(e.value)


def test_a_refusal_about_guidance_setup_s_input_found_by_the_sampler_names_the_sampler(comfy, setup):
    """ComfyUI shows a node's error on the node that raised it: a mismatch only the sampler can see (the reference
    inversion against the base inversion) names the Dragon Sampler and its `guidance` input, then Guidance Setup's
    input at fault."""
    smp, inv_node = comfy.module("nodes.sampler"), comfy.module("nodes.invert")
    errors = comfy.module("dragon_core.errors")
    with torch.inference_mode():
        inv8, _ = inv_node.run_inversion(setup["model"], setup["cond"], setup["lat"], 8)
        spec = _spec(comfy, "paste", reference_mask=setup["mask"], reference_inversion=inv8, offset_x=16)
    with pytest.raises(errors.DragonInputError) as e:
        with torch.inference_mode():
            smp.run_dragon(setup["model"], setup["cond"], setup["cond"], setup["inv"], spec, 10, 4.0, 1)
    assert (e.value.node, e.value.input_name) == ("Dragon Sampler", "guidance")
    assert str(e.value).startswith("Dragon Sampler: input 'guidance': Dragon Guidance Setup's input "
                                   "'reference_inversion': has 8 steps but the base image's inversion has 10."), str(e.value)
    assert str(e.value).endswith("Use the same steps in both Dragon DDIM Invert nodes.")


@pytest.mark.parametrize("kwargs,match", [
    (dict(mode="drag"), "'points'"),
    (dict(mode="move", object_mask=torch.zeros(1, H, W)), "'object_mask': is empty"),
    (dict(mode="move", object_mask=torch.ones(1, H, W)), "'object_mask': covers the whole image"),
    (dict(mode="move", guidance_start=0.7, guidance_end=0.6, object_mask="m"), "guidance_start/guidance_end"),
    (dict(mode="move", energy_scale=-3.0, object_mask="m", offset_x=8), "'energy_scale'"),
    (dict(mode="move", object_mask="m"), "'points': move has no handle->target pair, offset_x and offset_y are 0"),
    (dict(mode="resize", object_mask="m"), "'scale': resize has no handle->target pair"),
    (dict(mode="move", keep_background=-2, object_mask="m"), "'keep_background': must be -1 (off)"),
    (dict(mode="move", vacated_noise=1.5, object_mask="m"), "'vacated_noise': must be -1"),
    (dict(mode="move", vacated_noise=float("nan"), object_mask="m"), "'vacated_noise'"),
    (dict(mode="move", anchor_end=1.5, object_mask="m"), "'anchor_end': must be between 0"),
    (dict(mode="move", anchor_end=float("nan"), object_mask="m"), "'anchor_end'"),
    (dict(mode="move", vacated_trend=0, object_mask="m"), "'vacated_trend': must be -1 (off) or a ring width"),
    # geometry is checked on Guidance Setup itself (it used to surface only when the sampler ran)
    (dict(mode="move", scale=0.05, object_mask="m"), "'scale': 0.05 shrinks the object"),
    (dict(mode="move", offset_x=400, object_mask="m"), "'offset_x/offset_y': (400, 0) moves the object entirely out"),
])
def test_guidance_setup_bad_inputs_name_the_input(comfy, setup, kwargs, match):
    errors = comfy.module("dragon_core.errors")
    if isinstance(kwargs.get("object_mask"), str):
        kwargs["object_mask"] = setup["mask"]
    with pytest.raises(errors.DragonInputError) as e:
        _spec(comfy, **kwargs)
    assert "Dragon Guidance Setup" in str(e.value) and match in str(e.value)


def test_editor_rejects_a_mask_of_another_size_and_draws_a_preview(comfy):
    ed = comfy.module("nodes.editor")
    errors = comfy.module("dragon_core.errors")
    img = torch.rand(1, 32, 48, 3)
    with pytest.raises(errors.DragonInputError, match="'mask': is 16x16 but the image is 48x32"):
        ed.MaskPointEditor.execute(img, "[]", torch.zeros(1, 16, 16))
    with pytest.raises(errors.DragonInputError, match="'points'.*outside"):
        ed.MaskPointEditor.execute(img, '[{"x": 1, "y": 1}, {"x": 48, "y": 1}]')
    pts = comfy.module("dragon_core.spec").DragPoints
    prev = ed.render_preview(img, None, pts(pairs=(comfy.module("dragon_core.spec").PointPair((5.0, 5.0), (40.0, 20.0)),),
                                           width=48, height=32))
    assert prev.shape == img.shape and prev[0, 5, 5, 0] > 0.9 and prev[0, 20, 40, 2] > 0.9


def test_edited_latent_carries_no_autograd_graph(comfy, setup):
    """Called outside inference mode (scripts, other packs), the LATENT must not keep the last
    guided step's graph (and its activations) alive."""
    smp = comfy.module("nodes.sampler")
    inv = setup["inv"]
    out, job = smp.run_dragon(setup["model"], setup["cond"], setup["cond"], inv,
                              _spec(comfy, object_mask=setup["mask"], offset_x=24, schedule="dragondiffusion"),
                              inv.steps, 4.0, 1)
    assert job.stats.guided_steps > 0
    assert not out.requires_grad and out.grad_fn is None


def test_keep_background_returns_the_original_latent_outside_the_edit_region(comfy, setup):
    """keep_background=0: every cell away from the object's old and new places comes back exactly as it was
    inverted; inside them the edit still happens. Off (-1, the official method), the outside drifts."""
    smp = comfy.module("nodes.sampler")
    plan_mod, geometry = comfy.module("dragon_core.plan"), comfy.module("dragon_core.geometry")
    model, cond, inv, lat = setup["model"], setup["cond"], setup["inv"], setup["lat"]
    runs = {}
    with torch.inference_mode():
        for keep in (0, -1):
            spec = _spec(comfy, object_mask=setup["mask"], offset_x=24, schedule="dragondiffusion",
                         keep_background=keep)
            runs[keep] = smp.run_dragon(model, cond, cond, inv, spec, 10, 4.0, 1)[0]
    with torch.inference_mode(False):
        region = plan_mod.build_plan(spec, tuple(lat.shape[-2:]), torch.device("cpu")).sde_mask
        keep = geometry.keep_mask(region, 0)[0, 0]
    outside, region = keep == 1, keep == 0
    assert bool(outside.any()) and bool(region.any())
    assert torch.allclose(runs[0][0][:, outside], lat[0][:, outside], atol=1e-4)
    assert float((runs[-1][0][:, outside] - lat[0][:, outside]).abs().max()) > 1e-2
    assert float((runs[0][0][:, region] - lat[0][:, region]).abs().max()) > 1e-2


def test_anchor_end_keeps_the_object_s_place_on_the_object_s_inverted_path(comfy, setup):
    """anchor_end 1: after every step the target cells take the guidance branch's latent of the object, so the
    result there is the clean object latent, moved; off (0, the official start-noise copy only), it is not."""
    smp = comfy.module("nodes.sampler")
    plan_mod = comfy.module("dragon_core.plan")
    model, cond, inv, lat = setup["model"], setup["cond"], setup["inv"], setup["lat"]
    runs = {}
    with torch.inference_mode():
        for end in (1.0, 0.0):
            spec = _spec(comfy, object_mask=setup["mask"], offset_x=24, schedule="dragondiffusion", anchor_end=end)
            runs[end] = smp.run_dragon(model, cond, cond, inv, spec, 10, 4.0, 1)[0]
    with torch.inference_mode(False):
        copy = plan_mod.build_plan(spec, tuple(lat.shape[-2:]), torch.device("cpu")).anchor
    moved = lat.flatten(2)[:, :, copy.source]
    assert copy.target.numel() > 0
    assert torch.allclose(runs[1.0].flatten(2)[:, :, copy.target], moved, atol=1e-5)
    assert float((runs[0.0].flatten(2)[:, :, copy.target] - moved).abs().max()) > 1e-2
    rest = torch.ones(lat[0, 0].numel(), dtype=torch.bool)
    rest[copy.target] = False
    assert float((runs[1.0].flatten(2)[:, :, rest] - lat.flatten(2)[:, :, rest]).abs().max()) > 1e-3  # still edited


def test_vacated_trend_gives_the_vacated_place_its_surroundings_colour_trend(comfy, setup):
    """vacated_trend: the edit's plane over the vacated cells is the plane the clean source has in the ring
    around the object, extrapolated; off, it is not. Not exactly: the last step lands at alpha_bar of
    timestep 0 (official), so the result is the last prediction plus sigma_0 (0.03) times its noise."""
    smp = comfy.module("nodes.sampler")
    plan_mod = comfy.module("dragon_core.plan")
    model, cond, inv, lat = setup["model"], setup["cond"], setup["inv"], setup["lat"]
    runs = {}
    with torch.inference_mode():
        for px in (8, -1):
            spec = _spec(comfy, object_mask=setup["mask"], offset_x=24, schedule="dragondiffusion", vacated_trend=px)
            runs[px] = smp.run_dragon(model, cond, cond, inv, spec, 10, 4.0, 1)[0]
    with torch.inference_mode(False):
        trend = plan_mod.build_plan(_spec(comfy, object_mask=setup["mask"], offset_x=24, vacated_trend=8),
                                    tuple(lat.shape[-2:]), torch.device("cpu")).trend
        want = trend.target(lat.float())
        assert trend.region.numel() > 0
        assert torch.allclose(trend.plane(runs[8]), want, atol=0.05)
        assert float((trend.plane(runs[-1]) - want).abs().max()) > 1.0
        detail = runs[8].flatten(2)[:, :, trend.region].float() - trend.plane(runs[8])
        assert float(detail.abs().max()) > 1e-2  # the model's own detail is still there


def test_an_option_the_mode_does_not_use_is_named_in_a_warning(comfy, setup, caplog):
    """anchor_end on remove (no destination) or vacated_noise on appearance changes nothing; say so, don't refuse
    (switching the mode of a graph should not break it)."""
    with caplog.at_level("WARNING", logger="DragonDiffusion"):
        spec = _spec(comfy, mode="remove", object_mask=setup["mask"], anchor_end=0.5, vacated_noise=0.0,
                     vacated_trend=8)
        _spec(comfy, mode="appearance", object_mask=setup["mask"], reference_mask=setup["mask"],
              reference_inversion=setup["inv"], vacated_trend=8)
    said = [r.getMessage() for r in caplog.records]
    assert spec.anchor_end == 0.5 and any("anchor_end applies to move/resize/paste only" in m for m in said)
    assert not any("vacated_noise" in m for m in said)  # remove uses it
    assert any("vacated_trend applies to move/resize/remove only; appearance" in m for m in said)
    assert not any("vacated_trend applies" in m and "remove mode" in m for m in said)


@pytest.mark.parametrize("cond,match", [
    ([], "is empty or not a CONDITIONING"),
    ("text", "is empty or not a CONDITIONING"),
    ([["not a tensor", {}]], "entry 0 holds str, not a [batch, tokens, channels] text embedding"),
    ([[torch.zeros(77, 768), {}]], "entry 0 holds (77, 768)"),
    ([[torch.zeros(1, 77, 768)]], "entry 0 is not a [tensor, options] pair"),
    ([[torch.zeros(1, 77, 768), {}], None], "entry 1 is not a [tensor, options] pair"),
    ([[torch.full((1, 77, 768), float("nan")), {}]], "contains NaN or infinite values"),
])
@pytest.mark.parametrize("node", ["invert", "sampler"])
def test_malformed_conditioning_is_a_clear_error_on_the_node(comfy, setup, cond, match, node):
    """A CONDITIONING is checked structurally before any model runs (it used to raise a raw AttributeError)."""
    errors = comfy.module("dragon_core.errors")
    with pytest.raises(errors.DragonInputError) as e:
        if node == "invert":
            comfy.module("nodes.invert").DDIMInvert.execute(setup["model"], cond, {"samples": setup["lat"]}, 10)
        else:
            comfy.module("nodes.sampler").run_dragon(setup["model"], setup["cond"], cond, setup["inv"],
                                                     _spec(comfy, object_mask=setup["mask"], offset_x=24), 10, 4.0, 1)
    msg = str(e.value)
    want = ("Dragon DDIM Invert: input 'positive'" if node == "invert" else "Dragon Sampler: input 'negative'")
    assert msg.startswith(want) and match in msg and ("CLIP Text Encode" in msg or "Re-encode" in msg), msg


def test_guidance_setup_checks_geometry_on_the_grid_the_model_will_use(comfy):
    """Setup has no model: an image of 64+ pixels a side is checked on SD's 8-pixel latent cells, a smaller one
    (only a pixel-space model such as the toy can take it) on its own pixels. A 6-pixel object is fine on a
    32x32 toy scene and refused, on Setup, on a 256x256 image."""
    errors = comfy.module("dragon_core.errors")
    small = torch.zeros(1, 32, 32)
    small[:, 10:16, 10:16] = 1
    spec = _spec(comfy, object_mask=small, offset_x=6)
    assert spec.width == 32
    big = torch.zeros(1, 256, 256)
    big[:, 100:103, 100:103] = 1
    with pytest.raises(errors.DragonInputError, match="Dragon Guidance Setup: input 'object_mask': the object is too small"):
        _spec(comfy, object_mask=big, offset_x=6)

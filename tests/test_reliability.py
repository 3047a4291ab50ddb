"""Reliability inside someone else's ComfyUI: isolation after good, failed and interrupted runs,
references and memory over many runs, determinism, and a burst of queued prompts.

Server tests go through a real ComfyUI (the `server` fixture); the reference checks run in-process
(the `comfy` fixture) where the objects can be inspected.
"""
from __future__ import annotations

import gc
import importlib.util
import json
import os
import sys
import time
import weakref

import pytest
import torch
from safetensors.torch import load_file

from conftest import TEST_NODES
from graph import Graph

W, H = 64, 48
STEPS = 5  # divides 1000: ComfyUI's ddim_uniform gives exactly this many steps
MASK = (16, 12, 36, 30)


# ---------------------------------------------------------------------------------------------
# graphs


def _base(g: Graph, latent_seed: int = 3, model_seed: int = 0):
    model = g.node("DragonTest_TinyModel", family="sd1", seed=model_seed)
    cond = g.node("DragonTest_RandomConditioning", family="sd1", seed=1)
    lat = g.node("DragonTest_SceneLatent", seed=latent_seed, width=W, height=H, channels=4, batch=1)
    return model, cond, lat


def add_edit(g: Graph, model, cond, lat, name: str, seed: int = 42, offset_x: int = 12, fault=None,
             steps: int = STEPS, nonce: int | None = None) -> str:
    """Appends a move edit on `model` (optionally through a DragonTest_GuidanceFault) and its save node.

    A `nonce` routes the model through a DragonTest_ModelReport so that an otherwise identical edit re-runs."""
    img = g.node("EmptyImage", width=W, height=H, batch_size=1, color=0)
    mask = g.node("DragonTest_BoxMask", width=W, height=H, x0=MASK[0], y0=MASK[1], x1=MASK[2], y1=MASK[3])
    editor = g.node("DragonDiffusion_MaskPointEditor", image=[img, 0], points="[]", mask=[mask, 0])
    inv = g.node("DragonDiffusion_DDIMInvert", model=[model, 0], positive=[cond, 0], latent=[lat, 0], steps=steps)
    guide = g.node("DragonDiffusion_GuidanceSetup", mode="move", object_mask=[editor, 0], points=[editor, 1],
                   offset_x=offset_x, offset_y=0, scale=1.0, energy_scale=-1.0, w_edit=-1.0, w_content=-1.0,
                   w_contrast=-1.0, w_inpaint=-1.0, schedule="diffeditor", guidance_start=0.0, guidance_end=0.6,
                   sde_strength=-1.0)
    m = model
    if nonce is not None:
        m = g.node("DragonTest_ModelReport", model=[model, 0], nonce=nonce)
    if fault is not None:
        m = g.node("DragonTest_GuidanceFault", model=[model, 0], **fault)
    patched = g.node("DragonDiffusion_CrossBranchAttention", model=[m, 0], mode="auto", start=0.1, end=1.0)
    out = g.node("DragonDiffusion_Sampler", model=[patched, 0], positive=[cond, 0], negative=[cond, 0],
                 inversion=[inv, 0], guidance=[guide, 0], steps=steps, cfg=4.0, seed=seed)
    return g.node("DragonTest_SaveTensor", name=name, latent=[out, 0])


def ksampler_prompt(nonce: int, model_seed: int) -> tuple[dict, str, str, str]:
    """A stock KSampler on the shared tiny MODEL; ModelReports before and after it (nonce forces a re-run)."""
    g = Graph()
    model, cond, lat = _base(g, model_seed=model_seed)
    before = g.node("DragonTest_ModelReport", model=[model, 0], nonce=nonce)
    ks = g.node("KSampler", model=[before, 0], seed=5, steps=4, cfg=4.0, sampler_name="euler", scheduler="normal",
                positive=[cond, 0], negative=[cond, 0], latent_image=[lat, 0], denoise=1.0)
    save = g.node("DragonTest_SaveTensor", name=f"ksampler_{nonce}", latent=[ks, 0])
    after = g.node("DragonTest_ModelReport", model=[model, 0], nonce=nonce, after=[ks, 0])
    return g.prompt(), save, before, after


def _tensor(h: dict, save: str, key: str = "latent") -> torch.Tensor:
    return load_file(h["outputs"][save]["tensors"][0]["path"])[key]


def _kinds(h: dict) -> list[str]:
    return [kind for kind, _ in h["status"]["messages"]]


# ---------------------------------------------------------------------------------------------
# isolation through the server


ISO_MODEL = 11  # a MODEL no other test uses: its first KSampler run is a fresh one


def _run_ksampler(server, nonce):
    prompt, save, before, after = ksampler_prompt(nonce, ISO_MODEL)
    h = server.run_ok(prompt)
    return _tensor(h, save), h["outputs"][before], h["outputs"][after]


def test_shared_model_is_untouched_after_good_failed_and_interrupted_dragon_runs(server):
    fresh, rep0, rep0_after = _run_ksampler(server, 0)
    state0 = rep0["state"][0]
    assert state0["wrapped_modules"] == 0 and state0["weight_wrappers"] == 0, state0

    # 1) a good edit on the same MODEL
    g = Graph()
    save = add_edit(g, *_base(g, model_seed=ISO_MODEL), name="iso_good")
    assert _tensor(server.run_ok(g.prompt()), save).isfinite().all()

    # 2) an edit that raises inside the guidance (gradient) pass
    g = Graph()
    add_edit(g, *_base(g, model_seed=ISO_MODEL), name="iso_raise", fault=dict(action="raise", delay=0.0, marker=""))
    err = server.error_of(server.run(g.prompt()))
    assert err["node_type"] == "DragonDiffusion_Sampler" and "injected fault in the guidance step" in \
        err["exception_message"], err

    # 3) an edit interrupted through POST /interrupt in the middle of sampling
    marker = server.output_dir / "iso_interrupt.marker"
    g = Graph()
    add_edit(g, *_base(g, model_seed=ISO_MODEL), name="iso_interrupt",
             fault=dict(action="slow", delay=0.03, marker=marker.name))
    pid = server.submit(g.prompt())
    end = time.time() + 120
    while not marker.exists():
        assert time.time() < end, "the slow Dragon run never reached step 1"
        time.sleep(0.02)
    server.post("/interrupt", {})
    h = server.wait(pid)
    assert "execution_interrupted" in _kinds(h), _kinds(h)
    assert h["status"]["status_str"] == "error"
    assert int(marker.read_text()) < STEPS - 1, "the interrupt came too late to be mid-sampling"

    for nonce, what in ((1, "after good, failed and interrupted runs"),):
        out, rep, rep_after = _run_ksampler(server, nonce)
        assert torch.equal(out, fresh), f"stock KSampler output changed {what}"
        assert rep["model_id"] == rep0["model_id"], "not the same shared MODEL object"
        assert rep["state"][0] | {"wrapped_modules": 0} == state0, (rep["state"][0], state0)
        assert rep_after["state"][0] == rep0_after["state"][0] and rep_after["state"][0]["wrapped_modules"] == 0
    # and the server keeps going: the good edit again (new seed) succeeds
    g = Graph()
    save = add_edit(g, *_base(g, model_seed=ISO_MODEL), name="iso_good_again", seed=43)
    assert _tensor(server.run_ok(g.prompt()), save).isfinite().all()


# ---------------------------------------------------------------------------------------------
# in-process: patch state and references after good, failed and interrupted runs


@pytest.fixture(scope="module")
def testing_nodes(comfy):
    """tests/comfy_test_nodes/dragon_testing as a package (its model_state and GuidanceFault)."""
    name = "dragon_testing_inproc"
    if name in sys.modules:
        return sys.modules[name]
    path = TEST_NODES / "dragon_testing" / "__init__.py"
    spec = importlib.util.spec_from_file_location(name, path, submodule_search_locations=[str(path.parent)])
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def setup(comfy):
    model, cond, lat, inv = comfy.inverted_scene(0, 1, 3, W, H, STEPS)
    mask = torch.zeros(1, H, W)
    mask[:, MASK[1]:MASK[3], MASK[0]:MASK[2]] = 1
    spec = comfy.module("nodes.guidance").build_spec("move", object_mask=mask, offset_x=12)
    return dict(model=model, cond=cond, lat=lat, inv=inv, spec=spec)


def _ksampler(model, cond, lat):
    import nodes

    with torch.inference_mode():
        return nodes.common_ksampler(model, 5, 4, 4.0, "euler", "normal", cond, cond, {"samples": lat})[0]["samples"]


class _Spy:
    """output_block_patch that keeps weak references to every BranchState it sees, and can fail."""

    def __init__(self, action=None):
        self.action, self.states = action, []

    def __deepcopy__(self, memo):
        return self

    def __call__(self, h, hsp, transformer_options):
        import comfy.model_management as mm

        st = transformer_options.get("dragon")
        if st is not None:
            if not any(r() is st for r in self.states):
                self.states.append(weakref.ref(st))
            if self.action == "raise" and st.phase == "grad":
                raise RuntimeError("injected fault in the guidance step")
            if self.action == "interrupt" and st.step >= 2 and st.phase == "generate":
                mm.interrupt_current_processing(True)
        return h, hsp


def _loaded_dragon_clones() -> list:
    """Loaded patchers that carry weight wrappers: only the sampler's gradient-ready clone has any."""
    import comfy.model_management as mm

    return [lm.model for lm in mm.current_loaded_models if lm.model is not None and lm.model.weight_wrapper_patches]


@pytest.mark.parametrize("action", [None, "raise", "interrupt"])
def test_in_process_no_patch_and_no_reference_survives_a_run(comfy, setup, testing_nodes, action):
    import comfy.model_management as mm

    smp = comfy.module("nodes.sampler")
    model, cond, lat, inv = setup["model"], setup["cond"], setup["lat"], setup["inv"]
    fresh = _ksampler(model, cond, lat)
    state0 = testing_nodes.model_state(model)
    spy = _Spy(action)
    faulty = model.clone()
    faulty.set_model_output_block_patch(spy)
    patched, _ = comfy.module("nodes.attention_patch").patch_model(faulty, "auto", 0.1, 1.0)
    job_ref = None
    if action is None:
        with torch.inference_mode():
            out, job = smp.run_dragon(patched, cond, cond, inv, setup["spec"], STEPS, 4.0, 1)
        job_ref = weakref.ref(job)
        assert job.state is spy.states[0]() and out.isfinite().all()
        del out, job  # the outputs are consumed
    else:
        expected = RuntimeError if action == "raise" else mm.InterruptProcessingException
        with pytest.raises(expected):
            with torch.inference_mode():
                smp.run_dragon(patched, cond, cond, inv, setup["spec"], STEPS, 4.0, 1)
        mm.interrupt_current_processing(False)
    assert spy.states, "the Dragon run never reached the UNet"
    del patched, faulty
    gc.collect()
    assert job_ref is None or job_ref() is None, "the DragonJob is still referenced"
    assert all(r() is None for r in spy.states), "a BranchState (K/V, features) is still referenced"
    assert not _loaded_dragon_clones(), "the gradient-ready clone is still alive"
    assert not getattr(comfy.module("nodes.backend"), "_COPY_SOURCE", {}), "weight copies are still alive"
    # the shared patcher carries nothing new, and after the next stock load no module is wrapped
    assert testing_nodes.model_state(model) | {"wrapped_modules": 0} == state0
    assert torch.equal(_ksampler(model, cond, lat), fresh)
    assert testing_nodes.model_state(model) == state0


# ---------------------------------------------------------------------------------------------
# determinism (in-process, CPU)


def _run(comfy, setup, seed, monkeypatch=None):
    """Dragon run (no K/V patch) recording the latent after every step."""
    smp = comfy.module("nodes.sampler")
    xs = []
    if monkeypatch is not None:
        monkeypatch.setattr(smp.latent_preview, "prepare_callback",
                            lambda *a, **k: (lambda step, x0, x, total: xs.append(x.detach().clone())))
    with torch.inference_mode():
        out, job = smp.run_dragon(setup["model"], setup["cond"], setup["cond"], setup["inv"], setup["spec"], STEPS,
                                  4.0, seed)
    return out.clone(), xs


def test_same_seed_same_output_and_a_new_seed_changes_only_the_sde_region_at_first(comfy, setup, monkeypatch):
    sched = comfy.module("dragon_core.schedule")
    plan_mod = comfy.module("dragon_core.plan")
    spec = setup["spec"]
    a, xa = _run(comfy, setup, 1, monkeypatch)
    b, xb = _run(comfy, setup, 1, monkeypatch)
    assert torch.equal(a, b), "same inputs and seed gave different outputs"
    assert all(torch.equal(p, q) for p, q in zip(xa, xb))
    c, xc = _run(comfy, setup, 2, monkeypatch)
    assert len(xa) == len(xc) == STEPS
    steps = sched.plan_steps(STEPS, spec.schedule, spec.guidance_start, spec.guidance_end, spec.sde_strength,
                             spec.time_travel)
    sde = [i for i, s in enumerate(steps) if s.sde]
    assert sde, "the diffeditor schedule should have SDE steps"
    first = sde[0]
    for i in range(first):  # no random number is drawn before the first SDE step
        assert torch.equal(xa[i], xc[i]), f"step {i} depends on the seed"
    with torch.inference_mode(False):
        region = plan_mod.build_plan(spec, tuple(a.shape[-2:]), torch.device("cpu")).sde_mask[0, 0] > 0
    d = (xa[first] - xc[first]).abs()[0].amax(0)
    assert bool(region.any()) and bool((~region).any())
    assert float(d[~region].max()) == 0.0, "the SDE noise leaked outside its region"
    assert float(d[region].min()) > 0.0, "the seed did not change the SDE region"
    # later UNet passes (convolutions, self-attention) carry the difference to the rest of the image;
    # it stays concentrated where the noise went in
    d = (a - c).abs()[0].mean(0)
    inside, outside = float(d[region].mean()), float(d[~region].mean())
    print(f"\nseed 1 vs 2 final |diff|: inside SDE region {inside:.4g}, outside {outside:.4g} "
          f"(ratio {inside / max(outside, 1e-12):.1f})")
    assert inside > 0 and inside > 100 * outside


def test_the_dragondiffusion_schedule_does_not_depend_on_the_seed(comfy, setup):
    spec = comfy.module("nodes.guidance").build_spec("move", object_mask=setup["spec"].object_mask[None],
                                                     offset_x=12, schedule="dragondiffusion")
    s = dict(setup, spec=spec)
    assert torch.equal(_run(comfy, s, 1)[0], _run(comfy, s, 2)[0])


# ---------------------------------------------------------------------------------------------
# memory over many runs through the server


def _rss(pid: int) -> dict:
    out = {}
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(("VmRSS:", "VmHWM:")):
            k, v, _ = line.split()
            out[k[:-1]] = int(v)  # kB
    return out


def test_twenty_edits_do_not_grow_peak_memory(server):
    figures = []
    for i in range(20):
        g = Graph()
        model, cond, _ = _base(g)
        lat = g.node("DragonTest_SceneLatent", seed=100 + i, width=W, height=H, channels=4, batch=1)
        save = add_edit(g, model, cond, lat, name=f"mem_{i}", seed=i, offset_x=8 + 4 * (i % 3), steps=4)
        h = server.run_ok(g.prompt())
        assert _tensor(h, save).isfinite().all()
        figures.append(_rss(server.proc.pid))
    third, last = figures[2]["VmHWM"], figures[-1]["VmHWM"]
    print(f"\nserver VmHWM after edit 3: {third / 1024:.1f} MiB, after edit 20: {last / 1024:.1f} MiB "
          f"(+{100 * (last - third) / third:.2f}%); VmRSS {figures[2]['VmRSS'] / 1024:.1f} -> "
          f"{figures[-1]['VmRSS'] / 1024:.1f} MiB")
    assert last <= third * 1.02, figures


# ---------------------------------------------------------------------------------------------
# load: a burst of queued prompts


def test_ten_prompts_queued_at_once_all_complete_with_their_outputs(server):
    """The last two repeat the first two (re-run, not cached): the same seed gives the same bits through the server."""
    ids = {}
    for i in range(10):
        g = Graph()
        save = add_edit(g, *_base(g), name=f"load_{i}", seed=1000 + i % 8, steps=4, nonce=i if i >= 8 else None)
        ids[server.submit(g.prompt())] = (save, i)
    assert len(ids) == 10
    outs = {}
    for pid, (save, i) in ids.items():
        h = server.wait(pid, timeout=300)
        assert h["status"]["status_str"] == "success", json.dumps(h["status"])[:2000]
        path = h["outputs"][save]["tensors"][0]["path"]
        assert os.path.basename(path) == f"load_{i}.safetensors" and os.path.exists(path)
        outs[i] = load_file(path)["latent"]
    assert all(o.isfinite().all() for o in outs.values())
    assert torch.equal(outs[8], outs[0]) and torch.equal(outs[9], outs[1]), "same inputs and seed, other bits"
    assert len({o.sum().item() for o in outs.values()}) == 8, "different seeds should give different edits"
    q = server.get("/queue")
    assert not q["queue_running"] and not q["queue_pending"]


# ---------------------------------------------------------------------------------------------
# the memory bank in ComfyUI's cache, and "Free model and node cache"


def test_the_cached_memory_bank_is_released_by_free_memory(server):
    """ComfyUI's cache keeps Dragon DDIM Invert's output after the run, memory bank included, so a re-queue with new
    points skips the inversion. The frontend's "Free model and node cache" (POST /free with free_memory) must
    release it: the server's resident memory falls back by about the bank's size."""
    side, steps = 512, 50  # tiny SD1 UNet, latent 64x64: 6 decoder self-attention layers, about 3.4 MB a step
    g = Graph()
    model = g.node("DragonTest_TinyModel", family="sd1", seed=0)
    cond = g.node("DragonTest_RandomConditioning", family="sd1", seed=1)
    lat = g.node("DragonTest_SceneLatent", seed=77, width=side, height=side, channels=4, batch=1)
    inv = g.node("DragonDiffusion_DDIMInvert", model=[model, 0], positive=[cond, 0], latent=[lat, 0], steps=steps)
    save = g.node("DragonTest_SaveTensor", name="free_bank_noise", latent=[inv, 1])
    tokens = [(64 * 64, 32)] * 2 + [(32 * 32, 64)] * 2 + [(16 * 16, 64)] * 2  # (tokens, channels) of each layer
    bank = steps * sum(2 * n * c * 4 for n, c in tokens)  # K and V, fp32 on the CPU
    server.post("/free", {"free_memory": True, "unload_models": True})
    time.sleep(3)  # the prompt worker applies the flags within a second, then collects garbage
    before = _rss(server.proc.pid)["VmRSS"] * 1024
    h = server.run_ok(g.prompt())
    assert _tensor(h, save).isfinite().all()
    time.sleep(1)
    kept = _rss(server.proc.pid)["VmRSS"] * 1024
    server.post("/free", {"free_memory": True, "unload_models": True})
    deadline = time.time() + 20
    while True:
        time.sleep(1)
        after = _rss(server.proc.pid)["VmRSS"] * 1024
        if kept - after >= 0.8 * bank or time.time() > deadline:
            break
    mib = 2 ** 20
    print(f"\nmemory bank {bank / mib:.0f} MiB: server RSS {before / mib:.0f} MiB before, {kept / mib:.0f} MiB "
          f"after the inversion (cached), {after / mib:.0f} MiB after /free")
    assert kept - before >= 0.8 * bank, (before, kept, bank)  # the cached output holds the bank
    assert kept - after >= 0.8 * bank, (kept, after, bank)  # and /free gives it back

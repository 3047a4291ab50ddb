"""Dragon DDIM Invert through a real ComfyUI server, on tiny models."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from graph import Graph

PACK_NODES = {"DragonDiffusion_DDIMInvert"}


def _tensor(server, history, node_id, key="latent"):
    path = history["outputs"][node_id]["tensors"][0]["path"]
    return load_file(path)[key]


def test_server_lists_the_pack_nodes(server):
    info = server.get("/object_info")
    assert PACK_NODES <= set(info)
    inv = info["DragonDiffusion_DDIMInvert"]
    assert inv["python_module"].startswith("custom_nodes.")
    assert inv["input"]["required"]["steps"][1]["default"] == 50


def _round_trip_graph(family: str, steps: int = 50):
    g = Graph()
    model = g.node("DragonTest_TinyModel", family=family, seed=0)
    cond = g.node("DragonTest_RandomConditioning", family=family, seed=1)
    lat = g.node("DragonTest_SceneLatent", seed=3, width=64, height=64, channels=4, batch=1)
    inv = g.node("DragonDiffusion_DDIMInvert", model=[model, 0], positive=[cond, 0], latent=[lat, 0], steps=steps)
    common = dict(model=[model, 0], positive=[cond, 0], negative=[cond, 0], cfg=1.0, sampler_name="ddim",
                  scheduler="ddim_uniform", steps=steps, start_at_step=0, end_at_step=10000,
                  return_with_leftover_noise="disable", noise_seed=7)
    back = g.node("KSamplerAdvanced", add_noise="disable", latent_image=[inv, 1], **common)
    fresh = g.node("KSamplerAdvanced", add_noise="enable", latent_image=[lat, 0], **common)
    ids = {}
    for name, src in (("source", lat), ("recon", back), ("fresh", fresh)):
        ids[name] = g.node("DragonTest_SaveTensor", name=f"rt_{family}_{name}", latent=[src, 0])
    ids["noise"] = g.node("DragonTest_SaveTensor", name=f"rt_{family}_noise", latent=[inv, 1])
    return g.prompt(), ids


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_invert_then_ddim_reconstructs_the_source(server, family):
    prompt, ids = _round_trip_graph(family)
    log_before = len(server.log())
    h = server.run_ok(prompt)
    src, rec, fresh, noise = (_tensor(server, h, ids[k]) for k in ("source", "recon", "fresh", "noise"))
    err_rec = (rec - src).pow(2).mean().sqrt().item()
    err_fresh = (fresh - src).pow(2).mean().sqrt().item()
    print(f"{family}: RMSE inverted->DDIM {err_rec:.5f}, fresh noise->DDIM {err_fresh:.5f}, "
          f"ratio {err_fresh / err_rec:.1f}x")
    assert err_rec * 10 <= err_fresh
    assert noise.shape == src.shape and not torch.allclose(noise, src)
    new_log = server.log()[log_before:]
    assert "Traceback" not in new_log and "!!! Exception" not in new_log, new_log[-3000:]


def _invert_graph(family="sd1", channels=4, steps=10, batch=1):
    g = Graph()
    model = g.node("DragonTest_TinyModel", family=family, seed=0)
    cond = g.node("DragonTest_RandomConditioning", family="sd1", seed=1)
    lat = g.node("DragonTest_SceneLatent", seed=3, width=64, height=64, channels=channels, batch=batch)
    inv = g.node("DragonDiffusion_DDIMInvert", model=[model, 0], positive=[cond, 0], latent=[lat, 0], steps=steps)
    g.node("DragonTest_SaveTensor", name="bad", latent=[inv, 1])
    return g.prompt()


@pytest.mark.parametrize("kwargs,expect", [
    (dict(channels=16), ["Dragon DDIM Invert", "'latent'", "16 channels", "4-channel"]),
    (dict(batch=2), ["Dragon DDIM Invert", "'latent'", "batch of 2"]),
    (dict(family="dit"), ["Dragon DDIM Invert", "'model'", "Lumina 2 / Z-Image", "NextDiT", "FLUX.1"]),
])
def test_invert_bad_input_is_a_clear_node_error(server, kwargs, expect):
    h = server.run(_invert_graph(**kwargs))
    err = server.error_of(h)
    assert err["node_type"] == "DragonDiffusion_DDIMInvert"
    for piece in expect:
        assert piece in err["exception_message"], err["exception_message"]
    # the server keeps working
    server.run_ok(_invert_graph(steps=2))


def test_invert_steps_below_one_is_rejected_by_validation(server):
    from conftest import PromptError

    with pytest.raises(PromptError) as e:
        server.submit(_invert_graph(steps=0))
    body = e.value.body
    errs = [err for ne in body["node_errors"].values() for err in ne["errors"]]
    assert any(err["extra_info"]["input_name"] == "steps" for err in errs), body

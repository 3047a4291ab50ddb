"""Test harness: real ComfyUI, in-process and as a server, with this pack loaded by ComfyUI itself.

The environment comes from scripts/dev-env (.venv + .comfyui with the pack linked into
custom_nodes). The repository root is never put ahead of ComfyUI on sys.path: the pack's own
`nodes/` package would shadow ComfyUI's `nodes.py`.
"""
from __future__ import annotations

import asyncio
import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TEST_NODES = REPO / "tests" / "comfy_test_nodes"
TOY_NODES = REPO / "toy"

sys.path.insert(0, str(REPO / "scripts"))
import comfy_server  # noqa: E402  (scripts/comfy_server.py: starting ComfyUI and its HTTP API)
from comfy_server import PromptError, Server  # noqa: E402,F401  (tests import these from conftest)

COMFY = comfy_server.COMFY  # .comfyui, or DRAGON_COMFYUI's checkout (scripts/dev-env 0.33)
PACK_DIR = COMFY / "custom_nodes" / "comfyui-dragondiffusion"

os.environ.setdefault("OMP_NUM_THREADS", "1")
# the tests judge the shipped toy weights, never a candidate a developer is evaluating
os.environ.pop("DRAGON_TOY_WEIGHTS", None)


def pytest_configure(config):
    if not (COMFY / "main.py").exists() or not PACK_DIR.exists():
        pytest.exit("The test environment is missing: run scripts/dev-env (or scripts/test).", returncode=2)


def _import_file(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


@dataclass
class InProcess:
    pack: object  # the pack's top-level module as ComfyUI imported it
    tiny: object  # tests/comfy_test_nodes/dragon_testing/tiny.py
    nodes: object  # ComfyUI's nodes.py

    def module(self, dotted: str):
        """A submodule of the pack, e.g. 'nodes.invert' or 'dragon_core.masks'."""
        return sys.modules[f"{self.pack.__name__}.{dotted}"]

    def inverted_scene(self, model_seed: int, cond_seed: int, scene_seed: int, width: int, height: int, steps: int):
        """(model, cond, latent, inversion) on a tiny SD1 model, made under inference mode as ComfyUI's
        executor does (the weights become inference tensors)."""
        import torch

        with torch.inference_mode():
            model = self.tiny.tiny_sd1(model_seed)
            cond = self.tiny.random_conditioning("sd1", cond_seed)
            lat = self.tiny.scene_latent(scene_seed, width, height)
            inv, _ = self.module("nodes.invert").run_inversion(model, cond, lat, steps)
        return model, cond, lat, inv


@pytest.fixture(scope="session")
def comfy() -> InProcess:
    """ComfyUI imported in-process on the CPU, with this pack loaded through its own loader."""
    if str(COMFY) not in sys.path:
        sys.path.insert(0, str(COMFY))
    os.chdir(COMFY)
    import utils.extra_config  # noqa: F401  ComfyUI's utils package must be imported before nodes.py
    from comfy.cli_args import args

    args.cpu = True
    args.disable_api_nodes = True
    import torch

    torch.set_num_threads(1)
    import nodes

    ok = asyncio.run(nodes.load_custom_node(str(PACK_DIR)))
    assert ok, "ComfyUI failed to load the pack (see the log above for the import error)"
    pack = sys.modules[str(PACK_DIR).replace(".", "_x_")]
    # load every submodule so module() can find them
    for sub in ("nodes", "dragon_core"):
        for f in (REPO / sub).glob("*.py"):
            if f.stem != "__init__":
                __import__(f"{pack.__name__}.{sub}.{f.stem}")
    tiny = _import_file("dragon_testing_tiny", TEST_NODES / "dragon_testing" / "tiny.py")
    return InProcess(pack=pack, tiny=tiny, nodes=nodes)


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> Server:
    """A real ComfyUI server (main.py --cpu) with the pack, the test-only nodes and the toy model's nodes."""
    try:
        # a first visit of the frontend (tutorial not completed) opens the template browser over a blank
        # graph, where the browser test's clicks could load a template; a returning user gets the default graph
        srv = comfy_server.start(tmp_path_factory.mktemp("comfy"), [TEST_NODES, TOY_NODES],
                                 settings={"Comfy.TutorialCompleted": True})
    except comfy_server.ServerStartError as e:
        pytest.fail(str(e))
    yield srv
    srv.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    srv = item.funcargs.get("server") if hasattr(item, "funcargs") else None
    if rep.failed and isinstance(srv, Server):
        rep.sections.append(("ComfyUI server log (last 8000 chars)", srv.log()[-8000:]))

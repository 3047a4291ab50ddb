"""Test harness: real ComfyUI, in-process and as a server, with this pack loaded by ComfyUI itself.

The environment comes from scripts/dev-env (.venv + .comfyui with the pack linked into
custom_nodes). The repository root is never put ahead of ComfyUI on sys.path: the pack's own
`nodes/` package would shadow ComfyUI's `nodes.py`.
"""
from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
COMFY = REPO / ".comfyui"
PACK_DIR = COMFY / "custom_nodes" / "comfyui-dragondiffusion"
TEST_NODES = REPO / "tests" / "comfy_test_nodes"

os.environ.setdefault("OMP_NUM_THREADS", "1")


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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PromptError(Exception):
    def __init__(self, body: dict):
        self.body = body
        super().__init__(json.dumps(body)[:4000])


@dataclass
class Server:
    url: str
    log_path: Path
    output_dir: Path
    input_dir: Path
    proc: subprocess.Popen

    def get(self, path: str) -> dict:
        with urllib.request.urlopen(self.url + path, timeout=30) as r:
            return json.loads(r.read())

    def post(self, path: str, body: dict) -> dict:
        req = urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                raw = r.read()
                return json.loads(raw) if raw else {}
        except urllib.error.HTTPError as e:
            raise PromptError(json.loads(e.read() or b"{}")) from None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def submit(self, prompt: dict) -> str:
        return self.post("/prompt", {"prompt": prompt, "client_id": str(uuid.uuid4())})["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 300) -> dict:
        end = time.time() + timeout
        while time.time() < end:
            h = self.get(f"/history/{prompt_id}")
            if prompt_id in h and h[prompt_id].get("status", {}).get("completed") is not None:
                return h[prompt_id]
            if self.proc.poll() is not None:
                raise RuntimeError("ComfyUI server died")
            time.sleep(0.1)
        raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout}s")

    def run(self, prompt: dict, timeout: float = 300) -> dict:
        """Submit and wait; returns the history entry (check ['status']['status_str'])."""
        return self.wait(self.submit(prompt), timeout)

    def run_ok(self, prompt: dict, timeout: float = 300) -> dict:
        h = self.run(prompt, timeout)
        if h["status"]["status_str"] != "success":
            raise AssertionError("prompt failed: " + json.dumps(h["status"]["messages"])[:4000])
        return h

    def error_of(self, history: dict) -> dict:
        for kind, data in history["status"]["messages"]:
            if kind == "execution_error":
                return data
        raise AssertionError("prompt did not fail: " + json.dumps(history["status"])[:2000])


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> Server:
    """A real ComfyUI server (main.py --cpu) with the pack and the test-only nodes loaded."""
    tmp = tmp_path_factory.mktemp("comfy")
    extra = tmp / "extra_model_paths.yaml"
    extra.write_text(f"dragon_tests:\n  custom_nodes: {TEST_NODES}\n")
    out, inp, temp = tmp / "output", tmp / "input", tmp / "temp"
    for d in (out, inp, temp):
        d.mkdir()
    port = _free_port()
    log_path = tmp / "server.log"
    cmd = [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
           "--disable-auto-launch", "--disable-api-nodes", "--extra-model-paths-config", str(extra),
           "--output-directory", str(out), "--input-directory", str(inp), "--temp-directory", str(temp),
           "--database-url", f"sqlite:///{tmp / 'comfyui.db'}", "--preview-method", "latent2rgb"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    with open(log_path, "wb") as logf:
        proc = subprocess.Popen(cmd, cwd=COMFY, stdout=logf, stderr=subprocess.STDOUT, env=env)
    srv = Server(f"http://127.0.0.1:{port}", log_path, out, inp, proc)
    deadline = time.time() + 180
    while True:
        if proc.poll() is not None:
            pytest.fail("ComfyUI server exited during start-up:\n" + srv.log()[-6000:])
        try:
            srv.get("/system_stats")
            break
        except Exception:
            if time.time() > deadline:
                proc.kill()
                pytest.fail("ComfyUI server did not answer /system_stats:\n" + srv.log()[-6000:])
            time.sleep(0.3)
    yield srv
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    srv = item.funcargs.get("server") if hasattr(item, "funcargs") else None
    if rep.failed and isinstance(srv, Server):
        rep.sections.append(("ComfyUI server log (last 8000 chars)", srv.log()[-8000:]))

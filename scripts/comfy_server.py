"""Start the real ComfyUI (main.py) with this pack and talk to it over its HTTP API.

Shared by the tests (tests/conftest.py), the quality benchmark and the demo, so that all of them
run edits exactly as a user's ComfyUI does: through /prompt, the executor and the node classes.
"""
from __future__ import annotations

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
from typing import Iterable

REPO = Path(__file__).resolve().parents[1]
# DRAGON_COMFYUI: another ComfyUI checkout (scripts/dev-env 0.33 builds .comfyui-0.33), run by the Python that
# runs this (its venv holds that ComfyUI's requirements); default: .comfyui with .venv's Python
COMFY = (REPO / os.environ["DRAGON_COMFYUI"]).resolve() if os.environ.get("DRAGON_COMFYUI") else REPO / ".comfyui"
PYTHON = Path(sys.executable) if os.environ.get("DRAGON_COMFYUI") else REPO / ".venv" / "bin" / "python"


class PromptError(Exception):
    """ComfyUI refused a prompt (validation error); .body is its JSON answer."""

    def __init__(self, body: dict):
        self.body = body
        super().__init__(json.dumps(body)[:4000])


class ServerStartError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    log_path: Path
    output_dir: Path
    input_dir: Path
    proc: subprocess.Popen

    def get(self, path: str) -> dict:
        return json.loads(self.get_bytes(path))

    def get_bytes(self, path: str) -> bytes:
        with urllib.request.urlopen(self.url + path, timeout=30) as r:
            return r.read()

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
                raise RuntimeError("ComfyUI server died:\n" + self.log()[-4000:])
            time.sleep(0.05)
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

    def seconds(self, history: dict) -> float:
        """Execution time of a finished prompt, from ComfyUI's own timestamps (ms)."""
        ts = {kind: data.get("timestamp") for kind, data in history["status"]["messages"]}
        return (ts["execution_success"] - ts["execution_start"]) / 1000.0

    def image_paths(self, history: dict, node_id: str) -> list[Path]:
        out = history["outputs"].get(node_id, {}).get("images", [])
        return [self.output_dir / im.get("subfolder", "") / im["filename"] for im in out]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def start(workdir: Path, custom_node_dirs: Iterable[Path] = (), threads: int = 1, extra_args: Iterable[str] = (),
          timeout: float = 600, settings: dict | None = None) -> Server:
    """Start main.py --cpu on a free port with its own input/output/temp/user folders under workdir.

    custom_node_dirs are folders of extra custom-node packages (tests/comfy_test_nodes, toy/),
    loaded through --extra-model-paths-config like any user's extra folder. settings are written
    as the frontend's user settings (user/default/comfy.settings.json) before the start; the
    ComfyUI checkout's own user folder is never read or changed."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    out, inp, temp, user = workdir / "output", workdir / "input", workdir / "temp", workdir / "user"
    for d in (out, inp, temp, user):
        d.mkdir(exist_ok=True)
    if settings:
        (user / "default").mkdir(exist_ok=True)
        (user / "default" / "comfy.settings.json").write_text(json.dumps(settings, indent=2))
    port = free_port()
    cmd = [str(PYTHON), "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
           "--disable-auto-launch", "--disable-api-nodes",
           "--output-directory", str(out), "--input-directory", str(inp), "--temp-directory", str(temp),
           "--user-directory", str(user.resolve()),
           "--database-url", f"sqlite:///{workdir / 'comfyui.db'}", "--preview-method", "latent2rgb"]
    dirs = [str(Path(d).resolve()) for d in custom_node_dirs]
    if dirs:
        extra = workdir / "extra_model_paths.yaml"
        extra.write_text("dragon_extra:\n  custom_nodes: |\n" + "".join(f"    {d}\n" for d in dirs))
        cmd += ["--extra-model-paths-config", str(extra)]
    if os.environ.get("DRAGON_FRONTEND_ROOT"):  # another frontend build, e.g. an unpacked comfyui-frontend-package's static/
        cmd += ["--front-end-root", str(Path(os.environ["DRAGON_FRONTEND_ROOT"]).resolve())]
    cmd += list(extra_args)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    log_path = workdir / "server.log"
    with open(log_path, "wb") as logf:
        proc = subprocess.Popen(cmd, cwd=COMFY, stdout=logf, stderr=subprocess.STDOUT, env=env)
    srv = Server(f"http://127.0.0.1:{port}", log_path, out, inp, proc)
    deadline = time.time() + timeout
    while True:
        if proc.poll() is not None:
            raise ServerStartError("ComfyUI exited during start-up:\n" + srv.log()[-6000:])
        try:
            srv.get("/system_stats")
            return srv
        except Exception:
            if time.time() > deadline:
                proc.kill()
                raise ServerStartError("ComfyUI did not answer /system_stats:\n" + srv.log()[-6000:])
            time.sleep(0.3)


def ensure_environment() -> None:
    if not (COMFY / "main.py").exists() or not PYTHON.exists():
        sys.exit("The environment is missing: run scripts/dev-env first.")

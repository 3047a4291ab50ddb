"""The Dragon Mask/Point Editor in a real browser: headless Debian Chromium driven by Playwright.

The test starts the real ComfyUI server with the pack (the `server` fixture), opens its frontend
(comfyui-frontend-package 1.32.9), builds Load Image -> Dragon Mask/Point Editor -> SaveTensor, clicks
handle->target pairs and paints a brush stroke on the node's canvas at a graph zoom other than 1,
queues the prompt, and checks what the backend received. scripts/browser-env (run by scripts/test)
installs Debian's chromium and Playwright's Python package; nothing is downloaded by Playwright.
Without a browser the tests are SKIPPED with the reason, never passed.
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "tests" / "artifacts"
STATUS = REPO / ".cache" / "browser-env" / "status"
W, H = 128, 96
ZOOM = 1.25  # not 1: clicks must land on the same image pixels whatever the graph zoom
PAIRS = [((20, 30), (50, 40)), ((100, 70), (90, 20))]
STROKE = ((30.5, 60.5), (90.5, 60.5))  # image pixels, continuous coordinates
ERASE = ((100.5, 14.5), (116.5, 14.5))  # right-button stroke across the upstream mask
BOX = (96, 4, 120, 24)  # x0, y0, x1, y1: transparent in the PNG, so Load Image's MASK is 1 there
BRUSH = 6


def _chromium() -> str | None:
    """Debian's chromium on PATH, or the executable named by DRAGON_CHROMIUM."""
    if os.environ.get("DRAGON_CHROMIUM"):
        path = os.environ["DRAGON_CHROMIUM"]
        return path if os.path.isfile(path) and os.access(path, os.X_OK) else None
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _have_playwright() -> bool:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="session", autouse=True)  # autouse + session: checked before the server starts
def chromium() -> str:
    """Debian's chromium and Playwright, installed by scripts/browser-env if missing, or a SKIP with the reason."""
    if not (_chromium() and _have_playwright()):
        try:
            subprocess.run([str(REPO / "scripts" / "browser-env")], check=False, timeout=1200)
        except (OSError, subprocess.TimeoutExpired) as e:
            pytest.skip(f"browser test: scripts/browser-env could not run ({e})")
    chrome = _chromium()
    why = STATUS.read_text().strip() if STATUS.exists() else "scripts/browser-env left no status"
    if not chrome and os.environ.get("DRAGON_CHROMIUM"):
        pytest.skip(f"browser test: DRAGON_CHROMIUM={os.environ['DRAGON_CHROMIUM']} is not an executable")
    if not chrome:
        pytest.skip(f"browser test: Debian's chromium is not installed here ({why})")
    if not _have_playwright():
        pytest.skip(f"browser test: Playwright's Python package is not installed here ({why})")
    return chrome


@pytest.fixture(scope="module")
def page(chromium, server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        try:
            browser = p.chromium.launch(executable_path=chromium, headless=True,
                                        args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        except Exception as e:  # e.g. Ubuntu's chromium is a snap wrapper that cannot start in a container
            pytest.skip(f"browser test: {chromium} is installed but could not start: {str(e)[:300]}")
        pg = browser.new_page(viewport={"width": 1400, "height": 1000}, device_scale_factor=1)
        errors: list[str] = []
        # errors of our extension only (the frontend itself logs blocked calls to api.comfy.org offline): its files are
        # web/js/dragon_*.js and web/js/editor/*.js
        ours = re.compile(r"dragon_(editor|guidance|nodes)|/js/editor/")
        pg.on("pageerror", lambda e: errors.append(str(e)) if ours.search(f"{e} {e.stack}") else None)
        pg.on("console", lambda m: errors.append(m.text) if m.type == "error" and ours.search(f"{m.text} {m.location}") else None)
        pg.goto(server.url)
        pg.wait_for_function("!!(window.app && window.app.graph && window.LiteGraph && "
                             "window.LiteGraph.registered_node_types['DragonDiffusion_MaskPointEditor'])", timeout=120_000)
        # the frontend loads its default workflow after registering the nodes (the server fixture marks the
        # first-visit tutorial as done, so no template browser opens instead); on a slow machine that load
        # can land after a test has built its graph and replace it, so wait for it before building
        pg.wait_for_function("window.app.graph._nodes && window.app.graph._nodes.length > 0", timeout=120_000)
        pg.wait_for_timeout(1500)
        dialogs = pg.evaluate("Array.from(document.querySelectorAll('.p-dialog')).map(d => d.textContent.slice(0, 80))")
        assert not dialogs, f"a frontend dialog covers the graph, clicks would land on it: {dialogs}"
        pg.evaluate(FRESH_GRAPH)
        pg.dragon_errors = errors
        yield pg
        browser.close()


def _test_image(path: Path, w: int, h: int, box=None) -> None:
    y, x = np.mgrid[0:h, 0:w]
    alpha = np.full((h, w), 255)
    if box:
        alpha[box[1]:box[3], box[0]:box[2]] = 0
    rgba = np.stack([(x * 255 // max(1, w - 1)), (y * 255 // max(1, h - 1)), ((x + y) % 64) * 4, alpha], -1)
    Image.fromarray(rgba.astype(np.uint8), "RGBA").save(path)


# window.dragonClear(): clear the graph, and number the nodes made next from a new base. Frontend 1.49.6 keeps widget
# values by node id across a clear (a new node that got an old node's id showed that node's values: a new editor
# its points, a new CLIP Text Encode its text; 1.58.1 does not), and each test builds its graph after a clear.
FRESH_GRAPH = """() => { window.dragonClear = () => { const g = app.graph; g.clear();
  window.dragonIdBase = (window.dragonIdBase || 0) + 1000;
  g.last_node_id = window.dragonIdBase; if (g.state) g.state.lastNodeId = window.dragonIdBase; return g; }; }"""

BUILD = """([zoom]) => {
  const g = dragonClear();
  const li = LiteGraph.createNode("LoadImage"); li.pos = [0, 0]; g.add(li);
  li.widgets.find(w => w.name === "image").value = "dragon_browser.png";
  const ed = LiteGraph.createNode("DragonDiffusion_MaskPointEditor"); ed.pos = [340, 0]; g.add(ed);
  ed.setSize([480, 500]);
  li.connect(0, ed, 0); li.connect(1, ed, 1);
  const sv = LiteGraph.createNode("DragonTest_SaveTensor"); sv.pos = [900, 0]; g.add(sv);
  sv.widgets.find(w => w.name === "name").value = "browser_mask";
  ed.connect(0, sv, sv.inputs.findIndex(i => i.name === "mask"));
  app.canvas.ds.scale = zoom; app.canvas.ds.offset = [20, 110];
  app.canvas.setDirty(true, true);
  return {editor: String(ed.id), save: String(sv.id)};
}"""

EDITOR = "(id) => app.graph.getNodeById(Number(id))"



def _editor(pg, nid: str):
    """The editor of node `nid` in the open graph, as a locator (not the first `.dragon-canvas` on the page, which
    need not be this node's: the page holds an editor per editor node of every open workflow tab)."""
    tag = f"e{time.monotonic_ns()}"
    pg.evaluate("([id, tag]) => app.graph.getNodeById(Number(id)).dragonEditor.root.setAttribute('data-dragon-test', tag)",
                [nid, tag])
    return pg.locator(f'[data-dragon-test="{tag}"]')


def _picture_into(pg, picture: str, node_type: str, size: list[int]) -> str:
    """A new graph: Load Image (`picture`) -> a node with the editor's canvas, at zoom 1; that node's id."""
    return pg.evaluate("""([picture, type, size]) => { const g = dragonClear();
        const li = LiteGraph.createNode("LoadImage"); li.pos = [0, 0]; g.add(li);
        li.widgets.find(w => w.name === "image").value = picture;
        const n = LiteGraph.createNode(type); n.pos = [340, 0]; g.add(n);
        n.setSize(size); li.connect(0, n, 0);
        app.canvas.ds.scale = 1; app.canvas.ds.offset = [20, 110]; app.canvas.setDirty(true, true);
        return String(n.id); }""", [picture, node_type, size])


def _state(pg, nid: str) -> dict:
    return pg.evaluate("""(id) => {
      const n = app.graph.getNodeById(Number(id));
      if (!n) throw new Error(`node ${id} is gone: the graph was replaced (${app.graph._nodes.length} nodes: ` +
                              app.graph._nodes.map(m => m.type).join(", ") + ")");
      const e = n.dragonEditor;
      const v = (k) => (n.widgets.find(w => w.name === k) || {}).value;
      const lay = e.layers.mask; let painted = 0;
      if (lay.w > 1) { const d = lay.data.getContext("2d").getImageData(0, 0, lay.w, lay.h).data;
        for (let i = 3; i < d.length; i += 4) painted += d[i] > 0; }
      const up = lay.upstream ? [lay.upstream.width, lay.upstream.height] : null;
      // the upstream overlay's alpha at the middle of BOX and in a corner outside it
      const upAt = (x, y) => lay.upstream ? lay.upstream.getContext("2d").getImageData(x, y, 1, 1).data[3] : null;
      // what the editor's canvas shows at an image pixel (RGB)
      const c = e.canvas; const k = c.width / Math.max(1, e.W);
      const shown = (x, y) => Array.from(c.getContext("2d").getImageData(Math.floor((x + 0.5) * k),
                                                                           Math.floor((y + 0.5) * k), 1, 1).data).slice(0, 3);
      return {W: e.W, H: e.H, points: e.points, painted, upstream: up, brush: e.brush, tool: e.tool, hint: e.hint.textContent,
              upBox: upAt(108, 14), upOut: upAt(2, 2), shownBox: e.W ? shown(108, 14) : null,
              shownOut: e.W ? shown(2, 2) : null,
              widgets: {points: v("points"), points_size: v("points_size"),
              editor_mask: v("editor_mask"), editor_reference: v("editor_reference")},
              notes: Array.from(document.querySelectorAll(".dragon-note")).map(d => d.textContent)};
    }""", nid)


def _wait(pg, nid: str, cond, what: str, timeout: float = 30) -> dict:
    end = time.time() + timeout
    while True:
        st = _state(pg, nid)
        if cond(st):
            return st
        if time.time() > end:
            raise AssertionError(f"timed out waiting for {what}: {json.dumps(st)[:1500]}")
        time.sleep(0.1)


def _settled_box(pg, locator, timeout: float = 10) -> dict:
    """The element's bounding box once the node's layout has stopped changing (the Nodes 2.0 renderer sizes a
    node over a few frames after it is added)."""
    end = time.time() + timeout
    box = locator.bounding_box()
    while time.time() < end:
        pg.wait_for_timeout(250)
        again = locator.bounding_box()
        if again == box:
            return box
        box = again
    raise AssertionError(f"the editor canvas kept moving: {box}")


def _screen(box: dict, x: float, y: float) -> tuple[float, float]:
    """Image pixel coordinates (continuous) -> screen coordinates on the editor canvas."""
    return box["x"] + x * box["width"] / W, box["y"] + y * box["height"] / H


def _queue_and_wait(server, pg) -> dict:
    before = set(server.get("/history"))
    pg.evaluate("async () => { await app.queuePrompt(0, 1); }")
    end = time.time() + 120
    while time.time() < end:
        new = {k: v for k, v in server.get("/history").items() if k not in before}
        done = [v for v in new.values() if v.get("status", {}).get("completed") is not None]
        if done:
            return done[0]
        time.sleep(0.2)
    raise AssertionError("the queued prompt did not finish")


def _seg_dist(px: np.ndarray, py: np.ndarray, a, b) -> np.ndarray:
    ax, ay = a
    bx, by = b
    t = np.clip(((px - ax) * (bx - ax) + (py - ay) * (by - ay)) / ((bx - ax) ** 2 + (by - ay) ** 2), 0, 1)
    return np.hypot(px - (ax + t * (bx - ax)), py - (ay + t * (by - ay)))


def _node_clip(pg, nid: str) -> dict:
    return pg.evaluate("""(id) => {
      const n = app.graph.getNodeById(Number(id)); const ds = app.canvas.ds;
      const r = app.canvas.canvas.getBoundingClientRect(); const th = LiteGraph.NODE_TITLE_HEIGHT;
      const [x, y] = ds.convertOffsetToCanvas([n.pos[0], n.pos[1] - th]);
      return {x: r.left + x - 4, y: r.top + y - 4, width: n.size[0] * ds.scale + 8, height: (n.size[1] + th) * ds.scale + 8};
    }""", nid)


def test_editor_points_and_brush_reach_the_backend_and_survive_save_and_load(page, server, capsys):
    pg = page
    _test_image(server.input_dir / "dragon_browser.png", W, H, BOX)
    _test_image(server.input_dir / "dragon_browser_2x.png", 2 * W, 2 * H)
    ids = pg.evaluate(BUILD, [ZOOM])
    ed, save = ids["editor"], ids["save"]
    # the image comes from the upstream Load Image before any run, and so does the mask painted in it (its
    # alpha: BOX is transparent), shown over the picture rather than as a hole in it
    st = _wait(pg, ed, lambda s: s["W"] == W and s["H"] == H and s["upBox"] == 255 and "Click a handle" in s["hint"],
               "the Load Image picture, its mask and the start hint on the editor canvas")
    assert st["upOut"] == 0, st
    canvas = _editor(pg, ed).locator(".dragon-canvas")
    box = canvas.bounding_box()
    assert box["width"] > W and abs(box["width"] / box["height"] - W / H) < 0.02, box
    # where the mask is, the picture is blended with the mask colour at the mask opacity (red, 0.45 by default)
    x, y = 108, 14
    pixel = np.array([x * 255 // (W - 1), y * 255 // (H - 1), ((x + y) % 64) * 4])

    def tinted(rgb, a=0.45):
        return (pixel * (1 - a) + np.array(rgb) * a).round()

    assert np.abs(np.array(st["shownBox"]) - tinted([255, 70, 70])).max() <= 6, st
    pg.evaluate("""(id) => { const n = app.graph.getNodeById(Number(id));
                   n.widgets.find(w => w.name === "mask_color").value = "green";
                   n.widgets.find(w => w.name === "mask_opacity").value = 0.8; }""", ed)
    _wait(pg, ed, lambda s: np.abs(np.array(s["shownBox"]) - tinted([51, 217, 77], 0.8)).max() <= 6,
          "the mask shown in green at 0.8")
    pg.evaluate("""(id) => { const n = app.graph.getNodeById(Number(id));
                   n.widgets.find(w => w.name === "mask_opacity").value = 0.45; }""", ed)
    pg.evaluate("""(id) => { const n = app.graph.getNodeById(Number(id));
                   n.widgets.find(w => w.name === "mask_color").value = "red"; }""", ed)
    # the wheel over the editor zooms the graph, as anywhere else
    scale0 = pg.evaluate("() => app.canvas.ds.scale")
    pg.mouse.move(*_screen(box, W / 2, H / 2))
    pg.mouse.wheel(0, -120)
    pg.wait_for_timeout(300)
    assert pg.evaluate("() => app.canvas.ds.scale") > scale0 * 1.01
    # and the middle button pans it
    off0 = pg.evaluate("() => Array.from(app.canvas.ds.offset)")
    pg.mouse.move(*_screen(box, W / 2, H / 2))
    pg.mouse.down(button="middle")
    pg.mouse.move(*_screen(box, W / 2 + 30, H / 2 + 20), steps=5)
    pg.mouse.up(button="middle")
    pg.wait_for_timeout(200)
    off1 = pg.evaluate("() => Array.from(app.canvas.ds.offset)")
    assert off1[0] > off0[0] + 5 and off1[1] > off0[1] + 3, (off0, off1)
    assert _state(pg, ed)["points"] == []  # the pan placed no point
    pg.evaluate("([z]) => { app.canvas.ds.scale = z; app.canvas.ds.offset = [20, 110]; app.canvas.setDirty(true, true); }",
                [ZOOM])
    pg.wait_for_timeout(300)
    box = canvas.bounding_box()

    # two handle->target pairs; the first target is placed off and dragged to its place
    (h1, t1), (h2, t2) = PAIRS
    pg.mouse.click(*_screen(box, h1[0] + 0.5, h1[1] + 0.5))
    pg.mouse.click(*_screen(box, 70.5, 10.5))
    pg.mouse.move(*_screen(box, 70.5, 10.5))
    pg.mouse.down()
    pg.mouse.move(*_screen(box, t1[0] + 0.5, t1[1] + 0.5), steps=6)
    pg.mouse.up()
    for x, y in (h2, t2):
        pg.mouse.click(*_screen(box, x + 0.5, y + 0.5))
    # a third pair, deleted with a right-click on its target
    pg.mouse.click(*_screen(box, 10.5, 85.5))
    pg.mouse.click(*_screen(box, 15.5, 88.5))
    pg.mouse.click(*_screen(box, 15.5, 88.5), button="right")
    st = _state(pg, ed)
    assert st["points"] == [list(p) for pair in PAIRS for p in pair], st

    # a brush stroke on the mask layer; the brush size steps by a quarter, or is typed
    _editor(pg, ed).locator("button", has_text="Mask").first.click()
    _editor(pg, ed).locator("button", has_text="+").first.click()
    assert _state(pg, ed)["brush"] == 20
    size = _editor(pg, ed).locator(".dragon-size").first
    size.fill(str(BRUSH))
    size.press("Enter")
    assert _state(pg, ed)["brush"] == BRUSH
    files_before = set((server.input_dir / "dragon_editor").glob("*.png")) if (server.input_dir / "dragon_editor").is_dir() else set()
    pg.mouse.move(*_screen(box, *STROKE[0]))
    pg.mouse.down()
    pg.mouse.move(*_screen(box, *STROKE[1]), steps=12)
    pg.mouse.up()
    pg.mouse.move(*_screen(box, *ERASE[0]))
    pg.mouse.down(button="right")
    pg.mouse.move(*_screen(box, *ERASE[1]), steps=6)
    pg.mouse.up(button="right")
    # the strokes are kept in the workflow (and its undo history) until a queue: nothing uploaded per stroke
    st = _wait(pg, ed, lambda s: s["widgets"]["editor_mask"].startswith("data:image/png;base64,"), "the strokes")
    pg.wait_for_timeout(500)
    files_now = set((server.input_dir / "dragon_editor").glob("*.png")) if (server.input_dir / "dragon_editor").is_dir() else set()
    assert files_now == files_before, "a brush stroke uploaded a file"
    assert st["widgets"]["points_size"] == f"{W}x{H}"

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "mask_point_editor.png"
    pg.screenshot(path=str(shot), clip=_node_clip(pg, ed))
    with capsys.disabled():
        print(f"\n[browser] screenshot of the Dragon Mask/Point Editor node: {shot}")
    assert shot.stat().st_size > 1000

    # queue: the backend gets exactly these points in image pixels and a mask covering the stroke
    h = _queue_and_wait(server, pg)
    assert h["status"]["status_str"] == "success", json.dumps(h["status"])[:3000]
    st = _state(pg, ed)
    assert st["widgets"]["editor_mask"].startswith("dragon_editor/"), st["widgets"]["editor_mask"][:80]
    uploaded = server.input_dir / st["widgets"]["editor_mask"]
    assert uploaded.is_file(), uploaded
    assert set((server.input_dir / "dragon_editor").glob("*.png")) - files_before == {uploaded}  # one upload
    got = h["outputs"][ed]["dragon_editor"][0]
    assert got["points"] == [[*hd, *tg] for hd, tg in PAIRS]
    assert (got["width"], got["height"]) == (W, H) and got["notes"] == []
    _wait(pg, ed, lambda s: s["W"] == W and s["upstream"] == [W, H], "the editor after the run, with the upstream mask")
    time.sleep(0.5)
    pg.screenshot(path=str(ARTIFACTS / "mask_point_editor_after_run.png"), clip=_node_clip(pg, ed))
    mask = load_file(h["outputs"][save]["tensors"][0]["path"])["mask"][0].numpy()
    assert mask.shape == (H, W)
    yy, xx = np.mgrid[0:H, 0:W]
    dist = _seg_dist(xx + 0.5, yy + 0.5, *STROKE)
    erased = _seg_dist(xx + 0.5, yy + 0.5, *ERASE)
    in_box = (xx >= BOX[0]) & (xx < BOX[2]) & (yy >= BOX[1]) & (yy < BOX[3])
    assert (mask[dist <= BRUSH - 1.5] > 0.5).all(), "the stroke is not covered"
    assert (mask[(dist >= BRUSH + 1.5) & ~in_box] == 0).all(), "the mask spills outside the stroke"
    assert (mask[in_box & (erased >= BRUSH + 1.5)] == 1).all(), "the upstream mask (Load Image's alpha) is lost"
    assert (mask[in_box & (erased <= BRUSH - 1.5)] == 0).all(), "the erase stroke did not cut the upstream mask"
    area = float((mask[~in_box] > 0.5).sum())
    want = 2 * BRUSH * 60 + math.pi * BRUSH ** 2
    assert abs(area - want) < 0.12 * want, (area, want)

    # what a queue sends, and the editor's own state, survive save -> JSON -> load
    sent = pg.evaluate("async (id) => (await app.graphToPrompt()).output[id].inputs", ed)
    workflow = pg.evaluate("() => JSON.stringify(app.graph.serialize())")
    assert len(workflow) < 20_000, "masks must travel as uploaded files, not as strings in the workflow"
    before = _state(pg, ed)
    pg.evaluate("async (wf) => { app.graph.clear(); await app.loadGraphData(JSON.parse(wf)); "
                "app.canvas.ds.scale = 0.9; app.canvas.setDirty(true, true); }", workflow)
    after = _wait(pg, ed, lambda s: s["painted"] > 0 and len(s["points"]) == 4 and s["W"] == W,
                  "the reloaded editor state")
    assert after["points"] == before["points"] and after["widgets"] == before["widgets"]
    assert after["painted"] == before["painted"]
    sent_again = pg.evaluate("async (id) => (await app.graphToPrompt()).output[id].inputs", ed)
    for k in ("points", "points_size", "editor_mask", "editor_reference"):
        assert sent_again[k] == sent[k], k
    assert json.loads(sent["points"]) == [{"x": x, "y": y} for pair in PAIRS for (x, y) in pair]

    # a new image of another size: the points are rescaled, with a visible note
    pg.evaluate("""(id) => { const ed = app.graph.getNodeById(Number(id));
                   const li = ed.getInputNode(0); li.widgets.find(w => w.name === "image").value = "dragon_browser_2x.png";
                   app.canvas.setDirty(true, true); }""", ed)
    big = _wait(pg, ed, lambda s: s["W"] == 2 * W and s["widgets"]["points_size"] == f"{2 * W}x{2 * H}",
                "the rescale to the new image")
    assert big["points"] == [[2 * x, 2 * y] for pair in PAIRS for (x, y) in pair]
    assert any("rescaled" in n for n in big["notes"]), big["notes"]
    assert _editor(pg, ed).locator(".dragon-note", has_text="rescaled").first.is_visible()

    # the buttons: Clear mask (the Mask tool is selected) and Clear pts empty the state that is sent
    _editor(pg, ed).locator("button", has_text="Clear mask").first.click()
    _editor(pg, ed).locator("button", has_text="Clear pts").first.click()
    time.sleep(0.5)  # past the upload delay: a cancelled upload must not bring the strokes back
    st = _state(pg, ed)
    assert st["painted"] == 0 and st["points"] == [], st
    assert st["widgets"]["editor_mask"] == "" and json.loads(st["widgets"]["points"]) == [], st["widgets"]
    assert not pg.dragon_errors, pg.dragon_errors


def test_shipped_workflows_load_in_the_frontend_with_no_node_over_another(page):
    """Each template, loaded by the real frontend: every node is at least as large as the frontend needs for its
    widgets (so none hides another's), no two nodes overlap, and each group holds only the nodes of its step."""
    pg = page
    for path in sorted((REPO / "workflows").glob("*.json")):
        rects = pg.evaluate("""async (wf) => {
            app.graph.clear();
            await app.loadGraphData(wf);
            return app.graph._nodes.map(n => { const need = n.computeSize();
                return {id: n.id, type: n.type, x: n.pos[0], y: n.pos[1], w: n.size[0], h: n.size[1],
                        needW: need[0], needH: need[1]}; });
        }""", json.loads(path.read_text()))
        assert len(rects) == len(json.loads(path.read_text())["nodes"]), path.name
        for r in rects:
            assert r["w"] >= r["needW"] - 1 and r["h"] >= r["needH"] - 1, (path.name, r)
        for a in rects:
            for b in rects:
                if a["id"] < b["id"]:
                    apart = (a["x"] + a["w"] <= b["x"] or b["x"] + b["w"] <= a["x"] or
                             a["y"] + a["h"] <= b["y"] or b["y"] + b["h"] <= a["y"])
                    assert apart, (path.name, a["type"], b["type"])
    pg.evaluate("() => document.querySelectorAll('.p-dialog-close-button').forEach(b => b.click())")


# Where every node of an open workflow is on the screen, and every group: in Nodes 2.0 the node's own element (its
# real size, title included), in the classic renderer its canvas box (title bar included); groups from the canvas
# transform. Polled until two readings agree (Nodes 2.0 sizes nodes over a few frames).
_TEMPLATE_RECTS = """async ([wf, name]) => {
  await app.loadGraphData(wf, true, true, name);
  const read = () => {
    const c = app.canvas, ds = c.ds, cr = c.canvas.getBoundingClientRect();
    const at = (x, y) => [cr.left + (x + ds.offset[0]) * ds.scale, cr.top + (y + ds.offset[1]) * ds.scale];
    const vue = !!app.extensionManager.setting.get('Comfy.VueNodes.Enabled');
    const nodes = app.graph._nodes.map(n => {
      const el = vue ? document.querySelector(`.lg-node[data-node-id="${n.id}"]`) : null;
      if (el) { const b = el.getBoundingClientRect(); return {id: n.id, type: n.type, r: [b.left, b.top, b.right, b.bottom]}; }
      const [a, b] = at(n.pos[0], n.pos[1] - LiteGraph.NODE_TITLE_HEIGHT), [x, y] = at(n.pos[0] + n.size[0], n.pos[1] + n.size[1]);
      return {id: n.id, type: n.type, r: [a, b, x, y], canvas: true};
    });
    const groups = app.graph._groups.map(g => { const [a, b] = at(g.pos[0], g.pos[1]), [x, y] = at(g.pos[0] + g.size[0], g.pos[1] + g.size[1]);
      return {title: g.title, r: [a, b, x, y]}; });
    return {vue, nodes, groups, scale: ds.scale};
  };
  let last = null;
  for (let k = 0; k < 40; k++) {
    await new Promise(r => setTimeout(r, 150));
    const now = read();
    if (last && JSON.stringify(now) === JSON.stringify(last)) return now;
    last = now;
  }
  return last;
}"""


@pytest.mark.parametrize("renderer", ["classic", "nodes2"])
def test_shipped_templates_open_with_nodes_inside_their_groups_and_apart(page, renderer):
    """Each template as the frontend opens it (a new workflow tab), in either renderer: no node covers another,
    and every node lies inside the group of its step. Nodes 2.0 draws nodes larger than the classic canvas; it
    opened the templates scrambled (groups and sizes scaled, positions not) until they declared their layout."""
    import sys

    sys.path.insert(0, str(REPO / "scripts"))
    from make_workflows import GROUPS

    pg = page
    pg.evaluate("async (v) => { await app.extensionManager.setting.set('Comfy.VueNodes.Enabled', v); }", renderer == "nodes2")
    try:
        for k, path in enumerate(sorted((REPO / "workflows").glob("*.json"))):
            res = pg.evaluate(_TEMPLATE_RECTS, [json.loads(path.read_text()), f"{renderer} {k} {path.stem}"])
            assert res["vue"] == (renderer == "nodes2")
            nodes, groups = res["nodes"], {g["title"]: g["r"] for g in res["groups"]}
            if renderer == "nodes2":
                assert not any(n.get("canvas") for n in nodes), (path.name, "a node without its Nodes 2.0 element")
            for i, a in enumerate(nodes):
                for b in nodes[i + 1:]:
                    A, B = a["r"], b["r"]
                    apart = A[2] <= B[0] + 1 or B[2] <= A[0] + 1 or A[3] <= B[1] + 1 or B[3] <= A[1] + 1
                    assert apart, (renderer, path.name, a["type"], b["type"], A, B)
            for title_, _, types in GROUPS:
                for n in nodes:
                    if n["type"] in types:
                        G, R = groups[title_], n["r"]
                        inside = R[0] >= G[0] - 1 and R[1] >= G[1] - 1 and R[2] <= G[2] + 1 and R[3] <= G[3] + 1
                        assert inside, (renderer, path.name, n["type"], "outside", title_, R, G)
    finally:
        pg.evaluate("async () => { await app.extensionManager.setting.set('Comfy.VueNodes.Enabled', false); }")


def test_guidance_setup_shows_only_the_inputs_of_its_mode(page):
    """Switching the mode hides the widgets that do not apply to it (and folds the expert ones until 'Show
    Advanced'); hidden widgets keep their values and are still sent, so a graph runs the same."""
    pg = page
    state = pg.evaluate("""async () => {
        dragonClear();
        const n = LiteGraph.createNode("DragonDiffusion_GuidanceSetup");
        app.graph.add(n);
        const mode = n.widgets.find(w => w.name === "mode");
        const visible = () => n.widgets.filter(w => n.isWidgetVisible(w)).map(w => w.name);
        const seen = {};
        for (const m of ["move", "drag", "paste", "landmark"]) {
            mode.value = m; mode.callback?.(m);
            seen[m] = visible();
        }
        const shown = (name) => n.widgets.find(w => w.name === name)._displayValue;
        seen.display = {energy_scale: shown("energy_scale"), keep_background: shown("keep_background"),
                        offset_x: shown("offset_x")};
        n.widgets.find(w => w.name === "energy_scale").value = 40;
        seen.display.energy_40 = shown("energy_scale");
        n.widgets.find(w => w.name === "energy_scale").value = -1;
        n.showAdvanced = true;
        seen.paste_advanced = (() => { mode.value = "paste"; mode.callback?.("paste"); return visible(); })();
        n.widgets.find(w => w.name === "offset_x").value = 7;
        mode.value = "drag"; mode.callback?.("drag");
        const sent = (await app.graphToPrompt()).output[String(n.id)].inputs;
        return {seen, sent, height: n.size[1], need: n.computeSize()[1]};
    }""")
    seen = state["seen"]
    assert seen["move"][:4] == ["mode", "offset_x", "offset_y", "scale"] and "energy_scale" in seen["move"]
    assert "w_edit" not in seen["move"] and "anchor_end" not in seen["move"]  # folded until Show Advanced
    assert "offset_x" not in seen["drag"] and "scale" not in seen["drag"]
    assert "offset_x" in seen["paste"] and "centred_features" not in seen["paste"]
    assert "centred_features" in seen["paste_advanced"] and "vacated_noise" not in seen["paste_advanced"]
    assert "monotone_energy" not in seen["paste_advanced"] and "keep_background" in seen["paste_advanced"]
    assert "offset_x" not in seen["landmark"] and "schedule" in seen["landmark"]
    assert state["sent"]["offset_x"] == 7 and state["sent"]["mode"] == "drag"  # hidden, still sent
    assert state["height"] >= state["need"] - 1
    # -1 reads as what it means
    assert seen["display"] == {"energy_scale": "auto", "keep_background": "off", "offset_x": "0",
                               "energy_40": "40.0"}, seen["display"]


def test_each_point_is_one_step_of_comfyui_undo_and_redo(page, server):
    """Clicks on the editor's canvas stop there, so ComfyUI's change tracker never saw them: one Ctrl+Z removed
    two pairs and redo brought back one. Each point placed (or moved, deleted) is now one undo step."""
    pg = page
    _test_image(server.input_dir / "dragon_browser.png", W, H, BOX)
    ids = pg.evaluate(BUILD, [ZOOM])
    ed = ids["editor"]
    _wait(pg, ed, lambda s: s["W"] == W and s["H"] == H, "the Load Image picture on the editor canvas")
    box = _editor(pg, ed).locator(".dragon-canvas").bounding_box()
    pts = [p for pair in PAIRS for p in pair]
    # the graph was built by script: load it once, as a user's graph is (a load renumbers the nodes' execution
    # order, which the tracker compares), and make that the tracker's start
    pg.evaluate("""async () => { await app.loadGraphData(app.graph.serialize());
                                 app.extensionManager.workflow.activeWorkflow.changeTracker.checkState(); }""")
    _wait(pg, ed, lambda s: s["W"] == W and s["H"] == H, "the picture after the reload")
    box = _editor(pg, ed).locator(".dragon-canvas").bounding_box()
    for x, y in pts:
        pg.mouse.click(*_screen(box, x + 0.5, y + 0.5))
    assert _state(pg, ed)["points"] == [list(p) for p in pts]

    def undo_redo(key: str, want: int) -> None:
        pg.mouse.click(5, 995)  # focus the page, not a text box (the tracker ignores keys typed into inputs)
        pg.keyboard.press(key)
        _wait(pg, ed, lambda s: len(s["points"]) == want, f"{want} points after {key}")

    undo_redo("Control+z", 3)
    undo_redo("Control+z", 2)
    undo_redo("Control+y", 3)
    assert _state(pg, ed)["points"] == [list(p) for p in pts[:3]]
    assert json.loads(_state(pg, ed)["widgets"]["points"]) == [{"x": x, "y": y} for x, y in pts[:3]]

    # each brush stroke is one step too: the strokes live in the widget until a queue, so undo brings them back
    _editor(pg, ed).locator("button", has_text="Mask").first.click()

    def stroke(y: float) -> None:
        pg.mouse.move(*_screen(box, 10.5, y))
        pg.mouse.down()
        pg.mouse.move(*_screen(box, 60.5, y), steps=6)
        pg.mouse.up()

    stroke(70.5)
    one = _wait(pg, ed, lambda s: s["painted"] > 0, "the first stroke")["painted"]
    stroke(85.5)
    _wait(pg, ed, lambda s: s["painted"] > one, "the second stroke")

    def undo_redo_strokes(key: str, want: int) -> None:
        pg.mouse.click(5, 995)
        pg.keyboard.press(key)
        _wait(pg, ed, lambda s: s["painted"] == want, f"{want} painted pixels after {key}")

    undo_redo_strokes("Control+z", one)
    undo_redo_strokes("Control+z", 0)
    undo_redo_strokes("Control+y", one)
    assert len(_state(pg, ed)["points"]) == 3  # the points were not touched by the strokes' steps

    # a typed brush size, a stroke, then Ctrl+Z at once: the stroke takes the keyboard from the size box, so the
    # key undoes the stroke (not the typing); undo rebuilds the editor and keeps the tool and the brush size
    size = _editor(pg, ed).locator(".dragon-size").first
    size.fill("40")
    size.press("Enter")
    stroke(50.5)
    wider = _wait(pg, ed, lambda s: s["painted"] > one, "the wide stroke")["painted"]
    assert _state(pg, ed)["brush"] == 40
    pg.keyboard.press("Control+z")
    st = _wait(pg, ed, lambda s: s["painted"] == one, "the wide stroke undone by Ctrl+Z right after it")
    assert st["tool"] == "mask" and st["brush"] == 40, (st["tool"], st["brush"], wider)
    saved = pg.evaluate(f"() => app.graph.serialize().nodes.find(n => String(n.id) === '{ed}').properties")
    assert saved.get("dragon_brush") == 40, saved  # the brush size goes with the workflow


def test_the_editor_works_the_same_in_the_nodes_2_renderer(page, server):
    """Nodes 2.0 (the Vue renderer the frontend invites every user to switch to): the state widgets are hidden,
    the Load Image picture shows before a run in a canvas that fills the node, clicks and strokes land on the
    image pixels under the pointer, the wheel zooms the graph, and after a run there is no second copy of the
    picture under the canvas."""
    pg = page
    _test_image(server.input_dir / "dragon_browser.png", W, H, BOX)
    pg.evaluate("async () => { await app.extensionManager.setting.set('Comfy.VueNodes.Enabled', true); }")
    try:
        ids = pg.evaluate(BUILD, [1.0])
        ed = ids["editor"]
        node = pg.locator(f'[data-node-id="{ed}"]')
        node.locator(".dragon-canvas").wait_for(timeout=30_000)
        st = _wait(pg, ed, lambda s: s["W"] == W and s["H"] == H and s["upBox"] == 255,
                   "the Load Image picture and its mask in the Nodes 2.0 node")
        text = node.inner_text()
        for hidden in ("points_size", "editor_mask", "editor_reference"):
            assert hidden not in text, f"{hidden} is shown in the Nodes 2.0 node"
        assert "mask_color" in text or "mask color" in text.lower()
        assert node.locator("textarea:visible").count() == 0, "the points JSON box is shown"
        canvas = node.locator(".dragon-canvas")
        box = _settled_box(pg, canvas)
        pos0 = pg.evaluate(f"() => Array.from(app.graph.getNodeById({ed}).pos)")
        assert box["width"] >= 300 and abs(box["width"] / box["height"] - W / H) < 0.03, box
        (h1, t1), (h2, t2) = PAIRS
        # the canvas shown is this node's editor's, though the graph before (built in the classic renderer) had
        # an editor node with the same id
        sx, sy = _screen(box, h1[0] + 0.5, h1[1] + 0.5)
        assert pg.evaluate("""([x, y, id]) => document.elementFromPoint(x, y) ===
                              app.graph.getNodeById(Number(id)).dragonEditor.canvas""", [sx, sy, ed])
        for x, y in (h1, t1, h2, t2):
            pg.mouse.click(*_screen(box, x + 0.5, y + 0.5))
        st = _state(pg, ed)
        assert st["points"] == [list(p) for pair in PAIRS for p in pair], st
        pg.locator(f'[data-node-id="{ed}"] .dragon-editor button', has_text="Mask").first.click()
        pg.mouse.move(*_screen(box, *STROKE[0]))
        pg.mouse.down()
        pg.mouse.move(*_screen(box, *STROKE[1]), steps=8)
        pg.mouse.up()
        _wait(pg, ed, lambda s: s["painted"] > 0 and s["widgets"]["editor_mask"].startswith("data:"), "the stroke")
        pos = pg.evaluate(f"() => Array.from(app.graph.getNodeById({ed}).pos)")
        assert pos == pos0, f"the click or stroke dragged the node: {pos0} -> {pos}"
        scale0 = pg.evaluate("() => app.canvas.ds.scale")
        pg.mouse.move(*_screen(box, W / 2, H / 2))
        pg.mouse.wheel(0, -120)
        pg.wait_for_timeout(300)
        assert pg.evaluate("() => app.canvas.ds.scale") != scale0, "the wheel over the editor did not zoom"
        h = _queue_and_wait(server, pg)
        assert h["status"]["status_str"] == "success", json.dumps(h["status"])[:3000]
        got = h["outputs"][ed]["dragon_editor"][0]
        assert got["points"] == [[*hd, *tg] for hd, tg in PAIRS]
        pg.wait_for_timeout(1000)
        assert node.locator("img").count() == 0, "a second copy of the picture is shown under the canvas"
        ARTIFACTS.mkdir(exist_ok=True)
        node.screenshot(path=str(ARTIFACTS / "mask_point_editor_nodes2.png"))
        assert not pg.dragon_errors, pg.dragon_errors
    finally:
        pg.evaluate("async () => { await app.extensionManager.setting.set('Comfy.VueNodes.Enabled', false); }")


def test_guidance_setup_shows_only_the_inputs_of_its_mode_in_the_nodes_2_renderer(page):
    """The same hiding and folding in the Nodes 2.0 renderer, which reads other flags and draws its own rows."""
    pg = page
    pg.evaluate("async () => { await app.extensionManager.setting.set('Comfy.VueNodes.Enabled', true); }")
    try:
        nid = pg.evaluate("""() => { dragonClear(); const n = LiteGraph.createNode("DragonDiffusion_GuidanceSetup");
                                     n.pos = [100, 100]; app.graph.add(n); return String(n.id); }""")
        node = pg.locator(f'[data-node-id="{nid}"]')
        node.wait_for(timeout=30_000)

        def shown(mode: str | None = None, advanced: bool | None = None) -> str:
            pg.evaluate("""([id, m, adv]) => { const n = app.graph.getNodeById(Number(id));
                           if (adv !== null && !!n.showAdvanced !== adv) n.toggleAdvanced();
                           if (m) { const w = n.widgets.find(w => w.name === "mode"); w.value = m; w.callback?.(m); } }""",
                        [nid, mode, advanced])
            pg.wait_for_timeout(400)
            return node.inner_text()

        move = shown("move")
        assert "offset_x" in move and "energy_scale" in move
        assert "auto" in move.split("\n"), move  # energy_scale's -1
        ARTIFACTS.mkdir(exist_ok=True)
        node.screenshot(path=str(ARTIFACTS / "guidance_setup_nodes2.png"))
        assert "w_edit" not in move and "anchor_end" not in move and "centred_features" not in move
        drag = shown("drag")
        assert "offset_x" not in drag and "scale" not in drag.split("\n") and "energy_scale" in drag
        paste = shown("paste", advanced=True)
        assert "offset_x" in paste and "centred_features" in paste and "monotone_energy" not in paste
        assert "vacated_noise" not in paste
        folded = shown(advanced=False)
        assert "centred_features" not in folded and "offset_x" in folded
    finally:
        pg.evaluate("async () => { await app.extensionManager.setting.set('Comfy.VueNodes.Enabled', false); }")


@pytest.mark.parametrize("renderer", ["classic", "nodes2"])
def test_guidance_setup_folds_advanced_inputs_from_the_node_and_reads_auto_off_in_place(page, renderer):
    """On the node itself (no context menu): a control shows and hides the advanced inputs, in either renderer
    (the pack's button; on frontends that draw their own "Show advanced inputs" in Nodes 2.0, that one). -1 reads
    "auto" and anchor_end 0 reads "off" in the value's place: on the same row as the input's name in Nodes 2.0
    (on 1.58 a word appended to the row wrapped to a line of its own)."""
    pg = page
    vue = renderer == "nodes2"
    pg.evaluate("async (v) => { await app.extensionManager.setting.set('Comfy.VueNodes.Enabled', v); }", vue)
    try:
        nid = pg.evaluate("""() => { dragonClear(); const n = LiteGraph.createNode("DragonDiffusion_GuidanceSetup");
                                     n.pos = [100, 100]; app.graph.add(n); app.canvas.ds.scale = 1; app.canvas.ds.offset = [0, 0];
                                     app.canvas.setDirty(true, true); return n.id; }""")
        advanced = f"() => !!app.graph.getNodeById({nid}).showAdvanced"
        if vue:
            node = pg.locator(f'.lg-node[data-node-id="{nid}"]')
            node.wait_for(timeout=30_000)
            pg.wait_for_timeout(500)
            toggle = node.get_by_text(re.compile(r"show advanced inputs", re.I)).locator("visible=true").first
            toggle.click()
            pg.wait_for_function(advanced, timeout=10_000)
            pg.wait_for_timeout(400)
            assert "w_content" in node.inner_text() and "anchor_end" in node.inner_text()
            words = pg.evaluate("""(id) => { const el = document.querySelector(`.lg-node[data-node-id="${id}"]`);
                const out = {};
                for (const name of ["energy_scale", "anchor_end", "offset_x"]) {
                  const box = el.querySelector(`[aria-label="${name}"]`);
                  const row = box.closest(".lg-node-widget");
                  const label = Array.from(row.querySelectorAll("*")).find(e => e.children.length === 0 && e.textContent.trim() === name);
                  const tag = row.querySelector(".dragon-sentinel");
                  const shown = tag && tag.style.display !== "none" ? tag.textContent : null;
                  const lb = label.getBoundingClientRect(), tb = (tag || box).getBoundingClientRect();
                  out[name] = {shown, sameRow: Math.abs((lb.top + lb.bottom) / 2 - (tb.top + tb.bottom) / 2) < 6};
                }
                return out; }""", nid)
            assert words["energy_scale"] == {"shown": "auto", "sameRow": True}, words
            assert words["anchor_end"] == {"shown": "off", "sameRow": True}, words
            assert words["offset_x"]["shown"] is None, words
            # (the taller node reaches below the window now: a click from the page's script, on the same control)
            node.get_by_text(re.compile(r"hide advanced inputs", re.I)).locator("visible=true").first.evaluate(
                "e => e.click()")
        else:
            where = f"""() => {{ const n = app.graph.getNodeById({nid});
                const w = n.widgets.find(w => w.name === "dragon_advanced");
                const [x, y] = app.canvas.ds.convertOffsetToCanvas([n.pos[0] + n.size[0] / 2, n.pos[1] + w.last_y + 10]);
                const r = app.canvas.canvas.getBoundingClientRect();
                return {{x: r.left + x, y: r.top + y, label: w.label}}; }}"""
            drawn = f"""() => Number.isFinite(app.graph.getNodeById({nid}).widgets.find(w => w.name === "dragon_advanced").last_y)"""
            pg.wait_for_function(drawn, timeout=10_000)  # the canvas has drawn the node (its button has a place)
            box = pg.evaluate(where)
            assert re.fullmatch(r"Show advanced inputs \(13\)", box["label"]), box
            pg.mouse.click(box["x"], box["y"])
            pg.wait_for_function(advanced, timeout=10_000)
            shown = pg.evaluate(f"""() => {{ const n = app.graph.getNodeById({nid});
                const d = (name) => n.widgets.find(w => w.name === name)._displayValue;
                return {{visible: n.widgets.filter(w => n.isWidgetVisible(w)).map(w => w.name),
                        label: n.widgets.find(w => w.name === "dragon_advanced").label,
                        energy: d("energy_scale"), anchor: d("anchor_end")}}; }}""")
            assert "w_content" in shown["visible"] and "anchor_end" in shown["visible"], shown
            assert shown["label"] == "Hide advanced inputs (13)" and shown["energy"] == "auto" and shown["anchor"] == "off"
            pg.wait_for_timeout(300)  # the node grew: the button is lower now
            pg.wait_for_function(drawn, timeout=10_000)
            box = pg.evaluate(where)
            pg.mouse.click(box["x"], box["y"])
        pg.wait_for_function(f"() => !app.graph.getNodeById({nid}).showAdvanced", timeout=10_000)
        sent = pg.evaluate(f"async () => (await app.graphToPrompt()).output[String({nid})].inputs")
        assert "dragon_advanced" not in sent and sent["anchor_end"] == 0, sent  # the button is not an input
    finally:
        pg.evaluate("async () => { await app.extensionManager.setting.set('Comfy.VueNodes.Enabled', false); }")


def test_node_titles_are_not_cut_by_the_pack_badge_in_nodes_2(page):
    """Nodes 2.0 (1.32) draws the pack's badge in the title bar and truncated titles beside it ("Dragon Sa..."):
    in every template opened in Nodes 2.0, no title of the pack's nodes is cut."""
    pg = page
    pg.evaluate("async () => { await app.extensionManager.setting.set('Comfy.VueNodes.Enabled', true); }")
    try:
        for k, path in enumerate(sorted((REPO / "workflows").glob("*.json"))):
            pg.evaluate(_TEMPLATE_RECTS, [json.loads(path.read_text()), f"titles {k} {path.stem}"])
            cut = pg.evaluate("""() => app.graph._nodes.filter(n => n.type.startsWith("DragonDiffusion_")).map(n => {
                const el = document.querySelector(`.lg-node[data-node-id="${n.id}"]`);
                const t = el && Array.from(el.querySelectorAll("*")).find(e => e.children.length === 0 && e.textContent.trim() === n.title);
                if (!t) return [n.title, "no title element"];
                let cut = 0;  // the title's text or a box around it (the title bar's "truncate" box) wider inside than shown
                for (let e = t, k = 0; e && k < 4; e = e.parentElement, k++) cut = Math.max(cut, e.scrollWidth - e.clientWidth);
                return [n.title, cut]; })""")
            assert all(c[1] == 0 for c in cut), (path.name, cut)  # e.g. ['Dragon Sampler', 78]: 78 px of it not shown
    finally:
        pg.evaluate("async () => { await app.extensionManager.setting.set('Comfy.VueNodes.Enabled', false); }")


@pytest.mark.parametrize("renderer", ["classic", "nodes2"])
def test_the_editor_previews_a_move_before_any_run(page, server, renderer):
    """Before anything runs, the editor draws the painted object see-through where the move puts it (the point
    pair's shift, the Setup's scale about the object's box centre) and follows the points and the Setup's scale."""
    pg = page
    _test_image(server.input_dir / "dragon_ghost.png", W, H, box=(16, 16, 48, 48))  # Load Image's mask: this box
    vue = renderer == "nodes2"
    pg.evaluate("async (v) => { await app.extensionManager.setting.set('Comfy.VueNodes.Enabled', v); }", vue)
    try:
        nid = _picture_into(pg, "dragon_ghost.png", "DragonDiffusion_MaskPointEditor", [480, 560])
        pg.evaluate("""(id) => { const g = app.graph, ed = g.getNodeById(Number(id));
            const li = g._nodes.find(n => n.type === "LoadImage"); li.connect(1, ed, 1);
            const gs = LiteGraph.createNode("DragonDiffusion_GuidanceSetup"); gs.pos = [900, 0]; g.add(gs);
            ed.connect(1, gs, gs.inputs.findIndex(i => i.name === "points")); }""", nid)
        _wait(pg, nid, lambda s: s["W"] == W and s["upstream"] == [W, H], "the picture and its mask")

        def shown_at(points, scale=1.0):
            pg.evaluate("""([id, pts, scale]) => { const g = app.graph, ed = g.getNodeById(Number(id));
                ed.widgets.find(w => w.name === "points").value = JSON.stringify(pts);
                const gs = g._nodes.find(n => n.type === "DragonDiffusion_GuidanceSetup");
                gs.widgets.find(w => w.name === "scale").value = scale; }""", [nid, points, scale])
            pg.wait_for_timeout(600)  # the editor polls its widgets and the Setup's, then redraws
            return pg.evaluate("""(id) => { const e = app.graph.getNodeById(Number(id)).dragonEditor;
                const c = e.canvas, k = c.width / e.W, out = {};
                for (const [x, y] of [[88, 52], [70, 30], [100, 30], [98, 60]])
                  out[`${x},${y}`] = Array.from(c.getContext("2d").getImageData(Math.floor((x + 0.5) * k),
                                                                              Math.floor((y + 0.5) * k), 1, 1).data).slice(0, 3);
                return out; }""", nid)

        def img(x, y):  # the test picture's colour at (x, y)
            return np.array([x * 255 // (W - 1), y * 255 // (H - 1), ((x + y) % 64) * 4], float)

        plain = shown_at([])
        moved = shown_at([{"x": 32, "y": 32}, {"x": 80, "y": 40}])  # the object's centre (32, 32) to (80, 40)
        a = 0.55
        for x, y in ((88, 52), (70, 30)):  # inside the moved box, off the arrow: the object's pixel 48 left, 8 up
            want = a * img(x - 48, y - 8) + (1 - a) * np.array(plain[f"{x},{y}"])
            assert np.abs(np.array(moved[f"{x},{y}"]) - want).max() <= 12, (x, y, moved, want)
        assert moved["100,30"] == plain["100,30"]  # outside the moved box (it ends at x 96): unchanged
        grown = shown_at([{"x": 32, "y": 32}, {"x": 80, "y": 40}], scale=1.5)  # the box now reaches x 104
        want = a * img(32 + round((100 - 80) / 1.5), 32 + round((30 - 40) / 1.5)) + (1 - a) * np.array(plain["100,30"])
        assert np.abs(np.array(grown["100,30"]) - want).max() <= 16, (grown, want)
        assert not pg.dragon_errors, pg.dragon_errors
    finally:
        pg.evaluate("async () => { await app.extensionManager.setting.set('Comfy.VueNodes.Enabled', false); }")


@pytest.mark.parametrize("renderer", ["classic", "nodes2"])
def test_the_editor_previews_a_paste_from_the_reference_picture(page, server, renderer):
    """In paste mode the editor draws the reference picture's object (its Load Image mask, the picture found above
    the Setup's reference_inversion) see-through where it will be pasted: moved by the pair, also with no pair (then
    where it is in the reference), and says why not when the reference picture has another size."""
    pg = page
    _test_image(server.input_dir / "dragon_paste_base.png", W, H)
    ref = np.zeros((H, W, 4), np.uint8)
    ref[..., :3] = (200, 30, 220)
    ref[..., 3] = 255
    ref[16:48, 16:48, 3] = 0  # its Load Image mask: this box
    Image.fromarray(ref, "RGBA").save(server.input_dir / "dragon_paste_ref.png")
    Image.fromarray(ref[:64, :64], "RGBA").save(server.input_dir / "dragon_paste_small.png")
    vue = renderer == "nodes2"
    pg.evaluate("async (v) => { await app.extensionManager.setting.set('Comfy.VueNodes.Enabled', v); }", vue)
    try:
        nid = _picture_into(pg, "dragon_paste_base.png", "DragonDiffusion_MaskPointEditor", [480, 560])
        pg.evaluate("""(id) => { const g = app.graph, ed = g.getNodeById(Number(id));
            const add = (type, pos) => { const n = LiteGraph.createNode(type); n.pos = pos; g.add(n); return n; };
            const gs = add("DragonDiffusion_GuidanceSetup", [900, 0]);
            gs.widgets.find(w => w.name === "mode").value = "paste";
            ed.connect(1, gs, gs.inputs.findIndex(i => i.name === "points"));
            const ref = add("LoadImage", [0, 600]); ref.widgets.find(w => w.name === "image").value = "dragon_paste_ref.png";
            const enc = add("VAEEncode", [340, 700]); const inv = add("DragonDiffusion_DDIMInvert", [600, 700]);
            ref.connect(0, enc, 0); enc.connect(0, inv, inv.inputs.findIndex(i => i.name === "latent"));
            inv.connect(0, gs, gs.inputs.findIndex(i => i.name === "reference_inversion"));
            ref.connect(1, gs, gs.inputs.findIndex(i => i.name === "reference_mask")); }""", nid)
        _wait(pg, nid, lambda s: s["W"] == W, "the base picture")

        def shown_at(points, picture="dragon_paste_ref.png"):
            pg.evaluate("""([id, pts, picture]) => { const g = app.graph, ed = g.getNodeById(Number(id));
                ed.widgets.find(w => w.name === "points").value = JSON.stringify(pts);
                const ref = g._nodes.find(n => n.type === "LoadImage" && n.pos[1] === 600);
                ref.widgets.find(w => w.name === "image").value = picture; }""", [nid, points, picture])
            pg.wait_for_timeout(900)  # the editor polls the Setup and its inputs, loads the reference, redraws
            return pg.evaluate("""(id) => { const e = app.graph.getNodeById(Number(id)).dragonEditor;
                const c = e.canvas, k = c.width / e.W, out = {status: e.status.textContent};
                for (const [x, y] of [[88, 52], [70, 30], [100, 30], [20, 20], [60, 60]])
                  out[`${x},${y}`] = Array.from(c.getContext("2d").getImageData(Math.floor((x + 0.5) * k),
                                                                              Math.floor((y + 0.5) * k), 1, 1).data).slice(0, 3);
                return out; }""", nid)

        def base(x, y):  # the base picture's colour at (x, y)
            return np.array([x * 255 // (W - 1), y * 255 // (H - 1), ((x + y) % 64) * 4], float)

        a, obj = 0.55, np.array([200, 30, 220], float)
        moved = shown_at([{"x": 32, "y": 32}, {"x": 80, "y": 40}])  # the object's centre (32, 32) to (80, 40)
        for x, y in ((88, 52), (70, 30)):  # inside the pasted box, off the arrow
            want = a * obj + (1 - a) * base(x, y)
            assert np.abs(np.array(moved[f"{x},{y}"]) - want).max() <= 12, (x, y, moved, want)
        for x, y in ((100, 30), (20, 20)):  # outside it (the reference's own box is not drawn): the base picture
            assert np.abs(np.array(moved[f"{x},{y}"]) - base(x, y)).max() <= 8, (x, y, moved)
        still = shown_at([])  # no pair, no offset: pasted where it is in the reference
        assert np.abs(np.array(still["20,20"]) - (a * obj + (1 - a) * base(20, 20))).max() <= 12, still
        assert np.abs(np.array(still["88,52"]) - base(88, 52)).max() <= 8, still
        small = shown_at([], "dragon_paste_small.png")
        assert "64x64" in small["status"] and "same size" in small["status"], small["status"]
        assert np.abs(np.array(small["20,20"]) - base(20, 20)).max() <= 8, small  # nothing drawn
        assert not pg.dragon_errors, pg.dragon_errors
    finally:
        pg.evaluate("async () => { await app.extensionManager.setting.set('Comfy.VueNodes.Enabled', false); }")


def test_a_click_near_a_lone_handle_places_its_target(page, server):
    """A short move: the target click lands within the handle's grab radius. It used to grab the handle instead
    (nothing placed); now it places the target, and on the handle's very pixel the status says why not."""
    pg = page
    _test_image(server.input_dir / "dragon_browser.png", W, H)
    nid = _picture_into(pg, "dragon_browser.png", "DragonDiffusion_MaskPointEditor", [480, 560])
    _wait(pg, nid, lambda s: s["W"] == W, "the picture")
    box = _settled_box(pg, _editor(pg, nid).locator(".dragon-canvas"))
    pg.mouse.click(*_screen(box, 40.5, 30.5))
    pg.mouse.click(*_screen(box, 40.5, 30.5))  # the handle's own pixel: no target
    st = _wait(pg, nid, lambda s: any("handle's pixel" in t for t in s["notes"]), "the reason in the status")
    assert st["points"] == [[40, 30]]
    pg.mouse.click(*_screen(box, 42.5, 31.5))  # 2 px away, inside the handle's grab radius
    st = _wait(pg, nid, lambda s: len(s["points"]) == 2, "the target placed")
    (hx, hy), (tx, ty) = st["points"]
    assert (hx, hy) == (40, 30) and abs(tx - 42) <= 1 and abs(ty - 31) <= 1 and (tx, ty) != (hx, hy), st["points"]
    _wait(pg, nid, lambda s: not any("handle's pixel" in t for t in s["notes"]), "the reason gone with the target")
    pg.mouse.click(*_screen(box, 42.5, 31.5))  # a pair is complete: a click on its target grabs it, adds nothing
    assert len(_state(pg, nid)["points"]) == 2


def test_a_move_with_nowhere_to_go_is_refused_on_queue_before_anything_runs(page):
    """The templates open with no point pair (the hint asks for the clicks); queueing the move template without
    them would have run the whole inversion before Guidance Setup refused. Queue now stops in the page with a
    message, nothing is sent; with a pair clicked the prompt is sent."""
    pg = page
    wf = json.loads((REPO / "workflows" / "Dragon - move an object.json").read_text())
    res = pg.evaluate("""async (wf) => {
        await app.loadGraphData(wf, true, true, "queue refusal");
        const sent = [];
        const api = window.comfyAPI?.api?.api ?? app.api;
        const fetchApi = api.fetchApi.bind(api);
        // a queue that gets through is answered here (the template's checkpoint is not on this server)
        api.fetchApi = (route, opts) => {
          if (route === "/prompt" && opts?.method === "POST") {
            sent.push(route);
            return Promise.resolve(new Response(JSON.stringify({prompt_id: "dragon-test", number: 0, node_errors: {}}),
                                                {status: 200, headers: {"Content-Type": "application/json"}}));
          }
          return fetchApi(route, opts); };
        window.dragonQueueRefusal = null;
        try { await app.queuePrompt(0, 1); } catch (e) { /* the refusal stops the queue */ }
        const refused = window.dragonQueueRefusal, sentBefore = sent.length;
        const editor = app.graph._nodes.find(n => n.type === "DragonDiffusion_MaskPointEditor");
        editor.widgets.find(w => w.name === "points").value = JSON.stringify([{x: 10, y: 10}, {x: 40, y: 12}]);
        window.dragonQueueRefusal = null;
        try { await app.queuePrompt(0, 1); } catch (e) {}
        api.fetchApi = fetchApi;
        return {refused, sentBefore, refusedAfter: window.dragonQueueRefusal, sentAfter: sent.length,
                pointsShipped: JSON.parse(wf.nodes.find(n => n.type === "DragonDiffusion_MaskPointEditor").widgets_values[0])};
    }""", wf)
    pg.evaluate("() => document.querySelectorAll('.p-dialog-close-button, .p-toast-close-button').forEach(b => b.click())")
    assert res["pointsShipped"] == [], res  # the template ships no preset pair
    assert res["refused"] and "no handle->target pair" in res["refused"] and "click the object" in res["refused"], res
    assert res["sentBefore"] == 0, res
    assert res["refusedAfter"] is None and res["sentAfter"] == 1, res


def test_dragon_landmarks_pairs_are_clicked_on_its_canvas(page, server):
    """Dragon Landmarks reuses the editor's canvas for its two lists: clicks alternate source and target and are
    written to the labelled source_points / target_points boxes (which stay visible, for a detector's output),
    typed lists show on the canvas, and a connected keypoint input locks the canvas with a note."""
    pg = page
    _test_image(server.input_dir / "dragon_browser.png", W, H)
    nid = _picture_into(pg, "dragon_browser.png", "DragonDiffusion_Landmarks", [480, 640])
    _wait(pg, nid, lambda s: s["W"] == W and "landmark" in s["hint"], "the picture on the Landmarks canvas")
    node_buttons = pg.evaluate(f"() => Array.from(app.graph.getNodeById({nid}).dragonEditor.root.querySelectorAll('button')).map(b => b.textContent)")
    assert "Mask" not in node_buttons and "Points" in node_buttons
    box = _settled_box(pg, _editor(pg, nid).locator(".dragon-canvas"))
    for x, y in ((20, 30), (25, 28), (60, 50), (64, 55)):
        pg.mouse.click(*_screen(box, x + 0.5, y + 0.5))
    values = pg.evaluate(f"""() => {{ const n = app.graph.getNodeById({nid});
        return [n.widgets.find(w => w.name === "source_points").value, n.widgets.find(w => w.name === "target_points").value]; }}""")
    assert [json.loads(v) for v in values] == [[[20, 30], [60, 50]], [[25, 28], [64, 55]]], values
    # typed lists appear on the canvas
    pg.evaluate(f"""() => {{ const n = app.graph.getNodeById({nid});
        n.widgets.find(w => w.name === "source_points").value = "[[10, 10], [100, 80], [5, 5]]";
        n.widgets.find(w => w.name === "target_points").value = "[[12, 14], [90, 70], [6, 9]]"; }}""")
    st = _wait(pg, nid, lambda s: len(s["points"]) == 6, "the typed pairs on the canvas")
    assert st["points"] == [[10, 10], [12, 14], [100, 80], [90, 70], [5, 5], [6, 9]]
    ARTIFACTS.mkdir(exist_ok=True)
    pg.screenshot(path=str(ARTIFACTS / "dragon_landmarks.png"), clip=_node_clip(pg, nid))
    # with a detector's keypoints connected the lists are not what runs: the canvas refuses edits, with a note
    # (a real link from a node that outputs POSE_KEYPOINT, as a DWPose preprocessor would)
    pose = pg.evaluate(f"""() => {{ const n = app.graph.getNodeById({nid});
        const p = LiteGraph.createNode("DragonTest_Pose"); p.pos = [-700, 0]; app.graph.add(p);
        p.connect(0, n, n.inputs.findIndex(i => i.name === "source_keypoints")); return p.id; }}""")
    pg.mouse.click(*_screen(box, 40.5, 40.5))
    st = _wait(pg, nid, lambda s: any("source_keypoints" in t for t in s["notes"]), "the keypoints note")
    assert len(st["points"]) == 6
    pg.evaluate(f"() => app.graph.remove(app.graph.getNodeById({pose}))")
    st = _wait(pg, nid, lambda s: not any("source_keypoints" in t for t in s["notes"]), "the note gone with the link")
    pg.mouse.click(*_screen(box, 40.5, 40.5))
    st = _wait(pg, nid, lambda s: len(s["points"]) == 7, "a click taken again once the link is gone")
    assert not pg.dragon_errors, pg.dragon_errors


@pytest.mark.parametrize("renderer", ["classic", "nodes2"])
def test_dragon_landmarks_text_boxes_keep_their_names_in_sight(page, server, renderer):
    """Dragon Landmarks' source_points and target_points boxes show their names above their text once they hold
    points (the frontend's placeholder goes then): visible, at the box's top, the text starting below it."""
    pg = page
    _test_image(server.input_dir / "dragon_browser.png", W, H)
    pg.evaluate("async (v) => { await app.extensionManager.setting.set('Comfy.VueNodes.Enabled', v); }", renderer == "nodes2")
    try:
        nid = _picture_into(pg, "dragon_browser.png", "DragonDiffusion_Landmarks", [480, 640])
        pg.evaluate(f"""() => {{ const n = app.graph.getNodeById({nid});
            n.widgets.find(w => w.name === "source_points").value = "[[10, 10], [100, 80]]";
            n.widgets.find(w => w.name === "target_points").value = "[[12, 14], [90, 70]]";
            app.canvas.setDirty(true, true); }}""")
        pg.wait_for_timeout(1200)  # the editor's poll labels the boxes
        found = pg.evaluate(f"""() => {{ const n = app.graph.getNodeById({nid}), out = {{}};
            const boxes = Array.from(document.querySelectorAll("textarea")).filter(t =>
              n.widgets.some(w => w.element === t) || t.parentElement?.getAttribute("node-id") === String(n.id));
            for (const t of boxes) {{
              const r = t.getBoundingClientRect();
              if (!r.width || !t.value.startsWith("[[")) continue;
              const lab = Array.from(t.parentElement.children).find(c => c !== t && /_points$/.test(c.textContent.trim()));
              const lr = lab?.getBoundingClientRect();
              const cs = getComputedStyle(t);
              out[t.value] = lab && {{ name: lab.textContent.trim(), shown: lr.width > 0 && lr.height > 0 &&
                  getComputedStyle(lab).visibility !== "hidden" && getComputedStyle(lab).opacity > 0.3,
                inside: lr.left >= r.left - 1 && lr.right <= r.right + 1 && lr.top >= r.top - 1 && lr.top <= r.top + 12,
                textBelow: r.top + parseFloat(cs.paddingTop) + parseFloat(cs.borderTopWidth) >= lr.bottom - 2 }};
            }}
            return out; }}""")
        assert set(found) == {"[[10, 10], [100, 80]]", "[[12, 14], [90, 70]]"}, found
        assert found["[[10, 10], [100, 80]]"]["name"] == "source_points", found
        assert found["[[12, 14], [90, 70]]"]["name"] == "target_points", found
        for v in found.values():
            assert v["shown"] and v["inside"] and v["textBelow"], found
        assert not pg.dragon_errors, pg.dragon_errors
    finally:
        pg.evaluate("async () => { await app.extensionManager.setting.set('Comfy.VueNodes.Enabled', false); }")


def test_strokes_on_a_large_image_are_stored_off_thread_and_a_queue_waits_for_them(page, server):
    """Above 2048x2048 a stroke's PNG is encoded asynchronously; a queue right after the stroke still sends it."""
    pg = page
    big = 2100
    Image.new("RGB", (big, big), (90, 120, 160)).save(server.input_dir / "dragon_big.png")
    ed = _picture_into(pg, "dragon_big.png", "DragonDiffusion_MaskPointEditor", [480, 560])
    _wait(pg, ed, lambda s: s["W"] == big, "the large picture", timeout=60)
    box = _settled_box(pg, _editor(pg, ed).locator(".dragon-canvas"))
    _editor(pg, ed).locator("button", has_text="Mask").first.click()
    size = _editor(pg, ed).locator(".dragon-size").first
    size.fill("60")
    size.press("Enter")
    sx, sy = box["width"] / big, box["height"] / big
    pg.mouse.move(box["x"] + 500 * sx, box["y"] + 1000 * sy)
    pg.mouse.down()
    pg.mouse.move(box["x"] + 1500 * sx, box["y"] + 1000 * sy, steps=8)
    pg.mouse.up()
    sent = pg.evaluate("async (id) => (await app.graphToPrompt()).output[id].inputs.editor_mask", ed)
    assert sent.startswith("dragon_editor/"), sent[:80]
    with Image.open(server.input_dir / sent) as im:
        alpha = np.asarray(im.getchannel("A"))
    assert alpha.shape == (big, big)
    assert alpha[1000, 1000] == 255 and alpha[1000, 520] == 255 and alpha[200, 1000] == 0
    assert not pg.dragon_errors, pg.dragon_errors

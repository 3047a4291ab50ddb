#!/usr/bin/env python3
"""The README's quick-start pictures, taken in the real ComfyUI frontend (headless Chromium, Playwright).

Starts ComfyUI with the pack, opens the templates browser (step 2), loads the "move an object" template with a
picture in Load Image, paints the object and places one point pair in the Mask/Point Editor (step 3), and saves
PNGs to docs/img/. The picture is drawn here (a ball on a table), so nothing is downloaded; no checkpoint is
needed because nothing is queued. Needs what the browser tests need (scripts/browser-env).

    .venv/bin/python scripts/readme_pictures.py
"""
from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
import comfy_server  # noqa: E402

OUT = REPO / "docs" / "img"
W, H = 512, 384
BALL = (150, 215, 62)  # centre x, y, radius in image pixels
TARGET = (360, 200)


def photo(path: Path) -> None:
    """A ball on a wooden table against a wall: a stand-in for the user's photo."""
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    img = np.zeros((H, W, 3), np.float32)
    wall = yy < 250
    img[wall] = np.array([205, 212, 220]) - (yy[wall, None] / 250) * 30
    wood = ~wall
    grain = (np.sin(xx / 7 + np.sin(yy / 23) * 3) * 10)[wood, None]
    img[wood] = np.array([150, 100, 60]) + grain
    im = Image.fromarray(img.clip(0, 255).astype(np.uint8))
    d = ImageDraw.Draw(im)
    cx, cy, r = BALL
    d.ellipse([cx - r + 10, cy + r - 12, cx + r + 14, cy + r + 8], fill=(95, 62, 38))  # shadow
    im = im.filter(ImageFilter.GaussianBlur(1.2))
    ball = np.array(im).astype(np.float32)
    dist = np.hypot(xx - cx, yy - cy)
    inside = dist < r
    light = np.clip(1.15 - np.hypot(xx - cx + r * 0.35, yy - cy + r * 0.35) / (1.6 * r), 0.35, 1.0)
    ball[inside] = (np.array([210, 45, 40]) * light[inside, None])
    Image.fromarray(ball.clip(0, 255).astype(np.uint8)).save(path)


def main() -> None:
    from playwright.sync_api import sync_playwright

    chrome = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chrome:
        raise SystemExit("chromium is not installed: run scripts/browser-env first")
    OUT.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="dragon-pictures-"))
    srv = comfy_server.start(work, settings={"Comfy.TutorialCompleted": True})
    try:
        photo(srv.input_dir / "ball_on_table.png")
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chrome, headless=True,
                                        args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
            pg = browser.new_page(viewport={"width": 1500, "height": 900}, device_scale_factor=1)
            pg.add_init_script("localStorage.setItem('vueNodesBannerDismissed', 'true')")  # no "Try Nodes 2.0" bar
            pg.goto(srv.url)
            pg.wait_for_function("!!(window.app && window.app.graph && window.LiteGraph && "
                                 "LiteGraph.registered_node_types['DragonDiffusion_MaskPointEditor'])", timeout=120_000)
            pg.wait_for_function("window.app.graph._nodes && window.app.graph._nodes.length > 0", timeout=120_000)
            pg.wait_for_timeout(1500)

            # step 3: the template with the photo; paint the ball, then one handle -> target pair
            wf = json.loads((REPO / "workflows" / "Dragon - move an object.json").read_text())
            for n in wf["nodes"]:
                if n["type"] == "LoadImage":
                    n["widgets_values"][0] = "ball_on_table.png"
                if n["type"] == "DragonDiffusion_MaskPointEditor":
                    n["widgets_values"][0] = "[]"
            pg.evaluate("async (wf) => { app.graph.clear(); await app.loadGraphData(wf); }", wf)
            pg.wait_for_timeout(1500)
            ed = pg.evaluate("() => String(app.graph._nodes.find(n => n.type === 'DragonDiffusion_MaskPointEditor').id)")
            pg.evaluate("""(id) => { const n = app.graph.getNodeById(Number(id));
                app.canvas.ds.scale = 1.0; app.canvas.ds.offset = [-n.pos[0] + 420, -n.pos[1] + 170];
                app.canvas.setDirty(true, true); }""", ed)
            end = time.time() + 30
            while pg.evaluate("(id) => app.graph.getNodeById(Number(id)).dragonEditor.W", ed) != W:
                if time.time() > end:
                    raise SystemExit("the picture did not reach the editor")
                time.sleep(0.2)
            pg.wait_for_timeout(800)
            box = pg.locator(".dragon-canvas").first.bounding_box()

            def at(x, y):
                return box["x"] + x * box["width"] / W, box["y"] + y * box["height"] / H

            pg.locator(".dragon-editor button", has_text="Mask").first.click()
            size = pg.locator(".dragon-editor .dragon-size").first
            size.fill("30")
            size.press("Enter")
            cx, cy, r = BALL
            for k in (-1, 0, 1):  # three strokes across the ball
                y = cy + k * r * 0.5
                half = (r * r - (y - cy) ** 2) ** 0.5 - 26
                pg.mouse.move(*at(cx - half, y))
                pg.mouse.down()
                pg.mouse.move(*at(cx + half, y), steps=10)
                pg.mouse.up()
            pg.locator(".dragon-editor button", has_text="Points").first.click()
            pg.mouse.click(*at(cx, cy))
            pg.mouse.click(*at(*TARGET))
            pg.mouse.move(*at(W - 5, H - 5))
            pg.wait_for_timeout(800)
            clip = pg.evaluate("""(id) => {
              const n = app.graph.getNodeById(Number(id)); const ds = app.canvas.ds;
              const r = app.canvas.canvas.getBoundingClientRect(); const th = LiteGraph.NODE_TITLE_HEIGHT;
              const [x, y] = ds.convertOffsetToCanvas([n.pos[0], n.pos[1] - th]);
              return {x: r.left + x - 6, y: r.top + y - 6, width: n.size[0] * ds.scale + 12,
                      height: (n.size[1] + th) * ds.scale + 12}; }""", ed)
            pg.screenshot(path=str(OUT / "quickstart-3-editor.png"), clip=clip)

            # the whole graph, for the README's "a typical graph" (at a zoom where ComfyUI still draws the text)
            pg.set_viewport_size({"width": 2300, "height": 1150})
            pg.evaluate("""() => { const xs = app.graph._groups.map(g => g._bounding).concat(
                                     app.graph._nodes.map(n => [n.pos[0], n.pos[1] - 30, n.size[0], n.size[1] + 30]));
                const x0 = Math.min(...xs.map(b => b[0])), y0 = Math.min(...xs.map(b => b[1]));
                app.canvas.ds.scale = 0.62; app.canvas.ds.offset = [-x0 + 100 / 0.62, -y0 + 120 / 0.62];
                app.canvas.setDirty(true, true); }""")
            pg.wait_for_timeout(1200)
            pg.evaluate("() => { app.canvas.deselectAll?.(); app.canvas.setDirty(true, true); }")
            pg.wait_for_timeout(500)
            pg.screenshot(path=str(OUT / "quickstart-graph.png"), clip={"x": 90, "y": 110, "width": 1930, "height": 680})
            pg.set_viewport_size({"width": 1500, "height": 900})
            # step 2 (taken last: the dialog's overlay stays in headless Chromium)
            pg.evaluate("async () => { await app.extensionManager.command.execute('Comfy.BrowseTemplates'); }")
            pg.wait_for_timeout(2500)
            cat = pg.get_by_text("comfyui-dragondiffusion", exact=False).first
            if cat.count():
                cat.evaluate("e => e.click()")
                pg.wait_for_timeout(2000)
            pg.screenshot(path=str(OUT / "quickstart-2-templates.png"))

            browser.close()
    finally:
        srv.stop()
        shutil.rmtree(work, ignore_errors=True)
    for f in sorted(OUT.glob("quickstart-*.png")):
        print(f"wrote {f.relative_to(REPO)} ({f.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()

// The Dragon Mask/Point Editor's canvas (and Dragon Landmarks', points only): the image, the pointer (points and
// the brush), the widget values that hold the state, following the upstream Load Image, and drawing. The pieces it
// is built from: view.js (page furniture), points.js (point lists and pairs), layers.js (brush layers), files.js
// (pictures and uploads), renderer.js (what differs between frontends and renderers), preview.js (the edit before
// it runs).
import { button, canvas2d, installStyle } from "./view.js";
import { HIT_PX, drawPoints, nearestPoint } from "./points.js";
import { BRUSH_MAX, BRUSH_MIN, COLORS, LAYERS, Layer, SYNC_ENCODE_PIXELS } from "./layers.js";
import { encodePNG, loadImage, parseFileValue, uploadPNG, viewURL } from "./files.js";
import { forwardToGraph, inputLinked, isNodes2, labelTextBoxes, rebuildingByUndo, recordUndoStep, upstreamOf, watchUndo } from "./renderer.js";
import { EditPreview } from "./preview.js";

const POLL_MS = 250; // the Nodes 2.0 renderer does not call onDrawForeground: the editor polls on its own too

// node (graph id : node id) -> {tool}: read back only when ComfyUI's undo/redo rebuilt the editor (a new editor,
// e.g. in a cleared graph that reuses the node id, starts with the Points tool)
const SESSION = new Map();

let editorCount = 0;

export class DragonEditor {
  constructor(node, cfg) {
    watchUndo();
    this.rebuiltByUndo = rebuildingByUndo();
    this.node = node;
    this.cfg = cfg;
    this.w = (name) => node.widgets?.find((w) => w.name === name);
    this.image = null; // HTMLImageElement or null
    this.W = 0;
    this.H = 0;
    this.srcKey = ""; // what is shown: "run:<url>" or "up:<url>"
    this.upKey = ""; // the last upstream image seen
    this.ranOn = {}; // layer key -> the Load Image mask of the last run (the backend's copy is shown until it changes)
    this.points = []; // [[x, y], ...] alternating handle, target, image pixels
    this.pointsText = null;
    this.layers = Object.fromEntries(Object.entries(LAYERS).map(([k, s]) => [k, new Layer(k, s)]));
    this.layerFiles = { mask: null, reference: null }; // the widget value each layer holds
    this.uploads = {}; // layer key -> the upload of its current strokes, while it runs
    this.commits = {}; // layer key -> the encoding of its latest strokes into the widget, while it runs
    this.tool = "points";
    this.erase = false;
    this.brush = 16;
    this.drag = null; // {kind: "point", index} | {kind: "brush", last, erase} | {kind: "pan"}
    this.hover = null;
    this.notes = [];
    this.look = "";
    this.preview = new EditPreview(this);
    this.buildDOM();
    this.hideStateWidgets();
    // also in the classic renderer: it calls onDrawForeground only when the graph is redrawn, which a value
    // typed into a text box or set by another extension does not cause
    this.timer = setInterval(() => {
      if (this.node.graph) this.poll();
    }, POLL_MS);
  }

  // ---- DOM --------------------------------------------------------------------------------------
  buildDOM() {
    installStyle();
    const root = document.createElement("div");
    // widget-expands: in the Nodes 2.0 renderer the widget row grows with the node (as a text box does)
    root.className = "dragon-editor widget-expands";
    const bar = document.createElement("div");
    bar.className = "dragon-bar";
    const brush = this.cfg.brush;
    this.toolButtons = {
      points: button("Points", "Click a handle, then its target. Drag to move; right-click deletes a pair.", () => this.setTool("points")),
    };
    if (brush) {
      this.toolButtons.mask = button("Mask", "Brush the editable/object mask (right button erases).", () => this.setTool("mask"));
      this.toolButtons.reference = button("Ref", "Brush the reference region (right button erases).", () => this.setTool("reference"));
    }
    Object.values(this.toolButtons).forEach((b) => bar.appendChild(b));
    this.eraseButton = button("Erase", "Brush erases instead of painting.", () => {
      this.erase = !this.erase;
      this.eraseButton.classList.toggle("active", this.erase);
    });
    if (brush) bar.appendChild(this.eraseButton);
    // brush radius: -/+ step by a quarter (1 -> 512 in 28 clicks), or type it; [ and ] over the canvas
    const size = document.createElement("input");
    size.type = "number";
    size.min = String(BRUSH_MIN);
    size.max = String(BRUSH_MAX);
    size.step = "1";
    size.value = String(this.brush);
    size.title = "Brush radius in image pixels ([ and ] over the canvas change it)";
    size.className = "dragon-size";
    size.addEventListener("input", (e) => {
      if (e.inputType === "historyUndo" || e.inputType === "historyRedo") {
        // the browser's own undo of an earlier typed size (Chrome applies Ctrl+Z to the last edited field even
        // when the focus is elsewhere): ComfyUI's undo is meant, the brush size stays
        size.value = String(this.brush);
        return;
      }
      const v = Number(size.value);
      if (Number.isFinite(v) && v >= BRUSH_MIN) this.setBrush(v, false, false); // one undo step on commit
    });
    size.addEventListener("change", () => {
      const v = Number(size.value) || this.brush;
      this.node.properties.dragon_brush = null; // the typing set it already: the commit is the undo step
      this.setBrush(v);
    });
    for (const ev of ["pointerdown", "keydown"]) size.addEventListener(ev, (e) => e.stopPropagation());
    this.sizeInput = size;
    if (brush) {
      bar.append(
        button("−", "Smaller brush", () => this.setBrush(this.brush / 1.25)),
        size,
        button("+", "Larger brush", () => this.setBrush(this.brush * 1.25)),
      );
    }
    bar.appendChild(button("Undo pt", "Delete the last point.", () => {
      this.setPoints(this.points.slice(0, -1));
      recordUndoStep();
    }));
    bar.appendChild(button("Clear pts", "Delete all points.", () => {
      this.setPoints([]);
      recordUndoStep();
    }));
    if (brush) {
      bar.appendChild(button("Clear mask", "Clear the brush strokes of the current layer (Mask, or Ref when Ref is selected).",
        () => {
          this.clearLayer(this.tool === "reference" ? "reference" : "mask");
          recordUndoStep();
        }));
    }
    if (this.cfg.json) bar.appendChild(button("JSON", "Show or hide the points as JSON text (editable).", () => this.toggleJSON()));
    const json = document.createElement("textarea");
    json.className = "dragon-json";
    json.spellcheck = false;
    json.style.display = "none";
    json.addEventListener("input", () => {
      const pw = this.w("points");
      if (pw) pw.value = json.value;
      this.syncPoints();
      this.redraw();
    });
    json.addEventListener("change", () => recordUndoStep());
    for (const ev of ["pointerdown", "keydown", "wheel"]) json.addEventListener(ev, (e) => e.stopPropagation());
    this.json = json;
    const stage = document.createElement("div");
    stage.className = "dragon-stage";
    const canvas = document.createElement("canvas");
    canvas.className = "dragon-canvas";
    const hint = document.createElement("div");
    hint.className = "dragon-hint";
    stage.append(canvas, hint);
    const status = document.createElement("div");
    status.className = "dragon-status";
    root.append(bar, json, stage, status);
    this.root = root;
    this.stage = stage;
    this.canvas = canvas;
    this.hint = hint;
    this.status = status;
    this.setTool("points");

    canvas.addEventListener("pointerdown", (e) => this.onDown(e));
    canvas.addEventListener("pointermove", (e) => this.onMove(e));
    canvas.addEventListener("pointerup", (e) => this.onUp(e));
    canvas.addEventListener("pointercancel", (e) => this.onUp(e));
    canvas.addEventListener("pointerleave", () => {
      this.hover = null;
      this.redraw();
    });
    canvas.addEventListener("pointerenter", () => (this.over = true));
    canvas.addEventListener("pointerleave", () => (this.over = false));
    // [ and ] resize the brush while the pointer is over the canvas (no focus taken from the page)
    this.onKey = (e) => {
      if (!this.over || (e.key !== "[" && e.key !== "]")) return;
      if (/^(INPUT|TEXTAREA|SELECT)$/.test(e.target?.tagName || "") || e.target?.isContentEditable) return;
      e.preventDefault();
      e.stopPropagation();
      this.setBrush(e.key === "]" ? this.brush * 1.25 : this.brush / 1.25);
    };
    window.addEventListener("keydown", this.onKey, true);
    canvas.addEventListener("contextmenu", (e) => {
      e.preventDefault();
      e.stopPropagation();
    });
    // the wheel zooms the graph over the editor as anywhere else (the Nodes 2.0 renderer forwards it itself)
    root.addEventListener("wheel", (e) => {
      if (e.target === json || isNodes2()) return;
      forwardToGraph(e);
    }, { passive: false });
    this.resizeObserver = new ResizeObserver(() => this.layout());
    this.resizeObserver.observe(stage);

    // a name of its own per editor: the Nodes 2.0 renderer keys a node's widget views by node id and widget name,
    // so a new graph whose editor node reuses an old id would otherwise keep showing the old editor's canvas
    this.widget = this.node.addDOMWidget(`dragon_canvas_${++editorCount}`, "dragon_editor", root, {
      serialize: false,
      hideOnZoom: false,
      getMinHeight: () => 300,
    });
    this.widget.serialize = false;
  }

  hideStateWidgets() {
    for (const name of this.cfg.hidden) {
      const w = this.w(name);
      if (!w) continue;
      w.hidden = true; // classic renderer
      w.options = w.options || {};
      w.options.hidden = true; // Nodes 2.0 renderer
      if (!w.computeLayoutSize && !w.dragonLayout) {
        // litegraph gives every widget without computeSize a row, hidden or not
        w.computeSize = function () {
          return this.hidden ? [0, -4] : [0, LiteGraph.NODE_WIDGET_HEIGHT];
        };
        w.dragonLayout = true;
      } else if (w.computeLayoutSize && !w.dragonLayout) {
        // a hidden DOM widget (the points textarea) must not keep its space in the node
        const layout = w.computeLayoutSize;
        w.computeLayoutSize = function (...args) {
          return this.hidden ? { minHeight: 0, maxHeight: 0, minWidth: 0 } : layout.apply(this, args);
        };
        w.dragonLayout = true;
      }
      if (w.element) w.element.style.display = "none";
    }
    for (const [key, spec] of Object.entries(LAYERS)) {
      const w = this.cfg.brush ? this.w(spec.widget) : null;
      if (!w) continue;
      // on queue the strokes are uploaded once and the prompt names the file
      w.serializeValue = async () => {
        await this.commits[key];
        if (String(w.value || "").startsWith("data:")) await this.upload(key);
        return w.value;
      };
    }
  }

  toggleJSON() {
    const show = this.json.style.display === "none";
    this.json.style.display = show ? "" : "none";
    if (show) this.json.value = this.w("points")?.value ?? "[]";
  }

  // The brush size is part of the workflow (node property dragon_brush, saved and loaded with it); a committed
  // change (Enter, -/+, [ ]) is one step of ComfyUI's undo, so undoing a stroke keeps the size it was painted with.
  setBrush(r, updateInput = true, commit = true) {
    this.brush = Math.round(Math.min(BRUSH_MAX, Math.max(BRUSH_MIN, r)) * 10) / 10;
    if (this.brush >= 4) this.brush = Math.round(this.brush);
    if (updateInput) this.sizeInput.value = String(this.brush);
    this.node.properties ??= {};
    const changed = this.node.properties.dragon_brush !== this.brush;
    this.node.properties.dragon_brush = this.brush;
    if (commit && changed && this.restored) recordUndoStep();
    this.redraw();
  }

  // The tool outlives this editor object: ComfyUI's undo/redo rebuilds the graph (and so the editor), and must
  // not send the user back to the Points tool; the brush size comes back with the graph's state.
  sessionKey() {
    return `${this.node.graph?.id ?? ""}:${this.node.id}`;
  }

  remember() {
    if (this.node.graph) SESSION.set(this.sessionKey(), { tool: this.tool });
  }

  restoreSession() {
    watchUndo();
    if (this.restored || !this.node.graph) return;
    const brush = Number(this.node.properties?.dragon_brush);
    if (Number.isFinite(brush) && brush >= BRUSH_MIN) this.setBrush(brush, true, false);
    const saved = this.rebuiltByUndo ? SESSION.get(this.sessionKey()) : null; // not for a new editor
    if (saved?.tool && (saved.tool === "points" || this.toolButtons[saved.tool])) this.setTool(saved.tool);
    this.restored = true;
  }

  setTool(tool) {
    this.tool = tool;
    if (this.restored) this.remember(); // (not the constructor's default before the session is read)
    for (const [k, b] of Object.entries(this.toolButtons)) b.classList.toggle("active", k === tool);
    if (this.canvas) this.canvas.style.cursor = tool === "points" ? "crosshair" : "none";
    this.redraw();
  }

  layout() {
    const W = this.W || 1;
    const H = this.H || 1;
    const box = this.stage.getBoundingClientRect();
    // layout size (unscaled by the graph zoom): offsetWidth/Height
    const sw = this.stage.clientWidth;
    const sh = this.stage.clientHeight;
    if (!sw || !sh || !box) return;
    const s = Math.min(sw / W, sh / H);
    const cw = Math.max(1, Math.floor(W * s));
    const ch = Math.max(1, Math.floor(H * s));
    this.canvas.style.width = `${cw}px`;
    this.canvas.style.height = `${ch}px`;
    const dpr = window.devicePixelRatio || 1;
    const pw = Math.max(1, Math.round(cw * dpr));
    const ph = Math.max(1, Math.round(ch * dpr));
    if (this.canvas.width !== pw || this.canvas.height !== ph) {
      this.canvas.width = pw;
      this.canvas.height = ph;
    }
    this.redraw();
  }

  // ---- coordinates ------------------------------------------------------------------------------
  // client (screen) position -> image pixel; correct at any graph zoom because the canvas's
  // bounding rectangle is measured after the zoom transform.
  toImage(e) {
    const r = this.canvas.getBoundingClientRect();
    const x = ((e.clientX - r.left) / r.width) * this.W;
    const y = ((e.clientY - r.top) / r.height) * this.H;
    return { x, y, px: Math.min(this.W - 1, Math.max(0, Math.floor(x))), py: Math.min(this.H - 1, Math.max(0, Math.floor(y))) };
  }

  screenPerImage() {
    const r = this.canvas.getBoundingClientRect();
    return r.width / Math.max(1, this.W);
  }

  hit(p) {
    return nearestPoint(this.points, p, HIT_PX / Math.max(1e-6, this.screenPerImage()));
  }

  // ---- pointer ----------------------------------------------------------------------------------
  onDown(e) {
    if (e.button === 1) {
      // the middle button pans the graph, as anywhere else
      this.drag = { kind: "pan" };
      forwardToGraph(e);
      return;
    }
    e.preventDefault();
    e.stopPropagation();
    // painting or clicking takes the keyboard from the editor's text boxes (a typed brush size kept it, and
    // Ctrl+Z then undid the typing instead of the stroke)
    if (document.activeElement && this.root.contains(document.activeElement)) document.activeElement.blur();
    if (!this.W) return;
    const p = this.toImage(e);
    const locked = (this.cfg.locked || []).find((name) => this.isLinked(name));
    if (this.tool === "points" && locked) {
      this.setNote("locked", `The points come from ${locked}; edit them there (or disconnect it to edit them here).`);
      return;
    }
    if (this.tool === "points") {
      const i = this.hit(p);
      if (e.button === 2) {
        if (i >= 0) {
          const pair = i - (i % 2);
          this.setPoints(this.points.filter((_, j) => j !== pair && j !== pair + 1));
          recordUndoStep();
        }
        return;
      }
      if (e.button !== 0) return;
      const lone = this.points.length % 2 === 1 && i === this.points.length - 1;
      if (lone) {
        // a click near the handle that waits for its target places the target (a short move), not a drag of the
        // handle; on the handle's own pixel there is no move to make, and the status says so
        const [hx, hy] = this.points[i];
        if (hx === p.px && hy === p.py) {
          this.setNote("lone", "The target is on its handle's pixel: click a little further away.");
          return;
        }
      }
      this.setNote("lone", null);
      if (i >= 0 && !lone) {
        this.drag = { kind: "point", index: i };
      } else {
        this.setPoints([...this.points, [p.px, p.py]]);
        this.drag = { kind: "point", index: this.points.length - 1 };
      }
      this.canvas.setPointerCapture(e.pointerId);
      return;
    }
    if (e.button !== 0 && e.button !== 2) return;
    const erase = this.erase !== (e.button === 2);
    this.drag = { kind: "brush", last: p, erase };
    this.layers[this.tool].stroke(p, p, this.brush, erase);
    this.canvas.setPointerCapture(e.pointerId);
    this.redraw();
  }

  onMove(e) {
    if (this.drag?.kind === "pan") {
      forwardToGraph(e);
      return;
    }
    const p = this.toImage(e);
    this.hover = p;
    if (this.drag?.kind === "point") {
      e.stopPropagation();
      const pts = this.points.slice();
      pts[this.drag.index] = [p.px, p.py];
      this.points = pts;
    } else if (this.drag?.kind === "brush") {
      e.stopPropagation();
      this.layers[this.tool].stroke(this.drag.last, p, this.brush, this.drag.erase);
      this.drag.last = p;
    }
    this.redraw();
  }

  onUp(e) {
    const d = this.drag;
    this.drag = null;
    if (!d) return;
    if (d.kind === "pan") {
      forwardToGraph(e);
      return;
    }
    e.stopPropagation();
    // one undo step per point placed or moved, per brush stroke (its mousedown began it)
    if (d.kind === "point") {
      this.setPoints(this.points);
      recordUndoStep();
    } else this.commitLayer(this.tool).then(recordUndoStep);
  }

  // ---- state <-> widgets ------------------------------------------------------------------------
  setPoints(points) {
    this.points = points;
    const text = this.cfg.write(this, points);
    this.pointsText = text;
    if (this.json && this.json.style.display !== "none" && document.activeElement !== this.json) {
      this.json.value = this.w("points")?.value ?? "[]";
    }
    const sw = this.w("points_size");
    if (sw && this.W) sw.value = points.length ? `${this.W}x${this.H}` : "";
    this.node.setDirtyCanvas(true, true);
    this.redraw();
  }

  // Re-read the points widget when it changed outside the editor (typed JSON, workflow load).
  syncPoints() {
    const { text, parse } = this.cfg.read(this);
    if (text === this.pointsText) return;
    this.pointsText = text;
    try {
      this.points = parse();
      this.setNote("json", null);
    } catch {
      this.points = [];
      this.setNote("json", "The points text is not valid JSON; the canvas shows no points.");
    }
  }

  setNote(key, text) {
    this.notes = this.notes.filter((n) => n.key !== key);
    if (text) this.notes.push({ key, text });
    this.redraw();
  }

  clearLayer(key) {
    delete this.commits[key]; // a stroke still being encoded must not come back
    const lay = this.layers[key];
    lay.reset(this.W || lay.w, this.H || lay.h);
    this.layerFiles[key] = "";
    const w = this.w(LAYERS[key].widget);
    if (w) w.value = "";
    this.redraw();
  }

  // The strokes so far become the layer's widget value, a data: URL: saved with the workflow and in ComfyUI's
  // undo history, uploaded only when the workflow is queued.
  // Up to SYNC_ENCODE_PIXELS the PNG is encoded at once (tens of ms), so the stroke's undo step exists before the
  // next key press; a larger layer is encoded off the page's thread (toBlob), so a stroke does not stall the
  // graph for a second, and a queue meanwhile waits for it (serializeValue).
  commitLayer(key) {
    const lay = this.layers[key];
    const w = this.w(LAYERS[key].widget);
    const set = (value) => {
      this.layerFiles[key] = value;
      if (w) w.value = value;
    };
    if (lay.empty || lay.w * lay.h <= SYNC_ENCODE_PIXELS) {
      set(lay.empty ? "" : lay.data.toDataURL("image/png"));
      delete this.commits[key];
      return Promise.resolve();
    }
    const done = encodePNG(lay.data)
      .then((value) => {
        if (this.commits[key] === done) set(value); // a later stroke's commit wins
      })
      .catch((err) => this.setNote("upload", `The strokes could not be stored: ${err?.message || err}.`))
      .finally(() => {
        if (this.commits[key] === done) delete this.commits[key];
      });
    this.commits[key] = done;
    return done;
  }

  // Upload the layer's strokes (named by their content, so an unchanged layer is one file) and name the file
  // in the widget. Called while the workflow is queued.
  upload(key) {
    const w = this.w(LAYERS[key].widget);
    const value = String(w?.value || "");
    if (!value.startsWith("data:")) return Promise.resolve();
    if (this.uploads[key]?.value === value) return this.uploads[key].done;
    const done = (async () => {
      const lay = this.layers[key];
      const saved = await uploadPNG(value, `${key}_${lay.w}x${lay.h}`);
      if (w.value !== value) return; // newer strokes since: they are uploaded by their own queue
      this.layerFiles[key] = saved;
      w.value = saved;
      this.setNote("upload", null);
    })().catch((err) => {
      this.setNote("upload", `Mask upload failed: ${err.message}. The strokes are kept; queue again.`);
      throw err;
    }).finally(() => {
      if (this.uploads[key]?.done === done) delete this.uploads[key];
    });
    this.uploads[key] = { value, done };
    return done;
  }

  // Load the brush layers named by the widgets (workflow load), once per file name.
  async syncLayers() {
    for (const [key, spec] of Object.entries(LAYERS)) {
      const value = this.w(spec.widget)?.value || "";
      if (value === (this.layerFiles[key] || "")) continue;
      this.layerFiles[key] = value;
      const lay = this.layers[key];
      if (!value) {
        lay.reset(this.W || 1, this.H || 1);
        continue;
      }
      try {
        const img = await loadImage(value.startsWith("data:") ? value : viewURL(parseFileValue(value)));
        if (this.layerFiles[key] !== value) continue; // changed again while loading (undo/redo)
        lay.reset(img.naturalWidth, img.naturalHeight);
        lay.data.getContext("2d").drawImage(img, 0, 0);
        lay.derive();
        if (this.W) this.fitLayer(key);
        this.setNote(`load-${key}`, null);
      } catch (err) {
        const what = value.startsWith("data:") ? "its strokes" : value;
        this.setNote(`load-${key}`, `${spec.label} layer ${what} could not be loaded.`);
      }
    }
    this.redraw();
  }

  // Stretch a layer painted on another image size onto the current one (and upload the result).
  fitLayer(key) {
    const lay = this.layers[key];
    if (lay.w === this.W && lay.h === this.H) return;
    if (lay.empty) {
      lay.reset(this.W, this.H);
      return;
    }
    const old = canvas2d(lay.w, lay.h);
    old.getContext("2d").drawImage(lay.data, 0, 0);
    const note = `${LAYERS[key].label} strokes were painted on a ${lay.w}x${lay.h} image; stretched to ${this.W}x${this.H}.`;
    lay.reset(this.W, this.H);
    lay.data.getContext("2d").drawImage(old, 0, 0, this.W, this.H);
    lay.derive();
    this.setNote(`fit-${key}`, note);
    this.commitLayer(key);
  }

  // ---- the image --------------------------------------------------------------------------------
  async setImage(url, key) {
    if (key === this.srcKey) return;
    this.srcKey = key;
    let img;
    try {
      img = await loadImage(url);
    } catch {
      if (this.srcKey === key) this.setNote("image", "The image could not be loaded.");
      return;
    }
    if (this.srcKey !== key) return;
    this.setNote("image", null);
    this.image = img;
    this.adoptSize(img.naturalWidth, img.naturalHeight);
  }

  adoptSize(W, H) {
    this.syncPoints();
    const sizeW = this.w("points_size");
    const m = String(sizeW?.value || "").match(/^\s*(\d+)\s*[xX×]\s*(\d+)\s*$/);
    this.W = W;
    this.H = H;
    if (m && this.points.length && (+m[1] !== W || +m[2] !== H)) {
      const sx = W / +m[1];
      const sy = H / +m[2];
      const pts = this.points.map(([x, y]) => [
        Math.min(W - 1, Math.max(0, Math.floor(x * sx))),
        Math.min(H - 1, Math.max(0, Math.floor(y * sy))),
      ]);
      this.setNote("rescale", `The image is now ${W}x${H} (the points were placed on ${m[1]}x${m[2]}): points rescaled.`);
      this.setPoints(pts);
    } else if (this.points.length && sizeW && !m) {
      sizeW.value = `${W}x${H}`;
    }
    for (const key of Object.keys(LAYERS)) this.fitLayer(key);
    this.layout();
  }

  // Called every frame the node is drawn (classic renderer) and every POLL_MS: follow an upstream Load Image
  // (and the mask painted in its mask editor) before any run, typed JSON, undo/redo, the overlay settings.
  poll() {
    this.restoreSession();
    if (this.cfg.labelled) labelTextBoxes(this.node, this.cfg.labelled);
    this.syncPoints();
    if (this.notes.some((n) => n.key === "locked") && !(this.cfg.locked || []).some((name) => this.isLinked(name))) {
      this.setNote("locked", null);  // the keypoints input was disconnected: the canvas takes clicks again
    }
    if (!this.W && !this.image) {
      // a reloaded workflow before any image: show the points on a blank canvas of the size they were made on
      const m = String(this.w("points_size")?.value || "").match(/^\s*(\d+)\s*[xX×]\s*(\d+)\s*$/);
      if (m && +m[1] > 0 && +m[2] > 0) this.adoptSize(+m[1], +m[2]);
    }
    const layersWanted = Object.entries(LAYERS).some(([k, s]) => (this.w(s.widget)?.value || "") !== (this.layerFiles[k] || ""));
    if (layersWanted && !this.loadingLayers) {
      this.loadingLayers = this.syncLayers().finally(() => (this.loadingLayers = null));
    }
    const src = this.loadImageInput("image");
    let url = "";
    if (src?.file) url = viewURL(src.file, "rgb");
    else if (src?.node?.imgs?.[0]?.src) url = src.node.imgs[0].src;
    if (url && url !== this.upKey) {
      this.upKey = url;
      this.setImage(url, `up:${url}`);
    }
    // an upstream mask from a Load Image is shown at once (its mask is the picture's alpha); after a run the
    // backend's copy is shown until the picture changes
    for (const [key, spec] of Object.entries(LAYERS)) {
      const m = this.loadImageInput(spec.upstream);
      const lay = this.layers[key];
      if (m?.file && m.slot === 1) {
        const alpha = viewURL(m.file, "a");
        if (lay.upstreamKey === `alpha:${alpha}`) continue; // already shown (or loading)
        if (lay.upstreamKey.startsWith("run:") && this.ranOn[key] === alpha) continue;
        lay.setUpstream(alpha, `alpha:${alpha}`, true).then(() => this.redraw())
          .catch(() => this.setNote("image", "The upstream mask could not be loaded."));
      } else if (!this.isLinked(spec.upstream) && lay.upstreamKey) {
        lay.setUpstream(null, "");
        this.redraw();
      }
    }
    const look = `${this.w("mask_color")?.value}|${this.w("mask_opacity")?.value}|${this.preview.key()}`;
    if (look !== this.look) {
      this.look = look;
      this.redraw();
    }
  }

  isLinked(name) {
    return inputLinked(this.node, this.node.inputs?.findIndex((i) => i.name === name) ?? -1);
  }

  // The node linked to input `name`: {node, slot (its output index), file (when it is a Load Image)}.
  loadImageInput(name) {
    const up = upstreamOf(this.node, name);
    if (!up) return null;
    const iw = up.node.widgets?.find((w) => w.name === "image" && typeof w.value === "string" && w.value);
    const isLoad = /^LoadImage$/.test(up.node.type || up.node.comfyClass || "");
    return { ...up, file: isLoad && iw ? parseFileValue(iw.value) : null };
  }

  async onExecuted(message) {
    const st = message?.dragon_editor?.[0];
    if (!st) return;
    for (const [key, spec] of Object.entries(LAYERS)) {
      const up = this.loadImageInput(spec.upstream)?.file;
      this.ranOn[key] = up ? viewURL(up, "a") : "";
    }
    const run = `${st.image.subfolder}/${st.image.filename}`;
    await Promise.all([
      this.layers.mask.setUpstream(st.mask ? viewURL(st.mask) : null, `run:${run}:mask`),
      this.layers.reference.setUpstream(st.reference ? viewURL(st.reference) : null, `run:${run}:reference`),
    ]).catch(() => this.setNote("image", "The upstream mask could not be loaded."));
    this.setNote("backend", (st.notes || []).join(" ") || null);
    await this.setImage(viewURL(st.image), `run:${run}`);
    this.redraw();
  }

  // ---- drawing ----------------------------------------------------------------------------------
  redraw() {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = null;
      this.draw();
    });
  }

  draw() {
    const c = this.canvas;
    const ctx = c.getContext("2d");
    ctx.clearRect(0, 0, c.width, c.height);
    this.hint.textContent = this.startHint();
    this.hint.style.display = this.hint.textContent ? "" : "none";
    if (!this.W) {
      this.status.textContent = "No image yet.";
      return;
    }
    const k = c.width / this.W; // canvas pixels per image pixel
    if (this.image) ctx.drawImage(this.image, 0, 0, c.width, c.height);
    ctx.save();
    const opacity = Number(this.w("mask_opacity")?.value);
    ctx.globalAlpha = Number.isFinite(opacity) ? Math.min(1, Math.max(0.1, opacity)) : 0.45;
    ctx.imageSmoothingEnabled = false;
    const tints = { reference: COLORS.blue, mask: COLORS[this.w("mask_color")?.value] || COLORS.red };
    for (const key of ["reference", "mask"]) {
      const lay = this.layers[key];
      if (lay.w === this.W && lay.h === this.H) ctx.drawImage(lay.composite(tints[key]), 0, 0, c.width, c.height);
    }
    ctx.restore();
    const previewNote = this.preview.draw(ctx, k);
    const dpr = window.devicePixelRatio || 1;
    const u = (c.width / Math.max(1, c.getBoundingClientRect().width)) || dpr; // canvas px per screen px
    drawPoints(ctx, this.points, k, u, this.cfg.numbered);
    if (this.hover && this.tool !== "points") {
      ctx.strokeStyle = "#fff";
      ctx.lineWidth = 1 * u;
      ctx.beginPath();
      ctx.arc(this.hover.x * k, this.hover.y * k, this.brush * k, 0, Math.PI * 2);
      ctx.stroke();
    }
    const pairs = Math.floor(this.points.length / 2);
    const waiting = this.points.length % 2 ? " · click the target" : "";
    const pos = this.hover ? ` · (${this.hover.px}, ${this.hover.py})` : "";
    const blank = this.image ? "" : " · no image yet: run the graph or connect a Load Image";
    this.status.textContent = `${this.W}x${this.H} · ${pairs} pair${pairs === 1 ? "" : "s"}${waiting}${pos}${blank}`;
    const notes = previewNote ? [...this.notes, { key: "preview", text: previewNote }] : this.notes;
    for (const n of notes) {
      const d = document.createElement("div");
      d.className = "dragon-note";
      d.textContent = n.text;
      this.status.appendChild(d);
    }
  }

  // What to do first, shown over the canvas until there is something on it.
  startHint() {
    if (!this.W) return "Connect a Load Image (or run the graph) to show the picture here.";
    const strokes = Object.values(this.layers).some((l) => !l.empty || l.upstream);
    if (this.tool === "points" && !this.points.length) {
      if (!this.cfg.brush || strokes) return this.cfg.firstHint;
      return `${this.cfg.firstHint} Mask: paint the object (move/resize) or the area that may change (drag).`;
    }
    if (this.tool !== "points" && !strokes) return "Paint with the left button, erase with the right. [ and ] change the brush.";
    return "";
  }

  remove() {
    this.resizeObserver?.disconnect();
    clearInterval(this.timer);
    window.removeEventListener("keydown", this.onKey, true);
  }
}

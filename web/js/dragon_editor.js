// Dragon Mask/Point Editor on the ComfyUI canvas (DragonDiffusion_MaskPointEditor), and the same canvas for Dragon
// Landmarks' point pairs (DragonDiffusion_Landmarks: points only, kept in its source/target lists; see CONFIGS).
//
// The node shows its input image on a canvas inside the node: the image of the last run (sent by
// the backend in the "dragon_editor" UI message) or, before any run, the image of an upstream Load
// Image (with the mask painted in its mask editor shown at once). Points: click a handle, click again
// for its target; drag a point to move it; right-click a point to delete its pair. Brush: paint (left
// button) or erase (right button, or the Erase toggle) the mask or the reference region. The wheel
// and the middle button zoom and pan the graph, as anywhere else. Works in the classic and the
// Nodes 2.0 renderer. All state lives in the node's widget values, so it is saved with the workflow,
// is part of ComfyUI's undo history and is sent on queue:
//   points      JSON [{"x":..,"y":..}, ...] in image pixels, alternating handle, target
//   points_size "WxH" of the image the points were placed on (a new image size rescales them)
//   editor_mask / editor_reference
//               the brush layer: an RGBA PNG whose alpha says where the brush went and whose red says
//               paint (255) or erase (0). Kept in the workflow as a data: URL while it is being painted,
//               uploaded to ComfyUI's input folder (dragon_editor/) once, when the workflow is queued,
//               and then named by its file.
//   mask_color / mask_opacity
//               how the mask is shown, here and in the preview output.
import { app } from "../../../scripts/app.js";
import { api } from "../../../scripts/api.js";

// Parse one point list: [[x, y], ...] or [{"x":..,"y":..}, ...] (or handle/target pairs); throws on bad input.
function parsePoints(text) {
  const data = JSON.parse(String(text || "").trim() || "[]");
  if (!Array.isArray(data)) throw new Error("not a list");
  const pts = [];
  for (const p of data) {
    if (Array.isArray(p?.handle) && Array.isArray(p?.target)) {
      pts.push([+p.handle[0], +p.handle[1]], [+p.target[0], +p.target[1]]);
    } else if (p && typeof p === "object" && "x" in p && "y" in p) {
      pts.push([+p.x, +p.y]);
    } else if (Array.isArray(p) && p.length === 2) {
      pts.push([+p[0], +p[1]]);
    } else {
      throw new Error("bad point");
    }
  }
  return pts.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
}

// The two nodes with a canvas. The Dragon Mask/Point Editor keeps the points as one alternating handle, target list and
// has the brush; Dragon Landmarks keeps two lists paired by position (its labelled source/target boxes, which stay
// visible for pasting a detector's output) and only points.
const CONFIGS = {
  DragonDiffusion_MaskPointEditor: {
    brush: true,
    hidden: ["points", "points_size", "editor_mask", "editor_reference"],
    json: true,
    numbered: false,
    firstHint: "Click a handle point on the object, then where it should go.",
    read: (ed) => {
      const text = ed.w("points")?.value ?? "[]";
      return { text, parse: () => parsePoints(text) };
    },
    write: (ed, points) => {
      const text = JSON.stringify(points.map(([x, y]) => ({ x, y })));
      const pw = ed.w("points");
      if (pw) pw.value = text;
      return text;
    },
  },
  DragonDiffusion_Landmarks: {
    brush: false,
    hidden: [],
    json: false,
    numbered: true,
    firstHint: "Click a landmark where it is now, then where it should go; pairs are numbered in order.",
    locked: ["source_keypoints", "target_keypoints"], // a detector's points replace the lists: not editable here
    read: (ed) => {
      const a = ed.w("source_points")?.value ?? "";
      const b = ed.w("target_points")?.value ?? "";
      return {
        text: `${a}\u0000${b}`,
        parse: () => {
          const src = parsePoints(a);
          const tgt = parsePoints(b);
          const pts = [];
          for (let i = 0; i < src.length; i++) {
            pts.push(src[i]);
            if (i < tgt.length) pts.push(tgt[i]);
            else break; // a source without its target yet: the last point, waiting for its target
          }
          if (tgt.length > src.length || (src.length > tgt.length + 1)) {
            ed.setNote("count", `source_points has ${src.length} points and target_points ${tgt.length}: ` +
              "the canvas shows the pairs they have in common.");
          } else ed.setNote("count", null);
          return pts;
        },
      };
    },
    write: (ed, points) => {
      const src = points.filter((_, i) => i % 2 === 0).map(([x, y]) => [x, y]);
      const tgt = points.filter((_, i) => i % 2 === 1).map(([x, y]) => [x, y]);
      const a = JSON.stringify(src);
      const b = JSON.stringify(tgt);
      const sw = ed.w("source_points");
      const tw = ed.w("target_points");
      if (sw) sw.value = a;
      if (tw) tw.value = b;
      return `${a}\u0000${b}`;
    },
  },
};
const SUBFOLDER = "dragon_editor";
const HIT_PX = 9; // screen pixels within which a click grabs a point
// the same table as nodes/editor.py MASK_COLORS (0..1 there)
const COLORS = {
  red: [255, 70, 70], green: [51, 217, 77], blue: [60, 140, 255], yellow: [255, 230, 38],
  cyan: [26, 230, 242], magenta: [255, 64, 230], white: [255, 255, 255], black: [0, 0, 0],
};
const LAYERS = {
  mask: { widget: "editor_mask", upstream: "mask", label: "Mask" },
  reference: { widget: "editor_reference", upstream: "reference", label: "Ref" },
};
const BRUSH_MIN = 1;
const BRUSH_MAX = 512;
const SYNC_ENCODE_PIXELS = 2048 * 2048; // brush layers up to this size are stored at once after a stroke
const POLL_MS = 250; // the Nodes 2.0 renderer does not call onDrawForeground: the editor polls on its own too

function canvas2d(w, h) {
  const c = document.createElement("canvas");
  c.width = Math.max(1, w);
  c.height = Math.max(1, h);
  return c;
}

function fnv1a(bytes) {
  let h = 0x811c9dc5;
  for (let i = 0; i < bytes.length; i++) {
    h ^= bytes[i];
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h.toString(16).padStart(8, "0");
}

// channel "rgb": the picture without its alpha (a mask painted in Load Image's mask editor is its alpha: drawn
// as is, the masked part would be a hole); "a": the alpha alone (in the alpha of a black image)
function viewURL(ref, channel) {
  const p = new URLSearchParams({ filename: ref.filename, type: ref.type || "input", subfolder: ref.subfolder || "" });
  if (channel) p.set("channel", channel);
  return api.apiURL(`/view?${p.toString()}`);
}

function isNodes2() {
  return !!app.ui?.settings?.getSettingValue?.("Comfy.VueNodes.Enabled");
}

// "sub/name.png [input]" -> {filename, subfolder, type}
function parseFileValue(value) {
  let v = String(value || "").trim();
  let type = "input";
  const m = v.match(/^(.*) \[(input|output|temp)\]$/);
  if (m) {
    v = m[1];
    type = m[2];
  }
  const i = v.lastIndexOf("/");
  return { filename: i >= 0 ? v.slice(i + 1) : v, subfolder: i >= 0 ? v.slice(0, i) : "", type };
}

function dataURLBlob(url) {
  const comma = url.indexOf(",");
  const type = url.slice(5, comma).split(";")[0] || "application/octet-stream";
  const bin = atob(url.slice(comma + 1));
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return new Blob([bytes], { type });
}

function loadImage(url) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error(`could not load ${url}`));
    img.src = url;
  });
}

function button(text, title, onClick) {
  const b = document.createElement("button");
  b.textContent = text;
  b.title = title;
  b.className = "dragon-btn";
  b.addEventListener("click", (e) => {
    e.preventDefault();
    e.stopPropagation();
    onClick();
  });
  return b;
}

const STYLE = `
.dragon-editor { display:flex; flex-direction:column; gap:4px; width:100%; height:100%; min-height:300px;
  box-sizing:border-box; font: 12px sans-serif; color: var(--input-text, #ddd); }
.dragon-size { width:44px; background: var(--comfy-input-bg, #222); color: inherit; font-size:12px;
  border: 1px solid var(--border-color, #555); border-radius:4px; padding:1px 2px; }
.dragon-json { width:100%; min-height:60px; box-sizing:border-box; font: 11px monospace; resize:vertical;
  background: var(--comfy-input-bg, #222); color: inherit; border: 1px solid var(--border-color, #555); }
.dragon-hint { position:absolute; left:8px; right:8px; bottom:8px; padding:4px 6px; border-radius:4px;
  background: rgba(0,0,0,0.6); color:#fff; pointer-events:none; text-align:center; }
.dragon-bar { display:flex; flex-wrap:wrap; gap:3px; align-items:center; }
.dragon-btn { background: var(--comfy-input-bg, #222); color: inherit; border: 1px solid var(--border-color, #555);
  border-radius:4px; padding:2px 6px; cursor:pointer; font-size:12px; }
.dragon-btn.active { background:#3a6; border-color:#5c8; color:#fff; }
.dragon-stage { flex:1; min-height:120px; position:relative; display:flex; align-items:center; justify-content:center;
  background: rgba(0,0,0,0.25); border-radius:4px; overflow:hidden; }
.dragon-canvas { display:block; touch-action:none; cursor:crosshair; }
.dragon-status { min-height:16px; white-space:nowrap; overflow:hidden; text-overflow:ellipsis; opacity:0.85; }
.dragon-note { color:#fb3; white-space:normal; }
`;

class Layer {
  constructor(key, spec) {
    this.key = key;
    this.spec = spec;
    this.data = canvas2d(1, 1); // what is uploaded: alpha = brushed, red = paint/erase
    this.paint = canvas2d(1, 1); // display: painted pixels, white (tinted when shown)
    this.cover = canvas2d(1, 1); // display: every brushed pixel (cuts the upstream overlay)
    this.upstream = null; // display: the upstream MASK input, white with the mask as alpha
    this.upstreamKey = ""; // where it came from ("run:..." after a run, "alpha:<url>" from a Load Image)
    this.scratch = canvas2d(1, 1);
    this.empty = true;
  }

  get w() {
    return this.data.width;
  }

  get h() {
    return this.data.height;
  }

  reset(w, h) {
    for (const c of [this.data, this.paint, this.cover, this.scratch]) {
      c.width = w;
      c.height = h;
    }
    this.empty = true;
  }

  // Rebuild the display canvases from the data canvas (after loading or stretching it).
  derive() {
    const { width: w, height: h } = this.data;
    for (const c of [this.paint, this.cover, this.scratch]) {
      c.width = w;
      c.height = h;
    }
    const src = this.data.getContext("2d").getImageData(0, 0, w, h).data;
    const paint = new ImageData(w, h);
    const cover = new ImageData(w, h);
    let any = false;
    for (let i = 0; i < src.length; i += 4) {
      const a = src[i + 3];
      if (!a) continue;
      any = true;
      cover.data[i + 3] = a;
      paint.data[i] = paint.data[i + 1] = paint.data[i + 2] = 255;
      paint.data[i + 3] = Math.round((a * src[i]) / 255);
    }
    this.paint.getContext("2d").putImageData(paint, 0, 0);
    this.cover.getContext("2d").putImageData(cover, 0, 0);
    this.empty = !any;
  }

  // One brush segment in image pixels.
  stroke(a, b, radius, erase) {
    const draw = (ctx, color, op) => {
      ctx.save();
      ctx.globalCompositeOperation = op;
      ctx.strokeStyle = ctx.fillStyle = color;
      ctx.lineWidth = radius * 2;
      ctx.lineCap = "round";
      ctx.beginPath();
      ctx.moveTo(a.x, a.y);
      ctx.lineTo(b.x, b.y);
      ctx.stroke();
      ctx.beginPath();
      ctx.arc(b.x, b.y, radius, 0, Math.PI * 2);
      ctx.fill();
      ctx.restore();
    };
    draw(this.data.getContext("2d"), erase ? "#000000" : "#ffffff", "source-over");
    draw(this.cover.getContext("2d"), "#000000", "source-over");
    draw(this.paint.getContext("2d"), "#ffffff", erase ? "destination-out" : "source-over");
    this.empty = false;
  }

  // The upstream mask from an image: a grey mask saved by the backend (value = red), or a Load Image picture
  // whose mask is 1 - alpha (fromAlpha), as ComfyUI's Load Image computes it.
  async setUpstream(url, key, fromAlpha = false) {
    if (key === this.upstreamKey) return;
    this.upstreamKey = key;
    if (!url) {
      this.upstream = null;
      return;
    }
    const img = await loadImage(url);
    if (this.upstreamKey !== key) return;
    const c = canvas2d(img.naturalWidth, img.naturalHeight);
    const ctx = c.getContext("2d");
    ctx.drawImage(img, 0, 0);
    const d = ctx.getImageData(0, 0, c.width, c.height);
    for (let i = 0; i < d.data.length; i += 4) {
      const v = fromAlpha ? 255 - d.data[i + 3] : d.data[i];
      d.data[i] = d.data[i + 1] = d.data[i + 2] = 255;
      d.data[i + 3] = v;
    }
    ctx.putImageData(d, 0, 0);
    this.upstream = c;
  }

  // The effective mask as shown, in `tint`: upstream overlay, cut where brushed, plus painted pixels.
  composite(tint) {
    const ctx = this.scratch.getContext("2d");
    ctx.clearRect(0, 0, this.scratch.width, this.scratch.height);
    if (this.upstream) {
      ctx.drawImage(this.upstream, 0, 0, this.scratch.width, this.scratch.height);
      ctx.globalCompositeOperation = "destination-out";
      ctx.drawImage(this.cover, 0, 0);
      ctx.globalCompositeOperation = "source-over";
    }
    ctx.drawImage(this.paint, 0, 0);
    ctx.globalCompositeOperation = "source-in";
    ctx.fillStyle = `rgb(${tint[0]},${tint[1]},${tint[2]})`;
    ctx.fillRect(0, 0, this.scratch.width, this.scratch.height);
    ctx.globalCompositeOperation = "source-over";
    return this.scratch;
  }
}

let editorCount = 0;

class DragonEditor {
  constructor(node, cfg) {
    watchUndo();
    this.rebuiltByUndo = undoing > 0;
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
    if (!document.getElementById("dragon-editor-style")) {
      const st = document.createElement("style");
      st.id = "dragon-editor-style";
      st.textContent = STYLE;
      document.head.appendChild(st);
    }
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
    const tol = HIT_PX / Math.max(1e-6, this.screenPerImage());
    let best = -1;
    let bestD = tol;
    this.points.forEach(([x, y], i) => {
      const d = Math.hypot(x + 0.5 - p.x, y + 0.5 - p.y);
      if (d <= bestD) {
        best = i;
        bestD = d;
      }
    });
    return best;
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
    const done = new Promise((resolve) => lay.data.toBlob(resolve, "image/png"))
      .then((blob) => new Promise((resolve, reject) => {
        const reader = new FileReader();
        reader.onload = () => resolve(reader.result);
        reader.onerror = () => reject(reader.error);
        reader.readAsDataURL(blob);
      }))
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
      const blob = dataURLBlob(value); // (fetch() of a data: URL is refused by the page's content policy)
      const lay = this.layers[key];
      const name = `${key}_${lay.w}x${lay.h}_${fnv1a(new TextEncoder().encode(value))}.png`;
      const body = new FormData();
      body.append("image", blob, name);
      body.append("subfolder", SUBFOLDER);
      body.append("type", "input");
      body.append("overwrite", "true");
      const resp = await api.fetchApi("/upload/image", { method: "POST", body });
      if (resp.status !== 200) throw new Error(`${resp.status} ${resp.statusText}`);
      const res = await resp.json();
      if (w.value !== value) return; // newer strokes since: they are uploaded by their own queue
      const saved = res.subfolder ? `${res.subfolder}/${res.name}` : res.name;
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
    const setup = this.downstreamSetup();
    const sv = (n) => setup?.widgets?.find((w) => w.name === n)?.value;
    const look = `${this.w("mask_color")?.value}|${this.w("mask_opacity")?.value}|${sv("mode")}|${sv("offset_x")}|` +
      `${sv("offset_y")}|${sv("scale")}`;
    if (look !== this.look) {
      this.look = look;
      this.redraw();
    }
  }

  isLinked(name) {
    return inputLinked(this.node, this.node.inputs?.findIndex((i) => i.name === name) ?? -1);
  }

  inputLink(slot) {
    if (typeof this.node.getInputLink === "function") return this.node.getInputLink(slot) ?? null;
    const id = this.node.inputs[slot]?.link;
    return id == null ? null : graphLink(this.node.graph, id);
  }

  // The node linked to input `name`: {node, slot (its output index), file (when it is a Load Image)}.
  loadImageInput(name) {
    const slot = this.node.inputs?.findIndex((i) => i.name === name) ?? -1;
    if (slot < 0 || !this.isLinked(name)) return null;
    const node = this.node.getInputNode(slot);
    if (!node) return null;
    const out = this.inputLink(slot)?.origin_slot ?? 0;
    const iw = node.widgets?.find((w) => w.name === "image" && typeof w.value === "string" && w.value);
    const isLoad = /^LoadImage$/.test(node.type || node.comfyClass || "");
    return { node, slot: out, file: isLoad && iw ? parseFileValue(iw.value) : null };
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
    this.drawGhost(ctx, k);
    const dpr = window.devicePixelRatio || 1;
    const u = (c.width / Math.max(1, c.getBoundingClientRect().width)) || dpr; // canvas px per screen px
    const r = 5 * u;
    const at = ([x, y]) => [(x + 0.5) * k, (y + 0.5) * k];
    for (let i = 0; i + 1 < this.points.length; i += 2) {
      const [x0, y0] = at(this.points[i]);
      const [x1, y1] = at(this.points[i + 1]);
      const ang = Math.atan2(y1 - y0, x1 - x0);
      ctx.strokeStyle = "#ffe640";
      ctx.fillStyle = "#ffe640";
      ctx.lineWidth = 2 * u;
      ctx.beginPath();
      ctx.moveTo(x0, y0);
      ctx.lineTo(x1, y1);
      ctx.stroke();
      ctx.beginPath();
      ctx.moveTo(x1, y1);
      ctx.lineTo(x1 - 12 * u * Math.cos(ang - 0.4), y1 - 12 * u * Math.sin(ang - 0.4));
      ctx.lineTo(x1 - 12 * u * Math.cos(ang + 0.4), y1 - 12 * u * Math.sin(ang + 0.4));
      ctx.closePath();
      ctx.fill();
    }
    if (this.cfg.numbered) {
      // landmarks pair by position: number each source point
      ctx.font = `${Math.round(11 * u)}px sans-serif`;
      ctx.textBaseline = "bottom";
      ctx.lineWidth = 3 * u;
      for (let i = 0; i < this.points.length; i += 2) {
        const [x, y] = at(this.points[i]);
        const label = String(i / 2 + 1);
        ctx.strokeStyle = "rgba(0,0,0,0.8)";
        ctx.strokeText(label, x + r, y - r * 0.6);
        ctx.fillStyle = "#fff";
        ctx.fillText(label, x + r, y - r * 0.6);
      }
    }
    this.points.forEach((p, i) => {
      const [x, y] = at(p);
      ctx.fillStyle = i % 2 ? "#2a5cf5" : "#f22";
      ctx.strokeStyle = "#fff";
      ctx.lineWidth = 1.5 * u;
      ctx.beginPath();
      ctx.arc(x, y, r, 0, Math.PI * 2);
      ctx.fill();
      ctx.stroke();
    });
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
    for (const n of this.notes) {
      const d = document.createElement("div");
      d.className = "dragon-note";
      d.textContent = n.text;
      this.status.appendChild(d);
    }
  }

  // The Dragon Guidance Setup this editor's points go to (straight link), or null.
  downstreamSetup() {
    const slot = this.node.outputs?.findIndex((o) => o.name === "points") ?? -1;
    const graph = this.node.graph;
    for (const id of (slot >= 0 && this.node.outputs[slot].links) || []) {
      const link = graphLink(graph, id);
      const n = link && graph.getNodeById(link.target_id);
      if (n?.type === "DragonDiffusion_GuidanceSetup") return n;
    }
    return null;
  }

  // The edit before any run, with no model call: for move/resize, the painted object drawn see-through where it
  // will go (moved by the point pair or the Setup's offset, scaled by its scale about the object's box centre, as
  // the backend places it); drag shows its arrows. The mode, offset and scale come from the Dragon Guidance Setup
  // this editor feeds (move when none is linked).
  drawGhost(ctx, k) {
    if (!this.cfg.brush || !this.image) return;
    const setup = this.downstreamSetup();
    const v = (n) => setup?.widgets?.find((w) => w.name === n)?.value;
    const mode = setup ? v("mode") : "move";
    if (mode !== "move" && mode !== "resize") return;
    const lay = this.layers.mask;
    if (lay.w !== this.W || lay.h !== this.H) return;
    let dx = Number(v("offset_x")) || 0;
    let dy = Number(v("offset_y")) || 0;
    const scale = setup ? Number(v("scale")) || 1 : 1;
    if (this.points.length >= 2 && !dx && !dy) {
      dx = this.points[1][0] - this.points[0][0];
      dy = this.points[1][1] - this.points[0][1];
    }
    if (!dx && !dy && scale === 1) return;
    const mask = lay.composite([255, 255, 255]); // alpha = the object as shown
    const box = maskBox(mask, this.W, this.H);
    if (!box) return;
    this.ghost ??= canvas2d(1, 1);
    const g = this.ghost;
    if (g.width !== this.W || g.height !== this.H) {
      g.width = this.W;
      g.height = this.H;
    }
    const gc = g.getContext("2d");
    gc.clearRect(0, 0, g.width, g.height);
    gc.drawImage(this.image, 0, 0, this.W, this.H);
    gc.globalCompositeOperation = "destination-in";
    gc.drawImage(mask, 0, 0, this.W, this.H);
    gc.globalCompositeOperation = "source-over";
    const cx = (box.x0 + box.x1 + 1) / 2;
    const cy = (box.y0 + box.y1 + 1) / 2;
    ctx.save();
    ctx.globalAlpha = GHOST_ALPHA;
    ctx.translate((cx + dx) * k, (cy + dy) * k);
    ctx.scale(scale, scale);
    ctx.translate(-cx * k, -cy * k);
    ctx.drawImage(g, 0, 0, this.W * k, this.H * k);
    ctx.globalAlpha = 1;
    ctx.setLineDash([4, 3]);
    ctx.strokeStyle = "#ffe640";
    ctx.lineWidth = 1.5 / scale;
    ctx.strokeRect(box.x0 * k, box.y0 * k, (box.x1 - box.x0 + 1) * k, (box.y1 - box.y0 + 1) * k);
    ctx.restore();
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

// Connectivity through the node's API (frontend 1.58 keeps links in the graph and ignores writes to input.link);
// the slot's own link id where an older frontend lacks the API (1.32 has both). Also used by dragon_guidance.js.
export function inputLinked(node, slot) {
  if (slot < 0 || !node.inputs?.[slot]) return false;
  if (typeof node.isInputConnected === "function") return !!node.isInputConnected(slot);
  return node.inputs[slot].link != null;
}

// A link of the graph by id, whichever way this frontend keeps them (getLink, a Map, or an object).
function graphLink(graph, id) {
  return graph?.getLink?.(id) ?? graph?.links?.get?.(id) ?? graph?.links?.[id] ?? null;
}

// node (graph id : node id) -> {tool}: read back only when ComfyUI's undo/redo rebuilt the editor (a new editor,
// e.g. in a cleared graph that reuses the node id, starts with the Points tool)
const SESSION = new Map();
let undoing = 0; // > 0 while an undo/redo runs: the editors made meanwhile are the rebuilt ones

function watchUndo() {
  const tracker = app.extensionManager?.workflow?.activeWorkflow?.changeTracker;
  const proto = tracker && Object.getPrototypeOf(tracker);
  if (!proto || proto.dragonUndoWatched) return;
  for (const name of ["undo", "redo"]) {
    const own = proto[name];
    if (typeof own !== "function") continue;
    proto[name] = async function (...args) {
      undoing++;
      try {
        return await own.apply(this, args);
      } finally {
        undoing--;
      }
    };
  }
  proto.dragonUndoWatched = true;
}

const GHOST_ALPHA = 0.55; // the edit preview's object: see-through, so what it will cover stays visible

// Bounding box {x0, y0, x1, y1} (image pixels, inclusive) of a mask canvas's opaque part, read on a copy of at most
// 256 px a side (cheap on every redraw); null when empty.
function maskBox(mask, W, H) {
  const f = Math.min(1, 256 / Math.max(W, H));
  const w = Math.max(1, Math.round(W * f));
  const h = Math.max(1, Math.round(H * f));
  const c = canvas2d(w, h);
  const ctx = c.getContext("2d");
  ctx.drawImage(mask, 0, 0, w, h);
  const d = ctx.getImageData(0, 0, w, h).data;
  let x0 = w, y0 = h, x1 = -1, y1 = -1;
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      if (d[(y * w + x) * 4 + 3] > 127) {
        if (x < x0) x0 = x;
        if (x > x1) x1 = x;
        if (y < y0) y0 = y;
        if (y > y1) y1 = y;
      }
    }
  }
  if (x1 < 0) return null;
  return { x0: Math.floor(x0 / f), y0: Math.floor(y0 / f), x1: Math.min(W - 1, Math.ceil((x1 + 1) / f) - 1),
    y1: Math.min(H - 1, Math.ceil((y1 + 1) / f) - 1) };
}

// Hand a wheel or middle-button event to the graph canvas (zoom and pan over the editor as anywhere else).
function forwardToGraph(e) {
  const el = app.canvas?.canvas;
  if (!el) return;
  e.preventDefault();
  e.stopPropagation();
  if (e.type === "wheel") {
    const { clientX, clientY, deltaX, deltaY, deltaMode, ctrlKey, metaKey, shiftKey, altKey } = e;
    el.dispatchEvent(new WheelEvent("wheel", { clientX, clientY, deltaX, deltaY, deltaMode, ctrlKey, metaKey, shiftKey,
      altKey, bubbles: true, cancelable: true }));
    return;
  }
  el.dispatchEvent(new PointerEvent(e.type, e));
}

// ComfyUI's undo history (its change tracker) takes a snapshot of the graph on a window mouseup or on a
// litegraph "after-change" event. The editor's pointer events stop at its canvas, and a stroke's widget value
// changes only when its upload ends, so each finished edit announces itself: one undo step per point placed,
// moved or deleted, per burst of strokes, per clear.
function recordUndoStep() {
  for (const subType of ["before-change", "after-change"]) {
    document.dispatchEvent(new CustomEvent("litegraph:canvas", { detail: { subType } }));
  }
}

app.registerExtension({
  name: "DragonDiffusion.MaskPointEditor",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    const cfg = CONFIGS[nodeData?.name];
    if (!cfg) return;
    const created = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const r = created?.apply(this, arguments);
      this.dragonEditor = new DragonEditor(this, cfg);
      // The canvas already shows the image with live overlays: no image preview below the node (the backend
      // sends none; this also covers an image set on the node by other means).
      this.onDrawBackground = function () {};
      this.setSize([Math.max(this.size[0], 420), Math.max(this.size[1], 480)]);
      return r;
    };
    const executed = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      executed?.apply(this, arguments);
      this.dragonEditor?.onExecuted(message);
    };
    const configure = nodeType.prototype.onConfigure;
    nodeType.prototype.onConfigure = function () {
      const r = configure?.apply(this, arguments);
      const ed = this.dragonEditor;
      if (ed) {
        ed.hideStateWidgets();
        ed.pointsText = null;
        ed.syncPoints();
        ed.syncLayers();
      }
      return r;
    };
    const drawFg = nodeType.prototype.onDrawForeground;
    nodeType.prototype.onDrawForeground = function () {
      const r = drawFg?.apply(this, arguments);
      this.dragonEditor?.poll();
      return r;
    };
    const removed = nodeType.prototype.onRemoved;
    nodeType.prototype.onRemoved = function () {
      this.dragonEditor?.remove();
      return removed?.apply(this, arguments);
    };
  },
});

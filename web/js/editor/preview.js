// The edit before any run, with no model call. move/resize: the painted object drawn see-through where it will go
// (moved by the point pair or the Setup's offset, scaled by its scale about the object's box centre, as the backend
// places it). paste: the reference image's object (its reference_mask) drawn see-through where it will be pasted,
// by the same rule (dragon_core.geometry.object_warp on the reference mask). drag: its arrows (points.js). The
// mode, offset, scale and reference come from the Dragon Guidance Setup this editor's points feed (move when none
// is linked).
import { canvas2d } from "./view.js";
import { loadImage, parseFileValue, viewURL } from "./files.js";
import { downstreamOf, upstreamOf } from "./renderer.js";

const GHOST_ALPHA = 0.55; // the previewed object: see-through, so what it will cover stays visible
const EDITOR = "DragonDiffusion_MaskPointEditor";
const SETUP = "DragonDiffusion_GuidanceSetup";

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

function isLoadImage(node) {
  return /^LoadImage$/.test(node?.type || node?.comfyClass || "");
}

// The file a Load Image node shows, or null.
function loadImageFile(node) {
  const iw = node?.widgets?.find((w) => w.name === "image" && typeof w.value === "string" && w.value);
  return isLoadImage(node) && iw ? parseFileValue(iw.value) : null;
}

// The picture an input comes from, walking up through the nodes between (DDIM Invert <- VAE Encode <- Load Image):
// {file} of a Load Image or {editor} of a Mask/Point Editor, nearest first; null when none is found.
function pictureAbove(node, name, depth = 6) {
  let level = [upstreamOf(node, name)?.node].filter(Boolean);
  const seen = new Set();
  for (let d = 0; d < depth && level.length; d++) {
    const next = [];
    for (const n of level) {
      if (seen.has(n)) continue;
      seen.add(n);
      const file = loadImageFile(n);
      if (file) return { file };
      if (n.type === EDITOR && n.dragonEditor) return { editor: n.dragonEditor };
      for (const inp of n.inputs || []) {
        const up = upstreamOf(n, inp.name)?.node;
        if (up) next.push(up);
      }
    }
    level = next;
  }
  return null;
}

export class EditPreview {
  constructor(editor) {
    this.ed = editor;
    this.ghost = null; // the object cut out of its picture, at the picture's size
    this.pictures = new Map(); // url -> {canvas} once loaded ({pending} while loading, {failed})
  }

  // The Dragon Guidance Setup this editor's points go to (straight link), or null.
  setup() {
    return downstreamOf(this.ed.node, "points", SETUP)[0] ?? null;
  }

  // A picture by URL, loaded once; alpha: the picture's alpha turned into a mask (1 - alpha, as Load Image reads
  // it) in the alpha of a white canvas. null until loaded (the editor redraws then).
  picture(url, alpha = false) {
    const key = `${alpha ? "a" : "rgb"}:${url}`;
    const got = this.pictures.get(key);
    if (got) return got.canvas ?? null;
    this.pictures.set(key, { pending: true });
    loadImage(url).then((img) => {
      const c = canvas2d(img.naturalWidth, img.naturalHeight);
      const ctx = c.getContext("2d");
      ctx.drawImage(img, 0, 0);
      if (alpha) {
        const d = ctx.getImageData(0, 0, c.width, c.height);
        for (let i = 0; i < d.data.length; i += 4) {
          const v = 255 - d.data[i + 3];
          d.data[i] = d.data[i + 1] = d.data[i + 2] = 255;
          d.data[i + 3] = v;
        }
        ctx.putImageData(d, 0, 0);
      }
      this.pictures.set(key, { canvas: c });
      this.ed.redraw();
    }).catch(() => this.pictures.set(key, { failed: true }));
    return null;
  }

  // paste: the reference picture and its object mask (alpha), each a canvas, or a reason there is none.
  pasteSource(setup) {
    const m = upstreamOf(setup, "reference_mask");
    if (!m) return { why: "connect reference_mask on the Dragon Guidance Setup to preview the paste" };
    let mask = null;
    let pictureFromMask = null;
    const file = loadImageFile(m.node);
    if (file && m.slot === 1) {
      mask = this.picture(viewURL(file, "a"), true);
      pictureFromMask = { file };
    } else if (m.node.type === EDITOR && m.node.dragonEditor) {
      const other = m.node.dragonEditor; // another editor's mask (slot 0) or reference (slot 3) layer
      const lay = other.layers[m.slot === 3 ? "reference" : "mask"];
      if (lay.w === other.W && lay.h === other.H && other.W) mask = lay.composite([255, 255, 255]);
      pictureFromMask = { editor: other };
    } else return { why: "" }; // a computed mask (e.g. a segmenter's): known only when the graph runs
    const src = pictureAbove(setup, "reference_inversion") ?? pictureFromMask;
    const picture = src?.file ? this.picture(viewURL(src.file, "rgb")) : src?.editor?.image ?? null;
    if (!mask || !picture) return { why: "" };
    return { picture, mask };
  }

  // A string that changes whenever the preview must be redrawn (read by the editor's poll).
  key() {
    const setup = this.setup();
    if (!setup) return "";
    const v = (n) => setup.widgets?.find((w) => w.name === n)?.value;
    const parts = [v("mode"), v("offset_x"), v("offset_y"), v("scale")];
    if (v("mode") === "paste") {
      for (const name of ["reference_mask", "reference_inversion"]) {
        const up = upstreamOf(setup, name);
        parts.push(up ? `${up.node.id}:${up.slot}:${loadImageFile(up.node)?.filename ?? ""}` : "-");
      }
    }
    return parts.join("|");
  }

  // Draw the preview on the editor's canvas (k canvas pixels per image pixel); returns a note for the status line
  // when the preview cannot be drawn for a reason the user can fix, else "".
  draw(ctx, k) {
    const ed = this.ed;
    if (!ed.cfg.brush || !ed.image) return "";
    const setup = this.setup();
    const v = (n) => setup?.widgets?.find((w) => w.name === n)?.value;
    const mode = setup ? v("mode") : "move";
    if (mode !== "move" && mode !== "resize" && mode !== "paste") return "";
    let dx = Number(v("offset_x")) || 0;
    let dy = Number(v("offset_y")) || 0;
    const scale = setup ? Number(v("scale")) || 1 : 1;
    if (ed.points.length >= 2 && !dx && !dy) {
      dx = ed.points[1][0] - ed.points[0][0];
      dy = ed.points[1][1] - ed.points[0][1];
    }
    let picture;
    let mask;
    if (mode === "paste") {
      const src = this.pasteSource(setup);
      if (!src.picture) return src.why ? `Paste preview: ${src.why}.` : "";
      const [pw, ph] = [src.picture.naturalWidth ?? src.picture.width, src.picture.naturalHeight ?? src.picture.height];
      if (pw !== ed.W || ph !== ed.H || src.mask.width !== ed.W || src.mask.height !== ed.H) {
        return `Paste preview: the reference picture is ${pw}x${ph} and this image ${ed.W}x${ed.H}; the paste needs ` +
          "both the same size (resize the reference first).";
      }
      ({ picture, mask } = src);
    } else {
      const lay = ed.layers.mask;
      if (lay.w !== ed.W || lay.h !== ed.H) return "";
      if (!dx && !dy && scale === 1) return "";
      picture = ed.image;
      mask = lay.composite([255, 255, 255]); // alpha = the object as shown
    }
    const box = maskBox(mask, ed.W, ed.H);
    if (!box) return "";
    this.ghost ??= canvas2d(1, 1);
    const g = this.ghost;
    if (g.width !== ed.W || g.height !== ed.H) {
      g.width = ed.W;
      g.height = ed.H;
    }
    const gc = g.getContext("2d");
    gc.clearRect(0, 0, g.width, g.height);
    gc.drawImage(picture, 0, 0, ed.W, ed.H);
    gc.globalCompositeOperation = "destination-in";
    gc.drawImage(mask, 0, 0, ed.W, ed.H);
    gc.globalCompositeOperation = "source-over";
    const cx = (box.x0 + box.x1 + 1) / 2;
    const cy = (box.y0 + box.y1 + 1) / 2;
    ctx.save();
    ctx.globalAlpha = GHOST_ALPHA;
    ctx.translate((cx + dx) * k, (cy + dy) * k);
    ctx.scale(scale, scale);
    ctx.translate(-cx * k, -cy * k);
    ctx.drawImage(g, 0, 0, ed.W * k, ed.H * k);
    ctx.globalAlpha = 1;
    ctx.setLineDash([4, 3]);
    ctx.strokeStyle = "#ffe640";
    ctx.lineWidth = 1.5 / scale;
    ctx.strokeRect(box.x0 * k, box.y0 * k, (box.x1 - box.x0 + 1) * k, (box.y1 - box.y0 + 1) * k);
    ctx.restore();
    return "";
  }
}

// The brush layers: the mask (the object, or the region allowed to change) and the reference region. Each is
// kept as the canvas that is uploaded (alpha = brushed, red = paint 255 / erase 0) and display canvases derived
// from it; the upstream MASK input (a Load Image's painted mask, or the backend's copy after a run) is shown under
// the strokes, cut where the brush went.
import { canvas2d } from "./view.js";
import { loadImage } from "./files.js";

// the same table as nodes/editor.py MASK_COLORS (0..1 there)
export const COLORS = {
  red: [255, 70, 70], green: [51, 217, 77], blue: [60, 140, 255], yellow: [255, 230, 38],
  cyan: [26, 230, 242], magenta: [255, 64, 230], white: [255, 255, 255], black: [0, 0, 0],
};
// layer key -> its widget (the strokes), its upstream MASK input and its button's label
export const LAYERS = {
  mask: { widget: "editor_mask", upstream: "mask", label: "Mask" },
  reference: { widget: "editor_reference", upstream: "reference", label: "Ref" },
};
export const BRUSH_MIN = 1;
export const BRUSH_MAX = 512;
export const SYNC_ENCODE_PIXELS = 2048 * 2048; // brush layers up to this size are stored at once after a stroke

export class Layer {
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

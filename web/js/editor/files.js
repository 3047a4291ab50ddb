// Pictures and files: ComfyUI's /view URLs for a widget's file name, loading images, and the brush layers' PNGs
// (encoded from a canvas, uploaded to the input folder under dragon_editor/, named by their content).
import { api } from "../../../../scripts/api.js";

export const SUBFOLDER = "dragon_editor";

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
export function viewURL(ref, channel) {
  const p = new URLSearchParams({ filename: ref.filename, type: ref.type || "input", subfolder: ref.subfolder || "" });
  if (channel) p.set("channel", channel);
  return api.apiURL(`/view?${p.toString()}`);
}

// "sub/name.png [input]" -> {filename, subfolder, type}
export function parseFileValue(value) {
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

export function loadImage(url) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error(`could not load ${url}`));
    img.src = url;
  });
}

// A canvas as a PNG data: URL, encoded off the page's thread (toBlob).
export function encodePNG(canvas) {
  return new Promise((resolve) => canvas.toBlob(resolve, "image/png"))
    .then((blob) => new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => resolve(reader.result);
      reader.onerror = () => reject(reader.error);
      reader.readAsDataURL(blob);
    }));
}

// Upload a PNG data: URL as `${prefix}_${content hash}.png` in the input folder's dragon_editor/ (an unchanged
// layer is one file); returns the name as a widget names it ("dragon_editor/....png").
export async function uploadPNG(dataURL, prefix) {
  const blob = dataURLBlob(dataURL); // (fetch() of a data: URL is refused by the page's content policy)
  const name = `${prefix}_${fnv1a(new TextEncoder().encode(dataURL))}.png`;
  const body = new FormData();
  body.append("image", blob, name);
  body.append("subfolder", SUBFOLDER);
  body.append("type", "input");
  body.append("overwrite", "true");
  const resp = await api.fetchApi("/upload/image", { method: "POST", body });
  if (resp.status !== 200) throw new Error(`${resp.status} ${resp.statusText}`);
  const res = await resp.json();
  return res.subfolder ? `${res.subfolder}/${res.name}` : res.name;
}

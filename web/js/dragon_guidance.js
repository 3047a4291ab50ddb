// Dragon Guidance Setup: show only the inputs that apply to the chosen mode, and fold the expert options.
//
// The backend takes every input in every mode (a graph whose mode is switched must keep running, and API
// prompts send them all); this only changes what the node shows. Hidden widgets keep their values and are
// still sent. Expert options are "advanced" widgets: a button on the node (and the node's context menu, "Show
// Advanced", as for ComfyUI's own nodes) shows or hides them; the same in the classic and the Nodes 2.0 renderer.
import { app } from "../../../scripts/app.js";
import { inputLinked } from "./editor/renderer.js";

const NODE_TYPE = "DragonDiffusion_GuidanceSetup";
const ALL = ["move", "resize", "drag", "remove", "paste", "appearance", "landmark"];
const but = (...modes) => ALL.filter((m) => !modes.includes(m));

// widget -> the modes it applies to (absent: every mode)
export const APPLIES = {
  offset_x: ["move", "resize", "paste"],
  offset_y: ["move", "resize", "paste"],
  scale: ["move", "resize", "paste"],
  w_edit: but("remove"),
  w_contrast: ["move", "resize", "remove"],
  w_inpaint: ["move", "resize", "remove", "drag"],
  keep_background: but("landmark"),
  vacated_noise: ["move", "resize", "remove"],
  anchor_end: ["move", "resize", "paste"],
  vacated_trend: ["move", "resize", "remove"],
  monotone_energy: ["move", "resize"],
  ring_inpaint: ["move", "resize"],
  centred_features: ["paste", "appearance"],
};
// folded until the user asks for them: the energy weights, the windows and the options beyond the method
export const ADVANCED = new Set([
  "w_edit", "w_content", "w_contrast", "w_inpaint", "guidance_start", "guidance_end", "sde_strength",
  "keep_background", "vacated_noise", "anchor_end", "vacated_trend", "monotone_energy", "ring_inpaint",
  "centred_features",
]);

// These values mean "the mode's default" or "off": say so instead of showing the number ([value, word])
export const SENTINEL = {
  energy_scale: [-1, "auto"], w_edit: [-1, "auto"], w_content: [-1, "auto"], w_contrast: [-1, "auto"],
  w_inpaint: [-1, "auto"], sde_strength: [-1, "auto"], vacated_noise: [-1, "auto"], keep_background: [-1, "off"],
  vacated_trend: [-1, "off"], anchor_end: [0, "off"],
};
const sentinelWord = (w) => (SENTINEL[w.name] && Number(w.value) === SENTINEL[w.name][0] ? SENTINEL[w.name][1] : "");

function labelSentinel(w) {
  const word = SENTINEL[w.name]?.[1];
  if (!word || w.dragonSentinel) return;
  // the classic renderer draws a number widget's _displayValue (the widget objects are its NumberWidgets)
  const proto = Object.getPrototypeOf(w);
  const own = Object.getOwnPropertyDescriptor(proto, "_displayValue")
    || Object.getOwnPropertyDescriptor(Object.getPrototypeOf(proto) || {}, "_displayValue");
  Object.defineProperty(w, "_displayValue", {
    configurable: true,
    get() {
      if (Number(this.value) === SENTINEL[this.name][0] && !this.computedDisabled) return word;
      return own?.get ? own.get.call(this) : String(this.value);
    },
  });
  w.dragonSentinel = true;
}

// Whether a widget is shown: it applies to the mode, and it is not an advanced one folded away.
function shows(node, w, mode) {
  const modes = APPLIES[w.name];
  return !(modes && !modes.includes(mode)) && !(w.advanced && !node.showAdvanced);
}

function applyMode(node) {
  const mode = node.widgets?.find((w) => w.name === "mode")?.value;
  if (!mode) return;
  for (const w of node.widgets) {
    const modes = APPLIES[w.name];
    if (ADVANCED.has(w.name)) w.advanced = true;
    labelSentinel(w);
    w.hidden = !!modes && !modes.includes(mode); // classic renderer (it folds advanced widgets itself)
    if (!w.dragonGuidanceSize && !w.computeLayoutSize) {
      const own = w.computeSize;
      // litegraph gives every widget without computeSize a row, hidden or not
      // (a folded advanced widget takes no row either: litegraph skips drawing it but keeps its space)
      w.computeSize = function (...args) {
        if (this.hidden || (this.advanced && !node.showAdvanced)) return [0, -4];
        return own ? own.apply(this, args) : [0, LiteGraph.NODE_WIDGET_HEIGHT];
      };
      w.dragonGuidanceSize = true;
    }
  }
  syncAdvancedButton(node);
  const need = node.computeSize();
  node.setSize([Math.max(node.size[0], need[0]), need[1]]);
  node.setDirtyCanvas?.(true, true);
  requestAnimationFrame(() => syncRows(node));
}

// The Nodes 2.0 (Vue) renderer reads a widget's visibility once, when it first draws the node, and keeps every
// row after that; so each row stays and is shown or hidden here (found by its input's aria-label, the widget
// name), again whenever the renderer redraws the node's rows.
function syncRows(node) {
  const el = document.querySelector(`[data-node-id="${node.id}"]`);
  if (!el) return;
  const mode = node.widgets?.find((w) => w.name === "mode")?.value;
  const byName = new Map((node.widgets || []).map((w) => [w.name, w]));
  for (const row of el.querySelectorAll(".lg-node-widget")) {
    const name = row.querySelector("[aria-label]")?.getAttribute("aria-label");
    const w = name && byName.get(name);
    if (!w) continue;
    const display = shows(node, w, mode) ? "" : "none";
    if (row.style.display !== display) row.style.display = display;
    if (SENTINEL[name]) sentinelOverlay(row, w);
  }
  syncAdvancedButton(node);
  vueAdvancedButton(node, el);
  if (!node.dragonRows || node.dragonRows.el !== el) {
    node.dragonRows?.observer.disconnect();
    const observer = new MutationObserver(() => syncRows(node));
    observer.observe(el, { childList: true, subtree: true });
    node.dragonRows = { el, observer };
  }
}

// Nodes 2.0 shows the number itself: the word ("auto", "off") takes the number's place in its box, as the classic
// renderer draws it in place of the value, while the box is not being edited: the number's text is made
// transparent and the word laid over the same spot (the box's -/+ buttons stay as they are). Inside the box's own
// element: a row of Nodes 2.0 1.58 is a CSS grid, and anything appended to the row became a cell on a new line.
function sentinelOverlay(row, w) {
  // the number's own text field: the labelled element itself (1.32) or the one inside the labelled box (1.58)
  const box = row.querySelector("[aria-label]");
  const input = box && (box.tagName === "INPUT" ? box : box.querySelector("input") || box);
  const host = input?.parentElement;
  if (!input || !host) return;
  let tag = host.querySelector(":scope > .dragon-sentinel");
  if (!tag) {
    tag = document.createElement("span");
    tag.className = "dragon-sentinel";
    tag.style.cssText = "position:absolute; pointer-events:none; display:flex; align-items:center; overflow:hidden;" +
      "white-space:nowrap; box-sizing:border-box; background:transparent;";
    if (getComputedStyle(host).position === "static") host.style.position = "relative";
    input.after(tag);
    const refresh = () => sentinelOverlay(row, w);
    input.addEventListener("focus", refresh);
    input.addEventListener("blur", refresh);
  }
  const text = document.activeElement === input ? "" : sentinelWord(w);
  if (tag.textContent !== text) tag.textContent = text;
  tag.style.display = text ? "flex" : "none";
  const hideNumber = text ? "transparent" : "";
  if (input.style.color !== hideNumber) input.style.color = hideNumber;
  if (!text) return;
  const cs = getComputedStyle(input);
  Object.assign(tag.style, {
    left: `${input.offsetLeft}px`, top: `${input.offsetTop}px`, width: `${input.offsetWidth}px`,
    height: `${input.offsetHeight}px`, color: getComputedStyle(host).color, font: cs.font,
    paddingLeft: cs.paddingLeft, paddingRight: cs.paddingRight,
    justifyContent: cs.textAlign === "center" ? "center" : cs.textAlign === "right" ? "flex-end" : "flex-start",
  });
}

// A button on the node itself shows or hides the advanced inputs (the context menu's Show/Hide Advanced is easy
// to miss), in either renderer; not sent to the backend, not saved as a value.
const ADVANCED_BUTTON = "dragon_advanced";

function advancedCount(node) {
  const mode = node.widgets?.find((w) => w.name === "mode")?.value;
  return (node.widgets || []).filter((w) => ADVANCED.has(w.name) && !(APPLIES[w.name] && !APPLIES[w.name].includes(mode))).length;
}

function syncAdvancedButton(node) {
  const btn = node.widgets?.find((w) => w.name === ADVANCED_BUTTON);
  if (!btn) return;
  const label = `${node.showAdvanced ? "Hide" : "Show"} advanced inputs (${advancedCount(node)})`;
  if (btn.label !== label) {
    btn.label = label;
    btn.value = label;
    node.setDirtyCanvas?.(true, true);
  }
}

// Nodes 2.0 draws a button widget with its name and keeps the text it first read: the label is set on the element.
// A frontend that draws its own "Show advanced inputs" on the node (1.49 and later) gets no second one.
const OUR_BUTTON = /^(dragon_advanced|(Show|Hide) advanced inputs \(\d+\))$/;

function vueAdvancedButton(node, el) {
  const btn = node.widgets?.find((w) => w.name === ADVANCED_BUTTON);
  const ours = Array.from(el.querySelectorAll("button")).find(
    (b) => b.dataset.dragonAdvanced || OUR_BUTTON.test((b.textContent || "").trim()));
  if (!btn || !ours) return;
  ours.dataset.dragonAdvanced = "1";
  if (ours.textContent.trim() !== btn.label) ours.textContent = btn.label;
  const native = Array.from(el.querySelectorAll("*")).some(
    (e) => !ours.contains(e) && e.children.length === 0 && /advanced inputs/i.test(e.textContent || ""));
  const row = ours.closest(".lg-node-widget") || ours;
  const display = native ? "none" : "";
  if (row.style.display !== display) row.style.display = display;
}

function toggleAdvanced(node) {
  if (typeof node.toggleAdvanced === "function") node.toggleAdvanced();
  else {
    node.showAdvanced = !node.showAdvanced;
    applyMode(node);
  }
}

// move/resize with nothing to do (no handle->target pair, offsets 0, scale 1) is refused when the workflow is
// queued, before the server spends the inversion on it: the backend refuses it too, but only when Guidance Setup
// runs, which can be after Dragon DDIM Invert. Only what the page can see is judged: points linked straight from a
// Dragon Mask/Point Editor (its own points) or not linked at all; anything else is left to the backend.
export function nothingToMove(node) {
  if (node.mode !== undefined && node.mode !== 0) return null; // muted or bypassed: not run
  const v = (name) => node.widgets?.find((w) => w.name === name)?.value;
  const mode = v("mode");
  if (mode !== "move" && mode !== "resize") return null;
  if (Number(v("offset_x")) || Number(v("offset_y")) || Number(v("scale")) !== 1) return null;
  const slot = node.inputs?.findIndex((i) => i.name === "points") ?? -1;
  if (inputLinked(node, slot)) {
    const src = node.getInputNode?.(slot);
    if (src?.type !== "DragonDiffusion_MaskPointEditor") return null;
    let pts = [];
    try {
      pts = JSON.parse(src.widgets?.find((w) => w.name === "points")?.value || "[]");
    } catch {
      return null; // the editor's own refusal says what is wrong with its text
    }
    if (Array.isArray(pts) && pts.length >= 2) return null;
  }
  return `Dragon Guidance Setup (${mode}) has nowhere to put the object: no handle->target pair, offset_x and ` +
    `offset_y are 0${mode === "resize" ? " and scale is 1" : ""}. In the Dragon Mask/Point Editor click the ` +
    `object, then the place it should go; or set offset_x/offset_y${mode === "resize" ? " or scale" : ""}.`;
}

app.registerExtension({
  name: "DragonDiffusion.GuidanceSetup",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData?.name !== NODE_TYPE) return;
    const created = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const r = created?.apply(this, arguments);
      const modeWidget = this.widgets?.find((w) => w.name === "mode");
      if (modeWidget) {
        const cb = modeWidget.callback;
        const node = this;
        // called for every widget just before the workflow is turned into a prompt (Queue)
        modeWidget.beforeQueued = () => {
          const problem = nothingToMove(node);
          if (!problem) return;
          window.dragonQueueRefusal = problem;
          app.extensionManager?.toast?.add?.({ severity: "error", summary: "Not queued", detail: problem, life: 10000 });
          throw new Error(problem); // stops this queue: nothing is sent to the server
        };
        modeWidget.callback = function () {
          const out = cb?.apply(this, arguments);
          applyMode(node);
          return out;
        };
      }
      if (!this.widgets?.some((w) => w.name === ADVANCED_BUTTON)) {
        const node = this;
        const btn = this.addWidget("button", ADVANCED_BUTTON, "Show advanced inputs", () => toggleAdvanced(node),
          { serialize: false });
        btn.serialize = false; // last of the widgets: the saved values of the others keep their places
      }
      applyMode(this);
      return r;
    };
    const toggle = nodeType.prototype.toggleAdvanced;
    nodeType.prototype.toggleAdvanced = function () {
      const r = toggle?.apply(this, arguments);
      applyMode(this); // Show/Hide Advanced from the node's menu, in either renderer
      return r;
    };
    const removed = nodeType.prototype.onRemoved;
    nodeType.prototype.onRemoved = function () {
      this.dragonRows?.observer.disconnect();
      return removed?.apply(this, arguments);
    };
    const configure = nodeType.prototype.onConfigure;
    nodeType.prototype.onConfigure = function () {
      const r = configure?.apply(this, arguments);
      applyMode(this);
      return r;
    };
  },
});

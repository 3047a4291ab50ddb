// Dragon Guidance Setup: show only the inputs that apply to the chosen mode, and fold the expert options.
//
// The backend takes every input in every mode (a graph whose mode is switched must keep running, and API
// prompts send them all); this only changes what the node shows. Hidden widgets keep their values and are
// still sent. Expert options are "advanced" widgets: the node's context menu shows or hides them
// ("Show Advanced"), as for ComfyUI's own nodes; the same in the classic and the Nodes 2.0 renderer.
import { app } from "../../../scripts/app.js";

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

// -1 means "the mode's default" or "off" for these inputs: say so instead of showing -1
export const SENTINEL = {
  energy_scale: "auto", w_edit: "auto", w_content: "auto", w_contrast: "auto", w_inpaint: "auto",
  sde_strength: "auto", vacated_noise: "auto", keep_background: "off", vacated_trend: "off",
};

function labelSentinel(w) {
  const word = SENTINEL[w.name];
  if (!word || w.dragonSentinel) return;
  // the classic renderer draws a number widget's _displayValue (the widget objects are its NumberWidgets)
  const proto = Object.getPrototypeOf(w);
  const own = Object.getOwnPropertyDescriptor(proto, "_displayValue")
    || Object.getOwnPropertyDescriptor(Object.getPrototypeOf(proto) || {}, "_displayValue");
  Object.defineProperty(w, "_displayValue", {
    configurable: true,
    get() {
      if (Number(this.value) === -1 && !this.computedDisabled) return word;
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
    if (SENTINEL[name]) {
      // the Nodes 2.0 number box shows -1: a word beside it says what that means
      let tag = row.querySelector(".dragon-sentinel");
      if (!tag) {
        tag = document.createElement("span");
        tag.className = "dragon-sentinel";
        tag.style.cssText = "align-self:center; margin-left:4px; font-size:11px; opacity:0.75; white-space:nowrap;";
        row.appendChild(tag);
      }
      const text = Number(w.value) === -1 ? SENTINEL[name] : "";
      if (tag.textContent !== text) tag.textContent = text;
    }
  }
  if (!node.dragonRows || node.dragonRows.el !== el) {
    node.dragonRows?.observer.disconnect();
    const observer = new MutationObserver(() => syncRows(node));
    observer.observe(el, { childList: true, subtree: true });
    node.dragonRows = { el, observer };
  }
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
        modeWidget.callback = function () {
          const out = cb?.apply(this, arguments);
          applyMode(node);
          return out;
        };
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

// Dragon Guidance Setup: show only the inputs that apply to the chosen mode, and fold the expert options.
//
// The backend takes every input in every mode (a graph whose mode is switched must keep running, and API
// prompts send them all); this only changes what the node shows. Hidden widgets keep their values and are
// still sent. Expert options are "advanced" widgets: the node's context menu shows or hides them
// ("Show Advanced"), as for ComfyUI's own nodes.
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

function applyMode(node) {
  const mode = node.widgets?.find((w) => w.name === "mode")?.value;
  if (!mode) return;
  for (const w of node.widgets) {
    const modes = APPLIES[w.name];
    const hide = !!modes && !modes.includes(mode);
    w.hidden = hide;
    w.options = w.options || {};
    w.options.hidden = hide; // the Nodes 2.0 (Vue) renderer reads this one
    if (ADVANCED.has(w.name)) w.advanced = true;
    if (!w.dragonGuidanceSize && !w.computeLayoutSize) {
      const own = w.computeSize;
      // litegraph gives every widget without computeSize a row, hidden or not
      w.computeSize = function (...args) {
        if (this.hidden) return [0, -4];
        return own ? own.apply(this, args) : [0, LiteGraph.NODE_WIDGET_HEIGHT];
      };
      w.dragonGuidanceSize = true;
    }
  }
  const need = node.computeSize();
  node.setSize([Math.max(node.size[0], need[0]), need[1]]);
  node.setDirtyCanvas?.(true, true);
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
    const configure = nodeType.prototype.onConfigure;
    nodeType.prototype.onConfigure = function () {
      const r = configure?.apply(this, arguments);
      applyMode(this);
      return r;
    };
  },
});

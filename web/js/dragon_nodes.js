// Every DragonDiffusion node: wide enough that its title is not cut by the pack's badge. The Nodes 2.0 renderer
// puts the badge ("comfyui-dragondiffusion") in the title bar beside the title and truncates the title to fit
// the node's width ("Dragon Sa..." at the default width); the classic renderer just draws a slightly wider node.
import { app } from "../../../scripts/app.js";

const BADGE = "comfyui-dragondiffusion";
let ctx = null;

// The width a node needs for its title and the badge side by side (title bar padding, collapse arrow, gaps).
export function titleBarWidth(title) {
  ctx ??= document.createElement("canvas").getContext("2d");
  ctx.font = "600 14px Inter, Arial, sans-serif";
  const t = ctx.measureText(title || "").width;
  ctx.font = "12px Inter, Arial, sans-serif";
  const b = ctx.measureText(BADGE).width;
  return Math.ceil(t + b + 96);
}

app.registerExtension({
  name: "DragonDiffusion.NodeWidth",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!String(nodeData?.name || "").startsWith("DragonDiffusion_")) return;
    const created = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const r = created?.apply(this, arguments);
      const need = titleBarWidth(this.title || nodeData.display_name || nodeData.name);
      const widen = () => {
        if (this.size[0] < need) this.setSize([need, this.size[1]]);
      };
      widen();
      // again once every extension's onNodeCreated has run and the node is drawn (some set their own size)
      requestAnimationFrame(() => requestAnimationFrame(widen));
      return r;
    };
  },
});

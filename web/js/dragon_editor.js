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
//
// The editor itself is in editor/ (editor.js and the modules it names); this file registers it on the two nodes.
import { app } from "../../../scripts/app.js";
import { DragonEditor } from "./editor/editor.js";
import { CONFIGS } from "./editor/points.js";

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

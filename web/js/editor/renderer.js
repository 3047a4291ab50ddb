// What differs between frontends and renderers (classic LiteGraph and Nodes 2.0, frontend 1.32 to 1.58), kept in
// one place: links and connectivity, the node linked to an input, ComfyUI's undo history, and handing the wheel
// and the middle button back to the graph.
import { app } from "../../../../scripts/app.js";

export function isNodes2() {
  return !!app.ui?.settings?.getSettingValue?.("Comfy.VueNodes.Enabled");
}

// Connectivity through the node's API (frontend 1.58 keeps links in the graph and ignores writes to input.link);
// the slot's own link id where an older frontend lacks the API (1.32 has both). Also used by dragon_guidance.js.
export function inputLinked(node, slot) {
  if (slot < 0 || !node.inputs?.[slot]) return false;
  if (typeof node.isInputConnected === "function") return !!node.isInputConnected(slot);
  return node.inputs[slot].link != null;
}

// A link of the graph by id, whichever way this frontend keeps them (getLink, a Map, or an object).
export function graphLink(graph, id) {
  return graph?.getLink?.(id) ?? graph?.links?.get?.(id) ?? graph?.links?.[id] ?? null;
}

// The link into input slot `slot` of `node`, or null.
export function inputLink(node, slot) {
  if (typeof node.getInputLink === "function") return node.getInputLink(slot) ?? null;
  const id = node.inputs?.[slot]?.link;
  return id == null ? null : graphLink(node.graph, id);
}

// The node linked to input `name` of `node`: {node, slot (its output index)}, or null.
export function upstreamOf(node, name) {
  const slot = node.inputs?.findIndex((i) => i.name === name) ?? -1;
  if (slot < 0 || !inputLinked(node, slot)) return null;
  const up = node.getInputNode(slot);
  if (!up) return null;
  return { node: up, slot: inputLink(node, slot)?.origin_slot ?? 0 };
}

// The nodes of type `type` that output `name` of `node` feeds (straight links).
export function downstreamOf(node, name, type) {
  const slot = node.outputs?.findIndex((o) => o.name === name) ?? -1;
  const graph = node.graph;
  const found = [];
  for (const id of (slot >= 0 && node.outputs[slot].links) || []) {
    const link = graphLink(graph, id);
    const n = link && graph.getNodeById(link.target_id);
    if (n?.type === type) found.push(n);
  }
  return found;
}

// Text boxes that keep their name in sight: the frontend shows a multiline box's name only as its placeholder, gone
// once the box holds text, in the classic renderer and in Nodes 2.0 before 1.49 (1.58's Nodes 2.0 labels them
// itself: left alone). Dragon Landmarks has two such boxes (source_points, target_points) that must not be mixed
// up. Idempotent: called on every poll, it puts back a label a re-render dropped.
export function labelTextBoxes(node, names) {
  for (const name of names) {
    const boxes = [];
    const w = node.widgets?.find((x) => x.name === name);
    if (w?.element?.tagName === "TEXTAREA") boxes.push(w.element); // classic: the widget's own element
    for (const t of document.querySelectorAll(`[node-id="${node.id}"] > textarea`)) {
      if (t.placeholder === name) boxes.push(t); // Nodes 2.0 (1.32): the Vue widget's box, named by its placeholder
    }
    for (const box of boxes) {
      const holder = box.parentElement;
      if (!holder) continue;
      const named = Array.from(holder.children).some((c) => c !== box && c.textContent.trim() === name);
      if (named) continue;
      const label = document.createElement("div");
      label.className = "dragon-box-label";
      label.textContent = name;
      // (the classic renderer's DOM widgets stretch every child of their holder to its full size)
      Object.assign(label.style, { width: "auto", height: "auto", maxWidth: "calc(100% - 12px)" });
      if (getComputedStyle(holder).position === "static") holder.style.position = "relative";
      holder.appendChild(label);
      box.style.paddingTop = "16px";
    }
  }
}

// ---- ComfyUI's undo history ------------------------------------------------------------------------
let undoing = 0; // > 0 while an undo/redo runs: the editors made meanwhile are the rebuilt ones

// Count the change tracker's undo/redo while they run (wrapped once per page).
export function watchUndo() {
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

// True while ComfyUI's undo/redo rebuilds the graph (an editor made now replaces one the user had).
export function rebuildingByUndo() {
  return undoing > 0;
}

// ComfyUI's undo history (its change tracker) takes a snapshot of the graph on a window mouseup or on a
// litegraph "after-change" event. The editor's pointer events stop at its canvas, and a stroke's widget value
// changes only when its upload ends, so each finished edit announces itself: one undo step per point placed,
// moved or deleted, per burst of strokes, per clear.
export function recordUndoStep() {
  for (const subType of ["before-change", "after-change"]) {
    document.dispatchEvent(new CustomEvent("litegraph:canvas", { detail: { subType } }));
  }
}

// Hand a wheel or middle-button event to the graph canvas (zoom and pan over the editor as anywhere else).
export function forwardToGraph(e) {
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

// Point pairs: how each node keeps them in its widgets, parsing typed or pasted lists, finding the point under the
// pointer, and drawing the pairs (arrow from handle to target; Landmarks' pairs numbered).

export const HIT_PX = 9; // screen pixels within which a click grabs a point

// Parse one point list: [[x, y], ...] or [{"x":..,"y":..}, ...] (or handle/target pairs); throws on bad input.
export function parsePoints(text) {
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
export const CONFIGS = {
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
    labelled: ["source_points", "target_points"], // their names stay in sight over the boxes (renderer.js)
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

// Index of the point within `tol` image pixels of p (the nearest), or -1.
export function nearestPoint(points, p, tol) {
  let best = -1;
  let bestD = tol;
  points.forEach(([x, y], i) => {
    const d = Math.hypot(x + 0.5 - p.x, y + 0.5 - p.y);
    if (d <= bestD) {
      best = i;
      bestD = d;
    }
  });
  return best;
}

// The pairs on the canvas: k canvas pixels per image pixel, u canvas pixels per screen pixel.
export function drawPoints(ctx, points, k, u, numbered) {
  const r = 5 * u;
  const at = ([x, y]) => [(x + 0.5) * k, (y + 0.5) * k];
  for (let i = 0; i + 1 < points.length; i += 2) {
    const [x0, y0] = at(points[i]);
    const [x1, y1] = at(points[i + 1]);
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
  if (numbered) {
    // landmarks pair by position: number each source point
    ctx.font = `${Math.round(11 * u)}px sans-serif`;
    ctx.textBaseline = "bottom";
    ctx.lineWidth = 3 * u;
    for (let i = 0; i < points.length; i += 2) {
      const [x, y] = at(points[i]);
      const label = String(i / 2 + 1);
      ctx.strokeStyle = "rgba(0,0,0,0.8)";
      ctx.strokeText(label, x + r, y - r * 0.6);
      ctx.fillStyle = "#fff";
      ctx.fillText(label, x + r, y - r * 0.6);
    }
  }
  points.forEach((p, i) => {
    const [x, y] = at(p);
    ctx.fillStyle = i % 2 ? "#2a5cf5" : "#f22";
    ctx.strokeStyle = "#fff";
    ctx.lineWidth = 1.5 * u;
    ctx.beginPath();
    ctx.arc(x, y, r, 0, Math.PI * 2);
    ctx.fill();
    ctx.stroke();
  });
}

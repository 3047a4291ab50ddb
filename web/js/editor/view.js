// The editor's page furniture: its style sheet, buttons and off-screen canvases.

export function canvas2d(w, h) {
  const c = document.createElement("canvas");
  c.width = Math.max(1, w);
  c.height = Math.max(1, h);
  return c;
}

export function button(text, title, onClick) {
  const b = document.createElement("button");
  b.textContent = text;
  b.title = title;
  b.className = "dragon-btn";
  b.addEventListener("click", (e) => {
    e.preventDefault();
    e.stopPropagation();
    onClick();
  });
  return b;
}

const STYLE = `
.dragon-editor { display:flex; flex-direction:column; gap:4px; width:100%; height:100%; min-height:300px;
  box-sizing:border-box; font: 12px sans-serif; color: var(--input-text, #ddd); }
.dragon-size { width:44px; background: var(--comfy-input-bg, #222); color: inherit; font-size:12px;
  border: 1px solid var(--border-color, #555); border-radius:4px; padding:1px 2px; }
.dragon-json { width:100%; min-height:60px; box-sizing:border-box; font: 11px monospace; resize:vertical;
  background: var(--comfy-input-bg, #222); color: inherit; border: 1px solid var(--border-color, #555); }
.dragon-hint { position:absolute; left:8px; right:8px; bottom:8px; padding:4px 6px; border-radius:4px;
  background: rgba(0,0,0,0.6); color:#fff; pointer-events:none; text-align:center; }
.dragon-bar { display:flex; flex-wrap:wrap; gap:3px; align-items:center; }
.dragon-btn { background: var(--comfy-input-bg, #222); color: inherit; border: 1px solid var(--border-color, #555);
  border-radius:4px; padding:2px 6px; cursor:pointer; font-size:12px; }
.dragon-btn.active { background:#3a6; border-color:#5c8; color:#fff; }
.dragon-stage { flex:1; min-height:120px; position:relative; display:flex; align-items:center; justify-content:center;
  background: rgba(0,0,0,0.25); border-radius:4px; overflow:hidden; }
.dragon-canvas { display:block; touch-action:none; cursor:crosshair; }
.dragon-status { min-height:16px; white-space:nowrap; overflow:hidden; text-overflow:ellipsis; opacity:0.85; }
.dragon-note { color:#fb3; white-space:normal; }
.dragon-box-label { position:absolute; top:2px; left:6px; z-index:1; pointer-events:none; font: 10px sans-serif;
  color: var(--input-text, #ddd); opacity:0.7; }
`;

// Once per page: the editor's style sheet.
export function installStyle() {
  if (document.getElementById("dragon-editor-style")) return;
  const st = document.createElement("style");
  st.id = "dragon-editor-style";
  st.textContent = STYLE;
  document.head.appendChild(st);
}

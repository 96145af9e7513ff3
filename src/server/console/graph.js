// An automation's graph as SVG: a layered layout (breadth-first depth from the root gives the
// column, discovery order the row), edges as curves labelled by port. Edges that go back (loops)
// swing below the boxes; an edge to a node that does not exist ends at a dashed "missing" box,
// as the engine treats it (the path ends there).

import { html } from "./lib.js";

const W = 184;
const H = 52;
const GAP_X = 84;
const GAP_Y = 34;
const PAD = 24;

/** Columns and positions for a definition's nodes; pure, so it is easy to reason about. */
export function layout(def) {
  const nodes = Array.isArray(def?.nodes) ? def.nodes : [];
  const edges = Array.isArray(def?.edges) ? def.edges : [];
  const known = new Map(nodes.map((n) => [n.key, n]));
  const out = new Map();
  for (const e of edges) (out.get(e.from) ?? out.set(e.from, []).get(e.from)).push(e);

  const depth = new Map();
  const order = [];
  if (known.has(def?.root)) {
    depth.set(def.root, 0);
    order.push(def.root);
    for (let i = 0; i < order.length; i++) {
      const k = order[i];
      for (const e of out.get(k) ?? []) {
        if (!known.has(e.to) || depth.has(e.to)) continue;
        depth.set(e.to, depth.get(k) + 1);
        order.push(e.to);
      }
    }
  }
  const reached = order.length;
  const maxDepth = Math.max(-1, ...depth.values());
  // Nodes the root never reaches still belong to the version: a column of their own, after the rest.
  for (const n of nodes) {
    if (depth.has(n.key)) continue;
    depth.set(n.key, maxDepth + 1);
    order.push(n.key);
  }
  const boxes = order.map((key) => ({
    key,
    kind: known.get(key).kind,
    depth: depth.get(key),
    root: key === def.root,
    missing: false,
    reachable: order.indexOf(key) < reached,
  }));
  // Edges to a node that does not exist: a ghost box one column right of the edge's source.
  for (const e of edges) {
    if (known.has(e.to) || boxes.some((b) => b.missing && b.key === e.to)) continue;
    boxes.push({ key: e.to, kind: "missing", depth: (depth.get(e.from) ?? 0) + 1, root: false, missing: true, reachable: true });
  }
  const rows = new Map();
  for (const b of boxes) {
    b.row = rows.get(b.depth) ?? 0;
    rows.set(b.depth, b.row + 1);
    b.x = PAD + b.depth * (W + GAP_X);
    b.y = PAD + b.row * (H + GAP_Y);
  }
  const at = new Map(boxes.map((b) => [b.key, b]));
  const seen = new Map();
  const paths = [];
  for (const e of edges) {
    const a = at.get(e.from);
    const b = at.get(e.to);
    if (!a || !b) continue;
    const pair = `${e.from}>${e.to}`;
    const nth = seen.get(pair) ?? 0;
    seen.set(pair, nth + 1);
    let p0, p1, p2, p3;
    if (b.depth > a.depth) {
      p0 = [a.x + W, a.y + H / 2];
      p3 = [b.x, b.y + H / 2];
      const dx = (p3[0] - p0[0]) / 2;
      p1 = [p0[0] + dx, p0[1]];
      p2 = [p3[0] - dx, p3[1]];
    } else if (b.depth === a.depth && b.key !== a.key) {
      // Same column: from one box's edge to the other's, bowed to the right so the label has room.
      const down = b.row > a.row;
      p0 = [a.x + W * 0.7, down ? a.y + H : a.y];
      p3 = [b.x + W * 0.7, down ? b.y : b.y + H];
      const bow = 26 + nth * 14;
      p1 = [p0[0] + bow, p0[1] + (down ? 1 : -1) * GAP_Y * 0.4];
      p2 = [p3[0] + bow, p3[1] - (down ? 1 : -1) * GAP_Y * 0.4];
    } else {
      // Back edge or self-loop: out of the bottom, round below, into the bottom.
      const drop = H + 26 + nth * 14;
      p0 = [a.x + W / 2 + 10, a.y + H];
      p3 = [b.x + W / 2 - 10, b.y + H];
      p1 = [p0[0], Math.max(p0[1], p3[1]) + drop];
      p2 = [p3[0], Math.max(p0[1], p3[1]) + drop];
    }
    const mid = [0, 1].map((i) => (p0[i] + 3 * p1[i] + 3 * p2[i] + p3[i]) / 8);
    paths.push({
      from: e.from,
      to: e.to,
      port: e.port ?? "",
      back: b.depth < a.depth || a.key === b.key,
      d: `M${p0[0]},${p0[1]} C${p1[0]},${p1[1]} ${p2[0]},${p2[1]} ${p3[0]},${p3[1]}`,
      label: b.depth === a.depth && a.key !== b.key ? [mid[0] + 4, mid[1] + 4] : [mid[0], mid[1] - 5 + nth * 14],
      anchor: b.depth === a.depth && a.key !== b.key ? "start" : "middle",
    });
  }
  const cols = Math.max(1, ...boxes.map((b) => b.depth + 1));
  const rowsMax = Math.max(1, ...rows.values());
  const loops = paths.some((p) => p.back) ? H + 60 : 0;
  return { boxes, paths, width: PAD * 2 + cols * W + (cols - 1) * GAP_X, height: PAD * 2 + rowsMax * H + (rowsMax - 1) * GAP_Y + loops };
}

const clip = (s, n) => (s.length > n ? `${s.slice(0, n - 1)}…` : s);

/**
 * The graph of one version. `marks` (optional) colours nodes for a run: node key → "visited",
 * "failed" or "current".
 */
export function Graph({ definition, label, marks = new Map() }) {
  const g = layout(definition);
  if (g.boxes.length === 0) return html`<p class="muted">This version has no nodes.</p>`;
  const titleId = `g-${Math.random().toString(36).slice(2, 8)}`;
  return html`<figure class="graph">
    <div class="graph-scroll" tabindex="0" role="group" aria-label=${`${label} (scrolls)`}>
      <svg width=${g.width} height=${g.height} viewBox=${`0 0 ${g.width} ${g.height}`} role="img" aria-labelledby=${titleId} class="graph-svg">
        <title id=${titleId}>${label}: ${g.boxes.length} nodes, ${g.paths.length} edges, root ${definition.root}</title>
        <defs>
          <marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse">
            <path d="M0,0 L10,5 L0,10 z" class="arrowhead" />
          </marker>
        </defs>
        <g class="edges">
          ${g.paths.map(
            (p) => html`<g class=${`edge${p.back ? " back" : ""}`} data-from=${p.from} data-to=${p.to}>
            <path d=${p.d} marker-end="url(#arrow)" />
            ${p.port ? html`<text x=${p.label[0]} y=${p.label[1]} text-anchor=${p.anchor} class="port">${p.port}</text>` : null}
          </g>`,
          )}
        </g>
        <g class="nodes">
          ${g.boxes.map(
            (
              b,
            ) => html`<g class=${`node kind-${b.kind}${b.root ? " root" : ""}${b.missing ? " missing" : ""}${b.reachable ? "" : " unreachable"}${marks.get(b.key) ? ` mark-${marks.get(b.key)}` : ""}`}
              transform=${`translate(${b.x},${b.y})`} data-key=${b.key}>
            <rect width=${W} height=${H} rx="7" />
            <text x="10" y="21" class="key">${clip(b.key, 20)}</text>
            <text x="10" y="39" class="kind">${b.missing ? "missing: path ends" : b.kind}${b.root ? " · root" : ""}${b.reachable ? "" : " · unreachable"}${marks.get(b.key) ? ` · ${marks.get(b.key)}` : ""}</text>
          </g>`,
          )}
        </g>
      </svg>
    </div>
    <figcaption>
      <details>
        <summary>The graph as text</summary>
        <ul class="edge-list">
          ${g.paths.map((p) => html`<li><code>${p.from}</code> —${p.port ? html`<em>${p.port}</em>` : ""}→ <code>${p.to}</code></li>`)}
          ${g.paths.length === 0 ? html`<li>No edges.</li>` : null}
        </ul>
      </details>
    </figcaption>
  </figure>`;
}

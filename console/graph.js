// Cairn console: the concept neighbourhood as an SVG. A small deterministic force layout (the
// centre pinned in the middle, nodes seeded on rings by hop), then nodes as focusable buttons:
// a click, Enter or Space re-centres on the node.
"use strict";

window.CairnGraph = (() => {
  const NS = "http://www.w3.org/2000/svg";
  const W = 800, H = 560;

  function svg(tag, attrs) {
    const e = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    return e;
  }

  /** Hops from the centre over the edges (breadth first). */
  function hops(center, ids, edges) {
    const adj = new Map(ids.map((id) => [id, []]));
    for (const e of edges) {
      adj.get(e.source)?.push(e.target);
      adj.get(e.target)?.push(e.source);
    }
    const d = new Map([[center, 0]]);
    const queue = [center];
    while (queue.length) {
      const x = queue.shift();
      for (const y of adj.get(x) || []) {
        if (d.has(y)) continue;
        d.set(y, d.get(x) + 1);
        queue.push(y);
      }
    }
    return d;
  }

  function layout(n) {
    const ids = [n.center.id, ...n.nodes.map((x) => x.id)];
    const hop = hops(n.center.id, ids, n.edges);
    const pos = new Map();
    ids.forEach((id, i) => {
      const ring = Math.min(hop.get(id) ?? 3, 3);
      const a = (2 * Math.PI * i) / ids.length;
      pos.set(id, ring === 0 ? { x: 0, y: 0 } : { x: Math.cos(a) * 140 * ring, y: Math.sin(a) * 110 * ring });
    });
    for (let step = 0; step < 300; step++) {
      const force = new Map(ids.map((id) => [id, { x: 0, y: 0 }]));
      for (let i = 0; i < ids.length; i++) {
        for (let j = i + 1; j < ids.length; j++) {
          const a = pos.get(ids[i]), b = pos.get(ids[j]);
          const dx = a.x - b.x, dy = a.y - b.y;
          const d2 = Math.max(dx * dx + dy * dy, 25);
          const f = 6000 / d2, d = Math.sqrt(d2);
          force.get(ids[i]).x += (f * dx) / d; force.get(ids[i]).y += (f * dy) / d;
          force.get(ids[j]).x -= (f * dx) / d; force.get(ids[j]).y -= (f * dy) / d;
        }
      }
      for (const e of n.edges) {
        const a = pos.get(e.source), b = pos.get(e.target);
        if (!a || !b) continue;
        const dx = b.x - a.x, dy = b.y - a.y, d = Math.max(Math.hypot(dx, dy), 1);
        const f = 0.02 * (d - 120) * (0.5 + e.weight);
        force.get(e.source).x += (f * dx) / d; force.get(e.source).y += (f * dy) / d;
        force.get(e.target).x -= (f * dx) / d; force.get(e.target).y -= (f * dy) / d;
      }
      const cool = 1 - step / 300;
      for (const id of ids.slice(1)) {
        const p = pos.get(id), f = force.get(id);
        p.x = Math.max(-W / 2 + 60, Math.min(W / 2 - 60, p.x + Math.max(-20, Math.min(20, f.x)) * cool));
        p.y = Math.max(-H / 2 + 30, Math.min(H / 2 - 30, p.y + Math.max(-20, Math.min(20, f.y)) * cool));
      }
    }
    return pos;
  }

  function draw(root, n, onPick) {
    const pos = layout(n);
    const at = (id) => ({ x: pos.get(id).x + W / 2, y: pos.get(id).y + H / 2 });
    root.replaceChildren();
    const edges = svg("g", { "aria-hidden": "true" });
    for (const e of n.edges) {
      if (!pos.has(e.source) || !pos.has(e.target)) continue;
      const a = at(e.source), b = at(e.target);
      const line = svg("line", { x1: a.x, y1: a.y, x2: b.x, y2: b.y, class: e.kind, "stroke-width": (1 + 4 * e.weight).toFixed(1) });
      line.append(svg("title", {}));
      line.lastChild.textContent = `${e.kind} ${e.weight.toFixed(3)}`;
      edges.append(line);
    }
    root.append(edges);
    for (const c of [n.center, ...n.nodes]) {
      const p = at(c.id);
      const centre = c.id === n.center.id;
      const g = svg("g", {
        class: "node" + (centre ? " centre" : ""), tabindex: "0", role: "button",
        "aria-label": `${c.name}, mentioned in ${c.frequency} chunks${centre ? " (centre)" : ""}`,
        "data-id": c.id, transform: `translate(${p.x.toFixed(1)},${p.y.toFixed(1)})`,
      });
      g.append(svg("circle", { r: (6 + Math.min(14, Math.sqrt(c.frequency) * 3)).toFixed(1) }));
      const label = svg("text", { x: 12, y: -10 });
      label.textContent = c.name;
      g.append(label);
      const pick = () => !centre && onPick(c.id);
      g.addEventListener("click", pick);
      g.addEventListener("keydown", (ev) => {
        if (ev.key === "Enter" || ev.key === " ") {
          ev.preventDefault();
          pick();
        }
      });
      root.append(g);
    }
  }

  return { draw, layout };
})();

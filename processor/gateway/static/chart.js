// A small SVG bar chart, written for this dashboard (no library, no network).
// drawBars(container, points, options): points are {start: unix seconds, value: Number, text: exact string}.
// Every bar carries data-start / data-value (the exact integer as text) and a <title> tooltip.
"use strict";

(function () {
  const NS = "http://www.w3.org/2000/svg";

  function el(name, attrs, text) {
    const node = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function niceMax(v) {
    if (v <= 0) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  function shortNumber(v) {
    const a = Math.abs(v);
    if (a >= 1e12) return (v / 1e12).toPrecision(3) + "T";
    if (a >= 1e9) return (v / 1e9).toPrecision(3) + "G";
    if (a >= 1e6) return (v / 1e6).toPrecision(3) + "M";
    if (a >= 1e4) return (v / 1e3).toPrecision(3) + "k";
    return String(v);
  }

  function drawBars(container, points, options) {
    const opts = options || {};
    const width = Math.max(container.clientWidth || 800, 300);
    const height = 240;
    const pad = { left: 56, right: 12, top: 12, bottom: 28 };
    const innerW = width - pad.left - pad.right;
    const innerH = height - pad.top - pad.bottom;
    const hi = niceMax(Math.max(0, ...points.map((p) => p.value)));
    const lo = -niceMax(Math.max(0, ...points.map((p) => -p.value))) * (points.some((p) => p.value < 0) ? 1 : 0);
    const span = hi - lo || 1;
    const y = (v) => pad.top + innerH * (1 - (v - lo) / span);

    const svg = el("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": opts.label || "chart" });
    for (const v of [lo, (lo + hi) / 2, hi]) {
      svg.appendChild(el("line", { class: "axis", x1: pad.left, x2: width - pad.right, y1: y(v), y2: y(v) }));
      svg.appendChild(el("text", { x: pad.left - 6, y: y(v) + 3, "text-anchor": "end" }, shortNumber(v)));
    }
    const step = points.length ? innerW / points.length : innerW;
    const barW = Math.max(1, step * 0.8);
    points.forEach((p, i) => {
      const top = y(Math.max(0, p.value));
      const bottom = y(Math.min(0, p.value));
      const bar = el("rect", {
        class: "bar" + (p.value < 0 ? " negative" : ""),
        x: pad.left + i * step + (step - barW) / 2,
        y: top,
        width: barW,
        height: Math.max(p.value === 0 ? 0 : 1, bottom - top),
        "data-start": p.start,
        "data-value": p.text,
      });
      bar.appendChild(el("title", {}, `${opts.format ? opts.format(p.start) : p.start}: ${p.text}`));
      svg.appendChild(bar);
    });
    if (points.length) {
      // A time axis: a tick and a label every `every` bars (about six labels), not only at the ends.
      const fmt = opts.format || String;
      const every = Math.max(1, Math.ceil(points.length / 6));
      for (let i = 0; i < points.length; i += every) {
        const x = pad.left + i * step + step / 2;
        svg.appendChild(el("line", { class: "axis tick", x1: x, x2: x, y1: height - pad.bottom, y2: height - pad.bottom + 4 }));
        const anchor = i === 0 ? "start" : "middle";
        svg.appendChild(el("text", { class: "xlabel", x: i === 0 ? pad.left : x, y: height - 8, "text-anchor": anchor, "data-start": points[i].start }, fmt(points[i].start)));
      }
    }
    container.replaceChildren(svg);
  }

  // drawLine(container, points, options): points are {t: unix seconds, value: Number|null} over
  // [options.start, options.end]; a time axis with a tick every options.tickEvery seconds (default 600),
  // labelled HH:MM UTC. A null value is a gap. Every point carries data-t / data-value.
  function drawLine(container, points, options) {
    const opts = options || {};
    const width = Math.max(container.clientWidth || 500, 260);
    const height = 160;
    const pad = { left: 48, right: 10, top: 10, bottom: 24 };
    const innerW = width - pad.left - pad.right;
    const innerH = height - pad.top - pad.bottom;
    const start = opts.start;
    const end = opts.end;
    const known = points.filter((p) => p.value !== null && p.value !== undefined);
    const hi = niceMax(Math.max(0, ...known.map((p) => p.value)));
    const x = (t) => pad.left + innerW * (t - start) / Math.max(1, end - start);
    const y = (v) => pad.top + innerH * (1 - v / hi);
    const svg = el("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": opts.label || "chart" });
    for (const v of [0, hi / 2, hi]) {
      svg.appendChild(el("line", { class: "axis", x1: pad.left, x2: width - pad.right, y1: y(v), y2: y(v) }));
      svg.appendChild(el("text", { x: pad.left - 6, y: y(v) + 3, "text-anchor": "end" }, shortNumber(Math.round(v * 100) / 100)));
    }
    const every = opts.tickEvery || 600;
    for (let t = Math.ceil(start / every) * every; t <= end; t += every) {
      svg.appendChild(el("line", { class: "axis tick", x1: x(t), x2: x(t), y1: height - pad.bottom, y2: height - pad.bottom + 4 }));
      svg.appendChild(el("text", { class: "xlabel", x: x(t), y: height - 8, "text-anchor": "middle", "data-t": t },
        new Date(t * 1000).toISOString().slice(11, 16)));
    }
    let path = "";
    let pen = false;
    for (const p of points) {
      if (p.value === null || p.value === undefined) {
        pen = false;
        continue;
      }
      path += `${pen ? "L" : "M"}${x(p.t).toFixed(1)},${y(p.value).toFixed(1)} `;
      pen = true;
      const dot = el("circle", { class: "point", cx: x(p.t), cy: y(p.value), r: 1.5, "data-t": p.t, "data-value": p.value });
      dot.appendChild(el("title", {}, `${new Date(p.t * 1000).toISOString().slice(11, 19)} UTC: ${p.value}${opts.unit || ""}`));
      svg.appendChild(dot);
    }
    if (path) svg.insertBefore(el("path", { class: "line", d: path.trim() }), svg.firstChild);
    container.replaceChildren(svg);
    container.dataset.points = String(known.length);
  }

  window.MeterCharts = { drawBars, drawLine };
})();

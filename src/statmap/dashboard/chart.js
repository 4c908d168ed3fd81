// statmap dashboard, the charts: what a series' history shows (rates over a
// smoothing interval, interval percentiles, heatmap cells) and how it is drawn
// (SVG lines and axes, a canvas heatmap under them, a cursor with a read-out).
// No dependencies. Exposes window.StatmapChart; app.js drives it.
"use strict";

(function () {
  const SVGNS = "http://www.w3.org/2000/svg";
  // Okabe-Ito: distinguishable with the common colour-vision deficiencies.
  const PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#7f7f7f"];
  const QUANTILES = [["p50", 0.5], ["p90", 0.9], ["p99", 0.99]];
  // viridis, sampled: a sequential ramp readable in greyscale and by colour-blind readers.
  const RAMP = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
  const M = { left: 58, right: 8, top: 8, bottom: 20 };

  // -- units ------------------------------------------------------------------
  const SI = [[1e12, "T"], [1e9, "G"], [1e6, "M"], [1e3, "k"]];
  function num(v) {
    if (typeof v !== "number" || !isFinite(v)) return v === null || v === undefined ? "–" : String(v);
    const a = Math.abs(v);
    if (a === 0) return "0";
    for (const [f, p] of SI) if (a >= f) return trim(v / f) + p;
    if (a < 1e-3) return v.toExponential(1);
    return trim(v);
  }
  function trim(v) {
    const a = Math.abs(v);
    const d = a >= 100 ? 0 : a >= 10 ? 1 : a >= 1 ? 2 : 3;
    return String(Number(v.toFixed(d)));
  }
  function withUnit(v, unit) {
    if (typeof v !== "number" || !isFinite(v)) return num(v);
    if (unit === "seconds") {
      const a = Math.abs(v);
      if (a === 0) return "0 s";
      if (a < 1e-6) return trim(v * 1e9) + " ns";
      if (a < 1e-3) return trim(v * 1e6) + " µs";
      if (a < 1) return trim(v * 1e3) + " ms";
      return trim(v) + " s";
    }
    if (unit === "bytes") {
      const steps = ["B", "KiB", "MiB", "GiB", "TiB"];
      let i = 0; let x = v;
      while (Math.abs(x) >= 1024 && i < steps.length - 1) { x /= 1024; i++; }
      return trim(x) + " " + steps[i];
    }
    return num(v) + (unit ? " " + unit : "");
  }
  function clock(t, seconds) {
    const d = new Date(t * 1000);
    const p = (n) => String(n).padStart(2, "0");
    return p(d.getHours()) + ":" + p(d.getMinutes()) + (seconds ? ":" + p(d.getSeconds()) : "");
  }

  // -- what a history shows ------------------------------------------------------
  // The index j <= k whose time is about `smooth` seconds before times[k] (k itself when none).
  function baseline(times, k, smooth) {
    let j = k;
    while (j > 0 && times[k] - times[j - 1] <= smooth + 0.25) j--;
    return j === k && k > 0 ? k - 1 : j;
  }
  function rateOf(times, values, smooth) {
    return times.map((t, k) => {
      let j = baseline(times, k, smooth);
      while (j < k - 1 && values[j] === null) j++;  // a series that began inside the interval
      const a = values[j]; const b = values[k];
      if (j === k || a === null || b === null || b < a) return null;  // no baseline, a gap, or a reset
      return (b - a) / (t - times[j]);
    });
  }
  // An exponential histogram's bucket with this upper bound: its harmonic midpoint, as the reader
  // estimates (docs/format.md section 14; within (base - 1)/(base + 1)); the zero bucket's bound is the threshold.
  function expEstimate(upper, h) {
    if (upper === h.zero_threshold) return 0;
    const base = Math.pow(2, Math.pow(2, -h.scale));
    return upper > 0 ? 2 * upper / (1 + base) : upper * 2 * base / (1 + base);
  }
  function percentile(bounds, counts, q, exp) {
    // counts: observations per bucket (not cumulative); bounds as the server sends them ("+Inf" last);
    // exp: the history of an exponential histogram (scale, zero_threshold), else absent.
    let total = 0;
    for (const c of counts) total += c;
    if (total <= 0) return null;
    const rank = q * total;
    let lower = 0; let below = 0; let cum = 0;
    for (let i = 0; i < counts.length; i++) {
      cum += counts[i];
      const upper = bounds[i] === "+Inf" ? Infinity : bounds[i];
      if (cum >= rank && cum > below) {
        if (upper === Infinity) return lower;
        if (exp) return expEstimate(upper, exp);
        if (i === 0) lower = Math.min(0, upper);
        return lower + (upper - lower) * (rank - below) / (cum - below);
      }
      lower = upper; below = cum;
    }
    return lower;
  }
  // Observations per bucket between samples j and k (cumulative "le" counts in, differences out).
  function bucketDelta(h, j, k) {
    const out = [];
    let prevA = 0; let prevB = 0;
    for (const col of h.buckets) {
      const a = col[j]; const b = col[k];
      if (a === null || b === null) return null;
      out.push((b - prevB) - (a - prevA));
      prevA = a; prevB = b;
    }
    return out.some((c) => c < 0) ? null : out;
  }
  // The lines of a series over its history: [{name, values, cls}], per the view of its kind.
  function lines(h, times, smooth) {
    switch (h.view) {
      case "rate": return [{ name: "rate", values: rateOf(times, h.values, smooth), cls: "main", per: "/s" }];
      case "level": return [{ name: "value", values: h.values.slice(), cls: "main", per: "" }];
      case "average": {
        const values = times.map((t, k) => {
          const j = baseline(times, k, smooth);
          const dc = h.count[k] - h.count[j];
          return j === k || h.count[j] === null || h.count[k] === null || !(dc > 0) ? null : (h.sum[k] - h.sum[j]) / dc;
        });
        return [{ name: "average", values, cls: "main", per: "" }];
      }
      case "quantiles": {
        const out = QUANTILES.map(([name]) => ({ name, values: [], cls: name, per: "" }));
        times.forEach((t, k) => {
          const j = baseline(times, k, smooth);
          const d = j === k ? null : bucketDelta(h, j, k);
          QUANTILES.forEach(([, q], i) => out[i].values.push(d ? percentile(h.bounds, d, q, h.scale === undefined ? null : h) : null));
        });
        return out;
      }
      default: return [];
    }
  }
  // Per-process lines of a summed series: rates of counters (and of histogram/summary counts), values of gauges.
  function processLines(per, times, view, smooth) {
    return Object.keys(per).sort().map((pid) => ({
      name: "pid " + pid,
      pid,
      values: view === "level" ? per[pid].slice() : rateOf(times, per[pid], smooth),
    }));
  }
  // Heatmap cells: for each of `columns` time columns, the observations per bucket in it.
  function heatCells(h, times, from, columns) {
    // Columns by sample index, not by time: samples a second apart leave no empty stripes.
    const n = times.length; const cells = [];
    let first = 1;
    while (first < n && times[first] < from) first++;
    const span = Math.max(1, n - first);
    columns = Math.max(1, Math.min(columns, span));
    let max = 0;
    for (let c = 0; c < columns; c++) cells.push(null);
    for (let k = first; k < n; k++) {
      const d = bucketDelta(h, k - 1, k);
      if (!d) continue;
      const c = Math.min(columns - 1, Math.floor((k - first) / span * columns));
      if (!cells[c]) cells[c] = d.map(() => 0);
      d.forEach((v, i) => { cells[c][i] += v; max = Math.max(max, cells[c][i]); });
    }
    return { cells, max, first };
  }
  // Where a value sits on the heatmap's bucket axis (0 = bottom of the first bucket).
  function bucketPos(bounds, v) {
    if (v === null) return null;
    let lower = 0;
    for (let i = 0; i < bounds.length; i++) {
      const upper = bounds[i] === "+Inf" ? Infinity : bounds[i];
      if (v <= upper) {
        if (upper === Infinity) return i;
        if (i === 0) lower = Math.min(0, upper);
        return i + (upper > lower ? (v - lower) / (upper - lower) : 1);
      }
      lower = upper;
    }
    return bounds.length;
  }

  // -- drawing -------------------------------------------------------------------
  function svg(tag, attrs, parent) {
    const e = document.createElementNS(SVGNS, tag);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    if (parent) parent.appendChild(e);
    return e;
  }
  function niceStep(span, target) {
    const raw = span / target; const p = Math.pow(10, Math.floor(Math.log10(raw)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= raw) return m * p;
    return 10 * p;
  }
  const TIME_STEPS = [5, 10, 15, 30, 60, 120, 300, 600, 900];

  // Draws one chart into `box` (a .chart element). spec: {times, from, to, lines, heat, bounds, unit, per,
  // events, cursor}. Returns the geometry the read-out needs.
  function draw(box, spec) {
    const width = Math.max(120, box.clientWidth || 280);
    const height = spec.heat ? 150 : 112;
    const W = width - M.left - M.right; const Hh = height - M.top - M.bottom;
    const x = (t) => M.left + (t - spec.from) / (spec.to - spec.from) * W;
    let canvas = box.querySelector("canvas");
    let root = box.querySelector("svg");
    if (!root) {
      if (spec.heat) { canvas = document.createElement("canvas"); box.appendChild(canvas); }
      root = svg("svg", { class: "plot" }, box);
    }
    root.setAttribute("width", String(width)); root.setAttribute("height", String(height));
    root.setAttribute("viewBox", "0 0 " + width + " " + height);
    root.replaceChildren();
    // y scale: values, or bucket positions for a heatmap
    let lo = Infinity; let hi = -Infinity;
    let yOf; let yTicks = [];
    if (spec.heat) {
      const nb = spec.bounds.length;
      lo = 0; hi = nb;
      yOf = (p) => M.top + Hh - p / nb * Hh;
      const every = Math.max(1, Math.ceil(nb / 4));
      for (let i = 0; i < nb - 1; i += every) yTicks.push([i + 1, withUnit(spec.bounds[i], spec.unit)]);
    } else {
      for (const l of spec.lines) l.values.forEach((v, k) => {
        if (v !== null && isFinite(v) && spec.times[k] >= spec.from) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
      });
      if (lo === Infinity) { lo = 0; hi = 1; }
      if (lo > 0 && hi - lo > 0.2 * hi) lo = 0;
      if (hi === lo) hi = lo + (Math.abs(lo) || 1);
      const step = niceStep(hi - lo, 3);
      lo = Math.floor(lo / step) * step; hi = Math.ceil(hi / step) * step;
      yOf = (v) => M.top + Hh - (v - lo) / (hi - lo) * Hh;
      for (let v = lo; v <= hi + step / 2; v += step) yTicks.push([v, withUnit(v, spec.unit) + spec.per]);
    }
    // grid and y labels, in the left gutter: never over the lines
    for (const [v, label] of yTicks) {
      const y = yOf(v);
      svg("line", { class: "grid-line", x1: M.left, x2: width - M.right, y1: y, y2: y }, root);
      const t = svg("text", { class: "tick y", x: M.left - 4, y: y + 3, "text-anchor": "end" }, root);
      t.textContent = label;
    }
    // time axis
    const span = spec.to - spec.from;
    const tstep = TIME_STEPS.find((s) => span / s <= Math.max(2, Math.floor(W / 70))) || 900;
    for (let t = Math.ceil(spec.from / tstep) * tstep; t <= spec.to; t += tstep) {
      const xx = x(t);
      svg("line", { class: "grid-line v", x1: xx, x2: xx, y1: M.top, y2: M.top + Hh }, root);
      const label = svg("text", { class: "tick x", x: xx, y: height - 5, "text-anchor": "middle" }, root);
      label.textContent = clock(t, tstep < 60);
    }
    svg("line", { class: "axis-line", x1: M.left, x2: width - M.right, y1: M.top + Hh, y2: M.top + Hh }, root);
    // heatmap cells on the canvas under the svg
    if (spec.heat && canvas) {
      const ratio = window.devicePixelRatio || 1;
      canvas.width = Math.round(width * ratio); canvas.height = Math.round(height * ratio);
      canvas.style.width = width + "px"; canvas.style.height = height + "px";
      const g = canvas.getContext("2d");
      g.setTransform(ratio, 0, 0, ratio, 0, 0);
      g.clearRect(0, 0, width, height);
      const { cells, max, first } = heatCells(spec.heat, spec.times, spec.from, Math.floor(W / 3));
      // the columns span from the first sample in the window to the last, as the lines do
      const x0 = x(spec.times[Math.max(0, first - 1)]); const cw = (M.left + W - x0) / cells.length;
      const bh = Hh / spec.bounds.length;
      cells.forEach((col, c) => {
        if (!col) return;
        col.forEach((v, i) => {
          if (v <= 0) return;
          g.fillStyle = ramp(Math.sqrt(v / max));
          g.fillRect(x0 + c * cw, M.top + Hh - (i + 1) * bh, Math.ceil(cw), Math.ceil(bh));
        });
      });
      root.dataset.cells = String(cells.filter((c) => c && c.some((v) => v > 0)).length);
    }
    // lines: a halo under each, dashes per percentile so they differ without colour
    const ys = [];
    spec.lines.forEach((l, i) => {
      let d = ""; let pen = false;
      l.values.forEach((v, k) => {
        const t = spec.times[k];
        if (v === null || !isFinite(v) || t < spec.from) { pen = false; return; }
        const y = spec.heat ? yOf(bucketPos(spec.bounds, v)) : yOf(v);
        d += (pen ? "L" : "M") + x(t).toFixed(1) + " " + y.toFixed(1);
        pen = true;
      });
      if (spec.heat) svg("path", { class: "halo", d }, root);
      const p = svg("path", { class: "line " + (l.cls || ""), d }, root);
      if (l.color) p.style.stroke = l.color;
      ys.push(l);
    });
    // process events on the time axis
    for (const e of spec.events || []) {
      if (e.time < spec.from) continue;
      const xx = x(e.time);
      const g = svg("g", { class: "event event-" + e.event }, root);
      svg("line", { x1: xx, x2: xx, y1: M.top, y2: M.top + Hh }, g);
      svg("path", { d: "M" + (xx - 4) + " " + (M.top + Hh + 7) + "l4 -6l4 6z" }, g);
      svg("title", {}, g).textContent = clock(e.time, true) + " " + e.publisher + " pid " + e.pid + " " + e.event;
    }
    // the cursor
    const cur = svg("g", { class: "cursor" }, root);
    cur.style.display = "none";
    svg("line", { y1: M.top, y2: M.top + Hh }, cur);
    return { x, yOf, from: spec.from, to: spec.to, W, left: M.left, width, cursor: cur, heat: !!spec.heat };
  }
  function ramp(f) {
    const p = Math.max(0, Math.min(1, f)) * (RAMP.length - 1);
    const i = Math.min(RAMP.length - 2, Math.floor(p)); const r = p - i;
    const c = RAMP[i].map((a, j) => Math.round(a + (RAMP[i + 1][j] - a) * r));
    return "rgb(" + c.join(",") + ")";
  }

  window.StatmapChart = { PALETTE, QUANTILES, num, withUnit, clock, lines, processLines, draw, percentile, rateOf };
})();

// statmap dashboard: polls api/processes and api/series every second and draws
// small SVG charts. No dependencies; every URL is relative so the page works
// wherever the exporter is mounted.
"use strict";

(function () {
  const POINTS = 120;          // two minutes of history per series
  const LIMIT = 60;            // series shown besides the pinned ones
  const PERIOD = 1000;         // ms between updates
  const SVGNS = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);

  const store = {
    get(key, fallback) {
      try { const v = window.localStorage.getItem("statmap." + key); return v === null ? fallback : JSON.parse(v); }
      catch (e) { return fallback; }
    },
    set(key, value) {
      try { window.localStorage.setItem("statmap." + key, JSON.stringify(value)); } catch (e) { /* private mode */ }
    },
  };

  let pins = new Set(store.get("pins", []));
  let filter = store.get("filter", "");
  let paused = false;
  const history = new Map();   // series id -> [[t, v...], ...]
  const cards = new Map();     // series id -> card element

  // -- formatting ---------------------------------------------------------
  function num(v, digits) {
    if (v === null || v === undefined || typeof v !== "number" || !isFinite(v)) return v === null || v === undefined ? "–" : String(v);
    const a = Math.abs(v);
    if (a !== 0 && (a >= 1e15 || a < 1e-3)) return v.toExponential(2);
    if (Number.isInteger(v)) return v.toLocaleString("en-US");
    const d = digits === undefined ? (a >= 100 ? 1 : a >= 1 ? 2 : 3) : digits;
    return v.toLocaleString("en-US", { maximumFractionDigits: d });
  }
  function withUnit(v, unit) {
    if (typeof v !== "number" || !isFinite(v)) return num(v);
    if (unit === "seconds") {
      const a = Math.abs(v);
      if (a === 0) return "0 s";
      if (a < 1e-3) return num(v * 1e6) + " µs";
      if (a < 1) return num(v * 1e3) + " ms";
      return num(v) + " s";
    }
    if (unit === "bytes") {
      const steps = ["B", "KiB", "MiB", "GiB", "TiB"];
      let i = 0; let x = v;
      while (Math.abs(x) >= 1024 && i < steps.length - 1) { x /= 1024; i++; }
      return num(x) + " " + steps[i];
    }
    return num(v) + (unit ? " " + visible(unit) : "");
  }
  function age(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    const s = Math.max(0, Math.floor(seconds));
    if (s < 120) return s + "s";
    if (s < 7200) return Math.floor(s / 60) + "m";
    if (s < 172800) return Math.floor(s / 3600) + "h";
    return Math.floor(s / 86400) + "d";
  }
  // Text read from files (names, labels, text values, file names) is always set with
  // textContent (never innerHTML) and passed through visible(): control characters
  // and bidi overrides are shown as escapes (\x1b, \u202e), as in the terminal views
  // (statmap.render.printable), so a publisher cannot disguise or reorder what is shown.
  const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;
  const NAMED = { "\t": "\\t", "\n": "\\n", "\r": "\\r" };
  function visible(text) {
    return String(text).replace(UNSAFE, (c) => {
      if (NAMED[c]) return NAMED[c];
      const code = c.charCodeAt(0);
      return code < 0x100 ? "\\x" + code.toString(16).padStart(2, "0") : "\\u" + code.toString(16).padStart(4, "0");
    });
  }
  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = visible(text);
    return e;
  }

  // -- fetching -----------------------------------------------------------
  function absolute(path) {
    // fetch() refuses URLs with credentials, which a relative URL inherits from a page
    // opened with user:token@ in its URL; the browser still sends the cached credentials.
    const u = new URL(path, document.baseURI);
    u.username = "";
    u.password = "";
    return u.href;
  }
  async function getJSON(url) {
    const r = await fetch(absolute(url), { cache: "no-store", credentials: "same-origin" });
    if (!r.ok) throw new Error(url + ": HTTP " + r.status);
    return r.json();
  }
  function setStatus(text, cls) {
    const s = $("status");
    s.textContent = visible(text);
    s.className = "status " + cls;
  }

  // -- processes ----------------------------------------------------------
  function renderProcesses(doc) {
    $("directory").textContent = doc.directory ? "· " + visible(doc.directory) : "";
    const counts = doc.counts || {};
    const parts = Object.keys(counts).sort().map((k) => counts[k] + " " + k);
    $("summary").textContent = parts.join(", ");
    const procs = doc.processes || [];
    $("process-count").textContent = "(" + procs.length + ")";
    const body = $("processes").tBodies[0];
    const rows = procs.map((p) => {
      const tr = el("tr");
      tr.dataset.pid = p.pid === null ? "" : String(p.pid);
      tr.dataset.name = p.name;
      tr.title = visible(p.file);
      tr.appendChild(el("td", "", p.name || "?"));
      tr.appendChild(el("td", "num", p.pid === null ? "–" : String(p.pid)));
      const st = el("td");
      let label = p.state;
      if (p.state === "archive") label = "archive of " + (p.absorbed_processes || 0);
      if (p.absorbed) label += " (archived)";
      st.appendChild(el("span", "state state-" + p.state, label));
      tr.appendChild(st);
      tr.appendChild(el("td", "num", age(p.age)));
      tr.appendChild(el("td", "num", p.series === undefined ? "–" : String(p.series)));
      tr.appendChild(el("td", "muted", p.program || ""));
      return tr;
    });
    body.replaceChildren(...rows);
    const warn = $("warnings");
    const msgs = [];
    if (counts.dead) msgs.push(counts.dead + " dead process file(s): run `statmap clean` to archive them");
    for (const e of (doc.errors || []).slice(0, 5)) msgs.push(e.file + ": " + e.problem);
    warn.replaceChildren(...msgs.map((m) => el("p", "", m)));
  }

  // -- series cards -------------------------------------------------------
  function plotted(s) {
    // What a series' chart shows: [values...] for this update, or null (no chart).
    // s.view comes with the series (the server's table of kinds), so a new metric type needs no change here.
    switch (s.view) {
      case "rate": return [s.rate === undefined ? null : s.rate];
      case "level": return [typeof s.value === "number" ? s.value : null];
      case "quantiles": return [s.p50, s.p90, s.p99];
      case "average": return [s.avg === undefined ? null : s.avg];
      default: return null;
    }
  }
  function labelText(labels) {
    const keys = Object.keys(labels || {});
    return keys.map((k) => k + "=" + labels[k]).join("  ");
  }

  function makeCard(s) {
    const card = el("div", "card");
    card.dataset.id = s.id;
    card.dataset.type = s.type;
    const head = el("div", "card-head");
    const title = el("div", "card-title");
    const metric = el("div", "metric", s.metric);
    metric.title = visible(s.id);
    title.appendChild(metric);
    metric.appendChild(el("span", "publisher", s.publisher));
    const lt = labelText(s.labels);
    title.appendChild(el("div", "labels", lt || " "));
    head.appendChild(title);
    head.appendChild(el("span", "kind", s.type));
    const pin = el("button", "pin", "★");
    pin.type = "button";
    pin.title = "pin this series";
    pin.setAttribute("aria-pressed", pins.has(s.id) ? "true" : "false");
    pin.addEventListener("click", () => togglePin(s.id));
    head.appendChild(pin);
    card.appendChild(head);
    const reading = el("div", "reading");
    const value = el("span", "value", "–");
    reading.appendChild(value);
    reading.appendChild(el("span", "caption", ""));
    card.appendChild(reading);
    if (s.view === "quantiles") {
      const legend = el("div", "legend");
      for (const q of ["p50", "p90", "p99"]) legend.appendChild(el("span", q, q + " –"));
      card.appendChild(legend);
    }
    if (plotted(s) !== null) {
      const chart = el("div", "chart");
      const svg = document.createElementNS(SVGNS, "svg");
      svg.setAttribute("viewBox", "0 0 " + POINTS + " 100");
      svg.setAttribute("preserveAspectRatio", "none");
      const grid = document.createElementNS(SVGNS, "line");
      grid.setAttribute("class", "grid-line");
      grid.setAttribute("x1", "0"); grid.setAttribute("x2", String(POINTS));
      grid.setAttribute("y1", "50"); grid.setAttribute("y2", "50");
      grid.setAttribute("vector-effect", "non-scaling-stroke");
      svg.appendChild(grid);
      const n = s.view === "quantiles" ? 3 : 1;
      if (n === 1) {
        const area = document.createElementNS(SVGNS, "path");
        area.setAttribute("class", "area");
        svg.appendChild(area);
      }
      for (let i = 0; i < n; i++) {
        const line = document.createElementNS(SVGNS, "path");
        line.setAttribute("class", "line" + (n === 3 ? " " + ["p50", "p90", "p99"][i] : ""));
        line.setAttribute("vector-effect", "non-scaling-stroke");
        svg.appendChild(line);
      }
      chart.appendChild(svg);
      chart.appendChild(el("span", "axis top", ""));
      chart.appendChild(el("span", "axis bottom", ""));
      card.appendChild(chart);
    } else {
      card.appendChild(el("div", "text-value", ""));
    }
    return card;
  }

  function updateCard(card, s) {
    const value = card.querySelector(".value");
    const caption = card.querySelector(".caption");
    card.classList.toggle("pinned", pins.has(s.id));
    card.querySelector(".pin").setAttribute("aria-pressed", pins.has(s.id) ? "true" : "false");
    let shown = null;
    if (s.view === "rate") {
      shown = s.rate;
      value.textContent = s.rate === null || s.rate === undefined ? "–" : withUnit(s.rate, s.unit) + "/s";
      caption.textContent = "total " + withUnit(s.value, s.unit);
    } else if (s.view === "level") {
      shown = s.value;
      value.textContent = withUnit(s.value, s.unit);
      caption.textContent = "";
    } else if (s.view === "quantiles") {
      shown = s.p99;
      value.textContent = s.rate === null || s.rate === undefined ? "–" : num(s.rate) + "/s";
      caption.textContent = "observations · count " + num(s.count);
      const legend = card.querySelectorAll(".legend span");
      ["p50", "p90", "p99"].forEach((q, i) => { legend[i].textContent = q + " " + withUnit(s[q], s.unit); });
    } else if (s.view === "average") {
      shown = s.avg;
      value.textContent = withUnit(s.avg, s.unit);
      caption.textContent = "average · " + (s.rate === null || s.rate === undefined ? "–" : num(s.rate)) + "/s";
    } else {
      const v = s.value;
      // one line per info entry: the newlines between entries are the page's, those inside one are escaped
      const text = v !== null && typeof v === "object"
        ? Object.keys(v).map((k) => visible(k + "=" + v[k])).join("\n")
        : visible(String(v));
      value.textContent = s.view === "state" ? text : "";
      caption.textContent = "";
      const tv = card.querySelector(".text-value");
      if (tv) tv.textContent = s.view === "state" ? "" : text;
    }
    value.dataset.value = shown === null || shown === undefined ? "" : String(shown);
    const h = history.get(s.id);
    if (!h || !card.querySelector("svg")) return;
    drawChart(card, h, s.view === "quantiles" ? 3 : 1, s.unit);
  }

  function drawChart(card, points, n, unit) {
    let lo = Infinity; let hi = -Infinity;
    for (const p of points) for (let i = 1; i <= n; i++) {
      const v = p[i];
      if (typeof v === "number" && isFinite(v)) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
    }
    const paths = card.querySelectorAll("path.line");
    const area = card.querySelector("path.area");
    const top = card.querySelector(".axis.top");
    const bottom = card.querySelector(".axis.bottom");
    if (lo === Infinity) {
      paths.forEach((p) => p.setAttribute("d", ""));
      if (area) area.setAttribute("d", "");
      top.textContent = ""; bottom.textContent = "";
      return;
    }
    if (lo > 0 && hi - lo > 0.2 * hi) lo = 0;  // rates and latencies: from zero, unless that flattens the line
    if (hi === lo) { hi = lo + (Math.abs(lo) || 1); }
    const span = hi - lo;
    const step = POINTS / Math.max(points.length - 1, 1);  // the history so far spans the chart's width
    const y = (v) => (96 - ((v - lo) / span) * 92).toFixed(2);
    for (let i = 1; i <= n; i++) {
      let d = ""; let pen = false; let first = null; let last = null;
      points.forEach((p, j) => {
        const v = p[i];
        if (typeof v !== "number" || !isFinite(v)) { pen = false; return; }
        const x = points.length === 1 ? POINTS / 2 : j * step;
        d += (pen ? "L" : "M") + x.toFixed(1) + " " + y(v);
        pen = true;
        if (first === null) first = x;
        last = x;
      });
      paths[i - 1].setAttribute("d", d);
      if (area && i === 1) area.setAttribute("d", d && first !== null ? d + "L" + last.toFixed(1) + " 100L" + first.toFixed(1) + " 100Z" : "");
    }
    top.textContent = withUnit(hi, unit);
    bottom.textContent = withUnit(lo, unit);
  }

  function togglePin(id) {
    if (pins.has(id)) pins.delete(id); else pins.add(id);
    store.set("pins", Array.from(pins));
    tick(true);
  }

  function renderSeries(doc) {
    const now = doc.time;
    const publishers = new Set((doc.series || []).concat(doc.pinned || []).map((s) => s.publisher));
    document.body.classList.toggle("many-publishers", publishers.size > 1);
    const seen = new Set();
    const place = (list, container) => {
      const els = [];
      for (const s of list) {
        if (seen.has(s.id)) continue;
        seen.add(s.id);
        const values = plotted(s);
        if (values !== null) {
          let h = history.get(s.id);
          if (!h) { h = []; history.set(s.id, h); }
          if (!h.length || h[h.length - 1][0] !== now) h.push([now, ...values]);
          while (h.length > POINTS) h.shift();
        }
        let card = cards.get(s.id);
        if (!card) { card = makeCard(s); cards.set(s.id, card); }
        updateCard(card, s);
        els.push(card);
      }
      // Reorder only when needed, so a card being hovered or clicked does not jump.
      const current = Array.from(container.children);
      if (current.length !== els.length || current.some((c, i) => c !== els[i])) container.replaceChildren(...els);
    };
    const pinnedList = (doc.pinned || []).slice().sort((a, b) => (a.id < b.id ? -1 : 1));
    place(pinnedList, $("pinned"));
    $("pinned-wrap").hidden = pinnedList.length === 0;
    const rank = (s) => (typeof s.rank === "number" ? s.rank : 99); // the kind's place (server's table)
    const rest = (doc.series || []).filter((s) => !pins.has(s.id));
    rest.sort((a, b) => rank(a) - rank(b) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    place(rest, $("cards"));
    for (const id of Array.from(cards.keys())) if (!seen.has(id)) { cards.delete(id); }
    for (const id of Array.from(history.keys())) if (!seen.has(id) && !pins.has(id)) history.delete(id);
    const shown = (doc.series || []).length;
    $("matched").textContent = doc.matched > shown ? "showing " + shown + " of " + doc.matched + " series: narrow the filter" : doc.matched + " series";
    $("empty").hidden = doc.matched > 0 || pinnedList.length > 0;
  }

  // -- the loop -----------------------------------------------------------
  let timer = null;
  let running = false;
  async function tick(once) {
    if (running) return;
    running = true;
    try {
      const params = new URLSearchParams();
      if (filter.trim()) params.set("q", filter.trim());
      params.set("limit", String(LIMIT));
      for (const id of pins) params.append("pin", id);
      const [procs, series] = await Promise.all([getJSON("api/processes"), getJSON("api/series?" + params.toString())]);
      renderProcesses(procs);
      renderSeries(series);
      if (!paused) setStatus("live", "live");
    } catch (e) {
      setStatus("disconnected", "error");
    } finally {
      running = false;
    }
    if (!once) schedule();
  }
  function schedule() {
    clearTimeout(timer);
    if (!paused) timer = setTimeout(() => tick(false), PERIOD);
  }

  function start() {
    const input = $("filter");
    input.value = filter;
    let debounce = null;
    input.addEventListener("input", () => {
      clearTimeout(debounce);
      debounce = setTimeout(() => { filter = input.value; store.set("filter", filter); tick(true); }, 250);
    });
    const pause = $("pause");
    pause.addEventListener("click", () => {
      paused = !paused;
      pause.textContent = paused ? "Resume" : "Pause";
      if (paused) { clearTimeout(timer); setStatus("paused", "paused"); } else { setStatus("live", "live"); tick(false); }
    });
    document.addEventListener("keydown", (ev) => {
      if (ev.target === input) return;
      if (ev.key === "/") { ev.preventDefault(); input.focus(); }
      else if (ev.key === " ") { ev.preventDefault(); pause.click(); }
    });
    tick(false);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start); else start();
})();

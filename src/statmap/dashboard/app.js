// statmap dashboard: polls api/processes, api/series and api/history every second;
// the history (kept by the server, 16 minutes) is fetched whole for the series on
// screen when they appear, then only what is new. Charts are drawn by chart.js.
// No dependencies; every URL is relative so the page works wherever the exporter is mounted.
"use strict";

(function () {
  const C = window.StatmapChart;
  const LIMIT = 60;            // series shown besides the pinned ones
  const PERIOD = 1000;         // ms between updates
  const WINDOWS = [[60, "1 min"], [300, "5 min"], [900, "15 min"]];
  const SMOOTHING = [[1, "1 s"], [5, "5 s"], [15, "15 s"], [60, "1 min"]];
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
  let windowSec = store.get("window", 300);
  let smooth = store.get("smooth", 5);
  let breakdown = new Set(store.get("breakdown", []));
  let paused = false;
  const cards = new Map();     // series id -> card element
  const shownSeries = new Map(); // series id -> its latest /api/series entry
  // The history as the server sent it: one time axis, columns per series, per-process columns.
  let H = { times: [], series: {}, processes: {}, events: [], capacity: 960 };
  let needFull = true;

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
  const unitOf = (s) => visible(s.unit || "");
  function age(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    const s = Math.max(0, Math.floor(seconds));
    if (s < 120) return s + "s";
    if (s < 7200) return Math.floor(s / 60) + "m";
    if (s < 172800) return Math.floor(s / 3600) + "h";
    return Math.floor(s / 86400) + "d";
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
    $("summary").textContent = Object.keys(counts).sort().map((k) => counts[k] + " " + k).join(", ");
    const procs = doc.processes || [];
    $("process-count").textContent = "(" + procs.length + ")";
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
    $("processes").tBodies[0].replaceChildren(...rows);
    const msgs = [];
    if (counts.dead) msgs.push(counts.dead + " dead process file(s): run `statmap clean` to archive them");
    for (const e of (doc.errors || []).slice(0, 5)) msgs.push(e.file + ": " + e.problem);
    $("warnings").replaceChildren(...msgs.map((m) => el("p", "", m)));
  }

  // -- history ------------------------------------------------------------
  const charted = (s) => ["rate", "level", "quantiles", "average"].includes(s.view);
  const COLUMNS = ["values", "count", "sum"];
  function appendHistory(doc) {
    const n = H.times.length; const add = doc.times.length;
    H.times = H.times.concat(doc.times);
    for (const id in doc.series) {
      const old = H.series[id]; const got = doc.series[id];
      if (!old) { needFull = true; continue; }
      for (const c of COLUMNS) if (got[c]) old[c] = old[c].concat(got[c]);
      if (got.buckets) old.buckets = old.buckets.map((col, i) => col.concat(got.buckets[i] || []));
    }
    for (const id in doc.processes) {
      const per = H.processes[id] || (H.processes[id] = {});
      const got = doc.processes[id];
      for (const pid in got) per[pid] = (per[pid] || new Array(n).fill(null)).concat(got[pid]);
      for (const pid in per) if (!(pid in got)) per[pid] = per[pid].concat(new Array(add).fill(null));
    }
    const known = new Set(H.events.map((e) => e.time + e.file + e.event));
    H.events = H.events.concat(doc.events.filter((e) => !known.has(e.time + e.file + e.event)));
    const drop = H.times.length - H.capacity;
    if (drop > 0) {
      H.times = H.times.slice(drop);
      for (const id in H.series) {
        const s = H.series[id];
        for (const c of COLUMNS) if (s[c]) s[c] = s[c].slice(drop);
        if (s.buckets) s.buckets = s.buckets.map((col) => col.slice(drop));
      }
      for (const id in H.processes) for (const pid in H.processes[id]) H.processes[id][pid] = H.processes[id][pid].slice(drop);
    }
    if (H.times.length) H.events = H.events.filter((e) => e.time >= H.times[0]);
  }
  async function fetchHistory(ids) {
    const params = new URLSearchParams();
    for (const id of ids) params.append("id", id);
    for (const id of breakdown) if (ids.includes(id)) params.append("breakdown", id);
    const full = needFull || !H.times.length || ids.some((id) => !(id in H.series) && !H.missing?.has(id))
      || [...breakdown].some((id) => ids.includes(id) && !(id in H.processes));
    if (!full) params.set("since", String(H.times[H.times.length - 1]));
    const doc = await getJSON("api/history?" + params.toString());
    if (full) {
      H = { times: doc.times, series: doc.series, processes: doc.processes, events: doc.events,
            capacity: doc.capacity, missing: new Set(doc.missing), breakdown: new Set(doc.breakdown) };
      for (const id of doc.breakdown) if (!H.processes[id]) H.processes[id] = {};
      needFull = false;
    } else {
      appendHistory(doc);
    }
  }

  // -- cards --------------------------------------------------------------
  function labelText(labels) {
    return Object.keys(labels || {}).map((k) => k + "=" + labels[k]).join("  ");
  }
  function makeCard(s) {
    const card = el("div", "card");
    card.dataset.id = s.id;
    card.dataset.type = s.type;
    const head = el("div", "card-head");
    const title = el("div", "card-title");
    const metric = el("div", "metric", s.metric);
    metric.title = visible(s.id);
    metric.appendChild(el("span", "publisher", s.publisher));
    title.appendChild(metric);
    title.appendChild(el("div", "labels", labelText(s.labels) || " "));
    head.appendChild(title);
    head.appendChild(el("span", "kind", s.type));
    if (charted(s) && !("pid" in (s.labels || {})) && ["counter", "gauge", "histogram", "summary"].includes(s.type)) {
      const by = el("button", "by-process", "per process");
      by.type = "button";
      by.title = "break this total down by process";
      by.addEventListener("click", () => toggleBreakdown(s.id));
      head.appendChild(by);
    }
    const pin = el("button", "pin", "★");
    pin.type = "button";
    pin.title = "pin this series";
    pin.setAttribute("aria-label", "pin " + visible(s.id));
    pin.addEventListener("click", () => togglePin(s.id));
    head.appendChild(pin);
    card.appendChild(head);
    const reading = el("div", "reading");
    reading.appendChild(el("span", "value", "–"));
    reading.appendChild(el("span", "caption", ""));
    card.appendChild(reading);
    if (s.view === "quantiles") {
      const legend = el("div", "legend");
      for (const q of ["p50", "p90", "p99"]) legend.appendChild(el("span", q, q + " –"));
      card.appendChild(legend);
    }
    if (charted(s)) {
      const box = el("div", "chart" + (s.view === "quantiles" ? " heatmap" : ""));
      box.tabIndex = 0;
      box.setAttribute("role", "img");
      box.setAttribute("aria-label", "chart of " + visible(s.id) + "; left and right arrows move the cursor");
      card.appendChild(box);
      const per = el("div", "chart per-process");
      per.tabIndex = 0;
      per.hidden = true;
      per.setAttribute("aria-label", "per-process chart of " + visible(s.id));
      card.appendChild(per);
      const readout = el("div", "readout");
      readout.setAttribute("aria-live", "polite");
      card.appendChild(readout);
      for (const b of [box, per]) attachCursor(card, b);
    } else {
      card.appendChild(el("div", "text-value", ""));
    }
    return card;
  }
  // lifetime min and max (format 1.2 writers; null when unknown)
  const extremes = (s) => s.max === null || s.max === undefined ? "" : " · min " + C.withUnit(s.min, unitOf(s)) + " · max " + C.withUnit(s.max, unitOf(s));
  const lastOf = (values) => { for (let i = values.length - 1; i >= 0; i--) if (values[i] !== null) return values[i]; return null; };

  function updateCard(card, s) {
    const value = card.querySelector(".value");
    const caption = card.querySelector(".caption");
    card.classList.toggle("pinned", pins.has(s.id));
    card.querySelector(".pin").setAttribute("aria-pressed", pins.has(s.id) ? "true" : "false");
    const by = card.querySelector(".by-process");
    if (by) by.setAttribute("aria-pressed", breakdown.has(s.id) ? "true" : "false");
    const h = H.series[s.id];
    const ls = h && H.times.length ? C.lines(h, H.times, smooth) : null;
    card._lines = ls;
    let shown = null;
    const sm = smooth + " s";
    if (s.view === "rate") {
      shown = ls ? lastOf(ls[0].values) : s.rate;
      if (shown === null || shown === undefined) shown = s.rate;
      value.textContent = shown === null || shown === undefined ? "–" : C.withUnit(shown, unitOf(s)) + "/s";
      caption.textContent = "over " + sm + " · total " + C.withUnit(s.value, unitOf(s));
    } else if (s.view === "level") {
      shown = s.value;
      value.textContent = C.withUnit(s.value, unitOf(s));
      caption.textContent = "";
    } else if (s.view === "quantiles") {
      shown = s.p99;
      value.textContent = s.rate === null || s.rate === undefined ? "–" : C.num(s.rate) + "/s";
      caption.textContent = "observations · count " + C.num(s.count) + extremes(s);
      const legend = card.querySelectorAll(".legend span");
      ["p50", "p90", "p99"].forEach((q, i) => {
        const v = ls ? lastOf(ls[i].values) : s[q];
        legend[i].textContent = q + " " + C.withUnit(v === null ? s[q] : v, unitOf(s));
      });
    } else if (s.view === "average") {
      shown = ls ? lastOf(ls[0].values) : s.avg;
      value.textContent = C.withUnit(shown, unitOf(s));
      caption.textContent = "average over " + sm + " · " + (s.rate === null || s.rate === undefined ? "–" : C.num(s.rate)) + "/s" + extremes(s);
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
    if (ls) drawCard(card, s, h, ls);
  }

  function drawCard(card, s, h, ls) {
    const to = H.times[H.times.length - 1];
    // The window, or the history there is when it is shorter (a chart is never mostly empty).
    const from = Math.min(to - Math.min(60, windowSec), Math.max(to - windowSec, H.times[0]));
    const box = card.querySelector(".chart");
    const unit = unitOf(s);
    const per = s.view === "rate" ? "/s" : "";
    const events = H.events.filter((e) => e.publisher === s.publisher);
    box._geo = C.draw(box, { times: H.times, from, to, lines: ls, unit, per, events,
                             heat: s.view === "quantiles" ? h : null, bounds: h.bounds });
    box._spec = { lines: ls, unit, per };
    const perBox = card.querySelector(".chart.per-process");
    const perData = H.processes[s.id];
    perBox.hidden = !(breakdown.has(s.id) && perData);
    if (!perBox.hidden) {
      const pl = C.processLines(perData, H.times, s.view, smooth).map((l, i) => ({ ...l, color: C.PALETTE[i % C.PALETTE.length], cls: "proc" }));
      const pper = s.view === "level" ? "" : "/s";
      const punit = s.view === "quantiles" || s.view === "average" ? "" : unit;
      perBox._geo = C.draw(perBox, { times: H.times, from, to, lines: pl, unit: punit, per: pper, events });
      perBox._spec = { lines: pl, unit: punit, per: pper };
      perBox.dataset.processes = String(pl.length);
    }
    card._processes = perData && breakdown.has(s.id) ? C.processLines(perData, H.times, s.view, smooth) : null;
    if (card._cursor !== undefined && card._cursor !== null) showReadout(card, card._cursor);
  }

  // -- the cursor and its read-out -------------------------------------------
  function nearest(t) {
    let best = -1; let d = Infinity;
    H.times.forEach((x, k) => { const e = Math.abs(x - t); if (e < d) { d = e; best = k; } });
    return best;
  }
  function attachCursor(card, box) {
    box.addEventListener("pointermove", (ev) => {
      const g = box._geo; if (!g) return;
      const r = box.getBoundingClientRect();
      const t = g.from + (ev.clientX - r.left - g.left) / g.W * (g.to - g.from);
      card._cursor = H.times[nearest(Math.max(g.from, Math.min(g.to, t)))];
      showReadout(card, card._cursor);
    });
    box.addEventListener("pointerleave", () => hideReadout(card));
    box.addEventListener("blur", () => hideReadout(card));
    box.addEventListener("keydown", (ev) => {
      const g = box._geo; if (!g || !H.times.length) return;
      let k = card._cursor === undefined || card._cursor === null ? H.times.length - 1 : nearest(card._cursor);
      if (ev.key === "ArrowLeft") k = Math.max(0, k - 1);
      else if (ev.key === "ArrowRight") k = Math.min(H.times.length - 1, k + 1);
      else if (ev.key === "Home") k = Math.max(0, nearest(g.from));
      else if (ev.key === "End") k = H.times.length - 1;
      else if (ev.key === "Escape") { hideReadout(card); return; }
      else return;
      ev.preventDefault();
      card._cursor = H.times[k];
      showReadout(card, card._cursor);
    });
  }
  function hideReadout(card) {
    card._cursor = null;
    const r = card.querySelector(".readout");
    if (r) { r.replaceChildren(); r.classList.remove("on"); }
    card.querySelectorAll(".cursor").forEach((c) => { c.style.display = "none"; });
  }
  function showReadout(card, t) {
    const k = H.times.indexOf(t);
    const out = card.querySelector(".readout");
    if (k < 0 || !out) return;
    const box = card.querySelector(".chart");
    const spec = box._spec; if (!spec) return;
    for (const b of card.querySelectorAll(".chart")) {
      const g = b._geo; if (!g || b.hidden) continue;
      g.cursor.style.display = "";
      const x = g.x(t).toFixed(1);
      g.cursor.firstChild.setAttribute("x1", x); g.cursor.firstChild.setAttribute("x2", x);
    }
    const rows = [el("div", "rt-time", C.clock(t, true))];
    for (const l of spec.lines) {
      const row = el("div", "rt-row");
      row.appendChild(el("span", "rt-name " + (l.cls || ""), l.name));
      row.appendChild(el("span", "rt-value", C.withUnit(l.values[k], spec.unit) + (l.values[k] === null ? "" : spec.per)));
      rows.push(row);
    }
    const procs = card._processes;
    if (procs && procs.length) {
      const perBox = card.querySelector(".chart.per-process");
      const pspec = perBox._spec || { unit: "", per: "" };
      const sorted = procs.map((p, i) => [p, i]).sort((a, b) => (b[0].values[k] || 0) - (a[0].values[k] || 0));
      for (const [p, i] of sorted.slice(0, 12)) {
        const row = el("div", "rt-row rt-proc");
        const name = el("span", "rt-name", p.name);
        name.style.borderLeftColor = C.PALETTE[i % C.PALETTE.length];
        row.appendChild(name);
        row.appendChild(el("span", "rt-value", C.withUnit(p.values[k], pspec.unit) + (p.values[k] === null ? "" : pspec.per)));
        rows.push(row);
      }
      if (sorted.length > 12) rows.push(el("div", "muted", "+ " + (sorted.length - 12) + " more"));
    }
    for (const e of H.events) {
      if (Math.abs(e.time - t) <= 1 && e.publisher === card.querySelector(".publisher").textContent) {
        rows.push(el("div", "rt-event", "pid " + e.pid + " " + e.event));
      }
    }
    out.replaceChildren(...rows);
    out.classList.add("on");
  }

  function togglePin(id) {
    if (pins.has(id)) pins.delete(id); else pins.add(id);
    store.set("pins", Array.from(pins));
    tick(true);
  }
  function toggleBreakdown(id) {
    if (breakdown.has(id)) breakdown.delete(id); else breakdown.add(id);
    store.set("breakdown", Array.from(breakdown));
    tick(true);
  }

  function renderSeries(doc) {
    const publishers = new Set((doc.series || []).concat(doc.pinned || []).map((s) => s.publisher));
    document.body.classList.toggle("many-publishers", publishers.size > 1);
    const seen = new Set();
    const place = (list, container) => {
      const els = [];
      for (const s of list) {
        if (seen.has(s.id)) continue;
        seen.add(s.id);
        shownSeries.set(s.id, s);
        let card = cards.get(s.id);
        if (!card) { card = makeCard(s); cards.set(s.id, card); }
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
    for (const id of Array.from(cards.keys())) if (!seen.has(id)) { cards.delete(id); shownSeries.delete(id); }
    const shown = (doc.series || []).length;
    $("matched").textContent = doc.matched > shown ? "showing " + shown + " of " + doc.matched + " series: narrow the filter" : doc.matched + " series";
    $("empty").hidden = doc.matched > 0 || pinnedList.length > 0;
    return Array.from(seen).filter((id) => charted(shownSeries.get(id)));
  }
  function redraw() {
    for (const [id, card] of cards) updateCard(card, shownSeries.get(id));
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
      const ids = renderSeries(series);
      try { await fetchHistory(ids); } catch (e) { needFull = true; }
      redraw();
      document.body.dataset.history = String(H.times.length);
      if (!document.body.dataset.firstHistory) document.body.dataset.firstHistory = String(H.times.length);
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

  function choices(containerId, options, current, onPick) {
    const box = $(containerId);
    const buttons = options.map(([v, label]) => {
      const b = el("button", "choice", label);
      b.type = "button";
      b.dataset.value = String(v);
      b.setAttribute("aria-pressed", v === current ? "true" : "false");
      b.addEventListener("click", () => {
        buttons.forEach((x) => x.setAttribute("aria-pressed", x === b ? "true" : "false"));
        onPick(v);
      });
      return b;
    });
    box.replaceChildren(...buttons);
    return buttons;
  }

  function start() {
    const input = $("filter");
    input.value = filter;
    let debounce = null;
    input.addEventListener("input", () => {
      clearTimeout(debounce);
      debounce = setTimeout(() => { filter = input.value; store.set("filter", filter); tick(true); }, 250);
    });
    const winButtons = choices("window", WINDOWS, windowSec, (v) => { windowSec = v; store.set("window", v); redraw(); });
    const smoothButtons = choices("smoothing", SMOOTHING, smooth, (v) => { smooth = v; store.set("smooth", v); redraw(); });
    const pause = $("pause");
    pause.addEventListener("click", () => {
      paused = !paused;
      pause.textContent = paused ? "Resume" : "Pause";
      pause.setAttribute("aria-pressed", paused ? "true" : "false");
      if (paused) { clearTimeout(timer); setStatus("paused", "paused"); } else { setStatus("live", "live"); tick(false); }
    });
    const cycle = (buttons) => {
      const i = buttons.findIndex((b) => b.getAttribute("aria-pressed") === "true");
      buttons[(i + 1) % buttons.length].click();
    };
    document.addEventListener("keydown", (ev) => {
      // Keys typed into a form control (the filter, the knobs' editors) are that control's.
      if (ev.target.matches("input, select, textarea") || ev.ctrlKey || ev.metaKey || ev.altKey) return;
      if (ev.key === "/") { ev.preventDefault(); input.focus(); }
      else if (ev.key === " " && !(ev.target instanceof HTMLButtonElement)) { ev.preventDefault(); pause.click(); }
      else if (ev.key === "w") cycle(winButtons);
      else if (ev.key === "s") cycle(smoothButtons);
    });
    let resize = null;
    window.addEventListener("resize", () => { clearTimeout(resize); resize = setTimeout(redraw, 150); });
    tick(false);
  }

  // For knobs.js (the Knobs panel): the same escaping, fetching and pause.
  window.StatmapPage = { el, visible, absolute, getJSON, age, paused: () => paused };

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start); else start();
})();

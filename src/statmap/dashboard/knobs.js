// statmap dashboard: the Knobs panel (docs/knobs.md). Polls api/knobs every 2 s and lists,
// per publisher name, each knob: value (per process when they differ), default, allowed
// values, origin, who set it and when, pending requests and the last refusal. Edit controls
// appear only when the server says allow_set; a change is POSTed with the server's token as
// a Bearer header (the only form the server takes for POST), and each process's answer
// (applied, refused: why, ...) is shown under the knob.
//
// The token: from the page's fragment (#token=TOKEN: never sent to the server, removed from
// the address bar at once) or the field the panel shows, kept for this tab only
// (sessionStorage); else the password of the URL the page was opened with (user:TOKEN@host),
// where the browser exposes it (Chromium, in document.URL). Requests that carry it use
// credentials "omit": a 401 to a wrong token must not make the browser drop its cached Basic
// credentials (every later request of the page would wait on a login dialog).
// Text from files goes through P.el (textContent and visible()).
"use strict";

(function () {
  const P = window.StatmapPage;
  if (!P) return;
  const { el, visible } = P;
  const PERIOD = 2000;
  const TOKEN_KEY = "statmap.token";
  const section = document.getElementById("knobs-section");
  const list = document.getElementById("knobs");
  const note = document.getElementById("knobs-note");
  const boxes = new Map();        // "publisher\0knob" -> its element (kept, so an edit in progress survives a poll)
  const results = new Map();      // same key -> the answers of the last change made here
  const groups = new Map();       // publisher -> its heading and grid (kept too)
  let allowSet = false;

  function readToken() {
    const m = /(?:^#|&)token=([^&]*)/.exec(window.location.hash);
    if (m) {
      try { window.sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(m[1])); } catch (e) { /* private mode */ }
      history.replaceState(null, "", window.location.pathname + window.location.search);
      return decodeURIComponent(m[1]);
    }
    try { const kept = window.sessionStorage.getItem(TOKEN_KEY); if (kept) return kept; } catch (e) { /* private mode */ }
    // The Basic credentials the page was opened with (user:TOKEN@host), where the browser keeps
    // them in document.URL (Chromium does; location.href never has them).
    try { return decodeURIComponent(new URL(document.URL).password); } catch (e) { return ""; }
  }
  let token = readToken();
  // Folded or not, as the user left it (a fleet with many knobs can put them out of the way).
  const details = document.getElementById("knobs-details");
  try { if (window.localStorage.getItem("statmap.knobsFolded") === "true") details.open = false; } catch (e) { /* private mode */ }
  details.addEventListener("toggle", () => {
    try { window.localStorage.setItem("statmap.knobsFolded", String(!details.open)); } catch (e) { /* private mode */ }
  });

  const shown = (v) => (v === null || v === undefined ? "–" : typeof v === "string" ? v : JSON.stringify(v));
  function allowed(k) {
    if (k.type === "bool") return "true | false";
    if (k.choices) return k.choices.join(" | ");
    if (k.type === "str") return "text, at most " + k.size + " bytes";
    const lo = k.min === undefined ? null : k.min; const hi = k.max === undefined ? null : k.max;
    const what = k.type === "int" ? "integer" : "number";
    if (lo !== null && hi !== null) return what + " " + lo + " … " + hi;
    if (lo !== null) return what + " ≥ " + lo;
    if (hi !== null) return what + " ≤ " + hi;
    return "any " + what;
  }
  function when(seconds) {
    if (!seconds) return "–";
    const d = new Date(seconds * 1000);
    const pad = (n) => String(n).padStart(2, "0");
    return pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds()) + " (" + P.age(Date.now() / 1000 - seconds) + " ago)";
  }
  function fact(dl, name, text) {
    dl.appendChild(el("dt", "", name));
    const dd = el("dd", "", text);
    dl.appendChild(dd);
    return dd;
  }

  // -- the edit controls ---------------------------------------------------------
  function control(k) {
    let input;
    if (k.type === "bool") {
      input = el("input", "knob-input");
      input.type = "checkbox";
      input.setAttribute("role", "switch");
    } else if (k.choices) {
      input = el("select", "knob-input");
      for (const c of k.choices) { const o = el("option", "", c); o.value = c; input.appendChild(o); }
    } else {
      input = el("input", "knob-input");
      if (k.type === "str") { input.type = "text"; input.maxLength = k.size; input.spellcheck = false; }
      else {
        input.type = "number";
        input.step = k.type === "int" ? "1" : "any";
        if (k.min !== undefined) input.min = String(k.min);
        if (k.max !== undefined) input.max = String(k.max);
      }
    }
    input.setAttribute("aria-label", "new value of " + visible(k.name));
    return input;
  }
  function valueOf(input, k) {
    if (k.type === "bool") return input.checked ? "true" : "false";
    return input.value;
  }
  function showValue(input, k, value) {
    // never overwrite what the user is choosing or typing
    if (input._dirty || (document.activeElement === input && input.type !== "checkbox")) return;
    if (k.type === "bool") input.checked = value === true;
    else input.value = value === null || value === undefined ? "" : String(value);
  }

  async function post(pub, knob, params, box) {
    const q = new URLSearchParams({ name: pub });
    for (const [key, v] of params) q.append(key, v);
    const out = box.querySelector(".knob-result");
    // Busy, not disabled: disabling the focused control would drop the keyboard focus to the page.
    if (box._busy) return;
    box._busy = true;
    box.setAttribute("aria-busy", "true");
    out.replaceChildren(el("div", "muted", "asking the processes…"));
    let lines = [];
    let ok = false;
    try {
      const r = await fetch(P.absolute("api/knobs?" + q.toString()), {
        method: "POST", cache: "no-store", credentials: "omit", headers: { Authorization: "Bearer " + token },
      });
      const type = r.headers.get("Content-Type") || "";
      if (type.includes("json")) {
        const doc = await r.json();
        ok = doc.ok;
        lines = (doc.answers || []).filter((a) => a.knob === knob).map((a) => ["pid " + a.pid + ": " + a.outcome, a.outcome]);
        if (doc.note) lines.push([doc.note, ""]);
      } else {
        const text = (await r.text()).trim();
        if (r.status === 401) { forgetToken("the server refused the token"); }
        lines = [[(r.status === 400 ? "not sent: " : "HTTP " + r.status + ": ") + text, "refused"]];
      }
    } catch (e) {
      lines = [["no answer from the server: " + e.message, "refused"]];
    }
    results.set(pub + "\0" + knob, { ok, lines });
    box.querySelectorAll(".knob-input").forEach((i) => { i._dirty = false; });
    box._busy = false;
    box.removeAttribute("aria-busy");
    renderResult(box, results.get(pub + "\0" + knob));
    poll(true);
  }
  function renderResult(box, res) {
    const out = box.querySelector(".knob-result");
    if (!res) { out.replaceChildren(); return; }
    out.dataset.ok = res.ok ? "true" : "false";
    out.replaceChildren(...res.lines.map(([text, outcome]) => {
      const cls = outcome.startsWith("applied") || outcome.startsWith("reset") ? "ok"
        : outcome.startsWith("refused") || outcome.startsWith("no answer") ? "bad" : "muted";
      return el("div", "answer " + cls, text);
    }));
  }

  function editor(pub, k, box) {
    const wrap = el("div", "knob-edit");
    const input = control(k);
    input.addEventListener("input", () => { input._dirty = true; });
    const send = () => post(pub, k.name, [["set", k.name + "=" + valueOf(input, k)]], box);
    if (k.type === "bool") {
      input.addEventListener("change", send); // a switch acts at once
      const label = el("label", "switch");
      label.appendChild(input);
      label.appendChild(el("span", "", "on"));
      wrap.appendChild(label);
    } else {
      input.addEventListener("keydown", (ev) => { if (ev.key === "Enter") { ev.preventDefault(); send(); } });
      wrap.appendChild(input);
      const set = el("button", "knob-set", "Set");
      set.type = "button";
      set.setAttribute("aria-label", "set " + visible(k.name));
      set.addEventListener("click", send);
      wrap.appendChild(set);
    }
    const reset = el("button", "knob-reset", "Reset");
    reset.type = "button";
    reset.title = "back to the start-up value (environment, else the default)";
    reset.setAttribute("aria-label", "reset " + visible(k.name));
    reset.addEventListener("click", () => post(pub, k.name, [["reset", k.name]], box));
    wrap.appendChild(reset);
    return wrap;
  }

  // -- one knob ---------------------------------------------------------------
  function makeBox(pub, k, editable) {
    const box = el("div", "knob");
    box.dataset.publisher = pub;
    box.dataset.knob = k.name;
    const head = el("div", "knob-head");
    head.appendChild(el("span", "knob-name", k.name));
    head.appendChild(el("span", "kind", k.type || "?"));
    box.appendChild(head);
    box.appendChild(el("div", "knob-help muted", k.help || ""));
    box.appendChild(el("div", "knob-value", "–"));
    box.appendChild(el("ul", "knob-per-process"));
    box.appendChild(el("dl", "knob-facts"));
    box.appendChild(el("div", "knob-status"));
    if (editable) box.appendChild(editor(pub, k, box));
    const out = el("div", "knob-result");
    out.setAttribute("aria-live", "polite");
    box.appendChild(out);
    box._editable = editable;
    return box;
  }
  function updateBox(box, pub, name, procs) {
    const here = procs.filter((p) => p.knob);
    const k = here[0].knob;
    const values = here.map((p) => shown(p.knob.value));
    const same = values.every((v) => v === values[0]);
    const value = box.querySelector(".knob-value");
    value.textContent = visible(same ? values[0] : "differs by process");
    value.dataset.value = same ? values[0] : "";
    const per = box.querySelector(".knob-per-process");
    per.replaceChildren(...(same ? [] : here.map((p) => {
      const li = el("li", "", "pid " + p.pid + ": " + shown(p.knob.value) + " (" + (p.knob.origin || "?") + ")");
      li.dataset.pid = String(p.pid);
      return li;
    })));
    const facts = box.querySelector(".knob-facts");
    facts.replaceChildren();
    fact(facts, "default", shown(k.default));
    const rules = here.map((p) => allowed(p.knob));
    fact(facts, "allowed", rules.every((r) => r === rules[0]) ? rules[0]
      : here.map((p, i) => "pid " + p.pid + ": " + rules[i]).join("; "));
    const origins = [...new Set(here.map((p) => p.knob.origin || "?"))];
    fact(facts, "origin", origins.join(", "));
    const latest = here.reduce((a, p) => ((p.knob.when || 0) > (a.knob.when || 0) ? p : a), here[0]).knob;
    const by = latest.set_by || {};
    fact(facts, "set by", latest.origin === "default" ? "–" : "uid " + by.uid + ", pid " + by.pid);
    fact(facts, "when", when(latest.when));
    fact(facts, "processes", String(here.length));
    const status = box.querySelector(".knob-status");
    const lines = [];
    const pending = here.filter((p) => p.knob.pending);
    if (pending.length) lines.push(el("div", "pending", "request pending in " + pending.length + " process(es): pid " + pending.map((p) => p.pid).join(", ")));
    for (const p of here) {
      const r = p.knob.refused;
      if (r) lines.push(el("div", "refused", "pid " + p.pid + " refused " + shown(r.value) + ": " + r.reason + " (" + when(r.when) + ")"));
      if (p.knob.problem) lines.push(el("div", "refused", "pid " + p.pid + ": " + p.knob.problem));
    }
    status.replaceChildren(...lines);
    const input = box.querySelector(".knob-input");
    if (input) showValue(input, k, same ? here[0].knob.value : null);
    renderResult(box, results.get(pub + "\0" + name));
  }

  function showNote(doc) {
    const parts = [];
    if (!allowSet) {
      parts.push(el("span", "muted", "Read-only: this server does not take changes (statmap serve --allow-set --token TOKEN enables them; `statmap set` works from a shell)."));
    } else if (!token) {
      parts.push(el("span", "warn", "Editing needs the server's token: this page cannot read the password your browser sent. Enter it (kept for this tab only) or open the page as …/#token=TOKEN. "));
      const input = el("input", "token-input");
      input.type = "password";
      input.autocomplete = "off";
      input.setAttribute("aria-label", "the server's token");
      const use = el("button", "", "Use token");
      use.type = "button";
      const said = el("span", "refused");
      said.setAttribute("aria-live", "polite");
      const take = async () => {
        const given = input.value.trim();
        if (!given) return;
        // Checked at once (any route takes the token), so a typo is said here, not at the first change.
        let status = 0;
        try {
          const check = { cache: "no-store", credentials: "omit", headers: { Authorization: "Bearer " + given } };
          status = (await fetch(P.absolute("healthz"), check)).status;
        } catch (e) { /* the server is unreachable: the header's status light says so */ }
        if (status === 401) { said.textContent = "the server refused this token"; input.select(); return; }
        token = given;
        try { window.sessionStorage.setItem(TOKEN_KEY, token); } catch (e) { /* private mode */ }
        rebuild();
      };
      use.addEventListener("click", take);
      input.addEventListener("keydown", (ev) => { if (ev.key === "Enter") take(); });
      parts.push(input, use, said);
    }
    for (const e of (doc.errors || []).slice(0, 3)) parts.push(el("div", "refused", e.file + ": " + e.problem));
    if (note.childElementCount !== parts.length || note.dataset.mode !== String(allowSet) + !!token) {
      note.replaceChildren(...parts);
      note.dataset.mode = String(allowSet) + !!token;
    }
  }
  function forgetToken(why) {
    token = "";
    try { window.sessionStorage.removeItem(TOKEN_KEY); } catch (e) { /* private mode */ }
    rebuild();
    note.prepend(el("div", "refused", why));
  }
  function rebuild() { boxes.clear(); groups.clear(); list.replaceChildren(); note.dataset.mode = ""; poll(true); }

  // Reorder only when needed: moving an element out of the page blurs its focused control
  // and closes an open drop-down.
  function place(container, els) {
    const current = Array.from(container.children);
    if (current.length !== els.length || current.some((c, i) => c !== els[i])) container.replaceChildren(...els);
  }

  function render(doc) {
    allowSet = doc.allow_set === true;
    const editable = allowSet && !!token;
    const pubs = Object.keys(doc.publishers || {}).sort();
    section.hidden = pubs.length === 0 && !(doc.errors || []).length;
    document.getElementById("knob-count").textContent = "(" + pubs.length + " publisher" + (pubs.length === 1 ? "" : "s") + ")";
    showNote(doc);
    const groupEls = [];
    const seen = new Set();
    for (const pub of pubs) {
      const info = doc.publishers[pub];
      const names = [];
      for (const p of info.processes) for (const k of p.knobs) if (!names.includes(k.name)) names.push(k.name);
      let g = groups.get(pub);
      if (!g) {
        g = { group: el("div", "knob-group"), head: el("h3"), problem: el("div", "refused"), grid: el("div", "knob-grid") };
        g.group.dataset.publisher = pub;
        g.group.append(g.head, g.problem, g.grid);
        groups.set(pub, g);
      }
      const n = info.processes.length;
      g.head.replaceChildren(el("span", "", pub), el("span", "count", " · " + n + " process" + (n === 1 ? "" : "es")));
      g.problem.textContent = info.problem ? visible("control file: " + info.problem) : "";
      const els = [];
      for (const name of names) {
        const key = pub + "\0" + name;
        seen.add(key);
        const procs = info.processes.map((p) => ({ pid: p.pid, knob: p.knobs.find((k) => k.name === name) }));
        let box = boxes.get(key);
        if (!box || box._editable !== editable) { box = makeBox(pub, procs.find((p) => p.knob).knob, editable); boxes.set(key, box); }
        updateBox(box, pub, name, procs);
        els.push(box);
      }
      place(g.grid, els);
      groupEls.push(g.group);
    }
    for (const key of Array.from(boxes.keys())) if (!seen.has(key)) boxes.delete(key);
    for (const pub of Array.from(groups.keys())) if (!pubs.includes(pub)) groups.delete(pub);
    place(list, groupEls);
    document.body.dataset.knobs = String(boxes.size);
  }

  let timer = null;
  let busy = false;
  async function poll(once) {
    if (!busy && !(P.paused() && !once)) {
      busy = true;
      try { render(await P.getJSON("api/knobs")); } catch (e) { /* the status light in the header says so */ }
      busy = false;
    }
    if (!once) { clearTimeout(timer); timer = setTimeout(() => poll(false), PERIOD); }
  }
  poll(false);
})();

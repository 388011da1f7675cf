// orch serve: the dashboard. Plain JavaScript, no libraries. Every string
// from the store (names, errors, events) reaches the page through
// textContent or an attribute set with setAttribute, never innerHTML, so
// row data shows as text and never runs.
"use strict";

const POLL_MS = 2000;
let timer = null;

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const k of kids) {
    if (k === null || k === undefined) continue;
    e.appendChild(typeof k === "string" || typeof k === "number" ? document.createTextNode(String(k)) : k);
  }
  return e;
}

function svgEl(tag, attrs) {
  const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  return e;
}

async function api(path) {
  const r = await fetch(path, { credentials: "same-origin", cache: "no-store" });
  if (!r.ok) throw new Error(path + ": HTTP " + r.status);
  return r.json();
}

const num = (n) => (n === undefined || n === null ? "-" : Math.round(n).toLocaleString("en-US"));
const usd = (x) => "$" + (x || 0).toFixed(x >= 1 || !x ? 2 : 4);
const pct = (s) => (s === undefined || s === null ? "" : Math.floor(s * 100) + "%");
const when = (ms) => (ms ? new Date(ms).toLocaleString() : "-");
function dur(s) {
  if (s === undefined || s === null) return "-";
  s = Math.round(s);
  if (s >= 3600) return Math.floor(s / 3600) + "h" + String(Math.floor((s % 3600) / 60)).padStart(2, "0") + "m";
  return Math.floor(s / 60) + "m" + String(s % 60).padStart(2, "0") + "s";
}

function statusBadge(s) {
  return el("span", { class: "status " + s, "data-status": s }, s);
}

function bar(share, big) {
  const inner = el("span");
  inner.style.width = Math.max(0, Math.min(1, share || 0)) * 100 + "%";
  return el("div", { class: big ? "bar big" : "bar", title: pct(share) }, inner);
}

function schedule(fn) {
  clearTimeout(timer);
  timer = setTimeout(fn, POLL_MS);
}

// ---- the runs list ----

const listState = { status: "", name: "", offset: 0, limit: 50 };

async function showRuns(main) {
  const q = new URLSearchParams({ status: listState.status, name: listState.name,
    offset: listState.offset, limit: listState.limit });
  const d = await api("/api/runs?" + q);
  const status = el("select", { id: "f-status", onchange: (e) => { listState.status = e.target.value; listState.offset = 0; route(); } },
    ...["", "running", "paused", "completed", "failed", "pending"].map((s) => {
      const o = el("option", { value: s }, s || "any status");
      if (s === listState.status) o.selected = true;
      return o;
    }));
  const name = el("input", { id: "f-name", placeholder: "name contains…", value: listState.name });
  name.addEventListener("change", (e) => { listState.name = e.target.value; listState.offset = 0; route(); });
  const rows = d.runs.map((r) => el("tr", { class: "link run", "data-id": r.id, onclick: () => { location.hash = "#/run/" + encodeURIComponent(r.id); } },
    el("td", {}, el("div", { class: "run-name" }, r.name), el("div", { class: "mono muted" }, r.id)),
    el("td", {}, statusBadge(r.status)),
    el("td", {}, bar(r.share), el("span", { class: "muted" }, " " + num(r.rows_done) + (r.rows_total ? " / " + num(r.rows_total) : "") + " " + pct(r.share))),
    el("td", { class: "num" }, num(r.rows_per_s)),
    el("td", { class: "num" }, usd(r.cost_usd)),
    el("td", {}, when(r.created_ms)),
    el("td", { class: "num" }, dur(r.duration_s))));
  const pager = el("div", { class: "pager" },
    el("button", { id: "prev", onclick: () => { listState.offset = Math.max(0, listState.offset - listState.limit); route(); } }, "‹ newer"),
    el("span", { class: "muted" }, (d.total ? listState.offset + 1 : 0) + "–" + (listState.offset + d.runs.length) + " of " + num(d.total)),
    el("button", { id: "next", onclick: () => { if (listState.offset + listState.limit < d.total) { listState.offset += listState.limit; route(); } } }, "older ›"));
  main.replaceChildren(
    el("h1", {}, "Runs"),
    el("div", { class: "filters" }, status, name, el("span", { id: "live", class: "muted" }, "updated " + new Date().toLocaleTimeString())),
    el("table", { id: "runs" },
      el("thead", {}, el("tr", {}, ...["name", "status", "progress", "rows/s", "cost", "started", "duration"].map((h) => el("th", {}, h)))),
      el("tbody", {}, ...rows)),
    pager);
  if (d.runs.some((r) => r.status === "running")) schedule(route);
}

// ---- a run ----

const runState = { id: null, samples: [], events: [], errors: [], errorsNext: 0 };

function card(k, v, id) {
  return el("div", { class: "card" }, el("div", { class: "k" }, k), el("div", { class: "v", id: id || null }, v));
}

function costTable(title, groups) {
  const names = Object.keys(groups || {});
  if (!names.length) return null;
  return el("div", {}, el("h2", {}, title),
    el("table", {}, el("thead", {}, el("tr", {}, el("th", {}, "name"), el("th", { class: "num" }, "calls"), el("th", { class: "num" }, "tokens"), el("th", { class: "num" }, "cost"))),
      el("tbody", {}, ...names.map((n) => el("tr", {}, el("td", {}, n), el("td", { class: "num" }, num(groups[n].calls)),
        el("td", { class: "num" }, num(groups[n].tokens)), el("td", { class: "num" }, usd(groups[n].cost)))))));
}

// rows/s and spend over time: the checkpoints (rows) and the figures this
// page has seen (rows and spend), as two lines on their own scales
function chart(run) {
  const pts = [];
  for (const c of run.checkpoint_list || []) pts.push({ t: c.created_ms, rows: c.rows, cost: null });
  for (const s of runState.samples) pts.push(s);
  pts.sort((a, b) => a.t - b.t);
  pts.unshift({ t: run.created_ms, rows: 0, cost: 0 });
  // rows only grow: a point behind the one before it (a checkpoint's
  // figures and a live sample of about the same moment) says nothing new
  for (let i = 1, best = 0; i < pts.length; i++) {
    if (pts[i].rows < best) pts[i].rows = best;
    best = pts[i].rows;
  }
  const W = 800, H = 220, P = 36;
  const svg = svgEl("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", id: "chart" });
  const t0 = pts[0].t, t1 = Math.max(pts[pts.length - 1].t, t0 + 1);
  const rates = [];
  for (let i = 1; i < pts.length; i++) {
    const dt = (pts[i].t - pts[i - 1].t) / 1000;
    if (dt > 0.5) rates.push({ t: pts[i].t, v: Math.max(0, (pts[i].rows - pts[i - 1].rows) / dt) });
  }
  const costs = pts.filter((p) => p.cost !== null);
  const maxRate = Math.max(1, ...rates.map((r) => r.v));
  const maxCost = Math.max(1e-9, ...costs.map((c) => c.cost));
  const x = (t) => P + ((t - t0) / (t1 - t0)) * (W - 2 * P);
  const line = (list, max, cls) => svg.appendChild(svgEl("polyline", { class: cls,
    points: list.map((p) => x(p.t).toFixed(1) + "," + (H - P - (p.v / max) * (H - 2 * P)).toFixed(1)).join(" ") }));
  svg.appendChild(svgEl("line", { class: "axis", x1: P, y1: H - P, x2: W - P, y2: H - P }));
  line(rates, maxRate, "rows");
  line(costs.map((c) => ({ t: c.t, v: c.cost })), maxCost, "cost");
  const label = (tx, ty, s) => { const t = svgEl("text", { x: tx, y: ty }); t.textContent = s; svg.appendChild(t); };
  label(P, 14, "rows/s (solid) up to " + num(maxRate));
  label(W / 2, 14, "spend (dashed) up to " + usd(maxCost));
  label(P, H - 10, when(t0));
  label(W - 190, H - 10, when(t1));
  return svg;
}

// failed rows: committed ones in row order, a page at a time after the last seen
async function moreErrors() {
  const id = encodeURIComponent(runState.id);
  const d = await api(`/api/runs/${id}/errors?after=${runState.errorsNext}&limit=100`);
  runState.errors = runState.errors.concat(d.errors);
  runState.errorsNext = d.next;
  return d.errors.length;
}

// events newest first: the newest page at first, then what came since
// (after the newest seen), and older pages on demand (before the oldest)
async function newEvents() {
  const id = encodeURIComponent(runState.id);
  if (!runState.events.length) {
    const d = await api(`/api/runs/${id}/events?order=desc&limit=100`);
    runState.events = d.events;
    return;
  }
  for (let i = 0; i < 5; i++) {
    const d = await api(`/api/runs/${id}/events?after=${runState.events[0].id}&limit=200`);
    runState.events = d.events.reverse().concat(runState.events).slice(0, 2000);
    if (d.events.length < 200) return;
  }
}

async function olderEvents() {
  const id = encodeURIComponent(runState.id);
  const last = runState.events[runState.events.length - 1];
  if (!last) return;
  const d = await api(`/api/runs/${id}/events?order=desc&before=${last.id}&limit=100`);
  runState.events = runState.events.concat(d.events);
  route();
}

function eventsTable() {
  return el("table", { id: "events" }, el("thead", {}, el("tr", {}, el("th", {}, "#"), el("th", {}, "time"), el("th", {}, "type"), el("th", {}, "data"))),
    el("tbody", {}, ...runState.events.map((e) => el("tr", {}, el("td", { class: "num" }, e.id), el("td", {}, when(e.ts_ms)),
      el("td", {}, e.type), el("td", { class: "mono" }, e.data || "")))));
}

function errorsTable() {
  return el("table", { id: "errors" }, el("thead", {}, el("tr", {}, el("th", { class: "num" }, "row"), el("th", {}, "key"), el("th", {}, "status"), el("th", {}, "error"))),
    el("tbody", {}, ...runState.errors.map((e) => el("tr", { class: "error-row" }, el("td", { class: "num" }, e.seq), el("td", { class: "mono" }, e.key || ""),
      el("td", {}, e.status), el("td", { class: "err" }, e.error || "")))));
}

// orch worker: the leases and each worker (live ones first), as orch status shows them
function workersPart(w) {
  if (!w) return [];
  const l = w.leases;
  return [
    el("h2", {}, "workers (" + num(w.workers.filter((x) => x.live).length) + " live, " + num(w.workers.length) + " in all)"),
    el("p", { id: "leases", class: "muted" }, "leases " + num(l.total) + ": " + num(l.done) + " done, " + num(l.taken) + " taken, " +
      num(l.free) + " free (taken back after " + num(w.timeout_s) + " s without a heartbeat)"),
    el("table", { id: "workers" }, el("thead", {}, el("tr", {}, ...["worker", "state", "lease", "rows", "rows/s"].map((h) => el("th", {}, h)))),
      el("tbody", {}, ...w.workers.map((x) => el("tr", { class: "worker" }, el("td", { class: "mono" }, x.name),
        el("td", {}, x.live ? "live" : "gone"), el("td", { class: "num" }, x.lease === undefined ? "-" : String(x.lease)),
        el("td", { class: "num" }, num(x.rows)), el("td", { class: "num" }, (x.rows_per_s || 0).toFixed(1)))))),
  ];
}

// llm.batch: each provider batch with the provider's status and counts
function batchCounts(b) {
  if (b.state === "ended" && b.succeeded !== undefined)
    return num(b.succeeded) + " ok, " + num(b.failed || 0) + " without a reply, " + num(b.resent || 0) + " sent again";
  const c = b.counts || {};
  return Object.keys(c).filter((k) => c[k] > 0).map((k) => num(c[k]) + " " + k).join(", ") || "-";
}

function batchesPart(list) {
  if (!list) return [];
  const open = list.filter((b) => b.state !== "ended").length;
  return [
    el("h2", {}, "provider batches (" + num(list.length) + ", " + num(open) + " not ended)"),
    el("table", { id: "batches" }, el("thead", {}, el("tr", {}, ...["#", "id", "provider", "status", "requests", "counts", "submitted", "expected by"].map((h) => el("th", {}, h)))),
      el("tbody", {}, ...list.slice(-200).reverse().map((b) => el("tr", { class: "batch" }, el("td", { class: "num" }, b.batch),
        el("td", { class: "mono" }, b.id || "(no id yet)"), el("td", {}, b.provider || "-"), el("td", {}, b.status || b.state),
        el("td", { class: "num" }, num(b.requests || 0)), el("td", {}, batchCounts(b)),
        el("td", {}, when(b.submitted_ms)), el("td", {}, when(b.expected_ms)))))),
  ];
}

async function showRun(main, id) {
  if (runState.id !== id) Object.assign(runState, { id, samples: [], events: [], errors: [], errorsNext: 0 });
  const run = await api("/api/runs/" + encodeURIComponent(id));
  // stamped with the time the run wrote them, not this page's clock
  const at = run.live ? run.live.updated_ms : run.updated_ms;
  const last = runState.samples[runState.samples.length - 1];
  if (!last || last.t !== at) runState.samples.push({ t: at, rows: run.rows_done, cost: run.cost_usd });
  if (runState.samples.length > 2000) runState.samples.shift();
  // the newest events and errors since the last look, a page at a time
  await newEvents();
  for (let i = 0; i < 5 && (await moreErrors()) === 100; i++);
  const L = run.live || {};
  const cps = run.checkpoint_list || [];
  main.replaceChildren(...[
    el("p", {}, el("a", { href: "#/" }, "‹ all runs")),
    el("h1", {}, el("span", { id: "run-name" }, run.name), " ", statusBadge(run.status)),
    el("div", { class: "mono muted" }, run.id),
    run.error ? el("p", { class: "err", id: "run-error" }, run.error) : null,
    el("div", { class: "progress" }, bar(run.share, true),
      el("div", { class: "muted", id: "progress" }, num(run.rows_done) + (run.rows_total ? " of " + num(run.rows_total) : "") + " " + (L.unit || "rows") + " " + pct(run.share) +
        (run.eta_s !== undefined && run.status === "running" ? " · ETA " + dur(run.eta_s) : "") + " · " + num(run.rows_per_s) + " rows/s")),
    el("div", { class: "grid", id: "counters" },
      card("rows done", num(run.rows_done), "c-rows"), card("ok", num(run.rows_ok)), card("failed", num(run.rows_failed), "c-failed"),
      card("dropped", num(run.rows_dropped)), card("in flight", num(L.rows_in_flight || 0)), card("rows/s", num(run.rows_per_s)),
      card("LLM calls", num(run.llm_calls)), card("tokens in", num(run.tokens_in)), card("tokens out", num(run.tokens_out)),
      card("cost", usd(run.cost_usd), "c-cost"), card("retries", num(L.retries || 0)), card("429s", num(L.http_429 || 0)),
      card("journal hits", num(L.journal_hits || 0)), card("concurrency", num(L.concurrency)), card("started", when(run.created_ms)),
      card("duration", dur(run.duration_s))),
    ...workersPart(run.workers), ...batchesPart(run.batches),
    el("h2", {}, "rows/s and spend"), chart(run),
    el("div", { class: "two" }, costTable("cost by stage", run.costs && run.costs.by_stage), costTable("cost by model", run.costs && run.costs.by_model)),
    el("h2", {}, "failed rows (" + num(runState.errors.length) + " committed by checkpoints)"), errorsTable(),
    el("h2", {}, "checkpoints (" + num(run.checkpoints) + ")"),
    el("table", { id: "checkpoints" }, el("thead", {}, el("tr", {}, ...["#", "time", "reason", "rows", "ms", "bytes"].map((h) => el("th", {}, h)))),
      el("tbody", {}, ...cps.slice(-50).reverse().map((c) => el("tr", {}, el("td", { class: "num" }, c.seq), el("td", {}, when(c.created_ms)),
        el("td", {}, c.reason + (c.name ? " (" + c.name + ")" : "")), el("td", { class: "num" }, num(c.rows)),
        el("td", { class: "num" }, (c.duration_ms || 0).toFixed(2)), el("td", { class: "num" }, num(c.bytes)))))),
    el("h2", {}, "events (the newest " + num(runState.events.length) + ")"), eventsTable(),
    el("div", { class: "pager" }, el("button", { id: "older-events", onclick: olderEvents }, "older events")),
    el("p", { id: "live", class: "muted" }, run.status === "running" ? "live · updated " + new Date().toLocaleTimeString() : "finished · not updating"),
  ].filter((x) => x !== null));
  if (run.status === "running") schedule(route);
}

async function route() {
  clearTimeout(timer);
  const main = document.getElementById("main");
  const m = location.hash.match(/^#\/run\/(.+)$/);
  try {
    if (m) await showRun(main, decodeURIComponent(m[1]));
    else await showRuns(main);
  } catch (e) {
    main.replaceChildren(el("p", { class: "err" }, String(e.message || e)));
    schedule(route);
  }
}

window.addEventListener("hashchange", route);
route();

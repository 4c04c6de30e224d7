// labctl serve: the live lanes (one column per lab) and the finished runs.
// Updates come from /api/events (Server-Sent Events; labctl/serve.py's Lanes).
"use strict";

const TOKEN = document.querySelector('meta[name="labctl-token"]').content;
const URL_TOKEN = new URLSearchParams(location.search).get("token");
const Q = URL_TOKEN ? "?token=" + encodeURIComponent(URL_TOKEN) : "";
const LANES = [["truth", "ground truth"], ["monitor", "monitor"], ["heartbeat_only", "heartbeat-only"],
               ["phi", "phi (accrual)"], ["sender_clock", "sender clock"], ["supervisor", "supervisor"]];
const MIN_SPAN_S = 20;
const labs = new Map();
let clockOffset = 0;  // the server's clock minus ours, in seconds
let selected = null;
// When each lane first showed each state on the page (Date.now(), ms): lab -> lane -> state -> ms.
window.labctlSeen = {};

function now() { return Date.now() / 1000 + clockOffset; }

function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function svgEl(tag, attrs) {
  const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  return e;
}

// ------------------------------------------------------------------ one lab's column

function newLab(id) {
  const root = el("section", {"class": "lab", "data-lab": id});
  const head = el("header");
  const title = el("h2", {}, "…");
  const clock = el("span", {"class": "clock"}, "");
  head.append(title, el("span", {"class": "id"}, id), clock);
  root.append(head);
  const lanes = {};
  const faultsRow = el("div", {"class": "row"});
  const faultLane = el("div", {"class": "lane faults", "data-lane": "faults"});
  faultsRow.append(el("div", {"class": "name"}, "faults"), faultLane);
  root.append(faultsRow);
  for (const [key, name] of LANES) {
    const row = el("div", {"class": "row"});
    const lane = el("div", {"class": "lane", "data-lane": key, "data-state": ""});
    row.append(el("div", {"class": "name"}, name), lane);
    root.append(row);
    lanes[key] = lane;
  }
  const itemsRow = el("div", {"class": "row"});
  const items = el("div", {"class": "lane items", "data-lane": "items"});
  const svg = svgEl("svg", {viewBox: "0 0 1000 100", preserveAspectRatio: "none"});
  const beats = svgEl("g");
  const processed = svgEl("polyline", {"class": "processed"});
  const acked = svgEl("polyline", {"class": "acked"});
  svg.append(beats, processed, acked);
  items.append(svg);
  itemsRow.append(el("div", {"class": "name"}, "beats & items"), items);
  root.append(itemsRow);
  const axis = el("div", {"class": "axis"});
  const ticks = el("div", {"class": "ticks"});
  axis.append(el("div", {}, ""), ticks);
  root.append(axis);
  root.append(el("div", {"class": "legend"},
    "— worker: items processed   - - supervisor: acked   | a heartbeat   hatched: a fault window"));
  const buttons = el("div", {"class": "buttons"});
  root.append(buttons);
  const status = el("div", {"class": "status", "role": "status"});
  root.append(status);
  const verdict = el("table", {"class": "verdict", "hidden": ""});
  root.append(verdict);
  root.addEventListener("click", () => select(id));
  document.getElementById("labs").append(root);
  document.getElementById("nolabs").hidden = true;
  const lab = {id, root, title, clock, lanes, faultLane, items, beats, processed, acked, ticks, buttons, status,
               verdict, data: null};
  reset(lab);
  if (!selected) select(id);
  return lab;
}

function reset(lab) {
  lab.data = {t0: null, scenario: "", changes: {}, items: [], acked: [], total: null, beats: [], faults: new Map(),
              ended: null, buttonDefs: []};
  for (const [key] of LANES) lab.data.changes[key] = [];
}

function select(id) {
  selected = id;
  for (const l of labs.values()) l.root.classList.toggle("selected", l.id === id);
}

function span(lab) {
  const end = lab.data.ended || now();
  return Math.max(end - lab.data.t0, MIN_SPAN_S);
}

function pct(lab, ts) { return Math.min(100, Math.max(0, (ts - lab.data.t0) / span(lab) * 100)); }

function drawLane(lab, key) {
  const lane = lab.lanes[key];
  const changes = lab.data.changes[key];
  const end = lab.data.ended || now();
  const parts = [];
  changes.forEach((c, i) => {
    const until = i + 1 < changes.length ? changes[i + 1].ts : end;
    const seg = el("div", {"class": "seg st-" + c.state, "data-state": c.state, "title": c.state}, c.state);
    seg.style.left = pct(lab, c.ts) + "%";
    seg.style.width = Math.max(0.3, pct(lab, until) - pct(lab, c.ts)) + "%";
    parts.push(seg);
  });
  for (const f of lab.data.faults.values()) {
    const sh = el("div", {"class": "shade" + (f.end ? "" : " open")});
    sh.style.left = pct(lab, f.start) + "%";
    sh.style.width = Math.max(0.4, pct(lab, f.end || end) - pct(lab, f.start)) + "%";
    parts.push(sh);
  }
  lane.replaceChildren(...parts);
  const last = changes.length ? changes[changes.length - 1].state : "";
  lane.dataset.state = last;
  if (last) {
    const seen = (window.labctlSeen[lab.id] ||= {});
    const lanesSeen = (seen[key] ||= {});
    if (!(last in lanesSeen)) lanesSeen[last] = Date.now();
  }
}

function drawFaults(lab) {
  const end = lab.data.ended || now();
  const parts = [];
  for (const f of lab.data.faults.values()) {
    const n = el("div", {"class": "faultname", "title": f.name}, f.name + (f.end ? "" : " …"));
    n.style.left = pct(lab, f.start) + "%";
    n.style.width = Math.max(0.4, pct(lab, f.end || end) - pct(lab, f.start)) + "%";
    parts.push(n);
  }
  lab.faultLane.replaceChildren(...parts);
}

function drawItems(lab) {
  const d = lab.data;
  const ymax = Math.max(1, d.total || 0, ...d.items.map(p => p[1]), ...d.acked.map(p => p[1])) * 1.1;
  const pts = arr => arr.map(([ts, v]) => `${(pct(lab, ts) * 10).toFixed(1)},${(100 - v / ymax * 100).toFixed(1)}`)
    .join(" ");
  lab.processed.setAttribute("points", pts(d.items));
  lab.acked.setAttribute("points", pts(d.acked));
  lab.beats.replaceChildren(...d.beats.map(ts => {
    const x = (pct(lab, ts) * 10).toFixed(1);
    return svgEl("line", {"class": "beat", x1: x, x2: x, y1: 0, y2: 8});
  }));
}

function drawAll(lab) {
  if (lab.data.t0 === null) return;
  for (const [key] of LANES) drawLane(lab, key);
  drawFaults(lab);
  drawItems(lab);
  const s = span(lab);
  const elapsed = (lab.data.ended || now()) - lab.data.t0;
  lab.clock.textContent = (lab.data.ended ? "ended · " : "") + Math.max(0, elapsed).toFixed(0) + " s";
  const step = s > 120 ? 30 : s > 60 ? 10 : 5;
  const marks = [];
  for (let t = 0; t <= s; t += step) marks.push(el("span", {}, t + " s"));
  lab.ticks.replaceChildren(...marks);
  drawButtons(lab);
}

// ------------------------------------------------------------------ fault buttons

function faultOn(lab, fault) {
  for (const f of lab.data.faults.values()) {
    if (!f.end && f.name.split(" ")[0] === fault) return true;
  }
  return false;
}

function drawButtons(lab) {
  const want = lab.data.buttonDefs.map((b, i) => {
    const on = b.inverse && faultOn(lab, b.fault);
    return {i, kind: on ? b.inverse : b.fault, label: on ? b.inverse : b.label, on};
  });
  const sig = JSON.stringify(want);
  if (lab.buttons.dataset.sig === sig) return;
  lab.buttons.dataset.sig = sig;
  lab.buttons.replaceChildren(...want.map(w => {
    const b = el("button", {"type": "button", "data-kind": w.kind, "class": w.on ? "on" : ""});
    b.append(el("kbd", {}, String(w.i + 1)), document.createTextNode(w.label));
    b.addEventListener("click", ev => { ev.stopPropagation(); press(lab, w.kind); });
    return b;
  }));
}

async function press(lab, kind) {
  lab.status.textContent = kind + "…";
  try {
    const r = await fetch("api/lab/" + encodeURIComponent(lab.id) + "/fault" + Q, {
      method: "POST", headers: {"Content-Type": "application/json", "X-Labctl-Token": TOKEN},
      body: JSON.stringify({kind}),
    });
    const doc = await r.json();
    lab.status.textContent = r.ok ? "done: " + doc.did : "refused: " + doc.error;
  } catch (e) {
    lab.status.textContent = "failed: " + e;
  }
}

// ------------------------------------------------------------------ the expectation table

function drawVerdict(lab, v) {
  const t = lab.verdict;
  t.replaceChildren();
  const cap = el("caption", {"class": v.ok ? "ok" : "fail"}, v.ok ? "✓ every expectation held" : "✗ FAILED");
  t.append(cap);
  const body = el("tbody");
  for (const c of v.checks || []) {
    const tr = el("tr");
    tr.append(el("td", {}, c.name), el("td", {"class": c.ok ? "ok" : "fail"}, c.ok ? "✓ ok" : "✗ FAIL"),
              el("td", {}, c.detail || ""));
    body.append(tr);
  }
  t.append(body);
  t.hidden = false;
}

// ------------------------------------------------------------------ the stream

function apply(u) {
  if (u.type === "clock" || u.type === "reset") {
    clockOffset = u.ts - Date.now() / 1000;
    if (u.type === "reset") for (const l of labs.values()) reset(l);
    return;
  }
  let lab = labs.get(u.lab);
  if (!lab) { lab = newLab(u.lab); labs.set(u.lab, lab); }
  const d = lab.data;
  switch (u.type) {
    case "hello":
      reset(lab);
      lab.data.t0 = u.t0; lab.data.scenario = u.scenario; lab.data.buttonDefs = u.buttons || [];
      lab.title.textContent = u.scenario; lab.verdict.hidden = true;
      break;
    case "state":
      d.changes[u.lane].push({ts: u.ts, state: u.state});
      drawLane(lab, u.lane);  // at once: the page's latency is the point
      return;
    case "items": d.items.push([u.ts, u.processed]); return;
    case "acked": d.acked.push([u.ts, u.acked || 0]); if (u.total) d.total = u.total; return;
    case "beat": d.beats.push(u.ts); if (d.beats.length > 2000) d.beats.shift(); return;
    case "fault":
      if (u.failed) d.faults.delete(u.id);
      else d.faults.set(u.id, {...(d.faults.get(u.id) || {}), ...Object.fromEntries(
        Object.entries(u).filter(([k, v]) => v !== undefined && !(k === "end" && v === null && d.faults.has(u.id))))});
      break;
    case "verdict": drawVerdict(lab, u); break;
    case "ended": d.ended = now(); break;
  }
  drawAll(lab);
}

function connect() {
  const conn = document.getElementById("conn");
  const es = new EventSource("api/events" + Q);
  es.onopen = () => { conn.textContent = "live"; };
  es.onerror = () => { conn.textContent = "reconnecting…"; };
  es.onmessage = m => apply(JSON.parse(m.data));
}

// ------------------------------------------------------------------ finished runs

function show(which) {
  document.getElementById("live").hidden = which !== "live";
  document.getElementById("runs").hidden = which !== "runs";
  document.getElementById("tab-live").setAttribute("aria-pressed", String(which === "live"));
  document.getElementById("tab-runs").setAttribute("aria-pressed", String(which === "runs"));
  if (which === "runs") loadRuns();
}

function runUrl(path, file) {
  return "runs/" + path.split("/").map(encodeURIComponent).join("/") + "/" + file + Q;
}

async function loadRuns() {
  const body = document.querySelector("#runlist tbody");
  const runs = await (await fetch("api/runs" + Q)).json();
  body.replaceChildren(...runs.map(r => {
    const tr = el("tr", {"data-run": r.path, "tabindex": "0"});
    const res = r.ok === true ? ["ok", "✓ passed"] : r.ok === false ? ["fail", "✗ FAILED"] : ["", "?"];
    tr.append(el("td", {}, r.time), el("td", {}, r.lab), el("td", {}, r.scenario), el("td", {"class": res[0]}, res[1]));
    tr.addEventListener("click", () => openRun(r, tr));
    tr.addEventListener("keydown", e => { if (e.key === "Enter") openRun(r, tr); });
    return tr;
  }));
}

async function openRun(r, tr) {
  for (const x of document.querySelectorAll("#runlist tr.selected")) x.classList.remove("selected");
  tr.classList.add("selected");
  document.getElementById("run").hidden = false;
  document.getElementById("run-title").textContent = `${r.scenario} · ${r.lab} · ${r.time}`;
  const img = document.getElementById("run-timeline");
  img.hidden = !r.files.includes("timeline.png");
  if (!img.hidden) img.src = runUrl(r.path, "timeline.png");
  const vt = document.querySelector("#run-verdict tbody");
  vt.replaceChildren();
  if (r.files.includes("verdict.json")) {
    const v = await (await fetch(runUrl(r.path, "verdict.json"))).json();
    for (const c of v.checks || []) {
      const row = el("tr");
      row.append(el("td", {}, c.name), el("td", {"class": c.ok ? "ok" : "fail"}, c.ok ? "✓ ok" : "✗ FAIL"),
                 el("td", {}, c.detail || ""));
      vt.append(row);
    }
  }
  const rep = document.getElementById("run-report");
  rep.textContent = r.files.includes("report.md") ? await (await fetch(runUrl(r.path, "report.md"))).text() : "";
}

// ------------------------------------------------------------------ keys and start

document.addEventListener("keydown", e => {
  if (e.target instanceof HTMLInputElement || e.ctrlKey || e.metaKey || e.altKey) return;
  if (e.key === "l" || e.key === "L") show("live");
  else if (e.key === "r" || e.key === "R") show("runs");
  else if (/^[1-9]$/.test(e.key) && selected && labs.has(selected)) {
    const b = labs.get(selected).buttons.querySelectorAll("button")[Number(e.key) - 1];
    if (b) b.click();
  }
});

document.getElementById("tab-live").addEventListener("click", () => show("live"));
document.getElementById("tab-runs").addEventListener("click", () => show("runs"));
setInterval(() => { for (const l of labs.values()) drawAll(l); }, 250);
connect();

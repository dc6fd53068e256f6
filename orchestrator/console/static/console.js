// The console's only script: plain JS, no build step, no dependency.
// Pages are hash routes (#/, #/shard/<ks>/<shard>, #/workflows, #/recoveries); each opens one
// Server-Sent Events stream (/console/stream) that pushes the page's whole document when it
// changes, and the page is redrawn from it. Nothing polls. Actions are the API's commands
// (POST /api/v1/commands/<Name>?stream=1) with the token the user pasted (sessionStorage only).
"use strict";

const TOKEN_KEY = "orchestrator-console-token";
let source = null;   // the page's EventSource
let current = null;  // the last document drawn
let route = null;
let actionsLog = null;  // the #actions-log section, moved (not redrawn) between pages

// -- small DOM helpers (text is always set as text: nothing from the server is parsed as HTML) --

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

const SVG_NS = "http://www.w3.org/2000/svg";
function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) if (v !== null && v !== undefined) el.setAttribute(k, String(v));
  for (const c of children.flat()) if (c !== null && c !== undefined) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

function badge(text, kind) { return h("span", { class: "badge b-" + (kind || "plain") }, text); }
function yesNo(v, yes, no) { return v === null || v === undefined ? "–" : v ? yes : no; }
function ms(v) { return v === null || v === undefined ? "–" : v >= 10000 ? (v / 1000).toFixed(1) + " s" : Math.round(v) + " ms"; }
function when(t) { return t ? new Date(t * 1000).toLocaleString() : "–"; }
function age(now, t) { return t ? Math.max(0, now - t).toFixed(1) + " s ago" : "never"; }
function shardHref(ks, shard) { return "#/shard/" + encodeURIComponent(ks) + "/" + encodeURIComponent(shard); }
// On a phone's width the stylesheet stacks each row into a card, each cell labelled by its
// column (data-label), instead of a table wider than the screen.
function table(headers, rows, caption) {
  for (const tr of rows.flat(Infinity)) {
    [...tr.children].forEach((cell, i) => { if (headers[i]) cell.dataset.label = headers[i]; });
  }
  return h("div", { class: "table-wrap" }, h("table", {},
    caption ? h("caption", { class: "muted" }, caption) : null,
    h("thead", {}, h("tr", {}, headers.map((x) => h("th", { scope: "col" }, x)))),
    h("tbody", {}, rows)));
}
function statusBadge(st) {
  const kind = { succeeded: "ok", running: "info", failed: "bad", interrupted: "warn", blocked: "warn", skipped: "plain" }[st];
  return badge(st, kind || "plain");
}

// -- routing and the live stream ---------------------------------------------------------------

function parseRoute() {
  const parts = location.hash.replace(/^#\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
  if (parts[0] === "shard" && parts.length === 3) return { page: "shard", keyspace: parts[1], shard: parts[2] };
  if (parts[0] === "workflows") return { page: "workflows" };
  if (parts[0] === "recoveries") return { page: "recoveries" };
  return { page: "fleet" };
}

function open() {
  route = parseRoute();
  current = null;
  for (const a of document.querySelectorAll("header nav a")) {
    if (a.dataset.nav === route.page) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  if (source) source.close();
  const q = new URLSearchParams({ page: route.page });
  if (route.page === "shard") { q.set("keyspace", route.keyspace); q.set("shard", route.shard); }
  const view = document.getElementById("view");
  view.replaceChildren(h("p", { class: "muted" }, "Loading…"));
  source = new EventSource("/console/stream?" + q);
  source.addEventListener("state", (ev) => { setLive(true); draw(JSON.parse(ev.data)); });
  source.addEventListener("open", () => setLive(true));
  source.addEventListener("error", () => setLive(false));  // EventSource reconnects by itself
}

function setLive(on) {
  const el = document.getElementById("live");
  el.className = "live " + (on ? "on" : "off");
  el.textContent = on ? "live" : "reconnecting…";
}

// Redraw the page; the focused control (by its data-k) keeps the focus across redraws.
function draw(doc) {
  if (doc.error && current && !current.error) {  // keep the last good page, say it is stale
    const el = document.getElementById("live");
    el.className = "live off";
    el.textContent = "not updated: " + doc.error;
    return;
  }
  current = doc;
  const view = document.getElementById("view");
  const focused = document.activeElement && view.contains(document.activeElement) ? document.activeElement.dataset.k : null;
  let body;
  if (doc.error) body = [h("p", { class: "badge b-bad", role: "alert" }, "The service could not build this page: " + doc.error)];
  else if (doc.page === "shard") body = drawShard(doc);
  else if (doc.page === "workflows") body = drawWorkflows(doc);
  else if (doc.page === "recoveries") body = drawRecoveries(doc);
  else body = drawFleet(doc);
  view.replaceChildren(...body);
  // The log of this tab's actions outlives redraws: it sits under the actions when they show.
  (document.getElementById("actions-slot") || document.body).append(actionsLog);
  if (focused) { const el = view.querySelector(`[data-k="${CSS.escape(focused)}"]`); if (el) el.focus(); }
}

// -- fleet -------------------------------------------------------------------------------------

function drawFleet(doc) {
  const out = [h("h2", {}, "Fleet")];
  const l = doc.leader || {};
  out.push(h("p", { class: "muted" }, `This instance: ${l.instance_id || "?"} · leader: ${l.leader_id || "none"}`));
  if (!doc.keyspaces.length) out.push(h("p", {}, "No keyspaces yet."));
  for (const ks of doc.keyspaces) {
    const rows = ks.shards.map((sh) => {
      const rec = sh.recovery || {};
      return h("tr", {},
        h("th", { scope: "row" }, h("a", { href: shardHref(ks.name, sh.name), "data-k": "shard-" + ks.name + "/" + sh.name }, ks.name + "/" + sh.name)),
        h("td", {}, sh.primary || badge("no primary", "bad")),
        h("td", {}, sh.serving ? badge("serving", "ok") : badge("not serving", "bad")),
        h("td", {}, sh.lock ? [badge("locked", "warn"), " ", sh.lock.holder] : h("span", { class: "muted" }, "–")),
        h("td", {}, (rec.problems || []).length ? rec.problems.map((p) => badge(p, "bad")) : badge("none", "ok")),
        h("td", {}, rec.paused ? [badge("paused", "warn"), " ", rec.paused] : badge("active", "ok")),
        h("td", { class: "tablets" }, sh.tablets.map((t) =>
          badge(`${t.alias} ${t.type}${t.healthy === false ? " DOWN" : ""}${t.maintenance ? " maint." : ""}`,
            t.healthy === false ? "bad" : t.type === "primary" ? "info" : ["spare", "drained"].includes(t.type) || t.maintenance ? "warn" : "plain"))));
    });
    out.push(h("section", { class: "card", "aria-label": "keyspace " + ks.name },
      h("h3", {}, `Keyspace ${ks.name} `, badge("durability " + ks.durability, "plain"),
        ks.auto_recovery ? null : badge("auto recovery off", "warn")),
      table(["Shard", "Primary", "Serving", "Lock", "Problems", "Recovery", "Tablets"], rows)));
  }
  if (doc.recoveries.length) {
    out.push(h("h2", {}, "Recent recoveries"), recoveryTable(doc.recoveries, doc.now));
  }
  out.push(...migrationPanels(doc));
  return out;
}

function migrationPanels(doc) {
  const out = [];
  if ((doc.migration_tasks || []).length) {
    out.push(h("h2", {}, "Migration tasks"));
    for (const t of doc.migration_tasks) {
      const rows = t.sources.map((e) => {
        const st = e.sourceStatus || {};
        return (e.subTaskStatus || []).map((sub) => {
          const sync = sub.sync || {}, load = sub.load || {};
          const progress = load.progress && !sync.checkpointGTID ? load.progress
            : sync.synced === undefined ? (load.progress || "–") : sync.synced ? "synced" : "catching up";
          return h("tr", {}, h("td", {}, st.source || "–"), h("td", {}, st.worker || "–"),
            h("td", {}, sub.stage || "–"), h("td", {}, sub.unit || "–"), h("td", {}, progress),
            h("td", {}, sync.secondsBehindMaster !== undefined ? sync.secondsBehindMaster + " s" : "–"),
            h("td", {}, sub.result && sub.result.errors && sub.result.errors.length ? badge("error", "bad") : ""));
        });
      });
      out.push(h("section", { class: "card", "aria-label": "task " + t.name }, h("h3", {}, `Task ${t.name} `, badge(t.status, "plain")),
        table(["Source", "Worker", "Stage", "Unit", "Progress", "Lag", ""], rows)));
    }
  }
  if ((doc.ddl_locks || []).length) {
    out.push(h("h2", {}, "Sharding DDL locks"), table(["ID", "Task", "Mode", "Owner", "DDLs", "Synced", "Unsynced"],
      doc.ddl_locks.map((lk) => h("tr", {}, h("td", { class: "mono" }, lk.ID), h("td", {}, lk.task), h("td", {}, lk.mode || "–"),
        h("td", {}, lk.owner), h("td", { class: "mono" }, (lk.DDLs || []).join("; ")),
        h("td", {}, (lk.synced || []).join(", ")), h("td", {}, (lk.unsynced || []).join(", "))))));
  }
  return out;
}

// -- shard -------------------------------------------------------------------------------------

function drawShard(doc) {
  const key = `${doc.keyspace}/${doc.shard}`;
  if (doc.missing) return [h("h2", {}, "Shard " + key), h("p", { role: "alert" }, "No such shard.")];
  const rec = doc.recovery || {};
  const out = [h("div", { class: "shard-head" },
    h("h2", {}, "Shard " + key),
    doc.primary ? badge("primary " + doc.primary, "info") : badge("no primary", "bad"),
    doc.serving ? badge("serving", "ok") : badge("not serving", "bad"),
    badge("durability " + doc.durability, "plain"),
    doc.lock ? badge("locked by " + doc.lock.holder, "warn") : badge("unlocked", "plain"),
    rec.enabled ? badge("recovery active", "ok") : badge("recovery paused", "warn"))];
  if (!rec.enabled && rec.reason) out.push(h("p", { class: "muted" }, rec.reason));
  if (doc.problems.length) {
    out.push(h("div", { class: "card", role: "alert", "aria-label": "problems" }, h("h3", {}, "Problems"),
      h("ul", { class: "plain" }, doc.problems.map((p) => h("li", {}, badge(p.kind, "bad"), " ", p.tablet || "", " ", p.detail)))));
  }
  out.push(h("h3", {}, "Replication tree"), tree(doc));
  out.push(h("h3", {}, "Tablets"), tabletTable(doc));
  out.push(h("h3", {}, "Actions"), actions(doc), h("div", { id: "actions-slot" }));
  const wf = doc.workflows;
  out.push(h("h3", {}, "Workflows"), ...workflowList(wf.running, wf.history.slice(0, 10)));
  const j = doc.journal || {};
  out.push(h("h3", {}, "Reparent journal", j.primary ? ` (as ${j.primary} has it)` : ""));
  if (j.error) out.push(h("p", { class: "muted" }, "Not readable now: " + j.error));
  out.push(table(["Time", "Action", "Primary", "Position", "Workflow"], (j.entries || []).map((e) =>
    h("tr", {}, h("td", {}, when(e.time_created_ns / 1e9)), h("td", {}, e.action_name),
      h("td", {}, e.primary_alias), h("td", { class: "mono" }, e.replication_position), h("td", { class: "mono" }, e.workflow_id || "–")))));
  out.push(h("h3", {}, "Recoveries of this shard"), recoveryTable(doc.recoveries, doc.now));
  return out;
}

function tabletTable(doc) {
  return table(["Tablet", "Type", "Host:port", "Read-only", "IO", "SQL", "Lag", "GTID position", "Checked", "Problems"],
    doc.tablets.map((t) => h("tr", { "data-alias": t.alias },
      h("th", { scope: "row" }, t.alias, t.is_shard_primary ? [" ", badge("shard primary", "info")] : null),
      h("td", {}, t.type, t.maintenance ? [" ", badge("maintenance", "warn")] : null),
      h("td", { class: "mono" }, t.address),
      h("td", {}, t.healthy === false ? badge("DOWN", "bad") : yesNo(t.read_only, "yes", "no")),
      h("td", {}, yesNo(t.io_running, "running", "stopped")),
      h("td", {}, yesNo(t.sql_running, "running", "stopped")),
      h("td", {}, t.lag_seconds === null || t.lag_seconds === undefined ? "–" : t.lag_seconds + " s"),
      h("td", { class: "mono" }, t.position || "–"),
      h("td", {}, age(doc.now, t.checked_at)),
      h("td", {}, t.error ? badge(t.error.slice(0, 80), "bad") : null, t.problems.map((p) => badge(p.kind, "bad"))))));
}

// The replication tree: each tablet under its source (arrows go source -> replica), drawn as
// SVG by a small tidy layout (leaves left to right, a parent centred over its children).
const NODE_W = 200, NODE_H = 86, GAP_X = 26, GAP_Y = 46;
function tree(doc) {
  const byAlias = new Map(doc.tablets.map((t) => [t.alias, t]));
  const kids = new Map(doc.tablets.map((t) => [t.alias, []]));
  const roots = [];
  for (const t of doc.tablets) {
    if (t.source && t.source !== t.alias && byAlias.has(t.source)) kids.get(t.source).push(t);
    else roots.push(t);
  }
  roots.sort((a, b) => (b.is_shard_primary - a.is_shard_primary) || a.alias.localeCompare(b.alias));
  const pos = new Map(); let leaf = 0; let depthMax = 0;
  const seen = new Set();
  function place(t, depth) {
    if (seen.has(t.alias)) return; seen.add(t.alias);
    depthMax = Math.max(depthMax, depth);
    const cs = kids.get(t.alias).filter((c) => !seen.has(c.alias));
    cs.forEach((c) => place(c, depth + 1));
    const xs = cs.map((c) => pos.get(c.alias)).filter(Boolean).map((p) => p.x);
    const x = xs.length ? (Math.min(...xs) + Math.max(...xs)) / 2 : leaf++ * (NODE_W + GAP_X);
    pos.set(t.alias, { x, y: depth * (NODE_H + GAP_Y) });
  }
  roots.forEach((r) => place(r, 0));
  doc.tablets.forEach((t) => place(t, 0));  // a cycle's members, if any
  const width = Math.max(1, leaf) * (NODE_W + GAP_X) - GAP_X + 8;
  const height = (depthMax + 1) * (NODE_H + GAP_Y) - GAP_Y + 8;
  const svg = s("svg", { class: "tree", viewBox: `-4 -4 ${width} ${height}`, width: "100%", role: "img",
    "aria-label": `Replication tree of ${doc.keyspace}/${doc.shard}: ` + doc.tablets.map((t) =>
      `${t.alias} ${t.type}${t.source ? " replicating from " + t.source : ""}${t.healthy === false ? " down" : ""}`).join("; ") });
  svg.style.maxWidth = width + "px";  // natural size on a wide screen, scaled down on a phone
  svg.append(s("defs", {}, s("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
    s("path", { d: "M0,0 L10,5 L0,10 z" }))));
  for (const t of doc.tablets) {
    if (!t.source || !pos.has(t.source) || t.source === t.alias) continue;
    const a = pos.get(t.source), b = pos.get(t.alias);
    const x1 = a.x + NODE_W / 2, y1 = a.y + NODE_H, x2 = b.x + NODE_W / 2, y2 = b.y - 2;
    const broken = t.io_running === false || t.sql_running === false;
    svg.append(s("path", { class: "edge" + (broken ? " broken" : ""), d: `M${x1},${y1} C${x1},${y1 + GAP_Y / 2} ${x2},${y2 - GAP_Y / 2} ${x2},${y2}`, "marker-end": "url(#arrow)" }));
  }
  for (const t of doc.tablets) {
    const p = pos.get(t.alias);
    const down = t.healthy === false;
    const aside = ["spare", "drained"].includes(t.type) || t.maintenance;
    const cls = down ? "down" : t.is_shard_primary ? "primary" : aside ? "aside" : "";
    const rw = t.read_only ? "read-only" : "writable";
    const line3 = down ? "DOWN: " + (t.error || "unreachable")
      : t.io_running === null || t.io_running === undefined ? rw + " · not replicating"
        : `${rw} · IO ${t.io_running ? "on" : "off"} · SQL ${t.sql_running ? "on" : "off"}`;
    const lag = t.lag_seconds === null || t.lag_seconds === undefined ? "" : `lag ${t.lag_seconds} s · `;
    svg.append(s("g", { class: "node", "data-alias": t.alias, transform: `translate(${p.x},${p.y})` },
      s("title", {}, `${t.alias}: ${t.type}, ${t.address}${t.position ? ", GTID " + t.position : ""}`),
      s("rect", { class: cls, width: NODE_W, height: NODE_H, rx: 6 }),
      s("text", { class: "alias", x: 10, y: 19 }, `${t.alias}  ${t.type.toUpperCase()}${t.maintenance ? " · MAINT." : ""}`),
      s("text", { x: 10, y: 38 }, t.address),
      s("text", { x: 10, y: 56, class: down ? "bad" : null }, line3.length > 30 ? line3.slice(0, 29) + "…" : line3),
      s("text", { x: 10, y: 74 }, lag + "checked " + age(doc.now, t.checked_at))));
  }
  return h("div", { class: "tree-wrap" }, svg);
}

// -- actions (the API's commands, behind a confirmation and the token) -------------------------

function actions(doc) {
  const ks = `${doc.keyspace}/${doc.shard}`;
  const healthy = doc.tablets.filter((t) => !t.is_shard_primary && t.type === "replica" && t.healthy && t.io_running && t.sql_running);
  const sel = h("select", { id: "prs-elect", "data-k": "prs-elect" },
    healthy.map((t) => h("option", { value: t.alias }, `${t.alias} (lag ${t.lag_seconds ?? "?"} s)`)));
  const prev = document.getElementById("prs-elect");
  if (prev && healthy.some((t) => t.alias === prev.value)) sel.value = prev.value;
  const rec = doc.recovery || {};
  const out = h("div", { class: "actions card" },
    h("fieldset", {}, h("legend", {}, "Planned reparent"),
      h("div", {}, h("label", { for: "prs-elect" }, "New primary"), h("br"), sel),
      h("button", { type: "button", id: "prs", "data-k": "prs", disabled: !healthy.length, onclick: () =>
        confirmThen("PlannedReparentShard", `Move the primary of ${ks} from ${doc.primary} to ${sel.value}? Writes pause for the switch.`, [],
          () => ({ keyspace_shard: ks, new_primary: sel.value })) }, "PlannedReparentShard…")),
    h("fieldset", {}, h("legend", {}, "Emergency reparent"),
      h("button", { type: "button", id: "ers", "data-k": "ers", onclick: () =>
        confirmThen("EmergencyReparentShard", `Promote the most advanced replica of ${ks} without the current primary (${doc.primary || "none"})? Use when the primary is dead.`, [],
          () => ({ keyspace_shard: ks })) }, "EmergencyReparentShard…")),
    h("fieldset", {}, h("legend", {}, "Automatic recovery"),
      rec.enabled
        ? h("button", { type: "button", id: "pause", "data-k": "pause", onclick: () =>
          confirmThen("SetRecoveries", `Pause automatic recovery of ${ks}? Problems are still reported.`, [field("reason", "Reason")],
            (f) => ({ scope: ks, disable: true, reason: f.reason })) }, "Pause recoveries…")
        : h("button", { type: "button", id: "resume", "data-k": "resume", disabled: rec.paused_scope === "setting", onclick: () =>
          confirmThen("SetRecoveries", `Resume automatic recovery (${rec.paused_scope} pause)?`, [],
            () => ({ ...(rec.paused_scope === "global" ? {} : { scope: rec.paused_scope === "keyspace" ? doc.keyspace : ks }), enable: true })) }, "Resume recoveries…")),
    h("fieldset", {}, h("legend", {}, "Shard lock"),
      h("button", { type: "button", id: "unlock", "data-k": "unlock", disabled: !doc.lock, onclick: () =>
        confirmThen("UnlockShard", `Break the lock of ${ks} held by ${doc.lock && doc.lock.holder}? Only if the holder is stuck: two workflows could act at once.`,
          [field("reason", "Reason (kept in the audit log)")], (f) => ({ keyspace_shard: ks, force: true, reason: f.reason })) }, "Force unlock…")));
  return out;
}

function field(name, label) { return { name, label }; }

function confirmThen(command, text, fields, body) {
  const dlg = document.getElementById("confirm");
  document.getElementById("confirm-title").textContent = command;
  document.getElementById("confirm-text").textContent = text;
  const box = document.getElementById("confirm-fields");
  box.replaceChildren(...fields.map((f) => [h("label", { for: "f-" + f.name }, f.label), h("input", { id: "f-" + f.name, name: f.name, required: true })]).flat());
  dlg.returnValue = "";
  dlg.onclose = () => {
    if (dlg.returnValue !== "ok") return;
    const values = Object.fromEntries(fields.map((f) => [f.name, document.getElementById("f-" + f.name).value]));
    run(command, body(values));
  };
  dlg.showModal();
}

// Runs a command as the CLI does (bearer token, NDJSON progress) and shows each step as it
// comes, then the result or the refusal.
async function run(command, body) {
  actionsLog.hidden = false;
  const steps = h("ul", { class: "steps" });
  const outcome = h("p", { class: "outcome" }, "running…");
  const item = h("li", { class: "action", "data-command": command },
    h("strong", {}, command), " ", h("span", { class: "muted mono" }, JSON.stringify(body)), steps, outcome);
  document.getElementById("actions-list").prepend(item);
  const headers = { "Content-Type": "application/json", Accept: "application/x-ndjson" };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = "Bearer " + token;
  const done = (cls, text) => { outcome.className = "outcome " + cls; outcome.textContent = text; item.dataset.outcome = cls; };
  let resp;
  try {
    resp = await fetch(`/api/v1/commands/${encodeURIComponent(command)}?stream=1`, { method: "POST", headers, body: JSON.stringify(body) });
  } catch (e) { done("failed", "Not sent: " + e); return; }
  if (!(resp.headers.get("Content-Type") || "").includes("ndjson")) {
    const j = await resp.json().catch(() => ({}));
    const err = j.error || {};
    if (resp.ok) done("succeeded", "Done: " + JSON.stringify(j));
    else done("failed", `Refused (${resp.status} ${err.code || ""}): ${err.message || resp.statusText}` + (resp.status === 401 ? " — paste the API token above." : ""));
    return;
  }
  const reader = resp.body.getReader(); const dec = new TextDecoder(); let buf = "";
  for (;;) {
    const { value, done: end } = await reader.read();
    if (value) buf += dec.decode(value, { stream: true });
    let i;
    while ((i = buf.indexOf("\n")) >= 0) {
      const line = buf.slice(0, i).trim(); buf = buf.slice(i + 1);
      if (!line) continue;
      const msg = JSON.parse(line);
      if (msg.progress) {
        const p = msg.progress;
        if (p.event === "step") {  // a step's end replaces its start
          const li = h("li", {}, `${p.step}: ${p.status}`, p.ms !== undefined ? ` (${ms(p.ms)})` : "", p.detail ? ` — ${p.detail}` : "");
          const last = steps.lastElementChild;
          if (last && last.dataset.step === p.step && last.dataset.status === "running") last.replaceWith(li);
          else steps.append(li);
          li.dataset.step = p.step; li.dataset.status = p.status;
        }
      } else if (msg.result !== undefined) {
        const r = msg.result || {};
        done("succeeded", "Succeeded: " + describeResult(r));
      } else if (msg.error) {
        done("failed", `Failed (${msg.status} ${msg.error.code}): ${msg.error.message}`);
      }
    }
    if (end) break;
  }
  if (!item.dataset.outcome) done("failed", "The stream ended without a result.");
}

function describeResult(r) {
  if (r.summary) return r.summary;
  if (r.recoveries) return `automatic recovery ${r.recoveries} (${r.scope})`;
  if (r.unlocked) return `the lock of ${r.keyspace}/${r.shard} is broken (was held by ${r.holder && r.holder.action})`;
  const text = JSON.stringify(r);
  return text.length > 300 ? text.slice(0, 300) + "…" : text;
}

// -- workflows and recoveries ------------------------------------------------------------------

function workflowList(running, history) {
  const out = [];
  out.push(h("h4", { class: "muted" }, running.length ? "Running" : "Nothing running"));
  for (const w of running) out.push(h("div", { class: "card", "data-workflow": w.id }, h("strong", {}, w.action), ` ${w.keyspace}/${w.shard} `, statusBadge(w.status), ` ${ms(w.duration_ms)}`, stepList(w.steps)));
  out.push(table(["Started", "Action", "Shard", "Status", "Duration", "Writes unavailable", "Result"], history.map((w) =>
    h("tr", { "data-workflow": w.id }, h("td", {}, when(w.created_at)), h("td", {}, w.action),
      h("td", {}, h("a", { href: shardHref(w.keyspace, w.shard) }, `${w.keyspace}/${w.shard}`)),
      h("td", {}, statusBadge(w.status)), h("td", {}, ms(w.duration_ms)),
      h("td", {}, w.unavailable_window_ms !== null && w.unavailable_window_ms !== undefined ? "no primary " + ms(w.unavailable_window_ms) : ms(w.write_unavailable_ms)),
      h("td", {}, w.summary || "")))));
  return out;
}

function stepList(steps) {
  return h("ul", { class: "steps" }, (steps || []).map((st) =>
    h("li", {}, `${st.name}: ${st.status}`, st.finished_at ? ` (${ms((st.finished_at - st.started_at) * 1000)})` : "", st.detail ? ` — ${st.detail}` : "")));
}

function drawWorkflows(doc) {
  const out = [h("h2", {}, "Workflows")];
  out.push(...workflowList(doc.running, doc.history));
  const recent = doc.history.filter((w) => w.steps);
  if (recent.length) out.push(h("h3", {}, "Steps of the latest runs"), ...recent.map((w) => h("div", { class: "card" }, h("strong", {}, w.action), ` ${w.keyspace}/${w.shard} `, statusBadge(w.status), stepList(w.steps))));
  return out;
}

function recoveryTable(entries, now) {
  return table(["Time", "Shard", "Problem", "Tablet", "Action", "Result", "Why"], entries.map((e) =>
    h("tr", { "data-result": e.result }, h("td", {}, when(e.time)), h("td", {}, `${e.keyspace}/${e.shard}`), h("td", {}, badge(e.problem, "bad")),
      h("td", {}, e.tablet || "–"), h("td", {}, e.action), h("td", {}, statusBadge(e.result), e.count > 1 ? ` ×${e.count}` : ""),
      h("td", {}, e.reason || e.detail || ""))), entries.length ? null : "No recoveries.");
}

function drawRecoveries(doc) {
  const out = [h("h2", {}, "Recoveries")];
  if (doc.note) out.push(h("p", { role: "alert" }, doc.note));
  out.push(h("p", { class: "muted" }, `Leader: ${doc.leader_id || "none"}`));
  out.push(h("h3", {}, "Shards"), table(["Shard", "Detected problems", "Recovery", "Last failover", "Anti-flapping left"],
    Object.entries(doc.shards).map(([key, sh]) => h("tr", {}, h("th", { scope: "row" }, key),
      h("td", {}, sh.problems.length ? sh.problems.map((p) => badge(p, "bad")) : badge("none", "ok")),
      h("td", {}, sh.paused ? [badge("paused", "warn"), " ", sh.paused] : badge("active", "ok")),
      h("td", {}, sh.last_failover ? `${when(sh.last_failover.time)} ${sh.last_failover.result}` : "–"),
      h("td", {}, sh.failover_block_left_s ? sh.failover_block_left_s + " s" : "–")))));
  const blocked = doc.recoveries.filter((e) => e.result === "blocked");
  if (blocked.length) out.push(h("h3", {}, "Blocked"), recoveryTable(blocked));
  out.push(h("h3", {}, "What ran"), recoveryTable(doc.recoveries.filter((e) => e.result !== "blocked")));
  return out;
}

// -- the token: pasted by the user, kept for this tab only -------------------------------------

function showToken() {
  const has = !!sessionStorage.getItem(TOKEN_KEY);
  document.getElementById("token-state").textContent = has ? "token set (this tab)" : "no token";
  document.getElementById("token").value = "";
  document.getElementById("token").placeholder = has ? "••••••" : "paste to act";
}

document.addEventListener("DOMContentLoaded", () => {
  actionsLog = document.getElementById("actions-log");
  document.getElementById("token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const v = document.getElementById("token").value.trim();
    if (v) sessionStorage.setItem(TOKEN_KEY, v);
    showToken();
  });
  document.getElementById("token-forget").addEventListener("click", () => { sessionStorage.removeItem(TOKEN_KEY); showToken(); });
  showToken();
  window.addEventListener("hashchange", open);
  open();
});

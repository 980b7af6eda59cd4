// The admin page's script: asks /admin/api/* with the token the viewer pasted, renders what
// comes back, refreshes every two seconds and follows the live trace. Every value from the
// server (connection ids, user ids, group names are chosen by clients) is written with
// textContent, never as HTML.
"use strict";

const KEY = "switchboard.admin.token";
const $ = (id) => document.getElementById(id);
let refreshTimer = null;
let traceAbort = null;

function token() {
  return sessionStorage.getItem(KEY);
}

class Refused extends Error {}

async function api(path) {
  const response = await fetch(path, { headers: { Authorization: `Bearer ${token()}` } });
  if (response.status === 401) {
    const detail = await response.json().catch(() => ({}));
    throw new Refused(detail.message || "refused");
  }
  if (!response.ok) {
    const detail = await response.json().catch(() => ({}));
    throw new Error(detail.message || `HTTP ${response.status}`);
  }
  return response.json();
}

function cell(row, text) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "" : String(text);
  row.appendChild(td);
  return td;
}

function fill(table, rows, render) {
  const body = table.querySelector("tbody");
  body.replaceChildren(...rows.map((item) => {
    const tr = document.createElement("tr");
    render(tr, item);
    return tr;
  }));
}

function hub() {
  return encodeURIComponent($("hub").value.trim() || "chat");
}

// One refresh at a time: a keystroke in the filter during one asks for another after it, so
// an older answer never overwrites a newer one.
let refreshing = false;
let again = false;

async function refresh() {
  if (refreshing) {
    again = true;
    return;
  }
  refreshing = true;
  try {
    await refreshOnce();
  } finally {
    refreshing = false;
    if (again) {
      again = false;
      refresh();
    }
  }
}

async function refreshOnce() {
  try {
    const o = await api("/admin/api/overview");
    $("where").textContent = `gateway ${o.node} (${o.advertise}) · v${o.version}`;
    $("overview").textContent =
      `${o.connectionsHere} connections on this gateway · ` +
      (o.ready === null ? "ready" : o.ready);
    const s = o.store;
    fill($("store"), [
      ["store node", s.node], ["leader", s.leader], ["term", s.term],
      ["last log index", s.lastLogIndex], ["committed", s.committedIndex],
      ["applied", s.appliedIndex], ["snapshot", s.snapshotIndex],
      ["this gateway's view", s.viewAppliedIndex], ["voting", s.voting], ["disk failing", s.diskFailing],
    ], (tr, [k, v]) => { cell(tr, k); cell(tr, v); });
    const addresses = new Map(o.nodes.map((n) => [n.node, n]));
    const rows = [];
    for (const g of o.gateways) {
      const n = addresses.get(g.node) || {};
      const lease = n.leaseLeftMs === undefined ? "" : `${(n.leaseLeftMs / 1000).toFixed(1)} s`;
      if (g.hubs.length === 0) rows.push([g.node, n.address, lease, "", 0, 0, 0]);
      for (const h of g.hubs) rows.push([g.node, n.address, lease, h.hub, h.connections, h.users, h.groups]);
    }
    fill($("gateways"), rows, (tr, r) => r.forEach((v) => cell(tr, v)));

    const connections = await api(`/admin/api/hubs/${hub()}/connections?limit=500`);
    const filter = $("filter").value.trim().toLowerCase();
    const shown = connections.value.filter((c) =>
      !filter || c.connectionId.toLowerCase().includes(filter) || (c.userId || "").toLowerCase().includes(filter));
    fill($("connections"), shown, (tr, c) => {
      tr.className = "clickable";
      tr.dataset.connection = c.connectionId;
      cell(tr, c.connectionId); cell(tr, c.userId); cell(tr, c.node);
      tr.addEventListener("click", () => showConnection(c.connectionId));
    });
    const groups = await api(`/admin/api/hubs/${hub()}/groups?limit=500`);
    const groupsShown = groups.value.filter((g) => !filter || g.group.toLowerCase().includes(filter));
    fill($("groups"), groupsShown, (tr, g) => { cell(tr, g.group); cell(tr, g.connections); });
  } catch (e) {
    if (e instanceof Refused) return logout(`Refused: ${e.message}`);
    $("overview").textContent = `error: ${e.message}`;
  }
}

async function showConnection(id) {
  try {
    const c = await api(`/admin/api/hubs/${hub()}/connections/${encodeURIComponent(id)}`);
    $("connection-detail").textContent =
      `${c.connectionId}: ${c.groups.length ? "in " + c.groups.join(", ") : "in no group"}`;
  } catch (e) {
    $("connection-detail").textContent = `${id}: ${e.message}`;
  }
}

async function lookUpUser(event) {
  event.preventDefault();
  const user = $("user-input").value.trim();
  if (!user) return;
  const out = $("user-result");
  try {
    const u = await api(`/admin/api/hubs/${hub()}/users/${encodeURIComponent(user)}`);
    const lines = [
      `${u.userId}: ${u.connections.length} connection(s) ${u.connections.map((c) => `${c.connectionId}@${c.node}`).join(" ")}`,
      ...u.groups.map((g) => `group ${g.group} until ${new Date(g.expiresAtMs).toISOString()}${g.countsTowardLimit ? "" : " (ttl)"}`),
    ];
    out.replaceChildren(...lines.map((l) => { const p = document.createElement("p"); p.textContent = l; return p; }));
  } catch (e) {
    out.textContent = e.message;
  }
}

function describe(e) {
  switch (e.type) {
    case "rest": return `${e.method} ${e.route} → ${e.status} (${e.ms} ms)`;
    case "message": return `message ${e.hub} → ${e.to}: ${e.target || "(pre-serialized)"} (${e.bytes} bytes)`;
    case "close": return `close ${e.hub} → ${e.to}${e.reason ? ": " + e.reason : ""}`;
    case "connected": return `connected ${e.hub} ${e.connection}${e.user ? " (" + e.user + ")" : ""}`;
    case "disconnected": return `disconnected ${e.hub} ${e.connection}: ${e.reason}`;
    case "untraced": return `not followed: ${e.reason}`;
    default: return JSON.stringify(e);
  }
}

function addTrace(e, kind) {
  const li = document.createElement("li");
  li.className = kind || e.type;
  const time = e.time ? new Date(e.time).toISOString().slice(11, 23) + " " : "";
  const node = e.node === undefined ? "" : `gateway ${e.node}: `;
  li.textContent = time + (kind === "lagged" ? `(${e.missed} events missed)` : node + describe(e));
  const list = $("trace");
  list.prepend(li);
  while (list.children.length > 500) list.lastChild.remove();
}

async function followTrace() {
  traceAbort = new AbortController();
  try {
    const response = await fetch("/admin/api/trace", {
      headers: { Authorization: `Bearer ${token()}` },
      signal: traceAbort.signal,
    });
    if (response.status === 401) return logout("Refused: the token no longer opens the trace");
    if (!response.ok) {
      $("trace-state").textContent = `(unavailable: HTTP ${response.status})`;
      return;
    }
    $("trace-state").textContent = "(live)";
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value.replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let event = "message";
        let data = "";
        for (const line of block.split("\n")) {
          if (line.startsWith("event:")) event = line.slice(6).trim();
          else if (line.startsWith("data:")) data += (data ? "\n" : "") + line.slice(5).trimStart();
        }
        if (!data) continue;
        try {
          addTrace(JSON.parse(data), event === "lagged" ? "lagged" : undefined);
        } catch {
          // Not an event this page knows: skip it, keep following.
        }
      }
    }
    $("trace-state").textContent = "(ended)";
  } catch (e) {
    if (e.name !== "AbortError") $("trace-state").textContent = `(ended: ${e.message})`;
  }
}

async function start() {
  $("login").hidden = true;
  $("app").hidden = false;
  $("logout").hidden = false;
  try {
    const o = await api("/admin/api/overview");
    $("trace").replaceChildren();
    for (const e of o.recent) addTrace(e);
  } catch (e) {
    if (e instanceof Refused) return logout(`Refused: ${e.message}`);
  }
  followTrace();
  await refresh();
  refreshTimer = setInterval(refresh, 2000);
}

function logout(message) {
  sessionStorage.removeItem(KEY);
  if (refreshTimer) clearInterval(refreshTimer);
  if (traceAbort) traceAbort.abort();
  refreshTimer = null;
  $("app").hidden = true;
  $("logout").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message || "";
}

$("login-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const value = $("token").value.trim();
  if (!value) return;
  sessionStorage.setItem(KEY, value);
  $("token").value = "";
  $("login-error").textContent = "";
  start();
});
$("logout").addEventListener("click", () => logout(""));
$("user-form").addEventListener("submit", lookUpUser);
$("filter").addEventListener("input", refresh);
$("hub").addEventListener("change", refresh);

if (token()) start();

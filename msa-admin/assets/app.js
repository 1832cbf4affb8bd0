// msa-admin's pages: one script, no dependencies. Everything shown comes from the
// admin's JSON API and is put on the page as text (never as HTML): span names, log
// lines and health details are written by other processes.
"use strict";

const main = document.getElementById("main");
let timer = null;
let source = null;

// h("td", {class: "num"}, "12") builds an element; strings become text nodes.
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    // Through the CSSOM: the Content-Security-Policy refuses style attributes.
    else if (k === "style") el.style.cssText = v;
    else el.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}
function svg(tag, attrs, ...children) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  for (const c of children.flat()) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}
const badge = (text) => h("span", { class: "badge " + text }, text);
const fixed = (n, d = 1) => (n === null || n === undefined ? "–" : Number(n).toFixed(d));
const ms = (ns) => fixed(ns / 1e6, 1) + " ms";
function uptime(s) {
  if (s === null || s === undefined) return "–";
  if (s < 120) return s + " s";
  if (s < 7200) return Math.floor(s / 60) + " min";
  return Math.floor(s / 3600) + " h";
}
function colour(name) {
  let x = 0;
  for (const c of name) x = (x * 31 + c.charCodeAt(0)) >>> 0;
  return "hsl(" + (x % 360) + ", 60%, 48%)";
}
async function api(path, options) {
  const response = await fetch(path, options);
  if (!response.ok) {
    let reason = response.status + " " + response.statusText;
    try { const body = await response.json(); reason = body.message || body.error || reason; } catch (_) { /* not JSON */ }
    throw new Error(reason);
  }
  return response.status === 204 ? null : response.json();
}
function show(...children) {
  main.replaceChildren(...children);
}
function failed(error) {
  return h("p", { class: "error-text" }, String(error.message || error));
}
function every(ms, fn) {
  fn();
  timer = setInterval(fn, ms);
}

// ---- the estate --------------------------------------------------------------------

function estateTable(services) {
  if (!services.length) return h("p", { class: "muted" }, "No instances yet.");
  return services.map((service) =>
    h("div", { class: "card", "data-service": service.name },
      h("h2", {}, service.name, " ", h("span", { class: "muted" }, "(" + service.instances.length + ")")),
      h("table", {},
        h("tr", {}, ["instance", "address", "zone", "registry", "health", "version", "uptime",
          "req/s", "errors %", "p99 ms", "breakers"].map((t) => h("th", {}, t))),
        service.instances.map((i) =>
          h("tr", { "data-instance": i.service + "/" + i.id, "data-health": i.health },
            h("td", {}, h("a", { href: "/instances/" + encodeURIComponent(i.service) + "/" + encodeURIComponent(i.id) }, i.id)),
            h("td", {}, i.address),
            h("td", {}, i.zone || "–"),
            h("td", {}, i.registryStatus === "-" ? "–" : badge(i.registryStatus)),
            h("td", { title: i.error || "" }, badge(i.health)),
            h("td", {}, i.version || "–"),
            h("td", {}, uptime(i.uptimeSeconds)),
            h("td", { class: "num" }, fixed(i.window.rate)),
            h("td", { class: "num" }, fixed(i.window.errorPct)),
            h("td", { class: "num" }, fixed(i.window.p99Ms)),
            h("td", {}, i.breakersOpen.map(([name, state]) =>
              h("span", { class: "badge " + state, "data-breaker": name, "data-state": state }, name + ": " + state))),
          )))));
}

function estatePage() {
  const body = h("div", { id: "estate" }, h("p", { class: "muted" }, "Connecting…"));
  show(h("h1", {}, "Estate"), body);
  const live = document.getElementById("live");
  source = new EventSource("/api/estate/events");
  source.addEventListener("estate", (event) => {
    live.classList.add("on");
    body.replaceChildren(...[estateTable(JSON.parse(event.data).services)].flat());
  });
  source.onerror = () => live.classList.remove("on");
}

// ---- one instance ------------------------------------------------------------------

function chart(title, points, value, unit) {
  const values = points.map(value).map((v) => (v === null || v === undefined ? 0 : v));
  const max = Math.max(1e-9, ...values);
  const width = 300, height = 100;
  const coords = values.map((v, n) =>
    ((values.length < 2 ? 0 : n / (values.length - 1)) * width).toFixed(1) + "," +
    (height - (v / max) * (height - 6) - 3).toFixed(1)).join(" ");
  const last = values.length ? values[values.length - 1] : null;
  return h("div", { class: "chart" },
    h("div", {}, h("strong", {}, title), " ", h("span", { class: "muted" }, fixed(last, 2) + " " + unit + " (max " + fixed(max, 2) + ")")),
    svg("svg", { viewBox: "0 0 " + width + " " + height, preserveAspectRatio: "none" },
      svg("polyline", { points: coords })));
}

function instancePage(service, id) {
  const base = "/api/instances/" + encodeURIComponent(service) + "/" + encodeURIComponent(id);
  const top = h("div", {});
  const loggers = h("div", { class: "card", id: "loggers" }, h("h2", {}, "Log levels"), h("p", { class: "muted" }, "Loading…"));
  const env = h("div", { class: "card", id: "env" }, h("h2", {}, "Environment"),
    h("button", { onclick: () => loadEnv(base, env) }, "Show (secrets masked)"));
  show(h("h1", {}, service + " / " + id), top, loggers, env);
  every(2000, async () => {
    try {
      const d = await api(base);
      const s = d.summary;
      top.replaceChildren(
        h("div", { class: "card" },
          h("p", {}, "Health ", badge(s.health), " registry ", s.registryStatus === "-" ? "–" : badge(s.registryStatus),
            " · ", s.address, " · zone ", s.zone || "–", " · version ", s.version || "–", " · up ", uptime(s.uptimeSeconds)),
          s.error ? h("p", { class: "error-text" }, s.error) : null),
        h("div", { class: "card charts" },
          chart("Requests", d.history, (p) => p.rate, "req/s"),
          chart("Errors", d.history, (p) => p.errorPct, "%"),
          chart("p99", d.history, (p) => p.p99Ms, "ms"),
          chart("Memory", d.history, (p) => (p.rss || 0) / 1048576, "MiB")),
        h("div", { class: "card", id: "breakers" }, h("h2", {}, "Circuit breakers"),
          Object.keys(d.breakers).length === 0 ? h("p", { class: "muted" }, "None.") :
          h("table", {}, h("tr", {}, ["breaker", "state", "since", "recent transitions"].map((t) => h("th", {}, t))),
            Object.entries(d.breakers).map(([name, b]) =>
              h("tr", { "data-breaker": name, "data-state": b.state },
                h("td", {}, name), h("td", {}, badge(b.state)),
                h("td", {}, new Date(b.sinceMs).toLocaleTimeString()),
                h("td", {}, b.transitions.map((t) => new Date(t.atMs).toLocaleTimeString() + " " + t.from + " → " + t.to).join(", ") || "–"))))),
        h("div", { class: "card" }, h("h2", {}, "Calls to other services"),
          Object.keys(d.calls).length === 0 ? h("p", { class: "muted" }, "None in the last 30 s.") :
          h("table", {}, h("tr", {}, ["target", "req/s", "errors %", "p99 ms"].map((t) => h("th", {}, t))),
            Object.entries(d.calls).map(([target, w]) => h("tr", {}, h("td", {}, target),
              h("td", { class: "num" }, fixed(w.rate)), h("td", { class: "num" }, fixed(w.errorPct)), h("td", { class: "num" }, fixed(w.p99Ms)))))),
        h("div", { class: "card" }, h("h2", {}, "Health details"), h("pre", {}, JSON.stringify(d.health, null, 2))));
    } catch (error) {
      top.replaceChildren(failed(error));
    }
  });
  loadLoggers(base, loggers);
}

async function loadLoggers(base, card) {
  try {
    const doc = await api(base + "/loggers");
    const levels = doc.levels || ["OFF", "ERROR", "WARN", "INFO", "DEBUG", "TRACE"];
    const filter = h("input", { placeholder: "filter loggers", id: "logger-filter" });
    const rows = Object.entries(doc.loggers || {}).map(([name, l]) => {
      const select = h("select", { "data-logger": name },
        h("option", { value: "" }, "(inherit)"),
        levels.map((level) => h("option", { value: level, selected: l.configuredLevel === level ? "selected" : null }, level)));
      const status = h("span", { class: "muted" });
      select.addEventListener("change", async () => {
        status.textContent = "…";
        try {
          await api(base + "/loggers/" + encodeURIComponent(name), {
            method: "POST", headers: { "content-type": "application/json" },
            body: JSON.stringify({ configuredLevel: select.value || null }),
          });
          status.textContent = "set";
          status.setAttribute("data-set", select.value);
        } catch (error) {
          status.textContent = error.message;
        }
      });
      return h("tr", { "data-logger-row": name }, h("td", {}, name), h("td", {}, l.effectiveLevel || "–"), h("td", {}, select, " ", status));
    });
    const table = h("table", {}, h("tr", {}, ["logger", "effective", "configured"].map((t) => h("th", {}, t))), rows);
    filter.addEventListener("input", () => {
      for (const row of rows) row.style.display = row.dataset.loggerRow.includes(filter.value) ? "" : "none";
    });
    // A logger not listed yet (a module path such as shop::payments).
    const name = h("input", { placeholder: "logger (e.g. shop::payments)", id: "new-logger" });
    const level = h("select", { id: "new-logger-level" }, levels.map((l) => h("option", { value: l, selected: l === "DEBUG" ? "selected" : null }, l)));
    const added = h("span", { class: "muted" });
    const add = h("form", { class: "search", onsubmit: async (event) => {
      event.preventDefault();
      try {
        await api(base + "/loggers/" + encodeURIComponent(name.value.trim()), {
          method: "POST", headers: { "content-type": "application/json" },
          body: JSON.stringify({ configuredLevel: level.value }),
        });
        loadLoggers(base, card);
      } catch (error) {
        added.textContent = error.message;
      }
    } }, name, level, h("button", {}, "Set"), added);
    card.replaceChildren(h("h2", {}, "Log levels"), filter, table, add);
  } catch (error) {
    card.replaceChildren(h("h2", {}, "Log levels"), failed(error));
  }
}

async function loadEnv(base, card) {
  try {
    const doc = await api(base + "/env");
    card.replaceChildren(h("h2", {}, "Environment"),
      h("p", {}, "Active profiles: ", (doc.activeProfiles || []).join(", ") || "–"),
      (doc.propertySources || []).map((ps) => h("div", {},
        h("h3", {}, ps.name),
        h("table", {}, Object.entries(ps.properties || {}).map(([k, v]) =>
          h("tr", {}, h("td", {}, k), h("td", {}, typeof v.value === "object" ? JSON.stringify(v.value) : String(v.value))))))));
  } catch (error) {
    card.replaceChildren(h("h2", {}, "Environment"), failed(error));
  }
}

// ---- the service graph -------------------------------------------------------------

function graphPage() {
  const body = h("div", { class: "graph" });
  show(h("h1", {}, "Service graph"), h("p", { class: "muted" },
    "Who calls whom: requests per second, errors and p99 over the last 30 s on each edge, from the callers' client metrics (an idle edge is grey)."), body);
  every(2000, async () => {
    try {
      body.replaceChildren(drawGraph(await api("/api/graph")));
    } catch (error) {
      body.replaceChildren(failed(error));
    }
  });
}

function drawGraph(g) {
  // Columns by longest path from a node nobody calls.
  const depth = {};
  for (const n of g.nodes) depth[n.name] = 0;
  for (let round = 0; round < g.nodes.length; round++) {
    for (const e of g.edges) {
      if (e.from !== e.to && depth[e.to] < depth[e.from] + 1 && depth[e.from] + 1 < g.nodes.length) depth[e.to] = depth[e.from] + 1;
    }
  }
  // Services on an edge first (callers above what they call), services without calls after.
  const linked = new Set(g.edges.flatMap((e) => [e.from, e.to]));
  const nodes = [...g.nodes].sort((a, b) => (linked.has(b.name) - linked.has(a.name)) || a.name.localeCompare(b.name));
  const columns = {};
  for (const n of nodes) (columns[depth[n.name]] = columns[depth[n.name]] || []).push(n);
  const colWidth = 420, rowHeight = 100, boxW = 180, boxH = 46;
  const pos = {};
  let rows = 1;
  for (const [c, nodes] of Object.entries(columns)) {
    nodes.forEach((n, r) => { pos[n.name] = { x: 20 + c * colWidth, y: 20 + r * rowHeight }; });
    rows = Math.max(rows, nodes.length);
  }
  const width = 40 + Object.keys(columns).length * colWidth, height = 40 + rows * rowHeight;
  const root = svg("svg", { viewBox: "0 0 " + width + " " + height, height: height },
    svg("defs", {}, svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: "10", refY: "5", markerWidth: "7", markerHeight: "7", orient: "auto-start-reverse" },
      svg("path", { d: "M 0 0 L 10 5 L 0 10 z", fill: "#64748b" }))));
  for (const e of g.edges) {
    const a = pos[e.from], b = pos[e.to];
    if (!a || !b) continue;
    const x1 = a.x + boxW, y1 = a.y + boxH / 2, x2 = b.x, y2 = b.y + boxH / 2;
    const bad = e.window.errorPct > 1;
    const idle = e.window.rate === 0;
    root.append(svg("g", { "data-edge": e.from + "->" + e.to },
      svg("line", { x1, y1, x2, y2, stroke: bad ? "#b91c1c" : idle ? "#cbd5e1" : "#64748b", "stroke-width": 1.5, "marker-end": "url(#arrow)" }),
      idle ? [] : svg("text", { x: x1 + (x2 - x1) * 0.5, y: y1 + (y2 - y1) * 0.5 - 18, "text-anchor": "middle", fill: bad ? "#b91c1c" : "#334155" },
        svg("tspan", {}, fixed(e.window.rate) + " rps · " + fixed(e.window.errorPct) + "% errors"),
        svg("tspan", { x: x1 + (x2 - x1) * 0.5, dy: "14" }, "p99 " + fixed(e.window.p99Ms, 0) + " ms"))));
  }
  for (const n of g.nodes) {
    const p = pos[n.name];
    const healthy = n.instances === 0 || n.healthy === n.instances;
    root.append(svg("g", { "data-node": n.name },
      svg("rect", { x: p.x, y: p.y, width: boxW, height: boxH, rx: 6, fill: "#fff", stroke: healthy ? "#15803d" : "#b91c1c", "stroke-width": 2 }),
      svg("text", { x: p.x + 10, y: p.y + 19, "font-weight": 600 }, n.name),
      svg("text", { x: p.x + 10, y: p.y + 36, fill: "#6b7280" },
        n.instances ? n.healthy + "/" + n.instances + " up · " + fixed(n.window.rate) + " rps" : "not followed")));
  }
  return root;
}

// ---- routes and config -------------------------------------------------------------

async function configPage() {
  const routes = h("div", { id: "routes" }, h("p", { class: "muted" }, "Loading…"));
  const config = h("div", { id: "config" }, h("p", { class: "muted" }, "Loading…"));
  show(h("h1", {}, "Gateway routes"), routes, h("h1", {}, "Config server"), config);
  try {
    const r = await api("/api/routes");
    routes.replaceChildren(...(r.gateways.length ? r.gateways.map((g) => h("div", { class: "card" },
      h("h2", {}, g.gateway),
      g.error ? failed({ message: g.error }) :
      h("table", {}, h("tr", {}, ["id", "uri", "predicates", "filters", "order"].map((t) => h("th", {}, t))),
        (g.routes || []).map((route) => h("tr", { "data-route": route.route_id || route.id },
          h("td", {}, route.route_id || route.id), h("td", {}, route.uri),
          h("td", {}, JSON.stringify(route.predicates || route.predicate || "")),
          h("td", {}, JSON.stringify(route.filters || [])), h("td", {}, route.order ?? "–")))))) :
      [h("p", { class: "muted" }, "No gateway given (--gateway URL).")]));
  } catch (error) {
    routes.replaceChildren(failed(error));
  }
  try {
    const c = await api("/api/config");
    config.replaceChildren(...(c.servers.length ? c.servers.map((s) => h("div", { class: "card" },
      h("h2", {}, s.server),
      s.repository ? h("p", { class: "muted" }, "repository: " + (s.repository.location || "") + " version " + (s.repository.version || "")) : null,
      h("table", {}, h("tr", {}, ["application", "profiles", "version", "property sources"].map((t) => h("th", {}, t))),
        s.applications.map((a) => h("tr", { "data-application": a.application, "data-version": a.version || null },
          h("td", {}, a.application),
          h("td", {}, (a.profiles || []).join(", ")),
          h("td", {}, a.error ? h("span", { class: "error-text" }, a.error) : (a.version || "–")),
          h("td", {}, (a.propertySources || []).join("\n"))))))) :
      [h("p", { class: "muted" }, "No config server given (--config-server URL).")]));
  } catch (error) {
    config.replaceChildren(failed(error));
  }
}

// ---- traces and logs ---------------------------------------------------------------

function tracesPage() {
  const params = new URLSearchParams(location.search);
  const service = h("input", { name: "service", placeholder: "service", value: params.get("service") || "" });
  const min = h("input", { name: "minDurationMs", placeholder: "min ms", size: 6, value: params.get("minDurationMs") || "" });
  const errors = h("input", { type: "checkbox", name: "error", value: "true", checked: params.get("error") === "true" ? "checked" : null });
  const open = h("input", { name: "trace", placeholder: "trace id", size: 34 });
  const list = h("div", { class: "card", id: "traces" }, h("p", { class: "muted" }, "Loading…"));
  const stats = h("p", { class: "muted", id: "collector" });
  show(h("h1", {}, "Traces"),
    h("div", { class: "card" },
      h("form", { class: "search", method: "get", action: "/traces" }, service, min, h("label", {}, errors, " errors only"), h("button", {}, "Search")),
      h("form", { class: "search", onsubmit: (e) => { e.preventDefault(); location.href = "/traces/" + encodeURIComponent(open.value.trim()); } },
        open, h("button", {}, "Open trace"))),
    list, stats);
  const query = new URLSearchParams();
  for (const k of ["service", "minDurationMs", "error"]) if (params.get(k)) query.set(k, params.get(k));
  every(3000, async () => {
    try {
      const traces = await api("/api/traces?" + query);
      list.replaceChildren(traces.length === 0 ? h("p", { class: "muted" }, "No traces kept match.") :
        h("table", {}, h("tr", {}, ["started", "root", "services", "spans", "duration", ""].map((t) => h("th", {}, t))),
          traces.map((t) => h("tr", { "data-trace": t.traceId },
            h("td", {}, new Date(t.startNs / 1e6).toLocaleTimeString()),
            h("td", {}, h("a", { href: "/traces/" + t.traceId }, t.root)),
            h("td", {}, t.services.map((s) => h("span", {}, h("span", { class: "svc", style: "background:" + colour(s) }), s + " "))),
            h("td", { class: "num" }, t.spans), h("td", { class: "num" }, ms(t.durationNs)),
            h("td", {}, t.error ? badge("error") : "")))));
      const s = await api("/api/collector");
      stats.textContent = "Kept: " + JSON.stringify(s);
    } catch (error) {
      list.replaceChildren(failed(error));
    }
  });
}

function logsTable(logs) {
  if (!logs.length) return h("p", { class: "muted" }, "No log lines kept for this trace.");
  return h("table", { id: "logs" }, h("tr", {}, ["time", "service", "level", "message", "fields"].map((t) => h("th", {}, t))),
    logs.map((l) => h("tr", { "data-log-service": l.service },
      h("td", {}, new Date(l.timeNs / 1e6).toISOString().slice(11, 23)),
      h("td", {}, h("span", { class: "svc", style: "background:" + colour(l.service) }), l.service),
      h("td", {}, badge(l.severity)), h("td", {}, l.body),
      h("td", { class: "muted" }, l.attributes.map(([k, v]) => k + "=" + v).join(" ")))));
}

async function tracePage(traceId) {
  show(h("h1", {}, "Trace ", h("code", {}, traceId)), h("p", { class: "muted" }, "Loading…"));
  try {
    const t = await api("/api/traces/" + encodeURIComponent(traceId));
    const start = Math.min(...t.spans.map((s) => s.startNs));
    const end = Math.max(...t.spans.map((s) => s.startNs + s.durationNs));
    const total = Math.max(1, end - start);
    const services = [...new Set(t.spans.map((s) => s.service))];
    const rows = t.spans.map((s) => h("div", { class: "row", "data-span-service": s.service, title: s.attributes.map(([k, v]) => k + "=" + v).join("\n") },
      h("div", { class: "name", style: "padding-left:" + (s.depth * 14) + "px" },
        h("span", { class: "svc", style: "background:" + colour(s.service) }), s.service + ": " + s.name),
      h("div", { class: "lane" }, h("div", { class: "bar" + (s.error ? " error" : ""),
        style: "left:" + ((s.startNs - start) / total * 100).toFixed(2) + "%;width:" + (s.durationNs / total * 100).toFixed(2) + "%;background:" + colour(s.service) })),
      h("div", { class: "num" }, ms(s.durationNs))));
    show(h("h1", {}, "Trace ", h("code", {}, traceId)),
      h("p", {}, ms(total), " · ", t.spans.length + " spans · ", services.map((s) => h("span", {}, h("span", { class: "svc", style: "background:" + colour(s) }), s + " ")),
        " · ", h("a", { href: "/logs/" + traceId }, "log lines only")),
      h("div", { class: "card waterfall", id: "waterfall" }, rows),
      h("h2", {}, "Log lines of this trace"), h("div", { class: "card" }, logsTable(t.logs)));
  } catch (error) {
    show(h("h1", {}, "Trace ", h("code", {}, traceId)), failed(error));
  }
}

async function logsPage(traceId) {
  show(h("h1", {}, "Log lines of trace ", h("code", {}, traceId)), h("p", { class: "muted" }, "Loading…"));
  try {
    const logs = await api("/api/logs/" + encodeURIComponent(traceId));
    show(h("h1", {}, "Log lines of trace ", h("code", {}, traceId)),
      h("p", {}, h("a", { href: "/traces/" + traceId }, "the trace's waterfall")),
      h("div", { class: "card" }, logsTable(logs)));
  } catch (error) {
    show(h("h1", {}, "Log lines of trace ", h("code", {}, traceId)), failed(error));
  }
}

// ---- routing -----------------------------------------------------------------------

function route() {
  const path = location.pathname.split("/").filter(Boolean).map(decodeURIComponent);
  const section = path[0] === "instances" ? "estate" : path[0] === "logs" ? "traces" : path[0] || "estate";
  for (const a of document.querySelectorAll("header nav a")) a.classList.toggle("active", a.dataset.nav === section);
  if (path.length === 0) return estatePage();
  if (path[0] === "instances" && path.length === 3) return instancePage(path[1], path[2]);
  if (path[0] === "graph") return graphPage();
  if (path[0] === "config") return configPage();
  if (path[0] === "traces" && path.length === 1) return tracesPage();
  if (path[0] === "traces") return tracePage(path[1]);
  if (path[0] === "logs") return logsPage(path[1]);
  show(h("p", {}, "No such page."));
}
route();

// The Helix Build dashboard: plain JavaScript over the /v1 API, no
// framework and nothing fetched from elsewhere. Every value from the API
// reaches the page as text (textContent), never as markup.
"use strict";

const TOKEN_KEY = "helix-token";
const main = () => document.getElementById("main");
const ENDED = ["succeeded", "failed", "cancelled", "timed_out", "expired"];

// --- Small DOM helpers -----------------------------------------------

/** An element with attributes and children (strings become text). */
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === false || value === null || value === undefined) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "text") node.textContent = value;
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function show(...nodes) {
  const m = main();
  m.replaceChildren(...nodes);
}

function stateBadge(state) {
  return el("span", { class: `state state-${state}`, "data-state": state, text: state.replace("_", " ") });
}

function when(ts) {
  if (!ts) return "";
  const d = new Date(ts);
  return d.toLocaleString(undefined, { dateStyle: "short", timeStyle: "medium" });
}

function duration(job) {
  const start = job.started_at ? new Date(job.started_at) : null;
  if (!start) return "";
  const end = job.completed_at ? new Date(job.completed_at) : new Date();
  const s = Math.max(0, Math.round((end - start) / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
}

// --- The API ------------------------------------------------------------

class Unauthorized extends Error {}

class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error && body.error.message) || `HTTP ${status}`);
    this.status = status;
    this.code = body && body.error && body.error.code;
    this.field = body && body.error && body.error.field;
  }
}

function headers(extra) {
  const h = Object.assign({}, extra);
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) h.Authorization = `Bearer ${token}`;
  return h;
}

async function api(path, options) {
  const opts = Object.assign({}, options);
  opts.headers = headers(opts.headers);
  const response = await fetch(path, opts);
  if (response.status === 401) throw new Unauthorized();
  const text = await response.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch (_) { body = null; }
  if (!response.ok) throw new ApiError(response.status, body);
  return body;
}

// --- Sign-in ------------------------------------------------------------

function signIn(retry) {
  const input = el("input", { id: "token", type: "password", name: "token", autocomplete: "current-password", required: true });
  const problem = el("p", { class: "error", role: "alert" });
  const form = el("form", { class: "form signin", "aria-labelledby": "signin-title" },
    el("h1", { id: "signin-title", text: "Sign in" }),
    el("p", { class: "muted", text: "This server needs its API token. It is kept for this browser tab only." }),
    el("label", { for: "token" }, "API token", input),
    problem,
    el("button", { type: "submit", class: "primary", text: "Sign in" }));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, input.value);
    try {
      await api("/v1/builders");
      document.getElementById("sign-out").hidden = false;
      retry();
    } catch (e) {
      sessionStorage.removeItem(TOKEN_KEY);
      problem.textContent = e instanceof Unauthorized ? "That token is not this server's." : e.message;
      input.focus();
    }
  });
  show(form);
  input.focus();
}

// --- Router ---------------------------------------------------------------

let leave = null; // stops what the current page runs (polling, log streams)

function route() {
  if (leave) { leave(); leave = null; }
  const hash = location.hash.replace(/^#/, "") || "/jobs";
  const [path, query] = hash.split("?");
  const params = new URLSearchParams(query || "");
  const parts = path.split("/").filter(Boolean);
  for (const link of document.querySelectorAll("[data-nav]")) {
    if (link.dataset.nav === parts[0]) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  document.getElementById("sign-out").hidden = !sessionStorage.getItem(TOKEN_KEY);
  const page = parts[0] === "jobs" && parts[1] ? () => jobPage(decodeURIComponent(parts[1]))
    : parts[0] === "builders" ? buildersPage
    : parts[0] === "submit" ? submitPage
    : () => jobsPage(params);
  Promise.resolve(page()).catch(failed);
}

function failed(e) {
  if (e instanceof Unauthorized) return signIn(route);
  show(el("p", { class: "error", role: "alert", text: e.message }));
}

// --- Jobs -----------------------------------------------------------------

let builderNames = null;

async function builders() {
  if (!builderNames) builderNames = (await api("/v1/builders")).map((b) => b.name);
  return builderNames;
}

async function jobsPage(params) {
  document.title = "Jobs · Helix Build";
  const filters = {
    state: params.get("state") || "",
    builder: params.get("builder") || "",
    q: params.get("q") || "",
  };
  const cursors = [params.get("cursor") || ""];
  const stateSelect = el("select", { id: "filter-state", name: "state" },
    el("option", { value: "", text: "any" }),
    ["queued", "running", ...ENDED].map((s) => el("option", { value: s, selected: s === filters.state, text: s.replace("_", " ") })));
  const builderSelect = el("select", { id: "filter-builder", name: "builder" }, el("option", { value: "", text: "any" }));
  const text = el("input", { id: "filter-text", name: "q", type: "search", value: filters.q, placeholder: "id, repository or image" });
  const body = el("tbody");
  const status = el("p", { class: "muted", role: "status", "aria-live": "polite" });
  const older = el("button", { type: "button", id: "older", text: "Older →" });
  const newer = el("button", { type: "button", id: "newer", text: "← Newer" });
  const form = el("form", { class: "filters", role: "search" },
    el("label", { for: "filter-state" }, "State", stateSelect),
    el("label", { for: "filter-builder" }, "Builder", builderSelect),
    el("label", { for: "filter-text" }, "Search", text),
    el("button", { type: "submit", text: "Filter" }));
  show(el("h1", { text: "Jobs" }), form,
    el("table", { class: "jobs" },
      el("thead", {}, el("tr", {}, ["State", "Job", "Builder", "Source", "Image or error", "Created", "Duration"].map((h) => el("th", { scope: "col", text: h })))),
      body),
    el("div", { class: "pager" }, newer, older, status));

  builders().then((names) => {
    for (const name of names) builderSelect.append(el("option", { value: name, selected: name === filters.builder, text: name }));
  }).catch(() => {});

  const apply = (event) => {
    event && event.preventDefault();
    const q = new URLSearchParams();
    if (stateSelect.value) q.set("state", stateSelect.value);
    if (builderSelect.value) q.set("builder", builderSelect.value);
    if (text.value) q.set("q", text.value);
    location.hash = `#/jobs?${q}`;
  };
  form.addEventListener("submit", apply);
  stateSelect.addEventListener("change", apply);
  builderSelect.addEventListener("change", apply);

  let next = null;
  const load = async () => {
    const q = new URLSearchParams({ limit: "25" });
    for (const [k, v] of Object.entries(filters)) if (v) q.set(k, v);
    const cursor = cursors[cursors.length - 1];
    if (cursor) q.set("cursor", cursor);
    const page = await api(`/v1/jobs?${q}`);
    next = page.next_cursor;
    body.replaceChildren(...page.jobs.map(jobRow));
    if (!page.jobs.length) body.append(el("tr", {}, el("td", { colspan: 7, class: "muted", text: "No jobs." })));
    older.disabled = !next;
    newer.disabled = cursors.length === 1;
    status.textContent = `Updated ${new Date().toLocaleTimeString()}`;
  };
  older.addEventListener("click", () => { if (next) { cursors.push(next); load().catch(failed); } });
  newer.addEventListener("click", () => { if (cursors.length > 1) { cursors.pop(); load().catch(failed); } });
  await load();
  // Updates without reloading; stops when the page is left.
  const timer = setInterval(() => load().catch(() => {}), 2000);
  leave = () => clearInterval(timer);
}

function jobRow(job) {
  const source = `${job.repo_url}@${job.ref}`;
  const result = job.error
    ? el("span", { class: "error", text: job.error })
    : el("code", { text: job.image_tag || "" });
  return el("tr", { "data-job": job.id },
    el("td", { "data-label": "State" }, stateBadge(job.state)),
    el("td", { "data-label": "Job", class: "wrap" }, el("a", { href: `#/jobs/${encodeURIComponent(job.id)}`, text: job.id })),
    el("td", { "data-label": "Builder", text: job.builder }),
    el("td", { "data-label": "Source", class: "wrap", text: source }),
    el("td", { "data-label": "Image or error", class: "wrap" }, result),
    el("td", { "data-label": "Created", text: when(job.created_at) }),
    el("td", { "data-label": "Duration", text: duration(job) }));
}

/** Whose fault a failed job's error says it is. */
function fault(error) {
  const causes = [
    ["build error:", "Your build failed: a step of the Dockerfile or the build tool failed. Read the log."],
    ["invalid job:", "The job cannot be built as given: fix the field or the Dockerfile line the error names."],
    ["source error:", "The repository or ref could not be fetched."],
    ["registry error:", "The registry refused or could not be reached (retried while attempts were left)."],
    ["denied:", "The builder asked for something its grants do not allow."],
    ["plugin fault:", "The builder plugin crashed or reported something invalid."],
    ["limit exceeded:", "The build went over a resource limit."],
    ["timed out:", "The job ran longer than its builder's limit."],
    ["expired:", "The job waited in the queue longer than its queue TTL."],
    ["host error:", "The build host failed; tell the operator."],
    ["cancelled", "The job was cancelled."],
  ];
  const found = causes.find(([prefix]) => error.startsWith(prefix));
  return found ? found[1] : "The job did not succeed.";
}

async function jobPage(id) {
  document.title = `${id} · Helix Build`;
  let job = await api(`/v1/jobs/${encodeURIComponent(id)}`);
  const title = el("h1", {}, el("span", { text: `Job ${job.id}` }), stateBadge(job.state));
  const cancel = el("button", { type: "button", class: "danger", id: "cancel", text: "Cancel job" });
  const fields = el("dl", { class: "fields" });
  const faultBox = el("div");
  const render = () => {
    title.replaceChildren(el("span", { text: `Job ${job.id}` }), stateBadge(job.state));
    cancel.hidden = ENDED.includes(job.state);
    const rows = [
      ["Builder", job.builder],
      ["Repository", job.repo_url],
      ["Ref", job.ref],
      ["Dockerfile", `${job.context || "."}/${job.dockerfile_path}${job.target ? ` (target ${job.target})` : ""}`],
      ["Image", job.image_tag || job.image || "—"],
      ["Digest", job.digest || "—"],
      ["Attempts", String(job.attempts)],
      ["Created", when(job.created_at)],
      ["Started", when(job.started_at) || "—"],
      ["Ended", when(job.completed_at) || "—"],
      ["Duration", duration(job) || "—"],
    ];
    if (job.group) rows.push(["Group", job.group]);
    const platforms = Object.entries(job.manifest || {});
    fields.replaceChildren(
      ...rows.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]),
      el("dt", { text: "Platforms" }),
      el("dd", {}, platforms.length
        ? el("ul", {}, platforms.map(([p, d]) => el("li", {}, `${p} `, el("code", { text: d }))))
        : (job.platforms || []).join(", ")));
    faultBox.replaceChildren();
    if (job.error) {
      faultBox.append(el("div", { class: "fault", role: "note" },
        el("strong", { text: fault(job.error) }), el("span", { id: "job-error", text: job.error })));
    }
  };
  cancel.addEventListener("click", async () => {
    cancel.disabled = true;
    try { job = await api(`/v1/jobs/${encodeURIComponent(id)}/cancel`, { method: "POST" }); render(); }
    catch (e) { faultBox.append(el("p", { class: "error", role: "alert", text: e.message })); }
    cancel.disabled = false;
  });

  const log = el("pre", { class: "log", id: "log", tabindex: "0", role: "log", "aria-label": "Job log" });
  const following = el("span", { class: "muted", id: "following", role: "status" });
  const stamps = el("input", { type: "checkbox", id: "timestamps" });
  const extras = el("div");
  const audit = el("button", { type: "button", id: "show-audit", text: "Audit trail" });
  const provenance = el("button", { type: "button", id: "show-provenance", text: "Provenance" });
  show(title, el("p", {}, cancel), faultBox, fields,
    el("h2", { text: "Log" }),
    el("div", { class: "logbar" },
      el("label", { for: "timestamps" }, stamps, " Timestamps"),
      following, audit, provenance),
    log, extras);
  render();

  let stream = null;
  const follow = () => {
    if (stream) stream.abort();
    stream = new AbortController();
    log.replaceChildren();
    logStream(id, stamps.checked, log, following, stream.signal, (state) => {
      job.state = state; render();
    }, (ended) => { if (ended) { job = ended; render(); } }).catch((e) => {
      if (e.name !== "AbortError") following.textContent = `Log stream ended: ${e.message}`;
    });
  };
  stamps.addEventListener("change", follow);
  audit.addEventListener("click", () => showAudit(id, extras).catch(failed));
  provenance.addEventListener("click", () => showProvenance(id, extras).catch(failed));
  follow();
  const timer = setInterval(() => { if (!ENDED.includes(job.state)) render(); }, 1000);
  leave = () => { clearInterval(timer); if (stream) stream.abort(); };
}

/**
 * Follows the job's log over server-sent events (read with fetch, so the
 * token goes in a header, never in the URL): lines are appended in batches
 * per frame; the view follows while scrolled to the bottom and stops
 * following when scrolled up.
 */
async function logStream(id, timestamps, log, following, signal, onState, onEnd) {
  const response = await fetch(`/v1/jobs/${encodeURIComponent(id)}/logs?follow=true&timestamps=${timestamps}`,
    { headers: headers({ Accept: "text/event-stream" }), signal });
  if (response.status === 401) throw new Unauthorized();
  if (!response.ok) throw new Error(`HTTP ${response.status}`);
  const atBottom = () => log.scrollTop + log.clientHeight >= log.scrollHeight - 8;
  let stick = true;
  const status = () => { following.textContent = stick ? "Following the log" : "Paused: scroll to the bottom to follow"; };
  log.addEventListener("scroll", () => { stick = atBottom(); status(); });
  status();
  let pending = [];
  let scheduled = false;
  const flush = () => {
    scheduled = false;
    const fragment = document.createDocumentFragment();
    for (const line of pending) appendAnsi(fragment, line);
    pending = [];
    log.append(fragment);
    log.dataset.lines = String(Number(log.dataset.lines || 0) + fragment.childElementCount);
    if (stick) log.scrollTop = log.scrollHeight;
  };
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let event = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(line.startsWith("data: ") ? 6 : 5));
      }
      const text = data.join("\n");
      if (event === "log") {
        pending.push(text);
        if (!scheduled) { scheduled = true; requestAnimationFrame(flush); }
      } else if (event === "state") onState(text);
      else if (event === "end") {
        if (pending.length) flush();
        let ended = null;
        try { ended = JSON.parse(text); } catch (_) { ended = null; }
        onEnd(ended);
        log.dataset.ended = "true";
        following.textContent = "The job ended";
      }
    }
  }
}

const SGR = /\x1b\[([0-9;]*)m/g;

/** Appends `line` to `parent` as one line element, with its ANSI colours. */
function appendAnsi(parent, line) {
  const row = document.createElement("div");
  // Other escape sequences (cursor moves, titles) are dropped.
  const clean = line.replace(/\x1b\[[0-9;?]*[A-Za-ln-z]/g, "").replace(/\x1b\][^\x07]*\x07/g, "");
  if (!clean.includes("\x1b[")) {
    row.textContent = clean;
    parent.append(row);
    return;
  }
  let classes = [];
  let last = 0;
  const push = (text) => {
    if (!text) return;
    if (!classes.length) { row.append(text); return; }
    const span = document.createElement("span");
    span.className = classes.join(" ");
    span.textContent = text;
    row.append(span);
  };
  for (const match of clean.matchAll(SGR)) {
    push(clean.slice(last, match.index));
    last = match.index + match[0].length;
    for (const code of (match[1] || "0").split(";").map(Number)) {
      if (code === 0) classes = [];
      else if (code === 1) classes.push("ansi-bold");
      else if (code >= 30 && code <= 37) classes = classes.filter((c) => !c.startsWith("fg-")).concat(`fg-${code}`);
      else if (code >= 90 && code <= 97) classes = classes.filter((c) => !c.startsWith("fg-")).concat(`fg-${code - 60}`, "ansi-bold");
      else if (code >= 40 && code <= 47) classes = classes.filter((c) => !c.startsWith("bg-")).concat(`bg-${code}`);
      else if (code === 39) classes = classes.filter((c) => !c.startsWith("fg-"));
      else if (code === 49) classes = classes.filter((c) => !c.startsWith("bg-"));
    }
  }
  push(clean.slice(last));
  parent.append(row);
}

async function showAudit(id, into) {
  const audit = await api(`/v1/jobs/${encodeURIComponent(id)}/audit`);
  const rows = audit.entries.map((c) => el("tr", {},
    el("td", { text: String(c.attempt) }),
    el("td", { text: when(c.started_at) }),
    el("td", { text: `${c.duration_ms} ms` }),
    el("td", {}, c.allowed ? "allowed" : el("strong", { class: "error", text: "DENIED" })),
    el("td", { class: "wrap" }, el("code", { text: [c.program, ...c.args].join(" ") })),
    el("td", { class: "wrap", text: c.exit_code !== undefined && c.exit_code !== null ? `exit ${c.exit_code}` : (c.error || "") })));
  into.replaceChildren(el("h2", { id: "audit", text: "Audit trail" }),
    rows.length ? el("table", {},
      el("thead", {}, el("tr", {}, ["Run", "Started", "Took", "Grants", "Command", "Result"].map((h) => el("th", { scope: "col", text: h })))),
      el("tbody", {}, rows))
      : el("p", { class: "muted", text: "The builder ran no program (yet: a run's calls appear when it ends)." }),
    audit.dropped ? el("p", { class: "muted", text: `${audit.dropped} more calls were not kept.` }) : null);
}

async function showProvenance(id, into) {
  let content;
  try {
    const attestation = await api(`/v1/jobs/${encodeURIComponent(id)}/provenance`);
    content = [
      el("p", {}, "Attached as ", el("code", { text: attestation.reference }), `, signed by key ${attestation.key_id}.`),
      el("pre", { class: "log", text: JSON.stringify(attestation.statement, null, 2) }),
    ];
  } catch (e) {
    if (!(e instanceof ApiError)) throw e;
    content = [el("p", { class: "muted", text: e.message })];
  }
  into.replaceChildren(el("h2", { id: "provenance", text: "Provenance" }), ...content);
}

// --- Builders ---------------------------------------------------------------

async function buildersPage() {
  document.title = "Builders · Helix Build";
  const list = await api("/v1/builders");
  show(el("h1", { text: "Builders" }), el("div", { class: "cards" }, list.map((b) => {
    const limits = b.build_limits || {};
    return el("section", { class: "card", "aria-labelledby": `builder-${b.name}` },
      el("h2", { id: `builder-${b.name}`, text: b.name }),
      el("p", { class: "muted", text: `${b.description} (${b.plugin_name} ${b.version})` }),
      el("dl", { class: "fields" },
        el("dt", { text: "Component" }), el("dd", {}, el("code", { text: b.component_digest })),
        el("dt", { text: "Kind" }), el("dd", { text: b.simulated ? "simulated (builds nothing)" : "real" }),
        el("dt", { text: "Platforms" }), el("dd", { text: b.platforms ? b.platforms.join(", ") : "any" }),
        el("dt", { text: "Network" }), el("dd", { text: b.network || "—" }),
        el("dt", { text: "Limits" }), el("dd", { text: [
          `memory ${Math.round(b.limits.memory_bytes / 1048576)} MiB`, `timeout ${b.limits.timeout_secs}s`,
          limits.memory_mib ? `build memory ${limits.memory_mib} MiB` : null,
          limits.pids ? `${limits.pids} processes` : null,
          limits.disk_mib ? `disk ${limits.disk_mib} MiB` : null].filter(Boolean).join(", ") })),
      el("h2", { text: "Grants" }),
      (b.grants.programs || []).length
        ? el("ul", {}, b.grants.programs.map((p) => el("li", {}, el("code", { text: [p.command, ...p.args].join(" ") }))))
        : el("p", { class: "muted", text: "No programs." }));
  })));
}

// --- Submit -------------------------------------------------------------------

async function submitPage() {
  document.title = "Submit · Helix Build";
  const names = await builders();
  const field = (name, label, input, hint) => {
    input.id = `f-${name}`;
    input.name = name;
    const error = el("span", { class: "field-error", id: `f-${name}-error`, role: "alert" });
    input.setAttribute("aria-describedby", `f-${name}-error`);
    return el("label", { for: input.id }, label, input, hint ? el("span", { class: "muted", text: hint }) : null, error);
  };
  const inputs = {
    repo_url: el("input", { type: "text", required: true, placeholder: "https://git.example/team/app.git" }),
    ref: el("input", { type: "text", placeholder: "main" }),
    dockerfile_path: el("input", { type: "text", placeholder: "Dockerfile" }),
    context: el("input", { type: "text", placeholder: "." }),
    build_args: el("textarea", { rows: 3, placeholder: "KEY=value, one per line" }),
    platforms: el("input", { type: "text", placeholder: "linux/amd64, linux/arm64" }),
    builder: el("select", {}, el("option", { value: "", text: "(the server's default)" }), names.map((n) => el("option", { value: n, text: n }))),
    image: el("input", { type: "text", placeholder: "registry.example/team/app:tag" }),
  };
  const problem = el("p", { class: "error", role: "alert", id: "submit-error" });
  const form = el("form", { class: "form", novalidate: true, "aria-labelledby": "submit-title" },
    field("repo_url", "Repository URL", inputs.repo_url),
    field("ref", "Ref", inputs.ref, "branch, tag or commit"),
    field("dockerfile_path", "Dockerfile", inputs.dockerfile_path),
    field("context", "Context", inputs.context),
    field("build_args", "Build args", inputs.build_args),
    field("platforms", "Platforms", inputs.platforms, "comma-separated"),
    field("builder", "Builder", inputs.builder),
    field("image", "Image", inputs.image),
    problem,
    el("button", { type: "submit", class: "primary", text: "Submit build" }));
  show(el("h1", { id: "submit-title", text: "Submit a build" }), form);
  inputs.repo_url.focus();
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    for (const [name, input] of Object.entries(inputs)) {
      input.removeAttribute("aria-invalid");
      document.getElementById(`f-${name}-error`).textContent = "";
    }
    problem.textContent = "";
    const request = { repo_url: inputs.repo_url.value.trim() };
    const optional = { ref: inputs.ref, dockerfile_path: inputs.dockerfile_path, context: inputs.context, builder: inputs.builder, image: inputs.image };
    for (const [name, input] of Object.entries(optional)) if (input.value.trim()) request[name] = input.value.trim();
    const args = inputs.build_args.value.split("\n").map((l) => l.trim()).filter(Boolean);
    if (args.length) request.build_args = Object.fromEntries(args.map((l) => { const i = l.indexOf("="); return i < 0 ? [l, ""] : [l.slice(0, i), l.slice(i + 1)]; }));
    const platforms = inputs.platforms.value.split(",").map((p) => p.trim()).filter(Boolean);
    if (platforms.length) request.platforms = platforms;
    try {
      const job = await api("/v1/jobs", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(request) });
      location.hash = `#/jobs/${encodeURIComponent(job.id)}`;
    } catch (e) {
      if (e instanceof Unauthorized) return signIn(submitPage);
      const at = e.field && inputs[e.field.split(/[.[]/)[0]];
      if (at) {
        at.setAttribute("aria-invalid", "true");
        document.getElementById(`${at.id}-error`).textContent = e.message;
        at.focus();
      } else {
        problem.textContent = e.message;
      }
    }
  });
}

// --- Start ----------------------------------------------------------------------

document.getElementById("sign-out").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  builderNames = null;
  route();
});
window.addEventListener("hashchange", route);
route();

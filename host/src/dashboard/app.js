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

/** "3 min ago" for `ts`, as a <time> with the absolute time on hover. */
function ago(ts) {
  if (!ts) return "";
  const s = Math.max(0, Math.round((Date.now() - new Date(ts)) / 1000));
  const text = s < 45 ? "just now"
    : s < 3600 ? `${Math.max(1, Math.round(s / 60))} min ago`
    : s < 86400 ? `${Math.round(s / 3600)} h ago`
    : `${Math.round(s / 86400)} d ago`;
  return el("time", { datetime: ts, title: when(ts), text });
}

/** A job id as its first 8 characters, the full id on hover, with a copy button. */
function shortId(id, href) {
  const label = id.length > 8 ? id.slice(0, 8) : id;
  const copy = el("button", { type: "button", class: "copy", title: "Copy the full id", "aria-label": `Copy job id ${id}`, text: "copy" });
  copy.addEventListener("click", async () => {
    try { await navigator.clipboard.writeText(id); copy.textContent = "copied"; } catch (_) { copy.textContent = "select the id"; }
    setTimeout(() => { copy.textContent = "copy"; }, 1500);
  });
  return el("span", { class: "id" }, el("a", { href, title: id, "data-id": id, text: label }), copy);
}

/** The branch or tag a ref names (`refs/heads/main` is `main`). */
function branch(ref) {
  return (ref || "").replace(/^refs\/(heads|tags)\//, "");
}

/** How a job came: only when the job says it (webhooks make `hook-…` ids). */
function trigger(job) {
  if (job.trigger) return job.trigger;
  return /^hook-(github|gitea|forgejo|gitlab)-/.test(job.id) ? "webhook" : "";
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
      me = null;
      await whoAmI();
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

/** What the token allows (GET /v1/token), shown in the bar. */
let me = null;

async function whoAmI() {
  if (!me) {
    me = await api("/v1/token");
    const who = document.getElementById("who");
    const scopes = me.scopes.includes("admin") ? "admin: every project" : me.scopes.join(", ");
    who.textContent = me.project ? `Project ${me.project} (${scopes})` : scopes;
    who.hidden = false;
  }
  return me;
}

/** Whether the signed-in token holds `scope` (admin holds all). */
function may(scope) {
  return !me || me.scopes.includes("admin") || me.scopes.includes(scope);
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
  whoAmI().then(page).catch(failed);
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
    project: params.get("project") || "",
  };
  const cursors = [params.get("cursor") || ""];
  const stateSelect = el("select", { id: "filter-state", name: "state" },
    el("option", { value: "", text: "any" }),
    ["queued", "running", ...ENDED].map((s) => el("option", { value: s, selected: s === filters.state, text: s.replace("_", " ") })));
  const builderSelect = el("select", { id: "filter-builder", name: "builder" }, el("option", { value: "", text: "any" }));
  const projectSelect = el("select", { id: "filter-project", name: "project" },
    el("option", { value: "", text: "every project" }),
    me.projects.map((p) => el("option", { value: p, selected: p === filters.project, text: p })));
  const text = el("input", { id: "filter-text", name: "q", type: "search", value: filters.q, placeholder: "id, repository or image" });
  const body = el("tbody");
  const status = el("p", { class: "muted", role: "status", "aria-live": "polite" });
  const older = el("button", { type: "button", id: "older", text: "Older →" });
  const newer = el("button", { type: "button", id: "newer", text: "← Newer" });
  const form = el("form", { class: "filters", role: "search" },
    el("label", { for: "filter-state" }, "State", stateSelect),
    el("label", { for: "filter-builder" }, "Builder", builderSelect),
    me.projects.length ? el("label", { for: "filter-project" }, "Project", projectSelect) : null,
    el("label", { for: "filter-text" }, "Search", text),
    el("button", { type: "submit", text: "Filter" }));
  show(el("h1", { text: "Jobs" }), form,
    el("table", { class: "jobs" },
      el("thead", {}, el("tr", {}, COLUMNS.map((h) => el("th", { scope: "col", text: h })))),
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
    if (projectSelect.value) q.set("project", projectSelect.value);
    if (text.value) q.set("q", text.value);
    location.hash = `#/jobs?${q}`;
  };
  form.addEventListener("submit", apply);
  stateSelect.addEventListener("change", apply);
  builderSelect.addEventListener("change", apply);
  projectSelect.addEventListener("change", apply);

  let next = null;
  const load = async () => {
    const q = new URLSearchParams({ limit: "25" });
    for (const [k, v] of Object.entries(filters)) if (v) q.set(k, v);
    const cursor = cursors[cursors.length - 1];
    if (cursor) q.set("cursor", cursor);
    const page = await api(`/v1/jobs?${q}`);
    next = page.next_cursor;
    body.replaceChildren(...page.jobs.map(jobRow));
    if (!page.jobs.length) body.append(el("tr", {}, el("td", { colspan: COLUMNS.length, class: "muted", text: "No jobs." })));
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

const COLUMNS = ["State", "Job", "Commit", "Branch", "Trigger", "Builder", "Repository", "Image or error", "Created", "Duration"];

function jobRow(job) {
  const result = job.error
    ? el("span", { class: "error", text: job.error })
    : el("code", { text: job.image_tag || "" });
  const cell = (label, attrs, ...children) => el("td", Object.assign({ "data-label": label }, attrs), ...children);
  return el("tr", { "data-job": job.id },
    cell("State", {}, stateBadge(job.state)),
    cell("Job", {}, shortId(job.id, `#/jobs/${encodeURIComponent(job.id)}`)),
    cell("Commit", {}, job.commit ? el("code", { title: job.commit, text: job.commit.slice(0, 8) }) : ""),
    cell("Branch", { class: "wrap", text: branch(job.ref) }),
    cell("Trigger", { text: trigger(job) }),
    cell("Builder", { text: job.builder }),
    cell("Repository", { class: "wrap", text: job.repo_url }),
    cell("Image or error", { class: "wrap" }, result),
    cell("Created", {}, ago(job.created_at)),
    cell("Duration", { text: duration(job) }));
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

// Where the job's time went, as the host measured its last run: each
// phase with its share of the run (queue wait apart, it precedes the run).
function phaseRows(phases) {
  if (!phases.length) return [];
  const run = phases.filter((p) => p.name !== "queue_wait").reduce((sum, p) => sum + p.ms, 0);
  const share = (p) => (p.name === "queue_wait" || !run ? "" : ` (${Math.round((100 * p.ms) / run)}%)`);
  return [el("dt", { text: "Phases" }),
    el("dd", {}, el("ul", { id: "phases" }, phases.map((p) =>
      el("li", {}, el("code", { text: p.name }), ` ${p.ms} ms${share(p)}`))))];
}

/**
 * A job's resource use and why it waits, as the job JSON carries them:
 * each shown only when present, entry by entry under its own name.
 */
function costs(job) {
  const named = (value) => {
    if (value === null || value === undefined) return [];
    if (Array.isArray(value)) return value.map((v) => typeof v === "object" && v
      ? [v.name || "", v.value ?? ""]
      : [String(v), ""]);
    if (typeof value === "object") return Object.entries(value);
    return [[String(value), ""]];
  };
  const text = ([k, v]) => `${String(k).replace(/_/g, " ")}${v === "" ? "" : ` ${typeof v === "object" ? JSON.stringify(v) : v}`}`;
  const out = [];
  for (const [field, label] of [["resources", "Resources"], ["waiting_for", "Waiting for"]]) {
    if (field === "waiting_for" && job.state !== "queued") continue;
    const entries = named(job[field]);
    if (entries.length) out.push(el("dt", { text: label }), el("dd", { id: field }, el("ul", {}, entries.map((e) => el("li", { text: text(e) })))));
  }
  return out;
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
      ["Commit", job.commit || "—"],
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
    if (job.project) rows.push(["Project", job.project]);
    if (trigger(job)) rows.push(["Trigger", trigger(job)]);
    const platforms = Object.entries(job.manifest || {});
    fields.replaceChildren(
      ...rows.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]),
      el("dt", { text: "Platforms" }),
      el("dd", {}, platforms.length
        ? el("ul", {}, platforms.map(([p, d]) => el("li", {}, `${p} `, el("code", { text: d }))))
        : (job.platforms || []).join(", ")),
      ...phaseRows(job.phases || []),
      ...costs(job));
    faultBox.replaceChildren();
    if (job.error) {
      faultBox.append(el("div", { class: "fault", role: "note" },
        el("strong", { text: fault(job.error) }), el("span", { id: "job-error", text: job.error })));
    }
  };
  cancel.hidden = cancel.hidden || !may("jobs:cancel");
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

// --- Start ----------------------------------------------------------------------

document.getElementById("sign-out").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  builderNames = null;
  me = null;
  document.getElementById("who").hidden = true;
  route();
});
window.addEventListener("hashchange", route);
route();

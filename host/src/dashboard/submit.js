// The dashboard's submit form: every field of a job submission, each
// error shown at the field the API names.
"use strict";

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
    target: el("input", { type: "text", placeholder: "a stage name" }),
    labels: el("textarea", { rows: 2, placeholder: "KEY=value, one per line" }),
    no_cache: el("input", { type: "checkbox" }),
    secrets: el("input", { type: "text", placeholder: "npm_token, deploy_key" }),
    priority: el("input", { type: "number", min: -100, max: 100, step: 1, placeholder: "0" }),
    group: el("input", { type: "text", placeholder: "team/app:main" }),
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
    field("target", "Target stage", inputs.target),
    field("labels", "Labels", inputs.labels),
    field("no_cache", "No cache", inputs.no_cache, "build every step again"),
    field("secrets", "Secrets", inputs.secrets, "names the server defines, comma-separated"),
    field("priority", "Priority", inputs.priority, "-100 to 100, higher first"),
    field("group", "Group", inputs.group, "jobs of one group run in order"),
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
    const optional = { ref: inputs.ref, dockerfile_path: inputs.dockerfile_path, context: inputs.context, builder: inputs.builder, image: inputs.image, target: inputs.target, group: inputs.group };
    for (const [name, input] of Object.entries(optional)) if (input.value.trim()) request[name] = input.value.trim();
    for (const name of ["build_args", "labels"]) {
      const pairs = inputs[name].value.split("\n").map((l) => l.trim()).filter(Boolean);
      if (pairs.length) request[name] = Object.fromEntries(pairs.map((l) => { const i = l.indexOf("="); return i < 0 ? [l, ""] : [l.slice(0, i), l.slice(i + 1)]; }));
    }
    for (const name of ["platforms", "secrets"]) {
      const list = inputs[name].value.split(",").map((p) => p.trim()).filter(Boolean);
      if (list.length) request[name] = list;
    }
    if (inputs.no_cache.checked) request.no_cache = true;
    if (inputs.priority.value.trim()) request.priority = Number(inputs.priority.value);
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

// The dashboard's job log: server-sent events read with fetch, lines
// drawn with their ANSI colours (as text, never markup).
"use strict";

/**
 * Follows the job's log over server-sent events (read with fetch, so the
 * token goes in a header, never in the URL): lines are appended in batches
 * per frame; the view follows while scrolled to the bottom and stops
 * following when scrolled up. Once the job has ended the status says
 * so for good: a scroll after the end (the last lines' own) never brings
 * "Following the log" back.
 */
async function logStream(id, timestamps, log, following, signal, onState, onEnd) {
  const response = await fetch(`/v1/jobs/${encodeURIComponent(id)}/logs?follow=true&timestamps=${timestamps}`,
    { headers: headers({ Accept: "text/event-stream" }), signal });
  if (response.status === 401) throw new Unauthorized();
  if (!response.ok) throw new Error(`HTTP ${response.status}`);
  const atBottom = () => log.scrollTop + log.clientHeight >= log.scrollHeight - 8;
  let stick = true;
  let ended = false;
  const status = () => {
    following.textContent = ended ? "The job ended"
      : stick ? "Following the log" : "Paused: scroll to the bottom to follow";
  };
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
        let job = null;
        try { job = JSON.parse(text); } catch (_) { job = null; }
        ended = true;
        onEnd(job);
        log.dataset.ended = "true";
        status();
      }
    }
  }
  if (!ended) following.textContent = "The log stream closed before the job ended; reload to follow again";
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

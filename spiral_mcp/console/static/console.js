// spiral-mcp console: the few behaviours the server-rendered pages need, declared in their HTML
// (data-* attributes), so no page carries a script of its own (CSP: script-src 'self').
//
//   <form data-api="POST /api/v1/keys" data-then="secret">   a change through the admin API
//   <button data-api="DELETE /api/v1/keys/ID" data-confirm="...">
//   data-then: "refresh" (re-read the page's [data-refresh] regions), "secret" (show the created
//   secret once), "task" (follow the task the answer names), "say" (show its message), "reload",
//   "go:<url>" ({field}: that field of the answer, e.g. the created object's id).
//   <button data-copy="#id">                                  copy an element's text
//
// Every change carries the session's CSRF token (X-CSRF-Token, from <meta name="csrf-token">).
"use strict";

(function () {
  const TERMINAL = new Set(["completed", "failed", "cancelled"]);
  const TITLES = { completed: "Sync finished", failed: "Sync failed", cancelled: "Sync cancelled" };

  function csrfToken() {
    const meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.content : "";
  }

  // One call to /api/v1: the envelope's data, or an Error carrying the envelope's message.
  async function api(method, path, body) {
    const init = {
      method,
      credentials: "same-origin",
      headers: { "Accept": "application/json", "X-CSRF-Token": csrfToken() },
    };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (err) {
      throw new Error("the server could not be reached; check the connection and try again");
    }
    let envelope = null;
    try {
      envelope = await response.json();
    } catch (err) {
      // A body that is not JSON: said below with the status.
    }
    if (response.status === 401) {
      window.location.assign("/admin/login?expired=1");
      throw new Error("the session has ended; sign in again");
    }
    if (!envelope || envelope.success !== true) {
      const error = envelope && envelope.error;
      const failure = new Error(error && error.message ? error.message
        : "the server answered " + response.status + " " + response.statusText);
      failure.status = response.status;
      // Seconds to wait before asking again (429, 503): the header, else the envelope's.
      const wait = Number.parseFloat(response.headers.get("Retry-After") || (error && error.retry_after));
      failure.retryAfter = Number.isFinite(wait) && wait > 0 ? wait : 1;
      throw failure;
    }
    return envelope.data;
  }

  // Whether a poll's failure only asks to wait (rate limited): polling goes on after it.
  function isRateLimit(err) {
    return err.status === 429;
  }

  function sleep(ms) {
    return new Promise((resolve) => setTimeout(resolve, ms));
  }

  // A form's fields as the API's JSON: data-kind says how a field is typed ("list": comma
  // separated, "map": comma separated SOURCE=LOCAL pairs, "int", "bool", "json"); empty optional
// fields are left out.
  function formBody(form) {
    const body = {};
    for (const field of form.elements) {
      if (!field.name || field.disabled || field.name === "csrf_token") continue;
      const kind = field.dataset.kind || "";
      if (field.type === "checkbox") {
        if (kind === "bool") body[field.name] = field.checked;
        else if (field.checked) (body[field.name] = body[field.name] || []).push(field.value);
        continue;
      }
      const value = field.value.trim();
      if (value === "") continue;
      const items = value.split(",").map((s) => s.trim()).filter(Boolean);
      if (kind === "list") body[field.name] = items;
      else if (kind === "map") {
        // "ABC, octo/repo=OCTO": each SOURCE=LOCAL pair, a bare one mapping to itself.
        body[field.name] = {};
        for (const item of items) {
          const at = item.lastIndexOf("=");
          if (at < 0) body[field.name][item] = item;
          else body[field.name][item.slice(0, at).trim()] = item.slice(at + 1).trim();
        }
      }
      else if (kind === "int") body[field.name] = Number.parseInt(value, 10);
      else if (kind === "json") body[field.name] = JSON.parse(value);
      else body[field.name] = value;
    }
    return body;
  }

  // Where a failure is said: the element's form or [data-scope], else the page's own box.
  function errorBox(element) {
    const scope = element.closest("[data-scope]") || element.closest("form") || document.body;
    return scope.querySelector(".form-error") || document.querySelector(".form-error[data-page]");
  }

  // "{field}" in a template replaced by that field of an answer.
  function fill(template, data) {
    return template.replace(/\{(\w+)\}/g, (_, name) => String(data[name] ?? ""));
  }

  function say(data, element) {
    const box = document.querySelector("[data-said]");
    if (!box) return;
    box.textContent = element.dataset.say ? fill(element.dataset.say, data) : "Done.";
    box.hidden = false;
  }

  function sayError(element, message) {
    const box = errorBox(element);
    if (box) box.textContent = message;
    else window.alert(message);
  }

  // Re-read this page and put its fresh [data-refresh] regions in place of the old ones.
  async function refresh() {
    const response = await fetch(window.location.href, { credentials: "same-origin" });
    if (response.redirected && new URL(response.url).pathname === "/admin/login") {
      window.location.assign(response.url);  // the session ended (its own key revoked)
      return;
    }
    // Rate limited or failing for a moment: the regions shown stay until the next refresh.
    if (!response.ok) return;
    const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
    for (const region of document.querySelectorAll("[data-refresh]")) {
      const replacement = fresh.getElementById(region.id);
      if (replacement) region.replaceWith(document.importNode(replacement, true));
    }
  }

  function showSecret(data) {
    const panel = document.getElementById("secret-panel");
    if (!panel) return;
    panel.querySelector("[data-secret-value]").textContent = data.secret;
    const name = panel.querySelector("[data-secret-name]");
    if (name) name.textContent = (data.key && data.key.name) || data.name || "";
    // What the server chose for the key (the expiry of the key that made it).
    const note = panel.querySelector("[data-secret-note]");
    if (note) {
      note.textContent = data.note || "";
      note.hidden = !data.note;
    }
    panel.hidden = false;
    panel.scrollIntoView({ block: "nearest" });
  }

  function describe(task) {
    if (task.status_message) return task.status_message;
    return task.status === "working" ? "working…" : task.status;
  }

  // Follow a task (a sync or backfill) until it ends, showing its progress live.
  async function follow(taskId) {
    const panel = document.getElementById("task-panel");
    if (!panel) return;
    const bar = panel.querySelector("progress");
    const status = panel.querySelector("[data-task-status]");
    panel.hidden = false;
    panel.dataset.state = "working";
    const title = panel.querySelector("[data-task-title]");
    if (title) title.textContent = "Sync in progress";
    bar.removeAttribute("value");
    for (let poll = 1; ; poll++) {
      let task;
      try {
        task = await api("GET", "/api/v1/tasks/" + encodeURIComponent(taskId));
      } catch (err) {
        if (isRateLimit(err)) {
          // The sync goes on meanwhile: wait as told, then ask again.
          status.textContent = "waiting: rate limited";
          panel.dataset.state = "waiting";
          await sleep(err.retryAfter * 1000);
          panel.dataset.state = "working";
          continue;
        }
        status.textContent = err.message;
        panel.dataset.state = "failed";
        return;
      }
      if (task.progress_total) {
        bar.max = task.progress_total;
        bar.value = Math.min(task.progress || 0, task.progress_total);
      }
      status.textContent = describe(task);
      if (TERMINAL.has(task.status)) {
        panel.dataset.state = task.status;
        const title = panel.querySelector("[data-task-title]");
        if (title) title.textContent = TITLES[task.status];
        if (task.status === "completed") {
          bar.max = 1;
          bar.value = 1;
        }
        if (task.status === "failed" && task.error && task.error.message) {
          status.textContent = "failed: " + task.error.message;
        }
        await refresh();
        return;
      }
      // The history below shows the running run's pages and items too, every few polls.
      if (poll % 3 === 0) await refresh();
      await sleep(Math.max(300, task.poll_interval_ms || 500));
    }
  }

  async function after(then, data, element) {
    // A form that made what it asked for is emptied for the next one.
    if (element.tagName === "FORM" && then !== "task") element.reset();
    if (!then || then === "refresh") await refresh();
    else if (then === "secret") {
      showSecret(data);
      await refresh();
    } else if (then === "task") await follow(data.task_id || (data.task && data.task.task_id));
    else if (then === "say") say(data, element);
    else if (then === "reload") window.location.reload();
    else if (then.startsWith("go:")) {
      // go:/admin/sources/{instance_id}: a field of the answer in braces.
      const encoded = {};
      for (const [name, value] of Object.entries(data)) encoded[name] = encodeURIComponent(String(value));
      window.location.assign(fill(then.slice(3), encoded));
    }
  }

  async function run(element, body) {
    const [method, path] = element.dataset.api.split(" ");
    if (element.dataset.confirm && !window.confirm(element.dataset.confirm)) return;
    const buttons = element.tagName === "FORM" ? element.querySelectorAll("button") : [element];
    for (const button of buttons) button.disabled = true;
    const box = errorBox(element);
    if (box) box.textContent = "";
    try {
      const data = await api(method, path, body);
      await after(element.dataset.then, data, element);
    } catch (err) {
      sayError(element, err.message);
    } finally {
      for (const button of buttons) button.disabled = false;
    }
  }

  document.addEventListener("submit", (event) => {
    const form = event.target;
    if (!form.matches("form[data-api]")) return;
    event.preventDefault();
    let body;
    try {
      body = formBody(form);
    } catch (err) {
      sayError(form, "a field holds JSON that cannot be read: " + err.message);
      return;
    }
    run(form, body);
  });

  document.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-api]");
    if (button) {
      event.preventDefault();
      run(button, button.dataset.body ? JSON.parse(button.dataset.body) : undefined);
      return;
    }
    const copy = event.target.closest("button[data-copy]");
    if (copy) {
      const source = document.querySelector(copy.dataset.copy);
      const text = source ? source.textContent : "";
      const done = () => {
        copy.textContent = "Copied";
        setTimeout(() => { copy.textContent = "Copy"; }, 2000);
      };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text).then(done, () => selectText(source));
      } else {
        selectText(source);
        done();
      }
    }
  });

  // Where the clipboard cannot be written (plain HTTP on another host): select the text, so
  // Ctrl+C copies it.
  function selectText(element) {
    const range = document.createRange();
    range.selectNodeContents(element);
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    try { document.execCommand("copy"); } catch (err) { /* selected: the user copies */ }
  }

  // A page that opens on a running task (a reload mid-sync) follows it at once.
  document.addEventListener("DOMContentLoaded", () => {
    const panel = document.getElementById("task-panel");
    if (panel && panel.dataset.taskId) follow(panel.dataset.taskId);
  });
})();

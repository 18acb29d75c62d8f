// imagedist dashboard: live updates (server-sent events) and confirmed actions.
// Plain JavaScript, no build step; the pages work without it (minus live updates and actions).
"use strict";

(function () {
  const body = document.body;
  const readOnly = body.dataset.readOnly === "true";
  const csrfMeta = document.querySelector('meta[name="csrf-token"]');
  const csrf = csrfMeta ? csrfMeta.content : "";
  const LABELS = {
    pending: ["pending", "○"], copying: ["copying", "⇢"], copied: ["copied", "◐"],
    imaging: ["creating image", "◑"], done: ["done", "✓"], failed: ["failed", "✗"],
    skipped: ["skipped", "–"],
  };
  const PHASES = ["upload", "tier1", "copies", "images", "gallery"];

  // ---- connection status -------------------------------------------------

  const connection = document.getElementById("connection");
  function setConnection(state, text) {
    if (!connection) return;
    connection.dataset.connection = state;
    connection.textContent = text;
  }

  function listen(url, handlers) {
    const source = new EventSource(url);
    setConnection("connecting", "connecting…");
    source.addEventListener("open", function () { setConnection("live", "live"); });
    source.addEventListener("error", function () {
      // EventSource reconnects by itself, after the server's retry: hint.
      setConnection("lost", "connection lost — reconnecting");
    });
    Object.keys(handlers).forEach(function (name) {
      source.addEventListener(name, function (event) {
        setConnection("live", "live");
        handlers[name](JSON.parse(event.data));
      });
    });
    source.addEventListener("problem", function (event) {
      showResult(JSON.parse(event.data).error, false);
    });
    return source;
  }

  // ---- small DOM helpers ---------------------------------------------------

  function el(tag, attrs, children) {
    const node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "text") node.textContent = attrs[k];
      else if (k.startsWith("data-")) node.setAttribute(k, attrs[k]);
      else node.setAttribute(k, attrs[k]);
    });
    (children || []).forEach(function (c) { node.appendChild(c); });
    return node;
  }

  function setState(node, state) {
    Array.from(node.classList).forEach(function (c) {
      if (c.startsWith("state-")) node.classList.remove(c);
    });
    node.classList.add("state-" + state);
    node.dataset.state = state;
  }

  // ---- jobs page -------------------------------------------------------------

  function jobRow(job) {
    const bars = el("td", { "data-field": "phases", class: "bars" });
    // In the order they run: the event's JSON has its keys sorted.
    PHASES.filter(function (name) { return name in job.phases; }).forEach(function (name) {
      const pct = job.phases[name];
      bars.appendChild(el("span", { class: "bar" }, [
        el("span", { class: "bar-name", text: name }),
        el("progress", { "data-phase": name, max: "100", value: String(pct), "aria-label": name + " " + pct + "%", text: pct + "%" }),
        el("span", { class: "pct", text: pct + "%" }),
      ]));
    });
    const link = el("a", { href: "/jobs/" + encodeURIComponent(job.job), text: job.job });
    const badge = el("span", { class: "state state-" + job.state, "data-state": job.state, text: job.state });
    return el("tr", { "data-job-id": job.job, "data-state": job.state }, [
      el("td", { "data-field": "job" }, [link]),
      el("td", { "data-field": "image", text: job.image_name }),
      el("td", { "data-field": "os", text: job.os_type }),
      el("td", { "data-field": "source", class: "source", text: job.source }),
      el("td", { "data-field": "submitted" }, [el("time", { datetime: job.submitted_at, text: job.submitted_at })]),
      bars,
      el("td", { "data-field": "errors", text: String(job.error_count) }),
      el("td", { "data-field": "state" }, [badge]),
    ]);
  }

  function renderJobs(jobs) {
    const tbody = document.getElementById("jobs-body");
    if (!tbody) return;
    tbody.replaceChildren();
    if (jobs.length === 0) {
      tbody.appendChild(el("tr", { class: "empty" }, [el("td", { colspan: "8", text: "No job." })]));
    }
    jobs.forEach(function (job) { tbody.appendChild(jobRow(job)); });
  }

  // ---- job page --------------------------------------------------------------

  let lastSummary = "";

  function renderStatus(job) {
    const badge = document.getElementById("job-state");
    if (badge) { setState(badge, job.state); badge.textContent = job.state; }
    const errors = document.getElementById("job-errors");
    if (errors) errors.textContent = String(job.error_count);
    Object.keys(job.phases).forEach(function (name) {
      const bar = document.querySelector('#phases progress[data-phase="' + name + '"]');
      const text = document.querySelector('#phases [data-phase-text="' + name + '"]');
      if (bar) { bar.value = job.phases[name]; bar.textContent = job.phases[name] + "%"; }
      if (text) text.textContent = job.phases[name] + "%";
    });
    job.subscriptions.forEach(function (group) {
      const row = document.querySelector('.sub-row[data-subscription="' + CSS.escape(group.subscription) + '"]');
      if (row) {
        row.dataset.finished = group.finished ? "true" : "false";
        const counts = row.querySelector("[data-sub-counts]");
        if (counts) {
          counts.textContent = Object.keys(group.counts).map(function (s) {
            return group.counts[s] + " " + (LABELS[s] ? LABELS[s][0] : s);
          }).join(", ");
        }
      }
      group.targets.forEach(renderCell);
    });
    (job.gallery || []).forEach(function (pub) {
      const box = document.querySelector('[data-publication="' + CSS.escape(pub.key) + '"]');
      if (!box) return;
      pub.regions.forEach(function (r) {
        const cell = box.querySelector('[data-region="' + CSS.escape(r.region) + '"]');
        if (!cell) return;
        setState(cell, r.state);
        cell.querySelector(".label-text").textContent = r.state;
        cell.querySelector(".cell-percent").textContent = r.progress + "%";
        cell.title = r.region + ": " + r.state + (r.error ? " — " + r.error : "");
      });
    });
    // The error log and the timeline read the whole log: fetched again only when they may
    // have changed (the error count or the job's state moved).
    const summary = job.state + "/" + job.error_count;
    if (lastSummary && summary !== lastSummary) refreshDetails(job.job);
    lastSummary = summary;
  }

  function renderCell(t) {
    const cell = document.querySelector('.cell[data-target="' + CSS.escape(t.target) + '"]');
    if (!cell) return;
    setState(cell, t.state);
    cell.querySelector(".icon").textContent = t.icon;
    cell.querySelector(".label-text").textContent = t.label;
    cell.querySelector(".cell-percent").textContent = t.percent === null ? "" : t.percent + "%";
    cell.title = t.target + ": " + t.label + (t.error ? " — " + t.error : "");
    const reason = document.getElementById(cell.getAttribute("aria-describedby"));
    if (reason) reason.textContent = t.error ? (t.failed_phase || "") + " failed: " + t.error : t.label;
  }

  function refreshDetails(jobId) {
    fetch("/api/jobs/" + encodeURIComponent(jobId), { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (job) {
        if (!job) return;
        const log = document.getElementById("error-log");
        if (log) {
          log.replaceChildren();
          if (job.error_log.length === 0) log.appendChild(el("li", { class: "empty", text: "No errors." }));
          job.error_log.forEach(function (r) {
            log.appendChild(el("li", { "data-level": r.level }, [
              el("time", { datetime: r.ts, text: r.ts }), document.createTextNode(" "),
              el("span", { class: "step", text: r.step }), document.createTextNode(" "),
              el("span", { class: "target", text: r.target }), document.createTextNode(" " + r.message),
            ]));
          });
        }
        const timeline = document.querySelector("#timeline tbody");
        if (timeline) {
          timeline.replaceChildren();
          job.timeline.forEach(function (s) {
            timeline.appendChild(el("tr", { "data-step": s.step }, [
              el("td", { text: s.step }),
              el("td", {}, [el("time", { datetime: s.started_at, text: s.started_at })]),
              el("td", {}, [el("time", { datetime: s.ended_at, text: s.ended_at })]),
              el("td", { text: s.seconds + " s" }),
            ]));
          });
        }
      });
  }

  // ---- actions -----------------------------------------------------------------

  const dialog = document.getElementById("confirm-dialog");
  const result = document.getElementById("action-result");

  function showResult(text, ok) {
    if (!result) return;
    result.dataset.outcome = ok ? "ok" : "error";
    result.textContent = text;
  }

  function describe(button) {
    const action = button.dataset.action;
    const jobId = body.dataset.jobId;
    if (action === "retry") {
      const mode = button.dataset.mode;
      const payload = { failed_only: mode !== "all" };
      if (mode === "phase") payload.phase = button.dataset.phase;
      const what = mode === "all" ? "every unfinished target" :
        mode === "failed" ? "the failed targets" : "the failed targets from the " + button.dataset.phase + " phase";
      return { url: "/api/jobs/" + encodeURIComponent(jobId) + "/retry", payload: payload,
        question: "Retry " + what + " of job " + jobId + "?" };
    }
    if (action === "retry-target") {
      const target = button.dataset.target;
      return { url: "/api/jobs/" + encodeURIComponent(jobId) + "/retry", payload: { targets: [target] },
        question: "Retry target " + target + " (" + button.dataset.state + ") of job " + jobId + "?" };
    }
    if (action === "cleanup") {
      const force = button.dataset.force === "true";
      return { url: "/api/jobs/" + encodeURIComponent(jobId) + "/cleanup", payload: { force: force },
        question: force ? "Delete job " + jobId + "'s blobs even though targets are unfinished? They fail, and a retry copies them again."
          : "Delete job " + jobId + "'s intermediate blobs now? Images are kept." };
    }
    if (action === "enable" || action === "disable") {
      const payload = {};
      payload[button.dataset.kind] = [button.dataset.value];
      const noun = { names: "target", regions: "every target in region", subscriptions: "every target in subscription" }[button.dataset.kind];
      return { url: "/api/targets/" + action, payload: payload,
        question: action[0].toUpperCase() + action.slice(1) + " " + noun + " " + button.dataset.value + " for running and future jobs?" };
    }
    return null;
  }

  function summarize(action, data) {
    if (data.retried) return data.retried.length + " targets put back to work" + (data.retried.length ? ": " + data.retried.join(", ") : "");
    if (data.deleted_blobs !== undefined) return "Deleted " + data.deleted_blobs + " blobs.";
    if (data.targets) return (data.enabled ? "Enabled " : "Disabled ") + data.targets.join(", ") + ".";
    return action + " done.";
  }

  function perform(request, action) {
    fetch(request.url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify(request.payload),
    }).then(function (r) {
      return r.json().then(function (data) { return { ok: r.ok, data: data }; });
    }).then(function (answer) {
      showResult(answer.ok ? summarize(action, answer.data) : answer.data.error, answer.ok);
      if (answer.ok && body.dataset.page === "targets") window.setTimeout(function () { window.location.reload(); }, 800);
    }).catch(function () {
      showResult("The dashboard did not answer; try again.", false);
    });
  }

  function confirmThen(request, action) {
    document.getElementById("confirm-message").textContent = request.question;
    dialog.returnValue = "";
    dialog.addEventListener("close", function onClose() {
      dialog.removeEventListener("close", onClose);
      if (dialog.returnValue === "ok") perform(request, action);
    });
    dialog.showModal();
    document.getElementById("confirm-cancel").focus();
  }

  if (!readOnly && dialog) {
    document.addEventListener("click", function (event) {
      const button = event.target.closest("button[data-action]");
      if (!button) return;
      const request = describe(button);
      if (request) confirmThen(request, button.dataset.action);
    });
  }

  // ---- start -------------------------------------------------------------------

  if (body.dataset.page === "jobs" && body.dataset.events) {
    listen(body.dataset.events, { jobs: renderJobs });
  } else if (body.dataset.page === "job" && body.dataset.events) {
    listen(body.dataset.events, { status: renderStatus });
  }
})();

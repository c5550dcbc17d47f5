// The health view: workers seen recently (heartbeats), backlog and redeliveries per work
// consumer, and the latest dead-lettered messages with their reasons. Read every few seconds.

import { getJson } from "./api.js";
import { ago, el, formatTime } from "./format.js";

const REFRESH_MS = 5000;

function table(id, headers, rows, empty) {
  return el("table", { id, className: "grid" },
    el("thead", {}, el("tr", {}, ...headers.map((h) => el("th", {}, h)))),
    el("tbody", {}, rows.length ? rows : el("tr", {}, el("td", { colspan: headers.length, className: "empty" }, empty))));
}

function workersTable(workers) {
  return table("workers", ["worker", "host", "pid", "workflows", "activities (task queues)", "started", "last beat"],
    workers.map((w) => el("tr", {},
      el("td", {}, el("code", {}, w.id)), el("td", {}, w.host), el("td", { className: "num" }, w.pid),
      el("td", {}, (w.workflows || []).join(", ") || "–"),
      el("td", {}, (w.activities || []).join(", ") || "–",
        (w.task_queues || []).length ? el("span", { className: "muted" }, ` (${w.task_queues.join(", ")})`) : null),
      el("td", { title: formatTime(w.started_at) }, ago(w.started_at)),
      el("td", { title: formatTime(w.beat_at) }, ago(w.beat_at)))),
    "no worker has sent a heartbeat in the last seconds");
}

function consumersTable(consumers) {
  return table("consumers", ["consumer", "task queue", "backlog", "in flight", "redelivered", "waiting pulls"],
    consumers.map((c) => el("tr", { dataset: { consumer: c.consumer } },
      el("td", {}, c.consumer), el("td", {}, c.task_queue || "–"),
      el("td", { className: `num${c.pending ? " warn" : ""}` }, c.pending),
      el("td", { className: "num" }, c.in_flight),
      el("td", { className: `num${c.redelivered ? " warn" : ""}` }, c.redelivered),
      el("td", { className: "num" }, c.waiting_pulls))),
    "no consumers yet (no runtime has started on this prefix)");
}

function deadLettersTable(letters) {
  return table("dead-letters", ["#", "time (UTC)", "subject", "from", "reason", "body"],
    letters.messages.map((m) => el("tr", {},
      el("td", { className: "num" }, m.seq), el("td", { className: "time" }, formatTime(m.time)),
      el("td", {}, m.subject), el("td", {}, m.original_subject),
      el("td", { className: "error-line" }, m.reason),
      el("td", {}, el("code", { className: "preview" }, m.preview)))),
    "no dead letters");
}

export function renderHealth(root) {
  const status = el("p", { className: "muted", id: "health-status" }, "reading…");
  const content = el("div");
  root.replaceChildren(el("h1", {}, "Health"), status, content);
  let stopped = false;
  let timer = null;

  async function refresh() {
    try {
      const report = await getJson("console/api/health");
      const letters = report.dead_letters;
      content.replaceChildren(
        el("h2", {}, `Workers (${report.workers.length})`), workersTable(report.workers),
        el("h2", {}, "Task queues"),
        el("p", { className: "muted" }, `work stream ${report.work_stream.stream}: ${report.work_stream.messages} messages`),
        consumersTable(report.consumers),
        el("h2", {}, `Dead letters (${letters.total})`),
        el("p", { className: "muted" }, `stream ${letters.stream}, latest ${letters.messages.length} shown, kept 7 days`),
        deadLettersTable(letters));
      status.textContent = `checked ${formatTime(report.checked_at)}; refreshed every ${REFRESH_MS / 1000}s`;
      status.classList.remove("error-line");
    } catch (error) {
      status.textContent = error.message;
      status.classList.add("error-line");
    }
    if (!stopped) timer = setTimeout(refresh, REFRESH_MS);
  }

  refresh();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

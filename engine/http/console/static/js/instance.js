// The instance view: status, times, payloads, failure; the timeline (vis-timeline) of
// activity attempts, timers, child workflows and events; the history table; links to the
// parent, the children and the trace in Jaeger; and the actions.

import { ApiError, getJson } from "./api.js";
import { ACTIONS, confirmAction } from "./actions.js";
import {
  TERMINAL, durationText, el, formatTime, jsonPreview, jsonView, statusBadge,
} from "./format.js";
import { coalesced, onChanges } from "./live.js";

function instanceLink(related) {
  return el("span", { className: "related" },
    el("a", { href: `#/instance/${encodeURIComponent(related.instance_id)}` }, related.instance_id),
    related.name ? el("span", { className: "muted" }, ` ${related.name}`) : null,
    related.status ? statusBadge(related.status) : null);
}

function escapeHtml(text) {
  return text.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

function timelineItems(timeline) {
  return timeline.items.map((item) => {
    const content = document.createElement("span");
    content.textContent = item.label;
    const slug = item.group.replace(/[^A-Za-z0-9_-]/g, "-");
    const base = {
      id: item.id,
      content,
      start: new Date(item.start),
      title: escapeHtml(item.detail || item.label).replace(/\n/g, "<br>"),
      className: `kind-${item.kind} outcome-${item.outcome} group-${slug}`,
    };
    if (item.kind === "run") return { ...base, type: "background", content: "", end: new Date(item.end) };
    if (item.end === null) return { ...base, group: item.group, type: "point" };
    return { ...base, group: item.group, type: "range", end: new Date(item.end) };
  });
}

class TimelineView {
  constructor(container) {
    this.container = container;
    this.items = new window.vis.DataSet();
    this.groups = new window.vis.DataSet();
    this.timeline = null;
    this.moved = false;  // once the reader zooms or drags, updates keep their window
  }

  update(timeline) {
    const items = timelineItems(timeline);
    const groups = timeline.groups.map((g, order) => ({ id: g.id, content: g.label, order }));
    this.groups.update(groups);
    this.groups.remove(this.groups.getIds().filter((id) => !groups.some((g) => g.id === id)));
    this.items.update(items);
    this.items.remove(this.items.getIds().filter((id) => !items.some((i) => i.id === id)));
    if (this.timeline === null) {
      this.timeline = new window.vis.Timeline(this.container, this.items, this.groups, {
        stack: true,
        groupOrder: "order",
        orientation: { axis: "top" },
        margin: { item: { horizontal: 0, vertical: 4 } },
        tooltip: { followMouse: true },
        zoomMin: 10,
        showCurrentTime: false,
      });
      this.timeline.on("rangechange", (change) => {
        if (change.byUser) this.moved = true;
      });
      this.container.dataset.ready = "true";
    }
    if (items.length && !this.moved) this.timeline.fit({ animation: false });
  }

  destroy() {
    if (this.timeline) this.timeline.destroy();
  }
}

function historyTable(rows) {
  const body = el("tbody");
  for (const row of rows) {
    const details = el("td", { className: "details" }, el("code", {}, jsonPreview(row.fields)));
    const tr = el("tr", { dataset: { index: row.index, type: row.type }, className: `event-${row.type}` },
      el("td", { className: "num" }, row.index),
      el("td", { className: "time" }, formatTime(row.timestamp)),
      el("td", { className: "num" }, row.delta_s === null ? "" : `${row.delta_s >= 0 ? "+" : ""}${durationText(row.delta_s)}`),
      el("td", { className: "num" }, row.task),
      el("td", {}, row.type),
      details);
    let open = false;
    tr.addEventListener("click", () => {
      open = !open;
      details.replaceChildren(open ? jsonView(row.fields, 3) : el("code", {}, jsonPreview(row.fields)));
      tr.classList.toggle("open", open);
    });
    body.append(tr);
  }
  return el("table", { className: "history", id: "history" },
    el("thead", {}, el("tr", {},
      el("th", {}, "#"), el("th", {}, "time (UTC)"), el("th", {}, "delta"), el("th", {}, "task"),
      el("th", {}, "type"), el("th", {}, "payload (click a row to expand)"))),
    body);
}

function payloadBlock(label, value, id) {
  return el("div", { className: "payload", id },
    el("h3", {}, label), value === null || value === undefined
      ? el("span", { className: "muted" }, "none") : jsonView(value, 2));
}

export function renderInstance(root, instanceId, config) {
  const header = el("section", { className: "instance-header" });
  const toast = el("p", { id: "action-result", className: "toast", hidden: true });
  const summary = el("section", { className: "summary" });
  const timelineBox = el("div", { id: "timeline", className: "timeline" });
  const historyBox = el("section", { className: "history-box" });
  root.replaceChildren(
    header, toast, summary,
    el("section", { className: "timeline-box" }, el("h2", {}, "Timeline"), timelineBox,
      el("p", { className: "legend muted" },
        el("span", { className: "swatch outcome-completed" }), "completed ",
        el("span", { className: "swatch outcome-failed" }), "failed ",
        el("span", { className: "swatch outcome-open" }), "not finished ",
        el("span", { className: "swatch kind-timer" }), "timer ",
        el("span", { className: "swatch kind-event" }), "event")),
    historyBox);
  const timeline = new TimelineView(timelineBox);
  let status = null;
  let gone = false;

  function showToast(text) {
    toast.textContent = text;
    toast.hidden = false;
  }

  function renderHeader(detail) {
    const state = detail.state;
    const buttons = ACTIONS.map((action) => {
      const available = !action.feature || config.features[action.feature];
      const enabled = available && action.when(state.status);
      return el("button", {
        type: "button", className: action.danger ? "danger" : "", disabled: !enabled,
        dataset: { action: action.id },
        title: available ? "" : "not available in this version",
        onclick: async () => {
          const result = await confirmAction(action, state.instance_id);
          if (result === null) return;
          showToast(result);
          if (action.id === "purge") {
            window.location.hash = "#/";
          } else {
            refresh();
          }
        },
      }, action.label);
    });
    const links = [];
    if (detail.trace) {
      links.push(el("a", {
        id: "trace-link", href: detail.trace.url, target: "_blank", rel: "noopener",
        title: `trace ${detail.trace.trace_id}`,
      }, "trace in Jaeger ↗"));
    }
    header.replaceChildren(
      el("div", { className: "title" },
        el("a", { href: "#/", className: "muted" }, "instances /"),
        el("h1", {}, state.instance_id),
        el("span", { id: "instance-status" }, statusBadge(state.status)),
        el("span", { className: "muted" }, state.name)),
      el("div", { className: "actions" }, ...buttons, ...links));
  }

  function renderSummary(detail) {
    const state = detail.state;
    const end = TERMINAL.has(state.status) ? new Date(state.last_updated_at) : new Date(detail.now);
    const facts = el("dl", { className: "facts" },
      el("dt", {}, "created"), el("dd", {}, formatTime(state.created_at)),
      el("dt", {}, "last change"), el("dd", {}, formatTime(state.last_updated_at)),
      el("dt", {}, TERMINAL.has(state.status) ? "took" : "running for"),
      el("dd", {}, durationText((end - new Date(state.created_at)) / 1000)),
      el("dt", {}, "parent"), el("dd", {}, detail.parent ? instanceLink(detail.parent) : el("span", { className: "muted" }, "none")),
      el("dt", {}, "children"),
      el("dd", { id: "children" }, detail.children.length
        ? el("ul", { className: "plain" }, ...detail.children.map((c) => el("li", {}, instanceLink(c))))
        : el("span", { className: "muted" }, "none")),
      el("dt", {}, "trace id"), el("dd", {}, detail.trace ? el("code", {}, detail.trace.trace_id) : "–"));
    const blocks = [
      payloadBlock("custom status", state.custom_status, "custom-status"),
      payloadBlock("input", state.input, "input"),
      payloadBlock("output", state.output, "output"),
    ];
    if (state.failure) {
      blocks.push(el("div", { className: "payload failure", id: "failure" },
        el("h3", {}, "failure"),
        el("p", { className: "error-line" }, `${state.failure.type}: ${state.failure.message}`),
        state.failure.stack ? el("pre", { className: "stack" }, state.failure.stack) : null));
    }
    summary.replaceChildren(facts, el("div", { className: "payloads" }, ...blocks));
  }

  const refresh = coalesced(async () => {
    if (gone) return;
    let detail;
    try {
      detail = await getJson(`console/api/instances/${encodeURIComponent(instanceId)}`);
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) {
        header.replaceChildren(el("div", { className: "title" },
          el("a", { href: "#/", className: "muted" }, "instances /"), el("h1", {}, instanceId)));
        summary.replaceChildren(el("p", { className: "error-line" }, error.message));
        return;
      }
      throw error;
    }
    status = detail.state.status;
    renderHeader(detail);
    renderSummary(detail);
    timeline.update(detail.timeline);
    historyBox.replaceChildren(el("h2", {}, `History (${detail.history.length} events)`),
      historyTable(detail.history));
    root.dataset.status = status;
  }, 500);

  // While the instance runs, follow it: any change of instances may be one of its own.
  const stopChanges = onChanges(() => {
    if (!TERMINAL.has(status)) refresh();
  });
  refresh();
  return () => {
    gone = true;
    stopChanges();
    timeline.destroy();
  };
}

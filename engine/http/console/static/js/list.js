// The instances view: live list with counts by status, filters, search and server-side paging.
// The filters live in the URL (#/?status=RUNNING&workflow=...&q=...&page=2&size=50).

import { getJson } from "./api.js";
import { STATUSES, TERMINAL, ago, durationText, el, formatTime, statusBadge } from "./format.js";
import { coalesced, onChanges } from "./live.js";

const PAGE_SIZES = [25, 50, 100, 200];

function readFilters(params) {
  return {
    statuses: new Set((params.get("status") || "").split(",").filter(Boolean)),
    workflow: params.get("workflow") || "",
    q: params.get("q") || "",
    page: Math.max(1, parseInt(params.get("page") || "1", 10) || 1),
    size: PAGE_SIZES.includes(parseInt(params.get("size"), 10)) ? parseInt(params.get("size"), 10) : 50,
  };
}

function filtersHash(filters) {
  const params = new URLSearchParams();
  if (filters.statuses.size) params.set("status", [...filters.statuses].join(","));
  if (filters.workflow) params.set("workflow", filters.workflow);
  if (filters.q) params.set("q", filters.q);
  if (filters.page > 1) params.set("page", String(filters.page));
  if (filters.size !== 50) params.set("size", String(filters.size));
  const query = params.toString();
  return query ? `#/?${query}` : "#/";
}

function listQuery(filters) {
  const params = new URLSearchParams({
    offset: String((filters.page - 1) * filters.size),
    limit: String(filters.size),
  });
  if (filters.statuses.size) params.set("status", [...filters.statuses].join(","));
  if (filters.workflow) params.set("workflow", filters.workflow);
  if (filters.q) params.set("q", filters.q);
  return `console/api/instances?${params}`;
}

export function renderList(root, params) {
  const filters = readFilters(params);
  let latest = null;

  const chips = el("div", { className: "chips", role: "group", "aria-label": "status" });
  const workflowSelect = el("select", { id: "workflow-filter", "aria-label": "workflow" });
  const search = el("input", {
    id: "search", type: "search", placeholder: "search by instance id", value: filters.q,
    "aria-label": "search by instance id",
  });
  const freshness = el("span", { id: "last-change", className: "muted" });
  const notice = el("p", { id: "list-notice", className: "muted", hidden: true });
  const body = el("tbody");
  const table = el("table", { className: "instances" },
    el("thead", {}, el("tr", {},
      el("th", {}, "instance"), el("th", {}, "workflow"), el("th", {}, "status"),
      el("th", {}, "created (UTC)"), el("th", {}, "last change"), el("th", {}, "duration"))),
    body);
  const pager = el("div", { className: "pager" });

  root.replaceChildren(
    el("section", { className: "toolbar" }, chips,
      el("div", { className: "filters" }, workflowSelect, search, freshness)),
    notice, table, pager);

  // Filters change in place (the URL follows without a new render, so the search box keeps
  // its focus); back and forward render the view again from the URL.
  function go(change, { replace = false } = {}) {
    Object.assign(filters, change);
    const hash = filtersHash(filters);
    if (hash !== window.location.hash && !(hash === "#/" && !window.location.hash)) {
      if (replace) window.history.replaceState(null, "", hash);
      else window.history.pushState(null, "", hash);
    }
    refresh();
  }

  function renderChips(data) {
    const total = data.total;
    const chip = (label, count, active, onclick, status) =>
      el("button", {
        type: "button", className: `chip${active ? " active" : ""}${status ? ` chip-${status}` : ""}`,
        "aria-pressed": active ? "true" : "false", dataset: { status: status || "ALL" }, onclick,
      }, label, el("span", { className: "count" }, count.toLocaleString("en")));
    chips.replaceChildren(
      chip("all", total, filters.statuses.size === 0, () => go({ statuses: new Set(), page: 1 })),
      ...STATUSES.filter((s) => data.counts[s] || filters.statuses.has(s)).map((status) =>
        chip(status, data.counts[status] || 0, filters.statuses.has(status), () => {
          const next = new Set(filters.statuses);
          if (next.has(status)) next.delete(status); else next.add(status);
          go({ statuses: next, page: 1 });
        }, status)));
  }

  function renderWorkflows(data) {
    const names = Object.entries(data.workflows);
    const options = [el("option", { value: "" }, `all workflows`)];
    for (const [name, count] of names) {
      options.push(el("option", { value: name, selected: name === filters.workflow },
        `${name} (${count.toLocaleString("en")})`));
    }
    if (filters.workflow && !data.workflows[filters.workflow]) {
      options.push(el("option", { value: filters.workflow, selected: true }, `${filters.workflow} (0)`));
    }
    workflowSelect.replaceChildren(...options);
  }

  function renderRows(data) {
    const now = Date.now();
    body.replaceChildren(...data.items.map((item) => {
      const end = TERMINAL.has(item.status) ? new Date(item.last_updated_at).getTime() : now;
      const seconds = (end - new Date(item.created_at).getTime()) / 1000;
      return el("tr", { dataset: { instance: item.instance_id, status: item.status } },
        el("td", {}, el("a", { href: `#/instance/${encodeURIComponent(item.instance_id)}` }, item.instance_id),
          item.parent_instance_id ? el("span", { className: "muted small" }, ` child of ${item.parent_instance_id}`) : null),
        el("td", {}, item.name),
        el("td", {}, statusBadge(item.status)),
        el("td", { className: "time" }, formatTime(item.created_at)),
        el("td", { className: "ago", title: formatTime(item.last_updated_at), dataset: { at: item.last_updated_at } },
          ago(item.last_updated_at, now)),
        el("td", { className: "num" }, durationText(seconds)));
    }));
    if (!data.items.length) {
      body.append(el("tr", {}, el("td", { colspan: 6, className: "empty" },
        data.ready ? "no instances match" : "loading instances…")));
    }
  }

  function renderPager(data) {
    const first = data.matched ? data.offset + 1 : 0;
    const last = data.offset + data.items.length;
    const pages = Math.max(1, Math.ceil(data.matched / filters.size));
    pager.replaceChildren(
      el("span", { id: "page-info" },
        `${first.toLocaleString("en")}–${last.toLocaleString("en")} of ${data.matched.toLocaleString("en")}`,
        ` · page ${filters.page} of ${pages.toLocaleString("en")}`),
      el("button", { type: "button", disabled: filters.page <= 1, onclick: () => go({ page: filters.page - 1 }) }, "← newer"),
      el("button", { type: "button", disabled: filters.page >= pages, onclick: () => go({ page: filters.page + 1 }) }, "older →"),
      el("select", {
        "aria-label": "page size",
        onchange: (e) => go({ size: parseInt(e.target.value, 10), page: 1 }),
      }, ...PAGE_SIZES.map((n) => el("option", { value: n, selected: n === filters.size }, `${n} per page`))));
  }

  function renderFreshness() {
    if (!latest) return;
    freshness.textContent = latest.last_change_at
      ? `last change ${ago(latest.last_change_at)}` : "no changes yet";
    const now = Date.now();
    for (const cell of body.querySelectorAll("td.ago")) cell.textContent = ago(cell.dataset.at, now);
  }

  function renderNotice(data) {
    const text = data.error ? `reading instances failed (${data.error}); retrying…`
      : data.ready ? "" : "loading instances…";
    notice.textContent = text;
    notice.hidden = !text;
  }

  const refresh = coalesced(async () => {
    const data = await getJson(listQuery(filters));
    latest = data;
    renderChips(data);
    renderWorkflows(data);
    renderRows(data);
    renderPager(data);
    renderNotice(data);
    renderFreshness();
    table.dataset.version = String(data.version);
  });

  workflowSelect.addEventListener("change", () => go({ workflow: workflowSelect.value, page: 1 }));
  let typing = null;
  search.addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(() => go({ q: search.value.trim(), page: 1 }, { replace: true }), 300);
  });

  const stopChanges = onChanges(() => refresh());
  const ticker = setInterval(renderFreshness, 1000);
  refresh();
  return () => {
    stopChanges();
    clearInterval(ticker);
    clearTimeout(typing);
  };
}

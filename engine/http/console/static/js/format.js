// Small display helpers: DOM building, times, durations, status badges.

/** An element with attributes (``on*`` functions become listeners) and children. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      node.addEventListener(key.slice(2), value);
    } else if (key === "className") {
      node.className = value;
    } else if (key === "dataset") {
      Object.assign(node.dataset, value);
    } else {
      node.setAttribute(key, value === true ? "" : value);
    }
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** A UTC timestamp as the CLI prints it: 2025-01-02 03:04:05.678Z. */
export function formatTime(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  return date.toISOString().replace("T", " ");
}

export function durationText(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "";
  const abs = Math.abs(seconds);
  let text;
  if (abs < 1) text = `${Math.round(abs * 1000)}ms`;
  else if (abs < 60) text = `${abs.toFixed(2)}s`;
  else if (abs < 3600) text = `${Math.floor(abs / 60)}m${String(Math.floor(abs % 60)).padStart(2, "0")}s`;
  else text = `${Math.floor(abs / 3600)}h${String(Math.floor((abs % 3600) / 60)).padStart(2, "0")}m`;
  return seconds < 0 ? `-${text}` : text;
}

const relative = new Intl.RelativeTimeFormat("en", { numeric: "auto", style: "short" });

/** "5 sec. ago", "3 min. ago": how long ago ``iso`` was. */
export function ago(iso, now = Date.now()) {
  if (!iso) return "";
  const seconds = Math.round((new Date(iso).getTime() - now) / 1000);
  const abs = Math.abs(seconds);
  if (abs < 60) return relative.format(seconds, "second");
  if (abs < 3600) return relative.format(Math.round(seconds / 60), "minute");
  if (abs < 86400) return relative.format(Math.round(seconds / 3600), "hour");
  return relative.format(Math.round(seconds / 86400), "day");
}

export const STATUSES = [
  "PENDING", "RUNNING", "SUSPENDED", "STALLED", "CONTINUED_AS_NEW",
  "COMPLETED", "FAILED", "TERMINATED",
];

export const TERMINAL = new Set(["COMPLETED", "FAILED", "TERMINATED"]);

export function statusBadge(status) {
  return el("span", { className: `status status-${status}` }, status || "unknown");
}

/** A JSON value, collapsible (json-formatter-js), opened ``depth`` levels deep. */
export function jsonView(value, depth = 2) {
  if (value === null || value === undefined) return el("span", { className: "muted" }, "null");
  if (typeof value !== "object") return el("code", { className: "json-scalar" }, JSON.stringify(value));
  const formatter = new window.JSONFormatter(value, depth, { hoverPreviewEnabled: true });
  return el("div", { className: "json-view" }, formatter.render());
}

/** A one-line preview of a JSON value, cut at ``width`` characters. */
export function jsonPreview(value, width = 120) {
  const text = JSON.stringify(value);
  return text.length > width ? `${text.slice(0, width - 1)}…` : text;
}

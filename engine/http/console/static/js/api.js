// Calls to the server: the console's endpoints and the Dapr API beside them.
// Every failure becomes an ApiError whose message is the line the server gave.

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function errorLine(response) {
  const text = await response.text();
  try {
    const body = JSON.parse(text);
    if (body && body.errorCode) return `${body.errorCode}: ${body.message}`;
    if (body && body.message) return body.message;
  } catch (_) {
    // not JSON: the text itself is the line
  }
  return text.trim() || `${response.status} ${response.statusText}`;
}

async function request(path, options = {}) {
  const response = await fetch(path, { credentials: "same-origin", ...options });
  if (response.status === 401) {
    window.dispatchEvent(new CustomEvent("jetloom:unauthorized"));
  }
  if (!response.ok) throw new ApiError(response.status, await errorLine(response));
  const text = await response.text();
  return text ? JSON.parse(text) : null;
}

export function getJson(path) {
  return request(path, { headers: { Accept: "application/json" } });
}

export function postJson(path, body) {
  return request(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: body === undefined ? "" : JSON.stringify(body),
  });
}

/** POST ``text`` as the body itself (the Dapr API takes event data unwrapped). */
export function postText(path, text) {
  return request(path, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: text,
  });
}

/** The Dapr API path of a steering operation on one instance. */
export function daprPath(instanceId, operation) {
  return `v1.0/workflows/dapr/${encodeURIComponent(instanceId)}/${operation}`;
}

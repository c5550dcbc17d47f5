// One server-sent event stream per page (console/api/events), shared by the views.
// The server sends a "changes" event with counts and a version whenever instances change.

const listeners = new Set();
let source = null;

function indicator(state) {
  const live = document.getElementById("live");
  if (!live) return;
  live.dataset.state = state;
  live.title = state === "open" ? "live updates: connected" : "live updates: reconnecting…";
}

function connect() {
  if (source) return;
  source = new EventSource("console/api/events");
  source.addEventListener("open", () => indicator("open"));
  source.addEventListener("error", () => indicator("closed"));
  source.addEventListener("changes", (event) => {
    const data = JSON.parse(event.data);
    for (const listener of listeners) listener(data);
  });
}

/** Call ``listener(changes)`` on every change; returns the function that stops it. */
export function onChanges(listener) {
  listeners.add(listener);
  connect();
  return () => listeners.delete(listener);
}

/** Open the stream again (after signing in). */
export function reconnect() {
  if (source) source.close();
  source = null;
  connect();
}

/**
 * Run ``task`` now and again after each ``trigger()``, never two at once and never more
 * often than every ``gap`` ms: a burst of triggers while one runs makes a single rerun.
 */
export function coalesced(task, gap = 300) {
  let running = false;
  let again = false;
  let last = 0;
  async function run() {
    if (running) {
      again = true;
      return;
    }
    running = true;
    try {
      const wait = last + gap - Date.now();
      if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
      last = Date.now();
      await task();
    } finally {
      running = false;
      if (again) {
        again = false;
        run();
      }
    }
  }
  return run;
}

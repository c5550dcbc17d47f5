// Actions on an instance. Each asks for confirmation, calls the Dapr API served beside the
// console, and shows the API's error line in the dialog when it is refused.

import { daprPath, postJson, postText } from "./api.js";
import { TERMINAL, el } from "./format.js";

/**
 * The actions, in the order of the buttons. ``when(status)`` says whether the button is
 * enabled; ``fields`` are asked for in the dialog; ``run`` returns what to show afterwards.
 */
export const ACTIONS = [
  {
    id: "raise", label: "Raise event", verb: "Raise",
    when: (status) => !TERMINAL.has(status),
    text: (id) => `Send an external event to ${id}.`,
    fields: () => [
      el("label", {}, "Event name", el("input", { name: "event", required: true, placeholder: "approval" })),
      el("label", {}, "Data (JSON)", el("textarea", { name: "data", rows: 4, placeholder: "{\"approved\": true}" })),
    ],
    run: async (id, form) => {
      const name = form.elements.event.value.trim();
      const data = form.elements.data.value.trim() || "null";
      try {
        JSON.parse(data);
      } catch (error) {
        throw new Error(`the data is not valid JSON (${error.message}); e.g. {"approved": true} or "text"`);
      }
      await postText(daprPath(id, `raiseEvent/${encodeURIComponent(name)}`), data);
      return `raised event ${name}`;
    },
  },
  {
    id: "pause", label: "Pause", verb: "Pause",
    when: (status) => !TERMINAL.has(status) && status !== "SUSPENDED",
    text: (id) => `Pause ${id}? It holds new events until it is resumed.`,
    run: async (id) => { await postJson(daprPath(id, "pause")); return "pause requested"; },
  },
  {
    id: "resume", label: "Resume", verb: "Resume",
    when: (status) => status === "SUSPENDED",
    text: (id) => `Resume ${id}?`,
    run: async (id) => { await postJson(daprPath(id, "resume")); return "resume requested"; },
  },
  {
    id: "terminate", label: "Terminate", verb: "Terminate", danger: true,
    when: (status) => !TERMINAL.has(status),
    text: (id) => `Terminate ${id} and its child workflows? Running activities are abandoned.`,
    run: async (id) => { await postJson(daprPath(id, "terminate")); return "terminate requested"; },
  },
  {
    id: "purge", label: "Purge", verb: "Purge", danger: true,
    when: (status) => TERMINAL.has(status),
    text: (id) => `Purge ${id}? Its history and state (and its children's) are deleted for good.`,
    run: async (id) => { await postJson(daprPath(id, "purge")); return "purged"; },
  },
  {
    // Hook for rerun_workflow_from_event: enabled once the server reports the feature.
    id: "rerun", label: "Rerun from event", verb: "Rerun", feature: "rerun",
    when: (status) => TERMINAL.has(status),
    text: (id) => `Start a new instance that replays ${id} up to the chosen history event.`,
    fields: () => [
      el("label", {}, "From event # (history position)", el("input", { name: "event_id", type: "number", min: 0, required: true })),
      el("label", {}, "New instance id (optional)", el("input", { name: "new_instance_id" })),
    ],
    run: async (id, form) => {
      const reply = await postJson(`console/api/instances/${encodeURIComponent(id)}/rerun`, {
        event_id: parseInt(form.elements.event_id.value, 10),
        new_instance_id: form.elements.new_instance_id.value.trim() || null,
      });
      return `started ${reply.instance_id}`;
    },
  },
];

/**
 * Ask for confirmation of ``action`` on instance ``id`` in the dialog, run it, and resolve
 * with its message (or null when cancelled). A refusal keeps the dialog open with the error.
 */
export function confirmAction(action, id) {
  const dialog = document.getElementById("action-dialog");
  const form = document.getElementById("action-form");
  const fields = document.getElementById("action-fields");
  const error = document.getElementById("action-error");
  const confirm = document.getElementById("action-confirm");
  document.getElementById("action-title").textContent = `${action.label}: ${id}`;
  document.getElementById("action-text").textContent = action.text(id);
  fields.replaceChildren(...(action.fields ? action.fields() : []));
  error.hidden = true;
  error.textContent = "";
  confirm.textContent = action.verb;
  confirm.className = action.danger ? "danger" : "primary";
  confirm.disabled = false;
  dialog.dataset.action = action.id;

  return new Promise((resolve) => {
    function finish(result) {
      form.removeEventListener("submit", onSubmit);
      cancel.removeEventListener("click", onCancel);
      dialog.removeEventListener("cancel", onCancel);
      dialog.close();
      resolve(result);
    }
    async function onSubmit(event) {
      event.preventDefault();
      confirm.disabled = true;
      try {
        finish(await action.run(id, form));
      } catch (failure) {
        error.textContent = failure.message;
        error.hidden = false;
        confirm.disabled = false;
      }
    }
    function onCancel(event) {
      if (event) event.preventDefault();
      finish(null);
    }
    const cancel = document.getElementById("action-cancel");
    form.addEventListener("submit", onSubmit);
    cancel.addEventListener("click", onCancel);
    dialog.addEventListener("cancel", onCancel);
    dialog.showModal();
    const first = fields.querySelector("input, textarea");
    if (first) first.focus(); else cancel.focus();
  });
}

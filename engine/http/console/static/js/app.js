// The console's entry point: reads the server's configuration, asks for the API token when
// one is required, and shows the view the URL's fragment names:
//   #/                 instances (filters as a query: #/?status=RUNNING&page=2)
//   #/instance/<id>    one instance
//   #/health           workers, task queues, dead letters

import { getJson, postJson } from "./api.js";
import { renderHealth } from "./health.js";
import { renderInstance } from "./instance.js";
import { renderList } from "./list.js";
import { reconnect } from "./live.js";

const view = document.getElementById("view");
let config = null;
let teardown = null;

function route() {
  if (teardown) teardown();
  teardown = null;
  const hash = window.location.hash.replace(/^#/, "") || "/";
  const [path, query = ""] = hash.split("?");
  let name = "instances";
  if (path.startsWith("/instance/")) {
    name = "instance";
    teardown = renderInstance(view, decodeURIComponent(path.slice("/instance/".length)), config);
  } else if (path === "/health") {
    name = "health";
    teardown = renderHealth(view);
  } else {
    teardown = renderList(view, new URLSearchParams(query));
  }
  view.dataset.view = name;
  for (const link of document.querySelectorAll("[data-nav]")) {
    link.classList.toggle("active", link.dataset.nav === (name === "instance" ? "instances" : name));
  }
}

function askForToken() {
  const dialog = document.getElementById("login-dialog");
  if (dialog.open) return;
  const form = document.getElementById("login-form");
  const error = document.getElementById("login-error");
  error.hidden = true;
  form.onsubmit = async (event) => {
    event.preventDefault();
    try {
      await postJson("console/api/login", { token: document.getElementById("login-token").value });
      dialog.close();
      reconnect();
      route();
    } catch (failure) {
      error.textContent = failure.status === 401 ? "wrong token" : failure.message;
      error.hidden = false;
    }
  };
  dialog.showModal();
}

async function start() {
  config = await getJson("console/api/config");
  document.getElementById("prefix").textContent = `prefix ${config.prefix}`;
  window.addEventListener("jetloom:unauthorized", askForToken);
  window.addEventListener("hashchange", route);
  if (config.token_required && !config.authenticated) {
    askForToken();
    return;
  }
  route();
}

start();

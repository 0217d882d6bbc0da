// The session service's browser page: plain JavaScript, no build step.
// Logs in with the HttpOnly cookie (credentials: "include"); the token in the
// login response is never stored by the page.
"use strict";

// The API is the page's own origin, or the origin the deployment names in
// <meta name="session-api-origin"> (filled in from SESSION_PAGE_API_ORIGIN; that API must list
// this page's origin in SESSION_ALLOWED_ORIGINS). Never one a link chooses: the typed password
// goes nowhere else, and the page's Content-Security-Policy allows connections to these two only.
function apiOrigin() {
  const meta = document.querySelector('meta[name="session-api-origin"]');
  const configured = meta ? meta.content.trim() : "";
  if (configured) {
    try {
      const url = new URL(configured);
      if (url.protocol === "https:" || url.protocol === "http:") {
        return url.origin;
      }
    } catch (err) {
      // not a URL: fall back to the page's own origin
    }
  }
  return window.location.origin;
}

const API = apiOrigin();

class Problem extends Error {
  constructor(title, detail, status, code) {
    super(`${title}: ${detail}`);
    this.title = title;
    this.detail = detail;
    this.status = status;
    this.code = code;
  }
}

const $ = (selector) => document.querySelector(selector);

async function call(method, path, body) {
  const init = { method, credentials: "include", headers: { Accept: "application/json" } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(API + path, init);
  } catch (err) {
    // A network failure and a CORS refusal look the same to a page.
    throw new Problem(
      "The API could not be reached",
      `${method} ${API}${path} failed: the server is down, or it does not allow this page's origin ` +
        `(${window.location.origin}) by CORS.`,
      0,
      "network_error",
    );
  }
  if (response.status === 204) {
    return null;
  }
  const type = response.headers.get("Content-Type") || "";
  const data = type.includes("json") ? await response.json() : null;
  if (!response.ok) {
    const title = (data && data.title) || `HTTP ${response.status}`;
    const detail = (data && data.detail) || response.statusText || "no detail";
    throw new Problem(title, detail, response.status, data && data.code);
  }
  return data;
}

function showProblem(problem) {
  $("#problem-title").textContent = problem.title;
  $("#problem-detail").textContent = problem.detail;
  $("#problem").hidden = false;
  $("#message").hidden = true;
}

function showMessage(text) {
  $("#problem").hidden = true;
  $("#message").textContent = text;
  $("#message").hidden = false;
}

function setStatus(text) {
  $("#status").textContent = text;
}

function when(iso) {
  return iso ? new Date(iso).toLocaleString() : "";
}

function loggedOut(text) {
  setStatus(text || "Not logged in");
  $("#profile").replaceChildren();
  $("#sessions tbody").replaceChildren();
}

// Runs an action, showing its problem (title and detail) if it fails.
function action(fn) {
  return async (event) => {
    if (event) {
      event.preventDefault();
    }
    $("#problem").hidden = true;
    try {
      await fn(event);
    } catch (err) {
      if (!(err instanceof Problem)) {
        throw err;
      }
      showProblem(err);
      if (err.status === 401) {
        loggedOut();
      }
    }
  };
}

function renderProfile(profile) {
  const rows = [
    ["Username", profile.username],
    ["Display name", profile.display_name || "—"],
    ["Email", profile.email || "—"],
    ["Permissions", profile.permissions.join(", ") || "—"],
    ["User id", profile.user_id],
    ["Signed in", when(profile.session.logged_in_at)],
    ["Session expires", when(profile.session.expires_at)],
  ];
  const items = [];
  for (const [name, value] of rows) {
    const dt = document.createElement("dt");
    dt.textContent = name;
    const dd = document.createElement("dd");
    dd.textContent = value;
    dd.dataset.field = name.toLowerCase().replace(/ /g, "_");
    items.push(dt, dd);
  }
  $("#profile").replaceChildren(...items);
  setStatus(`Logged in as ${profile.username}`);
}

function renderSessions(sessions) {
  const rows = sessions.map((s) => {
    const tr = document.createElement("tr");
    tr.dataset.id = s.id;
    if (s.current) {
      tr.className = "current";
    }
    const cells = [
      s.id + (s.current ? " (this browser)" : ""),
      when(s.created_at),
      when(s.last_seen_at),
      when(s.expires_at),
      s.user_agent || "",
    ];
    for (const text of cells) {
      const td = document.createElement("td");
      td.textContent = text;
      tr.append(td);
    }
    const button = document.createElement("button");
    button.type = "button";
    button.className = "revoke";
    button.textContent = "Revoke";
    button.addEventListener("click", action(() => revokeOne(s.id, s.current)));
    const td = document.createElement("td");
    td.append(button);
    tr.append(td);
    return tr;
  });
  $("#sessions tbody").replaceChildren(...rows);
}

async function loadProfile() {
  renderProfile(await call("GET", "/profile"));
}

async function loadSessions() {
  renderSessions((await call("GET", "/sessions")).sessions);
}

function formData(form) {
  const data = {};
  for (const [name, value] of new FormData(form)) {
    if (value !== "") {
      data[name] = value;
    }
  }
  return data;
}

async function register(event) {
  const user = await call("POST", "/register", formData(event.target));
  event.target.reset();
  showMessage(`Registered ${user.username}. You can log in now.`);
}

async function login(event) {
  const result = await call("POST", "/login", formData(event.target));
  event.target.reset();
  showMessage(`Logged in as ${result.username}.`);
  await loadProfile();
  await loadSessions();
}

async function revokeOne(id, current) {
  await call("DELETE", `/sessions/${encodeURIComponent(id)}`);
  if (current) {
    loggedOut("Logged out (this session was revoked)");
    showMessage("This browser's session was revoked.");
    return;
  }
  showMessage(`Session ${id} revoked.`);
  await loadSessions();
}

async function revokeOthers() {
  await call("DELETE", "/sessions");
  showMessage("All other sessions revoked.");
  await loadSessions();
}

async function revokeAll() {
  await call("DELETE", "/sessions?include_current=true");
  loggedOut("Logged out everywhere");
  showMessage("All sessions revoked, this one too.");
}

async function logout() {
  await call("POST", "/logout");
  loggedOut("Logged out");
  showMessage("Logged out.");
}

document.addEventListener("DOMContentLoaded", () => {
  $("#api-url").textContent = API;
  $("#register-form").addEventListener("submit", action(register));
  $("#login-form").addEventListener("submit", action(login));
  $("#profile-button").addEventListener("click", action(loadProfile));
  $("#sessions-button").addEventListener("click", action(loadSessions));
  $("#revoke-others-button").addEventListener("click", action(revokeOthers));
  $("#revoke-all-button").addEventListener("click", action(revokeAll));
  $("#logout-button").addEventListener("click", action(logout));
  // Already logged in (the cookie is there)? Show it; a 401 here is not an error to show.
  call("GET", "/profile")
    .then(
      (profile) => {
        renderProfile(profile);
        return loadSessions().catch(showProblem);
      },
      (err) => {
        if (err instanceof Problem && err.status !== 401) {
          showProblem(err);
        }
      },
    )
    .finally(() => {
      document.body.dataset.ready = "true";
    });
});

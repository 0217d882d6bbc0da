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

// An error answer (application/problem+json), or a request that never got one (status 0).
class Problem extends Error {
  constructor(title, detail, status, body, headers) {
    super(`${title}: ${detail}`);
    this.title = title;
    this.detail = detail;
    this.status = status;
    this.body = body || {};
    this.code = this.body.code || (status === 0 ? "network_error" : undefined);
    // Seconds, from Retry-After (429, 503); the API exposes the header to other origins by CORS.
    const retryAfter = headers ? Number.parseInt(headers.get("Retry-After") || "", 10) : NaN;
    this.retryAfter = Number.isFinite(retryAfter) ? retryAfter : null;
  }
}

const $ = (selector) => document.querySelector(selector);

// What the page knows about the signed-in user: null while logged out.
let current = null; // {username, profile, etag}

// One request. Resolves to {data, headers}; rejects with a Problem for a network failure or an error status.
async function send(method, path, body, headers) {
  const init = { method, credentials: "include", headers: { Accept: "application/json", ...headers } };
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
    );
  }
  const type = response.headers.get("Content-Type") || "";
  const data = response.status !== 204 && type.includes("json") ? await response.json() : null;
  if (!response.ok) {
    const title = (data && data.title) || `HTTP ${response.status}`;
    const detail = (data && data.detail) || response.statusText || "no detail";
    throw new Problem(title, detail, response.status, data, response.headers);
  }
  return { data, headers: response.headers };
}

async function call(method, path, body, headers) {
  return (await send(method, path, body, headers)).data;
}

// --- what the page shows ---

function showProblem(problem, hint) {
  $("#problem-title").textContent = problem.title;
  $("#problem-detail").textContent = problem.detail;
  $("#problem-hint").textContent = hint || "";
  $("#problem-hint").hidden = !hint;
  $("#problem").hidden = false;
  $("#message").hidden = true;
}

// Words a user understands, next to the problem's own title and detail.
function explain(text) {
  $("#problem-hint").textContent = text;
  $("#problem-hint").hidden = false;
}

function clearProblem() {
  $("#problem").hidden = true;
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

function inWords(seconds) {
  if (seconds < 90) {
    return `${seconds} second${seconds === 1 ? "" : "s"}`;
  }
  const minutes = Math.ceil(seconds / 60);
  return `${minutes} minutes`;
}

function definitions(target, rows) {
  const items = [];
  for (const [name, value] of rows) {
    const dt = document.createElement("dt");
    dt.textContent = name;
    const dd = document.createElement("dd");
    dd.textContent = value;
    dd.dataset.field = name.toLowerCase().replace(/ /g, "_");
    items.push(dt, dd);
  }
  target.replaceChildren(...items);
}

// --- logged in, logged out ---

function loggedIn(profile, etag) {
  current = { username: profile.username, profile, etag: etag || `"${profile.version}"` };
  document.body.dataset.auth = "in";
  setStatus(`Logged in as ${profile.username}`);
  definitions($("#profile"), [
    ["Username", profile.username],
    ["Display name", profile.display_name || "—"],
    ["Email", profile.email || "—"],
    ["Permissions", profile.permissions.join(", ") || "—"],
    ["User id", profile.user_id],
    ["Signed in", when(profile.session.logged_in_at)],
    ["Password confirmed", when(profile.session.auth_time)],
    ["Session expires", when(profile.session.expires_at)],
  ]);
  const form = $("#profile-form");
  form.elements.display_name.value = profile.display_name || "";
  form.elements.email.value = profile.email || "";
  $("#profile-version").textContent = `(version ${profile.version})`;
  $("#password-form-username").value = profile.username;
}

// Back to the logged-out state: nothing of the last user stays on the page, the login form is ready.
function loggedOut(text) {
  const username = current ? current.username : "";
  current = null;
  document.body.dataset.auth = "out";
  setStatus(text || "Not logged in");
  $("#profile").replaceChildren();
  $("#sessions tbody").replaceChildren();
  clearActivity();
  $("#profile-form").reset();
  $("#password-form").reset();
  hideConflict();
  hideReauth();
  const login = $("#login-form");
  if (username && !login.elements.username.value) {
    login.elements.username.value = username;
  }
}

// Why a 401's session is gone, by its problem's `reason`.
const EXPIRED = "Your session has expired (it was unused for too long, or reached its maximum age).";
const SESSION_ENDED = {
  expired: EXPIRED,
  // The cookie lives exactly as long as the session (its Max-Age is the session's deadline), so a page that
  // was logged in and now sends no cookie has seen its session expire.
  no_credentials: EXPIRED,
  revoked: "Your session was ended: the password was changed, all sessions were signed out, or the account was disabled.",
  unknown: "Your session was ended elsewhere: logged out, revoked from another device, or closed by a password change.",
};

// Any 401 `unauthenticated`: the page is logged out, says why, and the login form is ready.
function sessionEnded(problem) {
  const wasLoggedIn = current !== null;
  const reason = problem.body.reason;
  if (!wasLoggedIn && reason === "no_credentials") {
    loggedOut(); // nobody was logged in here: nothing ended, nothing to show
    clearProblem();
    return;
  }
  loggedOut("Not logged in: your session has ended");
  explain(`${SESSION_ENDED[reason] || "Your session is no longer valid."} Log in again to continue.`);
  const login = $("#login-form");
  (login.elements.username.value ? login.elements.password : login.elements.username).focus();
}

// --- what the page does about a problem, besides showing its title and detail ---

// By problem code. Each gets the problem and `retry`, which runs the failed action again.
const RECOVERIES = {
  unauthenticated: (problem) => sessionEnded(problem),
  version_conflict: (problem) => profileConflict(),
  reauthentication_required: (problem, retry) => askPassword(problem, retry),
  wrong_current_password: () =>
    explain(
      reauthOpen()
        ? "The password you typed is not right, so nothing was done. Type it again, or cancel. You are still logged in."
        : "The current password you typed is not right, so your password was not changed. You are still logged in.",
    ),
  too_many_attempts: (problem) =>
    explain(
      "Too many wrong passwords were tried for this account, so password checks are paused" +
        (problem.retryAfter
          ? `. Try again in ${inWords(problem.retryAfter)} (after ` +
            `${new Date(Date.now() + problem.retryAfter * 1000).toLocaleTimeString()}).`
          : " for a while."),
    ),
  service_unavailable: (problem) =>
    explain(`The service is busy or down. Try again${problem.retryAfter ? ` in ${inWords(problem.retryAfter)}` : ""}.`),
};

// Shows a problem (title and detail), then does what RECOVERIES says for its code. A recovery's own
// problem (a 401 while reloading the profile after a 412) is handled the same way, once.
async function handle(problem, retry, nested = false) {
  showProblem(problem);
  const recover = RECOVERIES[problem.code];
  if (!recover) {
    return;
  }
  try {
    await recover(problem, retry);
  } catch (err) {
    if (!(err instanceof Problem)) {
      throw err;
    }
    if (nested) {
      showProblem(err);
    } else {
      await handle(err, retry, true);
    }
  }
}

// Runs an action; a problem it raises goes to `handle`, with a retry of the same action.
function action(fn) {
  const run = async (event) => {
    if (event) {
      event.preventDefault();
    }
    clearProblem();
    try {
      await fn(event);
    } catch (err) {
      if (!(err instanceof Problem)) {
        throw err;
      }
      await handle(err, () => run(event));
    }
  };
  return run;
}

// --- step-up: a 403 `reauthentication_required` ---

// The action that asked for the password, run again (once) after POST /reauthenticate.
let afterReauth = null;

function reauthOpen() {
  return !$("#reauth-section").hidden;
}

// Sensitive actions (a new email, listing or revoking other sessions) need the password typed within the
// last `max_age` seconds: the in-page form asks for it.
function askPassword(problem, retry) {
  afterReauth = retry;
  const maxAge = Number(problem.body.max_age);
  explain(
    "For this, confirm it is you: type your password" +
      (Number.isFinite(maxAge) && maxAge > 0 ? ` (it is asked again ${inWords(maxAge)} after you last typed it).` : "."),
  );
  $("#reauth-form-username").value = current ? current.username : "";
  $("#reauth-section").hidden = false;
  $("#reauth-form").elements.password.focus();
}

function hideReauth() {
  afterReauth = null;
  $("#reauth-section").hidden = true;
  $("#reauth-form").reset();
}

async function reauthenticate(event) {
  // The answer is a fresh login: the server sets this browser a new cookie and ends the old session.
  await call("POST", "/reauthenticate", formData(event.target));
  const retry = afterReauth;
  hideReauth();
  showMessage("Password confirmed.");
  if (retry) {
    await retry(); // once: a retry that fails again is handled (and may ask again) like any action
  }
}

// --- profile ---

async function loadProfile() {
  const { data, headers } = await send("GET", "/profile");
  loggedIn(data, headers.get("ETag"));
}

// The fields of the edit form that differ from the profile shown: only those are sent.
function profileEdits() {
  const form = $("#profile-form");
  const edits = {};
  for (const name of ["display_name", "email"]) {
    const value = form.elements[name].value.trim();
    if (value !== (current.profile[name] || "")) {
      edits[name] = value === "" ? null : value; // null removes the field
    }
  }
  return edits;
}

let attempted = null; // the edits of the last save, for a 412

async function saveProfile() {
  const edits = profileEdits();
  if (Object.keys(edits).length === 0) {
    hideConflict();
    showMessage("Nothing to save: the form shows the profile as it is.");
    return;
  }
  attempted = edits;
  // Only if nobody changed the profile since this page loaded it: If-Match names the version shown.
  const { data, headers } = await send("PATCH", "/profile", edits, { "If-Match": current.etag });
  hideConflict();
  loggedIn(data, headers.get("ETag"));
  showMessage(`Profile saved (version ${data.version}).`);
}

// A 412: the profile changed elsewhere. Show the current values, and keep the user's edits to re-apply.
async function profileConflict() {
  const mine = attempted;
  explain(
    "Your profile was changed somewhere else since this page showed it, so your changes were not saved. " +
      "The form now shows the current values.",
  );
  await loadProfile();
  attempted = mine;
  const labels = { display_name: "Display name", email: "Email" };
  definitions(
    $("#conflict-mine"),
    Object.entries(mine || {}).map(([name, value]) => [labels[name], value === null ? "(removed)" : value]),
  );
  $("#conflict").hidden = false;
}

function reapply() {
  const form = $("#profile-form");
  for (const [name, value] of Object.entries(attempted || {})) {
    form.elements[name].value = value || "";
  }
  hideConflict();
  clearProblem();
  showMessage("Your changes are back in the form, over the current version. Save to apply them.");
  $("#profile-save-button").focus();
}

function hideConflict() {
  $("#conflict").hidden = true;
  $("#conflict-mine").replaceChildren();
}

// --- tables ---

// A table cell holding `text` (as text, never as markup); `title`, when given, is its tooltip.
function cell(text, title) {
  const td = document.createElement("td");
  td.textContent = text;
  if (title) {
    td.title = title;
  }
  return td;
}

// A cell holding a button that runs `run` as an action (its problems handled like any other).
function buttonCell(className, label, run) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = className;
  button.textContent = label;
  button.addEventListener("click", action(run));
  const td = document.createElement("td");
  td.append(button);
  return td;
}

// A network as the API gives it (a /24 or /48, never the address), or a dash when it named none.
function network(value) {
  return value || "—";
}

// --- sessions ---

function renderSessions(sessions) {
  const rows = sessions.map((s) => {
    const tr = document.createElement("tr");
    tr.dataset.id = s.id;
    if (s.current) {
      tr.className = "current";
    }
    const place = s.place ? ` (${s.place})` : "";
    const device = cell(s.device || s.user_agent || "Unknown device", s.user_agent || "");
    device.dataset.field = "device";
    const net = cell(network(s.network) + place);
    net.dataset.field = "network";
    tr.append(
      cell(s.id + (s.current ? " (this browser)" : "")),
      cell(when(s.created_at)),
      cell(when(s.last_seen_at)),
      cell(when(s.expires_at)),
      device,
      net,
      buttonCell("revoke", "Revoke", () => revokeOne(s.id, s.current)),
    );
    return tr;
  });
  $("#sessions tbody").replaceChildren(...rows);
}

async function loadSessions() {
  renderSessions((await call("GET", "/sessions")).sessions);
}

async function revokeOne(id, isCurrent) {
  await call("DELETE", `/sessions/${encodeURIComponent(id)}`);
  if (isCurrent) {
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

// --- trusted devices ---

function renderDevices(devices) {
  const rows = devices.map((d) => {
    const tr = document.createElement("tr");
    tr.dataset.id = d.id;
    if (d.current) {
      tr.className = "current";
    }
    tr.append(
      cell((d.device || "Unknown browser") + (d.current ? " (this browser)" : "")),
      cell(when(d.created_at)),
      cell(when(d.last_used_at)),
      buttonCell("revoke-device", "Revoke", () => revokeDevice(d.id, d.device)),
    );
    return tr;
  });
  $("#devices tbody").replaceChildren(...rows);
}

async function loadDevices() {
  renderDevices((await call("GET", "/devices")).devices);
}

async function revokeDevice(id, name) {
  await call("DELETE", `/devices/${encodeURIComponent(id)}`);
  showMessage(`${name || "The device"} is no longer trusted.`);
  await loadDevices();
}

// --- security activity ---

const EVENT_LABELS = {
  login: "Signed in",
  login_new_device: "Signed in from a new device",
  lockout: "Password checks paused: too many wrong passwords",
  password_changed: "Password changed",
  reauthenticated: "Password confirmed",
  session_revoked: "A session was revoked",
  sessions_revoked: "Other sessions were revoked",
  email_changed: "Email changed",
  account_disabled: "Account disabled by an administrator",
  account_enabled: "Account enabled by an administrator",
  password_set_by_admin: "Password set by an administrator",
  sessions_revoked_by_admin: "All sessions revoked by an administrator",
  device_revoked: "A device is no longer trusted",
  session_bound: "A browser bound its session to its key",
  bound_refresh_failed: "A device-bound session was refreshed with a wrong proof",
};

// Words for an event; a type this page does not know yet is shown as it is.
function eventLabel(e) {
  const detail = e.detail || {};
  if (e.type === "sessions_revoked" && detail.include_current) {
    return "All sessions were revoked";
  }
  if (e.type === "device_revoked" && detail.device_name) {
    return `${EVENT_LABELS.device_revoked}: ${detail.device_name}`;
  }
  return EVENT_LABELS[e.type] || e.type;
}

const EVENTS_PAGE = 20;
let eventsNext = null; // the next page's token, or null on the last page

function eventRow(e) {
  const tr = document.createElement("tr");
  tr.dataset.id = e.id;
  tr.dataset.type = e.type;
  const place = (e.detail && e.detail.place) || "—";
  tr.append(
    cell(when(e.at)),
    cell(eventLabel(e), e.type),
    cell(e.device || "—"),
    cell(network(e.network)),
    cell(place),
  );
  return tr;
}

function showEvents(page, append) {
  const rows = page.events.map(eventRow);
  if (append) {
    $("#events tbody").append(...rows);
  } else {
    $("#events tbody").replaceChildren(...rows);
  }
  eventsNext = page.next_page_token;
  $("#events-more-button").hidden = !eventsNext;
}

async function loadEvents() {
  showEvents(await call("GET", `/security-events?limit=${EVENTS_PAGE}`), false);
}

async function moreEvents() {
  if (!eventsNext) {
    return;
  }
  const token = encodeURIComponent(eventsNext);
  showEvents(await call("GET", `/security-events?limit=${EVENTS_PAGE}&page_token=${token}`), true);
}

function clearActivity() {
  $("#devices tbody").replaceChildren();
  $("#events tbody").replaceChildren();
  eventsNext = null;
  $("#events-more-button").hidden = true;
}

// --- forms ---

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
  $("#login-form").elements.username.value = user.username;
}

async function login(event) {
  const result = await call("POST", "/login", formData(event.target));
  event.target.reset();
  await loadProfile();
  showMessage(`Logged in as ${result.username}.`);
  await loadSessions();
}

async function changePassword(event) {
  // The answer is a fresh login: the server sets this browser's new cookie and ends every other session.
  await call("POST", "/profile/password", formData(event.target));
  event.target.reset();
  showMessage("Password changed. Every other session of your account was signed out; this browser stays logged in.");
  await loadProfile();
  await loadSessions();
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
  $("#profile-button").addEventListener(
    "click",
    action(() => {
      hideConflict();
      return loadProfile();
    }),
  );
  $("#profile-form").addEventListener("submit", action(saveProfile));
  $("#reapply-button").addEventListener("click", reapply);
  $("#password-form").addEventListener("submit", action(changePassword));
  $("#reauth-form").addEventListener("submit", action(reauthenticate));
  $("#reauth-cancel-button").addEventListener("click", () => {
    hideReauth();
    clearProblem();
    showMessage("Nothing was done.");
  });
  $("#sessions-button").addEventListener("click", action(loadSessions));
  $("#revoke-others-button").addEventListener("click", action(revokeOthers));
  $("#revoke-all-button").addEventListener("click", action(revokeAll));
  $("#devices-button").addEventListener("click", action(loadDevices));
  $("#events-button").addEventListener("click", action(loadEvents));
  $("#events-more-button").addEventListener("click", action(moreEvents));
  $("#logout-button").addEventListener("click", action(logout));
  // Already logged in (the cookie is there)? Show it. No cookie is no error; an ended session says why.
  action(async () => {
    try {
      await loadProfile();
    } catch (err) {
      if (current === null) {
        loggedOut();
      }
      throw err;
    }
    await loadSessions();
  })().finally(() => {
    document.body.dataset.ready = "true";
  });
});

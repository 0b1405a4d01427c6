// Gateway dashboard: plain JavaScript on the admin API (/client/v4), no build step.
//
// The admin token is kept in sessionStorage (this tab only) and sent as `Authorization: Bearer`;
// it never goes into a URL, a cookie or the console. Every value from the API is put on the page
// as text (textContent), never as HTML: hosts and paths in the request log come from clients.

const API = "/client/v4";
const TOKEN_KEY = "gateway.dashboard.token";
const POLL_MS = 2000;
const SLOW_POLL_MS = 5000; // devices: a few requests per device
const EXPIRY_WARNING_DAYS = 30;

const state = {
  token: sessionStorage.getItem(TOKEN_KEY),
  account: null,
  tab: "certificates",
  certificates: [], // gateway certificates, as listed
  devices: [],
  rules: [],
  postureRules: [],
  rendered: {}, // table id -> signature of what it shows (re-render only on change)
  lastSlow: 0,
  timer: null,
};

const $ = (id) => document.getElementById(id);

// --- building the page: text only ---------------------------------------------------------

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "className") node.className = value;
    else if (key === "onclick") node.addEventListener("click", value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const badge = (text, kind = text) => el("span", { className: `badge ${kind}` }, text);
function setBadge(node, text, kind = text) {
  node.className = `badge ${kind}`;
  node.textContent = text;
}
const short = (id) => (id ? String(id).slice(0, 8) : "");
const shortFingerprint = (fp) => (fp ? fp.split(":").slice(0, 6).join(":") + "…" : "");
const time = (iso) => (iso ? iso.replace("T", " ").replace(/(\.\d+)?Z$/, " UTC") : "");

function ago(iso) {
  if (!iso) return "never";
  const seconds = Math.round((Date.now() - Date.parse(iso)) / 1000);
  if (seconds < 60) return `${Math.max(seconds, 0)} s ago`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.round(seconds / 3600)} h ago`;
  return `${Math.round(seconds / 86400)} days ago`;
}

// Replace a table's rows, unless they would show the same thing (no flicker, no lost clicks).
function fillTable(id, signature, rows, emptyText, columns) {
  if (state.rendered[id] === signature) return;
  state.rendered[id] = signature;
  const body = $(id).querySelector("tbody");
  body.replaceChildren(
    ...(rows.length ? rows : [el("tr", {}, el("td", { className: "empty", colspan: columns }, emptyText))]),
  );
}

function notice(text, kind = "") {
  const box = $("notice");
  box.className = kind;
  box.textContent = text;
  box.hidden = !text;
}

// --- the API --------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${state.token}` };
  const init = { method, headers, cache: "no-store", credentials: "omit", referrerPolicy: "no-referrer" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(API + path, init);
  let envelope = null;
  try {
    envelope = await response.json();
  } catch {
    envelope = null;
  }
  if (!response.ok || !envelope || envelope.success !== true) {
    const message = envelope?.errors?.[0]?.message ?? `HTTP ${response.status} ${response.statusText}`;
    if (response.status === 401 && state.account) signOut(`Signed out: ${message}`);
    throw new ApiError(response.status, message);
  }
  return envelope;
}

const inAccount = (path) => `/accounts/${encodeURIComponent(state.account.id)}${path}`;
const get = async (path) => (await api("GET", inAccount(path))).result;

function failed(error) {
  notice(error instanceof ApiError ? error.message : `The dashboard could not reach the gateway: ${error}`, "error");
}

// --- signing in -----------------------------------------------------------------------------

async function signIn(token) {
  state.token = token;
  let accounts;
  try {
    accounts = (await api("GET", "/accounts")).result;
  } catch (error) {
    state.token = null;
    const why =
      error instanceof ApiError && error.status === 401
        ? `the gateway refused this token (${error.message}). Use the token \`gateway run\` printed, or make one with \`gateway token create\`.`
        : error instanceof ApiError
          ? error.message
          : `the gateway did not answer (${error}).`;
    showSignIn(`Sign-in failed: ${why}`);
    return;
  }
  if (!accounts.length) {
    state.token = null;
    showSignIn("Sign-in failed: this token may not use any account.");
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  state.account = accounts[0];
  state.rendered = {};
  $("account").textContent = `account ${state.account.name || state.account.id}`;
  $("sign-in").hidden = true;
  $("tabs").hidden = false;
  $("sign-out").hidden = false;
  notice("");
  showTab(state.tab);
  startPolling();
}

function showSignIn(error = "") {
  $("sign-in").hidden = false;
  $("tabs").hidden = true;
  $("sign-out").hidden = true;
  $("account").textContent = "";
  for (const section of document.querySelectorAll("section.tab")) section.hidden = true;
  const box = $("sign-in-error");
  box.textContent = error;
  box.hidden = !error;
  $("token").value = "";
  $("token").focus();
}

function signOut(message = "") {
  sessionStorage.removeItem(TOKEN_KEY);
  state.token = null;
  state.account = null;
  stopPolling();
  notice("");
  showSignIn(message);
}

// --- tabs and polling -----------------------------------------------------------------------

function showTab(tab) {
  state.tab = tab;
  for (const button of document.querySelectorAll("#tabs button")) {
    button.classList.toggle("active", button.dataset.tab === tab);
  }
  for (const section of document.querySelectorAll("section.tab")) section.hidden = section.id !== tab;
  state.lastSlow = 0;
  refresh();
}

function startPolling() {
  stopPolling();
  state.timer = setInterval(poll, POLL_MS);
}

function stopPolling() {
  if (state.timer !== null) clearInterval(state.timer);
  state.timer = null;
}

// One refresh at a time: a caller that comes while one runs waits for it, then runs its own.
let running = Promise.resolve();
let queued = 0;
function refresh() {
  queued += 1;
  running = running.then(refreshNow).finally(() => (queued -= 1));
  return running;
}

function poll() {
  if (queued === 0) refresh(); // the timer never piles up refreshes behind a slow one
}

async function refreshNow() {
  if (!state.account) return;
  try {
    if (state.tab === "certificates") await Promise.all([loadCertificates(), loadRotation()]);
    else if (state.tab === "devices") {
      if (Date.now() - state.lastSlow >= SLOW_POLL_MS) {
        state.lastSlow = Date.now();
        await loadDevices();
      }
    } else if (state.tab === "policies") {
      if (!state.lastSlow) {
        state.lastSlow = Date.now(); // rules change rarely: loaded when the tab opens
        await loadPolicies();
      }
    } else if (state.tab === "logs") await loadLogs();
  } catch (error) {
    if (state.account) failed(error);
  }
}

// --- certificates ---------------------------------------------------------------------------

function certificateName(cert) {
  const cn = /CN=([^,]+)/.exec(cert.issuer_raw || "");
  return cn ? cn[1] : cert.issuer_org || "certificate";
}

function expiryCell(cert) {
  const days = (Date.parse(cert.expires_on) - Date.now()) / 86400000;
  const when = el("span", { title: cert.expires_on }, cert.expires_on.slice(0, 10));
  if (days < 0) return [when, " ", badge("expired")];
  if (days < EXPIRY_WARNING_DAYS) return [when, " ", badge(`in ${Math.ceil(days)} days`, "soon")];
  return [when];
}

function devicesCell(devices) {
  if (!devices) return "";
  const { installed, missing, reporting } = devices;
  if (!reporting) return el("span", { className: "muted" }, "no device reports");
  return el(
    "span",
    { title: `${reporting} devices reported their trust stores in the last 7 days` },
    `${installed} of ${reporting} installed`,
    missing ? el("span", { className: "warning" }, ` (${missing} missing)`) : "",
  );
}

async function loadCertificates() {
  const envelope = await api("GET", inAccount("/gateway/certificates"));
  const certs = envelope.result;
  const details = await Promise.all(certs.map((c) => get(`/gateway/certificates/${c.id}`).catch(() => c)));
  state.certificates = details;
  const warnings = envelope.messages.map((m) => m.message);
  const signature = JSON.stringify([details, warnings]);
  if (state.rendered["certificate-table"] === signature) return;
  $("certificate-warnings").replaceChildren(...warnings.map((text) => el("li", {}, text)));
  const rows = details.map((cert) =>
    el(
      "tr",
      { dataset: { certificate: cert.id, status: cert.binding_status } },
      el("td", {}, certificateName(cert), el("br"), el("span", { className: "muted mono" }, short(cert.id))),
      el("td", {}, cert.type),
      el("td", {}, badge(cert.binding_status)),
      el("td", {}, cert.in_use ? badge("in use", "in-use") : ""),
      el("td", { className: "mono", title: cert.fingerprint }, shortFingerprint(cert.fingerprint)),
      el("td", {}, expiryCell(cert)),
      el("td", {}, devicesCell(cert.gateway_devices)),
      el("td", { className: "actions" }, certificateActions(cert)),
    ),
  );
  fillTable("certificate-table", signature, rows, "No certificates.", 8);
}

// --- the CA rotation panel (docs/rotation.md) ----------------------------------------------

const ROTATION_OPEN = ["running", "paused", "held"];

async function loadRotation() {
  // the list (newest first), not .../current: no 404 to log while there never was a rotation
  const rotations = await get("/gateway/certificates/rotations");
  const rotation = rotations.find((r) => ROTATION_OPEN.includes(r.state)) ?? rotations[0] ?? null;
  const signature = JSON.stringify(rotation);
  if (state.rendered.rotation === signature) return;
  state.rendered.rotation = signature;
  const open = rotation !== null && ROTATION_OPEN.includes(rotation.state);
  $("rotate").disabled = open;
  const panel = $("rotation");
  panel.dataset.state = rotation ? rotation.state : "none";
  panel.dataset.step = rotation ? rotation.step : "";
  if (!rotation) {
    $("rotation-state").replaceChildren();
    $("rotation-missing").replaceChildren();
    $("rotation-actions").replaceChildren();
    return;
  }
  const kind = { running: "pending_deployment", held: "block", completed: "available", failed: "block" }[rotation.state];
  $("rotation-state").replaceChildren(badge(rotation.state, kind || "off"), " ", badge(`step ${rotation.step}`, "off"));
  const c = rotation.coverage;
  $("rotation-summary").className = "";
  $("rotation-summary").replaceChildren(
    el("span", { id: "rotation-coverage-text" }, `${c.installed} of ${c.reporting} reporting devices have the new CA (need ${c.required_percent}%)`),
    el("br"),
    el("span", { className: "muted" }, `New ${short(rotation.new_certificate_id)}, replacing ${short(rotation.old_certificate_id) || "none"}; deadline ${time(rotation.deadline)} (then ${rotation.on_deadline}), grace ${rotation.grace}.`),
    el("br"),
    el("span", { className: "muted" }, rotation.message),
  );
  $("rotation-missing").replaceChildren(
    ...(open ? c.missing : []).map((d) => el("li", { dataset: { device: d.device_id } }, `Lacks the new CA: ${d.name} (${short(d.device_id)})`)),
  );
  const buttons = [];
  const action = (label, path, className = "secondary") =>
    buttons.push(el("button", { type: "button", className, dataset: { action: label }, onclick: () => rotationAction(rotation, path) }, label));
  if (rotation.state === "running") action("Pause", "pause");
  if (rotation.state === "paused") action("Resume", "resume", "");
  if (["held", "paused"].includes(rotation.state)) action("Continue", "continue");
  if (open && ["deploy", "install"].includes(rotation.step)) action("Cancel", "cancel", "danger");
  $("rotation-actions").replaceChildren(...buttons);
}

async function rotationAction(rotation, path) {
  await changed(
    () => api("POST", inAccount(`/gateway/certificates/rotations/${rotation.id}/${path}`)),
    `Rotation ${short(rotation.id)}: ${path} done.`,
  );
}

async function rotate() {
  const body = {
    coverage: Number($("rotation-coverage").value),
    deadline: $("rotation-deadline").value.trim(),
    grace: $("rotation-grace").value.trim(),
  };
  await changed(
    () => api("POST", inAccount("/gateway/certificates/rotations"), body),
    "Rotation started: the new CA is turned on once the devices have installed it.",
  );
}

function certificateActions(cert) {
  const buttons = [];
  const action = (label, handler, className = "secondary") =>
    buttons.push(el("button", { type: "button", className, dataset: { action: label }, onclick: () => handler(cert) }, label));
  if (cert.binding_status === "inactive") action("Activate", activate);
  if (cert.binding_status === "available" && !cert.in_use) action("Turn on", turnOn, "");
  if (["available", "pending_deployment"].includes(cert.binding_status) && !cert.in_use) action("Deactivate", deactivate, "danger");
  if (cert.binding_status === "inactive" && !cert.in_use) action("Delete", remove, "danger");
  action("Download .pem", download);
  return buttons;
}

async function changed(work, done) {
  try {
    const envelope = await work();
    const warnings = envelope.messages.map((m) => m.message);
    notice(warnings.length ? `${done} Warning: ${warnings.join(" ")}` : done, warnings.length ? "warning" : "");
  } catch (error) {
    failed(error);
  }
  state.rendered["certificate-table"] = null;
  state.rendered.rotation = null;
  await refresh();
}

async function generate() {
  const days = Number($("validity-days").value);
  const button = $("generate");
  button.disabled = true;
  try {
    await changed(
      () => api("POST", inAccount("/gateway/certificates"), { validity_period_days: days }),
      "Generated a certificate: activate it so that agents install it before you turn it on.",
    );
  } finally {
    button.disabled = false;
  }
}

const activate = (cert) =>
  changed(
    () => api("POST", inAccount(`/gateway/certificates/${cert.id}/activate`)),
    `Activated ${short(cert.id)}: it becomes available once every proxy node has loaded it.`,
  );

async function turnOn(cert) {
  const details = await get(`/gateway/certificates/${cert.id}`).catch(() => cert);
  const devices = details.gateway_devices;
  let warning = "";
  if (devices && devices.missing > 0) {
    warning = `${devices.missing} of ${devices.reporting} reporting devices have not installed this certificate yet: turning it on breaks TLS for them until their agent syncs.`;
  } else if (!devices || !devices.reporting) {
    warning = "No device reports its trust stores: make sure clients trust this CA (Download .pem) before turning it on.";
  }
  const yes = await confirmDialog(
    "Turn on this certificate?",
    `${certificateName(cert)} (${short(cert.id)}) will sign every new inspected connection from now on; the certificate in use now stays available.`,
    warning,
    "Turn on",
  );
  if (!yes) return;
  await changed(
    () => api("PATCH", inAccount("/gateway/configuration"), { settings: { certificate: { id: cert.id } } }),
    `Turned on ${short(cert.id)}: new connections are signed by it.`,
  );
}

async function deactivate(cert) {
  const yes = await confirmDialog(
    "Deactivate this certificate?",
    `${certificateName(cert)} (${short(cert.id)}) stops being offered to agents and proxy nodes unload it.`,
    "",
    "Deactivate",
  );
  if (yes) await changed(() => api("POST", inAccount(`/gateway/certificates/${cert.id}/deactivate`)), `Deactivated ${short(cert.id)}.`);
}

async function remove(cert) {
  const yes = await confirmDialog("Delete this certificate?", `${certificateName(cert)} (${short(cert.id)}) is deleted with its key.`, "", "Delete");
  if (yes) await changed(() => api("DELETE", inAccount(`/gateway/certificates/${cert.id}`)), `Deleted ${short(cert.id)}.`);
}

async function download(cert) {
  try {
    const response = await fetch(`${API}${inAccount(`/gateway/certificates/${cert.id}/download?format=pem`)}`, {
      headers: { Authorization: `Bearer ${state.token}` },
      cache: "no-store",
      credentials: "omit",
    });
    if (!response.ok) throw new ApiError(response.status, `download failed: HTTP ${response.status}`);
    const url = URL.createObjectURL(await response.blob());
    const link = el("a", { href: url, download: `gateway-ca-${cert.id}.pem` });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  } catch (error) {
    failed(error);
  }
}

function confirmDialog(title, text, warning, yesLabel) {
  const dialog = $("confirm");
  $("confirm-title").textContent = title;
  $("confirm-text").textContent = text;
  $("confirm-warning").textContent = warning;
  $("confirm-warning").hidden = !warning;
  $("confirm-yes").textContent = yesLabel;
  return new Promise((resolve) => {
    const finish = (answer) => {
      $("confirm-form").onsubmit = null;
      $("confirm-no").onclick = null;
      dialog.onclose = null;
      if (dialog.open) dialog.close();
      resolve(answer);
    };
    $("confirm-form").onsubmit = (event) => {
      event.preventDefault();
      finish(true);
    };
    $("confirm-no").onclick = () => finish(false);
    dialog.onclose = () => finish(false);
    dialog.showModal();
  });
}

// --- devices --------------------------------------------------------------------------------

async function loadDeviceList() {
  [state.devices, state.postureRules] = await Promise.all([get("/devices"), get("/devices/posture")]);
  for (const id of ["requests-device", "posture-device"]) {
    const select = $(id);
    const keep = select.value;
    const options = state.devices.map((d) => el("option", { value: d.id }, d.name || short(d.id)));
    select.replaceChildren(el("option", { value: "" }, "any"), ...options);
    select.value = keep;
  }
}

// The latest result of each rule for a device, from the posture log (newest first).
function latestResults(entries) {
  const latest = new Map();
  for (const entry of entries) if (entry.rule_id && !latest.has(entry.rule_id)) latest.set(entry.rule_id, entry);
  return latest;
}

function postureCell(results) {
  if (!state.postureRules.length) return el("span", { className: "muted" }, "no posture rules");
  return el(
    "ul",
    { className: "posture" },
    state.postureRules.map((rule) => {
      const entry = results.get(rule.id);
      if (!entry) return el("li", {}, badge("no result", "off"), " ", rule.name);
      const expired = entry.expires_at && Date.parse(entry.expires_at) < Date.now();
      const outcome = expired ? "expired" : entry.outcome;
      return el(
        "li",
        { dataset: { rule: rule.id } },
        badge(outcome),
        " ",
        rule.name,
        el("br"),
        el("span", { className: "muted" }, entry.reason || ""),
        entry.expires_at ? el("span", { className: "muted" }, ` · ${expired ? "expired" : "expires"} ${time(entry.expires_at)}`) : "",
      );
    }),
  );
}

function storesCell(stores) {
  if (!stores || !stores.length) return el("span", { className: "muted" }, "no report");
  const names = new Map(state.certificates.map((c) => [c.fingerprint, `${certificateName(c)} (${short(c.id)})`]));
  return el(
    "ul",
    { className: "stores" },
    stores.map((s) =>
      el(
        "li",
        {},
        el("span", { className: "mono" }, s.store),
        ": ",
        s.installed.length ? s.installed.map((fp) => names.get(fp) || shortFingerprint(fp)).join(", ") : "none",
        s.error ? el("span", { className: "error" }, ` (${s.error})`) : "",
      ),
    ),
  );
}

async function loadDevices() {
  if (!state.certificates.length) state.certificates = (await api("GET", inAccount("/gateway/certificates"))).result;
  await loadDeviceList();
  const rows = await Promise.all(
    state.devices.map(async (device) => {
      const [details, logs] = await Promise.all([
        get(`/devices/${device.id}`),
        get(`/devices/posture/logs?device_id=${encodeURIComponent(device.id)}&per_page=200`),
      ]);
      return { details, results: latestResults(logs) };
    }),
  );
  const signature = JSON.stringify([rows.map((r) => [r.details, [...r.results.values()]]), state.postureRules]);
  fillTable(
    "device-table",
    signature,
    rows.map(({ details, results }) =>
      el(
        "tr",
        { dataset: { device: details.id } },
        el("td", {}, details.name, el("br"), el("span", { className: "muted mono" }, short(details.id)), el("br"), el("span", { className: "muted" }, `${details.device_type} ${details.os_version}`)),
        el("td", {}, details.user?.email || ""),
        el("td", { className: "mono" }, details.ip || ""),
        el("td", { title: details.last_seen }, ago(details.last_seen)),
        el("td", {}, postureCell(results)),
        el("td", {}, storesCell(details.trust_stores)),
      ),
    ),
    "No devices enrolled yet (gateway device token, then gateway agent enroll).",
    6,
  );
}

// --- policies -------------------------------------------------------------------------------

async function loadPolicies() {
  const [rules, apps, postureRules] = await Promise.all([get("/gateway/rules"), allApps(), get("/devices/posture")]);
  state.rules = rules;
  state.postureRules = postureRules;
  const code = (text) => (text ? el("code", {}, text) : el("span", { className: "muted" }, "—"));
  fillTable(
    "rule-table",
    JSON.stringify(rules),
    rules.map((r) =>
      el(
        "tr",
        {},
        el("td", {}, r.precedence),
        el("td", {}, r.name),
        el("td", {}, badge(r.action)),
        el("td", {}, r.enabled ? "yes" : "no"),
        el("td", {}, (r.filters || []).join(", ")),
        el("td", {}, code(r.traffic)),
        el("td", {}, code(r.identity)),
        el("td", {}, code(r.device_posture)),
      ),
    ),
    "No Gateway rules: every request is allowed.",
    8,
  );
  fillTable(
    "app-table",
    JSON.stringify(apps),
    apps.map((a) =>
      el(
        "tr",
        {},
        el("td", {}, a.name),
        el("td", { className: "mono" }, a.domain),
        el("td", {}, (a.policies || []).map((p) => `${p.name} (${p.decision})`).join(" → ") || "none"),
      ),
    ),
    "No Access applications.",
    3,
  );
  const fieldset = $("test-posture");
  const keep = new Map([...fieldset.querySelectorAll("select")].map((s) => [s.dataset.rule, s.value]));
  fieldset.replaceChildren(
    el("legend", {}, "Device posture"),
    ...(postureRules.length
      ? postureRules.map((rule) => {
          const select = el(
            "select",
            { dataset: { rule: rule.id } },
            el("option", { value: "" }, "no result"),
            el("option", { value: "passed" }, "passed"),
            el("option", { value: "failed" }, "failed"),
          );
          select.value = keep.get(rule.id) || "";
          return el("label", {}, rule.name, select);
        })
      : [el("span", { className: "muted" }, "no posture rules")]),
  );
}

async function allApps() {
  const apps = [];
  for (let page = 1; page <= 50; page++) {
    const batch = await get(`/access/apps?page=${page}&per_page=1000`);
    apps.push(...batch);
    if (batch.length < 1000) break;
  }
  return apps;
}

async function testPolicy(event) {
  event.preventDefault();
  const request = { url: $("test-url").value.trim(), method: $("test-method").value };
  if ($("test-src-ip").value.trim()) request.src_ip = $("test-src-ip").value.trim();
  const body = { request };
  const email = $("test-email").value.trim();
  const groups = $("test-groups").value.split(",").map((g) => g.trim()).filter(Boolean);
  if (email || groups.length) body.identity = { ...(email ? { email } : {}), ...(groups.length ? { groups } : {}) };
  const passed = [];
  const failedRules = [];
  for (const select of $("test-posture").querySelectorAll("select")) {
    if (select.value === "passed") passed.push(select.dataset.rule);
    if (select.value === "failed") failedRules.push(select.dataset.rule);
  }
  if (passed.length || failedRules.length) body.posture = { passed, failed: failedRules };
  const box = $("policy-result");
  try {
    const result = (await api("POST", inAccount("/gateway/policy_test"), body)).result;
    setBadge($("policy-action"), result.action);
    $("policy-summary").textContent = result.summary;
    const access = result.access;
    $("policy-access").textContent = access
      ? `Access application ${access.application.name} (${access.application.domain}): ${access.policy ? `policy ${access.policy.name} (${access.policy.decision})` : "no policy matched"}, ${access.allowed ? "allowed" : "denied"}.`
      : `Decided at the ${result.stage} stage; no Access application.`;
    $("policy-trace").textContent = result.trace;
  } catch (error) {
    setBadge($("policy-action"), "error", "block");
    $("policy-summary").textContent = error.message;
    $("policy-access").textContent = "";
    $("policy-trace").textContent = "";
  }
  box.hidden = false;
}

// --- logs -----------------------------------------------------------------------------------

async function loadLogs() {
  if (!state.devices.length || Date.now() - state.lastSlow >= SLOW_POLL_MS) {
    state.lastSlow = Date.now();
    const [certs, rules] = await Promise.all([get("/gateway/certificates"), get("/gateway/rules")]);
    state.certificates = certs;
    state.rules = rules;
    await loadDeviceList();
  }
  await Promise.all([loadRequests(), loadPostureLog()]);
}

async function loadRequests() {
  const query = new URLSearchParams({ limit: "100" });
  if ($("requests-device").value) query.set("device", $("requests-device").value);
  if ($("requests-action").value) query.set("action", $("requests-action").value);
  if ($("requests-host").value.trim()) query.set("host", $("requests-host").value.trim());
  const lines = await get(`/gateway/requests?${query}`);
  const devices = new Map(state.devices.map((d) => [d.id, d.name]));
  const rules = new Map(state.rules.map((r) => [r.id, r.name]));
  const cas = new Map(state.certificates.map((c) => [c.fingerprint, c]));
  $("requests-updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  fillTable(
    "request-table",
    JSON.stringify([lines, [...devices], [...rules], [...cas.keys()]]),
    lines.map((line) => {
      const ca = cas.get(line.ca_fingerprint);
      return el(
        "tr",
        { dataset: { host: line.host, fingerprint: line.ca_fingerprint || "" } },
        el("td", { className: "mono", title: line.time }, time(line.time)),
        el("td", {}, line.device ? devices.get(line.device) || short(line.device) : el("span", { className: "muted" }, "—")),
        el("td", {}, line.user || ""),
        el("td", { className: "mono" }, `${line.method} ${line.scheme}://${line.host}${line.path}`),
        el(
          "td",
          {},
          badge(line.action),
          line.reason ? el("div", { className: "muted" }, line.reason) : "",
          (line.posture || []).map((check) =>
            el("div", { className: "muted" }, `posture ${check.name}: ${check.state}${check.reason ? ` (${check.reason})` : ""}`),
          ),
        ),
        el(
          "td",
          {},
          line.rule || (line.rule_id ? rules.get(line.rule_id) || short(line.rule_id) : ""),
          line.access_policy ? el("div", { className: "muted" }, `Access policy ${line.access_policy}`) : "",
        ),
        el("td", {}, line.status ?? (line.error ? el("span", { className: "error" }, line.error) : "")),
        el(
          "td",
          { className: "ca", title: line.ca_fingerprint || "" },
          line.ca_fingerprint
            ? [ca ? `${certificateName(ca)} (${short(ca.id)})` : "unknown CA", el("br"), el("span", { className: "muted mono" }, shortFingerprint(line.ca_fingerprint))]
            : el("span", { className: "muted" }, "not inspected"),
        ),
      );
    }),
    "No requests logged yet (or none match the filters).",
    8,
  );
}

async function loadPostureLog() {
  const query = new URLSearchParams({ per_page: "100" });
  if ($("posture-device").value) query.set("device_id", $("posture-device").value);
  let entries = await get(`/devices/posture/logs?${query}`);
  const outcome = $("posture-outcome").value;
  if (outcome) entries = entries.filter((e) => e.outcome === outcome);
  $("posture-updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  fillTable(
    "posture-table",
    JSON.stringify(entries),
    entries.map((e) =>
      el(
        "tr",
        {},
        el("td", { className: "mono" }, time(e.timestamp)),
        el("td", {}, e.device_name || short(e.device_id)),
        el("td", {}, e.rule_name || (e.rule_id ? short(e.rule_id) : "—")),
        el("td", {}, badge(e.outcome)),
        el("td", {}, e.reason || ""),
        el("td", { className: "mono" }, time(e.expires_at)),
      ),
    ),
    "No posture reports yet (or none match the filters).",
    6,
  );
}

// --- wiring ---------------------------------------------------------------------------------

function wire() {
  $("sign-in").addEventListener("submit", (event) => {
    event.preventDefault();
    const token = $("token").value.trim();
    $("token").value = "";
    if (token) signIn(token);
  });
  $("sign-out").addEventListener("click", () => signOut());
  for (const button of document.querySelectorAll("#tabs button")) {
    button.addEventListener("click", () => showTab(button.dataset.tab));
  }
  $("generate").addEventListener("click", generate);
  $("rotate").addEventListener("click", rotate);
  $("policy-test").addEventListener("submit", testPolicy);
  for (const id of ["requests-device", "requests-action", "requests-host", "posture-device", "posture-outcome"]) {
    $(id).addEventListener(id.endsWith("host") ? "input" : "change", () => refresh());
  }
  if (state.token) signIn(state.token);
  else showSignIn();
}

wire();

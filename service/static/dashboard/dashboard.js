// The dashboard at GET /: reads the view from the URL fragment, fetches /stats/* with the
// key in the X-API-Key header, draws each answer as a chart (Chart.js, vendored) and as a
// table of its numbers.
//
// The key: from the fragment's `key=` (then kept in sessionStorage and removed from the
// address bar with history.replaceState), else from sessionStorage, else asked for in a form.
// It never goes into a URL, a query string or the console. API data is put in the page with
// textContent only (never innerHTML): event types and property values are user input.

const KEY_STORE = "events.dashboard.key";
const FIELDS = [
  "from", "to", "segment", "rolling", "limit", "granularity", "windows", "steps", "funnel_window",
];
const DEFAULTS = {
  segment: "", rolling: "7,30", limit: "10", granularity: "week", windows: "4", steps: "",
  funnel_window: "604800", // the API's default: 7 days
};
const ALWAYS_IN_FRAGMENT = new Set(["from", "to", "segment"]);
const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2"];
// The API runs a few analytics queries at once per process (EVENTS_QUERY_CONCURRENCY, 2 by
// default) and answers 503 too_many_queries beyond: the page sends at most two at a time and
// retries a 503 after its Retry-After.
const IN_FLIGHT = 2;
const RETRIES = 5;

const $ = (id) => document.getElementById(id);
const charts = new Map();
let generation = 0;

class ApiError extends Error {
  constructor(status, body) {
    const detail = body && typeof body === "object" && body.error ? body.error : null;
    const code = detail && typeof detail.code === "string" ? detail.code : `http_${status}`;
    const message = detail && typeof detail.message === "string" ? detail.message : "";
    super(message ? `${code}: ${message}` : `${code} (HTTP ${status})`);
    this.status = status;
    this.code = code;
  }
}

// --- the key ------------------------------------------------------------------------------

function storedKey() {
  return sessionStorage.getItem(KEY_STORE) || "";
}

function fragmentParams() {
  return new URLSearchParams(location.hash.slice(1));
}

function urlWith(params) {
  const text = params.toString();
  return location.pathname + location.search + (text ? `#${text}` : "");
}

// Moves a `key=` of the fragment into sessionStorage and out of the URL; the other
// parameters (the view) stay, so that the address is still a bookmark of the view.
function takeKeyFromFragment() {
  const params = fragmentParams();
  if (params.has("key")) {
    const key = (params.get("key") || "").trim();
    params.delete("key");
    if (key) sessionStorage.setItem(KEY_STORE, key);
    history.replaceState(history.state, "", urlWith(params));
  }
  return params;
}

// --- the view (the inputs) ----------------------------------------------------------------

function utcDay(offsetDays) {
  const day = new Date();
  day.setUTCDate(day.getUTCDate() + offsetDays);
  return day.toISOString().slice(0, 10);
}

function setInputs(params) {
  const defaults = { ...DEFAULTS, from: utcDay(-13), to: utcDay(0) };
  for (const name of FIELDS) {
    const given = params.get(name);
    $(name).value = given !== null ? given : defaults[name];
  }
}

function readInputs() {
  const view = {};
  for (const name of FIELDS) view[name] = $(name).value.trim();
  return view;
}

function writeFragment(view) {
  const params = new URLSearchParams();
  for (const name of FIELDS) {
    if (ALWAYS_IN_FRAGMENT.has(name) ? view[name] !== "" : view[name] !== DEFAULTS[name]) {
      params.set(name, view[name]);
    }
  }
  history.replaceState(history.state, "", urlWith(params));
}

function list(text) {
  return text.split(",").map((s) => s.trim()).filter((s) => s !== "");
}

// --- the API --------------------------------------------------------------------------------

let running = 0;
const waiting = [];

async function slot(task) {
  if (running >= IN_FLIGHT) await new Promise((resolve) => waiting.push(resolve));
  running += 1;
  try {
    return await task();
  } finally {
    running -= 1;
    const next = waiting.shift();
    if (next) next();
  }
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function getJson(path, query, key) {
  const url = `${path}?${query.toString()}`;
  for (let attempt = 0; ; attempt += 1) {
    const answer = await slot(() =>
      fetch(url, {
        headers: { "X-API-Key": key, Accept: "application/json" },
        cache: "no-store",
        credentials: "omit",
        referrerPolicy: "no-referrer",
      }),
    );
    let body = null;
    try {
      body = await answer.json();
    } catch {
      body = null;
    }
    if (answer.ok) return body;
    if (answer.status === 503 && attempt < RETRIES) {
      const after = Number(answer.headers.get("Retry-After")) || 1;
      await sleep(Math.min(after, 5) * 1000);
      continue;
    }
    throw new ApiError(answer.status, body);
  }
}

function baseQuery(view, extra) {
  const query = new URLSearchParams({ from: view.from, to: view.to });
  if (view.segment) query.append("segment", view.segment);
  for (const [name, value] of Object.entries(extra || {})) query.set(name, value);
  return query;
}

// --- rendering --------------------------------------------------------------------------------

function cell(tag, text, attributes) {
  const element = document.createElement(tag);
  element.textContent = String(text);
  for (const [name, value] of Object.entries(attributes || {})) {
    element.setAttribute(name, String(value));
  }
  return element;
}

function percent(rate) {
  return `${(rate * 100).toFixed(1)} %`;
}

// Rows are arrays of cells: the first is the row's header; a cell is a value or
// {text, value} (value: the exact number, in data-value).
function fillTable(id, headers, rows) {
  const table = $(id);
  const head = document.createElement("tr");
  for (const header of headers) head.append(cell("th", header, { scope: "col" }));
  table.tHead.replaceChildren(head);
  const body = table.tBodies[0];
  body.replaceChildren(
    ...rows.map((row) => {
      const tr = document.createElement("tr");
      row.forEach((value, index) => {
        const given = value !== null && typeof value === "object" ? value : { text: value, value };
        const element = cell(index === 0 ? "th" : "td", given.text, { "data-value": given.value });
        if (index === 0) element.setAttribute("scope", "row");
        if (given.users !== undefined) element.setAttribute("data-users", given.users);
        if (given.rate !== undefined) {
          element.style.setProperty("--rate", String(given.rate));
          if (given.rate >= 0.5) element.classList.add("strong");
        }
        tr.append(element);
      });
      return tr;
    }),
  );
}

function clearSection(id) {
  const section = $(id);
  const table = section.querySelector("table");
  table.tHead.replaceChildren();
  table.tBodies[0].replaceChildren();
  const error = section.querySelector(".error");
  error.textContent = "";
  error.hidden = true;
  charts.get(id)?.destroy();
  charts.delete(id);
  section.removeAttribute("data-state");
}

function sectionError(id, error) {
  const element = $(id).querySelector(".error");
  element.textContent = error.message;
  element.hidden = false;
  $(id).setAttribute("data-state", "error");
}

function draw(id, config) {
  if (typeof window.Chart !== "function") return; // the tables still carry the numbers
  charts.get(id)?.destroy();
  const canvas = $(id).querySelector("canvas");
  const options = {
    animation: false,
    responsive: true,
    maintainAspectRatio: false,
    plugins: { legend: { display: config.data.datasets.length > 1 } },
    ...config.options,
  };
  charts.set(id, new window.Chart(canvas, { ...config, options }));
}

function renderDau(answer) {
  const rows = answer.dau.map((day) => [day.date, day.unique_users]);
  fillTable("dau-table", ["Day", "Active users"], rows);
  draw("dau", {
    type: "line",
    data: {
      labels: answer.dau.map((day) => day.date),
      datasets: [{
        label: "Daily active users", data: answer.dau.map((day) => day.unique_users),
        borderColor: COLORS[0], backgroundColor: COLORS[0], tension: 0.2,
      }],
    },
    options: { scales: { y: { beginAtZero: true, ticks: { precision: 0 } } } },
  });
}

function renderActive(answers) {
  const days = answers[0].active_users.map((day) => day.date);
  const rows = days.map((date, i) => [date, ...answers.map((a) => a.active_users[i].users)]);
  const names = answers.map((a) => (a.window === 7 ? "WAU (7 days)" : a.window === 30
    ? "MAU (30 days)" : `${a.window} days`));
  fillTable("active-table", ["Day", ...names], rows);
  draw("active", {
    type: "line",
    data: {
      labels: days,
      datasets: answers.map((a, i) => ({
        label: names[i], data: a.active_users.map((day) => day.users),
        borderColor: COLORS[i % COLORS.length], backgroundColor: COLORS[i % COLORS.length],
        tension: 0.2,
      })),
    },
    options: { scales: { y: { beginAtZero: true, ticks: { precision: 0 } } } },
  });
}

function renderTop(answer) {
  const rows = answer.top_events.map((e) => [e.event_type, e.count]);
  fillTable("top-table", ["Event type", "Events"], rows);
  draw("top", {
    type: "bar",
    data: {
      labels: answer.top_events.map((e) => e.event_type),
      datasets: [{
        label: "Events", data: answer.top_events.map((e) => e.count),
        backgroundColor: COLORS[0],
      }],
    },
    options: { indexAxis: "y", scales: { x: { beginAtZero: true, ticks: { precision: 0 } } } },
  });
}

function renderRetention(answer) {
  const unit = answer.granularity === "week" ? "Week" : "Day";
  const headers = ["Cohort", "Users"];
  for (let k = 0; k < answer.windows; k += 1) headers.push(`${unit} ${k}`);
  const rows = answer.cohorts.map((cohort) => [
    cohort.start,
    cohort.cohort_size,
    ...cohort.retention.map((w) => ({
      text: `${percent(w.rate)} (${w.active_users})`, value: w.rate, users: w.active_users,
      rate: w.rate,
    })),
  ]);
  fillTable("retention-table", headers, rows);
}

function renderFunnel(answer) {
  const rows = answer.steps.map((step, i) => [
    `${i + 1}. ${step.event_type}`,
    step.users,
    { text: percent(step.conversion), value: step.conversion },
    { text: percent(step.step_conversion), value: step.step_conversion },
  ]);
  fillTable("funnel-table", ["Step", "Users", "Conversion", "From the step before"], rows);
  draw("funnel", {
    type: "bar",
    data: {
      labels: answer.steps.map((step, i) => `${i + 1}. ${step.event_type} (${percent(step.conversion)})`),
      datasets: [{
        label: "Users", data: answer.steps.map((step) => step.users), backgroundColor: COLORS[2],
      }],
    },
    options: { scales: { y: { beginAtZero: true, ticks: { precision: 0 } } } },
  });
}

// --- the page -------------------------------------------------------------------------------

function setState(state, text) {
  document.body.setAttribute("data-state", state);
  $("status").textContent = text;
}

function asError(reason) {
  return reason instanceof Error ? reason : new Error(String(reason));
}

function showError(error) {
  const element = $("error");
  element.textContent = error ? error.message : "";
  element.hidden = !error;
}

function askForKey() {
  $("key-form").hidden = false;
  $("forget-key").hidden = true;
  $("key").focus();
}

const SECTIONS = ["dau", "active", "top", "retention", "funnel"];

async function refresh() {
  const mine = (generation += 1);
  const view = readInputs();
  writeFragment(view);
  showError(null);
  SECTIONS.forEach(clearSection);
  const key = storedKey();
  if (!key) {
    setState("need-key", "An API key with the read scope is needed.");
    askForKey();
    return;
  }
  $("key-form").hidden = true;
  $("forget-key").hidden = false;
  setState("loading", "Loading…");
  const steps = list(view.steps);
  $("funnel").querySelector(".hint").hidden = steps.length > 0;
  const jobs = [
    ["dau", () => getJson("/stats/dau", baseQuery(view), key), renderDau],
    [
      "active",
      () => Promise.all((list(view.rolling).length ? list(view.rolling) : ["7"]).map((window) =>
        getJson("/stats/active-users", baseQuery(view, { window }), key))),
      renderActive,
    ],
    ["top", () => getJson("/stats/top-events", baseQuery(view, { limit: view.limit }), key), renderTop],
    [
      "retention",
      () => getJson("/stats/retention/cohorts",
        baseQuery(view, { windows: view.windows, granularity: view.granularity }), key),
      renderRetention,
    ],
  ];
  if (steps.length) {
    jobs.push([
      "funnel",
      () => getJson("/stats/funnel",
        baseQuery(view, { steps: steps.join(","), window: view.funnel_window }), key),
      renderFunnel,
    ]);
  }
  const outcomes = await Promise.allSettled(jobs.map(async ([id, load, render]) => {
    const answer = await load();
    if (mine !== generation) return;
    render(answer);
    $(id).setAttribute("data-state", "ready");
  }));
  if (mine !== generation) return;
  const failures = outcomes.filter((o) => o.status === "rejected").map((o) => o.reason);
  const denied = failures.find((e) => e instanceof ApiError && (e.status === 401 || e.status === 403));
  if (denied) {
    // A wrong key (or one without the read scope): nothing of the answers is shown.
    sessionStorage.removeItem(KEY_STORE);
    SECTIONS.forEach(clearSection);
    showError(denied);
    setState("error", "The key was refused.");
    askForKey();
    return;
  }
  outcomes.forEach((outcome, j) => {
    if (outcome.status === "rejected") sectionError(jobs[j][0], asError(outcome.reason));
  });
  if (failures.length) {
    showError(asError(failures[0]));
    setState("error", `${failures.length} of ${jobs.length} queries failed.`);
  } else {
    setState("ready", `Updated ${new Date().toISOString().slice(0, 19).replace("T", " ")} UTC`);
  }
}

let pending = null;
function refreshSoon() {
  clearTimeout(pending);
  pending = setTimeout(refresh, 250);
}

function start() {
  setInputs(takeKeyFromFragment());
  $("inputs").addEventListener("submit", (event) => {
    event.preventDefault();
    refresh();
  });
  $("inputs").addEventListener("change", refreshSoon);
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("key").value.trim();
    $("key").value = "";
    if (key) sessionStorage.setItem(KEY_STORE, key);
    refresh();
  });
  $("forget-key").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_STORE);
    refresh();
  });
  window.addEventListener("hashchange", () => {
    setInputs(takeKeyFromFragment());
    refresh();
  });
  refresh();
}

start();

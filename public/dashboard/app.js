// The dashboard: a page of this worker's own API, same origin, no build step. The API key
// lives in sessionStorage only and goes out only as the Authorization header of calls to
// this origin. Everything the API answers is put on the page as text (textContent),
// never as markup, so a payload or tag holding HTML shows its characters and runs nothing.
import {
  FILTERS, countByStatus, decodedPayload, environmentOf, filtersFrom, formatDuration,
  chartGeometry, formatTime, lifeOf, listQuery, pretty, statusTone,
} from "./format.js";

const KEY = "trigger-edge.apiKey";
const REFRESH_MS = 3000;
const main = document.getElementById("main");
let refreshTimer = null;

// ---------------------------------------------------------------------------------------
// Small DOM helpers: elements with text, never HTML.

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "text") node.textContent = String(value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function statusBadge(status) {
  return el("span", { class: `status ${statusTone(status)}`, text: status ?? "—" });
}

function show(...nodes) {
  main.replaceChildren(...nodes);
}

function pageUrl(params) {
  const query = new URLSearchParams(params).toString();
  return `/dashboard/${query ? `?${query}` : ""}`;
}

function go(params) {
  history.pushState(null, "", pageUrl(params));
  render();
}

// ---------------------------------------------------------------------------------------
// The API, with the key.

class Refused extends Error {}

async function api(method, path, body) {
  const key = sessionStorage.getItem(KEY);
  if (!key) throw new Refused("Not signed in");
  const headers = { authorization: `Bearer ${key}` };
  if (body !== undefined) headers["content-type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "omit",
  });
  const text = await response.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = null;
  }
  if (response.status === 401) throw new Refused(json?.error ?? "The API key was refused");
  if (!response.ok) throw new Error(json?.error ?? `${response.status} ${response.statusText}`);
  return json;
}

// ---------------------------------------------------------------------------------------
// Sign-in.

function signIn(message) {
  stopRefresh();
  document.getElementById("nav").hidden = true;
  document.getElementById("environment").hidden = true;
  document.getElementById("sign-out").hidden = true;
  const input = el("input", { id: "api-key", type: "password", autocomplete: "off", required: true });
  const error = el("p", { class: "error", role: "alert", text: message ?? "" });
  const form = el(
    "form",
    {
      class: "signin",
      onsubmit: async (event) => {
        event.preventDefault();
        const key = input.value.trim();
        if (!environmentOf(key)) {
          error.textContent = "That is not a secret key (tr_dev_, tr_stg_, tr_prod_ or tr_preview_).";
          return;
        }
        sessionStorage.setItem(KEY, key);
        try {
          await api("GET", "/api/v1/runs?page[size]=1");
        } catch (e) {
          sessionStorage.removeItem(KEY);
          error.textContent = e instanceof Refused ? "That API key was refused." : e.message;
          return;
        }
        render();
      },
    },
    el("h1", { text: "Sign in" }),
    el("label", { for: "api-key" }, "API key", input),
    el("button", { type: "submit", class: "primary", text: "Sign in" }),
    error,
    el("p", { class: "note", text: "The key stays in this tab (sessionStorage) and is sent only to this worker." }),
  );
  show(form);
  input.focus();
}

function signedIn(view) {
  const key = sessionStorage.getItem(KEY);
  const environment = document.getElementById("environment");
  environment.textContent = environmentOf(key) ?? "";
  environment.hidden = false;
  document.getElementById("sign-out").hidden = false;
  const nav = document.getElementById("nav");
  nav.hidden = false;
  for (const link of nav.querySelectorAll("a")) {
    if (link.dataset.view === view) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

// ---------------------------------------------------------------------------------------
// Runs.

function stopRefresh() {
  if (refreshTimer) clearInterval(refreshTimer);
  refreshTimer = null;
}

async function runsView(params) {
  const filters = filtersFrom(params.toString());
  const heading = el("h1", { text: "Runs" });
  const inputs = {};
  const field = (name, label, control) => {
    inputs[name] = control;
    return el("label", {}, label, control);
  };
  const statusSelect = el(
    "select",
    { name: "status" },
    el("option", { value: "", text: "any" }),
    ...["QUEUED", "DELAYED", "EXECUTING", "REATTEMPTING", "COMPLETED", "FAILED", "CANCELED", "EXPIRED", "CRASHED", "SYSTEM_FAILURE", "TIMED_OUT"].map((s) =>
      el("option", { value: s, text: s, selected: filters.status === s }),
    ),
  );
  const text = (name) => el("input", { name, value: filters[name] ?? "", size: 14 });
  const form = el(
    "form",
    {
      class: "filters",
      role: "search",
      onsubmit: (event) => {
        event.preventDefault();
        const next = { view: "runs" };
        for (const name of FILTERS) {
          const value = inputs[name].value.trim();
          if (value) next[name] = value;
        }
        go(next);
      },
    },
    field("status", "Status", statusSelect),
    field("task", "Task", text("task")),
    field("tag", "Tag", text("tag")),
    field("batch", "Batch", text("batch")),
    field("queue", "Queue", text("queue")),
    field("period", "Period (1h, 1d)", text("period")),
    el("button", { type: "submit", text: "Filter" }),
    el("button", { type: "button", text: "Clear", onclick: () => go({ view: "runs" }) }),
  );
  const refresh = el("input", { type: "checkbox", id: "auto-refresh", checked: sessionStorage.getItem("trigger-edge.refresh") !== "off" });
  const body = el("tbody");
  const pager = el("div", { class: "bar" });
  const state = el("p", { class: "note", role: "status" });
  const table = el(
    "div",
    { class: "table-wrap" },
    el(
      "table",
      {},
      el("thead", {}, el("tr", {}, ...["Run", "Task", "Status", "Tags", "Created", "Started", "Duration", "Attempts", "Queue"].map((h) => el("th", { scope: "col", text: h })))),
      body,
    ),
  );
  show(
    heading,
    form,
    el("div", { class: "bar" }, el("label", { class: "inline" }, el("span", { text: "Auto-refresh" }), refresh), state),
    table,
    pager,
  );
  const load = async () => {
    try {
      const page = await api("GET", `/api/v1/runs?${listQuery(filters, { after: params.get("after"), before: params.get("before") })}`);
      body.replaceChildren(
        ...page.data.map((run) =>
          el(
            "tr",
            {},
            el("td", {}, el("a", { href: pageUrl({ view: "run", id: run.id }), text: run.id })),
            el("td", { text: run.taskIdentifier }),
            el("td", {}, statusBadge(run.status)),
            el("td", { class: "wrap" }, ...(run.tags ?? []).map((t) => el("span", { class: "tag", text: t }))),
            el("td", { text: formatTime(run.createdAt) }),
            el("td", { text: formatTime(run.startedAt) }),
            el("td", { text: formatDuration(run.durationMs ?? (run.startedAt && run.finishedAt ? Date.parse(run.finishedAt) - Date.parse(run.startedAt) : undefined)) }),
            el("td", { text: run.attemptCount ?? "—" }),
            el("td", { text: run.queue ?? "—" }),
          ),
        ),
      );
      if (page.data.length === 0) body.replaceChildren(el("tr", {}, el("td", { colspan: 9, class: "note", text: "No runs." })));
      const base = { view: "runs", ...filters };
      pager.replaceChildren(
        page.pagination?.previous ? el("a", { href: pageUrl({ ...base, before: page.pagination.previous }), text: "← Newer" }) : "",
        page.pagination?.next ? el("a", { href: pageUrl({ ...base, after: page.pagination.next }), text: "Older →" }) : "",
      );
      state.textContent = `Updated ${new Date().toLocaleTimeString()}`;
    } catch (e) {
      if (e instanceof Refused) return signIn(e.message);
      state.textContent = e.message;
    }
  };
  const schedule = () => {
    stopRefresh();
    if (refresh.checked) refreshTimer = setInterval(load, REFRESH_MS);
  };
  refresh.addEventListener("change", () => {
    sessionStorage.setItem("trigger-edge.refresh", refresh.checked ? "on" : "off");
    schedule();
  });
  await load();
  schedule();
}

// ---------------------------------------------------------------------------------------
// One run.

/** A button that asks once more, in the page, before it acts. */
function confirmed(label, question, act, result) {
  const holder = el("span", {});
  const ask = el("button", {
    type: "button",
    text: label,
    onclick: () => {
      holder.replaceChildren(
        el("span", { text: question }),
        el("button", {
          type: "button",
          class: "primary",
          text: `Yes, ${label.toLowerCase()}`,
          onclick: async () => {
            try {
              result.textContent = await act();
              result.className = "note";
            } catch (e) {
              result.textContent = e.message;
              result.className = "error";
            }
            holder.replaceChildren(ask);
          },
        }),
        el("button", { type: "button", text: "No", onclick: () => holder.replaceChildren(ask) }),
      );
    },
  });
  holder.append(ask);
  return holder;
}

async function runView(params) {
  const id = params.get("id") ?? "";
  const run = await api("GET", `/api/v3/runs/${encodeURIComponent(id)}`);
  const result = el("p", { class: "note", role: "status" });
  const actions = el("div", { class: "bar" });
  const finished = ["COMPLETED", "FAILED", "CANCELED", "EXPIRED", "CRASHED", "SYSTEM_FAILURE", "TIMED_OUT"].includes(run.status);
  if (!finished) {
    actions.append(
      confirmed("Cancel", `Cancel ${run.id}?`, async () => {
        await api("POST", `/api/v2/runs/${encodeURIComponent(run.id)}/cancel`, {});
        setTimeout(() => render(), 300);
        return "Cancelled.";
      }, result),
    );
  }
  actions.append(
    confirmed("Replay", `Replay ${run.id} as a new run?`, async () => {
      const replay = await api("POST", `/api/v1/runs/${encodeURIComponent(run.id)}/replay`, {});
      return `Replayed as ${replay.id}.`;
    }, result),
  );
  if (run.status === "DELAYED") {
    const delay = el("input", { "aria-label": "New delay", value: "1m", size: 8 });
    actions.append(
      delay,
      confirmed("Reschedule", "Move its start?", async () => {
        await api("POST", `/api/v1/runs/${encodeURIComponent(run.id)}/reschedule`, { delay: delay.value });
        setTimeout(() => render(), 300);
        return "Rescheduled.";
      }, result),
    );
  }
  if (run.idempotencyKey) {
    actions.append(
      confirmed("Reset idempotency key", "Forget its idempotency key?", async () => {
        await api("POST", `/api/v1/idempotencyKeys/${encodeURIComponent(run.idempotencyKey)}/reset`, { taskIdentifier: run.taskIdentifier });
        return "The key no longer holds.";
      }, result),
    );
  }
  const facts = [
    ["Status", statusBadge(run.status)],
    ["Task", run.taskIdentifier],
    ["Queue", run.queue ?? "—"],
    ["Concurrency key", run.concurrencyKey ?? "—"],
    ["Batch", run.batchId ? el("a", { href: pageUrl({ view: "batch", id: run.batchId }), text: run.batchId }) : "—"],
    ["Idempotency key", run.idempotencyKey ?? "—"],
    ["Key holds until", run.idempotencyKey ? formatTime(run.idempotencyKeyExpiresAt) : "—"],
    ["Tags", (run.tags ?? []).join(", ") || "—"],
    ["Created", formatTime(run.createdAt)],
    ["Delayed until", formatTime(run.delayedUntil)],
    ["TTL", run.ttl ?? "—"],
    ["Started", formatTime(run.startedAt)],
    ["Finished", formatTime(run.finishedAt)],
    ["Duration", formatDuration(run.durationMs)],
    ["Attempts", run.attemptCount ?? 0],
  ];
  const block = (title, value) => [el("h2", { text: title }), el("pre", { text: pretty(value) })];
  const timeline = lifeOf(run).map((step) =>
    el(
      "tr",
      {},
      el("td", { text: step.what }),
      el("td", {}, step.status ? statusBadge(step.status) : ""),
      el("td", { text: formatTime(step.at) }),
      el("td", { text: step.until ? formatTime(step.until) : "" }),
      el("td", { text: step.until ? formatDuration(Date.parse(step.until) - Date.parse(step.at)) : "" }),
      el("td", { class: "wrap", text: step.error ?? "" }),
    ),
  );
  show(
    el("p", {}, el("a", { href: pageUrl({ view: "runs" }), text: "← Runs" })),
    el("h1", { text: run.id }),
    actions,
    result,
    el("dl", {}, ...facts.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", {}, v)])),
    el("h2", { text: "Timeline" }),
    el(
      "div",
      { class: "table-wrap" },
      el(
        "table",
        { id: "timeline" },
        el("thead", {}, el("tr", {}, ...["Step", "Status", "At", "Until", "Took", "Error"].map((h) => el("th", { scope: "col", text: h })))),
        el("tbody", {}, ...timeline),
      ),
    ),
    ...block("Payload", decodedPayload(run.payload, run.payloadType)),
    ...block("Output", run.output),
    ...block("Error", run.error),
    ...block("Metadata", run.metadata),
  );
}

// ---------------------------------------------------------------------------------------
// A batch.

async function batchView(params) {
  const id = params.get("id") ?? "";
  const batch = await api("GET", `/api/v2/batches/${encodeURIComponent(id)}`);
  // Its runs' statuses, from the list filtered by the batch, a page of 100 at a time.
  const runs = [];
  let after;
  do {
    const page = await api("GET", `/api/v1/runs?${listQuery({ batch: batch.id }, { size: 100, after })}`);
    runs.push(...page.data);
    after = page.pagination?.next;
  } while (after && runs.length < 1000);
  const counts = countByStatus(runs);
  const errors = batch.processing?.errors ?? [];
  show(
    el("p", {}, el("a", { href: pageUrl({ view: "runs", batch: batch.id }), text: "← Its runs in the list" })),
    el("h1", { text: batch.id }),
    el(
      "dl",
      {},
      ...[
        ["Status", statusBadge(batch.status)],
        ["Runs", batch.runCount],
        ["Idempotency key", batch.idempotencyKey ?? "—"],
        ["Created", formatTime(batch.createdAt)],
        ["Processed", formatTime(batch.processing?.completedAt)],
      ].flatMap(([k, v]) => [el("dt", { text: k }), el("dd", {}, v)]),
    ),
    el("h2", { text: "Runs by status" }),
    el("div", { class: "bar" }, ...counts.map(([status, n]) => el("span", {}, statusBadge(status), ` ${n}`))),
    el("h2", { text: "Runs" }),
    el(
      "div",
      { class: "table-wrap" },
      el(
        "table",
        {},
        el("thead", {}, el("tr", {}, ...["Run", "Status", "Created", "Duration"].map((h) => el("th", { scope: "col", text: h })))),
        el(
          "tbody",
          {},
          ...runs.map((run) =>
            el(
              "tr",
              {},
              el("td", {}, el("a", { href: pageUrl({ view: "run", id: run.id }), text: run.id })),
              el("td", {}, statusBadge(run.status)),
              el("td", { text: formatTime(run.createdAt) }),
              el("td", { text: formatDuration(run.durationMs) }),
            ),
          ),
        ),
      ),
    ),
    el("h2", { text: "Processing errors" }),
    errors.length === 0
      ? el("p", { class: "note", text: "None." })
      : el(
          "table",
          {},
          el("thead", {}, el("tr", {}, ...["Item", "Task", "Error", "Code"].map((h) => el("th", { scope: "col", text: h })))),
          el("tbody", {}, ...errors.map((e) => el("tr", {}, el("td", { text: e.index }), el("td", { text: e.taskIdentifier }), el("td", { class: "wrap", text: e.error }), el("td", { text: e.errorCode ?? "—" })))),
        ),
  );
}

// ---------------------------------------------------------------------------------------
// Activity.

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  node.append(...children);
  return node;
}

async function activityView(params) {
  const period = params.get("period") === "1d" ? "1d" : "1h";
  const data = await api("GET", `/api/v1/activity?period=${period}`);
  const series = [["created", "Created"], ["completed", "Completed"], ["failed", "Failed"]];
  const { width, height, bars } = chartGeometry(data.buckets, series.map(([k]) => k));
  const chart = svg(
    "svg",
    { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": `Runs per ${period === "1h" ? "minute over the last hour" : "hour over the last day"}`, class: "chart" },
    ...bars.map((b) => svg("rect", { x: b.x, y: b.y, width: b.width, height: b.height, class: `bar ${b.series}` }, svg("title", {}, `${b.series} ${b.value} at ${formatTime(b.at)}`))),
  );
  const totals = Object.fromEntries(series.map(([k]) => [k, data.buckets.reduce((n, b) => n + b[k], 0)]));
  show(
    el("h1", { text: "Activity" }),
    el(
      "div",
      { class: "bar" },
      el("a", { href: pageUrl({ view: "activity", period: "1h" }), "aria-current": period === "1h" ? "page" : null, text: "Last hour, by minute" }),
      el("a", { href: pageUrl({ view: "activity", period: "1d" }), "aria-current": period === "1d" ? "page" : null, text: "Last day, by hour" }),
    ),
    el("div", { class: "legend bar" }, ...series.map(([k, label]) => el("span", { class: `key ${k}`, text: `${label}: ${totals[k]}` }))),
    chart,
    el(
      "details",
      {},
      el("summary", { text: "As a table" }),
      el(
        "table",
        { id: "activity-table" },
        el("thead", {}, el("tr", {}, ...["From", "Created", "Completed", "Failed"].map((h) => el("th", { scope: "col", text: h })))),
        el("tbody", {}, ...data.buckets.filter((b) => b.created || b.completed || b.failed).map((b) => el("tr", {}, el("td", { text: formatTime(b.at) }), el("td", { text: b.created }), el("td", { text: b.completed }), el("td", { text: b.failed })))),
      ),
    ),
  );
}

// ---------------------------------------------------------------------------------------
// Queues.

async function queuesView() {
  const list = await api("GET", "/api/v1/queues?perPage=100");
  const result = el("p", { class: "note", role: "status" });
  const ref = (q) => `/api/v1/queues/${encodeURIComponent(q.id)}`;
  const act = async (promise, text) => {
    try {
      await promise;
      result.textContent = text;
      await queuesView();
    } catch (e) {
      result.textContent = e.message;
    }
  };
  const rows = list.data.map((q) => {
    const limit = el("input", { "aria-label": `Limit of ${q.name}`, type: "number", min: 0, size: 5 });
    return el(
      "tr",
      {},
      el("td", { text: q.name }),
      el("td", { text: q.type }),
      el("td", { text: q.running }),
      el("td", { text: q.queued }),
      el("td", { text: q.concurrencyLimit ?? "none" }),
      el("td", { text: q.concurrency?.override ?? "—" }),
      el("td", { text: q.paused ? "paused" : "running" }),
      el(
        "td",
        {},
        el("button", {
          type: "button",
          text: q.paused ? `Resume ${q.name}` : `Pause ${q.name}`,
          onclick: () => act(api("POST", `${ref(q)}/pause`, { type: "id", action: q.paused ? "resume" : "pause" }), q.paused ? `Resumed ${q.name}.` : `Paused ${q.name}.`),
        }),
        limit,
        el("button", {
          type: "button",
          text: "Override",
          onclick: () => act(api("POST", `${ref(q)}/concurrency/override`, { type: "id", concurrencyLimit: Number(limit.value) }), `Overrode ${q.name}.`),
        }),
        el("button", { type: "button", text: "Reset", onclick: () => act(api("POST", `${ref(q)}/concurrency/reset`, { type: "id" }), `Reset ${q.name}.`) }),
      ),
    );
  });
  show(
    el("h1", { text: "Queues" }),
    result,
    el(
      "div",
      { class: "table-wrap" },
      el("table", {}, el("thead", {}, el("tr", {}, ...["Queue", "Type", "Running", "Queued", "Limit", "Override", "State", ""].map((h) => el("th", { scope: "col", text: h })))), el("tbody", {}, ...rows)),
    ),
  );
}

// ---------------------------------------------------------------------------------------
// Schedules.

async function schedulesView() {
  const list = await api("GET", "/api/v1/schedules?perPage=100");
  const result = el("p", { class: "note", role: "status" });
  const rows = list.data.map((s) =>
    el(
      "tr",
      {},
      el("td", { text: s.id }),
      el("td", { text: s.task }),
      el("td", { text: s.type }),
      el("td", { text: s.generator.expression }),
      el("td", { class: "wrap", text: s.generator.description }),
      el("td", { text: s.timezone }),
      el("td", { text: formatTime(s.nextRun) }),
      el("td", { text: s.active ? "active" : "inactive" }),
      el(
        "td",
        {},
        el("button", {
          type: "button",
          text: s.active ? "Deactivate" : "Activate",
          onclick: async () => {
            try {
              await api("POST", `/api/v1/schedules/${encodeURIComponent(s.id)}/${s.active ? "deactivate" : "activate"}`);
              await schedulesView();
            } catch (e) {
              result.textContent = e.message;
            }
          },
        }),
      ),
    ),
  );
  show(
    el("h1", { text: "Schedules" }),
    result,
    el(
      "div",
      { class: "table-wrap" },
      el("table", {}, el("thead", {}, el("tr", {}, ...["Schedule", "Task", "Type", "Cron", "When", "Time zone", "Next run", "State", ""].map((h) => el("th", { scope: "col", text: h })))), el("tbody", {}, ...rows)),
    ),
  );
}

// ---------------------------------------------------------------------------------------

async function render() {
  stopRefresh();
  if (!sessionStorage.getItem(KEY)) return signIn();
  const params = new URLSearchParams(location.search);
  const view = params.get("view") ?? "runs";
  signedIn(view === "run" || view === "batch" ? "runs" : view);
  try {
    if (view === "run") await runView(params);
    else if (view === "batch") await batchView(params);
    else if (view === "queues") await queuesView();
    else if (view === "activity") await activityView(params);
    else if (view === "schedules") await schedulesView();
    else await runsView(params);
  } catch (e) {
    if (e instanceof Refused) return signIn(e.message);
    show(el("p", { class: "error", role: "alert", text: e.message }));
  }
}

document.getElementById("sign-out").addEventListener("click", () => {
  sessionStorage.removeItem(KEY);
  history.pushState(null, "", "/dashboard/");
  render();
});
document.addEventListener("click", (event) => {
  // Links within the page move without reloading it.
  const link = event.target.closest?.("a[href^='/dashboard/']");
  if (!link || event.metaKey || event.ctrlKey || event.shiftKey) return;
  event.preventDefault();
  history.pushState(null, "", link.getAttribute("href"));
  render();
});
window.addEventListener("popstate", render);
render();

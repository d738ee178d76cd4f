// The dashboard's pure pieces: formatting, the environment a key opens, and the list
// query built from the filters (kept in the page's URL so a view can be shared). No DOM
// here: tests/dashboard/format.test.mjs runs these under `node --test`.

/** The tone a status is shown in (a class name), beside its text label. */
const TONES = {
  COMPLETED: "ok",
  CANCELED: "muted",
  EXPIRED: "muted",
  FAILED: "bad",
  CRASHED: "bad",
  SYSTEM_FAILURE: "bad",
  TIMED_OUT: "bad",
  INTERRUPTED: "bad",
  EXECUTING: "busy",
  REATTEMPTING: "busy",
  DEQUEUED: "busy",
  QUEUED: "wait",
  DELAYED: "wait",
  PENDING: "wait",
  PENDING_VERSION: "wait",
  WAITING_FOR_DEPLOY: "wait",
  WAITING: "wait",
  FROZEN: "wait",
};

export function statusTone(status) {
  return TONES[status] ?? "muted";
}

/** `1,234 ms` → `1.2 s`, `2m 05s`, `1h 02m`; `—` when unknown. */
export function formatDuration(ms) {
  if (typeof ms !== "number" || !Number.isFinite(ms) || ms < 0) return "—";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  const s = Math.floor(ms / 1000);
  if (s < 3600) return `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(s / 3600)}h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
}

/** An ISO instant as `2026-12-03 10:15:02` (UTC), `—` when absent. */
export function formatTime(iso) {
  if (typeof iso !== "string" || iso === "") return "—";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return "—";
  return d.toISOString().replace("T", " ").slice(0, 19);
}

const ENVIRONMENTS = [
  ["tr_dev_", "Development"],
  ["tr_stg_", "Staging"],
  ["tr_prod_", "Production"],
  ["tr_preview_", "Preview"],
];

/** The environment a secret key opens, by its prefix; `null` for anything else. */
export function environmentOf(key) {
  if (typeof key !== "string") return null;
  const found = ENVIRONMENTS.find(([prefix]) => key.startsWith(prefix) && key.length > prefix.length);
  return found ? found[1] : null;
}

/** The runs view's filters, in the order the form shows them. */
export const FILTERS = ["status", "task", "tag", "batch", "queue", "period"];

const PARAMS = {
  status: "filter[status]",
  task: "filter[taskIdentifier]",
  tag: "filter[tag]",
  batch: "filter[batch]",
  queue: "filter[queue]",
  period: "filter[createdAt][period]",
};

/** The filters a page URL's query holds (unknown parameters are ignored). */
export function filtersFrom(search) {
  const params = new URLSearchParams(search);
  const filters = {};
  for (const name of FILTERS) {
    const value = (params.get(name) ?? "").trim();
    if (value !== "") filters[name] = value;
  }
  return filters;
}

/** `GET /api/v1/runs`'s query for these filters and page. */
export function listQuery(filters, { size = 25, after, before } = {}) {
  const params = new URLSearchParams();
  for (const name of FILTERS) {
    const value = (filters[name] ?? "").trim();
    if (value !== "") params.set(PARAMS[name], value);
  }
  params.set("page[size]", String(size));
  if (after) params.set("page[after]", after);
  if (before) params.set("page[before]", before);
  return params.toString();
}

/** A run's payload as the page shows it: superjson text decoded to its `json`. */
export function decodedPayload(payload, payloadType) {
  if (payloadType === "application/super+json" && typeof payload === "string") {
    try {
      return JSON.parse(payload).json;
    } catch {
      return payload;
    }
  }
  return payload;
}

/** Any JSON value as indented text (`—` for none). */
export function pretty(value) {
  if (value === undefined || value === null) return "—";
  return typeof value === "string" ? value : JSON.stringify(value, null, 2);
}

/** `[status, count]` of `runs`, most frequent first (then by name). */
export function countByStatus(runs) {
  const counts = new Map();
  for (const run of runs) counts.set(run.status, (counts.get(run.status) ?? 0) + 1);
  return [...counts].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
}

/**
 * A run's life as steps for its timeline: created, delayed until, each attempt (its
 * status, start, end and error message), finished.
 */
export function lifeOf(run) {
  const steps = [{ what: "Created", at: run.createdAt }];
  if (run.delayedUntil) steps.push({ what: "Delayed until", at: run.delayedUntil });
  for (const [i, attempt] of (run.attempts ?? []).entries()) {
    steps.push({
      what: `Attempt ${i + 1}`,
      status: attempt.status,
      at: attempt.startedAt ?? attempt.createdAt,
      until: attempt.completedAt,
      error: attempt.error?.message ?? (attempt.error ? JSON.stringify(attempt.error) : undefined),
    });
  }
  if (run.finishedAt) steps.push({ what: "Finished", status: run.status, at: run.finishedAt });
  else if (run.expiredAt) steps.push({ what: "Expired", status: run.status, at: run.expiredAt });
  return steps;
}

/**
 * Bars of a grouped bar chart: for each bucket, one bar per series side by side, heights
 * scaled to the largest value (at least 1), in a `width` × `height` box.
 */
export function chartGeometry(buckets, series, { width = 960, height = 220 } = {}) {
  const max = Math.max(1, ...buckets.flatMap((b) => series.map((s) => b[s] ?? 0)));
  const slot = width / Math.max(1, buckets.length);
  const barWidth = Math.max(1, (slot * 0.8) / series.length);
  const bars = [];
  buckets.forEach((bucket, i) => {
    series.forEach((name, j) => {
      const value = bucket[name] ?? 0;
      const h = (value / max) * (height - 10);
      bars.push({ series: name, value, at: bucket.at, x: i * slot + slot * 0.1 + j * barWidth, y: height - h, width: barWidth, height: h });
    });
  });
  return { width, height, bars };
}

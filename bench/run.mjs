// The benchmark. Builds nothing itself (bench/run does), then for each path — wrangler dev
// (what users run) and Miniflare's API (production-like: no dev proxy, no inspector) —
// starts the hello-world ceiling, the floor (a minimal durable accept in plain JavaScript)
// and the worker with fresh storage, drives them with wrk
// at 16 connections, and writes bench/out/report.json and report.md. Every figure is also
// given as a ratio to the ceiling measured in the same run on the same path. The worker
// runs with METERING on: around every scenario the benchmark reads its operations account
// (GET /api/v1/meter) and reports what the scenario's runs cost, per run and in dollars.
//
//   node bench/run.mjs [--quick] [--path wrangler|miniflare] [--only accept|execute|drain|shards]
// BENCH_WRANGLER_LOG=debug: wrangler dev's log level (its log files go to
// ~/.config/.wrangler/logs).
import { spawn } from "node:child_process";
import fs from "node:fs";
import http from "node:http";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import zlib from "node:zlib";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const args = process.argv.slice(2);
const quick = args.includes("--quick");
const onlyPath = args.includes("--path") ? args[args.indexOf("--path") + 1] : null;
// `--only accept`, `--only execute` or `--only shards`: one family of scenarios (the
// ceiling is always run);
// `--only drain`: the drain alone, of `--drain-runs N` runs (40,000; 5,000 with --quick).
const only = args.includes("--only") ? args[args.indexOf("--only") + 1] : null;
const drainRuns = args.includes("--drain-runs") ? Number(args[args.indexOf("--drain-runs") + 1]) : null;
// `--drain-repeat N` (with `--only drain`): the drain N times on one worker, to see whether
// the memory it leaves grows with every drain or stays at a high-water mark.
const drainRepeat = args.includes("--drain-repeat") ? Number(args[args.indexOf("--drain-repeat") + 1]) : 1;
const DURATION = quick ? 5 : 15;
const ROUNDS = quick ? 1 : 2;
const KEY = "tr_dev_bench_key";
// The rate limiter stays in the path (one call per request), with buckets no scenario
// empties: the benchmark measures capacity, not refusals.
const BENCH_RATE_LIMITS = {
  requests: { maxTokens: 1e9, refillRate: 1e9, interval: "1s" },
  batchItems: { maxTokens: 1e9, refillRate: 1e9, interval: "1s" },
};
const out = path.join(root, "bench/out");
fs.mkdirSync(out, { recursive: true });
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const log = (...a) => console.error("bench:", ...a);

// ---------------------------------------------------------------------------------------
// The task endpoint: answers at once (or after `sleepMs`), records when each run was
// called relative to its createdAt, and when each call ended.
const calls = [];
const endpoint = http.createServer((req, res) => {
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    const calledAt = Date.now();
    let body = {};
    try { body = JSON.parse(Buffer.concat(chunks).toString()); } catch {}
    const work = body?.payload?.sleepMs ?? 0;
    setTimeout(() => {
      calls.push({ queue: body.queue, createdAt: Date.parse(body.createdAt), calledAt, endedAt: Date.now() });
      res.writeHead(200, { "content-type": "application/json" });
      res.end('{"ok":true}');
    }, work);
  });
});
await new Promise((r) => endpoint.listen(0, "127.0.0.1", r));
const endpointUrl = `http://127.0.0.1:${endpoint.address().port}/task`;

const tasks = { "hello-world": { service: "SELF", path: "/examples/hello-world" } };
// Each task has its own queue, as Trigger.dev's tasks do by default: spreading over 8
// tasks spreads over 8 gates too.
for (let i = 0; i < 8; i++) {
  tasks[`bench-${i}`] = { endpoint: endpointUrl, queue: { name: `bench-${i}`, concurrencyLimit: 1000 }, maxDuration: 60 };
}
tasks["bench-gate"] = { endpoint: endpointUrl, queue: { name: "bench-gate", concurrencyLimit: 10 }, maxDuration: 60 };
tasks["bench-gate-2"] = { endpoint: endpointUrl, queue: { name: "bench-gate-2", concurrencyLimit: 2 }, maxDuration: 60 };
// A steady rate of runs on a free gate (no limit).
tasks["bench-steady"] = { endpoint: endpointUrl, queue: { name: "bench-steady" }, maxDuration: 60 };
// Shards: one task over 1, 2, 4 and 8 stores; one queue over 1 and 4 gates (8 keys,
// 50 slots each).
const SHARDS = [1, 2, 4, 8], GATE_SHARDS = [1, 4];
for (const n of SHARDS) {
  tasks[`bench-shards-${n}`] = { endpoint: endpointUrl, queue: { name: `bench-shards-${n}`, concurrencyLimit: 1000 }, maxDuration: 60, shards: n };
}
for (const n of GATE_SHARDS) {
  tasks[`bench-gates-${n}`] = { endpoint: endpointUrl, queue: { name: `bench-gates-${n}`, concurrencyLimit: 50, gateShards: n }, maxDuration: 60 };
}
// The drain: runs parked on a limit-0 queue until a trigger raises its limit.
tasks["bench-drain"] = { endpoint: endpointUrl, queue: { name: "bench-drain", concurrencyLimit: 0 }, maxDuration: 60 };

// ---------------------------------------------------------------------------------------
// Processes.
const freePort = () =>
  new Promise((r) => {
    const s = net.createServer();
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => r(port));
    });
  });

function descendants(pid) {
  const parents = new Map();
  for (const entry of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${entry}/stat`, "utf8");
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      parents.set(Number(entry), Number(fields[1]));
    } catch {}
  }
  const all = [pid];
  for (let i = 0; i < all.length; i++) for (const [child, parent] of parents) if (parent === all[i]) all.push(child);
  return all;
}

/** The resident memory (KiB) of a process tree now. */
function rssNow(pid) {
  let rss = 0;
  for (const p of descendants(pid)) {
    try {
      rss += Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${p}/status`, "utf8"))?.[1] ?? 0);
    } catch {}
  }
  return rss;
}

/** CPU milliseconds and peak RSS (KiB) of a process tree. */
function usage(pid) {
  const tick = 1000 / 100;
  let cpu = 0, rss = 0;
  for (const p of descendants(pid)) {
    try {
      const stat = fs.readFileSync(`/proc/${p}/stat`, "utf8");
      const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      cpu += (Number(f[11]) + Number(f[12])) * tick;
      const status = fs.readFileSync(`/proc/${p}/status`, "utf8");
      rss += Number(/VmHWM:\s+(\d+)/.exec(status)?.[1] ?? 0);
    } catch {}
  }
  return { cpu, rss };
}

async function waitServing(url, child, ms = 180_000) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (child.exitCode !== null) throw new Error(`server exited (${child.exitCode})`);
    try {
      await fetch(url);
      return;
    } catch {}
    await sleep(200);
  }
  throw new Error(`not serving: ${url}`);
}

async function startServer(pathName, which) {
  const port = await freePort();
  const state = fs.mkdtempSync(path.join(os.tmpdir(), `bench-${which}-`));
  let child;
  const started = Date.now();
  if (pathName === "miniflare") {
    const rest = which === "worker" ? [JSON.stringify(tasks), JSON.stringify(BENCH_RATE_LIMITS)] : [endpointUrl];
    child = spawn("node", [path.join(root, "bench/miniflare.mjs"), which, String(port), state, ...rest], {
      stdio: ["ignore", "ignore", "inherit"],
      detached: true,
    });
  } else {
    let config;
    if (which === "hello" || which === "floor") {
      config = path.join(root, `bench/${which}/wrangler.toml`);
    } else {
      const text = fs.readFileSync(path.join(root, "wrangler.toml"), "utf8");
      const withoutBuild = text
        .replace(/\[build\][^\[]*/s, "")
        .replace(/^main = .*$/m, `main = "${path.join(root, "src/entry.js")}"`)
        .replace(/^directory = "public"$/m, `directory = "${path.join(root, "public")}"`)
        .replace(/^name = .*$/m, `name = "trigger-edge-bench-${process.pid}"`)
        .replace(/service = "trigger-edge"/, `service = "trigger-edge-bench-${process.pid}"`);
      const tasksToml = Object.entries(tasks)
        .map(([id, t]) => `\n[vars.TASKS.${id}]\n` + Object.entries(t).map(([k, v]) => `${k} = ${toml(v)}`).join("\n"))
        .join("\n");
      const noTasks = withoutBuild
        .replace(/\[vars\.TASKS\.[^\]]+\][^\[]*/gs, "")
        .replace(/\[vars\.RATE_LIMITS\][^\[]*/s, "")
        .replace(/^\[vars\]$/m, '[vars]\nMETERING = "on"');
      const limitsToml = "\n[vars.RATE_LIMITS]\n" +
        Object.entries(BENCH_RATE_LIMITS).map(([k, v]) => `${k} = ${toml(v)}`).join("\n") + "\n";
      config = path.join(state, "wrangler.toml");
      fs.writeFileSync(config, noTasks + limitsToml + tasksToml + "\n");
      fs.writeFileSync(path.join(state, ".dev.vars"), `TRIGGER_SECRET_KEYS=${KEY}\nTASK_SIGNING_SECRET=bench-signing-secret-0123456789\n`);
    }
    child = spawn(
      path.join(root, "node_modules/.bin/wrangler"),
      ["dev", "--config", config, "--ip", "127.0.0.1", "--port", String(port), "--inspector-port", String(await freePort()),
       "--persist-to", path.join(state, "state"), "--log-level", process.env.BENCH_WRANGLER_LOG ?? "warn", "--show-interactive-dev-session=false",
       ...(which === "floor" ? ["--var", `ENDPOINT:${endpointUrl}`] : [])],
      // wrangler buffers inspector events of every Durable Object call: give it room.
      { cwd: root, stdio: ["ignore", "ignore", "inherit"], detached: true,
        env: { ...process.env, WRANGLER_SEND_METRICS: "false", NODE_OPTIONS: "--max-old-space-size=8192" } },
    );
  }
  const base = `http://127.0.0.1:${port}`;
  await waitServing(base + "/", child);
  return { child, base, coldStartMs: Date.now() - started, stop: () => { try { process.kill(-child.pid, "SIGTERM"); } catch {} } };
}

function toml(v) {
  if (typeof v === "string") return JSON.stringify(v);
  if (typeof v === "number") return String(v);
  return "{ " + Object.entries(v).map(([k, x]) => `${k} = ${toml(x)}`).join(", ") + " }";
}

// ---------------------------------------------------------------------------------------
// Scenarios.
/** wrk against `server`, run as a child process while this one's event loop goes on (its
 * task endpoint answers the worker's calls meanwhile). */
let wrkRuns = 0;
async function wrk(server, env, duration = DURATION) {
  const before = usage(server.child.pid);
  // Keys of its own (bench/accept.lua): loads on one worker never deduplicate each other.
  const BENCH_RUN = `${process.pid}-${++wrkRuns}-`;
  const child = spawn(
    "wrk",
    ["-t2", "-c16", `-d${duration}s`, "--timeout", "10s", "-s", path.join(root, "bench/accept.lua"), server.base],
    { env: { ...process.env, BENCH_KEY: KEY, BENCH_RUN, ...env }, stdio: ["ignore", "pipe", "inherit"] },
  );
  let text = "";
  child.stdout.on("data", (chunk) => (text += chunk));
  const code = await new Promise((r) => child.on("close", r));
  if (code !== 0) throw new Error(`wrk exited with ${code}`);
  const after = usage(server.child.pid);
  const result = JSON.parse(text.split("\n").find((l) => l.startsWith("RESULT ")).slice(7));
  const seconds = result.duration_us / 1e6;
  const ok = Object.entries(result.statuses).filter(([s]) => s.startsWith("2")).reduce((n, [, c]) => n + c, 0);
  const non2xx = Object.fromEntries(Object.entries(result.statuses).filter(([s]) => !s.startsWith("2")));
  return {
    requests: result.requests,
    cpuMs: after.cpu - before.cpu,
    requestsPerSec: result.requests / seconds,
    okPerSec: ok / seconds,
    runsPerSec: (ok * Number(env.BENCH_ITEMS ?? 1)) / seconds,
    p50ms: result.p50_us / 1000, p90ms: result.p90_us / 1000, p99ms: result.p99_us / 1000, maxms: result.max_us / 1000,
    non2xx, socketErrors: result.socket_errors, timeouts: result.timeouts,
    cpuMsPerRequest: (after.cpu - before.cpu) / Math.max(1, result.requests),
    peakRssMiB: after.rss / 1024,
  };
}

// ---------------------------------------------------------------------------------------
// The operations account: what a scenario's runs cost, from the worker's own counts.

async function meter(server) {
  // Sent again once: a kept-alive connection may have been closed under the client while
  // wrk (run synchronously) held the event loop.
  for (let attempt = 1; ; attempt++) {
    try {
      const res = await fetch(`${server.base}/api/v1/meter`, { headers: { authorization: `Bearer ${KEY}` } });
      if (!res.ok) throw new Error(`GET /api/v1/meter answered ${res.status}`);
      return await res.json();
    } catch (e) {
      if (attempt === 3) throw e;
      await sleep(100);
    }
  }
}

/** `after - before`, field by field (the statement's figures are all linear in the counts). */
function minus(after, before) {
  if (typeof after === "number") return after - (before ?? 0);
  if (after === null || typeof after !== "object") return after;
  return Object.fromEntries(Object.entries(after).map(([k, v]) => [k, minus(v, before?.[k])]));
}

/** Runs `work`, then reads what the worker counted meanwhile, `settleMs` after it ended (the
 * last reports and releases of executed runs), priced per run of `runsOf(spent)` with the
 * CPU time the server's processes used (`/proc`). */
async function costed(server, work, runsOf, settleMs = 0) {
  if (process.env.BENCH_METERING === "off") return work();
  const before = await meter(server);
  const cpuBefore = usage(server.child.pid).cpu;
  const result = await work();
  if (settleMs) await sleep(settleMs);
  const after = await meter(server);
  const cpuMs = usage(server.child.pid).cpu - cpuBefore;
  const spent = minus(after, before);
  const runs = runsOf(spent);
  const per = (n) => (runs ? n / runs : 0);
  const t = spent.totals, prices = after.prices;
  const dollars = t.dollars.total + cpuMs * prices.workerCpuMs;
  result.account = {
    runs,
    rowsWrittenPerRun: per(t.rowsWritten),
    rowsReadPerRun: per(t.rowsRead),
    statementsPerRun: per(t.statements),
    doRequestsPerRun: per(t.objectRequests),
    doRequestsByObject: Object.fromEntries(["store", "gate", "executor", "limiter"].map((o) => [o, per(spent[o].requests + spent[o].alarms)])),
    queueOpsPerRun: per(t.queueOperations),
    workerRequestsPerRun: per(t.workerRequests),
    cpuMsPerRun: per(cpuMs),
    storedBytesPerRun: per(spent.storedBytes),
    dollarsPerMillionRuns: per(dollars) * 1e6,
    cpuShareOfDollars: dollars ? (cpuMs * prices.workerCpuMs) / dollars : 0,
    triggerDevFeePerMillion: prices.triggerDevRun * 1e6,
  };
  return result;
}

/** The median; of an even count, the mean of the middle two (of 2 rounds, their mean). */
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b), m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const pct = (xs, p) => { const s = [...xs].sort((a, b) => a - b); return s[Math.min(s.length - 1, Math.floor((s.length * p) / 100))]; };

/** Triggers a batch as a client would: with a batch idempotency key, so that a 503 (which
 * wrangler's dev proxy answers when its own call to the worker fails under load) or a
 * connection reset (a kept-alive connection closed under the client, seen on the
 * Miniflare path during bursts) can be sent again without making its runs twice.
 * Counted in `resent`. */
let resent = 0;
async function post(base, task, items) {
  const key = `bench-${process.pid}-${Date.now()}-${Math.random()}`;
  for (let attempt = 1; ; attempt++) {
    let failure;
    try {
      const res = await fetch(`${base}/api/v1/tasks/${task}/batch`, {
        method: "POST",
        headers: { authorization: `Bearer ${KEY}`, "content-type": "application/json", "idempotency-key": key },
        body: JSON.stringify({ items }),
      });
      if (res.ok) return;
      const text = await res.text();
      if (res.status !== 503) throw new Error(`batch answered ${res.status}: ${text}`);
      failure = `answered 503 (${text.slice(0, 60)})`;
    } catch (e) {
      // ECONNRESET, or undici's "other side closed" when the close came first.
      if (!["ECONNRESET", "UND_ERR_SOCKET"].includes(e.cause?.code)) throw e;
      failure = "had its connection reset";
    }
    if (attempt === 5) throw new Error(`a batch ${failure} five times`);
    resent++;
    log(`  a batch ${failure}; sending it again`);
    await sleep(200 * attempt);
  }
}

/** Triggers `count` runs of `task` in batches of 100, 16 requests at a time. */
/** `count` runs of `task` in batches of 100, 16 at a time; `options` is the items'
 * options, or a function of the item's number that makes them. */
async function triggerMany(base, task, count, payload, options) {
  const optionsOf = typeof options === "function" ? options : () => options;
  const batches = Array.from({ length: Math.ceil(count / 100) }, (_, b) =>
    Array.from({ length: Math.min(100, count - b * 100) }, (_, i) => {
      const o = optionsOf(b * 100 + i);
      return o ? { payload, options: o } : { payload };
    }));
  const queue = [...batches];
  await Promise.all(Array.from({ length: 16 }, async () => {
    while (queue.length) await post(base, task, queue.shift());
  }));
}

async function waitCalls(queue, count, ms) {
  const end = Date.now() + ms;
  while (calls.filter((c) => c.queue === queue).length < count) {
    if (Date.now() > end) throw new Error(`only ${calls.filter((c) => c.queue === queue).length}/${count} calls of ${queue}`);
    await sleep(100);
  }
  return calls.filter((c) => c.queue === queue);
}

/** A burst of runs through a fast endpoint: the worker's (task bench-0), or the floor's
 * (task exec-0, its calls' queue floor-exec). */
async function execute(server, pathName, task = "bench-0", queue = "bench-0", keys = 0) {
  calls.length = 0;
  resent = 0;
  // wrangler dev's proxy cannot carry 10,000 runs' worth of inspector events: fewer there.
  const count = quick || pathName === "wrangler" ? 2000 : 10000;
  const started = Date.now();
  if (keys) await triggerMany(server.base, task, count, { n: 1 }, (i) => ({ concurrencyKey: `k${i % keys}` }));
  else await triggerMany(server.base, task, count, { n: 1 });
  const done = await waitCalls(queue, count, 600_000);
  const lastEnd = Math.max(...done.map((c) => c.endedAt));
  const latencies = done.map((c) => c.calledAt - c.createdAt);
  return {
    runs: count,
    triggersResent: resent,
    runsCompletedPerSec: count / ((lastEnd - started) / 1000),
    queuedToCallP50ms: pct(latencies, 50),
    queuedToCallP99ms: pct(latencies, 99),
  };
}

/** One run at a time on a warm worker and a free gate: QUEUED→call without a backlog. */
async function singles(server) {
  calls.length = 0;
  const latencies = [];
  for (let i = 0; i < 21; i++) {
    await post(server.base, "bench-1", [{ payload: { n: i } }]);
    const [call] = await waitCalls("bench-1", 1, 30_000);
    if (i > 0) latencies.push(call.calledAt - call.createdAt); // the first warms the objects
    calls.length = 0;
  }
  return { runs: latencies.length, queuedToCallP50ms: pct(latencies, 50), queuedToCallP99ms: pct(latencies, 99) };
}

/** Runs offered at a steady 200 per second for `seconds`, as a 10-run batch every 50 ms
 * (each sent on time whether or not the ones before were answered), on a free gate: the
 * QUEUED→call latency of a steady load, which a burst's backlog hides. (One-item
 * triggers at 200 per second are beyond what this machine executes: accepting batches
 * of 1 while they execute reaches about 120 per second here.) */
async function steady(server, seconds) {
  calls.length = 0;
  resent = 0;
  const rate = 200, size = 10, count = rate * seconds;
  const started = Date.now();
  const sent = [];
  for (let i = 0; i < count / size; i++) {
    const wait = started + (i * size * 1000) / rate - Date.now();
    if (wait > 0) await sleep(wait);
    sent.push(post(server.base, "bench-steady", Array.from({ length: size }, (_, j) => ({ payload: { n: i * size + j } }))));
  }
  const offeredFor = (Date.now() - started) / 1000 + size / rate; // the last batch's share
  await Promise.all(sent);
  const done = await waitCalls("bench-steady", count, 120_000);
  const latencies = done.map((c) => c.calledAt - c.createdAt);
  return {
    runs: count,
    offeredPerSec: count / offeredFor,
    triggersResent: resent,
    queuedToCallP50ms: pct(latencies, 50),
    queuedToCallP99ms: pct(latencies, 99),
  };
}

/** `count` runs of 5 ms through a queue of `limit` slots: throughput and hand-over delay. */
async function gateRuns(server, task, limit, count) {
  calls.length = 0;
  const started = Date.now();
  await triggerMany(server.base, task, count, { sleepMs: 5 });
  const done = await waitCalls(task, count, 600_000);
  const starts = done.map((c) => c.calledAt).sort((a, b) => a - b);
  const ends = done.map((c) => c.endedAt).sort((a, b) => a - b);
  // With `limit` slots, the (i+limit)-th start takes the slot the i-th end freed.
  const handovers = [];
  for (let i = 0; i + limit < starts.length; i++) handovers.push(Math.max(0, starts[i + limit] - ends[i]));
  return {
    runs: count,
    runsPerSec: count / ((Math.max(...ends) - started) / 1000),
    handoverP50ms: pct(handovers, 50),
    handoverP99ms: pct(handovers, 99),
  };
}

/** The gate scenario (limit 10), then the same runs on a limit-2 queue: a diagnostic of the
 * hand-over itself, when the one local isolate that runs every object is not saturated. */
async function gate(server, pathName) {
  const count = quick || pathName === "wrangler" ? 500 : 2000;
  const result = await gateRuns(server, "bench-gate", 10, count);
  result.limit2 = await gateRuns(server, "bench-gate-2", 2, 200);
  return result;
}

/** A timed request for the drain's probes: its milliseconds, or null when it failed (no
 * answer, or not a 2xx) or took past `limitMs`. */
async function probe(url, init, limitMs = 30_000) {
  const started = Date.now();
  try {
    const res = await fetch(url, { ...init, signal: AbortSignal.timeout(limitMs) });
    await res.arrayBuffer();
    return res.ok ? Date.now() - started : null;
  } catch {
    return null;
  }
}

/** The drain: `count` runs parked on a limit-0 queue, then released by a trigger raising
 * the limit to 200. While they drain, every 500 ms a filtered list of the queue's runs and
 * a one-item trigger of another task are timed, and the server's memory is sampled. */
async function drain(server) {
  const count = drainRuns ?? (quick ? 5000 : 40000);
  const headers = { authorization: `Bearer ${KEY}`, "content-type": "application/json" };
  calls.length = 0;
  const parkedAt = Date.now();
  await triggerMany(server.base, "bench-drain", count, { n: 1 }, { queue: { name: "bench-drain", concurrencyLimit: 0 } });
  const acceptSeconds = (Date.now() - parkedAt) / 1000;
  const rssParked = rssNow(server.child.pid);
  const released = Date.now();
  await post(server.base, "bench-drain", [{ payload: { n: 0 }, options: { queue: { name: "bench-drain", concurrencyLimit: 200 } } }]);
  const list = [], trigger = [], rss = [];
  let failures = 0, done = false;
  const prober = (async () => {
    while (!done) {
      const listed = await probe(`${server.base}/api/v1/runs?filter[taskIdentifier]=bench-drain&filter[status]=QUEUED&page[size]=25`, { headers });
      const triggered = await probe(`${server.base}/api/v1/tasks/bench-1/trigger`, { method: "POST", headers, body: JSON.stringify({ payload: { probe: true } }) });
      for (const [ms, into] of [[listed, list], [triggered, trigger]]) ms === null ? failures++ : into.push(ms);
      rss.push(rssNow(server.child.pid));
      await sleep(500);
    }
  })();
  const drained = await waitCalls("bench-drain", count + 1, 1_800_000);
  done = true;
  await prober;
  const lastEnd = Math.max(...drained.map((c) => c.endedAt));
  await sleep(5000);
  const summary = (xs) => ({ n: xs.length, p50ms: pct(xs, 50), p99ms: pct(xs, 99), maxms: Math.max(0, ...xs) });
  return {
    runs: count,
    acceptSeconds,
    drainSeconds: (lastEnd - released) / 1000,
    drainRunsPerSec: (count + 1) / ((lastEnd - released) / 1000),
    list: summary(list),
    trigger: summary(trigger),
    probeFailures: failures,
    rssMiB: { parked: rssParked / 1024, peak: Math.max(rssParked, ...rss) / 1024, after: rssNow(server.child.pid) / 1024 },
  };
}

/** Accepting while the runs execute (nothing delayed): wrk for `seconds`, then the
 * backlog's drain, waited for up to two minutes. */
async function acceptWhileExecuting(server, env, seconds) {
  calls.length = 0;
  const result = await wrk(server, env, seconds);
  const accepted = Math.round(result.runsPerSec * seconds);
  result.completedPerSecDuringLoad = calls.length / seconds;
  const end = Date.now() + 120_000;
  while (calls.length < accepted && Date.now() < end) await sleep(500);
  result.backlogLeft = Math.max(0, accepted - calls.length);
  return result;
}

const whileExecuting = [
  ["batch of 1, while executing", { BENCH_ITEMS: "1", BENCH_TASKS: "8", BENCH_NOW: "1" }],
  ["batch of 100, while executing", { BENCH_ITEMS: "100", BENCH_TASKS: "8", BENCH_NOW: "1" }],
];

const accepts = [
  ["batch of 1", { BENCH_ITEMS: "1", BENCH_TASKS: "8" }],
  ["batch of 10", { BENCH_ITEMS: "10", BENCH_TASKS: "8" }],
  ["batch of 100", { BENCH_ITEMS: "100", BENCH_TASKS: "8" }],
  ["batch of 100, one task", { BENCH_ITEMS: "100", BENCH_TASKS: "1" }],
  ["batch of 100, half the keys repeating", { BENCH_ITEMS: "100", BENCH_TASKS: "8", BENCH_REPEAT: "1" }],
];

// The floor (bench/floor): the least a durable accept of the same requests does here.
const floors = [
  ["batch of 1", { BENCH_ITEMS: "1", BENCH_TASKS: "8" }],
  ["batch of 100", { BENCH_ITEMS: "100", BENCH_TASKS: "8" }],
];

// ---------------------------------------------------------------------------------------
const report = { date: new Date().toISOString(), quick, durationSec: DURATION, rounds: ROUNDS, machine: `${os.cpus().length} cores, ${Math.round(os.totalmem() / 2 ** 30)} GiB`, paths: {} };
const wasm = fs.readFileSync(path.join(root, "build/index_bg.wasm"));
report.size = { wasmBytes: wasm.length, wasmGzipBytes: zlib.gzipSync(wasm, { level: 9 }).length };

for (const pathName of onlyPath ? [onlyPath] : ["miniflare", "wrangler"]) {
  log(`path ${pathName}`);
  const result = { ceiling: [], floor: {}, scenarios: {} };
  for (let round = 0; round < ROUNDS; round++) {
    const hello = await startServer(pathName, "hello");
    await wrk(hello, { BENCH_ITEMS: "1" }, 2); // warm-up, not counted: the first seconds run cold
    result.ceiling.push(await wrk(hello, { BENCH_ITEMS: "1" }));
    result.helloColdStartMs = hello.coldStartMs;
    hello.stop();
    await sleep(1000);
    const floor = await startServer(pathName, "floor");
    await wrk(floor, floors[0][1], 2); // warm-up, not counted
    for (const [name, env] of floors) (result.floor[name] ??= []).push(await wrk(floor, env));
    if (!only || only === "execute") {
      log(`  floor: execute (round ${round + 1})`);
      (result.floorExecute ??= []).push(await execute(floor, pathName, "exec-0", "floor-exec"));
      // The same burst again on the warmed process: the first runs partly cold.
      (result.floorExecuteWarm ??= []).push(await execute(floor, pathName, "exec-0", "floor-exec"));
    }
    floor.stop();
    await sleep(1000);
    const worker = await startServer(pathName, "worker");
    result.workerColdStartMs = worker.coldStartMs;
    const accepting = !only || only === "accept";
    if (accepting) await wrk(worker, accepts[0][1], 2); // warm-up, not counted
    for (const [name, env] of accepting ? accepts : []) {
      log(`  ${name} (round ${round + 1})`);
      try {
        (result.scenarios[name] ??= []).push(await costed(worker, () => wrk(worker, env), (s) => s.runs.accepted));
      } catch (e) {
        log(`  ${name} failed: ${e.message}`);
      }
    }
    if (only === "drain") try {
      for (let again = 0; again < drainRepeat; again++) {
        log(`  drain with API probes (round ${round + 1}${drainRepeat > 1 ? `, drain ${again + 1} of ${drainRepeat} on this worker` : ""})`);
        const drained = await costed(worker, () => drain(worker), (s) => s.runs.completed);
        if (again === 0) (result.drain ??= []).push(drained);
        else (result.drainAgain ??= []).push(drained);
      }
    } catch (e) {
      log(`  the drain failed: ${e.message}`);
      result.failure = e.message;
    }
    if (!only || only === "shards") try {
      // The first burst on a fresh worker runs cold (its code not yet optimised: the same
      // burst repeated on one worker went 125 → 172 → 333 → 458 runs/s on 2026-12-03), so
      // one burst warms it first, not counted.
      log(`  shards: warm-up (round ${round + 1})`);
      await execute(worker, pathName, "bench-shards-1", "bench-shards-1");
      // No idempotency keys: keyed batches of a sharded task all go to its first store.
      for (const n of SHARDS) {
        log(`  ${n} store shard(s) (round ${round + 1})`);
        const accepted = await wrk(worker, { BENCH_ITEMS: "100", BENCH_TASK: `bench-shards-${n}`, BENCH_KEYS: "0" });
        const executed = await execute(worker, pathName, `bench-shards-${n}`, `bench-shards-${n}`);
        ((result.shards ??= {})[n] ??= []).push({ acceptedPerSec: accepted.runsPerSec, executedPerSec: executed.runsCompletedPerSec });
      }
      for (const n of GATE_SHARDS) {
        log(`  ${n} gate shard(s) (round ${round + 1})`);
        const executed = await execute(worker, pathName, `bench-gates-${n}`, `bench-gates-${n}`, 8);
        ((result.gateShards ??= {})[n] ??= []).push({ executedPerSec: executed.runsCompletedPerSec });
      }
    } catch (e) {
      log(`  shard scenarios failed: ${e.message}`);
      result.failure = e.message;
    }
    if (only !== "accept" && only !== "drain" && only !== "shards") try {
      const completed = (s) => s.runs.completed;
      log(`  execute (round ${round + 1})`);
      (result.execute ??= []).push(await costed(worker, () => execute(worker, pathName), completed, 2000));
      // The same burst again on the warmed worker: the first burst on a fresh worker runs
      // with its code not yet optimised (four repeats on one worker went 125 → 172 → 333
      // → 458 runs/s on 2026-12-03, CPU per run 4.2 → 2.0 ms).
      log(`  execute, warm (round ${round + 1})`);
      (result.executeWarm ??= []).push(await execute(worker, pathName));
      log(`  single runs (round ${round + 1})`);
      (result.singles ??= []).push(await costed(worker, () => singles(worker), completed, 2000));
      log(`  steady 200 runs/s (round ${round + 1})`);
      (result.steady ??= []).push(await costed(worker, () => steady(worker, quick ? 5 : 15), completed, 2000));
      log(`  gate (round ${round + 1})`);
      (result.gate ??= []).push(await costed(worker, () => gate(worker, pathName), completed, 2000));
      log(`  drain with API probes (round ${round + 1})`);
      (result.drain ??= []).push(await costed(worker, () => drain(worker), completed));
      for (const [name, env] of whileExecuting) {
        log(`  ${name} (round ${round + 1})`);
        (result.whileExecuting ??= {})[name] ??= [];
        result.whileExecuting[name].push(await costed(worker, () => acceptWhileExecuting(worker, env, quick ? 5 : 10), (s) => s.runs.accepted));
      }
    } catch (e) {
      log(`  execution scenarios failed: ${e.message}${e.cause ? ` (${e.cause.message ?? e.cause})` : ""}`);
      result.failure = e.message;
    }
    worker.stop();
    await sleep(1000);
  }
  report.paths[pathName] = result;
}
endpoint.close();
fs.writeFileSync(path.join(out, "report.json"), JSON.stringify(report, null, 2));

// ---------------------------------------------------------------------------------------
// The Markdown report: medians over the rounds, ratios to the ceiling, targets.

/** The drain and accept-while-executing scenarios, medians over the rounds. */
function drainLines(r) {
  const out = [];
  if (r.drain?.length) {
    const d = (f) => median(r.drain.map(f));
    const probes = (k) => `p50 ${d((x) => x[k].p50ms)} / p99 ${d((x) => x[k].p99ms)} / max ${d((x) => x[k].maxms)} ms`;
    out.push(`Drain: ${r.drain[0].runs} runs parked on a limit-0 queue (accepted in ${d((x) => x.acceptSeconds).toFixed(1)} s), then released at limit 200: drained in ${d((x) => x.drainSeconds).toFixed(0)} s (${d((x) => x.drainRunsPerSec).toFixed(0)} runs/s). Meanwhile, every 500 ms, a filtered list answered in ${probes("list")} and a one-item trigger in ${probes("trigger")}; ${d((x) => x.probeFailures)} probe(s) failed or took past 30 s. Memory: ${d((x) => x.rssMiB.parked).toFixed(0)} MiB parked, ${d((x) => x.rssMiB.peak).toFixed(0)} MiB at the peak, ${d((x) => x.rssMiB.after).toFixed(0)} MiB after.`);
  }
  for (const [name, rounds] of Object.entries(r.whileExecuting ?? {})) {
    const m = (k) => median(rounds.map((x) => x[k]));
    out.push(`Accepting while executing, ${name}: ${m("requestsPerSec").toFixed(0)} requests/s (${m("runsPerSec").toFixed(0)} runs/s), p50 ${m("p50ms").toFixed(0)} / p99 ${m("p99ms").toFixed(0)} / max ${m("maxms").toFixed(0)} ms, non-2xx ${rounds.map((x) => JSON.stringify(x.non2xx)).join(" ")}, ${m("timeouts")} timeout(s); ${m("completedPerSecDuringLoad").toFixed(0)} runs completed/s meanwhile; ${m("backlogLeft")} runs not yet called two minutes after.`);
  }
  if (r.drainAgain?.length) {
    const each = [...r.drain.slice(0, 1), ...r.drainAgain].map((x, n) =>
      `drain ${n + 1}: ${x.rssMiB.parked.toFixed(0)} / ${x.rssMiB.peak.toFixed(0)} / ${x.rssMiB.after.toFixed(0)} MiB, list p99 ${x.list.p99ms} ms, trigger p99 ${x.trigger.p99ms} ms`);
    out.push(`The same worker drained ${each.length} times (memory parked / peak / after): ${each.join("; ")}.`);
  }
  return out;
}

/** The shard scenarios, medians over the rounds. */
function shardLines(r) {
  if (!r.shards && !r.gateShards) return [];
  const m = (rounds, k) => median(rounds.map((x) => x[k])).toFixed(0);
  const stores = Object.entries(r.shards ?? {}).map(([n, rounds]) =>
    `| ${n} store${n === "1" ? "" : "s"} | ${m(rounds, "acceptedPerSec")} | ${m(rounds, "executedPerSec")} |`);
  const gates = Object.entries(r.gateShards ?? {}).map(([n, rounds]) =>
    `| ${n} gate${n === "1" ? "" : "s"} (8 keys, 50 slots each) | | ${m(rounds, "executedPerSec")} |`);
  return ["", "Shards: one task, batches of 100 without idempotency keys (accepted: wrk; executed: a burst, free queue), and one queue of 8 concurrency keys (a burst):", "",
    "| objects | runs accepted/s | runs executed/s |", "|---|---|---|", ...stores, ...gates, ""];
}

/** What each scenario's runs cost (the operations account), medians over the rounds. */
function costTable(r) {
  const rows = [
    ...Object.entries(r.scenarios).map(([name, rounds]) => [`accept: ${name}`, rounds]),
    ["execute (burst)", r.execute ?? []],
    ["single runs, one at a time", r.singles ?? []],
    ["steady 200 runs/s", r.steady ?? []],
    ["gate (limit 10, then 2)", r.gate ?? []],
    ["drain with API probes", r.drain ?? []],
    ...Object.entries(r.whileExecuting ?? {}).map(([name, rounds]) => [`accept: ${name}`, rounds]),
  ].filter(([, rounds]) => rounds.some((x) => x.account));
  if (!rows.length) return [];
  const out = [
    "What the runs cost, per run (the worker's operations account; accept scenarios per run accepted, the others per run completed; dollars at the list prices in docs/PERFORMANCE.md, CPU from /proc):", "",
    "| scenario | runs | rows written | rows read | statements | object requests (store/gate/executor/limiter) | queue ops | Worker requests | CPU ms | stored bytes | $ per million runs | CPU share |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|"];
  for (const [name, rounds] of rows) {
    const acc = rounds.filter((x) => x.account).map((x) => x.account);
    const m = (k) => median(acc.map((a) => a[k]));
    const by = ["store", "gate", "executor", "limiter"].map((o) => median(acc.map((a) => a.doRequestsByObject[o])).toFixed(2)).join("/");
    out.push(`| ${name} | ${m("runs").toFixed(0)} | ${m("rowsWrittenPerRun").toFixed(2)} | ${m("rowsReadPerRun").toFixed(2)} | ${m("statementsPerRun").toFixed(2)} | ${m("doRequestsPerRun").toFixed(3)} (${by}) | ${m("queueOpsPerRun").toFixed(3)} | ${m("workerRequestsPerRun").toFixed(3)} | ${m("cpuMsPerRun").toFixed(3)} | ${m("storedBytesPerRun").toFixed(0)} | ${m("dollarsPerMillionRuns").toFixed(2)} | ${(100 * m("cpuShareOfDollars")).toFixed(0)} % |`);
  }
  out.push("", `Trigger.dev cloud's per-run fee alone: $${rows[0][1].find((x) => x.account)?.account.triggerDevFeePerMillion ?? 25} per million runs.`);
  return out;
}
const lines = [`# Benchmark ${report.date}${quick ? " (quick)" : ""}`, "",
  `${report.machine}; wrk -t2 -c16, ${DURATION} s per scenario, median of ${ROUNDS} round(s).`,
  `wasm: ${(report.size.wasmBytes / 1024).toFixed(0)} KiB raw, ${(report.size.wasmGzipBytes / 1024).toFixed(0)} KiB gzipped (target ≤ 1 MB raw: ${report.size.wasmBytes <= 1e6 ? "met" : "MISSED"}).`, ""];
for (const [pathName, r] of Object.entries(report.paths)) {
  const ceiling = median(r.ceiling.map((c) => c.requestsPerSec));
  // The worker's runs/s as a multiple of the floor's in the same scenario (NaN without one).
  const toFloor = (name) => {
    if (!r.floor[name] || !r.scenarios[name]) return NaN;
    return median(r.scenarios[name].map((x) => x.runsPerSec)) / median(r.floor[name].map((x) => x.runsPerSec));
  };
  lines.push(`## ${pathName === "miniflare" ? "Miniflare API (production-like)" : "wrangler dev"}`, "",
    `Ceiling (hello-world): ${ceiling.toFixed(0)} requests/s, CPU ${median(r.ceiling.map((c) => c.cpuMsPerRequest)).toFixed(2)} ms/request. Cold start: hello ${r.helloColdStartMs} ms, worker ${r.workerColdStartMs} ms.`,
    `Floor (bench/floor: one object call and one committed write per request, plain JavaScript): ` +
      Object.entries(r.floor).map(([name, rounds]) => {
        const rps = median(rounds.map((x) => x.requestsPerSec)), runs = median(rounds.map((x) => x.runsPerSec));
        return `${name} ${rps.toFixed(0)} requests/s, ${runs.toFixed(0)} runs/s (${(runs / ceiling).toFixed(2)}× ceiling` +
          (r.scenarios[name] ? `; the worker does ${toFloor(name).toFixed(2)}× the floor)` : ")");
      }).join("; ") + ".", "",
    "| scenario | requests/s | × ceiling | runs/s | runs/s × ceiling | p50 | p90 | p99 | max | non-2xx | socket errors (timeouts) | CPU ms/req | peak RSS MiB |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|");
  for (const [name, rounds] of Object.entries(r.scenarios)) {
    const m = (k) => median(rounds.map((x) => x[k]));
    const non2xx = rounds.map((x) => JSON.stringify(x.non2xx)).join(" ");
    lines.push(`| ${name} | ${m("requestsPerSec").toFixed(0)} | ${(m("requestsPerSec") / ceiling).toFixed(2)} | ${m("runsPerSec").toFixed(0)} | ${(m("runsPerSec") / ceiling).toFixed(2)} | ${m("p50ms").toFixed(1)} | ${m("p90ms").toFixed(1)} | ${m("p99ms").toFixed(1)} | ${m("maxms").toFixed(0)} | ${non2xx} | ${m("socketErrors")} (${m("timeouts")}) | ${m("cpuMsPerRequest").toFixed(2)} | ${m("peakRssMiB").toFixed(0)} |`);
  }
  lines.push("", ...costTable(r), "");
  const ex = (k) => median(r.execute.map((x) => x[k]));
  const fx = (k) => median((r.floorExecute ?? []).map((x) => x[k]));
  const exw = (k) => median((r.executeWarm ?? []).map((x) => x[k]));
  const fxw = (k) => median((r.floorExecuteWarm ?? []).map((x) => x[k]));
  const gt = (k) => median(r.gate.map((x) => x[k]));
  const sg = (k) => median((r.singles ?? []).map((x) => x[k]));
  const st = (k) => median((r.steady ?? []).map((x) => x[k]));
  const l2 = (k) => median(r.gate.map((x) => x.limit2[k]));
  const execution = () => [
    `Execute: ${r.execute[0].runs} runs, ${ex("runsCompletedPerSec").toFixed(0)} completed/s; QUEUED→call p50 ${ex("queuedToCallP50ms")} ms, p99 ${ex("queuedToCallP99ms")} ms` +
      (r.execute.some((x) => x.triggersResent) ? ` (${r.execute.map((x) => x.triggersResent).join(" and ")} trigger(s), by round, answered 503 or had their connection reset, and were sent again with their batch key).` : "."),
    ...(r.floorExecute?.length ? [`Execution floor (bench/floor: one write to start, the call, one write to finish, in plain JavaScript): ${fx("runsCompletedPerSec").toFixed(0)} completed/s, QUEUED→call p50 ${fx("queuedToCallP50ms")} ms; the worker does ${(ex("runsCompletedPerSec") / fx("runsCompletedPerSec")).toFixed(2)}× the floor.`] : []),
    ...(r.executeWarm?.length && r.floorExecuteWarm?.length ? [`The same burst again on each warmed process: the worker ${exw("runsCompletedPerSec").toFixed(0)} completed/s (QUEUED→call p50 ${exw("queuedToCallP50ms")} ms), the floor ${fxw("runsCompletedPerSec").toFixed(0)}: ${(exw("runsCompletedPerSec") / fxw("runsCompletedPerSec")).toFixed(2)}× the floor.`] : []),
    `Single runs, one at a time (warm, free gate): QUEUED→call p50 ${sg("queuedToCallP50ms")} ms, p99 ${sg("queuedToCallP99ms")} ms.`,
    ...(r.steady?.length ? [`Steady load (a 10-run batch every 50 ms: ${st("offeredPerSec").toFixed(0)} runs/s offered, ${r.steady[0].runs} runs, free gate): QUEUED→call p50 ${st("queuedToCallP50ms")} ms, p99 ${st("queuedToCallP99ms")} ms.`] : []),
    ...drainLines(r),
    `Gate (limit 10): ${r.gate[0].runs} runs, ${gt("runsPerSec").toFixed(0)} runs/s; handover p50 ${gt("handoverP50ms")} ms, p99 ${gt("handoverP99ms")} ms. ` +
      `Diagnostic, limit 2 (the local isolate not saturated): ${l2("runsPerSec").toFixed(0)} runs/s, handover p50 ${l2("handoverP50ms")} ms, p99 ${l2("handoverP99ms")} ms.`, ""];
  if (only === "execute" && r.execute?.length && r.gate?.length) {
    lines.push("", ...execution());
    continue;
  }
  if (only === "drain") lines.push(...drainLines(r));
  lines.push(...shardLines(r));
  if (only || !r.execute?.length || !r.gate?.length || Object.values(r.scenarios).some((x) => !x.length)) {
    lines.push("", only ? `Partial run (--only ${only}): no targets table.` : `Incomplete: ${r.failure ?? "a scenario failed"} (see the run's log).`, "");
    continue;
  }
  const b1 = median(r.scenarios["batch of 1"].map((x) => x.requestsPerSec)) / ceiling;
  const b100 = median(r.scenarios["batch of 100"].map((x) => x.runsPerSec)) / ceiling;
  const b100one = median(r.scenarios["batch of 100, one task"].map((x) => x.runsPerSec)) / ceiling;
  const fiveXX = Object.values(r.scenarios).flat().some((x) => Object.keys(x.non2xx).some((s) => s.startsWith("5") && s !== "503"));
  // wrk gives up on a request after 10 s (`--timeout 10s`) and counts it as a timeout.
  const slowest = Math.max(...Object.values(r.scenarios).flat().map((x) => x.maxms));
  const timeouts = Object.values(r.scenarios).flat().reduce((n, x) => n + x.timeouts, 0);
  // The performance issue's later targets: the accept at the floor, the drain's probes.
  const [f1, f100] = [toFloor("batch of 1"), toFloor("batch of 100")];
  const drained = r.drain?.length ? {
    slowest: Math.max(...["list", "trigger"].map((k) => median(r.drain.map((x) => x[k].maxms)))),
    failed: median(r.drain.map((x) => x.probeFailures)),
  } : null;
  lines.push("", ...execution(),
    "| target | measured | |", "|---|---|---|",
    `| batch of 1 ≥ 0.5× ceiling requests/s | ${b1.toFixed(2)}× | ${b1 >= 0.5 ? "met" : "missed"} |`,
    `| batch of 100 ≥ 8× ceiling in runs/s | ${b100.toFixed(2)}× | ${b100 >= 8 ? "met" : "missed"} |`,
    `| batch of 100, one task ≥ 8× ceiling in runs/s | ${b100one.toFixed(2)}× | ${b100one >= 8 ? "met" : "missed"} |`,
    `| zero 5xx other than 503 | ${fiveXX ? "some" : "none"} | ${fiveXX ? "missed" : "met"} |`,
    `| no answer later than 10 s | slowest ${slowest.toFixed(0)} ms, ${timeouts} timeout(s) | ${timeouts === 0 && slowest < 10_000 ? "met" : "missed"} |`,
    `| ≥ 1,000 runs completed/s | ${ex("runsCompletedPerSec").toFixed(0)} (the first burst; ${r.executeWarm?.length ? `${exw("runsCompletedPerSec").toFixed(0)} warm` : "no warm burst"}) | ${ex("runsCompletedPerSec") >= 1000 ? "met" : "missed"} |`,
    `| QUEUED→call p50 < 50 ms at 200 runs/s offered | ${st("queuedToCallP50ms")} ms | ${st("queuedToCallP50ms") < 50 ? "met" : "missed"} |`,
    `| gate handover p50 < 20 ms | ${gt("handoverP50ms")} ms | ${gt("handoverP50ms") < 20 ? "met" : "missed"} |`,
    `| batch of 1 ≥ 1.0× the floor | ${f1.toFixed(2)}× | ${f1 >= 1 ? "met" : "missed"} |`,
    `| batch of 100 ≥ 1.0× the floor | ${f100.toFixed(2)}× | ${f100 >= 1 ? "met" : "missed"} |`,
    drained
      ? `| drain: every probe within 2 s, none failed | slowest ${drained.slowest} ms, ${drained.failed} failed | ${drained.slowest < 2000 && drained.failed === 0 ? "met" : "missed"} |`
      : "| drain: every probe within 2 s, none failed | not run | missed |", "");
}
fs.writeFileSync(path.join(out, "report.md"), lines.join("\n") + "\n");
console.log(lines.join("\n"));
process.exit(0);

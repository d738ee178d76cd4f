#!/usr/bin/env node
// A CPU profile of the worker on the Miniflare path (edge and Durable Objects run in the
// worker's isolate). Usage, after a release build that keeps the wasm name section
// (bench/profile does both):
//   bench/profile [items per batch, default 100] [seconds, default 10]   accept load
//   bench/profile execute [runs, default 2000] [queue limit, default none]   runs through a
//     fast endpoint, to the end (bench/run's tasks declare a limit of 1,000)
// Writes bench/out/<accept|execute>.cpuprofile (open it in Chrome's DevTools) and prints
// the functions with the most self time.
import { spawn, execFileSync } from "node:child_process";
import fs from "node:fs";
import http from "node:http";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import WebSocket from "ws";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const executing = process.argv[2] === "execute";
const [items = "100", seconds = "10"] = process.argv.slice(2);
const runs = executing ? Number(process.argv[3] ?? 2000) : 0;
const limit = executing && process.argv[4] ? { concurrencyLimit: Number(process.argv[4]) } : {};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const freePort = () => new Promise((resolve) => {
  const s = net.createServer().listen(0, "127.0.0.1", () => { const { port } = s.address(); s.close(() => resolve(port)); });
});

const [port, inspectorPort] = [await freePort(), await freePort()];
const state = fs.mkdtempSync(path.join(os.tmpdir(), "profile-"));
// Execution calls this endpoint, which answers at once; accepted runs are delayed and never call it.
let called = 0;
let firstCall = 0;
const endpoint = http.createServer((req, res) => {
  req.resume();
  req.on("end", () => { firstCall ||= Date.now(); called++; res.writeHead(200, { "content-type": "application/json" }); res.end("{}"); });
});
await new Promise((r) => endpoint.listen(0, "127.0.0.1", r));
const tasks = {};
for (let i = 0; i < 8; i++) {
  tasks[`bench-${i}`] = { endpoint: `http://127.0.0.1:${endpoint.address().port}/`, queue: { name: `bench-${i}`, ...limit } };
}
const limits = { requests: false, batchItems: false };
const server = spawn("node", [path.join(root, "bench/miniflare.mjs"), "worker", String(port), state, JSON.stringify(tasks), JSON.stringify(limits)],
  { stdio: ["ignore", "pipe", "inherit"], detached: true, env: { ...process.env, INSPECTOR_PORT: String(inspectorPort) } });
const stop = () => { try { process.kill(-server.pid, "SIGTERM"); } catch {} };
process.on("exit", stop);
await new Promise((resolve) => server.stdout.on("data", (d) => String(d).includes("ready") && resolve()));

// The worker's isolate among the inspector's targets.
const targets = await (await fetch(`http://127.0.0.1:${inspectorPort}/json/list`)).json();
const target = targets.find((t) => t.id.includes("trigger-edge")) ?? targets[0];
const ws = new WebSocket(target.webSocketDebuggerUrl ?? `ws://127.0.0.1:${inspectorPort}/${target.id}`);
await new Promise((r) => ws.once("open", r));
let nextId = 1;
const pending = new Map();
ws.on("message", (m) => { const msg = JSON.parse(m); pending.get(msg.id)?.(msg); pending.delete(msg.id); });
const send = (method, params = {}) => new Promise((resolve) => { const id = nextId++; pending.set(id, resolve); ws.send(JSON.stringify({ id, method, params })); });

await send("Profiler.enable");
await send("Profiler.setSamplingInterval", { interval: 100 });
await send("Profiler.start");
let out = "";
if (executing) {
  const started = Date.now();
  const batches = Array.from({ length: Math.ceil(runs / 100) }, (_, b) =>
    JSON.stringify({ items: Array.from({ length: Math.min(100, runs - b * 100) }, () => ({ payload: { n: b } })) }));
  await Promise.all(Array.from({ length: 16 }, async () => {
    for (let body; (body = batches.shift()); ) {
      const res = await fetch(`http://127.0.0.1:${port}/api/v1/tasks/bench-0/batch`, {
        method: "POST", headers: { authorization: "Bearer tr_dev_bench_key", "content-type": "application/json" }, body });
      if (!res.ok) throw new Error(`batch answered ${res.status}`);
    }
  }));
  const acceptedMs = Date.now() - started;
  while (called < runs && Date.now() - started < 300_000) await sleep(20);
  const ms = Date.now() - started;
  out = `RESULT ${JSON.stringify({ runs, called, acceptedMs, firstCallMs: firstCall - started, ms, runsPerSec: called / (ms / 1000) })}`;
} else {
  const env = { ...process.env, BENCH_ITEMS: items, BENCH_TASKS: "8", BENCH_KEY: "tr_dev_bench_key" };
  out = execFileSync("wrk", ["-t2", "-c16", `-d${seconds}s`, "-s", path.join(root, "bench/accept.lua"), `http://127.0.0.1:${port}`], { env }).toString();
}
const { result } = await send("Profiler.stop");
ws.close();
stop();
endpoint.close();

fs.mkdirSync(path.join(root, "bench/out"), { recursive: true });
fs.writeFileSync(path.join(root, `bench/out/${executing ? "execute" : "accept"}.cpuprofile`), JSON.stringify(result.profile));
const { nodes, samples, timeDeltas } = result.profile;
const byId = new Map(nodes.map((n) => [n.id, n]));
const self = new Map();
samples.forEach((id, i) => {
  const name = byId.get(id).callFrame.functionName || "(anonymous)";
  self.set(name, (self.get(name) ?? 0) + (timeDeltas[i] ?? 0));
});
const total = [...self.values()].reduce((a, b) => a + b, 0);
console.log(out.split("\n").find((l) => l.startsWith("RESULT")) ?? "");
console.log(`self time by function (${(total / 1000).toFixed(0)} ms sampled):`);
for (const [name, us] of [...self].sort((a, b) => b[1] - a[1]).slice(0, 30)) {
  console.log(`${((100 * us) / total).toFixed(1).padStart(5)} %  ${name.slice(0, 110)}`);
}

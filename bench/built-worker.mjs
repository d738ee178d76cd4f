// The built worker as Miniflare's API loads it: the entry module (src/entry.js) over
// worker-build's output (build/), and its Durable Object classes under their bindings
// (wrangler.toml). Shared by bench/miniflare.mjs and tests/rpc_compat.mjs.
import path from "node:path";
import { fileURLToPath } from "node:url";

export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");

export const modules = [
  { type: "ESModule", path: path.join(root, "src/entry.js") },
  { type: "ESModule", path: path.join(root, "build/index.js") },
  { type: "CompiledWasm", path: path.join(root, "build/index_bg.wasm") },
];

export const durableObjects = {
  RUN_STORE: { className: "RunStore", useSQLite: true },
  QUEUE_GATE: { className: "QueueGate", useSQLite: true },
  RUN_EXECUTOR: { className: "RunExecutor", useSQLite: true },
  RATE_LIMITER: { className: "RateLimiter", useSQLite: true },
  SCHEDULER: { className: "Scheduler", useSQLite: true },
  BULK_ACTIONS: { className: "BulkActions", useSQLite: true },
};

// The production-like local path: the built worker loaded by Miniflare's API directly,
// without wrangler's dev proxy and inspector. Usage:
//   node bench/miniflare.mjs worker <port> <state dir> <tasks JSON> <rate limits JSON>
//   node bench/miniflare.mjs hello|floor <port> <state dir> [the floor's task endpoint]
// Prints "ready <url>" and serves until it is killed. With INSPECTOR_PORT set, workerd's
// inspector listens there (bench/profile.mjs takes CPU profiles through it). With
// MINIFLARE_VARS set (a JSON object), its entries replace the worker's variables and
// secrets: the end-to-end budget test runs its worker this way.
import { Miniflare } from "miniflare";
import path from "node:path";
import { durableObjects, modules, root } from "./built-worker.mjs";

const [which, port, state, tasksJson, rateLimitsJson] = process.argv.slice(2);

const options =
  which === "hello"
    ? {
        name: "bench-hello",
        modules: true,
        modulesRoot: root,
        scriptPath: path.join(root, "bench/hello/index.js"),
        compatibilityDate: "2026-04-01",
      }
    : which === "floor"
    ? {
        name: "bench-floor",
        modules: true,
        modulesRoot: root,
        scriptPath: path.join(root, "bench/floor/index.js"),
        compatibilityDate: "2026-04-01",
        durableObjects: { FLOOR_STORE: { className: "FloorStore", useSQLite: true } },
        bindings: { ENDPOINT: tasksJson ?? "" },
        durableObjectsPersist: path.join(state, "do"),
      }
    : {
        name: "trigger-edge",
        modulesRoot: root,
        modules,
        compatibilityDate: "2026-04-01",
        bindings: {
          TRIGGER_SECRET_KEYS: "tr_dev_bench_key",
          TASK_SIGNING_SECRET: "bench-signing-secret-0123456789",
          MAX_BATCH_ITEMS: "100",
          TASKS: JSON.parse(tasksJson),
          RATE_LIMITS: JSON.parse(rateLimitsJson),
          // The operations account (GET /api/v1/meter), read around every scenario
          // (BENCH_METERING=off: not counted, to measure what counting costs).
          METERING: process.env.BENCH_METERING ?? "on",
          ...JSON.parse(process.env.MINIFLARE_VARS ?? "{}"),
        },
        durableObjects,
        queueProducers: { RUNS: "trigger-edge-runs", DEAD_LETTERS: "trigger-edge-runs-dead" },
        queueConsumers: {
          "trigger-edge-runs": { maxBatchSize: 100, maxBatchTimeout: 1, maxRetries: 10 },
        },
        r2Buckets: ["PACKETS"],
        serviceBindings: { SELF: "trigger-edge" },
        durableObjectsPersist: path.join(state, "do"),
        r2Persist: path.join(state, "r2"),
      };

const inspector = process.env.INSPECTOR_PORT ? { inspectorPort: Number(process.env.INSPECTOR_PORT) } : {};
const mf = new Miniflare({ host: "127.0.0.1", port: Number(port), ...inspector, ...options });
const url = await mf.ready;
console.log(`ready ${url}`);
const stop = async () => {
  await mf.dispose();
  process.exit(0);
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);

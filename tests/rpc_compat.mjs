// Objects answer a command in the form it came in (`src/platform/rpc.rs`): bytes from this
// build's callers, text from a build before bytes (a caller still running the earlier
// version during a deploy). Loads the built worker (build/) with Miniflare beside a probe
// worker bound to its RunStore class, which sends one command both ways and prints what
// came back. Run by the end-to-end suite (tests/e2e/upgrade.rs).
import { Miniflare } from "miniflare";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const probe = `
export default {
  async fetch(request, env) {
    const store = env.RUN_STORE.get(env.RUN_STORE.idFromName("dev:probe"));
    const command = JSON.stringify({ get_run: { run_id: "run_1234567890abcdefghijkmnop" } });
    const text = await store.command(command);
    const bytes = await store.command(new TextEncoder().encode(command));
    return Response.json({
      text: [typeof text, text],
      bytes: [bytes.constructor.name, new TextDecoder().decode(bytes)],
    });
  },
};`;
const objects = ["RunStore", "QueueGate", "RunExecutor", "RateLimiter", "Scheduler", "BulkActions"];
const binding = (name) => name.replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase();
const mf = new Miniflare({
  workers: [
    {
      name: "probe",
      modules: true,
      script: probe,
      compatibilityDate: "2026-04-01",
      durableObjects: { RUN_STORE: { className: "RunStore", scriptName: "trigger-edge", useSQLite: true } },
    },
    {
      name: "trigger-edge",
      modulesRoot: root,
      modules: [
        { type: "ESModule", path: path.join(root, "src/entry.js") },
        { type: "ESModule", path: path.join(root, "build/index.js") },
        { type: "CompiledWasm", path: path.join(root, "build/index_bg.wasm") },
      ],
      compatibilityDate: "2026-04-01",
      bindings: { TRIGGER_SECRET_KEYS: "tr_dev_probe", TASKS: { probe: { endpoint: "http://127.0.0.1:9/" } } },
      durableObjects: Object.fromEntries(objects.map((c) => [binding(c), { className: c, useSQLite: true }])),
      queueProducers: { RUNS: "probe-runs", DEAD_LETTERS: "probe-dead" },
      r2Buckets: ["PACKETS"],
    },
  ],
});
try {
  const answer = await mf.dispatchFetch("http://probe/");
  console.log(await answer.text());
} finally {
  await mf.dispose();
}

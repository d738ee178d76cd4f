// Objects answer a command in the form it came in (`src/platform/rpc.rs`): bytes from this
// build's callers, text from a build before bytes (a caller still running the earlier
// version during a deploy). Loads the built worker (build/) with Miniflare beside a probe
// worker bound to its RunStore class, which sends one command both ways and prints what
// came back. Run by the end-to-end suite (tests/e2e/upgrade.rs).
import { Miniflare } from "miniflare";
import { durableObjects, modules, root } from "../bench/built-worker.mjs";

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
      modules,
      compatibilityDate: "2026-04-01",
      bindings: { TRIGGER_SECRET_KEYS: "tr_dev_probe", TASKS: { probe: { endpoint: "http://127.0.0.1:9/" } } },
      durableObjects,
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

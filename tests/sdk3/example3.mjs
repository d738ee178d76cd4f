import { configure, tasks, runs } from "@trigger.dev/sdk/v3";

configure({ baseURL: "http://127.0.0.1:8787", accessToken: "tr_dev_local_development_key" });

const handle = await tasks.batchTrigger("hello-world", [
  { payload: { name: "Ada" }, options: { tags: ["demo"], idempotencyKey: "greet-ada" } },
  { payload: { name: "Grace" }, options: { delay: "1h" } },
]);
console.log(handle.batchId, handle.runs.map((r) => r.id));

let run;
do {
  await new Promise((r) => setTimeout(r, 500));
  run = await runs.retrieve(handle.runs[0].id);
} while (!run.isCompleted);
console.log(run.status, run.output); // COMPLETED { message: 'Hello, Ada!' }

await runs.cancel(handle.runs[1].id);
for await (const r of runs.list({ tag: "demo" })) console.log(r.id, r.status);

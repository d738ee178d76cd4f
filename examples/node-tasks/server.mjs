// The example tasks served by Node's http server, for tasks that live outside Cloudflare:
//
//   TASK_SIGNING_SECRET=… PORT=3000 node server.mjs
//
// and in the trigger-edge worker's wrangler.toml, for each task:
//
//   [vars.TASKS.echo-types]
//   endpoint = "https://tasks.example.com/"
//
// The tasks are the Cloudflare example's (examples/tasks-worker/src/tasks.js), unchanged.
import { createServer } from "node:http";

import { createTaskHandler } from "trigger-edge-tasks";
import { toNodeListener } from "trigger-edge-tasks/node";

import { tasks } from "../tasks-worker/src/tasks.js";

const secret = process.env.TASK_SIGNING_SECRET;
if (!secret) {
  console.error("TASK_SIGNING_SECRET is not set");
  process.exit(1);
}
const port = Number(process.env.PORT ?? 3000);
const host = process.env.HOST ?? "127.0.0.1";

const server = createServer(toNodeListener(createTaskHandler({ tasks, secret })));
server.listen(port, host, () => {
  console.log(`example tasks listening on http://${host}:${server.address().port}/`);
});

// A Cloudflare Worker serving the example tasks. The trigger-edge worker reaches it
// through its EXAMPLE_TASKS service binding (the tasks are declared in its wrangler.toml).
import { createTaskHandler } from "trigger-edge-tasks";

import { tasks } from "./tasks.js";

interface Env {
  TASK_SIGNING_SECRET: string;
}

let handler: ((request: Request) => Promise<Response>) | undefined;

export default {
  fetch(request: Request, env: Env): Promise<Response> {
    handler ??= createTaskHandler({ tasks, secret: env.TASK_SIGNING_SECRET });
    return handler(request);
  },
};

// SDK 4.x, unchanged, against a worker whose request bucket is smaller than
// the burst it sends: its own 429 handling (wait until x-ratelimit-reset, retry) must
// carry every trigger through. Run by tests/e2e (limits.rs).
import { configure, tasks } from "@trigger.dev/sdk";
import { runChecks, triggersPastTheRateLimitSucceed } from "../sdk_checks.mjs";

configure({ baseURL: process.env.TRIGGER_API_URL, accessToken: process.env.TRIGGER_SECRET_KEY });

await runChecks({
  triggersPastTheRateLimitSucceed: () =>
    triggersPastTheRateLimitSucceed(tasks, process.env.TASK, Number(process.env.TRIGGERS)),
});

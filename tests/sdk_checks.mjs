// What tests/sdk3/run.mjs and tests/sdk4/run.mjs share: small helpers and the runner that
// prints `ok <check>` or `FAILED <check>: <why>` per check (read by tests/e2e/sdk.rs).

export const unique = (name) => `${name}-${Date.now()}-${Math.random().toString(36).slice(2)}`;
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls `check` until it returns something truthy, or throws after `ms`. */
export async function until(what, check, ms = 30_000) {
  const end = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(200);
  }
}

/** Runs every check in order and exits non-zero if any failed. */
export async function runChecks(checks) {
  let failed = 0;
  for (const [name, check] of Object.entries(checks)) {
    try {
      await check();
      console.log(`ok ${name}`);
    } catch (err) {
      failed += 1;
      console.log(`FAILED ${name}: ${err?.stack ?? err}`);
    }
  }
  process.exit(failed === 0 ? 0 : 1);
}

/**
 * Triggers `count` runs of `task` at once, more than the worker's request bucket holds:
 * the SDK meets 429s, waits until `x-ratelimit-reset` and retries; every trigger must
 * resolve to its own run. Used by tests/sdk3 and tests/sdk4 `rate_limited.mjs`.
 */
export async function triggersPastTheRateLimitSucceed(tasks, task, count) {
  const handles = await Promise.all(
    Array.from({ length: count }, (_, i) => tasks.trigger(task, { i })),
  );
  const ids = new Set(handles.map((h) => h.id));
  if (ids.size !== count || ![...ids].every((id) => id.startsWith("run_"))) {
    throw new Error(`expected ${count} distinct run ids, got ${[...ids].join(", ")}`);
  }
}

// What tests/sdk3/run.mjs and tests/sdk4/run.mjs share: small helpers, the runner that
// prints `ok <check>` or `FAILED <check>: <why>` per check (read by tests/e2e/sdk.rs), and
// the checks that go through tasks.
import assert from "node:assert/strict";

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

/**
 * Checks that go through tasks: the e2e task endpoint's superjson output, and the example
 * tasks Worker running beside the worker. The same for both SDK versions, given their
 * `tasks` and `runs`.
 */
export function checksThroughTasks(tasks, runs) {
  return {
    // The e2e task endpoint answers `{"superjsonOutput": true}` with a superjson document
    // (x-trigger-output-type), as the task package does for a Date and a BigInt; the SDK
    // reads it from the run's outputPresignedUrl and decodes it.
    async runsRetrieveDecodesASuperjsonOutput() {
      const handle = await tasks.trigger("e2e-task", { superjsonOutput: true });
      const done = await until("COMPLETED", async () => {
        const r = await runs.retrieve(handle.id);
        return r.status === "COMPLETED" && r;
      });
      assert.ok(done.output.at instanceof Date, `a Date, not ${typeof done.output.at}`);
      assert.equal(done.output.at.toISOString(), "2026-01-02T03:04:05.000Z");
      assert.equal(done.output.big, 10n);
    },
    // The example tasks Worker (examples/tasks-worker, written with packages/tasks) runs
    // beside the worker: the task sees what the SDK sent, Dates, BigInts and Maps as such,
    // and what it returned comes back the same.
    async theExampleTaskSeesAndReturnsDatesBigIntsAndMaps() {
      const at = new Date("2026-01-02T03:04:05.000Z");
      const big = 12345678901234567890n;
      const handle = await tasks.trigger("echo-types", { at, big, map: new Map([["a", 1]]), n: 1 });
      const done = await until("COMPLETED", async () => {
        const r = await runs.retrieve(handle.id);
        return r.status === "COMPLETED" && r;
      });
      assert.deepEqual(done.output.types, { at: "Date", big: "bigint", map: "Map", n: "number" });
      assert.ok(done.output.echoed.at instanceof Date);
      assert.equal(done.output.echoed.at.getTime(), at.getTime());
      assert.equal(done.output.echoed.big, big);
      assert.ok(done.output.echoed.map instanceof Map);
      assert.equal(done.output.echoed.map.get("a"), 1);
      assert.ok(done.output.finishedAt instanceof Date);
    },

    async anExampleTaskFailingOnceCompletesOnItsSecondAttempt() {
      const handle = await tasks.trigger("fail-once", { n: 1 });
      const done = await until("COMPLETED", async () => {
        const r = await runs.retrieve(handle.id);
        return r.status === "COMPLETED" && r;
      });
      assert.equal(done.attemptCount, 2);
      assert.deepEqual(done.output, { attempt: 2 });
    },

    async anExampleTaskThrowingAbortTaskRunErrorFailsAfterOneAttempt() {
      const handle = await tasks.trigger("give-up", { reason: "the card was declined" });
      const done = await until("FAILED", async () => {
        const r = await runs.retrieve(handle.id);
        return r.status === "FAILED" && r;
      });
      assert.equal(done.attemptCount, 1);
      assert.equal(done.error.name, "AbortTaskRunError");
      assert.equal(done.error.message, "the card was declined");
      assert.match(done.error.stackTrace, /AbortTaskRunError: the card was declined/);
    },
  };
}

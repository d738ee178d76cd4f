// Drives the worker with the official Trigger.dev SDK 3.2.1, unchanged: only the base URL
// and the key are configured. Every check asserts behaviour; the process exits non-zero on
// the first failure. Run by tests/e2e (sdk_3_2_…), with TRIGGER_API_URL and
// TRIGGER_SECRET_KEY set.
import assert from "node:assert/strict";
import {
  configure, tasks, runs, idempotencyKeys, auth,
  AuthenticationError, BadRequestError,
} from "@trigger.dev/sdk/v3";
import { checksThroughTasks, runChecks, unique, until } from "../sdk_checks.mjs";

configure({ baseURL: process.env.TRIGGER_API_URL, accessToken: process.env.TRIGGER_SECRET_KEY });

const TASK = "hello-world";
const checks = {
  async batchTriggerReturnsReadableRuns() {
    const tag = unique("tag");
    const handle = await tasks.batchTrigger(TASK, [
      { payload: { name: "Ada" }, options: { tags: [tag, "sdk:3"] } },
      { payload: { name: "Grace" }, options: { tags: tag } },
      { payload: "a plain string payload" },
    ]);
    assert.match(handle.batchId, /^batch_/);
    assert.equal(handle.runs.length, 3);
    const first = await runs.retrieve(handle.runs[0].id);
    assert.equal(first.taskIdentifier, TASK);
    assert.deepEqual([...first.tags].sort(), [tag, "sdk:3"].sort());
    // 3.2.1 hands the stored (superjson) payload back as it is.
    assert.equal(typeof first.payload, "string");
    assert.deepEqual(JSON.parse(first.payload).json, { name: "Ada" });
    const third = await runs.retrieve(handle.runs[2].id);
    assert.equal(third.payload, "a plain string payload");
    assert.ok(["QUEUED", "EXECUTING", "COMPLETED"].includes(first.status), first.status);
  },

  async runsReachCompletedThroughTheExampleTask() {
    const handle = await tasks.batchTrigger(TASK, [{ payload: { name: "Linus" } }]);
    const done = await until("COMPLETED", async () => {
      const run = await runs.retrieve(handle.runs[0].id);
      return run.status === "COMPLETED" && run;
    });
    assert.deepEqual(done.output, { message: "Hello, Linus!" });
    assert.equal(done.isSuccess, true);
    assert.equal(done.isCompleted, true);
  },

  async aRepeatedItemKeyReturnsTheSameRun() {
    const key = await idempotencyKeys.create(unique("order"));
    const a = await tasks.batchTrigger(TASK, [{ payload: { n: 1 }, options: { idempotencyKey: key } }]);
    const b = await tasks.batchTrigger(TASK, [{ payload: { n: 2 }, options: { idempotencyKey: key } }]);
    assert.equal(b.runs[0].id, a.runs[0].id);
  },

  async aDuplicateKeyInsideOneBatchIsOneRun() {
    const key = unique("dup");
    const handle = await tasks.batchTrigger(TASK, [
      { payload: { n: 1 }, options: { idempotencyKey: key } },
      { payload: { n: 2 }, options: { idempotencyKey: key } },
    ]);
    assert.equal(handle.runs[0].id, handle.runs[1].id);
  },

  async triggerAndBatchTriggerShareAKey() {
    const key = unique("shared");
    const single = await tasks.trigger(TASK, { n: 1 }, { idempotencyKey: key });
    const batch = await tasks.batchTrigger(TASK, [{ payload: { n: 2 }, options: { idempotencyKey: key } }]);
    assert.equal(batch.runs[0].id, single.id);
    const again = await tasks.trigger(TASK, { n: 3 }, { idempotencyKey: key });
    assert.equal(again.id, single.id);
  },

  async aDelayedRunIsDelayedAndCancelMakesItCanceled() {
    const handle = await tasks.trigger(TASK, { n: 1 }, { delay: "1h" });
    const delayed = await runs.retrieve(handle.id);
    assert.equal(delayed.status, "DELAYED");
    assert.ok(delayed.delayedUntil instanceof Date);
    await runs.cancel(handle.id);
    assert.equal((await runs.retrieve(handle.id)).status, "CANCELED");
  },

  async rescheduleMovesADelayedRun() {
    const handle = await tasks.trigger(TASK, { n: 1 }, { delay: "1h" });
    const before = (await runs.retrieve(handle.id)).delayedUntil.getTime();
    const moved = await runs.reschedule(handle.id, { delay: "2h" });
    assert.ok(moved.delayedUntil.getTime() > before + 50 * 60 * 1000);
    await runs.cancel(handle.id);
  },

  async replayCreatesANewRun() {
    const handle = await tasks.trigger(TASK, { name: "Replay" });
    const replayed = await runs.replay(handle.id);
    assert.notEqual(replayed.id, handle.id);
    const run = await runs.retrieve(replayed.id);
    assert.equal(run.taskIdentifier, TASK);
    assert.deepEqual(JSON.parse(run.payload).json, { name: "Replay" });
  },

  async listFilteredByTagFindsExactlyTheTaggedRuns() {
    const tag = unique("list");
    const handle = await tasks.batchTrigger(
      TASK,
      Array.from({ length: 7 }, (_, i) => ({ payload: { i }, options: { tags: [tag] } })),
    );
    await tasks.trigger(TASK, { other: true }, { tags: [unique("other")] });
    const found = [];
    for await (const run of runs.list({ tag, limit: 3 })) found.push(run.id);
    assert.deepEqual(found.sort(), handle.runs.map((r) => r.id).sort());
  },

  async aWrongKeyIsAnAuthenticationError() {
    await assert.rejects(
      auth.withAuth({ accessToken: "tr_dev_not_the_key" }, () => runs.retrieve("run_123456789abcdefghijkm")),
      AuthenticationError,
    );
  },

  async tooManyItemsAndTooManyTagsAreBadRequestsWithoutRetries() {
    const started = Date.now();
    await assert.rejects(
      tasks.batchTrigger(TASK, Array.from({ length: 101 }, (_, i) => ({ payload: { i } }))),
      (err) => err instanceof BadRequestError && /Too many items/.test(err.message),
    );
    await assert.rejects(
      tasks.batchTrigger(TASK, [{ payload: {}, options: { tags: ["a", "b", "c", "d", "e", "f"] } }]),
      (err) => err instanceof BadRequestError && /at most 5 tags/.test(err.message),
    );
    // 3.2.1 retries 5xx after 1 s and 2 s; a 400 answers at once.
    assert.ok(Date.now() - started < 900, `took ${Date.now() - started} ms`);
  },
  ...checksThroughTasks(tasks, runs),
};

await runChecks(checks);

// Drives the worker with the official Trigger.dev SDK 4.x, unchanged: only the base URL
// and the key are configured. SDK 4 batches in two steps (POST /api/v3/batches, then the
// items as an NDJSON stream) and offloads payloads of 128 KiB or more. Every check asserts
// behaviour; the process exits non-zero if any fails. Run by tests/e2e (sdk_4_…).
import assert from "node:assert/strict";
import {
  configure, tasks, runs, batch, idempotencyKeys, auth, queues, schedules,
  AuthenticationError, BadRequestError, BatchTriggerError, ApiError,
} from "@trigger.dev/sdk";
import { apiClientManager } from "@trigger.dev/core/v3";
import { checksThroughTasks, runChecks, unique, until } from "../sdk_checks.mjs";

configure({ baseURL: process.env.TRIGGER_API_URL, accessToken: process.env.TRIGGER_SECRET_KEY });

const TASK = "hello-world";
// Like 3.2, SDK 4 hands a run's stored payload back as sent: objects as superjson text.
const decoded = (payload) => JSON.parse(payload).json;

/** The run ids of a batch, in item order, once all items are in. */
async function runsOf(batchId) {
  const b = await until("the batch to be complete", async () => {
    const b = await batch.retrieve(batchId);
    return b.runs.length === b.runCount && b;
  });
  return b.runs;
}

const checks = {
  async batchTriggerRunsAreReadableThroughBatchRetrieve() {
    const tag = unique("tag");
    const handle = await tasks.batchTrigger(TASK, [
      { payload: { name: "Ada" }, options: { tags: [tag, "sdk:4"] } },
      { payload: { name: "Grace" }, options: { tags: tag } },
      { payload: "a plain string payload" },
    ]);
    assert.match(handle.batchId, /^batch_/);
    assert.equal(handle.runCount, 3);
    const ids = await runsOf(handle.batchId);
    assert.equal(ids.length, 3);
    const first = await runs.retrieve(ids[0]);
    assert.equal(first.taskIdentifier, TASK);
    assert.deepEqual([...first.tags].sort(), [tag, "sdk:4"].sort());
    assert.deepEqual(decoded(first.payload), { name: "Ada" });
    assert.equal((await runs.retrieve(ids[2])).payload, "a plain string payload");
  },

  async runsReachCompletedThroughTheExampleTask() {
    const handle = await tasks.batchTrigger(TASK, [{ payload: { name: "Linus" } }, { payload: { name: "Ken" } }]);
    for (const id of await runsOf(handle.batchId)) {
      const done = await until("COMPLETED", async () => {
        const run = await runs.retrieve(id);
        return run.status === "COMPLETED" && run;
      });
      assert.match(done.output.message, /^Hello, (Linus|Ken)!$/);
    }
    const b = await batch.retrieve(handle.batchId);
    assert.equal(b.status, "COMPLETED");
  },

  async aRepeatedItemKeyReturnsTheSameRun() {
    const key = await idempotencyKeys.create(unique("order"));
    const a = await tasks.trigger(TASK, { n: 1 }, { idempotencyKey: key });
    const b = await tasks.batchTrigger(TASK, [{ payload: { n: 2 }, options: { idempotencyKey: key } }]);
    assert.deepEqual(await runsOf(b.batchId), [a.id]);
    const c = await tasks.trigger(TASK, { n: 3 }, { idempotencyKey: key });
    assert.equal(c.id, a.id);
  },

  async aDuplicateKeyInsideOneBatchIsOneRun() {
    const key = unique("dup");
    const handle = await tasks.batchTrigger(TASK, [
      { payload: { n: 1 }, options: { idempotencyKey: key } },
      { payload: { n: 2 }, options: { idempotencyKey: key } },
    ]);
    const ids = await runsOf(handle.batchId);
    assert.equal(ids[0], ids[1]);
  },

  async aRepeatedBatchKeyIsCachedAndSkipsTheItems() {
    const key = unique("batch-key");
    const a = await tasks.batchTrigger(TASK, [{ payload: { n: 1 } }], { idempotencyKey: key });
    const b = await tasks.batchTrigger(TASK, [{ payload: { n: 2 } }], { idempotencyKey: key });
    assert.equal(b.batchId, a.batchId);
  },

  async aDelayedRunIsDelayedCancelMakesItCanceledRescheduleMovesIt() {
    const handle = await tasks.trigger(TASK, { n: 1 }, { delay: "1h" });
    const delayed = await runs.retrieve(handle.id);
    assert.equal(delayed.status, "DELAYED");
    const moved = await runs.reschedule(handle.id, { delay: "3h" });
    assert.ok(moved.delayedUntil.getTime() > delayed.delayedUntil.getTime() + 60 * 60 * 1000);
    await runs.cancel(handle.id);
    assert.equal((await runs.retrieve(handle.id)).status, "CANCELED");
  },

  async replayCreatesANewRun() {
    const handle = await tasks.trigger(TASK, { name: "Replay" });
    const replayed = await runs.replay(handle.id);
    assert.notEqual(replayed.id, handle.id);
    assert.deepEqual(decoded((await runs.retrieve(replayed.id)).payload), { name: "Replay" });
  },

  async listFilteredByTagFindsExactlyTheTaggedRuns() {
    const tag = unique("list");
    const handle = await tasks.batchTrigger(
      TASK,
      Array.from({ length: 5 }, (_, i) => ({ payload: { i }, options: { tags: [tag] } })),
    );
    const ids = await runsOf(handle.batchId);
    const found = [];
    for await (const run of runs.list({ tag, limit: 2 })) found.push(run.id);
    assert.deepEqual(found.sort(), [...ids].sort());
  },

  async aWrongKeyIsAnAuthenticationError() {
    await assert.rejects(
      auth.withAuth({ accessToken: "tr_dev_not_the_key" }, () => runs.retrieve("run_123456789abcdefghijkm")),
      AuthenticationError,
    );
  },

  async tooManyTagsIsABadRequestWithoutRetries() {
    const started = Date.now();
    await assert.rejects(
      tasks.trigger(TASK, {}, { tags: ["a", "b", "c", "d", "e", "f"] }),
      (err) => err instanceof BadRequestError && /at most 5 tags/.test(err.message),
    );
    const handle = await tasks.batchTrigger(TASK, [{ payload: {}, options: { tags: ["a", "b", "c", "d", "e", "f"] } }])
      .then(() => null, (err) => err);
    assert.ok(handle instanceof BatchTriggerError, String(handle));
    assert.match(String(handle.message), /at most 5 tags/);
    // 4.x retries 5xx for about 9 s; a 400 answers at once.
    assert.ok(Date.now() - started < 3000, `took ${Date.now() - started} ms`);
  },

  async aBatchOf1000ItemsIsAcceptedAndEveryRunIsReadable() {
    const handle = await tasks.batchTrigger(
      TASK,
      Array.from({ length: 1000 }, (_, i) => ({ payload: { i }, options: { delay: "1h" } })),
    );
    assert.equal(handle.runCount, 1000);
    const ids = await runsOf(handle.batchId);
    assert.equal(new Set(ids).size, 1000);
    for (const i of [0, 1, 499, 998, 999]) {
      const run = await runs.retrieve(ids[i]);
      assert.deepEqual(decoded(run.payload), { i });
      assert.equal(run.status, "DELAYED");
    }
  },

  async aPayloadOf200KiBRoundTrips() {
    const blob = "x".repeat(200 * 1024);
    const handle = await tasks.batchTrigger(TASK, [{ payload: { name: "Big", blob } }]);
    const [id] = await runsOf(handle.batchId);
    const run = await runs.retrieve(id);
    // Offloaded by the SDK, stored in R2, resolved on read (tests/e2e checks the uploads).
    assert.equal(decoded(run.payload).blob, blob);
    assert.equal(decoded(run.payload).name, "Big");
    const done = await until("COMPLETED", async () => {
      const r = await runs.retrieve(id);
      return r.status === "COMPLETED" && r;
    });
    assert.deepEqual(done.output, { message: "Hello, Big!" });
  },
  async queuesListRetrievePauseResumeOverrideAndReset() {
    // Every declared task's queue is listed, before any run: `echo-types` has its own.
    const listed = [];
    for await (const q of queues.list({ perPage: 2 })) listed.push(q);
    const echo = listed.find((q) => q.name === "echo-types");
    assert.ok(echo, `listed: ${listed.map((q) => q.name)}`);
    assert.equal(echo.type, "task");
    const byTask = await queues.retrieve({ type: "task", name: "echo-types" });
    assert.equal(byTask.id, echo.id);
    assert.equal((await queues.retrieve(echo.id)).name, "echo-types");

    // A queue a trigger names: it exists once a run reached it. Its name has a slash.
    const name = `sdk4/${unique("queue")}`;
    const unknown = await queues.retrieve({ type: "custom", name }).then(() => null, (e) => e);
    assert.ok(unknown instanceof ApiError && unknown.status === 404, String(unknown));
    const first = await tasks.trigger(TASK, { name: "First" }, { queue: name });
    const completed = (id) => until(`${id} COMPLETED`, async () => (await runs.retrieve(id)).status === "COMPLETED");
    await completed(first.id);
    const paused = await queues.pause({ type: "custom", name });
    assert.equal(paused.paused, true);
    assert.equal(paused.name, name);
    assert.equal(paused.type, "custom");
    const held = await tasks.trigger(TASK, { name: "Held" }, { queue: name, priority: 30 });
    await new Promise((resolve) => setTimeout(resolve, 1500));
    assert.equal((await runs.retrieve(held.id)).status, "QUEUED");
    const waiting = await queues.retrieve({ type: "custom", name });
    assert.equal(waiting.queued, 1);
    assert.equal((await queues.resume({ type: "custom", name })).paused, false);
    await completed(held.id);

    const overridden = await queues.overrideConcurrencyLimit({ type: "custom", name }, 3);
    assert.equal(overridden.concurrencyLimit, 3);
    assert.equal(overridden.concurrency.override, 3);
    assert.ok(overridden.concurrency.overriddenAt instanceof Date);
    const reset = await queues.resetConcurrencyLimit({ type: "custom", name });
    assert.equal(reset.concurrency.override, null);
    assert.equal(reset.concurrencyLimit, reset.concurrency.base);
  },
  async debouncedTriggersMakeOneRunWithTheLastPayloadWhenTrailing() {
    const key = unique("debounce");
    const debounce = { key, delay: "1s", mode: "trailing" };
    const a = await tasks.trigger(TASK, { name: "First" }, { debounce });
    const b = await tasks.trigger(TASK, { name: "Last" }, { debounce });
    assert.equal(b.id, a.id);
    const done = await until("COMPLETED", async () => {
      const run = await runs.retrieve(a.id);
      return run.status === "COMPLETED" && run;
    });
    assert.deepEqual(done.output, { message: "Hello, Last!" });
    const bad = await tasks.trigger(TASK, {}, { debounce: { key, delay: "1h" } }).then(() => null, (e) => e);
    assert.ok(bad instanceof BadRequestError && /debounce\.delay/.test(bad.message), String(bad));
  },
  async metadataAndTagsThroughTheSdksOwnClient() {
    // SDK 4.x sends these from inside a run (`metadata.*`, `tags.add`); its client is the same.
    const client = apiClientManager.clientOrThrow();
    const handle = await tasks.trigger(TASK, { n: 1 }, { delay: "1h", metadata: { step: "queued" } });
    const changed = await client.updateRunMetadata(handle.id, {
      operations: [
        { type: "set", key: "step", value: "working" },
        { type: "increment", key: "$.progress.done", value: 2 },
      ],
    });
    assert.deepEqual(changed.metadata, { step: "working", progress: { done: 2 } });
    assert.deepEqual((await client.getRunMetadata(handle.id)).metadata, changed.metadata);
    const tag = unique("added");
    await client.addTags(handle.id, { tags: [tag] });
    const run = await runs.retrieve(handle.id);
    assert.ok(run.tags.includes(tag), String(run.tags));
    assert.deepEqual(run.metadata, changed.metadata);
    await runs.cancel(handle.id);
  },
  async bulkCancelByTagAndBulkReplayByIdsThroughRunsBulk() {
    const tag = unique("bulk");
    const delayed = await tasks.batchTrigger(TASK, [1, 2, 3].map((n) => ({ payload: { name: `B${n}` }, options: { delay: "1h", tags: [tag] } })));
    const ids = (await runsOf(delayed.batchId));
    const { id } = await runs.bulk.cancel({ filter: { tag, status: ["DELAYED"] }, name: "sdk4 cleanup" });
    assert.match(id, /^bulk_/);
    const done = await until("the bulk cancel to finish", async () => {
      const a = await runs.bulk.retrieve(id);
      return a.status !== "PENDING" && a;
    });
    assert.equal(done.status, "COMPLETED");
    assert.equal(done.type, "CANCEL");
    assert.deepEqual(done.counts, { total: 3, success: 3, failure: 0 });
    assert.ok(done.createdAt instanceof Date && done.completedAt instanceof Date);
    for (const run of ids) assert.equal((await runs.retrieve(run)).status, "CANCELED");
    const replay = await runs.bulk.replay({ runIds: [ids[0]] });
    const replayed = await until("the bulk replay to finish", async () => {
      const a = await runs.bulk.retrieve(replay.id);
      return a.status !== "PENDING" && a;
    });
    assert.deepEqual(replayed.counts, { total: 1, success: 1, failure: 0 });
    // Newest first, a page of one at a time.
    const listed = [];
    for await (const a of runs.bulk.list({ limit: 1 })) listed.push(a.id);
    assert.ok(listed.indexOf(replay.id) >= 0 && listed.indexOf(replay.id) < listed.indexOf(id), String(listed));
    assert.deepEqual(await runs.bulk.abort(replay.id), { id: replay.id });
  },
  async schedulesCreateListRetrieveUpdateDeactivateActivateAndDelete() {
    const deduplicationKey = unique("schedule");
    // Once a year: nothing fires while the test runs.
    const created = await schedules.create({
      task: TASK, cron: "0 9 1 1 *", deduplicationKey, externalId: "user_1", timezone: "Asia/Tokyo",
    });
    assert.match(created.id, /^sched_/);
    assert.equal(created.type, "IMPERATIVE");
    assert.equal(created.active, true);
    assert.equal(created.generator.expression, "0 9 1 1 *");
    assert.ok(created.generator.description.length > 0);
    assert.equal(created.externalId, "user_1");
    // 09:00 in Tokyo (UTC+9, no DST) is 00:00Z.
    assert.ok(created.nextRun instanceof Date && created.nextRun.toISOString().endsWith("T00:00:00.000Z"), String(created.nextRun));
    // The same key again updates the same schedule.
    const again = await schedules.create({ task: TASK, cron: "0 10 1 1 *", deduplicationKey, timezone: "Asia/Tokyo" });
    assert.equal(again.id, created.id);
    assert.equal(again.generator.expression, "0 10 1 1 *");
    const listed = [];
    for await (const s of schedules.list({ perPage: 2 })) listed.push(s);
    assert.ok(listed.some((s) => s.id === created.id), `listed: ${listed.map((s) => s.id)}`);
    assert.equal((await schedules.retrieve(created.id)).generator.expression, "0 10 1 1 *");
    const updated = await schedules.update(created.id, { task: TASK, cron: "30 8 * * 1", timezone: "Europe/London" });
    assert.equal(updated.timezone, "Europe/London");
    const off = await schedules.deactivate(created.id);
    assert.equal(off.active, false);
    assert.equal(off.nextRun ?? null, null);
    assert.equal((await schedules.activate(created.id)).active, true);
    assert.deepEqual(await schedules.del(created.id), { id: created.id });
    const gone = await schedules.retrieve(created.id).then(() => null, (e) => e);
    assert.ok(gone instanceof ApiError && gone.status === 404, String(gone));
    const bad = await schedules.create({ task: TASK, cron: "* * * * * *", deduplicationKey }).then(() => null, (e) => e);
    assert.ok(bad instanceof ApiError && bad.status === 422 && /seconds/.test(bad.message), String(bad));
    const { timezones } = await schedules.timezones();
    assert.equal(timezones[0], "UTC");
    assert.ok(timezones.includes("America/New_York") && timezones.includes("Asia/Tokyo"));
    const withoutUtc = await schedules.timezones({ excludeUtc: true });
    assert.ok(!withoutUtc.timezones.includes("UTC"));
  },
  ...checksThroughTasks(tasks, runs),
};

await runChecks(checks);

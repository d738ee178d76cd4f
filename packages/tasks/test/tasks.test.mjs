// Unit tests of the package, run with `node --test` against the built `dist/`.
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { after, test } from "node:test";

import superjson from "superjson";

import {
  AbortTaskRunError,
  createTaskHandler,
  decodePayload,
  encodeOutput,
  serializeError,
  sign,
  task,
  verifySignature,
} from "../dist/index.js";
import { toNodeListener } from "../dist/node.js";

const SECRET = "task-signing-secret-for-tests";
const encoder = new TextEncoder();

/** A call as the worker makes it: the run as JSON, signed now. */
async function call(run, { secret = SECRET, timestamp = Date.now(), headers = {}, url = "http://tasks.test/" } = {}) {
  const body = JSON.stringify({
    id: "run_1",
    task: "echo",
    attempt: 1,
    maxAttempts: 3,
    payloadType: "application/json",
    tags: [],
    queue: "task/echo",
    createdAt: "2026-12-01T10:00:00.000Z",
    ...run,
  });
  return new Request(url, {
    method: "POST",
    headers: {
      "content-type": "application/json",
      "x-trigger-timestamp": String(timestamp),
      "x-trigger-signature": await sign(secret, timestamp, encoder.encode(body)),
      ...headers,
    },
    body,
  });
}

const echo = task({ id: "echo", run: (payload, { ctx }) => ({ payload, ctx }) });

test("the signature matches the fixed vector shared with the worker's Rust verifier", async () => {
  const signature = await sign("whsec_test", 1700000000000, encoder.encode('{"id":"run_1"}'));
  assert.equal(signature, "v1=236c0e17226f84e3088b7c301bf0fe8019778bf54f18ed07b2b43e38a212cca7");
});

test("a signature is accepted when real and refused when forged, stale, missing, malformed or another secret's", async () => {
  const body = encoder.encode('{"id":"run_1"}');
  const now = 1_800_000_000_000;
  const good = await sign(SECRET, now, body);
  assert.deepEqual(await verifySignature(SECRET, String(now), good, body, now), { ok: true });
  const forged = good.slice(0, -1) + (good.endsWith("0") ? "1" : "0");
  assert.deepEqual(await verifySignature(SECRET, String(now), forged, body, now), { ok: false, reason: "mismatch" });
  assert.deepEqual(await verifySignature(SECRET, String(now), good, encoder.encode('{"id":"run_2"}'), now), {
    ok: false,
    reason: "mismatch",
  });
  const other = await sign("another-secret-entirely", now, body);
  assert.deepEqual(await verifySignature(SECRET, String(now), other, body, now), { ok: false, reason: "mismatch" });
  assert.deepEqual(await verifySignature(SECRET, String(now), good, body, now + 5 * 60 * 1000 + 1), {
    ok: false,
    reason: "stale",
  });
  assert.deepEqual(await verifySignature(SECRET, String(now), good, body, now - 5 * 60 * 1000), { ok: true });
  assert.deepEqual(await verifySignature(SECRET, null, good, body, now), { ok: false, reason: "missing" });
  assert.deepEqual(await verifySignature(SECRET, String(now), null, body, now), { ok: false, reason: "missing" });
  assert.deepEqual(await verifySignature(SECRET, "soon", good, body, now), { ok: false, reason: "malformed" });
  assert.deepEqual(await verifySignature(SECRET, String(now), "v2=abc", body, now), { ok: false, reason: "malformed" });
});

test("payloads are decoded for every payload type", () => {
  const at = new Date("2026-01-02T03:04:05.000Z");
  const value = { at, big: 10n, map: new Map([["a", 1]]), set: new Set([1, 2]), n: 1 };
  const text = superjson.stringify(value);
  assert.deepEqual(decodePayload(text, "application/super+json"), value);
  // The superjson document itself, already parsed.
  assert.deepEqual(decodePayload(JSON.parse(text), "application/super+json"), value);
  // What SDK 3.2.1 sends: `"v": 1` in meta.
  const v1 = '{"json":{"at":"2025-01-02T03:04:05.000Z","big":"10"},"meta":{"values":{"at":["Date"],"big":["bigint"]},"v":1}}';
  assert.deepEqual(decodePayload(v1, "application/super+json"), { at: new Date("2025-01-02T03:04:05.000Z"), big: 10n });
  assert.deepEqual(decodePayload({ n: 1 }, "application/json"), { n: 1 });
  assert.deepEqual(decodePayload({ n: 1 }, undefined), { n: 1 });
  assert.equal(decodePayload("plain words", "text/plain"), "plain words");
  assert.equal(decodePayload(undefined, "application/json"), null);
});

test("an output is plain JSON when it can be, superjson otherwise, and decodes back to the value", () => {
  assert.deepEqual(encodeOutput({ ok: true }), { body: '{"ok":true}', type: "application/json" });
  assert.deepEqual(encodeOutput(undefined), { body: "", type: "application/json" });
  const value = { at: new Date("2026-01-02T03:04:05.000Z"), big: 12345678901234567890n };
  const encoded = encodeOutput(value);
  assert.equal(encoded.type, "application/super+json");
  assert.deepEqual(superjson.parse(encoded.body), value);
});

test("a thrown error is recorded with its name, message and stack", () => {
  const error = new TypeError("bad input");
  const recorded = serializeError(error);
  assert.equal(recorded.name, "TypeError");
  assert.equal(recorded.message, "bad input");
  assert.match(recorded.stack, /TypeError: bad input/);
  assert.deepEqual(serializeError("just text"), { name: "Error", message: "just text" });
  assert.deepEqual(serializeError({ code: 7 }), { name: "Error", message: '{"code":7}' });
});

test("the handler routes by task id, decodes the payload and gives the task its ctx", async () => {
  const other = task({ id: "other", run: () => "other ran" });
  const handler = createTaskHandler({ tasks: [echo, other], secret: SECRET });
  const payload = superjson.stringify({ at: new Date("2026-01-02T03:04:05.000Z"), big: 5n });
  const answer = await handler(
    await call({
      payload,
      payloadType: "application/super+json",
      tags: ["a", "b"],
      batchId: "batch_1",
      idempotencyKey: "k",
      concurrencyKey: "tenant-a",
      isTest: true,
      environment: { type: "PRODUCTION" },
      attempt: 2,
    }),
  );
  assert.equal(answer.status, 200);
  assert.equal(answer.headers.get("x-trigger-output-type"), "application/super+json");
  const output = superjson.parse(await answer.text());
  assert.deepEqual(output.payload, { at: new Date("2026-01-02T03:04:05.000Z"), big: 5n });
  assert.deepEqual(output.ctx, {
    run: {
      id: "run_1",
      tags: ["a", "b"],
      isTest: true,
      idempotencyKey: "k",
      concurrencyKey: "tenant-a",
      createdAt: new Date("2026-12-01T10:00:00.000Z"),
    },
    attempt: { number: 2 },
    task: { id: "echo" },
    queue: { name: "task/echo" },
    batch: { id: "batch_1" },
    environment: { type: "PRODUCTION" },
  });
  const routed = await handler(await call({ task: "other" }));
  assert.equal(await routed.text(), '"other ran"');
  assert.equal(routed.headers.get("x-trigger-output-type"), "application/json");
});

test("an unknown task is 404, a bad signature 401, and neither runs anything", async () => {
  let ran = 0;
  const counted = task({ id: "echo", run: () => ran++ });
  const handler = createTaskHandler({ tasks: [counted], secret: SECRET });
  const unknown = await handler(await call({ task: "nope" }));
  assert.equal(unknown.status, 404);
  assert.deepEqual(await unknown.json(), { error: "Unknown task" });
  const forged = await handler(await call({}, { secret: "not-the-secret" }));
  assert.equal(forged.status, 401);
  assert.deepEqual(await forged.json(), { error: "Invalid signature (mismatch)" });
  const stale = await handler(await call({}, { timestamp: Date.now() - 6 * 60 * 1000 }));
  assert.equal(stale.status, 401);
  const unsigned = await handler(new Request("http://tasks.test/", { method: "POST", body: "{}" }));
  assert.equal(unsigned.status, 401);
  const get = await handler(new Request("http://tasks.test/"));
  assert.equal(get.status, 405);
  assert.equal(ran, 0);
});

test("a thrown error fails the attempt; AbortTaskRunError also says not to retry", async () => {
  const failures = [];
  const failing = task({
    id: "echo",
    run: (payload) => {
      if (payload.abort) throw new AbortTaskRunError("no point trying again");
      throw new RangeError("try again later");
    },
    onFailure: (payload, error) => failures.push(error.message),
  });
  const handler = createTaskHandler({ tasks: [failing], secret: SECRET });
  const retried = await handler(await call({ payload: { abort: false }, attempt: 1, maxAttempts: 3 }));
  assert.equal(retried.status, 500);
  assert.equal(retried.headers.get("x-trigger-retry"), null);
  const body = await retried.json();
  assert.equal(body.error.name, "RangeError");
  assert.equal(body.error.message, "try again later");
  assert.match(body.error.stack, /RangeError/);
  assert.deepEqual(failures, [], "onFailure waits for the last attempt");
  const last = await handler(await call({ payload: { abort: false }, attempt: 3, maxAttempts: 3 }));
  assert.equal(last.status, 500);
  assert.deepEqual(failures, ["try again later"]);
  const aborted = await handler(await call({ payload: { abort: true }, attempt: 1 }));
  assert.equal(aborted.status, 500);
  assert.equal(aborted.headers.get("x-trigger-retry"), "false");
  assert.equal((await aborted.json()).error.name, "AbortTaskRunError");
  assert.deepEqual(failures, ["try again later", "no point trying again"]);
});

test("onSuccess sees the output, and its own failure does not fail the run", async () => {
  const seen = [];
  const ok = task({
    id: "echo",
    run: () => 42,
    onSuccess: (payload, output) => {
      seen.push(output);
      throw new Error("hook broke");
    },
  });
  const handler = createTaskHandler({ tasks: [ok], secret: SECRET });
  const answer = await handler(await call({}));
  assert.equal(answer.status, 200);
  assert.equal(await answer.text(), "42");
  assert.deepEqual(seen, [42]);
});

test("the signal fires at the attempt's deadline", async () => {
  // AbortSignal.timeout's timer does not keep Node's event loop alive (a server would).
  const alive = setInterval(() => {}, 1000);
  after(() => clearInterval(alive));
  const waiting = task({
    id: "echo",
    run: (payload, { signal }) =>
      new Promise((resolve) => {
        if (signal.aborted) resolve({ aborted: true });
        signal.addEventListener("abort", () => resolve({ aborted: true, reason: signal.reason?.name }));
      }),
  });
  const handler = createTaskHandler({ tasks: [waiting], secret: SECRET });
  const answer = await handler(await call({}, { headers: { "x-trigger-deadline": String(Date.now() + 50) } }));
  assert.deepEqual(await answer.json(), { aborted: true, reason: "TimeoutError" });
  // A task's own maxDuration holds too.
  const short = task({ ...waiting, maxDuration: 0.05 });
  const own = createTaskHandler({ tasks: [short], secret: SECRET });
  assert.deepEqual(await (await own(await call({}))).json(), { aborted: true, reason: "TimeoutError" });
});

test("two tasks with one id are refused, and so is a handler without a secret", () => {
  assert.throws(() => createTaskHandler({ tasks: [echo, echo], secret: SECRET }), /two tasks have the id echo/);
  assert.throws(() => createTaskHandler({ tasks: [echo], secret: "" }), /TASK_SIGNING_SECRET/);
});

test("the Node adapter serves the handler over http", async () => {
  const handler = createTaskHandler({ tasks: [echo], secret: SECRET });
  const server = createServer(toNodeListener(handler));
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  try {
    const { port } = server.address();
    const request = await call({ payload: { n: 1 } }, { url: `http://127.0.0.1:${port}/tasks` });
    const answer = await fetch(request);
    assert.equal(answer.status, 200);
    assert.deepEqual(superjson.parse(await answer.text()).payload, { n: 1 });
    const forged = await fetch(await call({}, { url: `http://127.0.0.1:${port}/tasks`, secret: "nope" }));
    assert.equal(forged.status, 401);
  } finally {
    server.close();
  }
});

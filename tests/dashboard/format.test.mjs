// The dashboard's pure pieces (public/dashboard/format.js), under node --test.
import assert from "node:assert/strict";
import test from "node:test";
import {
  chartGeometry, countByStatus, decodedPayload, lifeOf, environmentOf, filtersFrom, formatDuration, formatTime, listQuery, pretty,
  statusTone,
} from "../../public/dashboard/format.js";

test("durations read at a glance", () => {
  assert.equal(formatDuration(0), "0 ms");
  assert.equal(formatDuration(999), "999 ms");
  assert.equal(formatDuration(1500), "1.5 s");
  assert.equal(formatDuration(125_000), "2m 05s");
  assert.equal(formatDuration(3_720_000), "1h 02m");
  for (const unknown of [undefined, null, -1, Number.NaN, "5"]) assert.equal(formatDuration(unknown), "—");
});

test("statuses have a tone beside their label, unknown ones muted", () => {
  assert.equal(statusTone("COMPLETED"), "ok");
  assert.equal(statusTone("FAILED"), "bad");
  assert.equal(statusTone("EXECUTING"), "busy");
  assert.equal(statusTone("DELAYED"), "wait");
  assert.equal(statusTone("SOMETHING_NEW"), "muted");
});

test("a key's prefix names its environment", () => {
  assert.equal(environmentOf("tr_dev_abc"), "Development");
  assert.equal(environmentOf("tr_stg_abc"), "Staging");
  assert.equal(environmentOf("tr_prod_abc"), "Production");
  assert.equal(environmentOf("tr_preview_abc"), "Preview");
  for (const bad of ["tr_dev_", "sk_live_x", "", undefined]) assert.equal(environmentOf(bad), null);
});

test("the page's filters become the list's query, and back", () => {
  const filters = filtersFrom("?view=runs&status=FAILED&tag=a%2Cb&task=send%20email&period=1d&other=x&queue=");
  assert.deepEqual(filters, { status: "FAILED", task: "send email", tag: "a,b", period: "1d" });
  const query = new URLSearchParams(listQuery(filters, { after: "1_run_x" }));
  assert.equal(query.get("filter[status]"), "FAILED");
  assert.equal(query.get("filter[taskIdentifier]"), "send email");
  assert.equal(query.get("filter[tag]"), "a,b");
  assert.equal(query.get("filter[createdAt][period]"), "1d");
  assert.equal(query.get("page[size]"), "25");
  assert.equal(query.get("page[after]"), "1_run_x");
  assert.equal(query.get("filter[queue]"), null);
  assert.equal(listQuery({}), "page%5Bsize%5D=25");
});

test("times, payloads and values are shown as text", () => {
  assert.equal(formatTime("2026-12-03T10:15:02.123Z"), "2026-12-03 10:15:02");
  assert.equal(formatTime(undefined), "—");
  assert.equal(formatTime("nonsense"), "—");
  const superjson = JSON.stringify({ json: { at: "2026-01-01T00:00:00.000Z" }, meta: { values: { at: ["Date"] } } });
  assert.deepEqual(decodedPayload(superjson, "application/super+json"), { at: "2026-01-01T00:00:00.000Z" });
  assert.equal(decodedPayload("{broken", "application/super+json"), "{broken");
  assert.deepEqual(decodedPayload({ a: 1 }, "application/json"), { a: 1 });
  assert.equal(pretty({ a: 1 }), '{\n  "a": 1\n}');
  assert.equal(pretty(null), "—");
  assert.equal(pretty("<img src=x>"), "<img src=x>");
});

test("a batch's runs are counted by status, most first", () => {
  const runs = ["COMPLETED", "FAILED", "COMPLETED", "QUEUED", "CANCELED"].map((status) => ({ status }));
  assert.deepEqual(countByStatus(runs), [["COMPLETED", 2], ["CANCELED", 1], ["FAILED", 1], ["QUEUED", 1]]);
  assert.deepEqual(countByStatus([]), []);
});

test("a run's timeline has its attempts, with their errors, between creation and the end", () => {
  const run = {
    createdAt: "2026-12-03T10:00:00.000Z",
    finishedAt: "2026-12-03T10:00:02.000Z",
    status: "COMPLETED",
    attempts: [
      { status: "FAILED", startedAt: "2026-12-03T10:00:00.100Z", completedAt: "2026-12-03T10:00:00.200Z", error: { message: "boom" } },
      { status: "COMPLETED", startedAt: "2026-12-03T10:00:01.000Z", completedAt: "2026-12-03T10:00:02.000Z" },
    ],
  };
  const life = lifeOf(run);
  assert.deepEqual(life.map((s) => s.what), ["Created", "Attempt 1", "Attempt 2", "Finished"]);
  assert.equal(life[1].error, "boom");
  assert.equal(life[2].error, undefined);
  assert.deepEqual(lifeOf({ createdAt: "x", delayedUntil: "y" }).map((s) => s.what), ["Created", "Delayed until"]);
});

test("a chart's bars are scaled to the largest value, a group per bucket", () => {
  const buckets = [{ created: 4, completed: 2, failed: 0 }, { created: 0, completed: 0, failed: 1 }];
  const { bars } = chartGeometry(buckets, ["created", "completed", "failed"], { width: 100, height: 110 });
  assert.equal(bars.length, 6);
  assert.equal(bars[0].height, 100, "the largest fills the box less its margin");
  assert.equal(bars[1].height, 50);
  assert.equal(bars[2].height, 0);
  assert.ok(bars[3].x >= 50, "the second bucket's bars are in its half");
  assert.equal(chartGeometry([], ["created"]).bars.length, 0);
});

// The dashboard in a real browser: Debian's Chromium driven by playwright-core, against
// the worker tests/e2e started (TRIGGER_API_URL, TRIGGER_SECRET_KEY). Prints `ok <check>`
// or `FAILED <check>: <why>` for each and exits non-zero if any failed. Screenshots go to
// tests/dashboard/screenshots/ (git-ignored).
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { chromium } from "playwright-core";

const base = process.env.TRIGGER_API_URL;
const key = process.env.TRIGGER_SECRET_KEY;
const shots = path.join(path.dirname(new URL(import.meta.url).pathname), "screenshots");
fs.mkdirSync(shots, { recursive: true });
const unique = (prefix) => `${prefix}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 7)}`;
const XSS = `<img src=x onerror=alert(1)></script>`;

async function call(method, p, body) {
  const response = await fetch(`${base}${p}`, {
    method,
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const json = await response.json();
  if (!response.ok) throw new Error(`${method} ${p}: ${response.status} ${JSON.stringify(json)}`);
  return json;
}

async function until(what, check, ms = 30_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
const page = await context.newPage();
const dialogs = [];
page.on("dialog", async (dialog) => {
  dialogs.push(dialog.message());
  await dialog.dismiss();
});
const pageErrors = [];
page.on("pageerror", (e) => pageErrors.push(e.message));

async function signIn(withKey) {
  await page.goto(`${base}/dashboard/`);
  await page.getByLabel("API key").fill(withKey);
  await page.getByRole("button", { name: "Sign in" }).click();
}

const checks = {
  async aWrongKeyIsRefusedAndThePageCallsNothingWithoutOne() {
    const requests = [];
    page.on("request", (r) => requests.push(r.url()));
    const response = await page.goto(`${base}/dashboard/`);
    const csp = response.headers()["content-security-policy"] ?? "";
    assert.match(csp, /default-src 'self'/);
    assert.match(csp, /frame-ancestors 'none'/);
    await page.getByLabel("API key").waitFor();
    assert.ok(!requests.some((u) => u.includes("/api/")), `called ${requests.filter((u) => u.includes("/api/"))}`);
    await signIn("tr_dev_not-a-key-of-this-worker");
    await page.getByText("That API key was refused.").waitFor();
    assert.equal(await page.evaluate(() => sessionStorage.length), 0);
    await page.screenshot({ path: path.join(shots, "refused.png") });
  },
  async signedInTheRunsOfABatchAppearWithoutReloading() {
    await signIn(key);
    await page.getByRole("heading", { name: "Runs" }).waitFor();
    assert.equal(await page.locator("#environment").textContent(), "Development");
    const tag = unique("dash");
    const batch = await call("POST", "/api/v1/tasks/hello-world/batch", {
      items: [1, 2, 3].map((n) => ({ payload: { name: `Dash ${n}` }, options: { tags: [tag] } })),
    });
    for (const run of batch.runs) await page.getByRole("link", { name: run }).waitFor({ timeout: 20_000 });
    await page.screenshot({ path: path.join(shots, "runs.png") });
    checks.tag = tag;
    checks.batch = batch;
  },
  async filteringByTagAndByStatusKeepsTheFiltersInTheUrl() {
    const { tag, batch } = checks;
    await page.getByLabel("Tag").fill(tag);
    await page.getByRole("button", { name: "Filter" }).click();
    await until("the tag in the URL", async () => page.url().includes(`tag=${tag}`));
    await until("only the batch's runs", async () => (await page.locator("tbody tr").count()) === 3);
    for (const run of batch.runs) await until(`${run} COMPLETED`, async () => (await call("GET", `/api/v3/runs/${run}`)).status === "COMPLETED");
    await page.getByLabel("Status").selectOption("COMPLETED");
    await page.getByRole("button", { name: "Filter" }).click();
    await until("the status in the URL", async () => page.url().includes("status=COMPLETED"));
    await until("three completed runs", async () => (await page.locator("tbody .status.ok").count()) === 3);
    // The shared URL opens the same view.
    const shared = page.url();
    await page.goto(shared);
    await until("the same three runs", async () => (await page.locator("tbody tr").count()) === 3);
    await page.getByLabel("Status").selectOption("FAILED");
    await page.getByRole("button", { name: "Filter" }).click();
    await page.getByText("No runs.").waitFor();
  },
  async aBatchShowsItsRunsCountedByStatus() {
    const { batch } = checks;
    await page.goto(`${base}/dashboard/?view=run&id=${batch.runs[0]}`);
    await page.getByRole("link", { name: batch.batchId }).click();
    await page.getByRole("heading", { name: batch.batchId }).waitFor();
    await page.getByRole("heading", { name: "Runs by status" }).waitFor();
    const counts = await page.locator("main .bar").first().innerText();
    assert.match(counts, /COMPLETED\s*3/);
    for (const run of batch.runs) await page.getByRole("link", { name: run }).waitFor();
    await page.getByText("None.").waitFor();
  },
  async aRunShowsItsOutputAndHostileTextRendersAsText() {
    const hostile = await call("POST", "/api/v1/tasks/hello-world/trigger", {
      payload: { name: XSS },
      options: { tags: [XSS.slice(0, 60)], metadata: { note: XSS } },
    });
    await until("the hostile run to complete", async () => (await call("GET", `/api/v3/runs/${hostile.id}`)).status === "COMPLETED");
    await page.goto(`${base}/dashboard/?view=run&id=${hostile.id}`);
    await page.getByRole("heading", { name: hostile.id }).waitFor();
    const text = await page.locator("main").innerText();
    assert.ok(text.includes(`Hello, ${XSS}!`), "the output, as text");
    assert.ok(text.includes(XSS), "the payload and metadata, as text");
    await page.goto(`${base}/dashboard/?view=runs&tag=${encodeURIComponent(XSS.slice(0, 60))}`);
    await page.getByRole("link", { name: hostile.id }).waitFor();
    assert.equal(await page.locator("img").count(), 0, "no image element was made");
    assert.deepEqual(dialogs, [], "no dialog opened");
    assert.deepEqual(pageErrors, [], "no script error");
    await page.screenshot({ path: path.join(shots, "hostile.png") });
  },
  async aRunThatFailedOnceShowsTwoAttemptsAndTheFirstError() {
    // The example tasks Worker's fail-once fails its first attempt and succeeds after.
    const handle = await call("POST", "/api/v1/tasks/fail-once/trigger", { payload: { n: 1 } });
    await until("fail-once to complete", async () => (await call("GET", `/api/v3/runs/${handle.id}`)).status === "COMPLETED", 60_000);
    const run = await call("GET", `/api/v3/runs/${handle.id}`);
    assert.deepEqual(run.attempts.map((a) => a.status), ["FAILED", "COMPLETED"]);
    await page.goto(`${base}/dashboard/?view=run&id=${handle.id}`);
    const rows = page.locator("#timeline tbody tr");
    await until("the timeline", async () => (await rows.count()) === 4);
    assert.match(await rows.nth(1).innerText(), /Attempt 1\s+FAILED/);
    assert.ok((await rows.nth(1).innerText()).includes(run.attempts[0].error.message), "the first error");
    assert.match(await rows.nth(2).innerText(), /Attempt 2\s+COMPLETED/);
    await page.screenshot({ path: path.join(shots, "attempts.png") });
  },
  async aDelayedRunIsCancelledFromThePage() {
    const key = unique("dash-key");
    const delayed = await call("POST", "/api/v1/tasks/hello-world/trigger", { payload: { name: "Later" }, options: { delay: "1h", idempotencyKey: key, idempotencyKeyTTL: "2h" } });
    await page.goto(`${base}/dashboard/?view=run&id=${delayed.id}`);
    await page.locator("main dl .status", { hasText: "DELAYED" }).waitFor();
    const expires = (await call("GET", `/api/v3/runs/${delayed.id}`)).idempotencyKeyExpiresAt;
    assert.ok(Date.parse(expires) > Date.now() + 3_500_000, `the key holds two hours: ${expires}`);
    await page.getByText(expires.replace("T", " ").slice(0, 19)).waitFor();
    await page.getByRole("button", { name: "Cancel" }).click();
    await page.getByRole("button", { name: "Yes, cancel" }).click();
    await page.locator("main dl .status", { hasText: "CANCELED" }).waitFor();
    assert.equal((await call("GET", `/api/v3/runs/${delayed.id}`)).status, "CANCELED");
    await page.screenshot({ path: path.join(shots, "cancelled.png") });
  },
  async aQueuePausedFromThePageHoldsItsRunsUntilResumed() {
    const queue = unique("dash/q");
    const first = await call("POST", "/api/v1/tasks/hello-world/trigger", { payload: { name: "First" }, options: { queue: { name: queue } } });
    await until("the queue's first run", async () => (await call("GET", `/api/v3/runs/${first.id}`)).status === "COMPLETED");
    await page.goto(`${base}/dashboard/?view=queues`);
    await page.getByRole("button", { name: `Pause ${queue}` }).click();
    await page.getByRole("button", { name: `Resume ${queue}` }).waitFor();
    const held = await call("POST", "/api/v1/tasks/hello-world/trigger", { payload: { name: "Held" }, options: { queue: { name: queue } } });
    await new Promise((r) => setTimeout(r, 1500));
    assert.equal((await call("GET", `/api/v3/runs/${held.id}`)).status, "QUEUED");
    await page.screenshot({ path: path.join(shots, "queues.png") });
    await page.getByRole("button", { name: `Resume ${queue}` }).click();
    await page.getByRole("button", { name: `Pause ${queue}` }).waitFor();
    await until("the held run to complete", async () => (await call("GET", `/api/v3/runs/${held.id}`)).status === "COMPLETED");
  },
  async theSchedulesViewShowsAndSwitchesASchedule() {
    const made = await call("POST", "/api/v1/schedules", { task: "hello-world", cron: "0 0 1 1 *", deduplicationKey: unique("dash") });
    await page.goto(`${base}/dashboard/?view=schedules`);
    const row = page.locator("tr", { hasText: made.id });
    await row.waitFor();
    await row.getByRole("button", { name: "Deactivate" }).click();
    await page.locator("tr", { hasText: made.id }).getByRole("button", { name: "Activate" }).waitFor();
    assert.equal((await call("GET", `/api/v1/schedules/${made.id}`)).active, false);
    await call("DELETE", `/api/v1/schedules/${made.id}`);
  },
  async theActivityChartCountsTheRunsOfTheLastHour() {
    await page.goto(`${base}/dashboard/?view=activity`);
    await page.getByRole("img", { name: "Runs per minute over the last hour" }).waitFor();
    const api = await call("GET", "/api/v1/activity?period=1h");
    assert.equal(api.buckets.length, 60);
    const created = api.buckets.reduce((n, b) => n + b.created, 0);
    const completed = api.buckets.reduce((n, b) => n + b.completed, 0);
    // This script alone made 8 runs by now, 7 of them completed (other tests add theirs).
    assert.ok(created >= 8 && completed >= 7, `created ${created}, completed ${completed}`);
    const legend = await page.locator(".legend").innerText();
    const shown = Number(/Created: (\d+)/.exec(legend)?.[1]);
    assert.ok(shown >= 8 && shown <= created, `the page shows ${shown} created`);
    assert.ok((await page.locator("svg.chart rect").count()) === 180, "three bars a minute");
    await page.getByRole("link", { name: "Last day, by hour" }).click();
    await page.getByRole("img", { name: "Runs per hour over the last day" }).waitFor();
    await page.screenshot({ path: path.join(shots, "activity.png") });
  },
  async atAPhonesWidthTheRunsViewStillShowsItsRuns() {
    await page.setViewportSize({ width: 390, height: 800 });
    await page.goto(`${base}/dashboard/?view=runs&tag=${checks.tag}`);
    await page.getByRole("link", { name: checks.batch.runs[0] }).waitFor();
    await page.screenshot({ path: path.join(shots, "phone.png") });
    await page.setViewportSize({ width: 1280, height: 800 });
  },
  async theDarkSchemeIsReadable() {
    await page.emulateMedia({ colorScheme: "dark" });
    await page.goto(`${base}/dashboard/?view=runs&tag=${checks.tag}`);
    await page.getByRole("link", { name: checks.batch.runs[0] }).waitFor();
    const [background, text] = await page.evaluate(() => {
      const style = getComputedStyle(document.body);
      return [style.backgroundColor, style.color];
    });
    const luminance = (rgb) => rgb.match(/\d+/g).slice(0, 3).reduce((n, v) => n + Number(v), 0) / 3;
    assert.ok(luminance(background) < 60 && luminance(text) > 180, `${background} on ${text}`);
    await page.screenshot({ path: path.join(shots, "dark.png") });
    await page.emulateMedia({ colorScheme: "light" });
  },
  async signingOutForgetsTheKey() {
    await page.goto(`${base}/dashboard/?view=runs`);
    await page.getByRole("button", { name: "Sign out" }).click();
    await page.getByLabel("API key").waitFor();
    assert.equal(await page.evaluate(() => sessionStorage.getItem("trigger-edge.apiKey")), null);
  },
};

let failed = 0;
for (const [name, check] of Object.entries(checks)) {
  if (typeof check !== "function") continue;
  try {
    await check();
    console.log(`ok ${name}`);
  } catch (err) {
    failed += 1;
    console.log(`FAILED ${name}: ${err?.stack ?? err}`);
    await page.screenshot({ path: path.join(shots, `failed-${name}.png`) }).catch(() => {});
  }
}
await browser.close();
process.exit(failed === 0 ? 0 : 1);

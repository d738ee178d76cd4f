// The floor: the least a durable accept does on this runtime, written plainly in
// JavaScript. It answers the benchmark's batch requests like the worker does (same URL,
// same body), but with nothing else: no authentication, validation, options, rate limit
// or queue. The edge parses the body and makes one call to the task's object; the object
// writes each item's run, idempotency key and outbox row in one transaction and answers
// with the run ids. A ratio to the floor is what the worker's own code costs on top of
// one object call and one committed write per request.
//
// The execution floor: runs of a task named `exec-…` are also executed, by the least that
// is durable: one write to start the run, the call to the task endpoint (the ENDPOINT
// var), one write to finish it, at most EXECUTING_AT_ONCE calls at a time per store. No
// queue, no limits, no leases, no retries, and nothing survives a restart: what the
// worker's execution costs on top of this is its durability and its queues' rules.

// Ids as the worker makes them: two characters of the current second (modulo 34²), then
// random ones, so that one second's rows land in one narrow range of the id index.
const ALPHABET = "123456789abcdefghijkmnopqrstuvwxyz";
function runId(now) {
  const second = Math.floor(now / 1000) % (34 * 34);
  const random = crypto.getRandomValues(new Uint8Array(16));
  return `run_${ALPHABET[Math.floor(second / 34)]}${ALPHABET[second % 34]}` +
    Array.from(random, (b) => ALPHABET[b % 34]).join("");
}

const EXECUTING_AT_ONCE = 64;

export class FloorStore {
  constructor(state, env) {
    this.state = state;
    this.env = env;
    this.storage = state.storage;
    this.sql = state.storage.sql;
    this.pending = [];
    this.executing = 0;
    this.sql.exec(`CREATE TABLE IF NOT EXISTS runs (id TEXT PRIMARY KEY, task TEXT NOT NULL,
      payload TEXT, options TEXT, idempotency_key TEXT, created_at INTEGER NOT NULL, status TEXT)`);
    this.sql.exec(`CREATE TABLE IF NOT EXISTS idempotency_keys (task TEXT NOT NULL, key TEXT NOT NULL,
      run_id TEXT NOT NULL, PRIMARY KEY (task, key))`);
    this.sql.exec("CREATE TABLE IF NOT EXISTS outbox (run_id TEXT PRIMARY KEY, due_at INTEGER NOT NULL)");
  }

  async fetch(request) {
    const { task, items } = await request.json();
    const now = Date.now();
    const runs = this.storage.transactionSync(() =>
      items.map((item) => {
        const key = item.options?.idempotencyKey ?? null;
        if (key !== null) {
          const [held] = this.sql
            .exec("SELECT run_id FROM idempotency_keys WHERE task = ? AND key = ?", task, key)
            .toArray();
          if (held) return held.run_id;
        }
        const id = runId(now);
        this.sql.exec("INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, 'QUEUED')", id, task,
          JSON.stringify(item.payload), JSON.stringify(item.options ?? {}), key, now);
        if (key !== null) this.sql.exec("INSERT INTO idempotency_keys VALUES (?, ?, ?)", task, key, id);
        this.sql.exec("INSERT INTO outbox VALUES (?, ?)", id, now);
        return id;
      }),
    );
    if (task.startsWith("exec-")) {
      for (const [i, id] of runs.entries()) this.pending.push({ id, task, createdAt: now, payload: items[i].payload });
      this.pump();
    }
    return Response.json({ runs });
  }

  pump() {
    while (this.executing < EXECUTING_AT_ONCE && this.pending.length) {
      const run = this.pending.shift();
      this.executing++;
      this.state.waitUntil(this.execute(run).finally(() => {
        this.executing--;
        this.pump();
      }));
    }
  }

  async execute(run) {
    this.sql.exec("UPDATE runs SET status = 'EXECUTING' WHERE id = ?", run.id);
    const answer = await fetch(this.env.ENDPOINT, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ runId: run.id, queue: "floor-exec", createdAt: new Date(run.createdAt).toISOString(), payload: run.payload }),
    });
    await answer.arrayBuffer();
    this.sql.exec("UPDATE runs SET status = 'COMPLETED' WHERE id = ?", run.id);
  }
}

export default {
  async fetch(request, env) {
    const task = new URL(request.url).pathname.split("/")[4] ?? "";
    const { items } = await request.json();
    const store = env.FLOOR_STORE.get(env.FLOOR_STORE.idFromName(task));
    const answer = await store.fetch("http://floor/", { method: "POST", body: JSON.stringify({ task, items }) });
    const { runs } = await answer.json();
    return Response.json({ batchId: `batch_${crypto.randomUUID().replaceAll("-", "")}`, runs });
  },
};

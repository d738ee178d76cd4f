// The example tasks, written with the task package exactly as Trigger.dev tasks are
// written (only the import differs). Plain JavaScript so that both examples share them:
// the Cloudflare Worker (`index.ts`) and the Node.js server (`examples/node-tasks`).
import { AbortTaskRunError, task } from "trigger-edge-tasks";

/** Names the type of a value: a Date stays a Date, a BigInt a bigint. */
function typeOf(value) {
  if (value instanceof Date) return "Date";
  if (value instanceof Map) return "Map";
  if (value instanceof Set) return "Set";
  if (Array.isArray(value)) return "Array";
  return value === null ? "null" : typeof value;
}

/** Names the type of each value it got, and returns them with the time it finished. */
export const echoTypes = task({
  id: "echo-types",
  /** @param {Record<string, unknown>} payload */
  run: async (payload, { ctx }) => {
    const types = Object.fromEntries(Object.entries(payload).map(([k, v]) => [k, typeOf(v)]));
    return { types, echoed: payload, attempt: ctx.attempt.number, finishedAt: new Date() };
  },
});

/** Fails its first attempt, then succeeds: the worker retries it. */
export const failOnce = task({
  id: "fail-once",
  run: async (_payload, { ctx }) => {
    if (ctx.attempt.number === 1) throw new Error("the first attempt fails on purpose");
    return { attempt: ctx.attempt.number };
  },
});

/** Gives up at once: no retry whatever the task's maxAttempts. */
export const giveUp = task({
  id: "give-up",
  /** @param {{ reason?: string }} payload */
  run: async (payload) => {
    throw new AbortTaskRunError(payload.reason ?? "this run cannot succeed");
  },
});

export const tasks = [echoTypes, failOnce, giveUp];

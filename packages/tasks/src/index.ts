/**
 * `trigger-edge-tasks`: write tasks the way Trigger.dev's SDK has you write them, and
 * serve them to a trigger-edge worker from any runtime with `Request`, `Response` and Web
 * Crypto (Cloudflare Workers, Node.js 20+, Deno, Bun).
 *
 * ```ts
 * import { task, createTaskHandler, AbortTaskRunError } from "trigger-edge-tasks";
 *
 * export const greet = task({
 *   id: "greet",
 *   run: async (payload: { name: string; at: Date }, { ctx }) => ({ message: `Hello, ${payload.name}!` }),
 * });
 *
 * export default { fetch: createTaskHandler({ tasks: [greet], secret: env.TASK_SIGNING_SECRET }) };
 * ```
 *
 * The wire protocol (the worker's side is described in its README, "Task calls"):
 * - a call is a `POST` of the run as JSON, signed (`x-trigger-timestamp`,
 *   `x-trigger-signature`), with the attempt's deadline in `x-trigger-deadline`;
 * - a `2xx` answer completes the run, its body the output, its `x-trigger-output-type`
 *   saying whether that body is superjson;
 * - any other answer fails the attempt; a body `{"error": {name, message, stack}}` is
 *   recorded as the run's error, and `x-trigger-retry: false` ends the run without
 *   another attempt (what {@link AbortTaskRunError} does).
 */

import { decodePayload, encodeOutput } from "./packets.js";
import { verifySignature } from "./signature.js";

export { decodePayload, encodeOutput, SUPERJSON } from "./packets.js";
export { sign, verifySignature, SIGNATURE_TOLERANCE_MS } from "./signature.js";
export type { SignatureCheck, SignatureFailure } from "./signature.js";

/** Headers of a task call and of its answer. */
export const HEADERS = {
  runId: "x-trigger-run-id",
  attempt: "x-trigger-attempt",
  timestamp: "x-trigger-timestamp",
  signature: "x-trigger-signature",
  deadline: "x-trigger-deadline",
  outputType: "x-trigger-output-type",
  retry: "x-trigger-retry",
} as const;

/** Throw it to fail the run at once: no further attempt is made. */
export class AbortTaskRunError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "AbortTaskRunError";
  }
}

export type EnvironmentType = "DEVELOPMENT" | "STAGING" | "PRODUCTION" | "PREVIEW";

/** What a task's code knows about the run it executes, shaped like Trigger.dev's `ctx`. */
export interface TaskContext {
  run: {
    id: string;
    tags: string[];
    isTest: boolean;
    idempotencyKey?: string;
    concurrencyKey?: string;
    createdAt: Date;
  };
  attempt: { number: number };
  task: { id: string };
  queue: { name: string };
  batch?: { id: string };
  environment: { type: EnvironmentType };
}

export interface RunParams {
  ctx: TaskContext;
  /** Fires when the attempt's `maxDuration` is reached; pass it on to `fetch` and friends. */
  signal: AbortSignal;
}

export interface TaskOptions<TPayload, TOutput> {
  id: string;
  run: (payload: TPayload, params: RunParams) => TOutput | Promise<TOutput>;
  /** Seconds the attempt may take here; the worker's declared `maxDuration` also holds. */
  maxDuration?: number;
  /** After the run succeeded (an error here does not fail it). */
  onSuccess?: (payload: TPayload, output: TOutput, params: { ctx: TaskContext }) => unknown;
  /** After the run failed for good: its last attempt, or an `AbortTaskRunError`. */
  onFailure?: (payload: TPayload, error: unknown, params: { ctx: TaskContext }) => unknown;
}

export interface Task<TPayload = unknown, TOutput = unknown> extends TaskOptions<TPayload, TOutput> {
  readonly kind: "trigger-edge-task";
}

/** Declares a task. */
export function task<TPayload = any, TOutput = any>(
  options: TaskOptions<TPayload, TOutput>,
): Task<TPayload, TOutput> {
  if (!options.id) throw new Error("a task needs an id");
  return { ...options, kind: "trigger-edge-task" };
}

/** The run as the worker sends it. */
export interface TaskCall {
  id: string;
  task: string;
  attempt: number;
  maxAttempts?: number;
  payload?: unknown;
  payloadType?: string;
  context?: unknown;
  tags?: string[];
  batchId?: string | null;
  idempotencyKey?: string | null;
  queue: string;
  concurrencyKey?: string | null;
  createdAt: string;
  isTest?: boolean;
  environment?: { type: EnvironmentType };
}

export interface HandlerOptions {
  tasks: Task<any, any>[];
  /** The worker's `TASK_SIGNING_SECRET`. */
  secret: string;
  /** How far a call's timestamp may be from this clock (default five minutes). */
  toleranceMs?: number;
}

function json(status: number, value: unknown, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(value), {
    status,
    headers: { "content-type": "application/json", ...headers },
  });
}

/** What a thrown value is recorded as. */
export function serializeError(error: unknown): { name: string; message: string; stack?: string } {
  if (error instanceof Error) {
    return { name: error.name, message: error.message, ...(error.stack ? { stack: error.stack } : {}) };
  }
  return { name: "Error", message: typeof error === "string" ? error : JSON.stringify(error) ?? String(error) };
}

export function contextOf(call: TaskCall): TaskContext {
  return {
    run: {
      id: call.id,
      tags: call.tags ?? [],
      isTest: call.isTest ?? false,
      ...(call.idempotencyKey ? { idempotencyKey: call.idempotencyKey } : {}),
      ...(call.concurrencyKey ? { concurrencyKey: call.concurrencyKey } : {}),
      createdAt: new Date(call.createdAt),
    },
    attempt: { number: call.attempt },
    task: { id: call.task },
    queue: { name: call.queue },
    ...(call.batchId ? { batch: { id: call.batchId } } : {}),
    environment: { type: call.environment?.type ?? "DEVELOPMENT" },
  };
}

/** The signal of an attempt: the earlier of the worker's deadline and the task's own. */
function attemptSignal(deadline: string | null, maxDurationSecs: number | undefined, now: number): AbortSignal {
  const limits: number[] = [];
  if (deadline && /^\d+$/.test(deadline)) limits.push(Number(deadline) - now);
  if (maxDurationSecs !== undefined) limits.push(maxDurationSecs * 1000);
  if (limits.length === 0) return new AbortController().signal;
  return AbortSignal.timeout(Math.max(0, Math.min(...limits)));
}

/**
 * One handler for many tasks on one path: verifies each call, routes it by the run's task
 * id, decodes the payload, runs the task and answers its output or its error.
 */
export function createTaskHandler(options: HandlerOptions): (request: Request) => Promise<Response> {
  if (!options.secret) throw new Error("createTaskHandler needs the worker's TASK_SIGNING_SECRET");
  const byId = new Map<string, Task<any, any>>();
  for (const t of options.tasks) {
    if (byId.has(t.id)) throw new Error(`two tasks have the id ${t.id}`);
    byId.set(t.id, t);
  }
  return async (request: Request): Promise<Response> => {
    if (request.method !== "POST") return json(405, { error: "Method not allowed" }, { allow: "POST" });
    const body = new Uint8Array(await request.arrayBuffer());
    const check = await verifySignature(
      options.secret,
      request.headers.get(HEADERS.timestamp),
      request.headers.get(HEADERS.signature),
      body,
      Date.now(),
      options.toleranceMs,
    );
    if (!check.ok) return json(401, { error: `Invalid signature (${check.reason})` });
    let call: TaskCall;
    try {
      call = JSON.parse(new TextDecoder().decode(body)) as TaskCall;
    } catch {
      return json(400, { error: "Invalid JSON" });
    }
    const found = byId.get(call.task);
    if (!found) return json(404, { error: "Unknown task" });
    const ctx = contextOf(call);
    const signal = attemptSignal(request.headers.get(HEADERS.deadline), found.maxDuration, Date.now());
    let payload: unknown;
    try {
      payload = decodePayload(call.payload, call.payloadType);
    } catch (error) {
      return failure(new AbortTaskRunError(`the payload could not be decoded: ${serializeError(error).message}`));
    }
    try {
      const output = await found.run(payload, { ctx, signal });
      const encoded = encodeOutput(output);
      await quietly(() => found.onSuccess?.(payload, output, { ctx }));
      return new Response(encoded.body, {
        status: 200,
        headers: { "content-type": "application/json", [HEADERS.outputType]: encoded.type },
      });
    } catch (error) {
      const final = error instanceof AbortTaskRunError || call.attempt >= (call.maxAttempts ?? Infinity);
      if (final) await quietly(() => found.onFailure?.(payload, error, { ctx }));
      return failure(error);
    }
  };
}

function failure(error: unknown): Response {
  const headers: Record<string, string> = error instanceof AbortTaskRunError ? { [HEADERS.retry]: "false" } : {};
  return json(500, { error: serializeError(error) }, headers);
}

/** Runs a hook; its failure is logged, never the run's. */
async function quietly(hook: () => unknown): Promise<void> {
  try {
    await hook();
  } catch (error) {
    console.error("task hook failed:", error);
  }
}

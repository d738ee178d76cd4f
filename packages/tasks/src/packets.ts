/**
 * Payloads in, outputs out, in the encodings the official Trigger.dev SDK uses.
 *
 * - A payload arrives with its `payloadType`: `application/super+json` (what the SDK sends
 *   for objects: a string holding `{"json": …, "meta": …}`, decoded here with superjson,
 *   so Dates, BigInts, Maps and Sets come back as such), `application/json` (plain JSON),
 *   or `text/plain` (a string). `application/store` payloads are resolved by the worker
 *   before the call, so they arrive as one of these.
 * - An output leaves as superjson when it holds anything plain JSON cannot carry (the
 *   worker keeps it with `outputType: application/super+json`, and `runs.retrieve` of the
 *   SDK decodes it), and as plain JSON otherwise.
 */

import superjson from "superjson";

export const SUPERJSON = "application/super+json";
export const JSON_TYPE = "application/json";
export const TEXT = "text/plain";

/** The payload as the task's code should see it. */
export function decodePayload(payload: unknown, payloadType: string | undefined): unknown {
  const type = (payloadType ?? JSON_TYPE).toLowerCase();
  if (type === SUPERJSON) {
    if (typeof payload === "string") return superjson.parse(payload);
    // An already parsed superjson document (`{"json", "meta"}`), as a plain trigger may
    // send it.
    if (payload !== null && typeof payload === "object" && "json" in payload) {
      return superjson.deserialize(payload as Parameters<typeof superjson.deserialize>[0]);
    }
    return payload;
  }
  return payload === undefined ? null : payload;
}

/** An encoded output: the answer's body and its `x-trigger-output-type`. */
export interface EncodedOutput {
  body: string;
  type: typeof SUPERJSON | typeof JSON_TYPE;
}

/** Encodes what a task returned. `undefined` is no output (`null`). */
export function encodeOutput(value: unknown): EncodedOutput {
  if (value === undefined) return { body: "", type: JSON_TYPE };
  const { json, meta } = superjson.serialize(value);
  if (meta === undefined) return { body: JSON.stringify(json), type: JSON_TYPE };
  return { body: JSON.stringify({ json, meta }), type: SUPERJSON };
}

/**
 * The signature on every call a trigger-edge worker makes to a task endpoint:
 * `x-trigger-signature: v1=<hex>`, the HMAC-SHA256 under the worker's `TASK_SIGNING_SECRET`
 * of `"<x-trigger-timestamp>.<raw body>"`, the timestamp in Unix milliseconds.
 *
 * Web Crypto only, so it runs on Cloudflare Workers, Node.js 20+, Deno and Bun.
 */

/** How far a call's timestamp may be from this clock: five minutes. */
export const SIGNATURE_TOLERANCE_MS = 5 * 60 * 1000;

/** Why a call's signature was refused. */
export type SignatureFailure = "missing" | "malformed" | "stale" | "mismatch";

export type SignatureCheck = { ok: true } | { ok: false; reason: SignatureFailure };

const encoder = new TextEncoder();

async function hmacHex(secret: string, data: Uint8Array<ArrayBuffer>): Promise<string> {
  const key = await crypto.subtle.importKey(
    "raw",
    encoder.encode(secret),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign"],
  );
  const mac = new Uint8Array(await crypto.subtle.sign("HMAC", key, data));
  return Array.from(mac, (b) => b.toString(16).padStart(2, "0")).join("");
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return out;
}

/** The `x-trigger-signature` value for `body` at `timestamp`. */
export async function sign(
  secret: string,
  timestamp: number | string,
  body: Uint8Array,
): Promise<string> {
  return "v1=" + (await hmacHex(secret, concat(encoder.encode(`${timestamp}.`), body)));
}

/** Compares two strings in time that depends on their length only. */
function constantTimeEqual(a: string, b: string): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return diff === 0;
}

/**
 * Checks a call's signature: its timestamp within {@link SIGNATURE_TOLERANCE_MS} of `now`
 * and its HMAC over the raw body, compared in constant time.
 */
export async function verifySignature(
  secret: string,
  timestamp: string | null,
  signature: string | null,
  body: Uint8Array,
  now: number = Date.now(),
  toleranceMs: number = SIGNATURE_TOLERANCE_MS,
): Promise<SignatureCheck> {
  if (!timestamp || !signature) return { ok: false, reason: "missing" };
  if (!/^\d{1,16}$/.test(timestamp) || !/^v1=[0-9a-f]{64}$/.test(signature)) {
    return { ok: false, reason: "malformed" };
  }
  if (Math.abs(now - Number(timestamp)) > toleranceMs) return { ok: false, reason: "stale" };
  const expected = await sign(secret, timestamp, body);
  return constantTimeEqual(expected, signature) ? { ok: true } : { ok: false, reason: "mismatch" };
}

/**
 * Serves a task handler from Node's `http` (or `https`) server:
 *
 * ```ts
 * import { createServer } from "node:http";
 * import { toNodeListener } from "trigger-edge-tasks/node";
 * createServer(toNodeListener(handler)).listen(3000);
 * ```
 *
 * Typed structurally, so the package needs no Node type definitions.
 */

/** What the adapter reads of Node's `IncomingMessage`. */
export interface NodeRequest extends AsyncIterable<Uint8Array | string> {
  method?: string;
  url?: string;
  headers: Record<string, string | string[] | undefined>;
}

/** What the adapter writes through Node's `ServerResponse`. */
export interface NodeResponse {
  statusCode: number;
  setHeader(name: string, value: string): unknown;
  end(body?: Uint8Array): unknown;
}

/** A Web `Request` for a Node request, its body read whole. */
export async function toRequest(req: NodeRequest, origin = "http://localhost"): Promise<Request> {
  const chunks: Uint8Array[] = [];
  for await (const chunk of req) {
    chunks.push(typeof chunk === "string" ? new TextEncoder().encode(chunk) : chunk);
  }
  const headers = new Headers();
  for (const [name, value] of Object.entries(req.headers)) {
    if (Array.isArray(value)) value.forEach((v) => headers.append(name, v));
    else if (value !== undefined) headers.set(name, value);
  }
  const method = req.method ?? "GET";
  const hasBody = method !== "GET" && method !== "HEAD";
  const body = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let at = 0;
  for (const c of chunks) {
    body.set(c, at);
    at += c.length;
  }
  return new Request(new URL(req.url ?? "/", origin), { method, headers, body: hasBody ? body : null });
}

/** A listener for `http.createServer` that answers with `handler`. */
export function toNodeListener(
  handler: (request: Request) => Promise<Response>,
): (req: NodeRequest, res: NodeResponse) => void {
  return (req, res) => {
    void (async () => {
      let response: Response;
      try {
        response = await handler(await toRequest(req));
      } catch (error) {
        console.error("task handler failed:", error);
        response = new Response(JSON.stringify({ error: "Internal error" }), { status: 500 });
      }
      res.statusCode = response.status;
      response.headers.forEach((value, name) => res.setHeader(name, value));
      res.end(new Uint8Array(await response.arrayBuffer()));
    })();
  };
}

// The edge's two busiest crossings into the runtime, each made one call from Rust
// (src/http/incoming.rs and src/http/respond.rs bind them): reading a short body within
// a time limit, and building the response. Through workers-rs each took a dozen calls, a
// Rust closure per timer and two strings decoded per header.

/** The request's whole body, or `null` if it has not arrived within `ms`. */
export function readBody(request, ms) {
  let timer;
  const late = new Promise((resolve) => {
    timer = setTimeout(resolve, ms, null);
  });
  return Promise.race([request.arrayBuffer(), late]).finally(() => clearTimeout(timer));
}

/**
 * A response of `status` with a copy of `body` (a view of wasm memory) and the headers
 * in `lines`: name and value on alternate lines.
 */
export function respond(body, status, lines) {
  const parts = lines.split("\n");
  const headers = new Headers();
  for (let i = 0; i + 1 < parts.length; i += 2) headers.set(parts[i], parts[i + 1]);
  return new Response(body.slice(), { status, headers });
}

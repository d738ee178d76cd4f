// The worker's entry module: what worker-build makes of the Rust crate (build/index.js),
// with each Durable Object class declared as extending `DurableObject`, which JavaScript
// RPC requires of an object's class and worker-build's classes do not do. The objects call
// each other by RPC (`src/platform/rpc.rs`): one method, `command`, a JSON command in and a JSON
// reply out, as bytes. Everything else is the Rust object's own. It also gives the Rust
// futures a cheaper way to wake (below).
import { DurableObject } from "cloudflare:workers";
import worker, * as rust from "../build/index.js";

export default worker;

// The Rust futures (wasm-bindgen's task queue) wake through `queueMicrotask`, several
// times per request. workerd's wraps each task in a new function on the way in: 1.3 µs a
// call, against 0.06 µs for a reaction to a resolved promise, which is the same microtask
// queue (measured on Miniflare). Nothing but the wasm glue calls it here. A task that
// throws (a trap of the wasm) is reported as the original would report it.
const resolved = Promise.resolve();
globalThis.queueMicrotask = (task) => {
  resolved.then(task).catch(reportError);
};

/** `Rust`, a class of build/index.js, as a `DurableObject` that hands each call to it. */
function object(Rust) {
  return class extends DurableObject {
    constructor(ctx, env) {
      super(ctx, env);
      this.rust = new Rust(ctx, env);
    }
    fetch(request) {
      return this.rust.fetch(request);
    }
    alarm() {
      return this.rust.alarm();
    }
    command(command) {
      return this.rust.command(command);
    }
  };
}

export const RunStore = object(rust.RunStore);
export const QueueGate = object(rust.QueueGate);
export const RunExecutor = object(rust.RunExecutor);
export const RateLimiter = object(rust.RateLimiter);
export const Scheduler = object(rust.Scheduler);
export const BulkActions = object(rust.BulkActions);

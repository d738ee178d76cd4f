// The worker's entry module: what worker-build makes of the Rust crate (build/index.js),
// with each Durable Object class declared as extending `DurableObject`, which JavaScript
// RPC requires of an object's class and worker-build's classes do not do. The objects call
// each other by RPC (`src/platform/rpc.rs`): one method, `command`, a JSON command in and a JSON
// reply out, as bytes. Everything else is the Rust object's own.
import { DurableObject } from "cloudflare:workers";
import worker, * as rust from "../build/index.js";

export default worker;

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

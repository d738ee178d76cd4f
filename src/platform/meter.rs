//! The operations account, counted where each operation is made: every object request and
//! alarm, SQL statement (the cursor's own `rowsRead` and `rowsWritten`), queue message,
//! Worker invocation and task call reports here (`domain::cost::Account`).
//!
//! Compiled in always, counting only when the `METERING` var is `"on"` (read once per
//! isolate): off, each report is one test of a flag. The account lives in the isolate's
//! memory and `GET /api/v1/meter` shows it. Under `wrangler dev` and Miniflare one isolate
//! runs the edge and every object of the worker, so its account is the whole worker's;
//! on Cloudflare each isolate would show only its own share, which is why metering is for
//! the benchmark and the budget test (`bench/budget.json`), not for production.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use worker::{Env, State};

use crate::domain::basics::time::Millis;
use crate::domain::cost::{queue_operations, Account, ObjectOps};
use crate::platform::runtime::now;

/// The object kinds the account tells apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Object {
    Store,
    Gate,
    Executor,
    Limiter,
    Scheduler,
    Bulk,
}

thread_local! {
    static ON: Cell<Option<bool>> = const { Cell::new(None) };
    static ACCOUNT: RefCell<Account> = RefCell::new(Account::default());
    /// Each object's last known database size, by object id, summed into `stored_bytes`.
    static SIZES: RefCell<HashMap<String, u64>> = RefCell::new(HashMap::new());
}

/// Reads `METERING` once per isolate; every entry point (the edge, the queue consumer,
/// each object's constructor) calls it before it counts anything.
pub fn configure(env: &Env) {
    if ON.get().is_none() {
        let on = env.var("METERING").is_ok_and(|v| v.to_string() == "on");
        ON.set(Some(on));
    }
}

/// Whether this isolate counts.
pub fn on() -> bool {
    ON.get() == Some(true)
}

fn count(change: impl FnOnce(&mut Account)) {
    if on() {
        ACCOUNT.with_borrow_mut(change);
    }
}

fn object(account: &mut Account, kind: Object) -> &mut ObjectOps {
    match kind {
        Object::Store => &mut account.store,
        Object::Gate => &mut account.gate,
        Object::Executor => &mut account.executor,
        Object::Limiter => &mut account.limiter,
        Object::Scheduler => &mut account.scheduler,
        Object::Bulk => &mut account.bulk,
    }
}

/// The account so far.
pub fn snapshot() -> Account {
    ACCOUNT.with_borrow(|a| a.clone())
}

/// An object's request (an RPC call or a `fetch`), and its activity while it lasts. With
/// `state`, the object's database size is recorded when it ends with nothing else of the
/// object under way.
pub fn request<'a>(kind: Object, activity: &'a Activity, state: Option<&'a State>) -> Active<'a> {
    count(|a| object(a, kind).requests += 1);
    activity.begin(kind, state)
}

/// An object's alarm, and its activity while it lasts (see [`request`]).
pub fn alarm<'a>(kind: Object, activity: &'a Activity, state: Option<&'a State>) -> Active<'a> {
    count(|a| object(a, kind).alarms += 1);
    activity.begin(kind, state)
}

/// One SQL statement's cursor, once it is done with.
pub fn statement(kind: Object, cursor: &worker::SqlCursor) {
    if on() {
        let (read, written) = (cursor.rows_read() as u64, cursor.rows_written() as u64);
        count(|a| {
            let ops = object(a, kind);
            ops.statements += 1;
            ops.rows_read += read;
            ops.rows_written += written;
        });
    }
}

/// An object's database size, after it served something.
fn stored(state: &State) {
    let (id, bytes) = (
        state.id().to_string(),
        state.storage().sql().database_size() as u64,
    );
    let total = SIZES.with_borrow_mut(|sizes| {
        sizes.insert(id, bytes);
        sizes.values().sum()
    });
    count(|a| a.stored_bytes = total);
}

/// New runs committed.
pub fn runs_accepted(n: usize) {
    count(|a| a.runs.accepted += n as u64);
}

/// An attempt started.
pub fn attempt_started() {
    count(|a| a.runs.attempts += 1);
}

/// A run's last attempt ended: COMPLETED, or FAILED.
pub fn run_ended(completed: bool) {
    count(|a| {
        if completed {
            a.runs.completed += 1;
        } else {
            a.runs.failed += 1;
        }
    });
}

/// A message of `bytes` sent to a queue.
pub fn message_sent(bytes: usize) {
    count(|a| {
        a.queue.messages_sent += 1;
        a.queue.operations += queue_operations(bytes as u64);
    });
}

/// A message of `bytes` delivered to the consumer.
pub fn message_received(bytes: usize) {
    count(|a| {
        a.queue.messages_received += 1;
        a.queue.operations += queue_operations(bytes as u64);
    });
}

/// A delivered message of `bytes` acknowledged (deleted from the queue).
pub fn message_acked(bytes: usize) {
    count(|a| {
        a.queue.acks += 1;
        a.queue.operations += queue_operations(bytes as u64);
    });
}

/// A delivered message handed back for another delivery.
pub fn message_retried() {
    count(|a| a.queue.retries += 1);
}

/// An HTTP request to the edge.
pub fn fetch_invocation() {
    count(|a| a.worker.fetches += 1);
}

/// A queue consumer invocation.
pub fn queue_invocation() {
    count(|a| a.worker.queue_batches += 1);
}

/// A task call, through a service binding or over HTTP.
pub fn task_call(service: bool) {
    count(|a| {
        if service {
            a.worker.service_calls += 1;
        } else {
            a.worker.task_fetches += 1;
        }
    });
}

/// One object instance's work under way: the time during which at least one request,
/// alarm or background task of it is running is the duration it is billed for.
#[derive(Default)]
pub struct Activity {
    under_way: Cell<u32>,
    since: Cell<Millis>,
}

impl Activity {
    /// Work of the instance begins; it ends when the guard drops.
    pub fn enter(&self, kind: Object) -> Active<'_> {
        self.begin(kind, None)
    }

    fn begin<'a>(&'a self, kind: Object, state: Option<&'a State>) -> Active<'a> {
        if on() {
            if self.under_way.get() == 0 {
                self.since.set(now());
            }
            self.under_way.set(self.under_way.get() + 1);
        }
        Active {
            activity: self,
            kind,
            counted: on(),
            state,
        }
    }
}

/// A piece of an object's work under way (see [`Activity::enter`]).
pub struct Active<'a> {
    activity: &'a Activity,
    kind: Object,
    counted: bool,
    /// The object whose database size to record at the end.
    state: Option<&'a State>,
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        if !self.counted {
            return;
        }
        let left = self.activity.under_way.get().saturating_sub(1);
        self.activity.under_way.set(left);
        if left == 0 {
            let ms = now().saturating_sub(self.activity.since.get()).max(0) as u64;
            count(|a| object(a, self.kind).active_ms += ms);
            // Once per spell of work, not per request: two calls into the runtime.
            if let Some(state) = self.state {
                stored(state);
            }
        }
    }
}

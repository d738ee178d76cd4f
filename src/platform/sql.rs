//! Small helpers over the Durable Object SQLite API: every statement through [`Sql`],
//! which the operations account counts (`platform::meter`), bound values, `IN (…)` lists
//! within the 100-parameter limit, rows read by position, and `transactionSync`, which
//! workers-rs does not bind.

use wasm_bindgen::closure::ScopedClosure;
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::{JsCast, JsValue};
use worker::worker_sys::DurableObjectStorage;
use worker::{console_warn, SqlCursor, SqlStorage, SqlStorageValue, Storage};

use crate::domain::basics::schema::{Plan, Schema};
use crate::platform::meter::{self, Object};
use crate::platform::rpc::CallError;

/// An object's SQLite database. Every statement goes through [`Sql::exec`], so that the
/// meter counts its cursor's rows read and written, which are what Cloudflare bills.
#[derive(Clone)]
pub struct Sql {
    inner: SqlStorage,
    kind: Object,
}

impl Sql {
    pub fn new(storage: &Storage, kind: Object) -> Sql {
        Sql {
            inner: storage.sql(),
            kind,
        }
    }

    /// Executes `query` with `bindings` for its `?` placeholders.
    pub fn exec(
        &self,
        query: &str,
        bindings: impl Into<Option<Vec<SqlStorageValue>>>,
    ) -> worker::Result<Cursor> {
        Ok(Cursor {
            inner: self.inner.exec(query, bindings)?,
            kind: self.kind,
        })
    }

    /// The database, for the meter's record of its size.
    pub fn storage(&self) -> &SqlStorage {
        &self.inner
    }
}

/// A statement's cursor: reports its rows read and written to the meter when dropped,
/// once its rows were taken.
pub struct Cursor {
    inner: SqlCursor,
    kind: Object,
}

impl std::ops::Deref for Cursor {
    type Target = SqlCursor;

    fn deref(&self) -> &SqlCursor {
        &self.inner
    }
}

impl Drop for Cursor {
    fn drop(&mut self) {
        meter::statement(self.kind, &self.inner);
    }
}

/// SQL statements take at most 100 bound parameters; lists use fewer to leave room.
pub const MAX_LIST_PARAMS: usize = 90;
/// The most parameters one statement binds.
pub const MAX_PARAMS: usize = 100;

#[wasm_bindgen]
extern "C" {
    /// `ctx.storage`, seen through the one method workers-rs leaves out.
    #[wasm_bindgen(extends = js_sys::Object)]
    type SyncStorage;

    #[wasm_bindgen(method, catch, js_name = transactionSync)]
    fn transaction_sync(
        this: &SyncStorage,
        callback: &js_sys::Function,
    ) -> Result<JsValue, JsValue>;
}

/// The rows of `query`, each as its values by position (`SELECT a, b, c`), for the reads
/// on the execution path. workers-rs' `to_array` builds a JavaScript object per row and
/// `serde-wasm-bindgen` reads its fields one call at a time, which a profile of execution
/// showed costing more than the statement itself; here each row crosses as one array.
pub fn rows(sql: &Sql, query: &str, bindings: Vec<SqlStorageValue>) -> worker::Result<Vec<Values>> {
    // The cursor (a temporary) reports to the meter after the rows were collected.
    sql.exec(query, bindings)?
        .raw()
        .map(|row| row.map(|values| Values(values.into_iter())))
        .collect()
}

/// One row's values, taken in the order the query selects them.
pub struct Values(std::vec::IntoIter<SqlStorageValue>);

impl Values {
    pub fn opt_text(&mut self) -> worker::Result<Option<String>> {
        match self.0.next() {
            Some(SqlStorageValue::Null) => Ok(None),
            Some(SqlStorageValue::String(text)) => Ok(Some(text)),
            other => Err(unexpected("text", other)),
        }
    }

    pub fn text(&mut self) -> worker::Result<String> {
        self.opt_text()?.ok_or_else(|| unexpected("text", None))
    }

    pub fn opt_int(&mut self) -> worker::Result<Option<i64>> {
        match self.0.next() {
            Some(SqlStorageValue::Null) => Ok(None),
            Some(SqlStorageValue::Integer(n)) => Ok(Some(n)),
            other => Err(unexpected("an integer", other)),
        }
    }

    pub fn int(&mut self) -> worker::Result<i64> {
        self.opt_int()?
            .ok_or_else(|| unexpected("an integer", None))
    }
}

fn unexpected(wanted: &str, found: Option<SqlStorageValue>) -> worker::Error {
    let found = match found {
        None => "no column",
        Some(SqlStorageValue::Null) => "NULL",
        Some(SqlStorageValue::Boolean(_)) => "a boolean",
        Some(SqlStorageValue::Integer(_)) => "an integer",
        Some(SqlStorageValue::Float(_)) => "a float",
        Some(SqlStorageValue::String(_)) => "text",
        Some(SqlStorageValue::Blob(_)) => "a blob",
    };
    worker::Error::RustError(format!("{wanted} expected, found {found}"))
}

/// Runs `work` inside `storage.transactionSync`: every statement it executes commits
/// together, or none does when it returns an error.
pub fn transaction<T>(
    storage: &Storage,
    work: impl FnOnce() -> worker::Result<T>,
) -> worker::Result<T> {
    let mut work = Some(work);
    let mut result = None;
    let mut callback = || -> Result<JsValue, JsValue> {
        let outcome = work.take().map(|work| work());
        let failed = matches!(outcome, Some(Err(_)));
        result = outcome;
        if failed {
            // Throwing makes the runtime roll the transaction back.
            Err(JsValue::from_str("transaction rolled back"))
        } else {
            Ok(JsValue::UNDEFINED)
        }
    };
    // Borrowed, not owned: `transactionSync` calls it before returning, and the JavaScript
    // function is invalidated when `closure` drops at the end of this scope.
    let closure = ScopedClosure::<dyn FnMut() -> Result<JsValue, JsValue>>::borrow_mut_aborting(
        &mut callback,
    );
    let raw: &DurableObjectStorage = storage.as_raw();
    let call = raw
        .unchecked_ref::<SyncStorage>()
        .transaction_sync(closure.as_js_value().unchecked_ref());
    drop(closure);
    match (call, result) {
        (_, Some(Err(e))) => Err(e),
        (Ok(_), Some(Ok(value))) => Ok(value),
        (Err(js), _) => Err(worker::Error::from(js)),
        (Ok(_), None) => Err(worker::Error::RustError(
            "transactionSync did not run its callback".into(),
        )),
    }
}

/// The table in which every SQLite-backed object records the schema steps it applied
/// (`domain::basics::schema`): one row per step, never changed afterwards.
const SCHEMA_STEPS: &str = "CREATE TABLE IF NOT EXISTS schema_steps (
    version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)";

/// Whether an object's storage was brought to its schema when the object started: an
/// object whose tables are not what this build reads and writes serves nothing (the
/// migration is tried again when the runtime next starts the object).
pub struct Migrated {
    object: &'static str,
    outcome: Result<(), CallError>,
}

impl Migrated {
    /// Migrates `storage` (see [`migrate`]), logging a failure.
    pub fn start(storage: &Storage, schema: &Schema, kind: Object) -> Migrated {
        let outcome = migrate(storage, schema, kind).map_err(|e| {
            worker::console_error!("{}: {e}", schema.object);
            CallError::from(e)
        });
        Migrated {
            object: schema.object,
            outcome,
        }
    }

    /// `Ok` when the object may serve.
    pub fn ready(&self) -> worker::Result<()> {
        self.outcome.clone().map_err(|e| {
            worker::Error::RustError(format!("{} schema not migrated: {e}", self.object))
        })
    }
}

/// Brings an object's storage to `schema`'s latest step: applies each missing step and its
/// record in one transaction, in order. Called when the object starts, before it serves
/// anything; an error means the object must not serve (its tables are not what its code
/// reads and writes).
pub fn migrate(storage: &Storage, schema: &Schema, kind: Object) -> worker::Result<()> {
    let sql = Sql::new(storage, kind);
    sql.exec(SCHEMA_STEPS, None)?;
    let applied = rows(
        &sql,
        "SELECT COALESCE(MAX(version), 0) FROM schema_steps",
        Vec::new(),
    )?
    .pop()
    .map(|mut row| row.int())
    .transpose()?
    .unwrap_or(0);
    let steps = match schema.plan(u32::try_from(applied).unwrap_or(u32::MAX)) {
        Plan::UpToDate => return Ok(()),
        Plan::Newer { found, known } => {
            console_warn!(
                "{}: storage is at schema step {found}, this build knows {known}: running on (steps only add)",
                schema.object
            );
            return Ok(());
        }
        Plan::Apply(steps) => steps,
    };
    for step in steps {
        transaction(storage, || {
            for statement in step.statements {
                if let Err(e) = sql.exec(statement.text(), None) {
                    if !statement.tolerates(&e.to_string()) {
                        return Err(worker::Error::RustError(format!(
                            "{} schema step {}: {e}",
                            schema.object, step.version
                        )));
                    }
                }
            }
            sql.exec(
                "INSERT INTO schema_steps (version, applied_at) VALUES (?, ?)",
                vec![
                    SqlStorageValue::Integer(step.version.into()),
                    SqlStorageValue::Integer(crate::platform::runtime::now() as i64),
                ],
            )?;
            Ok(())
        })?;
    }
    Ok(())
}

/// `(?, ?), (?, ?)`: `rows` rows of `columns` placeholders each.
pub fn value_rows(rows: usize, columns: usize) -> String {
    let row = format!("({})", placeholders(columns));
    vec![row; rows].join(", ")
}

/// Inserts rows of `columns` values each (`values` holds them one row after another) in
/// as few statements as the parameter limit allows: `head` is the statement up to and
/// including `VALUES`, `tail` anything after the rows (an `ON CONFLICT` clause).
pub fn insert_rows(
    sql: &Sql,
    head: &str,
    tail: &str,
    columns: usize,
    values: Vec<SqlStorageValue>,
) -> worker::Result<()> {
    debug_assert!(columns > 0 && values.len().is_multiple_of(columns));
    let per_statement = (MAX_PARAMS / columns).max(1) * columns;
    let mut values = values.into_iter().peekable();
    while values.peek().is_some() {
        let chunk: Vec<SqlStorageValue> = values.by_ref().take(per_statement).collect();
        let text = format!(
            "{head} {} {tail}",
            value_rows(chunk.len() / columns, columns)
        );
        sql.exec(&text, chunk)?;
    }
    Ok(())
}

/// `?, ?, …, ?` with `n` placeholders.
pub fn placeholders(n: usize) -> String {
    let mut text = "?, ".repeat(n);
    text.truncate(text.len().saturating_sub(2));
    text
}

/// Executes a statement once per chunk of `items`, binding `prefix` then the chunk, and
/// replacing `{list}` in `query` with the chunk's placeholders.
pub fn exec_in_chunks(
    sql: &Sql,
    query: &str,
    prefix: &[SqlStorageValue],
    items: &[String],
    mut each: impl FnMut(Cursor) -> worker::Result<()>,
) -> worker::Result<()> {
    for chunk in items.chunks(MAX_LIST_PARAMS - prefix.len()) {
        let text = query.replace("{list}", &placeholders(chunk.len()));
        let mut params = prefix.to_vec();
        params.extend(chunk.iter().map(|s| SqlStorageValue::from(s.as_str())));
        each(sql.exec(&text, params)?)?;
    }
    Ok(())
}

/// An optional integer as a bound value.
pub fn opt_i64(value: Option<impl Into<i64>>) -> SqlStorageValue {
    value.map_or(SqlStorageValue::Null, |v| {
        SqlStorageValue::Integer(v.into())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_and_value_rows() {
        assert_eq!(placeholders(3), "?, ?, ?");
        assert_eq!(placeholders(0), "");
        assert_eq!(value_rows(2, 2), "(?, ?), (?, ?)");
        assert_eq!(value_rows(1, 3), "(?, ?, ?)");
        // The widest statement stays within the limit: 3 runs of 29 columns.
        let text = value_rows(MAX_PARAMS / 29, 29);
        assert_eq!(text.matches('?').count(), 87);
    }
}

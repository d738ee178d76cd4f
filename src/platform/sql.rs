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
use crate::platform::packed::{pack_inserts, text_sources};
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

/// Inserts rows of `columns` values each (`values` holds them one row after another):
/// `into` is the statement up to its column list (`INSERT INTO t (a, b)`), `tail` anything
/// after the rows (an `ON CONFLICT` clause). The rows go packed into a few bound values
/// ([`packed`](super::packed)), or else in as few statements as the parameter limit allows
/// ([`plan_inserts`]).
pub fn insert_rows(
    sql: &Sql,
    into: &str,
    tail: &str,
    columns: usize,
    values: Vec<SqlStorageValue>,
) -> worker::Result<()> {
    let statements = match pack_inserts(into, tail, columns, &values) {
        Some(statements) => statements,
        None => plan_inserts(into, tail, columns, values),
    };
    for Insert { text, bindings } in statements {
        sql.exec(&text, bindings)?;
    }
    Ok(())
}

/// One statement of [`plan_inserts`]: its text and what it binds.
#[derive(Debug, PartialEq)]
pub struct Insert {
    pub text: String,
    pub bindings: Vec<SqlStorageValue>,
}

/// The statements that insert `values` (rows of `columns` values, one after another).
/// A column whose value is the same in every row is bound once per statement, as `?n` in
/// a `SELECT` over a `VALUES` list of the other columns; only those are bound per row. The
/// runs of a batch share their task, queue, options and times, so a statement carries
/// about fifteen runs instead of three, and the values cross from wasm to the runtime and
/// into SQLite once instead of once per run. When every column varies (or there is one
/// row) the rows are a plain `VALUES` list.
pub fn plan_inserts(
    into: &str,
    tail: &str,
    columns: usize,
    values: Vec<SqlStorageValue>,
) -> Vec<Insert> {
    debug_assert!(columns > 0 && columns <= MAX_PARAMS && values.len().is_multiple_of(columns));
    let rows = values.len() / columns;
    let same = |c: usize| (1..rows).all(|r| values[r * columns + c] == values[c]);
    let mut constant: Vec<bool> = (0..columns).map(|c| rows > 1 && same(c)).collect();
    if constant.iter().all(|c| *c) {
        constant[0] = false; // identical rows: each still needs a row of the list
    }
    let varying = constant.iter().filter(|c| !**c).count();
    let constants: Vec<SqlStorageValue> = (0..columns)
        .filter(|c| constant[*c])
        .map(|c| values[c].clone())
        .collect();
    let per_statement = ((MAX_PARAMS - constants.len()) / varying).max(1);
    let select = if constants.is_empty() {
        None
    } else {
        let (mut k, mut v) = (0, 0);
        let list: Vec<String> = constant
            .iter()
            .map(|is_constant| match is_constant {
                true => {
                    k += 1;
                    format!("?{k}")
                }
                false => {
                    v += 1;
                    format!("column{v}")
                }
            })
            .collect();
        Some(list.join(", "))
    };
    let mut statements = Vec::new();
    let mut row = 0;
    while row < rows {
        let count = per_statement.min(rows - row);
        let mut bindings = constants.clone();
        for r in row..row + count {
            bindings.extend(
                (0..columns)
                    .filter(|c| !constant[*c])
                    .map(|c| values[r * columns + c].clone()),
            );
        }
        let list = value_rows(count, varying);
        let text = match &select {
            // `?n` first in the text, so the list's `?` are numbered after them; `WHERE
            // true` keeps an `ON CONFLICT` tail from reading as a join's `ON`.
            Some(select) => {
                format!("{into} SELECT {select} FROM (VALUES {list}) WHERE true {tail}")
            }
            None => format!("{into} VALUES {list} {tail}"),
        };
        statements.push(Insert { text, bindings });
        row += count;
    }
    statements
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

/// Executes `query` once per chunk of `keys`, with `{keys}` replaced by a subquery of
/// them whose column is `value` ([`text_sources`]), to join from into a table by its key;
/// `prefix` binds `?1`, `?2`… first, so the query numbers its own parameters. Unlike a
/// `key IN (…)` list, a key looked up and not found costs no row read, and one found costs
/// one rather than two; the keys are bound packed rather than one by one. Each key is
/// looked up as often as it comes.
pub fn exec_joined(
    sql: &Sql,
    query: &str,
    prefix: &[SqlStorageValue],
    keys: &[&str],
    mut each: impl FnMut(Cursor) -> worker::Result<()>,
) -> worker::Result<()> {
    for (source, bindings) in text_sources(prefix.len() + 1, keys) {
        let mut params = prefix.to_vec();
        params.extend(bindings);
        each(sql.exec(&query.replace("{keys}", &source), params)?)?;
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
    }

    fn text(s: &str) -> SqlStorageValue {
        SqlStorageValue::String(s.into())
    }

    #[test]
    fn columns_every_row_shares_are_bound_once_per_statement() {
        use SqlStorageValue::{Integer, Null};
        // Three rows of (id, task, at, note): task and at are shared.
        let values = vec![
            text("a"),
            text("t"),
            Integer(5),
            Null,
            text("b"),
            text("t"),
            Integer(5),
            text("x"),
            text("c"),
            text("t"),
            Integer(5),
            Null,
        ];
        let plan = plan_inserts("INSERT INTO r (id, task, at, note)", "", 4, values);
        assert_eq!(
            plan,
            [Insert {
                text: "INSERT INTO r (id, task, at, note) SELECT column1, ?1, ?2, column2 \
                       FROM (VALUES (?, ?), (?, ?), (?, ?)) WHERE true "
                    .into(),
                bindings: vec![
                    text("t"),
                    Integer(5),
                    text("a"),
                    Null,
                    text("b"),
                    text("x"),
                    text("c"),
                    Null,
                ],
            }]
        );
    }

    #[test]
    fn one_row_or_rows_that_share_nothing_are_a_plain_values_list() {
        let one = plan_inserts(
            "INSERT INTO q (a, b)",
            "ON CONFLICT DO NOTHING",
            2,
            vec![text("x"), text("y")],
        );
        assert_eq!(
            one[0].text,
            "INSERT INTO q (a, b) VALUES (?, ?) ON CONFLICT DO NOTHING"
        );
        assert_eq!(one[0].bindings, [text("x"), text("y")]);
        let two = plan_inserts(
            "INSERT INTO q (a, b)",
            "",
            2,
            vec![text("x"), text("y"), text("z"), text("w")],
        );
        assert_eq!(two.len(), 1);
        assert_eq!(two[0].text, "INSERT INTO q (a, b) VALUES (?, ?), (?, ?) ");
    }

    #[test]
    fn identical_rows_are_each_inserted() {
        let plan = plan_inserts(
            "INSERT INTO q (a, b)",
            "",
            2,
            (0..3).flat_map(|_| [text("x"), text("y")]).collect(),
        );
        let rows: usize = plan.iter().map(|s| s.text.matches("(?)").count()).sum();
        assert_eq!(rows, 3);
        assert!(plan.iter().all(|s| s.bindings.len() <= MAX_PARAMS));
    }

    /// Any rows: every statement binds at most `MAX_PARAMS` values and numbers its
    /// shared ones first, and reading the statements back gives every row in order.
    #[test]
    fn the_statements_put_every_value_in_its_row_and_column() {
        for (rows, columns, shared) in [
            (100, 29, 20),
            (100, 29, 0),
            (37, 4, 2),
            (250, 3, 1),
            (7, 100, 99),
        ] {
            let values: Vec<SqlStorageValue> = (0..rows)
                .flat_map(|r| {
                    (0..columns).map(move |c| match c < shared {
                        true => text(&format!("shared {c}")),
                        false => text(&format!("{r}:{c}")),
                    })
                })
                .collect();
            let plan = plan_inserts("INSERT INTO t (cols)", "", columns, values.clone());
            let mut read_back = Vec::new();
            for Insert {
                text: sql,
                bindings,
            } in &plan
            {
                assert!(bindings.len() <= MAX_PARAMS, "{} bindings", bindings.len());
                let Some(select) = sql.split(" SELECT ").nth(1) else {
                    read_back.extend(bindings.iter().cloned()); // a plain list
                    continue;
                };
                let list: Vec<&str> = select.split(" FROM ").next().unwrap().split(", ").collect();
                assert_eq!(list.len(), columns);
                let consts = list.iter().filter(|e| e.starts_with('?')).count();
                let varying = columns - consts;
                for row in bindings[consts..].chunks(varying) {
                    for entry in &list {
                        read_back.push(
                            match (entry.strip_prefix('?'), entry.strip_prefix("column")) {
                                (Some(k), _) => bindings[k.parse::<usize>().unwrap() - 1].clone(),
                                (_, Some(j)) => row[j.parse::<usize>().unwrap() - 1].clone(),
                                _ => unreachable!("{entry}"),
                            },
                        );
                    }
                }
            }
            assert_eq!(
                read_back, values,
                "{rows} rows of {columns} columns, {shared} shared"
            );
        }
    }
}

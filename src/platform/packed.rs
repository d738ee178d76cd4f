//! Rows inserted with a few bound values instead of one per column and row.
//!
//! Each value bound to a statement is a call out of wasm, a conversion into a JavaScript
//! value and another into SQLite's: for a batch of 100 runs about 900 of them, which a
//! profile of the accept showed costing more than the SQLite work they fed. Here a
//! statement's values travel in three blobs: the texts end to end with a blob of their
//! end offsets (fixed-width decimals), and the integers as fixed-width decimals. Each
//! column of the `SELECT` cuts its value out of them with `substr` (on a blob, by byte
//! position, so without walking the text before it) and `CAST`s it back. The rows come
//! from a `VALUES` list of row numbers, which SQLite does not count as rows read (a
//! `json_each` over the same values is counted, a row read per row inserted). `NULL`s are
//! written into the statement's text; a float, a boolean or a blob is bound as itself.
//!
//! A column whose value is the same in every row takes one slot that every row reads (its
//! expression is constant, computed once per statement); a column that varies takes a slot
//! per row, and must hold only texts or only integers: a column mixing kinds (some `NULL`,
//! some text) leaves the rows to [`super::sql::plan_inserts`]. Measured under `bench/run`'s
//! accept load on Miniflare, batches of 100: about 1.1× the requests per second of the
//! rows bound value by value (docs/PERFORMANCE.md).

use worker::SqlStorageValue;

use super::sql::{Insert, MAX_PARAMS};

/// Decimal digits of one text's end offset in the offsets blob.
const OFFSET_DIGITS: usize = 10;
/// Characters of one integer in the integers blob: a sign and 19 digits fit every `i64`.
const INT_DIGITS: usize = 20;
/// The most rows one statement inserts (its `VALUES` list names each row's number).
const MAX_ROWS: usize = 500;
/// The most text bytes one statement carries: a bound value may be 2 MB at most.
const MAX_TEXT_BYTES: usize = 1 << 20;

/// Where a column's value comes from.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Source {
    Null,
    /// The statement's `n`-th value of its own (numbered after the blobs).
    Param(usize),
    /// Text slot `slot`, plus the row's number when `per_row`.
    Text {
        slot: usize,
        per_row: bool,
    },
    /// Integer slot `slot`, plus the row's number when `per_row`.
    Int {
        slot: usize,
        per_row: bool,
    },
}

/// One statement's rows, packed.
#[derive(Debug)]
struct Packed {
    rows: usize,
    sources: Vec<Source>,
    texts: Vec<u8>,
    /// The end offset of each text slot in `texts`, `OFFSET_DIGITS` each, after a first
    /// entry of 0 (the start of slot 0).
    ends: Vec<u8>,
    ints: Vec<u8>,
    params: Vec<SqlStorageValue>,
}

/// What every row of a column holds: one value, or a text or an integer of its own.
#[derive(Clone, Copy, PartialEq)]
enum Column {
    Shared,
    Texts,
    Ints,
}

/// The statements that insert `values` (rows of `columns` values, one after another),
/// packed; `None` for a single row (bound value by value, it was measured faster: about
/// 0.94× the requests per second packed), when a column that varies mixes kinds, or when
/// one row's texts are too long for one statement.
pub fn pack_inserts(
    into: &str,
    tail: &str,
    columns: usize,
    values: &[SqlStorageValue],
) -> Option<Vec<Insert>> {
    if values.len() <= columns {
        return None;
    }
    pack(columns, values).map(|statements| {
        statements
            .iter()
            .map(|packed| packed.statement(into, tail))
            .collect()
    })
}

/// `texts` as rows to join on, each a subquery with one column, `value`, and the values
/// it binds, numbered from `?first`: packed when there are several (one subquery for up
/// to 500), else `(SELECT ?first AS value)`. A join from these rows into a table by its
/// key reads a row only for each text found (`k.key IN (?, …)` reads one for each text
/// looked for, and two for each found).
pub fn text_sources(first: usize, texts: &[&str]) -> Vec<(String, Vec<SqlStorageValue>)> {
    let alone = |value: SqlStorageValue| (format!("(SELECT ?{first} AS value)"), vec![value]);
    let values: Vec<SqlStorageValue> = texts.iter().map(|t| (*t).into()).collect();
    match &values[..] {
        [] => Vec::new(),
        [one] => vec![alone(one.clone())],
        _ => match pack(1, &values) {
            Some(statements) => statements
                .iter()
                .map(|packed| {
                    let (cuts, bindings) = packed.cuts(first);
                    let source = format!("(SELECT {} AS value FROM {})", cuts[0], packed.numbers());
                    (source, bindings)
                })
                .collect(),
            // Too long for one statement: a subquery each.
            None => values.into_iter().map(alone).collect(),
        },
    }
}

fn pack(columns: usize, values: &[SqlStorageValue]) -> Option<Vec<Packed>> {
    debug_assert!(columns > 0 && values.len().is_multiple_of(columns));
    let rows = values.len() / columns;
    let at = |r: usize, c: usize| &values[r * columns + c];
    let kinds = (0..columns)
        .map(|c| {
            if (1..rows).all(|r| at(r, c) == at(0, c)) {
                Some(Column::Shared)
            } else if (0..rows).all(|r| matches!(at(r, c), SqlStorageValue::String(_))) {
                Some(Column::Texts)
            } else if (0..rows).all(|r| matches!(at(r, c), SqlStorageValue::Integer(_))) {
                Some(Column::Ints)
            } else {
                None
            }
        })
        .collect::<Option<Vec<Column>>>()?;
    let text_len = |r: usize| -> usize {
        (0..columns)
            .map(|c| match at(r, c) {
                SqlStorageValue::String(s) => s.len(),
                _ => 0,
            })
            .sum()
    };
    let mut statements = Vec::new();
    let mut start = 0;
    while start < rows {
        let (mut end, mut bytes) = (start, 0);
        while end < rows && end - start < MAX_ROWS {
            let more = text_len(end);
            if bytes + more > MAX_TEXT_BYTES && end > start {
                break;
            }
            bytes += more;
            end += 1;
        }
        if bytes > MAX_TEXT_BYTES {
            return None;
        }
        statements.push(pack_rows(
            columns,
            &kinds,
            &values[start * columns..end * columns],
        )?);
        start = end;
    }
    Some(statements)
}

/// One statement's rows: the shared values' slots first, then each varying column's, a
/// slot per row.
fn pack_rows(columns: usize, kinds: &[Column], values: &[SqlStorageValue]) -> Option<Packed> {
    let rows = values.len() / columns;
    let mut packed = Packed {
        rows,
        sources: Vec::with_capacity(columns),
        texts: Vec::new(),
        ends: Vec::new(),
        ints: Vec::new(),
        params: Vec::new(),
    };
    let (mut text_slots, mut int_slots) = (0, 0);
    packed.ends.extend_from_slice(&[b'0'; OFFSET_DIGITS]);
    for (c, kind) in kinds.iter().enumerate() {
        let source = match (kind, &values[c]) {
            (Column::Shared, SqlStorageValue::Null) => Source::Null,
            (Column::Shared, SqlStorageValue::String(text)) => {
                packed.push_text(text);
                text_slots += 1;
                Source::Text {
                    slot: text_slots - 1,
                    per_row: false,
                }
            }
            (Column::Shared, SqlStorageValue::Integer(n)) => {
                packed.push_int(*n);
                int_slots += 1;
                Source::Int {
                    slot: int_slots - 1,
                    per_row: false,
                }
            }
            (Column::Shared, other) => {
                packed.params.push(other.clone());
                Source::Param(packed.params.len())
            }
            // Placed below, after every shared value.
            (Column::Texts | Column::Ints, _) => Source::Null,
        };
        packed.sources.push(source);
    }
    for (c, kind) in kinds.iter().enumerate() {
        let column = (0..rows).map(|r| &values[r * columns + c]);
        packed.sources[c] = match kind {
            Column::Shared => continue,
            Column::Texts => {
                for value in column {
                    let SqlStorageValue::String(text) = value else {
                        return None;
                    };
                    packed.push_text(text);
                }
                text_slots += rows;
                Source::Text {
                    slot: text_slots - rows,
                    per_row: true,
                }
            }
            Column::Ints => {
                for value in column {
                    let SqlStorageValue::Integer(n) = value else {
                        return None;
                    };
                    packed.push_int(*n);
                }
                int_slots += rows;
                Source::Int {
                    slot: int_slots - rows,
                    per_row: true,
                }
            }
        };
    }
    (packed.params.len() + 3 <= MAX_PARAMS).then_some(packed)
}

/// `n` in `width` characters, as `format!("{n:0width$}")` writes it (a sign, then zeros)
/// without going through the formatter, which a profile showed at 2 % of the accept.
fn push_fixed(out: &mut Vec<u8>, n: i64, width: usize) {
    let start = out.len();
    out.resize(start + width, b'0');
    let (mut rest, mut at) = (n.unsigned_abs(), start + width);
    while rest > 0 && at > start {
        at -= 1;
        out[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    if n < 0 {
        out[start] = b'-';
    }
}

impl Packed {
    fn push_text(&mut self, text: &str) {
        self.texts.extend_from_slice(text.as_bytes());
        push_fixed(&mut self.ends, self.texts.len() as i64, OFFSET_DIGITS);
    }

    fn push_int(&mut self, n: i64) {
        push_fixed(&mut self.ints, n, INT_DIGITS);
    }

    /// `INSERT … SELECT <a cut per column> FROM (VALUES (0), (1), …) WHERE true <tail>`,
    /// binding the blobs it reads (texts and ends, integers) and then its own values.
    fn statement(&self, into: &str, tail: &str) -> Insert {
        let (cuts, bindings) = self.cuts(1);
        Insert {
            text: format!(
                "{into} SELECT {} FROM {} WHERE true {tail}",
                cuts.join(", "),
                self.numbers()
            ),
            bindings,
        }
    }

    /// `(VALUES (0), (1), …)`: a row per packed row, its number as `column1`.
    fn numbers(&self) -> String {
        let numbers: Vec<String> = (0..self.rows).map(|r| format!("({r})")).collect();
        format!("(VALUES {})", numbers.join(", "))
    }

    /// Each column's cut, and the values they bind, numbered from `?first`: the blobs
    /// they read (texts and ends, integers), then the columns' own values.
    fn cuts(&self, first: usize) -> (Vec<String>, Vec<SqlStorageValue>) {
        let reads = |text: bool| {
            self.sources.iter().any(|s| match s {
                Source::Text { .. } => text,
                Source::Int { .. } => !text,
                _ => false,
            })
        };
        let mut bindings = Vec::with_capacity(3 + self.params.len());
        let number = |bindings: &Vec<SqlStorageValue>| first + bindings.len() - 1;
        let (mut texts, mut ends, mut ints) = (0, 0, 0);
        if reads(true) {
            // A blob of no bytes may be bound as NULL: a byte past the last text keeps it one.
            let mut blob = self.texts.clone();
            blob.push(b' ');
            bindings.push(SqlStorageValue::Blob(blob));
            texts = number(&bindings);
            bindings.push(SqlStorageValue::Blob(self.ends.clone()));
            ends = number(&bindings);
        }
        if reads(false) {
            bindings.push(SqlStorageValue::Blob(self.ints.clone()));
            ints = number(&bindings);
        }
        let params_from = first + bindings.len() - 1;
        bindings.extend(self.params.iter().cloned());
        let slot = |slot: usize, per_row: bool| match per_row {
            true => format!("({slot} + column1)"),
            false => slot.to_string(),
        };
        let cuts = self
            .sources
            .iter()
            .map(|source| match *source {
                Source::Null => "NULL".into(),
                Source::Param(n) => format!("?{}", params_from + n),
                Source::Text { slot: s, per_row } => {
                    let s = slot(s, per_row);
                    let start = format!(
                        "CAST(substr(?{ends}, {s} * {OFFSET_DIGITS} + 1, {OFFSET_DIGITS}) AS INTEGER)"
                    );
                    let end = format!(
                        "CAST(substr(?{ends}, {s} * {OFFSET_DIGITS} + {}, {OFFSET_DIGITS}) AS INTEGER)",
                        OFFSET_DIGITS + 1
                    );
                    format!("CAST(substr(?{texts}, {start} + 1, {end} - {start}) AS TEXT)")
                }
                Source::Int { slot: s, per_row } => {
                    let s = slot(s, per_row);
                    format!("CAST(substr(?{ints}, {s} * {INT_DIGITS} + 1, {INT_DIGITS}) AS INTEGER)")
                }
            })
            .collect();
        (cuts, bindings)
    }

    /// Row `r`'s value of column `c`, read back as the statement's cuts read it.
    #[cfg(test)]
    fn value(&self, r: usize, c: usize) -> SqlStorageValue {
        let number = |blob: &[u8], at: usize, width: usize| -> i64 {
            std::str::from_utf8(&blob[at * width..(at + 1) * width])
                .unwrap()
                .parse()
                .unwrap()
        };
        let row = |per_row: bool| if per_row { r } else { 0 };
        match self.sources[c] {
            Source::Null => SqlStorageValue::Null,
            Source::Param(n) => self.params[n - 1].clone(),
            Source::Text { slot, per_row } => {
                let s = slot + row(per_row);
                let (start, end) = (
                    number(&self.ends, s, OFFSET_DIGITS) as usize,
                    number(&self.ends, s + 1, OFFSET_DIGITS) as usize,
                );
                SqlStorageValue::String(String::from_utf8(self.texts[start..end].to_vec()).unwrap())
            }
            Source::Int { slot, per_row } => {
                SqlStorageValue::Integer(number(&self.ints, slot + row(per_row), INT_DIGITS))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use SqlStorageValue::{Float, Integer, Null, String as Text};

    fn text(s: &str) -> SqlStorageValue {
        Text(s.into())
    }

    /// Every packed value reads back in its row and column, for shared and varying columns
    /// of every kind, texts of any length (none, multi-byte) and integers of any sign.
    #[test]
    fn every_value_reads_back_where_it_was() {
        let rows = 1_234;
        let columns = 7;
        let values: Vec<SqlStorageValue> = (0..rows)
            .flat_map(|r: i64| {
                [
                    text(&format!("run_{r:05}")),
                    text("shared task"),
                    Null,
                    Integer(i64::MIN + r),
                    Integer(1_700_000_000_000),
                    text(&"é✓".repeat(r as usize % 5)),
                    Float(0.5),
                ]
            })
            .collect();
        let statements = pack(columns, &values).expect("packable");
        assert_eq!(
            statements.iter().map(|p| p.rows).collect::<Vec<_>>(),
            [500, 500, 234]
        );
        let mut read_back = Vec::new();
        for packed in &statements {
            for r in 0..packed.rows {
                read_back.extend((0..columns).map(|c| packed.value(r, c)));
            }
            // The shared values are bound once: the float as itself.
            assert_eq!(packed.params, [Float(0.5)]);
        }
        assert_eq!(read_back, values);
    }

    #[test]
    fn numbers_are_written_as_the_formatter_writes_them() {
        for n in [
            0,
            7,
            -7,
            1_234_567_890,
            i64::MAX,
            i64::MIN,
            -1,
            10_i64.pow(18),
        ] {
            let mut out = b"x".to_vec();
            push_fixed(&mut out, n, INT_DIGITS);
            assert_eq!(out, format!("x{n:020}").into_bytes());
        }
        let mut out = Vec::new();
        push_fixed(&mut out, 123, OFFSET_DIGITS);
        assert_eq!(out, b"0000000123");
    }

    #[test]
    fn one_row_is_all_shared_and_binds_three_values_at_most() {
        let values = vec![text("a"), Integer(-7), Null, text("")];
        // Packable, though a single row is inserted value by value.
        assert!(pack_inserts("INSERT INTO t (a, b, c, d)", "", 4, &values).is_none());
        let [packed] = &pack(4, &values).unwrap()[..] else {
            panic!("one statement");
        };
        assert_eq!(
            (0..4).map(|c| packed.value(0, c)).collect::<Vec<_>>(),
            values
        );
        let insert = packed.statement("INSERT INTO t (a, b, c, d)", "");
        assert_eq!(insert.bindings.len(), 3);
        assert_eq!(
            insert.text,
            "INSERT INTO t (a, b, c, d) SELECT \
             CAST(substr(?1, CAST(substr(?2, 0 * 10 + 1, 10) AS INTEGER) + 1, \
             CAST(substr(?2, 0 * 10 + 11, 10) AS INTEGER) - CAST(substr(?2, 0 * 10 + 1, 10) AS INTEGER)) AS TEXT), \
             CAST(substr(?3, 0 * 20 + 1, 20) AS INTEGER), NULL, \
             CAST(substr(?1, CAST(substr(?2, 1 * 10 + 1, 10) AS INTEGER) + 1, \
             CAST(substr(?2, 1 * 10 + 11, 10) AS INTEGER) - CAST(substr(?2, 1 * 10 + 1, 10) AS INTEGER)) AS TEXT) \
             FROM (VALUES (0)) WHERE true "
        );
    }

    #[test]
    fn a_varying_column_reads_its_slot_by_the_row_number() {
        let values = vec![text("a"), Integer(1), text("b"), Integer(2)];
        let [packed] = &pack(2, &values).unwrap()[..] else {
            panic!("one statement");
        };
        let insert = packed.statement("INSERT INTO t (a, b)", "ON CONFLICT DO NOTHING");
        assert!(insert
            .text
            .contains("CAST(substr(?3, (0 + column1) * 20 + 1, 20) AS INTEGER)"));
        assert!(insert
            .text
            .ends_with("FROM (VALUES (0), (1)) WHERE true ON CONFLICT DO NOTHING"));
        // The text blob ends with a spare byte, so that it is never empty.
        assert_eq!(insert.bindings[0], SqlStorageValue::Blob(b"ab ".to_vec()));
    }

    #[test]
    fn texts_to_join_on_bind_from_the_number_given() {
        assert!(text_sources(2, &[]).is_empty());
        assert_eq!(
            text_sources(2, &["k"]),
            [("(SELECT ?2 AS value)".to_owned(), vec![text("k")])]
        );
        let keys: Vec<String> = (0..501).map(|i| format!("key {i}")).collect();
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let sources = text_sources(2, &keys);
        assert_eq!(sources.len(), 2);
        let (source, bindings) = &sources[1];
        assert_eq!(
            *source,
            "(SELECT CAST(substr(?2, CAST(substr(?3, (0 + column1) * 10 + 1, 10) AS INTEGER) + 1, \
             CAST(substr(?3, (0 + column1) * 10 + 11, 10) AS INTEGER) - \
             CAST(substr(?3, (0 + column1) * 10 + 1, 10) AS INTEGER)) AS TEXT) AS value FROM (VALUES (0)))"
        );
        assert_eq!(bindings[0], SqlStorageValue::Blob(b"key 500 ".to_vec()));
        assert!(sources[0].0.ends_with("(498), (499)))"));
    }

    #[test]
    fn columns_mixing_kinds_or_rows_too_long_are_not_packed() {
        let mixed = vec![text("a"), Null, text("b"), text("x")];
        assert!(pack(2, &mixed).is_none());
        let long = vec![text(&"x".repeat(MAX_TEXT_BYTES + 1))];
        assert!(pack(1, &long).is_none());
        // Long texts spread over statements: two of these fit in one, not three.
        let rows: Vec<SqlStorageValue> = (0..3)
            .map(|r| text(&format!("{r}{}", "y".repeat(MAX_TEXT_BYTES / 3))))
            .collect();
        assert_eq!(pack(1, &rows).unwrap().len(), 2);
    }
}

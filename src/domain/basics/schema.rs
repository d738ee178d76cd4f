//! Versioned schema migrations, as rules: every SQLite-backed object declares its schema
//! as a [`Schema`], an ordered list of numbered [`Step`]s. An object records the steps it
//! has applied in its own `schema_steps` table (`platform::migrate` does the I/O) and, when
//! it starts, applies the steps it lacks, each inside one transaction with its record.
//!
//! The rules a step list keeps (checked by [`Schema::check`] and by each object's tests):
//! - versions are 1, 2, 3, … with no gap, and a step is never edited once released (each
//!   object's test pins the fingerprint of every released step);
//! - a step only adds (tables, columns with a default or nullable, indexes), so that the
//!   build before it keeps working on state the build after it migrated: a build that
//!   finds steps newer than its own list ([`Plan::Newer`]) runs on, and a column or table
//!   is dropped only in a step released after no build reads it any more;
//! - step 1 adopts objects made before versioning existed: it creates what the last
//!   unversioned build created (`CREATE … IF NOT EXISTS`) and adds the columns that build
//!   added on start, tolerating a column that is already there
//!   ([`Statement::AddColumnIfMissing`]). No later step may use that tolerance.

use sha2::{Digest, Sha256};

/// One statement of a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Statement {
    /// Run as is; any error fails the step (and rolls it back).
    Sql(&'static str),
    /// `ALTER TABLE … ADD COLUMN …` that succeeds when the column already exists: only for
    /// step 1, where objects of the unversioned builds may or may not have the column.
    AddColumnIfMissing(&'static str),
}

impl Statement {
    pub fn text(&self) -> &'static str {
        match self {
            Statement::Sql(text) | Statement::AddColumnIfMissing(text) => text,
        }
    }

    /// Whether `error` (the runtime's message for this statement) still counts as done.
    pub fn tolerates(&self, error: &str) -> bool {
        matches!(self, Statement::AddColumnIfMissing(_)) && error.contains("duplicate column")
    }
}

/// A numbered step: its statements commit together, with the record that it was applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub version: u32,
    pub statements: &'static [Statement],
}

impl Step {
    /// A digest of the step's statements: a released step's fingerprint never changes.
    pub fn fingerprint(&self) -> String {
        let mut hash = Sha256::new();
        for statement in self.statements {
            let kind: &[u8] = match statement {
                Statement::Sql(_) => b"sql\0",
                Statement::AddColumnIfMissing(_) => b"add-column-if-missing\0",
            };
            hash.update(kind);
            hash.update(statement.text().as_bytes());
            hash.update(b"\0");
        }
        hash.finalize()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// One object kind's schema.
#[derive(Debug, Clone, Copy)]
pub struct Schema {
    /// The object kind, for log lines (`run store`, `queue gate`, …).
    pub object: &'static str,
    pub steps: &'static [Step],
}

/// What an object must do with its storage when it starts.
#[derive(Debug, PartialEq)]
pub enum Plan<'a> {
    /// Every step is applied.
    UpToDate,
    /// Apply these steps, in order.
    Apply(&'a [Step]),
    /// The storage has steps this build does not know: a newer build migrated it (a
    /// rollback). Steps only add, so this build runs on; it applies nothing.
    Newer { found: u32, known: u32 },
}

impl Schema {
    /// The newest version this build knows (0 for an object with no tables).
    pub fn latest(&self) -> u32 {
        self.steps.last().map_or(0, |s| s.version)
    }

    /// What to apply to storage whose newest applied step is `applied` (0: none).
    pub fn plan(&self, applied: u32) -> Plan<'_> {
        let known = self.latest();
        if applied > known {
            Plan::Newer {
                found: applied,
                known,
            }
        } else if applied == known {
            Plan::UpToDate
        } else {
            Plan::Apply(&self.steps[applied as usize..])
        }
    }

    /// The list's own rules: versions 1, 2, 3, … in order, no empty step, and the
    /// tolerant statement only in step 1.
    pub fn check(&self) -> Result<(), String> {
        for (i, step) in self.steps.iter().enumerate() {
            let expected = i as u32 + 1;
            if step.version != expected {
                return Err(format!(
                    "{}: step {} is numbered {} (steps are numbered 1, 2, 3, … in order)",
                    self.object, expected, step.version
                ));
            }
            if step.statements.is_empty() {
                return Err(format!("{}: step {} is empty", self.object, step.version));
            }
            let tolerant = step
                .statements
                .iter()
                .any(|s| matches!(s, Statement::AddColumnIfMissing(_)));
            if tolerant && step.version != 1 {
                return Err(format!(
                    "{}: step {} adds a column only if missing; only step 1 may",
                    self.object, step.version
                ));
            }
        }
        Ok(())
    }
}

/// Test support: asserts that `schema` keeps its rules and that its released steps are
/// unchanged (`released[i]` is step i+1's fingerprint).
#[cfg(test)]
pub fn assert_released(schema: &Schema, released: &[&str]) {
    schema.check().unwrap();
    assert!(
        released.len() <= schema.steps.len(),
        "{}: a released step was removed",
        schema.object
    );
    for (step, pinned) in schema.steps.iter().zip(released) {
        assert_eq!(
            step.fingerprint(),
            *pinned,
            "{}: released step {} was edited; add a new step instead",
            schema.object,
            step.version
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE: &[Statement] = &[Statement::Sql("CREATE TABLE a (x)")];
    const TWO: &[Statement] = &[Statement::Sql("ALTER TABLE a ADD COLUMN y")];

    fn schema(steps: &'static [Step]) -> Schema {
        Schema {
            object: "test",
            steps,
        }
    }

    static STEPS: [Step; 2] = [
        Step {
            version: 1,
            statements: ONE,
        },
        Step {
            version: 2,
            statements: TWO,
        },
    ];

    #[test]
    fn a_fresh_object_applies_every_step_in_order() {
        let s = schema(&STEPS);
        let Plan::Apply(steps) = s.plan(0) else {
            panic!("expected steps")
        };
        assert_eq!(
            steps.iter().map(|s| s.version).collect::<Vec<_>>(),
            vec![1, 2]
        );
    }

    #[test]
    fn an_object_at_step_1_applies_only_step_2() {
        let s = schema(&STEPS);
        let Plan::Apply(steps) = s.plan(1) else {
            panic!("expected steps")
        };
        assert_eq!(steps.iter().map(|s| s.version).collect::<Vec<_>>(), vec![2]);
    }

    #[test]
    fn an_object_at_the_latest_step_applies_nothing() {
        assert_eq!(schema(&STEPS).plan(2), Plan::UpToDate);
    }

    #[test]
    fn an_object_migrated_by_a_newer_build_is_left_as_it_is() {
        assert_eq!(schema(&STEPS).plan(5), Plan::Newer { found: 5, known: 2 });
    }

    #[test]
    fn an_object_kind_without_tables_is_always_up_to_date() {
        assert_eq!(schema(&[]).plan(0), Plan::UpToDate);
        assert_eq!(schema(&[]).latest(), 0);
    }

    #[test]
    fn steps_out_of_order_gapped_or_empty_are_refused() {
        static GAP: [Step; 2] = [
            Step {
                version: 1,
                statements: ONE,
            },
            Step {
                version: 3,
                statements: TWO,
            },
        ];
        static EMPTY: [Step; 1] = [Step {
            version: 1,
            statements: &[],
        }];
        static LATE_TOLERANCE: [Step; 2] = [
            Step {
                version: 1,
                statements: ONE,
            },
            Step {
                version: 2,
                statements: &[Statement::AddColumnIfMissing("ALTER TABLE a ADD COLUMN z")],
            },
        ];
        assert!(schema(&GAP).check().unwrap_err().contains("numbered 3"));
        assert!(schema(&EMPTY).check().unwrap_err().contains("empty"));
        assert!(schema(&LATE_TOLERANCE)
            .check()
            .unwrap_err()
            .contains("only step 1"));
        assert!(schema(&STEPS).check().is_ok());
    }

    #[test]
    fn only_the_tolerant_statement_accepts_a_duplicate_column() {
        let error = "duplicate column name: retry: SQLITE_ERROR";
        assert!(Statement::AddColumnIfMissing("ALTER …").tolerates(error));
        assert!(!Statement::Sql("ALTER …").tolerates(error));
        assert!(!Statement::AddColumnIfMissing("ALTER …").tolerates("no such table: runs"));
    }

    #[test]
    fn a_fingerprint_changes_with_any_statement_or_its_kind() {
        let base = Step {
            version: 1,
            statements: ONE,
        };
        let other_text = Step {
            version: 1,
            statements: &[Statement::Sql("CREATE TABLE a (x, y)")],
        };
        let other_kind = Step {
            version: 1,
            statements: &[Statement::AddColumnIfMissing("CREATE TABLE a (x)")],
        };
        assert_eq!(base.fingerprint(), base.fingerprint());
        assert_eq!(base.fingerprint().len(), 16);
        assert_ne!(base.fingerprint(), other_text.fingerprint());
        assert_ne!(base.fingerprint(), other_kind.fingerprint());
    }
}

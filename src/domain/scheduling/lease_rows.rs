//! How a gate stores its leases: a row per group of leases admitted together, not a row
//! per lease. Admitting a hand of six runs then costs one row written instead of six, and
//! releasing them, one row written per release call that frees some of them (the row
//! rewritten with the leases still held, or deleted with the last), instead of one per
//! run. Plain Rust: the gate object writes what [`LeaseRows::apply`] returns.
//!
//! Rows are numbered by the gate (`id`, a rowid: no index to pay for). Leases a build
//! before grouping stored one per row (`running`) are adopted as they are and deleted
//! from there when they end.

use std::collections::HashMap;

use crate::domain::scheduling::gate::Lease;

/// Where a lease held is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Home {
    /// In the group row with this id.
    Group(i64),
    /// In a row of its own in the table the builds before grouping wrote.
    Single,
}

/// One write to the stored leases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowWrite {
    /// A new group row.
    Insert { id: i64, leases: Vec<Lease> },
    /// A group row, rewritten with the leases it still holds.
    Update { id: i64, leases: Vec<Lease> },
    /// A group row whose leases all ended.
    Delete { id: i64 },
    /// A lease stored by a build before grouping ended: its own row goes.
    DeleteSingle { run_id: String },
}

/// The stored leases' layout, kept beside the gate's state.
#[derive(Debug, Default)]
pub struct LeaseRows {
    groups: HashMap<i64, Vec<Lease>>,
    home: HashMap<String, Home>,
    next_id: i64,
}

impl LeaseRows {
    /// The layout as stored: group rows, and leases in rows of their own.
    pub fn restore(groups: Vec<(i64, Vec<Lease>)>, singles: &[Lease]) -> LeaseRows {
        let mut rows = LeaseRows::default();
        for lease in singles {
            rows.home.insert(lease.ticket.run_id.clone(), Home::Single);
        }
        for (id, leases) in groups {
            rows.next_id = rows.next_id.max(id.saturating_add(1));
            for lease in &leases {
                rows.home
                    .insert(lease.ticket.run_id.clone(), Home::Group(id));
            }
            rows.groups.insert(id, leases);
        }
        rows
    }

    /// The writes that store an operation's net effect: the leases of `ended` runs go
    /// (first, since a run may end a lease and take a new one in one operation), and each
    /// group of `admitted` leases becomes a row. A run with no stored lease is skipped.
    pub fn apply(&mut self, ended: &[String], admitted: Vec<Vec<Lease>>) -> Vec<RowWrite> {
        let mut touched: Vec<i64> = Vec::new();
        let mut writes = Vec::new();
        for run_id in ended {
            match self.home.remove(run_id) {
                Some(Home::Group(id)) => {
                    if let Some(leases) = self.groups.get_mut(&id) {
                        leases.retain(|l| l.ticket.run_id != *run_id);
                    }
                    if !touched.contains(&id) {
                        touched.push(id);
                    }
                }
                Some(Home::Single) => writes.push(RowWrite::DeleteSingle {
                    run_id: run_id.clone(),
                }),
                None => {}
            }
        }
        for id in touched {
            match self.groups.get(&id) {
                Some(leases) if leases.is_empty() => {
                    self.groups.remove(&id);
                    writes.push(RowWrite::Delete { id });
                }
                Some(leases) => writes.push(RowWrite::Update {
                    id,
                    leases: leases.clone(),
                }),
                None => {}
            }
        }
        for leases in admitted.into_iter().filter(|g| !g.is_empty()) {
            let id = self.next_id;
            self.next_id += 1;
            for lease in &leases {
                self.home
                    .insert(lease.ticket.run_id.clone(), Home::Group(id));
            }
            self.groups.insert(id, leases.clone());
            writes.push(RowWrite::Insert { id, leases });
        }
        writes
    }

    /// How many leases are stored.
    pub fn len(&self) -> usize {
        self.home.len()
    }

    pub fn is_empty(&self) -> bool {
        self.home.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::scheduling::gate::test_lease;

    fn lease(run: &str, token: u64) -> Lease {
        test_lease(run, token)
    }

    fn runs(leases: &[Lease]) -> Vec<&str> {
        leases.iter().map(|l| l.ticket.run_id.as_str()).collect()
    }

    #[test]
    fn a_group_admitted_together_is_one_row_written_and_each_release_call_one_more() {
        let mut rows = LeaseRows::default();
        let hand: Vec<Lease> = ["a", "b", "c"]
            .iter()
            .zip(0..)
            .map(|(r, t)| lease(r, t))
            .collect();
        let writes = rows.apply(&[], vec![hand]);
        assert_eq!(writes.len(), 1);
        assert!(
            matches!(&writes[0], RowWrite::Insert { id: 0, leases } if runs(leases) == ["a", "b", "c"])
        );

        let writes = rows.apply(&["a".into(), "b".into()], vec![]);
        assert_eq!(
            writes.len(),
            1,
            "two releases in one call: one row rewritten"
        );
        assert!(matches!(&writes[0], RowWrite::Update { id: 0, leases } if runs(leases) == ["c"]));

        assert_eq!(
            rows.apply(&["c".into()], vec![]),
            [RowWrite::Delete { id: 0 }]
        );
        assert!(rows.is_empty());
        assert!(
            rows.apply(&["c".into()], vec![]).is_empty(),
            "ended twice: nothing"
        );
    }

    #[test]
    fn a_run_that_ends_a_lease_and_takes_a_new_one_keeps_only_the_new() {
        let mut rows = LeaseRows::default();
        rows.apply(&[], vec![vec![lease("a", 1), lease("b", 2)]]);
        let writes = rows.apply(&["a".into()], vec![vec![lease("a", 3)]]);
        assert_eq!(writes.len(), 2);
        assert!(matches!(&writes[0], RowWrite::Update { id: 0, leases } if runs(leases) == ["b"]));
        assert!(matches!(&writes[1], RowWrite::Insert { id: 1, leases } if leases[0].token == 3));
        assert_eq!(rows.len(), 2);
        assert_eq!(
            rows.apply(&["a".into()], vec![]),
            [RowWrite::Delete { id: 1 }]
        );
    }

    #[test]
    fn restored_rows_keep_their_ids_and_leases_of_single_rows_are_deleted_alone() {
        let mut rows = LeaseRows::restore(
            vec![(7, vec![lease("a", 1)]), (3, vec![lease("b", 2)])],
            &[lease("old", 0)],
        );
        assert_eq!(rows.len(), 3);
        let writes = rows.apply(&["old".into(), "b".into()], vec![vec![lease("c", 4)]]);
        assert_eq!(
            writes,
            [
                RowWrite::DeleteSingle {
                    run_id: "old".into()
                },
                RowWrite::Delete { id: 3 },
                RowWrite::Insert {
                    id: 8,
                    leases: vec![lease("c", 4)]
                },
            ]
        );
        assert!(
            rows.apply(&[], vec![vec![]]).is_empty(),
            "an empty group: no row"
        );
    }

    /// Any sequence of admissions and ends, written to a model of the two tables, leaves
    /// stored exactly the leases held, each once.
    #[test]
    fn the_rows_written_always_hold_exactly_the_leases_held() {
        use proptest::prelude::*;
        use std::collections::{BTreeMap, BTreeSet};

        // An operation: runs (of ten) that end, then groups of runs admitted.
        let operation = (
            proptest::collection::vec(0u8..10, 0..4),
            proptest::collection::vec(proptest::collection::vec(0u8..10, 0..4), 0..3),
        );
        let singles = proptest::collection::btree_set(0u8..10, 0..3);
        let strategy = (singles, proptest::collection::vec(operation, 0..30));
        proptest!(ProptestConfig::with_cases(500), |((singles, operations) in strategy)| {
            let name = |n: &u8| format!("r{n}");
            let single_leases: Vec<Lease> = singles.iter().map(|n| lease(&name(n), 0)).collect();
            let mut rows = LeaseRows::restore(vec![], &single_leases);
            let mut held: BTreeSet<String> = singles.iter().map(name).collect();
            let mut stored_singles = held.clone();
            let mut stored_groups: BTreeMap<i64, Vec<Lease>> = BTreeMap::new();
            let mut token = 1;
            for (ended, admitted) in operations {
                let ended: Vec<String> = ended.iter().map(name).collect();
                ended.iter().for_each(|r| { held.remove(r); });
                // A run holds one lease at most: groups admit runs not held.
                let mut groups = Vec::new();
                for group in admitted {
                    let mut leases = Vec::new();
                    for run in group.iter().map(name) {
                        if held.insert(run.clone()) {
                            leases.push(lease(&run, token));
                            token += 1;
                        }
                    }
                    groups.push(leases);
                }
                for write in rows.apply(&ended, groups) {
                    match write {
                        RowWrite::Insert { id, leases } => {
                            prop_assert!(stored_groups.insert(id, leases).is_none(), "id reused");
                        }
                        RowWrite::Update { id, leases } => {
                            prop_assert!(stored_groups.insert(id, leases).is_some(), "no such row");
                        }
                        RowWrite::Delete { id } => {
                            prop_assert!(stored_groups.remove(&id).is_some(), "no such row");
                        }
                        RowWrite::DeleteSingle { run_id } => {
                            prop_assert!(stored_singles.remove(&run_id), "no such row");
                        }
                    }
                }
                let mut stored: Vec<String> = stored_singles.iter().cloned().collect();
                stored.extend(stored_groups.values().flatten().map(|l| l.ticket.run_id.clone()));
                stored.sort();
                prop_assert!(stored_groups.values().all(|g| !g.is_empty()), "an empty row kept");
                prop_assert_eq!(stored, held.iter().cloned().collect::<Vec<_>>());
                prop_assert_eq!(rows.len(), held.len());
            }
        });
    }
}

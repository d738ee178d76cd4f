//! The concurrency gate of one (environment, queue): a pure state machine.
//!
//! Runs arrive as tickets and wait in FIFO order (by the time they became `QUEUED`, then
//! arrival) per concurrency key. Each key gets its own copy of the queue's limit: at no
//! moment do more than `limit` runs of one key hold a lease (invariant 4, docs/ARCHITECTURE.md). A queue
//! without a limit admits everything; a limit of 0 holds every run until it is raised.
//!
//! A lease ends by release (the attempt finished), by removal (the run was cancelled), or
//! by expiry: `lease_until` is the attempt's `maxDuration` plus a margin, after which the
//! holder is presumed dead and the slot is reclaimed (invariant 6).
//!
//! Every operation returns the rows it added and removed, so the Durable Object that
//! hosts the gate can persist exactly those changes.

use std::collections::{BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use crate::domain::basics::time::Millis;

/// A run offered to the gate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    pub run_id: String,
    /// The run store that owns the run (`<env>:<route>`).
    pub store: String,
    /// `""` for runs without a concurrency key: they share one copy of the limit.
    pub concurrency_key: String,
    pub queued_at: Millis,
    /// When the run's TTL ends; a waiting run past it is dropped (the store expires it).
    pub expires_at: Option<Millis>,
    /// How long a lease on this run lasts: its maxDuration plus a margin.
    pub lease_ms: u64,
}

/// A waiting run, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiting {
    pub ticket: Ticket,
    /// Arrival order, unique within the gate.
    pub seq: u64,
}

/// A run holding a slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The run's ticket, kept so that a lease that ends before its run started can give
    /// the run its place back.
    pub ticket: Ticket,
    pub lease_until: Millis,
    /// Unique per admission, so a late release of an old lease cannot free a new one.
    pub token: u64,
}

/// The rows an operation changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    pub waiting_added: Vec<Waiting>,
    pub waiting_removed: Vec<String>,
    /// New leases: these runs may start now.
    pub admitted: Vec<Lease>,
    pub running_removed: Vec<String>,
    /// The limit or the time it was set changed: store both.
    pub limit_changed: bool,
}

/// A `concurrencyLimit` asked for at `set_at`; the newest request wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitUpdate {
    pub limit: u32,
    pub set_at: Millis,
}

#[derive(Debug, Default, Clone)]
pub struct GateState {
    limit: Option<u32>,
    limit_set_at: Millis,
    /// Per key, waiting runs ordered by (queued_at, seq).
    queues: HashMap<String, BTreeSet<(Millis, u64, String)>>,
    waiting: HashMap<String, Waiting>,
    running: HashMap<String, Lease>,
    running_per_key: HashMap<String, u32>,
    next_seq: u64,
    next_token: u64,
}

impl GateState {
    /// Rebuilds a gate from its stored rows.
    pub fn restore(
        limit: Option<u32>,
        limit_set_at: Millis,
        waiting: Vec<Waiting>,
        running: Vec<Lease>,
    ) -> GateState {
        let mut state = GateState {
            limit,
            limit_set_at,
            ..GateState::default()
        };
        for w in waiting {
            state.next_seq = state.next_seq.max(w.seq + 1);
            state.insert_waiting(w);
        }
        for lease in running {
            state.next_token = state.next_token.max(lease.token + 1);
            *state
                .running_per_key
                .entry(lease.ticket.concurrency_key.clone())
                .or_default() += 1;
            state.running.insert(lease.ticket.run_id.clone(), lease);
        }
        state
    }

    pub fn limit(&self) -> Option<u32> {
        self.limit
    }

    pub fn limit_set_at(&self) -> Millis {
        self.limit_set_at
    }

    pub fn running_count(&self, key: &str) -> u32 {
        self.running_per_key.get(key).copied().unwrap_or(0)
    }

    pub fn waiting_count(&self) -> usize {
        self.waiting.len()
    }

    pub fn lease(&self, run_id: &str) -> Option<&Lease> {
        self.running.get(run_id)
    }

    /// Adds runs (a run already waiting or running is ignored: deliveries repeat), applies
    /// a newer limit, and admits what fits.
    pub fn offer(
        &mut self,
        tickets: Vec<Ticket>,
        limit: Option<LimitUpdate>,
        now: Millis,
    ) -> Changes {
        let mut changes = Changes::default();
        if let Some(update) = limit {
            let newer = update.set_at >= self.limit_set_at;
            if newer && (self.limit != Some(update.limit) || self.limit_set_at != update.set_at) {
                self.limit = Some(update.limit);
                self.limit_set_at = update.set_at;
                changes.limit_changed = true;
            }
        }
        for ticket in tickets {
            // A run offered while it holds a lease waits too, behind that lease: its store
            // moved past the attempt the lease is for (a retry, or a redelivery that
            // crossed the end of the attempt), and dropping the offer would lose the run
            // once the lease ends. It is admitted only after the lease is gone.
            if self.waiting.contains_key(&ticket.run_id) {
                continue;
            }
            let waiting = Waiting {
                ticket,
                seq: self.next_seq,
            };
            self.next_seq += 1;
            changes.waiting_added.push(waiting.clone());
            self.insert_waiting(waiting);
        }
        self.admit(now, &mut changes);
        changes
    }

    /// Ends the lease of `run_id` if `token` is its current one (any token when `None`),
    /// and admits what now fits.
    pub fn release(&mut self, run_id: &str, token: Option<u64>, now: Millis) -> Changes {
        let current = self.running.get(run_id).map(|l| l.token);
        let ended: Vec<_> = token
            .or(current)
            .map(|t| (run_id.to_owned(), t))
            .into_iter()
            .collect();
        self.release_all(&ended, now)
    }

    /// Ends every lease of `ended` (run id, token) that is still current, then admits what
    /// now fits: one step for all the attempts an executor reports at once.
    pub fn release_all(&mut self, ended: &[(String, u64)], now: Millis) -> Changes {
        let mut changes = Changes::default();
        for (run_id, token) in ended {
            if self.running.get(run_id).is_some_and(|l| l.token == *token) {
                self.remove_running(run_id);
                changes.running_removed.push(run_id.clone());
            }
        }
        self.admit(now, &mut changes);
        changes
    }

    /// Takes a run out of the gate, waiting or running (a cancelled run).
    pub fn remove(&mut self, run_id: &str, now: Millis) -> Changes {
        let mut changes = Changes::default();
        if self.remove_waiting(run_id) {
            changes.waiting_removed.push(run_id.to_owned());
        }
        if self.running.contains_key(run_id) {
            self.remove_running(run_id);
            changes.running_removed.push(run_id.to_owned());
        }
        self.admit(now, &mut changes);
        changes
    }

    /// Leases past their deadline at `now`: their holders are presumed dead.
    pub fn expired_leases(&self, now: Millis) -> Vec<Lease> {
        let mut expired: Vec<Lease> = self
            .running
            .values()
            .filter(|l| l.lease_until <= now)
            .cloned()
            .collect();
        expired.sort_by(|a, b| {
            (a.lease_until, &a.ticket.run_id).cmp(&(b.lease_until, &b.ticket.run_id))
        });
        expired
    }

    /// Waiting runs whose TTL has passed (the store expires them; the gate forgets them).
    pub fn drop_expired_waiting(&mut self, now: Millis) -> Changes {
        let mut changes = Changes::default();
        let expired: Vec<String> = self
            .waiting
            .values()
            .filter(|w| w.ticket.expires_at.is_some_and(|at| at <= now))
            .map(|w| w.ticket.run_id.clone())
            .collect();
        for run_id in expired {
            self.remove_waiting(&run_id);
            changes.waiting_removed.push(run_id);
        }
        changes
    }

    /// When the gate next needs to wake: the earliest lease deadline or waiting TTL.
    pub fn next_wake(&self) -> Option<Millis> {
        let leases = self.running.values().map(|l| l.lease_until);
        let ttls = self.waiting.values().filter_map(|w| w.ticket.expires_at);
        leases.chain(ttls).min()
    }

    fn insert_waiting(&mut self, w: Waiting) {
        self.queues
            .entry(w.ticket.concurrency_key.clone())
            .or_default()
            .insert((w.ticket.queued_at, w.seq, w.ticket.run_id.clone()));
        self.waiting.insert(w.ticket.run_id.clone(), w);
    }

    fn remove_waiting(&mut self, run_id: &str) -> bool {
        let Some(w) = self.waiting.remove(run_id) else {
            return false;
        };
        let key = &w.ticket.concurrency_key;
        if let Some(queue) = self.queues.get_mut(key) {
            queue.remove(&(w.ticket.queued_at, w.seq, w.ticket.run_id.clone()));
            if queue.is_empty() {
                self.queues.remove(key);
            }
        }
        true
    }

    fn remove_running(&mut self, run_id: &str) {
        if let Some(lease) = self.running.remove(run_id) {
            let key = &lease.ticket.concurrency_key;
            if let Some(n) = self.running_per_key.get_mut(key) {
                *n -= 1;
                if *n == 0 {
                    self.running_per_key.remove(key);
                }
            }
        }
    }

    /// Moves waiting runs to running, oldest first per key, while the key has room.
    fn admit(&mut self, now: Millis, changes: &mut Changes) {
        let keys: Vec<String> = self.queues.keys().cloned().collect();
        for key in keys {
            loop {
                let room = match self.limit {
                    None => true,
                    Some(limit) => self.running_count(&key) < limit,
                };
                if !room {
                    break;
                }
                // The oldest waiting run of the key that does not hold a lease already.
                let Some((_, _, run_id)) = self.queues.get(&key).and_then(|q| {
                    q.iter()
                        .find(|(_, _, run)| !self.running.contains_key(run))
                        .cloned()
                }) else {
                    break;
                };
                let waiting = self
                    .waiting
                    .get(&run_id)
                    .cloned()
                    .expect("queued runs are waiting");
                self.remove_waiting(&run_id);
                changes.waiting_removed.push(run_id.clone());
                if waiting.ticket.expires_at.is_some_and(|at| at <= now) {
                    continue; // past its TTL: the store expires it, it never starts
                }
                let lease = Lease {
                    lease_until: now
                        .saturating_add(waiting.ticket.lease_ms.min(i64::MAX as u64) as i64),
                    ticket: waiting.ticket,
                    token: self.next_token,
                };
                self.next_token += 1;
                *self.running_per_key.entry(key.clone()).or_default() += 1;
                self.running.insert(run_id, lease.clone());
                changes.admitted.push(lease);
            }
        }
        changes.admitted.sort_by_key(|l| l.token);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticket(run: &str, key: &str, queued_at: Millis) -> Ticket {
        Ticket {
            run_id: run.into(),
            store: "dev:abc".into(),
            concurrency_key: key.into(),
            queued_at,
            expires_at: None,
            lease_ms: 1000,
        }
    }

    fn limit(n: u32) -> Option<LimitUpdate> {
        Some(LimitUpdate {
            limit: n,
            set_at: 0,
        })
    }

    fn ids(leases: &[Lease]) -> Vec<&str> {
        leases.iter().map(|l| l.ticket.run_id.as_str()).collect()
    }

    #[test]
    fn admits_up_to_the_limit_and_parks_the_rest() {
        let mut gate = GateState::default();
        let tickets = (0..5).map(|i| ticket(&format!("r{i}"), "", i)).collect();
        let changes = gate.offer(tickets, limit(3), 100);
        assert_eq!(ids(&changes.admitted), ["r0", "r1", "r2"]);
        assert_eq!(changes.waiting_added.len(), 5);
        assert_eq!(gate.running_count(""), 3);
        assert_eq!(gate.waiting_count(), 2);
        assert!(changes.admitted.iter().all(|l| l.lease_until == 1100));
    }

    #[test]
    fn releasing_several_leases_at_once_admits_as_many_and_ignores_stale_tokens() {
        let mut gate = GateState::default();
        let tickets = (0..6).map(|i| ticket(&format!("r{i}"), "", i)).collect();
        let first = gate.offer(tickets, limit(3), 100);
        let token = |run: &str| {
            first
                .admitted
                .iter()
                .find(|l| l.ticket.run_id == run)
                .unwrap()
                .token
        };
        let ended = [
            ("r0".to_owned(), token("r0")),
            ("r1".to_owned(), token("r1")),
            ("r2".to_owned(), token("r2") + 100), // not r2's lease: r2 keeps its slot
        ];
        let changes = gate.release_all(&ended, 200);
        assert_eq!(changes.running_removed, ["r0", "r1"]);
        assert_eq!(ids(&changes.admitted), ["r3", "r4"]);
        assert_eq!(gate.running_count(""), 3);
    }

    #[test]
    fn release_hands_the_slot_to_the_oldest_waiting_run() {
        let mut gate = GateState::default();
        // Arrival order differs from QUEUED order: QUEUED order wins.
        gate.offer(
            vec![ticket("a", "", 1), ticket("c", "", 3), ticket("b", "", 2)],
            limit(1),
            10,
        );
        assert_eq!(gate.lease("a").map(|l| l.ticket.run_id.as_str()), Some("a"));
        let next = gate.release("a", None, 20);
        assert_eq!(next.running_removed, ["a"]);
        assert_eq!(ids(&next.admitted), ["b"]);
        assert_eq!(ids(&gate.release("b", None, 30).admitted), ["c"]);
        assert!(gate.release("c", None, 40).admitted.is_empty());
    }

    #[test]
    fn each_concurrency_key_has_its_own_copy_of_the_limit() {
        let mut gate = GateState::default();
        let tickets = ["a1", "a2", "a3", "b1", "b2", "b3"]
            .iter()
            .enumerate()
            .map(|(i, r)| ticket(r, &r[..1], i as Millis))
            .collect();
        let mut admitted = ids(&gate.offer(tickets, limit(2), 0).admitted)
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>();
        admitted.sort();
        assert_eq!(admitted, ["a1", "a2", "b1", "b2"]);
        assert_eq!((gate.running_count("a"), gate.running_count("b")), (2, 2));
        // A release of key a never admits a run of key b.
        assert_eq!(ids(&gate.release("a1", None, 1).admitted), ["a3"]);
    }

    #[test]
    fn limit_zero_holds_every_run_until_raised() {
        let mut gate = GateState::default();
        let changes = gate.offer(vec![ticket("r1", "", 0), ticket("r2", "", 1)], limit(0), 0);
        assert!(changes.admitted.is_empty());
        assert_eq!(gate.waiting_count(), 2);
        let raised = gate.offer(
            vec![],
            Some(LimitUpdate {
                limit: 1,
                set_at: 5,
            }),
            10,
        );
        assert!(raised.limit_changed);
        assert_eq!(ids(&raised.admitted), ["r1"]);
    }

    #[test]
    fn a_newer_limit_applies_to_waiting_runs_and_an_older_one_is_ignored() {
        let mut gate = GateState::default();
        gate.offer(
            (0..4).map(|i| ticket(&format!("r{i}"), "", i)).collect(),
            Some(LimitUpdate {
                limit: 1,
                set_at: 100,
            }),
            0,
        );
        let stale = gate.offer(
            vec![],
            Some(LimitUpdate {
                limit: 4,
                set_at: 50,
            }),
            1,
        );
        assert!(stale.admitted.is_empty() && !stale.limit_changed);
        assert_eq!(gate.limit(), Some(1));
        let newer = gate.offer(
            vec![],
            Some(LimitUpdate {
                limit: 3,
                set_at: 200,
            }),
            2,
        );
        assert_eq!(ids(&newer.admitted), ["r1", "r2"]);
        assert_eq!(gate.limit_set_at(), 200);
    }

    #[test]
    fn a_queue_without_a_limit_admits_everything() {
        let mut gate = GateState::default();
        let changes = gate.offer(
            (0..50).map(|i| ticket(&format!("r{i}"), "", i)).collect(),
            None,
            0,
        );
        assert_eq!(changes.admitted.len(), 50);
    }

    #[test]
    fn duplicate_offers_of_a_waiting_run_are_ignored() {
        let mut gate = GateState::default();
        gate.offer(vec![ticket("r1", "", 0), ticket("r2", "", 1)], limit(1), 0);
        let again = gate.offer(vec![ticket("r2", "", 1), ticket("r2", "", 1)], None, 1);
        assert!(again.waiting_added.is_empty() && again.admitted.is_empty());
        assert_eq!((gate.running_count(""), gate.waiting_count()), (1, 1));
    }

    #[test]
    fn leases_expire_and_a_stale_release_does_not_free_a_new_lease() {
        let mut gate = GateState::default();
        gate.offer(vec![ticket("r1", "", 0)], limit(1), 0);
        assert!(gate.expired_leases(999).is_empty());
        let expired = gate.expired_leases(1000);
        assert_eq!(ids(&expired), ["r1"]);
        let old_token = expired[0].token;
        gate.release("r1", Some(old_token), 1000);
        // Redelivered and admitted again: a new token.
        let again = gate.offer(vec![ticket("r1", "", 0)], None, 2000);
        let new_token = again.admitted[0].token;
        assert_ne!(old_token, new_token);
        assert!(gate
            .release("r1", Some(old_token), 2001)
            .running_removed
            .is_empty());
        assert_eq!(
            gate.release("r1", Some(new_token), 2002).running_removed,
            ["r1"]
        );
    }

    #[test]
    fn removing_a_run_frees_its_slot_or_its_place() {
        let mut gate = GateState::default();
        gate.offer(
            vec![
                ticket("r1", "", 0),
                ticket("r2", "", 1),
                ticket("r3", "", 2),
            ],
            limit(1),
            0,
        );
        let waiting_removed = gate.remove("r2", 1);
        assert_eq!(waiting_removed.waiting_removed, ["r2"]);
        assert!(waiting_removed.admitted.is_empty());
        let running_removed = gate.remove("r1", 2);
        assert_eq!(running_removed.running_removed, ["r1"]);
        assert_eq!(ids(&running_removed.admitted), ["r3"]);
    }

    #[test]
    fn runs_past_their_ttl_never_get_a_slot() {
        let mut gate = GateState::default();
        let mut late = ticket("late", "", 0);
        late.expires_at = Some(50);
        gate.offer(
            vec![ticket("first", "", 0), late, ticket("next", "", 1)],
            limit(1),
            10,
        );
        assert_eq!(gate.next_wake(), Some(50));
        let changes = gate.release("first", None, 60);
        assert_eq!(ids(&changes.admitted), ["next"]);
        assert!(changes.waiting_removed.contains(&"late".to_owned()));
        let mut other = GateState::default();
        let mut parked = ticket("parked", "", 0);
        parked.expires_at = Some(50);
        other.offer(vec![parked], limit(0), 10);
        assert_eq!(other.drop_expired_waiting(49).waiting_removed.len(), 0);
        assert_eq!(other.drop_expired_waiting(50).waiting_removed, ["parked"]);
        assert_eq!(other.next_wake(), None);
    }

    #[test]
    fn restore_rebuilds_the_same_gate() {
        let mut gate = GateState::default();
        let changes = gate.offer(
            (0..4).map(|i| ticket(&format!("r{i}"), "", i)).collect(),
            limit(2),
            0,
        );
        let waiting: Vec<Waiting> = changes
            .waiting_added
            .iter()
            .filter(|w| {
                !changes
                    .admitted
                    .iter()
                    .any(|l| l.ticket.run_id == w.ticket.run_id)
            })
            .cloned()
            .collect();
        let mut restored = GateState::restore(
            gate.limit(),
            gate.limit_set_at(),
            waiting,
            changes.admitted.clone(),
        );
        assert_eq!(restored.running_count(""), 2);
        assert_eq!(ids(&restored.release("r0", None, 1).admitted), ["r2"]);
        let fresh = restored.offer(vec![ticket("r9", "", 9)], None, 2);
        assert!(fresh.admitted.is_empty());
        assert!(
            fresh.waiting_added[0].seq >= 4,
            "sequence numbers continue after a restore"
        );
    }

    #[test]
    fn a_run_offered_while_it_holds_a_lease_waits_for_that_lease_to_end() {
        let mut gate = GateState::default();
        let first = gate.offer(vec![ticket("r", "", 1)], limit(2), 100);
        assert_eq!(ids(&first.admitted), ["r"]);
        // Its retry (or a late redelivery) arrives before the executor released the slot.
        let again = gate.offer(vec![ticket("r", "", 2)], None, 110);
        assert!(again.admitted.is_empty(), "never two leases for one run");
        assert_eq!(again.waiting_added.len(), 1, "kept, not dropped");
        assert_eq!(gate.running_count(""), 1);
        // Another run still gets the free slot past it.
        let other = gate.offer(vec![ticket("s", "", 3)], None, 120);
        assert_eq!(ids(&other.admitted), ["s"]);
        // The lease ends: the run waiting behind it is admitted under a new lease.
        let token = gate.lease("r").unwrap().token;
        let released = gate.release("r", Some(token), 130);
        assert_eq!(released.running_removed, ["r"]);
        assert_eq!(ids(&released.admitted), ["r"]);
        assert_ne!(gate.lease("r").unwrap().token, token);
        assert_eq!(gate.waiting_count(), 0);
    }

    #[test]
    fn removing_a_run_drops_its_lease_and_the_offer_waiting_behind_it() {
        let mut gate = GateState::default();
        gate.offer(vec![ticket("r", "", 1)], limit(1), 100);
        gate.offer(vec![ticket("r", "", 2)], None, 110);
        let removed = gate.remove("r", 120);
        assert_eq!(removed.running_removed, ["r"]);
        assert_eq!(removed.waiting_removed, ["r"]);
        assert!(removed.admitted.is_empty());
        assert_eq!((gate.running_count(""), gate.waiting_count()), (0, 0));
    }
}

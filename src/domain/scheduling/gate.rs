//! The concurrency gate of one (environment, queue): a pure state machine.
//!
//! Runs arrive as tickets and wait in FIFO order (by their place in line: the time they
//! became `QUEUED` less their priority, then arrival) per concurrency key. Each key gets
//! its own copy of the queue's limit: at no moment do more than `limit` runs of one key
//! hold a lease (invariant 4, docs/ARCHITECTURE.md). A queue without a limit admits
//! everything; a limit of 0 holds every run until it is raised.
//!
//! An operator steers a gate through [`Controls`]: a paused gate admits nothing (its
//! leases run to their end); an override wins over the declared and trigger-set limits
//! until it is reset; a total cap bounds the leases of all keys together, and under it
//! keys take turns (round robin among the keys with waiting runs, one admission each), so
//! a key with a large backlog never delays a key that just got a run by more than one
//! turn of the others.
//!
//! A lease ends by release (the attempt finished), by removal (the run was cancelled), or
//! by expiry: `lease_until` is the attempt's `maxDuration` plus a margin, after which the
//! holder is presumed dead and the slot is reclaimed (invariant 6).
//!
//! Every operation returns the rows it added and removed, so the Durable Object that
//! hosts the gate can persist exactly those changes.
//!
//! Waiting runs are stored rows, in line by (key, `queued_at`, `seq`); memory holds only a
//! window of them: per key, every waiting run up to a horizon (the key's oldest), at most
//! [`WINDOW`] runs in all, so a backlog of any size costs a bounded amount of memory. The
//! rest is read from storage through [`StoredWaiting`] when a key with room has nothing
//! left in its window, a page at a time; an offer that cannot be told apart from a run
//! beyond a key's horizon asks storage whether that run already waits.

use std::collections::{BTreeSet, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::domain::basics::time::Millis;
use crate::domain::scheduling::pool::pool_size;

/// The most waiting runs a gate keeps in memory.
pub const WINDOW: usize = 1_000;
/// How many waiting runs of a key are read from storage at a time.
pub const PAGE: usize = 256;

/// A place in a key's line: (`queued_at`, `seq`).
pub type Place = (Millis, u64);

/// A run offered to the gate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    pub run_id: String,
    /// The run store that owns the run (`<env>:<route>`).
    pub store: String,
    /// `""` for runs without a concurrency key: they share one copy of the limit.
    pub concurrency_key: String,
    /// Its place in line: when it became `QUEUED`, less its priority (a run of priority
    /// P seconds is ordered as if it had been queued P seconds earlier).
    pub queued_at: Millis,
    /// When the run's TTL ends; a waiting run past it is dropped (the store expires it).
    pub expires_at: Option<Millis>,
    /// How long a lease on this run lasts: its maxDuration plus a margin.
    pub lease_ms: u64,
}

/// A run's priority (`options.priority`, in seconds) in milliseconds: how much earlier
/// than its `QUEUED` time it takes its place in line. At most 10^12 s (a run cannot
/// move before the start of the clock's range).
pub fn priority_ms(priority: Option<f64>) -> u64 {
    priority.map_or(0, |p| (p * 1000.0).round().clamp(0.0, 1e15) as u64)
}

/// A waiting run, as stored: its row's key is (`concurrency_key`, `queued_at`, `seq`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiting {
    pub ticket: Ticket,
    /// Arrival order, unique within the gate: the order of runs with one `queued_at`.
    pub seq: u64,
}

impl Waiting {
    fn place(&self) -> Place {
        (self.ticket.queued_at, self.seq)
    }
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

/// The rows an operation changed: the net effect, so a run that came and went within the
/// operation is in neither list.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    pub waiting_added: Vec<Waiting>,
    pub waiting_removed: Vec<Waiting>,
    /// New leases: these runs may start now.
    pub admitted: Vec<Lease>,
    pub running_removed: Vec<String>,
    /// The limit or the time it was set changed: store both.
    pub limit_changed: bool,
    /// The controls changed: store them.
    pub controls_changed: bool,
    /// A key's throttle state changed: store the keys' arrival times.
    pub throttle_changed: bool,
    /// Run ids of `waiting_added` still waiting at the end of the operation.
    added: HashSet<String>,
}

impl Changes {
    fn add_waiting(&mut self, w: Waiting) {
        self.added.insert(w.ticket.run_id.clone());
        self.waiting_added.push(w);
    }

    fn remove_waiting(&mut self, w: Waiting) {
        if !self.added.remove(&w.ticket.run_id) {
            self.waiting_removed.push(w);
        }
    }

    /// Ends an operation: drops the runs added and removed within it.
    fn settle(mut self) -> Changes {
        let added = std::mem::take(&mut self.added);
        self.waiting_added
            .retain(|w| added.contains(&w.ticket.run_id));
        self.admitted.sort_by_key(|l| l.token);
        self
    }

    /// Folds the changes of a later operation into these.
    pub fn merge(&mut self, later: Changes) {
        for w in later.waiting_removed {
            match self
                .waiting_added
                .iter()
                .position(|a| a.ticket.run_id == w.ticket.run_id)
            {
                Some(i) => drop(self.waiting_added.swap_remove(i)),
                None => self.waiting_removed.push(w),
            }
        }
        self.waiting_added.extend(later.waiting_added);
        self.admitted.extend(later.admitted);
        self.running_removed.extend(later.running_removed);
        self.limit_changed |= later.limit_changed;
        self.controls_changed |= later.controls_changed;
        self.throttle_changed |= later.throttle_changed;
    }
}

/// The waiting runs in storage, as far as the gate reads them (every write goes through
/// [`Changes`]). Stored rows include those of the window.
pub trait StoredWaiting {
    /// The runs stored as waiting at this place in `key`'s line (this `queued_at`, any
    /// `seq`). Runs triggered together share a `queued_at` (the runtime's clock moves only
    /// between I/O), so one read answers for all of them.
    fn runs_at(&mut self, key: &str, queued_at: Millis) -> Vec<String>;
    /// The first `count` stored runs of `key` after `after`, in line order.
    fn page(&mut self, key: &str, after: Place, count: usize) -> Vec<Waiting>;
    /// The stored waiting run `run_id`, whatever its key (a cancel names only the run).
    fn find(&mut self, run_id: &str) -> Option<Waiting>;
}

/// A `concurrencyLimit` asked for at `set_at`; the newest request wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitUpdate {
    pub limit: u32,
    pub set_at: Millis,
}

/// What an operator set (the queues API) and the total cap declared for the queue: kept
/// across restarts.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Controls {
    /// A paused gate admits nothing; attempts under way finish.
    pub paused: bool,
    /// A limit per key that wins over the declared and trigger-set ones until reset, and
    /// when it was set.
    pub override_limit: Option<u32>,
    pub overridden_at: Option<Millis>,
    /// The most leases of all keys together, as the queue declares it (`None`: no cap).
    pub total_limit: Option<u32>,
    /// A total cap that wins over the declared one until reset.
    pub total_override: Option<u32>,
    /// The rate each concurrency key's runs may start at, as the queue declares it.
    #[serde(default)]
    pub throttle: Option<Throttle>,
}

/// A rate per concurrency key: at most `limit + burst` starts in any `period_ms`, spread
/// evenly (GCRA, the generic cell rate algorithm). Each key has a theoretical arrival
/// time `tat`; a run may start at `now` when `tat - burst × interval <= now`, and each
/// start moves `tat` to `max(tat, now) + interval`, `interval` being `period / limit`
/// rounded up. `burst + 1` runs may start at once after a quiet spell, then one per
/// interval; runs past the rate wait at the gate, never dropped, and the gate's alarm
/// admits them when the rate allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Throttle {
    pub limit: u32,
    pub period_ms: u64,
    pub burst: u32,
}

impl Throttle {
    /// The time between two starts at the steady rate.
    pub fn interval(&self) -> Millis {
        let interval = self.period_ms.div_ceil(u64::from(self.limit.max(1))).max(1);
        interval.min(i64::MAX as u64) as Millis
    }

    /// How far before its `tat` a key may start a run.
    fn tolerance(&self) -> Millis {
        self.interval().saturating_mul(i64::from(self.burst))
    }

    /// When a key whose theoretical arrival time is `tat` may start its next run.
    fn allowed_at(&self, tat: Millis) -> Millis {
        tat.saturating_sub(self.tolerance())
    }
}

impl Controls {
    /// The total cap in force.
    pub fn total(&self) -> Option<u32> {
        self.total_override.or(self.total_limit)
    }
}

/// A change an operator asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Control {
    Pause,
    Resume,
    /// Overrides the limit per key, the total cap, or both (`None`: leaves it as it is).
    Override {
        limit: Option<u32>,
        total: Option<u32>,
    },
    /// Drops both overrides: the declared and trigger-set limits apply again.
    Reset,
    /// Reads the gate and changes nothing.
    Look,
}

/// One key's line: the window in memory, and what waits in storage beyond it.
#[derive(Debug, Default, Clone)]
struct Line {
    /// The window: waiting runs ordered by (queued_at, seq, run id).
    window: BTreeSet<(Millis, u64, String)>,
    /// Every waiting run of the key up to this place is in the window; `None`: every
    /// waiting run of the key is.
    horizon: Option<Place>,
    /// How many waiting runs of the key are stored beyond the horizon.
    beyond: u64,
}

/// The place just before `place` in line.
fn before((queued_at, seq): Place) -> Place {
    match seq.checked_sub(1) {
        Some(seq) => (queued_at, seq),
        None => (queued_at.saturating_sub(1), u64::MAX),
    }
}

impl Line {
    /// Whether a new run queued at `queued_at` belongs in the window: a run whose
    /// `queued_at` is the horizon's may be a stored run offered again (its `seq` is not
    /// known from its ticket), so only an earlier one surely does.
    fn takes(&self, queued_at: Millis) -> bool {
        self.horizon.is_none_or(|(h, _)| queued_at < h)
    }

    fn is_empty(&self) -> bool {
        self.window.is_empty() && self.beyond == 0
    }
}

#[derive(Debug, Default, Clone)]
pub struct GateState {
    limit: Option<u32>,
    limit_set_at: Millis,
    lines: HashMap<String, Line>,
    /// The runs of every window, by run id.
    waiting: HashMap<String, Waiting>,
    running: HashMap<String, Lease>,
    running_per_key: HashMap<String, u32>,
    next_seq: u64,
    next_token: u64,
    controls: Controls,
    /// The key admitted last under a total cap: the next turn starts after it.
    last_turn: Option<String>,
    /// Each throttled key's theoretical arrival time ([`Throttle`]); a key whose time has
    /// passed is dropped (it may start `burst + 1` runs, as one never seen).
    arrivals: HashMap<String, Millis>,
}

impl GateState {
    /// Rebuilds a gate from its stored state: the limit, how many runs wait per key (read
    /// from storage when they are needed), the leases, and the highest `seq` stored.
    pub fn restore(
        limit: Option<u32>,
        limit_set_at: Millis,
        waiting_per_key: Vec<(String, u64)>,
        max_seq: Option<u64>,
        running: Vec<Lease>,
        controls: Controls,
        arrivals: HashMap<String, Millis>,
    ) -> GateState {
        let mut state = GateState {
            limit,
            limit_set_at,
            controls,
            arrivals,
            next_seq: max_seq.map_or(0, |s| s + 1),
            ..GateState::default()
        };
        for (key, count) in waiting_per_key.into_iter().filter(|(_, n)| *n > 0) {
            let line = Line {
                window: BTreeSet::new(),
                horizon: Some((Millis::MIN, 0)),
                beyond: count,
            };
            state.lines.insert(key, line);
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

    /// The limit per key in force: the override's, else the declared or trigger-set one.
    pub fn effective_limit(&self) -> Option<u32> {
        self.controls.override_limit.or(self.limit)
    }

    pub fn controls(&self) -> &Controls {
        &self.controls
    }

    /// Runs holding a lease, of every key.
    pub fn running_total(&self) -> u32 {
        self.running.len() as u32
    }

    pub fn running_count(&self, key: &str) -> u32 {
        self.running_per_key.get(key).copied().unwrap_or(0)
    }

    /// Runs waiting, in memory and in storage.
    pub fn waiting_count(&self) -> u64 {
        self.waiting.len() as u64 + self.lines.values().map(|l| l.beyond).sum::<u64>()
    }

    /// Waiting runs held in memory.
    pub fn in_memory(&self) -> usize {
        self.waiting.len()
    }

    pub fn lease(&self, run_id: &str) -> Option<&Lease> {
        self.running.get(run_id)
    }

    /// Adds runs (a run already waiting is ignored: deliveries repeat), applies a newer
    /// limit, and admits what fits.
    pub fn offer(
        &mut self,
        tickets: Vec<Ticket>,
        limit: Option<LimitUpdate>,
        now: Millis,
        stored: &mut impl StoredWaiting,
    ) -> Changes {
        let mut changes = Changes::default();
        self.offer_into(&mut changes, tickets, limit, stored);
        self.admit(now, None, &mut changes, stored);
        changes.settle()
    }

    /// Sets the total cap and the throttle the queue declares (the configuration's, sent
    /// with each offer).
    pub fn declare(&mut self, total: Option<u32>, throttle: Option<Throttle>) -> Changes {
        let mut changes = Changes::default();
        if self.controls.total_limit != total || self.controls.throttle != throttle {
            self.controls.total_limit = total;
            self.controls.throttle = throttle;
            changes.controls_changed = true;
        }
        changes
    }

    /// The keys' theoretical arrival times, as stored.
    pub fn arrivals(&self) -> &HashMap<String, Millis> {
        &self.arrivals
    }

    /// The alarm's step: forgets waiting runs past their TTL and admits what the throttle
    /// now allows.
    pub fn wake(&mut self, now: Millis, stored: &mut impl StoredWaiting) -> Changes {
        let mut changes = self.drop_expired_waiting(now);
        let mut admitted = Changes::default();
        self.admit(now, None, &mut admitted, stored);
        changes.merge(admitted.settle());
        changes
    }

    /// Applies an operator's change, then admits what now fits (a resume or a raised
    /// limit starts waiting runs at once).
    pub fn control(
        &mut self,
        control: Control,
        now: Millis,
        stored: &mut impl StoredWaiting,
    ) -> Changes {
        let mut changes = Changes::default();
        let before = self.controls.clone();
        let c = &mut self.controls;
        match control {
            Control::Pause => c.paused = true,
            Control::Resume => c.paused = false,
            Control::Override { limit, total } => {
                if limit.is_some() {
                    c.override_limit = limit;
                    c.overridden_at = Some(now);
                }
                if total.is_some() {
                    c.total_override = total;
                }
            }
            Control::Reset => {
                c.override_limit = None;
                c.overridden_at = None;
                c.total_override = None;
            }
            Control::Look => {}
        }
        changes.controls_changed = self.controls != before;
        self.admit(now, None, &mut changes, stored);
        changes.settle()
    }

    fn offer_into(
        &mut self,
        changes: &mut Changes,
        tickets: Vec<Ticket>,
        limit: Option<LimitUpdate>,
        stored: &mut impl StoredWaiting,
    ) {
        // The stored runs of each place in line looked at by this offer.
        let mut places: HashMap<(String, Millis), HashSet<String>> = HashMap::new();
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
            if self.waiting.contains_key(&ticket.run_id) || changes.added.contains(&ticket.run_id) {
                continue;
            }
            let waiting = Waiting {
                ticket,
                seq: self.next_seq,
            };
            let line = self
                .lines
                .entry(waiting.ticket.concurrency_key.clone())
                .or_default();
            if line.takes(waiting.ticket.queued_at) {
                // Within the horizon every waiting run is in memory: this one is new.
                self.next_seq += 1;
                changes.add_waiting(waiting.clone());
                self.insert_waiting(waiting);
            } else if !places
                .entry((
                    waiting.ticket.concurrency_key.clone(),
                    waiting.ticket.queued_at,
                ))
                .or_insert_with_key(|(key, at)| stored.runs_at(key, *at).into_iter().collect())
                .contains(&waiting.ticket.run_id)
            {
                self.next_seq += 1;
                line.beyond += 1;
                changes.add_waiting(waiting);
            }
        }
    }

    /// Ends the lease of `run_id` if `token` is its current one (any token when `None`),
    /// and admits what now fits.
    pub fn release(
        &mut self,
        run_id: &str,
        token: Option<u64>,
        now: Millis,
        stored: &mut impl StoredWaiting,
    ) -> Changes {
        let current = self.running.get(run_id).map(|l| l.token);
        let ended: Vec<_> = token
            .or(current)
            .map(|t| (run_id.to_owned(), t))
            .into_iter()
            .collect();
        self.release_all(&ended, now, stored)
    }

    /// Ends every lease of `ended` (run id, token) that is still current, then admits what
    /// now fits: one step for all the attempts an executor reports at once. The runs
    /// admitted get tokens of the executor whose first lease ended (a lease's executor is
    /// its token modulo the pool's size, `executor_name`), so that they go to it in one or
    /// two hands and each executor keeps its share of the slots, rather than a run to each
    /// executor of the pool.
    pub fn release_all(
        &mut self,
        ended: &[(String, u64)],
        now: Millis,
        stored: &mut impl StoredWaiting,
    ) -> Changes {
        let mut changes = Changes::default();
        let mut first_ended = None;
        for (run_id, token) in ended {
            if self.running.get(run_id).is_some_and(|l| l.token == *token) {
                self.remove_running(run_id);
                changes.running_removed.push(run_id.clone());
                first_ended.get_or_insert(*token);
            }
        }
        let to = first_ended.map(|token| token % pool_size(self.effective_limit()));
        self.admit(now, to, &mut changes, stored);
        changes.settle()
    }

    /// The next lease's token: the next one, or for a run admitted `to` an executor (its
    /// index in the pool), the next one that falls to it.
    fn take_token(&mut self, to: Option<u64>) -> u64 {
        let mut token = self.next_token;
        if let Some(executor) = to {
            let pool = pool_size(self.effective_limit());
            token += (executor + pool - token % pool) % pool;
        }
        self.next_token = token + 1;
        token
    }

    /// Takes a run out of the gate, waiting (in memory or in storage) or running (a
    /// cancelled run).
    pub fn remove(
        &mut self,
        run_id: &str,
        now: Millis,
        stored: &mut impl StoredWaiting,
    ) -> Changes {
        let mut changes = Changes::default();
        if let Some(w) = self.remove_waiting(run_id) {
            changes.remove_waiting(w);
        } else if let Some(w) = stored.find(run_id) {
            if let Some(line) = self.lines.get_mut(&w.ticket.concurrency_key) {
                line.beyond = line.beyond.saturating_sub(1);
            }
            changes.remove_waiting(w);
        }
        if self.running.contains_key(run_id) {
            self.remove_running(run_id);
            changes.running_removed.push(run_id.to_owned());
        }
        self.admit(now, None, &mut changes, stored);
        changes.settle()
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

    /// Waiting runs in memory whose TTL has passed (the store expires them; the gate
    /// forgets them). Those in storage are dropped when they are read.
    pub fn drop_expired_waiting(&mut self, now: Millis) -> Changes {
        let mut changes = Changes::default();
        let expired: Vec<String> = self
            .waiting
            .values()
            .filter(|w| w.ticket.expires_at.is_some_and(|at| at <= now))
            .map(|w| w.ticket.run_id.clone())
            .collect();
        for run_id in expired {
            if let Some(w) = self.remove_waiting(&run_id) {
                changes.remove_waiting(w);
            }
        }
        changes.settle()
    }

    /// When the gate next needs to wake after `now`: the earliest lease deadline or TTL
    /// in memory, or when a key with waiting runs that its throttle holds may start one.
    pub fn next_wake(&self, now: Millis) -> Option<Millis> {
        let leases = self.running.values().map(|l| l.lease_until);
        let ttls = self.waiting.values().filter_map(|w| w.ticket.expires_at);
        let throttled = self.controls.throttle.iter().flat_map(|throttle| {
            self.lines
                .keys()
                .filter_map(|key| self.arrivals.get(key))
                .map(|tat| throttle.allowed_at(*tat))
                .filter(move |at| *at > now)
        });
        leases.chain(ttls).chain(throttled).min()
    }

    fn insert_waiting(&mut self, w: Waiting) {
        self.lines
            .entry(w.ticket.concurrency_key.clone())
            .or_default()
            .window
            .insert((w.ticket.queued_at, w.seq, w.ticket.run_id.clone()));
        self.waiting.insert(w.ticket.run_id.clone(), w);
    }

    /// Takes a run out of its key's window.
    fn remove_waiting(&mut self, run_id: &str) -> Option<Waiting> {
        let w = self.waiting.remove(run_id)?;
        let key = &w.ticket.concurrency_key;
        if let Some(line) = self.lines.get_mut(key) {
            line.window
                .remove(&(w.ticket.queued_at, w.seq, w.ticket.run_id.clone()));
            if line.is_empty() {
                self.lines.remove(key);
            }
        }
        Some(w)
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

    /// Reads the next page of a key's line beyond its window into the window: the stored
    /// rows, and the rows this operation added there (`changes`, written only when it
    /// ends). `false`: nothing more waits.
    fn read_page(&mut self, key: &str, changes: &Changes, stored: &mut impl StoredWaiting) -> bool {
        let Some(line) = self.lines.get_mut(key) else {
            return false;
        };
        let (Some(after), true) = (line.horizon, line.beyond > 0) else {
            return false;
        };
        let mut page = stored.page(key, after, PAGE);
        let unwritten = changes.waiting_added.iter().filter(|w| {
            w.ticket.concurrency_key == key
                && w.place() > after
                && changes.added.contains(&w.ticket.run_id)
                && !self.waiting.contains_key(&w.ticket.run_id)
        });
        page.extend(unwritten.cloned());
        page.sort_by_key(Waiting::place);
        page.truncate(PAGE);
        let last = page.last().map(Waiting::place);
        line.beyond = line.beyond.saturating_sub(page.len() as u64);
        line.horizon = match last {
            Some(last) if line.beyond > 0 => Some(last),
            _ => {
                line.beyond = 0; // an empty page: nothing is left, whatever was counted
                None
            }
        };
        for w in page {
            // A page read after an offer of the same operation holds that run already.
            if !self.waiting.contains_key(&w.ticket.run_id) {
                self.next_seq = self.next_seq.max(w.seq + 1);
                self.insert_waiting(w);
            }
        }
        last.is_some()
    }

    /// Moves waiting runs to running while there is room, oldest first per key: each key
    /// as far as its limit allows, or under a total cap, the keys in turn, one admission
    /// each, until the cap is reached. A paused gate admits nothing. Then brings the
    /// windows back within [`WINDOW`]. The runs admitted go `to` that executor of the
    /// pool when given (a release's), and in turn otherwise.
    fn admit(
        &mut self,
        now: Millis,
        to: Option<u64>,
        changes: &mut Changes,
        stored: &mut impl StoredWaiting,
    ) {
        if !self.controls.paused {
            match self.controls.total() {
                None => {
                    let keys: Vec<String> = self.lines.keys().cloned().collect();
                    for key in keys {
                        while self.admit_one(&key, now, to, changes, stored) {}
                    }
                }
                Some(total) => self.admit_in_turns(total, now, to, changes, stored),
            }
        }
        self.shrink();
    }

    /// Round robin under a total cap: the keys with waiting runs in name order, starting
    /// after the key admitted last, one admission per key per turn.
    fn admit_in_turns(
        &mut self,
        total: u32,
        now: Millis,
        to: Option<u64>,
        changes: &mut Changes,
        stored: &mut impl StoredWaiting,
    ) {
        loop {
            let mut keys: Vec<String> = self.lines.keys().cloned().collect();
            keys.sort_unstable();
            let first = match &self.last_turn {
                Some(last) => keys.partition_point(|k| k <= last),
                None => 0,
            };
            keys.rotate_left(first);
            let mut admitted_any = false;
            for key in keys {
                if self.running_total() >= total {
                    return;
                }
                if self.admit_one(&key, now, to, changes, stored) {
                    self.last_turn = Some(key);
                    admitted_any = true;
                }
            }
            if !admitted_any {
                return;
            }
        }
    }

    /// Admits the oldest waiting run of `key` if the key has room, with a token of executor
    /// `to` if given ([`GateState::take_token`]). `false`: it has no room or nothing waits
    /// (runs past their TTL are dropped on the way).
    fn admit_one(
        &mut self,
        key: &str,
        now: Millis,
        to: Option<u64>,
        changes: &mut Changes,
        stored: &mut impl StoredWaiting,
    ) -> bool {
        loop {
            let room = match self.effective_limit() {
                None => true,
                Some(limit) => self.running_count(key) < limit,
            };
            if !room || !self.throttle_allows(key, now) {
                return false;
            }
            // The oldest waiting run of the key that does not hold a lease already.
            let next = self.lines.get(key).and_then(|line| {
                line.window
                    .iter()
                    .find(|(_, _, run)| !self.running.contains_key(run))
                    .map(|(_, _, run)| run.clone())
            });
            let Some(run_id) = next else {
                if self.read_page(key, changes, stored) {
                    continue;
                }
                return false;
            };
            let waiting = self
                .remove_waiting(&run_id)
                .expect("windows hold waiting runs");
            changes.remove_waiting(waiting.clone());
            if waiting.ticket.expires_at.is_some_and(|at| at <= now) {
                continue; // past its TTL: the store expires it, it never starts
            }
            let lease = Lease {
                lease_until: now
                    .saturating_add(waiting.ticket.lease_ms.min(i64::MAX as u64) as i64),
                ticket: waiting.ticket,
                token: self.take_token(to),
            };
            *self.running_per_key.entry(key.to_owned()).or_default() += 1;
            self.running.insert(run_id, lease.clone());
            changes.admitted.push(lease);
            if let Some(throttle) = self.controls.throttle {
                let tat = self.arrivals.get(key).copied().unwrap_or(now).max(now);
                self.arrivals
                    .insert(key.to_owned(), tat.saturating_add(throttle.interval()));
                changes.throttle_changed = true;
            }
            return true;
        }
    }

    /// Whether `key`'s throttle (if the queue has one) lets it start a run at `now`.
    /// Arrival times already past are forgotten on the way.
    fn throttle_allows(&mut self, key: &str, now: Millis) -> bool {
        let Some(throttle) = self.controls.throttle else {
            return true;
        };
        match self.arrivals.get(key) {
            None => true,
            Some(tat) if *tat <= now => {
                self.arrivals.remove(key);
                true
            }
            Some(tat) => throttle.allowed_at(*tat) <= now,
        }
    }

    /// Leaves in memory at most [`WINDOW`] waiting runs: the newest of the longest window
    /// go back to being stored only, and its horizon moves back before them. Every run of
    /// a window is stored already (its row is written with the operation that added it).
    fn shrink(&mut self) {
        while self.waiting.len() > WINDOW {
            let excess = self.waiting.len() - WINDOW;
            let Some(line) = self.lines.values_mut().max_by_key(|l| l.window.len()) else {
                return;
            };
            let evicted: Vec<(Millis, u64, String)> =
                line.window.iter().rev().take(excess).cloned().collect();
            let Some((at, seq, _)) = evicted.last() else {
                return; // every window is empty: nothing is in memory
            };
            line.horizon = Some(before((*at, *seq)));
            line.beyond += evicted.len() as u64;
            for place in &evicted {
                line.window.remove(place);
                self.waiting.remove(&place.2);
            }
        }
    }
}

/// A lease of `run_id` with `token`, for other modules' tests.
#[cfg(test)]
pub fn test_lease(run_id: &str, token: u64) -> Lease {
    Lease {
        ticket: Ticket {
            run_id: run_id.into(),
            store: "dev:abc".into(),
            concurrency_key: String::new(),
            queued_at: 0,
            expires_at: None,
            lease_ms: 1000,
        },
        lease_until: 1000,
        token,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// The `waiting` table, as the gate object keeps it: every operation's changes are
    /// written to it, and the gate reads it through `StoredWaiting`.
    #[derive(Default)]
    struct Table {
        rows: BTreeMap<(String, Millis, u64), Waiting>,
        reads: usize,
    }

    impl StoredWaiting for Table {
        fn runs_at(&mut self, key: &str, queued_at: Millis) -> Vec<String> {
            self.reads += 1;
            self.rows
                .values()
                .filter(|w| w.ticket.concurrency_key == key && w.ticket.queued_at == queued_at)
                .map(|w| w.ticket.run_id.clone())
                .collect()
        }
        fn page(&mut self, key: &str, after: Place, count: usize) -> Vec<Waiting> {
            self.reads += 1;
            let from = (key.to_owned(), after.0, after.1);
            let page: Vec<Waiting> = self
                .rows
                .range(from..)
                .filter(|((k, at, seq), _)| k == key && (*at, *seq) > after)
                .take(count)
                .map(|(_, w)| w.clone())
                .collect();
            page
        }
        fn find(&mut self, run_id: &str) -> Option<Waiting> {
            self.reads += 1;
            self.rows
                .values()
                .find(|w| w.ticket.run_id == run_id)
                .cloned()
        }
    }

    /// A gate and its table, each operation written through.
    #[derive(Default)]
    struct Gate {
        state: GateState,
        table: Table,
    }

    impl Gate {
        fn write(&mut self, changes: Changes) -> Changes {
            for w in &changes.waiting_removed {
                let row = (w.ticket.concurrency_key.clone(), w.ticket.queued_at, w.seq);
                assert!(
                    self.table.rows.remove(&row).is_some(),
                    "removed a stored row"
                );
            }
            for w in &changes.waiting_added {
                let row = (w.ticket.concurrency_key.clone(), w.ticket.queued_at, w.seq);
                assert!(
                    self.table.rows.insert(row, w.clone()).is_none(),
                    "a new row"
                );
            }
            assert!(self.state.in_memory() <= WINDOW, "memory holds a window");
            assert_eq!(
                self.state.waiting_count(),
                self.table.rows.len() as u64,
                "every waiting run is counted once"
            );
            changes
        }
        fn offer(&mut self, t: Vec<Ticket>, l: Option<LimitUpdate>, now: Millis) -> Changes {
            let changes = self.state.offer(t, l, now, &mut self.table);
            self.write(changes)
        }
        fn release(&mut self, run: &str, token: Option<u64>, now: Millis) -> Changes {
            let changes = self.state.release(run, token, now, &mut self.table);
            self.write(changes)
        }
        fn release_all(&mut self, ended: &[(String, u64)], now: Millis) -> Changes {
            let changes = self.state.release_all(ended, now, &mut self.table);
            self.write(changes)
        }
        fn remove(&mut self, run: &str, now: Millis) -> Changes {
            let changes = self.state.remove(run, now, &mut self.table);
            self.write(changes)
        }
        fn drop_expired_waiting(&mut self, now: Millis) -> Changes {
            let changes = self.state.drop_expired_waiting(now);
            self.write(changes)
        }
        fn control(&mut self, control: Control, now: Millis) -> Changes {
            let changes = self.state.control(control, now, &mut self.table);
            self.write(changes)
        }
        /// Ends every lease, as executors reporting would: the runs admitted next.
        fn release_every(&mut self, now: Millis) -> Vec<String> {
            let running: Vec<(String, u64)> = self
                .state
                .running
                .values()
                .map(|l| (l.ticket.run_id.clone(), l.token))
                .collect();
            let changes = self.release_all(&running, now);
            changes
                .admitted
                .iter()
                .map(|l| l.ticket.run_id.clone())
                .collect()
        }
    }

    impl std::ops::Deref for Gate {
        type Target = GateState;
        fn deref(&self) -> &GateState {
            &self.state
        }
    }

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

    fn runs(waiting: &[Waiting]) -> Vec<&str> {
        waiting.iter().map(|w| w.ticket.run_id.as_str()).collect()
    }

    #[test]
    fn admits_up_to_the_limit_and_parks_the_rest() {
        let mut gate = Gate::default();
        let tickets = (0..5).map(|i| ticket(&format!("r{i}"), "", i)).collect();
        let changes = gate.offer(tickets, limit(3), 100);
        assert_eq!(ids(&changes.admitted), ["r0", "r1", "r2"]);
        // Net rows: the three admitted at once never waited.
        assert_eq!(runs(&changes.waiting_added), ["r3", "r4"]);
        assert_eq!(gate.running_count(""), 3);
        assert_eq!(gate.waiting_count(), 2);
        assert!(changes.admitted.iter().all(|l| l.lease_until == 1100));
    }

    #[test]
    fn releasing_several_leases_at_once_admits_as_many_and_ignores_stale_tokens() {
        let mut gate = Gate::default();
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
    fn runs_admitted_by_a_release_go_to_the_executor_that_released() {
        use crate::domain::scheduling::pool::{hands, pool_size};
        let mut gate = Gate::default();
        // A limit of 18: a pool of 3 executors, six slots each.
        let pool = pool_size(Some(18));
        let first = gate.offer(tickets("r", "", 40, 0), limit(18), 100);
        let tokens: Vec<u64> = first.admitted.iter().map(|l| l.token).collect();
        assert_eq!(
            tokens,
            (0..18).collect::<Vec<_>>(),
            "an offer spreads its runs"
        );
        // Executor 1 reports four attempts: four runs come in, all for it, in one hand.
        let ended: Vec<(String, u64)> = first
            .admitted
            .iter()
            .filter(|l| l.token % pool == 1)
            .take(4)
            .map(|l| (l.ticket.run_id.clone(), l.token))
            .collect();
        let changes = gate.release_all(&ended, 200);
        assert_eq!(changes.admitted.len(), 4);
        let new: Vec<u64> = changes.admitted.iter().map(|l| l.token).collect();
        assert!(new.iter().all(|t| t % pool == 1), "{new:?}");
        assert!(
            new.windows(2).all(|w| w[0] < w[1]) && new[0] >= 18,
            "{new:?}"
        );
        assert_eq!(hands("g", changes.admitted, pool).len(), 1);
        // Tokens stay unique: the next release, of executor 0, continues after them.
        let ended = [(ids(&first.admitted)[0].to_owned(), 0)];
        let next = gate.release_all(&ended, 300);
        assert_eq!(next.admitted.len(), 1);
        assert!(next.admitted[0].token > new[3] && next.admitted[0].token % pool == 0);
        // A lease ended alone (a cancel, an expiry) frees its executor's slot the same way.
        let running = gate.lease(ids(&first.admitted)[5]).unwrap().token;
        let after = gate.release(ids(&first.admitted)[5], Some(running), 400);
        assert_eq!(after.admitted.len(), 1);
        let token = after.admitted[0].token;
        assert!(token > next.admitted[0].token && token % pool == running % pool);
    }

    #[test]
    fn release_hands_the_slot_to_the_oldest_waiting_run() {
        let mut gate = Gate::default();
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
        let mut gate = Gate::default();
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
        let mut gate = Gate::default();
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
        let mut gate = Gate::default();
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
        let mut gate = Gate::default();
        let changes = gate.offer(
            (0..50).map(|i| ticket(&format!("r{i}"), "", i)).collect(),
            None,
            0,
        );
        assert_eq!(changes.admitted.len(), 50);
    }

    #[test]
    fn duplicate_offers_of_a_waiting_run_are_ignored() {
        let mut gate = Gate::default();
        gate.offer(vec![ticket("r1", "", 0), ticket("r2", "", 1)], limit(1), 0);
        let again = gate.offer(vec![ticket("r2", "", 1), ticket("r2", "", 1)], None, 1);
        assert!(again.waiting_added.is_empty() && again.admitted.is_empty());
        assert_eq!((gate.running_count(""), gate.waiting_count()), (1, 1));
    }

    #[test]
    fn leases_expire_and_a_stale_release_does_not_free_a_new_lease() {
        let mut gate = Gate::default();
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
        let mut gate = Gate::default();
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
        assert_eq!(runs(&waiting_removed.waiting_removed), ["r2"]);
        assert!(waiting_removed.admitted.is_empty());
        let running_removed = gate.remove("r1", 2);
        assert_eq!(running_removed.running_removed, ["r1"]);
        assert_eq!(ids(&running_removed.admitted), ["r3"]);
    }

    #[test]
    fn runs_past_their_ttl_never_get_a_slot() {
        let mut gate = Gate::default();
        let mut late = ticket("late", "", 0);
        late.expires_at = Some(50);
        gate.offer(
            vec![ticket("first", "", 0), late, ticket("next", "", 1)],
            limit(1),
            10,
        );
        assert_eq!(gate.next_wake(0), Some(50));
        let changes = gate.release("first", None, 60);
        assert_eq!(ids(&changes.admitted), ["next"]);
        assert!(runs(&changes.waiting_removed).contains(&"late"));
        let mut other = Gate::default();
        let mut parked = ticket("parked", "", 0);
        parked.expires_at = Some(50);
        other.offer(vec![parked], limit(0), 10);
        assert_eq!(other.drop_expired_waiting(49).waiting_removed.len(), 0);
        assert_eq!(
            runs(&other.drop_expired_waiting(50).waiting_removed),
            ["parked"]
        );
        assert_eq!(other.next_wake(0), None);
    }

    /// A gate as `QueueGate::load` rebuilds it from `gate`'s table and leases.
    fn restored(gate: Gate) -> Gate {
        let mut per_key: BTreeMap<String, u64> = BTreeMap::new();
        for (key, _, _) in gate.table.rows.keys() {
            *per_key.entry(key.clone()).or_default() += 1;
        }
        let max_seq = gate.table.rows.keys().map(|(_, _, seq)| *seq).max();
        let running = gate.state.running.values().cloned().collect();
        let state = GateState::restore(
            gate.limit(),
            gate.limit_set_at(),
            per_key.into_iter().collect(),
            max_seq,
            running,
            gate.controls().clone(),
            gate.arrivals().clone(),
        );
        Gate {
            state,
            table: gate.table,
        }
    }

    #[test]
    fn restore_rebuilds_the_same_gate() {
        let mut gate = Gate::default();
        gate.offer(
            (0..4).map(|i| ticket(&format!("r{i}"), "", i)).collect(),
            limit(2),
            0,
        );
        let mut restored = restored(gate);
        assert_eq!(restored.running_count(""), 2);
        assert_eq!(restored.waiting_count(), 2);
        assert_eq!(restored.in_memory(), 0, "waiting runs are read when needed");
        assert_eq!(ids(&restored.release("r0", None, 1).admitted), ["r2"]);
        let fresh = restored.offer(vec![ticket("r9", "", 9)], None, 2);
        assert!(fresh.admitted.is_empty());
        assert!(
            fresh.waiting_added[0].seq >= 4,
            "sequence numbers continue after a restore"
        );
        // Offered again after the restore: still one run.
        let again = restored.offer(vec![ticket("r3", "", 3)], None, 3);
        assert!(again.waiting_added.is_empty());
        assert_eq!(restored.waiting_count(), 2);
    }

    /// Admits runs one slot at a time until none waits: the order they got their slots.
    fn drain(gate: &mut Gate, now: Millis) -> Vec<String> {
        let mut order = Vec::new();
        loop {
            let running: Vec<(String, u64)> = gate
                .state
                .running
                .values()
                .map(|l| (l.ticket.run_id.clone(), l.token))
                .collect();
            if running.is_empty() {
                return order;
            }
            let changes = gate.release_all(&running, now);
            order.extend(changes.admitted.iter().map(|l| l.ticket.run_id.clone()));
        }
    }

    #[test]
    fn a_backlog_larger_than_the_window_waits_in_storage_and_keeps_its_order() {
        let mut gate = Gate::default();
        // 3,000 runs of key "a" in three batches (one queued_at each), held by limit 0.
        for batch in 0..3 {
            let tickets = (0..1000)
                .map(|i| ticket(&format!("a{:04}", batch * 1000 + i), "a", 100 + batch))
                .collect();
            gate.offer(tickets, limit(0), 1);
        }
        assert_eq!(gate.waiting_count(), 3000);
        assert!(gate.in_memory() <= WINDOW);
        // A redelivery of runs beyond the window is recognised in storage, with one read
        // per place in line however many of its runs come again.
        let reads = gate.table.reads;
        let redelivered = (2000..3000).map(|i| ticket(&format!("a{i:04}"), "a", 102));
        let again = gate.offer(redelivered.collect(), None, 2);
        assert!(again.waiting_added.is_empty());
        assert_eq!(gate.table.reads - reads, 1);
        assert_eq!(gate.waiting_count(), 3000);
        // Raised to 7: every run is admitted once, in the order it was offered.
        let raised = LimitUpdate {
            limit: 7,
            set_at: 5,
        };
        let first = gate.offer(vec![], Some(raised), 3);
        let mut order: Vec<String> = ids(&first.admitted).iter().map(|s| s.to_string()).collect();
        order.extend(drain(&mut gate, 4));
        let expected: Vec<String> = (0..3000).map(|i| format!("a{i:04}")).collect();
        assert_eq!(order, expected);
        assert_eq!(gate.waiting_count(), 0);
        assert!(gate.table.rows.is_empty());
    }

    #[test]
    fn a_key_with_one_run_is_admitted_while_another_key_has_a_stored_backlog() {
        let mut gate = Gate::default();
        let backlog = (0..2500)
            .map(|i| ticket(&format!("a{i}"), "a", i))
            .collect();
        let first = gate.offer(backlog, limit(2), 1);
        assert_eq!(ids(&first.admitted), ["a0", "a1"]);
        let late = gate.offer(vec![ticket("b0", "b", 5000)], None, 2);
        assert_eq!(ids(&late.admitted), ["b0"]);
        // After a restart too: both keys read their lines from storage.
        let mut gate = restored(gate);
        gate.offer(vec![ticket("c0", "c", 6000)], None, 3);
        let ended: Vec<(String, u64)> = ["a0", "a1"]
            .iter()
            .map(|r| (r.to_string(), gate.lease(r).unwrap().token))
            .collect();
        assert_eq!(ids(&gate.release_all(&ended, 4).admitted), ["a2", "a3"]);
        assert_eq!(gate.running_count("c"), 1);
    }

    #[test]
    fn a_run_offered_beyond_the_window_is_admitted_in_the_same_operation_once_its_turn_comes() {
        let mut gate = Gate::default();
        let backlog = (0..1100).map(|i| ticket(&format!("r{i}"), "", i)).collect();
        gate.offer(backlog, limit(0), 1);
        // A restart: the window is empty, every run is read from storage.
        let mut gate = restored(gate);
        // One offer both adds a run beyond the window and raises the limit past the backlog:
        // the pages read in this operation must include the run not yet written.
        let raised = LimitUpdate {
            limit: 5000,
            set_at: 5,
        };
        let changes = gate.offer(vec![ticket("late", "", 5000)], Some(raised), 2);
        assert_eq!(changes.admitted.len(), 1101);
        assert_eq!(changes.admitted.last().unwrap().ticket.run_id, "late");
        assert_eq!(gate.waiting_count(), 0);
        assert!(gate.table.rows.is_empty());
    }

    #[test]
    fn a_cancelled_run_beyond_the_window_leaves_storage_and_the_count() {
        let mut gate = Gate::default();
        let backlog = (0..1500).map(|i| ticket(&format!("r{i}"), "", i)).collect();
        gate.offer(backlog, limit(0), 1);
        assert!(
            !gate.state.waiting.contains_key("r1400"),
            "beyond the window"
        );
        let removed = gate.remove("r1400", 2);
        assert_eq!(runs(&removed.waiting_removed), ["r1400"]);
        assert_eq!(gate.waiting_count(), 1499);
        let raised = LimitUpdate {
            limit: 1000,
            set_at: 5,
        };
        let mut order = ids(&gate.offer(vec![], Some(raised), 3).admitted)
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>();
        order.extend(drain(&mut gate, 4));
        assert_eq!(order.len(), 1499);
        assert!(!order.contains(&"r1400".to_owned()));
    }

    #[test]
    fn stored_runs_past_their_ttl_are_dropped_when_read() {
        let mut gate = Gate::default();
        let backlog = (0..1200)
            .map(|i| {
                let mut t = ticket(&format!("r{i}"), "", i);
                t.expires_at = (i >= 1100).then_some(50);
                t
            })
            .collect();
        gate.offer(backlog, limit(0), 1);
        let raised = LimitUpdate {
            limit: 2000,
            set_at: 5,
        };
        let admitted = gate.offer(vec![], Some(raised), 60).admitted;
        assert_eq!(admitted.len(), 1100);
        assert_eq!(gate.waiting_count(), 0);
        assert!(gate.table.rows.is_empty());
    }

    #[test]
    fn a_run_offered_while_it_holds_a_lease_waits_for_that_lease_to_end() {
        let mut gate = Gate::default();
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
        let mut gate = Gate::default();
        gate.offer(vec![ticket("r", "", 1)], limit(1), 100);
        gate.offer(vec![ticket("r", "", 2)], None, 110);
        let removed = gate.remove("r", 120);
        assert_eq!(removed.running_removed, ["r"]);
        assert_eq!(runs(&removed.waiting_removed), ["r"]);
        assert!(removed.admitted.is_empty());
        assert_eq!((gate.running_count(""), gate.waiting_count()), (0, 0));
    }

    fn tickets(prefix: &str, key: &str, count: usize, from: Millis) -> Vec<Ticket> {
        (0..count)
            .map(|i| ticket(&format!("{prefix}{i}"), key, from + i as Millis))
            .collect()
    }

    #[test]
    fn a_paused_gate_admits_nothing_lets_leases_end_and_starts_its_waiting_runs_on_resume() {
        let mut gate = Gate::default();
        gate.offer(tickets("r", "", 2, 0), limit(1), 0);
        let paused = gate.control(Control::Pause, 1);
        assert!(paused.controls_changed && gate.controls().paused);
        // The attempt under way goes on; its end admits nothing while paused.
        let released = gate.release("r0", None, 2);
        assert_eq!(released.running_removed, ["r0"]);
        assert!(released.admitted.is_empty());
        // New runs are still taken in, and wait.
        let offered = gate.offer(vec![ticket("s", "", 3)], None, 3);
        assert!(offered.admitted.is_empty());
        assert_eq!(gate.waiting_count(), 2);
        // Pausing twice changes nothing; the pause outlives a restart.
        assert!(!gate.control(Control::Pause, 4).controls_changed);
        let mut gate = restored(gate);
        assert!(gate.release_every(5).is_empty());
        let resumed = gate.control(Control::Resume, 6);
        assert!(resumed.controls_changed);
        assert_eq!(ids(&resumed.admitted), ["r1"]);
        assert_eq!(gate.release_every(7), ["s"]);
    }

    #[test]
    fn a_paused_gate_still_forgets_runs_past_their_ttl() {
        let mut gate = Gate::default();
        gate.control(Control::Pause, 0);
        let mut late = ticket("late", "", 0);
        late.expires_at = Some(50);
        gate.offer(vec![late], None, 1);
        assert_eq!(gate.next_wake(0), Some(50));
        assert_eq!(
            runs(&gate.drop_expired_waiting(50).waiting_removed),
            ["late"]
        );
    }

    #[test]
    fn an_override_wins_over_declared_and_trigger_set_limits_until_reset() {
        let mut gate = Gate::default();
        gate.offer(tickets("r", "", 10, 0), limit(1), 0);
        assert_eq!(gate.running_count(""), 1);
        let raised = gate.control(
            Control::Override {
                limit: Some(5),
                total: None,
            },
            100,
        );
        assert_eq!(ids(&raised.admitted), ["r1", "r2", "r3", "r4"]);
        assert_eq!(gate.controls().override_limit, Some(5));
        assert_eq!(gate.controls().overridden_at, Some(100));
        assert_eq!((gate.limit(), gate.effective_limit()), (Some(1), Some(5)));
        // A trigger setting another limit moves the base, not the override.
        let newer = LimitUpdate {
            limit: 2,
            set_at: 200,
        };
        let offered = gate.offer(vec![], Some(newer), 200);
        assert!(offered.admitted.is_empty());
        assert_eq!((gate.limit(), gate.effective_limit()), (Some(2), Some(5)));
        // After a restart too.
        let mut gate = restored(gate);
        assert_eq!(gate.release_every(300).len(), 5);
        // Reset: back to the base; leases above it run out, nothing new starts.
        let reset = gate.control(Control::Reset, 400);
        assert!(reset.controls_changed && reset.admitted.is_empty());
        assert_eq!(gate.controls().overridden_at, None);
        assert_eq!(gate.effective_limit(), Some(2));
        let next = gate.release_every(500);
        assert_eq!(
            next.len(),
            0,
            "5 running: ends admit nothing until fewer than 2 run"
        );
        assert_eq!(gate.release_every(600).len(), 0);
    }

    #[test]
    fn an_override_to_zero_holds_every_run() {
        let mut gate = Gate::default();
        gate.control(
            Control::Override {
                limit: Some(0),
                total: None,
            },
            0,
        );
        assert!(gate
            .offer(tickets("r", "k", 3, 0), None, 1)
            .admitted
            .is_empty());
        assert_eq!(
            ids(&gate.control(Control::Reset, 2).admitted),
            ["r0", "r1", "r2"]
        );
    }

    #[test]
    fn under_a_total_cap_keys_take_turns_so_a_late_key_waits_at_most_one_turn() {
        let mut gate = Gate::default();
        gate.state.declare(Some(2), None);
        gate.offer(tickets("a", "a", 1000, 0), limit(10), 1);
        assert_eq!(gate.running_total(), 2);
        // Key b arrives with one run, behind 998 of key a: the next slot is b's.
        gate.offer(vec![ticket("b0", "b", 5000)], None, 2);
        let a_running: Vec<(String, u64)> = ["a0"]
            .iter()
            .map(|r| (r.to_string(), gate.lease(r).unwrap().token))
            .collect();
        let next = gate.release_all(&a_running, 3);
        assert_eq!(ids(&next.admitted), ["b0"]);
        assert_eq!(gate.running_total(), 2, "the cap holds");
    }

    #[test]
    fn under_a_total_cap_every_key_gets_its_turn_and_the_cap_is_never_exceeded() {
        let mut gate = Gate::default();
        gate.state.declare(Some(3), None);
        gate.offer(tickets("a", "a", 200, 0), None, 1);
        gate.offer(tickets("b", "b", 5, 1000), None, 2);
        gate.offer(tickets("c", "c", 2, 2000), None, 3);
        let mut order: Vec<String> = gate.state.running.keys().cloned().collect();
        order.sort();
        loop {
            assert!(gate.running_total() <= 3);
            let next = gate.release_every(4);
            if next.is_empty() {
                break;
            }
            order.extend(next);
        }
        assert_eq!(order.len(), 207);
        let position = |run: &str| order.iter().position(|r| r == run).unwrap();
        // Every run of b and c starts before a's 10th.
        assert!(position("b4") < position("a9"), "{order:?}");
        assert!(position("c1") < position("a9"));
        // Within a key, FIFO.
        assert!((0..199).all(|i| position(&format!("a{i}")) < position(&format!("a{}", i + 1))));
    }

    #[test]
    fn a_total_cap_also_holds_each_key_to_its_limit_and_can_be_overridden() {
        let mut gate = Gate::default();
        gate.state.declare(Some(4), None);
        let mut offered = tickets("a", "a", 10, 0);
        offered.extend(tickets("b", "b", 10, 0));
        gate.offer(offered, limit(1), 1);
        assert_eq!((gate.running_count("a"), gate.running_count("b")), (1, 1));
        let raised = gate.control(
            Control::Override {
                limit: Some(5),
                total: Some(6),
            },
            2,
        );
        assert_eq!(raised.admitted.len(), 4);
        assert_eq!(gate.running_total(), 6);
        assert_eq!(gate.controls().total(), Some(6));
        gate.control(Control::Reset, 3);
        assert_eq!(gate.controls().total(), Some(4));
        assert!(gate.release_every(4).len() <= 2, "back to 1 per key");
    }

    #[test]
    fn priority_is_an_earlier_place_in_line() {
        assert_eq!(priority_ms(None), 0);
        assert_eq!(priority_ms(Some(60.0)), 60_000);
        assert_eq!(priority_ms(Some(0.25)), 250);
        assert_eq!(priority_ms(Some(1e300)), 1e15 as u64);
        // 20 runs queued at t = 100 s..120 s, then one of priority 60 at 130 s: it is next.
        let mut gate = Gate::default();
        gate.offer(
            (0..20)
                .map(|i| ticket(&format!("r{i}"), "", 100_000 + i * 1000))
                .collect(),
            limit(1),
            0,
        );
        let urgent = 130_000 - priority_ms(Some(60.0)) as Millis;
        gate.offer(vec![ticket("urgent", "", urgent)], None, 1);
        assert_eq!(gate.release_every(2), ["urgent"]);
    }

    /// Offers `runs` of `key` at `now`, then admits as the alarm would at each of `times`
    /// (releasing every lease first, so only the throttle holds runs back): when each run
    /// started.
    fn throttled_starts(
        gate: &mut Gate,
        now: Millis,
        times: impl Iterator<Item = Millis>,
    ) -> Vec<Millis> {
        let mut starts: Vec<Millis> = gate.state.running.values().map(|_| now).collect();
        for at in times {
            starts.extend(gate.release_every(at).iter().map(|_| at));
            let changes = gate.state.wake(at, &mut gate.table);
            let changes = gate.write(changes);
            starts.extend(changes.admitted.iter().map(|_| at));
        }
        starts
    }

    #[test]
    fn a_throttle_spreads_a_keys_runs_and_never_starts_more_than_limit_plus_burst_in_a_period() {
        for burst in [0, 2] {
            let throttle = Throttle {
                limit: 5,
                period_ms: 1000,
                burst,
            };
            assert_eq!(throttle.interval(), 200);
            let mut gate = Gate::default();
            gate.state.declare(None, Some(throttle));
            let first = gate.offer(tickets("r", "k", 30, 0), None, 0);
            assert_eq!(
                first.admitted.len(),
                burst as usize + 1,
                "a burst after a quiet spell"
            );
            assert!(first.throttle_changed);
            // The alarm is asked for the next allowed start, never for a time already past.
            assert_eq!(gate.next_wake(0), Some(200));
            // A fake clock ticking every 10 ms for 10 s.
            let starts = throttled_starts(&mut gate, 0, (1..1000).map(|i| i * 10));
            assert_eq!(starts.len(), 30, "every run starts: never dropped");
            for (i, t) in starts.iter().enumerate() {
                let in_period = starts[i..].iter().take_while(|s| **s < t + 1000).count();
                assert!(
                    in_period <= 5 + burst as usize,
                    "{in_period} starts in the period from {t}"
                );
            }
            // 30 runs at 5 per second: the last starts after 5 s (less what the burst saved).
            let last = *starts.last().unwrap();
            assert_eq!(last, (29 - i64::from(burst)) * 200, "burst {burst}");
            assert_eq!(gate.next_wake(last), None, "nothing waits");
        }
    }

    #[test]
    fn a_throttle_is_per_key_and_its_arrival_times_outlive_a_restart() {
        let throttle = Throttle {
            limit: 1,
            period_ms: 1000,
            burst: 0,
        };
        let mut gate = Gate::default();
        gate.state.declare(None, Some(throttle));
        let mut offered = tickets("a", "a", 3, 0);
        offered.extend(tickets("b", "b", 3, 0));
        let first = gate.offer(offered, None, 0);
        assert_eq!(first.admitted.len(), 2, "one of each key");
        gate.release_every(10);
        let mut gate = restored(gate);
        assert!(
            gate.state.wake(999, &mut gate.table).admitted.is_empty(),
            "not yet: a restart keeps the rate"
        );
        let changes = gate.state.wake(1000, &mut gate.table);
        assert_eq!(gate.write(changes).admitted.len(), 2);
        // A key quiet for longer than its interval is forgotten: it starts at once.
        gate.release_every(5000);
        assert_eq!(
            gate.offer(vec![ticket("c0", "c", 5000)], None, 5000)
                .admitted
                .len(),
            1
        );
    }

    /// What a property test does to a gate.
    #[derive(Debug, Clone)]
    enum Op {
        Offer {
            key: u8,
            count: u8,
        },
        ReleaseOldest,
        ReleaseAll,
        Cancel(u8),
        Pause,
        Resume,
        Override {
            limit: Option<u32>,
            total: Option<u32>,
        },
        Reset,
        Restart,
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            4 => (0..3u8, 1..6u8).prop_map(|(key, count)| Op::Offer { key, count }),
            3 => Just(Op::ReleaseOldest),
            1 => Just(Op::ReleaseAll),
            1 => (0..60u8).prop_map(Op::Cancel),
            1 => Just(Op::Pause),
            1 => Just(Op::Resume),
            2 => (proptest::option::of(0..4u32), proptest::option::of(0..5u32))
                .prop_map(|(limit, total)| Op::Override { limit, total }),
            1 => Just(Op::Reset),
            1 => Just(Op::Restart),
        ]
    }

    /// Whatever operators do mid-flight (pauses, overrides up and down, resets, cancels,
    /// restarts), a gate admits no run while paused, none into a key at its limit in
    /// force, none past its total cap in force, and never two leases for one run.
    #[test]
    fn no_admission_ever_exceeds_the_limits_in_force() {
        use proptest::prelude::*;
        let strategy = (
            proptest::option::of(0..4u32),
            proptest::option::of(1..5u32),
            proptest::collection::vec(op(), 1..60),
        );
        proptest!(ProptestConfig::with_cases(300), |((declared, total, ops) in strategy)| {
            let mut gate = Gate::default();
            gate.state.declare(total, None);
            let mut next = 0u32;
            let mut now: Millis = 0;
            let mut first = declared.map(|limit| LimitUpdate { limit, set_at: 0 });
            for op in ops {
                now += 10;
                let changes = match op {
                    Op::Offer { key, count } => {
                        let offered = (0..count)
                            .map(|_| {
                                next += 1;
                                ticket(&format!("r{next}"), &format!("k{key}"), now)
                            })
                            .collect();
                        gate.offer(offered, first.take(), now)
                    }
                    Op::ReleaseOldest => {
                        let oldest = gate.state.running.values().min_by_key(|l| l.token).cloned();
                        match oldest {
                            Some(l) => gate.release(&l.ticket.run_id, Some(l.token), now),
                            None => Changes::default(),
                        }
                    }
                    Op::ReleaseAll => {
                        let ended: Vec<(String, u64)> = gate.state.running.values()
                            .map(|l| (l.ticket.run_id.clone(), l.token)).collect();
                        gate.release_all(&ended, now)
                    }
                    Op::Cancel(n) => gate.remove(&format!("r{n}"), now),
                    Op::Pause => gate.control(Control::Pause, now),
                    Op::Resume => gate.control(Control::Resume, now),
                    Op::Override { limit, total } => gate.control(Control::Override { limit, total }, now),
                    Op::Reset => gate.control(Control::Reset, now),
                    Op::Restart => {
                        gate = restored(gate);
                        Changes::default()
                    }
                };
                if changes.admitted.is_empty() {
                    continue;
                }
                prop_assert!(!gate.controls().paused, "admitted while paused");
                if let Some(total) = gate.controls().total() {
                    prop_assert!(gate.running_total() <= total, "{} running, cap {total}", gate.running_total());
                }
                for lease in &changes.admitted {
                    let key = &lease.ticket.concurrency_key;
                    if let Some(limit) = gate.effective_limit() {
                        prop_assert!(gate.running_count(key) <= limit, "{key}: {} running, limit {limit}", gate.running_count(key));
                    }
                }
                let ids: HashSet<&str> = gate.state.running.keys().map(String::as_str).collect();
                prop_assert_eq!(ids.len(), gate.state.running.len());
            }
        });
    }
}

//! Run and batch identifiers.
//!
//! An id is a prefix (`run_`, `batch_`) and 21 characters of Trigger.dev's alphabet.
//! The first [`ROUTE_LEN`] characters are a *route*: the shard of the run store that owns
//! the object, derived from the task identifier, so that reading a run by id needs no
//! index. The next [`TIME_LEN`] follow the clock (the second, modulo 34²), so that ids
//! made close in time sit close together in a store's indexes. The other 16 characters
//! come from the operating system's cryptographic random source: 16 × log2(34) ≈ 81.4
//! bits, above the contract's 80.

use std::fmt;

use crate::domain::basics::time::Millis;

/// Trigger.dev's id alphabet: digits without `0`, lowercase letters without `l`.
pub const ALPHABET: &[u8; 34] = b"123456789abcdefghijkmnopqrstuvwxyz";
/// Characters after the prefix.
pub const ID_LEN: usize = 21;
/// Leading characters of an id that name its run-store shard.
pub const ROUTE_LEN: usize = 3;
/// Number of distinct routes: 34³.
pub const ROUTE_COUNT: u64 = 34 * 34 * 34;
/// Characters after the route that follow the clock. A store's inserts of one second then
/// land in one narrow range of its id indexes (a few pages) instead of all over them: the
/// benchmark's floor accepted 100-item batches 60–70 % faster with such ids than with
/// wholly random ones, the worker about 23 % faster. The range moves every second and
/// wraps about every 19 minutes.
pub const TIME_LEN: usize = 2;

/// The run-store shard that owns a task's objects, written with [`ALPHABET`].
///
/// Stable forever: stored ids embed it. FNV-1a over the task identifier, reduced to
/// [`ROUTE_COUNT`]; two tasks may share a route, which only means they share a store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StoreRoute([u8; ROUTE_LEN]);

impl StoreRoute {
    pub fn for_task(task: &str) -> StoreRoute {
        let mut n = fnv1a(task) % ROUTE_COUNT;
        let mut code = [0u8; ROUTE_LEN];
        for slot in code.iter_mut().rev() {
            *slot = ALPHABET[(n % 34) as usize];
            n /= 34;
        }
        StoreRoute(code)
    }

    /// The route of a two-step batch's record: by its idempotency key (so that a repeat
    /// finds it), else random.
    pub fn for_batch(key: Option<&str>) -> StoreRoute {
        match key {
            Some(key) => StoreRoute::for_task(&format!("\u{0}batch-key\u{0}{key}")),
            None => {
                let mut random = String::new();
                fill_random(&mut random, 8);
                StoreRoute::for_task(&random)
            }
        }
    }

    pub fn as_str(&self) -> &str {
        // Only ALPHABET bytes are ever stored.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl fmt::Display for StoreRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The 64-bit FNV-1a hash of `text`: stable forever, since routes (stored in ids) and
/// gate shards are made of it.
pub fn fnv1a(text: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// What an id names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum IdKind {
    Run,
    Batch,
}

impl IdKind {
    pub fn prefix(self) -> &'static str {
        match self {
            IdKind::Run => "run_",
            IdKind::Batch => "batch_",
        }
    }
}

/// A fresh id of `kind` on `route`, made at `now`.
fn new_id(kind: IdKind, route: StoreRoute, now: Millis) -> String {
    let mut id = String::with_capacity(kind.prefix().len() + ID_LEN);
    id.push_str(kind.prefix());
    id.push_str(route.as_str());
    let second = (now.max(0) / 1000) as u64 % (34 * 34);
    id.push(char::from(ALPHABET[(second / 34) as usize]));
    id.push(char::from(ALPHABET[(second % 34) as usize]));
    fill_random(&mut id, ID_LEN - ROUTE_LEN - TIME_LEN);
    id
}

/// A fresh schedule id: `sched_` and 20 random characters (a schedule lives in its
/// environment's scheduler, so its id needs no route).
pub fn schedule_id() -> String {
    let mut id = String::from("sched_");
    fill_random(&mut id, 20);
    id
}

/// A fresh bulk action id: `bulk_` and 20 random characters (an action lives in its
/// environment's bulk actions object, so its id needs no route).
pub fn bulk_id() -> String {
    let mut id = String::from("bulk_");
    fill_random(&mut id, 20);
    id
}

/// Appends `count` uniformly random characters of [`ALPHABET`].
fn fill_random(out: &mut String, count: usize) {
    // Rejection sampling keeps every character equally likely: 238 = 7 × 34.
    let mut buf = [0u8; 64];
    let mut pushed = 0;
    while pushed < count {
        getrandom::getrandom(&mut buf).expect("the platform provides a random source");
        for byte in buf {
            if pushed == count {
                break;
            }
            if byte < 238 {
                out.push(char::from(ALPHABET[usize::from(byte % 34)]));
                pushed += 1;
            }
        }
    }
}

/// The route of a well-formed id of `kind`, or `None` when `text` is not such an id.
fn parse_id(kind: IdKind, text: &str) -> Option<StoreRoute> {
    let body = text.strip_prefix(kind.prefix())?;
    if body.len() != ID_LEN || !body.bytes().all(|c| ALPHABET.contains(&c)) {
        return None;
    }
    let mut code = [0u8; ROUTE_LEN];
    code.copy_from_slice(&body.as_bytes()[..ROUTE_LEN]);
    Some(StoreRoute(code))
}

/// Declares an id newtype of one kind: made by `new`, or checked by `parse` (a text that
/// is not such an id is no id at all: the caller answers 404).
macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub struct $name {
            text: String,
            route: StoreRoute,
        }

        impl $name {
            /// A fresh id on `route`, made at `now`.
            pub fn new(route: StoreRoute, now: Millis) -> $name {
                $name {
                    text: new_id($kind, route, now),
                    route,
                }
            }

            pub fn parse(text: &str) -> Option<$name> {
                let route = parse_id($kind, text)?;
                Some($name {
                    text: text.to_owned(),
                    route,
                })
            }

            /// The route of the store that owns it.
            pub fn route(&self) -> StoreRoute {
                self.route
            }

            pub fn as_str(&self) -> &str {
                &self.text
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.text
            }
        }
    };
}

id_type!(
    /// A run's id: `run_` and 21 characters.
    RunId,
    IdKind::Run
);
id_type!(
    /// A batch's id: `batch_` and 21 characters.
    BatchId,
    IdKind::Batch
);

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn id_types_keep_their_route_and_refuse_the_other_kind() {
        let route = StoreRoute::for_task("hello-world");
        let run = RunId::new(route, 1_800_000_000_000);
        assert_eq!(run.route(), route);
        assert_eq!(RunId::parse(run.as_str()), Some(run.clone()));
        assert_eq!(BatchId::parse(run.as_str()), None);
        let batch = BatchId::new(route, 0);
        assert!(batch.as_str().starts_with("batch_"));
        assert_eq!(
            BatchId::parse(batch.as_str()).map(|b| b.route()),
            Some(route)
        );
        assert_eq!(RunId::parse("run_short"), None);
        assert_eq!(String::from(run.clone()), run.as_str());
    }

    #[test]
    fn alphabet_is_trigger_devs() {
        assert_eq!(ALPHABET.len(), 34);
        assert!(!ALPHABET.contains(&b'0') && !ALPHABET.contains(&b'l'));
        let unique: HashSet<_> = ALPHABET.iter().collect();
        assert_eq!(unique.len(), 34);
    }

    #[test]
    fn ids_have_the_prefix_length_alphabet_and_route() {
        let route = StoreRoute::for_task("hello-world");
        for kind in [IdKind::Run, IdKind::Batch] {
            let id = new_id(kind, route, 1_795_920_000_000);
            assert!(id.starts_with(kind.prefix()), "{id}");
            assert_eq!(id.len(), kind.prefix().len() + ID_LEN);
            assert_eq!(parse_id(kind, &id), Some(route));
        }
    }

    #[test]
    fn ids_are_unique_and_use_every_character() {
        let route = StoreRoute::for_task("t");
        let now = 1_795_920_000_000;
        let ids: HashSet<String> = (0..20_000)
            .map(|_| new_id(IdKind::Run, route, now))
            .collect();
        assert_eq!(ids.len(), 20_000, "one second's ids are still unique");
        let used: HashSet<u8> = ids.iter().flat_map(|id| id.bytes().skip(9)).collect();
        assert_eq!(used.len(), 34, "random part covers the whole alphabet");
    }

    #[test]
    fn the_two_characters_after_the_route_follow_the_second_and_wrap() {
        let route = StoreRoute::for_task("t");
        let time = |now: Millis| new_id(IdKind::Run, route, now)[7..9].to_owned();
        let second = 1_795_920_000_000; // a whole second
        assert_eq!(time(second), time(second + 999), "one second, one range");
        let step = |a: &str, b: &str| {
            let at = |s: &str| {
                let c = s.as_bytes();
                let i = |b: u8| ALPHABET.iter().position(|&x| x == b).unwrap();
                i(c[0]) * 34 + i(c[1])
            };
            (at(b) + 34 * 34 - at(a)) % (34 * 34)
        };
        assert_eq!(
            step(&time(second), &time(second + 1000)),
            1,
            "the next second"
        );
        assert_eq!(
            time(second),
            time(second + 1156 * 1000),
            "wraps after 34² seconds"
        );
        assert_eq!(time(0), "11");
        assert_eq!(time(-5), "11", "a clock before 1970 counts as 0");
        assert_eq!(
            ID_LEN - ROUTE_LEN - TIME_LEN,
            16,
            "16 × log2(34) ≥ 80 random bits"
        );
    }

    #[test]
    fn route_is_stable_and_spreads_tasks() {
        // Stored ids embed routes: this value must never change.
        assert_eq!(
            StoreRoute::for_task("hello-world"),
            StoreRoute::for_task("hello-world")
        );
        assert_eq!(
            StoreRoute::for_task("hello-world").as_str().len(),
            ROUTE_LEN
        );
        let routes: HashSet<StoreRoute> = (0..1000)
            .map(|i| StoreRoute::for_task(&format!("task-{i}")))
            .collect();
        assert!(routes.len() > 980, "{} distinct routes", routes.len());
    }

    #[test]
    fn malformed_ids_have_no_route() {
        let good = new_id(IdKind::Run, StoreRoute::for_task("t"), 0);
        assert!(parse_id(IdKind::Batch, &good).is_none());
        for bad in [
            "",
            "run_",
            "run_123",
            "run_0123456789abcdefghijk",
            "run_123456789abcdefghijkl",
            "RUN_123456789abcdefghijk",
            "run_123456789abcdefghijkm1",
            "run_../../../../../../../",
        ] {
            assert!(parse_id(IdKind::Run, bad).is_none(), "{bad:?}");
        }
    }
}

//! How a gate spreads admitted attempts over its executors. A gate's executors are a pool
//! of at most [`EXECUTOR_POOL`] objects, `<gate>#<n>` with `n` the lease token modulo the
//! pool's size: objects are reused across attempts, and a gate's attempts spread over
//! several of them, as many as its limit needs ([`pool_size`]). Leases go to an executor
//! in hands of at most [`HAND_MAX`]; a releasing executor may take runs back in the
//! release's reply ([`split_for_releaser`], [`room_to_take`]).

use crate::domain::basics::names::executor_name;
use crate::domain::basics::time::Millis;
use crate::domain::scheduling::gate::Lease;

/// The most executors one gate uses.
pub const EXECUTOR_POOL: u64 = 8;

/// The most leases one call hands to an executor: each call is an invocation of its own,
/// and Cloudflare lets an invocation wait on six connections at a time, so the attempts of
/// one hand never queue behind each other's endpoint calls.
pub const HAND_MAX: usize = 6;

/// How many executors a gate whose limit is `limit` uses: one per `HAND_MAX` slots, at
/// least one, at most `EXECUTOR_POOL`. A small queue's runs then share few executors, so
/// their starts, reports and releases go out in few grouped calls instead of one call per
/// executor each.
pub fn pool_size(limit: Option<u32>) -> u64 {
    limit.map_or(EXECUTOR_POOL, |limit| {
        u64::from(limit)
            .div_ceil(HAND_MAX as u64)
            .clamp(1, EXECUTOR_POOL)
    })
}

/// Of the leases a release admitted, those the releasing executor takes back in the
/// release's reply: in admission order, at most `wanted` (no more than it released, so
/// that each executor keeps the share of the limit it had, and no more than it has room
/// for, `room_to_take`). The rest go out in hands. A hand-over is then three calls in
/// series (the report to the store, the release, the start) instead of four.
pub fn split_for_releaser(mut admitted: Vec<Lease>, wanted: usize) -> (Vec<Lease>, Vec<Lease>) {
    let others = admitted.split_off(wanted.min(HAND_MAX).min(admitted.len()));
    (admitted, others)
}

/// How many runs an executor may take from a release's reply while `running` attempts of
/// its own go on: its calls then number `HAND_MAX` at most, so that none of them waits
/// for a connection whatever invocation it runs in (a run taken this way starts in the
/// invocation that reported, not in a hand's own). An executor busier than that gets
/// its runs in hands, six per call.
pub fn room_to_take(running: usize) -> usize {
    HAND_MAX.saturating_sub(running)
}

/// The calls that hand `admitted` to the executors of a pool of `pool` (`pool_size`): per
/// executor, in admission order, at most `HAND_MAX` leases each.
pub fn hands(gate: &str, admitted: Vec<Lease>, pool: u64) -> Vec<(String, Vec<Lease>)> {
    let mut hands: Vec<(String, Vec<Lease>)> = Vec::new();
    for lease in admitted {
        let name = executor_name(gate, lease.token, pool);
        match hands
            .iter_mut()
            .find(|(n, leases)| *n == name && leases.len() < HAND_MAX)
        {
            Some((_, leases)) => leases.push(lease),
            None => hands.push((name, vec![lease])),
        }
    }
    hands
}

/// The first wait before an executor sends a failed start or report again.
pub const RETRY_FIRST_MS: Millis = 250;
/// The longest wait between two sends of one start or report.
pub const RETRY_MAX_MS: Millis = 8_000;

/// When an executor sends a start or a report again after its `failures`-th failed send
/// (1, 2, …): 250 ms after the first, doubling up to 8 s. `None` once that would be past
/// the lease's end: the lease then decides (the gate reclaims the slot and the store fails
/// the attempt, which is retried as its policy allows), so a job is never held longer
/// than its lease, and an executor's memory never holds one for good.
pub fn retry_at(failures: u32, now: Millis, lease_until: Millis) -> Option<Millis> {
    let doublings = failures.saturating_sub(1).min(16);
    let wait = (RETRY_FIRST_MS << doublings).min(RETRY_MAX_MS);
    Some(now + wait).filter(|at| *at < lease_until)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::scheduling::gate::test_lease;

    fn lease(token: u64) -> Lease {
        test_lease(&format!("run_{token}"), token)
    }

    #[test]
    fn leases_go_to_their_executor_at_most_six_per_call_in_order() {
        let admitted = (0..20).map(lease).collect();
        let spread = hands("dev:q", admitted, EXECUTOR_POOL);
        let tokens = |i: usize| spread[i].1.iter().map(|l| l.token).collect::<Vec<_>>();
        // Tokens 0, 8 and 16 go to executor #0; 1, 9 and 17 to #1; and so on.
        assert_eq!(spread.len(), 8);
        assert_eq!(spread[0].0, "dev:q#0");
        assert_eq!(tokens(0), [0, 8, 16]);
        assert_eq!(tokens(7), [7, 15]);
        let one_executor = (0..14).map(|i| lease(i * EXECUTOR_POOL)).collect();
        let chunked = hands("dev:q", one_executor, EXECUTOR_POOL);
        let sizes: Vec<usize> = chunked.iter().map(|(_, l)| l.len()).collect();
        assert_eq!(sizes, [6, 6, 2]);
        assert!(chunked.iter().all(|(name, _)| name == "dev:q#0"));
    }

    #[test]
    fn a_releasing_executor_takes_back_as_many_runs_as_it_released_at_most_six() {
        let tokens = |leases: &[Lease]| leases.iter().map(|l| l.token).collect::<Vec<_>>();
        let (mine, others) = split_for_releaser((0..5).map(lease).collect(), 2);
        assert_eq!(
            (tokens(&mine), tokens(&others)),
            (vec![0, 1], vec![2, 3, 4])
        );
        let (mine, others) = split_for_releaser((0..2).map(lease).collect(), 5);
        assert_eq!((tokens(&mine), tokens(&others)), (vec![0, 1], vec![]));
        let (mine, others) = split_for_releaser((0..9).map(lease).collect(), 9);
        assert_eq!(mine.len(), HAND_MAX, "a hand's worth at most");
        assert_eq!(tokens(&others), [6, 7, 8]);
        let (mine, others) = split_for_releaser((0..3).map(lease).collect(), 0);
        assert!(
            mine.is_empty(),
            "a caller that does not take runs gets none"
        );
        assert_eq!(others.len(), 3);
    }

    #[test]
    fn a_failed_send_is_tried_again_later_and_later_while_the_lease_lasts() {
        let waits: Vec<Millis> = (1..=8)
            .map(|n| retry_at(n, 0, Millis::MAX).expect("the lease lasts"))
            .collect();
        assert_eq!(waits, [250, 500, 1000, 2000, 4000, 8000, 8000, 8000]);
        assert_eq!(retry_at(u32::MAX, 100, Millis::MAX), Some(8100));
        assert_eq!(retry_at(1, 1000, 1251), Some(1250));
        assert_eq!(retry_at(1, 1000, 1250), None, "not at the lease's end");
        assert_eq!(retry_at(3, 1000, 1500), None, "nor past it");
    }

    #[test]
    fn an_executor_takes_runs_from_a_release_only_while_it_runs_fewer_than_six() {
        assert_eq!(room_to_take(0), HAND_MAX);
        assert_eq!(room_to_take(4), 2);
        assert_eq!(room_to_take(6), 0);
        assert_eq!(room_to_take(40), 0, "a busy executor gets hands");
    }

    #[test]
    fn a_queue_uses_one_executor_per_six_slots_of_its_limit_at_most_eight() {
        assert_eq!(pool_size(Some(1)), 1);
        assert_eq!(pool_size(Some(6)), 1);
        assert_eq!(pool_size(Some(7)), 2);
        assert_eq!(pool_size(Some(10)), 2);
        assert_eq!(pool_size(Some(48)), 8);
        assert_eq!(pool_size(Some(1000)), 8);
        assert_eq!(pool_size(None), EXECUTOR_POOL, "no limit: the whole pool");
        assert_eq!(
            pool_size(Some(0)),
            1,
            "a paused queue still names an executor"
        );
        let ten = hands("dev:q", (0..10).map(lease).collect(), pool_size(Some(10)));
        let names: Vec<&str> = ten.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(
            names,
            ["dev:q#0", "dev:q#1"],
            "five leases each, one hand each"
        );
        assert!(ten.iter().all(|(_, leases)| leases.len() == 5));
    }
}

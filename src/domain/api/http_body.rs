//! How long the edge waits for the next piece of a request body (a slowloris defence).

use crate::domain::basics::time::Millis;

/// The longest pause allowed between two chunks of a body.
pub const BODY_IDLE_MS: Millis = 10_000;

/// How long to wait for the next chunk at `now` when the whole body is due by `deadline`:
/// the idle allowance, cut short by the deadline; `None` once the deadline has passed.
pub fn next_chunk_wait(now: Millis, deadline: Millis) -> Option<Millis> {
    let left = deadline - now;
    (left > 0).then(|| left.min(BODY_IDLE_MS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_the_idle_allowance_then_no_longer_than_the_deadline() {
        assert_eq!(next_chunk_wait(0, 60_000), Some(BODY_IDLE_MS));
        assert_eq!(next_chunk_wait(55_000, 60_000), Some(5_000));
        assert_eq!(next_chunk_wait(60_000, 60_000), None);
        assert_eq!(next_chunk_wait(70_000, 60_000), None);
    }
}

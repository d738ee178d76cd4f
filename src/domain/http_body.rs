//! How the edge reads a request body: how long it waits for the next piece (a slowloris
//! defence), and when it reads the body whole.

use super::time::Millis;

/// The longest pause allowed between two chunks of a body.
pub const BODY_IDLE_MS: Millis = 10_000;

/// How long to wait for the next chunk at `now` when the whole body is due by `deadline`:
/// the idle allowance, cut short by the deadline; `None` once the deadline has passed.
pub fn next_chunk_wait(now: Millis, deadline: Millis) -> Option<Millis> {
    let left = deadline - now;
    (left > 0).then(|| left.min(BODY_IDLE_MS))
}

/// The largest declared body read in one piece: it must arrive whole within
/// [`BODY_IDLE_MS`] (at least 12.8 KiB/s). Larger bodies, and bodies of undeclared length,
/// are read chunk by chunk under the idle allowance and the overall deadline.
pub const WHOLE_READ_MAX: u64 = 128 * 1024;

/// Whether a body of `declared` length (`limit` at most) is read in one piece.
pub fn reads_whole(declared: Option<u64>, limit: u64) -> bool {
    declared.is_some_and(|n| n <= WHOLE_READ_MAX.min(limit))
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

    #[test]
    fn only_small_declared_bodies_are_read_whole() {
        assert!(reads_whole(Some(0), 3 << 20));
        assert!(reads_whole(Some(WHOLE_READ_MAX), 3 << 20));
        assert!(!reads_whole(Some(WHOLE_READ_MAX + 1), 3 << 20));
        assert!(!reads_whole(None, 3 << 20));
        assert!(
            !reads_whole(Some(2_000), 1_000),
            "over the limit: refused, not read"
        );
    }
}

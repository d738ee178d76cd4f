//! How long the edge waits for the next piece of a request body (a slowloris defence).

use crate::domain::basics::time::Millis;

/// The longest pause allowed between two chunks of a body.
pub const BODY_IDLE_MS: Millis = 10_000;

/// The largest body read whole rather than chunk by chunk: a body whose `content-length`
/// declares at most this many bytes (a few TCP segments) must arrive within one idle
/// allowance, [`BODY_IDLE_MS`].
pub const WHOLE_BODY_BYTES: u64 = 64 * 1024;

/// Whether a body of `declared` bytes (its `content-length`, if any) is read whole: one
/// call to the runtime instead of a read and a timer per chunk, which is most of what a
/// small request costs to read. A body without a length, or a longer one, is streamed.
pub fn read_whole(declared: Option<u64>) -> bool {
    declared.is_some_and(|n| n <= WHOLE_BODY_BYTES)
}

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

    #[test]
    fn reads_whole_only_a_short_body_of_declared_length() {
        assert!(read_whole(Some(0)));
        assert!(read_whole(Some(WHOLE_BODY_BYTES)));
        assert!(!read_whole(Some(WHOLE_BODY_BYTES + 1)));
        assert!(!read_whole(None), "a chunked body is streamed");
    }
}

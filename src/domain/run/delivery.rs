//! Getting accepted runs onto the Cloudflare Queue: message packing and the outbox's
//! timing rules.
//!
//! Messages carry references, never payloads (invariant 7, docs/ARCHITECTURE.md), and one message
//! carries the references of many runs, so a 100-run batch costs one queue operation.
//! A run stays in its store's outbox until the consumer acknowledges it; an outbox row
//! sent but not acknowledged within [`REDELIVER_AFTER_MS`] is sent again (the local
//! queue loses messages when its process dies; duplicates are harmless downstream).

use serde::{Deserialize, Serialize};

use crate::domain::basics::time::Millis;

/// One queue message: runs of one store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRefs {
    /// The run store's name (`<env>:<route>`).
    pub store: String,
    pub runs: Vec<String>,
}

/// References per message: 1000 ids of 25 characters is about 28 KB, well under the
/// 128 KB message limit.
pub const MAX_RUNS_PER_MESSAGE: usize = 1000;
/// `Queue.sendBatch` takes at most 100 messages and 256 KB per call.
pub const MAX_MESSAGES_PER_SEND: usize = 100;
pub const MAX_BYTES_PER_SEND: usize = 200_000;
/// How long a sent run may stay unacknowledged before it is sent again.
pub const REDELIVER_AFTER_MS: Millis = 60_000;
/// How early a retrying run may be claimed or started before its backoff ends (clock
/// skew between objects).
pub const RETRY_SLACK_MS: Millis = 1000;

/// Packs run ids into `sendBatch` calls: each inner `Vec` is one call's messages.
pub fn pack(store: &str, runs: &[String]) -> Vec<Vec<RunRefs>> {
    let mut calls: Vec<Vec<RunRefs>> = Vec::new();
    let mut bytes_in_call = 0;
    for chunk in runs.chunks(MAX_RUNS_PER_MESSAGE) {
        let message = RunRefs {
            store: store.to_owned(),
            runs: chunk.to_vec(),
        };
        let size = message_size(&message);
        let full = calls.last().is_none_or(|call| {
            call.len() == MAX_MESSAGES_PER_SEND || bytes_in_call + size > MAX_BYTES_PER_SEND
        });
        if full {
            calls.push(Vec::new());
            bytes_in_call = 0;
        }
        bytes_in_call += size;
        calls
            .last_mut()
            .expect("a call was just pushed")
            .push(message);
    }
    calls
}

/// A message's size as the queue carries it, near enough (its JSON form).
pub fn message_size(message: &RunRefs) -> usize {
    // {"store":"…","runs":["…",…]}: 22 bytes of frame, each id quoted, commas between.
    let ids: usize = message.runs.iter().map(|r| r.len() + 3).sum();
    22 + message.store.len() + ids.saturating_sub(1)
}

/// A row of the outbox as the alarm sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxRow {
    /// When the run may be sent (its `delayedUntil`, or its creation).
    pub due_at: Millis,
    /// When it was last sent; `None` if never.
    pub sent_at: Option<Millis>,
}

impl OutboxRow {
    /// Whether the alarm at `now` should send this row.
    pub fn is_sendable(&self, now: Millis) -> bool {
        match self.sent_at {
            None => self.due_at <= now,
            Some(sent) => sent + REDELIVER_AFTER_MS <= now,
        }
    }

    /// The earliest moment this row needs attention.
    pub fn next_attention(&self) -> Millis {
        match self.sent_at {
            None => self.due_at,
            Some(sent) => sent + REDELIVER_AFTER_MS,
        }
    }
}

/// Splits text into pieces of at most `max` bytes, on character boundaries, so that a
/// large payload fits rows of a bounded size.
pub fn split_utf8(text: &str, max: usize) -> Vec<&str> {
    assert!(max >= 4, "a piece must hold any character");
    let mut pieces = Vec::new();
    let mut rest = text;
    while rest.len() > max {
        let mut cut = max;
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let (piece, tail) = rest.split_at(cut);
        pieces.push(piece);
        rest = tail;
    }
    pieces.push(rest);
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("run_{i:021}")).collect()
    }

    #[test]
    fn a_small_batch_is_one_message_in_one_call() {
        let calls = pack("dev:abc", &ids(100));
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].len(), 1);
        assert_eq!(calls[0][0].runs.len(), 100);
    }

    #[test]
    fn packing_keeps_every_id_once_in_order_within_limits() {
        for n in [1, 999, 1000, 1001, 25_000] {
            let runs = ids(n);
            let calls = pack("prod:zzz", &runs);
            let flat: Vec<String> = calls
                .iter()
                .flatten()
                .flat_map(|m| m.runs.clone())
                .collect();
            assert_eq!(flat, runs);
            for call in &calls {
                assert!(call.len() <= MAX_MESSAGES_PER_SEND);
                let bytes: usize = call
                    .iter()
                    .map(|m| serde_json::to_string(m).unwrap().len())
                    .sum();
                assert!(bytes <= 256_000, "{bytes}");
                for m in call {
                    assert!(serde_json::to_string(m).unwrap().len() < 128_000);
                    assert_eq!(serde_json::to_string(m).unwrap().len(), message_size(m));
                }
            }
        }
    }

    #[test]
    fn outbox_rows_are_sent_when_due_and_again_when_unacknowledged() {
        let fresh = OutboxRow {
            due_at: 100,
            sent_at: None,
        };
        assert!(!fresh.is_sendable(99) && fresh.is_sendable(100));
        assert_eq!(fresh.next_attention(), 100);
        let sent = OutboxRow {
            due_at: 100,
            sent_at: Some(200),
        };
        assert!(!sent.is_sendable(200 + REDELIVER_AFTER_MS - 1));
        assert!(sent.is_sendable(200 + REDELIVER_AFTER_MS));
        assert_eq!(sent.next_attention(), 200 + REDELIVER_AFTER_MS);
    }

    #[test]
    fn split_utf8_respects_character_boundaries() {
        assert_eq!(split_utf8("", 4), [""]);
        assert_eq!(split_utf8("abcdefghij", 4), ["abcd", "efgh", "ij"]);
        let text = "é".repeat(5); // 10 bytes, 2 per character
        let pieces = split_utf8(&text, 5);
        assert_eq!(pieces, ["éé", "éé", "é"]);
        assert_eq!(pieces.concat(), text);
        let mixed = "a€b€c€".repeat(1000);
        assert_eq!(split_utf8(&mixed, 7).concat(), mixed);
        assert!(split_utf8(&mixed, 7).iter().all(|p| p.len() <= 7));
    }
}

//! Getting accepted runs to their gates: the outbox's rows, the Cloudflare Queue's message
//! packing, and the outbox's timing rules.
//!
//! Messages carry references, never payloads (invariant 7, docs/ARCHITECTURE.md), and one
//! message carries the references of many runs, so a 100-run batch costs one queue
//! operation. The outbox holds *deliveries*, not runs: the runs a trigger made that are due
//! at one moment are one row (at most [`MAX_RUNS_PER_MESSAGE`]). A message carries the runs
//! of one or more rows and names them, and the consumer's acknowledgement deletes those
//! rows. A batch of 100 runs therefore writes one outbox row (already marked sent when it
//! goes out with the trigger) and deletes it once, where a row per run cost four rows
//! written per run. Only a trigger's own rows go to the queue: rows that come due later
//! (delayed runs, retries), and a trigger's rows not acknowledged within
//! [`REDELIVER_AFTER_MS`], are offered to their gates by the store's alarm itself (the
//! local queue loses messages when its process dies, and can stall; duplicates are
//! harmless downstream: a store claims only runs that should wait for a slot, and a gate
//! ignores a run it holds).

use serde::{Deserialize, Serialize};

use crate::domain::basics::time::Millis;

/// One queue message: runs of one store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRefs {
    /// The run store's name (`<env>:<route>`).
    pub store: String,
    pub runs: Vec<String>,
    /// The store's outbox rows this message delivers, which its acknowledgement deletes.
    /// Empty in messages of builds before the outbox held deliveries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deliveries: Vec<i64>,
}

/// References per message (and per outbox row): 1000 ids of 25 characters is about 28 KB,
/// well under the 128 KB message limit.
pub const MAX_RUNS_PER_MESSAGE: usize = 1000;
/// `Queue.sendBatch` takes at most 100 messages and 256 KB per call.
pub const MAX_MESSAGES_PER_SEND: usize = 100;
pub const MAX_BYTES_PER_SEND: usize = 200_000;
/// How long a sent run may stay unacknowledged before it is sent again.
pub const REDELIVER_AFTER_MS: Millis = 60_000;
/// How early a retrying run may be claimed or started before its backoff ends (clock
/// skew between objects).
pub const RETRY_SLACK_MS: Millis = 1000;

/// The outbox rows for new runs, each `(due_at, runs)`: the runs due at one moment, in
/// the order they came, at most [`MAX_RUNS_PER_MESSAGE`] per row.
pub fn deliveries(runs: impl IntoIterator<Item = (String, Millis)>) -> Vec<(Millis, Vec<String>)> {
    let mut rows: Vec<(Millis, Vec<String>)> = Vec::new();
    for (run, due_at) in runs {
        match rows
            .iter_mut()
            .rev()
            .find(|(at, runs)| *at == due_at && runs.len() < MAX_RUNS_PER_MESSAGE)
        {
            Some((_, runs)) => runs.push(run),
            None => rows.push((due_at, vec![run])),
        }
    }
    rows
}

/// Packs outbox rows (`(seq, runs)`, each at most [`MAX_RUNS_PER_MESSAGE`] runs) into
/// `sendBatch` calls: each inner `Vec` is one call's messages, each message the whole rows
/// that fit in [`MAX_RUNS_PER_MESSAGE`] runs, in order.
pub fn pack(store: &str, rows: Vec<(i64, Vec<String>)>) -> Vec<Vec<RunRefs>> {
    let mut messages: Vec<RunRefs> = Vec::new();
    for (seq, runs) in rows {
        debug_assert!(runs.len() <= MAX_RUNS_PER_MESSAGE);
        match messages.last_mut() {
            Some(last) if last.runs.len() + runs.len() <= MAX_RUNS_PER_MESSAGE => {
                last.runs.extend(runs);
                last.deliveries.push(seq);
            }
            _ => messages.push(RunRefs {
                store: store.to_owned(),
                runs,
                deliveries: vec![seq],
            }),
        }
    }
    let mut calls: Vec<Vec<RunRefs>> = Vec::new();
    let mut bytes_in_call = 0;
    for message in messages {
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
    // {"store":"…","runs":["…",…]}: 22 bytes of frame, each id quoted, commas between;
    // then ,"deliveries":[n,…].
    let ids: usize = message.runs.iter().map(|r| r.len() + 3).sum();
    let seqs: usize = message
        .deliveries
        .iter()
        .map(|seq| seq.to_string().len() + 1)
        .sum();
    let deliveries = if seqs == 0 {
        0
    } else {
        ",\"deliveries\":[]".len() + seqs - 1
    };
    22 + message.store.len() + ids.saturating_sub(1) + deliveries
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
    /// Whether the alarm at `now` offers this row's runs: it came due, or it was sent
    /// [`REDELIVER_AFTER_MS`] ago or more and never acknowledged.
    pub fn is_due(&self, now: Millis) -> bool {
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

    /// Outbox rows of `n` runs in all, as `deliveries` makes them for runs due at once.
    fn rows_of(n: usize) -> Vec<(i64, Vec<String>)> {
        deliveries(ids(n).into_iter().map(|id| (id, 7)))
            .into_iter()
            .enumerate()
            .map(|(seq, (_, runs))| (seq as i64 + 1, runs))
            .collect()
    }

    #[test]
    fn runs_due_together_are_one_outbox_row_of_at_most_a_message() {
        let rows = deliveries(ids(100).into_iter().map(|id| (id, 5)));
        assert_eq!(rows, vec![(5, ids(100))]);
        let rows = deliveries(ids(2500).into_iter().map(|id| (id, 5)));
        let sizes: Vec<usize> = rows.iter().map(|(_, r)| r.len()).collect();
        assert_eq!(sizes, [1000, 1000, 500]);
        // Runs due at different moments (their delays) go in rows of their own, in order.
        let mixed = vec![
            ("a".to_owned(), 1),
            ("b".to_owned(), 2),
            ("c".to_owned(), 1),
        ];
        assert_eq!(
            deliveries(mixed),
            vec![
                (1, vec!["a".to_owned(), "c".to_owned()]),
                (2, vec!["b".to_owned()])
            ]
        );
        assert!(deliveries(Vec::new()).is_empty());
    }

    #[test]
    fn a_small_batch_is_one_message_in_one_call() {
        let calls = pack("dev:abc", rows_of(100));
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].len(), 1);
        assert_eq!(calls[0][0].runs.len(), 100);
        assert_eq!(calls[0][0].deliveries, [1]);
    }

    #[test]
    fn rows_share_a_message_up_to_its_runs() {
        let row = |seq: i64, n: usize| (seq, ids(n));
        let calls = pack(
            "dev:abc",
            vec![row(-9, 1), row(4, 1), row(7, 998), row(8, 2)],
        );
        let messages: Vec<(usize, Vec<i64>)> = calls
            .iter()
            .flatten()
            .map(|m| (m.runs.len(), m.deliveries.clone()))
            .collect();
        assert_eq!(messages, [(1000, vec![-9, 4, 7]), (2, vec![8])]);
        for m in calls.iter().flatten() {
            assert_eq!(serde_json::to_string(m).unwrap().len(), message_size(m));
        }
    }

    #[test]
    fn packing_keeps_every_id_once_in_order_within_limits() {
        for n in [1, 999, 1000, 1001, 25_000] {
            let runs = ids(n);
            let calls = pack("prod:zzz", rows_of(n));
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
    fn a_message_of_an_earlier_build_reads_without_its_delivery() {
        let old: RunRefs = serde_json::from_str(r#"{"store":"dev:a","runs":["run_1"]}"#).unwrap();
        assert!(old.deliveries.is_empty());
        assert_eq!(
            serde_json::to_string(&old).unwrap(),
            r#"{"store":"dev:a","runs":["run_1"]}"#
        );
        assert_eq!(message_size(&old), 34);
    }

    #[test]
    fn outbox_rows_are_sent_when_due_and_again_when_unacknowledged() {
        let fresh = OutboxRow {
            due_at: 100,
            sent_at: None,
        };
        assert!(!fresh.is_due(99) && fresh.is_due(100));
        assert_eq!(fresh.next_attention(), 100);
        let sent = OutboxRow {
            due_at: 100,
            sent_at: Some(200),
        };
        assert!(!sent.is_due(200 + REDELIVER_AFTER_MS - 1));
        assert!(
            sent.is_due(200 + REDELIVER_AFTER_MS),
            "a row the queue did not deliver is offered by its store"
        );
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

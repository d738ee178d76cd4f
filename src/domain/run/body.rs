//! A run's write-once options, kept in one row per accept instead of in each run's row.
//!
//! The run store keeps runs in a `WITHOUT ROWID` table (one row written per run), whose
//! B-tree holds whole rows in its interior pages too: every byte of a run's row is paid at
//! each insert, in page splits and copies. Most of those bytes are options a run never
//! changes and only its start and its reads need: the payload and its type, the context,
//! the idempotency key, the TTL as given, the trigger function, the retry policy and the
//! batch it came in (written to items since the batch id was measured to cost 3 % of a
//! batch's accept in each row: 27 equal bytes per run). An
//! accept writes them for all its runs as one `run_bodies` row (a rowid table: one row
//! written per accept), each run's item a JSON object at a byte range of it, and each run's
//! row names its range (`body`, `body_at`, `body_len`; store schema step 11).
//!
//! [`pack`] lays items out in bodies; [`RunBody`] is an item, and [`ItemWriter`] writes an
//! accept's items.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::domain::config::RetryPolicy;

/// Items larger than this stay in their run's row (and its chunks), as before bodies.
pub const ITEM_BYTES: usize = 64 * 1024;
/// A body holds items up to this size in all (rows are capped at 2 MB); more start another.
pub const BODY_BYTES: usize = 1024 * 1024;
const _: () = assert!(
    2 * ITEM_BYTES <= BODY_BYTES,
    "any two items fit in one body"
);

/// One run's item in a body: borrowed from the text it was read from, or from the
/// trigger it is written for.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunBody<'a> {
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<&'a RawValue>,
    #[serde(borrow)]
    pub payload_type: Cow<'a, str>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub context: Option<&'a RawValue>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<Cow<'a, str>>,
    /// The TTL as the trigger gave it (its milliseconds stay in the run's row).
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub trigger_function: Cow<'a, str>,
    pub retry: RetryPolicy,
    /// The run's batch. Items written before it was kept here have none: their runs'
    /// rows hold it.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub batch_id: Option<Cow<'a, str>>,
}

impl<'a> RunBody<'a> {
    pub fn parse(text: &'a str) -> Result<RunBody<'a>, String> {
        serde_json::from_str(text).map_err(|e| format!("a stored run body: {e}"))
    }

    pub fn to_json(&self) -> Result<String, String> {
        serde_json::to_string(self).map_err(|e| e.to_string())
    }
}

/// An accept's items, written as [`RunBody::to_json`] writes them but with the fields its
/// items share (the trigger function, the retry policy, the batch) serialized once for
/// all: a profile of batches of 100 showed the retry policy alone, serialized per item,
/// at 1 % of the accept.
pub struct ItemWriter {
    /// `"triggerFunction":…,"retry":…[,"batchId":…]}`: the shared fields, closing the item.
    tail: String,
}

/// One item's own fields, in [`RunBody`]'s order and names.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OwnFields<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<&'a RawValue>,
    pub payload_type: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SharedFields<'a> {
    trigger_function: &'a str,
    retry: &'a RetryPolicy,
    #[serde(skip_serializing_if = "Option::is_none")]
    batch_id: Option<&'a str>,
}

impl ItemWriter {
    pub fn new(
        trigger_function: &str,
        retry: &RetryPolicy,
        batch_id: Option<&str>,
    ) -> Result<ItemWriter, String> {
        let shared = SharedFields {
            trigger_function,
            retry,
            batch_id,
        };
        let mut tail = serde_json::to_string(&shared).map_err(|e| e.to_string())?;
        tail.remove(0); // its `{`: the item's own fields open the object
        Ok(ItemWriter { tail })
    }

    /// The item of `own` and the shared fields.
    pub fn write(&self, own: &OwnFields) -> Result<String, String> {
        let mut text = serde_json::to_vec(own).map_err(|e| e.to_string())?;
        text.pop(); // its `}` (never `{}`: an item always has its payload type)
        text.push(b',');
        text.extend_from_slice(self.tail.as_bytes());
        String::from_utf8(text).map_err(|e| e.to_string())
    }
}

/// Where an item sits: in body number `body` of a [`Packed`], from byte `at` (1-based, as
/// SQL's `substr` counts) for `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    pub body: usize,
    pub at: i64,
    pub len: i64,
}

/// A run's item in a stored body: the `run_bodies` row's `seq`, and the item's byte range
/// in it (from `at`, 1-based, for `len` bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub seq: i64,
    pub at: i64,
    pub len: i64,
}

/// Items laid out in bodies, and each item's place (`None`: it stays in its run's row).
#[derive(Debug, Default)]
pub struct Packed {
    pub bodies: Vec<String>,
    pub places: Vec<Option<Place>>,
}

/// Lays `items` out, in order, in bodies of at most [`BODY_BYTES`] filled in turn.
/// An item gets no place when it is over [`ITEM_BYTES`], when it is `None` (a run whose
/// options the caller keeps in its row), or when it would be alone in its body: a body of
/// one item costs a row written more than keeping it in the run's row.
pub fn pack<I: IntoIterator<Item = Option<String>>>(items: I) -> Packed {
    let mut packed = Packed::default();
    let mut counts = Vec::new();
    for item in items {
        let Some(item) = item.filter(|item| item.len() <= ITEM_BYTES) else {
            packed.places.push(None);
            continue;
        };
        let fits = packed
            .bodies
            .last()
            .is_some_and(|body| body.len() + item.len() <= BODY_BYTES);
        if !fits {
            packed.bodies.push(String::with_capacity(item.len()));
            counts.push(0);
        }
        let body_index = packed.bodies.len() - 1;
        let body = &mut packed.bodies[body_index];
        packed.places.push(Some(Place {
            body: body_index,
            at: body.len() as i64 + 1,
            len: item.len() as i64,
        }));
        body.push_str(&item);
        counts[body_index] += 1;
    }
    // Bodies fill in turn and any two items fit in one, so only the last can hold one.
    if counts.last() == Some(&1) {
        let last = packed.bodies.len() - 1;
        packed.bodies.pop();
        for place in &mut packed.places {
            if place.is_some_and(|p| p.body == last) {
                *place = None;
            }
        }
    }
    packed
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `substr(body, at, len)` reads from a blob.
    fn read(packed: &Packed, place: Place) -> &str {
        let start = (place.at - 1) as usize;
        &packed.bodies[place.body][start..start + place.len as usize]
    }

    #[test]
    fn every_item_reads_back_from_its_place_byte_for_byte() {
        let items = [
            r#"{"payload":{"text":"déjà vu"},"payloadType":"application/json"}"#,
            r#"{"payload":"€","payloadType":"application/super+json"}"#,
            "{}",
        ];
        let packed = pack(items.iter().map(|item| Some(item.to_string())));
        assert_eq!(packed.bodies.len(), 1);
        for (item, place) in items.iter().zip(&packed.places) {
            assert_eq!(read(&packed, place.unwrap()), *item);
        }
        assert_eq!(packed.bodies[0], items.concat());
    }

    #[test]
    fn large_items_stay_in_their_rows_and_full_bodies_start_another() {
        let big = "x".repeat(ITEM_BYTES + 1);
        let half = "y".repeat(ITEM_BYTES);
        let count = BODY_BYTES / ITEM_BYTES + 1;
        let mut items = vec![Some(big), None];
        items.extend(std::iter::repeat_n(Some(half.clone()), count + 1));
        let packed = pack(items);
        assert_eq!(packed.places[..2], [None, None]);
        assert_eq!(packed.bodies.len(), 2);
        assert!(packed.bodies.iter().all(|b| b.len() <= BODY_BYTES));
        let last = packed.places[count + 2].unwrap();
        assert_eq!((last.body, last.at), (1, ITEM_BYTES as i64 + 1));
        assert_eq!(read(&packed, last), half);
    }

    #[test]
    fn an_item_alone_in_its_body_stays_in_its_row() {
        assert!(pack([Some("{}".to_owned())]).places == [None]);
        let full = "z".repeat(ITEM_BYTES);
        let count = BODY_BYTES / ITEM_BYTES;
        // A full first body, then one item alone in the second.
        let packed = pack(std::iter::repeat_n(Some(full.clone()), count + 1));
        assert_eq!(packed.bodies.len(), 1);
        assert!(packed.places[..count].iter().all(|p| p.unwrap().body == 0));
        assert_eq!(packed.places[count], None);
        let packed = pack([None, Some("{}".into()), Some("[]".into())]);
        assert_eq!(packed.bodies, ["{}[]"]);
        assert_eq!(
            packed.places[2],
            Some(Place {
                body: 0,
                at: 3,
                len: 2
            })
        );
    }

    #[test]
    fn the_writer_writes_each_item_as_the_item_writes_itself() {
        let payload = RawValue::from_string(r#"{"n":[1, 2]}"#.to_owned()).unwrap();
        let retry = RetryPolicy::default();
        for (payload, key, ttl, batch_id) in [
            (
                Some(&*payload),
                Some("k-\"1\""),
                Some("10m"),
                Some("batch_1"),
            ),
            (None, None, None, None),
            (Some(&*payload), None, None, Some("batch_2")),
        ] {
            let writer = ItemWriter::new("batchTrigger", &retry, batch_id).unwrap();
            let written = writer
                .write(&OwnFields {
                    payload,
                    payload_type: "application/json",
                    context: None,
                    idempotency_key: key,
                    ttl,
                })
                .unwrap();
            let whole = RunBody {
                payload,
                payload_type: "application/json".into(),
                context: None,
                idempotency_key: key.map(Into::into),
                ttl: ttl.map(Into::into),
                trigger_function: "batchTrigger".into(),
                retry: retry.clone(),
                batch_id: batch_id.map(Into::into),
            };
            assert_eq!(written, whole.to_json().unwrap());
        }
    }

    #[test]
    fn a_body_item_round_trips_with_its_payload_text_untouched() {
        let payload = RawValue::from_string(r#"{ "n" : 1.0, "s": "\u00e9" }"#.to_owned()).unwrap();
        let body = RunBody {
            payload: Some(&payload),
            payload_type: "application/json".into(),
            context: None,
            idempotency_key: Some("k-\"1\"".into()),
            ttl: Some("10m".into()),
            trigger_function: "batchTrigger".into(),
            retry: RetryPolicy::default(),
            batch_id: Some("batch_1".into()),
        };
        let text = body.to_json().unwrap();
        let back = RunBody::parse(&text).unwrap();
        assert_eq!(
            back.payload.unwrap().get(),
            r#"{ "n" : 1.0, "s": "\u00e9" }"#
        );
        assert_eq!(back.context.map(|c| c.get().to_owned()), None);
        assert_eq!(back.idempotency_key.as_deref(), Some("k-\"1\""));
        assert_eq!(back.ttl.as_deref(), Some("10m"));
        assert_eq!(back.retry, RetryPolicy::default());
        assert_eq!(back.batch_id.as_deref(), Some("batch_1"));
        // An item without a batch (a single trigger's replay, or written before items held
        // the batch: its run's row holds it) has no `batchId`, and reads back without.
        let older = RunBody {
            batch_id: None,
            ..RunBody::parse(&text).unwrap()
        }
        .to_json()
        .unwrap();
        assert!(!older.contains("batchId"), "{older}");
        assert_eq!(RunBody::parse(&older).unwrap().batch_id, None);
        assert!(RunBody::parse("{").is_err());
    }
}

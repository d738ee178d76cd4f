//! Turning trigger requests into validated run requests ("parse, don't validate").
//!
//! The seed endpoint's body is `{"items": [TriggerTaskRequestBody, ...]}` (docs/API.md
//! section 2). Parsing never re-encodes what it stores: `payload`, `context`, `metadata`
//! and `machine` stay the exact JSON text the caller sent (serde_json's `RawValue`), so a
//! payload is delivered byte for byte and a 3 MiB body costs one scan, not a tree.
//! Every failure names the field by path, e.g.
//! `Validation error: items[3].options.tags: at most 5 tags per run`.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::domain::api::error::ApiError;
use crate::domain::basics::duration::{parse_duration, parse_key_ttl};
use crate::domain::basics::time::{parse_iso, Millis};
use crate::domain::config::TaskSettings;
use crate::domain::intake::debounce::Debounce;
use crate::domain::intake::idempotency::{IdempotencyKey, KeyError};
use crate::domain::intake::queue_name::{clean_queue_name, default_queue_name};

pub const MAX_IDEMPOTENCY_KEY_CHARS: usize = 2048;

/// The message for a key or tag holding a control character (NUL, CR, LF, ...): such
/// text is refused rather than stored, logged or echoed in a header.
pub const NO_CONTROL_CHARACTERS: &str = "must not contain control characters";

/// Whether `text` holds a control character (Unicode `Cc`: U+0000–U+001F, U+007F–U+009F).
pub fn has_control_characters(text: &str) -> bool {
    text.chars().any(char::is_control)
}
pub const DEFAULT_KEY_TTL_MS: u64 = 30 * 86_400_000;
pub const MAX_TAGS: usize = 5;
pub const MAX_TAG_CHARS: usize = 64;
pub const MAX_METADATA_BYTES: usize = 256 * 1024;
pub const MAX_QUEUE_LIMIT: u64 = 1000;
pub const DEFAULT_PAYLOAD_TYPE: &str = "application/json";
/// Why a `delay` was refused.
pub const DELAY_REASON: &str = "expected a duration like 1h42m (units w, d, h or hr, m, s) or an ISO-8601 date-time like 2030-01-01T00:00:00Z";
/// Deepest nesting of arrays and objects accepted anywhere in a body.
pub const MAX_JSON_DEPTH: usize = 128;

/// A run's time-to-live as asked for: the text shown back, and its length.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ttl {
    pub text: String,
    pub ms: u64,
}

impl Ttl {
    /// The end of this TTL for a run that became `QUEUED` at `queued_at`.
    pub fn ends(&self, queued_at: Millis) -> Millis {
        queued_at.saturating_add(self.ms.min(i64::MAX as u64) as i64)
    }
}

impl RunRequest {
    /// The TTL this run keeps (`None` also when a trigger asked for none with `0`).
    pub fn kept_ttl(&self) -> Option<&Ttl> {
        self.ttl.as_ref().and_then(Option::as_ref)
    }

    /// The first moment its store must wake for this new run, accepted at `now`: when
    /// its delay ends, when its TTL would end if it were queued now, or when an
    /// unacknowledged delivery is sent again, whichever comes first.
    pub fn first_wake(&self, now: Millis, redeliver_after_ms: Millis) -> Millis {
        let due = self.delay_until.unwrap_or(now + redeliver_after_ms);
        self.kept_ttl().map_or(due, |ttl| ttl.ends(now).min(due))
    }
}

/// One validated item: everything the store needs to create a run besides the task's
/// backoff (`TriggerBatch::retry`, one per command). It crosses to the store once per
/// item, so the fields it does not have are left out rather than sent as `null`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRequest {
    /// The caller's JSON, verbatim. `None` when absent (read back as `null`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Box<RawValue>>,
    pub payload_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<Box<RawValue>>,
    /// The cleaned queue name; `None` until [`apply_task_defaults`] picks the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// A `concurrencyLimit` to create the queue with or update it to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_limit: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<IdempotencyKey>,
    pub idempotency_key_ttl_ms: u64,
    /// `None`: not given (the task's default applies). `Some(None)`: explicitly none
    /// (`null` on the wire, where `None` is left out).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub ttl: Option<Option<Ttl>>,
    /// When a delayed run becomes `QUEUED`; `None` runs now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_until: Option<Millis>,
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Box<RawValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<Box<RawValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_duration: Option<u32>,
    pub is_test: bool,
    /// `options.debounce`: its key's `DELAYED` run takes this trigger instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debounce: Option<Debounce>,
}

/// A field that is there, `null` or not: `Some` of what it holds.
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

#[derive(Deserialize)]
struct BatchWire<'a> {
    #[serde(borrow)]
    items: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct ItemWire<'a> {
    #[serde(borrow)]
    payload: Option<&'a RawValue>,
    #[serde(borrow)]
    context: Option<&'a RawValue>,
    #[serde(borrow)]
    options: Option<&'a RawValue>,
}

/// Every option, kept raw so each one is checked with its own message.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OptionsWire<'a> {
    #[serde(borrow)]
    queue: Option<&'a RawValue>,
    #[serde(borrow)]
    concurrency_key: Option<&'a RawValue>,
    #[serde(borrow)]
    idempotency_key: Option<&'a RawValue>,
    #[serde(borrow, rename = "idempotencyKeyTTL")]
    idempotency_key_ttl: Option<&'a RawValue>,
    #[serde(borrow)]
    ttl: Option<&'a RawValue>,
    #[serde(borrow)]
    delay: Option<&'a RawValue>,
    #[serde(borrow)]
    tags: Option<&'a RawValue>,
    #[serde(borrow)]
    max_attempts: Option<&'a RawValue>,
    #[serde(borrow)]
    metadata: Option<&'a RawValue>,
    #[serde(borrow)]
    machine: Option<&'a RawValue>,
    #[serde(borrow)]
    priority: Option<&'a RawValue>,
    #[serde(borrow)]
    max_duration: Option<&'a RawValue>,
    #[serde(borrow)]
    test: Option<&'a RawValue>,
    #[serde(borrow)]
    payload_type: Option<&'a RawValue>,
    #[serde(borrow)]
    debounce: Option<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct QueueWire<'a> {
    #[serde(borrow)]
    name: Option<&'a RawValue>,
    #[serde(borrow)]
    concurrency_limit: Option<&'a RawValue>,
}

/// Parses and checks a seed-endpoint body, in the contract's order: empty, JSON, schema,
/// no items, too many items.
pub fn parse_batch_body(
    body: &[u8],
    max_items: usize,
    now: Millis,
) -> Result<Vec<RunRequest>, ApiError> {
    if body.is_empty() {
        return Err(ApiError::BadRequest("Request body is empty".into()));
    }
    let wire: BatchWire = parse_top_object(body)?;
    let raw_items = wire
        .items
        .ok_or_else(|| ApiError::validation("items", "required"))?;
    let items: Vec<&RawValue> = serde_json::from_str(raw_items.get())
        .map_err(|_| ApiError::validation("items", "expected an array"))?;
    let runs = items
        .iter()
        .enumerate()
        .map(|(i, item)| parse_item(item, &format!("items[{i}]"), now))
        .collect::<Result<Vec<_>, _>>()?;
    if runs.is_empty() {
        return Err(ApiError::BadRequest("No items to trigger".into()));
    }
    if runs.len() > max_items {
        return Err(ApiError::BadRequest(format!(
            "Too many items. Maximum allowed batch size is {max_items}."
        )));
    }
    Ok(runs)
}

/// Parses a request body that must be a JSON object. A body that is not JSON is
/// `Invalid JSON`; JSON of another shape is a validation error at `body`.
pub fn parse_top_object<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    let invalid = || ApiError::BadRequest("Invalid JSON".into());
    if nesting_depth(body) > MAX_JSON_DEPTH {
        return Err(ApiError::BadRequest(format!(
            "Invalid JSON: nested deeper than {MAX_JSON_DEPTH} levels"
        )));
    }
    let first = body.iter().find(|c| !c.is_ascii_whitespace());
    match serde_json::from_slice::<T>(body) {
        Ok(value) if first == Some(&b'{') => Ok(value),
        Err(e) if e.is_syntax() || e.is_eof() => Err(invalid()),
        // A key given twice is refused, never resolved silently to one of its values.
        Err(e) if e.to_string().starts_with("duplicate field") => {
            let message = e.to_string();
            let field = message.split(" at line").next().unwrap_or(&message);
            Err(ApiError::validation("body", field))
        }
        // Wrong shape, or an array that serde would read as a struct: is it JSON at all?
        _ => match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
            Ok(_) => Err(ApiError::validation("body", "expected an object")),
            Err(_) => Err(invalid()),
        },
    }
}

/// The deepest nesting of arrays and objects in `json`, ignoring brackets in strings.
/// One pass over the bytes, no recursion: safe on hostile input.
pub fn nesting_depth(json: &[u8]) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &c in json {
        if in_string {
            match c {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// The body of `POST /api/v1/tasks/{task}/trigger`: one `TriggerTaskRequestBody`.
pub fn parse_trigger_body(body: &[u8], now: Millis) -> Result<RunRequest, ApiError> {
    if body.is_empty() {
        return Err(ApiError::BadRequest("Request body is empty".into()));
    }
    let raw: &RawValue = parse_top_object(body)?;
    parse_item(raw, "", now)
}

/// One `TriggerTaskRequestBody` at `path` (`items[3]`, or `""` for a single trigger).
pub fn parse_item(raw: &RawValue, path: &str, now: Millis) -> Result<RunRequest, ApiError> {
    let item: ItemWire = parse_object(raw, path)?;
    let mut run = RunRequest {
        payload: item.payload.map(ToOwned::to_owned),
        payload_type: DEFAULT_PAYLOAD_TYPE.into(),
        context: item.context.map(ToOwned::to_owned),
        queue: None,
        queue_limit: None,
        concurrency_key: None,
        idempotency_key: None,
        idempotency_key_ttl_ms: DEFAULT_KEY_TTL_MS,
        ttl: None,
        delay_until: None,
        tags: Vec::new(),
        max_attempts: None,
        metadata: None,
        machine: None,
        priority: None,
        max_duration: None,
        is_test: false,
        debounce: None,
    };
    let Some(options) = item.options else {
        return Ok(run);
    };
    // `items[3].options.tags` in a batch, `options.tags` for a single trigger.
    let options_path = if path.is_empty() {
        "options".to_owned()
    } else {
        format!("{path}.options")
    };
    let at = |field: &str| format!("{options_path}.{field}");
    let o: OptionsWire = parse_object(options, &options_path)?;

    if let Some(queue) = o.queue {
        let q: QueueWire = parse_object(queue, &at("queue"))?;
        if let Some(name) = q.name {
            let name = as_string(name)
                .ok_or_else(|| ApiError::validation(at("queue.name"), "expected a string"))?;
            run.queue = clean_queue_name(&name);
        }
        if let Some(limit) = q.concurrency_limit {
            let n = as_u64(limit)
                .filter(|n| *n <= MAX_QUEUE_LIMIT)
                .ok_or_else(|| {
                    ApiError::validation(
                        at("queue.concurrencyLimit"),
                        "must be an integer from 0 to 1000",
                    )
                })?;
            run.queue_limit = Some(n as u32);
        }
    }
    if let Some(key) = o.concurrency_key {
        let key = match serde_json::from_str::<Value>(key.get()) {
            Ok(Value::String(s)) => s,
            Ok(Value::Number(n)) => n.to_string(),
            _ => {
                return Err(ApiError::validation(
                    at("concurrencyKey"),
                    "expected a string",
                ))
            }
        };
        if has_control_characters(&key) {
            return Err(ApiError::validation(
                at("concurrencyKey"),
                NO_CONTROL_CHARACTERS,
            ));
        }
        run.concurrency_key = Some(key);
    }
    if let Some(key) = o.idempotency_key {
        let key = as_string(key)
            .ok_or(KeyError::Length)
            .and_then(IdempotencyKey::parse)
            .map_err(|e| ApiError::validation(at("idempotencyKey"), e.reason()))?;
        run.idempotency_key = Some(key);
    }
    if let Some(ttl) = o.idempotency_key_ttl {
        run.idempotency_key_ttl_ms = as_string(ttl)
            .as_deref()
            .and_then(parse_key_ttl)
            .ok_or_else(|| {
                ApiError::validation(
                    at("idempotencyKeyTTL"),
                    "expected digits and one unit of s, m, h or d, like 30d or 12h",
                )
            })?;
    }
    if let Some(ttl) = o.ttl {
        run.ttl = Some(parse_ttl(ttl).ok_or_else(|| {
            ApiError::validation(
                at("ttl"),
                "expected a duration like 1h42m (units w, d, h or hr, m, s) or a non-negative whole number of seconds",
            )
        })?);
    }
    if let Some(delay) = o.delay {
        run.delay_until = parse_delay(delay, now)
            .ok_or_else(|| ApiError::validation(at("delay"), DELAY_REASON))?;
    }
    if let Some(tags) = o.tags {
        run.tags = parse_tags(tags, &at("tags"))?;
    }
    if let Some(n) = o.max_attempts {
        let n = as_u64(n).filter(|n| (1..=100).contains(n)).ok_or_else(|| {
            ApiError::validation(at("maxAttempts"), "must be an integer from 1 to 100")
        })?;
        run.max_attempts = Some(n as u32);
    }
    if let Some(metadata) = o.metadata {
        if metadata.get().len() > MAX_METADATA_BYTES {
            return Err(ApiError::validation(
                at("metadata"),
                "at most 262144 bytes of JSON",
            ));
        }
        run.metadata = Some(metadata.to_owned());
    }
    run.machine = o.machine.map(ToOwned::to_owned);
    if let Some(priority) = o.priority {
        let p = serde_json::from_str::<f64>(priority.get())
            .ok()
            .filter(|p| p.is_finite() && *p >= 0.0)
            .ok_or_else(|| {
                ApiError::validation(at("priority"), "expected a non-negative number")
            })?;
        run.priority = Some(p);
    }
    if let Some(max) = o.max_duration {
        let secs = as_u64(max)
            .filter(|s| (1..=u64::from(u32::MAX)).contains(s))
            .ok_or_else(|| {
                ApiError::validation(
                    at("maxDuration"),
                    "expected a positive whole number of seconds",
                )
            })?;
        run.max_duration = Some(secs as u32);
    }
    if let Some(test) = o.test {
        run.is_test = serde_json::from_str::<bool>(test.get())
            .map_err(|_| ApiError::validation(at("test"), "expected a boolean"))?;
    }
    if let Some(debounce) = o.debounce {
        if o.delay.is_some() {
            return Err(ApiError::validation(
                at("delay"),
                "not with debounce: the debounce's delay is the run's",
            ));
        }
        let debounce = Debounce::parse(debounce, at)?;
        run.delay_until = Some(debounce.first_due(now));
        run.debounce = Some(debounce);
    }
    if let Some(kind) = o.payload_type {
        run.payload_type = as_string(kind)
            .filter(|k| !k.is_empty() && k.len() <= 255)
            .ok_or_else(|| {
                ApiError::validation(
                    at("payloadType"),
                    "expected a string of 1 to 255 characters",
                )
            })?;
    }
    Ok(run)
}

/// Fills in what the task declares: its queue and that queue's limit, its default TTL,
/// attempts and attempt duration (its backoff goes with the command, for all its items).
/// A run keeps these even if the declaration changes later.
pub fn apply_task_defaults(run: &mut RunRequest, task: &str, settings: &TaskSettings) {
    run.max_attempts.get_or_insert(settings.max_attempts);
    run.max_duration.get_or_insert(settings.max_duration_secs);
    if run.queue.is_none() {
        run.queue = Some(
            settings
                .queue
                .clone()
                .unwrap_or_else(|| default_queue_name(task)),
        );
    }
    let on_task_queue = settings.queue.as_deref().map_or(
        run.queue.as_deref() == Some(&default_queue_name(task)),
        |q| run.queue.as_deref() == Some(q),
    );
    if run.queue_limit.is_none() && on_task_queue {
        run.queue_limit = settings.concurrency_limit;
    }
    if run.ttl.is_none() {
        run.ttl = Some(settings.ttl_ms.map(|ms| Ttl {
            text: format!("{}s", ms / 1000),
            ms,
        }));
    }
}

/// Deserializes an object, or answers `expected an object` at `path`.
fn parse_object<'a, T: Deserialize<'a>>(raw: &'a RawValue, path: &str) -> Result<T, ApiError> {
    if !raw.get().starts_with('{') {
        return Err(ApiError::validation(path, "expected an object"));
    }
    serde_json::from_str(raw.get()).map_err(|e| ApiError::validation(path, without_position(&e)))
}

/// serde_json's message without its ` at line 1 column 9` suffix.
fn without_position(error: &serde_json::Error) -> String {
    let text = error.to_string();
    match text.rfind(" at line ") {
        Some(cut) => text[..cut].to_owned(),
        None => text,
    }
}

fn as_string(raw: &RawValue) -> Option<String> {
    serde_json::from_str::<String>(raw.get()).ok()
}

fn as_u64(raw: &RawValue) -> Option<u64> {
    serde_json::from_str::<u64>(raw.get()).ok()
}

fn parse_ttl(raw: &RawValue) -> Option<Option<Ttl>> {
    let ttl = match serde_json::from_str::<Value>(raw.get()).ok()? {
        Value::String(text) => {
            let ms = parse_duration(&text)?;
            Ttl { text, ms }
        }
        Value::Number(n) => {
            let secs = n.as_u64()?;
            Ttl {
                text: format!("{secs}s"),
                ms: secs.checked_mul(1000)?,
            }
        }
        _ => return None,
    };
    Some((ttl.ms > 0).then_some(ttl))
}

/// A `delay`: `Some(None)` when valid but not in the future (zero, or a date in the past).
pub fn parse_delay(raw: &RawValue, now: Millis) -> Option<Option<Millis>> {
    let text = as_string(raw)?;
    let until = match parse_duration(&text) {
        Some(ms) => now.checked_add(i64::try_from(ms).ok()?)?,
        None => parse_iso(&text)?,
    };
    Some((until > now).then_some(until))
}

pub fn parse_tags(raw: &RawValue, path: &str) -> Result<Vec<String>, ApiError> {
    let list: Vec<Value> = match serde_json::from_str::<Value>(raw.get()) {
        Ok(Value::String(one)) => vec![Value::String(one)],
        Ok(Value::Array(many)) => many,
        _ => {
            return Err(ApiError::validation(
                path,
                "expected a string or an array of strings",
            ))
        }
    };
    let mut tags: Vec<String> = Vec::with_capacity(list.len());
    for (i, tag) in list.into_iter().enumerate() {
        let Value::String(tag) = tag else {
            return Err(ApiError::validation(
                format!("{path}[{i}]"),
                "expected a string",
            ));
        };
        if !(1..=MAX_TAG_CHARS).contains(&tag.chars().count()) {
            return Err(ApiError::validation(
                format!("{path}[{i}]"),
                "a tag has 1 to 64 characters",
            ));
        }
        if has_control_characters(&tag) {
            return Err(ApiError::validation(
                format!("{path}[{i}]"),
                NO_CONTROL_CHARACTERS,
            ));
        }
        if !tags.contains(&tag) {
            tags.push(tag);
        }
    }
    if tags.len() > MAX_TAGS {
        return Err(ApiError::validation(path, "at most 5 tags per run"));
    }
    Ok(tags)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::config::{RetryPolicy, Target};
    use serde_json::json;

    const NOW: Millis = 1_795_885_291_123;

    fn batch(body: Value) -> Result<Vec<RunRequest>, ApiError> {
        parse_batch_body(body.to_string().as_bytes(), 100, NOW)
    }

    fn one(options: Value) -> Result<RunRequest, ApiError> {
        batch(json!({"items": [{"payload": {"n": 1}, "options": options}]}))
            .map(|mut r| r.remove(0))
    }

    fn message(result: Result<impl std::fmt::Debug, ApiError>) -> String {
        result.unwrap_err().message()
    }

    #[test]
    fn a_new_run_wakes_its_store_at_its_delay_its_ttl_or_the_redelivery_first() {
        let now = NOW;
        let run = |options: Value| one(options).unwrap();
        let plain = run(json!({}));
        assert_eq!(plain.first_wake(now, 60_000), now + 60_000);
        let delayed = run(json!({"delay": "10s"}));
        assert_eq!(delayed.first_wake(now, 60_000), now + 10_000);
        let short_ttl = run(json!({"ttl": "5s"}));
        assert_eq!(short_ttl.first_wake(now, 60_000), now + 5_000);
        assert_eq!(short_ttl.kept_ttl().map(|t| t.ends(now)), Some(now + 5_000));
        let no_ttl = run(json!({"ttl": 0}));
        assert_eq!(no_ttl.kept_ttl(), None);
    }

    #[test]
    fn the_contracts_fixed_messages() {
        assert_eq!(
            message(parse_batch_body(b"", 100, NOW)),
            "Request body is empty"
        );
        for bad in [
            &b"{"[..],
            b"nope",
            b"{\"items\": [}",
            b"{\"items\":[]} x",
            b"\xff",
            b"{\"items\":[\"\xff\"]}",
            b" ",
        ] {
            assert_eq!(
                message(parse_batch_body(bad, 100, NOW)),
                "Invalid JSON",
                "{bad:?}"
            );
        }
        assert_eq!(message(batch(json!({"items": []}))), "No items to trigger");
        let items: Vec<Value> = (0..101).map(|_| json!({})).collect();
        assert_eq!(
            message(batch(json!({ "items": items }))),
            "Too many items. Maximum allowed batch size is 100."
        );
        let body = json!({"items": [{}, {}, {}]}).to_string();
        assert_eq!(
            message(parse_batch_body(body.as_bytes(), 2, NOW)),
            "Too many items. Maximum allowed batch size is 2."
        );
    }

    #[test]
    fn a_single_trigger_names_fields_without_an_item_prefix() {
        let err =
            parse_trigger_body(br#"{"payload": 1, "options": {"tags": 7}}"#, NOW).unwrap_err();
        assert_eq!(
            err.message(),
            "Validation error: options.tags: expected a string or an array of strings"
        );
        assert_eq!(
            parse_trigger_body(b"", NOW).unwrap_err().message(),
            "Request body is empty"
        );
        assert_eq!(
            parse_trigger_body(b"[1]", NOW).unwrap_err().message(),
            "Validation error: body: expected an object"
        );
        let run =
            parse_trigger_body(br#"{"payload": {"a": 1}, "options": {"tags": "x"}}"#, NOW).unwrap();
        assert_eq!(
            (run.payload.unwrap().get(), run.tags),
            (r#"{"a": 1}"#, vec!["x".to_owned()])
        );
    }

    #[test]
    fn deep_nesting_is_refused_not_a_crash() {
        let nest = |n: usize| {
            format!(
                "{{\"items\":[{{\"payload\":{}1{}}}]}}",
                "[".repeat(n),
                "]".repeat(n)
            )
        };
        assert_eq!(
            message(parse_batch_body(nest(10_000).as_bytes(), 100, NOW)),
            "Invalid JSON: nested deeper than 128 levels"
        );
        assert!(parse_batch_body(nest(125).as_bytes(), 100, NOW).is_ok());
        assert!(parse_batch_body(nest(126).as_bytes(), 100, NOW).is_err());
    }

    #[test]
    fn brackets_inside_strings_do_not_count_as_nesting() {
        assert_eq!(nesting_depth(br#"{"a": "[[[[{{{{\"[[["}"#), 1);
        assert_eq!(nesting_depth(br#"[[1], {"b": [2]}]"#), 3);
        assert_eq!(nesting_depth(b"]]]]"), 0);
    }

    #[test]
    fn wrong_shapes_name_their_path() {
        for (body, expected) in [
            (json!([1]), "Validation error: body: expected an object"),
            (json!({}), "Validation error: items: required"),
            (
                json!({"items": {}}),
                "Validation error: items: expected an array",
            ),
            (
                json!({"items": [1]}),
                "Validation error: items[0]: expected an object",
            ),
            (
                json!({"items": [{}, {"options": []}]}),
                "Validation error: items[1].options: expected an object",
            ),
            (
                json!({"items": [{"options": {"queue": "q"}}]}),
                "Validation error: items[0].options.queue: expected an object",
            ),
            (
                json!({"items": [{"options": {"queue": {"name": {"name": "q", "concurrencyLimit": 3}}}}]}),
                "Validation error: items[0].options.queue.name: expected a string",
            ),
        ] {
            assert_eq!(message(batch(body.clone())), expected, "{body}");
        }
    }

    #[test]
    fn every_bad_option_is_rejected_with_its_reason() {
        let cases = [
            (json!({"queue": {"concurrencyLimit": 1001}}), "queue.concurrencyLimit: must be an integer from 0 to 1000"),
            (json!({"queue": {"concurrencyLimit": -1}}), "queue.concurrencyLimit: must be an integer from 0 to 1000"),
            (json!({"queue": {"concurrencyLimit": 2.5}}), "queue.concurrencyLimit: must be an integer from 0 to 1000"),
            (json!({"queue": {"concurrencyLimit": "5"}}), "queue.concurrencyLimit: must be an integer from 0 to 1000"),
            (json!({"concurrencyKey": ["a"]}), "concurrencyKey: expected a string"),
            (json!({"idempotencyKey": ""}), "idempotencyKey: expected a string of 1 to 2048 characters"),
            (json!({"idempotencyKey": "k".repeat(2049)}), "idempotencyKey: expected a string of 1 to 2048 characters"),
            (json!({"idempotencyKey": 5}), "idempotencyKey: expected a string of 1 to 2048 characters"),
            (json!({"idempotencyKey": "a\u{0}b"}), "idempotencyKey: must not contain control characters"),
            (json!({"idempotencyKey": "line\r\nbreak"}), "idempotencyKey: must not contain control characters"),
            (json!({"concurrencyKey": "a\u{0}"}), "concurrencyKey: must not contain control characters"),
            (json!({"tags": ["ok", "n\u{0}ul"]}), "tags[1]: must not contain control characters"),
            (json!({"idempotencyKeyTTL": "1h30m"}), "idempotencyKeyTTL: expected digits and one unit of s, m, h or d, like 30d or 12h"),
            (json!({"ttl": "1.5h"}), "ttl: expected a duration like 1h42m (units w, d, h or hr, m, s) or a non-negative whole number of seconds"),
            (json!({"ttl": -5}), "ttl: expected a duration like 1h42m (units w, d, h or hr, m, s) or a non-negative whole number of seconds"),
            (json!({"ttl": 1.5}), "ttl: expected a duration like 1h42m (units w, d, h or hr, m, s) or a non-negative whole number of seconds"),
            (json!({"ttl": true}), "ttl: expected a duration like 1h42m (units w, d, h or hr, m, s) or a non-negative whole number of seconds"),
            (json!({"delay": "1 h"}), "delay: expected a duration like 1h42m (units w, d, h or hr, m, s) or an ISO-8601 date-time like 2030-01-01T00:00:00Z"),
            (json!({"delay": 60}), "delay: expected a duration like 1h42m (units w, d, h or hr, m, s) or an ISO-8601 date-time like 2030-01-01T00:00:00Z"),
            (json!({"delay": "2030-13-01T00:00:00Z"}), "delay: expected a duration like 1h42m (units w, d, h or hr, m, s) or an ISO-8601 date-time like 2030-01-01T00:00:00Z"),
            (json!({"tags": ["a", "b", "c", "d", "e", "f"]}), "tags: at most 5 tags per run"),
            (json!({"tags": ["ok", ""]}), "tags[1]: a tag has 1 to 64 characters"),
            (json!({"tags": ["t".repeat(65)]}), "tags[0]: a tag has 1 to 64 characters"),
            (json!({"tags": ["ok", 3]}), "tags[1]: expected a string"),
            (json!({"tags": 3}), "tags: expected a string or an array of strings"),
            (json!({"maxAttempts": 0}), "maxAttempts: must be an integer from 1 to 100"),
            (json!({"maxAttempts": 101}), "maxAttempts: must be an integer from 1 to 100"),
            (json!({"metadata": {"blob": "m".repeat(MAX_METADATA_BYTES)}}), "metadata: at most 262144 bytes of JSON"),
            (json!({"priority": "high"}), "priority: expected a non-negative number"),
            (json!({"maxDuration": 0}), "maxDuration: expected a positive whole number of seconds"),
            (json!({"test": "yes"}), "test: expected a boolean"),
            (json!({"payloadType": 7}), "payloadType: expected a string of 1 to 255 characters"),
            (json!({"priority": -1}), "priority: expected a non-negative number"),
            (json!({"debounce": {"key": "k"}}), "debounce.delay: required"),
            (json!({"debounce": {"key": "k", "delay": "5s"}, "delay": "1h"}), "delay: not with debounce: the debounce's delay is the run's"),
            (json!({"debounce": {"key": "k", "delay": "5s", "maxDelay": "2s"}}), "debounce.delay: must be shorter than debounce.maxDelay"),
        ];
        for (options, reason) in cases {
            let expected = format!("Validation error: items[0].options.{reason}");
            assert_eq!(message(one(options.clone())), expected, "{options}");
        }
    }

    #[test]
    fn a_debounce_delays_the_run_by_its_delay() {
        let runs = batch(json!({"items": [{"options": {"debounce": {"key": "k", "delay": "5s", "mode": "trailing"}}}]})).unwrap();
        assert_eq!(runs[0].delay_until, Some(NOW + 5000));
        let debounce = runs[0].debounce.as_ref().unwrap();
        assert_eq!((debounce.key.as_str(), debounce.trailing), ("k", true));
    }

    #[test]
    fn the_error_names_the_first_bad_item() {
        let body = json!({"items": [{}, {}, {}, {"options": {"tags": ["a","b","c","d","e","f"]}}]});
        assert_eq!(
            message(batch(body)),
            "Validation error: items[3].options.tags: at most 5 tags per run"
        );
    }

    #[test]
    fn duplicate_fields_are_rejected() {
        let body = br#"{"items":[{"payload":1,"payload":2}]}"#;
        assert_eq!(
            message(parse_batch_body(body, 100, NOW)),
            "Validation error: items[0]: duplicate field `payload`"
        );
        let body = br#"{"items":[{"payload":1}],"items":[]}"#;
        assert_eq!(
            message(parse_batch_body(body, 100, NOW)),
            "Validation error: body: duplicate field `items`"
        );
    }

    #[test]
    fn payload_context_and_metadata_are_kept_byte_for_byte() {
        let body = br#"{"items":[{"payload":{"big": 123456789012345678901234567890, "f": 1.50, "s":"\u00e9"},"context": [1 ,2],"options":{"metadata":{"a" : 1}}}]}"#;
        let run = parse_batch_body(body, 100, NOW).unwrap().remove(0);
        assert_eq!(
            run.payload.unwrap().get(),
            r#"{"big": 123456789012345678901234567890, "f": 1.50, "s":"\u00e9"}"#
        );
        assert_eq!(run.context.unwrap().get(), "[1 ,2]");
        assert_eq!(run.metadata.unwrap().get(), r#"{"a" : 1}"#);
        assert_eq!(run.payload_type, "application/json");
    }

    #[test]
    fn absent_and_null_options_mean_defaults() {
        for item in [
            json!({}),
            json!({"payload": null, "options": null}),
            json!({"options": {"ttl": null, "tags": null}}),
        ] {
            let run = batch(json!({ "items": [item] })).unwrap().remove(0);
            assert!(run.payload.is_none() && run.tags.is_empty() && run.ttl.is_none());
            assert_eq!(run.idempotency_key_ttl_ms, DEFAULT_KEY_TTL_MS);
        }
    }

    #[test]
    fn sdk_shapes_are_accepted() {
        // The item SDK 3.2.1 sends, as observed on the wire.
        let run = one(json!({
            "queue": {"name": "tenant-queue", "concurrencyLimit": 5}, "concurrencyKey": "tenant-a",
            "payloadType": "application/super+json",
            "idempotencyKey": "3b6a198e6f182f27b91aa5a8b37ab70d4c54d3889e4a947243c1afd3e718ca66",
            "delay": "1h", "ttl": "10m", "tags": ["tenant:a", "kind:test"]
        }))
        .unwrap();
        assert_eq!(run.queue.as_deref(), Some("tenant-queue"));
        assert_eq!(run.queue_limit, Some(5));
        assert_eq!(run.concurrency_key.as_deref(), Some("tenant-a"));
        assert_eq!(run.payload_type, "application/super+json");
        assert_eq!(run.delay_until, Some(NOW + 3_600_000));
        assert_eq!(
            run.ttl,
            Some(Some(Ttl {
                text: "10m".into(),
                ms: 600_000
            }))
        );
        assert_eq!(run.tags, ["tenant:a", "kind:test"]);

        let run = one(json!({
            "delay": "2030-01-01T00:00:00.000Z", "ttl": 3600, "tags": "single-tag", "maxAttempts": 2,
            "metadata": {"source": "drive-sdk3"}, "maxDuration": 300, "machine": "small-1x",
            "priority": 10, "idempotencyKeyTTL": "1h", "payloadSize": 16,
            "idempotencyKeyOptions": {"key": "k", "scope": "run"}, "test": true
        }))
        .unwrap();
        assert_eq!(run.delay_until, parse_iso("2030-01-01T00:00:00Z"));
        assert_eq!(
            run.ttl,
            Some(Some(Ttl {
                text: "3600s".into(),
                ms: 3_600_000
            }))
        );
        assert_eq!(run.tags, ["single-tag"]);
        assert_eq!(run.max_attempts, Some(2));
        assert_eq!(run.max_duration, Some(300));
        assert_eq!(run.machine.unwrap().get(), "\"small-1x\"");
        assert_eq!(run.priority, Some(10.0));
        assert_eq!(run.idempotency_key_ttl_ms, 3_600_000);
        assert!(run.is_test);
    }

    #[test]
    fn option_values_are_normalised() {
        let run = one(
            json!({"concurrencyKey": 42, "tags": ["a", "b", "a"], "queue": {"name": "my queue!"}}),
        )
        .unwrap();
        assert_eq!(run.concurrency_key.as_deref(), Some("42"));
        assert_eq!(run.tags, ["a", "b"], "duplicates collapse");
        assert_eq!(run.queue.as_deref(), Some("myqueue"));
        let six_with_duplicates = one(json!({"tags": ["a", "b", "c", "d", "e", "a"]})).unwrap();
        assert_eq!(six_with_duplicates.tags.len(), 5);
        assert_eq!(one(json!({"queue": {"name": "!!!"}})).unwrap().queue, None);
        assert_eq!(one(json!({"ttl": 0})).unwrap().ttl, Some(None));
        assert_eq!(one(json!({"ttl": "0s"})).unwrap().ttl, Some(None));
    }

    #[test]
    fn past_dates_and_zero_delays_run_now() {
        assert_eq!(
            one(json!({"delay": "2001-01-01T00:00:00Z"}))
                .unwrap()
                .delay_until,
            None
        );
        assert_eq!(one(json!({"delay": "0s"})).unwrap().delay_until, None);
        assert_eq!(
            one(json!({"delay": "2w"})).unwrap().delay_until,
            Some(NOW + 14 * 86_400_000)
        );
    }

    #[test]
    fn an_item_crosses_to_its_store_whole_and_without_the_options_it_lacks() {
        let plain = one(json!({})).unwrap();
        let wire = serde_json::to_string(&plain).unwrap();
        assert!(!wire.contains("null"), "{wire}");
        let full = one(json!({
            "queue": {"name": "q", "concurrencyLimit": 3}, "concurrencyKey": "c",
            "idempotencyKey": "k", "idempotencyKeyTTL": "1h", "ttl": "10m",
            "tags": ["a"], "maxAttempts": 4, "metadata": {"m": 1}, "machine": "small-1x",
            "priority": 5, "maxDuration": 60, "test": true,
            "debounce": {"key": "d", "delay": "5s", "mode": "trailing"}
        }))
        .unwrap();
        let delayed = one(json!({"delay": "1m", "ttl": 0})).unwrap();
        for item in [plain, full, delayed] {
            let wire = serde_json::to_string(&item).unwrap();
            let back: RunRequest = serde_json::from_str(&wire).unwrap();
            assert_eq!(serde_json::to_string(&back).unwrap(), wire);
            assert_eq!(format!("{back:?}"), format!("{item:?}"));
        }
    }

    #[test]
    fn task_defaults_fill_the_gaps() {
        let settings = TaskSettings {
            target: Target::Endpoint("https://x".into()),
            queue: Some("shared".into()),
            concurrency_limit: Some(4),
            gate_shards: None,
            total_limit: None,
            throttle: None,
            max_attempts: 3,
            max_duration_secs: 300,
            ttl_ms: Some(60_000),
            retry: RetryPolicy::default(),
            shards: 1,
            schedule: None,
        };
        let mut plain = one(json!({})).unwrap();
        apply_task_defaults(&mut plain, "t", &settings);
        assert_eq!(plain.queue.as_deref(), Some("shared"));
        assert_eq!(plain.queue_limit, Some(4));
        assert_eq!(
            plain.ttl,
            Some(Some(Ttl {
                text: "60s".into(),
                ms: 60_000
            }))
        );

        let mut own =
            one(json!({"queue": {"name": "other"}, "ttl": 0, "maxAttempts": 7, "maxDuration": 9}))
                .unwrap();
        apply_task_defaults(&mut own, "t", &settings);
        assert_eq!(own.queue.as_deref(), Some("other"));
        assert_eq!(
            own.queue_limit, None,
            "the task's limit belongs to the task's queue"
        );
        assert_eq!(own.ttl, Some(None), "an explicit 0 keeps no TTL");
        assert_eq!(
            (own.max_attempts, own.max_duration),
            (Some(7), Some(9)),
            "the item's own win"
        );

        let bare = TaskSettings {
            queue: None,
            ttl_ms: None,
            concurrency_limit: Some(2),
            ..settings
        };
        let mut run = one(json!({})).unwrap();
        apply_task_defaults(&mut run, "t", &bare);
        assert_eq!(run.queue.as_deref(), Some("task/t"));
        assert_eq!(run.queue_limit, Some(2));
        assert_eq!(run.ttl, Some(None));
    }
}

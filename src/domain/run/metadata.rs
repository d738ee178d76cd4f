//! Run metadata (docs/API.md section 5): a JSON object per run, replaced whole or changed
//! by Trigger.dev's operations, applied in order, all or none:
//!
//! - `set {key, value}`: the value at `key`;
//! - `delete {key}`: removes `key`;
//! - `append {key, value}`: adds `value` to the array at `key` (a missing key becomes
//!   `[value]`, a value that is not an array becomes `[old, value]`);
//! - `remove {key, value}`: removes every element equal to `value` from the array at
//!   `key`;
//! - `increment {key, value}`: adds the number `value` to the number at `key` (missing: 0);
//! - `update {value}`: merges the object `value` into the metadata, key by key.
//!
//! A key is a top-level name (`progress`) or a JSON path below the root (`$.steps[2].done`,
//! `$['a b'].c`): names and array indexes; setting through a missing name creates an
//! object, an index may name an existing element or the next one. The result is at most
//! [`MAX_METADATA_BYTES`] of JSON.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::domain::api::error::ApiError;
pub use crate::domain::intake::trigger::MAX_METADATA_BYTES;
use crate::domain::intake::trigger::{parse_tags, parse_top_object, MAX_TAGS};

/// One step of a path: an object's name or an array's index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Step {
    Name(String),
    Index(usize),
}

/// One change, as sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Operation {
    Set { key: Vec<Step>, value: Value },
    Delete { key: Vec<Step> },
    Append { key: Vec<Step>, value: Value },
    Remove { key: Vec<Step>, value: Value },
    Increment { key: Vec<Step>, by: f64 },
    Update { value: Map<String, Value> },
}

/// `PUT /api/v1/runs/{runId}/metadata`: a whole new `metadata` object, then
/// `operations` on top of it (or of the run's metadata), in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Update {
    pub replace: Option<Map<String, Value>>,
    pub operations: Vec<Operation>,
}

/// Parses the body of `PUT /api/v1/runs/{runId}/metadata` (Trigger.dev's
/// `{metadata?, operations?, parentOperations?, rootOperations?}`; a run here has no
/// parent, so the last two are accepted and have nothing to change).
pub fn parse_update(body: &[u8]) -> Result<Update, ApiError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Body {
        metadata: Option<Value>,
        operations: Option<Value>,
        #[allow(dead_code)]
        parent_operations: Option<Value>,
        #[allow(dead_code)]
        root_operations: Option<Value>,
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::BadRequest("Request body is empty".into()));
    }
    let parsed: Body = parse_top_object(body)?;
    let replace = match parsed.metadata {
        None | Some(Value::Null) => None,
        Some(Value::Object(map)) => Some(map),
        Some(_) => return Err(ApiError::validation("metadata", "expected an object")),
    };
    let operations = match parsed.operations {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(ops)) => ops
            .iter()
            .enumerate()
            .map(|(i, op)| {
                parse_operation(op)
                    .map_err(|(f, r)| ApiError::validation(format!("operations[{i}]{f}"), r))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(ApiError::validation("operations", "expected an array")),
    };
    Ok(Update {
        replace,
        operations,
    })
}

/// One operation; a refusal's field is relative to it (`.key`, `.value`, or `` for itself).
fn parse_operation(op: &Value) -> Result<Operation, Refusal> {
    let Value::Object(fields) = op else {
        return Err((
            String::new(),
            "expected an object {type, key?, value?}".into(),
        ));
    };
    let key = || match fields.get("key") {
        Some(Value::String(k)) => parse_key(k).map_err(|r| (".key".to_owned(), r)),
        None => Err((".key".to_owned(), "required".to_owned())),
        Some(_) => Err((".key".to_owned(), "expected a string".to_owned())),
    };
    let value = || {
        fields
            .get("value")
            .cloned()
            .ok_or((".value".to_owned(), "required".to_owned()))
    };
    match fields.get("type").and_then(Value::as_str) {
        Some("set") => Ok(Operation::Set {
            key: key()?,
            value: value()?,
        }),
        Some("delete") => Ok(Operation::Delete { key: key()? }),
        Some("append") => Ok(Operation::Append {
            key: key()?,
            value: value()?,
        }),
        Some("remove") => Ok(Operation::Remove {
            key: key()?,
            value: value()?,
        }),
        Some("increment") => match value()? {
            Value::Number(n) => Ok(Operation::Increment {
                key: key()?,
                by: n.as_f64().unwrap_or(0.0),
            }),
            _ => Err((".value".into(), "expected a number".into())),
        },
        Some("update") => match value()? {
            Value::Object(map) => Ok(Operation::Update { value: map }),
            _ => Err((".value".into(), "expected an object".into())),
        },
        _ => Err((
            ".type".into(),
            "expected set, delete, append, remove, increment or update".into(),
        )),
    }
}

/// The new metadata of a run whose metadata is `current` (its stored JSON, if any): the
/// update applied, and at most [`MAX_METADATA_BYTES`] of JSON.
pub fn updated(current: Option<&str>, update: &Update) -> Result<String, ApiError> {
    let start = match &update.replace {
        Some(map) => Value::Object(map.clone()),
        None => current
            .and_then(|text| serde_json::from_str(text).ok())
            .unwrap_or(Value::Null),
    };
    let next = apply(&start, &update.operations).map_err(|(f, r)| ApiError::validation(f, r))?;
    let text = next.to_string();
    if text.len() > MAX_METADATA_BYTES {
        return Err(ApiError::validation(
            "metadata",
            format!("at most {MAX_METADATA_BYTES} bytes of JSON"),
        ));
    }
    Ok(text)
}

/// `POST /api/v1/runs/{runId}/tags`, `{"tags": string | string[]}`: the tags to add,
/// each checked as a trigger's are.
pub fn parse_tags_body(body: &[u8]) -> Result<Vec<String>, ApiError> {
    #[derive(Deserialize)]
    struct Body<'a> {
        #[serde(borrow)]
        tags: Option<&'a serde_json::value::RawValue>,
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::BadRequest("Request body is empty".into()));
    }
    let parsed: Body = parse_top_object(body)?;
    let raw = parsed
        .tags
        .ok_or_else(|| ApiError::validation("tags", "required"))?;
    parse_tags(raw, "tags")
}

/// A run's tags with `added` after them, each once; more than [`MAX_TAGS`] is refused.
pub fn merged_tags(current: &[String], added: &[String]) -> Result<Vec<String>, ApiError> {
    let mut tags = current.to_vec();
    for tag in added {
        if !tags.contains(tag) {
            tags.push(tag.clone());
        }
    }
    if tags.len() > MAX_TAGS {
        return Err(ApiError::validation(
            "tags",
            format!(
                "at most {MAX_TAGS} tags per run: it has {}, and {} more would make {}",
                current.len(),
                tags.len() - current.len(),
                tags.len()
            ),
        ));
    }
    Ok(tags)
}

/// Why a change cannot apply: `(field, reason)`, the field relative to the operation.
pub type Refusal = (String, String);

/// Reads a key: a plain name, or a JSON path from `$`.
pub fn parse_key(key: &str) -> Result<Vec<Step>, String> {
    let Some(path) = key.strip_prefix('$') else {
        if key.is_empty() {
            return Err("a key has at least one character".into());
        }
        return checked(vec![Step::Name(key.to_owned())]);
    };
    let mut steps = Vec::new();
    let mut rest = path;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('.') {
            let end = after.find(['.', '[']).unwrap_or(after.len());
            if end == 0 {
                return Err(format!("expected a name after '.' in {key:?}"));
            }
            steps.push(Step::Name(after[..end].to_owned()));
            rest = &after[end..];
        } else if let Some(after) = rest.strip_prefix("['") {
            let end = after
                .find("']")
                .ok_or_else(|| format!("an unclosed ['…'] in {key:?}"))?;
            steps.push(Step::Name(after[..end].to_owned()));
            rest = &after[end + 2..];
        } else if let Some(after) = rest.strip_prefix('[') {
            let end = after
                .find(']')
                .ok_or_else(|| format!("an unclosed [ in {key:?}"))?;
            let index = after[..end]
                .parse::<usize>()
                .map_err(|_| format!("expected an array index in [] in {key:?}"))?;
            steps.push(Step::Index(index));
            rest = &after[end + 1..];
        } else {
            return Err(format!("expected '.' or '[' after $ in {key:?}"));
        }
    }
    if steps.is_empty() {
        return Err("A JSON path key must name a segment below $".into());
    }
    checked(steps)
}

fn checked(steps: Vec<Step>) -> Result<Vec<Step>, String> {
    let dangerous = steps.iter().any(|s| {
        matches!(s, Step::Name(n) if ["__proto__", "constructor", "prototype"].contains(&n.as_str()))
    });
    match dangerous {
        true => Err("Metadata key may not reference __proto__, constructor, or prototype".into()),
        false => Ok(steps),
    }
}

/// Applies `operations` to `metadata` in order; the new metadata, or why not (nothing is
/// applied then). `i` in a refusal's field is the operation's index.
pub fn apply(metadata: &Value, operations: &[Operation]) -> Result<Value, Refusal> {
    let mut doc = match metadata {
        Value::Object(_) => metadata.clone(),
        _ => Value::Object(Map::new()),
    };
    for (i, op) in operations.iter().enumerate() {
        let at = |field: &str| format!("operations[{i}].{field}");
        match op {
            Operation::Set { key, value } => {
                *slot(&mut doc, key).map_err(|e| (at("key"), e))? = value.clone();
            }
            Operation::Delete { key } => delete(&mut doc, key),
            Operation::Append { key, value } => {
                let target = slot(&mut doc, key).map_err(|e| (at("key"), e))?;
                match target {
                    Value::Array(items) => items.push(value.clone()),
                    Value::Null => *target = Value::Array(vec![value.clone()]),
                    other => *other = Value::Array(vec![other.take(), value.clone()]),
                }
            }
            Operation::Remove { key, value } => {
                if let Some(Value::Array(items)) = get_mut(&mut doc, key) {
                    items.retain(|item| item != value);
                }
            }
            Operation::Increment { key, by } => {
                let target = slot(&mut doc, key).map_err(|e| (at("key"), e))?;
                let current = match target {
                    Value::Null => 0.0,
                    Value::Number(n) => n.as_f64().unwrap_or(0.0),
                    _ => return Err((at("key"), "the value there is not a number".into())),
                };
                *target = number(current + by)
                    .ok_or_else(|| (at("value"), "not a finite number".into()))?;
            }
            Operation::Update { value } => {
                if let Value::Object(map) = &mut doc {
                    for (k, v) in value {
                        map.insert(k.clone(), v.clone());
                    }
                }
            }
        }
    }
    Ok(doc)
}

/// Whole numbers stay integers, as JavaScript prints them.
fn number(n: f64) -> Option<Value> {
    if !n.is_finite() {
        return None;
    }
    if n.fract() == 0.0 && n.abs() < 9_007_199_254_740_992.0 {
        return Some(Value::from(n as i64));
    }
    serde_json::Number::from_f64(n).map(Value::Number)
}

/// The value at `key`, made if missing (objects along the way; `null` at the end).
fn slot<'a>(doc: &'a mut Value, key: &[Step]) -> Result<&'a mut Value, String> {
    let mut here = doc;
    for step in key {
        here = match step {
            Step::Name(name) => {
                if here.is_null() {
                    *here = Value::Object(Map::new());
                }
                match here {
                    Value::Object(map) => map.entry(name.clone()).or_insert(Value::Null),
                    _ => return Err(format!("{name:?} is below a value that is not an object")),
                }
            }
            Step::Index(index) => {
                if here.is_null() {
                    *here = Value::Array(Vec::new());
                }
                let Value::Array(items) = here else {
                    return Err(format!("[{index}] is below a value that is not an array"));
                };
                if *index > items.len() {
                    return Err(format!(
                        "index {index} is past the array's end ({})",
                        items.len()
                    ));
                }
                if *index == items.len() {
                    items.push(Value::Null);
                }
                &mut items[*index]
            }
        };
    }
    Ok(here)
}

fn get_mut<'a>(doc: &'a mut Value, key: &[Step]) -> Option<&'a mut Value> {
    let mut here = doc;
    for step in key {
        here = match (step, here) {
            (Step::Name(name), Value::Object(map)) => map.get_mut(name)?,
            (Step::Index(index), Value::Array(items)) => items.get_mut(*index)?,
            _ => return None,
        };
    }
    Some(here)
}

fn delete(doc: &mut Value, key: &[Step]) {
    let Some((last, parent)) = key.split_last() else {
        return;
    };
    match (last, get_mut(doc, parent)) {
        (Step::Name(name), Some(Value::Object(map))) => {
            map.remove(name);
        }
        (Step::Index(index), Some(Value::Array(items))) if *index < items.len() => {
            items.remove(*index);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn key(k: &str) -> Vec<Step> {
        parse_key(k).unwrap()
    }

    #[test]
    fn keys_are_names_or_paths_below_the_root() {
        assert_eq!(key("progress"), [Step::Name("progress".into())]);
        assert_eq!(
            key("$.steps[2].done"),
            [
                Step::Name("steps".into()),
                Step::Index(2),
                Step::Name("done".into())
            ]
        );
        assert_eq!(
            key("$['a b'].c"),
            [Step::Name("a b".into()), Step::Name("c".into())]
        );
        for bad in [
            "",
            "$",
            "$x",
            "$.",
            "$.a[",
            "$.a[x]",
            "$['a",
            "$.__proto__.x",
            "constructor",
        ] {
            assert!(parse_key(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn each_operation_changes_what_it_names() {
        let start = json!({"count": 1, "tags": ["a", "b", "a"], "keep": true});
        let ops = vec![
            Operation::Set {
                key: key("$.progress.percent"),
                value: json!(50),
            },
            Operation::Increment {
                key: key("count"),
                by: 2.0,
            },
            Operation::Increment {
                key: key("fresh"),
                by: 1.5,
            },
            Operation::Append {
                key: key("tags"),
                value: json!("c"),
            },
            Operation::Append {
                key: key("log"),
                value: json!("first"),
            },
            Operation::Append {
                key: key("keep"),
                value: json!(false),
            },
            Operation::Remove {
                key: key("tags"),
                value: json!("a"),
            },
            Operation::Set {
                key: key("$.steps[0]"),
                value: json!("load"),
            },
            Operation::Update {
                value: json!({"status": "running"}).as_object().unwrap().clone(),
            },
            Operation::Delete {
                key: key("$.progress.percent"),
            },
        ];
        assert_eq!(
            apply(&start, &ops),
            Ok(json!({
                "count": 3, "fresh": 1.5, "tags": ["b", "c"], "log": ["first"],
                "keep": [true, false], "progress": {}, "steps": ["load"], "status": "running",
            }))
        );
    }

    #[test]
    fn a_failing_operation_applies_nothing_and_names_itself() {
        let start = json!({"name": "x", "list": [1]});
        let ops = vec![
            Operation::Set {
                key: key("ok"),
                value: json!(1),
            },
            Operation::Increment {
                key: key("name"),
                by: 1.0,
            },
        ];
        assert_eq!(
            apply(&start, &ops),
            Err((
                "operations[1].key".into(),
                "the value there is not a number".into()
            ))
        );
        let past_end = vec![Operation::Set {
            key: key("$.list[3]"),
            value: json!(1),
        }];
        assert_eq!(apply(&start, &past_end).unwrap_err().0, "operations[0].key");
        let below_text = vec![Operation::Set {
            key: key("$.name.first"),
            value: json!(1),
        }];
        assert!(apply(&start, &below_text).is_err());
        // Not an object yet: operations start from {}.
        assert_eq!(
            apply(
                &Value::Null,
                &[Operation::Set {
                    key: key("a"),
                    value: json!(1)
                }]
            ),
            Ok(json!({"a": 1}))
        );
    }

    #[test]
    fn an_update_body_is_checked_field_by_field() {
        let update = parse_update(
            br#"{"metadata":{"a":1},"operations":[{"type":"increment","key":"a","value":2}]}"#,
        )
        .unwrap();
        assert_eq!(
            updated(Some(r#"{"old":true}"#), &update),
            Ok(r#"{"a":3}"#.to_owned())
        );
        let ops_only =
            parse_update(br#"{"operations":[{"type":"set","key":"$.p.q","value":[1]}]}"#).unwrap();
        assert_eq!(
            updated(Some(r#"{"old":true}"#), &ops_only),
            Ok(r#"{"old":true,"p":{"q":[1]}}"#.to_owned())
        );
        for (body, message) in [
            (&b""[..], "Request body is empty"),
            (b"[]", "Validation error: body: expected an object"),
            (br#"{"metadata":[1]}"#, "Validation error: metadata: expected an object"),
            (br#"{"operations":{}}"#, "Validation error: operations: expected an array"),
            (br#"{"operations":[{"type":"bump","key":"a"}]}"#, "Validation error: operations[0].type: expected set, delete, append, remove, increment or update"),
            (br#"{"operations":[{"type":"set","value":1}]}"#, "Validation error: operations[0].key: required"),
            (br#"{"operations":[{"type":"set","key":"a"}]}"#, "Validation error: operations[0].value: required"),
            (br#"{"operations":[{"type":"increment","key":"a","value":"1"}]}"#, "Validation error: operations[0].value: expected a number"),
            (br#"{"operations":[{"type":"set","key":"$","value":1}]}"#, "Validation error: operations[0].key: A JSON path key must name a segment below $"),
        ] {
            assert_eq!(parse_update(body).unwrap_err().message(), message, "{:?}", String::from_utf8_lossy(body));
        }
        let big = Update {
            replace: None,
            operations: vec![Operation::Set {
                key: key("blob"),
                value: json!("x".repeat(MAX_METADATA_BYTES)),
            }],
        };
        assert_eq!(
            updated(None, &big).unwrap_err().message(),
            "Validation error: metadata: at most 262144 bytes of JSON"
        );
    }

    #[test]
    fn added_tags_join_once_and_stay_within_five() {
        assert_eq!(
            parse_tags_body(br#"{"tags":"one"}"#),
            Ok(vec!["one".to_owned()])
        );
        assert_eq!(
            parse_tags_body(br#"{}"#).unwrap_err().message(),
            "Validation error: tags: required"
        );
        let current = vec!["a".to_owned(), "b".to_owned()];
        let added = vec!["b".to_owned(), "c".to_owned()];
        assert_eq!(
            merged_tags(&current, &added),
            Ok(vec!["a".into(), "b".into(), "c".into()])
        );
        let many: Vec<String> = ["c", "d", "e", "f"].iter().map(|t| t.to_string()).collect();
        assert_eq!(
            merged_tags(&current, &many).unwrap_err().message(),
            "Validation error: tags: at most 5 tags per run: it has 2, and 4 more would make 6"
        );
    }
}

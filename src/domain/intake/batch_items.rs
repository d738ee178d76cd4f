//! The items of a two-step batch as one `/items` stream brings them (docs/API.md section
//! 6): each NDJSON line checked and turned into a run request queued for its task's store,
//! or into a failed item (an undeclared task, an item over 3 MiB), or counted as a
//! duplicate of an index the stream already brought. A line that cannot name its item is
//! a 400 that ends the stream. The edge stores what this queues, a group at a time.

use std::collections::{HashMap, HashSet};

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::domain::api::error::ApiError;
use crate::domain::basics::time::Millis;
use crate::domain::config::TaskSettings;
use crate::domain::intake::ndjson::{identify, Line};
use crate::domain::intake::trigger::{apply_task_defaults, parse_item, RunRequest};

/// Items stored per group.
pub const GROUP_ITEMS: usize = 100;

/// A received item, not yet stored.
#[derive(Debug)]
pub struct PendingItem {
    pub index: u32,
    pub task: String,
    pub item: RunRequest,
}

/// A received item that makes no run, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedItem {
    pub index: u32,
    pub task: String,
    pub error: String,
    pub code: &'static str,
}

/// One stream's items, between two flushes.
#[derive(Debug)]
pub struct ItemStream {
    run_count: u64,
    /// The largest line kept whole (the body limit); a group is stored once its items
    /// add up to this many bytes.
    max_line_bytes: usize,
    seen: HashSet<u32>,
    pending: Vec<PendingItem>,
    pending_bytes: usize,
    failed: Vec<FailedItem>,
    deduplicated: usize,
}

impl ItemStream {
    pub fn new(run_count: u64, max_line_bytes: usize) -> ItemStream {
        ItemStream {
            run_count,
            max_line_bytes,
            seen: HashSet::new(),
            pending: Vec::new(),
            pending_bytes: 0,
            failed: Vec::new(),
            deduplicated: 0,
        }
    }

    /// Indexes this stream brought twice (the second is dropped).
    pub fn deduplicated(&self) -> usize {
        self.deduplicated
    }

    /// Whether a group is ready to be stored.
    pub fn group_full(&self) -> bool {
        self.pending.len() >= GROUP_ITEMS || self.pending_bytes >= self.max_line_bytes
    }

    /// The items queued since the last call, and the failed ones.
    pub fn take_group(&mut self) -> (Vec<PendingItem>, Vec<FailedItem>) {
        self.pending_bytes = 0;
        (
            std::mem::take(&mut self.pending),
            std::mem::take(&mut self.failed),
        )
    }

    fn index(&self, raw: Option<&RawValue>, number: usize) -> Result<u32, ApiError> {
        raw.and_then(|r| serde_json::from_str::<u64>(r.get()).ok())
            .filter(|i| *i < self.run_count)
            .map(|i| i as u32)
            .ok_or_else(|| {
                ApiError::validation(
                    format!("line {number}.index"),
                    format!(
                        "expected an integer from 0 to {}",
                        self.run_count.saturating_sub(1)
                    ),
                )
            })
    }

    /// Checks one line and queues its item (or its failure) for its task.
    pub fn take(
        &mut self,
        line: Line,
        tasks: &HashMap<String, TaskSettings>,
        now: Millis,
    ) -> Result<(), ApiError> {
        #[derive(Deserialize)]
        struct Head<'a> {
            #[serde(borrow)]
            index: Option<&'a RawValue>,
            #[serde(borrow)]
            task: Option<&'a RawValue>,
        }
        match line {
            Line::Full { number, text } => {
                let not_an_object =
                    || ApiError::validation(format!("line {number}"), "not a JSON object");
                let raw: &RawValue = serde_json::from_slice(&text).map_err(|_| not_an_object())?;
                if !raw.get().starts_with('{') {
                    return Err(not_an_object());
                }
                let head: Head = serde_json::from_str(raw.get())
                    .map_err(|e| ApiError::validation(format!("line {number}"), e.to_string()))?;
                let index = self.index(head.index, number)?;
                let task: String = head
                    .task
                    .and_then(|t| serde_json::from_str(t.get()).ok())
                    .ok_or_else(|| {
                        ApiError::validation(
                            format!("line {number}.task"),
                            "expected a task identifier",
                        )
                    })?;
                let mut item = parse_item(raw, &format!("line {number}"), now)?;
                if !self.seen.insert(index) {
                    self.deduplicated += 1; // the same index twice in one stream
                    return Ok(());
                }
                match tasks.get(&task) {
                    Some(settings) => {
                        apply_task_defaults(&mut item, &task, settings);
                        self.pending_bytes += text.len();
                        self.pending.push(PendingItem { index, task, item });
                    }
                    None => self.failed.push(FailedItem {
                        index,
                        task,
                        error: "Task not found".into(),
                        code: "TASK_NOT_FOUND",
                    }),
                }
            }
            Line::TooLong {
                number,
                prefix,
                length,
            } => {
                let (index, task) = identify(&prefix);
                let index = index
                    .filter(|i| *i < self.run_count)
                    .map(|i| i as u32)
                    .ok_or_else(|| {
                        ApiError::validation(
                            format!("line {number}"),
                            "longer than 3 MiB, and its index cannot be read",
                        )
                    })?;
                if self.seen.insert(index) {
                    self.failed.push(FailedItem {
                        index,
                        task: task.unwrap_or_default(),
                        error: format!(
                            "the item is {length} bytes; at most {} are accepted",
                            self.max_line_bytes
                        ),
                        code: "PAYLOAD_TOO_LARGE",
                    });
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::config::{parse_tasks_for_tests, TaskSettings};

    fn tasks() -> HashMap<String, TaskSettings> {
        parse_tasks_for_tests(r#"{"t": {"endpoint": "https://tasks.example.com/t"}}"#)
    }

    fn full(number: usize, text: &str) -> Line {
        Line::Full {
            number,
            text: text.as_bytes().to_vec(),
        }
    }

    #[test]
    fn items_queue_for_their_task_and_an_index_twice_counts_as_a_duplicate() {
        let mut stream = ItemStream::new(3, 1024);
        let tasks = tasks();
        stream
            .take(
                full(1, r#"{"index": 0, "task": "t", "payload": 1}"#),
                &tasks,
                0,
            )
            .unwrap();
        stream
            .take(
                full(2, r#"{"index": 0, "task": "t", "payload": 2}"#),
                &tasks,
                0,
            )
            .unwrap();
        stream
            .take(full(3, r#"{"index": 2, "task": "t"}"#), &tasks, 0)
            .unwrap();
        assert_eq!(stream.deduplicated(), 1);
        let (pending, failed) = stream.take_group();
        assert_eq!(
            pending.iter().map(|p| p.index).collect::<Vec<_>>(),
            vec![0, 2]
        );
        assert_eq!(
            pending[0].item.payload.as_deref().map(|p| p.get()),
            Some("1")
        );
        assert!(failed.is_empty());
        assert!(stream.take_group().0.is_empty(), "a group is taken once");
    }

    #[test]
    fn an_undeclared_task_fails_its_item_alone() {
        let mut stream = ItemStream::new(2, 1024);
        stream
            .take(full(1, r#"{"index": 1, "task": "nope"}"#), &tasks(), 0)
            .unwrap();
        let (pending, failed) = stream.take_group();
        assert!(pending.is_empty());
        assert_eq!(
            failed,
            vec![FailedItem {
                index: 1,
                task: "nope".into(),
                error: "Task not found".into(),
                code: "TASK_NOT_FOUND",
            }]
        );
    }

    #[test]
    fn an_over_long_line_fails_its_item_when_its_index_can_be_read() {
        let mut stream = ItemStream::new(5, 1024);
        let line = Line::TooLong {
            number: 4,
            prefix: br#"{"index": 3, "task": "t", "payload": "xxxx"#.to_vec(),
            length: 5000,
        };
        stream.take(line, &tasks(), 0).unwrap();
        let (_, failed) = stream.take_group();
        assert_eq!(failed[0].index, 3);
        assert_eq!(failed[0].code, "PAYLOAD_TOO_LARGE");
        assert_eq!(
            failed[0].error,
            "the item is 5000 bytes; at most 1024 are accepted"
        );
        let unreadable = Line::TooLong {
            number: 5,
            prefix: b"garbage".to_vec(),
            length: 5000,
        };
        assert_eq!(
            stream.take(unreadable, &tasks(), 0).unwrap_err().message(),
            "Validation error: line 5: longer than 3 MiB, and its index cannot be read"
        );
    }

    #[test]
    fn a_line_that_cannot_name_its_item_ends_the_stream_with_its_number() {
        let mut stream = ItemStream::new(2, 1024);
        let message = |stream: &mut ItemStream, text: &str| {
            stream
                .take(full(7, text), &tasks(), 0)
                .unwrap_err()
                .message()
        };
        assert_eq!(
            message(&mut stream, "[1]"),
            "Validation error: line 7: not a JSON object"
        );
        assert_eq!(
            message(&mut stream, r#"{"index": 2, "task": "t"}"#),
            "Validation error: line 7.index: expected an integer from 0 to 1"
        );
        assert_eq!(
            message(&mut stream, r#"{"index": 0}"#),
            "Validation error: line 7.task: expected a task identifier"
        );
    }

    #[test]
    fn a_group_is_full_at_100_items_or_at_the_byte_limit() {
        let tasks = tasks();
        let mut by_count = ItemStream::new(200, usize::MAX);
        for i in 0..GROUP_ITEMS {
            assert!(!by_count.group_full());
            let text = format!(r#"{{"index": {i}, "task": "t"}}"#);
            by_count.take(full(i + 1, &text), &tasks, 0).unwrap();
        }
        assert!(by_count.group_full());
        let mut by_bytes = ItemStream::new(2, 30);
        by_bytes
            .take(
                full(1, r#"{"index": 0, "task": "t", "payload": "abcdef"}"#),
                &tasks,
                0,
            )
            .unwrap();
        assert!(by_bytes.group_full());
    }
}

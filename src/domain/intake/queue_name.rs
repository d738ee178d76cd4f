//! Queue names, cleaned the way Trigger.dev cleans them.

/// The longest queue name kept.
pub const MAX_QUEUE_NAME_LEN: usize = 128;

/// Removes every character outside `[a-zA-Z0-9_\-/]` and keeps the first 128 that
/// remain. `None` when nothing remains: the caller then uses the default queue.
pub fn clean_queue_name(name: &str) -> Option<String> {
    let cleaned: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '/'))
        .take(MAX_QUEUE_NAME_LEN)
        .collect();
    (!cleaned.is_empty()).then_some(cleaned)
}

/// The queue a task's runs use when neither the item nor the task names one.
pub fn default_queue_name(task: &str) -> String {
    format!("task/{task}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_letters_digits_dash_underscore_slash() {
        for (raw, clean) in [
            ("my-task-queue", Some("my-task-queue")),
            ("tenant/a_1", Some("tenant/a_1")),
            ("my queue!", Some("myqueue")),
            ("café.queue", Some("cafqueue")),
            ("a\u{0}b\r\nc", Some("abc")),
            ("  ", None),
            ("", None),
            ("€€€", None),
        ] {
            assert_eq!(clean_queue_name(raw).as_deref(), clean, "{raw:?}");
        }
    }

    #[test]
    fn cuts_to_128_characters_after_cleaning() {
        let raw = format!("{}{}", "!".repeat(10), "q".repeat(200));
        assert_eq!(clean_queue_name(&raw), Some("q".repeat(128)));
    }

    #[test]
    fn default_queue_is_named_after_the_task() {
        assert_eq!(default_queue_name("hello-world"), "task/hello-world");
    }
}

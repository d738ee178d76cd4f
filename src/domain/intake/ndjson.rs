//! Splitting a streamed NDJSON body into lines without buffering the whole stream.
//!
//! Chunks arrive as the network delivers them; a line may be split across chunks, end in
//! `\r\n`, or be empty (skipped). A line longer than the limit is never buffered: its
//! first bytes are kept (enough to read its `index` and `task`) and the rest is skipped
//! up to its newline.

/// One line of the stream.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A complete line (without its `\r\n`), and its 1-based number.
    Full { number: usize, text: Vec<u8> },
    /// A line over the limit: its number, its first [`PREFIX_BYTES`] bytes, its length.
    TooLong {
        number: usize,
        prefix: Vec<u8>,
        length: usize,
    },
}

/// Bytes of an over-long line kept to identify it.
pub const PREFIX_BYTES: usize = 4096;

pub struct LineSplitter {
    max_line: usize,
    current: Vec<u8>,
    /// Bytes of the current line so far, counting the skipped ones.
    length: usize,
    skipping: bool,
    number: usize,
}

impl LineSplitter {
    pub fn new(max_line: usize) -> LineSplitter {
        LineSplitter {
            max_line,
            current: Vec::new(),
            length: 0,
            skipping: false,
            number: 0,
        }
    }

    /// Feeds a chunk; returns the lines it completed.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<Line> {
        let mut lines = Vec::new();
        let mut rest = chunk;
        while !rest.is_empty() {
            match rest.iter().position(|&b| b == b'\n') {
                Some(at) => {
                    self.take(&rest[..at]);
                    if let Some(line) = self.end_line() {
                        lines.push(line);
                    }
                    rest = &rest[at + 1..];
                }
                None => {
                    self.take(rest);
                    rest = &[];
                }
            }
        }
        lines
    }

    /// Ends the stream: a last line without a newline still counts.
    pub fn finish(&mut self) -> Option<Line> {
        if self.length == 0 {
            return None;
        }
        self.end_line()
    }

    fn take(&mut self, bytes: &[u8]) {
        self.length += bytes.len();
        if self.skipping {
            return;
        }
        if self.length > self.max_line {
            // Keep only the prefix; drop the rest of this line as it streams by.
            let room = PREFIX_BYTES.saturating_sub(self.current.len());
            self.current
                .extend_from_slice(&bytes[..bytes.len().min(room)]);
            self.current.truncate(PREFIX_BYTES);
            self.skipping = true;
        } else {
            self.current.extend_from_slice(bytes);
        }
    }

    fn end_line(&mut self) -> Option<Line> {
        self.number += 1;
        let number = self.number;
        let length = std::mem::take(&mut self.length);
        let mut text = std::mem::take(&mut self.current);
        if std::mem::take(&mut self.skipping) {
            return Some(Line::TooLong {
                number,
                prefix: text,
                length,
            });
        }
        if text.last() == Some(&b'\r') {
            text.pop();
        }
        if text.iter().all(u8::is_ascii_whitespace) {
            return None; // empty lines are allowed and skipped
        }
        Some(Line::Full { number, text })
    }
}

/// Reads `"index": <n>` and `"task": "<id>"` from the start of an over-long line, as
/// the SDK writes them first.
pub fn identify(prefix: &[u8]) -> (Option<u64>, Option<String>) {
    let text = String::from_utf8_lossy(prefix);
    let after = |key: &str| {
        text.find(key).map(|at| {
            text[at + key.len()..]
                .trim_start()
                .trim_start_matches(':')
                .trim_start()
                .to_owned()
        })
    };
    let index = after("\"index\"").and_then(|rest| {
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    });
    let task = after("\"task\"").and_then(|rest| {
        let rest = rest.strip_prefix('"')?;
        let end = rest.find('"')?;
        Some(rest[..end].to_owned())
    });
    (index, task)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(number: usize, text: &str) -> Line {
        Line::Full {
            number,
            text: text.as_bytes().to_vec(),
        }
    }

    #[test]
    fn lines_split_across_chunks_are_joined() {
        let mut s = LineSplitter::new(100);
        assert_eq!(s.push(b"{\"index\":0}\n{\"ind"), [full(1, "{\"index\":0}")]);
        assert_eq!(s.push(b"ex\":1"), []);
        assert_eq!(s.push(b"}\n"), [full(2, "{\"index\":1}")]);
        assert_eq!(s.finish(), None);
    }

    #[test]
    fn crlf_and_empty_lines() {
        let mut s = LineSplitter::new(100);
        let lines = s.push(b"a\r\n\r\n\nb\n  \n");
        assert_eq!(lines, [full(1, "a"), full(4, "b")]);
    }

    #[test]
    fn a_last_line_without_newline_counts() {
        let mut s = LineSplitter::new(100);
        assert_eq!(s.push(b"a\nb"), [full(1, "a")]);
        assert_eq!(s.finish(), Some(full(2, "b")));
    }

    #[test]
    fn byte_at_a_time_gives_the_same_lines() {
        let input = b"{\"index\":0,\"task\":\"t\"}\r\n\n{\"index\":1}\n";
        let mut s = LineSplitter::new(100);
        let mut lines = Vec::new();
        for b in input {
            lines.extend(s.push(&[*b]));
        }
        assert_eq!(
            lines,
            [
                full(1, "{\"index\":0,\"task\":\"t\"}"),
                full(3, "{\"index\":1}")
            ]
        );
    }

    #[test]
    fn an_over_long_line_keeps_only_its_prefix_and_the_next_line_is_intact() {
        let mut s = LineSplitter::new(10);
        let big = format!(
            "{{\"index\":7,\"task\":\"big\",\"payload\":\"{}\"}}",
            "x".repeat(10_000)
        );
        let mut lines = s.push(&big.as_bytes()[..5000]);
        lines.extend(s.push(&big.as_bytes()[5000..]));
        lines.extend(s.push(b"\nok\n"));
        match &lines[0] {
            Line::TooLong {
                number,
                prefix,
                length,
            } => {
                assert_eq!((*number, *length), (1, big.len()));
                assert!(prefix.len() <= PREFIX_BYTES);
                assert_eq!(identify(prefix), (Some(7), Some("big".into())));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(lines[1], full(2, "ok"));
    }

    #[test]
    fn identify_reads_index_and_task_with_spaces() {
        assert_eq!(
            identify(br#"{ "index" : 12, "task": "a-b" , "payload""#),
            (Some(12), Some("a-b".into()))
        );
        assert_eq!(identify(br#"{"payload": 1"#), (None, None));
    }
}

//! Property tests of the parsers that read untrusted input: they never panic, whatever
//! the bytes, and they agree with simple models where one exists.

use proptest::prelude::*;

use crate::domain::api::list::parse_list_query;
use crate::domain::basics::duration::{parse_duration, parse_key_ttl};
use crate::domain::intake::ndjson::{Line, LineSplitter};
use crate::domain::intake::queue_name::{clean_queue_name, MAX_QUEUE_NAME_LEN};
use crate::domain::intake::trigger::{parse_batch_body, parse_trigger_body};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn durations_never_panic(text in ".{0,120}") {
        let _ = parse_duration(&text);
    }

    #[test]
    fn key_ttls_never_panic(text in ".{0,40}") {
        let _ = parse_key_ttl(&text);
    }

    #[test]
    fn key_ttls_read_digits_and_one_unit(n in 0u64..1_000_000, unit in "[smhd]") {
        let ms = match unit.as_str() { "s" => 1000, "m" => 60_000, "h" => 3_600_000, _ => 86_400_000 };
        prop_assert_eq!(parse_key_ttl(&format!("{n}{unit}")), Some(n * ms));
    }

    #[test]
    fn durations_add_up_their_units(w in 0u64..100, d in 0u64..100, h in 0u64..100, m in 0u64..1000, s in 0u64..10_000) {
        let text = format!("{w}w{d}d{h}h{m}m{s}s");
        let expected = (((w * 7 + d) * 24 + h) * 60 + m) * 60_000 + s * 1000;
        prop_assert_eq!(parse_duration(&text), Some(expected));
    }

    #[test]
    fn queue_names_keep_only_allowed_characters(raw in ".{0,300}") {
        if let Some(name) = clean_queue_name(&raw) {
            prop_assert!(!name.is_empty() && name.chars().count() <= MAX_QUEUE_NAME_LEN);
            prop_assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '/')));
        }
    }

    #[test]
    fn bodies_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = parse_batch_body(&bytes, 100, 0);
        let _ = parse_trigger_body(&bytes, 0);
    }

    #[test]
    fn json_shaped_bodies_never_panic(body in r#"\{"items":\[(\{("payload":[0-9a-z"\[\]{}:,]{0,20},?)?("options":\{[a-zA-Z":,0-9\[\] -]{0,60}\})?\},?){0,4}\]\}"#) {
        let _ = parse_batch_body(body.as_bytes(), 100, 0);
    }

    #[test]
    fn list_queries_never_panic(query in "[a-zA-Z\\[\\]=&%,_0-9:+.-]{0,200}") {
        let _ = parse_list_query(&query, 0);
    }

    #[test]
    fn ndjson_lines_do_not_depend_on_how_the_stream_is_cut(
        lines in proptest::collection::vec("[a-z{}\":,0-9 ]{0,30}", 0..20),
        cuts in proptest::collection::vec(1usize..50, 1..30),
        crlf in any::<bool>(),
    ) {
        let newline = if crlf { "\r\n" } else { "\n" };
        let stream: String = lines.iter().map(|l| format!("{l}{newline}")).collect();
        let whole = split(&[stream.as_bytes()]);
        let mut pieces = Vec::new();
        let mut rest = stream.as_bytes();
        for cut in cuts.iter().cycle() {
            if rest.is_empty() { break; }
            let (head, tail) = rest.split_at((*cut).min(rest.len()));
            pieces.push(head);
            rest = tail;
        }
        prop_assert_eq!(split(&pieces), whole);
    }
}

fn split(chunks: &[&[u8]]) -> Vec<Line> {
    let mut splitter = LineSplitter::new(1000);
    let mut out: Vec<Line> = chunks.iter().flat_map(|c| splitter.push(c)).collect();
    out.extend(splitter.finish());
    out
}

//! `GET /api/v1/runs`: the query (filters, page size, cursors) and the merge of the pages
//! that each run store answers, newest first.

use serde::{Deserialize, Serialize};

use crate::domain::api::error::ApiError;
use crate::domain::basics::duration::parse_duration;
use crate::domain::basics::time::{parse_iso, Millis};
use crate::domain::run::status::RunStatus;

pub const DEFAULT_PAGE_SIZE: usize = 25;
pub const MAX_PAGE_SIZE: usize = 100;

/// A position in the newest-first order: runs are ordered by creation time, then id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Cursor {
    pub created_at: Millis,
    pub id: String,
}

impl Cursor {
    /// The opaque text a client sends back: `<created_at>_<id>`.
    pub fn encode(&self) -> String {
        format!("{}_{}", self.created_at, self.id)
    }

    pub fn decode(text: &str) -> Option<Cursor> {
        let (at, id) = text.split_once('_')?;
        let created_at = at.parse().ok()?;
        (id.starts_with("run_") && id.len() < 64).then(|| Cursor {
            created_at,
            id: id.to_owned(),
        })
    }
}

/// Which page: the newest, the one after (older than) a cursor, or before (newer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Page {
    First,
    After(Cursor),
    Before(Cursor),
}

/// The filters every store applies to its runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunFilter {
    pub statuses: Vec<RunStatus>,
    pub tasks: Vec<String>,
    pub tags: Vec<String>,
    pub batch: Option<String>,
    pub queues: Vec<String>,
    pub created_from: Option<Millis>,
    pub created_to: Option<Millis>,
}

impl RunFilter {
    /// Whether runs of `task` can pass the filter (every task when it names none): the
    /// stores of the others need not be asked.
    pub fn wants_task(&self, task: &str) -> bool {
        self.tasks.is_empty() || self.tasks.iter().any(|t| t == task)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListQuery {
    pub filter: RunFilter,
    pub page: Page,
    pub size: usize,
}

fn bad(param: &str, reason: &str) -> ApiError {
    ApiError::validation(param, reason)
}

/// Decodes `%XX` and `+` of one query component.
pub fn unescape(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok());
        match (bytes[i], escaped) {
            (_, Some(byte)) => {
                out.push(byte);
                i += 3;
                continue;
            }
            (b'+', None) => out.push(b' '),
            (c, None) => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A comma-separated list, trimmed, empty entries dropped.
fn list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A date filter: epoch milliseconds or an ISO-8601 date-time.
fn instant(param: &str, value: &str) -> Result<Millis, ApiError> {
    value
        .trim()
        .parse::<Millis>()
        .ok()
        .or_else(|| parse_iso(value.trim()))
        .ok_or_else(|| {
            bad(
                param,
                "expected epoch milliseconds or an ISO-8601 date-time",
            )
        })
}

/// Status names of either vocabulary, as the SDKs send them in `filter[status]`.
fn statuses(value: &str) -> Result<Vec<RunStatus>, ApiError> {
    statuses_named(list(value), "filter[status]")
}

/// The statuses `names` (either vocabulary) stand for; an unknown name is refused at
/// `param`.
pub fn statuses_named(names: Vec<String>, param: &str) -> Result<Vec<RunStatus>, ApiError> {
    let mut out = Vec::new();
    for name in names {
        let matched: &[RunStatus] = match name.as_str() {
            // 4.x names for what this worker records under 3.x names.
            "PENDING_VERSION" | "WAITING_FOR_DEPLOY" => &[],
            "DEQUEUED" | "WAITING" | "FROZEN" => &[],
            "EXECUTING" => &[RunStatus::Executing, RunStatus::Reattempting],
            "FAILED" => &[RunStatus::Failed, RunStatus::Interrupted],
            other => match RunStatus::parse(other) {
                Some(s) => {
                    out.push(s);
                    continue;
                }
                None => return Err(bad(param, &format!("unknown status {other}"))),
            },
        };
        out.extend_from_slice(matched);
    }
    out.sort_by_key(|s| s.as_str());
    out.dedup();
    Ok(out)
}

/// Parses the query string of `GET /api/v1/runs`.
pub fn parse_list_query(query: &str, now: Millis) -> Result<ListQuery, ApiError> {
    let mut q = ListQuery {
        filter: RunFilter::default(),
        page: Page::First,
        size: DEFAULT_PAGE_SIZE,
    };
    let mut after = None;
    let mut before = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let (key, value) = (unescape(key), unescape(value));
        match key.as_str() {
            "page[size]" => {
                q.size = value
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_PAGE_SIZE).contains(n))
                    .ok_or_else(|| bad("page[size]", "expected an integer from 1 to 100"))?;
            }
            "page[after]" => {
                after = Some(
                    Cursor::decode(&value)
                        .ok_or_else(|| bad("page[after]", "not a cursor from this API"))?,
                )
            }
            "page[before]" => {
                before = Some(
                    Cursor::decode(&value)
                        .ok_or_else(|| bad("page[before]", "not a cursor from this API"))?,
                )
            }
            "filter[status]" => q.filter.statuses = statuses(&value)?,
            "filter[taskIdentifier]" => q.filter.tasks = list(&value),
            "filter[tag]" => q.filter.tags = list(&value),
            "filter[batch]" => {
                q.filter.batch = Some(value.trim().to_owned()).filter(|b| !b.is_empty())
            }
            "filter[queue]" => q.filter.queues = list(&value),
            "filter[createdAt][from]" => q.filter.created_from = Some(instant(&key, &value)?),
            "filter[createdAt][to]" => q.filter.created_to = Some(instant(&key, &value)?),
            "filter[createdAt][period]" => {
                let ms = parse_duration(value.trim())
                    .ok_or_else(|| bad(&key, "expected a duration like 1d or 2h"))?;
                q.filter.created_from =
                    Some(now.saturating_sub(i64::try_from(ms).unwrap_or(i64::MAX)));
            }
            _ => {} // unknown parameters (filter[machine], filter[region], …) are ignored
        }
    }
    q.page = match (after, before) {
        (Some(_), Some(_)) => {
            return Err(bad("page", "give page[after] or page[before], not both"))
        }
        (Some(c), None) => Page::After(c),
        (None, Some(c)) => Page::Before(c),
        (None, None) => Page::First,
    };
    Ok(q)
}

/// One page merged from the stores' pages. Each store answers at most `size + 1` runs in
/// the page's order (newest first; for `Before`, oldest first), so the merge knows
/// whether more exist.
#[derive(Debug, PartialEq)]
pub struct Merged<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
    pub previous: Option<String>,
}

pub fn merge_pages<T>(pages: Vec<Vec<(Cursor, T)>>, page: &Page, size: usize) -> Merged<T> {
    let mut all: Vec<(Cursor, T)> = pages.into_iter().flatten().collect();
    // Newest first: descending (created_at, id).
    all.sort_by(|a, b| b.0.cmp(&a.0));
    let (items, more) = match page {
        Page::Before(_) => {
            // The `size` oldest of the newer runs, shown newest first.
            let more = all.len() > size;
            let start = all.len().saturating_sub(size);
            (all.split_off(start), more)
        }
        _ => {
            let more = all.len() > size;
            all.truncate(size);
            (all, more)
        }
    };
    let first = items.first().map(|(c, _)| c.encode());
    let last = items.last().map(|(c, _)| c.encode());
    let (next, previous) = match page {
        Page::First => (if more { last } else { None }, None),
        Page::After(_) => (if more { last } else { None }, first),
        Page::Before(_) => (last, if more { first } else { None }),
    };
    Merged {
        items: items.into_iter().map(|(_, t)| t).collect(),
        next,
        previous,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Millis = 1_000_000_000;

    fn cursor(at: Millis, id: &str) -> Cursor {
        Cursor {
            created_at: at,
            id: id.into(),
        }
    }

    #[test]
    fn a_filter_wants_the_tasks_it_names_or_every_task() {
        let mut filter = RunFilter::default();
        assert!(filter.wants_task("any"));
        filter.tasks = vec!["a".into(), "b".into()];
        assert!(filter.wants_task("b") && !filter.wants_task("c"));
    }

    #[test]
    fn parses_the_sdks_filters() {
        let q = parse_list_query(
            "filter%5Btag%5D=a%2Cb&filter%5Bstatus%5D=QUEUED,DELAYED&filter%5BtaskIdentifier%5D=t1&page%5Bsize%5D=10&filter%5BcreatedAt%5D%5Bfrom%5D=1700000000000&filter[batch]=batch_1&filter[queue]=q1,q2",
            NOW,
        )
        .unwrap();
        assert_eq!(q.filter.tags, ["a", "b"]);
        assert_eq!(q.filter.statuses, [RunStatus::Delayed, RunStatus::Queued]);
        assert_eq!(q.filter.tasks, ["t1"]);
        assert_eq!(q.filter.batch.as_deref(), Some("batch_1"));
        assert_eq!(q.filter.queues, ["q1", "q2"]);
        assert_eq!(q.filter.created_from, Some(1_700_000_000_000));
        assert_eq!(q.size, 10);
        assert_eq!(q.page, Page::First);
    }

    #[test]
    fn periods_dates_and_v4_statuses() {
        let q = parse_list_query("filter[createdAt][period]=1d&filter[createdAt][to]=2030-01-01T00:00:00Z&filter[status]=EXECUTING,DEQUEUED", NOW).unwrap();
        assert_eq!(q.filter.created_from, Some(NOW - 86_400_000));
        assert_eq!(q.filter.created_to, parse_iso("2030-01-01T00:00:00Z"));
        assert_eq!(
            q.filter.statuses,
            [RunStatus::Executing, RunStatus::Reattempting]
        );
    }

    #[test]
    fn bad_parameters_are_400_naming_the_parameter() {
        for (query, param) in [
            ("page[size]=0", "page[size]"),
            ("page[size]=101", "page[size]"),
            ("page[size]=x", "page[size]"),
            ("page[after]=garbage", "page[after]"),
            ("filter[status]=NOPE", "filter[status]"),
            (
                "filter[createdAt][from]=yesterday",
                "filter[createdAt][from]",
            ),
            (
                "filter[createdAt][period]=1 day",
                "filter[createdAt][period]",
            ),
            ("page[after]=1_run_a&page[before]=2_run_b", "page"),
        ] {
            match parse_list_query(query, NOW) {
                Err(ApiError::Validation { path, .. }) => assert_eq!(path, param, "{query}"),
                other => panic!("{query}: {other:?}"),
            }
        }
    }

    #[test]
    fn cursors_round_trip() {
        let c = cursor(1_795_885_291_123, "run_abc");
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        assert_eq!(Cursor::decode("123"), None);
        assert_eq!(Cursor::decode("x_run_a"), None);
        assert_eq!(Cursor::decode("1_batch_a"), None);
    }

    fn pages() -> Vec<Vec<(Cursor, &'static str)>> {
        vec![
            vec![
                (cursor(50, "run_e"), "e"),
                (cursor(30, "run_c"), "c"),
                (cursor(10, "run_a"), "a"),
            ],
            vec![(cursor(40, "run_d"), "d"), (cursor(20, "run_b"), "b")],
        ]
    }

    #[test]
    fn merges_stores_newest_first_and_pages_forward() {
        let first = merge_pages(pages(), &Page::First, 2);
        assert_eq!(first.items, ["e", "d"]);
        assert_eq!(first.next.as_deref(), Some("40_run_d"));
        assert_eq!(first.previous, None);
        let all = merge_pages(pages(), &Page::First, 5);
        assert_eq!(all.items, ["e", "d", "c", "b", "a"]);
        assert_eq!(all.next, None, "nothing more");
    }

    #[test]
    fn paging_back_shows_the_runs_just_newer() {
        // Stores answer `Before` pages oldest first, only runs newer than the cursor.
        let newer = vec![
            vec![(cursor(40, "run_d"), "d"), (cursor(50, "run_e"), "e")],
            vec![(cursor(45, "run_x"), "x")],
        ];
        let page = merge_pages(newer, &Page::Before(cursor(30, "run_c")), 2);
        assert_eq!(page.items, ["x", "d"]);
        assert_eq!(page.next.as_deref(), Some("40_run_d"));
        assert_eq!(page.previous.as_deref(), Some("45_run_x"));
    }
}

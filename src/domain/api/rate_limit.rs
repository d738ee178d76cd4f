//! Per-environment rate limits: two token buckets, as Trigger.dev's server keeps them.
//!
//! - `requests`: every authenticated API request takes one token;
//! - `batchItems`: every run a trigger asks for takes one token (a batch of 100 takes 100;
//!   a two-step batch takes its `runCount` when it is created).
//!
//! A bucket holds at most `maxTokens` and gains `refillRate` tokens at the end of every
//! `interval` (discrete refills, like Trigger.dev's token bucket). A request that finds
//! too few tokens in either bucket takes nothing from both and is answered 429 with the
//! bucket's `x-ratelimit-*` figures; `x-ratelimit-reset` is the epoch millisecond at which
//! it can succeed (the SDK waits until then). A cost above `maxTokens` (a batch larger
//! than the whole bucket) is charged as `maxTokens`: it waits for a full bucket instead of
//! failing forever.
//!
//! Configured by the var `RATE_LIMITS`; each bucket may be `false` (off):
//!
//! ```toml
//! [vars.RATE_LIMITS]
//! requests = { maxTokens = 750, refillRate = 250, interval = "10s" }
//! batchItems = { maxTokens = 5000, refillRate = 1000, interval = "1s" }
//! ```

use serde::Deserialize;
use serde_json::Value;

use crate::domain::basics::duration::parse_duration;
use crate::domain::basics::time::Millis;

/// One bucket's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketConfig {
    pub max_tokens: u64,
    pub refill_rate: u64,
    pub interval_ms: u64,
}

/// The two buckets of an environment; `None` turns a bucket off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    pub requests: Option<BucketConfig>,
    pub batch_items: Option<BucketConfig>,
}

impl RateLimits {
    /// Trigger.dev's defaults for the request bucket: bursts of 750, 250 more every 10 s.
    pub const DEFAULT_REQUESTS: BucketConfig = BucketConfig {
        max_tokens: 750,
        refill_rate: 250,
        interval_ms: 10_000,
    };
    /// Runs triggered: bursts of 5,000, 1,000 more every second (an edge queue is made
    /// for bursts; lower it per deployment).
    pub const DEFAULT_BATCH_ITEMS: BucketConfig = BucketConfig {
        max_tokens: 5_000,
        refill_rate: 1_000,
        interval_ms: 1_000,
    };

    pub const fn is_off(&self) -> bool {
        self.requests.is_none() && self.batch_items.is_none()
    }
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            requests: Some(Self::DEFAULT_REQUESTS),
            batch_items: Some(Self::DEFAULT_BATCH_ITEMS),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawBucket {
    max_tokens: u64,
    refill_rate: u64,
    interval: String,
}

/// Reads the `RATE_LIMITS` var (absent: the defaults). Errors name the field.
pub fn parse_rate_limits(value: Option<&Value>) -> Result<RateLimits, String> {
    let Some(value) = value else {
        return Ok(RateLimits::default());
    };
    let Value::Object(fields) = value else {
        return Err("RATE_LIMITS: must be a table with `requests` and `batchItems`".into());
    };
    if let Some(unknown) = fields
        .keys()
        .find(|k| *k != "requests" && *k != "batchItems")
    {
        return Err(format!(
            "RATE_LIMITS.{unknown}: unknown bucket (expected `requests` or `batchItems`)"
        ));
    }
    let bucket = |name: &str, default: BucketConfig| -> Result<Option<BucketConfig>, String> {
        match fields.get(name) {
            None => Ok(Some(default)),
            Some(Value::Bool(false)) => Ok(None),
            Some(raw) => {
                let raw = RawBucket::deserialize(raw).map_err(|e| {
                    format!("RATE_LIMITS.{name}: expected {{ maxTokens, refillRate, interval }} or false ({e})")
                })?;
                let interval_ms = parse_duration(&raw.interval)
                    .filter(|ms| *ms > 0)
                    .ok_or_else(|| {
                        format!("RATE_LIMITS.{name}.interval: not a duration like \"10s\"")
                    })?;
                if raw.max_tokens == 0 || raw.refill_rate == 0 {
                    return Err(format!(
                        "RATE_LIMITS.{name}: maxTokens and refillRate must be at least 1 (use false to turn the bucket off)"
                    ));
                }
                Ok(Some(BucketConfig {
                    max_tokens: raw.max_tokens,
                    refill_rate: raw.refill_rate,
                    interval_ms,
                }))
            }
        }
    };
    Ok(RateLimits {
        requests: bucket("requests", RateLimits::DEFAULT_REQUESTS)?,
        batch_items: bucket("batchItems", RateLimits::DEFAULT_BATCH_ITEMS)?,
    })
}

/// One bucket's level. Starts full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    tokens: u64,
    /// When the last refill happened; the next is one interval later.
    refilled_at: Millis,
}

impl Bucket {
    pub fn full(config: &BucketConfig, now: Millis) -> Bucket {
        Bucket {
            tokens: config.max_tokens,
            refilled_at: now,
        }
    }

    /// Adds the refills due by `now`.
    fn refill(&mut self, config: &BucketConfig, now: Millis) {
        let interval = config.interval_ms as Millis;
        if now <= self.refilled_at {
            return;
        }
        let intervals = (now - self.refilled_at) / interval;
        if intervals > 0 {
            let added = (intervals as u64).saturating_mul(config.refill_rate);
            self.tokens = self.tokens.saturating_add(added).min(config.max_tokens);
            self.refilled_at += intervals * interval;
        }
        if self.tokens == config.max_tokens {
            // A full bucket does not bank time: its next refill is a full interval away.
            self.refilled_at = now;
        }
    }

    /// What a request costing `cost` would meet, without taking anything.
    fn quote(&self, config: &BucketConfig, cost: u64) -> Quote {
        let cost = cost.min(config.max_tokens);
        let interval = config.interval_ms as Millis;
        if cost <= self.tokens {
            return Quote {
                allowed: true,
                figures: Figures {
                    limit: config.max_tokens,
                    remaining: self.tokens - cost,
                    reset: self.refilled_at + interval,
                },
            };
        }
        let missing = cost - self.tokens;
        let refills = missing.div_ceil(config.refill_rate) as Millis;
        Quote {
            allowed: false,
            figures: Figures {
                limit: config.max_tokens,
                remaining: self.tokens,
                reset: self.refilled_at + refills * interval,
            },
        }
    }
}

struct Quote {
    allowed: bool,
    figures: Figures,
}

/// The `x-ratelimit-*` figures of one bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Figures {
    pub limit: u64,
    pub remaining: u64,
    /// Epoch milliseconds: when the request can succeed (refused), or when the bucket
    /// next gains tokens (allowed).
    pub reset: Millis,
}

/// Which bucket refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum BucketName {
    Requests,
    BatchItems,
}

/// Tokens taken ahead of need, for an isolate to spend before it asks again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Ahead {
    pub requests: u64,
    pub items: u64,
}

/// The answer to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", tag = "outcome")]
pub enum Verdict {
    /// Taken; the figures (of the request bucket, when it is on) go on the response, and
    /// `ahead` says how many more tokens were granted ahead of need.
    Allowed {
        figures: Option<Figures>,
        #[serde(default)]
        ahead: Ahead,
    },
    /// Refused by `bucket`; nothing was taken.
    Limited {
        bucket: BucketName,
        figures: Figures,
    },
}

/// The buckets of one environment.
#[derive(Debug, Clone, Default)]
pub struct Buckets {
    requests: Option<Bucket>,
    batch_items: Option<Bucket>,
}

impl Buckets {
    /// Takes one request and `items` run tokens, both or neither; when that is allowed,
    /// also takes up to `ahead` more tokens of each bucket, as many as it holds (never
    /// refusing for them).
    pub fn take(&mut self, limits: &RateLimits, now: Millis, items: u64, ahead: Ahead) -> Verdict {
        let verdict = self.take_exact(limits, now, items);
        let Verdict::Allowed { figures, .. } = verdict else {
            return verdict;
        };
        let extra = |bucket: &mut Option<Bucket>, want: u64| match bucket {
            Some(b) => {
                let got = want.min(b.tokens);
                b.tokens -= got;
                got
            }
            None => 0,
        };
        let granted = Ahead {
            requests: extra(&mut self.requests, ahead.requests),
            items: extra(&mut self.batch_items, ahead.items),
        };
        Verdict::Allowed {
            figures,
            ahead: granted,
        }
    }

    fn take_exact(&mut self, limits: &RateLimits, now: Millis, items: u64) -> Verdict {
        let mut quotes = Vec::with_capacity(2);
        for (config, bucket, cost, name) in [
            (
                &limits.requests,
                &mut self.requests,
                1,
                BucketName::Requests,
            ),
            (
                &limits.batch_items,
                &mut self.batch_items,
                items,
                BucketName::BatchItems,
            ),
        ] {
            let Some(config) = config else { continue };
            if cost == 0 {
                continue;
            }
            let bucket = bucket.get_or_insert_with(|| Bucket::full(config, now));
            bucket.refill(config, now);
            let quote = bucket.quote(config, cost);
            if !quote.allowed {
                return Verdict::Limited {
                    bucket: name,
                    figures: quote.figures,
                };
            }
            quotes.push((name, cost.min(config.max_tokens), quote.figures));
        }
        let mut shown = None;
        for (name, cost, figures) in quotes {
            let bucket = match name {
                BucketName::Requests => &mut self.requests,
                BucketName::BatchItems => &mut self.batch_items,
            };
            if let Some(bucket) = bucket {
                bucket.tokens -= cost;
            }
            if name == BucketName::Requests {
                shown = Some(figures);
            }
        }
        Verdict::Allowed {
            figures: shown,
            ahead: Ahead::default(),
        }
    }
}

/// How long a grant of tokens taken ahead stays spendable.
pub const GRANT_MS: Millis = 1_000;

/// Tokens an isolate holds for one environment, taken ahead from its limiter so that a
/// busy isolate asks the limiter about once per [`GRANT_MS`] instead of once per request.
/// A grant asks for what the isolate spent during its previous one (as a rate over a
/// whole grant's time), at most a twentieth of a bucket: small buckets (under 20 tokens)
/// are never taken ahead, so they stay exact.
/// Tokens a grant still holds when it lapses are lost, which errs on the strict side.
///
/// A grant running low (a quarter of its time or tokens left) is renewed by one request,
/// which asks the limiter for its own tokens and the next grant while the others go on
/// spending this one: a busy isolate's requests do not all reach the limiter together
/// when it lapses (they cannot wait on another request's call: the runtime cancels a
/// request that waits on I/O another one started).
#[derive(Debug, Clone, Default)]
pub struct Grant {
    left: Ahead,
    granted: Ahead,
    spent: Ahead,
    figures: Option<Figures>,
    until: Millis,
    renewing: bool,
}

impl Grant {
    /// A grant from the limiter's answer to a request that cost 1 request and `items`.
    /// The figures are the request's own; the bucket itself now holds `ahead` fewer.
    pub fn new(figures: Option<Figures>, ahead: Ahead, items: u64, now: Millis) -> Grant {
        Grant {
            left: ahead,
            granted: ahead,
            renewing: false,
            spent: Ahead { requests: 1, items },
            figures: figures.map(|f| Figures {
                remaining: f.remaining.saturating_sub(ahead.requests),
                ..f
            }),
            until: now + GRANT_MS,
        }
    }

    /// Spends one request and `items` runs from the grant, if it covers them and has not
    /// lapsed; returns the figures to show: the bucket's level plus what the grant holds.
    pub fn spend(
        &mut self,
        limits: &RateLimits,
        now: Millis,
        items: u64,
    ) -> Option<Option<Figures>> {
        let needs_items = limits.batch_items.is_some() && items > 0;
        let needs_request = limits.requests.is_some();
        if now >= self.until
            || (needs_request && self.left.requests == 0)
            || (needs_items && self.left.items < items)
        {
            return None;
        }
        if needs_request {
            self.left.requests -= 1;
        }
        if needs_items {
            self.left.items -= items;
        }
        self.spent.requests += 1;
        self.spent.items += items;
        Some(self.figures.map(|f| Figures {
            remaining: f.remaining + self.left.requests,
            ..f
        }))
    }

    /// Whether the request at `now` should renew this grant: it is live but running low
    /// (a quarter of its time, or of the requests or items it granted, left) and no
    /// request renews it already. Then that request asks the limiter (with the returned
    /// `ahead`) instead of spending here, and the grant counts as being renewed until
    /// [`Grant::renewal_failed`] or its replacement.
    pub fn renew(&mut self, limits: &RateLimits, now: Millis) -> Option<Ahead> {
        let low = |left: u64, granted: u64| left.saturating_mul(4) < granted;
        let running_low = now >= self.until - GRANT_MS / 4
            || low(self.left.requests, self.granted.requests)
            || low(self.left.items, self.granted.items);
        if self.renewing || now >= self.until || !running_low {
            return None;
        }
        self.renewing = true;
        Some(self.next_ahead(limits, now))
    }

    /// The limiter refused or did not answer the renewing request: a later one may try.
    pub fn renewal_failed(&mut self) {
        self.renewing = false;
    }

    /// What the next grant should take ahead, asked at `now`: what this one spent, as a
    /// rate over a whole grant's time (a grant spent or renewed early asks for more, at
    /// most ten times as much), capped at a twentieth of the bucket.
    pub fn next_ahead(&self, limits: &RateLimits, now: Millis) -> Ahead {
        let elapsed = (now - (self.until - GRANT_MS)).clamp(GRANT_MS / 10, GRANT_MS) as u64;
        let per_grant = |spent: u64| spent.saturating_mul(GRANT_MS as u64) / elapsed;
        let cap = |bucket: &Option<BucketConfig>| bucket.map_or(0, |b| b.max_tokens / 20);
        Ahead {
            requests: per_grant(self.spent.requests).min(cap(&limits.requests)),
            items: per_grant(self.spent.items).min(cap(&limits.batch_items)),
        }
    }
}

/// Whole seconds until `reset` for `Retry-After` (at least 1).
pub fn retry_after_secs(reset: Millis, now: Millis) -> u64 {
    let wait = (reset - now).max(0) as u64;
    wait.div_ceil(1000).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SMALL: BucketConfig = BucketConfig {
        max_tokens: 3,
        refill_rate: 2,
        interval_ms: 1_000,
    };

    fn limits(requests: Option<BucketConfig>, items: Option<BucketConfig>) -> RateLimits {
        RateLimits {
            requests,
            batch_items: items,
        }
    }

    fn remaining(v: Verdict) -> u64 {
        match v {
            Verdict::Allowed {
                figures: Some(f), ..
            } => f.remaining,
            other => panic!("expected allowed with figures, got {other:?}"),
        }
    }

    #[test]
    fn a_full_bucket_counts_down_then_refuses_until_the_next_refill() {
        let l = limits(Some(SMALL), None);
        let mut b = Buckets::default();
        assert_eq!(remaining(b.take(&l, 10_000, 0, Ahead::default())), 2);
        assert_eq!(remaining(b.take(&l, 10_100, 0, Ahead::default())), 1);
        assert_eq!(remaining(b.take(&l, 10_200, 0, Ahead::default())), 0);
        assert_eq!(
            b.take(&l, 10_300, 0, Ahead::default()),
            Verdict::Limited {
                bucket: BucketName::Requests,
                figures: Figures {
                    limit: 3,
                    remaining: 0,
                    reset: 11_000
                }
            }
        );
        // At the refill, two tokens arrive.
        assert_eq!(remaining(b.take(&l, 11_000, 0, Ahead::default())), 1);
        assert_eq!(remaining(b.take(&l, 11_001, 0, Ahead::default())), 0);
        assert!(matches!(
            b.take(&l, 11_002, 0, Ahead::default()),
            Verdict::Limited { .. }
        ));
    }

    #[test]
    fn refills_never_exceed_the_maximum_and_a_full_bucket_banks_no_time() {
        let l = limits(Some(SMALL), None);
        let mut b = Buckets::default();
        b.take(&l, 0, 0, Ahead::default());
        // Long idle: back to 3, not 3 + 2*100.
        assert_eq!(remaining(b.take(&l, 100_500, 0, Ahead::default())), 2);
        // The next refill is a whole interval after the bucket was last seen full.
        match b.take(&l, 100_600, 0, Ahead::default()) {
            Verdict::Allowed {
                figures: Some(f), ..
            } => assert_eq!(f.reset, 101_500),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn items_are_charged_with_the_request_both_or_neither() {
        let items = BucketConfig {
            max_tokens: 10,
            refill_rate: 5,
            interval_ms: 2_000,
        };
        let l = limits(Some(SMALL), Some(items));
        let mut b = Buckets::default();
        assert_eq!(remaining(b.take(&l, 0, 8, Ahead::default())), 2);
        // 8 + 3 > 10: refused by the item bucket; the request token stays.
        assert_eq!(
            b.take(&l, 1, 3, Ahead::default()),
            Verdict::Limited {
                bucket: BucketName::BatchItems,
                figures: Figures {
                    limit: 10,
                    remaining: 2,
                    reset: 2_000
                }
            }
        );
        assert_eq!(remaining(b.take(&l, 2, 2, Ahead::default())), 1);
        // Missing 7 items at 5 per refill: two refills away.
        match b.take(&l, 3, 7, Ahead::default()) {
            Verdict::Limited { figures, .. } => assert_eq!(figures.reset, 4_000),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_cost_above_the_maximum_waits_for_a_full_bucket() {
        let items = BucketConfig {
            max_tokens: 10,
            refill_rate: 10,
            interval_ms: 1_000,
        };
        let l = limits(None, Some(items));
        let mut b = Buckets::default();
        assert!(matches!(
            b.take(&l, 0, 500, Ahead::default()),
            Verdict::Allowed { figures: None, .. }
        ));
        assert!(matches!(
            b.take(&l, 10, 500, Ahead::default()),
            Verdict::Limited { .. }
        ));
        assert!(matches!(
            b.take(&l, 1_000, 500, Ahead::default()),
            Verdict::Allowed { figures: None, .. }
        ));
    }

    #[test]
    fn buckets_that_are_off_never_refuse() {
        let l = limits(None, None);
        assert!(l.is_off());
        let mut b = Buckets::default();
        for t in 0..10_000 {
            assert!(matches!(
                b.take(&l, t, 1_000, Ahead::default()),
                Verdict::Allowed { figures: None, .. }
            ));
        }
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(10_001, 10_000), 1);
        assert_eq!(retry_after_secs(11_001, 10_000), 2);
        assert_eq!(retry_after_secs(9_000, 10_000), 1);
    }

    #[test]
    fn parses_the_var_with_defaults_and_off_switches() {
        assert_eq!(parse_rate_limits(None), Ok(RateLimits::default()));
        assert_eq!(
            parse_rate_limits(Some(&json!({
                "requests": { "maxTokens": 5, "refillRate": 1, "interval": "2s" },
                "batchItems": false
            }))),
            Ok(RateLimits {
                requests: Some(BucketConfig {
                    max_tokens: 5,
                    refill_rate: 1,
                    interval_ms: 2_000
                }),
                batch_items: None,
            })
        );
        for (bad, says) in [
            (json!(7), "RATE_LIMITS: must be a table"),
            (
                json!({"request": false}),
                "RATE_LIMITS.request: unknown bucket",
            ),
            (
                json!({"requests": {"maxTokens": 5}}),
                "RATE_LIMITS.requests: expected",
            ),
            (
                json!({"requests": {"maxTokens": 5, "refillRate": 1, "interval": "soon"}}),
                "RATE_LIMITS.requests.interval",
            ),
            (
                json!({"batchItems": {"maxTokens": 0, "refillRate": 1, "interval": "1s"}}),
                "RATE_LIMITS.batchItems: maxTokens and refillRate must be at least 1",
            ),
        ] {
            let err = parse_rate_limits(Some(&bad)).unwrap_err();
            assert!(err.starts_with(says), "{bad}: {err}");
        }
    }

    #[test]
    fn tokens_taken_ahead_come_out_of_the_bucket_and_never_cause_a_refusal() {
        let big = BucketConfig {
            max_tokens: 1000,
            refill_rate: 1000,
            interval_ms: 1_000,
        };
        let l = limits(Some(big), Some(big));
        let mut b = Buckets::default();
        let ahead = Ahead {
            requests: 40,
            items: 2000,
        };
        match b.take(&l, 0, 10, ahead) {
            Verdict::Allowed {
                figures: Some(f),
                ahead,
            } => {
                assert_eq!(
                    ahead,
                    Ahead {
                        requests: 40,
                        items: 990
                    },
                    "items: what was left"
                );
                assert_eq!(f.remaining, 999, "the figures of the request itself");
            }
            other => panic!("{other:?}"),
        }
        // The bucket paid for it: 1000 - 1 - 40 requests, 0 items left.
        assert_eq!(remaining(b.take(&l, 1, 0, Ahead::default())), 958);
        assert!(matches!(
            b.take(&l, 2, 1, Ahead::default()),
            Verdict::Limited {
                bucket: BucketName::BatchItems,
                ..
            }
        ));
    }

    #[test]
    fn a_grant_is_spent_locally_until_it_runs_out_or_lapses() {
        let big = BucketConfig {
            max_tokens: 1000,
            refill_rate: 1000,
            interval_ms: 1_000,
        };
        let l = limits(Some(big), Some(big));
        let figures = Figures {
            limit: 1000,
            remaining: 900,
            reset: 5_000,
        };
        let mut grant = Grant::new(
            Some(figures),
            Ahead {
                requests: 2,
                items: 15,
            },
            5,
            0,
        );
        let shown = grant.spend(&l, 10, 10).expect("covered");
        assert_eq!(
            shown.unwrap().remaining,
            899,
            "the bucket's 898 plus the 1 the grant holds"
        );
        assert!(grant.spend(&l, 20, 10).is_none(), "5 items left, 10 asked");
        assert!(grant.spend(&l, 20, 5).is_some());
        assert!(grant.spend(&l, 30, 0).is_none(), "no request token left");
        // Once lapsed it asks for what it spent (3 requests, 20 items); spent within 30 ms
        // it asks for ten times that (the most), capped at 1000 / 20.
        assert_eq!(
            grant.next_ahead(&l, GRANT_MS),
            Ahead {
                requests: 3,
                items: 20
            }
        );
        assert_eq!(
            grant.next_ahead(&l, 30),
            Ahead {
                requests: 30,
                items: 50
            }
        );
        let mut lapsed = Grant::new(
            Some(figures),
            Ahead {
                requests: 5,
                items: 5,
            },
            0,
            0,
        );
        assert!(
            lapsed.spend(&l, GRANT_MS, 0).is_none(),
            "a lapsed grant is never spent"
        );
    }

    #[test]
    fn one_request_renews_a_grant_running_low_while_the_others_spend_it() {
        let big = BucketConfig {
            max_tokens: 1000,
            refill_rate: 1000,
            interval_ms: 1_000,
        };
        let l = limits(Some(big), None);
        let mut grant = Grant::new(
            None,
            Ahead {
                requests: 8,
                items: 0,
            },
            0,
            0,
        );
        for t in 1..=7 {
            assert_eq!(grant.renew(&l, t * 90), None, "2 or more of 8 left");
            assert!(grant.spend(&l, t * 90, 0).is_some());
        }
        // One of 8 left (under a quarter): this request renews, asking for what was spent
        // (by the request that got the grant and the 7 since) as a rate over a whole
        // grant's time: 8 in 720 ms, 11 in 1,000.
        assert_eq!(
            grant.renew(&l, 720),
            Some(Ahead {
                requests: 11,
                items: 0
            })
        );
        assert_eq!(grant.renew(&l, 720), None, "one renewal at a time");
        assert!(
            grant.spend(&l, 720, 0).is_some(),
            "the others spend meanwhile"
        );
        grant.renewal_failed();
        assert!(
            grant.renew(&l, 730).is_some(),
            "after a failure the next one renews"
        );
    }

    #[test]
    fn a_grant_is_renewed_in_the_last_quarter_of_its_time_and_never_once_lapsed() {
        let l = limits(Some(SMALL), None);
        let mut grant = Grant::new(None, Ahead::default(), 0, 0);
        assert_eq!(grant.renew(&l, GRANT_MS / 2), None);
        assert_eq!(
            grant.renew(&l, GRANT_MS),
            None,
            "lapsed: every request asks"
        );
        assert_eq!(grant.renew(&l, GRANT_MS * 3 / 4), Some(Ahead::default()));
    }

    #[test]
    fn small_buckets_are_never_taken_ahead() {
        let l = limits(Some(SMALL), Some(SMALL));
        let mut grant = Grant::new(None, Ahead::default(), 1, 0);
        for t in 1..10 {
            assert!(grant.spend(&l, t, 0).is_none());
        }
        assert_eq!(grant.next_ahead(&l, 10), Ahead::default());
    }
}

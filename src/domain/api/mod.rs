//! What callers see and are allowed: API keys and the environments they open, the
//! per-environment rate limits, the one error type and its rendering, the JSON views of
//! runs and batches, the list query and the merge of store pages, the queues and schedules
//! APIs' requests and views, and the parts of a request the edge reads (its URL, the pace
//! of its body).

pub mod activity;
pub mod auth;
pub mod bulk;
pub mod error;
pub mod http_body;
pub mod list;
pub mod queues;
pub mod rate_limit;
pub mod request_url;
pub mod schedules;
pub mod view;

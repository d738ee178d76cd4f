//! A task endpoint for the tests: a small HTTP server on 127.0.0.1 that records every
//! call (run, attempt, queue, concurrency key, start and end) and answers as the run's
//! payload asks: `{"sleepMs": n}` answers after n ms, `{"failTimes": k}` fails the first k
//! attempts, `{"alwaysFail": true}` always fails, `{"outputBytes": n}` answers a JSON string
//! of n bytes, `{"chunked": true}` answers without a content-length, `{"slowBodyMs": n}`
//! sends the status and the body's first byte at once and the rest n ms later. It also tracks how many calls of each
//! queue and (queue, key) were in flight at once, the number the limits are about.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

#[derive(Debug, Clone)]
pub struct Call {
    pub run_id: String,
    pub attempt: u64,
    pub started_ms: u64,
    pub ended_ms: Option<u64>,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

#[derive(Default)]
struct State {
    calls: Vec<Call>,
    attempts: HashMap<String, u64>,
    in_flight: HashMap<String, i64>,
    max_in_flight: HashMap<String, i64>,
}

#[derive(Clone)]
pub struct TaskServer {
    pub port: u16,
    state: Arc<Mutex<State>>,
}

pub fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A throttle seen from the endpoint: the most calls of `starts` (their start times, any
/// order) that began within `window_ms` of one another, and when the first of them began.
///
/// A call arrives some time after the gate admitted its run, and on a loaded machine that
/// delay varies by a few hundred milliseconds; a check therefore takes a window well
/// inside the throttle's spacing, so only a throttle that fails (not the calls' jitter)
/// crowds it.
pub fn most_started_within(starts: &[u64], window_ms: u64) -> (usize, u64) {
    let mut sorted = starts.to_vec();
    sorted.sort_unstable();
    (0..sorted.len())
        .map(|i| {
            let within = sorted[i..]
                .iter()
                .take_while(|s| **s < sorted[i] + window_ms);
            (within.count(), sorted[i])
        })
        .max_by_key(|(count, _)| *count)
        .unwrap_or((0, 0))
}

impl TaskServer {
    pub fn start() -> TaskServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the task server");
        let port = listener.local_addr().unwrap().port();
        let server = TaskServer {
            port,
            state: Arc::default(),
        };
        let handle = server.clone();
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let handle = handle.clone();
                thread::spawn(move || handle.serve(stream));
            }
        });
        server
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/task", self.port)
    }

    /// Every call of `run_id`, in order.
    pub fn calls_of(&self, run_id: &str) -> Vec<Call> {
        let state = self.state.lock().unwrap();
        state
            .calls
            .iter()
            .filter(|c| c.run_id == run_id)
            .cloned()
            .collect()
    }

    pub fn all_calls(&self) -> Vec<Call> {
        self.state.lock().unwrap().calls.clone()
    }

    /// The most calls of `queue` (or of `queue` with key `key`) in flight at once.
    pub fn max_in_flight(&self, queue: &str, key: Option<&str>) -> i64 {
        let name = match key {
            Some(key) => format!("{queue}\u{0}{key}"),
            None => queue.to_owned(),
        };
        self.state
            .lock()
            .unwrap()
            .max_in_flight
            .get(&name)
            .copied()
            .unwrap_or(0)
    }

    fn serve(&self, stream: TcpStream) {
        let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
        let mut reader = BufReader::new(stream.try_clone().expect("clone the socket"));
        let mut line = String::new();
        if reader.read_line(&mut line).is_err() {
            return;
        }
        let mut headers = Vec::new();
        let mut length = 0usize;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).is_err() || header.trim().is_empty() {
                break;
            }
            if let Some((name, value)) = header.trim_end().split_once(':') {
                let (name, value) = (name.trim().to_ascii_lowercase(), value.trim().to_owned());
                if name == "content-length" {
                    length = value.parse().unwrap_or(0);
                }
                headers.push((name, value));
            }
        }
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let asked = serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null);
        let slow_body = asked["payload"]["slowBodyMs"].as_u64();
        let chunked = asked["payload"]["chunked"].as_bool() == Some(true) || slow_body.is_some();
        let (status, answer, extra) = self.handle(headers, body);
        let extra: String = extra
            .iter()
            .map(|(name, value)| format!("{name}: {value}\r\n"))
            .collect();
        let mut stream = stream;
        let _ = if chunked {
            write!(
                stream,
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n{extra}transfer-encoding: chunked\r\nconnection: close\r\n\r\n"
            )
            .and_then(|()| {
                let answer = match slow_body {
                    Some(ms) => {
                        let (first, rest) = answer.split_at(1);
                        write!(stream, "1\r\n{first}\r\n")?;
                        stream.flush()?;
                        thread::sleep(Duration::from_millis(ms));
                        rest
                    }
                    None => answer.as_str(),
                };
                for piece in answer.as_bytes().chunks(64 * 1024) {
                    write!(stream, "{:x}\r\n", piece.len())?;
                    stream.write_all(piece)?;
                    stream.write_all(b"\r\n")?;
                }
                stream.write_all(b"0\r\n\r\n")
            })
        } else {
            write!(
                stream,
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n{extra}content-length: {}\r\nconnection: close\r\n\r\n{answer}",
                answer.len()
            )
        };
        let _ = stream.flush();
    }

    /// The answer to a call: status, body and extra headers, as the payload asks (see
    /// the fields read below).
    fn handle(
        &self,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    ) -> (u16, String, Vec<(&'static str, &'static str)>) {
        let call: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let text = |field: &str| call[field].as_str().unwrap_or_default().to_owned();
        let (run_id, queue, key) = (text("id"), text("queue"), text("concurrencyKey"));
        // An SDK's payload is superjson text (`{"json": …}`): its value drives the answer.
        let payload = match &call["payload"] {
            Value::String(text) => serde_json::from_str::<Value>(text)
                .ok()
                .and_then(|doc| doc.get("json").cloned())
                .unwrap_or(Value::Null),
            other => other.clone(),
        };
        let index;
        let attempt;
        {
            let mut state = self.state.lock().unwrap();
            let count = state.attempts.entry(run_id.clone()).or_insert(0);
            *count += 1;
            attempt = *count;
            for name in [queue.clone(), format!("{queue}\u{0}{key}")] {
                let now = {
                    let n = state.in_flight.entry(name.clone()).or_insert(0);
                    *n += 1;
                    *n
                };
                let max = state.max_in_flight.entry(name).or_insert(0);
                *max = (*max).max(now);
            }
            index = state.calls.len();
            state.calls.push(Call {
                run_id: run_id.clone(),
                attempt: call["attempt"].as_u64().unwrap_or(0),
                started_ms: epoch_ms(),
                ended_ms: None,
                headers,
                body,
            });
        }
        if let Some(ms) = payload["sleepMs"].as_u64() {
            thread::sleep(Duration::from_millis(ms));
        }
        let fail = payload["alwaysFail"].as_bool() == Some(true)
            || payload["failTimes"].as_u64().is_some_and(|k| attempt <= k);
        {
            let mut state = self.state.lock().unwrap();
            for name in [queue.clone(), format!("{queue}\u{0}{key}")] {
                *state.in_flight.entry(name).or_insert(0) -= 1;
            }
            state.calls[index].ended_ms = Some(epoch_ms());
        }
        if let Some(n) = payload["outputBytes"].as_u64().filter(|_| !fail) {
            return (
                200,
                format!("\"{}\"", "x".repeat(n.saturating_sub(2) as usize)),
                Vec::new(),
            );
        }
        // As the task package answers: an error it reports, and not to retry.
        if payload["abort"].as_bool() == Some(true) {
            let error = r#"{"error":{"name":"AbortTaskRunError","message":"no point trying again","stack":"AbortTaskRunError: no point trying again\n    at run (task.js:1:1)"}}"#;
            return (500, error.to_owned(), vec![("x-trigger-retry", "false")]);
        }
        if payload["superjsonOutput"].as_bool() == Some(true) {
            let output = r#"{"json":{"at":"2026-01-02T03:04:05.000Z","big":"10"},"meta":{"values":{"at":["Date"],"big":["bigint"]}}}"#;
            return (
                200,
                output.to_owned(),
                vec![("x-trigger-output-type", "application/super+json")],
            );
        }
        if fail {
            (
                500,
                format!(r#"{{"error":"failing attempt {attempt} on purpose"}}"#),
                Vec::new(),
            )
        } else {
            (
                200,
                format!(r#"{{"ok":true,"attempt":{attempt}}}"#),
                Vec::new(),
            )
        }
    }
}

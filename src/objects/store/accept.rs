//! Accepting a batch (docs/API.md section 2): batch keys, idempotency decisions, and the
//! one transaction that writes runs, keys, queue limits, outbox rows and the batch.

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;
use std::time::Duration;

use serde::Deserialize;
use serde_json::value::RawValue;
use worker::{Delay, Result, SqlStorageValue};

use super::protocol::{ClaimedRun, TriggerBatch, TriggerReply};
use super::{internal, now, schema, RunStore};
use crate::domain::basics::time::Millis;
use crate::domain::config::attempt_seconds;
use crate::domain::intake::debounce::{decide as decide_debounce, DebounceDecision, HeldDebounce};
use crate::domain::intake::idempotency::{
    decide_batch_key, plan_items, BatchKeyDecision, HeldBatchKey, HeldKey, ItemOutcome,
};
use crate::domain::intake::trigger::RunRequest;
use crate::domain::run::body::{self, ItemWriter, OwnFields, Span};
use crate::domain::run::delivery::{self, REDELIVER_AFTER_MS};
use crate::domain::run::status::RunStatus;
use crate::domain::scheduling::gate::priority_ms;
use crate::platform::meter;
use crate::platform::rpc::CallError;
use crate::platform::sql::{
    exec_in_chunks, exec_joined, insert_rows, opt_i64, rows, transaction, Sql,
};

#[derive(Deserialize)]
struct HeldKeyRow {
    key: String,
    run_id: String,
    expires_at: Millis,
    status: Option<String>,
}

#[derive(Deserialize)]
struct HeldBatchKeyRow {
    batch_id: String,
    body_hash: String,
    expires_at: Millis,
}

/// Queue names an object remembers as listed, at most (a store whose triggers name more
/// queues writes the others' `INSERT OR IGNORE` every time, as before).
const QUEUES_REMEMBERED: usize = 1_024;

/// What this object's accepts have committed that no later accept changes: its name in
/// `meta`, and the queues listed in `queues` (rows no command deletes). An accept skips
/// those statements (two per trigger, on top of the four or five of a single keyed
/// trigger). Memory only, filled after each commit: a restarted object writes them once
/// more, ignored.
#[derive(Default)]
pub(super) struct Written {
    named: bool,
    queues: HashSet<String>,
}

impl Written {
    /// Records what a committed accept wrote: the name, and the queues its new runs named.
    fn committed<'a>(&mut self, queues: impl IntoIterator<Item = &'a str>) {
        self.named = true;
        for queue in queues {
            if self.queues.len() >= QUEUES_REMEMBERED {
                break;
            }
            if !self.queues.contains(queue) {
                self.queues.insert(queue.to_owned());
            }
        }
    }
}

impl RunStore {
    /// docs/API.md section 2: create the batch, or replay it for a repeated batch key.
    ///
    /// Triggers that reach the object together are accepted as one group: the first waits
    /// one turn of the event loop for others to arrive, arms the alarm once for all, then
    /// accepts them in one run of synchronous code (each in its own transaction, so one
    /// failing leaves the others), sends the group's queue messages together and answers
    /// each.
    pub(super) async fn trigger_batch(&self, cmd: TriggerBatch) -> Result<TriggerReply> {
        let (reply, lead) = self.triggers.add(cmd);
        if lead {
            Delay::from(Duration::ZERO).await;
            self.triggers
                .flush_once(|group| self.accept_group(group))
                .await;
        }
        reply
            .await
            .map_err(|_| internal("a grouped trigger got no answer"))?
            .map_err(worker::Error::from)
    }

    async fn accept_group(
        &self,
        group: Vec<TriggerBatch>,
    ) -> Vec<std::result::Result<TriggerReply, CallError>> {
        let now = now();
        // Arm the alarm first, for the earliest moment any item could need it: if a commit
        // below fails, a spare wake-up is harmless. After this await, the batch-key checks,
        // the key reads, the plans and the writes run with no await at all, so no other
        // request can interleave with an idempotency decision.
        let earliest = group
            .iter()
            .flat_map(|cmd| &cmd.items)
            .map(|item| item.first_wake(now, REDELIVER_AFTER_MS));
        if let Some(at) = earliest.min() {
            if let Err(e) = self.ensure_alarm(at).await {
                let failed = CallError::from(e);
                return group.iter().map(|_| Err(failed.clone())).collect();
            }
        }
        // Each trigger in a transaction of its own, so that one failing leaves the others.
        // (One outer transaction around them, with each trigger's a savepoint inside it,
        // measured slower: about 460 against 540 requests/s for batches of 1.)
        let mut send_now = Vec::new();
        let replies = group
            .into_iter()
            .map(|cmd| {
                let (reply, due) = self.accept(cmd, now)?;
                send_now.extend(due);
                Ok(reply)
            })
            .collect();
        self.send(send_now).await;
        replies
    }

    /// One trigger of a group: replays a repeated batch key, or plans and writes the runs
    /// in one transaction. Also returns the outbox rows it wrote that are due now, to send.
    fn accept(&self, cmd: TriggerBatch, now: Millis) -> Result<(TriggerReply, Due)> {
        let sql = self.sql();
        if let Some(key) = &cmd.batch_key {
            let held = sql
                .exec(
                    "SELECT batch_id, body_hash, expires_at FROM batch_keys WHERE task = ? AND key = ?",
                    vec![cmd.task.as_str().into(), key.key.as_str().into()],
                )?
                .to_array::<HeldBatchKeyRow>()?
                .into_iter()
                .next()
                .map(|r| HeldBatchKey {
                    batch_id: r.batch_id,
                    body_hash: r.body_hash,
                    expires_at: r.expires_at,
                });
            match decide_batch_key(held.as_ref(), &key.body_hash, now) {
                BatchKeyDecision::Replay { batch_id } => {
                    let batch = self
                        .load_batch(&batch_id)?
                        .ok_or_else(|| internal("batch key without batch"))?;
                    let cached = vec![true; batch.runs.len()];
                    let replay = TriggerReply::Triggered {
                        batch_id: Some(batch_id),
                        runs: batch.runs,
                        cached,
                        ready: Vec::new(),
                    };
                    return Ok((replay, Vec::new()));
                }
                BatchKeyDecision::Conflict => {
                    return Ok((TriggerReply::BatchKeyConflict, Vec::new()))
                }
                BatchKeyDecision::Fresh => {}
            }
        }

        // A trigger of one keyed item (nearly every single trigger) does not look its key
        // up first: the run's insert is guarded by the key's absence. A key already stored
        // (the same trigger again, or a key that expired or was released) rolls that try
        // back, and the trigger is accepted the general way, which decides by the key's row.
        if let Some(key) = lone_key(&cmd) {
            if let Some(accepted) = self.accept_items(&cmd, now, Some(key))? {
                return Ok(accepted);
            }
        }
        self.accept_items(&cmd, now, None)?
            .ok_or_else(|| internal("an accept that guessed nothing was rolled back"))
    }

    /// Plans the trigger's items and writes them in one transaction. With `guess`, the
    /// key of its one item is taken for not stored; `None` when it was (nothing written).
    fn accept_items(
        &self,
        cmd: &TriggerBatch,
        now: Millis,
        guess: Option<&str>,
    ) -> Result<Option<(TriggerReply, Due)>> {
        let sql = self.sql();
        // Items of a two-step batch that were received before keep the run they made.
        let recorded = match (&cmd.batch_id, &cmd.batch_items) {
            (Some(batch_id), Some(indexes)) => self.batch_runs(batch_id, indexes)?,
            _ => HashMap::new(),
        };
        let index_of = |i: usize| cmd.batch_items.as_ref().map(|ix| ix[i]);
        let keys: Vec<Option<&str>> = cmd
            .items
            .iter()
            .enumerate()
            .map(
                |(i, item)| match index_of(i).filter(|ix| recorded.contains_key(ix)) {
                    Some(_) => None,
                    None => item.idempotency_key.as_deref(),
                },
            )
            .collect();
        let held = match guess {
            Some(_) => HashMap::new(),
            None => self.held_keys(&cmd.task, &keys)?,
        };
        let mut outcomes = plan_items(&keys, &cmd.run_ids, &held, now);
        for (i, outcome) in outcomes.iter_mut().enumerate() {
            if let Some(run_id) = index_of(i).and_then(|ix| recorded.get(&ix)) {
                *outcome = ItemOutcome {
                    run_id: run_id.clone(),
                    created: false,
                };
            }
        }

        let debounced = self.plan_debounces(cmd, &mut outcomes, now)?;

        let runs: Vec<String> = outcomes.iter().map(|o| o.run_id.clone()).collect();
        let cached: Vec<bool> = outcomes.iter().map(|o| !o.created).collect();
        let ready: Vec<ClaimedRun> = cmd
            .items
            .iter()
            .zip(&outcomes)
            .filter(|(item, o)| o.created && item.delay_until.is_none())
            .map(|(item, o)| ClaimedRun {
                run_id: o.run_id.clone(),
                queue: item.queue.clone().unwrap_or_default(),
                concurrency_key: item.concurrency_key.clone(),
                queue_limit: item.queue_limit,
                limit_set_at: now,
                queued_at: now,
                expires_at: item.kept_ttl().map(|ttl| ttl.ends(now)),
                max_duration_secs: attempt_seconds(item.max_duration.map(i64::from)),
                priority_ms: priority_ms(item.priority),
            })
            .collect();
        let mut key_stored = false;
        let due = transaction(&self.state.storage(), || {
            let written = self.written.borrow();
            let Some(due) = write_batch(&sql, cmd, &outcomes, &runs, &written, guess, now)? else {
                key_stored = true;
                return Err(internal("the guessed key is stored")); // rolls the try back
            };
            write_debounces(&sql, cmd, &debounced, now)?;
            Ok(due)
        });
        if key_stored {
            return Ok(None);
        }
        let due = due?;
        self.written.borrow_mut().committed(
            cmd.items
                .iter()
                .zip(&outcomes)
                .filter(|(_, o)| o.created)
                .map(|(item, _)| item.queue.as_deref().unwrap_or_default()),
        );
        let created = outcomes.iter().filter(|o| o.created).count();
        meter::runs_accepted(created);
        if created > 0 {
            self.tally(Some(crate::domain::api::activity::Event::Created(
                created as u64,
            )))?;
        }
        let reply = TriggerReply::Triggered {
            batch_id: cmd.batch_id.clone(),
            runs,
            cached,
            ready,
        };
        Ok(Some((reply, due)))
    }

    /// Debounced items (`domain::intake::debounce`) that would create a run: while their
    /// key's run is `DELAYED`, that run takes the item (its outcome becomes the run,
    /// cached) and moves; otherwise the new run becomes the key's. Items of one trigger
    /// with one key meet the same way, the first making the run.
    fn plan_debounces(
        &self,
        cmd: &TriggerBatch,
        outcomes: &mut [ItemOutcome],
        now: Millis,
    ) -> Result<Vec<DebounceWrite>> {
        #[derive(Deserialize)]
        struct Row {
            run_id: String,
            latest: Millis,
            status: Option<String>,
        }
        let mut keys: HashMap<String, HeldDebounce> = HashMap::new();
        let mut writes = Vec::new();
        for (i, (item, outcome)) in cmd.items.iter().zip(outcomes.iter_mut()).enumerate() {
            let Some(debounce) = item.debounce.as_ref().filter(|_| outcome.created) else {
                continue;
            };
            if !keys.contains_key(&debounce.key) {
                let stored = self
                    .sql()
                    .exec(
                        "SELECT d.run_id AS run_id, d.latest AS latest, r.status AS status
                         FROM debounce_keys d LEFT JOIN runs r ON r.id = d.run_id
                         WHERE d.task = ? AND d.key = ?",
                        vec![cmd.task.as_str().into(), debounce.key.as_str().into()],
                    )?
                    .to_array::<Row>()?
                    .pop();
                if let Some(row) = stored {
                    let delayed = row.status.as_deref().and_then(RunStatus::parse)
                        == Some(RunStatus::Delayed);
                    keys.insert(
                        debounce.key.clone(),
                        HeldDebounce {
                            run_id: row.run_id,
                            latest: row.latest,
                            delayed,
                        },
                    );
                }
            }
            match decide_debounce(keys.get(&debounce.key), debounce, now) {
                DebounceDecision::Create { latest, .. } => {
                    keys.insert(
                        debounce.key.clone(),
                        HeldDebounce {
                            run_id: outcome.run_id.clone(),
                            latest,
                            delayed: true,
                        },
                    );
                    writes.push(DebounceWrite::Hold {
                        key: debounce.key.clone(),
                        run_id: outcome.run_id.clone(),
                        latest,
                    });
                }
                DebounceDecision::Extend { run_id, due } => {
                    *outcome = ItemOutcome {
                        run_id: run_id.clone(),
                        created: false,
                    };
                    writes.push(DebounceWrite::Move {
                        run_id,
                        due,
                        trailing_item: debounce.trailing.then_some(i),
                    });
                }
            }
        }
        Ok(writes)
    }

    /// The runs earlier deliveries of these items of two-step batch `batch_id` made.
    fn batch_runs(&self, batch_id: &str, indexes: &[u32]) -> Result<HashMap<u32, String>> {
        #[derive(Deserialize)]
        struct Row {
            idx: i64,
            run_id: String,
        }
        let wanted: Vec<String> = indexes.iter().map(u32::to_string).collect();
        let mut found = HashMap::new();
        exec_in_chunks(
            &self.sql(),
            "SELECT idx, run_id FROM batch_runs WHERE batch_id = ? AND idx IN ({list})",
            &[batch_id.into()],
            &wanted,
            |cursor| {
                for row in cursor.to_array::<Row>()? {
                    found.insert(row.idx.max(0) as u32, row.run_id);
                }
                Ok(())
            },
        )?;
        Ok(found)
    }

    /// The stored keys among `keys`, with their runs' statuses.
    pub(super) fn held_keys(
        &self,
        task: &str,
        keys: &[Option<&str>],
    ) -> Result<HashMap<String, HeldKey>> {
        let mut wanted: Vec<&str> = keys.iter().flatten().copied().collect();
        wanted.sort_unstable();
        wanted.dedup();
        let mut held = HashMap::with_capacity(wanted.len());
        // From the keys looked for into the table: a key not stored (the usual case)
        // costs no row read.
        exec_joined(
            &self.sql(),
            "SELECT k.key AS key, k.run_id AS run_id, k.expires_at AS expires_at,
                 r.status AS status
             FROM {keys} AS w CROSS JOIN idempotency_keys k ON k.task = ?1 AND k.key = w.value
             LEFT JOIN runs r ON r.id = k.run_id",
            &[task.into()],
            &wanted,
            |cursor| {
                for row in cursor.to_array::<HeldKeyRow>()? {
                    // A key whose run is gone holds nothing.
                    let Some(status) = row.status.as_deref().and_then(RunStatus::parse) else {
                        continue;
                    };
                    held.insert(
                        row.key,
                        HeldKey {
                            run_id: row.run_id,
                            expires_at: row.expires_at,
                            run_status: status,
                        },
                    );
                }
                Ok(())
            },
        )?;
        Ok(held)
    }
}

/// What a debounced trigger writes besides its runs.
enum DebounceWrite {
    /// The key now holds this new run, to be pushed back at most until `latest`.
    Hold {
        key: String,
        run_id: String,
        latest: Millis,
    },
    /// The key's `DELAYED` run starts at `due` instead; with `trailing_item`, it takes
    /// that item's payload and options.
    Move {
        run_id: String,
        due: Millis,
        trailing_item: Option<usize>,
    },
}

/// Writes the debounce keys and moves, after the runs (a move may be of a run this
/// trigger created). Each move is a delivery at the new time, as a reschedule is; the one
/// for the old time finds the run still delayed and leaves it.
fn write_debounces(
    sql: &Sql,
    cmd: &TriggerBatch,
    writes: &[DebounceWrite],
    now: Millis,
) -> Result<()> {
    for write in writes {
        match write {
            DebounceWrite::Hold {
                key,
                run_id,
                latest,
            } => {
                sql.exec(
                    "INSERT OR REPLACE INTO debounce_keys (task, key, run_id, latest) VALUES (?, ?, ?, ?)",
                    vec![
                        cmd.task.as_str().into(),
                        key.as_str().into(),
                        run_id.as_str().into(),
                        (*latest).into(),
                    ],
                )?;
            }
            DebounceWrite::Move {
                run_id,
                due,
                trailing_item,
            } => {
                let moved = sql
                    .exec(
                        "UPDATE runs SET delayed_until = ?, updated_at = ?
                         WHERE id = ? AND status = 'DELAYED'",
                        vec![(*due).into(), now.into(), run_id.as_str().into()],
                    )?
                    .rows_written();
                if moved == 0 {
                    return Err(internal("a debounced run left DELAYED within its trigger"));
                }
                if let Some(item) = trailing_item.and_then(|i| cmd.items.get(i)) {
                    take_trailing(sql, run_id, item)?;
                }
                insert_delivery(sql, *due, None, std::slice::from_ref(run_id))?;
            }
        }
    }
    Ok(())
}

/// A trailing debounce: the run takes the last trigger's payload (and its type),
/// metadata, tags, maxAttempts, maxDuration and machine.
fn take_trailing(sql: &Sql, run_id: &str, item: &RunRequest) -> Result<()> {
    sql.exec(
        "DELETE FROM run_chunks WHERE run_id = ? AND part = 'payload'",
        vec![run_id.into()],
    )?;
    let (payload, payload_chunks) = store_text(
        sql,
        run_id,
        "payload",
        item.payload.as_deref().map(RawValue::get),
    )?;
    let tags = serde_json::to_string(&item.tags).map_err(|e| internal(e.to_string()))?;
    sql.exec(
        "UPDATE runs SET payload = ?, payload_chunks = ?, payload_type = ?, metadata = ?,
             tags = ?, max_attempts = ?, max_duration = ?, machine = ?
         WHERE id = ?",
        vec![
            payload,
            payload_chunks.into(),
            item.payload_type.as_str().into(),
            item.metadata.as_deref().map(RawValue::get).into(),
            tags.into(),
            opt_i64(item.max_attempts),
            opt_i64(item.max_duration),
            item.machine.as_deref().map(RawValue::get).into(),
            run_id.into(),
        ],
    )?;
    Ok(())
}

/// Outbox rows to send, as `(seq, runs)`.
pub(super) type Due = Vec<(i64, Vec<String>)>;

/// Writes a planned batch, but not what `written` says earlier accepts committed. Runs
/// inside `transactionSync`; any error rolls it all back. Returns the outbox rows it wrote
/// that are due now.
fn write_batch(
    sql: &Sql,
    cmd: &TriggerBatch,
    outcomes: &[ItemOutcome],
    runs: &[String],
    written: &Written,
    guess: Option<&str>,
    now: Millis,
) -> Result<Option<Due>> {
    // Multi-row statements whose values are packed into a few bound values
    // (`platform::packed`): a batch of 100 runs is a statement for its runs and one for
    // their keys, not 200.
    let (mut run_rows, mut key_rows, mut outbox_rows) = (Vec::new(), Vec::new(), Vec::new());
    let mut limits: Vec<(&str, u32)> = Vec::new();
    let mut queues: Vec<&str> = Vec::new();
    let created: Vec<(&RunRequest, &str)> = cmd
        .items
        .iter()
        .zip(outcomes)
        .filter(|(_, outcome)| outcome.created)
        .map(|(item, outcome)| (item, outcome.run_id.as_str()))
        .collect();
    // The runs' write-once options, one row for the lot (`domain::run::body`); a single
    // run keeps them in its own row.
    let writer = (created.len() > 1)
        .then(|| ItemWriter::new(&cmd.trigger_function, &cmd.retry, cmd.batch_id.as_deref()))
        .transpose()
        .map_err(internal)?;
    let packed = body::pack(
        created
            .iter()
            .map(|(item, _)| match &writer {
                Some(writer) => body_item(writer, item),
                None => Ok(None),
            })
            .collect::<Result<Vec<_>>>()?,
    );
    let seqs = packed
        .bodies
        .into_iter()
        .map(|items| insert_body(sql, items))
        .collect::<Result<Vec<_>>>()?;
    let retry = serde_json::to_string(&cmd.retry).map_err(|e| internal(e.to_string()))?;
    for ((item, run_id), place) in created.iter().zip(packed.places) {
        let in_body = place.map(|p| Span {
            seq: seqs[p.body],
            at: p.at,
            len: p.len,
        });
        run_rows.extend(run_row(sql, cmd, item, run_id, in_body, &retry, now)?);
        if let Some(key) = &item.idempotency_key {
            let expires_at =
                now.saturating_add(item.idempotency_key_ttl_ms.min(i64::MAX as u64) as i64);
            key_rows.extend([
                cmd.task.as_str().into(),
                key.as_str().into(),
                (*run_id).into(),
                expires_at.into(),
            ]);
        }
        let queue = item.queue.as_deref().unwrap_or_default();
        if !written.queues.contains(queue) {
            queues.push(queue);
        }
        if let Some(limit) = item.queue_limit {
            // The last item's limit for a queue wins, as if each were written in turn.
            limits.retain(|(name, _)| *name != queue);
            limits.push((queue, limit));
        }
        outbox_rows.push(((*run_id).to_owned(), item.delay_until.unwrap_or(now)));
    }
    match guess {
        Some(key) => {
            if !insert_run_unless_key_stored(sql, &cmd.task, key, run_rows)? {
                return Ok(None);
            }
        }
        None => insert_rows(
            sql,
            schema::INSERT_RUN_INTO,
            "",
            schema::RUN_COLUMNS,
            run_rows,
        )?,
    }
    let created: Vec<String> = outbox_rows.iter().map(|(run, _)| run.clone()).collect();
    insert_listing(sql, now, &created)?;
    insert_rows(
        sql,
        "INSERT OR REPLACE INTO idempotency_keys (task, key, run_id, expires_at)",
        "",
        4,
        key_rows,
    )?;
    let limit_rows = limits
        .into_iter()
        .flat_map(|(queue, limit)| [queue.into(), i64::from(limit).into(), now.into()])
        .collect();
    insert_rows(
        sql,
        "INSERT INTO queues (name, concurrency_limit, updated_at)",
        "ON CONFLICT (name) DO UPDATE SET concurrency_limit = excluded.concurrency_limit,
             updated_at = excluded.updated_at",
        3,
        limit_rows,
    )?;
    // Every queue a run was triggered on is listed (`GET /api/v1/queues`): a row the first
    // time a name comes, nothing written after, and no statement once `written` has it.
    queues.sort_unstable();
    queues.dedup();
    let queue_rows = queues
        .into_iter()
        .flat_map(|queue| [queue.into(), SqlStorageValue::Null, now.into()])
        .collect();
    insert_rows(
        sql,
        "INSERT OR IGNORE INTO queues (name, concurrency_limit, updated_at)",
        "",
        3,
        queue_rows,
    )?;
    let mut due = Vec::new();
    for (due_at, runs) in delivery::deliveries(outbox_rows) {
        // A row due now goes out with this trigger, so it is written as sent: should that
        // send fail, the alarm (armed for `REDELIVER_AFTER_MS` from now) sends it again,
        // as it would an unacknowledged one. Marking it afterwards would cost a row.
        let sent_at = (due_at <= now).then_some(now);
        let seq = insert_delivery(sql, due_at, sent_at, &runs)?;
        if sent_at.is_some() {
            due.push((seq, runs));
        }
    }
    if !written.named {
        sql.exec(
            "INSERT OR IGNORE INTO meta (key, value) VALUES ('name', ?)",
            vec![cmd.store.as_str().into()],
        )?;
    }
    let Some(batch_id) = &cmd.batch_id else {
        return Ok(Some(due)); // a single trigger: no batch record
    };
    if let Some(indexes) = &cmd.batch_items {
        // Items of a two-step batch recorded elsewhere: remember each index's run here.
        for (index, outcome) in indexes.iter().zip(outcomes) {
            sql.exec(
                "INSERT OR IGNORE INTO batch_runs (batch_id, idx, run_id) VALUES (?, ?, ?)",
                vec![
                    batch_id.as_str().into(),
                    i64::from(*index).into(),
                    outcome.run_id.as_str().into(),
                ],
            )?;
        }
        return Ok(Some(due));
    }
    let runs_json = serde_json::to_string(runs).map_err(|e| internal(e.to_string()))?;
    let batch_key = cmd.batch_key.as_ref();
    sql.exec(
        "INSERT INTO batches (id, task, status, idempotency_key, runs, created_at, updated_at)
         VALUES (?, ?, 'PENDING', ?, ?, ?, ?)",
        vec![
            batch_id.as_str().into(),
            cmd.task.as_str().into(),
            batch_key.map(|k| k.key.as_str()).into(),
            runs_json.into(),
            now.into(),
            now.into(),
        ],
    )?;
    if let Some(key) = batch_key {
        let expires_at = now.saturating_add(key.ttl_ms.min(i64::MAX as u64) as i64);
        sql.exec(
            "INSERT OR REPLACE INTO batch_keys (task, key, batch_id, body_hash, expires_at) VALUES (?, ?, ?, ?, ?)",
            vec![
                cmd.task.as_str().into(),
                key.key.as_str().into(),
                batch_id.as_str().into(),
                key.body_hash.as_str().into(),
                expires_at.into(),
            ],
        )?;
    }
    Ok(Some(due))
}

/// The key of a trigger's one keyed item, when the item may be accepted on the guess that
/// the key is not stored (`RunStore::accept`): not an item of a two-step batch (those keep
/// the run recorded for their index) and not debounced (which may give it another run).
fn lone_key(cmd: &TriggerBatch) -> Option<&str> {
    match &cmd.items[..] {
        [item] if cmd.batch_items.is_none() && item.debounce.is_none() => {
            item.idempotency_key.as_deref()
        }
        _ => None,
    }
}

/// Inserts one run's row (`schema::INSERT_RUN_INTO` values) unless the idempotency key
/// `key` of `task` is stored; `false` when it is. A key not stored costs no row read.
fn insert_run_unless_key_stored(
    sql: &Sql,
    task: &str,
    key: &str,
    mut row: Vec<SqlStorageValue>,
) -> Result<bool> {
    static TEXT: LazyLock<String> = LazyLock::new(|| {
        let values: Vec<String> = (1..=schema::RUN_COLUMNS).map(|n| format!("?{n}")).collect();
        format!(
            "{} SELECT {} WHERE NOT EXISTS
             (SELECT 1 FROM idempotency_keys WHERE task = ?{} AND key = ?{})",
            schema::INSERT_RUN_INTO,
            values.join(", "),
            schema::RUN_COLUMNS + 1,
            schema::RUN_COLUMNS + 2,
        )
    });
    debug_assert_eq!(row.len(), schema::RUN_COLUMNS, "one run's row");
    row.extend([task.into(), key.into()]);
    Ok(sql.exec(&TEXT, row)?.rows_written() > 0)
}

/// Writes a `run_bodies` row of `items` (schema step 11); returns its `seq`.
pub(super) fn insert_body(sql: &Sql, items: String) -> Result<i64> {
    rows(
        sql,
        "INSERT INTO run_bodies (items) VALUES (CAST(? AS BLOB)) RETURNING seq",
        vec![items.into()],
    )?
    .pop()
    .ok_or_else(|| internal("an inserted body has no seq"))?
    .int()
}

/// Lists runs created at `at` (`schema` step 6): one row for all of them.
pub(super) fn insert_listing(sql: &Sql, at: Millis, runs: &[String]) -> Result<()> {
    let Some(first) = runs.iter().min() else {
        return Ok(());
    };
    let ids = serde_json::to_string(runs).map_err(|e| internal(e.to_string()))?;
    sql.exec(
        "INSERT INTO listing (at, first, ids) VALUES (?, ?, ?)",
        vec![at.into(), first.as_str().into(), ids.into()],
    )?;
    Ok(())
}

/// Writes an outbox row of `runs` due at `due_at` (and sent at `sent_at`, when the caller
/// sends it at once); returns its `seq`. A random one, within JavaScript's safe integers
/// (it crosses the SQL API and messages as a number): a `seq` is not taken again by a later
/// row (as the next rowid would be once the last row is deleted), so a late
/// acknowledgement of a deleted row never deletes another.
pub(super) fn insert_delivery(
    sql: &Sql,
    due_at: Millis,
    sent_at: Option<Millis>,
    runs: &[String],
) -> Result<i64> {
    let runs = serde_json::to_string(runs).map_err(|e| internal(e.to_string()))?;
    let mut row = rows(
        sql,
        "INSERT INTO deliveries (seq, due_at, sent_at, runs)
         VALUES (random() % 9007199254740991, ?, ?, ?) RETURNING seq",
        vec![due_at.into(), opt_i64(sent_at), runs.into()],
    )?
    .pop()
    .ok_or_else(|| internal("an inserted delivery has no seq"))?;
    row.int()
}

/// Stores text in the column when it is small, else in `run_chunks`; returns the column
/// value and the number of chunks.
fn store_text(
    sql: &Sql,
    run_id: &str,
    part: &str,
    text: Option<&str>,
) -> Result<(SqlStorageValue, i64)> {
    match text {
        None => Ok((SqlStorageValue::Null, 0)),
        Some(t) if t.len() <= schema::CHUNK_BYTES => Ok((t.into(), 0)),
        Some(t) => {
            let pieces = delivery::split_utf8(t, schema::CHUNK_BYTES);
            for (seq, piece) in pieces.iter().enumerate() {
                sql.exec(
                    "INSERT INTO run_chunks (run_id, part, seq, data) VALUES (?, ?, ?, ?)",
                    vec![
                        run_id.into(),
                        part.into(),
                        (seq as i64).into(),
                        (*piece).into(),
                    ],
                )?;
            }
            Ok((SqlStorageValue::Null, pieces.len() as i64))
        }
    }
}

/// `item`'s write-once options as a body item, or `None` when they are too large for a
/// body (then its row keeps them, the payload and context in chunks when large).
fn body_item(writer: &ItemWriter, item: &RunRequest) -> Result<Option<String>> {
    let raw_len = |raw: &Option<Box<RawValue>>| raw.as_deref().map_or(0, |r| r.get().len());
    if raw_len(&item.payload) + raw_len(&item.context) > body::ITEM_BYTES {
        return Ok(None);
    }
    let ttl = item.ttl.as_ref().and_then(Option::as_ref);
    writer
        .write(&OwnFields {
            payload: item.payload.as_deref(),
            payload_type: &item.payload_type,
            context: item.context.as_deref(),
            idempotency_key: item.idempotency_key.as_deref(),
            ttl: ttl.map(|t| t.text.as_str()),
        })
        .map(Some)
        .map_err(internal)
}

/// The values of a new run's row, in `schema::INSERT_RUN_INTO`'s order: with `in_body`,
/// its write-once options left empty (schema step 11), else all of them (its payload and
/// context written to `run_chunks` first when they are too large for the row); `retry`
/// is the command's backoff as JSON.
fn run_row(
    sql: &Sql,
    cmd: &TriggerBatch,
    item: &RunRequest,
    run_id: &str,
    in_body: Option<Span>,
    retry: &str,
    now: Millis,
) -> Result<Vec<SqlStorageValue>> {
    let ttl = item.ttl.clone().flatten();
    let in_row = in_body.is_none();
    let (payload, payload_chunks, context, context_chunks) = if in_row {
        let payload = item.payload.as_deref().map(RawValue::get);
        let context = item.context.as_deref().map(RawValue::get);
        let (payload, payload_chunks) = store_text(sql, run_id, "payload", payload)?;
        let (context, context_chunks) = store_text(sql, run_id, "context", context)?;
        (payload, payload_chunks, context, context_chunks)
    } else {
        let null = SqlStorageValue::Null;
        (null.clone(), schema::PAYLOAD_IN_BODY, null, 0)
    };
    // A column whose value the body item holds is left empty.
    let optional = |value: Option<&str>| -> SqlStorageValue {
        if in_row {
            value.into()
        } else {
            SqlStorageValue::Null
        }
    };
    let required = |value: &str| SqlStorageValue::from(if in_row { value } else { "" });
    let (status, queued_at) = match item.delay_until {
        Some(_) => (RunStatus::Delayed, None),
        None => (RunStatus::Queued, Some(now)),
    };
    let tags = serde_json::to_string(&item.tags).map_err(|e| internal(e.to_string()))?;
    let params: Vec<SqlStorageValue> = vec![
        run_id.into(),
        cmd.task.as_str().into(),
        status.as_str().into(),
        optional(cmd.batch_id.as_deref()),
        optional(item.idempotency_key.as_deref()),
        payload,
        payload_chunks.into(),
        required(&item.payload_type),
        context,
        context_chunks.into(),
        item.queue.as_deref().unwrap_or_default().into(),
        opt_i64(item.queue_limit),
        item.concurrency_key.as_deref().into(),
        tags.into(),
        optional(ttl.as_ref().map(|t| t.text.as_str())),
        ttl.as_ref()
            .map(|t| t.ms.min(i64::MAX as u64) as i64)
            .into(),
        item.delay_until.into(),
        opt_i64(item.max_attempts),
        item.metadata.as_deref().map(RawValue::get).into(),
        item.machine.as_deref().map(RawValue::get).into(),
        item.priority.into(),
        opt_i64(item.max_duration),
        i64::from(item.is_test).into(),
        required(&cmd.trigger_function),
        now.into(),
        now.into(),
        queued_at.into(),
        // A TTL runs from the moment the run is QUEUED; a delayed run gets its deadline
        // when the alarm queues it.
        queued_at.zip(ttl.as_ref()).map(|(at, t)| t.ends(at)).into(),
        optional(Some(retry)),
        in_body.as_ref().map(|p| p.seq).into(),
        in_body.as_ref().map(|p| p.at).into(),
        in_body.as_ref().map(|p| p.len).into(),
    ];
    debug_assert_eq!(params.len(), schema::RUN_COLUMNS);
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_object_remembers_its_name_and_queues_written_up_to_a_bound() {
        let mut written = Written::default();
        assert!(!written.named && written.queues.is_empty());
        written.committed(["a", "b", "a", ""]);
        assert!(written.named);
        assert_eq!(written.queues.len(), 3, "the default queue's name is ''");
        let many: Vec<String> = (0..2 * QUEUES_REMEMBERED).map(|n| n.to_string()).collect();
        written.committed(many.iter().map(String::as_str));
        assert_eq!(written.queues.len(), QUEUES_REMEMBERED);
        assert!(written.queues.contains("a"), "names known stay known");
    }

    #[test]
    fn only_a_lone_keyed_item_of_a_plain_trigger_is_accepted_on_a_guess() {
        let item = |extra: &str| {
            format!(
                r#"{{"payload_type":"application/json","idempotency_key_ttl_ms":1,
                    "tags":[],"is_test":false{extra}}}"#
            )
        };
        let keyed = item(r#","idempotency_key":"k""#);
        let command = |items: &[&str], two_step: bool| -> TriggerBatch {
            let batch_items = if two_step { "[0]" } else { "null" };
            serde_json::from_str(&format!(
                r#"{{"store":"s","task":"t","batch_id":"b","batch_items":{batch_items},
                    "run_ids":[],"items":[{}],"batch_key":null,"trigger_function":"trigger"}}"#,
                items.join(",")
            ))
            .expect("a command")
        };
        assert_eq!(lone_key(&command(&[&keyed], false)), Some("k"));
        assert_eq!(lone_key(&command(&[&item("")], false)), None, "no key");
        assert_eq!(
            lone_key(&command(&[&keyed, &keyed], false)),
            None,
            "two items"
        );
        assert_eq!(lone_key(&command(&[&keyed], true)), None, "two-step");
        let debounced = item(
            r#","idempotency_key":"k","debounce":{"key":"d","delay_ms":1,"trailing":false,"max_delay_ms":1}"#,
        );
        assert_eq!(lone_key(&command(&[&debounced], false)), None, "debounced");
    }
}

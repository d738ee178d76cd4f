//! `Scheduler`: the Durable Object that holds one environment's cron schedules (named by
//! the environment's slug) and fires them by its alarm.
//!
//! The alarm is the earliest `next_tick` of the active schedules. When it rings, each
//! schedule that is due triggers one run of its task for its latest due tick (ticks missed
//! while nothing ran are not made up, as on Trigger.dev), through the store the task's
//! idempotency keys live in, with the tick's own key (`domain::schedule::tick_key`): a
//! tick fired again after a restart finds its run and makes none. The schedule's
//! `last_tick` and `next_tick` are written after the trigger succeeded; a failed trigger
//! is retried by the alarm [`RETRY_MS`] later.
//!
//! The schedules a task declares are kept in step with the configuration whenever the
//! object runs (`sync_declared`); something must run it after a deploy: the worker's
//! Cron Trigger (every minute, `wrangler deploy`) and the first request each isolate
//! serves (`wrangler dev`, which runs no Cron Triggers) send [`protocol::Wake`].

pub mod client;
pub mod protocol;
pub mod schema;

use std::cell::Cell;
use std::rc::Rc;

use worker::{console_error, durable_object, DurableObject, Env, Request, Response, Result, State};

use crate::domain::api::auth::Environment;
use crate::domain::basics::ids::RunId;
use crate::domain::basics::names::StoreName;
use crate::domain::basics::shards::trigger_route;
use crate::domain::basics::time::Millis;
use crate::domain::config::Config;
use crate::domain::intake::trigger::{apply_task_defaults, parse_trigger_body};
use crate::domain::schedule::cron::CronSchedule;
use crate::domain::schedule::{
    declared_id, tick_trigger_body, Schedule, ScheduleKind, ScheduleSpec, UPCOMING,
};
use crate::objects::store::client::RunStoreClient;
use crate::objects::store::protocol::{TriggerBatch, TriggerReply};
use crate::platform::meter::{self, Activity, Object};
use crate::platform::rpc::{self, answer, CALL_LIMIT};
use crate::platform::runtime::{ensure_alarm, internal, now};
use crate::platform::sql::{opt_i64, rows, transaction, Migrated, Sql, Values};
use crate::platform::zones::Zone;
use protocol::{
    Create, DeleteSchedule, GetSchedule, ListSchedules, ScheduleList, ScheduleReply,
    SchedulerCommand, Scheduling, SetActive, Update, Wake, Woken,
};

/// How long after a failed trigger the alarm tries the tick again.
const RETRY_MS: Millis = 30_000;

const COLUMNS: &str = "id, kind, task, cron, timezone, dedup_key, external_id, active, \
                       created_at, last_tick, next_tick";

#[durable_object(alarm)]
pub struct Scheduler {
    state: State,
    env: Env,
    migrated: Migrated,
    /// The alarm time last set, if known (memory only).
    alarm_at: Cell<Option<Millis>>,
    /// Work under way, for the operations account.
    activity: Activity,
}

impl DurableObject for Scheduler {
    fn new(state: State, env: Env) -> Self {
        meter::configure(&env);
        let migrated = Migrated::start(&state.storage(), &schema::SCHEMA, Object::Scheduler);
        Scheduler {
            state,
            env,
            migrated,
            alarm_at: Cell::new(None),
            activity: Activity::default(),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        rpc::fetched(self.handle(&req.bytes().await?).await)
    }

    async fn alarm(&self) -> Result<Response> {
        let _active = meter::alarm(Object::Scheduler, &self.activity, Some(&self.state));
        self.alarm_at.set(None);
        self.migrated.ready()?;
        let Some(environment) = self.environment()? else {
            return Response::ok("");
        };
        let config = crate::platform::settings::config(&self.env).map_err(|e| internal(e.0))?;
        self.sync_declared(&config, environment, now())?;
        let mut retry = false;
        for schedule in self.due(now())? {
            if let Err(e) = self.fire(&config, environment, schedule).await {
                console_error!("scheduler {}: {e}", environment.slug());
                retry = true;
            }
        }
        self.rearm(retry.then(|| now() + RETRY_MS)).await?;
        Response::ok("")
    }
}

crate::export_command!(Scheduler);

impl Scheduler {
    /// Answers one command from the edge (`rpc::call`).
    async fn handle(&self, command: &[u8]) -> Result<String> {
        let _active = meter::request(Object::Scheduler, &self.activity, Some(&self.state));
        self.migrated.ready()?;
        let command = rpc::decode::<Scheduling>(command)?;
        let slug = match &command {
            SchedulerCommand::Create(c) => &c.env,
            SchedulerCommand::Update(c) => &c.env,
            SchedulerCommand::GetSchedule(c) => &c.env,
            SchedulerCommand::ListSchedules(c) => &c.env,
            SchedulerCommand::SetActive(c) => &c.env,
            SchedulerCommand::DeleteSchedule(c) => &c.env,
            SchedulerCommand::Wake(c) => &c.env,
        };
        let environment = Environment::from_slug(slug)
            .ok_or_else(|| internal(format!("unknown environment {slug}")))?;
        self.sql().exec(
            "INSERT OR IGNORE INTO settings (key, value) VALUES ('env', ?)",
            vec![slug.as_str().into()],
        )?;
        let config = crate::platform::settings::config(&self.env).map_err(|e| internal(e.0))?;
        let now = now();
        self.sync_declared(&config, environment, now)?;
        let reply = match command {
            SchedulerCommand::Create(Create {
                dedup_key, spec, ..
            }) => {
                let reply = ScheduleReply::Schedule(self.create(dedup_key, spec, now)?);
                answer::<Create>(&reply)
            }
            SchedulerCommand::Update(Update { id, spec, .. }) => {
                answer::<Update>(&self.update(&id, spec, now)?)
            }
            SchedulerCommand::GetSchedule(GetSchedule { id, .. }) => {
                let reply = self
                    .get(&id)?
                    .map_or(ScheduleReply::NotFound, ScheduleReply::Schedule);
                answer::<GetSchedule>(&reply)
            }
            SchedulerCommand::ListSchedules(ListSchedules { page, per_page, .. }) => {
                answer::<ListSchedules>(&self.list(page, per_page)?)
            }
            SchedulerCommand::SetActive(SetActive { id, active, .. }) => {
                answer::<SetActive>(&self.set_active(&id, active, now)?)
            }
            SchedulerCommand::DeleteSchedule(DeleteSchedule { id, .. }) => {
                answer::<DeleteSchedule>(&self.delete(&id)?)
            }
            SchedulerCommand::Wake(Wake { .. }) => {
                let active = rows(
                    &self.sql(),
                    "SELECT COUNT(*) FROM schedules WHERE active = 1",
                    vec![],
                )?
                .pop()
                .map(|mut r| r.int())
                .transpose()?
                .unwrap_or(0) as usize;
                answer::<Wake>(&Woken { active })
            }
        };
        self.rearm(None).await?;
        reply
    }

    fn sql(&self) -> Sql {
        Sql::new(&self.state.storage(), Object::Scheduler)
    }

    /// The environment this scheduler serves, once a command named it.
    fn environment(&self) -> Result<Option<Environment>> {
        let row = rows(
            &self.sql(),
            "SELECT value FROM settings WHERE key = 'env'",
            vec![],
        )?
        .pop();
        Ok(match row {
            Some(mut row) => Environment::from_slug(&row.text()?),
            None => None,
        })
    }

    fn get(&self, id: &str) -> Result<Option<Schedule>> {
        let query = format!("SELECT {COLUMNS} FROM schedules WHERE id = ?");
        rows(&self.sql(), &query, vec![id.into()])?
            .pop()
            .map(read_schedule)
            .transpose()
    }

    fn create(&self, dedup_key: String, spec: ScheduleSpec, now: Millis) -> Result<Schedule> {
        let query = format!("SELECT {COLUMNS} FROM schedules WHERE dedup_key = ?");
        let existing = rows(&self.sql(), &query, vec![dedup_key.as_str().into()])?.pop();
        if let Some(row) = existing {
            // The key's schedule: a create with it again is an update.
            let schedule = read_schedule(row)?;
            return self.replace(schedule, spec, now);
        }
        let schedule = Schedule {
            id: crate::domain::basics::ids::schedule_id(),
            kind: ScheduleKind::Imperative,
            next_tick: next_tick(&spec.cron, &spec.timezone, now),
            task: spec.task,
            cron: spec.cron,
            timezone: spec.timezone,
            dedup_key: Some(dedup_key),
            external_id: spec.external_id,
            active: true,
            created_at: now,
            last_tick: None,
        };
        self.insert(&schedule)?;
        Ok(schedule)
    }

    fn update(&self, id: &str, spec: ScheduleSpec, now: Millis) -> Result<ScheduleReply> {
        Ok(match self.get(id)? {
            None => ScheduleReply::NotFound,
            Some(s) if s.kind == ScheduleKind::Declarative => ScheduleReply::Declared,
            Some(schedule) => ScheduleReply::Schedule(self.replace(schedule, spec, now)?),
        })
    }

    /// `schedule` as `spec` says, its next tick counted again from now.
    fn replace(&self, schedule: Schedule, spec: ScheduleSpec, now: Millis) -> Result<Schedule> {
        let next = match schedule.active {
            true => next_tick(&spec.cron, &spec.timezone, now),
            false => None,
        };
        let updated = Schedule {
            task: spec.task,
            cron: spec.cron,
            timezone: spec.timezone,
            external_id: spec.external_id,
            next_tick: next,
            ..schedule
        };
        self.sql().exec(
            "UPDATE schedules SET task = ?, cron = ?, timezone = ?, external_id = ?, next_tick = ? WHERE id = ?",
            vec![
                updated.task.as_str().into(),
                updated.cron.as_str().into(),
                updated.timezone.as_str().into(),
                updated.external_id.as_deref().into(),
                opt_i64(updated.next_tick),
                updated.id.as_str().into(),
            ],
        )?;
        Ok(updated)
    }

    fn list(&self, page: usize, per_page: usize) -> Result<ScheduleList> {
        let sql = self.sql();
        let count = rows(&sql, "SELECT COUNT(*) FROM schedules", vec![])?
            .pop()
            .map(|mut r| r.int())
            .transpose()?
            .unwrap_or(0) as usize;
        let query =
            format!("SELECT {COLUMNS} FROM schedules ORDER BY created_at, id LIMIT ? OFFSET ?");
        let offset = page.saturating_sub(1).saturating_mul(per_page);
        let schedules = rows(
            &sql,
            &query,
            vec![(per_page as i64).into(), (offset as i64).into()],
        )?
        .into_iter()
        .map(read_schedule)
        .collect::<Result<Vec<_>>>()?;
        Ok(ScheduleList { schedules, count })
    }

    fn set_active(&self, id: &str, active: bool, now: Millis) -> Result<ScheduleReply> {
        let Some(schedule) = self.get(id)? else {
            return Ok(ScheduleReply::NotFound);
        };
        if schedule.active == active {
            return Ok(ScheduleReply::Schedule(schedule));
        }
        let next = match active {
            true => next_tick(&schedule.cron, &schedule.timezone, now),
            false => None,
        };
        self.sql().exec(
            "UPDATE schedules SET active = ?, next_tick = ? WHERE id = ?",
            vec![i64::from(active).into(), opt_i64(next), id.into()],
        )?;
        Ok(ScheduleReply::Schedule(Schedule {
            active,
            next_tick: next,
            ..schedule
        }))
    }

    fn delete(&self, id: &str) -> Result<ScheduleReply> {
        Ok(match self.get(id)? {
            None => ScheduleReply::NotFound,
            Some(s) if s.kind == ScheduleKind::Declarative => ScheduleReply::Declared,
            Some(schedule) => {
                self.sql()
                    .exec("DELETE FROM schedules WHERE id = ?", vec![id.into()])?;
                ScheduleReply::Schedule(schedule)
            }
        })
    }

    fn insert(&self, s: &Schedule) -> Result<()> {
        self.sql().exec(
            &format!("INSERT INTO schedules ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"),
            vec![
                s.id.as_str().into(),
                s.kind.as_str().into(),
                s.task.as_str().into(),
                s.cron.as_str().into(),
                s.timezone.as_str().into(),
                s.dedup_key.as_deref().into(),
                s.external_id.as_deref().into(),
                i64::from(s.active).into(),
                s.created_at.into(),
                opt_i64(s.last_tick),
                opt_i64(s.next_tick),
            ],
        )?;
        Ok(())
    }

    /// Brings the declared schedules in line with the configuration: one per task that
    /// declares one for this environment, its cron and zone as declared (a change counts
    /// its next tick again; its `active` flag and last tick stay), none for a task that no
    /// longer declares one. Skipped while the declarations are those last applied.
    fn sync_declared(&self, config: &Config, environment: Environment, now: Millis) -> Result<()> {
        let declared = config.declared_schedules(environment);
        let digest = serde_json::to_string(
            &declared
                .iter()
                .map(|(task, d)| (task, &d.cron, &d.timezone))
                .collect::<Vec<_>>(),
        )
        .map_err(|e| internal(e.to_string()))?;
        let sql = self.sql();
        let applied = rows(
            &sql,
            "SELECT value FROM settings WHERE key = 'declared'",
            vec![],
        )?
        .pop()
        .map(|mut r| r.text())
        .transpose()?;
        if applied.as_deref() == Some(digest.as_str()) {
            return Ok(());
        }
        transaction(&self.state.storage(), || {
            let mut ids = Vec::with_capacity(declared.len());
            for (task, d) in &declared {
                let id = declared_id(task);
                match self.get(&id)? {
                    Some(s) if s.cron == d.cron && s.timezone == d.timezone => {}
                    Some(s) => {
                        let spec = ScheduleSpec {
                            task: (*task).to_owned(),
                            cron: d.cron.clone(),
                            timezone: d.timezone.clone(),
                            external_id: None,
                        };
                        self.replace(s, spec, now)?;
                    }
                    None => self.insert(&Schedule {
                        id: id.clone(),
                        kind: ScheduleKind::Declarative,
                        task: (*task).to_owned(),
                        cron: d.cron.clone(),
                        timezone: d.timezone.clone(),
                        dedup_key: None,
                        external_id: None,
                        active: true,
                        created_at: now,
                        last_tick: None,
                        next_tick: next_tick(&d.cron, &d.timezone, now),
                    })?,
                }
                ids.push(id);
            }
            let stale = rows(
                &sql,
                "SELECT id FROM schedules WHERE kind = 'DECLARATIVE'",
                vec![],
            )?;
            for mut row in stale {
                let id = row.text()?;
                if !ids.contains(&id) {
                    sql.exec("DELETE FROM schedules WHERE id = ?", vec![id.into()])?;
                }
            }
            sql.exec(
                "INSERT OR REPLACE INTO settings (key, value) VALUES ('declared', ?)",
                vec![digest.as_str().into()],
            )?;
            Ok(())
        })?;
        Ok(())
    }

    /// The active schedules whose next tick has come.
    fn due(&self, now: Millis) -> Result<Vec<Schedule>> {
        let query = format!(
            "SELECT {COLUMNS} FROM schedules WHERE active = 1 AND next_tick <= ? ORDER BY next_tick"
        );
        rows(&self.sql(), &query, vec![now.into()])?
            .into_iter()
            .map(read_schedule)
            .collect()
    }

    /// Triggers the run of `schedule`'s latest due tick, then moves it on.
    async fn fire(
        &self,
        config: &Rc<Config>,
        environment: Environment,
        schedule: Schedule,
    ) -> std::result::Result<(), String> {
        let (Ok(cron), Some(zone)) = (
            CronSchedule::parse(&schedule.cron),
            Zone::named(&schedule.timezone),
        ) else {
            return Err(format!(
                "schedule {}: its cron or time zone no longer reads",
                schedule.id
            ));
        };
        let due = schedule.next_tick.unwrap_or_default();
        let now = now();
        let tick = cron.latest_due(&zone, due - 1, now).unwrap_or(due);
        let upcoming = cron.upcoming(&zone, tick, UPCOMING);
        if config.tasks.contains_key(&schedule.task) {
            let body = tick_trigger_body(&schedule, tick, schedule.last_tick, &upcoming);
            trigger(&self.env, config, environment, &schedule.task, &body).await?;
        } else {
            console_error!(
                "schedule {}: task {} is not declared; tick {tick} skipped",
                schedule.id,
                schedule.task
            );
        }
        // Moved on only if nobody changed the schedule while the trigger was under way.
        self.sql()
            .exec(
                "UPDATE schedules SET last_tick = ?, next_tick = ? \
                 WHERE id = ? AND active = 1 AND next_tick = ? AND cron = ? AND timezone = ?",
                vec![
                    tick.into(),
                    opt_i64(upcoming.first().copied()),
                    schedule.id.as_str().into(),
                    due.into(),
                    schedule.cron.as_str().into(),
                    schedule.timezone.as_str().into(),
                ],
            )
            .map_err(|e| e.to_string())?;
        Ok(())
    }

    /// Arms the alarm for the earliest next tick (or `retry_at`, if sooner).
    async fn rearm(&self, retry_at: Option<Millis>) -> Result<()> {
        let next = rows(
            &self.sql(),
            "SELECT MIN(next_tick) FROM schedules WHERE active = 1",
            vec![],
        )?
        .pop()
        .map(|mut r| r.opt_int())
        .transpose()?
        .flatten();
        let at = match (next, retry_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(at) = at {
            ensure_alarm(&self.state.storage(), &self.alarm_at, at).await?;
        }
        Ok(())
    }
}

/// The first tick after `now`, if the expression and zone read (the edge checked both).
fn next_tick(cron: &str, timezone: &str, now: Millis) -> Option<Millis> {
    let zone = Zone::named(timezone)?;
    CronSchedule::parse(cron).ok()?.next_after(&zone, now)
}

fn read_schedule(mut row: Values) -> Result<Schedule> {
    Ok(Schedule {
        id: row.text()?,
        kind: ScheduleKind::parse(&row.text()?).unwrap_or(ScheduleKind::Imperative),
        task: row.text()?,
        cron: row.text()?,
        timezone: row.text()?,
        dedup_key: row.opt_text()?,
        external_id: row.opt_text()?,
        active: row.int()? != 0,
        created_at: row.int()?,
        last_tick: row.opt_int()?,
        next_tick: row.opt_int()?,
    })
}

/// Triggers one run of `task` from a trigger `body`, as `POST /api/v1/tasks/{task}/trigger`
/// would (the task's defaults, its home store since the body has an idempotency key), and
/// offers it to its gate.
async fn trigger(
    env: &Env,
    config: &Rc<Config>,
    environment: Environment,
    task: &str,
    body: &str,
) -> std::result::Result<(), String> {
    let now = now();
    let settings = config.tasks.get(task).ok_or("task not declared")?;
    let mut item = parse_trigger_body(body.as_bytes(), now).map_err(|e| e.message())?;
    apply_task_defaults(&mut item, task, settings);
    let route = trigger_route(task, settings.shards, true);
    let store = String::from(StoreName::new(environment, route));
    let command = TriggerBatch {
        store: store.clone(),
        task: task.to_owned(),
        batch_id: None,
        batch_items: None,
        run_ids: vec![RunId::new(route, now).into()],
        items: vec![item],
        retry: settings.retry.clone(),
        batch_key: None,
        trigger_function: "trigger".into(),
    };
    let client = RunStoreClient::new(env, &store).map_err(|e| e.to_string())?;
    match client
        .send_within(command, CALL_LIMIT)
        .await
        .map_err(|e| e.to_string())?
    {
        TriggerReply::Triggered { ready, .. } => {
            let mut offers = crate::queue::offers::Offers::new(config.clone());
            for run in ready {
                offers.add(&store, run);
            }
            offers.send(env).await;
            Ok(())
        }
        TriggerReply::BatchKeyConflict => Err("unexpected batch key conflict".into()),
    }
}

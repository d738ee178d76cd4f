//! The configuration of this isolate, read once from its bindings (vars and secrets do
//! not change while an isolate lives) and checked by `domain::config`.

use std::cell::OnceCell;
use std::rc::Rc;

use serde_json::Value;
use worker::{console_error, Env};

use crate::domain::config::{Config, ConfigError, RawConfig};

thread_local! {
    static CONFIG: OnceCell<Result<Rc<Config>, ConfigError>> = const { OnceCell::new() };
}

/// The validated configuration, or the message that says what is wrong with it (logged).
pub fn config(env: &Env) -> Result<Rc<Config>, ConfigError> {
    let loaded = CONFIG.with(|cell| cell.get_or_init(|| load(env).map(Rc::new)).clone());
    if let Err(message) = &loaded {
        console_error!("configuration error: {message}");
    }
    loaded
}

fn load(env: &Env) -> Result<Config, ConfigError> {
    let json_var = |name: &str| -> Option<Value> { env.object_var::<Value>(name).ok() };
    let secret = |name: &str| env.secret(name).ok().map(|s| s.to_string());
    Config::from_raw(RawConfig {
        secret_keys: secret("TRIGGER_SECRET_KEYS"),
        tasks: json_var("TASKS"),
        max_batch_items: json_var("MAX_BATCH_ITEMS"),
        signing_secret: secret("TASK_SIGNING_SECRET"),
        rate_limits: json_var("RATE_LIMITS"),
    })
    .and_then(zones_known)
    .map_err(ConfigError)
}

/// Declared schedules' time zones must be ones the runtime knows (the rest of the
/// configuration is checked by `domain::config`, which has no zone data).
fn zones_known(config: Config) -> Result<Config, String> {
    let mut ids: Vec<&String> = config.tasks.keys().collect();
    ids.sort_unstable();
    for task in ids {
        if let Some(schedule) = &config.tasks[task].schedule {
            if crate::platform::zones::Zone::named(&schedule.timezone).is_none() {
                let task = serde_json::to_string(task).unwrap_or_default();
                return Err(format!(
                    "TASKS[{task}].schedule.timezone: {:?} is not an IANA time zone",
                    schedule.timezone
                ));
            }
        }
    }
    Ok(config)
}

//! Offloaded payloads (SDK 4.5.2+, docs/API.md section 6) in the `PACKETS` R2 bucket: the
//! edge hands out signed upload URLs, stores what is uploaded under `<env>/<path>`, and
//! resolves `application/store` payloads when a run is read or executed.

use serde_json::value::RawValue;
use worker::{Env, HttpMetadata};

use crate::domain::intake::packets::STORE_PAYLOAD_TYPE;

/// The R2 bucket binding.
pub const PACKETS: &str = "PACKETS";

pub fn object_key(env: &str, path: &str) -> String {
    format!("{env}/{path}")
}

pub async fn store(
    env: &Env,
    env_slug: &str,
    path: &str,
    data: Vec<u8>,
    content_type: &str,
) -> worker::Result<()> {
    env.bucket(PACKETS)?
        .put(object_key(env_slug, path), data)
        .http_metadata(HttpMetadata {
            content_type: Some(content_type.to_owned()),
            ..HttpMetadata::default()
        })
        .execute()
        .await?;
    Ok(())
}

/// Replaces an `application/store` payload (its storage path) with the stored packet
/// and its real payload type. JSON packets become JSON; others (superjson) a string.
pub async fn resolve(
    env: &Env,
    env_slug: &str,
    payload: &mut Option<Box<RawValue>>,
    payload_type: &mut String,
) -> worker::Result<()> {
    if payload_type != STORE_PAYLOAD_TYPE {
        return Ok(());
    }
    let Some(path) = payload
        .as_deref()
        .and_then(|p| serde_json::from_str::<String>(p.get()).ok())
    else {
        return Ok(());
    };
    let Some(object) = env
        .bucket(PACKETS)?
        .get(object_key(env_slug, &path))
        .execute()
        .await?
    else {
        return Err(worker::Error::RustError(format!(
            "packet {path} is missing"
        )));
    };
    let kind = object
        .http_metadata()
        .content_type
        .unwrap_or_else(|| "application/json".to_owned());
    let bytes = match object.body() {
        Some(body) => body.bytes().await?,
        None => Vec::new(),
    };
    let text = String::from_utf8(bytes)
        .map_err(|_| worker::Error::RustError(format!("packet {path} is not UTF-8")))?;
    let json = if kind.starts_with("application/json") {
        RawValue::from_string(text.clone()).ok()
    } else {
        None
    };
    let resolved = match json {
        Some(json) => json,
        None => RawValue::from_string(
            serde_json::to_string(&text).map_err(|e| worker::Error::RustError(e.to_string()))?,
        )
        .map_err(|e| worker::Error::RustError(e.to_string()))?,
    };
    *payload = Some(resolved);
    *payload_type = kind;
    Ok(())
}

//! `PUT /api/v2/packets/{filename}` (docs/API.md section 6) and the signed upload URL it
//! returns, served by this worker at `PUT /packets/{env}/{path}`.

use serde::Serialize;

use super::{json_response, origin_of, query_of, read_body, Ctx, Incoming, Response};
use crate::domain::api::error::ApiError;
use crate::domain::config::Config;
use crate::domain::intake::packets::{
    upload_query, valid_packet_path, verify_upload, MAX_PACKET_BYTES, UPLOAD_URL_TTL_MS,
};

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PacketUrl {
    presigned_url: String,
    storage_path: String,
}

pub async fn create_packet_url(
    ctx: &Ctx<'_>,
    req: &Incoming,
    filename: &str,
) -> Result<Response, ApiError> {
    if !valid_packet_path(filename) {
        return Err(ApiError::validation(
            "filename",
            "expected 1 to 512 characters of letters, digits, _ - . /",
        ));
    }
    let env = ctx.environment.slug();
    let expires = crate::platform::runtime::now() + UPLOAD_URL_TTL_MS;
    let query = upload_query(ctx.config.signing_secret.as_bytes(), env, filename, expires);
    let presigned_url = format!("{}/packets/{env}/{filename}?{query}", origin_of(req));
    json_response(
        200,
        &PacketUrl {
            presigned_url,
            storage_path: filename.to_owned(),
        },
    )
}

/// The upload itself: no API key, the URL's signature instead.
pub async fn upload_packet(
    config: &Config,
    env: &worker::Env,
    req: Incoming,
    env_slug: &str,
    path: &str,
) -> Result<Response, ApiError> {
    let query = query_of(&req);
    if !valid_packet_path(path)
        || !verify_upload(
            config.signing_secret.as_bytes(),
            env_slug,
            path,
            query,
            crate::platform::runtime::now(),
        )
    {
        return Err(ApiError::Unauthorized(
            "Invalid or expired upload URL".into(),
        ));
    }
    let content_type = req
        .header("content-type")
        .unwrap_or_else(|| "application/json".into());
    let body = read_body(&req, MAX_PACKET_BYTES).await?;
    crate::platform::packets::store(env, env_slug, path, body, &content_type)
        .await
        .map_err(|e| {
            worker::console_error!("storing packet {path} failed: {e}");
            ApiError::Internal { retry: true }
        })?;
    json_response(200, &serde_json::json!({ "ok": true }))
}

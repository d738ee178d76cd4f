//! The route table: which handler serves a method and path. Plain Rust, unit-tested.

/// A request the API serves, with its decoded path parameters.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// `POST /api/v1/tasks/{taskIdentifier}/batch` (docs/API.md section 2).
    TriggerBatch { task: String },
    /// `GET /api/v3/runs/{runId}` (section 4).
    RetrieveRun { run_id: String },
    /// `GET /api/v1/batches/{batchId}` (section 4).
    RetrieveBatch { batch_id: String },
    /// `POST /api/v1/tasks/{taskIdentifier}/trigger` (section 5).
    TriggerTask { task: String },
    /// `GET /api/v1/runs` (section 4).
    ListRuns,
    /// `GET /api/v2/batches/{batchId}` (section 4).
    RetrieveBatchV2 { batch_id: String },
    /// `POST /api/v2/runs/{runId}/cancel` (section 5).
    CancelRun { run_id: String },
    /// `POST /api/v1/runs/{runId}/replay` (section 5).
    ReplayRun { run_id: String },
    /// `POST /api/v1/runs/{runId}/reschedule` (section 5).
    RescheduleRun { run_id: String },
    /// `POST /api/v1/idempotencyKeys/{key}/reset` (section 5).
    ResetIdempotencyKey { key: String },
    /// `POST /api/v3/batches` (section 6).
    CreateBatch,
    /// `PUT /api/v2/packets/{filename}` (section 6): a signed upload URL.
    CreatePacketUrl { filename: String },
    /// `PUT /packets/{env}/{path}`: the signed upload itself (signed, not keyed).
    UploadPacket { env: String, path: String },
    /// `POST /api/v3/batches/{batchId}/items` (section 6).
    StreamBatchItems { batch_id: String },
    /// `GET /outputs/{env}/{runId}`: a superjson output, by the signed URL a run names as
    /// its `outputPresignedUrl` (section 4; signed, not keyed).
    RunOutput { env: String, run_id: String },
    /// `POST /examples/{task}`: the built-in example task endpoint (signed, not keyed).
    ExampleTask { task: String },
    /// `GET /api/v1/runs/{runId}/result` (section 4).
    RunResult { run_id: String },
    /// `GET /api/v1/batches/{batchId}/results` (section 4).
    BatchResults { batch_id: String },
    /// `GET /api/v1/runs/{runId}/metadata` (section 5).
    GetMetadata { run_id: String },
    /// `PUT /api/v1/runs/{runId}/metadata` (section 5).
    UpdateMetadata { run_id: String },
    /// `POST /api/v1/runs/{runId}/tags` (section 5).
    AddTags { run_id: String },
    /// `GET /api/v1/queues` (section 7).
    ListQueues,
    /// `GET /api/v1/queues/{queue}` (section 7).
    RetrieveQueue { queue: String },
    /// `POST /api/v1/queues/{queue}/pause` (section 7).
    PauseQueue { queue: String },
    /// `POST /api/v1/queues/{queue}/concurrency/override` (section 7).
    OverrideQueue { queue: String },
    /// `POST /api/v1/queues/{queue}/concurrency/reset` (section 7).
    ResetQueue { queue: String },
    /// `GET /api/v1/activity` (section 4).
    Activity,
    /// `POST /api/v1/bulk-actions` (section 5).
    CreateBulkAction,
    /// `GET /api/v1/bulk-actions` (section 5).
    ListBulkActions,
    /// `GET /api/v1/bulk-actions/{bulkActionId}` (section 5).
    RetrieveBulkAction { id: String },
    /// `POST /api/v1/bulk-actions/{bulkActionId}/abort` (section 5).
    AbortBulkAction { id: String },
    /// `POST /api/v1/schedules` (section 8).
    CreateSchedule,
    /// `GET /api/v1/schedules` (section 8).
    ListSchedules,
    /// `GET /api/v1/schedules/{scheduleId}` (section 8).
    RetrieveSchedule { id: String },
    /// `PUT /api/v1/schedules/{scheduleId}` (section 8).
    UpdateSchedule { id: String },
    /// `DELETE /api/v1/schedules/{scheduleId}` (section 8).
    DeleteSchedule { id: String },
    /// `POST /api/v1/schedules/{scheduleId}/activate` and `…/deactivate` (section 8).
    ActivateSchedule { id: String, active: bool },
    /// `GET /api/v1/timezones` (section 8).
    Timezones,
    /// `GET /api/v1/meter`: the operations account, when metering is on (keyed, never
    /// rate-limited or counted itself).
    Meter,
}

impl Route {
    /// Routes that create runs: their handler charges the rate limiter for the request
    /// and its runs together, once it knows how many; every other route is charged one
    /// request before its handler runs.
    pub fn charges_items(&self) -> bool {
        matches!(
            self,
            Route::TriggerBatch { .. } | Route::TriggerTask { .. } | Route::CreateBatch
        )
    }
}

/// Why no route matched.
#[derive(Debug, PartialEq, Eq)]
pub enum NoRoute {
    /// `404 {"error":"Not found"}`.
    NotFound,
    /// The path exists; `allow` lists its methods.
    MethodNotAllowed { allow: &'static str },
}

/// Matches a method and a raw (still percent-encoded) path.
pub fn route(method: &str, path: &str) -> Result<Route, NoRoute> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let decode = |segment: &str| percent_decode(segment).ok_or(NoRoute::NotFound);
    let (allow, route) = match segments.as_slice() {
        ["api", "v1", "tasks", task, "trigger"] => (
            "POST",
            Route::TriggerTask {
                task: decode(task)?,
            },
        ),
        ["api", "v1", "runs"] => ("GET", Route::ListRuns),
        ["api", "v1", "meter"] => ("GET", Route::Meter),
        ["api", "v1", "queues"] => ("GET", Route::ListQueues),
        ["api", "v1", "timezones"] => ("GET", Route::Timezones),
        ["api", "v1", "activity"] => ("GET", Route::Activity),
        ["api", "v1", "bulk-actions"] => match method {
            "POST" => ("GET, POST", Route::CreateBulkAction),
            _ => ("GET, POST", Route::ListBulkActions),
        },
        ["api", "v1", "bulk-actions", id] => ("GET", Route::RetrieveBulkAction { id: decode(id)? }),
        ["api", "v1", "bulk-actions", id, "abort"] => {
            ("POST", Route::AbortBulkAction { id: decode(id)? })
        }
        ["api", "v1", "schedules"] => match method {
            "POST" => ("GET, POST", Route::CreateSchedule),
            _ => ("GET, POST", Route::ListSchedules),
        },
        ["api", "v1", "schedules", id] => {
            let id = decode(id)?;
            let route = match method {
                "PUT" => Route::UpdateSchedule { id },
                "DELETE" => Route::DeleteSchedule { id },
                _ => Route::RetrieveSchedule { id },
            };
            ("GET, PUT, DELETE", route)
        }
        ["api", "v1", "schedules", id, action @ ("activate" | "deactivate")] => (
            "POST",
            Route::ActivateSchedule {
                id: decode(id)?,
                active: *action == "activate",
            },
        ),
        ["api", "v1", "runs", id, "metadata"] => {
            let run_id = decode(id)?;
            let route = match method {
                "PUT" => Route::UpdateMetadata { run_id },
                _ => Route::GetMetadata { run_id },
            };
            ("GET, PUT", route)
        }
        ["api", "v1", "runs", id, "result"] => (
            "GET",
            Route::RunResult {
                run_id: decode(id)?,
            },
        ),
        ["api", "v1", "batches", id, "results"] => (
            "GET",
            Route::BatchResults {
                batch_id: decode(id)?,
            },
        ),
        ["api", "v1", "runs", id, "tags"] => (
            "POST",
            Route::AddTags {
                run_id: decode(id)?,
            },
        ),
        ["api", "v1", "queues", queue] => (
            "GET",
            Route::RetrieveQueue {
                queue: decode(queue)?,
            },
        ),
        ["api", "v1", "queues", queue, "pause"] => (
            "POST",
            Route::PauseQueue {
                queue: decode(queue)?,
            },
        ),
        ["api", "v1", "queues", queue, "concurrency", "override"] => (
            "POST",
            Route::OverrideQueue {
                queue: decode(queue)?,
            },
        ),
        ["api", "v1", "queues", queue, "concurrency", "reset"] => (
            "POST",
            Route::ResetQueue {
                queue: decode(queue)?,
            },
        ),
        ["api", "v3", "batches"] => ("POST", Route::CreateBatch),
        ["api", "v2", "packets", filename] => (
            "PUT",
            Route::CreatePacketUrl {
                filename: decode(filename)?,
            },
        ),
        ["packets", env, path @ ..] if !path.is_empty() => (
            "PUT",
            Route::UploadPacket {
                env: decode(env)?,
                path: path
                    .iter()
                    .map(|s| decode(s))
                    .collect::<Result<Vec<_>, _>>()?
                    .join("/"),
            },
        ),
        ["outputs", env, run_id] => (
            "GET",
            Route::RunOutput {
                env: decode(env)?,
                run_id: decode(run_id)?,
            },
        ),
        ["api", "v3", "batches", id, "items"] => (
            "POST",
            Route::StreamBatchItems {
                batch_id: decode(id)?,
            },
        ),
        ["api", "v2", "batches", id] => (
            "GET",
            Route::RetrieveBatchV2 {
                batch_id: decode(id)?,
            },
        ),
        ["api", "v1", "runs", id, "replay"] => (
            "POST",
            Route::ReplayRun {
                run_id: decode(id)?,
            },
        ),
        ["api", "v1", "runs", id, "reschedule"] => (
            "POST",
            Route::RescheduleRun {
                run_id: decode(id)?,
            },
        ),
        ["api", "v1", "idempotencyKeys", key, "reset"] => {
            ("POST", Route::ResetIdempotencyKey { key: decode(key)? })
        }
        ["api", "v1", "tasks", task, "batch"] => (
            "POST",
            Route::TriggerBatch {
                task: percent_decode(task).ok_or(NoRoute::NotFound)?,
            },
        ),
        ["api", "v3", "runs", id] => (
            "GET",
            Route::RetrieveRun {
                run_id: percent_decode(id).ok_or(NoRoute::NotFound)?,
            },
        ),
        ["api", "v1", "batches", id] => (
            "GET",
            Route::RetrieveBatch {
                batch_id: percent_decode(id).ok_or(NoRoute::NotFound)?,
            },
        ),
        ["api", "v2", "runs", id, "cancel"] => (
            "POST",
            Route::CancelRun {
                run_id: percent_decode(id).ok_or(NoRoute::NotFound)?,
            },
        ),
        ["examples", task] => (
            "POST",
            Route::ExampleTask {
                task: percent_decode(task).ok_or(NoRoute::NotFound)?,
            },
        ),
        _ => return Err(NoRoute::NotFound),
    };
    let mut allowed = allow.split(", ");
    if allowed.any(|m| m == method || (m == "GET" && method == "HEAD")) {
        Ok(route)
    } else {
        Err(NoRoute::MethodNotAllowed { allow })
    }
}

/// Decodes `%XX` escapes of one path segment. `None` for an empty segment, a broken
/// escape, or bytes that are not UTF-8.
pub fn percent_decode(segment: &str) -> Option<String> {
    if segment.is_empty() {
        return None;
    }
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_paths_route_to_their_handlers() {
        assert_eq!(
            route("POST", "/api/v1/tasks/hello-world/batch"),
            Ok(Route::TriggerBatch {
                task: "hello-world".into()
            })
        );
        assert_eq!(
            route("GET", "/api/v3/runs/run_abc"),
            Ok(Route::RetrieveRun {
                run_id: "run_abc".into()
            })
        );
        assert_eq!(
            route("GET", "/api/v1/batches/batch_abc"),
            Ok(Route::RetrieveBatch {
                batch_id: "batch_abc".into()
            })
        );
        assert_eq!(route("GET", "/api/v1/meter"), Ok(Route::Meter));
        assert_eq!(
            route("DELETE", "/api/v1/meter"),
            Err(NoRoute::MethodNotAllowed { allow: "GET" })
        );
    }

    #[test]
    fn task_identifiers_are_percent_decoded() {
        assert_eq!(
            route("POST", "/api/v1/tasks/my%20task%2Fx/batch"),
            Ok(Route::TriggerBatch {
                task: "my task/x".into()
            })
        );
        assert_eq!(
            route("POST", "/api/v1/tasks/%zz/batch"),
            Err(NoRoute::NotFound)
        );
        assert_eq!(
            route("POST", "/api/v1/tasks/%ff/batch"),
            Err(NoRoute::NotFound)
        );
        assert_eq!(
            route("POST", "/api/v1/tasks//batch"),
            Err(NoRoute::NotFound)
        );
    }

    #[test]
    fn queue_paths_keep_the_sdks_encoded_slash_for_the_handler() {
        assert_eq!(
            route("POST", "/api/v1/queues/tenant%252Fa/pause"),
            Ok(Route::PauseQueue {
                queue: "tenant%2Fa".into()
            })
        );
        assert_eq!(
            route("POST", "/api/v1/queues/q/concurrency/reset"),
            Ok(Route::ResetQueue { queue: "q".into() })
        );
        assert_eq!(route("GET", "/api/v1/queues"), Ok(Route::ListQueues));
        assert_eq!(
            route("GET", "/api/v1/queues/q/pause"),
            Err(NoRoute::MethodNotAllowed { allow: "POST" })
        );
    }

    #[test]
    fn schedule_paths_route_by_method() {
        assert_eq!(
            route("POST", "/api/v1/schedules"),
            Ok(Route::CreateSchedule)
        );
        assert_eq!(route("GET", "/api/v1/schedules"), Ok(Route::ListSchedules));
        assert_eq!(
            route("DELETE", "/api/v1/schedules/sched_1"),
            Ok(Route::DeleteSchedule {
                id: "sched_1".into()
            })
        );
        assert_eq!(
            route("POST", "/api/v1/schedules/sched_1/deactivate"),
            Ok(Route::ActivateSchedule {
                id: "sched_1".into(),
                active: false
            })
        );
        assert_eq!(
            route("POST", "/api/v1/schedules/sched_1"),
            Err(NoRoute::MethodNotAllowed {
                allow: "GET, PUT, DELETE"
            })
        );
        assert_eq!(
            route("GET", "/api/v1/schedules/sched_1/pause"),
            Err(NoRoute::NotFound)
        );
    }

    #[test]
    fn wrong_methods_list_the_allowed_one() {
        assert_eq!(
            route("GET", "/api/v1/tasks/t/batch"),
            Err(NoRoute::MethodNotAllowed { allow: "POST" })
        );
        assert_eq!(
            route("DELETE", "/api/v3/runs/run_x"),
            Err(NoRoute::MethodNotAllowed { allow: "GET" })
        );
    }

    #[test]
    fn unknown_paths_are_not_found() {
        for path in [
            "/",
            "/api",
            "/api/v1/tasks/t",
            "/api/v1/tasks/t/batch/x",
            "/api/v2/runs/r",
        ] {
            assert_eq!(route("GET", path), Err(NoRoute::NotFound), "{path}");
        }
    }

    /// The OpenAPI document and the route table agree: every documented operation routes
    /// (with its one method), and every route is documented. Paths served as static
    /// assets (`x-static-asset`) never reach the worker.
    #[test]
    fn the_openapi_document_lists_exactly_the_routes() {
        let document: serde_json::Value =
            serde_json::from_str(include_str!("../../public/api/openapi.json")).unwrap();
        let mut documented = Vec::new();
        for (template, item) in document["paths"].as_object().unwrap() {
            if item["x-static-asset"] == serde_json::json!(true) {
                assert_eq!(route("GET", template), Err(NoRoute::NotFound), "{template}");
                continue;
            }
            // Fill each `{parameter}` with a plain value.
            let path: String = template
                .split('/')
                .map(|s| if s.starts_with('{') { "x" } else { s })
                .collect::<Vec<_>>()
                .join("/");
            for method in ["get", "post", "put", "delete", "patch"] {
                if item.get(method).is_none() {
                    continue;
                }
                let method = method.to_uppercase();
                let routed = route(&method, &path);
                assert!(
                    routed.is_ok(),
                    "{method} {template} is documented but does not route"
                );
                documented.push(std::mem::discriminant(&routed.unwrap()));
                for other in ["GET", "POST", "PUT", "DELETE"] {
                    // Every method the document does not give this path is a 405.
                    if item.get(other.to_lowercase()).is_none() {
                        assert!(
                            matches!(route(other, &path), Err(NoRoute::MethodNotAllowed { .. })),
                            "{other} {template} should be 405"
                        );
                    }
                }
            }
        }
        let every_route = [
            Route::Activity,
            Route::CreateBulkAction,
            Route::ListBulkActions,
            Route::RetrieveBulkAction { id: "x".into() },
            Route::AbortBulkAction { id: "x".into() },
            Route::CreateSchedule,
            Route::ListSchedules,
            Route::RetrieveSchedule { id: "x".into() },
            Route::UpdateSchedule { id: "x".into() },
            Route::DeleteSchedule { id: "x".into() },
            Route::ActivateSchedule {
                id: "x".into(),
                active: true,
            },
            Route::Timezones,
            Route::TriggerBatch { task: "x".into() },
            Route::RetrieveRun { run_id: "x".into() },
            Route::RetrieveBatch {
                batch_id: "x".into(),
            },
            Route::TriggerTask { task: "x".into() },
            Route::ListRuns,
            Route::RetrieveBatchV2 {
                batch_id: "x".into(),
            },
            Route::CancelRun { run_id: "x".into() },
            Route::ReplayRun { run_id: "x".into() },
            Route::RescheduleRun { run_id: "x".into() },
            Route::ResetIdempotencyKey { key: "x".into() },
            Route::CreateBatch,
            Route::CreatePacketUrl {
                filename: "x".into(),
            },
            Route::UploadPacket {
                env: "x".into(),
                path: "x".into(),
            },
            Route::StreamBatchItems {
                batch_id: "x".into(),
            },
            Route::RunOutput {
                env: "x".into(),
                run_id: "x".into(),
            },
            Route::ExampleTask { task: "x".into() },
            Route::Meter,
            Route::RunResult { run_id: "x".into() },
            Route::BatchResults {
                batch_id: "x".into(),
            },
            Route::GetMetadata { run_id: "x".into() },
            Route::UpdateMetadata { run_id: "x".into() },
            Route::AddTags { run_id: "x".into() },
            Route::ListQueues,
            Route::RetrieveQueue { queue: "x".into() },
            Route::PauseQueue { queue: "x".into() },
            Route::OverrideQueue { queue: "x".into() },
            Route::ResetQueue { queue: "x".into() },
        ];
        for r in every_route {
            // A new variant must be added above: this match has no wildcard.
            match r {
                Route::TriggerBatch { .. }
                | Route::RetrieveRun { .. }
                | Route::RetrieveBatch { .. }
                | Route::TriggerTask { .. }
                | Route::ListRuns
                | Route::RetrieveBatchV2 { .. }
                | Route::CancelRun { .. }
                | Route::ReplayRun { .. }
                | Route::RescheduleRun { .. }
                | Route::ResetIdempotencyKey { .. }
                | Route::CreateBatch
                | Route::CreatePacketUrl { .. }
                | Route::UploadPacket { .. }
                | Route::StreamBatchItems { .. }
                | Route::RunOutput { .. }
                | Route::ExampleTask { .. }
                | Route::Meter
                | Route::RunResult { .. }
                | Route::BatchResults { .. }
                | Route::GetMetadata { .. }
                | Route::UpdateMetadata { .. }
                | Route::AddTags { .. }
                | Route::ListQueues
                | Route::RetrieveQueue { .. }
                | Route::PauseQueue { .. }
                | Route::OverrideQueue { .. }
                | Route::ResetQueue { .. }
                | Route::CreateSchedule
                | Route::ListSchedules
                | Route::RetrieveSchedule { .. }
                | Route::UpdateSchedule { .. }
                | Route::DeleteSchedule { .. }
                | Route::ActivateSchedule { .. }
                | Route::Timezones
                | Route::Activity
                | Route::CreateBulkAction
                | Route::ListBulkActions
                | Route::RetrieveBulkAction { .. }
                | Route::AbortBulkAction { .. } => {}
            }
            assert!(
                documented.contains(&std::mem::discriminant(&r)),
                "{r:?} is not in public/api/openapi.json"
            );
        }
    }
}

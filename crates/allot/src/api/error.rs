//! API errors: one JSON shape `{"error": {"code", "message", "field"?}}`,
//! and one mapping from the governor's typed [`ControlError`] to a status
//! and code, the same on every route.

use crate::governor::control::ControlError;
use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An error answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    field: Option<String>,
    /// Seconds for a `Retry-After` header (429).
    retry_after: Option<u32>,
    /// More members of the error object (a budget refusal's level, resource and `retry_after`).
    extra: Option<serde_json::Map<String, serde_json::Value>>,
}

impl ApiError {
    /// An error with a status, a code and a message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), field: None, retry_after: None, extra: None }
    }

    /// 422 naming the field at fault.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "invalid",
            message: message.into(),
            field: Some(field.into()),
            retry_after: None,
            extra: None,
        }
    }

    /// Its HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// Its message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// 403: not for this caller.
    pub fn forbidden() -> Self {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", "not allowed for this caller (decided by the socket's peer credentials)")
    }

    /// 404 for an unknown agent.
    pub fn no_agent(id: &str) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no agent {id:?}"))
    }

    /// 429: too many at once; try again after `retry_after` seconds.
    pub fn busy(message: impl Into<String>, retry_after: u32) -> Self {
        ApiError { retry_after: Some(retry_after), ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, "busy", message) }
    }

    /// 503: the governor cannot answer.
    pub fn unavailable(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    /// A body that is not acceptable JSON: the rejection's own status (400
    /// bad JSON or unknown field, 413 too large, 415 not JSON, 422 wrong type).
    pub fn body(e: &JsonRejection) -> Self {
        let status = e.status();
        let code = match status.as_u16() {
            413 => "too_large",
            415 => "unsupported_media_type",
            422 => "invalid",
            _ => "bad_request",
        };
        ApiError::new(status, code, format!("body: {}", e.body_text()))
    }

    /// A query string that does not parse.
    pub fn query(e: &QueryRejection, accepted: &str) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", format!("query: {}; accepted: {accepted}", e.body_text()))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({"code": self.code, "message": self.message});
        if let Some(f) = self.field {
            error["field"] = json!(f);
        }
        for (k, v) in self.extra.into_iter().flatten() {
            error[k] = v;
        }
        let mut res = (self.status, Json(json!({ "error": error }))).into_response();
        if let Some(secs) = self.retry_after {
            res.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from(secs));
        }
        res
    }
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        let message = e.to_string();
        match e {
            ControlError::NoAgent(_) | ControlError::NoGroup(_) => ApiError::new(StatusCode::NOT_FOUND, "not_found", message),
            ControlError::NotRunning { .. } | ControlError::Exists(_) | ControlError::GroupExists(_) | ControlError::GroupInUse(_) => {
                ApiError::new(StatusCode::CONFLICT, "conflict", message)
            }
            ControlError::Invalid { field, .. } => ApiError::field(field, message),
            ControlError::InvalidAt { field, .. } => ApiError::field(field, message),
            ControlError::Refused { field, .. } => {
                ApiError { status: StatusCode::CONFLICT, code: "conflict", message, field: Some(field), retry_after: None, extra: None }
            }
            ControlError::NoReservation(_) | ControlError::NoPool(_) => ApiError::new(StatusCode::NOT_FOUND, "not_found", message),
            ControlError::Exhausted { level, resource, retry_after_ms, .. } => {
                too_many("exhausted", message, [("level", json!(level)), ("resource", json!(resource))], retry_after_ms)
            }
            ControlError::Throttled { resource, retry_after_ms, .. } => {
                too_many("throttled", message, [("resource", json!(resource))], Some(retry_after_ms))
            }
            ControlError::Kernel(_) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "failed", message),
            ControlError::Unrecorded(_) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unrecorded", message),
            ControlError::Stopping(_) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message),
        }
    }
}

/// A 429 of a budget: the members of the error object, `retry_after` in
/// seconds (null: never) and the `Retry-After` header.
fn too_many<const N: usize>(
    code: &'static str,
    message: String,
    members: [(&str, serde_json::Value); N],
    retry_after_ms: Option<u64>,
) -> ApiError {
    let mut extra: serde_json::Map<String, serde_json::Value> = members.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    extra.insert("retry_after".into(), json!(retry_after_ms.map(|ms| ms as f64 / 1000.0)));
    ApiError {
        status: StatusCode::TOO_MANY_REQUESTS,
        code,
        message,
        field: None,
        retry_after: retry_after_ms.map(retry_secs),
        extra: Some(extra),
    }
}

/// Whole seconds for `Retry-After`, rounded up (at least 1).
fn retry_secs(ms: u64) -> u32 {
    u32::try_from(ms.div_ceil(1000).max(1)).unwrap_or(u32::MAX)
}

impl IntoResponse for ControlError {
    fn into_response(self) -> Response {
        ApiError::from(self).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_control_error_has_one_status() {
        let cases = [
            (ControlError::NoAgent("a".into()), 404, "not_found"),
            (ControlError::NoGroup("g".into()), 404, "not_found"),
            (ControlError::NotRunning { agent: "a".into(), state: "exited".into() }, 409, "conflict"),
            (ControlError::Exists("a".into()), 409, "conflict"),
            (ControlError::GroupExists("g".into()), 409, "conflict"),
            (ControlError::GroupInUse("g has members".into()), 409, "conflict"),
            (ControlError::Invalid { field: "limits", message: "soft above hard".into() }, 422, "invalid"),
            (ControlError::InvalidAt { field: "limits.memory.soft".into(), message: "soft above hard".into() }, 422, "invalid"),
            (ControlError::Kernel("EBUSY".into()), 500, "failed"),
            (ControlError::Refused { field: "totals.memory".into(), message: "EBUSY".into() }, 409, "conflict"),
            (ControlError::Unrecorded("disk full".into()), 503, "unrecorded"),
            (ControlError::NoReservation(7), 404, "not_found"),
            (ControlError::NoPool("p".into()), 404, "not_found"),
            (
                ControlError::Exhausted {
                    level: "group:g".into(),
                    resource: "tokens".into(),
                    message: "m".into(),
                    retry_after_ms: Some(1),
                },
                429,
                "exhausted",
            ),
            (ControlError::Throttled { resource: "tokens".into(), message: "m".into(), retry_after_ms: 1500 }, 429, "throttled"),
        ];
        for (e, status, code) in cases {
            let a = ApiError::from(e.clone());
            assert_eq!((a.status.as_u16(), a.code), (status, code), "{e:?}");
        }
        assert_eq!(ApiError::from(ControlError::Invalid { field: "limits", message: "x".into() }).field.as_deref(), Some("limits"));
    }
}

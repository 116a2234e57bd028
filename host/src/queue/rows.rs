//! Row mapping: turning the queue's rows into the records of [`super::model`], in one place.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::Result;
use super::model::{Claimed, Delivery, InvocationState, UnknownState};
use super::views::{
    AttemptView, DETAIL_BODY, DeliveryView, LogView, RequestView, ResultView, Status, WaitView,
};

/// The columns [`status_from_row`] reads.
pub(super) const STATUS_COLUMNS: &str = "id, function, state, attempts, max_attempts, created_at, started_at, finished_at, run_at, \
     last_error, result_status, result_headers, result_body, deploy, wait_step, wait_event, wait_key, wait_until";

pub(super) use crate::ids::rfc3339_ms as rfc3339;

fn count(r: &AnyRow, column: &str) -> Result<u32> {
    Ok(u32::try_from(r.try_get::<i64, _>(column)?).unwrap_or(0))
}

pub(super) fn state_from_row(r: &AnyRow, column: &str) -> Result<InvocationState> {
    let text: String = r.try_get(column)?;
    text.parse()
        .map_err(|e: UnknownState| super::QueueError::Corrupt(e.to_string()))
}

/// [`STATUS_COLUMNS`] with the result body cut to nothing (lists without bodies).
pub(super) const STATUS_COLUMNS_NO_BODY: &str = "id, function, state, attempts, max_attempts, created_at, started_at, finished_at, run_at, \
     last_error, result_status, result_headers, substr(result_body, 1, 0) AS result_body, deploy, \
     wait_step, wait_event, wait_key, wait_until";

pub(super) fn status_from_row(r: &AnyRow) -> Result<Status> {
    status_from_row_with(r, true)
}

pub(super) fn status_from_row_with(r: &AnyRow, body: bool) -> Result<Status> {
    let state = state_from_row(r, "state")?;
    let result = match r.try_get::<Option<i64>, _>("result_status")? {
        Some(status) => Some(ResultView {
            status: u16::try_from(status).unwrap_or(0),
            headers: serde_json::from_str(
                &r.try_get::<Option<String>, _>("result_headers")?
                    .unwrap_or_default(),
            )
            .unwrap_or_default(),
            body: if body {
                Some(
                    String::from_utf8_lossy(
                        &r.try_get::<Option<Vec<u8>>, _>("result_body")?
                            .unwrap_or_default(),
                    )
                    .into_owned(),
                )
            } else {
                None
            },
        }),
        None => None,
    };
    Ok(Status {
        id: r.try_get("id")?,
        function: r.try_get("function")?,
        attempts: count(r, "attempts")?,
        max_attempts: count(r, "max_attempts")?,
        created_at: rfc3339(r.try_get("created_at")?),
        started_at: r.try_get::<Option<i64>, _>("started_at")?.map(rfc3339),
        finished_at: r.try_get::<Option<i64>, _>("finished_at")?.map(rfc3339),
        next_attempt_at: if state.is_waiting() {
            Some(rfc3339(r.try_get("run_at")?))
        } else {
            None
        },
        last_error: r.try_get("last_error")?,
        result,
        waiting_for: if state == InvocationState::Waiting {
            wait_view(r)?
        } else {
            None
        },
        state,
        deploy: r.try_get("deploy")?,
        steps: Vec::new(),
    })
}

/// What a waiting invocation's row says it waits for.
fn wait_view(r: &AnyRow) -> Result<Option<WaitView>> {
    let step: Option<String> = r.try_get("wait_step")?;
    let (Some(step), Some(event), Some(key), Some(until)) = (
        step,
        r.try_get::<Option<String>, _>("wait_event")?,
        r.try_get::<Option<String>, _>("wait_key")?,
        r.try_get::<Option<i64>, _>("wait_until")?,
    ) else {
        return Ok(None);
    };
    Ok(Some(WaitView {
        step,
        event,
        key,
        until: rfc3339(until),
    }))
}

pub(super) fn claimed_from_row(r: &AnyRow) -> Result<Claimed> {
    Ok(Claimed {
        id: r.try_get("id")?,
        function: r.try_get("function")?,
        attempt: count(r, "attempts")?.max(1),
        max_attempts: count(r, "max_attempts")?.max(1),
        token: r.try_get("lease_token")?,
        method: r.try_get("method")?,
        uri: r.try_get("uri")?,
        headers: serde_json::from_str(&r.try_get::<String, _>("headers")?).unwrap_or_default(),
        body: r.try_get("body")?,
        deploy: r.try_get("deploy")?,
        created_at: r.try_get("created_at")?,
        suspensions: count(r, "suspensions")?,
        wait: match (
            r.try_get::<Option<String>, _>("wait_step")?,
            r.try_get::<Option<i64>, _>("wait_since")?,
            r.try_get::<Option<i64>, _>("wait_until")?,
        ) {
            (Some(step), Some(since), Some(until)) => Some((step, since, until)),
            _ => None,
        },
    })
}

pub(super) fn delivery_from_row(r: &AnyRow) -> Result<Delivery> {
    Ok(Delivery {
        id: r.try_get("id")?,
        invocation_id: r.try_get("invocation_id")?,
        url: r.try_get("url")?,
        payload: r.try_get("payload")?,
        attempts: count(r, "attempts")?,
        traceparent: r.try_get("traceparent")?,
    })
}

/// A stored request as the detail view shows it (credentials redacted, body cut).
pub(super) fn request_view(row: &AnyRow) -> Result<RequestView> {
    let body: Vec<u8> = row.try_get("body")?;
    let headers: Vec<(String, String)> =
        serde_json::from_str(&row.try_get::<String, _>("headers")?).unwrap_or_default();
    Ok(RequestView {
        method: row.try_get("method")?,
        uri: row.try_get("uri")?,
        headers: redacted(headers),
        body: String::from_utf8_lossy(&body[..body.len().min(DETAIL_BODY)]).into_owned(),
    })
}

/// One row of `attempts`.
pub(super) fn attempt_view(r: &AnyRow) -> Result<AttemptView> {
    let started: Option<i64> = r.try_get("started_at")?;
    let finished: i64 = r.try_get("finished_at")?;
    Ok(AttemptView {
        attempt: u32::try_from(r.try_get::<i64, _>("attempt")?).unwrap_or(0),
        started_at: started.map(rfc3339),
        finished_at: rfc3339(finished),
        duration_ms: started.map(|s| finished - s),
        outcome: r.try_get("outcome")?,
        error: r.try_get("error")?,
    })
}

/// One row of `deliveries`.
pub(super) fn delivery_view(r: &AnyRow) -> Result<DeliveryView> {
    Ok(DeliveryView {
        url: r.try_get("url")?,
        state: r.try_get("state")?,
        attempts: u32::try_from(r.try_get::<i64, _>("attempts")?).unwrap_or(0),
        last_error: r.try_get("last_error")?,
    })
}

/// One row of `guest_logs`.
pub(super) fn log_view(r: &AnyRow) -> Result<LogView> {
    Ok(LogView {
        at: rfc3339(r.try_get("at")?),
        attempt: u32::try_from(r.try_get::<i64, _>("attempt")?).unwrap_or(0),
        stream: r.try_get("stream")?,
        line: r.try_get("line")?,
    })
}

/// Request headers with credentials hidden.
pub(super) fn redacted(headers: Vec<(String, String)>) -> Vec<(String, String)> {
    headers
        .into_iter()
        .map(|(k, v)| {
            let secret = ["authorization", "cookie", "proxy-authorization"]
                .iter()
                .any(|s| k.eq_ignore_ascii_case(s));
            (k, if secret { "[redacted]".to_string() } else { v })
        })
        .collect()
}

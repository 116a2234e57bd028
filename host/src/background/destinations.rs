//! Destinations: the record of a finished background invocation, in the shape of AWS Lambda's
//! asynchronous-invocation destination record, and the loop that POSTs pending records until
//! they are delivered (bounded, with backoff). Records are written by the queue in the same
//! transaction as the outcome, so an outcome is never recorded without its delivery.

use crate::telemetry::Trace;
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::retry;
use crate::engine::client::post_json;
use crate::functions::Function;
use crate::queue::{
    Claimed, Delivery, DeliveryAttempt, Finish, NewDelivery, Queue, StoredResult, now_ms,
};

/// The delivery for `finish`, if the function has a destination for it.
pub fn record_for(
    function: &Function,
    claim: &Claimed,
    finish: &Finish,
    trace: &Trace,
) -> Option<NewDelivery> {
    let (url, condition, result, error) = match finish {
        Finish::Succeeded(r) => (
            function.settings.destinations.on_success.as_ref()?,
            "Success",
            r,
            None,
        ),
        Finish::Dead { error, result } => (
            function.settings.destinations.on_failure.as_ref()?,
            "RetriesExhausted",
            result,
            Some(error.as_str()),
        ),
        Finish::Expired { error, result } => (
            function.settings.destinations.on_failure.as_ref()?,
            "EventAgeExceeded",
            result,
            Some(error.as_str()),
        ),
        Finish::Retry { .. } | Finish::Suspended { .. } => return None,
    };
    Some(NewDelivery {
        url: url.to_string(),
        payload: record(&function.name, claim, condition, result, error).to_string(),
        traceparent: (trace.headers().into_iter())
            .find(|(k, _)| k == "traceparent")
            .map_or_else(String::new, |(_, v)| v),
    })
}

/// The record itself.
fn record(
    function: &str,
    claim: &Claimed,
    condition: &str,
    result: &StoredResult,
    error: Option<&str>,
) -> Value {
    // Lambda names the version that ran; here the deploy (`$LATEST` for a directory).
    let version = claim.deploy.as_deref().unwrap_or("$LATEST");
    let mut response_context = json!({ "executedVersion": version });
    if let Some(status) = result.status {
        response_context["statusCode"] = json!(status);
    }
    let response_payload = match error {
        Some(e) => {
            response_context["functionError"] = json!("Unhandled");
            json!({ "errorMessage": e, "errorType": "FunctionError" })
        }
        None => payload(&result.body),
    };
    json!({
        "version": "1.0",
        "timestamp": humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        "requestContext": {
            "requestId": claim.id,
            "functionArn": format!("fnhost:function:{function}"),
            "condition": condition,
            "approximateInvokeCount": claim.attempt,
        },
        "requestPayload": payload(&claim.body),
        "responseContext": response_context,
        "responsePayload": response_payload,
    })
}

/// A body as JSON when it is JSON, else as a string.
fn payload(body: &[u8]) -> Value {
    if body.is_empty() {
        return Value::Null;
    }
    serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
}

/// POSTs due records until `shutdown`.
pub async fn deliver_loop(queue: Queue, shutdown: CancellationToken) {
    // Grows while attempts cannot be recorded (the database is failing): a record left due is
    // not POSTed again back to back.
    let mut backoff = Duration::ZERO;
    loop {
        let due = match queue.due_deliveries(16).await {
            Ok(d) => d,
            Err(e) => {
                tracing::error!("reading pending deliveries failed: {e}");
                Vec::new()
            }
        };
        let idle = due.is_empty();
        let Some(unrecorded) = deliver_round(&queue, due, &shutdown).await else {
            return;
        };
        backoff = next_backoff(backoff, unrecorded);
        if !backoff.is_zero() {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(backoff) => {},
            }
            continue;
        }
        if !idle {
            continue;
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = queue.work_notified() => {},
            () = tokio::time::sleep(Duration::from_millis(500)) => {},
        }
    }
}

/// POSTs each of `due` and records the attempt; whether some attempt could not be recorded,
/// or `None` once shutdown began (what was not sent is handed back, due at once, for the next
/// start or another node; a POST already under way is finished and recorded first: a cut one
/// would be sent twice).
async fn deliver_round(
    queue: &Queue,
    due: Vec<Delivery>,
    shutdown: &CancellationToken,
) -> Option<bool> {
    let mut unrecorded = false;
    let mut due = due.into_iter();
    while let Some(d) = due.next() {
        if shutdown.is_cancelled() {
            let rest: Vec<String> = std::iter::once(d.id.clone())
                .chain(due.map(|d| d.id))
                .collect();
            if let Err(e) = queue.hand_back_deliveries(&rest).await {
                tracing::error!("cannot hand back {} delivery(ies): {e}", rest.len());
            }
            return None;
        }
        let span = Trace::delivery(&d.traceparent, &d.url, d.attempts + 1);
        let outcome = match d.url.parse::<http::Uri>() {
            Ok(url) => {
                let w3c = span.headers();
                post_json(&url, d.payload.clone(), &w3c, Duration::from_secs(10)).await
            }
            Err(e) => Err(format!("bad URL: {e}")),
        };
        match &outcome {
            Ok(status) => span.status(*status),
            Err(e) => span.fail("delivery_failed", e.clone()),
        }
        span.end();
        let recorded = judge_delivery(&d, outcome);
        crate::metrics::delivery(match recorded {
            DeliveryAttempt::Delivered => "delivered",
            DeliveryAttempt::Failed { .. } => "failed",
        });
        if let Err(e) = queue.delivery_attempted(&d.id, recorded).await {
            tracing::error!(
                id = d.invocation_id,
                "cannot record the delivery attempt: {e}"
            );
            unrecorded = true;
        }
    }
    Some(unrecorded)
}

/// A 2xx is delivered; anything else failed, retried with backoff until the last try.
fn judge_delivery(d: &Delivery, outcome: Result<u16, String>) -> DeliveryAttempt {
    let attempt = d.attempts + 1;
    let error = match outcome {
        Ok(status) if (200..300).contains(&status) => return DeliveryAttempt::Delivered,
        Ok(status) => format!("destination answered {status}"),
        Err(e) => e,
    };
    let retry_at = (attempt < retry::DELIVERY_ATTEMPTS)
        .then(|| now_ms() + retry::delivery_backoff(attempt).as_millis() as i64);
    if retry_at.is_none() {
        tracing::error!(
            id = d.invocation_id,
            "giving up delivering to {} after {attempt} attempts: {error}",
            d.url
        );
    } else {
        tracing::warn!(
            id = d.invocation_id,
            "delivery to {} failed (attempt {attempt}): {error}",
            d.url
        );
    }
    DeliveryAttempt::Failed { error, retry_at }
}

/// The pause before the next round of deliveries: none while attempts are recorded; 1 s,
/// doubling to a minute, while they cannot be.
fn next_backoff(previous: Duration, unrecorded: bool) -> Duration {
    if unrecorded {
        (previous * 2).clamp(Duration::from_secs(1), Duration::from_secs(60))
    } else {
        Duration::ZERO
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(body: &[u8]) -> Claimed {
        Claimed {
            id: "abc".into(),
            function: "f".into(),
            attempt: 3,
            max_attempts: 3,
            token: 1,
            method: "POST".into(),
            uri: "/".into(),
            headers: vec![],
            body: body.to_vec(),
            deploy: None,
            created_at: 0,
            suspensions: 0,
            wait: None,
        }
    }

    #[test]
    fn success_record_has_lambda_shape() {
        let result = StoredResult {
            status: Some(200),
            headers: vec![],
            body: br#"{"ok":true}"#.to_vec(),
            logs: Vec::new(),
        };
        let r = record("f", &claim(br#"{"n":1}"#), "Success", &result, None);
        assert_eq!(r["version"], "1.0");
        assert_eq!(r["requestContext"]["requestId"], "abc");
        assert_eq!(r["requestContext"]["functionArn"], "fnhost:function:f");
        assert_eq!(r["requestContext"]["condition"], "Success");
        assert_eq!(r["requestContext"]["approximateInvokeCount"], 3);
        assert_eq!(r["requestPayload"]["n"], 1);
        assert_eq!(r["responseContext"]["statusCode"], 200);
        assert_eq!(r["responsePayload"]["ok"], true);
        assert!(r["timestamp"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn failure_record_carries_the_error() {
        let r = record(
            "f",
            &claim(b"plain text"),
            "RetriesExhausted",
            &StoredResult::default(),
            Some("trapped"),
        );
        assert_eq!(r["requestPayload"], "plain text");
        assert_eq!(r["responseContext"]["functionError"], "Unhandled");
        assert_eq!(r["responsePayload"]["errorMessage"], "trapped");
        assert_eq!(
            r["responseContext"]["executedVersion"], "$LATEST",
            "served from a directory"
        );
    }

    /// The version that ran is the deploy the invocation was accepted under.
    #[test]
    fn a_deployed_invocation_names_its_deploy_as_the_executed_version() {
        let deployed = Claimed {
            deploy: Some("9bd0e938549f".into()),
            ..claim(b"")
        };
        let r = record("f", &deployed, "Success", &StoredResult::default(), None);
        assert_eq!(r["responseContext"]["executedVersion"], "9bd0e938549f");
    }

    /// Regression: when recording an attempt failed the loop did not pause and the row stayed
    /// due, so the same record was POSTed back to back, past its 12-try cap.
    #[test]
    fn unrecorded_attempts_back_off() {
        let mut pause = Duration::ZERO;
        let mut seen = Vec::new();
        for _ in 0..8 {
            pause = next_backoff(pause, true);
            seen.push(pause.as_secs());
        }
        assert_eq!(seen, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(next_backoff(pause, false), Duration::ZERO);
    }
}

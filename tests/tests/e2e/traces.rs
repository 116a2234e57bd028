//! Traces and structured logs, against a real OTLP receiver (`otlp`): a request's spans
//! continue the client's trace and reach the upstream; a background invocation's attempts
//! join the trace of the request that was acknowledged; errors are error spans with their
//! cause; a collector that is down or stalled costs dropped spans, not requests' time; JSON
//! logs carry the function, invocation and trace.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::BodyExt;

use crate::background::accepted_id;
use crate::metrics::sample;
use crate::otlp::{Receiver, Span};
use crate::support::{Server, get, send, serve_http};

const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

fn telemetry(receiver: &Receiver) -> String {
    format!("[telemetry]\nendpoint = \"{}\"\n", receiver.endpoint())
}

/// The one span named `name` (of `trace`, when given).
fn one<'a>(spans: &'a [Span], name: &str) -> Result<&'a Span, String> {
    let found: Vec<&Span> = spans.iter().filter(|s| s.name == name).collect();
    match found.as_slice() {
        [one] => Ok(one),
        _ => Err(format!(
            "{} span(s) named {name:?} among {:#?}",
            found.len(),
            names(spans)
        )),
    }
}

fn names(spans: &[Span]) -> Vec<String> {
    spans
        .iter()
        .map(|s| format!("{} {}<-{}", s.name, s.span_id, s.parent))
        .collect()
}

/// `fnhost_trace_spans_dropped_total{reason}` of `server` (whose admin token is `t0ken`).
async fn spans_dropped(server: &crate::support::Server, reason: &str) -> f64 {
    let metrics = send(
        "GET",
        &server.url("/.fnhost/metrics"),
        &[("authorization", "Bearer t0ken")],
        "",
    )
    .await
    .text();
    sample(
        &metrics,
        "fnhost_trace_spans_dropped_total",
        &[("reason", reason)],
    )
}

/// A loopback upstream that keeps the `traceparent` of every request it gets.
async fn upstream() -> (std::net::SocketAddr, Arc<Mutex<Vec<String>>>) {
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let kept = seen.clone();
    let addr = serve_http(Arc::new(move |req| {
        let kept = kept.clone();
        Box::pin(async move {
            let parent = req
                .headers()
                .get("traceparent")
                .map(|v| v.to_str().unwrap().to_string());
            kept.lock().unwrap().push(parent.unwrap_or_default());
            http::Response::new(
                http_body_util::Full::new(bytes::Bytes::from("pong"))
                    .map_err(|never| match never {})
                    .boxed(),
            )
        })
    }))
    .await;
    (addr, seen)
}

#[tokio::test]
async fn a_request_continues_the_client_s_trace_down_to_the_upstream() {
    let receiver = Receiver::http().await;
    let (up, upstream_saw) = upstream().await;
    let config = format!(
        "{}[functions.fetch]\nallowed_outbound_hosts = [\"http://127.0.0.1:{}\"]\n",
        telemetry(&receiver),
        up.port()
    );
    let server = Server::with(&[])
        .function_as("fetch", "guest-outbound")
        .config(&config)
        .start();
    let parent = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let url = server.url(&format!(
        "/.netlify/functions/fetch?url=http://127.0.0.1:{}/ping?token=secret",
        up.port()
    ));
    let reply = send("GET", &url, &[("traceparent", &parent)], "").await;
    assert_eq!(
        (reply.status, reply.text().as_str()),
        (200, "upstream 200: pong")
    );

    let (server_span, run, instantiate, client) = receiver
        .wait_for(
            "the request's four spans",
            Duration::from_secs(10),
            |spans| {
                Ok((
                    one(spans, "GET fetch")?.clone(),
                    one(spans, "run fetch")?.clone(),
                    one(spans, "instantiate")?.clone(),
                    one(spans, "GET")?.clone(),
                ))
            },
        )
        .await;
    // The client's trace, the client's span as the parent.
    assert_eq!(
        (&*server_span.trace_id, &*server_span.parent),
        (CLIENT_TRACE, CLIENT_SPAN)
    );
    assert_eq!(server_span.kind, 2, "SERVER");
    assert_eq!(server_span.attr("http.response.status_code"), Some("200"));
    assert_eq!(server_span.attr("faas.trigger"), Some("http"));
    assert_eq!(server_span.attr("faas.name"), Some("fetch"));
    assert_eq!(
        server_span.attr("http.route"),
        Some("/.netlify/functions/fetch/*")
    );
    assert!(
        server_span
            .attr("faas.invocation_id")
            .is_some_and(|i| i.len() > 8)
    );
    assert_eq!(server_span.service, "fnhost");
    // The run under the server span; instantiation and the outbound call under the run.
    assert_eq!(run.parent, server_span.span_id);
    assert_eq!(instantiate.parent, run.span_id);
    assert_eq!(
        (client.parent.as_str(), client.kind),
        (run.span_id.as_str(), 3)
    );
    for span in [&run, &instantiate, &client] {
        assert_eq!(span.trace_id, CLIENT_TRACE);
    }
    assert_eq!(client.attr("server.address"), Some("127.0.0.1"));
    assert_eq!(client.attr("http.response.status_code"), Some("200"));
    let full = client.attr("url.full").unwrap();
    assert!(
        full.ends_with("/ping") && !full.contains("secret"),
        "{full}"
    );
    // The upstream continues the same trace, under the client span.
    let seen = upstream_saw.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![format!("00-{CLIENT_TRACE}-{}-01", client.span_id)]
    );
}

#[tokio::test]
async fn a_denied_outbound_request_is_an_error_span() {
    let receiver = Receiver::http().await;
    let server = Server::with(&[])
        .function_as("fetch", "guest-outbound")
        .config(&telemetry(&receiver))
        .start();
    let reply = get(&server.url("/.netlify/functions/fetch?url=http://127.0.0.1:9/x")).await;
    assert_eq!(reply.status, 502, "{}", reply.text());
    let client = receiver
        .wait_for("the denied client span", Duration::from_secs(10), |spans| {
            Ok(one(spans, "GET")?.clone())
        })
        .await;
    assert_eq!(client.status, 2, "ERROR");
    assert_eq!(client.attr("error.type"), Some("http-request-denied"));
}

#[tokio::test]
async fn a_504_and_a_trap_are_error_spans_with_their_cause() {
    let receiver = Receiver::http().await;
    let config = format!(
        "{}[functions.spin]\ntimeout = \"1s\"\n",
        telemetry(&receiver)
    );
    let server = Server::with(&[])
        .function_as("spin", "guest-spin")
        .function_as("trap", "guest-trap")
        .config(&config)
        .start();
    assert_eq!(
        get(&server.url("/.netlify/functions/spin")).await.status,
        504
    );
    assert_eq!(
        get(&server.url("/.netlify/functions/trap")).await.status,
        500
    );
    let spans = receiver
        .wait_for("four spans", Duration::from_secs(10), |spans| {
            for name in ["GET spin", "run spin", "GET trap", "run trap"] {
                one(spans, name)?;
            }
            Ok(spans.to_vec())
        })
        .await;
    let span = |name| one(&spans, name).unwrap();
    assert_eq!(
        (span("GET spin").status, span("GET spin").attr("error.type")),
        (2, Some("504"))
    );
    assert_eq!(
        (span("run spin").status, span("run spin").attr("error.type")),
        (2, Some("timeout"))
    );
    assert_eq!(span("run spin").status_message, "budget exceeded");
    assert_eq!(
        (span("GET trap").status, span("GET trap").attr("error.type")),
        (2, Some("500"))
    );
    let run = span("run trap");
    assert_eq!((run.status, run.attr("error.type")), (2, Some("trapped")));
    assert!(
        run.status_message.contains("panicked on purpose")
            || run.status_message.contains("unreachable"),
        "{run:?}"
    );
}

#[tokio::test]
async fn a_background_invocation_s_attempts_join_the_accepting_trace_over_grpc() {
    let receiver = Receiver::grpc().await;
    let (destination, destination_saw) = upstream().await;
    let config = format!(
        "[server]\nlease = \"2s\"\n[defaults]\nretry_delays = [\"1s\"]\n\
         [functions.flaky-background]\non_success = \"http://{destination}/inbox\"\n"
    );
    // The environment's settings, the standard way (they win over [telemetry]).
    let server = Server::with(&[])
        .function_as("flaky-background", "guest-flaky")
        .config(&config)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.endpoint())
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        .env("OTEL_SERVICE_NAME", "site-a")
        .start();
    let reply = send(
        "POST",
        &server.url("/.netlify/functions/flaky-background?succeed_on=2"),
        &[],
        "",
    )
    .await;
    let id = accepted_id(&reply);
    let (accept, attempts) = receiver
        .wait_for(
            "the accepting span and two attempts",
            Duration::from_secs(20),
            |spans| {
                let accept = one(spans, "POST flaky-background")?.clone();
                let mut attempts: Vec<Span> = spans
                    .iter()
                    .filter(|s| s.name == "attempt flaky-background")
                    .cloned()
                    .collect();
                attempts.sort_by_key(|s| s.attr("fnhost.attempt").map(str::to_string));
                if attempts.len() == 2 {
                    Ok((accept, attempts))
                } else {
                    Err(format!("{:#?}", names(spans)))
                }
            },
        )
        .await;
    assert_eq!(accept.attr("http.response.status_code"), Some("202"));
    assert_eq!(accept.attr("faas.invocation_id"), Some(id.as_str()));
    assert_eq!(accept.service, "site-a");
    for (n, attempt) in attempts.iter().enumerate() {
        assert_eq!(attempt.trace_id, accept.trace_id, "one trace");
        assert_eq!(attempt.parent, accept.span_id);
        assert_eq!(
            attempt.links,
            vec![(accept.trace_id.clone(), accept.span_id.clone())]
        );
        assert_eq!(attempt.kind, 5, "CONSUMER");
        assert_eq!(
            attempt.attr("fnhost.attempt"),
            Some((n + 1).to_string().as_str())
        );
        assert_eq!(attempt.attr("faas.invocation_id"), Some(id.as_str()));
    }
    let (first, second) = (&attempts[0], &attempts[1]);
    assert_eq!(
        (first.attr("fnhost.outcome"), first.status),
        (Some("retry"), 2)
    );
    let delay: i64 = first
        .attr("fnhost.retry_delay_ms")
        .unwrap()
        .parse()
        .unwrap();
    assert!((0..=1000).contains(&delay), "{delay}");
    assert_eq!(
        (second.attr("fnhost.outcome"), second.status),
        (Some("succeeded"), 0)
    );
    // The destination's POST is a span under the attempt that succeeded, and continues it.
    let deliver = receiver
        .wait_for("the delivery span", Duration::from_secs(10), |spans| {
            Ok(one(spans, "deliver")?.clone())
        })
        .await;
    assert_eq!(
        (deliver.parent.as_str(), deliver.kind),
        (second.span_id.as_str(), 3)
    );
    assert_eq!(deliver.attr("http.response.status_code"), Some("200"));
    let seen = destination_saw.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![format!("00-{}-{}-01", accept.trace_id, deliver.span_id)]
    );
    // Each attempt's run is its child.
    let spans = receiver.spans();
    println!("{}", crate::otlp::render_tree(&spans, &accept.trace_id));
    let runs: Vec<&Span> = spans
        .iter()
        .filter(|s| s.name == "run flaky-background")
        .collect();
    assert_eq!(runs.len(), 2);
    assert!(
        runs.iter()
            .all(|r| attempts.iter().any(|a| a.span_id == r.parent))
    );
}

#[tokio::test]
async fn a_collector_that_is_down_or_stalled_costs_spans_not_time() {
    // A stalled collector: accepts connections and never answers.
    let stalled = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", stalled.local_addr().unwrap());
    let connected = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = connected.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = stalled.accept().await {
            held.push(stream);
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    let config = format!(
        "[server]\nadmin_token = \"t0ken\"\n[telemetry]\nendpoint = \"{endpoint}\"\nmax_queue = 8\nexport_timeout = \"30s\"\n"
    );
    let server = Server::with(&["hello"]).config(&config).start();
    // One request, whose spans go out in a batch that never comes back.
    assert_eq!(
        get(&server.url("/.netlify/functions/hello")).await.status,
        200
    );
    crate::support::wait_until(
        "an export to the stalled collector",
        Duration::from_secs(10),
        async || connected.load(std::sync::atomic::Ordering::SeqCst) > 0,
    )
    .await;
    let mut slowest = Duration::ZERO;
    for _ in 0..100 {
        let started = Instant::now();
        assert_eq!(
            get(&server.url("/.netlify/functions/hello")).await.status,
            200
        );
        slowest = slowest.max(started.elapsed());
    }
    // An export waits up to 30 s for this collector: a request that waited on it would show.
    assert!(
        slowest < Duration::from_secs(2),
        "slowest request {slowest:?}"
    );
    let dropped = spans_dropped(&server, "queue_full").await;
    // 100 requests make 300 spans (server, run, instantiate); 8 may wait.
    assert!(dropped >= 290.0, "dropped {dropped}");
}

#[tokio::test]
async fn json_logs_are_one_object_a_line_with_function_invocation_and_trace() {
    let receiver = Receiver::http().await;
    let config = format!("[server]\nlog_format = \"json\"\n{}", telemetry(&receiver));
    let server = Server::with(&[])
        .function_as("chatty", "guest-chatty")
        .config(&config)
        .start();
    let reply = get(&server.url("/.netlify/functions/chatty")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let span = receiver
        .wait_for("the server span", Duration::from_secs(10), |spans| {
            Ok(one(spans, "GET chatty")?.clone())
        })
        .await;
    let (trace, id) = (
        span.trace_id.clone(),
        span.attr("faas.invocation_id").unwrap().to_string(),
    );
    server
        .wait_for_log(&[&id, "\"target\":\"guest\""], Duration::from_secs(5))
        .await;
    let logs = server.logs();
    let mut guest_lines = 0;
    for line in logs.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            v["timestamp"].is_string() && v["level"].is_string(),
            "{line}"
        );
        if v["target"] == "guest" && v["id"] == id.as_str() {
            guest_lines += 1;
            assert_eq!(v["function"], "chatty", "{line}");
            assert_eq!(v["trace_id"], trace.as_str(), "{line}");
            assert!(v["message"].is_string(), "{line}");
        }
    }
    assert!(guest_lines >= 1, "{logs}");
}

#[tokio::test]
async fn a_rule_that_applies_and_a_refused_origin_are_spans_of_the_request() {
    let receiver = Receiver::http().await;
    let config = format!(
        "{}[[redirects]]\nfrom = \"/old\"\nto = \"/.netlify/functions/hello\"\nstatus = 200\n\
         [cors]\nallowed_origins = [\"https://shop.example\"]\n",
        telemetry(&receiver)
    );
    let server = Server::with(&["hello"]).config(&config).start();
    assert_eq!(get(&server.url("/old")).await.status, 200);
    let foreign = [("origin", "https://evil.example")];
    let refused = send(
        "POST",
        &server.url("/.netlify/functions/hello"),
        &foreign,
        "",
    )
    .await;
    assert_eq!(refused.status, 403, "{}", refused.text());
    let spans = receiver
        .wait_for(
            "the rule and cors spans",
            Duration::from_secs(10),
            |spans| {
                one(spans, "rule")?;
                one(spans, "cors")?;
                Ok(spans.to_vec())
            },
        )
        .await;
    let (rule, cors) = (one(&spans, "rule").unwrap(), one(&spans, "cors").unwrap());
    let rewritten = one(&spans, "GET hello").unwrap();
    assert_eq!(
        (rule.parent.as_str(), rule.attr("fnhost.rule.action")),
        (rewritten.span_id.as_str(), Some("rewrite"))
    );
    assert_eq!(rewritten.attr("url.path"), Some("/old"));
    let post = one(&spans, "POST hello").unwrap();
    assert_eq!(
        (cors.parent.as_str(), cors.status),
        (post.span_id.as_str(), 2)
    );
    assert_eq!(cors.attr("error.type"), Some("origin_not_allowed"));
    assert_eq!(post.attr("http.response.status_code"), Some("403"));
}

#[tokio::test]
async fn each_schedule_tick_starts_a_trace_its_attempt_joins() {
    let receiver = Receiver::http().await;
    let config = format!(
        "{}[functions.echo]\nschedule = \"* * * * * *\"\n",
        telemetry(&receiver)
    );
    let _server = Server::with(&["echo"]).config(&config).start();
    let (tick, attempt) = receiver
        .wait_for("a tick and its attempt", Duration::from_secs(15), |spans| {
            let tick = (spans.iter())
                .find(|s| s.name == "tick echo" && s.attr("faas.invocation_id").is_some())
                .ok_or_else(|| format!("no tick among {:#?}", names(spans)))?;
            let attempt = (spans.iter())
                .find(|s| s.name == "attempt echo" && s.parent == tick.span_id)
                .ok_or_else(|| {
                    format!("no attempt of {} among {:#?}", tick.span_id, names(spans))
                })?;
            Ok((tick.clone(), attempt.clone()))
        })
        .await;
    assert_eq!(
        (tick.parent.as_str(), tick.kind),
        ("", 4),
        "a root, PRODUCER"
    );
    assert_eq!(tick.attr("faas.cron"), Some("* * * * * *"));
    assert_eq!(tick.attr("faas.trigger"), Some("timer"));
    assert_eq!(attempt.attr("faas.trigger"), Some("timer"));
    assert_eq!(
        attempt.attr("faas.invocation_id"),
        tick.attr("faas.invocation_id")
    );
    assert_eq!(attempt.attr("fnhost.outcome"), Some("succeeded"));
    // Another tick, another trace.
    let traces = receiver
        .wait_for("a second tick", Duration::from_secs(10), |spans| {
            let ticks: std::collections::BTreeSet<String> = (spans.iter())
                .filter(|s| s.name == "tick echo")
                .map(|s| s.trace_id.clone())
                .collect();
            if ticks.len() >= 2 {
                Ok(ticks)
            } else {
                Err(format!("{} tick trace(s)", ticks.len()))
            }
        })
        .await;
    assert!(traces.len() >= 2);
}

#[tokio::test]
async fn a_sampled_out_request_records_nothing_and_still_propagates_its_trace() {
    let receiver = Receiver::http().await;
    let (up, upstream_saw) = upstream().await;
    let config = format!(
        "{}sampler = \"parentbased_always_off\"\n\
         [functions.fetch]\nallowed_outbound_hosts = [\"http://127.0.0.1:{}\"]\n",
        telemetry(&receiver),
        up.port()
    );
    let server = Server::with(&[])
        .function_as("fetch", "guest-outbound")
        .config(&config)
        .start();
    let url = server.url(&format!(
        "/.netlify/functions/fetch?url=http://127.0.0.1:{}/",
        up.port()
    ));
    // The client decided not to sample (flags 00): nothing is recorded, the decision travels.
    let unsampled = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-00");
    assert_eq!(
        send("GET", &url, &[("traceparent", &unsampled)], "")
            .await
            .status,
        200
    );
    // A sampled one (flags 01) is recorded: once its spans are in, the first request's would be.
    let sampled_trace = "0af7651916cd43dd8448eb211c80319c";
    let sampled = format!("00-{sampled_trace}-b7ad6b7169203331-01");
    assert_eq!(
        send("GET", &url, &[("traceparent", &sampled)], "")
            .await
            .status,
        200
    );
    receiver
        .wait_for(
            "the sampled request's client span",
            Duration::from_secs(10),
            |spans| {
                (spans.iter())
                    .find(|s| s.trace_id == sampled_trace && s.name == "GET")
                    .map(|_| ())
                    .ok_or_else(|| format!("{:#?}", names(spans)))
            },
        )
        .await;
    let recorded: Vec<Span> = receiver
        .spans()
        .into_iter()
        .filter(|s| s.trace_id == CLIENT_TRACE)
        .collect();
    assert!(recorded.is_empty(), "{recorded:#?}");
    let seen = upstream_saw.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    assert!(
        seen[0].starts_with(&format!("00-{CLIENT_TRACE}-")) && seen[0].ends_with("-00"),
        "{seen:?}"
    );
    assert!(
        seen[1].starts_with(&format!("00-{sampled_trace}-")) && seen[1].ends_with("-01"),
        "{seen:?}"
    );
}

/// A collector behind TLS (`https://`), over HTTP/protobuf and gRPC: spans arrive when fnhost
/// trusts its CA (`[telemetry] certificate`, or `OTEL_EXPORTER_OTLP_CERTIFICATE`); without it
/// the certificate is refused, nothing arrives and the spans are counted failed.
#[tokio::test]
async fn spans_reach_a_tls_collector_that_chains_to_the_configured_ca() {
    for (receiver, protocol) in [
        (Receiver::https().await, "http/protobuf"),
        (Receiver::grpc_tls().await, "grpc"),
    ] {
        let ca = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(ca.path(), receiver.ca_pem.as_ref().unwrap()).unwrap();
        let telemetry = format!(
            "[telemetry]\nendpoint = \"{}\"\nprotocol = \"{protocol}\"\n",
            receiver.endpoint()
        );
        let by_file = format!("{telemetry}certificate = {:?}\n", ca.path());
        let by_env = Server::with(&["echo"]).config(&telemetry).env(
            "OTEL_EXPORTER_OTLP_CERTIFICATE",
            &ca.path().display().to_string(),
        );
        for server in [
            Server::with(&["echo"]).config(&by_file).start(),
            by_env.start(),
        ] {
            let reply = get(&server.url("/.netlify/functions/echo")).await;
            assert_eq!(reply.status, 200, "{}", reply.text());
            let id = reply.json()["headers"]["fnhost-invocation-id"]
                .as_str()
                .unwrap()
                .to_string();
            receiver
                .wait_for(
                    &format!("{protocol}: the server span"),
                    Duration::from_secs(10),
                    |spans| {
                        (spans.iter())
                            .find(|s| s.attr("faas.invocation_id") == Some(id.as_str()))
                            .map(|_| ())
                            .ok_or_else(|| format!("{:?}", names(spans)))
                    },
                )
                .await;
        }
    }

    // Not trusted: the Mozilla roots alone do not make the test's CA.
    let receiver = Receiver::https().await;
    let config = format!(
        "[server]\nadmin_token = \"t0ken\"\n[telemetry]\nendpoint = \"{}\"\nexport_timeout = \"1s\"\n",
        receiver.endpoint()
    );
    let server = Server::with(&["echo"]).config(&config).start();
    let reply = get(&server.url("/.netlify/functions/echo")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let failed = crate::support::wait_until(
        "spans counted as failed exports",
        Duration::from_secs(15),
        async || {
            let n = spans_dropped(&server, "export_failed").await;
            (n > 0.0).then_some(n)
        },
    )
    .await;
    assert!(
        receiver.spans().is_empty(),
        "{failed} failed, yet {:?}",
        names(&receiver.spans())
    );
}

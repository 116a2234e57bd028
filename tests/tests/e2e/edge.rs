//! What the edge decides before a function runs (Netlify parity, round two): the client
//! address behind trusted proxies, rate limits, excluded paths.

use std::time::Duration;

use crate::background::accepted_id;
use crate::metrics::sample;
use crate::support::{Server, admin_detail, admin_get, send, wait_until};

/// The `fnhost-client-ip` the echo function saw for a request with `headers`.
async fn seen_ip(server: &Server, headers: &[(&str, &str)]) -> String {
    let reply = send("GET", &server.url("/.netlify/functions/echo"), headers, "").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let echo = reply.json();
    echo["headers"]["fnhost-client-ip"]
        .as_str()
        .unwrap_or_else(|| panic!("no fnhost-client-ip in {echo}"))
        .to_string()
}

#[tokio::test]
async fn the_client_address_is_the_peer_unless_a_trusted_proxy_names_it() {
    let trusting = Server::with(&["echo"])
        .function_as("echo-background", "echo")
        .config("[server]\nadmin_token = \"t0ken\"\ntrusted_proxies = [\"127.0.0.1\", \"10.0.0.0/8\"]\n")
        .start();
    // The proxy (loopback) appended the address it saw; what the client wrote left of it is
    // not believed past the first untrusted hop.
    let xff = [("x-forwarded-for", "6.6.6.6, 198.51.100.7, 10.1.2.3")];
    assert_eq!(seen_ip(&trusting, &xff).await, "198.51.100.7");
    let fwd = [("forwarded", "for=\"[2001:db8::1]:4711\";proto=https")];
    assert_eq!(seen_ip(&trusting, &fwd).await, "2001:db8::1");
    assert_eq!(seen_ip(&trusting, &[]).await, "127.0.0.1");
    // A client cannot set the header itself.
    let forged = [("fnhost-client-ip", "1.1.1.1")];
    assert_eq!(seen_ip(&trusting, &forged).await, "127.0.0.1");

    // A background invocation carries it to its attempts: it is stored with the request.
    let reply = send(
        "POST",
        &trusting.url("/.netlify/functions/echo-background"),
        &xff,
        "",
    )
    .await;
    let id = accepted_id(&reply);
    let detail = admin_detail(&trusting, &id).await;
    assert!(
        detail["request"]
            .to_string()
            .contains(r#"["fnhost-client-ip","198.51.100.7"]"#),
        "{detail}"
    );

    // Loopback is not a trusted proxy here: its forwarding headers are ignored (spoofing).
    let strict = Server::with(&["echo"])
        .config("[server]\ntrusted_proxies = [\"10.0.0.0/8\"]\n")
        .start();
    assert_eq!(seen_ip(&strict, &xff).await, "127.0.0.1");
    assert_eq!(seen_ip(&strict, &fwd).await, "127.0.0.1");
}

#[tokio::test]
async fn the_sdk_context_carries_address_site_geo_params_and_cookies() {
    let config = "[server]\nsite = \"shop\"\ntrusted_proxies = [\"127.0.0.1\"]\n\
        [functions.ctx]\npath = \"/items/:id\"\n";
    let server = Server::with(&[])
        .function_as("ctx", "guest-env")
        .config(config)
        .start();
    let headers = [
        ("x-forwarded-for", "198.51.100.7"),
        ("x-country", "FR"),
        ("x-city", "Lyon"),
        ("cookie", "theme=dark; session=\"abc\""),
    ];
    let reply = send("GET", &server.url("/items/42?context="), &headers, "").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let ctx = reply.text();
    for part in [
        "ip: Some(198.51.100.7)",
        "params: [(\"id\", \"42\")]",
        "cookies: [(\"theme\", \"dark\"), (\"session\", \"abc\")]",
        "site: Some(\"shop\")",
        "country: Some(\"FR\")",
        "city: Some(\"Lyon\")",
        "region: None",
    ] {
        assert!(ctx.contains(part), "{part} not in {ctx}");
    }
    assert!(ctx.contains("request_id: Some(\""), "{ctx}");

    // Geo headers from a peer that is not a trusted proxy are not believed.
    let strict = Server::with(&[])
        .function_as("ctx", "guest-env")
        .config("[functions.ctx]\npath = \"/items/:id\"\n")
        .start();
    let reply = send("GET", &strict.url("/items/1?context="), &headers, "").await;
    let ctx = reply.text();
    assert!(
        ctx.contains("country: None") && ctx.contains("site: None"),
        "{ctx}"
    );
    assert!(ctx.contains("ip: Some(127.0.0.1)"), "{ctx}");
}

#[tokio::test]
async fn a_rate_limit_answers_429_per_client_before_anything_runs() {
    let config = "[server]\nadmin_token = \"t0ken\"\ntrusted_proxies = [\"127.0.0.1\"]\n\
        [functions.echo]\nrate_limit = { window_limit = 10, window_size = \"60s\", aggregate_by = [\"ip\"] }\n";
    let server = Server::with(&["echo"]).config(config).start();
    let url = server.url("/.netlify/functions/echo");
    let (mut served, mut limited) = (0, 0);
    for _ in 0..100 {
        let reply = send("GET", &url, &[("x-forwarded-for", "198.51.100.1")], "").await;
        match reply.status {
            200 => served += 1,
            429 => {
                limited += 1;
                let after: u64 = reply.header("retry-after").unwrap().parse().unwrap();
                assert!((1..=60).contains(&after), "Retry-After {after}");
            }
            other => panic!("unexpected {other}: {}", reply.text()),
        }
    }
    assert_eq!((served, limited), (10, 90));
    // Another client has its own window.
    for _ in 0..10 {
        let reply = send("GET", &url, &[("x-forwarded-for", "198.51.100.2")], "").await;
        assert_eq!(reply.status, 200);
    }
    let reply = send("GET", &url, &[("x-forwarded-for", "198.51.100.2")], "").await;
    assert_eq!(reply.status, 429);
    // Counted, and nothing ran for the refused ones.
    let metrics = admin_get(&server, "/.fnhost/metrics", "t0ken").await.text();
    let limited = [("function", "echo"), ("action", "rate_limit")];
    assert_eq!(
        sample(&metrics, "fnhost_rate_limited_total", &limited),
        91.0
    );
    let ran = [("function", "echo")];
    assert_eq!(sample(&metrics, "fnhost_invocations_total", &ran), 20.0);
}

#[tokio::test]
async fn a_rate_limit_rewrite_serves_another_path_and_a_window_ends() {
    let config = "[functions.api]\nrate_limit = { window_limit = 2, window_size = \"1s\", \
        action = { rewrite = \"/.netlify/functions/busy\" } }\n";
    let server = Server::with(&[])
        .function_as("api", "echo")
        .function_as("busy", "echo")
        .config(config)
        .start();
    let url = server.url("/.netlify/functions/api");
    let answered_by = |reply: &crate::support::Reply| {
        reply.json()["headers"]["fnhost-function"]
            .as_str()
            .unwrap()
            .to_string()
    };
    for _ in 0..2 {
        assert_eq!(answered_by(&send("GET", &url, &[], "").await), "api");
    }
    assert_eq!(answered_by(&send("GET", &url, &[], "").await), "busy");
    // The window slides on: within a few seconds `api` answers again.
    wait_until("api to answer again", Duration::from_secs(5), async || {
        answered_by(&send("GET", &url, &[], "").await) == "api"
    })
    .await;
}

#[tokio::test]
async fn excluded_paths_fall_through_to_the_next_route() {
    let config = "[functions.api]\npath = \"/api/*\"\nexcluded_path = [\"/api/static/*\", \"/api/health\"]\n\
        [functions.site]\npath = \"/*\"\n";
    let server = Server::with(&[])
        .function_as("api", "echo")
        .function_as("site", "echo")
        .config(config)
        .start();
    for (path, function) in [
        ("/api/items/1", "api"),
        ("/api/static/app.css", "site"),
        ("/api/health", "site"),
        ("/api/healthz", "api"),
    ] {
        let reply = send("GET", &server.url(path), &[], "").await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.text());
        assert_eq!(
            reply.json()["headers"]["fnhost-function"],
            function,
            "{path}"
        );
    }
}

#[tokio::test]
async fn a_component_declares_its_excluded_path_and_rate_limit_and_the_file_overrides_them() {
    // guest-declared's `config` export (world 0.4): path /declared/*, excluded
    // /declared/health, 3 requests a minute per client address.
    let server = Server::with(&[])
        .function_as("declared", "guest-declared")
        .function_as("site", "echo")
        .config("[functions.site]\npath = \"/*\"\n")
        .start();
    let health = send("GET", &server.url("/declared/health"), &[], "").await;
    assert_eq!(health.json()["headers"]["fnhost-function"], "site");
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let reply = send("GET", &server.url("/declared/a"), &[], "").await;
        if reply.status == 200 {
            assert_eq!(reply.text(), "declared /declared/a");
        } else {
            assert!(reply.header("retry-after").is_some(), "{reply:?}");
        }
        statuses.push(reply.status);
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429]);

    // fnhost.toml wins over the export, for each setting.
    let config = "[functions.declared]\nexcluded_path = \"/declared/other\"\n\
        rate_limit = { window_limit = 5, window_size = \"60s\" }\n[functions.site]\npath = \"/*\"\n";
    let server = Server::with(&[])
        .function_as("declared", "guest-declared")
        .function_as("site", "echo")
        .config(config)
        .start();
    let health = send("GET", &server.url("/declared/health"), &[], "").await;
    assert_eq!(health.text(), "declared /declared/health");
    let mut served = 1;
    for _ in 0..6 {
        if send("GET", &server.url("/declared/a"), &[], "")
            .await
            .status
            == 200
        {
            served += 1;
        }
    }
    assert_eq!(served, 5);
}

#[tokio::test]
async fn a_redirect_rule_s_rate_limit_answers_429_where_the_rule_applies() {
    let config = "[[redirects]]\nfrom = \"/api/*\"\nto = \"/.netlify/functions/echo/:splat\"\n\
        status = 200\nforce = true\nrate_limit = { window_limit = 3, window_size = \"60s\" }\n";
    let server = Server::with(&["echo"]).config(config).start();
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(send("GET", &server.url("/api/items"), &[], "").await.status);
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    // The function's own URL is not behind the rule.
    let direct = send("GET", &server.url("/.netlify/functions/echo"), &[], "").await;
    assert_eq!(direct.status, 200);
}

#[tokio::test]
async fn a_rate_limited_answer_carries_the_cors_headers_a_page_needs_to_read_it() {
    let config = "[cors]\nallowed_origins = [\"https://app.example\"]\n\
        [functions.echo]\nrate_limit = { window_limit = 1, window_size = \"60s\" }\n";
    let server = Server::with(&["echo"]).config(config).start();
    let url = server.url("/.netlify/functions/echo");
    let origin = [("origin", "https://app.example")];
    assert_eq!(send("GET", &url, &origin, "").await.status, 200);
    let limited = send("GET", &url, &origin, "").await;
    assert_eq!(limited.status, 429);
    assert_eq!(
        limited.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert!(limited.header("retry-after").is_some());
    let exposed = limited
        .header("access-control-expose-headers")
        .unwrap_or_default();
    assert!(exposed.split(", ").any(|h| h == "retry-after"), "{exposed}");
}

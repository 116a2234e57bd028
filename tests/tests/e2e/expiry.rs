//! `max_event_age`: a background invocation that waited too long for an attempt is not run;
//! it ends `expired`, with an `on_failure` record saying so (Lambda's `EventAgeExceeded`).

use std::time::{Duration, Instant};

use crate::background::{Destination, FAST, accepted_id, post, wait_state};
use crate::support::Server;

#[tokio::test]
async fn an_invocation_that_waited_past_its_age_expires_busy_node_or_restart() {
    let dest = Destination::start().await;
    let data = tempfile::tempdir().unwrap();
    let config = format!(
        "{FAST}[functions.nap-background]\nconcurrency = 1\nmax_event_age = \"2s\"\non_failure = \"{}\"\n",
        dest.url("/failed")
    );
    let start = || {
        Server::with(&[])
            .function_as("nap-background", "guest-sleep")
            .config(&config)
            .data_dir(data.path())
            .start()
    };
    let mut server = start();
    let path = "/.netlify/functions/nap-background";

    // A busy node: the first holds the only slot for 3 s; the second waits past its age.
    let first = accepted_id(&post(&server, &format!("{path}?ms=3000"), &[], "").await);
    let second = accepted_id(&post(&server, &format!("{path}?ms=10"), &[], "").await);
    let ran = wait_state(&server, &first, &["succeeded"], Duration::from_secs(10)).await;
    assert_eq!(ran["result"]["body"], "slept 3000 ms\n");
    let expired = wait_state(
        &server,
        &second,
        &["expired", "succeeded"],
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(expired["state"], "expired", "{expired}");
    let error = expired["last_error"].as_str().unwrap();
    assert!(error.contains("past max_event_age = 2s"), "{error}");
    assert!(
        !server.logs().contains("slept 10 ms"),
        "the expired one ran"
    );
    let record = dest.wait_for(&second, Duration::from_secs(5)).await;
    assert_eq!(record["requestContext"]["condition"], "EventAgeExceeded");
    assert!(dest.for_id(&first).is_empty(), "a success is no failure");

    // A node that died: its running attempt comes back after the restart, too old to run.
    let third = accepted_id(&post(&server, &format!("{path}?ms=60000"), &[], "").await);
    let accepted = Instant::now();
    wait_state(&server, &third, &["running"], Duration::from_secs(5)).await;
    server.kill9();
    // The age is the condition under test: the node stays down until it has passed.
    tokio::time::sleep_until((accepted + Duration::from_millis(2100)).into()).await;
    let server = start();
    let expired = wait_state(
        &server,
        &third,
        &["expired", "succeeded", "dead"],
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(expired["state"], "expired", "{expired}");
    let record = dest.wait_for(&third, Duration::from_secs(5)).await;
    assert_eq!(record["requestContext"]["condition"], "EventAgeExceeded");
}

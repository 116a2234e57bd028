//! The queue's state transitions, on a real SQLite file in a temporary directory.

use std::time::Duration;

use super::*;

const LEASE: Duration = Duration::from_secs(30);

async fn queue() -> (Queue, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("queue.db").display());
    (Queue::open(&url).await.unwrap(), dir)
}

fn invocation(id: &str, key: Option<&str>, max_attempts: u32) -> NewInvocation {
    NewInvocation {
        id: id.into(),
        function: "job-background".into(),
        dedup: key.map(|k| Dedup::Key(k.to_string())),
        method: "POST".into(),
        uri: "/.netlify/functions/job-background?x=1".into(),
        headers: vec![("content-type".into(), "application/json".into())],
        body: br#"{"n":1}"#.to_vec(),
        max_attempts,
        deploy: None,
        priority: 0,
    }
}

async fn state(q: &Queue, id: &str) -> InvocationState {
    q.status(id)
        .await
        .unwrap()
        .expect("the invocation exists")
        .state
}

async fn claim_one(q: &Queue) -> Claimed {
    let mut claimed = q.claim("test-owner", 4, LEASE, &[]).await.unwrap();
    assert_eq!(claimed.len(), 1, "exactly one invocation is due");
    claimed.pop().unwrap()
}

fn answered(status: u16, body: &str) -> StoredResult {
    StoredResult {
        status: Some(status),
        headers: vec![("x-a".into(), "1".into())],
        body: body.as_bytes().to_vec(),
        logs: Vec::new(),
    }
}

#[tokio::test]
async fn enqueue_claim_succeed() {
    let (q, _dir) = queue().await;
    assert_eq!(
        q.enqueue(invocation("a", None, 3)).await.unwrap(),
        Enqueued::New("a".into())
    );
    let queued = q.status("a").await.unwrap().unwrap();
    assert_eq!(queued.state, InvocationState::Queued);
    assert_eq!((queued.attempts, queued.max_attempts), (0, 3));
    assert!(queued.next_attempt_at.is_some());
    assert!(q.next_due(&[]).await.unwrap().unwrap() <= now_ms());

    let claim = claim_one(&q).await;
    assert_eq!(
        (claim.id.as_str(), claim.attempt, claim.max_attempts),
        ("a", 1, 3)
    );
    assert_eq!(claim.method, "POST");
    assert_eq!(claim.uri, "/.netlify/functions/job-background?x=1");
    assert_eq!(claim.body, br#"{"n":1}"#);
    assert_eq!(claim.headers[0].1, "application/json");
    assert_eq!(state(&q, "a").await, InvocationState::Running);
    assert!(
        q.claim("other", 4, LEASE, &[]).await.unwrap().is_empty(),
        "a running invocation is not claimed twice"
    );
    assert!(q.heartbeat("a", claim.token, LEASE).await.unwrap());

    assert!(
        q.finish(&claim, Finish::Succeeded(answered(200, "done")), None)
            .await
            .unwrap()
    );
    let done = q.status("a").await.unwrap().unwrap();
    assert_eq!(done.state, InvocationState::Succeeded);
    assert!(done.finished_at.is_some() && done.next_attempt_at.is_none());
    let result = done.result.unwrap();
    assert_eq!((result.status, result.body.as_deref()), (200, Some("done")));
    assert_eq!(q.next_due(&[]).await.unwrap(), None);
    assert_eq!(
        q.counts().await.unwrap(),
        vec![(InvocationState::Succeeded, 1)]
    );
}

#[tokio::test]
async fn an_idempotency_key_stores_once() {
    let (q, _dir) = queue().await;
    q.enqueue(invocation("first", Some("k1"), 1)).await.unwrap();
    assert_eq!(
        q.enqueue(invocation("second", Some("k1"), 1))
            .await
            .unwrap(),
        Enqueued::Existing("first".into())
    );
    assert!(q.status("second").await.unwrap().is_none());
    q.enqueue(invocation("third", Some("k2"), 1)).await.unwrap();
    assert_eq!(
        q.counts().await.unwrap(),
        vec![(InvocationState::Queued, 2)]
    );
    // A retry may differ in headers; it is the same request.
    let mut retry = invocation("fourth", Some("k1"), 1);
    retry.headers.push(("x-retry".into(), "1".into()));
    assert_eq!(
        q.enqueue(retry).await.unwrap(),
        Enqueued::Existing("first".into())
    );
}

/// Regression: a key reused with another body was answered `202` with the first invocation's
/// id, silently dropping the second payload.
#[tokio::test]
async fn an_idempotency_key_reused_with_another_request_is_a_conflict() {
    let (q, _dir) = queue().await;
    q.enqueue(invocation("first", Some("k"), 1)).await.unwrap();
    let mut other_body = invocation("second", Some("k"), 1);
    other_body.body = br#"{"n":2}"#.to_vec();
    assert_eq!(
        q.enqueue(other_body).await.unwrap(),
        Enqueued::Conflict("first".into())
    );
    let mut other_path = invocation("third", Some("k"), 1);
    other_path.uri = "/.netlify/functions/job-background?x=2".into();
    assert_eq!(
        q.enqueue(other_path).await.unwrap(),
        Enqueued::Conflict("first".into())
    );
    assert_eq!(
        q.list(None, None, 10, false).await.unwrap().len(),
        1,
        "nothing stored"
    );
}

#[tokio::test]
async fn an_idempotency_key_is_forgotten_after_its_ttl() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("queue.db").display());
    let settings = QueueSettings {
        idempotency_ttl: Duration::from_millis(50),
    };
    let q = Queue::open_with(&url, settings).await.unwrap();
    q.enqueue(invocation("old", Some("k"), 1)).await.unwrap();
    sqlx::query("UPDATE invocations SET created_at = created_at - 1000")
        .execute(&q.pool)
        .await
        .unwrap();
    let mut new_body = invocation("new", Some("k"), 1);
    new_body.body = b"another day".to_vec();
    assert_eq!(
        q.enqueue(new_body).await.unwrap(),
        Enqueued::New("new".into())
    );
    assert_eq!(
        q.enqueue(invocation("again", Some("k"), 1)).await.unwrap(),
        Enqueued::Conflict("new".into()),
        "the key now belongs to the new request"
    );
    assert_eq!(q.list(None, None, 10, false).await.unwrap().len(), 2);
}

#[tokio::test]
async fn a_failure_retries_at_its_time_then_dies() {
    let (q, _dir) = queue().await;
    q.enqueue(invocation("r", None, 2)).await.unwrap();
    let first = claim_one(&q).await;
    let later = now_ms() + 60_000;
    let retry = Finish::Retry {
        error: "trapped: unreachable".into(),
        result: StoredResult::default(),
        run_at: later,
    };
    assert!(q.finish(&first, retry, None).await.unwrap());
    let retrying = q.status("r").await.unwrap().unwrap();
    assert_eq!(retrying.state, InvocationState::Retrying);
    assert_eq!(retrying.last_error.as_deref(), Some("trapped: unreachable"));
    assert!(retrying.finished_at.is_none());
    assert_eq!(q.next_due(&[]).await.unwrap(), Some(later));
    assert!(
        q.claim("o", 4, LEASE, &[]).await.unwrap().is_empty(),
        "not due before run_at"
    );

    // Due now (an earlier retry time): the second attempt.
    let again = Finish::Retry {
        error: "trapped".into(),
        result: StoredResult::default(),
        run_at: now_ms() - 1,
    };
    // A stale claim (its token moved on) changes nothing.
    assert!(!q.finish(&first, again.clone(), None).await.unwrap());
    sqlx::query("UPDATE invocations SET run_at = 0 WHERE id = 'r'")
        .execute(&q.pool)
        .await
        .unwrap();
    let second = claim_one(&q).await;
    assert_eq!(second.attempt, 2);
    assert_ne!(second.token, first.token);
    assert!(!q.heartbeat("r", first.token, LEASE).await.unwrap());
    let dead = Finish::Dead {
        error: "trapped: again".into(),
        result: answered(500, "boom"),
    };
    assert!(q.finish(&second, dead, None).await.unwrap());
    let dead = q.status("r").await.unwrap().unwrap();
    assert_eq!(dead.state, InvocationState::Dead);
    assert_eq!(dead.attempts, 2);
    assert!(dead.finished_at.is_some());
    assert_eq!(dead.result.unwrap().status, 500);

    // Replay starts over from attempt 1; cancel takes only waiting invocations.
    assert!(!q.cancel("r").await.unwrap(), "a dead one is not cancelled");
    assert!(q.replay("r", None).await.unwrap());
    let replayed = q.status("r").await.unwrap().unwrap();
    assert_eq!(
        (replayed.state, replayed.attempts),
        (InvocationState::Queued, 0)
    );
    assert!(
        !q.replay("r", None).await.unwrap(),
        "only dead ones are replayed"
    );
    assert!(q.cancel("r").await.unwrap());
    assert_eq!(state(&q, "r").await, InvocationState::Cancelled);
    assert!(q.claim("o", 4, LEASE, &[]).await.unwrap().is_empty());
}

#[tokio::test]
async fn interrupted_attempts_go_back_uncounted() {
    let (q, _dir) = queue().await;
    q.enqueue(invocation("h", None, 3)).await.unwrap();
    let claim = claim_one(&q).await;
    assert!(q.release(&claim).await.unwrap());
    let back = q.status("h").await.unwrap().unwrap();
    assert_eq!((back.state, back.attempts), (InvocationState::Queued, 0));
    assert!(!q.release(&claim).await.unwrap(), "released once");

    // An embedded queue at startup re-queues whatever the last process left running.
    let claim = claim_one(&q).await;
    assert_eq!(claim.attempt, 1);
    assert_eq!(
        q.requeue_expired(false, 5).await.unwrap().requeued,
        0,
        "lease still valid"
    );
    assert_eq!(q.requeue_expired(true, 5).await.unwrap().requeued, 1);
    assert_eq!(state(&q, "h").await, InvocationState::Queued);
    assert!(
        !q.finish(&claim, Finish::Succeeded(StoredResult::default()), None)
            .await
            .unwrap(),
        "the interrupted holder's result is discarded"
    );
    assert_eq!(claim_one(&q).await.attempt, 1);
}

#[tokio::test]
async fn an_outcome_and_its_delivery_commit_together_and_deliveries_back_off() {
    let (q, _dir) = queue().await;
    q.enqueue(invocation("d", None, 1)).await.unwrap();
    let claim = claim_one(&q).await;
    let delivery = NewDelivery {
        url: "http://127.0.0.1:9/inbox".into(),
        payload: r#"{"version":"1.0"}"#.into(),
        traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
    };
    assert!(
        q.finish(
            &claim,
            Finish::Succeeded(answered(200, "ok")),
            Some(delivery)
        )
        .await
        .unwrap()
    );
    let due = q.due_deliveries(16).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!((due[0].invocation_id.as_str(), due[0].attempts), ("d", 0));
    assert_eq!(due[0].payload, r#"{"version":"1.0"}"#);
    assert_eq!(
        due[0].traceparent,
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    );

    let failed = DeliveryAttempt::Failed {
        error: "destination answered 503".into(),
        retry_at: Some(now_ms() + 60_000),
    };
    q.delivery_attempted(&due[0].id, failed).await.unwrap();
    assert!(
        q.due_deliveries(16).await.unwrap().is_empty(),
        "backing off"
    );
    // Handed back (shutdown came before it was sent): due at once.
    q.hand_back_deliveries(std::slice::from_ref(&due[0].id))
        .await
        .unwrap();
    let again = q.due_deliveries(16).await.unwrap();
    assert_eq!(again[0].attempts, 1);
    q.delivery_attempted(&again[0].id, DeliveryAttempt::Delivered)
        .await
        .unwrap();
    assert!(q.due_deliveries(16).await.unwrap().is_empty());
    let state: String = sqlx::query("SELECT state FROM deliveries")
        .fetch_one(&q.pool)
        .await
        .unwrap()
        .try_get(0)
        .unwrap();
    assert_eq!(state, DeliveryState::Delivered.as_str());
}

#[tokio::test]
async fn lists_filter_by_function_and_state() {
    let (q, _dir) = queue().await;
    for id in ["l1", "l2"] {
        q.enqueue(invocation(id, None, 1)).await.unwrap();
    }
    let mut other = invocation("l3", None, 1);
    other.function = "other".into();
    q.enqueue(other).await.unwrap();
    let claim = q.claim("o", 1, LEASE, &[]).await.unwrap().pop().unwrap();
    q.finish(&claim, Finish::Succeeded(answered(200, "listed")), None)
        .await
        .unwrap();

    let all = q.list(None, None, 10, false).await.unwrap();
    assert_eq!(all.len(), 3);
    let mine = q
        .list(Some("job-background"), None, 10, false)
        .await
        .unwrap();
    assert_eq!(mine.len(), 2);
    let queued = q
        .list(None, Some(InvocationState::Queued), 10, false)
        .await
        .unwrap();
    assert_eq!(queued.len(), 2);
    assert!(queued.iter().all(|s| s.state == InvocationState::Queued));
    assert_eq!(q.list(None, None, 1, false).await.unwrap().len(), 1);
    // Result bodies only when asked for; status and headers always.
    let done = q
        .list(None, Some(InvocationState::Succeeded), 10, false)
        .await
        .unwrap();
    let result = done[0].result.as_ref().unwrap();
    assert_eq!((result.status, result.body.as_deref()), (200, None));
    let done = q
        .list(None, Some(InvocationState::Succeeded), 10, true)
        .await
        .unwrap();
    assert_eq!(
        done[0].result.as_ref().unwrap().body.as_deref(),
        Some("listed")
    );
}

/// Regression: an invocation whose attempts kept killing the host was re-queued forever (and
/// re-run by every restart): a crash loop.
#[tokio::test]
async fn an_invocation_interrupted_max_interruptions_times_is_dead() {
    let (q, _dir) = queue().await;
    q.enqueue(invocation("p", None, 3)).await.unwrap();
    for round in 1..=2 {
        let claim = claim_one(&q).await;
        assert_eq!(
            claim.attempt, 1,
            "round {round}: interruptions are not attempts"
        );
        let swept = q.requeue_expired(true, 3).await.unwrap();
        assert_eq!((swept.requeued, swept.dead.len()), (1, 0));
    }
    claim_one(&q).await;
    let swept = q.requeue_expired(true, 3).await.unwrap();
    assert_eq!(swept.requeued, 0);
    assert_eq!(swept.dead.len(), 1);
    assert_eq!(swept.dead[0].id, "p");
    assert_eq!(swept.dead[0].body, br#"{"n":1}"#);
    let dead = q.status("p").await.unwrap().unwrap();
    assert_eq!(dead.state, InvocationState::Dead);
    assert!(
        dead.last_error.unwrap().starts_with("interrupted 3 times"),
        "the error says why"
    );
    assert!(q.claim("o", 4, LEASE, &[]).await.unwrap().is_empty());
}

#[tokio::test]
async fn finished_invocations_are_purged_after_retention_but_not_with_pending_deliveries() {
    let (q, _dir) = queue().await;
    for id in ["done", "reporting", "waiting"] {
        q.enqueue(invocation(id, None, 1)).await.unwrap();
    }
    for _ in 0..2 {
        let claim = q.claim("o", 1, LEASE, &[]).await.unwrap().pop().unwrap();
        let delivery = (claim.id == "reporting").then(|| NewDelivery {
            url: "http://127.0.0.1:9/".into(),
            payload: "{}".into(),
            traceparent: String::new(),
        });
        q.finish(&claim, Finish::Succeeded(answered(200, "ok")), delivery)
            .await
            .unwrap();
    }
    assert_eq!(
        q.purge_finished(Duration::from_secs(3600), 10)
            .await
            .unwrap(),
        0,
        "younger than the retention"
    );
    sqlx::query(
        "UPDATE invocations SET finished_at = finished_at - 7200000 WHERE finished_at IS NOT NULL",
    )
    .execute(&q.pool)
    .await
    .unwrap();
    assert_eq!(
        q.purge_finished(Duration::from_secs(3600), 10)
            .await
            .unwrap(),
        1
    );
    assert!(q.status("done").await.unwrap().is_none());
    assert!(
        q.status("reporting").await.unwrap().is_some(),
        "its record is still pending"
    );
    assert!(q.status("waiting").await.unwrap().is_some(), "not finished");
    let due = q.due_deliveries(10).await.unwrap();
    q.delivery_attempted(&due[0].id, DeliveryAttempt::Delivered)
        .await
        .unwrap();
    assert_eq!(
        q.purge_finished(Duration::from_secs(3600), 10)
            .await
            .unwrap(),
        1
    );
    assert!(q.status("reporting").await.unwrap().is_none());
    let left: i64 = sqlx::query("SELECT COUNT(*) FROM deliveries")
        .fetch_one(&q.pool)
        .await
        .unwrap()
        .try_get(0)
        .unwrap();
    assert_eq!(left, 0, "its deliveries went with it");
}

fn ticked(id: &str, tick: &str) -> NewInvocation {
    NewInvocation {
        dedup: Some(Dedup::Tick(tick.into())),
        ..invocation(id, None, 1)
    }
}

#[tokio::test]
async fn purging_keeps_each_functions_latest_schedule_tick() {
    let (q, _dir) = queue().await;
    for inv in [
        ticked("t1", "2026-12-01T00:00:00Z"),
        ticked("t2", "2026-12-02T00:00:00Z"),
        invocation("other", Some("client-key"), 1),
    ] {
        q.enqueue(inv).await.unwrap();
        let claim = q.claim("o", 1, LEASE, &[]).await.unwrap().pop().unwrap();
        q.finish(&claim, Finish::Succeeded(answered(200, "ok")), None)
            .await
            .unwrap();
    }
    sqlx::query("UPDATE invocations SET finished_at = finished_at - 7200000")
        .execute(&q.pool)
        .await
        .unwrap();
    let purged = q
        .purge_finished(Duration::from_secs(3600), 10)
        .await
        .unwrap();
    assert_eq!(purged, 2, "the older tick and the plain keyed one");
    assert!(q.status("t1").await.unwrap().is_none());
    assert!(q.status("other").await.unwrap().is_none());
    assert!(
        q.status("t2").await.unwrap().is_some(),
        "the latest tick stays"
    );
    assert_eq!(
        q.latest_tick("job-background").await.unwrap().as_deref(),
        Some("2026-12-02T00:00:00Z")
    );
}

/// Regression (security item 1): ticks were stored under the idempotency key
/// `schedule:<tick>`, so a client sending that key before the tick made the real tick a
/// duplicate (dropped) and its own body ran instead. Keys and ticks now never collide.
#[tokio::test]
async fn a_client_key_never_stands_for_a_schedule_tick() {
    let (q, _dir) = queue().await;
    let tick = "2026-12-02T11:34:50Z";
    for key in [format!("schedule:{tick}"), tick.to_string()] {
        let attack = invocation(&format!("attack-{key}"), Some(&key), 1);
        assert!(matches!(q.enqueue(attack).await.unwrap(), Enqueued::New(_)));
    }
    assert_eq!(
        q.enqueue(ticked("real", tick)).await.unwrap(),
        Enqueued::New("real".into()),
        "the tick is stored whatever keys clients sent"
    );
    assert_eq!(
        q.enqueue(ticked("again", tick)).await.unwrap(),
        Enqueued::Existing("real".into()),
        "the same tick again (another node) stores nothing"
    );
    assert_eq!(
        q.enqueue(invocation("key-again", Some(tick), 1))
            .await
            .unwrap(),
        Enqueued::Existing(format!("attack-{tick}")),
        "and a key is still a key"
    );
}

/// Ticks stored as `schedule:<time>` keys by an older fnhost move to the tick column, so they
/// keep deduplicating; a client's key that merely looks like one stays a key.
#[tokio::test]
async fn migration_5_moves_old_schedule_keys_to_ticks() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("queue.db").display()
    );
    let pool = sqlx::any::AnyPoolOptions::new()
        .connect(&url)
        .await
        .unwrap();
    schema::migrate_until(&pool, Backend::Sqlite, 4)
        .await
        .unwrap();
    for (id, key, headers) in [
        (
            "old-tick",
            "schedule:2026-12-01T00:00:00Z",
            r#"[["fnhost-event","schedule"]]"#,
        ),
        ("client", "schedule:2026-12-03T00:00:00Z", r#"[["x","y"]]"#),
    ] {
        sqlx::query(
            "INSERT INTO invocations (id, function, idempotency_key, state, max_attempts, method, uri, headers, body, created_at, run_at) \
             VALUES ($1, 'job-background', $2, 'succeeded', 1, 'POST', '/', $3, x'', 0, 0)",
        )
        .bind(id)
        .bind(key)
        .bind(headers)
        .execute(&pool)
        .await
        .unwrap();
    }
    pool.close().await;
    let q = Queue::open(&url).await.unwrap();
    assert_eq!(
        q.enqueue(ticked("new-tick", "2026-12-01T00:00:00Z"))
            .await
            .unwrap(),
        Enqueued::Existing("old-tick".into())
    );
    assert_eq!(
        q.enqueue(ticked("later", "2026-12-03T00:00:00Z"))
            .await
            .unwrap(),
        Enqueued::New("later".into()),
        "the client's look-alike key was no tick"
    );
}

#[tokio::test]
async fn an_outcome_claims_its_slots_next_invocation_in_the_same_commit() {
    let (q, _dir) = queue().await;
    for id in ["a", "b"] {
        q.enqueue(invocation(id, None, 1)).await.unwrap();
    }
    let first = q.claim("w", 1, LEASE, &[]).await.unwrap().pop().unwrap();
    assert_eq!(first.id, "a", "oldest due first");
    let (held, next) = q
        .finish_and_claim(
            &first,
            Finish::Succeeded(answered(200, "ok")),
            None,
            "w",
            LEASE,
            vec![],
        )
        .await
        .unwrap();
    assert!(held);
    let next = next.expect("b was due");
    assert_eq!((next.id.as_str(), next.attempt), ("b", 1));
    assert_eq!(
        q.status("a").await.unwrap().unwrap().state,
        InvocationState::Succeeded
    );
    assert_eq!(
        q.status("b").await.unwrap().unwrap().state,
        InvocationState::Running,
        "leased to the slot"
    );
    // Fenced out (its lease was taken over): nothing written, and still no double claim.
    let stale = Claimed {
        token: next.token - 1,
        ..next.clone()
    };
    let (held, none) = q
        .finish_and_claim(
            &stale,
            Finish::Succeeded(answered(200, "late")),
            None,
            "w",
            LEASE,
            vec![],
        )
        .await
        .unwrap();
    assert!(!held);
    assert!(none.is_none(), "nothing else is due");
    let (held, none) = q
        .finish_and_claim(
            &next,
            Finish::Succeeded(answered(200, "ok")),
            None,
            "w",
            LEASE,
            vec![],
        )
        .await
        .unwrap();
    assert!(held && none.is_none());
}

#[tokio::test]
async fn claims_skip_the_functions_at_their_cap() {
    let (q, _dir) = queue().await;
    let of = |id: &str, function: &str| NewInvocation {
        function: function.into(),
        ..invocation(id, None, 1)
    };
    q.enqueue(of("a1", "capped")).await.unwrap();
    q.enqueue(of("a2", "capped")).await.unwrap();
    q.enqueue(of("b", "free")).await.unwrap();
    let skip = vec!["capped".to_string(), "other".to_string()];
    let claimed = q.claim("w", 4, LEASE, &skip).await.unwrap();
    let ids: Vec<&str> = claimed.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(
        ids,
        ["b"],
        "the capped function's older invocations are left"
    );
    // The same holds for the claim made with an outcome...
    let (held, next) = q
        .finish_and_claim(
            &claimed[0],
            Finish::Succeeded(answered(200, "ok")),
            None,
            "w",
            LEASE,
            skip,
        )
        .await
        .unwrap();
    assert!(held && next.is_none(), "{next:?}");
    // ...and once under its cap again, oldest first.
    let claimed = q.claim("w", 1, LEASE, &[]).await.unwrap();
    assert_eq!(claimed[0].id, "a1");
    assert_eq!(state(&q, "a2").await, InvocationState::Queued);
}

#[tokio::test]
async fn run_now_makes_a_waiting_retry_due_and_nothing_else() {
    let (q, _dir) = queue().await;
    q.enqueue(invocation("r", None, 2)).await.unwrap();
    assert!(
        !q.run_now("r").await.unwrap(),
        "queued: not a waiting retry"
    );
    let first = claim_one(&q).await;
    let retry = Finish::Retry {
        error: "trapped".into(),
        result: StoredResult::default(),
        run_at: now_ms() + 3_600_000,
    };
    assert!(q.finish(&first, retry, None).await.unwrap());
    assert!(q.claim("o", 1, LEASE, &[]).await.unwrap().is_empty());
    assert!(q.run_now("r").await.unwrap());
    let second = claim_one(&q).await;
    assert_eq!((second.id.as_str(), second.attempt), ("r", 2));
    assert!(
        !q.run_now("r").await.unwrap(),
        "running: not a waiting retry"
    );
    assert!(!q.run_now("nope").await.unwrap());
}

#[tokio::test]
async fn attempts_and_their_output_are_kept_with_the_invocation_and_purged_with_it() {
    let (q, _dir) = queue().await;
    q.enqueue(invocation("a", None, 2)).await.unwrap();
    let printed = |line: &str| GuestLine {
        at_ms: now_ms(),
        stream: "stdout".into(),
        line: line.into(),
    };
    let first = claim_one(&q).await;
    let failed = StoredResult {
        logs: (0..40).map(|i| printed(&format!("line {i}"))).collect(),
        ..StoredResult::default()
    };
    let retry = Finish::Retry {
        error: "trapped: boom".into(),
        result: failed,
        run_at: now_ms() - 1,
    };
    assert!(q.finish(&first, retry, None).await.unwrap());
    let second = claim_one(&q).await;
    let mut ok = answered(200, "ok");
    ok.logs = vec![printed("done")];
    assert!(
        q.finish(&second, Finish::Succeeded(ok), None)
            .await
            .unwrap()
    );

    let d = q.detail("a").await.unwrap().unwrap();
    let outcomes: Vec<(u32, &str, Option<&str>)> = d
        .attempts
        .iter()
        .map(|a| (a.attempt, a.outcome.as_str(), a.error.as_deref()))
        .collect();
    assert_eq!(
        outcomes,
        [(1, "failed", Some("trapped: boom")), (2, "succeeded", None)]
    );
    assert_eq!(d.logs.len(), 41, "40 lines (two statements) and one");
    assert_eq!((d.logs[0].attempt, d.logs[0].line.as_str()), (1, "line 0"));
    assert_eq!((d.logs[40].attempt, d.logs[40].line.as_str()), (2, "done"));
    assert_eq!(d.request.body, r#"{"n":1}"#);

    sqlx::query("UPDATE invocations SET finished_at = finished_at - 7200000")
        .execute(&q.pool)
        .await
        .unwrap();
    q.purge_finished(Duration::from_secs(3600), 10)
        .await
        .unwrap();
    assert!(q.detail("a").await.unwrap().is_none());
    for table in ["attempts", "guest_logs"] {
        let left: i64 = sqlx::query(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(&q.pool)
            .await
            .unwrap()
            .get(0);
        assert_eq!(left, 0, "{table} purged with the invocation");
    }
}

/// A batch the database refuses midway (here a trigger; in life a full disk) is rolled back
/// whole, and the queue goes on: the writer's connection, whose transaction was left open, is
/// closed rather than reused or handed to the pool (it would hold SQLite's write lock).
#[tokio::test]
async fn a_batch_refused_midway_is_rolled_back_and_the_queue_goes_on() {
    let (q, _dir) = queue().await;
    q.enqueue(invocation("a", None, 1)).await.unwrap();
    let claim = claim_one(&q).await;
    sqlx::query(
        "CREATE TRIGGER refuse BEFORE INSERT ON attempts \
         BEGIN SELECT RAISE(ABORT, 'refused by the test'); END",
    )
    .execute(&q.pool)
    .await
    .unwrap();
    let err = q
        .finish(&claim, Finish::Succeeded(answered(200, "ok")), None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("refused by the test"), "{err}");
    assert_eq!(
        state(&q, "a").await,
        InvocationState::Running,
        "nothing of the refused batch was written"
    );
    // Another connection can write at once: the refused transaction holds no lock.
    tokio::time::timeout(
        Duration::from_secs(5),
        sqlx::query("DROP TRIGGER refuse").execute(&q.pool),
    )
    .await
    .expect("the write lock was released")
    .unwrap();
    q.enqueue(invocation("b", None, 1)).await.unwrap();
    assert!(
        q.finish(&claim, Finish::Succeeded(answered(200, "ok")), None)
            .await
            .unwrap(),
        "the claim still holds"
    );
    assert_eq!(state(&q, "a").await, InvocationState::Succeeded);
    assert_eq!(claim_one(&q).await.id, "b");
}

fn suspended(suspension: crate::workflow::Suspension) -> Finish {
    Finish::Suspended {
        suspension,
        result: StoredResult::default(),
    }
}

fn wait(step: &str, event: &str, key: &str, since_ms: i64) -> Finish {
    suspended(crate::workflow::Suspension::Wait {
        step: step.into(),
        event: event.into(),
        key: key.into(),
        since_ms,
        until_ms: now_ms() + 60_000,
    })
}

#[tokio::test]
async fn steps_are_fenced_bounded_and_keep_their_first_record() {
    let (q, _dir) = queue().await;
    q.enqueue(invocation("s", None, 3)).await.unwrap();
    let c = claim_one(&q).await;
    let claim = (c.id.as_str(), c.token);
    let put = |name: &'static str, v: &'static [u8], max| {
        let q = q.clone();
        async move {
            q.put_step(claim, name, Some(v.to_vec()), max)
                .await
                .unwrap()
        }
    };
    assert_eq!(
        put("a", b"1", 2).await,
        PutStep::Stands(Some(b"1".to_vec()))
    );
    assert_eq!(
        put("a", b"2", 2).await,
        PutStep::Stands(Some(b"1".to_vec()))
    );
    assert_eq!(q.step("s", "a").await.unwrap(), Some(Some(b"1".to_vec())));
    assert_eq!(q.step("s", "b").await.unwrap(), None);
    assert_eq!(put("b", b"3", 1).await, PutStep::TooMany(1));
    let stale = q.put_step(("s", c.token - 1), "c", None, 10).await.unwrap();
    assert_eq!(stale, PutStep::Fenced);
    assert_eq!(q.steps("s").await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_suspended_attempt_is_not_counted_and_comes_due_at_its_time() {
    let (q, _dir) = queue().await;
    q.enqueue(invocation("z", None, 3)).await.unwrap();
    let c = claim_one(&q).await;
    let until = now_ms() + 300;
    let nap = crate::workflow::Suspension::Sleep {
        step: "nap".into(),
        until_ms: until,
    };
    assert!(q.finish(&c, suspended(nap), None).await.unwrap());
    let s = q.status("z").await.unwrap().unwrap();
    assert_eq!((s.state, s.attempts), (InvocationState::Sleeping, 0));
    assert!(q.claim("o", 4, LEASE, &[]).await.unwrap().is_empty());
    assert!(q.next_due(&[]).await.unwrap().unwrap() >= until - 5);
    tokio::time::sleep(Duration::from_millis(350)).await;
    let again = claim_one(&q).await;
    assert_eq!((again.attempt, again.suspensions), (1, 1));
    assert_eq!(again.wait, None);
}

#[tokio::test]
async fn an_event_wakes_each_invocation_waiting_for_its_key_once() {
    let (q, _dir) = queue().await;
    for id in ["w1", "w2"] {
        q.enqueue(invocation(id, None, 3)).await.unwrap();
    }
    let claims = q.claim("o", 4, LEASE, &[]).await.unwrap();
    for c in &claims {
        let key = if c.id == "w1" { "k1" } else { "k2" };
        assert!(
            q.finish(c, wait("ok", "approved", key, now_ms()), None)
                .await
                .unwrap()
        );
    }
    assert_eq!(state(&q, "w1").await, InvocationState::Waiting);
    let event = |key: &str, idem: Option<&str>| NewEvent {
        name: "approved".into(),
        key: key.into(),
        payload: b"yes".to_vec(),
        idempotency_key: idem.map(str::to_string),
        starts: Vec::new(),
    };
    let sent = q.send_event(event("k1", Some("i"))).await.unwrap();
    assert_eq!(
        (sent.new, sent.woke.clone()),
        (true, vec!["w1".to_string()])
    );
    assert_eq!(state(&q, "w1").await, InvocationState::Queued);
    assert_eq!(
        q.step("w1", "ok").await.unwrap(),
        Some(Some(b"yes".to_vec()))
    );
    let repeat = q.send_event(event("k1", Some("i"))).await.unwrap();
    assert_eq!((repeat.id, repeat.new), (sent.id.clone(), false));
    assert!(
        q.send_event(event("k1", None))
            .await
            .unwrap()
            .woke
            .is_empty()
    );
    assert_eq!(state(&q, "w2").await, InvocationState::Waiting);
    let shown = q.event(&sent.id).await.unwrap().unwrap();
    assert_eq!((shown.woke, shown.size), (vec!["w1".to_string()], 3));
    // The woken one is claimed with its wait, whose step now holds the payload.
    let c = claim_one(&q).await;
    assert_eq!(c.id, "w1");
    assert_eq!(c.wait.as_ref().map(|w| w.0.as_str()), Some("ok"));
}

#[tokio::test]
async fn a_wait_recorded_after_its_event_came_is_caught_up() {
    let (q, _dir) = queue().await;
    q.enqueue(invocation("late", None, 3)).await.unwrap();
    let c = claim_one(&q).await;
    let began = now_ms() - 1;
    let early = NewEvent {
        name: "shipped".into(),
        key: "o1".into(),
        payload: b"parcel".to_vec(),
        idempotency_key: None,
        starts: Vec::new(),
    };
    // Sent while the attempt that begins the wait still runs: nothing waits yet.
    assert!(q.send_event(early).await.unwrap().woke.is_empty());
    assert!(
        q.finish(&c, wait("ship", "shipped", "o1", began), None)
            .await
            .unwrap()
    );
    assert_eq!(q.catch_up_waits(Some("late")).await.unwrap(), 1);
    assert_eq!(state(&q, "late").await, InvocationState::Queued);
    assert_eq!(
        q.step("late", "ship").await.unwrap(),
        Some(Some(b"parcel".to_vec()))
    );
    assert_eq!(q.catch_up_waits(None).await.unwrap(), 0);
}

#[tokio::test]
async fn higher_priority_is_claimed_first_and_a_point_counts_as_a_minute_waited() {
    let (q, _dir) = queue().await;
    let of = |id: &str, priority: i32| NewInvocation {
        priority,
        ..invocation(id, None, 1)
    };
    for id in ["low1", "low2", "low3"] {
        q.enqueue(of(id, -5)).await.unwrap();
    }
    q.enqueue(of("high", 5)).await.unwrap();
    q.enqueue(of("plain", 0)).await.unwrap();
    let order = |n| {
        let q = q.clone();
        async move {
            let claimed = q.claim("w", n, LEASE, &[]).await.unwrap();
            claimed.into_iter().map(|c| c.id).collect::<Vec<_>>()
        }
    };
    assert_eq!(order(1).await, ["high"]);
    assert_eq!(order(1).await, ["plain"]);
    // A low priority is not starved: waited longer than the range, it goes ahead of the
    // highest priority that came after it.
    q.enqueue(of("top", 50)).await.unwrap();
    sqlx::query(
        "UPDATE invocations SET run_at = run_at - 101 * 60000, priority = -50 WHERE id = 'low3'",
    )
    .execute(&q.pool)
    .await
    .unwrap();
    assert_eq!(order(1).await, ["low3"]);
    assert_eq!(order(1).await, ["top"]);
    let mut rest = order(3).await;
    rest.sort();
    assert_eq!(rest, ["low1", "low2"]);
}

#[tokio::test]
async fn events_older_than_retention_are_purged() {
    let (q, _dir) = queue().await;
    for key in ["old", "new"] {
        let event = NewEvent {
            name: "e".into(),
            key: key.into(),
            payload: b"p".to_vec(),
            idempotency_key: None,
            starts: Vec::new(),
        };
        q.send_event(event).await.unwrap();
    }
    sqlx::query("UPDATE events SET received_at = received_at - 3600000 WHERE key = 'old'")
        .execute(&q.pool)
        .await
        .unwrap();
    assert_eq!(
        q.purge_events(Duration::from_secs(60), 10).await.unwrap(),
        1
    );
    let left: Vec<String> = sqlx::query_scalar("SELECT key FROM events")
        .fetch_all(&q.pool)
        .await
        .unwrap();
    assert_eq!(left, ["new"]);
}

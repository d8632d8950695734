//! Receivers that stall, trickle, flood, redirect, ask for a later retry or
//! hang up: every attempt must end within the deadline, be recorded with a
//! fitting outcome, and never tie up a sender thread for good.

use std::time::Duration;

use hookd::Config;
use serde_json::{Value, json};

use crate::helpers::{Answer, Receiver, TestServer, wait_until};
use crate::raw_receiver::{Behaviour, FLOOD_BYTES, RawReceiver};

/// `delivery.timeout`: the deadline of a whole attempt.
const TIMEOUT: Duration = Duration::from_secs(1);

/// `delivery.max_response_bytes`.
const MAX_RESPONSE: usize = 64;

/// A retry wait longer than any test, so a failed attempt is not retried.
const NO_RETRY: Duration = Duration::from_secs(60);

/// A wait short enough that only `Retry-After` can make it longer.
const TINY_WAIT: Duration = Duration::from_millis(50);

/// Clock granularity (whole milliseconds in the database, whole seconds in
/// an HTTP date) allowed below a `Retry-After` wait.
const SLACK: Duration = Duration::from_millis(100);

/// Short timeouts, a small response cap, and `retry_wait` between attempts.
fn hostile_config(config: &mut Config, retry_wait: Duration) {
    config.delivery.timeout = TIMEOUT;
    config.delivery.connect_timeout = Duration::from_millis(500);
    config.delivery.retry_waits = vec![retry_wait];
    config.delivery.max_response_bytes = MAX_RESPONSE;
}

/// Returns the attempts that `GET /v2/hooks/{id}` shows, oldest first.
fn attempts(server: &TestServer, hook: &str) -> Vec<Value> {
    let reply = server.admin().get(&format!("/v2/hooks/{hook}"));
    let mut attempts = reply.body["recent_attempts"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    attempts.reverse();
    attempts
}

/// Waits until `count` attempts of `hook` are recorded and returns them,
/// oldest first.
fn wait_attempts(server: &TestServer, hook: &str, count: usize) -> Vec<Value> {
    wait_until(&format!("{count} attempts of {hook} are recorded"), || {
        attempts(server, hook).len() >= count
    });
    attempts(server, hook)
}

fn notifications_in(server: &TestServer, state: &str) -> i64 {
    server.query_i64(
        "SELECT count(*) FROM notifications WHERE state = ?1",
        &[&state],
    )
}

fn duration_ms(attempt: &Value) -> u64 {
    attempt["duration_ms"].as_u64().unwrap()
}

#[test]
fn silent_receiver_times_out() {
    let server = TestServer::start_with(|config| {
        hostile_config(config, NO_RETRY);
        config.delivery.senders = 1;
        config.delivery.max_senders = 1;
    });
    let silent = RawReceiver::start(Behaviour::Silent);
    let admin = server.admin();
    let hook = admin.subscribe(&silent.url("/silent"), "new_task");
    admin.create("tasks", json!({"name": "a"}));

    let attempt = wait_attempts(&server, &hook, 1)[0].clone();
    assert_eq!(attempt["outcome"], "timeout", "{attempt}");
    assert!(
        duration_ms(&attempt) >= TIMEOUT.as_millis() as u64,
        "{attempt}"
    );
    assert_eq!(attempt["status"], Value::Null, "{attempt}");
    assert_eq!(notifications_in(&server, "pending"), 1);
    assert_eq!(silent.received().len(), 1);
}

#[test]
fn trickled_body_frees_sender() {
    // One sender thread: the healthy receiver only gets its notification if
    // the trickling one lets the thread go at the deadline.
    let server = TestServer::start_with(|config| {
        hostile_config(config, NO_RETRY);
        config.delivery.senders = 1;
        config.delivery.max_senders = 1;
    });
    let trickle = RawReceiver::start(Behaviour::Trickle);
    let healthy = Receiver::start();
    let admin = server.admin();
    let slow_hook = admin.subscribe(&trickle.url("/trickle"), "new_task");
    let healthy_hook = admin.subscribe(&healthy.url("/healthy"), "new_project");

    admin.create("tasks", json!({"name": "a"}));
    trickle.wait_for(1);
    admin.create("projects", json!({"name": "b"}));
    healthy.wait_for("/healthy", 1);

    let slow = wait_attempts(&server, &slow_hook, 1)[0].clone();
    // The 200 arrived before the body stalled, and hookd lets the status decide.
    assert_eq!(slow["outcome"], "delivered", "{slow}");
    assert_eq!(slow["status"], 200, "{slow}");
    assert!(duration_ms(&slow) >= TIMEOUT.as_millis() as u64, "{slow}");
    let fast = wait_attempts(&server, &healthy_hook, 1)[0].clone();
    assert_eq!(fast["outcome"], "delivered", "{fast}");
}

#[test]
fn cut_off_body_marked_truncated() {
    let server = TestServer::start_with(|config| hostile_config(config, NO_RETRY));
    let trickle = RawReceiver::start(Behaviour::Trickle);
    let admin = server.admin();
    let hook = admin.subscribe(&trickle.url("/trickle"), "new_task");
    admin.create("tasks", json!({"name": "a"}));

    let attempt = wait_attempts(&server, &hook, 1)[0].clone();
    // The receiver announced 60 body bytes, and far fewer arrived before the
    // deadline.
    let stored_length = attempt["response"].as_str().unwrap_or_default().len();
    assert!(stored_length < 60, "{attempt}");
    assert_eq!(attempt["response_truncated"], true, "{attempt}");
}

#[test]
fn late_answer_is_retried_identically() {
    let server = TestServer::start_with(|config| hostile_config(config, TINY_WAIT));
    let late = RawReceiver::start(200);
    late.script([Behaviour::AnswerLate {
        delay: TIMEOUT * 4,
        status: 200,
    }]);
    let admin = server.admin();
    let hook = admin.subscribe(&late.url("/late"), "new_task");
    admin.create("tasks", json!({"name": "a"}));

    let received = late.wait_for(2);
    let recorded = wait_attempts(&server, &hook, 2);
    assert_eq!(recorded[0]["outcome"], "timeout", "{}", recorded[0]);
    assert_eq!(recorded[1]["outcome"], "delivered", "{}", recorded[1]);
    assert_eq!(received[1].body, received[0].body);
    let notification = received[0].header("x-hookd-notification");
    assert!(!notification.is_empty(), "no X-Hookd-Notification");
    assert_eq!(received[1].header("x-hookd-notification"), notification);
    assert_eq!(received[0].header("x-hookd-attempt"), "1");
    assert_eq!(received[1].header("x-hookd-attempt"), "2");
}

/// Subscribes to a receiver that floods `status` with a huge body, waits
/// until hookd has closed the connection, and returns the recorded attempt.
fn flood_attempt(status: u16, chunked: bool) -> Value {
    let server = TestServer::start_with(|config| hostile_config(config, NO_RETRY));
    let flood = RawReceiver::start(Behaviour::Flood { status, chunked });
    let admin = server.admin();
    let hook = admin.subscribe(&flood.url("/flood"), "new_client");
    admin.create("clients", json!({"name": "a"}));

    let attempt = wait_attempts(&server, &hook, 1)[0].clone();
    wait_until("hookd closes the flooded connection", || {
        !flood.finished().is_empty()
    });
    let finished = flood.finished()[0].clone();
    assert!(finished.peer_closed, "{finished:?}");
    assert!(finished.bytes_written < FLOOD_BYTES, "{finished:?}");
    let stored = server.query_i64(
        "SELECT max(length(CAST(response_prefix AS BLOB))) FROM attempts",
        &[],
    );
    assert!(stored <= MAX_RESPONSE as i64, "{stored} bytes stored");
    let truncated = server.query_i64("SELECT min(response_truncated) FROM attempts", &[]);
    assert_eq!(truncated, 1);
    attempt
}

#[test]
fn huge_body_is_capped() {
    let attempt = flood_attempt(200, false);
    assert_eq!(attempt["outcome"], "delivered", "{attempt}");
    assert_eq!(attempt["status"], 200, "{attempt}");
}

#[test]
fn endless_chunked_body_is_capped() {
    let attempt = flood_attempt(200, true);
    assert_eq!(attempt["outcome"], "delivered", "{attempt}");
    assert_eq!(attempt["status"], 200, "{attempt}");
}

#[test]
fn huge_error_body_is_capped() {
    let attempt = flood_attempt(500, false);
    assert_eq!(attempt["outcome"], "http_status", "{attempt}");
    assert_eq!(attempt["status"], 500, "{attempt}");
}

#[test]
fn endless_chunked_error_is_capped() {
    let attempt = flood_attempt(500, true);
    assert_eq!(attempt["outcome"], "http_status", "{attempt}");
    assert_eq!(attempt["status"], 500, "{attempt}");
}

/// Checks that a `status` redirect to the metadata address (from one
/// receiver) or to the receiver itself (from another) is never followed, and
/// that every attempt is recorded as a redirect.
fn assert_redirect_not_followed(status: u16) {
    let server = TestServer::start_with(|config| hostile_config(config, TINY_WAIT));
    let admin = server.admin();
    let metadata = Receiver::start();
    metadata.set_default(Answer {
        status,
        headers: vec![(
            "Location".into(),
            "http://169.254.169.254/latest/meta-data".into(),
        )],
    });
    let itself = Receiver::start();
    itself.set_default(Answer {
        status,
        headers: vec![("Location".into(), itself.url("/elsewhere"))],
    });
    let targets = [(&metadata, "169.254.169.254"), (&itself, "127.0.0.1")];
    let hooks: Vec<String> = targets
        .iter()
        .map(|(receiver, _)| admin.subscribe(&receiver.url("/moved"), "new_task"))
        .collect();
    admin.create("tasks", json!({"name": "a"}));

    for ((receiver, location_host), hook) in targets.iter().zip(&hooks) {
        wait_until("the subscription is removed", || {
            admin.get(&format!("/v2/hooks/{hook}")).body["active"] == false
        });
        let recorded = attempts(&server, hook);
        assert_eq!(recorded.len(), 3, "{recorded:?}");
        for attempt in &recorded {
            assert_eq!(attempt["outcome"], "redirect", "{attempt}");
            assert_eq!(attempt["status"], status, "{attempt}");
            let error = attempt["error"].as_str().unwrap_or_default();
            assert!(error.contains(location_host), "{attempt}");
        }
        assert_eq!(receiver.received_on("/moved").len(), recorded.len());
        assert!(receiver.received_on("/elsewhere").is_empty(), "followed");
    }
}

#[test]
fn redirect_301_not_followed() {
    assert_redirect_not_followed(301);
}

#[test]
fn redirect_307_not_followed() {
    assert_redirect_not_followed(307);
}

#[test]
fn redirect_308_not_followed() {
    assert_redirect_not_followed(308);
}

/// Scripts `first` for attempt 1 and 200 after it, and returns the time
/// between the two requests and the first recorded attempt.
fn retry_gap(first: Behaviour, adjust: impl FnOnce(&mut Config)) -> (Duration, Value) {
    let server = TestServer::start_with(|config| {
        hostile_config(config, TINY_WAIT);
        adjust(config);
    });
    let receiver = RawReceiver::start(200);
    receiver.script([first]);
    let admin = server.admin();
    let hook = admin.subscribe(&receiver.url("/later"), "new_task");
    admin.create("tasks", json!({"name": "a"}));

    let received = receiver.wait_for(2);
    let recorded = wait_attempts(&server, &hook, 2);
    assert_eq!(recorded[1]["outcome"], "delivered", "{}", recorded[1]);
    (received[1].at - received[0].at, recorded[0].clone())
}

fn retry_after(status: u16, value: &str) -> Behaviour {
    Behaviour::Answer {
        status,
        headers: vec![("Retry-After".into(), value.into())],
    }
}

fn retry_after_date(status: u16) -> Behaviour {
    Behaviour::RetryAfterDate {
        status,
        ahead: Duration::from_secs(2),
    }
}

#[test]
fn retry_after_seconds_delays_429() {
    let (gap, first) = retry_gap(retry_after(429, "2"), |_| {});
    assert_eq!(first["status"], 429, "{first}");
    assert!(
        gap >= Duration::from_secs(2) - SLACK,
        "retried after {gap:?}"
    );
}

#[test]
fn retry_after_seconds_delays_503() {
    let (gap, first) = retry_gap(retry_after(503, "2"), |_| {});
    assert_eq!(first["status"], 503, "{first}");
    assert!(
        gap >= Duration::from_secs(2) - SLACK,
        "retried after {gap:?}"
    );
}

#[test]
fn retry_after_date_delays_429() {
    let (gap, first) = retry_gap(retry_after_date(429), |_| {});
    assert_eq!(first["status"], 429, "{first}");
    assert!(
        gap >= Duration::from_secs(2) - SLACK,
        "retried after {gap:?}"
    );
}

#[test]
fn retry_after_date_delays_503() {
    let (gap, first) = retry_gap(retry_after_date(503), |_| {});
    assert_eq!(first["status"], 503, "{first}");
    assert!(
        gap >= Duration::from_secs(2) - SLACK,
        "retried after {gap:?}"
    );
}

#[test]
fn retry_after_capped_by_max() {
    let (gap, first) = retry_gap(retry_after(503, "3600"), |config| {
        config.delivery.max_retry_after = Duration::from_secs(1);
    });
    assert_eq!(first["outcome"], "http_status", "{first}");
    assert!(
        gap >= Duration::from_secs(1) - SLACK,
        "retried after {gap:?}"
    );
}

#[test]
fn unusable_retry_after_is_ignored() {
    // With the cap at an hour, a retry within the test's deadline shows
    // that "soon" was not read as a long wait.
    let (gap, first) = retry_gap(retry_after(503, "soon"), |config| {
        config.delivery.max_retry_after = Duration::from_secs(3600);
    });
    assert_eq!(first["outcome"], "http_status", "{first}");
    assert!(gap < Duration::from_secs(10), "retried after {gap:?}");
}

/// Returns the server and the attempt recorded for a receiver that behaves
/// like `behaviour`.
fn broken_attempt(behaviour: Behaviour) -> (TestServer, Value) {
    let server = TestServer::start_with(|config| hostile_config(config, NO_RETRY));
    let receiver = RawReceiver::start(behaviour);
    let admin = server.admin();
    let hook = admin.subscribe(&receiver.url("/broken"), "new_task");
    admin.create("tasks", json!({"name": "a"}));
    let attempt = wait_attempts(&server, &hook, 1)[0].clone();
    assert_eq!(receiver.received().len(), 1);
    (server, attempt)
}

#[test]
fn hangup_is_an_io_failure() {
    let (server, attempt) = broken_attempt(Behaviour::Hangup);
    assert_eq!(attempt["outcome"], "io", "{attempt}");
    assert_eq!(attempt["status"], Value::Null, "{attempt}");
    assert_eq!(notifications_in(&server, "pending"), 1);
}

#[test]
fn partial_status_is_an_io_failure() {
    let (server, attempt) = broken_attempt(Behaviour::Partial("HTTP/1.1 2"));
    assert_eq!(attempt["outcome"], "io", "{attempt}");
    assert_eq!(attempt["status"], Value::Null, "{attempt}");
    assert_eq!(notifications_in(&server, "pending"), 1);
}

#[test]
fn secret_query_stays_out_of_errors() {
    const QUERY: &str = "?token=s3cr3t";
    let server = TestServer::start_with(|config| hostile_config(config, NO_RETRY));
    let admin = server.admin();
    let failing = RawReceiver::start(500);
    let hangup = RawReceiver::start(Behaviour::Hangup);
    let partial = RawReceiver::start(Behaviour::Partial("HTTP/1.1 2"));
    let silent = RawReceiver::start(Behaviour::Silent);
    let redirect = Receiver::start();
    redirect.set_default(Answer {
        status: 307,
        headers: vec![("Location".into(), format!("/next{QUERY}"))],
    });
    // A port that was just free, so (very likely) nothing listens on it.
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let targets = [
        failing.url(&format!("/status{QUERY}")),
        hangup.url(&format!("/hangup{QUERY}")),
        partial.url(&format!("/partial{QUERY}")),
        silent.url(&format!("/silent{QUERY}")),
        redirect.url(&format!("/redirect{QUERY}")),
        format!("http://127.0.0.1:{closed_port}/closed{QUERY}"),
    ];
    for target in &targets {
        admin.subscribe(target, "new_task");
    }
    admin.create("tasks", json!({"name": "a"}));

    let expected = targets.len() as i64;
    wait_until("every target has failed once", || {
        server.query_i64("SELECT count(*) FROM attempts", &[]) == expected
    });
    let with_error = server.query_i64("SELECT count(*) FROM attempts WHERE length(error) > 0", &[]);
    assert_eq!(with_error, expected);
    let leaked = server.query_i64(
        "SELECT count(*) FROM attempts WHERE instr(error, 's3cr3t') > 0",
        &[],
    );
    assert_eq!(leaked, 0);
}

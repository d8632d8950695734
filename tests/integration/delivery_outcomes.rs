//! How receivers' answers are read: delivered, removed, retried.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{Answer, Receiver, TestServer, wait_until};

fn hook_state(server: &TestServer, hook: &str) -> (bool, Option<String>) {
    let shown = server.admin().get(&format!("/v2/hooks/{hook}"));
    (
        shown.body["active"].as_bool().unwrap(),
        shown.body["removed_reason"].as_str().map(str::to_owned),
    )
}

fn attempts(server: &TestServer) -> i64 {
    server.query_i64("SELECT count(*) FROM attempts", &[])
}

#[test]
fn receiver_401_removes_after_one_attempt() {
    let server = TestServer::start();
    let receiver = Receiver::start();
    receiver.set_default(401);
    let admin = server.admin();
    let hook = admin.subscribe(&receiver.url("/gone"), "new_task");

    admin.create("tasks", json!({"name": "a"}));
    admin.create("tasks", json!({"name": "b"}));
    wait_until("the subscription is removed", || {
        !hook_state(&server, &hook).0
    });

    assert_eq!(
        hook_state(&server, &hook).1.as_deref(),
        Some("receiver_gone")
    );
    let sent = receiver.received_on("/gone").len();
    assert!((1..=2).contains(&sent), "{sent} attempts");
    // The second task may be created after the removal, so it may have no
    // notification; none may be left waiting.
    let open = server.query_i64(
        "SELECT count(*) FROM notifications WHERE state IN ('pending', 'in_flight', 'delivered')",
        &[],
    );
    assert_eq!(open, 0);
    let before = server.query_i64("SELECT count(*) FROM notifications", &[]);
    assert!(before >= 1);

    // A new event after removal creates nothing.
    admin.create("tasks", json!({"name": "c"}));
    let after = server.query_i64("SELECT count(*) FROM notifications", &[]);
    assert_eq!(after, before);
}

#[test]
fn receiver_410_removes_subscription() {
    let server = TestServer::start();
    let receiver = Receiver::start();
    receiver.set_default(410);
    let admin = server.admin();
    let hook = admin.subscribe(&receiver.url("/gone"), "new_client");
    admin.create("clients", json!({"name": "a"}));
    wait_until("the subscription is removed", || {
        !hook_state(&server, &hook).0
    });
    assert_eq!(
        hook_state(&server, &hook).1.as_deref(),
        Some("receiver_gone")
    );
    assert_eq!(receiver.received_on("/gone").len(), 1);
}

#[test]
fn three_failures_remove_with_waits_between() {
    let server = TestServer::start_with(|config| {
        config.delivery.retry_waits = vec![Duration::from_millis(400), Duration::from_millis(800)];
    });
    let receiver = Receiver::start();
    receiver.set_default(500);
    let admin = server.admin();
    let hook = admin.subscribe(&receiver.url("/broken"), "new_task");

    admin.create("tasks", json!({"name": "a"}));
    wait_until("the subscription is removed", || {
        !hook_state(&server, &hook).0
    });

    assert_eq!(
        hook_state(&server, &hook).1.as_deref(),
        Some("attempts_exhausted")
    );
    let received = receiver.received_on("/broken");
    assert_eq!(received.len(), 3);
    let attempt_numbers: Vec<&str> = received
        .iter()
        .map(|request| request.header("x-hookd-attempt"))
        .collect();
    assert_eq!(attempt_numbers, ["1", "2", "3"]);
    let notification = received[0].header("x-hookd-notification");
    assert!(
        received
            .iter()
            .all(|request| request.header("x-hookd-notification") == notification)
    );
    assert!(
        received
            .iter()
            .all(|request| request.body == received[0].body)
    );
    assert!(
        received[1].at - received[0].at >= Duration::from_millis(400),
        "first wait"
    );
    assert!(
        received[2].at - received[1].at >= Duration::from_millis(800),
        "second wait"
    );
    assert_eq!(attempts(&server), 3);
}

#[test]
fn failures_of_different_notifications_do_not_add_up() {
    let server = TestServer::start_with(|config| {
        config.delivery.retry_waits = vec![Duration::from_secs(60)];
    });
    let receiver = Receiver::start();
    receiver.set_default(500);
    let admin = server.admin();
    let hook = admin.subscribe(&receiver.url("/flaky"), "new_task");
    for name in ["a", "b", "c", "d"] {
        admin.create("tasks", json!({ "name": name }));
    }
    receiver.wait_for("/flaky", 4);
    wait_until("four attempts are recorded", || attempts(&server) == 4);
    assert!(
        hook_state(&server, &hook).0,
        "four first attempts must not remove the subscription"
    );
}

#[test]
fn failure_then_success_delivers_on_attempt_two() {
    let server = TestServer::start();
    let receiver = Receiver::start();
    receiver.script([500]);
    let admin = server.admin();
    let hook = admin.subscribe(&receiver.url("/retry"), "new_project");
    admin.create("projects", json!({"name": "a"}));

    let received = receiver.wait_for("/retry", 2);
    assert_eq!(received[1].header("x-hookd-attempt"), "2");
    wait_until("the notification is delivered", || {
        server.query_i64(
            "SELECT count(*) FROM notifications WHERE state = 'delivered'",
            &[],
        ) == 1
    });
    assert!(hook_state(&server, &hook).0);
    assert_eq!(receiver.received_on("/retry").len(), 2);
}

#[test]
fn status_204_is_delivered() {
    let server = TestServer::start();
    let receiver = Receiver::start();
    receiver.set_default(204);
    let admin = server.admin();
    admin.subscribe(&receiver.url("/empty"), "new_client");
    admin.create("clients", json!({"name": "a"}));
    wait_until("the notification is delivered", || {
        server.query_i64(
            "SELECT count(*) FROM notifications WHERE state = 'delivered'",
            &[],
        ) == 1
    });
    assert_eq!(receiver.received_on("/empty").len(), 1);
}

#[test]
fn redirect_is_a_failure_not_followed() {
    let server = TestServer::start_with(|config| {
        config.delivery.retry_waits = vec![Duration::from_secs(60)];
    });
    let receiver = Receiver::start();
    receiver.set_default(Answer {
        status: 302,
        headers: vec![("Location".into(), receiver.url("/elsewhere"))],
    });
    let admin = server.admin();
    let hook = admin.subscribe(&receiver.url("/moved"), "new_task");
    admin.create("tasks", json!({"name": "a"}));

    wait_until("the attempt is recorded", || attempts(&server) == 1);
    let shown = admin.get(&format!("/v2/hooks/{hook}"));
    let attempt = &shown.body["recent_attempts"][0];
    assert_eq!(attempt["outcome"], "redirect");
    assert_eq!(attempt["status"], 302);
    assert!(
        attempt["error"].as_str().unwrap().contains("127.0.0.1"),
        "{attempt}"
    );
    assert!(
        receiver.received_on("/elsewhere").is_empty(),
        "redirect followed"
    );
    assert_eq!(
        server.query_i64(
            "SELECT count(*) FROM notifications WHERE state = 'pending'",
            &[]
        ),
        1
    );
}

#[test]
fn refused_connection_is_retried() {
    let server = TestServer::start_with(|config| {
        config.delivery.retry_waits = vec![Duration::from_secs(60)];
    });
    // Bind then drop a listener so the port is (very likely) closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let admin = server.admin();
    let hook = admin.subscribe(&format!("http://127.0.0.1:{port}/closed"), "new_task");
    admin.create("tasks", json!({"name": "a"}));
    wait_until("the attempt is recorded", || attempts(&server) == 1);
    let shown = admin.get(&format!("/v2/hooks/{hook}"));
    assert_eq!(shown.body["recent_attempts"][0]["outcome"], "connect");
    assert!(shown.body["active"].as_bool().unwrap());
}

#[test]
fn destination_checked_again_at_delivery() {
    // Subscribed while loopback was allowed, delivered after a restart
    // without the allow-list: the resolved address is refused before any
    // connection is made.
    let server = TestServer::start_with(|config| {
        config.delivery.retry_waits = vec![Duration::from_secs(60)];
    });
    let receiver = Receiver::start();
    let hook = server
        .admin()
        .subscribe(&receiver.url("/guarded"), "new_task");
    let (mut config, data_dir) = server.stop();
    config.delivery.allowed_networks.clear();
    let server = TestServer::resume(config, data_dir);

    server.admin().create("tasks", json!({"name": "a"}));
    wait_until("the attempt is recorded", || attempts(&server) == 1);
    let shown = server.admin().get(&format!("/v2/hooks/{hook}"));
    assert_eq!(
        shown.body["recent_attempts"][0]["outcome"], "destination_not_allowed",
        "{}",
        shown.body
    );
    assert!(
        receiver.received().is_empty(),
        "a refused address was contacted"
    );
}

#[test]
fn dead_host_does_not_hold_every_sender() {
    // Attempts to the dead host hang far longer than this test waits, so
    // the healthy receiver is served only if the per-host cap leaves
    // senders free.
    let server = TestServer::start_with(|config| {
        config.delivery.senders = 4;
        config.delivery.max_senders = 4;
        config.delivery.max_in_flight_per_host = 2;
        config.delivery.timeout = Duration::from_secs(120);
        config.shutdown_grace = Duration::from_millis(100);
    });
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    std::thread::spawn(move || {
        // Accept and hold connections without answering, for a bounded time.
        let mut held = Vec::new();
        dead.set_nonblocking(true).unwrap();
        let until = std::time::Instant::now() + Duration::from_secs(150);
        while std::time::Instant::now() < until {
            match dead.accept() {
                Ok((stream, _)) => held.push(stream),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    });
    let healthy = Receiver::start();
    let admin = server.admin();
    for index in 0..6 {
        admin.subscribe(
            &format!("http://127.0.0.1:{dead_port}/dead/{index}"),
            "new_task",
        );
    }
    admin.subscribe(&healthy.url("/healthy"), "new_client");

    admin.create("tasks", json!({"name": "to the dead host"}));
    for index in 0..20 {
        admin.create("clients", json!({ "name": format!("client {index}") }));
    }

    healthy.wait_for("/healthy", 20);
    wait_until("the healthy attempts are recorded", || {
        attempts(&server) >= 20
    });
    assert_eq!(
        attempts(&server) - 20,
        0,
        "no attempt to the dead host has ended"
    );
    let in_flight = server.query_i64(
        "SELECT count(*) FROM notifications WHERE event = 'new_task' AND state = 'in_flight'",
        &[],
    );
    assert_eq!(
        in_flight, 6,
        "all six are claimed; at most two are being sent"
    );
}

#[test]
fn plain_http_answer_to_tls_is_tls_failure() {
    let server = TestServer::start_with(|config| {
        config.delivery.retry_waits = vec![Duration::from_secs(60)];
    });
    // A server that answers every connection with plain HTTP, which a TLS
    // client cannot read as a handshake.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        use std::io::Write;
        if let Some(Ok(mut stream)) = listener.incoming().next() {
            let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
        }
    });
    let admin = server.admin();
    let hook = admin.subscribe(&format!("https://127.0.0.1:{port}/secure"), "new_task");
    admin.create("tasks", json!({"name": "a"}));
    wait_until("the attempt is recorded", || attempts(&server) == 1);
    let shown = admin.get(&format!("/v2/hooks/{hook}"));
    let attempt = &shown.body["recent_attempts"][0];
    assert_eq!(attempt["outcome"], "tls", "{attempt}");
    assert!(attempt["status"].is_null());
}

fn sender_threads(server: &TestServer) -> i64 {
    let metrics = crate::helpers::Client::anonymous(&server.base_url).get("/metrics");
    let text = metrics.body.as_str().unwrap().to_owned();
    text.lines()
        .find_map(|line| line.strip_prefix("hookd_sender_threads "))
        .and_then(|value| value.trim().parse().ok())
        .expect("hookd_sender_threads in /metrics")
}

#[test]
fn sender_pool_grows_and_shrinks() {
    let server = TestServer::start_with(|config| {
        config.delivery.senders = 1;
        config.delivery.max_senders = 8;
        config.delivery.sender_idle_timeout = Duration::from_millis(300);
        config.delivery.timeout = Duration::from_secs(20);
    });
    // Each answer takes 10 s, so eight requests arriving before any answer
    // means eight senders were busy at once.
    let receiver = Receiver::start();
    receiver.set_delay(Duration::from_secs(10));
    let admin = server.admin();
    for index in 0..8 {
        admin.subscribe(&receiver.url(&format!("/slow/{index}")), "new_project");
    }
    assert_eq!(sender_threads(&server), 1);
    admin.create("projects", json!({"name": "slow"}));

    wait_until("eight attempts run at once", || {
        receiver.received().len() == 8
    });
    assert_eq!(attempts(&server), 0, "no attempt has ended yet");
    assert_eq!(sender_threads(&server), 8);

    wait_until("the attempts end", || attempts(&server) == 8);
    wait_until("idle senders exit", || sender_threads(&server) == 1);
}

//! Target URL rules through the API: refused destinations, normalisation
//! for the one-subscription-per-URL rule, and the check at delivery time.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{Receiver, TestServer, wait_until};

/// Every value is refused before anything connects: subscribing never
/// opens a connection, and none of these is an allowed network.
const REFUSED_TARGETS: [&str; 22] = [
    "http://localhost/",
    "http://127.1/",
    "http://0.0.0.0/",
    "http://2130706433/",
    "http://0x7f.0.0.1/",
    "http://017700000001/",
    "http://[::1]/",
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:7f00:1]/",
    "http://[fe80::1]/",
    "http://[fd00::1]/",
    "http://169.254.169.254/",
    "http://[fd00:ec2::254]/",
    "http://10.1.2.3/",
    "http://172.16.0.1/",
    "http://192.168.1.1/",
    "http://100.64.0.1/",
    "http://255.255.255.255/",
    "http://224.0.0.1/",
    "ftp://example.com/",
    "gopher://example.com/",
    "file:///etc/passwd",
];

fn subscribe_status(server: &TestServer, target: &str) -> (u16, String) {
    let reply = server.admin().post(
        "/v2/hooks",
        &json!({"target_url": target, "event": "new_task"}).to_string(),
    );
    (
        reply.status,
        reply.body["error"].as_str().unwrap_or_default().to_owned(),
    )
}

#[test]
fn refused_targets_are_400_and_not_stored() {
    let server = TestServer::start_with(|config| config.delivery.allowed_networks.clear());
    for target in REFUSED_TARGETS {
        let (status, error) = subscribe_status(&server, target);
        assert_eq!(status, 400, "{target} was accepted");
        assert!(!error.is_empty(), "{target}: no error sentence");
    }
    assert_eq!(
        server.query_i64("SELECT count(*) FROM subscriptions", &[]),
        0
    );
}

#[test]
fn allow_list_opens_loopback_not_metadata() {
    let server = TestServer::start_with(|config| {
        config.delivery.allowed_networks = vec!["0.0.0.0/0".into(), "::/0".into()];
    });
    assert_eq!(subscribe_status(&server, "http://127.0.0.1:9/").0, 201);
    assert_eq!(subscribe_status(&server, "http://[::1]:9/").0, 201);
    for metadata in [
        "http://169.254.169.254/",
        "http://[fd00:ec2::254]/",
        "http://[::ffff:169.254.169.254]/",
    ] {
        let (status, error) = subscribe_status(&server, metadata);
        assert_eq!(status, 400, "{metadata} was accepted");
        assert!(error.contains("cloud-metadata"), "{error}");
    }
}

#[test]
fn localhost_name_refused_at_delivery() {
    // Subscribed while loopback was allowed; after a restart without the
    // allow-list, every address "localhost" resolves to is refused before
    // connecting.
    let server = TestServer::start_with(|config| {
        config.delivery.allowed_networks = vec!["127.0.0.0/8".into(), "::1/128".into()];
        config.delivery.retry_waits = vec![Duration::from_secs(60)];
    });
    let receiver = Receiver::start();
    let port = receiver.address.port();
    let hook = server
        .admin()
        .subscribe(&format!("http://localhost:{port}/by-name"), "new_task");
    let (mut config, data_dir) = server.stop();
    config.delivery.allowed_networks.clear();
    let server = TestServer::resume(config, data_dir);

    server.admin().create("tasks", json!({"name": "a"}));
    wait_until("the attempt is recorded", || {
        server.query_i64("SELECT count(*) FROM attempts", &[]) == 1
    });
    let shown = server.admin().get(&format!("/v2/hooks/{hook}"));
    let attempt = &shown.body["recent_attempts"][0];
    assert_eq!(attempt["outcome"], "destination_not_allowed", "{attempt}");
    assert!(
        attempt["error"]
            .as_str()
            .unwrap()
            .contains("destination not allowed"),
        "{attempt}"
    );
    assert!(
        receiver.received().is_empty(),
        "a refused address was contacted"
    );
}

#[test]
fn target_comparison_normalises() {
    let server = TestServer::start();
    let conflicts = [
        (
            "http://bücher.example/hook",
            "http://xn--bcher-kva.example/hook",
        ),
        ("http://[2606:4700:0:0::1]/", "http://[2606:4700::1]:80/"),
        ("https://Example.COM:443/a?x=1", "https://example.com/a?x=1"),
        ("http://example.org", "http://EXAMPLE.org:80/"),
    ];
    for (first, second) in conflicts {
        assert_eq!(subscribe_status(&server, first).0, 201, "{first}");
        let (status, error) = subscribe_status(&server, second);
        assert_eq!(status, 409, "{second} after {first}: {error}");
    }
    let distinct = [
        "https://example.com/a?x=2",
        "https://example.com/a",
        "https://example.com/a/",
        "http://example.com/a?x=1",
    ];
    for target in distinct {
        assert_eq!(subscribe_status(&server, target).0, 201, "{target}");
    }
    // The URL is stored exactly as sent.
    let stored: Vec<String> = server.admin().get("/v2/hooks").body["hooks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|hook| hook["target_url"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        stored.contains(&"http://bücher.example/hook".to_owned()),
        "{stored:?}"
    );
    assert!(
        stored.contains(&"https://Example.COM:443/a?x=1".to_owned()),
        "{stored:?}"
    );
}

#[test]
fn long_or_control_character_targets_are_400() {
    let server = TestServer::start_with(|config| config.max_target_url_length = 100);
    let long = format!("https://example.com/{}", "a".repeat(200));
    let (status, error) = subscribe_status(&server, &long);
    assert_eq!(status, 400);
    assert!(error.contains("limit of 100"), "{error}");
    for target in [
        "https://example.com/a\r\nX-Injected: 1",
        "https://example.com/\u{0}",
        "https://example.com/\ttab",
        " https://example.com/",
    ] {
        assert_eq!(subscribe_status(&server, target).0, 400, "{target:?}");
    }
    let reply = server.admin().post(
        "/v2/hooks",
        &json!({"target_url": "https://example.com/x", "event": "new_task\n"}).to_string(),
    );
    assert_eq!(reply.status, 400);
    assert_eq!(
        server.query_i64("SELECT count(*) FROM subscriptions", &[]),
        0
    );
}

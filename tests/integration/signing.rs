//! Signed notifications, secret rotation, delivery history and redelivery.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::{Received, Receiver, TestServer, wait_until};

/// Verifies a captured notification with the `standardwebhooks` package
/// from PyPI, an implementation independent of hookd's. Returns what the
/// script printed.
fn verify_with_python(secret: &str, request: &Received) -> String {
    let script = r#"
import json, sys
from standardwebhooks.webhooks import Webhook
secret, body, headers = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
try:
    Webhook(secret).verify(body, headers)
    print("verified")
except Exception as error:
    print("rejected:", error)
"#;
    let headers = json!({
        "webhook-id": request.header("webhook-id"),
        "webhook-timestamp": request.header("webhook-timestamp"),
        "webhook-signature": request.header("webhook-signature"),
    });
    let output = Command::new("python3")
        .args(["-c", script, secret, &request.body, &headers.to_string()])
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "python3 failed (is standardwebhooks installed? `pip install standardwebhooks`): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

fn subscribe_with_secret(server: &TestServer, target: &str, event: &str) -> (String, String) {
    let reply = server.admin().post(
        "/v2/hooks",
        &json!({"target_url": target, "event": event}).to_string(),
    );
    assert_eq!(reply.status, 201);
    let secret = reply.body["secret"]
        .as_str()
        .expect("secret in the 201 body")
        .to_owned();
    (reply.body["id"].as_str().unwrap().to_owned(), secret)
}

#[test]
fn notifications_verify_with_standard_webhooks() {
    let server = TestServer::start();
    let receiver = Receiver::start();
    let (hook, secret) = subscribe_with_secret(&server, &receiver.url("/signed"), "new_project");
    assert!(secret.starts_with("whsec_"));
    assert!(
        server
            .admin()
            .get(&format!("/v2/hooks/{hook}"))
            .body
            .get("secret")
            .is_none(),
        "the secret is shown only once"
    );

    server.admin().create("projects", json!({"name": "signed"}));
    let received = receiver.wait_for("/signed", 1);
    let request = &received[0];
    assert_eq!(
        request.header("webhook-id"),
        request.header("x-hookd-notification")
    );
    assert_eq!(request.header("webhook-signature").split(' ').count(), 1);
    assert_eq!(verify_with_python(&secret, request), "verified");
    let other_secret = hookd::delivery::signing::new_secret();
    assert!(verify_with_python(&other_secret, request).starts_with("rejected"));
}

#[test]
fn rotation_signs_with_both_during_overlap() {
    let server = TestServer::start_with(|config| {
        config.delivery.secret_rotation_overlap = Duration::from_secs(1);
    });
    let receiver = Receiver::start();
    let (hook, old_secret) = subscribe_with_secret(&server, &receiver.url("/rotated"), "new_task");

    let rotated = server
        .admin()
        .post(&format!("/v2/hooks/{hook}/secret/rotate"), "");
    assert_eq!(rotated.status, 200);
    let new_secret = rotated.body["secret"].as_str().unwrap().to_owned();
    assert_ne!(new_secret, old_secret);
    let rotated_at = Instant::now();

    server.admin().create("tasks", json!({"name": "during"}));
    let during = receiver.wait_for("/rotated", 1);
    let signatures: Vec<&str> = during[0].header("webhook-signature").split(' ').collect();
    assert_eq!(signatures.len(), 2, "{signatures:?}");
    assert_eq!(verify_with_python(&new_secret, &during[0]), "verified");
    assert_eq!(verify_with_python(&old_secret, &during[0]), "verified");

    wait_until("the overlap ends", || {
        rotated_at.elapsed() > Duration::from_millis(1500)
    });
    server.admin().create("tasks", json!({"name": "after"}));
    let after = receiver.wait_for("/rotated", 2);
    assert_eq!(after[1].header("webhook-signature").split(' ').count(), 1);
    assert_eq!(verify_with_python(&new_secret, &after[1]), "verified");
    assert!(verify_with_python(&old_secret, &after[1]).starts_with("rejected"));

    let unknown = server.admin().post("/v2/hooks/unknown/secret/rotate", "");
    assert_eq!(unknown.status, 404);
}

#[test]
fn delivery_history_pages_newest_first() {
    let server = TestServer::start();
    let receiver = Receiver::start();
    let admin = server.admin();
    let hook = admin.subscribe(&receiver.url("/history"), "new_client");
    let mut created = Vec::new();
    for index in 0..5 {
        created.push(admin.create("clients", json!({ "name": format!("client {index}") })));
    }
    receiver.wait_for("/history", 5);
    wait_until("all five are delivered", || {
        server.query_i64(
            "SELECT count(*) FROM notifications WHERE state = 'delivered'",
            &[],
        ) == 5
    });

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(cursor) => format!("/v2/hooks/{hook}/deliveries?limit=2&cursor={cursor}"),
            None => format!("/v2/hooks/{hook}/deliveries?limit=2"),
        };
        let page = admin.get(&path);
        assert_eq!(page.status, 200, "{:?}", page.body);
        pages += 1;
        for notification in page.body["data"].as_array().unwrap() {
            assert_eq!(notification["state"], "delivered");
            assert_eq!(notification["attempts"][0]["outcome"], "delivered");
            seen.push(
                notification["resource_url"]
                    .as_str()
                    .unwrap()
                    .rsplit('/')
                    .next()
                    .unwrap()
                    .to_owned(),
            );
        }
        match page.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    created.reverse();
    assert_eq!(seen, created, "newest first, each once");

    assert_eq!(
        admin
            .get(&format!("/v2/hooks/{hook}/deliveries?limit=0"))
            .status,
        400
    );
    assert_eq!(
        admin
            .get(&format!("/v2/hooks/{hook}/deliveries?cursor=garbage"))
            .status,
        400
    );

    // A removed subscription's history stays readable.
    assert_eq!(admin.delete(&format!("/v2/hooks/{hook}")).status, 200);
    let removed = admin.get(&format!("/v2/hooks/{hook}/deliveries"));
    assert_eq!(removed.status, 200);
    assert_eq!(removed.body["data"].as_array().unwrap().len(), 5);
}

#[test]
fn redelivery_sends_a_new_notification() {
    let server = TestServer::start();
    let receiver = Receiver::start();
    let admin = server.admin();
    let hook = admin.subscribe(&receiver.url("/again"), "new_event");
    admin.create(
        "events",
        json!({"title": "Kick-off", "start": "2026-12-04T10:00:00Z"}),
    );
    let first = receiver.wait_for("/again", 1);
    let original = first[0].header("webhook-id").to_owned();

    let redelivered = admin.post(
        &format!("/v2/hooks/{hook}/deliveries/{original}/redeliver"),
        "",
    );
    assert_eq!(redelivered.status, 202, "{:?}", redelivered.body);
    let new_id = redelivered.body["id"].as_str().unwrap().to_owned();
    assert_ne!(new_id, original);

    let both = receiver.wait_for("/again", 2);
    assert_eq!(both[1].header("webhook-id"), new_id);
    assert_eq!(both[1].header("x-hookd-redelivery-of"), original);
    assert_eq!(both[1].body, both[0].body, "same resource_url");

    let outsider = server.client(
        &server.create_user("other.example.com", "eve"),
        "other.example.com",
    );
    let path = format!("/v2/hooks/{hook}/deliveries/{original}/redeliver");
    assert_eq!(
        outsider.post(&path, "").status,
        404,
        "another domain's hook"
    );
    assert_eq!(
        admin
            .post(
                &format!("/v2/hooks/{hook}/deliveries/unknown/redeliver"),
                ""
            )
            .status,
        404
    );
    assert_eq!(admin.delete(&format!("/v2/hooks/{hook}")).status, 200);
    assert_eq!(admin.post(&path, "").status, 404, "a removed subscription");
}

#[test]
fn cli_lists_and_redelivers_failed() {
    let server = TestServer::start_with(|config| {
        config.delivery.retry_waits = vec![Duration::from_secs(3600)];
    });
    let receiver = Receiver::start();
    receiver.script([500]);
    let admin = server.admin();
    let hook = admin.subscribe(&receiver.url("/operator"), "new_task");
    admin.create("tasks", json!({"name": "a"}));
    wait_until("the failed attempt is recorded", || {
        server.query_i64("SELECT count(*) FROM attempts", &[]) == 1
    });

    let run = |arguments: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_hookd"))
            .args(arguments)
            .env("HOOKD_DATA_DIR", &server.config.data_dir)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let listed = run(&["notifications", "list", "--hook", &hook]);
    assert!(
        listed.contains("pending") && listed.contains("http_status 500"),
        "{listed}"
    );

    // Cancel the waiting retry by hand, as a removal would, to have a
    // failed notification on an active subscription.
    let connection = rusqlite::Connection::open(server.config.data_dir.join("hookd.db")).unwrap();
    connection
        .execute("UPDATE notifications SET state = 'cancelled'", [])
        .unwrap();
    let redelivered = run(&[
        "notifications",
        "redeliver",
        "--hook",
        &hook,
        "--since",
        "1h",
    ]);
    assert_eq!(redelivered.lines().count(), 1, "{redelivered}");
    let received = receiver.wait_for("/operator", 2);
    assert!(!received[1].header("x-hookd-redelivery-of").is_empty());
}

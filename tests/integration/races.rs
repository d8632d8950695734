//! Subscriptions removed while their notifications wait or are in flight,
//! limits, and parallel writes.

use std::sync::{Arc, Barrier};
use std::time::Duration;

use serde_json::json;

use crate::helpers::{Receiver, TestServer, wait_until};

fn count(server: &TestServer, sql: &str) -> i64 {
    server.query_i64(sql, &[])
}

#[test]
fn delete_cancels_pending_retry() {
    let server = TestServer::start_with(|config| {
        config.delivery.retry_waits = vec![Duration::from_secs(1)];
    });
    let receiver = Receiver::start();
    receiver.script([500]);
    let admin = server.admin();
    let hook = admin.subscribe(&receiver.url("/retrying"), "new_task");
    admin.create("tasks", json!({"name": "a"}));
    wait_until("the retry is scheduled", || {
        count(
            &server,
            "SELECT count(*) FROM notifications WHERE state = 'pending' AND attempts = 1",
        ) == 1
    });

    assert_eq!(admin.delete(&format!("/v2/hooks/{hook}")).status, 200);
    assert_eq!(
        count(
            &server,
            "SELECT count(*) FROM notifications WHERE state = 'cancelled'"
        ),
        1
    );

    // A later notification to another receiver passes the retry's due time.
    let other = Receiver::start();
    admin.subscribe(&other.url("/after"), "new_client");
    let first = receiver.received()[0].at;
    wait_until("the cancelled retry's due time passes", || {
        first.elapsed() > Duration::from_millis(1500)
    });
    admin.create("clients", json!({"name": "later"}));
    other.wait_for("/after", 1);
    assert_eq!(
        receiver.received_on("/retrying").len(),
        1,
        "the cancelled retry was sent"
    );
}

#[test]
fn delete_during_attempt_reschedules_nothing() {
    let server = TestServer::start_with(|config| {
        config.delivery.retry_waits = vec![Duration::from_millis(100)];
    });
    let receiver = Receiver::start();
    receiver.set_default(500);
    receiver.set_delay(Duration::from_millis(1500));
    let admin = server.admin();
    let hook = admin.subscribe(&receiver.url("/slow"), "new_task");
    admin.create("tasks", json!({"name": "a"}));
    receiver.wait_for("/slow", 1);

    assert_eq!(
        admin.delete(&format!("/v2/hooks/{hook}")).status,
        200,
        "DELETE during an attempt"
    );
    wait_until("the attempt is recorded", || {
        count(&server, "SELECT count(*) FROM attempts") == 1
    });

    assert_eq!(
        count(
            &server,
            "SELECT count(*) FROM notifications WHERE state = 'cancelled'"
        ),
        1
    );
    assert_eq!(
        count(
            &server,
            "SELECT count(*) FROM notifications WHERE state IN ('pending', 'in_flight')"
        ),
        0
    );
    let shown = admin.get(&format!("/v2/hooks/{hook}"));
    assert_eq!(shown.body["removed_reason"], "deleted");
    assert_eq!(receiver.received_on("/slow").len(), 1);
}

#[test]
fn resubscribe_gets_new_id_without_old_retries() {
    let server = TestServer::start_with(|config| {
        config.delivery.retry_waits = vec![Duration::from_secs(1)];
    });
    let receiver = Receiver::start();
    receiver.script([500]);
    let admin = server.admin();
    let target = receiver.url("/again");
    let old = admin.subscribe(&target, "new_task");
    admin.create("tasks", json!({"name": "a"}));
    wait_until("the retry is scheduled", || {
        count(
            &server,
            "SELECT count(*) FROM notifications WHERE state = 'pending' AND attempts = 1",
        ) == 1
    });
    assert_eq!(admin.delete(&format!("/v2/hooks/{old}")).status, 200);

    let new = admin.subscribe(&target, "new_task");
    assert_ne!(new, old);
    let first = receiver.received()[0].at;
    wait_until("the old retry's due time passes", || {
        first.elapsed() > Duration::from_millis(1500)
    });
    admin.create("tasks", json!({"name": "b"}));

    let received = receiver.wait_for("/again", 2);
    assert_eq!(received.len(), 2);
    assert_eq!(received[1].header("x-hookd-subscription"), new);
    assert_eq!(received[1].header("x-hookd-attempt"), "1");
}

#[test]
fn subscription_limit_is_403() {
    let server = TestServer::start_with(|config| config.max_subscriptions_per_user = 2);
    let receiver = Receiver::start();
    let admin = server.admin();
    admin.subscribe(&receiver.url("/1"), "new_task");
    admin.subscribe(&receiver.url("/2"), "new_task");
    let body = json!({"target_url": receiver.url("/3"), "event": "new_task"}).to_string();
    let reply = admin.post("/v2/hooks", &body);
    assert_eq!(reply.status, 403);
    assert!(reply.body["error"].as_str().unwrap().contains("maximum"));
    assert_eq!(count(&server, "SELECT count(*) FROM subscriptions"), 2);
}

#[test]
fn parallel_creates_all_succeed() {
    let server = TestServer::start();
    let receiver = Receiver::start();
    server
        .admin()
        .subscribe(&receiver.url("/load"), "new_project");
    let threads = 8;
    let per_thread = 25;
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|thread| {
            let client = server.admin();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                (0..per_thread)
                    .map(|index| {
                        let body = json!({ "name": format!("p{thread}-{index}") }).to_string();
                        let reply = client.post("/v2/projects", &body);
                        (reply.status, reply.body.to_string())
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let replies: Vec<(u16, String)> = handles
        .into_iter()
        .flat_map(|handle| handle.join().unwrap())
        .collect();
    let failures: Vec<&(u16, String)> = replies
        .iter()
        .filter(|(status, _)| *status != 201)
        .collect();
    assert!(failures.is_empty(), "{failures:?}");
    receiver.wait_for("/load", threads * per_thread);
}

#[test]
fn duplicate_keys_and_bad_utf8_are_400() {
    let server = TestServer::start();
    let admin = server.admin();
    let reply = admin.post(
        "/v2/hooks",
        r#"{"target_url": "http://127.0.0.1:9/a", "target_url": "http://127.0.0.1:9/b", "event": "new_task"}"#,
    );
    assert_eq!(reply.status, 400);
    assert!(
        reply.body["error"]
            .as_str()
            .unwrap()
            .contains("duplicate key")
    );

    let url = format!("{}/v2/projects", server.base_url);
    let invalid = ureq::post(&url)
        .set("key", &server.admin_key)
        .set("domain", "localhost")
        .send_bytes(b"{\"name\": \"\xff\xfe\"}");
    match invalid {
        Err(ureq::Error::Status(400, response)) => {
            assert!(response.into_string().unwrap().contains("UTF-8"));
        }
        other => panic!("expected 400, got {other:?}"),
    }
}

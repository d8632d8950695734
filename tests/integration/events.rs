//! The subscribe, notify, fetch, unsubscribe flow and the seven events.

use serde_json::json;

use crate::helpers::{Receiver, TestServer};

#[test]
fn walkthrough_subscribe_notify_fetch_unsubscribe() {
    let server = TestServer::start();
    let receiver = Receiver::start();
    let admin = server.admin();

    let hook = admin.subscribe(&receiver.url("/hook"), "new_event");
    assert!(
        hook.len() >= 16,
        "id {hook:?} is too short to be unguessable"
    );

    let event_id = admin.create(
        "events",
        json!({"title": "Kick-off", "start": "2026-12-04T10:00:00Z"}),
    );

    let received = receiver.wait_for("/hook", 1);
    let expected_url = format!("{}/v2/events/{event_id}", server.base_url);
    assert_eq!(
        received[0].body,
        format!("{{\"resource_url\": \"{expected_url}\"}}")
    );
    assert_eq!(received[0].header("content-type"), "application/json");
    assert_eq!(received[0].header("x-hookd-event"), "new_event");
    assert_eq!(received[0].header("x-hookd-subscription"), hook);
    assert_eq!(received[0].header("x-hookd-attempt"), "1");
    assert!(!received[0].header("x-hookd-notification").is_empty());

    let fetched = admin.get(&expected_url);
    assert_eq!(fetched.status, 200);
    assert_eq!(fetched.body["id"], event_id.as_str());
    assert_eq!(fetched.body["title"], "Kick-off");
    assert_eq!(fetched.body["created_by"], "admin");

    assert_eq!(admin.delete(&format!("/v2/hooks/{hook}")).status, 200);
    assert_eq!(admin.delete(&format!("/v2/hooks/{hook}")).status, 404);
    assert_eq!(receiver.received().len(), 1);
}

#[test]
fn seven_events_fire_for_acting_user_only() {
    let server = TestServer::start();
    let receiver = Receiver::start();
    let admin = server.admin();
    let colleague = server.client(&server.create_user("localhost", "colleague"), "localhost");

    let events = [
        "new_project",
        "new_task",
        "completed_task",
        "new_subtask",
        "completed_subtask",
        "new_client",
        "new_event",
    ];
    for event in events {
        admin.subscribe(&receiver.url(&format!("/admin/{event}")), event);
        colleague.subscribe(&receiver.url(&format!("/colleague/{event}")), event);
    }

    admin.create("projects", json!({"name": "Relaunch"}));
    let task = admin.create("tasks", json!({"name": "Brief"}));
    let subtask = admin.create("subtasks", json!({"name": "Quotes", "task_id": task}));
    admin.create("clients", json!({"name": "Acme"}));
    admin.create(
        "events",
        json!({"title": "Kick-off", "start": "2026-12-04T10:00:00Z"}),
    );
    for _ in 0..2 {
        assert_eq!(
            admin
                .patch(&format!("/v2/tasks/{task}"), r#"{"completed": true}"#)
                .status,
            200
        );
        assert_eq!(
            admin
                .patch(&format!("/v2/subtasks/{subtask}"), r#"{"completed": true}"#)
                .status,
            200
        );
    }
    // Renaming a completed task does not fire completed_task again.
    assert_eq!(
        admin
            .patch(&format!("/v2/tasks/{task}"), r#"{"name": "Brief v2"}"#)
            .status,
        200
    );

    for event in events {
        let received = receiver.wait_for(&format!("/admin/{event}"), 1);
        assert_eq!(received[0].header("x-hookd-event"), event);
    }
    // Notifications are written with the change, so the counts are final
    // once the API has answered.
    let total = server.query_i64("SELECT count(*) FROM notifications", &[]);
    assert_eq!(
        total, 7,
        "one notification per event, none for the colleague"
    );
    let colleague_hooks = server.query_i64(
        "SELECT count(*) FROM notifications n JOIN subscriptions s ON s.id = n.subscription_id
         JOIN users u ON u.id = s.user_id WHERE u.name = 'colleague'",
        &[],
    );
    assert_eq!(colleague_hooks, 0);
    for event in events {
        assert_eq!(
            receiver.received_on(&format!("/admin/{event}")).len(),
            1,
            "{event} fired once"
        );
    }
}

#[test]
fn completed_on_create_fires_only_new_task() {
    let server = TestServer::start();
    let receiver = Receiver::start();
    let admin = server.admin();
    admin.subscribe(&receiver.url("/new"), "new_task");
    admin.subscribe(&receiver.url("/done"), "completed_task");

    let task = admin.create("tasks", json!({"name": "Already done", "completed": true}));
    receiver.wait_for("/new", 1);
    assert_eq!(
        admin
            .patch(&format!("/v2/tasks/{task}"), r#"{"completed": true}"#)
            .status,
        200
    );
    let done = server.query_i64(
        "SELECT count(*) FROM notifications WHERE event = 'completed_task'",
        &[],
    );
    assert_eq!(done, 0);
}

#[test]
fn hooks_list_and_show() {
    let server = TestServer::start();
    let receiver = Receiver::start();
    let admin = server.admin();
    let first = admin.subscribe(&receiver.url("/a"), "new_task");
    let second = admin.subscribe(&receiver.url("/b"), "new_client");

    let listed = admin.get("/v2/hooks");
    assert_eq!(listed.status, 200);
    let ids: Vec<&str> = listed.body["hooks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|hook| hook["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [first.as_str(), second.as_str()]);

    admin.create("tasks", json!({"name": "One"}));
    receiver.wait_for("/a", 1);
    crate::helpers::wait_until("the attempt is recorded", || {
        admin.get(&format!("/v2/hooks/{first}")).body["recent_attempts"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
    });
    let shown = admin.get(&format!("/v2/hooks/{first}"));
    assert_eq!(shown.body["active"], true);
    assert_eq!(shown.body["recent_attempts"][0]["outcome"], "delivered");
    assert_eq!(shown.body["recent_attempts"][0]["status"], 200);

    assert_eq!(admin.delete(&format!("/v2/hooks/{second}")).status, 200);
    let removed = admin.get(&format!("/v2/hooks/{second}"));
    assert_eq!(removed.body["active"], false);
    assert_eq!(removed.body["removed_reason"], "deleted");
    assert_eq!(
        admin.get("/v2/hooks").body["hooks"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

//! Client errors: 400, 401, 404, 409 and 413, each a JSON sentence.

use serde_json::json;

use crate::helpers::{Client, Receiver, TestServer};

fn assert_error(reply: &crate::helpers::Reply, status: u16, contains: &str) {
    assert_eq!(reply.status, status, "{:?}", reply.body);
    assert!(
        reply.content_type.starts_with("application/json"),
        "{}",
        reply.content_type
    );
    let message = reply.body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error sentence in {:?}", reply.body));
    assert!(
        message.contains(contains),
        "{message:?} does not mention {contains:?}"
    );
}

#[test]
fn subscribe_rejects_bad_bodies() {
    let server = TestServer::start();
    let admin = server.admin();
    let cases = [
        ("not json", "not valid JSON"),
        ("", "empty"),
        ("[1, 2]", "not an object"),
        (r#"{"event": "new_task"}"#, "target_url"),
        (r#"{"target_url": "http://127.0.0.1:9/x"}"#, "event"),
        (
            r#"{"target_url": 42, "event": "new_task"}"#,
            "must be a string",
        ),
        (
            r#"{"target_url": "http://127.0.0.1:9/x", "event": ["new_task"]}"#,
            "must be a string",
        ),
        (
            r#"{"target_url": "http://127.0.0.1:9/x", "event": "task_created"}"#,
            "task_created",
        ),
        (
            r#"{"target_url": "not a url", "event": "new_task"}"#,
            "not a url",
        ),
        (
            r#"{"target_url": "ftp://example.com/x", "event": "new_task"}"#,
            "ftp",
        ),
        (
            r#"{"target_url": "http://10.1.2.3/x", "event": "new_task"}"#,
            "private",
        ),
        (
            r#"{"target_url": "http://169.254.169.254/", "event": "new_task"}"#,
            "cloud-metadata",
        ),
        (
            r#"{"target_url": "http://[::1]/", "event": "new_task"}"#,
            "not allowed",
        ),
    ];
    for (body, mentions) in cases {
        assert_error(&admin.post("/v2/hooks", body), 400, mentions);
    }
    let huge = json!({"target_url": format!("http://127.0.0.1:9/{}", "a".repeat(70_000)), "event": "new_task"});
    assert_error(
        &admin.post("/v2/hooks", &huge.to_string()),
        413,
        "over the limit",
    );
    assert_eq!(
        server.query_i64("SELECT count(*) FROM subscriptions", &[]),
        0,
        "nothing stored"
    );
}

#[test]
fn subscribe_accepts_form_content_type() {
    // curl -d sends application/x-www-form-urlencoded; the body is JSON anyway.
    let server = TestServer::start();
    let receiver = Receiver::start();
    let url = format!("{}/v2/hooks", server.base_url);
    let response = ureq::post(&url)
        .set("key", &server.admin_key)
        .set("domain", "localhost")
        .set("Content-Type", "application/x-www-form-urlencoded")
        .send_string(&json!({"target_url": receiver.url("/form"), "event": "new_task"}).to_string())
        .unwrap();
    assert_eq!(response.status(), 201);
}

#[test]
fn authentication_failures_are_401() {
    let server = TestServer::start();
    let body = r#"{"target_url": "http://127.0.0.1:9/x", "event": "new_task"}"#;

    let anonymous = Client::anonymous(&server.base_url);
    assert_error(&anonymous.post("/v2/hooks", body), 401, "missing header");

    let wrong_key = server.client(&"0".repeat(40), "localhost");
    assert_error(&wrong_key.post("/v2/hooks", body), 401, "invalid API key");

    let malformed_key = server.client("secret", "localhost");
    assert_error(
        &malformed_key.post("/v2/hooks", body),
        401,
        "invalid API key",
    );

    let other_key = server.create_user("other.example.com", "eve");
    let wrong_domain = server.client(&other_key, "localhost");
    assert_error(
        &wrong_domain.post("/v2/hooks", body),
        401,
        "invalid API key",
    );

    let revoked_key = server.create_user("localhost", "leaver");
    server.store.revoke_key(&revoked_key).unwrap();
    let revoked = server.client(&revoked_key, "localhost");
    assert_error(&revoked.post("/v2/hooks", body), 401, "revoked");
    assert_error(&revoked.get("/v2/hooks"), 401, "revoked");
}

#[test]
fn same_target_is_409_after_normalising() {
    let server = TestServer::start();
    let receiver = Receiver::start();
    let admin = server.admin();
    let port = receiver.address.port();
    admin.subscribe(&format!("http://127.0.0.1:{port}/hook"), "new_task");

    for variant in [
        format!("http://127.0.0.1:{port}/hook"),
        format!("HTTP://127.0.0.1:{port}/hook"),
    ] {
        let reply = admin.post(
            "/v2/hooks",
            &json!({"target_url": variant, "event": "new_client"}).to_string(),
        );
        assert_error(&reply, 409, "already uses");
    }
    // The path and trailing slash are significant.
    admin.subscribe(&format!("http://127.0.0.1:{port}/hook/"), "new_task");

    // Default port and empty path: http://127.0.0.1 equals http://127.0.0.1:80/.
    admin.subscribe("http://127.0.0.1", "new_task");
    let reply = admin.post(
        "/v2/hooks",
        &json!({"target_url": "http://127.0.0.1:80/", "event": "new_task"}).to_string(),
    );
    assert_error(&reply, 409, "already uses");
}

#[test]
fn other_domain_is_404() {
    let server = TestServer::start();
    let receiver = Receiver::start();
    let admin = server.admin();
    let outsider = server.client(
        &server.create_user("other.example.com", "eve"),
        "other.example.com",
    );

    let hook = admin.subscribe(&receiver.url("/hook"), "new_project");
    let project = admin.create("projects", json!({"name": "Secret"}));

    assert_error(
        &outsider.get(&format!("/v2/projects/{project}")),
        404,
        "no project",
    );
    assert_error(
        &outsider.delete(&format!("/v2/hooks/{hook}")),
        404,
        "no active subscription",
    );
    assert_error(
        &outsider.get(&format!("/v2/hooks/{hook}")),
        404,
        "no subscription",
    );
    assert_error(
        &outsider.patch(&format!("/v2/tasks/{project}"), r#"{"completed": true}"#),
        404,
        "no task",
    );
    assert_eq!(admin.get(&format!("/v2/projects/{project}")).status, 200);
}

#[test]
fn resource_input_errors() {
    let server = TestServer::start();
    let admin = server.admin();
    assert_error(
        &admin.post("/v2/widgets", r#"{"name": "x"}"#),
        404,
        "widgets",
    );
    assert_error(
        &admin.post("/v2/projects", r#"{"title": "x"}"#),
        400,
        "`name`",
    );
    assert_error(
        &admin.post("/v2/projects", r#"{"name": 5}"#),
        400,
        "must be a string",
    );
    assert_error(
        &admin.post("/v2/projects", r#"{"name": "x", "id": "mine"}"#),
        400,
        "set by hookd",
    );
    assert_error(
        &admin.post("/v2/subtasks", r#"{"name": "x", "task_id": "nope"}"#),
        400,
        "not found",
    );
    let parent = admin.create("tasks", json!({"name": "parent"}));
    let child = admin.create("subtasks", json!({"name": "child", "task_id": parent}));
    let moved = admin.patch(&format!("/v2/subtasks/{child}"), r#"{"task_id": "nope"}"#);
    assert_error(&moved, 400, "not found");
    assert_error(
        &admin.post("/v2/events", r#"{"title": "x", "start": "tomorrow"}"#),
        400,
        "RFC 3339",
    );
    assert_error(
        &admin.post("/v2/tasks", r#"{"name": "x", "completed": "yes"}"#),
        400,
        "true or false",
    );
    assert_error(&admin.get("/v2/tasks/missing"), 404, "no task");
    assert_error(
        &admin.post("/v2/projects", "{\"name\": \"a\\r\\nb\"}"),
        400,
        "control character",
    );
    let deep = format!(
        "{{\"name\": \"x\", \"extra\": {}{}}}",
        "[".repeat(5000),
        "]".repeat(5000)
    );
    assert_error(&admin.post("/v2/projects", &deep), 400, "not valid JSON");

    let big = json!({"name": "x".repeat(40_000)}).to_string();
    assert_error(&admin.post("/v2/projects", &big), 400, "over the limit");
    let huge = json!({"name": "x".repeat(100_000)}).to_string();
    assert_error(&admin.post("/v2/projects", &huge), 413, "over the limit");

    let project = admin.create("projects", json!({"name": "p"}));
    assert_error(
        &admin.patch(&format!("/v2/projects/{project}"), r#"{"name": "q"}"#),
        405,
        "tasks and subtasks",
    );
    let task = admin.create("tasks", json!({"name": "t"}));
    assert_error(
        &admin.patch(&format!("/v2/tasks/{task}"), r#"{"name": null}"#),
        400,
        "`name`",
    );
    assert_eq!(
        admin.get(&format!("/v2/tasks/{task}")).body["name"],
        "t",
        "a rejected patch changes nothing"
    );
    assert_eq!(
        server.query_i64("SELECT count(*) FROM resources", &[]),
        4,
        "no partial writes"
    );
}

#[test]
fn wrong_method_is_405_with_allow() {
    let server = TestServer::start();
    let url = format!("{}/v2/hooks", server.base_url);
    let response = ureq::request("PUT", &url)
        .set("key", &server.admin_key)
        .set("domain", "localhost")
        .call();
    match response {
        Err(ureq::Error::Status(405, response)) => {
            assert_eq!(response.header("Allow"), Some("GET, POST"));
            assert!(response.into_string().unwrap().contains("not allowed"));
        }
        other => panic!("expected 405, got {other:?}"),
    }
}

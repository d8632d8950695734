//! `GET /v2/<kind>` (the caller's own resources, newest first) and
//! `GET /v2/me`.

use serde_json::{Value, json};

use crate::helpers::{Client, Reply, TestServer};

/// Returns the `name` field of every document in a list reply.
fn names(reply: &Reply) -> Vec<String> {
    reply.body["data"]
        .as_array()
        .unwrap_or_else(|| panic!("no `data` array in {:?}", reply.body))
        .iter()
        .map(|document| document["name"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn ids(reply: &Reply) -> Vec<String> {
    reply.body["data"]
        .as_array()
        .unwrap_or_else(|| panic!("no `data` array in {:?}", reply.body))
        .iter()
        .map(|document| document["id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn error_message(reply: &Reply) -> &str {
    reply.body["error"].as_str().unwrap_or_default()
}

/// Creates tasks named `task 0` to `task {count - 1}`, in that order.
fn create_tasks(client: &Client, count: usize) {
    for number in 0..count {
        client.create("tasks", json!({ "name": format!("task {number}") }));
    }
}

fn task_names(numbers: impl Iterator<Item = usize>) -> Vec<String> {
    numbers.map(|number| format!("task {number}")).collect()
}

#[test]
fn list_newest_first_with_default_limit() {
    let server = TestServer::start();
    let admin = server.admin();
    // Created back to back, so some may share a millisecond, and the order
    // must still follow creation.
    create_tasks(&admin, 12);

    let reply = admin.get("/v2/tasks");
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert!(
        reply.content_type.starts_with("application/json"),
        "content type {:?}",
        reply.content_type
    );
    assert_eq!(names(&reply), task_names((2..12).rev()));

    let reply = admin.get("/v2/tasks?limit=3");
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(names(&reply), task_names((9..12).rev()));

    let reply = admin.get("/v2/tasks?limit=100");
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(names(&reply), task_names((0..12).rev()));
}

#[test]
fn list_returns_whole_documents() {
    let server = TestServer::start();
    let admin = server.admin();
    let created = admin.post(
        "/v2/events",
        r#"{"title": "Kick-off", "start": "2026-12-04T10:00:00Z", "room": "B2"}"#,
    );
    assert_eq!(created.status, 201, "{:?}", created.body);
    let id = created.body["id"].as_str().unwrap();

    let reply = admin.get("/v2/events");
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.body, json!({ "data": [created.body.clone()] }));

    let fetched = admin.get(&format!("/v2/events/{id}"));
    assert_eq!(fetched.body, reply.body["data"][0]);
}

#[test]
fn list_empty_for_every_kind() {
    let server = TestServer::start();
    let admin = server.admin();
    for kind in hookd::events::Kind::ALL {
        let reply = admin.get(&format!("/v2/{kind}"));
        assert_eq!(reply.status, 200, "GET /v2/{kind}: {:?}", reply.body);
        assert_eq!(reply.body, json!({ "data": [] }), "GET /v2/{kind}");
    }
}

#[test]
fn list_limit_bounds() {
    let server = TestServer::start();
    let admin = server.admin();
    create_tasks(&admin, 2);

    for limit in ["1", "100"] {
        let reply = admin.get(&format!("/v2/tasks?limit={limit}"));
        assert_eq!(reply.status, 200, "limit={limit}: {:?}", reply.body);
    }
    assert_eq!(names(&admin.get("/v2/tasks?limit=1")), ["task 1"]);

    for limit in ["0", "101", "-1", "abc", "", "1.5", "4294967296", "%20"] {
        let reply = admin.get(&format!("/v2/tasks?limit={limit}"));
        assert_eq!(reply.status, 400, "limit={limit}: {:?}", reply.body);
        let message = error_message(&reply);
        assert!(
            message.contains("`limit`") && message.contains("from 1 to 100"),
            "limit={limit}: {message:?}"
        );
    }

    let reply = admin.get("/v2/tasks?limit=2&limit=3");
    assert_eq!(reply.status, 400, "{:?}", reply.body);
    assert!(
        error_message(&reply).contains("more than once"),
        "{:?}",
        reply.body
    );
}

#[test]
fn list_ignores_unknown_parameters() {
    let server = TestServer::start();
    let admin = server.admin();
    create_tasks(&admin, 1);
    let reply = admin.get("/v2/tasks?limit=5&sort=oldest");
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(names(&reply), ["task 0"]);
}

#[test]
fn list_excludes_other_users_and_domains() {
    let server = TestServer::start();
    let admin = server.admin();
    let colleague = server.client(&server.create_user("localhost", "bob"), "localhost");
    // A user with the same name as the first user, in another domain.
    let stranger = server.client(
        &server.create_user("other.example", "admin"),
        "other.example",
    );

    let own = admin.create("projects", json!({ "name": "own" }));
    let colleagues = colleague.create("projects", json!({ "name": "colleague's" }));
    let strangers = stranger.create("projects", json!({ "name": "stranger's" }));

    let reply = admin.get("/v2/projects");
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(ids(&reply), std::slice::from_ref(&own));
    assert_eq!(
        ids(&colleague.get("/v2/projects")),
        std::slice::from_ref(&colleagues)
    );
    assert_eq!(ids(&stranger.get("/v2/projects")), [strangers]);

    // The colleague's project is still readable by id within the domain;
    // the listing only leaves it out.
    let reply = admin.get(&format!("/v2/projects/{colleagues}"));
    assert_eq!(reply.status, 200, "{:?}", reply.body);
}

#[test]
fn list_excludes_other_kinds() {
    let server = TestServer::start();
    let admin = server.admin();
    let task = admin.create("tasks", json!({ "name": "a task" }));
    admin.create("subtasks", json!({ "name": "a subtask", "task_id": task }));
    admin.create("clients", json!({ "name": "a client" }));

    assert_eq!(names(&admin.get("/v2/tasks")), ["a task"]);
    assert_eq!(names(&admin.get("/v2/subtasks")), ["a subtask"]);
    assert_eq!(names(&admin.get("/v2/clients")), ["a client"]);
    assert_eq!(names(&admin.get("/v2/projects")), Vec::<String>::new());
}

#[test]
fn list_filters_by_completed() {
    let server = TestServer::start();
    let admin = server.admin();
    create_tasks(&admin, 3);
    let middle = admin.get("/v2/tasks").body["data"][1]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let reply = admin.patch(&format!("/v2/tasks/{middle}"), r#"{"completed": true}"#);
    assert_eq!(reply.status, 200, "{:?}", reply.body);

    let reply = admin.get("/v2/tasks?completed=true");
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(names(&reply), ["task 1"]);

    let reply = admin.get("/v2/tasks?completed=false&limit=5");
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(names(&reply), ["task 2", "task 0"]);

    let reply = admin.get("/v2/tasks?completed=yes");
    assert_eq!(reply.status, 400, "{:?}", reply.body);
    assert!(
        error_message(&reply).contains("`completed`"),
        "{:?}",
        reply.body
    );

    let reply = admin.get("/v2/projects?completed=true");
    assert_eq!(reply.status, 400, "{:?}", reply.body);
    assert!(
        error_message(&reply).contains("tasks and subtasks"),
        "{:?}",
        reply.body
    );
}

#[test]
fn list_needs_authentication() {
    let server = TestServer::start();
    let reply = Client::anonymous(&server.base_url).get("/v2/tasks");
    assert_eq!(reply.status, 401, "{:?}", reply.body);

    let wrong_domain = server.client(&server.admin_key, "other.example");
    let reply = wrong_domain.get("/v2/tasks");
    assert_eq!(reply.status, 401, "{:?}", reply.body);
}

#[test]
fn list_unknown_kind_not_found() {
    let server = TestServer::start();
    let reply = server.admin().get("/v2/widgets?limit=5");
    assert_eq!(reply.status, 404, "{:?}", reply.body);
    assert!(
        error_message(&reply).contains("no resource kind"),
        "{:?}",
        reply.body
    );
}

#[test]
fn me_names_user_and_domain() {
    let server = TestServer::start();
    let reply = server.admin().get("/v2/me");
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(
        reply.body,
        json!({ "user": "admin", "domain": "localhost" })
    );

    let key = server.create_user("acme.example.com", "alice");
    let reply = server.client(&key, "acme.example.com").get("/v2/me");
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(
        reply.body,
        json!({ "user": "alice", "domain": "acme.example.com" })
    );
}

#[test]
fn me_rejects_bad_credentials() {
    let server = TestServer::start();
    let unknown_key = "0".repeat(40);
    let cases: [(&str, Client); 4] = [
        ("no headers", Client::anonymous(&server.base_url)),
        ("unknown key", server.client(&unknown_key, "localhost")),
        ("malformed key", server.client("not-a-key", "localhost")),
        (
            "wrong domain",
            server.client(&server.admin_key, "other.example"),
        ),
    ];
    for (case, client) in cases {
        let reply = client.get("/v2/me");
        assert_eq!(reply.status, 401, "{case}: {:?}", reply.body);
        assert!(reply.body["error"].is_string(), "{case}: {:?}", reply.body);
        assert_eq!(reply.body.get("user"), None::<&Value>, "{case}");
    }
}

#[test]
fn me_allows_only_get() {
    let server = TestServer::start();
    let admin = server.admin();
    for method in ["POST", "PUT", "PATCH", "DELETE"] {
        let reply = admin.send(method, "/v2/me", Some("{}"));
        assert_eq!(reply.status, 405, "{method} /v2/me: {:?}", reply.body);
    }
}

//! openapi.json against the running server: every documented operation has
//! a route, every other common method on a documented path is rejected by
//! the router, and `GET /openapi.json` serves the committed file.
//!
//! The tests find the server's routes by probing it, not from a second list,
//! so they check what `configure` registers. NOTE: probing starts from
//! the paths in the document, so a route on a path that the document never
//! names (say `/metrics`) goes unnoticed here.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::helpers::{Reply, TestServer};

const DOCUMENT: &str = include_str!("../../openapi.json");

/// Methods tried on every documented path.
const PROBED_METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

/// Keys of an OpenAPI path item that name operations.
const OPERATION_KEYS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// An id in the server's format that names no subscription or resource.
const UNKNOWN_ID: &str = "0123456789abcdef0123456789abcdef";

fn document() -> Value {
    serde_json::from_str(DOCUMENT).expect("openapi.json is valid JSON")
}

fn documented_paths(document: &Value) -> Vec<String> {
    document["paths"]
        .as_object()
        .expect("openapi.json has a paths object")
        .keys()
        .cloned()
        .collect()
}

/// Collects the (METHOD, path template) pair of every operation in the document.
fn documented_operations(document: &Value) -> BTreeSet<(String, String)> {
    let mut operations = BTreeSet::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for key in item.as_object().unwrap().keys() {
            if OPERATION_KEYS.contains(&key.as_str()) {
                operations.insert((key.to_ascii_uppercase(), path.clone()));
            }
        }
    }
    operations
}

/// Lists the response statuses that the document gives for one operation.
fn documented_statuses(document: &Value, method: &str, path: &str) -> BTreeSet<u16> {
    document["paths"][path][method.to_ascii_lowercase()]["responses"]
        .as_object()
        .unwrap_or_else(|| panic!("{method} {path} has no responses"))
        .keys()
        .map(|status| status.parse().expect("responses are keyed by status"))
        .collect()
}

/// Fills every `{id}` in a path template with an id that names nothing.
fn concrete_path(template: &str) -> String {
    template.replace("{id}", UNKNOWN_ID)
}

fn probe(server: &TestServer, method: &str, path: &str) -> Reply {
    let body = match method {
        "POST" | "PUT" | "PATCH" => Some("{}"),
        _ => None,
    };
    server.admin().send(method, &concrete_path(path), body)
}

fn error_message(reply: &Reply) -> &str {
    reply.body["error"].as_str().unwrap_or_default()
}

/// Reports whether the server rejected the request because no route matches its path.
fn is_no_route(reply: &Reply) -> bool {
    reply.status == 404 && error_message(reply).starts_with("no route for ")
}

#[test]
fn documented_operations_have_routes() {
    let server = TestServer::start();
    let document = document();
    let operations = documented_operations(&document);
    assert!(
        operations.len() >= 16,
        "only {} operations found in openapi.json",
        operations.len()
    );

    for (method, path) in &operations {
        let reply = probe(&server, method, path);
        assert!(
            !is_no_route(&reply),
            "{method} {path} is documented but has no route: {:?}",
            reply.body
        );
        assert_ne!(
            reply.status, 405,
            "{method} {path} is documented but its method is not allowed: {:?}",
            reply.body
        );
        let statuses = documented_statuses(&document, method, path);
        assert!(
            statuses.contains(&reply.status),
            "{method} {path} answered {} ({:?}), which openapi.json does not list among {statuses:?}",
            reply.status,
            reply.body
        );
    }
}

#[test]
fn undocumented_methods_are_rejected() {
    let server = TestServer::start();
    let document = document();
    let operations = documented_operations(&document);

    for path in documented_paths(&document) {
        for method in PROBED_METHODS {
            if operations.contains(&(method.to_owned(), path.clone())) {
                continue;
            }
            let reply = probe(&server, method, &path);
            assert!(
                reply.status == 405 || is_no_route(&reply),
                "{method} {path} is not in openapi.json but answered {}: {:?}",
                reply.status,
                reply.body
            );
            assert!(
                reply.content_type.starts_with("application/json"),
                "{method} {path}: content type {:?}",
                reply.content_type
            );
        }
    }
}

#[test]
fn every_resource_kind_documented() {
    let document = document();
    let operations = documented_operations(&document);
    for kind in hookd::events::Kind::ALL {
        let collection = format!("/v2/{kind}");
        let item = format!("/v2/{kind}/{{id}}");
        assert!(
            operations.contains(&("POST".to_owned(), collection.clone())),
            "openapi.json lacks POST {collection}"
        );
        assert!(
            operations.contains(&("GET".to_owned(), item.clone())),
            "openapi.json lacks GET {item}"
        );
        let patchable = kind.completed_event().is_some();
        assert_eq!(
            operations.contains(&("PATCH".to_owned(), item.clone())),
            patchable,
            "PATCH {item} documented: expected {patchable}"
        );
    }
}

#[test]
fn document_served_as_committed() {
    let server = TestServer::start();
    let reply = crate::helpers::Client::anonymous(&server.base_url).get("/openapi.json");
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert!(
        reply.content_type.starts_with("application/json"),
        "{}",
        reply.content_type
    );
    assert_eq!(reply.body, document());
}

#[test]
fn document_version_matches_crate() {
    let document = document();
    assert_eq!(document["openapi"], "3.1.0");
    assert_eq!(document["info"]["version"], env!("CARGO_PKG_VERSION"));
}

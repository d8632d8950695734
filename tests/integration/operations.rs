//! Health, metrics, backup and restore, pruning and log formats.

use std::process::Command;
use std::time::Duration;

use serde_json::json;

use crate::helpers::{Client, Receiver, TestServer, wait_until};

#[test]
fn readyz_reports_ready() {
    let server = TestServer::start();
    let ready = Client::anonymous(&server.base_url).get("/readyz");
    assert_eq!(ready.status, 200);
    assert_eq!(ready.body["status"], "ready");
}

#[test]
fn metrics_count_requests_and_deliveries() {
    let server = TestServer::start();
    let receiver = Receiver::start();
    let admin = server.admin();
    admin.subscribe(&receiver.url("/metered"), "new_task");
    admin.create("tasks", json!({"name": "a"}));
    receiver.wait_for("/metered", 1);
    wait_until("the attempt is recorded", || {
        server.query_i64("SELECT count(*) FROM attempts", &[]) == 1
    });

    let metrics = Client::anonymous(&server.base_url).get("/metrics");
    assert_eq!(metrics.status, 200);
    let text = metrics.body.as_str().unwrap().to_owned();
    for name in [
        "hookd_http_requests_total{method=\"POST\",route=\"/v2/hooks\",status=\"201\"}",
        "hookd_notifications_created_total{event=\"new_task\"}",
        "hookd_delivery_attempts_total{outcome=\"delivered\"}",
        "hookd_delivery_attempt_duration_seconds_bucket",
        "hookd_notifications_waiting",
        "hookd_notifications_in_flight",
        "hookd_subscriptions_active",
        "hookd_oldest_due_notification_age_seconds",
    ] {
        assert!(text.contains(name), "{name} missing from:\n{text}");
    }
}

#[test]
fn pruning_removes_old_finished_rows() {
    let server = TestServer::start_with(|config| {
        config.retention = Duration::from_secs(1);
        config.prune_interval = Duration::from_millis(200);
    });
    let receiver = Receiver::start();
    let admin = server.admin();
    let hook = admin.subscribe(&receiver.url("/pruned"), "new_task");
    admin.create("tasks", json!({"name": "a"}));
    receiver.wait_for("/pruned", 1);
    assert_eq!(admin.delete(&format!("/v2/hooks/{hook}")).status, 200);

    wait_until("old rows are pruned", || {
        server.query_i64("SELECT count(*) FROM notifications", &[]) == 0
            && server.query_i64("SELECT count(*) FROM subscriptions", &[]) == 0
    });
    assert_eq!(server.query_i64("SELECT count(*) FROM attempts", &[]), 0);
    assert_eq!(
        server.query_i64("SELECT count(*) FROM resources", &[]),
        1,
        "resources are kept"
    );
}

#[test]
fn backup_while_running_restores() {
    let server = TestServer::start();
    let receiver = Receiver::start();
    let admin = server.admin();
    let hook = admin.subscribe(&receiver.url("/kept"), "new_task");
    let task = admin.create("tasks", json!({"name": "kept"}));

    let backup = server.config.data_dir.join("copy.db");
    let output = Command::new(env!("CARGO_BIN_EXE_hookd"))
        .arg("backup")
        .arg(&backup)
        .env("HOOKD_DATA_DIR", &server.config.data_dir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let again = Command::new(env!("CARGO_BIN_EXE_hookd"))
        .arg("backup")
        .arg(&backup)
        .env("HOOKD_DATA_DIR", &server.config.data_dir)
        .output()
        .unwrap();
    assert!(!again.status.success(), "an existing file was overwritten");
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));

    // Restore: a new server whose database is the copy.
    let (mut config, data_dir) = server.stop();
    config.database = Some(backup);
    let restored = TestServer::resume(config, data_dir);
    let shown = restored.admin().get(&format!("/v2/hooks/{hook}"));
    assert_eq!(shown.status, 200);
    assert_eq!(
        restored.admin().get(&format!("/v2/tasks/{task}")).body["name"],
        "kept"
    );
}

#[test]
fn healthcheck_command_probes_readyz() {
    let server = TestServer::start();
    let ready = Command::new(env!("CARGO_BIN_EXE_hookd"))
        .args(["healthcheck", "--url", &server.base_url])
        .output()
        .unwrap();
    assert!(
        ready.status.success(),
        "{}",
        String::from_utf8_lossy(&ready.stderr)
    );

    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let down = Command::new(env!("CARGO_BIN_EXE_hookd"))
        .args([
            "healthcheck",
            "--url",
            &format!("http://127.0.0.1:{closed}"),
        ])
        .output()
        .unwrap();
    assert!(!down.status.success());
    assert!(String::from_utf8_lossy(&down.stderr).contains("not ready"));
}

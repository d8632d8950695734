//! Restarts, shutdown, races and the real executable.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use serde_json::json;

use crate::helpers::{Receiver, TestServer, wait_until};

#[test]
fn pending_retry_is_delivered_after_restart() {
    let server = TestServer::start_with(|config| {
        config.delivery.retry_waits = vec![Duration::from_secs(1)];
    });
    let receiver = Receiver::start();
    receiver.script([500]);
    let admin = server.admin();
    admin.subscribe(&receiver.url("/later"), "new_task");
    admin.create("tasks", json!({"name": "a"}));

    wait_until("the failed attempt is recorded", || {
        server.query_i64(
            "SELECT count(*) FROM notifications WHERE state = 'pending' AND attempts = 1",
            &[],
        ) == 1
    });
    let server = server.restart();

    let received = receiver.wait_for("/later", 2);
    assert_eq!(received[1].header("x-hookd-attempt"), "2");
    wait_until("the notification is delivered", || {
        server.query_i64(
            "SELECT count(*) FROM notifications WHERE state = 'delivered'",
            &[],
        ) == 1
    });
}

#[test]
fn in_flight_left_by_crash_is_sent_again() {
    let server = TestServer::start_with(|config| {
        config.delivery.retry_waits = vec![Duration::from_secs(60)];
    });
    let receiver = Receiver::start();
    let admin = server.admin();
    admin.subscribe(&receiver.url("/again"), "new_client");
    let (config, data_dir) = server.stop();

    // Simulate a crash between claim and outcome: a notification marked in
    // flight that no running process owns.
    let connection = rusqlite::Connection::open(config.data_dir.join("hookd.db")).unwrap();
    connection
        .execute(
            "INSERT INTO notifications (id, subscription_id, event, resource_url, state, attempts, due_at, created_at)
             SELECT 'left-in-flight', id, event, 'http://example.invalid/v2/clients/x', 'in_flight', 0, 0, 0 FROM subscriptions",
            [],
        )
        .unwrap();
    drop(connection);

    let server = TestServer::resume(config, data_dir);
    let received = receiver.wait_for("/again", 1);
    assert_eq!(received[0].header("x-hookd-notification"), "left-in-flight");
    drop(server);
}

#[test]
fn concurrent_identical_subscribes_give_one_201() {
    let server = TestServer::start();
    let receiver = Receiver::start();
    let target = receiver.url("/race");
    let parallel = 50;
    let barrier = Arc::new(Barrier::new(parallel));
    let threads: Vec<_> = (0..parallel)
        .map(|_| {
            let client = server.admin();
            let barrier = barrier.clone();
            let body = json!({"target_url": target, "event": "new_task"}).to_string();
            std::thread::spawn(move || {
                barrier.wait();
                client.post("/v2/hooks", &body).status
            })
        })
        .collect();
    let mut statuses: Vec<u16> = threads
        .into_iter()
        .map(|thread| thread.join().unwrap())
        .collect();
    statuses.sort();
    assert_eq!(
        statuses.iter().filter(|status| **status == 201).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|status| **status == 409).count(),
        parallel - 1,
        "{statuses:?}"
    );
}

#[test]
fn revoking_last_key_removes_subscriptions() {
    let server = TestServer::start();
    let receiver = Receiver::start();
    let key = server.create_user("localhost", "temp");
    let hook = server
        .client(&key, "localhost")
        .subscribe(&receiver.url("/temp"), "new_task");
    let second_key = server.store.add_key("localhost", "temp").unwrap();

    server.store.revoke_key(&key).unwrap();
    let still = server
        .client(&second_key, "localhost")
        .get(&format!("/v2/hooks/{hook}"));
    assert_eq!(still.body["active"], true, "another key remains");

    let revoked = server.store.revoke_key(&second_key).unwrap();
    assert_eq!(revoked.subscriptions_removed, 1);
    let reason = server.query_i64(
        "SELECT count(*) FROM subscriptions WHERE removed_reason = 'key_revoked'",
        &[],
    );
    assert_eq!(reason, 1);
}

#[test]
fn executable_serves_and_stops_on_sigterm() {
    let data_dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_hookd"))
        .arg("serve")
        .env("HOOKD_LISTEN", "127.0.0.1:0")
        .env("HOOKD_DATA_DIR", data_dir.path())
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut address = None;
    let mut log = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        log.push(line.clone());
        if let Some(found) = line.split("listening on ").nth(1) {
            address = Some(found.trim().to_owned());
            break;
        }
    }
    let address = address.unwrap_or_else(|| panic!("no listening line in {log:#?}"));
    // Drain the rest of the log so the child never blocks on a full pipe.
    let drain = std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>());

    let key_file = data_dir.path().join("admin.key");
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let key = std::fs::read_to_string(&key_file)
        .unwrap()
        .trim()
        .to_owned();
    assert!(
        log.iter().all(|line| !line.contains(&key)),
        "the key was logged"
    );
    assert!(
        log.iter().any(|line| line.contains("admin.key")),
        "the key file's path is logged"
    );

    let health = ureq::get(&format!("{address}/healthz")).call().unwrap();
    assert_eq!(health.status(), 200);
    let hooks = ureq::get(&format!("{address}/v2/hooks"))
        .set("key", &key)
        .set("domain", "localhost")
        .call()
        .unwrap();
    assert_eq!(hooks.status(), 200);

    let killed = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    let rest = drain.join().unwrap();
    assert!(status.success(), "exit status {status:?}; log: {rest:#?}");
    assert!(
        rest.iter().any(|line| line.contains("hookd stopped")),
        "{rest:#?}"
    );
}

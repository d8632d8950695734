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
            "INSERT INTO notifications (id, subscription_id, event, resource_url, target_authority, state, attempts,
                                        due_at, created_at)
             SELECT 'left-in-flight', id, event, 'http://example.invalid/v2/clients/x', target_authority, 'in_flight',
                    0, 0, 0
             FROM subscriptions",
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

/// The real executable, started with `serve` on port 0, its log collected
/// from stderr. Dropping it without `terminate` kills the process.
struct Executable {
    child: std::process::Child,
    address: String,
    data_dir: tempfile::TempDir,
    log: Arc<std::sync::Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Executable {
    fn start(environment: &[(&str, &str)]) -> Executable {
        let data_dir = tempfile::tempdir().unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_hookd"));
        command
            .arg("serve")
            .env("HOOKD_LISTEN", "127.0.0.1:0")
            .env("HOOKD_DATA_DIR", data_dir.path())
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped());
        for (name, value) in environment {
            command.env(name, value);
        }
        command.stdout(Stdio::null());
        let mut child = command.spawn().unwrap();

        let log: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
        let (address_sender, address_receiver) = std::sync::mpsc::channel();
        let lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let collected = log.clone();
        // Read the log to its end so the child never blocks on a full pipe.
        let reader = std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                // The address ends at the first character a URL of this
                // form cannot hold, so text and JSON lines both work.
                if let Some(found) = line.split("listening on ").nth(1) {
                    let address: String = found
                        .chars()
                        .take_while(|character| {
                            character.is_ascii_alphanumeric() || ":/.".contains(*character)
                        })
                        .collect();
                    let _ = address_sender.send(address);
                }
                collected.lock().unwrap().push(line);
            }
        });
        let address = address_receiver
            .recv_timeout(crate::helpers::DEADLINE)
            .unwrap_or_else(|_| panic!("no listening line in {:#?}", log.lock().unwrap()));
        Executable {
            child,
            address,
            data_dir,
            log,
            reader: Some(reader),
        }
    }

    fn key(&self) -> String {
        std::fs::read_to_string(self.data_dir.path().join("admin.key"))
            .unwrap()
            .trim()
            .to_owned()
    }

    /// Sends SIGTERM by PID and returns the exit status and the whole log.
    fn terminate(mut self) -> (std::process::ExitStatus, Vec<String>) {
        let killed = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(killed.success());
        let status = self.child.wait().unwrap();
        if let Some(reader) = self.reader.take() {
            reader.join().unwrap();
        }
        let log = self.log.lock().unwrap().clone();
        (status, log)
    }
}

impl Drop for Executable {
    fn drop(&mut self) {
        // Only reached when a test failed before `terminate`.
        if self.reader.is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn executable_serves_and_stops_on_sigterm() {
    let executable = Executable::start(&[]);
    let key_file = executable.data_dir.path().join("admin.key");
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let key = executable.key();

    let health = ureq::get(&format!("{}/healthz", executable.address))
        .call()
        .unwrap();
    assert_eq!(health.status(), 200);
    let hooks = ureq::get(&format!("{}/v2/hooks", executable.address))
        .set("key", &key)
        .set("domain", "localhost")
        .call()
        .unwrap();
    assert_eq!(hooks.status(), 200);

    let (status, log) = executable.terminate();
    assert!(status.success(), "exit status {status:?}; log: {log:#?}");
    assert!(
        log.iter().all(|line| !line.contains(&key)),
        "the key was logged"
    );
    assert!(
        log.iter().any(|line| line.contains("admin.key")),
        "the key file's path is logged"
    );
    assert!(
        log.iter().any(|line| line.contains("hookd stopped")),
        "{log:#?}"
    );
}

#[test]
fn retry_timing_ignores_time_zone() {
    // Kiritimati is UTC+14: a retry computed in local time would come
    // hours late or at once.
    let executable = Executable::start(&[
        ("TZ", "Pacific/Kiritimati"),
        ("HOOKD_DELIVERY__RETRY_WAITS", r#"["1s"]"#),
        ("HOOKD_DELIVERY__ALLOWED_NETWORKS", r#"["127.0.0.0/8"]"#),
    ]);
    let receiver = Receiver::start();
    receiver.script([500]);
    let client = crate::helpers::Client {
        base_url: executable.address.clone(),
        key: Some(executable.key()),
        domain: Some("localhost".into()),
    };
    client.subscribe(&receiver.url("/zone?token=s3cr3t"), "new_task");
    client.create("tasks", json!({"name": "a"}));

    let received = receiver.wait_for("/zone?token=s3cr3t", 2);
    assert!(received[1].at - received[0].at >= Duration::from_secs(1));

    let (status, log) = executable.terminate();
    assert!(status.success());
    let attempt_lines: Vec<&String> = log
        .iter()
        .filter(|line| line.contains("attempt notification="))
        .collect();
    assert_eq!(attempt_lines.len(), 2, "{log:#?}");
    assert!(
        attempt_lines[0].contains("outcome=http_status") && attempt_lines[0].contains("ms="),
        "{attempt_lines:#?}"
    );
    assert!(
        attempt_lines[1].contains("outcome=delivered"),
        "{attempt_lines:#?}"
    );
    assert!(
        log.iter().all(|line| !line.contains("s3cr3t")),
        "a query value was logged"
    );
}

#[test]
fn paused_delivery_sends_after_unpause() {
    let server = TestServer::start_with(|config| config.delivery.paused = true);
    let receiver = Receiver::start();
    let admin = server.admin();
    admin.subscribe(&receiver.url("/paused"), "new_task");
    admin.create("tasks", json!({"name": "a"}));
    assert_eq!(
        server.query_i64(
            "SELECT count(*) FROM notifications WHERE state = 'pending'",
            &[]
        ),
        1
    );

    let (mut config, data_dir) = server.stop();
    assert!(
        receiver.received().is_empty(),
        "a paused server sent a notification"
    );
    config.delivery.paused = false;
    let _server = TestServer::resume(config, data_dir);
    receiver.wait_for("/paused", 1);
}

#[test]
fn restart_with_shorter_waits_pulls_retries_in() {
    let server = TestServer::start_with(|config| {
        config.delivery.retry_waits = vec![Duration::from_secs(3600)];
    });
    let receiver = Receiver::start();
    receiver.script([500]);
    let admin = server.admin();
    admin.subscribe(&receiver.url("/shorter"), "new_task");
    admin.create("tasks", json!({"name": "a"}));
    wait_until("the failed attempt is recorded", || {
        server.query_i64(
            "SELECT count(*) FROM notifications WHERE state = 'pending' AND attempts = 1",
            &[],
        ) == 1
    });

    let (mut config, data_dir) = server.stop();
    config.delivery.retry_waits = vec![Duration::from_millis(500)];
    let _server = TestServer::resume(config, data_dir);
    let received = receiver.wait_for("/shorter", 2);
    assert!(received[1].at - received[0].at >= Duration::from_millis(500));
}

#[test]
fn json_log_format_writes_objects() {
    let executable = Executable::start(&[("HOOKD_LOG_FORMAT", "json")]);
    let health = ureq::get(&format!("{}/healthz", executable.address))
        .call()
        .unwrap();
    assert_eq!(health.status(), 200);
    let (status, log) = executable.terminate();
    assert!(status.success());

    let objects: Vec<serde_json::Value> = log
        .iter()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|error| panic!("{line:?} is not JSON: {error}"))
        })
        .collect();
    assert!(
        objects
            .iter()
            .all(|object| object["level"].is_string() && object["message"].is_string())
    );
    let request = objects
        .iter()
        .find(|object| object["message"].as_str().unwrap().starts_with("request "))
        .expect("a request line");
    assert_eq!(request["status"], "200");
}

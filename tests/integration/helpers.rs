//! Test harness: a real hookd on 127.0.0.1 port 0 with a temporary data
//! directory, a recording HTTP receiver on loopback, a small client, and
//! polling with a deadline.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hookd::{Application, Config};
use serde_json::Value;

/// Generous, because tests share a busy 2-core machine.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Polls `condition` until it holds, failing the test after `DEADLINE`.
pub fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The test config: loopback receivers allowed, short waits and timeouts.
pub fn test_config(data_dir: PathBuf) -> Config {
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir,
        shutdown_grace: Duration::from_secs(5),
        ..Config::default()
    };
    config.delivery.senders = 2;
    config.delivery.max_senders = 16;
    config.delivery.connect_timeout = Duration::from_secs(2);
    config.delivery.timeout = Duration::from_secs(5);
    config.delivery.retry_waits = vec![Duration::from_millis(300)];
    config.delivery.allowed_networks = vec!["127.0.0.0/8".into()];
    config
}

/// A hookd running in this process, in its own actix system thread.
pub struct TestServer {
    pub base_url: String,
    pub admin_key: String,
    pub config: Config,
    pub store: hookd::store::Store,
    // Kept so the directory lives as long as the server.
    pub data_dir: Arc<tempfile::TempDir>,
    stop: std::sync::mpsc::Sender<()>,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    pub fn start() -> TestServer {
        Self::start_with(|_| {})
    }

    pub fn start_with(adjust: impl FnOnce(&mut Config)) -> TestServer {
        let data_dir = Arc::new(tempfile::tempdir().expect("temporary directory"));
        let mut config = test_config(data_dir.path().to_owned());
        adjust(&mut config);
        Self::launch(config, data_dir)
    }

    /// Starts a server on the data directory of a stopped one.
    pub fn resume(config: Config, data_dir: Arc<tempfile::TempDir>) -> TestServer {
        Self::launch(config, data_dir)
    }

    fn launch(config: Config, data_dir: Arc<tempfile::TempDir>) -> TestServer {
        let (started_sender, started) = std::sync::mpsc::channel();
        let (stop, stop_receiver) = std::sync::mpsc::channel::<()>();
        let server_config = config.clone();
        let thread = std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let application = Application::build(server_config, false).expect("hookd starts");
                let handle = application.handle();
                started_sender
                    .send((application.address(), application.store()))
                    .unwrap();
                actix_web::rt::spawn(async move {
                    let _ = actix_web::rt::task::spawn_blocking(move || stop_receiver.recv()).await;
                    handle.stop(true).await;
                });
                application.run().await.expect("hookd stops cleanly");
            });
        });
        let (address, store) = started.recv().expect("hookd reported its address");
        let admin_key = std::fs::read_to_string(config.data_dir.join("admin.key"))
            .expect("admin.key written")
            .trim()
            .to_owned();
        TestServer {
            base_url: format!("http://{address}"),
            admin_key,
            config,
            store,
            data_dir,
            stop,
            thread: Some(thread),
        }
    }

    /// Stops the server and waits until it has shut down completely.
    pub fn stop(mut self) -> (Config, Arc<tempfile::TempDir>) {
        self.shutdown();
        (self.config.clone(), self.data_dir.clone())
    }

    /// Stops the server and starts a new one on the same database.
    pub fn restart(self) -> TestServer {
        let admin_key = self.admin_key.clone();
        let (config, data_dir) = self.stop();
        let mut server = Self::launch(config, data_dir);
        server.admin_key = admin_key;
        server
    }

    fn shutdown(&mut self) {
        let _ = self.stop.send(());
        if let Some(thread) = self.thread.take() {
            thread.join().expect("server thread ends");
        }
    }

    /// A client authenticated as the first user.
    pub fn admin(&self) -> Client {
        self.client(&self.admin_key, "localhost")
    }

    pub fn client(&self, key: &str, domain: &str) -> Client {
        Client {
            base_url: self.base_url.clone(),
            key: Some(key.to_owned()),
            domain: Some(domain.to_owned()),
        }
    }

    /// Creates a user (and its domain when missing) and returns its key.
    pub fn create_user(&self, domain: &str, name: &str) -> String {
        let _ = self.store.create_domain(domain);
        self.store.create_user(domain, name).expect("user created")
    }

    /// Runs a query on the database file directly, for state the API does
    /// not show.
    pub fn query_i64(&self, sql: &str, parameters: &[&dyn rusqlite::ToSql]) -> i64 {
        let connection = rusqlite::Connection::open(self.config.data_dir.join("hookd.db")).unwrap();
        connection
            .query_row(sql, parameters, |row| row.get(0))
            .unwrap()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A status code and parsed JSON body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
    pub content_type: String,
}

pub struct Client {
    pub base_url: String,
    pub key: Option<String>,
    pub domain: Option<String>,
}

impl Client {
    pub fn anonymous(base_url: &str) -> Client {
        Client {
            base_url: base_url.to_owned(),
            key: None,
            domain: None,
        }
    }

    pub fn send(&self, method: &str, path: &str, body: Option<&str>) -> Reply {
        let url = if path.starts_with("http") {
            path.to_owned()
        } else {
            format!("{}{path}", self.base_url)
        };
        let mut request = ureq::request(method, &url).timeout(Duration::from_secs(30));
        if let Some(key) = &self.key {
            request = request.set("key", key);
        }
        if let Some(domain) = &self.domain {
            request = request.set("domain", domain);
        }
        let result = match body {
            Some(body) => request.send_string(body),
            None => request.call(),
        };
        let response = match result {
            Ok(response) | Err(ureq::Error::Status(_, response)) => response,
            Err(error) => panic!("{method} {path} failed: {error}"),
        };
        let status = response.status();
        let content_type = response
            .header("Content-Type")
            .unwrap_or_default()
            .to_owned();
        let text = response.into_string().unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Reply {
            status,
            body,
            content_type,
        }
    }

    pub fn post(&self, path: &str, body: &str) -> Reply {
        self.send("POST", path, Some(body))
    }

    pub fn get(&self, path: &str) -> Reply {
        self.send("GET", path, None)
    }

    pub fn delete(&self, path: &str) -> Reply {
        self.send("DELETE", path, None)
    }

    pub fn patch(&self, path: &str, body: &str) -> Reply {
        self.send("PATCH", path, Some(body))
    }

    /// Subscribes and returns the new hook's id, asserting a 201.
    pub fn subscribe(&self, target_url: &str, event: &str) -> String {
        let reply = self.post(
            "/v2/hooks",
            &serde_json::json!({ "target_url": target_url, "event": event }).to_string(),
        );
        assert_eq!(
            reply.status, 201,
            "subscribe {target_url} {event}: {:?}",
            reply.body
        );
        reply.body["id"].as_str().unwrap().to_owned()
    }

    /// Creates a resource and returns its id, asserting a 201.
    pub fn create(&self, kind: &str, document: Value) -> String {
        let reply = self.post(&format!("/v2/{kind}"), &document.to_string());
        assert_eq!(reply.status, 201, "create {kind}: {:?}", reply.body);
        reply.body["id"].as_str().unwrap().to_owned()
    }
}

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub at: Instant,
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: String,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
            .unwrap_or("")
    }
}

/// What the receiver answers: a status and extra headers.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
}

impl From<u16> for Answer {
    fn from(status: u16) -> Self {
        Answer {
            status,
            headers: Vec::new(),
        }
    }
}

/// An HTTP/1.1 receiver on 127.0.0.1 that records every request and answers
/// from a script of statuses, then with the default status.
#[derive(Clone)]
pub struct Receiver {
    pub address: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    script: Arc<Mutex<VecDeque<Answer>>>,
    default_answer: Arc<Mutex<Answer>>,
    delay: Arc<Mutex<Duration>>,
}

impl Receiver {
    pub fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let receiver = Receiver {
            address: listener.local_addr().unwrap(),
            received: Arc::default(),
            script: Arc::default(),
            default_answer: Arc::new(Mutex::new(Answer::from(200))),
            delay: Arc::default(),
        };
        let accepting = receiver.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let connection = accepting.clone();
                std::thread::spawn(move || connection.serve(stream));
            }
        });
        receiver
    }

    /// The URL of `path` on this receiver.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// Answers the next requests with these statuses, in order.
    pub fn script(&self, answers: impl IntoIterator<Item = impl Into<Answer>>) {
        self.script
            .lock()
            .unwrap()
            .extend(answers.into_iter().map(Into::into));
    }

    pub fn set_default(&self, answer: impl Into<Answer>) {
        *self.default_answer.lock().unwrap() = answer.into();
    }

    /// Waits this long after recording a request before answering it.
    pub fn set_delay(&self, delay: Duration) {
        *self.delay.lock().unwrap() = delay;
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    pub fn received_on(&self, path: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|request| request.path == path)
            .collect()
    }

    /// Waits until at least `count` requests have arrived on `path`.
    pub fn wait_for(&self, path: &str, count: usize) -> Vec<Received> {
        wait_until(&format!("{count} requests reach {path}"), || {
            self.received_on(path).len() >= count
        });
        self.received_on(path)
    }

    fn serve(&self, stream: TcpStream) {
        let mut writer = stream.try_clone().unwrap();
        let mut reader = BufReader::new(stream);
        loop {
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
                return;
            }
            let path = request_line
                .split_whitespace()
                .nth(1)
                .unwrap_or("")
                .to_owned();
            let mut headers = HashMap::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                let line = line.trim_end();
                if line.is_empty() {
                    break;
                }
                if let Some((name, value)) = line.split_once(':') {
                    headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
                }
            }
            let length: usize = headers
                .get("content-length")
                .and_then(|value| value.parse().ok())
                .unwrap_or(0);
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_err() {
                return;
            }
            self.received.lock().unwrap().push(Received {
                at: Instant::now(),
                path,
                headers,
                body: String::from_utf8_lossy(&body).into_owned(),
            });

            let delay = *self.delay.lock().unwrap();
            if !delay.is_zero() {
                std::thread::sleep(delay);
            }
            let answer = self
                .script
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or_else(|| self.default_answer.lock().unwrap().clone());
            let mut response = format!("HTTP/1.1 {} Test\r\nContent-Length: 2\r\n", answer.status);
            for (name, value) in &answer.headers {
                response.push_str(&format!("{name}: {value}\r\n"));
            }
            response.push_str("\r\nok");
            if writer.write_all(response.as_bytes()).is_err() {
                return;
            }
        }
    }
}

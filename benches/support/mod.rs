//! Building blocks of the benchmark: a fast loopback receiver, a receiver
//! that never answers, the hookd process, a memory sampler and the result
//! table.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[derive(Default)]
struct ReceiverState {
    /// How long to wait before answering each request.
    delay: Duration,
    total: AtomicUsize,
    arrivals: Mutex<Vec<(Instant, String)>>,
}

/// An HTTP/1.1 keep-alive receiver that answers 200 at once and records
/// when each notification arrived.
#[derive(Clone)]
pub struct Receiver {
    port: u16,
    state: Arc<ReceiverState>,
}

const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";

impl Receiver {
    pub fn start() -> Receiver {
        Self::listen(TcpListener::bind("127.0.0.1:0").unwrap(), Duration::ZERO)
    }

    /// A receiver that answers each request after `delay`.
    pub fn start_slow(delay: Duration) -> Receiver {
        Self::listen(TcpListener::bind("127.0.0.1:0").unwrap(), delay)
    }

    /// Starts on a given port, for a receiver that comes back.
    pub fn start_on(port: u16) -> Receiver {
        Self::listen(
            TcpListener::bind(("127.0.0.1", port)).expect("the receiver's port is free again"),
            Duration::ZERO,
        )
    }

    fn listen(listener: TcpListener, delay: Duration) -> Receiver {
        let receiver = Receiver {
            port: listener.local_addr().unwrap().port(),
            state: Arc::new(ReceiverState {
                delay,
                ..ReceiverState::default()
            }),
        };
        let state = receiver.state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let state = state.clone();
                std::thread::spawn(move || serve(stream, &state));
            }
        });
        receiver
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn reset(&self) {
        self.state.total.store(0, Ordering::SeqCst);
        self.state.arrivals.lock().unwrap().clear();
    }

    pub fn total(&self) -> usize {
        self.state.total.load(Ordering::SeqCst)
    }

    /// Waits until `count` requests have arrived; panics after `timeout`.
    pub fn wait_for_total(&self, count: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.total() < count {
            assert!(
                Instant::now() < deadline,
                "only {} of {count} notifications arrived within {timeout:?}",
                self.total()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    pub fn last_arrival(&self) -> Option<Instant> {
        self.state
            .arrivals
            .lock()
            .unwrap()
            .iter()
            .map(|(at, _)| *at)
            .max()
    }

    /// First arrival of each resource id.
    pub fn arrivals_by_resource(&self) -> HashMap<String, Instant> {
        let mut arrivals = HashMap::new();
        for (at, id) in self.state.arrivals.lock().unwrap().iter() {
            arrivals.entry(id.clone()).or_insert(*at);
        }
        arrivals
    }
}

fn serve(stream: TcpStream, state: &ReceiverState) {
    let _ = stream.set_nodelay(true);
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    loop {
        let mut length = 0usize;
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if line == "\r\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let arrived = Instant::now();
        let text = String::from_utf8_lossy(&body);
        let id = text
            .rsplit('/')
            .next()
            .map(|tail| tail.trim_end_matches(['"', '}', ' ']).to_owned())
            .unwrap_or_default();
        state.arrivals.lock().unwrap().push((arrived, id));
        if !state.delay.is_zero() {
            std::thread::sleep(state.delay);
        }
        state.total.fetch_add(1, Ordering::SeqCst);
        if writer.write_all(ANSWER).is_err() {
            return;
        }
    }
}

/// Accepts connections and never answers, for at most ten minutes.
pub struct BlackHole {
    port: u16,
    stop: Arc<AtomicBool>,
}

impl BlackHole {
    pub fn start() -> BlackHole {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            let until = Instant::now() + Duration::from_secs(600);
            while !stopping.load(Ordering::SeqCst) && Instant::now() < until {
                match listener.accept() {
                    Ok((stream, _)) => held.push(stream),
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        BlackHole { port, stop }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for BlackHole {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// The notification body a baseline sender posts, of the size hookd sends.
const BASELINE_BODY: &str =
    r#"{"resource_url": "http://127.0.0.1:8080/v2/projects/0123456789abcdef0123456789abcdef"}"#;

/// Requests per second that `threads` blocking ureq senders, each with its
/// own agent and kept-alive connection, reach against `receiver`.
pub fn raw_baseline(receiver: &Receiver, threads: usize, duration: Duration) -> f64 {
    receiver.reset();
    let url = receiver.url("/baseline");
    let started = Instant::now();
    let sent = run_parallel(threads, duration, |agent| {
        agent
            .post(&url)
            .set("Content-Type", "application/json")
            .send_string(BASELINE_BODY)
            .expect("baseline request");
    });
    let rate = sent.len() as f64 / started.elapsed().as_secs_f64();
    receiver.reset();
    rate
}

/// Runs `work` in a loop on `threads` threads, each with its own ureq
/// agent, until `duration` has passed, and returns every result.
pub fn run_parallel<T: Send>(
    threads: usize,
    duration: Duration,
    work: impl Fn(&ureq::Agent) -> T + Sync,
) -> Vec<T> {
    let started = Instant::now();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let work = &work;
                scope.spawn(move || {
                    let agent = ureq::AgentBuilder::new().build();
                    let mut results = Vec::new();
                    while started.elapsed() < duration {
                        results.push(work(&agent));
                    }
                    results
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|handle| handle.join().unwrap())
            .collect()
    })
}

/// POSTs JSON with the given key in domain `localhost` and returns the
/// answer; panics on anything but 2xx.
pub fn post_json(agent: &ureq::Agent, url: &str, key: &str, body: &Value) -> Value {
    match agent
        .post(url)
        .set("key", key)
        .set("domain", "localhost")
        .set("Content-Type", "application/json")
        .send_string(&body.to_string())
    {
        Ok(response) => serde_json::from_str(&response.into_string().unwrap()).unwrap(),
        Err(ureq::Error::Status(status, response)) => {
            panic!(
                "POST {url} answered {status}: {}",
                response.into_string().unwrap_or_default()
            )
        }
        Err(error) => panic!("POST {url} failed: {error}"),
    }
}

pub fn get(agent: &ureq::Agent, url: &str, key: &str) -> Value {
    match agent
        .get(url)
        .set("key", key)
        .set("domain", "localhost")
        .call()
    {
        Ok(response) => serde_json::from_str(&response.into_string().unwrap()).unwrap(),
        Err(error) => panic!("GET {url} failed: {error}"),
    }
}

/// The release hookd, started with `serve` on a free loopback port.
pub struct Hookd {
    child: Option<Child>,
    base_url: String,
    data_dir: Option<tempfile::TempDir>,
}

impl Hookd {
    pub fn start(environment: &[(&str, &str)]) -> Hookd {
        Self::start_in(tempfile::tempdir().unwrap(), environment)
    }

    pub fn start_in(data_dir: tempfile::TempDir, environment: &[(&str, &str)]) -> Hookd {
        let port = free_port();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data_dir.path().join("hookd.log"))
            .unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_hookd"));
        command
            .arg("serve")
            .env("HOOKD_LISTEN", format!("127.0.0.1:{port}"))
            .env("HOOKD_DATA_DIR", data_dir.path())
            .env("HOOKD_DELIVERY__ALLOWED_NETWORKS", r#"["127.0.0.0/8"]"#)
            .env("HOOKD_MAX_SUBSCRIPTIONS_PER_USER", "100000")
            // Errors only: per-attempt log lines would measure the terminal.
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(log);
        for (name, value) in environment {
            command.env(name, value);
        }
        let child = command.spawn().expect("hookd starts");
        let hookd = Hookd {
            child: Some(child),
            base_url: format!("http://127.0.0.1:{port}"),
            data_dir: Some(data_dir),
        };

        let deadline = Instant::now() + Duration::from_secs(60);
        while ureq::get(&hookd.url("/healthz")).call().is_err() {
            assert!(Instant::now() < deadline, "hookd did not answer /healthz");
            std::thread::sleep(Duration::from_millis(20));
        }
        hookd
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    fn data_path(&self) -> &Path {
        self.data_dir.as_ref().unwrap().path()
    }

    /// Creates a user in domain `localhost` with the CLI and returns its key.
    pub fn create_user(&self, name: &str) -> String {
        let output = Command::new(env!("CARGO_BIN_EXE_hookd"))
            .args(["user", "add", "--domain", "localhost", "--name", name])
            .env("HOOKD_DATA_DIR", self.data_path())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap().trim().to_owned()
    }

    pub fn subscribe(&self, key: &str, target: &str, event: &str) {
        let agent = ureq::AgentBuilder::new().build();
        post_json(
            &agent,
            &self.url("/v2/hooks"),
            key,
            &json!({"target_url": target, "event": event}),
        );
    }

    /// Subscribes every target, `threads` requests at a time.
    pub fn subscribe_many(&self, key: &str, targets: &[String], event: &str, threads: usize) {
        let chunk = targets.len().div_ceil(threads.max(1)).max(1);
        std::thread::scope(|scope| {
            for part in targets.chunks(chunk) {
                scope.spawn(move || {
                    let agent = ureq::AgentBuilder::new().build();
                    for target in part {
                        post_json(
                            &agent,
                            &self.url("/v2/hooks"),
                            key,
                            &json!({"target_url": target, "event": event}),
                        );
                    }
                });
            }
        });
    }

    /// Polls the database until `sql` returns `expected`.
    pub fn wait_for_sql(&self, sql: &str, expected: i64, timeout: Duration) {
        let connection = rusqlite::Connection::open(self.data_path().join("hookd.db")).unwrap();
        let deadline = Instant::now() + timeout;
        loop {
            let found: i64 = connection.query_row(sql, [], |row| row.get(0)).unwrap();
            if found == expected {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{sql} returned {found}, expected {expected}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops hookd with SIGTERM and returns its data directory.
    pub fn stop(mut self) -> tempfile::TempDir {
        self.terminate();
        self.data_dir.take().unwrap()
    }

    fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let status = child.wait().unwrap();
            assert!(status.success(), "hookd exited with {status}");
        }
    }
}

impl Drop for Hookd {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// Samples a process's resident memory every 10 ms.
pub struct MemorySampler {
    peak: Arc<AtomicU64>,
    current: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

fn status_field(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn resident_kib(pid: u32) -> Option<u64> {
    status_field(pid, "VmRSS:")
}

/// Threads of a process now.
pub fn thread_count(pid: u32) -> u64 {
    status_field(pid, "Threads:").unwrap_or(0)
}

/// Resident memory of a process now, in KiB.
pub fn resident_now_kib(pid: u32) -> u64 {
    resident_kib(pid).unwrap_or(0)
}

impl MemorySampler {
    pub fn start(pid: u32) -> MemorySampler {
        let sampler = MemorySampler {
            peak: Arc::default(),
            current: Arc::default(),
            stop: Arc::default(),
        };
        let (peak, current, stop) = (
            sampler.peak.clone(),
            sampler.current.clone(),
            sampler.stop.clone(),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                if let Some(kib) = resident_kib(pid) {
                    current.store(kib, Ordering::SeqCst);
                    peak.fetch_max(kib, Ordering::SeqCst);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        sampler
    }

    pub fn reset_peak(&self) {
        self.peak
            .store(self.current.load(Ordering::SeqCst), Ordering::SeqCst);
    }

    pub fn peak_kib(&self) -> u64 {
        self.peak.load(Ordering::SeqCst)
    }

    pub fn current_kib(&self) -> u64 {
        self.current.load(Ordering::SeqCst)
    }
}

impl Drop for MemorySampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// The value at `fraction` (0 to 1) of a sorted sample.
pub fn percentile(sorted: &[f64], fraction: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() - 1) as f64 * fraction).round() as usize;
    sorted[index]
}

/// One scenario's figures.
#[derive(Clone, Debug, Default)]
pub struct Row {
    pub scenario: String,
    pub delivered_per_second: f64,
    pub ratio_to_baseline: f64,
    pub api_per_second: f64,
    pub latency_ms: Option<(f64, f64, f64)>,
    pub peak_rss_kib: u64,
    pub note: String,
    pub extra: Map<String, Value>,
}

impl Row {
    pub fn new(scenario: &str) -> Row {
        Row {
            scenario: scenario.into(),
            ..Row::default()
        }
    }

    pub fn delivered(mut self, count: usize, elapsed: Duration) -> Row {
        self.delivered_per_second = count as f64 / elapsed.as_secs_f64().max(1e-9);
        self
    }

    pub fn api(mut self, count: usize, elapsed: Duration) -> Row {
        self.api_per_second = count as f64 / elapsed.as_secs_f64().max(1e-9);
        self
    }

    pub fn latencies(mut self, mut values: Vec<f64>) -> Row {
        values.sort_by(|a, b| a.partial_cmp(b).unwrap());
        self.latency_ms = Some((
            percentile(&values, 0.50),
            percentile(&values, 0.99),
            values.last().copied().unwrap_or(0.0),
        ));
        self
    }

    pub fn memory(mut self, peak_kib: u64) -> Row {
        self.peak_rss_kib = peak_kib;
        self
    }
}

/// Every row of a run, with the baseline and the machine.
pub struct Results {
    pub baseline: f64,
    pub rows: Vec<Row>,
    pub idle_rss_kib: u64,
    pub smoke: bool,
    /// Resident memory (KiB), threads, and the wait after the latency
    /// scenarios when they were read.
    pub idle_after_load: Option<(u64, u64, Duration)>,
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split(':').nth(1))
                .map(|name| name.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|count| count.get())
        .unwrap_or(0);
    format!("{cores} cores, {cpu}")
}

impl Results {
    pub fn new(baseline: f64, smoke: bool) -> Results {
        Results {
            baseline,
            rows: Vec::new(),
            idle_rss_kib: 0,
            smoke,
            idle_after_load: None,
        }
    }

    pub fn push(&mut self, mut row: Row) {
        if row.delivered_per_second > 0.0 {
            row.ratio_to_baseline = row.delivered_per_second / self.baseline;
        }
        eprintln!("{}: done", row.scenario);
        self.rows.push(row);
    }

    pub fn print(&self) {
        println!();
        println!("machine: {}", machine());
        if self.smoke {
            println!("SMOKE RUN: sizes are tiny; the figures are not measurements.");
        }
        println!(
            "raw baseline: {:.0} requests/s (4 ureq threads)",
            self.baseline
        );
        println!(
            "idle resident memory: {:.1} MiB",
            self.idle_rss_kib as f64 / 1024.0
        );
        if let Some((kib, threads, wait)) = self.idle_after_load {
            println!(
                "{} after the latency scenarios: {:.1} MiB resident, {threads} threads",
                humantime::format_duration(wait),
                kib as f64 / 1024.0
            );
        }
        println!();
        println!(
            "| scenario | delivered/s | ratio to baseline | API req/s | latency p50 / p99 / max (ms) | peak RSS (MiB) | note |"
        );
        println!("| --- | ---: | ---: | ---: | --- | ---: | --- |");
        for row in &self.rows {
            let latency = match row.latency_ms {
                Some((p50, p99, max)) => format!("{p50:.2} / {p99:.2} / {max:.2}"),
                None => "-".into(),
            };
            let number = |value: f64| {
                if value > 0.0 {
                    format!("{value:.0}")
                } else {
                    "-".into()
                }
            };
            let ratio = if row.ratio_to_baseline > 0.0 {
                format!("{:.2}", row.ratio_to_baseline)
            } else {
                "-".into()
            };
            println!(
                "| {} | {} | {} | {} | {} | {:.1} | {} |",
                row.scenario,
                number(row.delivered_per_second),
                ratio,
                number(row.api_per_second),
                latency,
                row.peak_rss_kib as f64 / 1024.0,
                row.note
            );
        }
    }

    pub fn write_json(&self, path: &str) {
        let rows: Vec<Value> = self
            .rows
            .iter()
            .map(|row| {
                let mut object = json!({
                    "scenario": row.scenario,
                    "delivered_per_second": row.delivered_per_second,
                    "ratio_to_baseline": row.ratio_to_baseline,
                    "api_requests_per_second": row.api_per_second,
                    "latency_ms": row.latency_ms.map(|(p50, p99, max)| json!({"p50": p50, "p99": p99, "max": max})),
                    "peak_rss_mib": row.peak_rss_kib as f64 / 1024.0,
                    "note": row.note,
                });
                for (name, value) in &row.extra {
                    object[name] = value.clone();
                }
                object
            })
            .collect();
        let document = json!({
            "machine": machine(),
            "smoke": self.smoke,
            "baseline_requests_per_second": self.baseline,
            "idle_rss_mib": self.idle_rss_kib as f64 / 1024.0,
            "after_load": self.idle_after_load.map(|(kib, threads, wait)| json!({
                "wait_seconds": wait.as_secs_f64(),
                "rss_mib": kib as f64 / 1024.0,
                "threads": threads,
            })),
            "scenarios": rows,
        });
        if let Some(parent) = Path::new(path).parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        std::fs::write(path, serde_json::to_string_pretty(&document).unwrap()).unwrap();
    }
}

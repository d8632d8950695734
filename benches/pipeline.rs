//! End-to-end benchmark: drives the release `hookd` through its API against
//! a fast loopback receiver and compares delivery rates with a raw ureq
//! baseline measured in the same run.
//!
//! Run: `cargo bench --bench pipeline` (full) or add `-- --smoke` for a run
//! of a few seconds. Results go to stdout as a table and to
//! `target/bench-results.json` (or the path after `--json`).

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use support::{
    BlackHole, Hookd, MemorySampler, Receiver, Results, Row, post_json, raw_baseline, run_parallel,
};

/// Sizes of one run.
struct Scale {
    baseline_time: Duration,
    one_to_one_time: Duration,
    fan_out: usize,
    steady_time: Duration,
    backlog_subscriptions: usize,
    backlog_events: usize,
    slow_neighbour_time: Duration,
    api_time: Duration,
    /// API client threads. The API acknowledges an event after a synced
    /// commit, so its rate grows with the requests that share each commit.
    client_threads: usize,
    /// Events per latency scenario; each fans out to 200 subscriptions.
    latency_events: usize,
    /// Events of the mixed scenario; each fans out to 100 subscriptions.
    mixed_events: usize,
    /// Wait after load before reading idle memory and threads.
    idle_wait: Duration,
}

impl Scale {
    fn full() -> Scale {
        Scale {
            baseline_time: Duration::from_secs(3),
            one_to_one_time: Duration::from_secs(5),
            fan_out: 10_000,
            steady_time: Duration::from_secs(5),
            backlog_subscriptions: 10_000,
            backlog_events: 10,
            slow_neighbour_time: Duration::from_secs(5),
            api_time: Duration::from_secs(2),
            client_threads: 64,
            latency_events: 60,
            mixed_events: 100,
            idle_wait: Duration::from_secs(60),
        }
    }

    fn smoke() -> Scale {
        Scale {
            baseline_time: Duration::from_millis(300),
            one_to_one_time: Duration::from_millis(500),
            fan_out: 200,
            steady_time: Duration::from_millis(500),
            backlog_subscriptions: 100,
            backlog_events: 2,
            slow_neighbour_time: Duration::from_millis(500),
            api_time: Duration::from_millis(300),
            client_threads: 4,
            latency_events: 1,
            mixed_events: 2,
            idle_wait: Duration::from_millis(100),
        }
    }
}

fn main() {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    let smoke = arguments.iter().any(|argument| argument == "--smoke");
    let json_path = arguments
        .iter()
        .position(|argument| argument == "--json")
        .and_then(|index| arguments.get(index + 1).cloned())
        .unwrap_or_else(|| "target/bench-results.json".into());
    let mut scale = if smoke { Scale::smoke() } else { Scale::full() };
    // `--clients N` sets the number of API client threads.
    if let Some(clients) = arguments
        .iter()
        .position(|argument| argument == "--clients")
        .and_then(|index| arguments.get(index + 1))
    {
        scale.client_threads = match clients.parse() {
            Ok(count) if count > 0 => count,
            _ => {
                eprintln!("invalid --clients value {clients:?}: expected a positive whole number");
                std::process::exit(2);
            }
        };
    }
    // `--only NAME` runs one scenario after the one-to-one run it needs.
    let only = arguments
        .iter()
        .position(|argument| argument == "--only")
        .and_then(|index| arguments.get(index + 1).cloned());
    let wanted = |name: &str| only.as_deref().is_none_or(|only| only == name);

    let receiver = Receiver::start();
    eprintln!("measuring the raw ureq baseline");
    let baseline = raw_baseline(&receiver, 4, scale.baseline_time);
    let mut results = Results::new(baseline, smoke);

    let hookd = Hookd::start(&[]);
    let memory = MemorySampler::start(hookd.pid());
    std::thread::sleep(Duration::from_millis(300));
    results.idle_rss_kib = memory.current_kib();

    let one_to_one = one_to_one(
        &hookd,
        &receiver,
        &memory,
        scale.client_threads,
        scale.one_to_one_time,
        "one-to-one",
    );
    results.push(one_to_one.clone());
    if wanted("fan-out") {
        results.push(fan_out(&hookd, &receiver, &memory, &scale));
    }
    if wanted("steady") {
        let rate = one_to_one.api_per_second;
        results.push(steady_latency(&hookd, &receiver, &memory, &scale, rate));
    }
    if wanted("slow-neighbour") {
        let rate = one_to_one.delivered_per_second;
        results.push(slow_neighbour(&hookd, &receiver, &memory, &scale, rate));
    }
    if wanted("api") {
        results.push(api_only(&hookd, &memory, &scale));
    }
    if wanted("latency") {
        results.push(slow_receivers(
            &hookd,
            &memory,
            &scale,
            Duration::from_millis(100),
            None,
        ));
        let instant_rate = one_to_one.delivered_per_second;
        results.push(slow_receivers(
            &hookd,
            &memory,
            &scale,
            Duration::from_millis(10),
            Some(instant_rate),
        ));
        results.push(mixed(&hookd, &memory, &scale));

        std::thread::sleep(scale.idle_wait);
        results.idle_after_load = Some((
            support::resident_now_kib(hookd.pid()),
            support::thread_count(hookd.pid()),
            scale.idle_wait,
        ));
    }
    drop(memory);
    hookd.stop();

    if wanted("backlog") {
        results.push(backlog_drain(&scale));
    }

    results.print();
    results.write_json(&json_path);
    eprintln!("results written to {json_path}");
}

/// Creates a user and returns its key.
fn new_user(hookd: &Hookd, name: &str) -> String {
    hookd.create_user(name)
}

/// Events as fast as the API takes them, each with one subscription.
fn one_to_one(
    hookd: &Hookd,
    receiver: &Receiver,
    memory: &MemorySampler,
    threads: usize,
    duration: Duration,
    label: &str,
) -> Row {
    let key = new_user(hookd, &format!("{label}-user"));
    let path = format!("/{label}");
    hookd.subscribe(&key, &receiver.url(&path), "new_project");
    receiver.reset();
    memory.reset_peak();

    let started = Instant::now();
    let answered = run_parallel(threads, duration, |agent| {
        let reply = post_json(
            agent,
            &hookd.url("/v2/projects"),
            &key,
            &json!({"name": "bench"}),
        );
        let id = reply["id"].as_str().expect("project id").to_owned();
        (id, Instant::now())
    });
    let api_elapsed = started.elapsed();
    let events = answered.len();
    receiver.wait_for_total(events, Duration::from_secs(120));
    let delivered_elapsed = receiver.last_arrival().unwrap_or_else(Instant::now) - started;

    let latencies = latencies(&answered, receiver);
    Row::new(label)
        .delivered(events, delivered_elapsed)
        .api(events, api_elapsed)
        .latencies(latencies)
        .memory(memory.peak_kib())
}

/// Milliseconds from each API answer to the receiver's arrival.
fn latencies(answered: &[(String, Instant)], receiver: &Receiver) -> Vec<f64> {
    let arrivals: HashMap<String, Instant> = receiver.arrivals_by_resource();
    answered
        .iter()
        .filter_map(|(id, answered_at)| {
            arrivals.get(id).map(|arrived| {
                arrived
                    .saturating_duration_since(*answered_at)
                    .as_secs_f64()
                    * 1000.0
            })
        })
        .collect()
}

/// One event, `scale.fan_out` subscriptions of one user.
fn fan_out(hookd: &Hookd, receiver: &Receiver, memory: &MemorySampler, scale: &Scale) -> Row {
    let key = new_user(hookd, "fan-out-user");
    eprintln!("creating {} subscriptions for fan-out", scale.fan_out);
    let targets: Vec<String> = (0..scale.fan_out)
        .map(|index| receiver.url(&format!("/fan/{index}")))
        .collect();
    hookd.subscribe_many(&key, &targets, "new_client", scale.client_threads);
    receiver.reset();
    memory.reset_peak();

    let agent = ureq::AgentBuilder::new().build();
    let started = Instant::now();
    post_json(
        &agent,
        &hookd.url("/v2/clients"),
        &key,
        &json!({"name": "fan-out"}),
    );
    let api_ms = started.elapsed().as_secs_f64() * 1000.0;
    receiver.wait_for_total(scale.fan_out, Duration::from_secs(120));
    let elapsed = receiver.last_arrival().unwrap_or_else(Instant::now) - started;

    let mut row = Row::new("fan-out")
        .delivered(scale.fan_out, elapsed)
        .memory(memory.peak_kib());
    row.note = format!(
        "API answered in {api_ms:.1} ms; all delivered in {:.0} ms",
        elapsed.as_secs_f64() * 1000.0
    );
    row.extra.insert("api_ms".into(), json!(api_ms));
    row.extra.insert(
        "all_delivered_ms".into(),
        json!(elapsed.as_secs_f64() * 1000.0),
    );
    row
}

/// Evenly paced events at a fifth of the one-to-one API rate.
fn steady_latency(
    hookd: &Hookd,
    receiver: &Receiver,
    memory: &MemorySampler,
    scale: &Scale,
    one_to_one_rate: f64,
) -> Row {
    let key = new_user(hookd, "steady-user");
    hookd.subscribe(&key, &receiver.url("/steady"), "new_task");
    receiver.reset();
    memory.reset_peak();

    let rate = (one_to_one_rate * 0.2).max(10.0);
    let interval = Duration::from_secs_f64(1.0 / rate);
    let agent = ureq::AgentBuilder::new().build();
    let started = Instant::now();
    let mut answered = Vec::new();
    let mut next = started;
    while started.elapsed() < scale.steady_time {
        let now = Instant::now();
        if now < next {
            std::thread::sleep(next - now);
        }
        next += interval;
        let reply = post_json(
            &agent,
            &hookd.url("/v2/tasks"),
            &key,
            &json!({"name": "steady"}),
        );
        answered.push((reply["id"].as_str().unwrap().to_owned(), Instant::now()));
    }
    let api_elapsed = started.elapsed();
    receiver.wait_for_total(answered.len(), Duration::from_secs(60));
    let delivered_elapsed = receiver.last_arrival().unwrap_or_else(Instant::now) - started;

    let mut row = Row::new("steady latency")
        .delivered(answered.len(), delivered_elapsed)
        .api(answered.len(), api_elapsed)
        .latencies(latencies(&answered, receiver))
        .memory(memory.peak_kib());
    row.note = format!("paced at {rate:.0} events/s");
    row
}

/// One host never answers while another takes one-to-one load.
fn slow_neighbour(
    hookd: &Hookd,
    receiver: &Receiver,
    memory: &MemorySampler,
    scale: &Scale,
    one_to_one_rate: f64,
) -> Row {
    let black_hole = BlackHole::start();
    let key = new_user(hookd, "slow-user");
    let targets: Vec<String> = (0..50)
        .map(|index| black_hole.url(&format!("/never/{index}")))
        .collect();
    hookd.subscribe_many(&key, &targets, "new_event", scale.client_threads);
    let agent = ureq::AgentBuilder::new().build();
    for _ in 0..4 {
        post_json(
            &agent,
            &hookd.url("/v2/events"),
            &key,
            &json!({"title": "never answered", "start": "2026-12-04T10:00:00Z"}),
        );
    }

    let mut row = one_to_one(
        hookd,
        receiver,
        memory,
        scale.client_threads,
        scale.slow_neighbour_time,
        "slow-neighbour",
    );
    row.scenario = "slow neighbour".into();
    let ratio = row.delivered_per_second / one_to_one_rate.max(1.0);
    row.note = format!("healthy host at {ratio:.2} of its one-to-one rate");
    row.extra.insert("ratio_to_one_to_one".into(), json!(ratio));
    drop(black_hole);
    row
}

/// Requests per second of subscribe, list and resource GET.
fn api_only(hookd: &Hookd, memory: &MemorySampler, scale: &Scale) -> Row {
    let key = new_user(hookd, "api-user");
    memory.reset_peak();
    let agent = ureq::AgentBuilder::new().build();
    let project = post_json(
        &agent,
        &hookd.url("/v2/projects"),
        &key,
        &json!({"name": "read me"}),
    );
    let project_url = hookd.url(&format!("/v2/projects/{}", project["id"].as_str().unwrap()));

    let counter = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let subscribed = run_parallel(scale.client_threads, scale.api_time, |agent| {
        let index = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Nothing fires these subscriptions, so no notification is sent.
        let target = format!("http://127.0.0.1:9/api-only/{index}");
        post_json(
            agent,
            &hookd.url("/v2/hooks"),
            &key,
            &json!({"target_url": target, "event": "new_subtask"}),
        );
    });
    let subscribe_rate = subscribed.len() as f64 / started.elapsed().as_secs_f64();

    let list_key = new_user(hookd, "api-list-user");
    let few: Vec<String> = (0..10)
        .map(|index| format!("http://127.0.0.1:9/list/{index}"))
        .collect();
    hookd.subscribe_many(&list_key, &few, "new_subtask", 2);
    let started = Instant::now();
    let listed = run_parallel(scale.client_threads, scale.api_time, |agent| {
        support::get(agent, &hookd.url("/v2/hooks"), &list_key);
    });
    let list_rate = listed.len() as f64 / started.elapsed().as_secs_f64();

    let started = Instant::now();
    let fetched = run_parallel(scale.client_threads, scale.api_time, |agent| {
        support::get(agent, &project_url, &key);
    });
    let get_rate = fetched.len() as f64 / started.elapsed().as_secs_f64();

    let mut row = Row::new("API only").memory(memory.peak_kib());
    row.note = format!(
        "subscribe {subscribe_rate:.0}/s, list {list_rate:.0}/s, resource GET {get_rate:.0}/s"
    );
    row.api_per_second = get_rate;
    row.extra
        .insert("subscribe_per_second".into(), json!(subscribe_rate));
    row.extra.insert("list_per_second".into(), json!(list_rate));
    row.extra
        .insert("resource_get_per_second".into(), json!(get_rate));
    row
}

/// Notifications queue up while the receiver refuses connections; a
/// restart with short waits then drains them into the recovered receiver.
fn backlog_drain(scale: &Scale) -> Row {
    let total = scale.backlog_subscriptions * scale.backlog_events;
    let port = support::free_port();
    let hookd = Hookd::start(&[("HOOKD_DELIVERY__RETRY_WAITS", r#"["1h"]"#)]);
    let key = hookd.create_user("backlog-user");
    let targets: Vec<String> = (0..scale.backlog_subscriptions)
        .map(|index| format!("http://127.0.0.1:{port}/drain/{index}"))
        .collect();
    eprintln!("queueing {total} notifications for a receiver that is down");
    hookd.subscribe_many(&key, &targets, "new_client", scale.client_threads);
    let agent = ureq::AgentBuilder::new().build();
    for _ in 0..scale.backlog_events {
        post_json(
            &agent,
            &hookd.url("/v2/clients"),
            &key,
            &json!({"name": "backlog"}),
        );
    }
    hookd.wait_for_sql(
        "SELECT count(*) FROM notifications WHERE state = 'pending' AND attempts = 1",
        total as i64,
        Duration::from_secs(600),
    );
    let data_dir = hookd.stop();

    let receiver = Receiver::start_on(port);
    let hookd = Hookd::start_in(data_dir, &[("HOOKD_DELIVERY__RETRY_WAITS", r#"["1s"]"#)]);
    let memory = MemorySampler::start(hookd.pid());
    let started = Instant::now();
    receiver.wait_for_total(total, Duration::from_secs(600));
    let elapsed = receiver.last_arrival().unwrap_or_else(Instant::now) - started;
    let peak = memory.peak_kib();
    drop(memory);
    hookd.stop();

    let mut row = Row::new("backlog drain")
        .delivered(total, elapsed)
        .memory(peak);
    row.note = format!("{total} queued while the receiver was down; timed from the restart");
    row
}

/// The default `delivery.max_senders`, the pool size the latency scenarios
/// are compared with.
const MAX_SENDERS: f64 = 256.0;

/// 200 subscriptions on 50 receivers that answer after `delay`; events fan
/// out to all of them. With `instant_rate`, the row also gives the ratio to
/// that rate.
fn slow_receivers(
    hookd: &Hookd,
    memory: &MemorySampler,
    scale: &Scale,
    delay: Duration,
    instant_rate: Option<f64>,
) -> Row {
    let delay_ms = delay.as_millis();
    let key = new_user(hookd, &format!("latency-{delay_ms}-user"));
    let receivers: Vec<Receiver> = (0..50).map(|_| Receiver::start_slow(delay)).collect();
    let targets: Vec<String> = receivers
        .iter()
        .flat_map(|receiver| (0..4).map(move |index| receiver.url(&format!("/slow/{index}"))))
        .collect();
    hookd.subscribe_many(&key, &targets, "new_client", scale.client_threads);
    memory.reset_peak();
    let threads_before = support::thread_count(hookd.pid());

    let agent = ureq::AgentBuilder::new().build();
    let total = scale.latency_events * targets.len();
    let started = Instant::now();
    for _ in 0..scale.latency_events {
        post_json(
            &agent,
            &hookd.url("/v2/clients"),
            &key,
            &json!({"name": "slow"}),
        );
    }
    let mut peak_threads = threads_before;
    let deadline = Instant::now() + Duration::from_secs(600);
    while receivers.iter().map(Receiver::total).sum::<usize>() < total {
        assert!(
            Instant::now() < deadline,
            "slow receivers did not get every notification"
        );
        peak_threads = peak_threads.max(support::thread_count(hookd.pid()));
        std::thread::sleep(Duration::from_millis(5));
    }
    let last = receivers
        .iter()
        .filter_map(Receiver::last_arrival)
        .max()
        .unwrap_or_else(Instant::now);
    let elapsed = last - started;

    let mut row = Row::new(&format!("latency {delay_ms} ms"))
        .delivered(total, elapsed)
        .memory(memory.peak_kib());
    let bound = MAX_SENDERS / delay.as_secs_f64();
    let ratio_to_bound = row.delivered_per_second / bound;
    row.note = format!(
        "{total} notifications; {:.2} of max_senders / latency ({bound:.0}/s); threads {threads_before} before, {peak_threads} at peak",
        ratio_to_bound
    );
    row.extra.insert(
        "ratio_to_max_senders_over_latency".into(),
        json!(ratio_to_bound),
    );
    row.extra
        .insert("threads_before".into(), json!(threads_before));
    row.extra.insert("threads_peak".into(), json!(peak_threads));
    if let Some(instant) = instant_rate {
        let ratio = row.delivered_per_second / instant.max(1.0);
        row.note
            .push_str(&format!("; {ratio:.2} of the instant one-to-one rate"));
        row.extra
            .insert("ratio_to_instant_one_to_one".into(), json!(ratio));
    }
    row
}

/// Events whose notifications go 90 % to instant receivers and 10 % to
/// receivers that answer after 1 s, against an all-instant run.
fn mixed(hookd: &Hookd, memory: &MemorySampler, scale: &Scale) -> Row {
    let run = |label: &str, slow_share: usize| -> (f64, usize) {
        let key = new_user(hookd, label);
        let instant: Vec<Receiver> = (0..10).map(|_| Receiver::start()).collect();
        let slow: Vec<Receiver> = (0..5)
            .map(|_| Receiver::start_slow(Duration::from_secs(1)))
            .collect();
        let mut targets: Vec<String> = instant
            .iter()
            .flat_map(|receiver| {
                (0..(100 - slow_share) / 10)
                    .map(move |index| receiver.url(&format!("/fast/{index}")))
            })
            .collect();
        let instant_count = targets.len();
        targets.extend(slow.iter().flat_map(|receiver| {
            (0..slow_share / 5).map(move |index| receiver.url(&format!("/slow/{index}")))
        }));
        hookd.subscribe_many(&key, &targets, "new_event", scale.client_threads);

        let agent = ureq::AgentBuilder::new().build();
        let started = Instant::now();
        for _ in 0..scale.mixed_events {
            post_json(
                &agent,
                &hookd.url("/v2/events"),
                &key,
                &json!({"title": "mixed", "start": "2026-12-04T10:00:00Z"}),
            );
        }
        let expected = instant_count * scale.mixed_events;
        let deadline = Instant::now() + Duration::from_secs(600);
        while instant.iter().map(Receiver::total).sum::<usize>() < expected {
            assert!(
                Instant::now() < deadline,
                "instant receivers did not get every notification"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        let last = instant
            .iter()
            .filter_map(Receiver::last_arrival)
            .max()
            .unwrap_or_else(Instant::now);
        let rate = expected as f64 / (last - started).as_secs_f64();

        // Let the slow receivers finish before the next run.
        let slow_expected = (targets.len() - instant_count) * scale.mixed_events;
        let deadline = Instant::now() + Duration::from_secs(600);
        while slow.iter().map(Receiver::total).sum::<usize>() < slow_expected {
            assert!(
                Instant::now() < deadline,
                "slow receivers did not get every notification"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        (rate, expected)
    };

    memory.reset_peak();
    let (all_instant_rate, _) = run("mixed-all-instant-user", 0);
    let (instant_rate, delivered) = run("mixed-user", 10);
    let ratio = instant_rate / all_instant_rate.max(1.0);
    let mut row = Row::new("mixed").memory(memory.peak_kib());
    row.delivered_per_second = instant_rate;
    row.note = format!(
        "instant receivers at {ratio:.2} of their all-instant rate ({all_instant_rate:.0}/s); {delivered} instant notifications"
    );
    row.extra
        .insert("instant_ratio_to_all_instant".into(), json!(ratio));
    row
}

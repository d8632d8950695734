//! Sender threads: each takes a claimed notification, makes one HTTP
//! attempt with its own ureq agent, and queues the outcome for recording.

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime};

use log::{info, warn};
use url::Url;

use super::Shared;
use super::destination::{GuardedResolver, find_refusal};
use super::policy::{FailureClass, Outcome, classify_status, parse_retry_after, response_prefix};
use super::signing;
use crate::metrics::METRICS;
use crate::store::{AttemptResult, Claimed, NextStep, now_ms};

const USER_AGENT: &str = concat!("hookd/", env!("CARGO_PKG_VERSION"));

/// Builds the ureq agent of one sender thread. One agent per thread keeps each
/// thread's connections alive without contending for a shared pool, and a
/// slow host's connections occupy only the threads waiting on it.
pub(super) fn new_agent(settings: &super::Settings) -> ureq::Agent {
    ureq::AgentBuilder::new()
        .resolver(GuardedResolver::new(settings.guard.clone()))
        .timeout_connect(settings.connect_timeout)
        .timeout(settings.timeout)
        .redirects(0)
        .max_idle_connections(8)
        .max_idle_connections_per_host(2)
        .user_agent(USER_AGENT)
        .build()
}

/// Sends one claimed notification, or keeps it for release on a stop. The
/// host slot it held then passes to the next notification held back for the
/// same host, which this thread sends too, or is freed.
pub(super) fn handle(shared: &Arc<Shared>, agent: &ureq::Agent, claimed: Claimed) {
    let mut next = Some(claimed);
    while let Some(claimed) = next.take() {
        let authority = claimed.authority.clone();
        if shared.stopping.load(Ordering::SeqCst) {
            shared.unsent().push(claimed.notification_id);
        } else {
            deliver(shared, agent, claimed);
        }
        next = shared.finish_attempt(&authority);
    }
}

/// Builds the request body: exactly `{"resource_url": "<url>"}`.
pub fn notification_body(resource_url: &str) -> String {
    format!(
        "{{\"resource_url\": {}}}",
        serde_json::Value::String(resource_url.to_owned())
    )
}

fn deliver(shared: &Arc<Shared>, agent: &ureq::Agent, claimed: Claimed) {
    let settings = &shared.settings;
    let started_at = now_ms();
    let clock = Instant::now();
    let (outcome, body) = attempt(agent, &claimed, settings.max_response_bytes);
    let elapsed = clock.elapsed();
    let duration_ms = elapsed.as_millis() as i64;
    METRICS.attempts.with_label_values(&[outcome.label()]).inc();
    METRICS.attempt_duration.observe(elapsed.as_secs_f64());

    // Only a retry wait uses jitter, and drawing it costs a system call.
    let jitter = match outcome {
        Outcome::Failed { .. } => random_unit(),
        _ => 0.0,
    };
    let next = settings
        .retry
        .next_step(&outcome, claimed.attempt, now_ms(), jitter);
    // The claim already carries host:port; parsing the URL again per attempt
    // would only repeat that work.
    log_outcome(&claimed, &outcome, &next, &claimed.authority, duration_ms);

    let (response_prefix, response_truncated) = match body {
        Some((text, truncated)) => (Some(text), truncated),
        None => (None, false),
    };
    let error = match &outcome {
        Outcome::Failed { detail, .. } => Some(detail.clone()),
        _ => None,
    };
    let result = AttemptResult {
        notification_id: claimed.notification_id.clone(),
        subscription_id: claimed.subscription_id.clone(),
        attempt: claimed.attempt,
        started_at,
        duration_ms,
        outcome: outcome.label(),
        status: outcome.status(),
        error,
        response_prefix,
        response_truncated,
        next,
    };

    super::recorder::record(shared, result);
}

fn log_outcome(
    claimed: &Claimed,
    outcome: &Outcome,
    next: &NextStep,
    host: &str,
    duration_ms: i64,
) {
    // A delivery logs at info and anything else at warn. A line that the
    // log level drops is not built at all.
    let level = match outcome {
        Outcome::Delivered { .. } => log::Level::Info,
        _ => log::Level::Warn,
    };
    if !log::log_enabled!(level) {
        return;
    }
    let status = outcome
        .status()
        .map(|status| status.to_string())
        .unwrap_or_else(|| "-".into());
    let line = format!(
        "attempt notification={} hook={} event={} attempt={} host={host} outcome={} status={status} ms={duration_ms}",
        claimed.notification_id,
        claimed.subscription_id,
        claimed.event,
        claimed.attempt,
        outcome.label(),
    );
    match (outcome, next) {
        (Outcome::Delivered { .. }, _) => info!("{line}"),
        (Outcome::Failed { detail, .. }, NextStep::RetryAt(due_at)) => {
            warn!("{line} error={detail:?} retry_in_ms={}", due_at - now_ms())
        }
        (Outcome::Failed { detail, .. }, _) => warn!("{line} error={detail:?}"),
        _ => warn!("{line}"),
    }
}

/// Makes one HTTP attempt. Returns the outcome and, when the receiver
/// responded, the first bytes of its body.
fn attempt(
    agent: &ureq::Agent,
    claimed: &Claimed,
    max_response_bytes: usize,
) -> (Outcome, Option<(String, bool)>) {
    let body = notification_body(&claimed.resource_url);
    let timestamp = now_ms() / 1000;
    let secrets: Vec<&str> = claimed.secrets.iter().map(String::as_str).collect();
    let signature = signing::signature_header(&secrets, &claimed.notification_id, timestamp, &body);
    let mut request = agent
        .post(&claimed.target_url)
        .set("Content-Type", "application/json")
        .set("webhook-id", &claimed.notification_id)
        .set("webhook-timestamp", &timestamp.to_string())
        .set("webhook-signature", &signature)
        .set("X-Hookd-Event", &claimed.event)
        .set("X-Hookd-Subscription", &claimed.subscription_id)
        .set("X-Hookd-Notification", &claimed.notification_id)
        .set("X-Hookd-Attempt", &claimed.attempt.to_string());

    if let Some(original) = &claimed.redelivery_of {
        request = request.set("X-Hookd-Redelivery-Of", original);
    }

    let response = match request.send_string(&body) {
        Ok(response) | Err(ureq::Error::Status(_, response)) => response,
        Err(ureq::Error::Transport(transport)) => return (classify_transport(&transport), None),
    };

    let status = response.status();
    let retry_after = response.header("Retry-After").and_then(|value| {
        let parsed = parse_retry_after(value, SystemTime::now());
        if parsed.is_none() {
            // The value comes from the receiver; show a bounded, printable
            // prefix of it.
            let shown: String = value.chars().take(64).collect();
            warn!(
                "ignored unusable Retry-After notification={} hook={} value={shown:?}; the configured retry wait applies",
                claimed.notification_id, claimed.subscription_id
            );
        }
        parsed
    });
    let location_host = response.header("Location").and_then(|location| {
        Url::parse(&claimed.target_url)
            .ok()
            .and_then(|base| base.join(location).ok())
            .and_then(|target| target.host_str().map(str::to_owned))
    });
    let outcome = classify_status(status, retry_after, location_host.as_deref());

    // Read at most one byte past the limit, to know whether more was sent.
    // A receiver that keeps sending is cut off here or by the attempt's
    // deadline; the status already decided the outcome.
    let mut body = Vec::new();
    let read = response
        .into_reader()
        .take(max_response_bytes as u64 + 1)
        .read_to_end(&mut body);
    let (text, over_limit) = response_prefix(&body, max_response_bytes);
    // A body cut off by the deadline or a broken connection is incomplete
    // too, not only one over the limit.
    (outcome, Some((text, over_limit || read.is_err())))
}

/// Classifies a failure before any HTTP status arrived. The detail never
/// contains the target URL, whose query may carry secrets.
fn classify_transport(transport: &ureq::Transport) -> Outcome {
    let mut detail = transport.kind().to_string();
    if let Some(message) = transport.message() {
        detail.push_str(": ");
        detail.push_str(message);
    }
    let mut source = std::error::Error::source(transport);
    let mut timed_out = false;
    while let Some(error) = source {
        // ureq's message often repeats its source's text; keep it once.
        let text = error.to_string();
        if !detail.contains(&text) {
            detail.push_str(": ");
            detail.push_str(&text);
        }
        if let Some(io_error) = error.downcast_ref::<std::io::Error>() {
            timed_out |= matches!(
                io_error.kind(),
                std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
            );
        }
        source = error.source();
    }

    let lowered = detail.to_ascii_lowercase();
    let class = if find_refusal(transport).is_some() {
        FailureClass::DestinationNotAllowed
    } else if timed_out || lowered.contains("timed out") {
        FailureClass::Timeout
    } else {
        match transport.kind() {
            ureq::ErrorKind::Dns => FailureClass::Dns,
            ureq::ErrorKind::TooManyRedirects => FailureClass::Redirect,
            _ if lowered.contains("tls")
                || lowered.contains("certificate")
                || lowered.contains("handshake") =>
            {
                FailureClass::Tls
            }
            ureq::ErrorKind::ConnectionFailed => FailureClass::Connect,
            _ => FailureClass::Io,
        }
    };
    Outcome::Failed {
        class,
        status: None,
        detail,
        retry_after: None,
    }
}

/// Draws a number in [0, 1) for retry jitter, which needs no
/// cryptographic quality.
fn random_unit() -> f64 {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        return 0.5;
    }
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

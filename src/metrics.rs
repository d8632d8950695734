//! Prometheus metrics, kept in one registry for the process and rendered in
//! the text format at `GET /metrics`.

use std::sync::LazyLock;

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

/// Every metric hookd exports.
pub struct Metrics {
    registry: Registry,
    /// HTTP requests by route pattern, method and status.
    pub http_requests: IntCounterVec,
    /// Notifications queued, by event.
    pub notifications_created: IntCounterVec,
    /// Delivery attempts by outcome class (`delivered`, `timeout`, ...).
    pub attempts: IntCounterVec,
    /// Duration of delivery attempts, in seconds.
    pub attempt_duration: Histogram,
    /// Subscriptions removed, by reason.
    pub subscriptions_removed: IntCounterVec,
    /// Notifications waiting for their first or next attempt.
    pub notifications_waiting: IntGauge,
    /// Notifications claimed by the dispatcher and not yet recorded.
    pub notifications_in_flight: IntGauge,
    pub subscriptions_active: IntGauge,
    /// Sender threads alive.
    pub sender_threads: IntGauge,
    /// Seconds since the oldest waiting notification became due; 0 when
    /// nothing is overdue.
    pub oldest_due_age: Gauge,
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let counter =
        IntCounterVec::new(Opts::new(name, help), labels).expect("metric definition is valid");
    registry
        .register(Box::new(counter.clone()))
        .expect("metric names are unique");
    counter
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let gauge = IntGauge::new(name, help).expect("metric definition is valid");
    registry
        .register(Box::new(gauge.clone()))
        .expect("metric names are unique");
    gauge
}

/// The process's metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let registry = Registry::new();
    let attempt_duration = Histogram::with_opts(
        HistogramOpts::new(
            "hookd_delivery_attempt_duration_seconds",
            "Duration of delivery attempts.",
        )
        .buckets(vec![
            0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
        ]),
    )
    .expect("metric definition is valid");
    registry
        .register(Box::new(attempt_duration.clone()))
        .expect("metric names are unique");
    let oldest_due_age = Gauge::new(
        "hookd_oldest_due_notification_age_seconds",
        "Seconds since the oldest waiting notification became due.",
    )
    .expect("metric definition is valid");
    registry
        .register(Box::new(oldest_due_age.clone()))
        .expect("metric names are unique");

    Metrics {
        http_requests: counter(
            &registry,
            "hookd_http_requests_total",
            "HTTP requests by route, method and status.",
            &["route", "method", "status"],
        ),
        notifications_created: counter(
            &registry,
            "hookd_notifications_created_total",
            "Notifications queued, by event.",
            &["event"],
        ),
        attempts: counter(
            &registry,
            "hookd_delivery_attempts_total",
            "Delivery attempts by outcome class.",
            &["outcome"],
        ),
        subscriptions_removed: counter(
            &registry,
            "hookd_subscriptions_removed_total",
            "Subscriptions removed, by reason.",
            &["reason"],
        ),
        notifications_waiting: gauge(
            &registry,
            "hookd_notifications_waiting",
            "Notifications waiting for their first or next attempt.",
        ),
        notifications_in_flight: gauge(
            &registry,
            "hookd_notifications_in_flight",
            "Notifications claimed for delivery and not yet recorded.",
        ),
        subscriptions_active: gauge(
            &registry,
            "hookd_subscriptions_active",
            "Active subscriptions.",
        ),
        sender_threads: gauge(&registry, "hookd_sender_threads", "Sender threads alive."),
        attempt_duration,
        oldest_due_age,
        registry,
    }
});

impl Metrics {
    /// Renders every metric in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        let encoder = TextEncoder::new();
        if let Err(error) = encoder.encode(&self.registry.gather(), &mut buffer) {
            log::error!("cannot encode metrics: {error}");
        }
        String::from_utf8(buffer).unwrap_or_default()
    }
}

//! Delivery policy as pure functions: how a receiver's response is read, how
//! long to wait before the next attempt, and when to give up.

use std::time::{Duration, SystemTime};

use crate::store::NextStep;

/// The class of a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    /// The receiver returned a status other than 2xx, 401 or 410.
    HttpStatus,
    /// The receiver returned a redirect, which is never followed.
    Redirect,
    Timeout,
    Connect,
    Dns,
    Tls,
    /// Every address of the target is in a refused range.
    DestinationNotAllowed,
    /// The connection broke while sending or reading.
    Io,
}

impl FailureClass {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::HttpStatus => "http_status",
            FailureClass::Redirect => "redirect",
            FailureClass::Timeout => "timeout",
            FailureClass::Connect => "connect",
            FailureClass::Dns => "dns",
            FailureClass::Tls => "tls",
            FailureClass::DestinationNotAllowed => "destination_not_allowed",
            FailureClass::Io => "io",
        }
    }
}

/// The result of one attempt, as the sender reports it.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Any 2xx.
    Delivered { status: u16 },
    /// 401 or 410: the receiver requests removal of the subscription.
    Gone { status: u16 },
    Failed {
        class: FailureClass,
        status: Option<u16>,
        detail: String,
        /// The receiver's `Retry-After`, already parsed.
        retry_after: Option<Duration>,
    },
}

impl Outcome {
    /// Returns the label stored with the attempt and written to logs.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Delivered { .. } => "delivered",
            Outcome::Gone { .. } => "receiver_gone",
            Outcome::Failed { class, .. } => class.as_str(),
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            Outcome::Delivered { status } | Outcome::Gone { status } => Some(*status),
            Outcome::Failed { status, .. } => *status,
        }
    }
}

/// Reads a receiver's HTTP status. Redirects count as failures because they
/// are never followed.
pub fn classify_status(
    status: u16,
    retry_after: Option<Duration>,
    location_host: Option<&str>,
) -> Outcome {
    match status {
        200..=299 => Outcome::Delivered { status },
        401 | 410 => Outcome::Gone { status },
        300..=399 => Outcome::Failed {
            class: FailureClass::Redirect,
            status: Some(status),
            detail: match location_host {
                Some(host) => format!("redirect to host {host} not followed"),
                None => "redirect not followed".into(),
            },
            retry_after: None,
        },
        _ => Outcome::Failed {
            class: FailureClass::HttpStatus,
            status: Some(status),
            detail: format!("receiver answered {status}"),
            retry_after,
        },
    }
}

/// Retry settings taken from the delivery config.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub waits: Vec<Duration>,
    pub max_retry_after: Duration,
}

/// Share of a wait that jitter may add on top, so receivers that failed
/// together are not retried in lockstep.
pub const JITTER: f64 = 0.1;

impl RetryPolicy {
    /// Computes the wait after failed attempt number `attempt` (1-based): the
    /// configured wait plus `jitter` (0.0 to 1.0) of `JITTER`, and at least a
    /// `Retry-After` the receiver sent, capped at `max_retry_after`.
    pub fn wait_after(&self, attempt: u32, jitter: f64, retry_after: Option<Duration>) -> Duration {
        let index = (attempt.max(1) as usize - 1).min(self.waits.len().saturating_sub(1));
        let base = self.waits.get(index).copied().unwrap_or_default();
        let jittered = base + base.mul_f64(JITTER * jitter.clamp(0.0, 1.0));
        match retry_after {
            Some(asked) => jittered.max(asked.min(self.max_retry_after)),
            None => jittered,
        }
    }

    /// Decides the next step for a notification after attempt number `attempt`
    /// ended with `outcome` at `now_ms`.
    pub fn next_step(&self, outcome: &Outcome, attempt: u32, now_ms: i64, jitter: f64) -> NextStep {
        match outcome {
            Outcome::Delivered { .. } => NextStep::Delivered,
            Outcome::Gone { .. } => NextStep::RemoveSubscription {
                reason: "receiver_gone",
            },
            Outcome::Failed { retry_after, .. } => {
                if attempt >= self.max_attempts {
                    NextStep::RemoveSubscription {
                        reason: "attempts_exhausted",
                    }
                } else {
                    let wait = self.wait_after(attempt, jitter, *retry_after);
                    NextStep::RetryAt(now_ms.saturating_add(wait.as_millis() as i64))
                }
            }
        }
    }
}

/// Parses a `Retry-After` value: delay seconds or an HTTP date. Returns
/// None for a value that is neither, or a date in the past.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    date.duration_since(now).ok()
}

/// Keeps at most `limit` bytes of a response body, cut at a character
/// boundary, and reports whether anything was cut.
pub fn response_prefix(body: &[u8], limit: usize) -> (String, bool) {
    let truncated = body.len() > limit;
    let kept = &body[..body.len().min(limit)];
    let text = String::from_utf8_lossy(kept);
    let mut text = text.into_owned();
    if truncated && text.ends_with('\u{FFFD}') {
        // The cut may have split a multi-byte character.
        text.pop();
    }
    (text, truncated)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            waits: vec![Duration::from_secs(60), Duration::from_secs(300)],
            max_retry_after: Duration::from_secs(3600),
        }
    }

    #[test]
    fn status_classes() {
        let cases = [
            (200, "delivered"),
            (204, "delivered"),
            (299, "delivered"),
            (401, "receiver_gone"),
            (410, "receiver_gone"),
            (301, "redirect"),
            (302, "redirect"),
            (307, "redirect"),
            (308, "redirect"),
            (400, "http_status"),
            (404, "http_status"),
            (429, "http_status"),
            (500, "http_status"),
            (503, "http_status"),
            (100, "http_status"),
        ];
        for (status, label) in cases {
            assert_eq!(
                classify_status(status, None, None).label(),
                label,
                "status {status}"
            );
        }
    }

    #[test]
    fn waits_follow_schedule_with_jitter_on_top() {
        let policy = policy();
        assert_eq!(policy.wait_after(1, 0.0, None), Duration::from_secs(60));
        assert_eq!(policy.wait_after(1, 1.0, None), Duration::from_secs(66));
        assert_eq!(policy.wait_after(2, 0.0, None), Duration::from_secs(300));
        assert_eq!(
            policy.wait_after(7, 0.0, None),
            Duration::from_secs(300),
            "last wait repeats"
        );
    }

    #[test]
    fn retry_after_raises_wait_up_to_cap() {
        let policy = policy();
        assert_eq!(
            policy.wait_after(1, 0.0, Some(Duration::from_secs(10))),
            Duration::from_secs(60)
        );
        assert_eq!(
            policy.wait_after(1, 0.0, Some(Duration::from_secs(600))),
            Duration::from_secs(600)
        );
        assert_eq!(
            policy.wait_after(1, 0.0, Some(Duration::from_secs(99_999))),
            Duration::from_secs(3600)
        );
    }

    #[test]
    fn third_failure_removes_subscription() {
        let policy = policy();
        let failed = classify_status(500, None, None);
        assert_eq!(
            policy.next_step(&failed, 1, 0, 0.0),
            NextStep::RetryAt(60_000)
        );
        assert_eq!(
            policy.next_step(&failed, 2, 0, 0.0),
            NextStep::RetryAt(300_000)
        );
        assert_eq!(
            policy.next_step(&failed, 3, 0, 0.0),
            NextStep::RemoveSubscription {
                reason: "attempts_exhausted"
            }
        );
        let gone = classify_status(410, None, None);
        assert_eq!(
            policy.next_step(&gone, 1, 0, 0.0),
            NextStep::RemoveSubscription {
                reason: "receiver_gone"
            }
        );
    }

    #[test]
    fn retry_after_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }

    #[test]
    fn prefix_cuts_at_limit() {
        assert_eq!(response_prefix(b"hello", 10), ("hello".into(), false));
        assert_eq!(response_prefix(b"hello world", 5), ("hello".into(), true));
        let (text, truncated) = response_prefix("héllo".as_bytes(), 2);
        assert_eq!((text.as_str(), truncated), ("h", true));
    }
}

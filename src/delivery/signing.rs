//! Signatures in the Standard Webhooks form: each attempt carries
//! `webhook-id`, `webhook-timestamp` and `webhook-signature`, where the
//! signature is `v1,` + base64 of HMAC-SHA256 over `id.timestamp.body`,
//! keyed with the base64-decoded part of a `whsec_` secret.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Prefix of every signing secret.
pub const SECRET_PREFIX: &str = "whsec_";

/// Random bytes in a new secret (the Standard Webhooks minimum is 24).
const SECRET_BYTES: usize = 32;

/// Generates a signing secret: `whsec_` + base64 of 32 random bytes.
pub fn new_secret() -> String {
    let mut bytes = [0u8; SECRET_BYTES];
    getrandom::fill(&mut bytes).expect("the operating system's random source failed");
    format!("{SECRET_PREFIX}{}", STANDARD.encode(bytes))
}

/// Computes the `webhook-signature` value for one secret: `v1,<base64 HMAC>`.
/// Returns None for a secret that is not `whsec_` + base64, which hookd
/// never generates.
pub fn sign(secret: &str, message_id: &str, timestamp: i64, body: &str) -> Option<String> {
    let key = STANDARD.decode(secret.strip_prefix(SECRET_PREFIX)?).ok()?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).ok()?;
    mac.update(message_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    Some(format!(
        "v1,{}",
        STANDARD.encode(mac.finalize().into_bytes())
    ))
}

/// Builds the header value for all current secrets, space-separated,
/// newest first.
pub fn signature_header(secrets: &[&str], message_id: &str, timestamp: i64, body: &str) -> String {
    secrets
        .iter()
        .filter_map(|secret| sign(secret, message_id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_webhooks_test_vector() {
        // The example of the Standard Webhooks specification and its
        // reference libraries.
        let signature = sign(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            r#"{"test": 2432232314}"#,
        );
        assert_eq!(
            signature.as_deref(),
            Some("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
        );
    }

    #[test]
    fn new_secret_has_prefix_and_length() {
        let secret = new_secret();
        let encoded = secret.strip_prefix(SECRET_PREFIX).expect("prefix");
        assert_eq!(STANDARD.decode(encoded).unwrap().len(), SECRET_BYTES);
        assert_ne!(secret, new_secret());
    }

    #[test]
    fn header_lists_every_secret() {
        let (old, new) = (new_secret(), new_secret());
        let header = signature_header(&[&new, &old], "id", 1, "{}");
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(Some(parts[0].to_owned()), sign(&new, "id", 1, "{}"));
        assert_eq!(Some(parts[1].to_owned()), sign(&old, "id", 1, "{}"));
    }

    #[test]
    fn malformed_secret_signs_nothing() {
        assert_eq!(sign("plain", "id", 1, "{}"), None);
        assert_eq!(sign("whsec_!!!", "id", 1, "{}"), None);
    }
}

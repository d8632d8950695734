//! Random identifiers and API keys, and the hash under which keys are stored.

use sha2::{Digest, Sha256};

/// Returns `bytes` random bytes from the operating system as lowercase hex.
pub fn random_hex(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    // The OS random source failing means the system cannot issue secrets at all.
    getrandom::fill(&mut buffer).expect("the operating system's random source failed");
    hex::encode(buffer)
}

/// Generates an identifier with 128 random bits, unguessable by clients.
pub fn new_id() -> String {
    random_hex(16)
}

/// Generates a notification id: `now_ms` as 12 hex digits, `sequence` as 4,
/// then 64 random bits, so ids rise with time. `queue_notifications` in the
/// store builds the same form in SQL.
pub fn time_ordered_id(now_ms: i64, sequence: u16) -> String {
    format!("{now_ms:012x}{sequence:04x}{}", random_hex(8))
}

/// Generates an API key: 160 random bits as 40 lowercase hex characters.
pub fn new_api_key() -> String {
    random_hex(20)
}

/// Hashes an API key into its stored form. Keys carry 160 random bits, so a plain
/// SHA-256 cannot be reversed by guessing and a slow password hash would only
/// cost time on every request.
pub fn hash_api_key(key: &str) -> Vec<u8> {
    Sha256::digest(key.as_bytes()).to_vec()
}

/// True when `text` has the form of an API key (40 lowercase hex characters).
pub fn looks_like_api_key(text: &str) -> bool {
    text.len() == 40
        && text
            .bytes()
            .all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_key_has_expected_form() {
        let key = new_api_key();
        assert!(looks_like_api_key(&key), "{key}");
        assert_ne!(key, new_api_key());
        assert_eq!(hash_api_key(&key).len(), 32);
    }

    #[test]
    fn time_ordered_ids_rise_with_time_and_sequence() {
        let first = time_ordered_id(1_796_422_854_000, 0);
        let later_in_fan_out = time_ordered_id(1_796_422_854_000, 1);
        let next_millisecond = time_ordered_id(1_796_422_854_001, 0);
        assert_eq!(first.len(), 32);
        assert!(first.bytes().all(|byte| byte.is_ascii_hexdigit()));
        assert!(first < later_in_fan_out);
        assert!(later_in_fan_out < next_millisecond);
        assert_eq!(&first[..16], "01a2432565700000");
    }
}

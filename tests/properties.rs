//! Property tests of pure library functions: target URL parsing and
//! normalisation, the destination guard, the retry policy and request-body
//! parsing.
//!
//! Coverage-guided fuzzing with cargo-fuzz needs a nightly toolchain, and
//! this project builds with stable Rust only. Large random inputs from
//! proptest take its place for the parsers here.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use hookd::api::parse_object;
use hookd::delivery::destination::{Guard, parse_target};
use hookd::delivery::policy::{FailureClass, Outcome, RetryPolicy};
use hookd::store::NextStep;
use ipnet::IpNet;
use proptest::prelude::*;
use serde_json::{Map, Value};

/// The example object that `parse_object` names in its error messages.
const EXAMPLE: &str = r#"{"name": "x"}"#;

/// Long enough for every URL the strategies below build, also after
/// normalisation lengthens one.
const MAX_URL_LENGTH: usize = 1 << 16;

/// IPv4 networks that hookd refuses and that std's stable `Ipv4Addr`
/// methods do not name. They are "this network" (RFC 791), shared address
/// space (RFC 6598), IETF protocol assignments (RFC 6890), the 6to4 relay
/// anycast prefix (RFC 7526), benchmarking (RFC 2544) and reserved
/// (RFC 1112).
const EXTRA_REFUSED_V4: [(Ipv4Addr, u8); 6] = [
    (Ipv4Addr::new(0, 0, 0, 0), 8),
    (Ipv4Addr::new(100, 64, 0, 0), 10),
    (Ipv4Addr::new(192, 0, 0, 0), 24),
    (Ipv4Addr::new(192, 88, 99, 0), 24),
    (Ipv4Addr::new(198, 18, 0, 0), 15),
    (Ipv4Addr::new(240, 0, 0, 0), 4),
];

/// IPv6 networks that hookd refuses and that std's stable `Ipv6Addr`
/// methods do not name. They are IPv4-compatible (RFC 4291), local-use
/// NAT64 (RFC 8215), discard-only (RFC 6666), IETF protocol assignments
/// (RFC 2928), documentation (RFC 3849, RFC 9637) and site-local (RFC 3879).
const EXTRA_REFUSED_V6: [(Ipv6Addr, u8); 7] = [
    (Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 0), 96),
    (Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0), 48),
    (Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0), 64),
    (Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0), 23),
    (Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0), 32),
    (Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0), 10),
    (Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0), 20),
];

/// Cloud-metadata addresses outside the ranges above (169.254.169.254 and
/// 169.254.170.2 are link-local, fd00:ec2::254 is unique-local).
const METADATA_V4: [Ipv4Addr; 2] = [
    Ipv4Addr::new(100, 100, 100, 200),
    Ipv4Addr::new(168, 63, 129, 16),
];

fn v4_in(address: Ipv4Addr, (network, prefix): (Ipv4Addr, u8)) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    u32::from(address) & mask == u32::from(network) & mask
}

fn v6_in(address: Ipv6Addr, (network, prefix): (Ipv6Addr, u8)) -> bool {
    let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
    u128::from(address) & mask == u128::from(network) & mask
}

/// Decides whether an IPv4 address must be refused, with std's address
/// methods and the ranges those leave out.
fn v4_must_be_refused(address: Ipv4Addr) -> bool {
    address.is_unspecified()
        || address.is_loopback()
        || address.is_private()
        || address.is_link_local()
        || address.is_multicast()
        || address.is_broadcast()
        || address.is_documentation()
        || EXTRA_REFUSED_V4.iter().any(|range| v4_in(address, *range))
        || METADATA_V4.contains(&address)
}

/// Returns the IPv4 address that an IPv4-mapped, NAT64 (64:ff9b::/96) or
/// 6to4 (2002::/16) IPv6 address carries.
fn carried_v4(address: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = address.to_ipv4_mapped() {
        return Some(v4);
    }
    let bits = u128::from(address);
    if v6_in(address, (Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0), 96)) {
        return Some(Ipv4Addr::from(bits as u32));
    }
    if v6_in(address, (Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0), 16)) {
        return Some(Ipv4Addr::from((bits >> 80) as u32));
    }
    None
}

fn v6_must_be_refused(address: Ipv6Addr) -> bool {
    address.is_unspecified()
        || address.is_loopback()
        || address.is_multicast()
        || address.is_unique_local()
        || address.is_unicast_link_local()
        || EXTRA_REFUSED_V6.iter().any(|range| v6_in(address, *range))
        || carried_v4(address).is_some_and(v4_must_be_refused)
}

fn must_be_refused(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => v4_must_be_refused(v4),
        IpAddr::V6(v6) => v6_must_be_refused(v6),
    }
}

fn is_metadata(address: IpAddr) -> bool {
    let metadata_v4 = |v4: Ipv4Addr| {
        METADATA_V4.contains(&v4)
            || v4 == Ipv4Addr::new(169, 254, 169, 254)
            || v4 == Ipv4Addr::new(169, 254, 170, 2)
    };
    match address {
        IpAddr::V4(v4) => metadata_v4(v4),
        IpAddr::V6(v6) => {
            v6 == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)
                || carried_v4(v6).is_some_and(metadata_v4)
        }
    }
}

/// Lists every refused IPv4 range, for drawing addresses inside them.
fn refused_v4_ranges() -> Vec<(Ipv4Addr, u8)> {
    let mut ranges = vec![
        (Ipv4Addr::new(10, 0, 0, 0), 8),
        (Ipv4Addr::new(127, 0, 0, 0), 8),
        (Ipv4Addr::new(169, 254, 0, 0), 16),
        (Ipv4Addr::new(172, 16, 0, 0), 12),
        (Ipv4Addr::new(192, 0, 2, 0), 24),
        (Ipv4Addr::new(192, 168, 0, 0), 16),
        (Ipv4Addr::new(198, 51, 100, 0), 24),
        (Ipv4Addr::new(203, 0, 113, 0), 24),
        (Ipv4Addr::new(224, 0, 0, 0), 4),
        (Ipv4Addr::new(255, 255, 255, 255), 32),
    ];
    ranges.extend(EXTRA_REFUSED_V4);
    ranges.extend(METADATA_V4.iter().map(|address| (*address, 32)));
    ranges
}

fn in_v4_range((network, prefix): (Ipv4Addr, u8), random: u32) -> Ipv4Addr {
    let host_bits = u32::MAX.checked_shr(u32::from(prefix)).unwrap_or(0);
    Ipv4Addr::from((u32::from(network) & !host_bits) | (random & host_bits))
}

fn in_v6_range((network, prefix): (Ipv6Addr, u8), random: u128) -> Ipv6Addr {
    let host_bits = u128::MAX.checked_shr(u32::from(prefix)).unwrap_or(0);
    Ipv6Addr::from((u128::from(network) & !host_bits) | (random & host_bits))
}

/// Draws an IPv4 address inside one of the refused ranges.
fn refused_v4() -> impl Strategy<Value = Ipv4Addr> {
    let ranges = refused_v4_ranges();
    (0..ranges.len(), any::<u32>()).prop_map(move |(index, random)| {
        let address = in_v4_range(ranges[index], random);
        assert!(
            v4_must_be_refused(address),
            "{address} is in a refused range"
        );
        address
    })
}

/// Draws any IPv4 address, half of them near the edges of refused ranges.
fn any_v4() -> impl Strategy<Value = Ipv4Addr> {
    let ranges = refused_v4_ranges();
    prop_oneof![
        any::<u32>().prop_map(Ipv4Addr::from),
        (0..ranges.len(), any::<bool>(), 0u32..4).prop_map(move |(index, below, step)| {
            let (network, prefix) = ranges[index];
            let size = 1u64 << (32 - u32::from(prefix));
            let start = u64::from(u32::from(network));
            let edge = if below {
                start.wrapping_sub(u64::from(step) + 1)
            } else {
                start + size + u64::from(step)
            };
            Ipv4Addr::from(edge as u32)
        }),
    ]
}

/// Draws any IPv6 address, most of them inside a prefix the rules treat
/// specially, the rest from the global unicast range and from all of it.
fn any_v6() -> impl Strategy<Value = Ipv6Addr> {
    let prefixes: Vec<(Ipv6Addr, u8)> = vec![
        (Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0), 96),
        (Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0), 96),
        (Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0), 16),
        (Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7),
        (Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10),
        (Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8),
        (Ipv6Addr::new(0x2000, 0, 0, 0, 0, 0, 0, 0), 3),
        (Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 0), 0),
    ]
    .into_iter()
    .chain(EXTRA_REFUSED_V6)
    .collect();
    (0..prefixes.len(), any::<u128>()).prop_map(move |(index, random)| {
        let (network, prefix) = prefixes[index];
        // Wider prefixes than the range itself reach its edges too.
        in_v6_range((network, prefix.saturating_sub(random as u8 % 3)), random)
    })
}

/// Writes one octet or part of an IPv4 literal in decimal, hex or octal.
fn write_part(value: u32, radix: u8) -> String {
    match radix {
        0 => value.to_string(),
        1 => format!("0x{value:x}"),
        2 => format!("0X{value:X}"),
        _ if value == 0 => "0".into(),
        _ => format!("0{value:o}"),
    }
}

/// Writes an IPv4 address in one of the forms a WHATWG URL parser accepts.
/// The forms are dotted octets, one integer, and the three- and two-part
/// forms, each part in decimal, hex or octal, plus IPv6 forms that carry
/// the address.
fn write_v4(address: Ipv4Addr, form: u8, radixes: [u8; 4]) -> String {
    let [a, b, c, d] = address.octets().map(u32::from);
    let whole = u32::from(address);
    match form % 11 {
        0 => format!("{a}.{b}.{c}.{d}"),
        1 => format!(
            "{}.{}.{}.{}",
            write_part(a, radixes[0]),
            write_part(b, radixes[1]),
            write_part(c, radixes[2]),
            write_part(d, radixes[3])
        ),
        2 => write_part(whole, radixes[0]),
        3 => format!(
            "{}.{}.{}",
            write_part(a, radixes[0]),
            write_part(b, radixes[1]),
            write_part(whole & 0xffff, radixes[2])
        ),
        4 => format!(
            "{}.{}",
            write_part(a, radixes[0]),
            write_part(whole & 0xff_ffff, radixes[1])
        ),
        5 => format!("{a}.{b}.{c}.{d}."),
        6 => format!("[::ffff:{a}.{b}.{c}.{d}]"),
        7 => format!("[::FFFF:{:x}:{:x}]", whole >> 16, whole & 0xffff),
        8 => format!("[0:0:0:0:0:ffff:{a}.{b}.{c}.{d}]"),
        9 => format!("[64:ff9b::{:x}:{:x}]", whole >> 16, whole & 0xffff),
        _ => format!("[2002:{:x}:{:x}::1]", whole >> 16, whole & 0xffff),
    }
}

/// Draws text from a small alphabet, so the strategies stay fast without
/// regex support.
fn text_from(alphabet: &'static str, length: std::ops::Range<usize>) -> BoxedStrategy<String> {
    let characters: Vec<char> = alphabet.chars().collect();
    prop::collection::vec(prop::sample::select(characters), length)
        .prop_map(String::from_iter)
        .boxed()
}

/// Draws a domain name that is not `localhost`. Its top-level label has
/// letters only, so the name never reads as an IPv4 address.
fn domain() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(
            text_from("abcdefghijklmnopqrstuvwxyz0123456789", 1..10),
            1..4,
        ),
        text_from("abcdefghijklmnopqrstuvwxyz", 2..7),
    )
        .prop_map(|(labels, top)| format!("{}.{top}", labels.join(".")))
        .prop_filter("not localhost", |name| !name.contains("localhost"))
}

/// Draws a host that the default rules accept: a name, or a public IPv4 or
/// IPv6 literal.
fn public_host() -> impl Strategy<Value = String> {
    prop_oneof![
        domain(),
        any::<u32>()
            .prop_map(Ipv4Addr::from)
            .prop_filter("public", |address| !v4_must_be_refused(*address))
            .prop_map(|address| address.to_string()),
        any_v6()
            .prop_filter("public", |address| !v6_must_be_refused(*address))
            .prop_map(|address| format!("[{address}]")),
    ]
}

/// The parts of a URL that normalisation must not change.
#[derive(Debug, Clone)]
struct UrlParts {
    https: bool,
    host: String,
    port: Option<u16>,
    path: String,
    query: Option<String>,
}

fn url_parts() -> impl Strategy<Value = UrlParts> {
    (
        any::<bool>(),
        public_host(),
        prop::option::of(1u16..),
        prop::collection::vec(text_from("abcXYZ019-._~%20", 0..8), 0..4),
        any::<bool>(),
        prop::option::of(text_from("abz09=&", 0..12)),
    )
        .prop_map(|(https, host, port, segments, trailing_slash, query)| {
            let mut path: String = segments
                .iter()
                .map(|segment| format!("/{segment}"))
                .collect();
            if trailing_slash {
                path.push('/');
            }
            UrlParts {
                https,
                host,
                port,
                path,
                query,
            }
        })
}

/// Writes a URL from its parts, with the scheme's and host's letters in the
/// given case pattern and the default port either left out or written.
fn write_url(parts: &UrlParts, case_pattern: u64, write_default_port: bool) -> String {
    let flip = |text: &str, shift: u32| -> String {
        text.chars()
            .enumerate()
            .map(|(index, character)| {
                if case_pattern.rotate_left(shift + index as u32) & 1 == 1 {
                    character.to_ascii_uppercase()
                } else {
                    character
                }
            })
            .collect()
    };
    let scheme = if parts.https { "https" } else { "http" };
    let default_port = if parts.https { 443 } else { 80 };
    let port = match parts.port {
        Some(port) => format!(":{port}"),
        None if write_default_port => format!(":{default_port}"),
        None => String::new(),
    };
    let query = match &parts.query {
        Some(query) => format!("?{query}"),
        None => String::new(),
    };
    format!(
        "{}://{}{port}{}{query}",
        flip(scheme, 0),
        flip(&parts.host, 7),
        parts.path
    )
}

/// Draws bytes that look like JSON: tokens of every kind joined in random
/// order, so the parser gets past its first character.
fn json_like() -> impl Strategy<Value = Vec<u8>> {
    let tokens: Vec<&'static str> = vec![
        "{",
        "}",
        "[",
        "]",
        ",",
        ":",
        " ",
        "\n",
        "\"a\"",
        "\"b\"",
        "\"name\"",
        "\"\"",
        "0",
        "-1",
        "1.5e308",
        "1e999",
        "-0.0",
        "18446744073709551616",
        "true",
        "false",
        "null",
        "\"\\u00e9\"",
        "\"\\ud800\"",
        "\"\\n\"",
        "\"\\",
        "\u{feff}",
        "\"é\"",
        "nul",
        "01",
        "{\"a\":1,\"a\":2}",
    ];
    prop::collection::vec(prop::sample::select(tokens), 0..4000)
        .prop_map(|tokens| tokens.concat().into_bytes())
}

/// Draws a JSON value of bounded depth and width.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |number| number.is_finite())
            .prop_map(Value::from),
        prop::collection::vec(any::<char>(), 0..20)
            .prop_map(|text| Value::from(String::from_iter(text))),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(text_from("abcdé\"\\ ", 0..6), inner, 0..8)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

fn json_object() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::btree_map(text_from("abcdé\"\\ ", 0..6), json_value(), 0..8)
        .prop_map(|map| map.into_iter().collect())
}

/// Checks what `parse_object` did with `body` against serde_json: an
/// accepted body is exactly the object serde_json reads from it.
fn check_parse_object(body: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(map) = parse_object(body, EXAMPLE) {
        let reference: Value = serde_json::from_slice(body)
            .map_err(|error| TestCaseError::fail(format!("accepted invalid JSON: {error}")))?;
        prop_assert_eq!(reference, Value::Object(map));
    }
    Ok(())
}

fn failed_outcome(retry_after: Option<Duration>) -> Outcome {
    Outcome::Failed {
        class: FailureClass::HttpStatus,
        status: Some(500),
        detail: "receiver answered 500".into(),
        retry_after,
    }
}

fn retry_policy() -> impl Strategy<Value = RetryPolicy> {
    (
        1u32..12,
        prop::collection::vec(0u64..10_000_000, 1..5),
        0u64..100_000_000,
    )
        .prop_map(|(max_attempts, waits, max_retry_after)| RetryPolicy {
            max_attempts,
            waits: waits.into_iter().map(Duration::from_micros).collect(),
            max_retry_after: Duration::from_micros(max_retry_after),
        })
}

/// Returns the configured wait after failed attempt `attempt`. The last
/// wait repeats when the list is shorter.
fn scheduled_wait(policy: &RetryPolicy, attempt: u32) -> Duration {
    let index = (attempt.max(1) as usize - 1).min(policy.waits.len() - 1);
    policy.waits[index]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn target_key_is_idempotent(parts in url_parts(), case_pattern: u64, default_port: bool) {
        let text = write_url(&parts, case_pattern, default_port);
        let guard = Guard::default();
        let first = parse_target(&text, MAX_URL_LENGTH, &guard)
            .map_err(|error| TestCaseError::fail(format!("{text} refused: {error}")))?;
        let second = parse_target(&first.key, MAX_URL_LENGTH, &guard)
            .map_err(|error| TestCaseError::fail(format!("key {} refused: {error}", first.key)))?;
        prop_assert_eq!(&second.key, &first.key);
        prop_assert_eq!(&second.authority, &first.authority);
    }

    #[test]
    fn target_key_ignores_case_and_port(
        parts in url_parts(),
        first_case: u64,
        second_case: u64,
        first_default: bool,
        second_default: bool,
    ) {
        let guard = Guard::default();
        let first = write_url(&parts, first_case, first_default);
        let second = write_url(&parts, second_case, second_default);
        let first_key = parse_target(&first, MAX_URL_LENGTH, &guard).unwrap().key;
        let second_key = parse_target(&second, MAX_URL_LENGTH, &guard).unwrap().key;
        prop_assert_eq!(first_key, second_key, "{} and {}", first, second);
    }

    #[test]
    fn target_key_keeps_path_and_query(parts in url_parts(), extra in text_from("az09", 1..4)) {
        let guard = Guard::default();
        let key = |parts: &UrlParts| {
            parse_target(&write_url(parts, 0, false), MAX_URL_LENGTH, &guard).unwrap().key
        };
        let mut longer_path = parts.clone();
        longer_path.path.push_str(&format!("/{extra}"));
        prop_assert_ne!(key(&parts), key(&longer_path));
        let mut other_query = parts.clone();
        other_query.query = Some(format!("{}{extra}", parts.query.clone().unwrap_or_default()));
        prop_assert_ne!(key(&parts), key(&other_query));
    }

    #[test]
    fn empty_path_equals_root(mut parts in url_parts()) {
        let guard = Guard::default();
        parts.path = String::new();
        parts.query = None;
        let bare = parse_target(&write_url(&parts, 0, false), MAX_URL_LENGTH, &guard).unwrap();
        parts.path = "/".into();
        let root = parse_target(&write_url(&parts, 0, false), MAX_URL_LENGTH, &guard).unwrap();
        prop_assert_eq!(bare.key, root.key);
    }

    #[test]
    fn refused_v4_never_passes(
        address in refused_v4(),
        form: u8,
        radixes: [u8; 4],
        https: bool,
        path in text_from("az/", 0..6),
    ) {
        let scheme = if https { "https" } else { "http" };
        let host = write_v4(address, form, radixes.map(|radix| radix % 4));
        let text = format!("{scheme}://{host}/{path}");
        let accepted = parse_target(&text, MAX_URL_LENGTH, &Guard::default());
        prop_assert!(accepted.is_err(), "{} ({}) was accepted: {:?}", text, address, accepted.map(|target| target.key));
    }

    #[test]
    fn refused_v6_never_passes(address in any_v6().prop_filter("refused", |address| v6_must_be_refused(*address))) {
        let segments = address.segments();
        let expanded: Vec<String> = segments.iter().map(|segment| format!("{segment:X}")).collect();
        for host in [format!("[{address}]"), format!("[{}]", expanded.join(":"))] {
            let text = format!("http://{host}/");
            prop_assert!(
                parse_target(&text, MAX_URL_LENGTH, &Guard::default()).is_err(),
                "{} was accepted", text
            );
        }
    }

    #[test]
    fn public_literals_pass(address in any::<u32>().prop_map(Ipv4Addr::from), form: u8, radixes: [u8; 4]) {
        prop_assume!(!v4_must_be_refused(address));
        let host = write_v4(address, form, radixes.map(|radix| radix % 4));
        let text = format!("http://{host}/");
        let target = parse_target(&text, MAX_URL_LENGTH, &Guard::default())
            .map_err(|error| TestCaseError::fail(format!("{text} refused: {error}")))?;
        prop_assert!(target.key.starts_with("http://"));
    }

    #[test]
    fn guard_matches_std_v4(address in any_v4()) {
        let refused = Guard::default().check(IpAddr::V4(address)).is_err();
        prop_assert_eq!(refused, must_be_refused(IpAddr::V4(address)), "{}", address);
    }

    #[test]
    fn guard_matches_std_v6(address in any_v6()) {
        let refused = Guard::default().check(IpAddr::V6(address)).is_err();
        prop_assert_eq!(refused, must_be_refused(IpAddr::V6(address)), "{}", address);
    }

    #[test]
    fn allow_list_never_opens_metadata(
        address in prop_oneof![
            any_v4().prop_map(IpAddr::V4),
            any_v6().prop_map(IpAddr::V6),
            refused_v4().prop_map(IpAddr::V4),
        ],
        prefix_cut in 0u8..=32,
    ) {
        // An allowed network around the address, from the address alone up
        // to a wide range.
        let width = match address { IpAddr::V4(_) => 32, IpAddr::V6(_) => 128 };
        let network = IpNet::new(address, width - prefix_cut.min(width)).unwrap().trunc();
        let guard = Guard::new(vec![network]);
        let result = guard.check(address);
        if is_metadata(address) {
            prop_assert!(result.is_err(), "{} passed with {} allowed", address, network);
        } else {
            prop_assert!(result.is_ok(), "{} refused with {} allowed: {:?}", address, network, result);
        }
    }

    #[test]
    fn attempts_stop_at_max(policy in retry_policy(), jitters in prop::collection::vec(0.0f64..=1.0, 100)) {
        let failed = failed_outcome(None);
        let mut attempt = 1;
        loop {
            match policy.next_step(&failed, attempt, 0, jitters[attempt as usize % jitters.len()]) {
                NextStep::RetryAt(_) => attempt += 1,
                NextStep::RemoveSubscription { reason } => {
                    prop_assert_eq!(reason, "attempts_exhausted");
                    break;
                }
                NextStep::Delivered => prop_assert!(false, "a failure counted as delivered"),
            }
            prop_assert!(attempt <= policy.max_attempts, "attempt {} of {}", attempt, policy.max_attempts);
        }
        prop_assert_eq!(attempt, policy.max_attempts);
    }

    #[test]
    fn late_attempts_remove_subscription(policy in retry_policy(), extra in 0u32..1000, jitter in 0.0f64..=1.0) {
        let attempt = policy.max_attempts.saturating_add(extra);
        prop_assert_eq!(
            policy.next_step(&failed_outcome(None), attempt, 0, jitter),
            NextStep::RemoveSubscription { reason: "attempts_exhausted" }
        );
    }

    #[test]
    fn answers_decide_regardless_of_attempt(policy in retry_policy(), attempt in 1u32..200, status in 200u16..300) {
        prop_assert_eq!(
            policy.next_step(&Outcome::Delivered { status }, attempt, 0, 0.5),
            NextStep::Delivered
        );
        for gone in [401, 410] {
            prop_assert_eq!(
                policy.next_step(&Outcome::Gone { status: gone }, attempt, 0, 0.5),
                NextStep::RemoveSubscription { reason: "receiver_gone" }
            );
        }
    }

    #[test]
    fn waits_stay_within_bounds(
        policy in retry_policy(),
        attempt in 1u32..20,
        jitter in 0.0f64..=1.0,
        retry_after in prop::option::of(0u64..200_000_000),
        now in 0i64..4_000_000_000_000,
    ) {
        let retry_after = retry_after.map(Duration::from_micros);
        let scheduled = scheduled_wait(&policy, attempt);
        let wait = policy.wait_after(attempt, jitter, retry_after);
        prop_assert!(wait >= scheduled, "{:?} below the schedule {:?}", wait, scheduled);
        // One microsecond covers rounding in the jitter multiplication.
        let upper = scheduled.mul_f64(1.0 + 0.1).max(policy.max_retry_after) + Duration::from_micros(1);
        prop_assert!(wait <= upper, "{:?} above {:?}", wait, upper);
        if let Some(asked) = retry_after {
            prop_assert!(wait >= asked.min(policy.max_retry_after), "{:?} below Retry-After {:?}", wait, asked);
        }

        if attempt < policy.max_attempts {
            let step = policy.next_step(&failed_outcome(retry_after), attempt, now, jitter);
            let NextStep::RetryAt(due_at) = step else {
                return Err(TestCaseError::fail(format!("attempt {attempt} gave {step:?}")));
            };
            let waited_ms = due_at - now;
            prop_assert!(waited_ms >= scheduled.as_millis() as i64, "{} ms", waited_ms);
            prop_assert!(waited_ms <= upper.as_millis() as i64 + 1, "{} ms", waited_ms);
        }
    }
}

proptest! {
    // Large inputs: fewer cases keep the run short in a debug build.
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..100_000)) {
        check_parse_object(&body)?;
    }

    #[test]
    fn json_like_bytes_never_panic(body in json_like()) {
        check_parse_object(&body)?;
    }

    #[test]
    fn deep_nesting_never_panics(depth in 0usize..100_000, opener in prop::sample::select(vec!["[", "{\"a\":", "[{\"b\":"])) {
        let body = format!("{{\"x\": {}", opener.repeat(depth));
        check_parse_object(body.as_bytes())?;
        prop_assert!(parse_object(body.as_bytes(), EXAMPLE).is_err());
    }

    #[test]
    fn objects_parse_back(object in json_object(), pretty: bool) {
        let value = Value::Object(object.clone());
        let text = if pretty {
            serde_json::to_string_pretty(&value).unwrap()
        } else {
            value.to_string()
        };
        let parsed = parse_object(text.as_bytes(), EXAMPLE)
            .map_err(|error| TestCaseError::fail(format!("{text} rejected: {error}")))?;
        // serde_json's default float parsing may differ from the written
        // value in the last bit, so the reference is serde_json's own
        // reading of the text.
        let reference: Value = serde_json::from_str(&text).unwrap();
        prop_assert_eq!(Value::Object(parsed), reference);
    }

    #[test]
    fn repeated_keys_rejected(object in json_object(), key in text_from("abc", 1..4), first in json_value(), second in json_value()) {
        let mut text = value_without_braces(&object);
        let pair = |value: &Value| format!("{}: {value}", Value::from(key.clone()));
        text.push_str(&pair(&first));
        text.push(',');
        text.push_str(&pair(&second));
        let body = format!("{{{text}}}");
        prop_assert!(parse_object(body.as_bytes(), EXAMPLE).is_err(), "{} accepted", body);
    }

    #[test]
    fn non_objects_rejected(value in json_value()) {
        prop_assume!(!value.is_object());
        prop_assert!(parse_object(value.to_string().as_bytes(), EXAMPLE).is_err());
    }
}

/// Writes the members of `object` as JSON text, each followed by a comma,
/// so more members can follow.
fn value_without_braces(object: &Map<String, Value>) -> String {
    object
        .iter()
        .map(|(name, value)| format!("{}: {value},", Value::from(name.clone())))
        .collect()
}

//! The destination rules: the addresses hookd may contact. Target URLs are chosen by clients,
//! so hookd refuses to send into internal networks: loopback, private,
//! link-local, unique-local, shared (CGNAT), multicast, broadcast,
//! unspecified, documentation and cloud-metadata addresses. The check runs
//! on IP literals at subscribe time and on every resolved address before
//! each connection.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::sync::{Arc, LazyLock};

use ipnet::IpNet;
use url::{Host, Url};

/// A destination address that the rules refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("destination not allowed: {address} is in a refused range ({range})")]
pub struct Refused {
    pub address: IpAddr,
    pub range: &'static str,
}

/// Cloud-metadata endpoints, refused even inside `allowed_networks`: AWS,
/// GCP and Azure (169.254.169.254), AWS over IPv6 (fd00:ec2::254), AWS ECS
/// task metadata (169.254.170.2), Alibaba Cloud (100.100.100.200) and the
/// Azure wire server (168.63.129.16).
const METADATA: [&str; 5] = [
    "169.254.169.254",
    "fd00:ec2::254",
    "169.254.170.2",
    "100.100.100.200",
    "168.63.129.16",
];

/// Refused networks and what they are, from the IANA special-purpose
/// address registries for IPv4 and IPv6.
const REFUSED: [(&str, &str); 27] = [
    ("0.0.0.0/8", "unspecified"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "shared (CGNAT)"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "IETF protocol assignment"),
    ("192.0.2.0/24", "documentation"),
    ("192.88.99.0/24", "6to4 relay"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("::/96", "IPv4-compatible"),
    ("64:ff9b:1::/48", "local NAT64"),
    ("100::/64", "discard-only"),
    ("2001::/23", "IETF protocol assignment"),
    ("2001:db8::/32", "documentation"),
    ("fc00::/7", "unique-local"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local"),
    ("ff00::/8", "multicast"),
    ("3fff::/20", "documentation"),
];

static REFUSED_NETWORKS: LazyLock<Vec<(IpNet, &'static str)>> = LazyLock::new(|| {
    REFUSED
        .iter()
        .map(|(network, name)| (network.parse().expect("built-in network is valid"), *name))
        .collect()
});

static METADATA_ADDRESSES: LazyLock<Vec<IpAddr>> = LazyLock::new(|| {
    METADATA
        .iter()
        .map(|address| address.parse().expect("built-in address is valid"))
        .collect()
});

/// The destination rules with the operator's allow-list.
#[derive(Debug, Clone, Default)]
pub struct Guard {
    allowed: Vec<IpNet>,
}

impl Guard {
    pub fn new(allowed: Vec<IpNet>) -> Guard {
        Guard { allowed }
    }

    /// Checks one address. IPv4 written in IPv6 form (mapped, NAT64 or 6to4)
    /// is judged by the IPv4 address it carries.
    pub fn check(&self, address: IpAddr) -> Result<(), Refused> {
        let embedded = embedded_ipv4(address).map(IpAddr::V4);
        let candidates = [Some(address), embedded];
        let candidates = candidates.iter().flatten();

        for candidate in candidates.clone() {
            if METADATA_ADDRESSES.contains(candidate) {
                return Err(Refused {
                    address,
                    range: "cloud-metadata",
                });
            }
        }
        if self.allowed.iter().any(|network| {
            candidates
                .clone()
                .any(|candidate| network.contains(candidate))
        }) {
            return Ok(());
        }
        for candidate in candidates {
            if let Some((_, range)) = REFUSED_NETWORKS
                .iter()
                .find(|(network, _)| network.contains(candidate))
            {
                return Err(Refused { address, range });
            }
            if *candidate == IpAddr::V4(Ipv4Addr::BROADCAST) {
                return Err(Refused {
                    address,
                    range: "broadcast",
                });
            }
        }
        Ok(())
    }
}

/// Extracts the IPv4 address inside an IPv4-mapped (`::ffff:a.b.c.d`), NAT64
/// (`64:ff9b::/96`) or 6to4 (`2002::/16`) IPv6 address.
fn embedded_ipv4(address: IpAddr) -> Option<Ipv4Addr> {
    let IpAddr::V6(v6) = address else {
        return None;
    };
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(v4);
    }
    let segments = v6.segments();
    let octets = v6.octets();
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(Ipv4Addr::new(
            octets[12], octets[13], octets[14], octets[15],
        ));
    }
    if segments[0] == 0x2002 {
        return Some(Ipv4Addr::new(octets[2], octets[3], octets[4], octets[5]));
    }
    None
}

/// A validated target URL and the normalised form used to compare targets.
#[derive(Debug, Clone)]
pub struct Target {
    pub url: Url,
    /// Scheme and host lowercased, default port dropped, empty path as `/`,
    /// international names in punycode and IPv6 in canonical form.
    pub key: String,
    /// `host:port` with the scheme's default port filled in.
    pub authority: String,
}

/// Validates a client's `target_url`. The error is a sentence for the
/// client that names the value.
pub fn parse_target(text: &str, max_length: usize, guard: &Guard) -> Result<Target, String> {
    if text.len() > max_length {
        return Err(format!(
            "target_url is {} bytes long, over the limit of {max_length}; use a shorter URL",
            text.len()
        ));
    }
    if let Some(character) = text
        .chars()
        .find(|character| character.is_control() || character.is_whitespace())
    {
        return Err(format!(
            "target_url {text:?} contains the character {character:?}; remove whitespace and control characters"
        ));
    }
    let url = Url::parse(text).map_err(|error| {
        format!("target_url {text:?} is not a valid absolute URL ({error}); write it like \"https://example.com/hooks\"")
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "target_url {text:?} uses the scheme {:?}; only http and https are allowed",
            url.scheme()
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("target_url must not contain user info (user:password@); pass credentials in the path or query instead".into());
    }
    if url.fragment().is_some() {
        return Err(format!(
            "target_url {text:?} has a fragment (#...), which is never sent; remove it"
        ));
    }

    match url.host() {
        Some(Host::Ipv4(address)) => check_literal(guard, text, IpAddr::V4(address))?,
        Some(Host::Ipv6(address)) => check_literal(guard, text, IpAddr::V6(address))?,
        Some(Host::Domain(name)) => {
            let name = name.trim_end_matches('.');
            if name == "localhost" || name.ends_with(".localhost") {
                check_literal(guard, text, IpAddr::V4(Ipv4Addr::LOCALHOST))?;
                check_literal(guard, text, IpAddr::V6(Ipv6Addr::LOCALHOST))?;
            }
        }
        None => return Err(format!("target_url {text:?} has no host")),
    }

    let key = url.as_str().to_owned();
    let authority = format!(
        "{}:{}",
        url.host_str().unwrap_or_default(),
        url.port_or_known_default().unwrap_or_default()
    );
    Ok(Target {
        url,
        key,
        authority,
    })
}

fn check_literal(guard: &Guard, text: &str, address: IpAddr) -> Result<(), String> {
    guard.check(address).map_err(|refused| {
        format!(
            "target_url {text:?} is not allowed: {} is in a refused range ({}); use a public address, or ask the operator to add its network to delivery.allowed_networks",
            refused.address, refused.range
        )
    })
}

/// A ureq resolver that drops every resolved address the guard refuses, so
/// a refused address is never connected to, whatever the name resolves to
/// at the time of the attempt.
pub struct GuardedResolver {
    guard: Arc<Guard>,
}

impl GuardedResolver {
    pub fn new(guard: Arc<Guard>) -> GuardedResolver {
        GuardedResolver { guard }
    }
}

impl GuardedResolver {
    /// Keeps the addresses the guard allows; fails with the first refusal
    /// when none is left.
    fn filter(&self, addresses: Vec<SocketAddr>, netloc: &str) -> io::Result<Vec<SocketAddr>> {
        let mut allowed = Vec::new();
        let mut first_refusal = None;
        for address in addresses {
            match self.guard.check(address.ip()) {
                Ok(()) => allowed.push(address),
                Err(refused) => {
                    first_refusal.get_or_insert(refused);
                }
            }
        }
        match first_refusal {
            Some(refused) if allowed.is_empty() => {
                Err(io::Error::new(io::ErrorKind::PermissionDenied, refused))
            }
            None if allowed.is_empty() => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{netloc} resolved to no address"),
            )),
            _ => Ok(allowed),
        }
    }
}

impl ureq::Resolver for GuardedResolver {
    fn resolve(&self, netloc: &str) -> io::Result<Vec<SocketAddr>> {
        self.filter(netloc.to_socket_addrs()?.collect(), netloc)
    }
}

/// Finds a `Refused` in an error's source chain.
pub fn find_refusal<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a Refused> {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(refused) = error.downcast_ref::<Refused>() {
            return Some(refused);
        }
        if let Some(io_error) = error.downcast_ref::<io::Error>()
            && let Some(refused) = io_error
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<Refused>())
        {
            return Some(refused);
        }
        current = error.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(text: &str) -> bool {
        parse_target(text, 2048, &Guard::default()).is_err()
    }

    #[test]
    fn refused_literals() {
        let cases = [
            "http://localhost/",
            "http://api.localhost/",
            "http://127.1/",
            "http://0.0.0.0/",
            "http://2130706433/",
            "http://0x7f.0.0.1/",
            "http://017700000001/",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:7f00:1]/",
            "http://[fe80::1]/",
            "http://[fd00::1]/",
            "http://169.254.169.254/",
            "http://[fd00:ec2::254]/",
            "http://10.1.2.3/",
            "http://172.16.0.1/",
            "http://192.168.1.1/",
            "http://100.64.0.1/",
            "http://255.255.255.255/",
            "http://224.0.0.1/",
            "http://[64:ff9b::a01:203]/",
            "http://[2002:7f00:1::]/",
            "ftp://example.com/",
            "file:///etc/passwd",
            "javascript:alert(1)",
        ];
        for case in cases {
            assert!(refused(case), "{case} was accepted");
        }
    }

    #[test]
    fn accepted_targets() {
        for case in [
            "https://example.com/hooks",
            "http://93.184.215.14:8080/x?y=1",
            "http://[2606:4700::1]/",
        ] {
            assert!(!refused(case), "{case} was refused");
        }
    }

    #[test]
    fn allow_list_opens_loopback_not_metadata() {
        let guard = Guard::new(vec![
            "127.0.0.0/8".parse().unwrap(),
            "169.254.0.0/16".parse().unwrap(),
        ]);
        assert!(parse_target("http://127.0.0.1:9000/", 2048, &guard).is_ok());
        assert!(
            parse_target("http://localhost:9000/", 2048, &guard).is_err(),
            "::1 is still refused"
        );
        assert!(parse_target("http://169.254.169.254/", 2048, &guard).is_err());
        assert!(parse_target("http://169.254.1.1/", 2048, &guard).is_ok());
    }

    #[test]
    fn key_normalises_case_port_and_path() {
        let guard = Guard::default();
        let key = |text: &str| parse_target(text, 2048, &guard).unwrap().key;
        assert_eq!(key("HTTP://Example.COM:80"), key("http://example.com/"));
        assert_eq!(
            key("https://example.com:443/a"),
            key("https://EXAMPLE.com/a")
        );
        assert_ne!(key("https://example.com/a"), key("https://example.com/a/"));
        assert_ne!(
            key("https://example.com/a?x=1"),
            key("https://example.com/a")
        );
        assert_eq!(
            key("http://[2606:4700:0::1]/"),
            key("http://[2606:4700::1]/")
        );
        assert_eq!(
            key("http://bücher.example/"),
            key("http://xn--bcher-kva.example/")
        );
    }

    #[test]
    fn bad_text_is_named() {
        let guard = Guard::default();
        let long = format!("https://example.com/{}", "a".repeat(100));
        assert!(
            parse_target(&long, 64, &guard)
                .unwrap_err()
                .contains("limit of 64")
        );
        assert!(
            parse_target("https://example.com/\r\nX: y", 2048, &guard)
                .unwrap_err()
                .contains("character")
        );
        assert!(
            parse_target("https://user:pw@example.com/", 2048, &guard)
                .unwrap_err()
                .contains("user info")
        );
        assert!(
            parse_target("/relative", 2048, &guard)
                .unwrap_err()
                .contains("absolute")
        );
    }

    #[test]
    fn resolver_drops_refused_addresses() {
        use ureq::Resolver;
        let resolver = GuardedResolver::new(Arc::new(Guard::default()));
        let error = resolver.resolve("127.0.0.1:80").unwrap_err();
        let refusal = find_refusal(&error).expect("refusal in the error chain");
        assert_eq!(refusal.range, "loopback");
        let error = resolver.resolve("localhost:80").unwrap_err();
        assert!(find_refusal(&error).is_some());

        // With only IPv4 loopback allowed, a name resolving to both families
        // keeps the allowed address and drops the refused one.
        let guard = Guard::new(vec!["127.0.0.0/8".parse().unwrap()]);
        let resolver = GuardedResolver::new(Arc::new(guard));
        let mixed: Vec<SocketAddr> =
            vec!["127.0.0.1:80".parse().unwrap(), "[::1]:80".parse().unwrap()];
        let kept = resolver.filter(mixed, "localhost:80").unwrap();
        assert_eq!(kept, vec!["127.0.0.1:80".parse::<SocketAddr>().unwrap()]);
    }
}

//! Configuration: embedded defaults, then a TOML file, then `HOOKD_*`
//! environment variables, validated before anything starts.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer};

/// Prefix of environment variables that override config keys. A nested key
/// joins its parts with a double underscore: `HOOKD_DELIVERY__SENDERS`.
pub const ENV_PREFIX: &str = "HOOKD_";

/// Environment variable naming the config file; not a config key itself.
pub const CONFIG_ENV: &str = "HOOKD_CONFIG";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid environment variable {name}: {message}")]
    Env { name: String, message: String },
    #[error("invalid config key `{key}`: {message}")]
    Invalid { key: &'static str, message: String },
}

/// The whole configuration. Every field is documented with its default in
/// `config.example.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address and port the HTTP API listens on.
    pub listen: SocketAddr,
    /// Directory for the database and the first user's key file.
    pub data_dir: PathBuf,
    /// SQLite database file; defaults to `hookd.db` in `data_dir`.
    pub database: Option<PathBuf>,
    /// Base of every `resource_url`, such as `https://api.example.com`.
    /// Defaults to `http://` + `listen`.
    pub public_base_url: Option<String>,
    /// SQLite `synchronous` setting: `full` (a commit survives power loss) or
    /// `normal` (survives a process crash, may lose the last commits on
    /// power loss). Commits of claims and attempt outcomes only never sync.
    pub synchronous: Synchronous,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// Largest stored resource document, in bytes of JSON.
    pub max_document_bytes: usize,
    /// Longest accepted `target_url`, in bytes.
    pub max_target_url_length: usize,
    /// Active subscriptions one user may hold.
    pub max_subscriptions_per_user: u32,
    /// How long attempts in flight may run on after a stop signal.
    #[serde(deserialize_with = "duration")]
    pub shutdown_grace: Duration,
    /// How long finished notifications and their attempts, and removed
    /// subscriptions, are kept before pruning.
    #[serde(deserialize_with = "duration")]
    pub retention: Duration,
    /// How often the pruning pass runs.
    #[serde(deserialize_with = "duration")]
    pub prune_interval: Duration,
    /// Log line format: `text` (key=value lines) or `json` (one object per
    /// line, for log shippers).
    pub log_format: LogFormat,
    pub delivery: DeliveryConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    Full,
    Normal,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// Sender threads kept when idle; each makes one attempt at a time.
    pub senders: usize,
    /// Sender threads at most. The pool grows while notifications wait and
    /// every sender is busy, which slow receivers need.
    pub max_senders: usize,
    /// Idle time after which a sender thread above `senders` exits.
    #[serde(deserialize_with = "duration")]
    pub sender_idle_timeout: Duration,
    /// Limit on establishing the TCP (and TLS) connection of one attempt.
    #[serde(deserialize_with = "duration")]
    pub connect_timeout: Duration,
    /// Deadline for a whole attempt: connect, send, and read the response.
    #[serde(deserialize_with = "duration")]
    pub timeout: Duration,
    /// Failed attempts of one notification that remove its subscription.
    pub max_attempts: u32,
    /// Waits before attempt 2, 3, ...; the last wait repeats if the list is
    /// shorter than `max_attempts - 1`. Jitter adds up to 10 %.
    #[serde(deserialize_with = "durations")]
    pub retry_waits: Vec<Duration>,
    /// Attempts in flight to one `host:port` at a time, so a slow or dead
    /// receiver cannot hold every sender thread.
    pub max_in_flight_per_host: usize,
    /// When true, nothing is sent: notifications are stored and wait until
    /// hookd runs with this false again.
    pub paused: bool,
    /// How long the previous signing secret still signs after a rotation.
    #[serde(deserialize_with = "duration")]
    pub secret_rotation_overlap: Duration,
    /// Cap on a receiver's `Retry-After`.
    #[serde(deserialize_with = "duration")]
    pub max_retry_after: Duration,
    /// Response bytes read from a receiver and stored with the attempt.
    pub max_response_bytes: usize,
    /// Networks (CIDR) exempt from the destination rules, such as
    /// `10.20.0.0/16` for intranet receivers. Cloud-metadata addresses stay
    /// refused whatever this says.
    pub allowed_networks: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("data"),
            database: None,
            public_base_url: None,
            synchronous: Synchronous::Full,
            max_body_bytes: 64 * 1024,
            max_document_bytes: 32 * 1024,
            max_target_url_length: 2048,
            max_subscriptions_per_user: 1000,
            shutdown_grace: Duration::from_secs(10),
            retention: Duration::from_secs(30 * 24 * 3600),
            prune_interval: Duration::from_secs(600),
            log_format: LogFormat::Text,
            delivery: DeliveryConfig::default(),
        }
    }
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            senders: 4,
            max_senders: 256,
            sender_idle_timeout: Duration::from_secs(20),
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(15),
            max_attempts: 3,
            max_in_flight_per_host: 8,
            paused: false,
            retry_waits: vec![Duration::from_secs(60), Duration::from_secs(300)],
            max_retry_after: Duration::from_secs(3600),
            secret_rotation_overlap: Duration::from_secs(24 * 3600),
            max_response_bytes: 1024,
            allowed_networks: Vec::new(),
        }
    }
}

impl Config {
    /// Loads the embedded defaults, then `path` if given, then `HOOKD_*`
    /// environment variables, and validates the result.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let mut table = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                // Parsing into the typed struct first gives errors with the
                // file's line and column.
                toml::from_str::<Config>(&text).map_err(|error| ConfigError::Parse {
                    path: path.to_owned(),
                    message: error.to_string(),
                })?;
                toml::from_str::<toml::Table>(&text).map_err(|error| ConfigError::Parse {
                    path: path.to_owned(),
                    message: error.to_string(),
                })?
            }
            None => toml::Table::new(),
        };

        let mut variables: Vec<(String, String)> = std::env::vars()
            .filter(|(name, _)| name.starts_with(ENV_PREFIX) && name != CONFIG_ENV)
            .collect();
        variables.sort();
        for (name, value) in variables {
            apply_env_override(&mut table, &name, &value)?;
        }

        let config: Config =
            toml::Value::Table(table)
                .try_into()
                .map_err(|error: toml::de::Error| ConfigError::Env {
                    name: "HOOKD_*".into(),
                    message: error.to_string(),
                })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks the values that types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, message: String| ConfigError::Invalid { key, message };

        if let Some(base) = &self.public_base_url {
            let parsed = url::Url::parse(base).map_err(|error| {
                invalid(
                    "public_base_url",
                    format!("{base:?} is not an absolute URL ({error}); write it like \"https://api.example.com\""),
                )
            })?;
            if !matches!(parsed.scheme(), "http" | "https") || parsed.query().is_some() {
                return Err(invalid(
                    "public_base_url",
                    format!("{base:?} must be an http or https URL without a query"),
                ));
            }
        }
        if self.max_body_bytes < 1024 {
            return Err(invalid(
                "max_body_bytes",
                format!("{} is below the minimum of 1024", self.max_body_bytes),
            ));
        }
        if self.max_document_bytes < 256 {
            return Err(invalid(
                "max_document_bytes",
                format!("{} is below the minimum of 256", self.max_document_bytes),
            ));
        }
        if self.max_target_url_length < 64 {
            return Err(invalid(
                "max_target_url_length",
                format!("{} is below the minimum of 64", self.max_target_url_length),
            ));
        }

        if self.retention < Duration::from_secs(1) {
            return Err(invalid("retention", "must be at least 1s".into()));
        }
        if self.prune_interval < Duration::from_millis(100) {
            return Err(invalid("prune_interval", "must be at least 100ms".into()));
        }

        let delivery = &self.delivery;
        if delivery.senders == 0 || delivery.senders > 4096 {
            return Err(invalid(
                "delivery.senders",
                format!("{} is outside 1 to 4096", delivery.senders),
            ));
        }
        if delivery.max_senders < delivery.senders || delivery.max_senders > 4096 {
            return Err(invalid(
                "delivery.max_senders",
                format!(
                    "{} must be from delivery.senders ({}) to 4096",
                    delivery.max_senders, delivery.senders
                ),
            ));
        }
        if delivery.sender_idle_timeout < Duration::from_millis(100) {
            return Err(invalid(
                "delivery.sender_idle_timeout",
                "must be at least 100ms".into(),
            ));
        }
        if delivery.max_in_flight_per_host == 0 {
            return Err(invalid(
                "delivery.max_in_flight_per_host",
                "must be at least 1".into(),
            ));
        }
        if delivery.max_attempts == 0 || delivery.max_attempts > 100 {
            return Err(invalid(
                "delivery.max_attempts",
                format!("{} is outside 1 to 100", delivery.max_attempts),
            ));
        }
        if delivery.max_attempts > 1 && delivery.retry_waits.is_empty() {
            return Err(invalid(
                "delivery.retry_waits",
                "is empty but max_attempts allows retries; give at least one wait such as [\"1m\"]"
                    .into(),
            ));
        }
        if delivery.timeout.is_zero() || delivery.connect_timeout.is_zero() {
            return Err(invalid(
                "delivery.timeout",
                "timeouts must be greater than zero".into(),
            ));
        }
        if delivery.connect_timeout > delivery.timeout {
            return Err(invalid(
                "delivery.connect_timeout",
                format!(
                    "{} is longer than delivery.timeout ({}); the whole attempt must be able to include the connect",
                    humantime::format_duration(delivery.connect_timeout),
                    humantime::format_duration(delivery.timeout)
                ),
            ));
        }
        self.allowed_networks()?;
        Ok(())
    }

    /// Path of the SQLite database file.
    pub fn database_path(&self) -> PathBuf {
        match &self.database {
            Some(path) => path.clone(),
            None => self.data_dir.join("hookd.db"),
        }
    }

    /// Base of resource URLs, without a trailing slash. `listen_addr` is the
    /// bound address, which differs from `listen` when the port is 0.
    pub fn public_base_url(&self, listen_addr: SocketAddr) -> String {
        match &self.public_base_url {
            Some(base) => base.trim_end_matches('/').to_owned(),
            None => format!("http://{listen_addr}"),
        }
    }

    /// The parsed `delivery.allowed_networks`.
    pub fn allowed_networks(&self) -> Result<Vec<IpNet>, ConfigError> {
        self.delivery
            .allowed_networks
            .iter()
            .map(|text| {
                text.parse::<IpNet>()
                    .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from))
                    .map_err(|_| ConfigError::Invalid {
                        key: "delivery.allowed_networks",
                        message: format!(
                            "{text:?} is not a network; write it in CIDR form like \"10.20.0.0/16\""
                        ),
                    })
            })
            .collect()
    }
}

/// Sets the key named by one `HOOKD_*` variable in `table`. The value is read
/// as a TOML value when it parses as one (numbers, arrays, booleans) and as a
/// string otherwise.
fn apply_env_override(table: &mut toml::Table, name: &str, value: &str) -> Result<(), ConfigError> {
    let path: Vec<String> = name[ENV_PREFIX.len()..]
        .to_ascii_lowercase()
        .split("__")
        .map(str::to_owned)
        .collect();
    if path.iter().any(String::is_empty) {
        return Err(ConfigError::Env {
            name: name.into(),
            message: "name a key like HOOKD_LISTEN or HOOKD_DELIVERY__SENDERS".into(),
        });
    }

    let parsed = format!("value = {value}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut table| table.remove("value"))
        .unwrap_or_else(|| toml::Value::String(value.to_owned()));

    let mut current = &mut *table;
    for part in &path[..path.len() - 1] {
        let entry = current
            .entry(part.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = entry.as_table_mut().ok_or_else(|| ConfigError::Env {
            name: name.into(),
            message: format!("config key `{part}` is not a table"),
        })?;
    }
    current.insert(path[path.len() - 1].clone(), parsed);

    // Check this one variable now so the error names it.
    toml::Value::Table(table.clone())
        .try_into::<Config>()
        .map_err(|error| ConfigError::Env {
            name: name.into(),
            message: error.to_string().trim().to_owned(),
        })?;
    Ok(())
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|error| {
        format!("invalid duration {text:?} ({error}); write it like \"30s\", \"5m\" or \"250ms\"")
    })
}

fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse_duration(&text).map_err(serde::de::Error::custom)
}

fn durations<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<Duration>, D::Error> {
    let texts = Vec::<String>::deserialize(deserializer)?;
    texts
        .iter()
        .map(|text| parse_duration(text))
        .collect::<Result<_, _>>()
        .map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_file_matches_defaults() {
        let text = include_str!("../config.example.toml");
        let parsed: Config = toml::from_str(text).expect("config.example.toml parses");
        let defaults = Config::default();
        assert_eq!(parsed.listen, defaults.listen);
        assert_eq!(parsed.delivery.retry_waits, defaults.delivery.retry_waits);
        assert_eq!(parsed.delivery.max_attempts, defaults.delivery.max_attempts);
        assert_eq!(parsed.delivery.senders, defaults.delivery.senders);
        assert_eq!(parsed.max_body_bytes, defaults.max_body_bytes);
        assert_eq!(parsed.shutdown_grace, defaults.shutdown_grace);
    }

    #[test]
    fn unknown_key_is_named() {
        let error = toml::from_str::<Config>("[delivery]\nsendrs = 4\n").unwrap_err();
        assert!(error.to_string().contains("sendrs"), "{error}");
    }

    #[test]
    fn bad_duration_names_value() {
        let error = toml::from_str::<Config>("shutdown_grace = \"ten seconds\"\n").unwrap_err();
        assert!(error.to_string().contains("ten seconds"), "{error}");
    }

    #[test]
    fn env_override_sets_nested_key() {
        let mut table = toml::Table::new();
        apply_env_override(&mut table, "HOOKD_DELIVERY__SENDERS", "3").unwrap();
        apply_env_override(&mut table, "HOOKD_LISTEN", "127.0.0.1:9000").unwrap();
        let config: Config = toml::Value::Table(table).try_into().unwrap();
        assert_eq!(config.delivery.senders, 3);
        assert_eq!(config.listen.port(), 9000);
    }

    #[test]
    fn env_override_unknown_key_names_variable() {
        let mut table = toml::Table::new();
        let error = apply_env_override(&mut table, "HOOKD_LISTN", "x").unwrap_err();
        assert!(error.to_string().contains("HOOKD_LISTN"), "{error}");
    }

    #[test]
    fn allowed_network_error_names_value() {
        let mut config = Config::default();
        config.delivery.allowed_networks = vec!["10.0.0.0/33".into()];
        let error = config.validate().unwrap_err();
        assert!(error.to_string().contains("10.0.0.0/33"), "{error}");
    }
}

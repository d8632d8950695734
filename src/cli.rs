//! The command line: `hookd serve` and the operator commands for domains,
//! users, keys and subscriptions.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::api::rfc3339;
use crate::app::{Application, StartError};
use crate::config::{CONFIG_ENV, Config, ConfigError, LogFormat};
use crate::store::{AccountError, Store, StoreError};

#[derive(Parser)]
#[command(
    name = "hookd",
    version,
    about = "REST notification hooks (webhooks) for a project-management API"
)]
struct Cli {
    /// TOML config file; without one, the embedded defaults apply.
    #[arg(long, global = true, value_name = "FILE", env = CONFIG_ENV)]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server until SIGTERM or SIGINT.
    Serve,
    /// Validate a config file without starting anything.
    CheckConfig {
        /// The file to check; defaults to --config.
        file: Option<PathBuf>,
    },
    /// Manage domains (accounts).
    #[command(subcommand)]
    Domain(DomainCommand),
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage API keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Inspect subscriptions.
    #[command(subcommand)]
    Hooks(HooksCommand),
    /// Inspect and redeliver notifications.
    #[command(subcommand)]
    Notifications(NotificationsCommand),
    /// Copy the database to FILE while the server runs (SQLite online
    /// backup). Restore by stopping hookd and putting the copy in place of
    /// the database file.
    Backup {
        /// The new file; it must not exist yet.
        file: PathBuf,
    },
    /// Probe a running server's /readyz; exit 0 when ready, 1 otherwise.
    /// For container and systemd health checks.
    Healthcheck {
        /// Base URL of the server; defaults to the config's listen address.
        #[arg(long)]
        url: Option<String>,
    },
}

#[derive(Subcommand)]
enum DomainCommand {
    /// Create a domain.
    Add { name: String },
    /// List domains.
    List,
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a user and print its first API key alone on stdout.
    Add {
        #[arg(long)]
        domain: String,
        #[arg(long)]
        name: String,
    },
    /// List users with their counts of active keys and subscriptions.
    List {
        #[arg(long)]
        domain: Option<String>,
    },
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Add an API key to a user and print it alone on stdout.
    Add {
        #[arg(long)]
        domain: String,
        #[arg(long)]
        user: String,
    },
    /// List keys by id (the keys themselves are never stored).
    List {
        #[arg(long)]
        domain: Option<String>,
        #[arg(long)]
        user: Option<String>,
    },
    /// Revoke a key by its id or by the key itself. Revoking a user's last
    /// key removes that user's subscriptions.
    Revoke { key: String },
}

#[derive(Subcommand)]
enum HooksCommand {
    /// List active subscriptions.
    List {
        /// Include removed subscriptions with why they were removed.
        #[arg(long)]
        all: bool,
    },
}

#[derive(Subcommand)]
enum NotificationsCommand {
    /// List a subscription's notifications, newest first, with attempts.
    List {
        #[arg(long)]
        hook: String,
        /// Notifications to show.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Send every failed or cancelled notification of an active
    /// subscription again, as new notifications.
    Redeliver {
        #[arg(long)]
        hook: String,
        /// Only notifications created since then: an RFC 3339 time such as
        /// 2026-12-04T10:00:00Z, or a duration ago such as 2h.
        #[arg(long)]
        since: String,
    },
}

#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Start(#[from] StartError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Account(#[from] AccountError),
    #[error("{0}")]
    NotFound(String),
    #[error("not ready: {0}")]
    NotReady(String),
    #[error("invalid {what} {value:?}: {rule}")]
    Invalid {
        what: &'static str,
        value: String,
        rule: &'static str,
    },
}

/// Runs the command line and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = if matches!(cli.command, Command::Serve) {
        "info"
    } else {
        "warn"
    };
    // A config that does not load is reported by the command itself.
    let format = Config::load(cli.config.as_deref())
        .map(|config| config.log_format)
        .unwrap_or(LogFormat::Text);
    init_logger(default_level, format);

    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("hookd: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), CliError> {
    if let Command::CheckConfig { file } = &cli.command {
        let path = file.as_ref().or(cli.config.as_ref());
        Config::load(path.map(PathBuf::as_path))?;
        match path {
            Some(path) => println!("{} is valid", path.display()),
            None => println!("the embedded defaults are valid"),
        }
        return Ok(());
    }

    let config = Config::load(cli.config.as_deref())?;
    if let Command::Serve = cli.command {
        crate::memory::reexec_without_stack_cache();
        crate::memory::limit_arenas();
        log::info!("hookd {} starting", env!("CARGO_PKG_VERSION"));
        return actix_web::rt::System::new().block_on(async move {
            let application = Application::build(config, true)?;
            application.run().await?;
            Ok(())
        });
    }

    match cli.command {
        Command::Backup { file } => {
            crate::store::backup_database(&config.database_path(), &file)?;
            eprintln!(
                "backed up {} to {}",
                config.database_path().display(),
                file.display()
            );
            return Ok(());
        }
        Command::Healthcheck { url } => return healthcheck(url, &config),
        _ => {}
    }

    let store = Store::open(&config.database_path(), config.synchronous)?;
    let result = operate(&store, cli.command);
    store.close();
    result
}

fn operate(store: &Store, command: Command) -> Result<(), CliError> {
    match command {
        Command::Serve
        | Command::CheckConfig { .. }
        | Command::Backup { .. }
        | Command::Healthcheck { .. } => unreachable!("handled before the store opens"),
        Command::Domain(DomainCommand::Add { name }) => {
            check_name("domain", &name)?;
            store.create_domain(&name)?;
            eprintln!("created domain {name:?}");
        }
        Command::Domain(DomainCommand::List) => {
            for (name, created_at) in store.list_domains()? {
                println!("{name}\tcreated {}", rfc3339(created_at));
            }
        }
        Command::User(UserCommand::Add { domain, name }) => {
            check_name("user name", &name)?;
            let key = store.create_user(&domain, &name)?;
            eprintln!(
                "created user {name:?} in domain {domain:?}; its API key follows and is not shown again"
            );
            println!("{key}");
        }
        Command::User(UserCommand::List { domain }) => {
            println!("DOMAIN\tUSER\tACTIVE_KEYS\tACTIVE_HOOKS\tCREATED");
            for user in store.list_users(domain.as_deref())? {
                println!(
                    "{}\t{}\t{}\t{}\t{}",
                    user.domain,
                    user.name,
                    user.active_keys,
                    user.active_subscriptions,
                    rfc3339(user.created_at)
                );
            }
        }
        Command::Key(KeyCommand::Add { domain, user }) => {
            let key = store.add_key(&domain, &user)?;
            eprintln!(
                "added an API key to user {user:?} in domain {domain:?}; it follows and is not shown again"
            );
            println!("{key}");
        }
        Command::Key(KeyCommand::List { domain, user }) => {
            println!("ID\tDOMAIN\tUSER\tCREATED\tREVOKED");
            for key in store.list_keys(domain.as_deref(), user.as_deref())? {
                println!(
                    "{}\t{}\t{}\t{}\t{}",
                    key.id,
                    key.domain,
                    key.user,
                    rfc3339(key.created_at),
                    key.revoked_at.map(rfc3339).unwrap_or_else(|| "-".into())
                );
            }
        }
        Command::Key(KeyCommand::Revoke { key }) => {
            let revoked = store.revoke_key(&key)?;
            eprintln!("revoked key {}", revoked.key_id);
            if revoked.subscriptions_removed > 0 {
                eprintln!(
                    "the user has no active key left, so its {} subscriptions were removed",
                    revoked.subscriptions_removed
                );
            }
        }
        Command::Notifications(NotificationsCommand::List { hook, limit }) => {
            let Some((user_id, _)) = store.subscription_owner(&hook)? else {
                return Err(CliError::NotFound(format!(
                    "subscription {hook:?} not found; list them with `hookd hooks list --all`"
                )));
            };
            let page = store.deliveries(user_id, &hook, limit.clamp(1, 1000), None)?;
            println!("ID\tEVENT\tSTATE\tCREATED\tATTEMPTS\tLAST_OUTCOME");
            for notification in page.map(|page| page.notifications).unwrap_or_default() {
                let last = notification
                    .attempts
                    .last()
                    .map(|attempt| {
                        format!(
                            "{} {}",
                            attempt.outcome,
                            attempt
                                .status
                                .map(|status| status.to_string())
                                .unwrap_or_default()
                        )
                    })
                    .unwrap_or_else(|| "-".into());
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    notification.id,
                    notification.event,
                    notification.state,
                    rfc3339(notification.created_at),
                    notification.attempts.len(),
                    last.trim()
                );
            }
        }
        Command::Notifications(NotificationsCommand::Redeliver { hook, since }) => {
            let since_ms = parse_since(&since)?;
            let Some((user_id, removed)) = store.subscription_owner(&hook)? else {
                return Err(CliError::NotFound(format!(
                    "subscription {hook:?} not found; list them with `hookd hooks list --all`"
                )));
            };
            if let Some(reason) = removed {
                return Err(CliError::NotFound(format!(
                    "subscription {hook:?} was removed ({reason}); notifications can be redelivered only to an active subscription"
                )));
            }
            let failed = store.failed_notifications(&hook, since_ms)?;
            let mut queued = 0;
            for notification in &failed {
                if let Some(new_id) = store.redeliver(user_id, &hook, notification)? {
                    println!("{new_id}\tredelivers {notification}");
                    queued += 1;
                }
            }
            eprintln!(
                "queued {queued} redeliveries; a running server sends them within its next claim"
            );
        }
        Command::Hooks(HooksCommand::List { all }) => {
            println!("ID\tDOMAIN\tUSER\tEVENT\tCREATED\tREMOVED\tTARGET_HOST");
            for (domain, user, subscription) in store.list_all_subscriptions(all)? {
                // Only the host is shown: paths and queries may carry the
                // receiver's secrets.
                let host = url::Url::parse(&subscription.target_url)
                    .ok()
                    .and_then(|url| url.host_str().map(str::to_owned))
                    .unwrap_or_default();
                let removed = match (subscription.removed_at, subscription.removed_reason) {
                    (Some(at), Some(reason)) => format!("{} ({reason})", rfc3339(at)),
                    _ => "-".into(),
                };
                println!(
                    "{}\t{domain}\t{user}\t{}\t{}\t{removed}\t{host}",
                    subscription.id,
                    subscription.event,
                    rfc3339(subscription.created_at)
                );
            }
        }
    }
    Ok(())
}

/// Domain and user names: 1 to 253 characters of letters, digits, `.`, `-`
/// and `_`, so they fit in an HTTP header unchanged.
fn check_name(what: &'static str, name: &str) -> Result<(), CliError> {
    let valid = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'-' | b'_'));
    if valid {
        Ok(())
    } else {
        Err(CliError::Invalid {
            what,
            value: name.to_owned(),
            rule: "use 1 to 253 letters, digits, '.', '-' or '_'",
        })
    }
}

/// Probes `/readyz` of a running server.
fn healthcheck(url: Option<String>, config: &Config) -> Result<(), CliError> {
    let base = url.unwrap_or_else(|| {
        let mut address = config.listen;
        if address.ip().is_unspecified() {
            address.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        format!("http://{address}")
    });
    let target = format!("{}/readyz", base.trim_end_matches('/'));
    let response = ureq::get(&target)
        .timeout(std::time::Duration::from_secs(5))
        .call();
    match response {
        Ok(_) => {
            println!("ready");
            Ok(())
        }
        Err(ureq::Error::Status(status, response)) => {
            let body = response.into_string().unwrap_or_default();
            Err(CliError::NotReady(format!(
                "{target} answered {status}: {}",
                body.trim()
            )))
        }
        Err(error) => Err(CliError::NotReady(format!(
            "cannot reach {target}: {error}"
        ))),
    }
}

/// Sets up `log` output on stderr: `RUST_LOG` picks levels, `format` the
/// line format.
fn init_logger(default_level: &str, format: LogFormat) {
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_level));
    if format == LogFormat::Json {
        builder.format(|buffer, record| {
            use std::io::Write;
            let message = record.args().to_string();
            let mut object = serde_json::Map::new();
            let time = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
            object.insert("time".into(), time.into());
            object.insert("level".into(), record.level().as_str().into());
            object.insert("target".into(), record.target().into());
            // The key=value pairs of a line also become fields of their own.
            for token in message.split_whitespace() {
                if let Some((key, value)) = token.split_once('=') {
                    let plain_key = !key.is_empty()
                        && key
                            .bytes()
                            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_');
                    if plain_key && !object.contains_key(key) {
                        object.insert(key.into(), value.trim_matches('"').into());
                    }
                }
            }
            object.insert("message".into(), message.into());
            writeln!(buffer, "{}", serde_json::Value::Object(object))
        });
    }
    builder.init();
}

/// Reads `--since`: an RFC 3339 time, or a duration before now.
fn parse_since(text: &str) -> Result<i64, CliError> {
    if let Ok(time) = humantime::parse_rfc3339_weak(text) {
        let since = time
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_millis() as i64)
            .unwrap_or(0);
        return Ok(since);
    }
    if let Ok(ago) = humantime::parse_duration(text) {
        return Ok(crate::store::now_ms() - ago.as_millis() as i64);
    }
    Err(CliError::Invalid {
        what: "--since",
        value: text.to_owned(),
        rule: "give an RFC 3339 time such as 2026-12-04T10:00:00Z or a duration such as 2h",
    })
}

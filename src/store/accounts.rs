//! Domains, users and API keys, and the lookup that authenticates a request.

use rusqlite::{OptionalExtension, params};

use super::{Store, StoreError, now_ms, outbox};
use crate::secrets;

/// The authenticated user behind a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user_id: i64,
    pub user_name: String,
    pub domain_id: i64,
    pub domain_name: String,
}

#[derive(Debug, Clone)]
pub struct UserInfo {
    pub domain: String,
    pub name: String,
    pub active_keys: i64,
    pub active_subscriptions: i64,
    pub created_at: i64,
}

#[derive(Debug, Clone)]
pub struct KeyInfo {
    pub id: String,
    pub domain: String,
    pub user: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("domain {0:?} not found; create it with `hookd domain add {0}`")]
    DomainNotFound(String),
    #[error("domain {0:?} already exists")]
    DomainExists(String),
    #[error("user {user:?} not found in domain {domain:?}; list users with `hookd user list`")]
    UserNotFound { domain: String, user: String },
    #[error("user {user:?} already exists in domain {domain:?}")]
    UserExists { domain: String, user: String },
    #[error("API key {0:?} not found; list keys with `hookd key list`")]
    KeyNotFound(String),
    #[error("API key {0:?} is already revoked")]
    KeyAlreadyRevoked(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<rusqlite::Error> for AccountError {
    fn from(error: rusqlite::Error) -> Self {
        AccountError::Store(StoreError::from(error))
    }
}

/// What revoking a key did.
#[derive(Debug)]
pub struct Revoked {
    pub key_id: String,
    /// Subscriptions removed because the user has no active key left.
    pub subscriptions_removed: usize,
}

impl Store {
    /// True when no domain exists yet, as on a fresh database.
    pub fn has_no_domains(&self) -> Result<bool, StoreError> {
        let connection = self.reader()?;
        let count: i64 =
            connection.query_row("SELECT count(*) FROM domains", [], |row| row.get(0))?;
        Ok(count == 0)
    }

    pub fn create_domain(&self, name: &str) -> Result<(), AccountError> {
        let name = name.to_owned();
        self.writer().write(move |connection| {
            let inserted = connection.execute(
                "INSERT INTO domains (name, created_at) VALUES (?1, ?2) ON CONFLICT (name) DO NOTHING",
                params![name, now_ms()],
            )?;
            if inserted == 0 {
                return Err(AccountError::DomainExists(name));
            }
            Ok(())
        })
    }

    pub fn list_domains(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let connection = self.reader()?;
        let mut statement =
            connection.prepare("SELECT name, created_at FROM domains ORDER BY name")?;
        let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Creates a user and its first API key, and returns the key.
    pub fn create_user(&self, domain: &str, user: &str) -> Result<String, AccountError> {
        let (domain, user) = (domain.to_owned(), user.to_owned());
        self.writer().write(move |connection| {
            let domain_id = domain_id(connection, &domain)?;
            let inserted = connection.execute(
                "INSERT INTO users (domain_id, name, created_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (domain_id, name) DO NOTHING",
                params![domain_id, user, now_ms()],
            )?;
            if inserted == 0 {
                return Err(AccountError::UserExists { domain, user });
            }
            let user_id = connection.last_insert_rowid();
            insert_key(connection, user_id)
        })
    }

    pub fn list_users(&self, domain: Option<&str>) -> Result<Vec<UserInfo>, StoreError> {
        let connection = self.reader()?;
        let mut statement = connection.prepare(
            "SELECT d.name, u.name, u.created_at,
                    (SELECT count(*) FROM api_keys k WHERE k.user_id = u.id AND k.revoked_at IS NULL),
                    u.active_subscriptions
             FROM users u JOIN domains d ON d.id = u.domain_id
             WHERE ?1 IS NULL OR d.name = ?1
             ORDER BY d.name, u.name",
        )?;
        let rows = statement.query_map(params![domain], |row| {
            Ok(UserInfo {
                domain: row.get(0)?,
                name: row.get(1)?,
                created_at: row.get(2)?,
                active_keys: row.get(3)?,
                active_subscriptions: row.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Adds an API key to an existing user and returns the key.
    pub fn add_key(&self, domain: &str, user: &str) -> Result<String, AccountError> {
        let (domain, user) = (domain.to_owned(), user.to_owned());
        self.writer().write(move |connection| {
            let user_id = user_id(connection, &domain, &user)?;
            insert_key(connection, user_id)
        })
    }

    pub fn list_keys(
        &self,
        domain: Option<&str>,
        user: Option<&str>,
    ) -> Result<Vec<KeyInfo>, StoreError> {
        let connection = self.reader()?;
        let mut statement = connection.prepare(
            "SELECT k.id, d.name, u.name, k.created_at, k.revoked_at
             FROM api_keys k JOIN users u ON u.id = k.user_id JOIN domains d ON d.id = u.domain_id
             WHERE (?1 IS NULL OR d.name = ?1) AND (?2 IS NULL OR u.name = ?2)
             ORDER BY d.name, u.name, k.created_at",
        )?;
        let rows = statement.query_map(params![domain, user], |row| {
            Ok(KeyInfo {
                id: row.get(0)?,
                domain: row.get(1)?,
                user: row.get(2)?,
                created_at: row.get(3)?,
                revoked_at: row.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Revokes a key named by its id or by the key itself. Revoking a user's
    /// last active key removes that user's subscriptions.
    pub fn revoke_key(&self, id_or_key: &str) -> Result<Revoked, AccountError> {
        let id_or_key = id_or_key.to_owned();
        self.writer().write(move |connection| {
            let found: Option<(String, i64, Option<i64>)> = connection
                .query_row(
                    "SELECT id, user_id, revoked_at FROM api_keys WHERE id = ?1 OR key_hash = ?2",
                    params![id_or_key, secrets::hash_api_key(&id_or_key)],
                    |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
                )
                .optional()?;
            let Some((key_id, user_id, revoked_at)) = found else {
                return Err(AccountError::KeyNotFound(shorten_for_message(&id_or_key)));
            };
            if revoked_at.is_some() {
                return Err(AccountError::KeyAlreadyRevoked(key_id));
            }

            let now = now_ms();
            connection.execute(
                "UPDATE api_keys SET revoked_at = ?1 WHERE id = ?2",
                params![now, key_id],
            )?;

            let active_keys: i64 = connection.query_row(
                "SELECT count(*) FROM api_keys WHERE user_id = ?1 AND revoked_at IS NULL",
                params![user_id],
                |row| row.get(0),
            )?;
            let mut subscriptions_removed = 0;
            if active_keys == 0 {
                let mut statement = connection.prepare(
                    "SELECT id FROM subscriptions WHERE user_id = ?1 AND removed_at IS NULL",
                )?;
                let ids: Vec<String> = statement
                    .query_map(params![user_id], |row| row.get(0))?
                    .collect::<Result<_, _>>()?;
                for id in &ids {
                    outbox::remove_subscription(connection, id, "key_revoked", now)?;
                }
                subscriptions_removed = ids.len();
            }
            Ok(Revoked {
                key_id,
                subscriptions_removed,
            })
        })
    }
}

/// Finds the active user behind an unrevoked API key in `domain`.
pub fn find_caller(
    connection: &rusqlite::Connection,
    key: &str,
    domain: &str,
) -> Result<Option<Caller>, StoreError> {
    let mut statement = connection.prepare_cached(
        "SELECT u.id, u.name, d.id, d.name
         FROM api_keys k JOIN users u ON u.id = k.user_id JOIN domains d ON d.id = u.domain_id
         WHERE k.key_hash = ?1 AND k.revoked_at IS NULL AND d.name = ?2",
    )?;
    let caller = statement
        .query_row(params![secrets::hash_api_key(key), domain], |row| {
            Ok(Caller {
                user_id: row.get(0)?,
                user_name: row.get(1)?,
                domain_id: row.get(2)?,
                domain_name: row.get(3)?,
            })
        })
        .optional()?;
    Ok(caller)
}

fn domain_id(connection: &rusqlite::Connection, domain: &str) -> Result<i64, AccountError> {
    connection
        .query_row(
            "SELECT id FROM domains WHERE name = ?1",
            params![domain],
            |row| row.get(0),
        )
        .optional()?
        .ok_or_else(|| AccountError::DomainNotFound(domain.to_owned()))
}

fn user_id(
    connection: &rusqlite::Connection,
    domain: &str,
    user: &str,
) -> Result<i64, AccountError> {
    let domain_id = domain_id(connection, domain)?;
    connection
        .query_row(
            "SELECT id FROM users WHERE domain_id = ?1 AND name = ?2",
            params![domain_id, user],
            |row| row.get(0),
        )
        .optional()?
        .ok_or_else(|| AccountError::UserNotFound {
            domain: domain.to_owned(),
            user: user.to_owned(),
        })
}

fn insert_key(connection: &rusqlite::Connection, user_id: i64) -> Result<String, AccountError> {
    let key = secrets::new_api_key();
    connection.execute(
        "INSERT INTO api_keys (id, user_id, key_hash, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![
            format!("key_{}", secrets::random_hex(6)),
            user_id,
            secrets::hash_api_key(&key),
            now_ms()
        ],
    )?;
    Ok(key)
}

/// Never echo a whole secret back: a mistyped key is still mostly a key.
fn shorten_for_message(text: &str) -> String {
    if secrets::looks_like_api_key(text) {
        format!("{}…", &text[..6])
    } else {
        text.chars().take(40).collect()
    }
}

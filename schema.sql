-- hookd schema, version 1.
--
-- The binary embeds this file and applies it to an empty database at start,
-- then sets PRAGMA user_version to 1. Times are INTEGER milliseconds since the
-- Unix epoch (UTC), so comparisons never depend on the server's time zone.

CREATE TABLE domains (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL
);

CREATE TABLE users (
    id          INTEGER PRIMARY KEY,
    domain_id   INTEGER NOT NULL REFERENCES domains (id),
    name        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    -- Kept by the triggers below, so the per-user limit costs no count.
    active_subscriptions INTEGER NOT NULL DEFAULT 0,
    UNIQUE (domain_id, name)
);

-- API keys are stored only as the SHA-256 of the key text. A key carries 160
-- random bits, so a fast hash cannot be reversed by guessing.
CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    user_id     INTEGER NOT NULL REFERENCES users (id),
    key_hash    BLOB NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);

CREATE INDEX api_keys_user ON api_keys (user_id);

CREATE TABLE resources (
    id          TEXT PRIMARY KEY,
    kind        TEXT NOT NULL CHECK (kind IN ('projects', 'tasks', 'subtasks', 'clients', 'events')),
    domain_id   INTEGER NOT NULL REFERENCES domains (id),
    user_id     INTEGER NOT NULL REFERENCES users (id),
    -- The whole JSON document as the API returns it, hookd's fields included.
    document    TEXT NOT NULL,
    completed   INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

CREATE INDEX resources_domain_kind ON resources (domain_id, kind, created_at);
-- Serves GET /v2/<kind>: one user's resources of a kind, newest first.
CREATE INDEX resources_user_kind ON resources (user_id, kind, created_at);

-- A removed subscription is kept, with when and why, so its history stays
-- readable. Reasons: deleted (by the client), receiver_gone (the receiver
-- answered 401 or 410), attempts_exhausted (a notification failed every
-- attempt), key_revoked (the user's last key was revoked).
CREATE TABLE subscriptions (
    id              TEXT PRIMARY KEY,
    user_id         INTEGER NOT NULL REFERENCES users (id),
    event           TEXT NOT NULL,
    -- Exactly as the client sent it.
    target_url      TEXT NOT NULL,
    -- Normalised form, used for the one-active-subscription-per-URL rule.
    target_key      TEXT NOT NULL,
    -- Host and port of the target, the unit of the per-destination cap on
    -- attempts in flight.
    target_authority TEXT NOT NULL,
    -- Signing secret (whsec_ + base64), and the one it replaced, which still
    -- signs until previous_secret_expires_at.
    secret          TEXT NOT NULL,
    previous_secret TEXT,
    previous_secret_expires_at INTEGER,
    created_at      INTEGER NOT NULL,
    removed_at      INTEGER,
    removed_reason  TEXT CHECK (removed_reason IN ('deleted', 'receiver_gone', 'attempts_exhausted', 'key_revoked')),
    CHECK ((removed_at IS NULL) = (removed_reason IS NULL))
);

-- Two racing subscribe requests for one URL: the second insert fails here.
CREATE UNIQUE INDEX subscriptions_active_target ON subscriptions (target_key) WHERE removed_at IS NULL;
CREATE INDEX subscriptions_user_event ON subscriptions (user_id, event) WHERE removed_at IS NULL;

CREATE TRIGGER subscriptions_count_insert AFTER INSERT ON subscriptions WHEN NEW.removed_at IS NULL
BEGIN
    UPDATE users SET active_subscriptions = active_subscriptions + 1 WHERE id = NEW.user_id;
END;

CREATE TRIGGER subscriptions_count_remove AFTER UPDATE OF removed_at ON subscriptions
    WHEN OLD.removed_at IS NULL AND NEW.removed_at IS NOT NULL
BEGIN
    UPDATE users SET active_subscriptions = active_subscriptions - 1 WHERE id = NEW.user_id;
END;

-- The outbox. States: pending (waiting for due_at), in_flight (claimed by the
-- dispatcher), delivered, failed (its last attempt removed the subscription)
-- and cancelled (the subscription was removed for another reason).
CREATE TABLE notifications (
    id              TEXT PRIMARY KEY,
    subscription_id TEXT NOT NULL REFERENCES subscriptions (id),
    event           TEXT NOT NULL,
    resource_url    TEXT NOT NULL,
    -- The subscription's target host:port, copied so that claims can walk
    -- the queue host by host.
    target_authority TEXT NOT NULL,
    -- For a redelivery: the notification it repeats.
    redelivery_of   TEXT,
    state           TEXT NOT NULL CHECK (state IN ('pending', 'in_flight', 'delivered', 'failed', 'cancelled')),
    -- Failed attempts so far; the next attempt's number is attempts + 1.
    attempts        INTEGER NOT NULL DEFAULT 0,
    due_at          INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    -- When the last failed attempt ended, so a restart with shorter retry
    -- waits can pull the next attempt in.
    last_attempt_at INTEGER,
    finished_at     INTEGER
);

CREATE INDEX notifications_due ON notifications (due_at) WHERE state = 'pending';
CREATE INDEX notifications_finished ON notifications (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX notifications_host_due ON notifications (target_authority, due_at) WHERE state = 'pending';
-- Indexed by subscription and creation time, which never change: an index
-- with the state in it would be rewritten at every claim and outcome.
CREATE INDEX notifications_subscription ON notifications (subscription_id, created_at);

CREATE TABLE attempts (
    id               INTEGER PRIMARY KEY,
    notification_id  TEXT NOT NULL REFERENCES notifications (id),
    number           INTEGER NOT NULL,
    started_at       INTEGER NOT NULL,
    duration_ms      INTEGER NOT NULL,
    -- delivered, receiver_gone, http_status, redirect, timeout, connect, dns,
    -- tls, destination_not_allowed or io.
    outcome          TEXT NOT NULL,
    status           INTEGER,
    error            TEXT,
    -- The first bytes of the response body, and whether more were sent.
    response_prefix  TEXT,
    response_truncated INTEGER NOT NULL DEFAULT 0
);

CREATE INDEX attempts_notification ON attempts (notification_id, number);

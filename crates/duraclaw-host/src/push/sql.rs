//! The statements both hosts run on the push tables (migration 3 of
//! `auth::schema`), with `?N` parameters as SQLite and D1 take them.

/// A user's subscriptions, oldest first: id, device, endpoint,
/// created_at_ms, last_success_ms, last_failure_ms, last_failure,
/// login_digest. `?1` user.
pub const LIST_SUBSCRIPTIONS: &str = "SELECT id, device, endpoint, created_at_ms, \
     last_success_ms, last_failure_ms, last_failure, login_digest \
     FROM push_subscriptions WHERE user_name = ?1 ORDER BY created_at_ms, id";

/// How many subscriptions a user has. `?1` user.
pub const COUNT_SUBSCRIPTIONS: &str =
    "SELECT COUNT(*) FROM push_subscriptions WHERE user_name = ?1";

/// The subscription of an endpoint, if any: id, user_name. `?1` endpoint.
pub const SUBSCRIPTION_BY_ENDPOINT: &str =
    "SELECT id, user_name FROM push_subscriptions WHERE endpoint = ?1";

/// Adds a subscription. `?1` id, `?2` user, `?3` login digest, `?4`
/// endpoint, `?5` p256dh, `?6` auth, `?7` device, `?8` now.
pub const INSERT_SUBSCRIPTION: &str = "INSERT INTO push_subscriptions \
     (id, user_name, login_digest, endpoint, p256dh, auth, device, created_at_ms) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";

/// The same endpoint subscribed again (new keys, login or name): `?1` id,
/// `?2` user, `?3` login digest, `?4` p256dh, `?5` auth, `?6` device.
pub const UPDATE_SUBSCRIPTION: &str = "UPDATE push_subscriptions SET user_name = ?2, \
     login_digest = ?3, p256dh = ?4, auth = ?5, device = ?6 WHERE id = ?1";

/// One subscription of a user (the answer to its `POST`): as
/// [`LIST_SUBSCRIPTIONS`]. `?1` user, `?2` id.
pub const GET_SUBSCRIPTION: &str = "SELECT id, device, endpoint, created_at_ms, \
     last_success_ms, last_failure_ms, last_failure, login_digest \
     FROM push_subscriptions WHERE user_name = ?1 AND id = ?2";

/// Removes a user's subscription. `?1` user, `?2` id.
pub const DELETE_SUBSCRIPTION: &str =
    "DELETE FROM push_subscriptions WHERE user_name = ?1 AND id = ?2";

/// Removes a subscription the push service said is gone. `?1` id.
pub const REMOVE_GONE: &str = "DELETE FROM push_subscriptions WHERE id = ?1";

/// Where to send a user's pushes: id, endpoint, p256dh, auth, device.
/// `?1` user.
pub const TARGETS: &str = "SELECT id, endpoint, p256dh, auth, device \
     FROM push_subscriptions WHERE user_name = ?1";

/// One subscription as a sender needs it: endpoint, p256dh, auth. `?1` id.
pub const TARGET: &str = "SELECT endpoint, p256dh, auth FROM push_subscriptions WHERE id = ?1";

/// A user's settings (JSON). `?1` user.
pub const GET_SETTINGS: &str = "SELECT settings FROM push_settings WHERE user_name = ?1";

/// Sets a user's settings. `?1` user, `?2` JSON, `?3` now.
pub const PUT_SETTINGS: &str = "INSERT INTO push_settings (user_name, settings, updated_at_ms) \
     VALUES (?1, ?2, ?3) ON CONFLICT (user_name) DO UPDATE SET settings = excluded.settings, \
     updated_at_ms = excluded.updated_at_ms";

/// Records a delivery about to be made, once per subscription and event
/// (a second insert of the same pair does nothing). `?1` id, `?2` user,
/// `?3` subscription id, `?4` device, `?5` kind, `?6` session, `?7`
/// question, `?8` event key, `?9` payload JSON, `?10` TTL secs, `?11` now.
pub const INSERT_DELIVERY: &str = "INSERT INTO push_deliveries \
     (id, user_name, subscription_id, device, kind, session_id, question_id, event_key, \
      status, attempts, payload, ttl_secs, next_attempt_ms, created_at_ms, updated_at_ms) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'sending', 0, ?9, ?10, ?11, ?11, ?11) \
     ON CONFLICT (subscription_id, event_key) DO NOTHING";

/// Deliveries due at `?1` (sending or retrying, their next attempt at or
/// before it), oldest first, at most `?2`: id, subscription_id, payload,
/// kind, question_id, attempts, ttl_secs, created_at_ms.
pub const DUE_DELIVERIES: &str = "SELECT id, subscription_id, payload, kind, question_id, \
     attempts, ttl_secs, created_at_ms FROM push_deliveries \
     WHERE next_attempt_ms IS NOT NULL AND next_attempt_ms <= ?1 \
     ORDER BY next_attempt_ms, id LIMIT ?2";

/// The earliest due time of a user's pending deliveries (`NULL` for none).
/// `?1` user.
pub const NEXT_DUE: &str = "SELECT MIN(next_attempt_ms) FROM push_deliveries \
     WHERE user_name = ?1 AND next_attempt_ms IS NOT NULL";

/// [`DUE_DELIVERIES`] for one user. `?1` now, `?2` limit, `?3` user.
pub const DUE_DELIVERIES_OF: &str = "SELECT id, subscription_id, payload, kind, question_id, \
     attempts, ttl_secs, created_at_ms FROM push_deliveries \
     WHERE user_name = ?3 AND next_attempt_ms IS NOT NULL AND next_attempt_ms <= ?1 \
     ORDER BY next_attempt_ms, id LIMIT ?2";

/// Records an attempt's outcome. `?1` id, `?2` status, `?3` http status,
/// `?4` error, `?5` attempts, `?6` next attempt (or `NULL`), `?7` now. A
/// final state forgets the payload.
pub const RECORD_ATTEMPT: &str = "UPDATE push_deliveries SET status = ?2, http_status = ?3, \
     error = ?4, attempts = ?5, next_attempt_ms = ?6, updated_at_ms = ?7, \
     payload = CASE WHEN ?6 IS NULL THEN '' ELSE payload END WHERE id = ?1";

/// A success on a subscription. `?1` id, `?2` now.
pub const SUBSCRIPTION_SUCCESS: &str =
    "UPDATE push_subscriptions SET last_success_ms = ?2 WHERE id = ?1";

/// A failure on a subscription. `?1` id, `?2` now, `?3` why.
pub const SUBSCRIPTION_FAILURE: &str =
    "UPDATE push_subscriptions SET last_failure_ms = ?2, last_failure = ?3 WHERE id = ?1";

/// Pending deliveries to a subscription that is gone: failed. `?1`
/// subscription id, `?2` now.
pub const ABANDON_DELIVERIES: &str = "UPDATE push_deliveries SET status = 'failed', \
     error = 'the subscription was removed', next_attempt_ms = NULL, payload = '', \
     updated_at_ms = ?2 WHERE subscription_id = ?1 AND next_attempt_ms IS NOT NULL";

/// A user's deliveries, newest first: id, subscription_id, device, kind,
/// session_id, question_id, status, http_status, error, attempts,
/// created_at_ms, updated_at_ms. `?1` user, `?2` limit.
pub const LIST_DELIVERIES: &str = "SELECT id, subscription_id, device, kind, session_id, \
     question_id, status, http_status, error, attempts, created_at_ms, updated_at_ms \
     FROM push_deliveries WHERE user_name = ?1 \
     ORDER BY created_at_ms DESC, rowid DESC LIMIT ?2";

/// Keeps a user's newest `?2` delivery records. `?1` user.
pub const PRUNE_DELIVERIES: &str = "DELETE FROM push_deliveries WHERE user_name = ?1 \
     AND next_attempt_ms IS NULL AND rowid NOT IN (SELECT rowid FROM push_deliveries \
     WHERE user_name = ?1 ORDER BY created_at_ms DESC, rowid DESC LIMIT ?2)";

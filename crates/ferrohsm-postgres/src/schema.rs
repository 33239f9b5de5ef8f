//! The schema, as numbered migrations applied in order at open (see `docs/storage.md`).
//!
//! `schema_version` holds the number of the last migration applied. All of it runs in one
//! transaction under an advisory lock, so replicas starting together migrate once. A database
//! written by a newer FerroHSM (a higher number than this build knows) is refused.

use sqlx::PgConnection;

use crate::{Result, db_error};

/// The advisory lock migrations hold (an arbitrary constant: "FHSM").
const MIGRATION_LOCK: i64 = 0x4648_534d;

/// The migrations, in order; migration `n` is `MIGRATIONS[n - 1]`. Never edit one that has
/// shipped: add the next. Identifiers, names and tags compare byte-wise (`COLLATE "C"`):
/// UUIDv7 text order is creation order, and prefix matches must not depend on the locale.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: keys with immutable-by-number version rows, approvals, revocations, the audit log and
    // its shared head.
    r#"
    CREATE TABLE keys (
        id          TEXT COLLATE "C" PRIMARY KEY,
        name        TEXT COLLATE "C" UNIQUE,
        state       TEXT NOT NULL,
        algorithm   TEXT NOT NULL,
        revision    BIGINT NOT NULL,
        record      TEXT NOT NULL
    );
    CREATE INDEX keys_state ON keys (state, id);
    CREATE TABLE key_versions (
        key_id      TEXT COLLATE "C" NOT NULL REFERENCES keys (id),
        version     BIGINT NOT NULL,
        body        TEXT NOT NULL,
        PRIMARY KEY (key_id, version)
    );
    CREATE TABLE key_tags (
        name        TEXT COLLATE "C" NOT NULL,
        value       TEXT COLLATE "C" NOT NULL,
        key_id      TEXT COLLATE "C" NOT NULL REFERENCES keys (id),
        PRIMARY KEY (name, value, key_id)
    );
    CREATE INDEX key_tags_by_key ON key_tags (key_id);
    CREATE TABLE approvals (
        id          TEXT COLLATE "C" PRIMARY KEY,
        revision    BIGINT NOT NULL,
        open        BOOLEAN NOT NULL,
        updated_at  BIGINT NOT NULL,
        body        BYTEA NOT NULL
    );
    CREATE INDEX approvals_closed ON approvals (open, updated_at);
    CREATE TABLE token_revocations (
        id          TEXT COLLATE "C" PRIMARY KEY,
        expires_at  BIGINT NOT NULL,
        body        TEXT NOT NULL
    );
    CREATE INDEX token_revocations_expiry ON token_revocations (expires_at);
    CREATE TABLE audit_log (
        pos         BIGINT PRIMARY KEY,
        seq         BIGINT UNIQUE,
        checkpoint  BIGINT,
        ts_ms       BIGINT NOT NULL,
        actor       TEXT,
        action      TEXT,
        key_id      TEXT,
        outcome     TEXT,
        request_id  TEXT,
        hash        BYTEA,
        line        TEXT NOT NULL
    );
    CREATE INDEX audit_actor ON audit_log (actor, seq) WHERE seq IS NOT NULL;
    CREATE INDEX audit_action ON audit_log (action, seq) WHERE seq IS NOT NULL;
    CREATE INDEX audit_key ON audit_log (key_id, seq) WHERE key_id IS NOT NULL;
    CREATE INDEX audit_request ON audit_log (request_id) WHERE seq IS NOT NULL;
    CREATE INDEX audit_ts ON audit_log (ts_ms);
    CREATE INDEX audit_checkpoints ON audit_log (checkpoint) WHERE checkpoint IS NOT NULL;
    CREATE TABLE audit_head (
        id                  INTEGER PRIMARY KEY CHECK (id = 1),
        seq                 BIGINT NOT NULL,
        hash                BYTEA NOT NULL,
        next_pos            BIGINT NOT NULL,
        checkpointed_seq    BIGINT NOT NULL,
        checkpointed_at_ms  BIGINT NOT NULL
    );
    INSERT INTO audit_head VALUES (1, 0, decode(repeat('00', 32), 'hex'), 0, 0, 0);
    "#,
    // 2: leases on scheduled jobs (one replica runs each at a time), timed by the database.
    r#"
    CREATE TABLE job_leases (
        job         TEXT COLLATE "C" PRIMARY KEY,
        holder      TEXT NOT NULL,
        expires_at  TIMESTAMPTZ NOT NULL
    );
    "#,
    // 3: rate-limit usage each replica reports for the others (kept a few seconds).
    r#"
    CREATE TABLE rate_usage (
        id          BIGSERIAL PRIMARY KEY,
        at          TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
        holder      TEXT NOT NULL,
        bucket      TEXT NOT NULL,
        tokens      DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX rate_usage_at ON rate_usage (at);
    "#,
    // 4: a counter raised with every stored revocation, so replicas re-read the revocations
    // only when they changed.
    r#"
    CREATE TABLE revocations_changed (
        id          INTEGER PRIMARY KEY CHECK (id = 1),
        version     BIGINT NOT NULL
    );
    INSERT INTO revocations_changed VALUES (1, 0);
    "#,
];

/// Brings the database to the newest schema.
pub(crate) async fn migrate(conn: &mut PgConnection) -> Result<()> {
    use sqlx::Connection as _;
    let mut tx = conn.begin().await.map_err(db_error("starting the migration"))?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *tx)
        .await
        .map_err(db_error("locking the schema"))?;
    sqlx::query("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")
        .execute(&mut *tx)
        .await
        .map_err(db_error("creating the schema table"))?;
    let current: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM schema_version")
        .fetch_one(&mut *tx)
        .await
        .map_err(db_error("reading the schema version"))?;
    let current = usize::try_from(current.unwrap_or(0)).unwrap_or(usize::MAX);
    if current > MIGRATIONS.len() {
        return Err(ferrohsm_store::Error::Backend {
            what: format!(
                "the database has schema version {current}, newer than this build's {}",
                MIGRATIONS.len()
            ),
            cause: "upgrade FerroHSM to open it".into(),
        });
    }
    for (number, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        sqlx::raw_sql(sqlx::AssertSqlSafe(*sql))
            .execute(&mut *tx)
            .await
            .map_err(db_error("applying a migration"))?;
        sqlx::query("INSERT INTO schema_version (version) VALUES ($1)")
            .bind(i64::try_from(number + 1).unwrap_or(i64::MAX))
            .execute(&mut *tx)
            .await
            .map_err(db_error("recording a migration"))?;
        tracing::info!(version = number + 1, "applied a database migration");
    }
    tx.commit().await.map_err(db_error("committing the migration"))?;
    Ok(())
}

//! The schema, as numbered migrations applied in order at open (see `docs/storage.md`).
//!
//! `schema_version` holds the number of the last migration applied. A database written by a
//! newer FerroHSM (a higher number than this build knows) is refused rather than guessed at.

use sqlx::{Connection as _, SqliteConnection};

use crate::{Result, db_error};

/// The migrations, in order; migration `n` is `MIGRATIONS[n - 1]`. Never edit one that has
/// shipped: add the next.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: keys with immutable-by-number version rows, approvals, revocations, the audit log.
    r#"
    CREATE TABLE keys (
        id          TEXT PRIMARY KEY NOT NULL,   -- UUIDv7: text order is creation order
        name        TEXT UNIQUE,
        state       TEXT NOT NULL,
        algorithm   TEXT NOT NULL,
        revision    INTEGER NOT NULL,
        record      TEXT NOT NULL                -- the record's JSON without its versions
    );
    CREATE INDEX keys_state ON keys (state, id);
    CREATE TABLE key_versions (
        key_id      TEXT NOT NULL REFERENCES keys (id),
        version     INTEGER NOT NULL,
        body        TEXT NOT NULL,               -- the version's JSON (sealed material)
        PRIMARY KEY (key_id, version)
    ) WITHOUT ROWID;
    CREATE TABLE key_tags (
        name        TEXT NOT NULL,
        value       TEXT NOT NULL,
        key_id      TEXT NOT NULL REFERENCES keys (id),
        PRIMARY KEY (name, value, key_id)
    ) WITHOUT ROWID;
    CREATE INDEX key_tags_by_key ON key_tags (key_id);
    CREATE TABLE approvals (
        id          TEXT PRIMARY KEY NOT NULL,   -- UUIDv7
        revision    INTEGER NOT NULL,
        open        INTEGER NOT NULL,
        updated_at  INTEGER NOT NULL,            -- Unix nanoseconds
        body        BLOB NOT NULL                -- opaque, integrity-tagged by the core
    );
    CREATE INDEX approvals_closed ON approvals (open, updated_at);
    CREATE TABLE token_revocations (
        id          TEXT PRIMARY KEY NOT NULL,
        expires_at  INTEGER NOT NULL,            -- Unix milliseconds
        body        TEXT NOT NULL
    );
    CREATE INDEX token_revocations_expiry ON token_revocations (expires_at);
    CREATE TABLE audit_log (
        pos         INTEGER PRIMARY KEY,         -- line order of the export
        seq         INTEGER UNIQUE,              -- a record's sequence number (NULL: checkpoint)
        checkpoint  INTEGER,                     -- a checkpoint's sequence number
        ts_ms       INTEGER NOT NULL,
        actor       TEXT,
        action      TEXT,
        key_id      TEXT,
        outcome     TEXT,
        request_id  TEXT,
        hash        BLOB,
        line        TEXT NOT NULL                -- the exact NDJSON line, newline excluded
    );
    CREATE INDEX audit_actor ON audit_log (actor, seq) WHERE seq IS NOT NULL;
    CREATE INDEX audit_action ON audit_log (action, seq) WHERE seq IS NOT NULL;
    CREATE INDEX audit_key ON audit_log (key_id, seq) WHERE key_id IS NOT NULL;
    CREATE INDEX audit_request ON audit_log (request_id) WHERE seq IS NOT NULL;
    CREATE INDEX audit_ts ON audit_log (ts_ms);
    CREATE INDEX audit_checkpoints ON audit_log (checkpoint) WHERE checkpoint IS NOT NULL;
    "#,
];

/// Brings the database to the newest schema, one transaction per migration.
pub(crate) async fn migrate(conn: &mut SqliteConnection) -> Result<()> {
    sqlx::query("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        .execute(&mut *conn)
        .await
        .map_err(db_error("creating the schema table"))?;
    let current: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM schema_version")
        .fetch_one(&mut *conn)
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
        let mut tx = conn.begin().await.map_err(db_error("starting a migration"))?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(*sql))
            .execute(&mut *tx)
            .await
            .map_err(db_error("applying a migration"))?;
        sqlx::query("INSERT INTO schema_version (version) VALUES (?)")
            .bind(i64::try_from(number + 1).unwrap_or(i64::MAX))
            .execute(&mut *tx)
            .await
            .map_err(db_error("recording a migration"))?;
        tx.commit().await.map_err(db_error("committing a migration"))?;
        tracing::info!(version = number + 1, "applied a database migration");
    }
    Ok(())
}

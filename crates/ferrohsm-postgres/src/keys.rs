//! `PostgresKeyStore`: key records as a row per key (metadata), a row per version, and a row
//! per tag. Lookups by id, name, state and tag use indexes; list filters run in SQL.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use ferrohsm_store::{DamagedRecord, Error, KeyId, KeyName, KeyRecord, KeyStore, ListQuery, Page};
use sqlx::{PgConnection, Postgres, QueryBuilder, Row as _};

use crate::writer::Job;
use crate::{Db, Result, big, db_error};

pub(crate) use ferrohsm_sql::KeyWrite;
use ferrohsm_sql::parse_record;

/// Keys in a PostgreSQL database (see [`crate::PostgresBackend`]).
#[derive(Debug, Clone)]
pub struct PostgresKeyStore {
    db: Arc<Db>,
}

impl PostgresKeyStore {
    pub(crate) fn new(db: Arc<Db>) -> Self {
        PostgresKeyStore { db }
    }

    async fn write(&self, kind: KeyWrite, record: KeyRecord) -> Result<Arc<KeyRecord>> {
        self.db.submit(|reply| Job::Key(kind, record, reply)).await?
    }

    /// Creates `record` and appends `entry`, the audit record of that creation, in the same
    /// transaction: both are committed or neither is. A refused create appends nothing and
    /// answers the refusal, as [`KeyStore::create`] does.
    pub async fn create_audited(
        &self,
        record: KeyRecord,
        entry: ferrohsm_audit::AuditEntry,
    ) -> Result<(Arc<KeyRecord>, ferrohsm_audit::AuditRecord)> {
        self.db.submit(|reply| Job::CreateAudited(Box::new((record, entry)), reply)).await?
    }

    fn corrupt(&self, id: &str, reason: String) -> Error {
        self.db.note_damaged(DamagedRecord {
            location: format!("{} table keys, id {id}", self.db.location),
            id: Some(id.to_owned()),
            reason: reason.clone(),
        });
        Error::Corrupt { record: id.to_owned(), reason }
    }

    /// Loads the records of `ids`, in `ids` order, with one statement (one round trip,
    /// whatever their number): a statement reads one snapshot, so a key row is never paired
    /// with the version rows of another revision.
    async fn load_many(&self, ids: &[String]) -> Result<Vec<Arc<KeyRecord>>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(LOAD_BY_IDS)
            .bind(ids)
            .fetch_all(&self.db.pool)
            .await
            .map_err(db_error("reading keys"))?;
        let mut records = self.parse_rows(rows);
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(record) = records.remove(id) {
                out.push(record);
            }
        }
        Ok(out)
    }

    /// Parses loaded rows (id, record, version bodies); a damaged one is reported and left
    /// out.
    fn parse_rows(&self, rows: Vec<sqlx::postgres::PgRow>) -> HashMap<String, Arc<KeyRecord>> {
        let mut records = HashMap::with_capacity(rows.len());
        for row in rows {
            let id: String = row.get(0);
            let text: String = row.get(1);
            let bodies: Vec<String> = row.get(2);
            match ferrohsm_sql::assemble_record(&id, &text, &bodies) {
                Ok(record) => {
                    records.insert(id, Arc::new(record));
                }
                Err(reason) => {
                    let _ = self.corrupt(&id, reason);
                }
            }
        }
        records
    }

    async fn load_one(&self, id: &str) -> Result<Option<Arc<KeyRecord>>> {
        let found = self.load_many(&[id.to_owned()]).await?;
        if found.is_empty() {
            // Present but unreadable, or absent.
            let damaged = self.db.shared.damaged.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(d) = damaged.iter().find(|d| d.id.as_deref() == Some(id)) {
                return Err(Error::Corrupt { record: id.to_owned(), reason: d.reason.clone() });
            }
        }
        Ok(found.into_iter().next())
    }
}

/// The keys with the ids in `$1`, each with its version bodies in version order (one
/// statement, so one snapshot).
const LOAD_BY_IDS: &str = "SELECT k.id, k.record, ARRAY(SELECT v.body FROM key_versions v \
    WHERE v.key_id = k.id ORDER BY v.version) FROM keys k WHERE k.id = ANY($1)";

/// The key named `$1`, as [`LOAD_BY_IDS`].
const LOAD_BY_NAME: &str = "SELECT k.id, k.record, ARRAY(SELECT v.body FROM key_versions v \
    WHERE v.key_id = k.id ORDER BY v.version) FROM keys k WHERE k.name = $1";

#[async_trait]
impl KeyStore for PostgresKeyStore {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    async fn create(&self, record: KeyRecord) -> Result<Arc<KeyRecord>> {
        self.write(KeyWrite::Create, record).await
    }

    async fn get(&self, id: &KeyId) -> Result<Option<Arc<KeyRecord>>> {
        self.load_one(&id.to_string()).await
    }

    async fn find_by_name(&self, name: &KeyName) -> Result<Option<Arc<KeyRecord>>> {
        // One round trip: the key named, with its versions.
        let rows = sqlx::query(LOAD_BY_NAME)
            .bind(name.as_str())
            .fetch_all(&self.db.pool)
            .await
            .map_err(db_error("finding a key by name"))?;
        let Some(id) = rows.first().map(|row| row.get::<String, _>(0)) else { return Ok(None) };
        match self.parse_rows(rows).remove(&id) {
            Some(record) => Ok(Some(record)),
            None => self.load_one(&id).await,
        }
    }

    async fn update(&self, record: KeyRecord) -> Result<Arc<KeyRecord>> {
        self.write(KeyWrite::Update, record).await
    }

    async fn purge(&self, record: KeyRecord) -> Result<Arc<KeyRecord>> {
        self.write(KeyWrite::Purge, record).await
    }

    async fn import(&self, record: KeyRecord) -> Result<Arc<KeyRecord>> {
        self.write(KeyWrite::Import, record).await
    }

    async fn list(&self, query: &ListQuery) -> Result<Page> {
        query.validate()?;
        let after = query.cursor.map(|c| c.key_id().to_string()).unwrap_or_default();
        // With a tag filter, the first tag's index range drives the scan; otherwise the keys'
        // primary key does.
        let mut sql: QueryBuilder<Postgres> = match query.tags.first() {
            Some((name, value)) => {
                let mut sql = QueryBuilder::new(
                    "SELECT k.id FROM key_tags d JOIN keys k ON k.id = d.key_id WHERE d.name = ",
                );
                sql.push_bind(name.clone())
                    .push(" AND d.value = ")
                    .push_bind(value.clone())
                    .push(" AND d.key_id > ")
                    .push_bind(after);
                sql
            }
            None => {
                let mut sql = QueryBuilder::new("SELECT k.id FROM keys k WHERE k.id > ");
                sql.push_bind(after);
                sql
            }
        };
        if let Some(state) = query.state {
            sql.push(" AND k.state = ").push_bind(state.as_str());
        }
        if let Some(algorithm) = query.algorithm {
            sql.push(" AND k.algorithm = ").push_bind(algorithm.as_str());
        }
        if let Some(prefix) = &query.name_prefix {
            sql.push(" AND left(k.name, ")
                .push_bind(i32::try_from(prefix.chars().count()).unwrap_or(i32::MAX))
                .push(") = ")
                .push_bind(prefix.clone());
        }
        for (name, value) in query.tags.iter().skip(1) {
            sql.push(" AND EXISTS (SELECT 1 FROM key_tags t WHERE t.key_id = k.id AND t.name = ")
                .push_bind(name.clone())
                .push(" AND t.value = ")
                .push_bind(value.clone())
                .push(")");
        }
        sql.push(if query.tags.is_empty() {
            " ORDER BY k.id LIMIT "
        } else {
            " ORDER BY d.key_id LIMIT "
        })
        .push_bind(i64::try_from(query.limit + 1).unwrap_or(i64::MAX));
        let ids: Vec<String> = sql
            .build_query_scalar()
            .fetch_all(&self.db.pool)
            .await
            .map_err(db_error("listing keys"))?;
        let more = ids.len() > query.limit;
        let ids = &ids[..ids.len().min(query.limit)];
        // Damaged rows are left out of pages (and reported); the cursor still moves past them.
        let keys = self.load_many(ids).await?;
        Ok(Page { keys, next_cursor: ferrohsm_sql::next_cursor(ids, more) })
    }

    async fn count(&self) -> Result<usize> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM keys")
            .fetch_one(&self.db.pool)
            .await
            .map_err(db_error("counting keys"))?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    fn damaged(&self) -> Vec<DamagedRecord> {
        let damaged = self.db.shared.damaged.lock().unwrap_or_else(|p| p.into_inner());
        damaged.iter().filter(|d| d.location.contains("table keys")).cloned().collect()
    }
}

/// Reads one record inside the writer's transaction.
async fn stored(conn: &mut PgConnection, id: &str) -> Result<Option<KeyRecord>> {
    let text: Option<String> = sqlx::query_scalar("SELECT record FROM keys WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_error("reading a key"))?;
    let Some(text) = text else { return Ok(None) };
    let corrupt = |reason: String| Error::Corrupt { record: id.to_owned(), reason };
    let mut record = parse_record(id, &text).map_err(corrupt)?;
    let bodies: Vec<String> =
        sqlx::query_scalar("SELECT body FROM key_versions WHERE key_id = $1 ORDER BY version")
            .bind(id)
            .fetch_all(&mut *conn)
            .await
            .map_err(db_error("reading key versions"))?;
    for body in bodies {
        record.versions.push(serde_json::from_str(&body).map_err(|e| corrupt(e.to_string()))?);
    }
    Ok(Some(record))
}

/// Checks and applies one key write inside the writer's transaction (which holds the chain
/// head's lock, so no other writer runs meanwhile). Refusals are found without failing a
/// statement, since a failed statement aborts a PostgreSQL transaction.
pub(crate) async fn apply(
    conn: &mut PgConnection,
    kind: KeyWrite,
    record: KeyRecord,
) -> Result<Arc<KeyRecord>> {
    let id = record.id.to_string();
    let old = match kind {
        KeyWrite::Create | KeyWrite::Import => None,
        KeyWrite::Update | KeyWrite::Purge => stored(conn, &id).await?,
    };
    kind.check(old.as_ref(), &record)?;
    let mut head = record.clone();
    head.versions = Vec::new();
    let text = serde_json::to_string(&head).map_err(|e| Error::backend("encoding a key", e))?;
    let revision = big(record.revision);
    let name = record.name.as_ref().map(|n| n.as_str().to_owned());
    match &old {
        None => {
            let inserted: Option<String> = sqlx::query_scalar(
                "INSERT INTO keys (id, name, state, algorithm, revision, record) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING RETURNING id",
            )
            .bind(&id)
            .bind(&name)
            .bind(record.state.as_str())
            .bind(record.algorithm.as_str())
            .bind(revision)
            .bind(&text)
            .fetch_optional(&mut *conn)
            .await
            .map_err(db_error("inserting a key"))?;
            if inserted.is_none() {
                let id_taken = sqlx::query_scalar::<_, i32>("SELECT 1 FROM keys WHERE id = $1")
                    .bind(&id)
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(db_error("checking a duplicate key"))?
                    .is_some();
                return Err(match (&record.name, id_taken) {
                    (Some(name), false) => Error::NameTaken(name.clone()),
                    _ => Error::AlreadyExists(record.id),
                });
            }
        }
        Some(old) => {
            // Compare-and-swap on the revision, in SQL too.
            let done = sqlx::query(
                "UPDATE keys SET name = $1, state = $2, revision = $3, record = $4 \
                 WHERE id = $5 AND revision = $6",
            )
            .bind(&name)
            .bind(record.state.as_str())
            .bind(revision)
            .bind(&text)
            .bind(&id)
            .bind(big(old.revision))
            .execute(&mut *conn)
            .await
            .map_err(db_error("updating a key"))?;
            if done.rows_affected() != 1 {
                return Err(Error::Conflict {
                    id: record.id,
                    expected: record.revision,
                    found: old.revision.saturating_add(1),
                });
            }
        }
    }
    let old_versions = old.as_ref().map(|o| o.versions.as_slice()).unwrap_or_default();
    for version in &record.versions {
        let index = usize::try_from(version.version.saturating_sub(1)).unwrap_or(usize::MAX);
        if old_versions.get(index) == Some(version) {
            continue;
        }
        let body =
            serde_json::to_string(version).map_err(|e| Error::backend("encoding a version", e))?;
        sqlx::query(
            "INSERT INTO key_versions (key_id, version, body) VALUES ($1, $2, $3) \
             ON CONFLICT (key_id, version) DO UPDATE SET body = EXCLUDED.body",
        )
        .bind(&id)
        .bind(i64::from(version.version))
        .bind(body)
        .execute(&mut *conn)
        .await
        .map_err(db_error("writing a key version"))?;
    }
    if old.as_ref().is_none_or(|o| o.tags != record.tags) {
        if old.is_some() {
            sqlx::query("DELETE FROM key_tags WHERE key_id = $1")
                .bind(&id)
                .execute(&mut *conn)
                .await
                .map_err(db_error("replacing key tags"))?;
        }
        if !record.tags.is_empty() {
            let mut sql: QueryBuilder<Postgres> =
                QueryBuilder::new("INSERT INTO key_tags (name, value, key_id) ");
            sql.push_values(&record.tags, |mut row, (name, value)| {
                row.push_bind(name.clone()).push_bind(value.clone()).push_bind(id.clone());
            });
            sql.build().execute(&mut *conn).await.map_err(db_error("writing key tags"))?;
        }
    }
    Ok(Arc::new(record))
}

//! `SqliteKeyStore`: key records as a row per key (metadata), a row per version, and a row
//! per tag. Lookups by id, name, state and tag use indexes; list filters run in SQL.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use ferrohsm_store::{
    DamagedRecord, Error, KeyId, KeyName, KeyRecord, KeyStore, KeyVersion, ListQuery, Page,
};
use sqlx::{QueryBuilder, Row as _, Sqlite, SqliteConnection};

use crate::writer::{Deferred, Job};
use crate::{Db, Result, db_error};

pub(crate) use ferrohsm_sql::KeyWrite;
use ferrohsm_sql::parse_record;

/// Keys in an SQLite database (see [`crate::SqliteBackend`]).
#[derive(Debug, Clone)]
pub struct SqliteKeyStore {
    db: Arc<Db>,
}

impl SqliteKeyStore {
    pub(crate) fn new(db: Arc<Db>) -> Self {
        SqliteKeyStore { db }
    }

    async fn write(&self, kind: KeyWrite, record: KeyRecord) -> Result<Arc<KeyRecord>> {
        self.db.submit(|reply| Job::Key(kind, record, reply)).await?
    }

    /// Creates `record` and appends `entry`, the audit record of that creation, to this
    /// database's audit log in the same transaction: both are committed or neither is, so a
    /// caller waits for one commit instead of two. A refused create (its id or name taken, an
    /// invalid record) appends nothing and answers the refusal, as [`KeyStore::create`] does.
    pub async fn create_audited(
        &self,
        record: KeyRecord,
        entry: ferrohsm_audit::AuditEntry,
    ) -> Result<(Arc<KeyRecord>, ferrohsm_audit::AuditRecord)> {
        self.db.submit(|reply| Job::CreateAudited(Box::new((record, entry)), reply)).await?
    }

    fn corrupt(&self, id: &str, reason: String) -> Error {
        self.db.note_damaged(DamagedRecord {
            location: format!("{} table keys, id {id}", self.db.path.display()),
            id: Some(id.to_owned()),
            reason: reason.clone(),
        });
        Error::Corrupt { record: id.to_owned(), reason }
    }

    /// Loads the records of `ids` (two queries, whatever their number), in `ids` order. Both
    /// queries read one snapshot (a read transaction): a commit between them would otherwise
    /// pair a key row with the version rows of its next revision.
    async fn load_many(&self, ids: &[String]) -> Result<Vec<Arc<KeyRecord>>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let list = serde_json::to_string(ids).map_err(|e| Error::backend("encoding ids", e))?;
        let mut conn = self.db.pool.begin().await.map_err(db_error("reading keys"))?;
        let rows =
            sqlx::query("SELECT id, record FROM keys WHERE id IN (SELECT value FROM json_each(?))")
                .bind(&list)
                .fetch_all(&mut *conn)
                .await
                .map_err(db_error("reading keys"))?;
        let mut records: HashMap<String, KeyRecord> = HashMap::with_capacity(rows.len());
        for row in rows {
            let id: String = row.get(0);
            let text: String = row.get(1);
            match parse_record(&id, &text) {
                Ok(record) => {
                    records.insert(id, record);
                }
                Err(reason) => {
                    let _ = self.corrupt(&id, reason);
                }
            }
        }
        let versions = sqlx::query(
            "SELECT key_id, body FROM key_versions \
             WHERE key_id IN (SELECT value FROM json_each(?)) ORDER BY key_id, version",
        )
        .bind(&list)
        .fetch_all(&mut *conn)
        .await
        .map_err(db_error("reading key versions"))?;
        conn.commit().await.map_err(db_error("reading keys"))?;
        for row in versions {
            let id: String = row.get(0);
            let text: String = row.get(1);
            if let Some(record) = records.get_mut(&id) {
                match serde_json::from_str::<KeyVersion>(&text) {
                    Ok(v) => record.versions.push(v),
                    Err(e) => {
                        records.remove(&id);
                        let _ = self.corrupt(&id, format!("a version row is unreadable: {e}"));
                    }
                }
            }
        }
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(record) = records.remove(id) {
                match record.check_invariants() {
                    Ok(()) => out.push(Arc::new(record)),
                    Err(e) => {
                        let _ = self.corrupt(id, e.to_string());
                    }
                }
            }
        }
        Ok(out)
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

#[async_trait]
impl KeyStore for SqliteKeyStore {
    fn kind(&self) -> &'static str {
        "sqlite"
    }

    async fn create(&self, record: KeyRecord) -> Result<Arc<KeyRecord>> {
        self.write(KeyWrite::Create, record).await
    }

    async fn get(&self, id: &KeyId) -> Result<Option<Arc<KeyRecord>>> {
        self.load_one(&id.to_string()).await
    }

    async fn find_by_name(&self, name: &KeyName) -> Result<Option<Arc<KeyRecord>>> {
        let id: Option<String> = sqlx::query_scalar("SELECT id FROM keys WHERE name = ?")
            .bind(name.as_str())
            .fetch_optional(&self.db.pool)
            .await
            .map_err(db_error("finding a key by name"))?;
        match id {
            Some(id) => self.load_one(&id).await,
            None => Ok(None),
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
        // With a tag filter, the first tag's index range drives the scan (a page reads about a
        // page of rows however rare the tag); otherwise the keys' primary key does.
        let mut sql: QueryBuilder<Sqlite> = match query.tags.first() {
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
            sql.push(" AND substr(k.name, 1, ")
                .push_bind(i64::try_from(prefix.chars().count()).unwrap_or(i64::MAX))
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
async fn stored(conn: &mut SqliteConnection, id: &str) -> Result<Option<KeyRecord>> {
    let text: Option<String> = sqlx::query_scalar("SELECT record FROM keys WHERE id = ?")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_error("reading a key"))?;
    let Some(text) = text else { return Ok(None) };
    let corrupt = |reason: String| Error::Corrupt { record: id.to_owned(), reason };
    let mut record = parse_record(id, &text).map_err(corrupt)?;
    let bodies: Vec<String> =
        sqlx::query_scalar("SELECT body FROM key_versions WHERE key_id = ? ORDER BY version")
            .bind(id)
            .fetch_all(&mut *conn)
            .await
            .map_err(db_error("reading key versions"))?;
    for body in bodies {
        record.versions.push(serde_json::from_str(&body).map_err(|e| corrupt(e.to_string()))?);
    }
    Ok(Some(record))
}

/// Checks and applies one key write inside the writer's transaction.
pub(crate) async fn apply(
    conn: &mut SqliteConnection,
    kind: KeyWrite,
    record: KeyRecord,
) -> Result<Arc<KeyRecord>> {
    let id = record.id.to_string();
    // A new key needs no read: the unique id and name constraints refuse a duplicate (a failed
    // statement leaves the rest of the transaction intact).
    let old = match kind {
        KeyWrite::Create | KeyWrite::Import => None,
        KeyWrite::Update | KeyWrite::Purge => stored(conn, &id).await?,
    };
    kind.check(old.as_ref(), &record)?;
    let mut head = record.clone();
    head.versions = Vec::new();
    let text = serde_json::to_string(&head).map_err(|e| Error::backend("encoding a key", e))?;
    let revision = i64::try_from(record.revision).unwrap_or(i64::MAX);
    let name = record.name.as_ref().map(|n| n.as_str().to_owned());
    if old.is_none() {
        let inserted = sqlx::query(
            "INSERT INTO keys (id, name, state, algorithm, revision, record) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(&id)
        .bind(&name)
        .bind(record.state.as_str())
        .bind(record.algorithm.as_str())
        .bind(revision)
        .bind(&text)
        .execute(&mut *conn)
        .await
        .map_err(db_error("inserting a key"));
        if let Err(e) = inserted {
            return Err(duplicate(conn, &record, e).await);
        }
    } else {
        sqlx::query("UPDATE keys SET name = ?, state = ?, revision = ?, record = ? WHERE id = ?")
            .bind(&name)
            .bind(record.state.as_str())
            .bind(revision)
            .bind(&text)
            .bind(&id)
            .execute(&mut *conn)
            .await
            .map_err(db_error("updating a key"))?;
    }
    let old_versions = old.as_ref().map(|o| o.versions.as_slice()).unwrap_or_default();
    for version in &record.versions {
        let index = usize::try_from(version.version.saturating_sub(1)).unwrap_or(usize::MAX);
        if old_versions.get(index) == Some(version) {
            continue;
        }
        let body =
            serde_json::to_string(version).map_err(|e| Error::backend("encoding a version", e))?;
        sqlx::query("INSERT OR REPLACE INTO key_versions (key_id, version, body) VALUES (?, ?, ?)")
            .bind(&id)
            .bind(i64::from(version.version))
            .bind(body)
            .execute(&mut *conn)
            .await
            .map_err(db_error("writing a key version"))?;
    }
    if old.as_ref().is_none_or(|o| o.tags != record.tags) {
        if old.is_some() {
            sqlx::query("DELETE FROM key_tags WHERE key_id = ?")
                .bind(&id)
                .execute(&mut *conn)
                .await
                .map_err(db_error("replacing key tags"))?;
        }
        if !record.tags.is_empty() {
            let mut sql: QueryBuilder<Sqlite> =
                QueryBuilder::new("INSERT INTO key_tags (name, value, key_id) ");
            sql.push_values(&record.tags, |mut row, (name, value)| {
                row.push_bind(name.clone()).push_bind(value.clone()).push_bind(id.clone());
            });
            sql.build().execute(&mut *conn).await.map_err(db_error("writing key tags"))?;
        }
    }
    Ok(Arc::new(record))
}

/// Rows per multi-row insert of new keys (six parameters each).
const CREATE_ROWS: usize = 500;

/// Rows per multi-row insert of versions or tags (three parameters each).
const CHILD_ROWS: usize = 1000;

/// Checks and inserts new keys (creates and imports) inside the writer's transaction with a
/// few multi-row statements, whatever their number: each statement is a round trip to
/// SQLite's thread, which under load costs more than the insert itself. Answers one result
/// per write, in order; a write whose id or name is taken (by a stored key or an earlier write
/// of the same group) is refused and the others still go in. `Err` is a database failure,
/// which fails the whole transaction.
pub(crate) async fn create_many(
    conn: &mut SqliteConnection,
    writes: Vec<(KeyWrite, KeyRecord)>,
    deferred: &mut Deferred,
) -> Result<Vec<Result<Arc<KeyRecord>>>> {
    struct Row {
        id: String,
        name: Option<String>,
        text: String,
    }
    let mut results: Vec<Result<Arc<KeyRecord>>> = Vec::with_capacity(writes.len());
    let mut rows: Vec<Option<Row>> = Vec::with_capacity(writes.len());
    for (kind, record) in writes {
        let checked = match kind {
            KeyWrite::Import => record.check_invariants(),
            _ => record.check_new(),
        };
        if let Err(e) = checked {
            results.push(Err(e));
            rows.push(None);
            continue;
        }
        let mut head = record.clone();
        head.versions = Vec::new();
        let text = serde_json::to_string(&head).map_err(|e| Error::backend("encoding a key", e))?;
        rows.push(Some(Row {
            id: record.id.to_string(),
            name: record.name.as_ref().map(|n| n.as_str().to_owned()),
            text,
        }));
        results.push(Ok(Arc::new(record)));
    }
    // Keys: a taken id or name skips the row (`DO NOTHING`; rows go in in order, as if one
    // by one); RETURNING says which went in, by id and name: the first write of a group with
    // that pair is the one (a later write of the same id always loses to it).
    let mut returned = std::collections::HashSet::new();
    let candidates: Vec<(&Row, &Arc<KeyRecord>)> = rows
        .iter()
        .zip(&results)
        .filter_map(|(row, result)| Some((row.as_ref()?, result.as_ref().ok()?)))
        .collect();
    for chunk in candidates.chunks(CREATE_ROWS) {
        let mut sql: QueryBuilder<Sqlite> =
            QueryBuilder::new("INSERT INTO keys (id, name, state, algorithm, revision, record) ");
        sql.push_values(chunk, |mut b, (row, record)| {
            b.push_bind(row.id.as_str())
                .push_bind(row.name.as_deref())
                .push_bind(record.state.as_str())
                .push_bind(record.algorithm.as_str())
                .push_bind(i64::try_from(record.revision).unwrap_or(i64::MAX))
                .push_bind(row.text.as_str());
        });
        sql.push(" ON CONFLICT DO NOTHING RETURNING id, name");
        let rows_in: Vec<(String, Option<String>)> =
            sql.build_query_as().fetch_all(&mut *conn).await.map_err(db_error("inserting keys"))?;
        returned.extend(rows_in);
    }
    let went_in: Vec<bool> = rows
        .iter()
        .zip(&results)
        .map(|(row, result)| match (row, result) {
            (Some(row), Ok(_)) => returned.remove(&(row.id.clone(), row.name.clone())),
            _ => false,
        })
        .collect();
    // A write left out lost its id (to a stored key, or to an earlier write of this group)
    // or its name: say which, as if the group's writes had been applied one by one.
    for p in 0..rows.len() {
        let (Some(row), Ok(record)) = (&rows[p], &results[p]) else { continue };
        if went_in[p] {
            continue;
        }
        let taken_by = |range: std::ops::Range<usize>| {
            range
                .into_iter()
                .any(|q| went_in[q] && rows[q].as_ref().is_some_and(|r| r.id == row.id))
        };
        let id_taken = if taken_by(0..p) {
            true
        } else if taken_by(p + 1..rows.len()) {
            // A later write of this id went in, so the id was free when this one was tried.
            false
        } else {
            sqlx::query_scalar::<_, i64>("SELECT 1 FROM keys WHERE id = ?")
                .bind(&row.id)
                .fetch_optional(&mut *conn)
                .await
                .map_err(db_error("checking a duplicate key"))?
                .is_some()
        };
        let refusal = match (&record.name, id_taken) {
            (Some(name), false) => Error::NameTaken(name.clone()),
            _ => Error::AlreadyExists(record.id),
        };
        results[p] = Err(refusal);
    }
    // Versions and tags of the keys that went in, deferred to the commit (nothing in the
    // transaction reads them before it, see the writer).
    let mut versions = Vec::new();
    let mut tags = Vec::new();
    for record in results.iter().filter_map(|r| r.as_ref().ok()) {
        let id = record.id.to_string();
        for version in &record.versions {
            let body = serde_json::to_string(version)
                .map_err(|e| Error::backend("encoding a version", e))?;
            versions.push((id.clone(), i64::from(version.version), body));
        }
        for (name, value) in &record.tags {
            tags.push((name.clone(), value.clone(), id.clone()));
        }
    }
    for chunk in versions.chunks(CHILD_ROWS) {
        let sql = deferred.statement();
        sql.push("INSERT INTO key_versions (key_id, version, body) ");
        sql.push_values(chunk.iter().cloned(), |mut b, (id, version, body)| {
            b.push_bind(id).push_bind(version).push_bind(body);
        });
    }
    for chunk in tags.chunks(CHILD_ROWS) {
        let sql = deferred.statement();
        sql.push("INSERT INTO key_tags (name, value, key_id) ");
        sql.push_values(chunk.iter().cloned(), |mut b, (name, value, id)| {
            b.push_bind(name).push_bind(value).push_bind(id);
        });
    }
    Ok(results)
}

/// What a failed insert of a new key means: a duplicate id or name (a refusal), or a failure.
async fn duplicate(conn: &mut SqliteConnection, record: &KeyRecord, e: Error) -> Error {
    let unique = matches!(
        &e,
        Error::Backend { cause, .. }
            if cause.downcast_ref::<sqlx::Error>().is_some_and(|s| matches!(s, sqlx::Error::Database(db) if db.is_unique_violation()))
    );
    if !unique {
        return e;
    }
    let id_taken = sqlx::query_scalar::<_, i64>("SELECT 1 FROM keys WHERE id = ?")
        .bind(record.id.to_string())
        .fetch_optional(&mut *conn)
        .await
        .map(|found| found.is_some());
    match (id_taken, &record.name) {
        (Ok(true), _) | (Ok(false), None) => Error::AlreadyExists(record.id),
        (Ok(false), Some(name)) => Error::NameTaken(name.clone()),
        (Err(e), _) => db_error("checking a duplicate key")(e),
    }
}

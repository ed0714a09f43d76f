//! The object store: create, read, update, delete, versions, purge and rewrap swaps.

use async_trait::async_trait;
use sqlx::{AssertSqlSafe, Row};
use vault_crypto::KeyContext;

use super::audit::remember_in;
use super::change::{AuditRecord, Change, audit_change, insert_audit};
use super::db::{Columns, DbError, Tx, args};
use super::{META_COLUMNS, META_FROM, SqlStore, check_id, meta_from_row, stored_context, to_i64};
use crate::ids::{etag, new_version_id};
use crate::{
    Actor, ListQuery, NewVersion, ObjectMeta, Page, Remember, StoredObject, StoredVersion,
    Timestamp, VersionMeta, events, is_object_id, validate_environment, validate_name,
};
use crate::{Conflict, ObjectStore, StoreError};

/// An object's metadata and current envelope.
fn meta_and_envelope(row: &dyn Columns) -> Result<(ObjectMeta, Option<Vec<u8>>), StoreError> {
    Ok((meta_from_row(row)?, Some(row.blob("envelope")?)))
}

impl SqlStore {
    /// Reads metadata (and optionally the envelope) of a live object, then records `event`.
    async fn read(
        &self,
        environment: &str,
        by: (&str, &str),
        with_envelope: bool,
        event: &str,
        actor: &Actor,
    ) -> Result<(ObjectMeta, Option<Vec<u8>>), StoreError> {
        validate_environment(environment)?;
        let (column, value) = by;
        let envelope_col = if with_envelope { ", v.envelope" } else { "" };
        let sql = format!(
            "SELECT {META_COLUMNS}{envelope_col} FROM {META_FROM} \
             WHERE o.environment = $1 AND o.{column} = $2 AND o.deleted_at IS NULL"
        );
        let decode = if with_envelope {
            meta_and_envelope
        } else {
            |row: &dyn Columns| Ok((meta_from_row(row)?, None))
        };
        let (meta, envelope) = self
            .fetch_row(&sql, args![environment, value], decode)
            .await?
            .ok_or(StoreError::NotFound)?;
        self.audit_read(event, environment, actor, Some(&meta))
            .await?;
        Ok((meta, envelope))
    }
}

#[async_trait]
impl ObjectStore for SqlStore {
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1 AS one").fetch_one(&self.pool).await?;
        match &self.writes {
            #[cfg(feature = "sqlite")]
            super::writer::Writes::Lite(lite) => lite.ping(),
            super::writer::Writes::Task(_) => Ok(()),
        }
    }

    fn write_stats(&self) -> crate::WriteStats {
        self.stats.get()
    }

    #[allow(clippy::too_many_arguments)]
    async fn create(
        &self,
        environment: &str,
        id: &str,
        name: &str,
        context: &KeyContext,
        version: NewVersion,
        actor: &Actor,
        remember: Option<&Remember>,
    ) -> Result<ObjectMeta, StoreError> {
        validate_environment(environment)?;
        let name = validate_name(name)?;
        if !is_object_id(id) {
            return Err(StoreError::invalid("id", "not an object id"));
        }
        let now = Timestamp::now();
        let meta = ObjectMeta {
            id: id.to_owned(),
            environment: environment.to_owned(),
            name: name.to_owned(),
            context: context.clone(),
            key_id: version.key_id.clone(),
            version_id: new_version_id()?,
            created_at: now,
            updated_at: now,
            updated_by: actor.clone(),
        };
        // The answer to remember depends only on `meta`, which is known now: render it here, so
        // the change owns everything it needs.
        let remember = remember.map(|r| r.rendered(&meta));
        self.change(Create {
            meta,
            version,
            remember,
        })
        .await
    }

    async fn get(
        &self,
        environment: &str,
        id: &str,
        actor: &Actor,
    ) -> Result<StoredObject, StoreError> {
        check_id(id)?;
        let (meta, envelope) = self
            .read(environment, ("id", id), true, events::DATA_READ, actor)
            .await?;
        Ok(StoredObject {
            meta,
            envelope: envelope.unwrap_or_default(),
        })
    }

    async fn get_by_name(
        &self,
        environment: &str,
        name: &str,
        actor: &Actor,
    ) -> Result<StoredObject, StoreError> {
        let name = validate_name(name).map_err(|_| StoreError::NotFound)?;
        let (meta, envelope) = self
            .read(environment, ("name", name), true, events::DATA_READ, actor)
            .await?;
        Ok(StoredObject {
            meta,
            envelope: envelope.unwrap_or_default(),
        })
    }

    async fn context_of(&self, environment: &str, id: &str) -> Result<KeyContext, StoreError> {
        validate_environment(environment)?;
        check_id(id)?;
        self.fetch_row(
            "SELECT context FROM objects WHERE environment = $1 AND id = $2 AND deleted_at IS NULL",
            args![environment, id],
            stored_context,
        )
        .await?
        .ok_or(StoreError::NotFound)
    }

    async fn describe(
        &self,
        environment: &str,
        id: &str,
        actor: &Actor,
    ) -> Result<ObjectMeta, StoreError> {
        check_id(id)?;
        let (meta, _) = self
            .read(environment, ("id", id), false, events::METADATA_READ, actor)
            .await?;
        Ok(meta)
    }
    async fn list(
        &self,
        environment: &str,
        query: &ListQuery,
        actor: &Actor,
    ) -> Result<Page, StoreError> {
        self.list_page(environment, query, actor).await
    }

    async fn update(
        &self,
        environment: &str,
        id: &str,
        version: NewVersion,
        expected_version: Option<&str>,
        actor: &Actor,
    ) -> Result<ObjectMeta, StoreError> {
        validate_environment(environment)?;
        check_id(id)?;
        self.change(Update {
            environment: environment.to_owned(),
            id: id.to_owned(),
            version_id: new_version_id()?,
            version,
            expected: expected_version.map(str::to_owned),
            actor: actor.clone(),
        })
        .await
    }

    async fn versions(
        &self,
        environment: &str,
        id: &str,
        actor: &Actor,
    ) -> Result<Vec<VersionMeta>, StoreError> {
        validate_environment(environment)?;
        check_id(id)?;
        // One snapshot for the three reads (a read transaction takes no write lock).
        let mut tx = self.pool.begin().await?;
        let current: String = sqlx::query(
            "SELECT current_version FROM objects \
             WHERE environment = $1 AND id = $2 AND deleted_at IS NULL",
        )
        .bind(environment)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?
        .try_get("current_version")?;
        let rows = sqlx::query(
            "SELECT id, created_at, created_by_id, created_by_name, size, etag FROM versions \
             WHERE object_id = $1 ORDER BY seq DESC",
        )
        .bind(id)
        .fetch_all(&mut *tx)
        .await?;
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {META_COLUMNS} FROM {META_FROM} WHERE o.id = $1"
        )))
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        let meta = meta_from_row(&row)?;
        tx.commit().await?;
        self.audit_read(events::METADATA_READ, environment, actor, Some(&meta))
            .await?;
        rows.iter()
            .map(|r| {
                let id: String = r.try_get("id")?;
                Ok(VersionMeta {
                    current: id == current,
                    id,
                    created_at: Timestamp(r.try_get("created_at")?),
                    created_by: Actor::new(
                        r.try_get::<String, _>("created_by_id")?,
                        r.try_get::<String, _>("created_by_name")?,
                    ),
                    size: u64::try_from(r.try_get::<i64, _>("size")?).unwrap_or(0),
                    etag: r.try_get("etag")?,
                })
            })
            .collect()
    }

    async fn delete(
        &self,
        environment: &str,
        id: &str,
        expected_version: Option<&str>,
        actor: &Actor,
    ) -> Result<ObjectMeta, StoreError> {
        validate_environment(environment)?;
        check_id(id)?;
        self.change(Delete {
            environment: environment.to_owned(),
            id: id.to_owned(),
            expected: expected_version.map(str::to_owned),
            actor: actor.clone(),
        })
        .await
    }

    async fn purge(&self, deleted_before: Timestamp, actor: &Actor) -> Result<u64, StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "DELETE FROM versions WHERE object_id IN \
             (SELECT id FROM objects WHERE deleted_at IS NOT NULL AND deleted_at < $1)",
        )
        .bind(deleted_before.0)
        .execute(&mut *tx)
        .await?;
        // What this transaction removed, and only that (a concurrent purge that got there first
        // removed, and recorded, the rest): one event each, in the same transaction.
        let gone = sqlx::query(
            "DELETE FROM objects WHERE deleted_at IS NOT NULL AND deleted_at < $1 \
             RETURNING id, environment, name",
        )
        .bind(deleted_before.0)
        .fetch_all(&mut *tx)
        .await?;
        let now = Timestamp::now();
        for row in &gone {
            let record = AuditRecord {
                environment: row.try_get("environment")?,
                event: events::DATA_PURGED.to_owned(),
                actor: actor.clone(),
                object: Some((row.try_get("id")?, row.try_get("name")?)),
                key_id: None,
                key_context: None,
                detail: None,
                at: now,
            };
            insert_audit(&mut tx, &record).await?;
        }
        tx.commit().await?;
        Ok(gone.len() as u64)
    }

    async fn scan_versions(
        &self,
        after: Option<(String, i64)>,
        limit: u32,
    ) -> Result<Vec<StoredVersion>, StoreError> {
        let (after_id, after_seq) = after.unwrap_or_default();
        let rows = sqlx::query(
            "SELECT v.object_id, o.environment, v.seq, o.context, v.envelope \
             FROM versions v JOIN objects o ON o.id = v.object_id \
             WHERE v.object_id > $1 OR (v.object_id = $1 AND v.seq > $2) \
             ORDER BY v.object_id, v.seq LIMIT $3",
        )
        .bind(after_id)
        .bind(after_seq)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(StoredVersion {
                    object_id: r.try_get("object_id")?,
                    environment: r.try_get("environment")?,
                    seq: r.try_get("seq")?,
                    context: stored_context(r)?,
                    envelope: r.try_get("envelope")?,
                })
            })
            .collect()
    }

    async fn replace_envelope(
        &self,
        object_id: &str,
        seq: i64,
        expected: &[u8],
        new: &[u8],
        key_id: &str,
        actor: &Actor,
    ) -> Result<bool, StoreError> {
        self.change(Rewrap {
            object_id: object_id.to_owned(),
            seq,
            expected: expected.to_vec(),
            new: new.to_vec(),
            key_id: key_id.to_owned(),
            actor: actor.clone(),
        })
        .await
    }
}

/// A new object, with its first version, audit event and remembered answer.
struct Create {
    meta: ObjectMeta,
    version: NewVersion,
    remember: Option<Remember>,
}

impl Change for Create {
    type Output = ObjectMeta;

    async fn run<X: Tx>(self, tx: &mut X) -> Result<ObjectMeta, StoreError> {
        let Create {
            meta,
            version,
            remember,
        } = self;
        let now = meta.created_at;
        // Inserted only if no live object of the environment has the name: the check and the
        // insert are one statement.
        let inserted = tx
            .execute(
                "INSERT INTO objects (id, environment, name, context, current_version, \
                 created_at, updated_at) SELECT $1, $2, $3, $4, $5, $6, $7 WHERE NOT EXISTS \
                 (SELECT 1 FROM objects WHERE environment = $2 AND name = $3 \
                 AND deleted_at IS NULL)",
                args![
                    &meta.id,
                    &meta.environment,
                    &meta.name,
                    meta.context.canonical_bytes(),
                    &meta.version_id,
                    now.0,
                    now.0,
                ],
            )
            .await;
        match inserted {
            Ok(1) => {}
            // None inserted: the name is taken. A unique violation: another transaction took
            // the name meanwhile (PostgreSQL), or the id is taken.
            Ok(_) | Err(DbError::Unique) => return Err(StoreError::Conflict(Conflict::Name)),
            Err(DbError::Other(e)) => return Err(e),
        }
        let actor = &meta.updated_by;
        insert_version(tx, &meta.id, &meta.version_id, &version, actor, now).await?;
        audit_change(
            tx,
            events::DATA_CREATED,
            &meta.environment,
            actor,
            Some(&meta),
            now,
        )
        .await?;
        if let Some(remember) = &remember {
            remember_in(tx, remember, Some(&meta), now).await?;
        }
        Ok(meta)
    }
}

/// A new current version of an object, if its current one is `expected` (or `expected` is
/// `None`).
struct Update {
    environment: String,
    id: String,
    version_id: String,
    version: NewVersion,
    expected: Option<String>,
    actor: Actor,
}

impl Change for Update {
    type Output = ObjectMeta;

    async fn run<X: Tx>(self, tx: &mut X) -> Result<ObjectMeta, StoreError> {
        let now = Timestamp::now();
        // The compare-and-set: one statement, so no other writer can slip in between.
        let changed = tx
            .execute(
                "UPDATE objects SET current_version = $1, updated_at = $2 \
                 WHERE environment = $3 AND id = $4 AND deleted_at IS NULL \
                 AND ($5 IS NULL OR current_version = $5)",
                args![
                    &self.version_id,
                    now.0,
                    &self.environment,
                    &self.id,
                    self.expected.as_deref(),
                ],
            )
            .await?;
        if changed == 0 {
            let exists = tx
                .fetch(
                    "SELECT 1 AS x FROM objects \
                     WHERE environment = $1 AND id = $2 AND deleted_at IS NULL",
                    args![&self.environment, &self.id],
                    |_| Ok(()),
                )
                .await?;
            return Err(if exists.is_some() {
                StoreError::Conflict(Conflict::Version)
            } else {
                StoreError::NotFound
            });
        }
        insert_version(
            tx,
            &self.id,
            &self.version_id,
            &self.version,
            &self.actor,
            now,
        )
        .await?;
        let sql = format!("SELECT {META_COLUMNS} FROM {META_FROM} WHERE o.id = $1");
        let meta = tx
            .fetch(&sql, args![&self.id], meta_from_row)
            .await?
            .ok_or(StoreError::NotFound)?;
        audit_change(
            tx,
            events::DATA_UPDATED,
            &self.environment,
            &self.actor,
            Some(&meta),
            now,
        )
        .await?;
        Ok(meta)
    }
}

/// Marks an object deleted if its current version is `expected` (or `expected` is `None`).
struct Delete {
    environment: String,
    id: String,
    expected: Option<String>,
    actor: Actor,
}

impl Change for Delete {
    type Output = ObjectMeta;

    async fn run<X: Tx>(self, tx: &mut X) -> Result<ObjectMeta, StoreError> {
        let now = Timestamp::now();
        let sql = format!(
            "SELECT {META_COLUMNS} FROM {META_FROM} \
             WHERE o.environment = $1 AND o.id = $2 AND o.deleted_at IS NULL"
        );
        let meta = tx
            .fetch(&sql, args![&self.environment, &self.id], meta_from_row)
            .await?
            .ok_or(StoreError::NotFound)?;
        let changed = tx
            .execute(
                "UPDATE objects SET deleted_at = $1 WHERE id = $2 AND deleted_at IS NULL \
                 AND ($3 IS NULL OR current_version = $3)",
                args![now.0, &self.id, self.expected.as_deref()],
            )
            .await?;
        if changed == 0 {
            return Err(StoreError::Conflict(Conflict::Version));
        }
        audit_change(
            tx,
            events::DATA_DELETED,
            &self.environment,
            &self.actor,
            Some(&meta),
            now,
        )
        .await?;
        Ok(meta)
    }
}

/// Swaps a version's envelope if it still holds `expected` (a rewrap).
struct Rewrap {
    object_id: String,
    seq: i64,
    expected: Vec<u8>,
    new: Vec<u8>,
    key_id: String,
    actor: Actor,
}

impl Change for Rewrap {
    type Output = bool;

    async fn run<X: Tx>(self, tx: &mut X) -> Result<bool, StoreError> {
        let changed = tx
            .execute(
                "UPDATE versions SET envelope = $1, key_id = $2, etag = $3 \
                 WHERE object_id = $4 AND seq = $5 AND envelope = $6",
                args![
                    &self.new,
                    &self.key_id,
                    &etag(&self.new),
                    &self.object_id,
                    self.seq,
                    &self.expected,
                ],
            )
            .await?;
        if changed != 1 {
            return Ok(false);
        }
        // The object's context goes into the event as JSON, as for every other change.
        let (environment, name, context) = tx
            .fetch(
                "SELECT environment, name, context FROM objects WHERE id = $1",
                args![&self.object_id],
                |row| {
                    let context = stored_context(row)?;
                    Ok((row.text("environment")?, row.text("name")?, context))
                },
            )
            .await?
            .ok_or(StoreError::NotFound)?;
        let record = AuditRecord {
            environment,
            event: events::DATA_REWRAPPED.to_owned(),
            actor: self.actor,
            object: Some((self.object_id, name)),
            key_id: Some(self.key_id),
            key_context: Some(context),
            detail: None,
            at: Timestamp::now(),
        };
        insert_audit(tx, &record).await?;
        Ok(true)
    }
}

/// Inserts the object's next version (numbered after its last one, in the same statement).
async fn insert_version<X: Tx>(
    tx: &mut X,
    object_id: &str,
    version_id: &str,
    version: &NewVersion,
    actor: &Actor,
    at: Timestamp,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO versions (object_id, seq, id, envelope, size, etag, key_id, created_at, \
         created_by_id, created_by_name) \
         SELECT $1, COALESCE(MAX(seq), 0) + 1, $2, $3, $4, $5, $6, $7, $8, $9 \
         FROM versions WHERE object_id = $1",
        args![
            object_id,
            version_id,
            &version.envelope,
            to_i64(version.size)?,
            &etag(&version.envelope),
            &version.key_id,
            at.0,
            &actor.id,
            &actor.name,
        ],
    )
    .await?;
    Ok(())
}

//! The object store: create, read, update, delete, versions, purge and rewrap swaps.

use async_trait::async_trait;
use sqlx::{AssertSqlSafe, Row};
use vault_crypto::KeyContext;

use super::audit::remember_in;
use super::writer::{AuditRecord, WriteTx, audit_change, insert_audit};
use super::{META_COLUMNS, META_FROM, SqlStore, check_id, meta_from_row, to_i64};
use crate::ids::{etag, new_version_id};
use crate::{
    Actor, ListQuery, NewVersion, ObjectMeta, Page, Remember, StoredObject, StoredVersion,
    Timestamp, VersionMeta, events, is_object_id, validate_environment, validate_name,
};
use crate::{Conflict, ObjectStore, StoreError};

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
        // Built from constants and numbered placeholders only: no data is spliced in.
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(environment)
            .bind(value)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)?;
        let meta = meta_from_row(&row)?;
        let envelope = if with_envelope {
            Some(row.try_get::<Vec<u8>, _>("envelope")?)
        } else {
            None
        };
        self.audit_read(event, environment, actor, Some(&meta))
            .await?;
        Ok((meta, envelope))
    }
}

#[async_trait]
impl ObjectStore for SqlStore {
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1 AS one").fetch_one(&self.pool).await?;
        Ok(())
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
        let (environment, name, context, actor) = (
            environment.to_owned(),
            name.to_owned(),
            context.clone(),
            actor.clone(),
        );
        self.change(move |tx| {
            Box::pin(async move {
                create_in(
                    tx,
                    &environment,
                    &name,
                    &context,
                    &version,
                    &actor,
                    meta,
                    remember,
                )
                .await
            })
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
        let row = sqlx::query(
            "SELECT context FROM objects WHERE environment = $1 AND id = $2 AND deleted_at IS NULL",
        )
        .bind(environment)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound)?;
        let bytes: Vec<u8> = row.try_get("context")?;
        KeyContext::from_canonical_bytes(&bytes).map_err(|_| StoreError::Unavailable {
            reason: "a stored key context is corrupt".into(),
        })
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
        let version_id = new_version_id()?;
        let (environment, id, expected, actor) = (
            environment.to_owned(),
            id.to_owned(),
            expected_version.map(str::to_owned),
            actor.clone(),
        );
        self.change(move |tx| {
            Box::pin(async move {
                update_in(
                    tx,
                    &environment,
                    &id,
                    &version_id,
                    &version,
                    expected.as_deref(),
                    &actor,
                )
                .await
            })
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
        let (environment, id, expected, actor) = (
            environment.to_owned(),
            id.to_owned(),
            expected_version.map(str::to_owned),
            actor.clone(),
        );
        self.change(move |tx| {
            Box::pin(
                async move { delete_in(tx, &environment, &id, expected.as_deref(), &actor).await },
            )
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
                let context: Vec<u8> = r.try_get("context")?;
                Ok(StoredVersion {
                    object_id: r.try_get("object_id")?,
                    environment: r.try_get("environment")?,
                    seq: r.try_get("seq")?,
                    context: KeyContext::from_canonical_bytes(&context).map_err(|_| {
                        StoreError::Unavailable {
                            reason: "a stored key context is corrupt".into(),
                        }
                    })?,
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
        let (object_id, expected, new, key_id, actor) = (
            object_id.to_owned(),
            expected.to_vec(),
            new.to_vec(),
            key_id.to_owned(),
            actor.clone(),
        );
        self.change(move |tx| {
            Box::pin(async move {
                replace_envelope_in(tx, &object_id, seq, &expected, &new, &key_id, &actor).await
            })
        })
        .await
    }
}

/// Creates the object `meta` describes, with its first version, audit event and remembered
/// answer, in `tx`.
#[allow(clippy::too_many_arguments)]
async fn create_in(
    tx: &mut WriteTx,
    environment: &str,
    name: &str,
    context: &KeyContext,
    version: &NewVersion,
    actor: &Actor,
    meta: ObjectMeta,
    remember: Option<Remember>,
) -> Result<ObjectMeta, StoreError> {
    let now = meta.created_at;
    // Inserted only if no live object of the environment has the name: the check and the
    // insert are one statement.
    let inserted = sqlx::query(
        "INSERT INTO objects (id, environment, name, context, current_version, created_at, \
         updated_at) SELECT $1, $2, $3, $4, $5, $6, $7 WHERE NOT EXISTS \
         (SELECT 1 FROM objects WHERE environment = $2 AND name = $3 AND deleted_at IS NULL)",
    )
    .bind(&meta.id)
    .bind(environment)
    .bind(name)
    .bind(context.canonical_bytes().to_vec())
    .bind(&meta.version_id)
    .bind(now.0)
    .bind(now.0)
    .execute(&mut **tx)
    .await;
    if let Err(sqlx::Error::Database(e)) = &inserted
        && e.is_unique_violation()
    {
        // Another transaction took the name meanwhile (PostgreSQL), or the id is taken.
        return Err(StoreError::Conflict(Conflict::Name));
    }
    if inserted?.rows_affected() == 0 {
        return Err(StoreError::Conflict(Conflict::Name));
    }
    insert_version(tx, &meta.id, &meta.version_id, version, actor, now).await?;
    audit_change(
        tx,
        events::DATA_CREATED,
        environment,
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

/// Makes `version_id` the object's current version if `expected` is (or is `None`), in `tx`.
async fn update_in(
    tx: &mut WriteTx,
    environment: &str,
    id: &str,
    version_id: &str,
    version: &NewVersion,
    expected: Option<&str>,
    actor: &Actor,
) -> Result<ObjectMeta, StoreError> {
    let now = Timestamp::now();
    // The compare-and-set: one statement, so no other writer can slip in between.
    let changed = sqlx::query(
        "UPDATE objects SET current_version = $1, updated_at = $2 \
         WHERE environment = $3 AND id = $4 AND deleted_at IS NULL \
         AND ($5 IS NULL OR current_version = $5)",
    )
    .bind(version_id)
    .bind(now.0)
    .bind(environment)
    .bind(id)
    .bind(expected.map(str::to_owned))
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if changed == 0 {
        let exists = sqlx::query(
            "SELECT 1 AS x FROM objects WHERE environment = $1 AND id = $2 AND deleted_at IS NULL",
        )
        .bind(environment)
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?;
        return Err(if exists.is_some() {
            StoreError::Conflict(Conflict::Version)
        } else {
            StoreError::NotFound
        });
    }
    insert_version(tx, id, version_id, version, actor, now).await?;
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {META_COLUMNS} FROM {META_FROM} WHERE o.id = $1"
    )))
    .bind(id)
    .fetch_one(&mut **tx)
    .await?;
    let meta = meta_from_row(&row)?;
    audit_change(
        tx,
        events::DATA_UPDATED,
        environment,
        actor,
        Some(&meta),
        now,
    )
    .await?;
    Ok(meta)
}

/// Marks the object deleted if its current version is `expected` (or `expected` is `None`),
/// in `tx`.
async fn delete_in(
    tx: &mut WriteTx,
    environment: &str,
    id: &str,
    expected: Option<&str>,
    actor: &Actor,
) -> Result<ObjectMeta, StoreError> {
    let now = Timestamp::now();
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {META_COLUMNS} FROM {META_FROM} \
         WHERE o.environment = $1 AND o.id = $2 AND o.deleted_at IS NULL"
    )))
    .bind(environment)
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?
    .ok_or(StoreError::NotFound)?;
    let meta = meta_from_row(&row)?;
    let changed = sqlx::query(
        "UPDATE objects SET deleted_at = $1 WHERE id = $2 AND deleted_at IS NULL \
         AND ($3 IS NULL OR current_version = $3)",
    )
    .bind(now.0)
    .bind(id)
    .bind(expected.map(str::to_owned))
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if changed == 0 {
        return Err(StoreError::Conflict(Conflict::Version));
    }
    audit_change(
        tx,
        events::DATA_DELETED,
        environment,
        actor,
        Some(&meta),
        now,
    )
    .await?;
    Ok(meta)
}

/// Swaps a version's envelope if it still holds `expected` (a rewrap), in `tx`.
async fn replace_envelope_in(
    tx: &mut WriteTx,
    object_id: &str,
    seq: i64,
    expected: &[u8],
    new: &[u8],
    key_id: &str,
    actor: &Actor,
) -> Result<bool, StoreError> {
    let changed = sqlx::query(
        "UPDATE versions SET envelope = $1, key_id = $2, etag = $3 \
         WHERE object_id = $4 AND seq = $5 AND envelope = $6",
    )
    .bind(new.to_vec())
    .bind(key_id)
    .bind(etag(new))
    .bind(object_id)
    .bind(seq)
    .bind(expected.to_vec())
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if changed == 1 {
        // The object's context goes into the event as JSON, as for every other change.
        let row = sqlx::query("SELECT environment, name, context FROM objects WHERE id = $1")
            .bind(object_id)
            .fetch_one(&mut **tx)
            .await?;
        let context: Vec<u8> = row.try_get("context")?;
        let context =
            KeyContext::from_canonical_bytes(&context).map_err(|_| StoreError::Unavailable {
                reason: "a stored key context is corrupt".into(),
            })?;
        let record = AuditRecord {
            environment: row.try_get("environment")?,
            event: events::DATA_REWRAPPED.to_owned(),
            actor: actor.clone(),
            object: Some((object_id.to_owned(), row.try_get("name")?)),
            key_id: Some(key_id.to_owned()),
            key_context: Some(context),
            detail: None,
            at: Timestamp::now(),
        };
        insert_audit(tx, &record).await?;
    }
    Ok(changed == 1)
}

/// Inserts the object's next version (numbered after its last one, in the same statement).
async fn insert_version(
    tx: &mut WriteTx,
    object_id: &str,
    version_id: &str,
    version: &NewVersion,
    actor: &Actor,
    at: Timestamp,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO versions (object_id, seq, id, envelope, size, etag, key_id, created_at, \
         created_by_id, created_by_name) \
         SELECT $1, COALESCE(MAX(seq), 0) + 1, $2, $3, $4, $5, $6, $7, $8, $9 \
         FROM versions WHERE object_id = $1",
    )
    .bind(object_id)
    .bind(version_id)
    .bind(version.envelope.clone())
    .bind(to_i64(version.size)?)
    .bind(etag(&version.envelope))
    .bind(&version.key_id)
    .bind(at.0)
    .bind(&actor.id)
    .bind(&actor.name)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

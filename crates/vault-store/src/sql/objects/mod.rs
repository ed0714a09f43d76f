//! The object store: create, read, update, delete, versions, purge and rewrap swaps.

use async_trait::async_trait;
use vault_crypto::KeyContext;

use super::change::{AuditRecord, insert_audit};
use super::db::{Columns, Tx, args};
use super::{META_COLUMNS, META_FROM, SqlStore, check_id, meta_from_row, stored_context};
use crate::ids::is_version_id;
use crate::{
    Actor, ListQuery, NewVersion, ObjectMeta, Page, Remember, StoredObject, StoredVersion,
    Timestamp, VersionMeta, events, is_object_id, validate_environment, validate_name,
    validate_organization_id,
};
use crate::{ObjectStore, StoreError};

mod changes;
use changes::{Create, Delete, Rewrap, Update};

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
            .row(&sql, args![environment, value], decode)
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
        match &self.engine {
            #[cfg(feature = "sqlite")]
            super::Engine::Lite(lite) => lite.ping().await,
            #[cfg(feature = "postgres")]
            super::Engine::Pg(_) => self.exists("SELECT 1 AS one", &[]).await.map(drop),
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
        organization_id: Option<&str>,
        version: NewVersion,
        actor: &Actor,
        remember: Option<&Remember>,
    ) -> Result<ObjectMeta, StoreError> {
        validate_environment(environment)?;
        let name = validate_name(name)?;
        if let Some(org) = organization_id {
            validate_organization_id(org)?;
        }
        if !is_object_id(id) {
            return Err(StoreError::invalid("id", "not an object id"));
        }
        if !is_version_id(&version.id) {
            return Err(StoreError::invalid("version", "not a version id"));
        }
        let meta = ObjectMeta::created(
            environment,
            id,
            name,
            context,
            organization_id,
            &version,
            actor,
        );
        self.change(Create {
            meta,
            version,
            remember: remember.cloned(),
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
        self.row(
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
        if !is_version_id(&version.id) {
            return Err(StoreError::invalid("version", "not a version id"));
        }
        self.change(Update {
            environment: environment.to_owned(),
            id: id.to_owned(),
            version_id: version.id.clone(),
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
        // One snapshot for the three reads.
        let (environment_, id_) = (environment.to_owned(), id.to_owned());
        let (current, rows, meta) = self
            .snapshot(move |tx| {
                let current = tx
                    .fetch(
                        "SELECT current_version FROM objects \
                         WHERE environment = $1 AND id = $2 AND deleted_at IS NULL",
                        args![&environment_, &id_],
                        |r| r.text("current_version"),
                    )?
                    .ok_or(StoreError::NotFound)?;
                let rows = tx.fetch_all(
                    "SELECT id, created_at, created_by_id, created_by_name, size, etag \
                     FROM versions WHERE object_id = $1 ORDER BY seq DESC",
                    args![&id_],
                    |r| {
                        Ok(VersionMeta {
                            current: false,
                            id: r.text("id")?,
                            created_at: Timestamp(r.int("created_at")?),
                            created_by: Actor::new(
                                r.text("created_by_id")?,
                                r.text("created_by_name")?,
                            ),
                            size: u64::try_from(r.int("size")?).unwrap_or(0),
                            etag: r.text("etag")?,
                        })
                    },
                )?;
                let meta = tx
                    .fetch(
                        &format!("SELECT {META_COLUMNS} FROM {META_FROM} WHERE o.id = $1"),
                        args![&id_],
                        meta_from_row,
                    )?
                    .ok_or(StoreError::NotFound)?;
                Ok((current, rows, meta))
            })
            .await?;
        self.audit_read(events::METADATA_READ, environment, actor, Some(&meta))
            .await?;
        Ok(rows
            .into_iter()
            .map(|v| VersionMeta {
                current: v.id == current,
                ..v
            })
            .collect())
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

    async fn purge(
        &self,
        deleted_before: Timestamp,
        limit: u32,
        actor: &Actor,
    ) -> Result<u64, StoreError> {
        let actor = actor.clone();
        self.change(move |tx: &mut dyn Tx| {
            // What this transaction removes, and only that (a concurrent purge that got there
            // first removed, and recorded, the rest): the oldest `limit`, their versions, and
            // one event each, in the same transaction.
            let gone = tx.fetch_all(
                "DELETE FROM objects WHERE id IN (SELECT id FROM objects \
                 WHERE deleted_at IS NOT NULL AND deleted_at < $1 \
                 ORDER BY deleted_at, id LIMIT $2) \
                 RETURNING id, environment, name, context, organization_id",
                args![deleted_before.0, i64::from(limit)],
                |r| {
                    let organization = match r.opt_text("organization_id")? {
                        Some(org) => Some(org),
                        None => stored_context(r)?.get("organization_id").map(str::to_owned),
                    };
                    Ok((
                        r.text("environment")?,
                        r.text("id")?,
                        r.text("name")?,
                        organization,
                    ))
                },
            )?;
            let now = Timestamp::now();
            let n = gone.len() as u64;
            for (environment, id, name, organization) in gone {
                tx.execute("DELETE FROM versions WHERE object_id = $1", args![&id])?;
                let record = AuditRecord {
                    environment,
                    event: events::DATA_PURGED.to_owned(),
                    actor: actor.clone(),
                    object: Some((id, name)),
                    key_id: None,
                    key_context: None,
                    organization,
                    detail: None,
                    at: now,
                };
                insert_audit(tx, &record)?;
            }
            Ok(n)
        })
        .await
    }

    async fn scan_versions(
        &self,
        after: Option<(String, i64)>,
        limit: u32,
    ) -> Result<Vec<StoredVersion>, StoreError> {
        let (after_id, after_seq) = after.unwrap_or_default();
        self.rows(
            "SELECT v.object_id, o.environment, v.seq, o.context, v.envelope \
             FROM versions v JOIN objects o ON o.id = v.object_id \
             WHERE v.object_id > $1 OR (v.object_id = $1 AND v.seq > $2) \
             ORDER BY v.object_id, v.seq LIMIT $3",
            args![&after_id, after_seq, i64::from(limit)],
            |r| {
                Ok(StoredVersion {
                    object_id: r.text("object_id")?,
                    environment: r.text("environment")?,
                    seq: r.int("seq")?,
                    context: stored_context(r)?,
                    envelope: r.blob("envelope")?,
                })
            },
        )
        .await
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

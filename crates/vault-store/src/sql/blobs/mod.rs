//! The blob store: a streamed envelope's head in `blobs`, each sealed segment a row of
//! `blob_segments`, written a batch at a time under an `uploading` row and made live in one
//! transaction with its event.

use async_trait::async_trait;

mod purge;

use super::change::{AuditRecord, insert_audit};
use super::db::{Backend, Columns, DbError, Tx, args};
use super::{SqlStore, stored_context, to_i64};
use crate::blobs::{BlobHead, BlobMeta, BlobPurge, BlobStore, NewBlob, StoredBlob};
use crate::ids::is_blob_id;
use crate::{
    Actor, Conflict, MAX_LIMIT, StoreError, Timestamp, events, validate_environment, validate_name,
};

/// The metadata columns of a blob row.
pub(super) const BLOB_COLUMNS: &str = "id, environment, name, context, key_id, size, segments, created_at, \
     created_by_id, created_by_name";

pub(super) fn blob_from_row(row: &dyn Columns) -> Result<BlobMeta, StoreError> {
    let count = |column: &str| {
        u64::try_from(row.opt_int(column)?.unwrap_or(0)).map_err(|_| StoreError::Unavailable {
            reason: "a stored blob's size is negative".into(),
        })
    };
    Ok(BlobMeta {
        id: row.text("id")?,
        environment: row.text("environment")?,
        name: row.text("name")?,
        context: stored_context(row)?,
        key_id: row.text("key_id")?,
        size: count("size")?,
        segments: count("segments")?,
        created_at: Timestamp(row.int("created_at")?),
        created_by: Actor::new(row.text("created_by_id")?, row.text("created_by_name")?),
    })
}

impl AuditRecord {
    /// The event `event` about the blob `meta`.
    pub(super) fn of_blob(event: &str, actor: &Actor, meta: &BlobMeta, at: Timestamp) -> Self {
        Self {
            environment: meta.environment.clone(),
            event: event.to_owned(),
            actor: actor.clone(),
            object: Some((meta.id.clone(), meta.name.clone())),
            key_id: Some(meta.key_id.clone()),
            key_context: Some(meta.context.clone()),
            organization: None,
            detail: None,
            at,
        }
    }
}

fn check_blob_id(id: &str) -> Result<(), StoreError> {
    if is_blob_id(id) {
        Ok(())
    } else {
        Err(StoreError::NotFound)
    }
}

impl SqlStore {
    /// The live blob named `name`, with its head if asked.
    async fn live_blob(
        &self,
        environment: &str,
        name: &str,
        with_head: bool,
    ) -> Result<(BlobMeta, Option<Vec<u8>>), StoreError> {
        validate_environment(environment)?;
        let name = validate_name(name).map_err(|_| StoreError::NotFound)?;
        let head = if with_head { ", head" } else { "" };
        self.row(
            &format!(
                "SELECT {BLOB_COLUMNS}{head} FROM blobs \
                 WHERE environment = $1 AND name = $2 AND state = 'live'"
            ),
            args![environment, name],
            |row| {
                let head = if with_head {
                    Some(row.blob("head")?)
                } else {
                    None
                };
                Ok((blob_from_row(row)?, head))
            },
        )
        .await?
        .ok_or(StoreError::NotFound)
    }
}

/// Deletes the live blob `(environment, name)` other than `except`, with its event; whether
/// there was one.
fn delete_live(
    tx: &mut dyn Tx,
    environment: &str,
    name: &str,
    except: &str,
    actor: &Actor,
    now: Timestamp,
) -> Result<Option<BlobMeta>, StoreError> {
    let gone = tx.fetch(
        &format!(
            "UPDATE blobs SET state = 'deleted', deleted_at = $1 \
             WHERE environment = $2 AND name = $3 AND state = 'live' AND id <> $4 \
             RETURNING {BLOB_COLUMNS}"
        ),
        args![now.0, environment, name, except],
        blob_from_row,
    )?;
    if let Some(meta) = &gone {
        insert_audit(
            tx,
            &AuditRecord::of_blob(events::BLOB_DELETED, actor, meta, now),
        )?;
    }
    Ok(gone)
}

#[async_trait]
impl BlobStore for SqlStore {
    async fn begin_blob(&self, blob: &NewBlob, actor: &Actor) -> Result<(), StoreError> {
        validate_environment(&blob.environment)?;
        let name = validate_name(&blob.name)?.to_owned();
        if !is_blob_id(&blob.id) {
            return Err(StoreError::invalid("id", "not a blob id"));
        }
        let (blob, actor) = (blob.clone(), actor.clone());
        self.change(move |tx: &mut dyn Tx| {
            let inserted = tx.execute(
                "INSERT INTO blobs (id, environment, name, context, head, key_id, state, \
                 created_at, created_by_id, created_by_name) \
                 VALUES ($1, $2, $3, $4, $5, $6, 'uploading', $7, $8, $9)",
                args![
                    &blob.id,
                    &blob.environment,
                    &name,
                    blob.context.canonical_bytes(),
                    &blob.head,
                    &blob.key_id,
                    Timestamp::now().0,
                    &actor.id,
                    &actor.name,
                ],
            );
            match inserted {
                Ok(_) => Ok(()),
                Err(DbError::Unique) => Err(StoreError::Conflict(Conflict::Name)),
                Err(DbError::Other(e)) => Err(e),
            }
        })
        .await
    }

    async fn put_segments(
        &self,
        blob_id: &str,
        first: u64,
        segments: Vec<Vec<u8>>,
    ) -> Result<(), StoreError> {
        check_blob_id(blob_id)?;
        let first = to_i64(first)?;
        let id = blob_id.to_owned();
        self.change(move |tx: &mut dyn Tx| {
            // The upload's time moves with its progress (an upload is abandoned after a day
            // without any). The update also locks the row on PostgreSQL until this commits: an
            // abort or purge that would take it waits, and then sees these segments too.
            let uploading = tx.execute(
                "UPDATE blobs SET created_at = $1 WHERE id = $2 AND state = 'uploading'",
                args![Timestamp::now().0, &id],
            )?;
            if uploading == 0 {
                return Err(StoreError::NotFound);
            }
            let mut idx = first;
            for bytes in &segments {
                match tx.execute(
                    "INSERT INTO blob_segments (blob_id, idx, bytes) VALUES ($1, $2, $3)",
                    args![&id, idx, bytes],
                ) {
                    Ok(_) => {}
                    Err(DbError::Unique) => return Err(StoreError::Conflict(Conflict::Version)),
                    Err(DbError::Other(e)) => return Err(e),
                }
                idx = idx.saturating_add(1);
            }
            Ok(())
        })
        .await
    }

    async fn commit_blob(
        &self,
        blob_id: &str,
        size: u64,
        segments: u64,
        actor: &Actor,
    ) -> Result<BlobMeta, StoreError> {
        check_blob_id(blob_id)?;
        let (size, count) = (to_i64(size)?, to_i64(segments)?);
        let (id, actor) = (blob_id.to_owned(), actor.clone());
        self.change(move |tx: &mut dyn Tx| {
            // Locked on PostgreSQL until the commit (an abort waits); SQLite has one writer.
            let lock = match tx.backend() {
                Backend::Postgres => " FOR UPDATE",
                Backend::Sqlite => "",
            };
            let (name, environment) = tx
                .fetch(
                    &format!(
                        "SELECT name, environment FROM blobs \
                         WHERE id = $1 AND state = 'uploading'{lock}"
                    ),
                    args![&id],
                    |r| Ok((r.text("name")?, r.text("environment")?)),
                )?
                .ok_or(StoreError::NotFound)?;
            if tx.backend() == Backend::Postgres {
                // Commits of one name take turns: the later one then sees the earlier one's
                // blob live, and replaces it (rather than meeting the unique index).
                tx.fetch(
                    "SELECT pg_advisory_xact_lock(hashtextextended($1, 7271634)) AS locked",
                    args![&format!("{environment} {name}")],
                    |_| Ok(()),
                )?;
            }
            let (stored, top) = tx
                .fetch(
                    "SELECT COUNT(*) AS n, MAX(idx) AS top FROM blob_segments WHERE blob_id = $1",
                    args![&id],
                    |r| Ok((r.int("n")?, r.opt_int("top")?)),
                )?
                .unwrap_or((0, None));
            if stored != count || top != Some(count.saturating_sub(1)) || count < 1 {
                return Err(StoreError::invalid(
                    "segments",
                    "the stored segments are not exactly those of the upload",
                ));
            }
            let now = Timestamp::now();
            // The blob the name had is replaced (deleted, purged later) in this transaction.
            delete_live(tx, &environment, &name, &id, &actor, now)?;
            let meta = tx
                .fetch(
                    &format!(
                        "UPDATE blobs SET state = 'live', size = $1, segments = $2, created_at = $3 \
                         WHERE id = $4 AND state = 'uploading' RETURNING {BLOB_COLUMNS}"
                    ),
                    args![size, count, now.0, &id],
                    blob_from_row,
                )?
                .ok_or(StoreError::NotFound)?;
            insert_audit(
                tx,
                &AuditRecord::of_blob(events::BLOB_CREATED, &actor, &meta, now),
            )?;
            Ok(meta)
        })
        .await
    }

    async fn abort_blob(&self, blob_id: &str) -> Result<(), StoreError> {
        check_blob_id(blob_id)?;
        let id = blob_id.to_owned();
        // Marked only: its segments go in the purge's bounded batches.
        self.change(move |tx: &mut dyn Tx| {
            tx.execute(
                "UPDATE blobs SET state = 'purging' WHERE id = $1 AND state = 'uploading'",
                args![&id],
            )?;
            Ok(())
        })
        .await
    }

    async fn blob(
        &self,
        environment: &str,
        name: &str,
        actor: &Actor,
    ) -> Result<StoredBlob, StoreError> {
        let (meta, head) = self.live_blob(environment, name, true).await?;
        self.audit_read_record(AuditRecord::of_blob(
            events::BLOB_READ,
            actor,
            &meta,
            Timestamp::now(),
        ))
        .await?;
        Ok(StoredBlob {
            meta,
            head: head.unwrap_or_default(),
        })
    }

    async fn segments(
        &self,
        blob_id: &str,
        from: u64,
        to: u64,
        max_len: u64,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        check_blob_id(blob_id)?;
        let (from, to, max_len) = (to_i64(from)?, to_i64(to)?, to_i64(max_len)?);
        self.rows(
            "SELECT idx, bytes FROM blob_segments \
             WHERE blob_id = $1 AND idx >= $2 AND idx < $3 AND octet_length(bytes) <= $4 \
             ORDER BY idx",
            args![blob_id, from, to, max_len],
            |r| {
                let idx = u64::try_from(r.int("idx")?).map_err(|_| StoreError::Unavailable {
                    reason: "a negative segment index".into(),
                })?;
                Ok((idx, r.blob("bytes")?))
            },
        )
        .await
    }

    async fn blob_purged(&self, blob_id: &str) -> Result<bool, StoreError> {
        check_blob_id(blob_id)?;
        Ok(!self
            .exists(
                "SELECT 1 AS x FROM blobs WHERE id = $1 AND state <> 'purging'",
                args![blob_id],
            )
            .await?)
    }

    async fn describe_blob(
        &self,
        environment: &str,
        name: &str,
        actor: &Actor,
    ) -> Result<BlobMeta, StoreError> {
        let (meta, _) = self.live_blob(environment, name, false).await?;
        self.audit_read_record(AuditRecord::of_blob(
            events::METADATA_READ,
            actor,
            &meta,
            Timestamp::now(),
        ))
        .await?;
        Ok(meta)
    }

    async fn list_blobs(
        &self,
        environment: &str,
        after: Option<&str>,
        limit: u32,
        actor: &Actor,
    ) -> Result<Vec<BlobMeta>, StoreError> {
        validate_environment(environment)?;
        if limit == 0 || limit > MAX_LIMIT {
            return Err(StoreError::invalid_query("limit", "must be 1 to 100"));
        }
        let blobs = self
            .rows(
                &format!(
                    "SELECT {BLOB_COLUMNS} FROM blobs \
                     WHERE environment = $1 AND state = 'live' AND name > $2 \
                     ORDER BY name LIMIT $3"
                ),
                args![environment, after.unwrap_or(""), i64::from(limit)],
                blob_from_row,
            )
            .await?;
        self.audit_read(events::NAMES_LISTED, environment, actor, None)
            .await?;
        Ok(blobs)
    }

    async fn delete_blob(
        &self,
        environment: &str,
        name: &str,
        actor: &Actor,
    ) -> Result<BlobMeta, StoreError> {
        validate_environment(environment)?;
        let name = validate_name(name).map_err(|_| StoreError::NotFound)?;
        let (environment, name, actor) = (environment.to_owned(), name.to_owned(), actor.clone());
        self.change(move |tx: &mut dyn Tx| {
            delete_live(tx, &environment, &name, "", &actor, Timestamp::now())?
                .ok_or(StoreError::NotFound)
        })
        .await
    }

    async fn purge_blobs(
        &self,
        deleted_before: Option<Timestamp>,
        abandoned_before: Timestamp,
        segments: u32,
        only: Option<&str>,
        actor: &Actor,
    ) -> Result<BlobPurge, StoreError> {
        let actor = actor.clone();
        let only = only.map(str::to_owned);
        let deleted_before = deleted_before.map_or(i64::MIN, |t| t.0);
        self.change(move |tx: &mut dyn Tx| {
            purge::step(
                tx,
                deleted_before,
                abandoned_before,
                segments,
                only.as_deref(),
                &actor,
            )
        })
        .await
    }

    async fn scan_blob_heads(
        &self,
        after: Option<String>,
        limit: u32,
    ) -> Result<Vec<BlobHead>, StoreError> {
        let after = after.unwrap_or_default();
        self.rows(
            "SELECT id, environment, context, head FROM blobs WHERE id > $1 ORDER BY id LIMIT $2",
            args![&after, i64::from(limit)],
            |r| {
                Ok(BlobHead {
                    id: r.text("id")?,
                    environment: r.text("environment")?,
                    context: stored_context(r)?,
                    head: r.blob("head")?,
                })
            },
        )
        .await
    }

    async fn replace_blob_head(
        &self,
        blob_id: &str,
        expected: &[u8],
        new: &[u8],
        key_id: &str,
        actor: &Actor,
    ) -> Result<bool, StoreError> {
        check_blob_id(blob_id)?;
        let (id, expected, new, key_id, actor) = (
            blob_id.to_owned(),
            expected.to_vec(),
            new.to_vec(),
            key_id.to_owned(),
            actor.clone(),
        );
        self.change(move |tx: &mut dyn Tx| {
            let meta = tx.fetch(
                &format!(
                    "UPDATE blobs SET head = $1, key_id = $2 WHERE id = $3 AND head = $4 \
                     RETURNING state, {BLOB_COLUMNS}"
                ),
                args![&new, &key_id, &id, &expected],
                |r| Ok((r.text("state")?, blob_from_row(r)?)),
            )?;
            let Some((state, meta)) = meta else {
                return Ok(false);
            };
            if state == "live" {
                insert_audit(
                    tx,
                    &AuditRecord::of_blob(events::DATA_REWRAPPED, &actor, &meta, Timestamp::now()),
                )?;
            }
            Ok(true)
        })
        .await
    }
}

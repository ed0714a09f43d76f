//! One step of the blob purge: a few blobs marked, then a bounded batch of one's segments.

use super::super::change::{AuditRecord, insert_audit};
use super::super::db::{Tx, args};
use super::{BLOB_COLUMNS, blob_from_row};
use crate::blobs::BlobPurge;
use crate::{Actor, StoreError, Timestamp, events};

/// See [`BlobStore::purge_blobs`](crate::BlobStore::purge_blobs); `deleted_before` is
/// `i64::MIN` for none.
pub(super) fn step(
    tx: &mut dyn Tx,
    deleted_before: i64,
    abandoned_before: Timestamp,
    segments: u32,
    only: Option<&str>,
    actor: &Actor,
) -> Result<BlobPurge, StoreError> {
    // Blobs gone for long enough are marked `purging` (a few at a time, each once: a
    // concurrent purge that marked it first recorded it).
    let gone = tx.fetch_all(
        &format!(
            "SELECT state, {BLOB_COLUMNS} FROM blobs \
             WHERE ((state = 'deleted' AND deleted_at < $1) \
             OR (state = 'uploading' AND created_at < $2)) AND ($3 IS NULL OR id = $3) \
             ORDER BY created_at, id LIMIT 8"
        ),
        args![deleted_before, abandoned_before.0, only],
        |r| Ok((r.text("state")?, blob_from_row(r)?)),
    )?;
    let now = Timestamp::now();
    for (state, meta) in &gone {
        let marked = tx.execute(
            "UPDATE blobs SET state = 'purging' WHERE id = $1 AND state = $2",
            args![&meta.id, state],
        )?;
        // An upload never finished was never a blob: nothing to tell.
        if marked > 0 && state == "deleted" {
            insert_audit(
                tx,
                &AuditRecord::of_blob(events::BLOB_PURGED, actor, meta, now),
            )?;
        }
    }
    // Then one purging blob loses at most `segments` segments, and its row once none
    // is left: no transaction holds the writer for more than a batch.
    let mut done = BlobPurge::default();
    let Some(id) = tx.fetch(
        "SELECT id FROM blobs WHERE state = 'purging' AND ($1 IS NULL OR id = $1) \
         ORDER BY id LIMIT 1",
        args![only],
        |r| r.text("id"),
    )?
    else {
        return Ok(done);
    };
    done.segments = tx.execute(
        "DELETE FROM blob_segments WHERE blob_id = $1 AND idx IN \
         (SELECT idx FROM blob_segments WHERE blob_id = $1 ORDER BY idx LIMIT $2)",
        args![&id, i64::from(segments)],
    )?;
    done.blobs = tx.execute(
        "DELETE FROM blobs WHERE id = $1 AND state = 'purging' \
         AND NOT EXISTS (SELECT 1 FROM blob_segments WHERE blob_id = $1)",
        args![&id],
    )?;
    Ok(done)
}

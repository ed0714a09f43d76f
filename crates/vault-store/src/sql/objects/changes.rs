use crate::ids::etag;
use crate::sql::audit::remember_in;
use crate::sql::change::{AuditRecord, audit_change, insert_audit};
use crate::sql::db::{Change, DbError, Tx, args};
use crate::sql::{META_COLUMNS, META_FROM, meta_from_row, stored_context, to_i64};
use crate::{Actor, NewVersion, ObjectMeta, Remember, Timestamp, events};
use crate::{Conflict, StoreError};

/// A new object, with its first version, audit event and remembered answer.
pub(super) struct Create {
    pub(super) meta: ObjectMeta,
    pub(super) version: NewVersion,
    pub(super) remember: Option<Remember>,
}

impl Change for Create {
    type Output = ObjectMeta;

    fn run(self, tx: &mut dyn Tx) -> Result<ObjectMeta, StoreError> {
        let Create {
            meta,
            version,
            remember,
        } = self;
        let now = meta.created_at;
        // Inserted only if no live object of the environment has the name: the check and the
        // insert are one statement.
        let inserted = tx.execute(
            "INSERT INTO objects (id, environment, name, context, current_version, \
                 created_at, updated_at, organization_id) \
                 SELECT $1, $2, $3, $4, $5, $6, $7, $8 WHERE NOT EXISTS \
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
                meta.organization_id.as_deref(),
            ],
        );
        match inserted {
            Ok(1) => {}
            // None inserted: the name is taken. A unique violation: another transaction took
            // the name meanwhile (PostgreSQL), or the id is taken.
            Ok(_) | Err(DbError::Unique) => return Err(StoreError::Conflict(Conflict::Name)),
            Err(DbError::Other(e)) => return Err(e),
        }
        let actor = &meta.updated_by;
        insert_version(tx, &meta.id, &meta.version_id, &version, actor, now)?;
        audit_change(
            tx,
            events::DATA_CREATED,
            &meta.environment,
            actor,
            Some(&meta),
            now,
        )?;
        if let Some(remember) = &remember {
            remember_in(tx, remember)?;
        }
        Ok(meta)
    }
}

/// A new current version of an object, if its current one is `expected` (or `expected` is
/// `None`).
pub(super) struct Update {
    pub(super) environment: String,
    pub(super) id: String,
    pub(super) version_id: String,
    pub(super) version: NewVersion,
    pub(super) expected: Option<String>,
    pub(super) actor: Actor,
}

impl Change for Update {
    type Output = ObjectMeta;

    fn run(self, tx: &mut dyn Tx) -> Result<ObjectMeta, StoreError> {
        // An update takes its time in its transaction, so versions commit in time order.
        let now = Timestamp::now();
        // The compare-and-set: one statement, so no other writer can slip in between.
        let changed = tx.execute(
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
        )?;
        if changed == 0 {
            let exists = tx.fetch(
                "SELECT 1 AS x FROM objects \
                     WHERE environment = $1 AND id = $2 AND deleted_at IS NULL",
                args![&self.environment, &self.id],
                |_| Ok(()),
            )?;
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
        )?;
        let sql = format!("SELECT {META_COLUMNS} FROM {META_FROM} WHERE o.id = $1");
        let meta = tx
            .fetch(&sql, args![&self.id], meta_from_row)?
            .ok_or(StoreError::NotFound)?;
        audit_change(
            tx,
            events::DATA_UPDATED,
            &self.environment,
            &self.actor,
            Some(&meta),
            now,
        )?;
        Ok(meta)
    }
}

/// Marks an object deleted if its current version is `expected` (or `expected` is `None`).
pub(super) struct Delete {
    pub(super) environment: String,
    pub(super) id: String,
    pub(super) expected: Option<String>,
    pub(super) actor: Actor,
}

impl Change for Delete {
    type Output = ObjectMeta;

    fn run(self, tx: &mut dyn Tx) -> Result<ObjectMeta, StoreError> {
        let now = Timestamp::now();
        let sql = format!(
            "SELECT {META_COLUMNS} FROM {META_FROM} \
             WHERE o.environment = $1 AND o.id = $2 AND o.deleted_at IS NULL"
        );
        let meta = tx
            .fetch(&sql, args![&self.environment, &self.id], meta_from_row)?
            .ok_or(StoreError::NotFound)?;
        let changed = tx.execute(
            "UPDATE objects SET deleted_at = $1 WHERE id = $2 AND deleted_at IS NULL \
                 AND ($3 IS NULL OR current_version = $3)",
            args![now.0, &self.id, self.expected.as_deref()],
        )?;
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
        )?;
        Ok(meta)
    }
}

/// Swaps a version's envelope if it still holds `expected` (a rewrap).
pub(super) struct Rewrap {
    pub(super) object_id: String,
    pub(super) seq: i64,
    pub(super) expected: Vec<u8>,
    pub(super) new: Vec<u8>,
    pub(super) key_id: String,
    pub(super) actor: Actor,
}

impl Change for Rewrap {
    type Output = bool;

    fn run(self, tx: &mut dyn Tx) -> Result<bool, StoreError> {
        let changed = tx.execute(
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
        )?;
        if changed != 1 {
            return Ok(false);
        }
        // The object's context goes into the event as JSON, as for every other change.
        let (environment, name, context, organization) = tx
            .fetch(
                "SELECT environment, name, context, organization_id FROM objects WHERE id = $1",
                args![&self.object_id],
                |row| {
                    let context = stored_context(row)?;
                    Ok((
                        row.text("environment")?,
                        row.text("name")?,
                        context,
                        row.opt_text("organization_id")?,
                    ))
                },
            )?
            .ok_or(StoreError::NotFound)?;
        let record = AuditRecord {
            environment,
            event: events::DATA_REWRAPPED.to_owned(),
            actor: self.actor,
            object: Some((self.object_id, name)),
            key_id: Some(self.key_id),
            key_context: Some(context),
            organization,
            detail: None,
            at: Timestamp::now(),
        };
        insert_audit(tx, &record)?;
        Ok(true)
    }
}

/// Inserts the object's next version (numbered after its last one, in the same statement).
pub(super) fn insert_version(
    tx: &mut dyn Tx,
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
    )?;
    Ok(())
}

//! What both engines' writers share: the audit event of a change or a read, and the counters of
//! what was committed.

use std::sync::atomic::{AtomicU64, Ordering};

use vault_crypto::KeyContext;

use super::db::{Arg, Tx, args};
use crate::ids::new_event_id;
use crate::{Actor, ObjectMeta, StoreError, Timestamp};

#[derive(Debug)]
pub(super) struct AuditRecord {
    pub(super) environment: String,
    pub(super) event: String,
    pub(super) actor: Actor,
    pub(super) object: Option<(String, String)>,
    pub(super) key_id: Option<String>,
    pub(super) key_context: Option<KeyContext>,
    /// The organization an object's event is filed under when that is not its context's
    /// (given at the object's creation): for the events filter only.
    pub(super) organization: Option<String>,
    /// Fields of the event no other column holds, as a JSON object.
    pub(super) detail: Option<String>,
    pub(super) at: Timestamp,
}

/// The columns of one `audit_events` row, in [`AUDIT_COLUMNS`] order.
macro_rules! audit_columns {
    () => {
        "event_id, environment, event, actor_id, actor_name, object_id, object_name, key_id, \
         key_context, organization_id, occurred_at, detail, filed_organization"
    };
}
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub(super) const AUDIT_COLUMNS: &str = audit_columns!();
pub(super) const AUDIT_PARAMS: usize = 13;

/// What an event's row holds beyond its record: a fresh public event id and the key context
/// as JSON.
pub(super) struct Derived {
    event_id: String,
    context: Option<String>,
}

impl AuditRecord {
    /// The event `event` about the object `meta` (or about none), at `at`.
    pub(super) fn of_object(
        event: &str,
        environment: &str,
        actor: &Actor,
        meta: Option<&ObjectMeta>,
        at: Timestamp,
    ) -> Self {
        Self {
            environment: environment.to_owned(),
            event: event.to_owned(),
            actor: actor.clone(),
            object: meta.map(|m| (m.id.clone(), m.name.clone())),
            key_id: meta.map(|m| m.key_id.clone()),
            key_context: meta.map(|m| m.context.clone()),
            organization: meta.and_then(|m| m.organization_id.clone()),
            detail: None,
            at,
        }
    }

    pub(super) fn derived(&self) -> Result<Derived, StoreError> {
        Ok(Derived {
            event_id: new_event_id(self.at)?,
            context: self.key_context.as_ref().map(KeyContext::to_json),
        })
    }

    /// The row's arguments, in [`AUDIT_COLUMNS`] order.
    pub(super) fn args<'a>(&'a self, derived: &'a Derived) -> [Arg<'a>; AUDIT_PARAMS] {
        let (object_id, object_name) = match &self.object {
            Some((id, name)) => (Some(id.as_str()), Some(name.as_str())),
            None => (None, None),
        };
        // The context's organization: where BYOK key events go. An object's own label, if
        // other, only files the event for the filter.
        let organization = self
            .key_context
            .as_ref()
            .and_then(|c| c.get("organization_id"));
        let filed = self
            .organization
            .as_deref()
            .filter(|o| Some(*o) != organization);
        *args![
            &derived.event_id,
            &self.environment,
            &self.event,
            &self.actor.id,
            &self.actor.name,
            object_id,
            object_name,
            self.key_id.as_deref(),
            derived.context.as_deref(),
            organization,
            self.at.0,
            self.detail.as_deref(),
            filed,
        ]
    }
}

/// The most events one group commit writes (and rows of one INSERT: 13 parameters each, far below
/// SQLite's and PostgreSQL's parameter limits).
pub(super) const MAX_BATCH: usize = 256;

/// What the writer committed (see [`crate::WriteStats`]).
#[derive(Debug, Default)]
pub(super) struct Counters {
    commits: AtomicU64,
    changes: AtomicU64,
    read_events: AtomicU64,
}

impl Counters {
    pub(super) fn committed(&self, changes: usize, read_events: usize) {
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.changes.fetch_add(changes as u64, Ordering::Relaxed);
        self.read_events
            .fetch_add(read_events as u64, Ordering::Relaxed);
    }

    pub(super) fn get(&self) -> crate::WriteStats {
        crate::WriteStats {
            commits: self.commits.load(Ordering::Relaxed),
            changes: self.changes.load(Ordering::Relaxed),
            read_events: self.read_events.load(Ordering::Relaxed),
        }
    }
}

/// Appends an audit event inside `tx`.
pub(super) fn audit_change(
    tx: &mut dyn Tx,
    event: &str,
    environment: &str,
    actor: &Actor,
    meta: Option<&ObjectMeta>,
    at: Timestamp,
) -> Result<(), StoreError> {
    insert_audit(
        tx,
        &AuditRecord::of_object(event, environment, actor, meta, at),
    )
}

/// Writes one audit event in `tx`.
pub(super) fn insert_audit(tx: &mut dyn Tx, r: &AuditRecord) -> Result<(), StoreError> {
    const SQL: &str = concat!(
        "INSERT INTO audit_events (",
        audit_columns!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
    );
    let derived = r.derived()?;
    tx.execute(SQL, &r.args(&derived))?;
    Ok(())
}

//! Moving house: every row of one store copied into another (SQLite into PostgreSQL), values
//! as they are (never decrypted), in batches that each commit, so an interrupted copy resumes
//! where it stopped when run again.

use super::SqlStore;
use super::db::{Arg, Backend, Columns, Tx, args};
use super::integrity::{EVERY_TABLE, any_rows};
use crate::StoreError;

#[derive(Debug, Clone, Copy)]
enum Col {
    Text,
    OptText,
    Blob,
    OptBlob,
    Int,
    OptInt,
}

struct Table {
    name: &'static str,
    /// The primary key: rows are read in its order, after the last one copied.
    key: &'static [&'static str],
    cols: &'static [(&'static str, Col)],
}

/// In dependency order (a version after its object).
const TABLES: &[Table] = &[
    Table {
        name: "objects",
        key: &["id"],
        cols: &[
            ("id", Col::Text),
            ("environment", Col::Text),
            ("name", Col::Text),
            ("context", Col::Blob),
            ("current_version", Col::Text),
            ("created_at", Col::Int),
            ("updated_at", Col::Int),
            ("deleted_at", Col::OptInt),
            ("organization_id", Col::OptText),
        ],
    },
    Table {
        name: "versions",
        key: &["object_id", "seq"],
        cols: &[
            ("object_id", Col::Text),
            ("seq", Col::Int),
            ("id", Col::Text),
            ("envelope", Col::Blob),
            ("size", Col::Int),
            ("etag", Col::Text),
            ("key_id", Col::Text),
            ("created_at", Col::Int),
            ("created_by_id", Col::Text),
            ("created_by_name", Col::Text),
        ],
    },
    Table {
        name: "api_keys",
        key: &["id"],
        cols: &[
            ("id", Col::Text),
            ("lookup", Col::Text),
            ("hash", Col::Blob),
            ("environment", Col::Text),
            ("name", Col::Text),
            ("created_at", Col::Int),
            ("revoked_at", Col::OptInt),
            ("mac", Col::OptBlob),
        ],
    },
    Table {
        name: "audit_events",
        key: &["seq"],
        cols: &[
            ("seq", Col::Int),
            ("environment", Col::Text),
            ("event", Col::Text),
            ("actor_id", Col::Text),
            ("actor_name", Col::Text),
            ("object_id", Col::OptText),
            ("object_name", Col::OptText),
            ("key_id", Col::OptText),
            ("key_context", Col::OptText),
            ("occurred_at", Col::Int),
            ("event_id", Col::OptText),
            ("organization_id", Col::OptText),
            ("detail", Col::OptText),
            ("filed_organization", Col::OptText),
        ],
    },
    Table {
        name: "issued_key_totals",
        key: &["key_id"],
        cols: &[("key_id", Col::Text), ("n", Col::Int)],
    },
    Table {
        name: "idempotent_answers",
        key: &["owner", "idem_key"],
        cols: &[
            ("owner", Col::Text),
            ("idem_key", Col::Text),
            ("request_hash", Col::Blob),
            ("status", Col::Int),
            ("body", Col::Blob),
            ("created_at", Col::Int),
            ("mac", Col::OptBlob),
        ],
    },
    // After the events: an endpoint copied first would put every copied event in its outbox
    // (the trigger), where the source's own outbox says what is still to deliver.
    Table {
        name: "webhook_endpoints",
        key: &["id"],
        cols: &[
            ("id", Col::Text),
            ("environment", Col::Text),
            ("url", Col::Text),
            ("events", Col::Text),
            ("secret", Col::Blob),
            ("secret_key_id", Col::Text),
            ("created_at", Col::Int),
            ("mac", Col::OptBlob),
        ],
    },
    Table {
        name: "byok_config",
        key: &["id"],
        cols: &[
            ("id", Col::Int),
            ("generation", Col::Int),
            ("document", Col::Text),
            ("seal", Col::Blob),
            ("seal_key_id", Col::Text),
        ],
    },
    Table {
        name: "blobs",
        key: &["id"],
        cols: &[
            ("id", Col::Text),
            ("environment", Col::Text),
            ("name", Col::Text),
            ("context", Col::Blob),
            ("head", Col::Blob),
            ("key_id", Col::Text),
            ("state", Col::Text),
            ("size", Col::OptInt),
            ("segments", Col::OptInt),
            ("created_at", Col::Int),
            ("created_by_id", Col::Text),
            ("created_by_name", Col::Text),
            ("deleted_at", Col::OptInt),
        ],
    },
    Table {
        name: "blob_segments",
        key: &["blob_id", "idx"],
        cols: &[
            ("blob_id", Col::Text),
            ("idx", Col::Int),
            ("bytes", Col::Blob),
        ],
    },
    // The record of what exists, tag and all: the target's processes check it with the same
    // integrity key (`vault store copy` seals it for the target where it is kept in a file).
    Table {
        name: "integrity",
        key: &["id"],
        cols: &[
            ("id", Col::Int),
            ("sealed_key", Col::OptBlob),
            ("sealed_by", Col::OptText),
            ("byok_generation", Col::Int),
            ("revoked_api_keys", Col::Text),
            ("deleted_webhooks", Col::Text),
            ("mac", Col::Blob),
        ],
    },
    Table {
        name: "webhook_deliveries",
        key: &["endpoint_id", "event_seq"],
        cols: &[
            ("endpoint_id", Col::Text),
            ("event_seq", Col::Int),
            ("attempts", Col::Int),
            ("next_attempt_at", Col::Int),
            ("dead", Col::Int),
            ("last_error", Col::OptText),
        ],
    },
];

/// Rows per batch (12 columns at most: 6,000 parameters, below either database's limit).
const BATCH: usize = 500;

/// Rows per batch of `table`: blob segments are up to 16 MiB each (64 KiB as the server
/// writes them), so a batch of them is a few.
fn batch_rows(table: &Table) -> usize {
    if table.name == "blob_segments" {
        8
    } else {
        BATCH
    }
}

#[derive(Debug, Clone)]
enum Val {
    Text(Option<String>),
    Blob(Option<Vec<u8>>),
    Int(Option<i64>),
}

impl Val {
    fn arg(&self) -> Arg<'_> {
        match self {
            Val::Text(t) => Arg::OptText(t.as_deref()),
            Val::Blob(b) => Arg::OptBlob(b.as_deref()),
            Val::Int(i) => Arg::OptInt(*i),
        }
    }
}

fn read(row: &dyn Columns, cols: &[(&str, Col)]) -> Result<Vec<Val>, StoreError> {
    cols.iter()
        .map(|&(name, col)| {
            Ok(match col {
                Col::Text => Val::Text(Some(row.text(name)?)),
                Col::OptText => Val::Text(row.opt_text(name)?),
                Col::Blob => Val::Blob(Some(row.blob(name)?)),
                Col::OptBlob => Val::Blob(row.opt_blob(name)?),
                Col::Int => Val::Int(Some(row.int(name)?)),
                Col::OptInt => Val::Int(row.opt_int(name)?),
            })
        })
        .collect()
}

/// What a copy did, per table: rows read from the source.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyReport {
    /// `(table, rows)` in copy order.
    pub tables: Vec<(&'static str, u64)>,
}

impl SqlStore {
    /// Whether the store holds nothing: no row in any table.
    ///
    /// # Errors
    /// `Unavailable` if the database cannot be read.
    pub async fn is_empty(&self) -> Result<bool, StoreError> {
        Ok(!self.snapshot(|tx| any_rows(tx, EVERY_TABLE)).await?)
    }

    /// Copies every object, version, API key and audit event into `target`, which must be
    /// empty or hold an unfinished copy from the source labelled `source` (then the copy
    /// resumes: rows already there are skipped). Rings are not copied here (their keys are
    /// sealed again on the way: see `vault store copy`). `progress` hears of each batch.
    ///
    /// Stop writers first: rows changed during the copy may be copied as they were.
    ///
    /// # Errors
    /// [`StoreError::Conflict`]-free: `Unavailable` for a database failure, `InvalidArgument`
    /// if the target holds other data.
    pub async fn copy_into(
        &self,
        target: &SqlStore,
        source: &str,
        mut progress: impl FnMut(&str, u64),
    ) -> Result<CopyReport, StoreError> {
        target.claim_for_copy(source).await?;
        let mut report = CopyReport::default();
        for table in TABLES {
            let mut copied = 0u64;
            let mut after: Option<Vec<Val>> = None;
            loop {
                let rows = self.read_batch(table, after.as_deref()).await?;
                let Some(last) = rows.last() else { break };
                after = Some(
                    table
                        .key
                        .iter()
                        .map(|k| {
                            let i = table.cols.iter().position(|(n, _)| n == k).unwrap_or(0);
                            last.get(i).cloned().unwrap_or(Val::Int(None))
                        })
                        .collect(),
                );
                let n = rows.len();
                target.write_batch(table, rows).await?;
                copied += n as u64;
                progress(table.name, copied);
                if n < batch_rows(table) {
                    break;
                }
            }
            report.tables.push((table.name, copied));
        }
        if target.backend() == Backend::Postgres {
            // Copied events kept their numbers; new ones continue after them.
            target
                .change(|tx: &mut dyn Tx| {
                    tx.script(
                        "SELECT setval(pg_get_serial_sequence('audit_events', 'seq'), \
                         COALESCE((SELECT MAX(seq) FROM audit_events), 0) + 1, false)",
                    )
                })
                .await?;
        }
        Ok(report)
    }

    /// Marks this store as the target of a copy from `source`, refusing if it holds data
    /// that is not from an unfinished copy of the same source.
    async fn claim_for_copy(&self, source: &str) -> Result<(), StoreError> {
        let source = source.to_owned();
        // One transaction, serialised against other copies: two cannot both claim it.
        self.change(move |tx: &mut dyn Tx| {
            if tx.backend() == Backend::Postgres {
                tx.script("SELECT pg_advisory_xact_lock(7271633)")?;
            }
            tx.script("CREATE TABLE IF NOT EXISTS vault_copy (source TEXT NOT NULL)")?;
            let claimed = tx.fetch("SELECT source FROM vault_copy LIMIT 1", &[], |r| {
                r.text("source")
            })?;
            match claimed {
                Some(s) if s == source => Ok(()),
                Some(_) => Err(StoreError::invalid(
                    "to",
                    "the target holds an unfinished copy from another store",
                )),
                None if !any_rows(tx, EVERY_TABLE)? => {
                    tx.execute(
                        "INSERT INTO vault_copy (source) VALUES ($1)",
                        args![&source],
                    )?;
                    Ok(())
                }
                None => Err(StoreError::invalid(
                    "to",
                    "the target database is not empty; copy into an empty one",
                )),
            }
        })
        .await
    }

    /// Marks a copy into this store as finished: running it again is then refused.
    ///
    /// # Errors
    /// `Unavailable` if the database cannot be written.
    pub async fn finish_copy(&self) -> Result<(), StoreError> {
        self.change(|tx: &mut dyn Tx| {
            tx.execute("DELETE FROM vault_copy", &[])?;
            Ok(())
        })
        .await
    }

    /// The next batch of `table`'s rows after the key `after`, in key order.
    async fn read_batch(
        &self,
        table: &'static Table,
        after: Option<&[Val]>,
    ) -> Result<Vec<Vec<Val>>, StoreError> {
        let cols: Vec<&str> = table.cols.iter().map(|(n, _)| *n).collect();
        let key = table.key.join(", ");
        let mut sql = format!("SELECT {} FROM {}", cols.join(", "), table.name);
        if after.is_some() {
            let params: Vec<String> = (1..=table.key.len()).map(|i| format!("${i}")).collect();
            sql.push_str(&format!(" WHERE ({key}) > ({})", params.join(", ")));
        }
        let limit = batch_rows(table);
        sql.push_str(&format!(" ORDER BY {key} LIMIT {limit}"));
        let args: Vec<Arg<'_>> = after.unwrap_or_default().iter().map(Val::arg).collect();
        self.rows(&sql, &args, |row| read(row, table.cols)).await
    }

    /// Inserts `rows` of `table`, keeping rows already there, in one transaction.
    async fn write_batch(
        &self,
        table: &'static Table,
        rows: Vec<Vec<Val>>,
    ) -> Result<(), StoreError> {
        let n = table.cols.len();
        let cols: Vec<&str> = table.cols.iter().map(|(c, _)| *c).collect();
        let overriding = if self.backend() == Backend::Postgres && table.name == "audit_events" {
            " OVERRIDING SYSTEM VALUE"
        } else {
            ""
        };
        let values: Vec<String> = (0..rows.len())
            .map(|r| {
                let ps: Vec<String> = (1..=n).map(|c| format!("${}", r * n + c)).collect();
                format!("({})", ps.join(", "))
            })
            .collect();
        // Built from this file's constants and numbered placeholders only.
        let sql = format!(
            "INSERT INTO {} ({}){overriding} VALUES {} ON CONFLICT DO NOTHING",
            table.name,
            cols.join(", "),
            values.join(", ")
        );
        self.change(move |tx: &mut dyn Tx| {
            let args: Vec<Arg<'_>> = rows.iter().flatten().map(Val::arg).collect();
            tx.execute(&sql, &args)?;
            Ok(())
        })
        .await
    }
}

//! Moving house: every row of one store copied into another (SQLite into PostgreSQL), values
//! as they are (never decrypted), in batches that each commit, so an interrupted copy resumes
//! where it stopped when run again.

use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row};

use super::{Backend, SqlStore};
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

#[derive(Debug, Clone)]
enum Val {
    Text(Option<String>),
    Blob(Option<Vec<u8>>),
    Int(Option<i64>),
}

fn read(row: &AnyRow, cols: &[(&str, Col)]) -> Result<Vec<Val>, StoreError> {
    cols.iter()
        .map(|&(name, col)| {
            Ok(match col {
                Col::Text => Val::Text(Some(row.try_get(name)?)),
                Col::OptText => Val::Text(row.try_get(name)?),
                Col::Blob => Val::Blob(Some(row.try_get(name)?)),
                Col::OptBlob => Val::Blob(row.try_get(name)?),
                Col::Int => Val::Int(Some(row.try_get(name)?)),
                Col::OptInt => Val::Int(row.try_get(name)?),
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
        let mut conn = self.pool.acquire().await?;
        self.is_empty_in(&mut conn).await
    }

    async fn is_empty_in(&self, conn: &mut sqlx::AnyConnection) -> Result<bool, StoreError> {
        Ok(!self.any_rows(conn, super::integrity::EVERY_TABLE).await?)
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
                target.write_batch(table, &rows).await?;
                copied += rows.len() as u64;
                progress(table.name, copied);
                if rows.len() < BATCH {
                    break;
                }
            }
            report.tables.push((table.name, copied));
        }
        if target.backend == Backend::Postgres {
            // Copied events kept their numbers; new ones continue after them.
            sqlx::query(
                "SELECT setval(pg_get_serial_sequence('audit_events', 'seq'), \
                 COALESCE((SELECT MAX(seq) FROM audit_events), 0) + 1, false)",
            )
            .execute(&target.pool)
            .await?;
        }
        Ok(report)
    }

    /// Marks this store as the target of a copy from `source`, refusing if it holds data
    /// that is not from an unfinished copy of the same source.
    async fn claim_for_copy(&self, source: &str) -> Result<(), StoreError> {
        // One transaction, serialised against other copies: two cannot both claim it.
        let mut tx = self.begin_write().await?;
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock(7271633)")
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("CREATE TABLE IF NOT EXISTS vault_copy (source TEXT NOT NULL)")
            .execute(&mut *tx)
            .await?;
        let claimed: Option<String> = sqlx::query_scalar("SELECT source FROM vault_copy LIMIT 1")
            .fetch_optional(&mut *tx)
            .await?;
        let empty = self.is_empty_in(&mut tx).await?;
        let outcome = match claimed {
            Some(s) if s == source => Ok(()),
            Some(_) => Err(StoreError::invalid(
                "to",
                "the target holds an unfinished copy from another store",
            )),
            None if empty => {
                sqlx::query("INSERT INTO vault_copy (source) VALUES ($1)")
                    .bind(source)
                    .execute(&mut *tx)
                    .await?;
                Ok(())
            }
            None => Err(StoreError::invalid(
                "to",
                "the target database is not empty; copy into an empty one",
            )),
        };
        if outcome.is_ok() {
            tx.commit().await?;
        }
        outcome
    }

    /// Marks a copy into this store as finished: running it again is then refused.
    ///
    /// # Errors
    /// `Unavailable` if the database cannot be written.
    pub async fn finish_copy(&self) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM vault_copy")
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn read_batch(
        &self,
        table: &Table,
        after: Option<&[Val]>,
    ) -> Result<Vec<Vec<Val>>, StoreError> {
        let cols: Vec<&str> = table.cols.iter().map(|(n, _)| *n).collect();
        let key = table.key.join(", ");
        let mut sql = format!("SELECT {} FROM {}", cols.join(", "), table.name);
        if after.is_some() {
            let params: Vec<String> = (1..=table.key.len()).map(|i| format!("${i}")).collect();
            sql.push_str(&format!(" WHERE ({key}) > ({})", params.join(", ")));
        }
        sql.push_str(&format!(" ORDER BY {key} LIMIT {BATCH}"));
        // Built from this file's constants and numbered placeholders only.
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for v in after.unwrap_or_default() {
            q = bind(q, v);
        }
        q.fetch_all(&self.pool)
            .await?
            .iter()
            .map(|row| read(row, table.cols))
            .collect()
    }

    async fn write_batch(&self, table: &Table, rows: &[Vec<Val>]) -> Result<(), StoreError> {
        let n = table.cols.len();
        let cols: Vec<&str> = table.cols.iter().map(|(c, _)| *c).collect();
        let overriding = if self.backend == Backend::Postgres && table.name == "audit_events" {
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
        let sql = format!(
            "INSERT INTO {} ({}){overriding} VALUES {} ON CONFLICT DO NOTHING",
            table.name,
            cols.join(", "),
            values.join(", ")
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for row in rows {
            for v in row {
                q = bind(q, v);
            }
        }
        let mut tx = self.begin_write().await?;
        q.execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }
}

type Query<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>;

fn bind<'q>(q: Query<'q>, v: &Val) -> Query<'q> {
    match v.clone() {
        Val::Text(t) => q.bind(t),
        Val::Blob(b) => q.bind(b),
        Val::Int(i) => q.bind(i),
    }
}

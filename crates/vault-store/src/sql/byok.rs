//! BYOK providers and rules managed at runtime, and the generation every process polls to
//! follow them. Each change bumps the generation in its own transaction.

use async_trait::async_trait;
use sqlx::Row;
use sqlx::any::AnyRow;
use vault_crypto::KeyContext;

use super::SqlStore;
use super::writer::WriteTx;
use crate::{ByokProvider, ByokRule, ByokStore, Conflict, StoreError, Timestamp};

/// The longest provider name.
const MAX_PROVIDER_NAME: usize = 64;

/// The longest provider definition (a few fields of TOML).
const MAX_DEFINITION: usize = 4096;

/// Whether `name` can name a provider: 1 to 64 ASCII letters, digits, `_` or `-` (it becomes
/// part of `VAULT_PROVIDER_<NAME>_…` and of metric labels).
pub fn is_provider_name(name: &str) -> bool {
    (1..=MAX_PROVIDER_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

async fn bump(tx: &mut WriteTx) -> Result<(), StoreError> {
    sqlx::query("UPDATE byok_state SET generation = generation + 1 WHERE id = 1")
        .execute(&mut **tx)
        .await?;
    Ok(())
}

fn rule_from_row(r: &AnyRow) -> Result<ByokRule, StoreError> {
    let matches: String = r.try_get("matches")?;
    Ok(ByokRule {
        matches: KeyContext::parse_json(matches.as_bytes()).map_err(|_| {
            StoreError::Unavailable {
                reason: "a stored BYOK rule's pairs do not parse".into(),
            }
        })?,
        provider: r.try_get("provider")?,
        verified: r.try_get::<i64, _>("verified")? != 0,
        created_at: Timestamp(r.try_get("created_at")?),
    })
}

const RULE_COLUMNS: &str = "matches, provider, verified, created_at";

#[async_trait]
impl ByokStore for SqlStore {
    async fn byok_generation(&self) -> Result<u64, StoreError> {
        let g: i64 = sqlx::query("SELECT generation FROM byok_state WHERE id = 1")
            .fetch_one(&self.pool)
            .await?
            .try_get("generation")?;
        Ok(u64::try_from(g).unwrap_or(0))
    }

    async fn byok_providers(&self) -> Result<Vec<ByokProvider>, StoreError> {
        let rows =
            sqlx::query("SELECT name, definition, created_at FROM byok_providers ORDER BY name")
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| {
                Ok(ByokProvider {
                    name: r.try_get("name")?,
                    definition: r.try_get("definition")?,
                    created_at: Timestamp(r.try_get("created_at")?),
                })
            })
            .collect()
    }

    async fn add_byok_provider(&self, provider: &ByokProvider) -> Result<(), StoreError> {
        if !is_provider_name(&provider.name) {
            return Err(StoreError::invalid(
                "name",
                "1 to 64 letters, digits, '_' or '-'",
            ));
        }
        if provider.definition.is_empty() || provider.definition.len() > MAX_DEFINITION {
            return Err(StoreError::invalid("definition", "1 to 4096 bytes"));
        }
        let mut tx = self.begin_write().await?;
        let inserted = sqlx::query(
            "INSERT INTO byok_providers (name, definition, created_at) VALUES ($1, $2, $3)",
        )
        .bind(&provider.name)
        .bind(&provider.definition)
        .bind(provider.created_at.0)
        .execute(&mut *tx)
        .await;
        if let Err(sqlx::Error::Database(e)) = &inserted
            && e.is_unique_violation()
        {
            return Err(StoreError::Conflict(Conflict::Provider));
        }
        inserted?;
        bump(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn remove_byok_provider(&self, name: &str) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let used = sqlx::query("SELECT 1 AS one FROM byok_rules WHERE provider = $1 LIMIT 1")
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?;
        if used.is_some() {
            return Err(StoreError::Conflict(Conflict::ProviderInUse));
        }
        let gone = sqlx::query("DELETE FROM byok_providers WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if gone == 0 {
            return Err(StoreError::NotFound);
        }
        bump(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn byok_rules(&self) -> Result<Vec<ByokRule>, StoreError> {
        let sql = format!("SELECT {RULE_COLUMNS} FROM byok_rules ORDER BY position");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(rule_from_row).collect()
    }

    async fn set_byok_rule(&self, rule: &ByokRule) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let defined = sqlx::query("SELECT 1 AS one FROM byok_providers WHERE name = $1")
            .bind(&rule.provider)
            .fetch_optional(&mut *tx)
            .await?;
        if defined.is_none() {
            return Err(StoreError::invalid(
                "provider",
                "no such provider: add it with `vault byok provider add` first",
            ));
        }
        let matches = rule.matches.to_json();
        let replaced = sqlx::query(
            "UPDATE byok_rules SET provider = $1, verified = $2, created_at = $3 \
             WHERE matches = $4",
        )
        .bind(&rule.provider)
        .bind(i64::from(rule.verified))
        .bind(rule.created_at.0)
        .bind(&matches)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if replaced == 0 {
            sqlx::query(
                "INSERT INTO byok_rules (matches, provider, position, verified, created_at) \
                 VALUES ($1, $2, (SELECT COALESCE(MAX(position), 0) + 1 FROM byok_rules), $3, $4)",
            )
            .bind(&matches)
            .bind(&rule.provider)
            .bind(i64::from(rule.verified))
            .bind(rule.created_at.0)
            .execute(&mut *tx)
            .await?;
        }
        bump(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn remove_byok_rule(&self, matches: &KeyContext) -> Result<ByokRule, StoreError> {
        let mut tx = self.begin_write().await?;
        let sql = format!("SELECT {RULE_COLUMNS} FROM byok_rules WHERE matches = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(matches.to_json())
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::NotFound)?;
        let rule = rule_from_row(&row)?;
        sqlx::query("DELETE FROM byok_rules WHERE matches = $1")
            .bind(matches.to_json())
            .execute(&mut *tx)
            .await?;
        bump(&mut tx).await?;
        tx.commit().await?;
        Ok(rule)
    }
}

//! The BYOK document: every runtime provider and rule in one row, sealed by the vault's own
//! key, replaced whole by compare-and-swap on its generation.

use async_trait::async_trait;

use super::SqlStore;
use super::db::{DbError, Tx, args};
use super::integrity::change_record_in;
use crate::{ByokConfig, ByokStore, Conflict, RecordChange, StoreError};

/// The longest document (a few hundred rules and providers).
const MAX_DOCUMENT: usize = 1 << 20;

/// Whether `name` can name a provider: 1 to 64 ASCII letters, digits, `_` or `-` (it becomes
/// part of `VAULT_PROVIDER_<NAME>_…` and of metric labels).
pub fn is_provider_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn generation_of(g: i64) -> u64 {
    u64::try_from(g).unwrap_or(0)
}

#[async_trait]
impl ByokStore for SqlStore {
    async fn byok_generation(&self) -> Result<u64, StoreError> {
        let generation = self
            .row(
                "SELECT generation FROM byok_config WHERE id = 1",
                &[],
                |r| r.int("generation"),
            )
            .await?;
        Ok(generation.map_or(0, generation_of))
    }

    async fn byok_config(&self) -> Result<Option<ByokConfig>, StoreError> {
        self.row(
            "SELECT generation, document, seal, seal_key_id FROM byok_config WHERE id = 1",
            &[],
            |r| {
                Ok(ByokConfig {
                    generation: generation_of(r.int("generation")?),
                    document: r.text("document")?,
                    seal: r.blob("seal")?,
                    seal_key_id: r.text("seal_key_id")?,
                })
            },
        )
        .await
    }

    async fn replace_byok_config(
        &self,
        expected_generation: u64,
        config: &ByokConfig,
        record: &RecordChange,
    ) -> Result<(), StoreError> {
        if config.document.len() > MAX_DOCUMENT {
            return Err(StoreError::invalid("document", "at most 1 MiB"));
        }
        if config.generation != expected_generation.saturating_add(1) {
            return Err(StoreError::invalid(
                "generation",
                "must be the expected generation plus one",
            ));
        }
        if record.record.byok_generation != config.generation {
            return Err(StoreError::invalid(
                "generation",
                "the integrity record must take the new generation",
            ));
        }
        let expected = i64::try_from(expected_generation)
            .map_err(|_| StoreError::invalid("generation", "out of range"))?;
        let (config, record) = (config.clone(), record.clone());
        self.change(move |tx: &mut dyn Tx| {
            let changed = if expected == 0 {
                let inserted = tx.execute(
                    "INSERT INTO byok_config (id, generation, document, seal, seal_key_id) \
                     VALUES (1, 1, $1, $2, $3)",
                    args![&config.document, &config.seal, &config.seal_key_id],
                );
                match inserted {
                    Err(DbError::Unique) => 0,
                    other => other?,
                }
            } else {
                tx.execute(
                    "UPDATE byok_config SET generation = generation + 1, document = $1, \
                     seal = $2, seal_key_id = $3 WHERE id = 1 AND generation = $4",
                    args![
                        &config.document,
                        &config.seal,
                        &config.seal_key_id,
                        expected
                    ],
                )?
            };
            if changed == 0 {
                return Err(StoreError::Conflict(Conflict::ByokChanged));
            }
            match change_record_in(tx, &record) {
                Err(StoreError::Conflict(_)) => Err(StoreError::Conflict(Conflict::ByokChanged)),
                other => other,
            }
        })
        .await
    }

    async fn reseal_byok_config(
        &self,
        old_seal: &[u8],
        new_seal: &[u8],
        seal_key_id: &str,
    ) -> Result<(), StoreError> {
        let (old_seal, new_seal, seal_key_id) =
            (old_seal.to_vec(), new_seal.to_vec(), seal_key_id.to_owned());
        self.change(move |tx: &mut dyn Tx| {
            let changed = tx.execute(
                "UPDATE byok_config SET seal = $1, seal_key_id = $2 WHERE id = 1 AND seal = $3",
                args![&new_seal, &seal_key_id, &old_seal],
            )?;
            if changed == 0 {
                return Err(StoreError::Conflict(Conflict::ByokChanged));
            }
            Ok(())
        })
        .await
    }
}

//! The key-ring file's format, version 1 (`docs/FORMAT.md` "The key-ring file"): what
//! [`RingState::encode`](super::RingState::encode) writes and `decode` reads.

use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RingFileV1 {
    pub(super) format: String,
    pub(super) name: String,
    /// Absent in files written before generations existed: 0.
    #[serde(default)]
    pub(super) generation: u64,
    pub(super) primary: u32,
    pub(super) min_decryption_version: u32,
    pub(super) versions: Vec<VersionFileV1>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct VersionFileV1 {
    pub(super) version: u32,
    pub(super) created_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) destroyed_at: Option<u64>,
}

impl Drop for VersionFileV1 {
    fn drop(&mut self) {
        if let Some(key) = &mut self.key {
            key.zeroize();
        }
    }
}

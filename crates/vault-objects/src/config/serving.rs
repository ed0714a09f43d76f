//! What `vault serve`'s background work takes from the configuration, checked.

use std::time::Duration;

use serde::Deserialize;

use super::Config;
use crate::webhooks::Settings;

/// The `[events]` table.
///
/// ```toml
/// [events]
/// retention_days = 30   # events older are purged by `vault serve` (hourly); 0 keeps them all
/// ```
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {
    /// Days an event is kept (default 30, as WorkOS); 0 for ever.
    pub retention_days: Option<u32>,
}

/// The `[objects]` table.
///
/// ```toml
/// [objects]
/// purge_deleted_after_days = 30   # deleted objects older are purged by `vault serve` (hourly); 0 never
/// ```
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectsConfig {
    /// Days a deleted object is kept, unreadable, before it and its versions are removed for
    /// good (default 30); 0 keeps them (`vault kv purge` still removes them).
    pub purge_deleted_after_days: Option<u32>,
}

/// Days within `0..=36500` as a retention: 0 is `None` (for ever), unset is `default`.
fn days(value: Option<u32>, default: u32, what: &str) -> Result<Option<u32>, String> {
    match value {
        None => Ok(Some(default)),
        Some(0) => Ok(None),
        Some(days @ 1..=36_500) => Ok(Some(days)),
        Some(_) => Err(format!("{what} must be 0 to 36500")),
    }
}

impl Config {
    /// The webhook deliverer's settings (`[webhooks]`), each within its range.
    ///
    /// # Errors
    /// The first field out of range, in words.
    pub fn webhook_settings(&self) -> Result<Settings, String> {
        let w = &self.webhooks;
        let defaults = Settings::default();
        let in_range = |v: Option<u64>, range: std::ops::RangeInclusive<u64>, what: &str| match v {
            Some(n) if !range.contains(&n) => Err(what.to_owned()),
            other => Ok(other),
        };
        Ok(Settings {
            max_attempts: match w.max_attempts {
                None => defaults.max_attempts,
                Some(n @ 1..=100) => n,
                Some(_) => return Err("[webhooks] max_attempts must be 1 to 100".into()),
            },
            retry_base: in_range(
                w.retry_base_ms,
                1..=3_600_000,
                "[webhooks] retry_base_ms must be 1 to 3600000",
            )?
            .map_or(defaults.retry_base, Duration::from_millis),
            retry_cap: in_range(
                w.retry_cap_secs,
                1..=604_800,
                "[webhooks] retry_cap_secs must be 1 to 604800",
            )?
            .map_or(defaults.retry_cap, Duration::from_secs),
            timeout: in_range(
                w.timeout_secs,
                1..=300,
                "[webhooks] timeout_secs must be 1 to 300",
            )?
            .map_or(defaults.timeout, Duration::from_secs),
            allow_link_local: w.allow_link_local,
            ..defaults
        })
    }

    /// Days an event (and an idempotent answer) is kept: 30 by default, `None` for ever
    /// (`[events] retention_days = 0`).
    ///
    /// # Errors
    /// If it is over 36500.
    pub fn retention_days(&self) -> Result<Option<u32>, String> {
        days(self.events.retention_days, 30, "[events] retention_days")
    }

    /// Days a deleted object is kept before `vault serve` purges it: 30 by default, `None` for
    /// ever (`[objects] purge_deleted_after_days = 0`).
    ///
    /// # Errors
    /// If it is over 36500.
    pub fn purge_deleted_after_days(&self) -> Result<Option<u32>, String> {
        days(
            self.objects.purge_deleted_after_days,
            30,
            "[objects] purge_deleted_after_days",
        )
    }
}

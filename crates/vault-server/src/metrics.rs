//! Prometheus text metrics: requests by route and status, a latency histogram per route, and
//! the key-provider calls the router dispatched.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use vault_objects::ProviderCalls;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

#[derive(Debug, Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Debug, Default)]
struct Inner {
    requests: BTreeMap<(String, &'static str, u16), u64>,
    latency: BTreeMap<String, Histogram>,
    /// The last live verification of each key provider, by name.
    verified: BTreeMap<String, bool>,
}

/// The server's counters. Cheap to update: one short lock per request.
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

fn method_label(method: &axum::http::Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        _ => "OTHER",
    }
}

impl Metrics {
    /// Records one finished request. `route` is the matched route template (never the raw
    /// path, which may hold an object name).
    pub fn record(&self, route: &str, method: &axum::http::Method, status: u16, took: Duration) {
        let secs = took.as_secs_f64();
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *inner
            .requests
            .entry((route.to_owned(), method_label(method), status))
            .or_default() += 1;
        let h = inner.latency.entry(route.to_owned()).or_default();
        h.count += 1;
        h.sum += secs;
        for (bound, count) in BUCKETS.iter().zip(h.counts.iter_mut()) {
            if secs <= *bound {
                *count += 1;
            }
        }
    }

    /// Records provider `name`'s last live verification (`vault_provider_verified`).
    pub fn set_provider_verified(&self, name: &str, verified: bool) {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .verified
            .insert(name.to_owned(), verified);
    }

    /// Forgets the providers not in `names` (removed at runtime).
    pub fn retain_providers(&self, names: &std::collections::BTreeSet<String>) {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .verified
            .retain(|n, _| names.contains(n));
    }

    /// The text exposition format.
    pub fn render(&self, calls: ProviderCalls, writes: vault_objects::WriteStats) -> String {
        let inner = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out = String::new();
        out.push_str(
            "# HELP vault_http_requests_total HTTP requests by route, method and status.\n",
        );
        out.push_str("# TYPE vault_http_requests_total counter\n");
        for ((route, method, status), n) in &inner.requests {
            let _ = writeln!(
                out,
                "vault_http_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}} {n}"
            );
        }
        out.push_str("# HELP vault_http_request_duration_seconds Request latency by route.\n");
        out.push_str("# TYPE vault_http_request_duration_seconds histogram\n");
        for (route, h) in &inner.latency {
            for (bound, count) in BUCKETS.iter().zip(h.counts) {
                let _ = writeln!(
                    out,
                    "vault_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {count}"
                );
            }
            let _ = writeln!(
                out,
                "vault_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "vault_http_request_duration_seconds_sum{{route=\"{route}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "vault_http_request_duration_seconds_count{{route=\"{route}\"}} {}",
                h.count
            );
        }
        out.push_str("# HELP vault_provider_calls_total Key-provider calls by operation.\n");
        out.push_str("# TYPE vault_provider_calls_total counter\n");
        for (op, n) in [
            ("data_key_for_seal", calls.seal_keys),
            ("generate_data_key", calls.generate),
            ("wrap", calls.wrap),
            ("unwrap", calls.unwrap),
        ] {
            let _ = writeln!(out, "vault_provider_calls_total{{op=\"{op}\"}} {n}");
        }
        out.push_str("# HELP vault_provider_failures_total Key-provider calls that failed.\n");
        out.push_str("# TYPE vault_provider_failures_total counter\n");
        let _ = writeln!(out, "vault_provider_failures_total {}", calls.failed);
        for (name, help, n) in [
            (
                "vault_store_commits_total",
                "Durable write transactions the store's writer committed (one fsync each on SQLite).",
                writes.commits,
            ),
            (
                "vault_store_changes_total",
                "Object changes (create, update, delete, rewrap) committed; over commits, how many shared one.",
                writes.changes,
            ),
            (
                "vault_store_read_events_total",
                "Audit events of reads committed.",
                writes.read_events,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            let _ = writeln!(out, "{name} {n}");
        }
        if !inner.verified.is_empty() {
            out.push_str(
                "# HELP vault_provider_verified Whether the key provider passed its last live verification (a data key generated, unwrapped and compared).\n",
            );
            out.push_str("# TYPE vault_provider_verified gauge\n");
            for (name, ok) in &inner.verified {
                // Provider names are [A-Za-z0-9_-]: nothing to escape.
                let _ = writeln!(
                    out,
                    "vault_provider_verified{{provider=\"{name}\"}} {}",
                    u8::from(*ok)
                );
            }
        }
        out
    }
}

//! `vault bench server`: a load run against the HTTP API on loopback. Concurrent clients send a
//! create/read/update mix of values of a fixed size for a fixed number of requests; the report
//! gives requests per second, latency percentiles, the error count, and whether every object read
//! back afterwards is intact (its value and version are the last ones its client wrote).
//!
//! Each client works on its own objects, so every update carries the `version_check` of the
//! version it last wrote and must succeed: a lost or reordered write would show up as a conflict
//! or as a wrong value in the final check.

use std::time::Instant;

use hyper::Method;
use serde::Serialize;
use serde_json::json;

use super::client::ApiClient;

mod read_back;
use read_back::read_back;

/// What to run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LoadSettings {
    /// Concurrent clients (each one request at a time, on its own connection).
    pub(crate) clients: usize,
    /// Requests in all, shared among the clients (the final read-back is not counted).
    pub(crate) requests: usize,
    /// Value size in bytes.
    pub(crate) value_bytes: usize,
}

/// Latency figures of one kind of request, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Latency {
    /// How many.
    pub(crate) count: usize,
    /// Median.
    pub(crate) p50_ms: f64,
    /// 99th percentile.
    pub(crate) p99_ms: f64,
    /// Slowest.
    pub(crate) max_ms: f64,
}

/// What a load run measured.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct LoadReport {
    /// Concurrent clients.
    pub(crate) clients: usize,
    /// Requests sent (the mix).
    pub(crate) requests: usize,
    /// Value size in bytes.
    pub(crate) value_bytes: usize,
    /// Wall time of the mix.
    pub(crate) seconds: f64,
    /// `requests / seconds`.
    pub(crate) requests_per_sec: f64,
    /// All requests.
    pub(crate) all: Latency,
    /// Creates.
    pub(crate) create: Latency,
    /// Reads by id.
    pub(crate) read: Latency,
    /// Updates with `version_check`.
    pub(crate) update: Latency,
    /// Requests that failed (transport error or a status other than the expected one), or
    /// reads that returned a value other than the last one written.
    pub(crate) errors: usize,
    /// Objects read back after the run.
    pub(crate) objects: usize,
    /// Of those, objects whose value and version were the last ones written.
    pub(crate) intact: usize,
    /// Of those, objects the read-back could not read at all (the server kept refusing or did
    /// not answer): neither intact nor shown to be lost.
    pub(crate) unread: usize,
    /// Durable commits the servers' stores made during the mix (from their `/metrics`; absent
    /// when a server does not show them to this client).
    pub(crate) commits: Option<u64>,
    /// `commits / seconds`: the fsyncs per second on SQLite.
    pub(crate) commits_per_sec: Option<f64>,
    /// Object changes committed during the mix, over `commits`: how many shared one commit.
    pub(crate) changes_per_commit: Option<f64>,
}

/// The store counters of every server, summed, from `/metrics`: `(commits, changes)`, or `None`
/// if any server does not show them.
async fn store_counters(bases: &[String], key: &str) -> Option<(u64, u64)> {
    let mut total = (0, 0);
    for base in bases {
        let client = ApiClient::new(base, key);
        let (status, _, body) = client
            .send(Method::GET, "/metrics", Vec::new(), &[])
            .await
            .ok()?;
        if status != 200 {
            return None;
        }
        let text = String::from_utf8_lossy(&body);
        let counter = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<u64>().ok())
        };
        total.0 += counter("vault_store_commits_total")?;
        total.1 += counter("vault_store_changes_total")?;
    }
    Some(total)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Create,
    Read,
    Update,
}

struct Owned {
    id: String,
    version: String,
    value: String,
}

/// A value of `len` printable bytes, different for each (client, sequence).
fn value(client: usize, seq: usize, len: usize) -> String {
    let mut state = (client as u64) << 32 ^ seq as u64 ^ 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            char::from(b'A' + u8::try_from(state % 26).unwrap_or(0))
        })
        .collect()
}

fn latency(mut micros: Vec<u64>) -> Latency {
    micros.sort_unstable();
    let at = |q: f64| {
        if micros.is_empty() {
            return 0.0;
        }
        // The index of quantile q; truncation is the rounding wanted.
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let i = ((micros.len() - 1) as f64 * q).round() as usize;
        #[allow(clippy::cast_precision_loss)]
        let ms = micros[i] as f64 / 1000.0;
        ms
    };
    Latency {
        count: micros.len(),
        p50_ms: at(0.50),
        p99_ms: at(0.99),
        max_ms: at(1.0),
    }
}

struct ClientResult {
    samples: Vec<(Op, u64)>,
    errors: usize,
    objects: Vec<Owned>,
}

async fn one_client(client: ApiClient, index: usize, requests: usize, len: usize) -> ClientResult {
    let mut out = ClientResult {
        samples: Vec::with_capacity(requests),
        errors: 0,
        objects: Vec::new(),
    };
    for seq in 0..requests {
        // 20% creates, 60% reads, 20% updates; a client creates before anything else.
        let op = match seq % 10 {
            _ if out.objects.is_empty() => Op::Create,
            0 | 5 => Op::Create,
            3 | 8 => Op::Update,
            _ => Op::Read,
        };
        let started = Instant::now();
        let ok = match op {
            Op::Create => {
                let v = value(index, seq, len);
                let body = json!({
                    "name": format!("load-{index}-{seq}"),
                    "value": v,
                    "key_context": {"organization_id": format!("org_{}", index % 8)},
                });
                match client.call(Method::POST, "/vault/v1/kv", Some(&body)).await {
                    Ok((201, meta)) => {
                        out.objects.push(Owned {
                            id: meta["id"].as_str().unwrap_or_default().to_owned(),
                            version: meta["version_id"].as_str().unwrap_or_default().to_owned(),
                            value: v,
                        });
                        true
                    }
                    _ => false,
                }
            }
            Op::Read => {
                let o = &out.objects[seq % out.objects.len()];
                match client
                    .call(Method::GET, &format!("/vault/v1/kv/{}", o.id), None)
                    .await
                {
                    Ok((200, obj)) => obj["value"] == o.value.as_str(),
                    _ => false,
                }
            }
            Op::Update => {
                let n = out.objects.len();
                let o = &mut out.objects[seq % n];
                let v = value(index, seq, len);
                let body = json!({"value": v, "version_check": o.version});
                match client
                    .call(Method::PUT, &format!("/vault/v1/kv/{}", o.id), Some(&body))
                    .await
                {
                    Ok((200, obj)) => {
                        o.version = obj["metadata"]["version_id"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned();
                        o.value = v;
                        true
                    }
                    _ => false,
                }
            }
        };
        let took = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        out.samples.push((op, took));
        if !ok {
            out.errors += 1;
        }
    }
    out
}

/// The replica of client `index`.
fn replica(bases: &[String], index: usize) -> &str {
    bases
        .get(index % bases.len().max(1))
        .map_or("http://127.0.0.1:8080", String::as_str)
}

/// Runs the mix against `bases` with `key` (client `i` on replica `i mod n`), then reads
/// every object back, through the next replica from the one that wrote it.
///
/// # Errors
/// If a client task fails to run (a bug, not a request error: those are counted).
pub(crate) async fn run(
    bases: &[String],
    key: &str,
    settings: LoadSettings,
) -> Result<LoadReport, String> {
    let clients = settings.clients.max(1);
    let per_client = settings.requests / clients;
    let counted = store_counters(bases, key).await;
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(clients);
    for index in 0..clients {
        let client = ApiClient::new(replica(bases, index), key);
        tasks.push(tokio::spawn(one_client(
            client,
            index,
            per_client,
            settings.value_bytes,
        )));
    }
    let mut results = Vec::with_capacity(clients);
    for t in tasks {
        results.push(t.await.map_err(|e| format!("a client task failed: {e}"))?);
    }
    let elapsed = started.elapsed();
    let writes = match (counted, store_counters(bases, key).await) {
        (Some(before), Some(after)) => Some((after.0 - before.0, after.1 - before.1)),
        _ => None,
    };

    let (intact, unread) = read_back(bases, key, clients, &results).await;
    let objects = results.iter().map(|r| r.objects.len()).sum();

    let pick = |op: Op| -> Vec<u64> {
        results
            .iter()
            .flat_map(|r| r.samples.iter())
            .filter(|(o, _)| *o == op)
            .map(|&(_, t)| t)
            .collect()
    };
    let all: Vec<u64> = results
        .iter()
        .flat_map(|r| r.samples.iter().map(|&(_, t)| t))
        .collect();
    let requests = all.len();
    let seconds = elapsed.as_secs_f64();
    #[allow(clippy::cast_precision_loss)]
    let requests_per_sec = requests as f64 / seconds.max(f64::EPSILON);
    Ok(LoadReport {
        clients,
        requests,
        value_bytes: settings.value_bytes,
        seconds,
        requests_per_sec,
        all: latency(all),
        create: latency(pick(Op::Create)),
        read: latency(pick(Op::Read)),
        update: latency(pick(Op::Update)),
        errors: results.iter().map(|r| r.errors).sum(),
        objects,
        intact,
        unread,
        commits: writes.map(|(commits, _)| commits),
        commits_per_sec: writes.map(|(commits, _)| commits as f64 / seconds.max(f64::EPSILON)),
        changes_per_commit: writes
            .map(|(commits, changes)| changes as f64 / (commits as f64).max(1.0)),
    })
}

/// The report as a table.
pub(crate) fn table(r: &LoadReport) -> String {
    let mut out = format!(
        "{} clients, {} requests of {}-byte values in {:.2} s: {:.0} requests/s, {} errors; \
         {} of {} objects intact on read-back ({} could not be read)\n\n",
        r.clients,
        r.requests,
        r.value_bytes,
        r.seconds,
        r.requests_per_sec,
        r.errors,
        r.intact,
        r.objects,
        r.unread
    );
    if let (Some(commits), Some(rate), Some(shared)) =
        (r.commits, r.commits_per_sec, r.changes_per_commit)
    {
        out.push_str(&format!(
            "durable commits: {commits} ({rate:.0}/s), {shared:.1} changes per commit\n\n"
        ));
    }
    out.push_str("request   count    p50 ms    p99 ms    max ms\n");
    for (name, l) in [
        ("all", &r.all),
        ("create", &r.create),
        ("read", &r.read),
        ("update", &r.update),
    ] {
        out.push_str(&format!(
            "{name:<8} {:>6} {:>9.2} {:>9.2} {:>9.2}\n",
            l.count, l.p50_ms, l.p99_ms, l.max_ms
        ));
    }
    out
}

/// Starts the API on a free loopback port over the embedded default in `data_dir`, with a fresh
/// API key; returns the base URL, the key, and a handle that stops the server when dropped.
///
/// # Errors
/// If the store, the keys or the socket cannot be opened.
pub(crate) async fn start_local_server(
    data_dir: &std::path::Path,
) -> Result<(String, String, LocalServer), vault::VaultError> {
    let vault = vault::open_embedded(data_dir).await?;
    let key = vault::server::auth::create(&vault.api_keys(), "bench", "bench").await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|_| vault::objects::StoreError::Unavailable {
            reason: "cannot bind a loopback port".into(),
        })?;
    let addr = listener
        .local_addr()
        .map_err(|_| vault::objects::StoreError::Unavailable {
            reason: "no local address".into(),
        })?;
    let app = vault::server::app(vault::server::AppState::new(
        vault,
        vault::server::Limits::default(),
    ));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(vault::server::serve(
        listener,
        app,
        vault::server::Listening::default(),
        async move {
            let _ = stopped.await;
        },
    ));
    Ok((
        format!("http://{addr}"),
        key.expose_secret().to_owned(),
        LocalServer {
            stop: Some(stop),
            task,
        },
    ))
}

/// A server started by [`start_local_server`]; stops it when dropped.
#[derive(Debug)]
pub(crate) struct LocalServer {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl LocalServer {
    /// Stops the server and waits for requests in flight to finish.
    pub(crate) async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_wrong_key_is_counted_as_errors() {
        let dir = tempfile::tempdir().unwrap();
        let (base, _key, server) = start_local_server(dir.path()).await.unwrap();
        let forged = format!("sk_{}", "Q".repeat(43));
        let report = run(
            &[base],
            &forged,
            LoadSettings {
                clients: 2,
                requests: 20,
                value_bytes: 16,
            },
        )
        .await
        .unwrap();
        server.shutdown().await;
        assert_eq!(report.errors, 20, "every request was refused: {report:?}");
        assert_eq!(report.objects, 0);
    }
}

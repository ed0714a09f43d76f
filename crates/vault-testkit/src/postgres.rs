//! A PostgreSQL database of a test's own on the cluster `scripts/test` starts.

/// Creates an empty database named after `label`, this process and the time, on the server of
/// `url` (`VAULT_TEST_POSTGRES_URL`); returns its URL.
///
/// # Panics
/// If the server cannot be reached or the database created (a failed test).
pub async fn fresh_database(url: &str, label: &str) -> String {
    sqlx::any::install_default_drivers();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let name = format!("{label}_{}_{nanos}", std::process::id());
    let pool = sqlx::AnyPool::connect(url)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at the test URL: {e}"));
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&pool)
        .await
        .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
    pool.close().await;
    let server = url.rsplit_once('/').map_or(url, |(s, _)| s);
    format!("{server}/{name}")
}

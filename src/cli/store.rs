//! `vault store copy`: moving house from the embedded store into PostgreSQL.

use vault::config::Config;
use vault::objects::admin::copy_store;

use super::exit::Failure;
use super::terminal::progress_bar;

pub(crate) async fn copy(
    deployment: &vault::Deployment,
    config: &Config,
    to: &str,
) -> Result<(), Failure> {
    let bar = progress_bar(None);
    // The target's password comes from VAULT_TARGET_PASSWORD or its URL, never the source's
    // password file.
    let report = copy_store(
        deployment,
        config,
        to,
        std::env::var("VAULT_TARGET_PASSWORD").ok(),
        |table, n| {
            bar.set_message(format!("{table}: {n} rows"));
            bar.tick();
        },
    )
    .await;
    bar.finish_and_clear();
    let report = report?;
    for (table, n) in &report.tables {
        println!("{table}: {n} rows");
    }
    println!(
        "integrity key {}: sealed for the target",
        report.integrity_key
    );
    for (ring, copied) in &report.rings {
        match copied {
            Some((generation, seal)) => {
                println!("ring {ring}: generation {generation}, sealed with {seal}");
            }
            None => println!("ring {ring}: already copied"),
        }
    }
    println!(
        "copied into {}; point every process at it with --database-url",
        report.target
    );
    eprintln!(
        "vault: the source ({}) and its ring are left as they were: write nothing more there; delete them (the ring file holds root keys unsealed) once the copy is checked",
        deployment.describe()
    );
    Ok(())
}

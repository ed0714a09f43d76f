//! A multi-tenant service that keeps card numbers encrypted in its own table, with
//! `vault-crypto` alone: each row sealed for its tenant's context and bound to its row id, read
//! back only as the tenant that asks, then a key rotation with every row rewrapped in place
//! and the old key version destroyed.
//!
//! `cargo run -p vault-crypto --example tenant_rows`

use std::collections::BTreeMap;
use std::error::Error as StdError;

use vault_crypto::{Aad, Error, KeyContext, ManagedKeyProvider, Rewrapped, Sealed};

/// The service's table: row id to (tenant, sealed card number).
type Table = BTreeMap<String, (String, Sealed)>;

fn tenant(org: &str) -> Result<KeyContext, Error> {
    Ok(KeyContext::from_pairs([("organization_id", org)])?)
}

/// Stores a card for `org` under `id`: the row id is the associated data, so the sealed bytes
/// open only in this row.
async fn store(
    keys: &ManagedKeyProvider,
    table: &mut Table,
    org: &str,
    id: &str,
    card: &str,
) -> Result<(), Error> {
    let sealed = vault_crypto::seal(
        keys,
        &tenant(org)?,
        card.as_bytes(),
        Aad::new(id.as_bytes()),
    )
    .await?;
    table.insert(id.to_owned(), (org.to_owned(), sealed));
    Ok(())
}

/// Reads a card as `org`: whatever the row says about its tenant, the envelope must carry
/// `org`'s context.
async fn read(
    keys: &ManagedKeyProvider,
    table: &Table,
    org: &str,
    id: &str,
) -> Result<String, Error> {
    let (_, sealed) = table.get(id).ok_or(Error::DecryptionFailed)?;
    let opened = vault_crypto::open(keys, sealed, &tenant(org)?, Aad::new(id.as_bytes())).await?;
    Ok(String::from_utf8_lossy(opened.plaintext()).into_owned())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn StdError>> {
    let keys = ManagedKeyProvider::in_memory("cards")?;
    let mut table = Table::new();
    store(
        &keys,
        &mut table,
        "org_acme",
        "card-1",
        "4111 1111 1111 1111",
    )
    .await?;
    store(
        &keys,
        &mut table,
        "org_acme",
        "card-2",
        "5500 0000 0000 0004",
    )
    .await?;
    store(
        &keys,
        &mut table,
        "org_globex",
        "card-3",
        "3400 0000 0000 009",
    )
    .await?;
    println!(
        "stored {} rows under {}",
        table.len(),
        table["card-1"].1.key_ref()
    );

    let card = read(&keys, &table, "org_acme", "card-1").await?;
    assert_eq!(card, "4111 1111 1111 1111");
    println!("org_acme reads card-1: {card}");

    // Globex asks for Acme's row: refused before any key is touched.
    let Err(refused) = read(&keys, &table, "org_globex", "card-1").await else {
        return Err("org_globex read org_acme's card".into());
    };
    assert!(matches!(refused, Error::ContextMismatch));
    println!("org_globex reads card-1: {refused}");

    // Someone with write access to the table copies Globex's card into one of Acme's rows.
    let stolen = table["card-3"].1.clone();
    table.insert("card-2".into(), ("org_acme".into(), stolen));
    let Err(refused) = read(&keys, &table, "org_acme", "card-2").await else {
        return Err("org_acme read org_globex's card".into());
    };
    assert!(matches!(refused, Error::ContextMismatch));
    println!("org_acme reads a row copied from org_globex: {refused}");
    store(
        &keys,
        &mut table,
        "org_acme",
        "card-2",
        "5500 0000 0000 0004",
    )
    .await?;

    // Rotate, rewrap every row in place, then destroy the old version.
    let version = keys.rotate().await?;
    let mut moved = 0;
    for (org, sealed) in table.values_mut() {
        if let Rewrapped::Moved(new) = vault_crypto::rewrap(&keys, sealed, &tenant(org)?).await? {
            *sealed = new;
            moved += 1;
        }
    }
    assert_eq!(moved, table.len());
    keys.destroy(version - 1).await?;
    println!(
        "rotated to v{version}, rewrapped {moved} rows, destroyed v{}",
        version - 1
    );
    for (id, (org, sealed)) in &table {
        assert_eq!(sealed.key_ref().version(), format!("v{version}"));
        let card = read(&keys, &table, org, id).await?;
        println!("{org} reads {id}: {card}");
    }
    Ok(())
}

use super::*;

const GOOD: &str = r#"
default = "managed"

[providers.managed]
type = "managed"

[providers.acme]
type = "aws-kms"
key_id = "alias/acme"
region = "us-east-1"
cache = { max_age_secs = 60 }

[[rules]]
match = { organization_id = "org_acme" }
provider = "acme"
"#;

/// Unsigned RSA wraps of an Azure key are counted (stored and issued); signed ones, other
/// keys and A256KW keys are not.
#[test]
fn unsigned_azure_wraps_are_counted_per_provider() {
    let c = Config::parse(
        r#"
[providers.managed]
type = "managed"

[providers.initech]
type = "azure-kv"
vault_url = "https://initech.vault.azure.net/"
key_name = "cmk"

[providers.hsm]
type = "azure-kv"
vault_url = "https://hsm.managedhsm.azure.net/"
key_name = "aes"
algorithm = "A256KW"
"#,
        |_| None,
    )
    .unwrap();
    let usage = |key: &str, stored, issued| {
        let mut u = vault_store::KeyUsage::new(key);
        u.stored_versions = stored;
        u.issued_data_keys = issued;
        u
    };
    let found = c.unsigned_azure_wraps(&[
        usage("azure-kv://initech.vault.azure.net/cmk#v1", 3, 1),
        usage("azure-kv://initech.vault.azure.net/cmk#v2", 2, 0),
        usage("azure-kv://initech.vault.azure.net/cmk#v2+rs256", 40, 5),
        usage("azure-kv://initech.vault.azure.net/cmk-other#v1", 7, 7),
        usage("azure-kv://hsm.managedhsm.azure.net/aes#v1", 9, 9),
        usage("managed://root#v1", 100, 100),
    ]);
    assert_eq!(found, vec![("initech".to_owned(), 5, 1)]);
}

#[test]
fn a_good_file_parses_and_env_overrides_apply() {
    let c = Config::parse(GOOD, |k| {
        (k == "VAULT_PROVIDER_ACME_ENDPOINT_URL").then(|| "http://127.0.0.1:9".to_owned())
    })
    .unwrap();
    assert_eq!(c.rules.len(), 1);
    match c.providers["acme"].get_ref() {
        ProviderConfig::AwsKms {
            endpoint_url,
            cache,
            ..
        } => {
            assert_eq!(endpoint_url.as_deref(), Some("http://127.0.0.1:9"));
            assert_eq!(cache.limits().unwrap().max_age, Duration::from_secs(60));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn every_problem_is_reported_with_its_line() {
    let bad = r#"default = "nowhere"

[providers.acme]
type = "aws-kms"
key_id = ""

[[rules]]
match = { organization_id = "org_acme", "" = "x" }
provider = "acme"

[[rules]]
match = { organization_id = "org_b" }
provider = "missing"
"#;
    let problems = Config::parse(bad, |_| None).unwrap_err();
    let lines: Vec<usize> = problems.iter().map(|p| p.line).collect();
    assert_eq!(lines, [3, 1, 7, 13], "{problems:?}");
    assert!(problems[0].message.contains("key_id is empty"));
    assert!(problems[1].message.contains("\"nowhere\""));
    assert!(problems[2].message.contains("empty"));
    assert!(problems[3].message.contains("\"missing\""));
}

#[test]
fn gcp_providers_are_checked() {
    let text = "[providers.managed]\ntype = \"managed\"\n[providers.g]\ntype = \"gcp-kms\"\nkey_name = \"projects/p/keyRings/r\"\n";
    let p = Config::parse(text, |_| None).unwrap_err();
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].line, 3);
    assert!(p[0].message.contains("key_name must be"));
    let ok = text.replace(
        "projects/p/keyRings/r",
        "projects/p/locations/l/keyRings/r/cryptoKeys/k",
    );
    assert!(Config::parse(&ok, |_| None).is_ok());
}

#[test]
fn azure_providers_are_checked_and_overridden() {
    let text = "[providers.managed]\ntype = \"managed\"\n\n[providers.z]\ntype = \"azure-kv\"\nvault_url = \"http://v.vault.azure.net/\"\nkey_name = \"bad/name\"\nalgorithm = \"RSA1_5\"\ncredential = \"password\"\n";
    let p = Config::parse(text, |_| None).unwrap_err();
    assert_eq!(p.len(), 4, "{p:?}");
    assert!(p.iter().all(|p| p.line == 4), "{p:?}");
    assert!(p[0].message.contains("vault_url must be https"));
    assert!(p[1].message.contains("key_name"));
    assert!(p[2].message.contains("algorithm"));
    assert!(p[3].message.contains("credential"));
    let fixed = Config::parse(text, |k| match k {
        "VAULT_PROVIDER_Z_VAULT_URL" => Some("https://v.vault.azure.net/".into()),
        "VAULT_PROVIDER_Z_KEY_NAME" => Some("cmk-1".into()),
        "VAULT_PROVIDER_Z_CREDENTIAL" => Some("azure-cli".into()),
        _ => None,
    });
    let ok = text.replace("algorithm = \"RSA1_5\"\n", "");
    let fixed_ok = Config::parse(&ok, |k| match k {
        "VAULT_PROVIDER_Z_VAULT_URL" => Some("https://v.vault.azure.net/".into()),
        "VAULT_PROVIDER_Z_KEY_NAME" => Some("cmk-1".into()),
        "VAULT_PROVIDER_Z_CREDENTIAL" => Some("azure-cli".into()),
        _ => None,
    })
    .unwrap();
    assert_eq!(fixed.unwrap_err().len(), 1, "only the algorithm is left");
    let ProviderConfig::AzureKv {
        key_name,
        credential,
        ..
    } = fixed_ok.providers["z"].get_ref()
    else {
        panic!("not azure");
    };
    assert_eq!(
        (key_name.as_str(), credential.as_deref()),
        ("cmk-1", Some("azure-cli"))
    );
}

#[test]
fn syntax_and_unknown_fields_are_reported_with_their_line() {
    let p = Config::parse(
        "default = \"managed\"\n[providers.m]\ntype = \"managed\"\nrng = \"x\"\n",
        |_| None,
    )
    .unwrap_err();
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].line, 2, "{p:?}");
    let p = Config::parse("default = \n", |_| None).unwrap_err();
    assert_eq!(p[0].line, 1, "{p:?}");
}

/// A file of server settings alone keeps the managed provider a deployment without a file
/// has; its settings are checked.
#[test]
fn a_file_of_settings_alone_keeps_the_managed_default() {
    let c = Config::parse(
        "[objects]\npurge_deleted_after_days = 7\n\n[events]\nretention_days = 0\n",
        |_| None,
    )
    .unwrap();
    assert_eq!(c.default.get_ref(), "managed");
    assert!(c.has_managed_provider());
    assert_eq!(c.purge_deleted_after_days(), Ok(Some(7)));
    assert_eq!(c.retention_days(), Ok(None));
    assert_eq!(Config::embedded().purge_deleted_after_days(), Ok(Some(30)));
    let off = Config::parse("[objects]\npurge_deleted_after_days = 0\n", |_| None).unwrap();
    assert_eq!(off.purge_deleted_after_days(), Ok(None));
    let far = Config::parse("[objects]\npurge_deleted_after_days = 36501\n", |_| None).unwrap();
    assert!(far.purge_deleted_after_days().is_err());
    // A default named explicitly must still be defined, and a file with providers names its
    // default.
    assert!(Config::parse("default = \"managed\"\n", |_| None).is_err());
    let forgot = "[providers.acme]\ntype = \"aws-kms\"\nkey_id = \"alias/acme\"\n";
    assert!(Config::parse(forgot, |_| None).is_err());
}

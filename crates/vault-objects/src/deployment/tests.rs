use super::*;

#[test]
fn a_password_is_set_encoded_and_never_shown() {
    let url = with_password("postgres://vault@db:5432/v?sslmode=require", "p@ss:w/rd").unwrap();
    assert_eq!(
        url,
        "postgres://vault:p%40ss%3Aw%2Frd@db:5432/v?sslmode=require"
    );
    assert!(with_password("postgres://db/v", "x").is_err());
    assert!(with_password("postgres://u:p@db/v", "x").is_err());
    let config = Config::parse(
        "seal = \"file:/k\"\n[providers.managed]\ntype = \"managed\"\n",
        |_| None,
    )
    .unwrap();
    let d = Deployment::resolve(
        Path::new("d"),
        Some("postgres://vault@db:5432/v".into()),
        None,
        Some("secret-pw".into()),
        &config,
    )
    .unwrap();
    assert_eq!(d.describe(), "PostgreSQL db:5432/v");
    let query = Deployment::resolve(
        Path::new("d"),
        Some("postgres://db/v?user=u&password=p@ss".into()),
        None,
        None,
        &config,
    )
    .unwrap();
    assert_eq!(query.describe(), "PostgreSQL db/v");
    let raw = Deployment::resolve(
        Path::new("d"),
        Some("postgres://u:s3cr/e?t@h/db".into()),
        None,
        None,
        &config,
    )
    .unwrap();
    assert!(!raw.describe().contains("s3cr"), "{}", raw.describe());
    assert!(!format!("{d:?}").contains("secret-pw"));
    assert!(d.rings_in_database());
}

#[test]
fn a_database_ring_needs_a_seal() {
    let config = Config::embedded();
    let err = Deployment::resolve(
        Path::new("d"),
        Some("postgres://u@h/v".into()),
        None,
        None,
        &config,
    )
    .unwrap_err();
    assert!(err.contains("--seal"), "{err}");
    let err = Deployment::resolve(Path::new("d"), None, Some("nowhere".into()), None, &config)
        .unwrap_err();
    assert!(err.contains("nowhere"), "{err}");
    let d = Deployment::resolve(Path::new("d"), None, None, None, &config).unwrap();
    assert!(!d.rings_in_database() && !d.is_postgres());
    // Managed rings that only rules use need a seal too.
    let byok_default = Config::parse(
        "default = \"kms\"\n[providers.kms]\ntype = \"aws-kms\"\nkey_id = \"alias/k\"\n\
         [providers.a]\ntype = \"managed\"\nring = \"a\"\n[providers.b]\ntype = \"managed\"\nring = \"b\"\n\
         [[rules]]\nmatch = { organization_id = \"o\" }\nprovider = \"a\"\n",
        |_| None,
    )
    .unwrap();
    let err = Deployment::resolve(
        Path::new("d"),
        Some("postgres://u@h/v".into()),
        None,
        None,
        &byok_default,
    )
    .unwrap_err();
    assert!(err.contains("--seal"), "{err}");
}

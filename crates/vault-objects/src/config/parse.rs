//! Reading `vault.toml`: strict TOML, environment overrides, and every problem reported with
//! its line.

use vault_crypto::KeyContext;

use super::{Config, Problem, ProviderConfig};

impl Config {
    /// Parses and checks `text`, applying environment overrides from `env`. Every problem is
    /// reported with its line, not only the first.
    ///
    /// # Errors
    /// The list of problems.
    pub fn parse(text: &str, env: impl Fn(&str) -> Option<String>) -> Result<Self, Vec<Problem>> {
        let mut config: Self = toml::from_str(text).map_err(|e| {
            vec![Problem {
                line: e.span().map_or(0, |s| line_of(text, s.start)),
                message: e.message().to_owned(),
            }]
        })?;
        let mut problems = Vec::new();
        for (name, provider) in &mut config.providers {
            let span = provider.span();
            let line = line_of(text, span.start);
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                problems.push(Problem {
                    line,
                    message: format!("provider name {name:?} must be of [A-Za-z0-9_-]"),
                });
            }
            let over = |field: &str| {
                env(&format!(
                    "VAULT_PROVIDER_{}_{}",
                    name.to_uppercase().replace('-', "_"),
                    field
                ))
            };
            match provider.get_mut() {
                ProviderConfig::Managed {
                    ring,
                    check_interval_ms,
                } => {
                    replace(ring, over("RING"));
                    let max = vault_crypto::managed::MAX_CHECK_INTERVAL.as_millis();
                    if check_interval_ms.is_some_and(|ms| u128::from(ms) > max) {
                        problems.push(Problem {
                            line,
                            message: format!(
                                "provider {name:?}: check_interval_ms must be at most {max}"
                            ),
                        });
                    }
                }
                ProviderConfig::AwsKms {
                    key_id,
                    region,
                    endpoint_url,
                    ..
                } => {
                    replace(key_id, over("KEY_ID"));
                    replace_opt(region, over("REGION"));
                    replace_opt(endpoint_url, over("ENDPOINT_URL"));
                    if key_id.is_empty() {
                        problems.push(Problem {
                            line,
                            message: format!("provider {name:?}: key_id is empty"),
                        });
                    }
                }
                ProviderConfig::GcpKms {
                    key_name,
                    endpoint_url,
                    ..
                } => {
                    replace(key_name, over("KEY_NAME"));
                    replace_opt(endpoint_url, over("ENDPOINT_URL"));
                    #[cfg(feature = "gcp")]
                    if let Err(e) = key_name.parse::<vault_kms_gcp::KeyName>() {
                        problems.push(Problem {
                            line,
                            message: format!("provider {name:?}: {e}"),
                        });
                    }
                }
                ProviderConfig::AzureKv {
                    vault_url,
                    key_name,
                    key_version,
                    algorithm,
                    credential,
                    ..
                } => {
                    replace(vault_url, over("VAULT_URL"));
                    replace(key_name, over("KEY_NAME"));
                    replace_opt(key_version, over("KEY_VERSION"));
                    replace_opt(credential, over("CREDENTIAL"));
                    // Checked only where the Azure provider is built in.
                    #[cfg(not(feature = "azure"))]
                    let _ = algorithm;
                    #[cfg(feature = "azure")]
                    {
                        use vault_kms_azure::{CredentialSource, KeyLocation, WrapAlgorithm};
                        let location =
                            KeyLocation::problems(vault_url, key_name, key_version.as_deref());
                        let checks = [
                            algorithm
                                .as_deref()
                                .and_then(|a| a.parse::<WrapAlgorithm>().err()),
                            credential
                                .as_deref()
                                .and_then(|c| c.parse::<CredentialSource>().err()),
                        ];
                        for e in location.into_iter().chain(checks.into_iter().flatten()) {
                            problems.push(Problem {
                                line,
                                message: format!("provider {name:?}: {e}"),
                            });
                        }
                    }
                }
            }
        }
        // A file of settings alone (`[objects]`, `[events]`: no provider, no rule, no default)
        // keeps the managed provider a deployment without a file has. One that defines
        // providers must name its default: a forgotten `default = "aws"` is not a local ring.
        if config.default.span() == (0..0) && config.providers.is_empty() && config.rules.is_empty()
        {
            config.providers.insert(
                "managed".to_owned(),
                toml::Spanned::new(
                    0..0,
                    ProviderConfig::Managed {
                        ring: super::MANAGED_RING.to_owned(),
                        check_interval_ms: None,
                    },
                ),
            );
        }
        if !config.providers.contains_key(config.default.get_ref()) {
            problems.push(Problem {
                line: line_of(text, config.default.span().start),
                message: format!(
                    "default provider {:?} is not defined",
                    config.default.get_ref()
                ),
            });
        }
        for rule in &config.rules {
            let line = line_of(text, rule.span().start);
            let r = rule.get_ref();
            if let Err(e) = KeyContext::from_pairs(r.matches.clone()) {
                problems.push(Problem {
                    line,
                    message: format!("rule match: {e}"),
                });
            }
            if !config.providers.contains_key(r.provider.get_ref()) {
                problems.push(Problem {
                    line: line_of(text, r.provider.span().start),
                    message: format!("rule provider {:?} is not defined", r.provider.get_ref()),
                });
            }
        }
        if let Some(listen) = &config.server.listen
            && listen.parse::<std::net::SocketAddr>().is_err()
        {
            problems.push(Problem {
                line: 0,
                message: format!(
                    "server.listen {listen:?} is not an address such as 127.0.0.1:8080"
                ),
            });
        }
        if let Some(seal) = &config.seal
            && let Err(message) = config.check_seal(seal)
        {
            problems.push(Problem { line: 0, message });
        }
        if let Some(url) = &config.store.url
            && !url.0.starts_with("postgres://")
            && !url.0.starts_with("postgresql://")
        {
            problems.push(Problem {
                line: 0,
                message: "store.url must be a postgres:// URL (SQLite is the default, in the data directory)".into(),
            });
        }
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(problems)
        }
    }
}

pub(super) fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset)
        .map_or(0, |t| t.matches('\n').count() + 1)
}

/// An environment override of a required field.
fn replace(field: &mut String, value: Option<String>) {
    if let Some(v) = value {
        *field = v;
    }
}

/// An environment override of an optional field.
fn replace_opt(field: &mut Option<String>, value: Option<String>) {
    if value.is_some() {
        *field = value;
    }
}

impl Config {
    /// Whether `seal` names something that can seal: `file:<path>`, or a KMS provider of this
    /// configuration (a managed ring cannot seal another's root keys).
    ///
    /// # Errors
    /// Why it cannot.
    pub fn check_seal(&self, seal: &str) -> Result<(), String> {
        if let Some(path) = seal.strip_prefix("file:") {
            return if path.is_empty() {
                Err("seal \"file:\" needs the master key file's path".into())
            } else {
                Ok(())
            };
        }
        match self.providers.get(seal).map(toml::Spanned::get_ref) {
            Some(ProviderConfig::Managed { .. }) => Err(format!(
                "seal {seal:?} is a managed provider; a seal is a KMS provider or file:/path/master.key"
            )),
            Some(_)
                if self.default.get_ref() == seal
                    || self
                        .rules
                        .iter()
                        .any(|r| r.get_ref().provider.get_ref() == seal) =>
            {
                Err(format!(
                    "seal {seal:?} is also the default or a rule's provider: the key that seals the ring must serve nothing else (a caller given data keys under it could forge a sealed root key)"
                ))
            }
            Some(_) => Ok(()),
            None => Err(format!(
                "seal {seal:?} is neither file:/path/master.key nor a provider of the configuration"
            )),
        }
    }
}

//! TLS for `vault serve`: rustls on aws-lc-rs, certificates reloaded on SIGHUP.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// A certificate chain and private key from PEM files, reloadable while serving: connections
/// accepted after a [`reload`](Self::reload) get the new certificate, established ones keep
/// theirs.
pub struct Tls {
    cert: PathBuf,
    key: PathBuf,
    config: RwLock<Arc<rustls::ServerConfig>>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Loads the certificate chain `cert` and the private key `key` (PEM files).
    ///
    /// # Errors
    /// An I/O error naming the file that is missing, unreadable or not what it should be
    /// (never its contents).
    pub fn load(cert: &Path, key: &Path) -> io::Result<Arc<Self>> {
        let config = server_config(cert, key)?;
        Ok(Arc::new(Self {
            cert: cert.to_owned(),
            key: key.to_owned(),
            config: RwLock::new(config),
        }))
    }

    /// Reads the files again and uses them for new connections; on an error the current
    /// certificate stays.
    ///
    /// # Errors
    /// As [`load`](Self::load).
    pub fn reload(&self) -> io::Result<()> {
        let config = server_config(&self.cert, &self.key)?;
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = config;
        Ok(())
    }

    pub(super) fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let config = self.config.read().unwrap_or_else(|e| e.into_inner());
        tokio_rustls::TlsAcceptor::from(Arc::clone(&config))
    }
}

pub(super) fn server_config(cert: &Path, key: &Path) -> io::Result<Arc<rustls::ServerConfig>> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |path: &Path, what: &str| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {what}", path.display()),
        )
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|_| bad(cert, "cannot read a PEM certificate chain"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| bad(cert, "not a PEM certificate chain"))?;
    if chain.is_empty() {
        return Err(bad(cert, "no certificate in the file"));
    }
    let key_der =
        PrivateKeyDer::from_pem_file(key).map_err(|_| bad(key, "not a PEM private key"))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|_| bad(cert, "no TLS version available"))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|_| {
            bad(
                key,
                "the key does not match the certificate, or is unsupported",
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

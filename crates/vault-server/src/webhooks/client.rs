//! One webhook delivery: a signed JSON POST over HTTP/1.1 (TLS for `https`), connected only to
//! an address [`guard`](super::guard) allows, redirects not followed, within a deadline.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};

use hyper::Request;
use hyper::header::{CONTENT_TYPE, HOST, HeaderValue, USER_AGENT};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::guard;

/// Why a delivery failed, in words for `vault webhook list` and the log (never a secret).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DeliveryError {
    #[error("{0}")]
    Url(&'static str),
    #[error("cannot resolve the host")]
    Resolve,
    #[error("refused: {host} resolves only to {why}")]
    Forbidden { host: String, why: &'static str },
    #[error("cannot connect")]
    Connect,
    #[error("TLS: {0}")]
    Tls(String),
    #[error("HTTP: {0}")]
    Http(String),
    #[error("timed out")]
    Timeout,
    #[error("answered {0}")]
    Status(u16),
}

/// What a deliverer needs to make requests.
#[derive(Clone)]
pub(crate) struct Client {
    tls: tokio_rustls::TlsConnector,
    pub(crate) allow_link_local: bool,
    pub(crate) timeout: Duration,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("allow_link_local", &self.allow_link_local)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

impl Client {
    /// A client trusting the system's root certificates.
    pub(crate) fn new(allow_link_local: bool, timeout: Duration) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map(|b| b.with_root_certificates(roots).with_no_client_auth());
        let config = config.unwrap_or_else(|_| {
            rustls::ClientConfig::builder()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth()
        });
        Self {
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
            allow_link_local,
            timeout,
        }
    }

    /// Posts `body` to `url` with `signature` as `WorkOS-Signature` over `conn` if it is open
    /// (kept alive from the endpoint's previous delivery), else over a new connection, which is
    /// left in `conn`; `Ok` for a 2xx answer. A kept-alive connection the receiver closed
    /// meanwhile is replaced at once, not counted as a failure.
    pub(crate) async fn post(
        &self,
        conn: &mut Option<Connection>,
        url: &str,
        body: Vec<u8>,
        signature: &str,
    ) -> Result<u16, DeliveryError> {
        tokio::time::timeout(self.timeout, async {
            if let Some(open) = conn.as_mut().filter(|c| c.url == url) {
                match open.post(body.clone(), signature).await {
                    Err(DeliveryError::Http(_)) => {}
                    answered => return answered,
                }
            }
            let fresh = conn.insert(self.connect(url).await?);
            fresh.post(body, signature).await
        })
        .await
        .map_err(|_| DeliveryError::Timeout)?
    }

    /// Connects to `url`'s host, on an address the policy allows.
    async fn connect(&self, url_text: &str) -> Result<Connection, DeliveryError> {
        let url = url::Url::parse(url_text).map_err(|_| DeliveryError::Url("not a URL"))?;
        let https = match url.scheme() {
            "https" => true,
            "http" => false,
            _ => return Err(DeliveryError::Url("not http or https")),
        };
        let host = url.host().ok_or(DeliveryError::Url("no host"))?;
        let port = url
            .port_or_known_default()
            .ok_or(DeliveryError::Url("no port"))?;
        let host_text = match &host {
            url::Host::Domain(d) => (*d).to_owned(),
            url::Host::Ipv4(ip) => ip.to_string(),
            url::Host::Ipv6(ip) => ip.to_string(),
        };
        let candidates: Vec<SocketAddr> = match host {
            url::Host::Ipv4(ip) => vec![SocketAddr::new(ip.into(), port)],
            url::Host::Ipv6(ip) => vec![SocketAddr::new(ip.into(), port)],
            url::Host::Domain(d) => tokio::net::lookup_host((d, port))
                .await
                .map_err(|_| DeliveryError::Resolve)?
                .collect(),
        };
        // Only the addresses the policy allows are ever connected to.
        let mut why = "no address";
        let allowed: Vec<SocketAddr> = candidates
            .into_iter()
            .filter(|a| match guard::refusal(a.ip(), self.allow_link_local) {
                None => true,
                Some(w) => {
                    why = w;
                    false
                }
            })
            .collect();
        if allowed.is_empty() {
            return Err(DeliveryError::Forbidden {
                host: host_text,
                why,
            });
        }
        let mut tcp = None;
        for addr in allowed {
            if let Ok(s) = TcpStream::connect(addr).await {
                tcp = Some(s);
                break;
            }
        }
        let tcp = tcp.ok_or(DeliveryError::Connect)?;
        let _ = tcp.set_nodelay(true);
        let stream: Box<dyn Io> = if https {
            let name = rustls::pki_types::ServerName::try_from(host_text.clone())
                .map_err(|_| DeliveryError::Url("not a valid TLS server name"))?;
            Box::new(
                self.tls
                    .connect(name, tcp)
                    .await
                    .map_err(|e| DeliveryError::Tls(e.to_string()))?,
            )
        } else {
            Box::new(tcp)
        };
        let (sender, driver) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| DeliveryError::Http(e.to_string()))?;
        tokio::spawn(async move {
            let _ = driver.await;
        });
        let authority = match url.port() {
            Some(p) => format!("{}:{p}", url.host_str().unwrap_or_default()),
            None => url.host_str().unwrap_or_default().to_owned(),
        };
        let path = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        };
        Ok(Connection {
            url: url_text.to_owned(),
            authority,
            path,
            sender,
        })
    }
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("url", &self.url)
            .finish()
    }
}

/// An open connection to one endpoint's receiver, kept alive between its deliveries.
pub struct Connection {
    url: String,
    authority: String,
    path: String,
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Connection {
    async fn post(&mut self, body: Vec<u8>, signature: &str) -> Result<u16, DeliveryError> {
        self.sender
            .ready()
            .await
            .map_err(|e| DeliveryError::Http(e.to_string()))?;
        let request = Request::post(self.path.as_str())
            .header(HOST, self.authority.as_str())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(USER_AGENT, HeaderValue::from_static("vault-webhooks/1"))
            .header("WorkOS-Signature", signature)
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| DeliveryError::Http(e.to_string()))?;
        let response = self
            .sender
            .send_request(request)
            .await
            .map_err(|e| DeliveryError::Http(e.to_string()))?;
        let status = response.status().as_u16();
        // The answer's body is read (at most 64 KiB of it, within the deadline) and dropped.
        let _ = http_body_util::Limited::new(response.into_body(), 64 * 1024)
            .collect()
            .await;
        if (200..300).contains(&status) {
            Ok(status)
        } else {
            Err(DeliveryError::Status(status))
        }
    }
}

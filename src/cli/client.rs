//! A minimal client of the server's HTTP API over plain HTTP/1.1, for loopback tools
//! (`vault bench server`) and the end-to-end tests. It is not an SDK: the official WorkOS SDKs
//! are the clients this server is built for.

use std::time::Duration;

use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper::{Method, Request};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use zeroize::Zeroizing;

/// One API key against one server.
#[derive(Clone)]
pub(crate) struct ApiClient {
    http: Client<HttpConnector, Full<Bytes>>,
    base: String,
    /// The bearer API key: a secret, never in `Debug`.
    key: Zeroizing<String>,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient")
            .field("base", &self.base)
            .field("key", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// What went wrong with a call (transport or an unreadable answer, not an HTTP error status).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct ClientError(String);

impl ApiClient {
    /// A client of `base` (`http://127.0.0.1:8080`) authenticating with `key`.
    pub(crate) fn new(base: &str, key: &str) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let http = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            key: Zeroizing::new(key.to_owned()),
        }
    }

    /// Sends `method path` with an optional JSON body; returns the status and the JSON answer.
    ///
    /// # Errors
    /// [`ClientError`] for a transport failure or a body that is not JSON.
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), ClientError> {
        let (status, _, json) = self.call_with_headers(method, path, body).await?;
        Ok((status, json))
    }

    /// As [`call`](Self::call), with the answer's headers.
    ///
    /// # Errors
    /// As [`call`](Self::call).
    pub(crate) async fn call_with_headers(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, hyper::HeaderMap, Value), ClientError> {
        let bytes = body.map(|b| b.to_string()).unwrap_or_default();
        let (status, headers, body) = self.send(method, path, bytes.into_bytes(), &[]).await?;
        let json = serde_json::from_slice(&body)
            .map_err(|_| ClientError(format!("status {status}: the answer is not JSON")))?;
        Ok((status, headers, json))
    }

    /// Sends `method path` with `body` (as JSON) and `headers`; returns the status, the answer's
    /// headers and its bytes.
    ///
    /// # Errors
    /// [`ClientError`] for a transport failure.
    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        body: Vec<u8>,
        headers: &[(&str, &str)],
    ) -> Result<(u16, hyper::HeaderMap, Bytes), ClientError> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("authorization", format!("Bearer {}", self.key.as_str()))
            .header("content-type", "application/json");
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| ClientError(format!("request: {e}")))?;
        let res = self
            .http
            .request(req)
            .await
            .map_err(|e| ClientError(format!("transport: {e}")))?;
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let body = res
            .into_body()
            .collect()
            .await
            .map_err(|e| ClientError(format!("body: {e}")))?
            .to_bytes();
        Ok((status, headers, body))
    }
}

#[cfg(test)]
mod tests {
    use super::ApiClient;

    #[test]
    fn debug_never_shows_the_api_key() {
        let key = "vault_sk_test_0123456789abcdefSECRET";
        let client = ApiClient::new("http://127.0.0.1:1", key);
        let shown = format!("{client:?} {client:#?}");
        assert!(!shown.contains("SECRET"), "{shown}");
        assert!(!shown.contains("0123456789abcdef"), "{shown}");
        assert!(shown.contains("127.0.0.1:1"), "{shown}");
    }
}

//! Client-side encryption through the server's data-key API, as the WorkOS SDKs' `vault.encrypt`
//! does it, with a client-side data-key cache: the server hands out a data key and the bytes
//! that recover it; the client encrypts locally (the value never reaches the server) and stores
//! the blob. One data key seals many values for a while, so a thousand encryptions cost one
//! call; decryption asks the server once per data key, not once per value.
//!
//! The example starts `vault serve`'s HTTP API in-process on loopback; against a real server,
//! set the base URL and an API key (`vault apikey create`).
//!
//! ```text
//! cargo run --example client_side_encryption
//! ```

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use vault_crypto::{DataKey, workos};

type Error = Box<dyn std::error::Error>;

/// A client of the data-key API with a cache on each side: the data key it seals with (for at
/// most `max_uses` values and `max_age`), and the data keys it has recovered, by blob.
struct Encryptor {
    http: Client<HttpConnector, Full<Bytes>>,
    base: String,
    api_key: String,
    context: Value,
    sealing: Option<(DataKey, Vec<u8>, Instant, u32)>,
    opened: HashMap<Vec<u8>, DataKey>,
    max_uses: u32,
    max_age: Duration,
    calls: u32,
}

impl Encryptor {
    async fn call(&mut self, path: &str, body: Value) -> Result<Value, Error> {
        self.calls += 1;
        let req = hyper::Request::post(format!("{}{path}", self.base))
            .header("authorization", format!("Bearer {}", self.api_key))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))?;
        let res = self.http.request(req).await?;
        let status = res.status();
        let json: Value = serde_json::from_slice(&res.into_body().collect().await?.to_bytes())?;
        if !status.is_success() {
            return Err(format!("{path}: {status} {json}").into());
        }
        Ok(json)
    }

    /// The data key from the answer, in a `DataKey` that is wiped on drop (the JSON answer
    /// itself still holds it in base64: drop it soon, as here).
    fn data_key(answer: &Value) -> Result<DataKey, Error> {
        let b64 = answer["data_key"].as_str().ok_or("no data_key")?;
        DataKey::from_answer(STANDARD.decode(b64)?).ok_or_else(|| "not a 32-byte key".into())
    }

    /// Encrypts `value` locally into the SDKs' blob (base64 text).
    async fn encrypt(&mut self, value: &[u8]) -> Result<String, Error> {
        let fresh = match &self.sealing {
            Some((_, _, born, uses)) => born.elapsed() >= self.max_age || *uses >= self.max_uses,
            None => true,
        };
        if fresh {
            let answer = self
                .call(
                    "/vault/v1/keys/data-key",
                    json!({ "context": self.context }),
                )
                .await?;
            let blob = STANDARD.decode(answer["encrypted_keys"].as_str().ok_or("no keys")?)?;
            self.sealing = Some((Self::data_key(&answer)?, blob, Instant::now(), 0));
        }
        let (key, blob, _, uses) = self.sealing.as_mut().ok_or("no data key")?;
        *uses += 1;
        Ok(workos::encrypt(key, blob, value, vault_crypto::Aad::NONE)?)
    }

    /// Decrypts a blob, asking the server for its data key only the first time it is seen.
    async fn decrypt(&mut self, text: &str) -> Result<Vec<u8>, Error> {
        let bytes = workos::LocalBlob::decode_text(text)?;
        let blob = workos::LocalBlob::parse(&bytes)?;
        let keys = blob.encrypted_keys().to_vec();
        if !self.opened.contains_key(&keys) {
            let answer = self
                .call(
                    "/vault/v1/keys/decrypt",
                    json!({ "keys": STANDARD.encode(&keys) }),
                )
                .await?;
            self.opened.insert(keys.clone(), Self::data_key(&answer)?);
        }
        let key = self.opened.get(&keys).ok_or("no data key")?;
        Ok(blob.decrypt(key, vault_crypto::Aad::NONE)?)
    }
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    // The server side: `vault serve`'s API over the embedded default, on loopback.
    let dir = tempfile::tempdir()?;
    let vault = vault::open_embedded(dir.path()).await?;
    let api_key = vault::server::auth::create(&vault.api_keys(), "production", "example").await?;
    let state = vault::server::AppState::new(vault, vault::server::Limits::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let server = tokio::spawn(async move {
        let app =
            vault::server::app(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
        axum::serve(listener, app).await
    });

    let mut client = Encryptor {
        http: Client::builder(TokioExecutor::new()).build_http(),
        base,
        api_key: api_key.expose_secret().to_owned(),
        context: json!({ "organization_id": "org_1" }),
        sealing: None,
        opened: HashMap::new(),
        max_uses: 1000,
        max_age: Duration::from_secs(300),
        calls: 0,
    };
    let values: Vec<String> = (0..1000).map(|i| format!("card ending {i:04}")).collect();
    let mut blobs = Vec::new();
    for v in &values {
        blobs.push(client.encrypt(v.as_bytes()).await?);
    }
    let encrypt_calls = client.calls;
    for (blob, v) in blobs.iter().zip(&values) {
        assert_eq!(client.decrypt(blob).await?, v.as_bytes());
    }
    println!(
        "{} values: {encrypt_calls} data-key call to encrypt, {} to decrypt",
        values.len(),
        client.calls - encrypt_calls
    );
    assert_eq!((encrypt_calls, client.calls), (1, 2));
    server.abort();
    Ok(())
}

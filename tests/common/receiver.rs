//! A webhook receiver on loopback for the end-to-end tests: it keeps every delivery and
//! answers a status the test chooses.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::Value;

/// One delivery as the receiver got it.
#[derive(Debug, Clone)]
pub struct Got {
    pub signature: String,
    pub body: Vec<u8>,
    pub answered: u16,
}

/// A webhook receiver on loopback answering `status` to every delivery and keeping each.
#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    pub got: Arc<Mutex<Vec<Got>>>,
    pub status: Arc<AtomicU16>,
    /// How long it takes to answer each delivery.
    pub delay: std::time::Duration,
}

impl Receiver {
    pub async fn start(addr: SocketAddr, status: u16) -> Self {
        Self::start_slow(addr, status, std::time::Duration::ZERO).await
    }

    /// As [`start`](Self::start), taking `delay` to answer each delivery.
    pub async fn start_slow(addr: SocketAddr, status: u16, delay: std::time::Duration) -> Self {
        // Port 0 takes a free one; `addr` says which.
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let receiver = Self {
            addr: listener.local_addr().unwrap(),
            got: Arc::default(),
            status: Arc::new(AtomicU16::new(status)),
            delay,
        };
        let r = receiver.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(
                move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                    let r = r.clone();
                    async move {
                        tokio::time::sleep(r.delay).await;
                        let answered = r.status.load(Ordering::SeqCst);
                        r.got.lock().unwrap().push(Got {
                            signature: headers
                                .get("workos-signature")
                                .map(|v| v.to_str().unwrap().to_owned())
                                .unwrap_or_default(),
                            body: body.to_vec(),
                            answered,
                        });
                        axum::http::StatusCode::from_u16(answered).unwrap()
                    }
                },
            ),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        receiver
    }

    pub fn got(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }

    /// Event ids accepted (answered 2xx), in the order first accepted.
    pub fn accepted(&self) -> Vec<String> {
        let mut seen = Vec::new();
        for g in self.got() {
            let id = serde_json::from_slice::<Value>(&g.body).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned();
            if (200..300).contains(&g.answered) && !seen.contains(&id) {
                seen.push(id);
            }
        }
        seen
    }
}

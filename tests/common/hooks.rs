//! A local HTTP receiver for webhooks: records every request it gets.

use std::sync::{Arc, Mutex};

/// One request the receiver got: headers and body.
pub type Hit = (axum::http::HeaderMap, Vec<u8>);

/// What the receiver got.
#[derive(Clone, Default)]
pub struct Received {
    /// Every request, in arrival order.
    pub hits: Arc<Mutex<Vec<Hit>>>,
}

impl Received {
    /// The `X-Castgate-Event` header of every request so far.
    pub fn event_types(&self) -> Vec<String> {
        self.hits
            .lock()
            .unwrap()
            .iter()
            .filter_map(|(h, _)| h.get("x-castgate-event")?.to_str().ok().map(String::from))
            .collect()
    }
}

/// A receiver answering 500 to its first request, 200 afterwards.
pub async fn webhook_receiver() -> (String, Received) {
    webhook_receiver_answering(|n| {
        if n == 1 {
            axum::http::StatusCode::INTERNAL_SERVER_ERROR
        } else {
            axum::http::StatusCode::OK
        }
    })
    .await
}

/// A receiver answering its n-th request (from 1) with `answer(n)`; returns
/// its URL and what it got.
pub async fn webhook_receiver_answering(
    answer: fn(usize) -> axum::http::StatusCode,
) -> (String, Received) {
    let got = Received::default();
    let g = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let g = g.clone();
                async move {
                    let mut hits = g.hits.lock().unwrap();
                    hits.push((headers, body.to_vec()));
                    answer(hits.len())
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/hook"), got)
}

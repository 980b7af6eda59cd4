//! `upstream-server`: the smallest serverless upstream that answers invocations, for measuring
//! what Switchboard adds between a client and the app.
//!
//! It answers every `messages` request with a framed JSON completion of the invocation it
//! carries (`{"type":3,"invocationId":..,"result":true}` + 0x1E) and everything else with 204,
//! doing no other work, so the benchmark measures the path and not the app. The generator's
//! direct phase sends it the same requests Switchboard would, without Switchboard.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// What the server counted.
#[derive(Debug, Default)]
pub struct Counts {
    pub invocations: AtomicU64,
    pub other: AtomicU64,
}

/// The completion for an invocation body, if it carries an invocation id.
pub fn completion_for(body: &[u8]) -> Option<Bytes> {
    #[derive(serde::Deserialize)]
    struct Invocation<'a> {
        #[serde(rename = "invocationId", borrow)]
        invocation_id: Option<std::borrow::Cow<'a, str>>,
    }
    let id = serde_json::from_slice::<Invocation<'_>>(body)
        .ok()?
        .invocation_id?;
    let mut out = Vec::with_capacity(id.len() + 48);
    out.extend_from_slice(b"{\"type\":3,\"invocationId\":");
    out.extend_from_slice(serde_json::to_string(&id).ok()?.as_bytes());
    out.extend_from_slice(b",\"result\":true}\x1e");
    Some(Bytes::from(out))
}

async fn answer(
    request: Request<hyper::body::Incoming>,
    counts: Arc<Counts>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let messages = request
        .headers()
        .get("x-asrs-category")
        .is_some_and(|v| v.as_bytes() == b"messages");
    let body = request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let reply = if messages {
        counts.invocations.fetch_add(1, Ordering::Relaxed);
        completion_for(&body)
    } else {
        counts.other.fetch_add(1, Ordering::Relaxed);
        None
    };
    let response = match reply {
        Some(frame) => Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .body(Full::new(frame)),
        None => Response::builder()
            .status(204)
            .body(Full::new(Bytes::new())),
    };
    Ok(response.unwrap_or_default())
}

/// Serves on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, counts: Arc<Counts>, shutdown: CancellationToken) {
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(_) => {
                    // Out of descriptors: let connections finish instead of spinning.
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => return,
        };
        let _ = stream.set_nodelay(true);
        let counts = counts.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| answer(request, counts.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completes_invocations_with_ids() {
        let frame =
            completion_for(br#"{"type":1,"invocationId":"4\"2","target":"echo","arguments":[]}"#)
                .expect("has an id");
        assert_eq!(
            &frame[..],
            b"{\"type\":3,\"invocationId\":\"4\\\"2\",\"result\":true}\x1e"
        );
        assert!(completion_for(br#"{"type":1,"target":"echo","arguments":[]}"#).is_none());
        assert!(completion_for(b"junk").is_none());
    }
}

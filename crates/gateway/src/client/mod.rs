//! Client endpoints: `POST /client/negotiate` and the WebSocket at `/client/`.
//!
//! Negotiate checks the client's access token and answers with a connection id and a signed,
//! short-lived connection token (a ticket naming hub, user and connection id). The WebSocket
//! request presents that ticket as `id=`; any gateway with the same access keys accepts it, so a
//! load balancer may send negotiate and connect to different nodes.

mod connection;
pub(crate) mod http;
pub(crate) mod negotiate;
pub mod relay;
pub(crate) mod resume;
pub(crate) mod socket;

use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;

use crate::Shared;

/// The paths of the client connection itself, whose `GET`s (a Server-Sent Events stream, a
/// Long Polling poll) are long-lived: the edge serves them outside the HTTP server's
/// per-connection buffers (`EdgeConfig::detach_paths`).
pub(crate) const LONG_LIVED_PATHS: [&str; 2] = ["/client", "/client/"];

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/client/negotiate", post(negotiate::negotiate))
        .route("/client/negotiate/", post(negotiate::negotiate))
        .route(
            "/client",
            get(negotiate::connect)
                .post(negotiate::send)
                .delete(negotiate::delete),
        )
        .route(
            "/client/",
            get(negotiate::connect)
                .post(negotiate::send)
                .delete(negotiate::delete),
        )
}

pub(crate) use connection::{run as run_connection, Opening, SHUTDOWN_MESSAGE};

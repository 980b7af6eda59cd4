//! Cluster credentials on the wire, both ways.
//!
//! - [`AuthChannel`] (client side) puts this process's token in the `x-switchboard-cluster-auth`
//!   header of every call, and accepts the answer only if it carries the answering node's reply
//!   proof for that token in `x-switchboard-cluster-reply`: a process without a key at a peer's
//!   address gets nothing accepted (one relaying to a real node is stopped only by TLS). The proven identity is left in the response's extensions
//!   ([`reply_identity`]), so a caller that dialled a particular node can check it got that node.
//! - [`ClusterAuthLayer`] (server side, on the whole cluster listener) checks the token on the
//!   request headers of every call, before the request body is read and before any handler
//!   runs: a missing, forged or expired token is answered `UNAUTHENTICATED`, counted in
//!   `switchboard_cluster_auth_refusals_total` and logged at a limited rate; a valid one leaves
//!   the proven [`ClusterIdentity`] in the request's extensions ([`peer_identity`]), so
//!   handlers can insist that a node acts only as itself, and the answer gets a reply proof.

use std::task::{Context, Poll};

use futures::future::BoxFuture;
use http::HeaderValue;
use switchboard_auth::ClusterIdentity;
use switchboard_core::throttle::{now_ms, Throttle};
use tonic::body::Body;
use tonic::transport::Channel;
use tonic::{Request, Status};

use crate::server::ClusterConnInfo;
use crate::ClusterSecurity;

/// The header (gRPC metadata) of the caller's token.
pub const AUTH_METADATA_KEY: &str = "x-switchboard-cluster-auth";
/// The header of the answering node's reply proof.
pub const REPLY_METADATA_KEY: &str = "x-switchboard-cluster-reply";

static REFUSAL_LOG: Throttle = Throttle::new(5_000);

/// The service a cluster call is for, from its path (`/switchboard.cluster.v1.Raft/Vote`), as a
/// metric label.
fn service_label(path: &str) -> &'static str {
    match path.trim_start_matches('/').split('/').next().unwrap_or("") {
        "switchboard.cluster.v1.Raft" => "raft",
        "switchboard.cluster.v1.Store" => "store",
        "switchboard.cluster.v1.Fanout" => "fanout",
        _ => "other",
    }
}

/// A channel that authenticates every call and checks every answer (see the module docs).
#[derive(Clone)]
pub struct AuthChannel {
    inner: Channel,
    security: ClusterSecurity,
}

impl std::fmt::Debug for AuthChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthChannel")
            .field("identity", &self.security.identity())
            .finish_non_exhaustive()
    }
}

impl AuthChannel {
    pub(crate) fn new(inner: Channel, security: ClusterSecurity) -> AuthChannel {
        AuthChannel { inner, security }
    }
}

/// The identity of the node that answered, as its reply proof showed (on responses from an
/// [`AuthChannel`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyIdentity(pub ClusterIdentity);

/// The answering node's identity, if the response came through an [`AuthChannel`].
pub fn reply_identity<T>(response: &tonic::Response<T>) -> Option<ClusterIdentity> {
    response.extensions().get::<ReplyIdentity>().map(|r| r.0)
}

fn grpc_status(response: &http::Response<Body>) -> Option<i32> {
    response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

impl tower::Service<http::Request<Body>> for AuthChannel {
    type Response = http::Response<Body>;
    type Error = tonic::transport::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        tower::Service::poll_ready(&mut self.inner, cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        let token = self.security.token(now_ms());
        request
            .headers_mut()
            .insert(AUTH_METADATA_KEY, token.clone());
        let response = tower::Service::call(&mut self.inner, request);
        let security = self.security.clone();
        Box::pin(async move {
            let mut response = response.await?;
            let proof = response
                .headers()
                .get(REPLY_METADATA_KEY)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let token = token.to_str().unwrap_or("");
            match security.verify_reply(proof, token) {
                Ok(identity) => {
                    response.extensions_mut().insert(ReplyIdentity(identity));
                    Ok(response)
                }
                // The peer refused our credentials: keep its answer (it says why).
                Err(_) if grpc_status(&response) == Some(tonic::Code::Unauthenticated as i32) => {
                    Ok(response)
                }
                Err(error) => Ok(Status::unauthenticated(format!(
                    "the answering node did not prove it belongs to the cluster ({error})"
                ))
                .into_http()),
            }
        })
    }
}

/// The server-side check of the cluster listener (see the module docs); add it with
/// `tonic::transport::Server::layer`.
#[derive(Clone)]
pub struct ClusterAuthLayer {
    security: ClusterSecurity,
}

impl ClusterAuthLayer {
    pub fn new(security: ClusterSecurity) -> ClusterAuthLayer {
        ClusterAuthLayer { security }
    }
}

impl<S> tower::Layer<S> for ClusterAuthLayer {
    type Service = ClusterAuthService<S>;

    fn layer(&self, inner: S) -> ClusterAuthService<S> {
        ClusterAuthService {
            inner,
            security: self.security.clone(),
        }
    }
}

/// See [`ClusterAuthLayer`].
#[derive(Clone)]
pub struct ClusterAuthService<S> {
    inner: S,
    security: ClusterSecurity,
}

impl<S, B> tower::Service<http::Request<B>> for ClusterAuthService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<Body>> + Send,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let token = request
            .headers()
            .get(AUTH_METADATA_KEY)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let conn = request.extensions().get::<ClusterConnInfo>().cloned();
        let service = service_label(request.uri().path());
        let identity = match self.security.verify(&token, now_ms()) {
            Ok(identity) => identity,
            Err(error) => {
                crate::metrics::auth_refused(service, error.label());
                if let Some(suppressed) = REFUSAL_LOG.allow(now_ms()) {
                    tracing::warn!(
                        service,
                        peer = ?conn.as_ref().and_then(|c| c.remote),
                        reason = error.label(),
                        suppressed,
                        "refused a cluster call without valid credentials"
                    );
                }
                let status = Status::unauthenticated(format!(
                    "cluster call refused: {error}; every node of a cluster needs the same --cluster-key (or --access-key)"
                ));
                return Box::pin(async move { Ok(status.into_http()) });
            }
        };
        if let Some(conn) = &conn {
            conn.mark_authenticated();
        }
        request.extensions_mut().insert(identity);
        let proof = self.security.reply_proof(&token);
        let response = self.inner.call(request);
        Box::pin(async move {
            let mut response = response.await?;
            if let Ok(value) = HeaderValue::try_from(proof) {
                response.headers_mut().insert(REPLY_METADATA_KEY, value);
            }
            Ok(response)
        })
    }
}

/// The identity [`ClusterAuthLayer`] proved for this request. Fails closed: a request that did
/// not pass the layer (a server built without it) is refused.
pub fn peer_identity<T>(request: &Request<T>) -> Result<ClusterIdentity, Status> {
    request
        .extensions()
        .get::<ClusterIdentity>()
        .copied()
        .ok_or_else(|| Status::unauthenticated("cluster call without verified credentials"))
}

/// Refuses an authenticated peer that claims to act for another node: counted, logged at a
/// limited rate, answered `PERMISSION_DENIED`.
pub fn refuse_identity(service: &'static str, peer: ClusterIdentity, what: &str) -> Status {
    crate::metrics::auth_refused(service, "identity");
    if let Some(suppressed) = REFUSAL_LOG.allow(now_ms()) {
        tracing::warn!(
            service,
            peer = %peer,
            suppressed,
            what,
            "refused a cluster call that acts for another node"
        );
    }
    Status::permission_denied(format!("{peer} may not {what}: a node acts only as itself"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_are_labelled_by_path() {
        assert_eq!(service_label("/switchboard.cluster.v1.Raft/Vote"), "raft");
        assert_eq!(
            service_label("/switchboard.cluster.v1.Store/Watch"),
            "store"
        );
        assert_eq!(
            service_label("/switchboard.cluster.v1.Fanout/Link"),
            "fanout"
        );
        assert_eq!(service_label("/grpc.health.v1.Health/Check"), "other");
        assert_eq!(service_label(""), "other");
    }
}

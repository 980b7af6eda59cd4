//! Identifiers that cross crate and process boundaries.
//!
//! A connection id is 16 random bytes in base64url (22 characters, the same shape as the ids
//! ASP.NET Core SignalR hands out) followed by `.` and the decimal id of the node that issued it.
//! The suffix names the issuer, which remembers the token's single use and is asked first where
//! the connection is; only the gateway holding a connection knows it holds it, because a load
//! balancer may send negotiate and the WebSocket to different gateways.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;

/// Identity of a cluster node (voter, gateway or both). Chosen by the operator with `--node-id`.
pub type NodeId = u64;

/// Mints a fresh, unguessable connection id that names `node`.
pub fn new_connection_id(node: NodeId) -> String {
    let mut raw = [0u8; 16];
    rand::rng().fill_bytes(&mut raw);
    let mut id = URL_SAFE_NO_PAD.encode(raw);
    id.push('.');
    id.push_str(&node.to_string());
    id
}

/// The node a connection id names, if it has the Switchboard shape.
pub fn node_of_connection_id(id: &str) -> Option<NodeId> {
    let (_, node) = id.rsplit_once('.')?;
    node.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_name_their_node_and_are_unique() {
        let a = new_connection_id(7);
        let b = new_connection_id(7);
        assert_ne!(a, b);
        assert_eq!(node_of_connection_id(&a), Some(7));
        assert_eq!(a.len(), 22 + 2);
    }

    #[test]
    fn foreign_ids_name_no_node() {
        assert_eq!(node_of_connection_id("abc"), None);
        assert_eq!(node_of_connection_id("abc.x"), None);
        assert_eq!(node_of_connection_id(""), None);
    }
}

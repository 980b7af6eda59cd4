//! Credentials between the processes of one cluster (the gRPC cluster plane).
//!
//! Every call or stream a node opens to another node carries a short-lived token that proves
//! knowledge of a cluster key and names the node it comes from:
//!
//! ```text
//! sb1.<node id>.<incarnation>.<issued at, unix ms>.<base64url HMAC-SHA256>
//! ```
//!
//! The MAC covers the version, node id, incarnation and issue time, under a key derived from the
//! configured secret for this purpose only (so a cluster token can never be mistaken for a JWT
//! signature made with the same access key, nor the other way round). Verification tries every
//! configured key, so keys rotate like access keys do: add the new key everywhere, then make it
//! first, then remove the old one.
//!
//! A token is valid from [`CLUSTER_TOKEN_SKEW_MS`] before its issue time to
//! [`CLUSTER_TOKEN_LIFETIME_MS`] after it; senders mint a fresh one every
//! [`CLUSTER_TOKEN_REFRESH_MS`]. The token binds the claimed identity, not the connection or the
//! node it is sent to: whoever sees a token (on a network it can read, or at an address that
//! changed hands) can replay it within its lifetime. Only mutual TLS closes that.
//!
//! The answering node proves itself too: its reply carries a [`ClusterKeys::reply_proof`] — a
//! MAC over its own identity and the caller's token (`sb1r.<node>.<incarnation>.<MAC>`),
//! different in form and in MAC input from a token, so neither can stand in for the other. A
//! process without a key cannot answer in a node's name; one that relays the call to a real
//! node and alters the answer on the way can (again: use mutual TLS where that matters).
//!
//! Pure: the time is a parameter.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// How long a cluster token stays valid after its issue time.
pub const CLUSTER_TOKEN_LIFETIME_MS: u64 = 2 * 60 * 1000;
/// How far in the future an issue time may lie (clock skew between nodes).
pub const CLUSTER_TOKEN_SKEW_MS: u64 = 60 * 1000;
/// How often a sender mints a new token.
pub const CLUSTER_TOKEN_REFRESH_MS: u64 = 30 * 1000;
/// Longest token accepted (checked before any parsing).
pub const MAX_CLUSTER_TOKEN_LEN: usize = 128;

const VERSION: &str = "sb1";
const REPLY_VERSION: &str = "sb1r";
/// Domain separation: the MAC key is HMAC(secret, this), never the secret itself.
const KEY_CONTEXT: &[u8] = b"switchboard cluster plane v1";

/// Who a cluster peer says it is: its node id and the incarnation (process generation) of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClusterIdentity {
    pub node: u64,
    pub incarnation: u64,
}

impl fmt::Display for ClusterIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node {} (incarnation {})", self.node, self.incarnation)
    }
}

/// Why a cluster token was refused. Messages never contain key material.
#[derive(thiserror::Error, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterAuthError {
    #[error("no cluster credentials were presented")]
    Missing,
    #[error("the cluster credentials are malformed")]
    Malformed,
    #[error("the cluster credentials are not signed with any configured cluster key")]
    BadSignature,
    #[error("the cluster credentials have expired (check the clocks of the nodes)")]
    Expired,
    #[error("the cluster credentials were issued in the future (check the clocks of the nodes)")]
    NotYetValid,
}

impl ClusterAuthError {
    /// A short label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            ClusterAuthError::Missing => "missing",
            ClusterAuthError::Malformed => "malformed",
            ClusterAuthError::BadSignature => "bad_signature",
            ClusterAuthError::Expired => "expired",
            ClusterAuthError::NotYetValid => "not_yet_valid",
        }
    }
}

/// The cluster keys of a process: the first signs, every one verifies.
///
/// `Debug` prints only how many keys there are.
#[derive(Clone)]
pub struct ClusterKeys {
    /// The derived MAC keys, in the configured order.
    derived: Vec<[u8; 32]>,
}

impl fmt::Debug for ClusterKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterKeys")
            .field("keys", &self.derived.len())
            .finish_non_exhaustive()
    }
}

/// A fresh HMAC-SHA256 with `key`.
fn hmac(key: &[u8]) -> HmacSha256 {
    <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC accepts keys of any length")
}

fn derive(secret: &[u8]) -> [u8; 32] {
    let mut mac = hmac(secret);
    mac.update(KEY_CONTEXT);
    mac.finalize().into_bytes().into()
}

/// A decimal number in its one canonical spelling (the MAC input must have exactly one).
fn canonical_number(s: &str) -> Result<u64, ClusterAuthError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0'))
    {
        return Err(ClusterAuthError::Malformed);
    }
    s.parse().map_err(|_| ClusterAuthError::Malformed)
}

fn mac_input(node: u64, incarnation: u64, issued_ms: u64) -> String {
    format!("{VERSION}.{node}.{incarnation}.{issued_ms}")
}

impl ClusterKeys {
    /// Keys from the configured secrets, primary first. At least one non-empty secret is needed.
    pub fn new<S: AsRef<str>>(secrets: &[S]) -> Result<ClusterKeys, crate::AuthError> {
        if secrets.is_empty() {
            return Err(crate::AuthError::InvalidKeys(
                "at least one cluster key is required".into(),
            ));
        }
        if let Some(n) = secrets.iter().position(|s| s.as_ref().is_empty()) {
            return Err(crate::AuthError::InvalidKeys(format!(
                "cluster key {} is empty",
                n + 1
            )));
        }
        Ok(ClusterKeys {
            derived: secrets
                .iter()
                .map(|s| derive(s.as_ref().as_bytes()))
                .collect(),
        })
    }

    /// A token for `identity`, issued at `now_ms`, signed with the primary key.
    pub fn mint(&self, identity: ClusterIdentity, now_ms: u64) -> String {
        let input = mac_input(identity.node, identity.incarnation, now_ms);
        // `new` guarantees at least one key.
        let key = self.derived.first().map_or(&[0u8; 32], |k| k);
        let mut mac = hmac(key);
        mac.update(input.as_bytes());
        let tag = B64.encode(mac.finalize().into_bytes());
        format!("{input}.{tag}")
    }

    /// The proof that this node (`identity`) answers the call that carried `request_token`.
    pub fn reply_proof(&self, identity: ClusterIdentity, request_token: &str) -> String {
        let prefix = format!("{REPLY_VERSION}.{}.{}", identity.node, identity.incarnation);
        // `new` guarantees at least one key.
        let key = self.derived.first().map_or(&[0u8; 32], |k| k);
        let mut mac = hmac(key);
        mac.update(prefix.as_bytes());
        mac.update(b"\n");
        mac.update(request_token.as_bytes());
        format!("{prefix}.{}", B64.encode(mac.finalize().into_bytes()))
    }

    /// The identity of the node that answered the call carrying `request_token`, if `proof` is
    /// its valid reply proof under any key.
    pub fn verify_reply(
        &self,
        proof: &str,
        request_token: &str,
    ) -> Result<ClusterIdentity, ClusterAuthError> {
        if proof.is_empty() {
            return Err(ClusterAuthError::Missing);
        }
        if proof.len() > MAX_CLUSTER_TOKEN_LEN {
            return Err(ClusterAuthError::Malformed);
        }
        let (prefix, tag) = proof.rsplit_once('.').ok_or(ClusterAuthError::Malformed)?;
        let mut fields = prefix.split('.');
        let (Some(REPLY_VERSION), Some(node), Some(incarnation), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(ClusterAuthError::Malformed);
        };
        let identity = ClusterIdentity {
            node: canonical_number(node)?,
            incarnation: canonical_number(incarnation)?,
        };
        let tag = B64.decode(tag).map_err(|_| ClusterAuthError::Malformed)?;
        let signed = self.derived.iter().any(|key| {
            let mut mac = hmac(key);
            mac.update(prefix.as_bytes());
            mac.update(b"\n");
            mac.update(request_token.as_bytes());
            mac.verify_slice(&tag).is_ok()
        });
        if signed {
            Ok(identity)
        } else {
            Err(ClusterAuthError::BadSignature)
        }
    }

    /// The identity a token proves, if it is signed by any key and valid at `now_ms`.
    pub fn verify(&self, token: &str, now_ms: u64) -> Result<ClusterIdentity, ClusterAuthError> {
        if token.is_empty() {
            return Err(ClusterAuthError::Missing);
        }
        if token.len() > MAX_CLUSTER_TOKEN_LEN {
            return Err(ClusterAuthError::Malformed);
        }
        let (input, tag) = token.rsplit_once('.').ok_or(ClusterAuthError::Malformed)?;
        let mut fields = input.split('.');
        let (Some(VERSION), Some(node), Some(incarnation), Some(issued), None) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) else {
            return Err(ClusterAuthError::Malformed);
        };
        let number = canonical_number;
        let identity = ClusterIdentity {
            node: number(node)?,
            incarnation: number(incarnation)?,
        };
        let issued_ms = number(issued)?;
        let tag = B64.decode(tag).map_err(|_| ClusterAuthError::Malformed)?;
        let signed = self.derived.iter().any(|key| {
            let mut mac = hmac(key);
            mac.update(input.as_bytes());
            // Constant-time comparison.
            mac.verify_slice(&tag).is_ok()
        });
        if !signed {
            return Err(ClusterAuthError::BadSignature);
        }
        if issued_ms > now_ms.saturating_add(CLUSTER_TOKEN_SKEW_MS) {
            return Err(ClusterAuthError::NotYetValid);
        }
        if now_ms > issued_ms.saturating_add(CLUSTER_TOKEN_LIFETIME_MS) {
            return Err(ClusterAuthError::Expired);
        }
        Ok(identity)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW: u64 = 1_800_000_000_000;

    fn id(node: u64, incarnation: u64) -> ClusterIdentity {
        ClusterIdentity { node, incarnation }
    }

    #[test]
    fn a_minted_token_verifies_with_its_identity() {
        let keys = ClusterKeys::new(&["secret"]).unwrap();
        let token = keys.mint(id(3, 17), NOW);
        assert!(token.starts_with("sb1.3.17."));
        assert!(token.len() <= MAX_CLUSTER_TOKEN_LEN);
        assert_eq!(keys.verify(&token, NOW), Ok(id(3, 17)));
    }

    #[test]
    fn any_configured_key_verifies_and_the_first_signs() {
        let old = ClusterKeys::new(&["old"]).unwrap();
        let rotating = ClusterKeys::new(&["new", "old"]).unwrap();
        let new = ClusterKeys::new(&["new"]).unwrap();
        let from_old = old.mint(id(1, 1), NOW);
        let from_rotating = rotating.mint(id(1, 1), NOW);
        assert!(rotating.verify(&from_old, NOW).is_ok());
        assert!(new.verify(&from_rotating, NOW).is_ok());
        assert_eq!(
            old.verify(&from_rotating, NOW),
            Err(ClusterAuthError::BadSignature)
        );
    }

    #[test]
    fn time_bounds() {
        let keys = ClusterKeys::new(&["k"]).unwrap();
        let token = keys.mint(id(1, 2), NOW);
        assert!(keys.verify(&token, NOW + CLUSTER_TOKEN_LIFETIME_MS).is_ok());
        assert_eq!(
            keys.verify(&token, NOW + CLUSTER_TOKEN_LIFETIME_MS + 1),
            Err(ClusterAuthError::Expired)
        );
        assert!(keys.verify(&token, NOW - CLUSTER_TOKEN_SKEW_MS).is_ok());
        assert_eq!(
            keys.verify(&token, NOW - CLUSTER_TOKEN_SKEW_MS - 1),
            Err(ClusterAuthError::NotYetValid)
        );
        // Extreme issue times neither overflow nor pass.
        let far = keys.mint(id(1, 2), u64::MAX);
        assert_eq!(keys.verify(&far, 0), Err(ClusterAuthError::NotYetValid));
        assert!(keys.verify(&far, u64::MAX).is_ok());
    }

    #[test]
    fn changing_any_field_breaks_the_signature() {
        let keys = ClusterKeys::new(&["k"]).unwrap();
        let token = keys.mint(id(1, 2), NOW);
        let (input, tag) = token.rsplit_once('.').unwrap();
        for forged in [
            input.replacen("sb1.1.", "sb1.2.", 1),
            input.replacen(".2.", ".3.", 1),
            format!("{}1", &input[..input.len() - 1]),
        ] {
            assert_eq!(
                keys.verify(&format!("{forged}.{tag}"), NOW),
                Err(ClusterAuthError::BadSignature),
                "{forged}"
            );
        }
    }

    #[test]
    fn a_jwt_signature_is_not_a_cluster_signature() {
        // The MAC key is derived: a MAC made with the raw secret does not verify.
        let keys = ClusterKeys::new(&["k"]).unwrap();
        let input = mac_input(1, 2, NOW);
        let mut mac = HmacSha256::new_from_slice(b"k").unwrap();
        mac.update(input.as_bytes());
        let raw = format!("{input}.{}", B64.encode(mac.finalize().into_bytes()));
        assert_eq!(keys.verify(&raw, NOW), Err(ClusterAuthError::BadSignature));
    }

    #[test]
    fn reply_proofs_bind_the_answering_node_to_the_call() {
        let keys = ClusterKeys::new(&["k"]).unwrap();
        let token = keys.mint(id(1, 2), NOW);
        let proof = keys.reply_proof(id(3, 4), &token);
        assert!(proof.starts_with("sb1r.3.4."));
        assert!(proof.len() <= MAX_CLUSTER_TOKEN_LEN);
        assert_eq!(keys.verify_reply(&proof, &token), Ok(id(3, 4)));
        // Bound to the call: useless for another token.
        let other = keys.mint(id(1, 2), NOW + CLUSTER_TOKEN_REFRESH_MS);
        assert_eq!(
            keys.verify_reply(&proof, &other),
            Err(ClusterAuthError::BadSignature)
        );
        // A proof is not a token and a token is not a proof.
        assert_eq!(keys.verify(&proof, NOW), Err(ClusterAuthError::Malformed));
        assert_eq!(
            keys.verify_reply(&token, &token),
            Err(ClusterAuthError::Malformed)
        );
        // Another key set cannot prove anything, and forging the node breaks the MAC.
        let stranger = ClusterKeys::new(&["x"]).unwrap();
        assert_eq!(
            keys.verify_reply(&stranger.reply_proof(id(3, 4), &token), &token),
            Err(ClusterAuthError::BadSignature)
        );
        let forged = proof.replacen("sb1r.3.", "sb1r.5.", 1);
        assert_eq!(
            keys.verify_reply(&forged, &token),
            Err(ClusterAuthError::BadSignature)
        );
        assert_eq!(
            keys.verify_reply("", &token),
            Err(ClusterAuthError::Missing)
        );
    }

    #[test]
    fn malformed_tokens() {
        let keys = ClusterKeys::new(&["k"]).unwrap();
        let good = keys.mint(id(1, 2), NOW);
        assert_eq!(keys.verify("", NOW), Err(ClusterAuthError::Missing));
        for bad in [
            "x".repeat(MAX_CLUSTER_TOKEN_LEN + 1),
            "sb1".into(),
            "sb1.1.2.3".into(),
            "sb2.1.2.3.AAAA".into(),
            "sb1.01.2.3.AAAA".into(),
            "sb1.1.2.3.4.AAAA".into(),
            "sb1.-1.2.3.AAAA".into(),
            "sb1.1.2.3.!!!".into(),
            "sb1.18446744073709551616.2.3.AAAA".into(),
            good.replace("sb1.", "sb1.+"),
        ] {
            assert_eq!(
                keys.verify(&bad, NOW),
                Err(ClusterAuthError::Malformed),
                "{bad}"
            );
        }
    }

    #[test]
    fn keys_must_be_present_and_non_empty() {
        assert!(ClusterKeys::new::<&str>(&[]).is_err());
        assert!(ClusterKeys::new(&["a", ""]).is_err());
        assert_eq!(
            format!("{:?}", ClusterKeys::new(&["secret-value"]).unwrap()),
            "ClusterKeys { keys: 1, .. }"
        );
    }

    proptest! {
        #[test]
        fn verify_never_panics(token in ".{0,200}", now in any::<u64>()) {
            let keys = ClusterKeys::new(&["k"]).unwrap();
            let _ = keys.verify(&token, now);
        }

        #[test]
        fn round_trip(node in any::<u64>(), incarnation in any::<u64>(), now in 0u64..u64::MAX / 2) {
            let keys = ClusterKeys::new(&["k1", "k2"]).unwrap();
            let token = keys.mint(id(node, incarnation), now);
            prop_assert!(token.len() <= MAX_CLUSTER_TOKEN_LEN);
            prop_assert_eq!(keys.verify(&token, now), Ok(id(node, incarnation)));
        }
    }
}

//! Connection ids for negotiate version 0.
//!
//! A client that negotiates without `negotiateVersion` (or with 0) gets no connection token: it
//! connects with the connection id itself as `id=`, as ASP.NET Core allows. With no sticky
//! sessions the gateway that receives the connect has never seen the id, so the id must prove on
//! its own what a version-1 ticket proves: that a gateway with our keys issued it, for this hub
//! and this user, a few seconds ago. It is `<nonce>~<expiry>~<mac>.<node>`:
//!
//! - the nonce (16 random bytes, base64url) makes every id unique;
//! - the expiry (unix seconds) bounds how long it may be used to connect, like a ticket's;
//! - the MAC (HMAC-SHA256 with the primary access key, truncated to 16 bytes, base64url) covers
//!   nonce, expiry, node, hub and user id, so an id cannot be moved to another hub or user;
//! - `.<node>` keeps the shape every connection id has (it names the issuing gateway).
//!
//! The user's claims are not in the id (it is also the connection's name in the REST API and
//! should stay short): a version-0 connect presents the access token again, as Azure requires,
//! and the claims come from it.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use crate::error::AuthError;
use crate::jwt::KeySet;
use crate::ticket::TICKET_LEEWAY_SECS;

const MAC_BYTES: usize = 16;
const DOMAIN: &[u8] = b"switchboard negotiate v0\0";

/// Whether `id` has the shape of a version-0 connection id (not whether it is valid).
pub fn is_v0_connection_id(id: &str) -> bool {
    id.split('~').count() == 3
}

fn mac(
    key: &str,
    nonce: &str,
    expires_at: u64,
    node: &str,
    hub: &str,
    user: Option<&str>,
) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(DOMAIN);
    for part in [nonce, &expires_at.to_string(), node, hub] {
        mac.update(&(part.len() as u64).to_be_bytes());
        mac.update(part.as_bytes());
    }
    match user {
        Some(user) => {
            mac.update(&[1]);
            mac.update(&(user.len() as u64).to_be_bytes());
            mac.update(user.as_bytes());
        }
        None => mac.update(&[0]),
    }
    mac
}

impl KeySet {
    /// A new version-0 connection id for `hub` and `user`, issued by `node`, usable until
    /// `expires_at` (unix seconds).
    pub fn mint_v0_connection_id(
        &self,
        hub: &str,
        user: Option<&str>,
        node: u64,
        expires_at: u64,
    ) -> String {
        let mut raw = [0u8; 16];
        rand::rng().fill_bytes(&mut raw);
        let nonce = URL_SAFE_NO_PAD.encode(raw);
        let node = node.to_string();
        let tag = mac(self.primary(), &nonce, expires_at, &node, hub, user).finalize();
        let tag = URL_SAFE_NO_PAD.encode(&tag.into_bytes()[..MAC_BYTES]);
        format!("{nonce}~{expires_at}~{tag}.{node}")
    }

    /// Checks a version-0 connection id presented for `hub` by `user` at `now_secs`: issued
    /// with one of the keys, for this hub and user, and not expired (with the tickets' leeway).
    pub fn verify_v0_connection_id(
        &self,
        id: &str,
        hub: &str,
        user: Option<&str>,
        now_secs: u64,
    ) -> Result<u64, AuthError> {
        let malformed =
            || AuthError::Malformed("not a connection id of negotiate version 0".into());
        let mut parts = id.split('~');
        let (Some(nonce), Some(expires_at), Some(rest), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed());
        };
        let (tag, node) = rest.rsplit_once('.').ok_or_else(malformed)?;
        let expires_at: u64 = expires_at.parse().map_err(|_| malformed())?;
        if node.parse::<u64>().is_err() || nonce.len() != 22 {
            return Err(malformed());
        }
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| malformed())?;
        if tag.len() != MAC_BYTES {
            return Err(malformed());
        }
        let signed = self.keys().iter().any(|key| {
            mac(key, nonce, expires_at, node, hub, user)
                .verify_truncated_left(&tag)
                .is_ok()
        });
        if !signed {
            return Err(AuthError::BadSignature);
        }
        if expires_at.saturating_add(TICKET_LEEWAY_SECS) < now_secs {
            return Err(AuthError::Expired {
                exp: expires_at,
                now: now_secs,
            });
        }
        Ok(expires_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn keys(k: &[&str]) -> KeySet {
        KeySet::new(k.iter().map(|k| k.to_string()).collect()).expect("keys")
    }

    #[test]
    fn an_id_is_accepted_for_its_hub_and_user_only() {
        let ks = keys(&["key-one", "key-two"]);
        let id = ks.mint_v0_connection_id("chat", Some("bob"), 7, 1_000);
        assert!(is_v0_connection_id(&id));
        assert_eq!(id.rsplit_once('.').map(|(_, n)| n), Some("7"));
        assert!(ks
            .verify_v0_connection_id(&id, "chat", Some("bob"), 1_000)
            .is_ok());
        assert!(
            ks.verify_v0_connection_id(&id, "chat", Some("bob"), 1_005)
                .is_ok(),
            "leeway"
        );
        assert!(matches!(
            ks.verify_v0_connection_id(&id, "chat", Some("bob"), 1_006),
            Err(AuthError::Expired { .. })
        ));
        for (hub, user) in [("news", Some("bob")), ("chat", Some("eve")), ("chat", None)] {
            assert!(matches!(
                ks.verify_v0_connection_id(&id, hub, user, 1_000),
                Err(AuthError::BadSignature)
            ));
        }
        // A rotated key set that still lists the signing key accepts it; one without does not.
        assert!(keys(&["new", "key-one"])
            .verify_v0_connection_id(&id, "chat", Some("bob"), 1_000)
            .is_ok());
        assert!(keys(&["key-two"])
            .verify_v0_connection_id(&id, "chat", Some("bob"), 1_000)
            .is_err());
        assert_ne!(
            id,
            ks.mint_v0_connection_id("chat", Some("bob"), 7, 1_000),
            "unique"
        );
    }

    #[test]
    fn tickets_and_v1_ids_are_not_v0_ids() {
        let ks = keys(&["k"]);
        assert!(!is_v0_connection_id("eyJhbGciOiJIUzI1NiJ9.eyJ4IjoxfQ.c2ln"));
        assert!(!is_v0_connection_id("AAAAAAAAAAAAAAAAAAAAAA.1"));
        assert!(ks.verify_v0_connection_id("a~1~b.1", "h", None, 0).is_err());
    }

    proptest! {
        #[test]
        fn tampering_is_refused(pos in 0usize..64, byte in any::<u8>()) {
            let ks = keys(&["k"]);
            let id = ks.mint_v0_connection_id("chat", Some("bob"), 3, 100);
            let mut raw = id.clone().into_bytes();
            let pos = pos % raw.len();
            prop_assume!(raw[pos] != byte);
            raw[pos] = byte;
            if let Ok(tampered) = String::from_utf8(raw) {
                // Every character is covered by the MAC or checked by the parser (base64 with
                // non-zero padding bits is refused), so any change is refused.
                prop_assert!(ks.verify_v0_connection_id(&tampered, "chat", Some("bob"), 100).is_err());
            }
        }

        #[test]
        fn garbage_never_panics(s in ".{0,80}") {
            let _ = keys(&["k"]).verify_v0_connection_id(&s, "h", None, 0);
        }
    }
}

//! Connection tickets: the `connectionToken` a negotiate returns and the client presents as `id=`.
//!
//! A ticket names the hub, the connection id (which in turn names the gateway node) and the user,
//! and carries the client's claims. It is a JWT signed with the primary access key and verified
//! against every key, so any gateway sharing the keys accepts it with no shared state and no sticky
//! sessions. It is short-lived (the service answers 404 when the connect comes more than ~5 s after
//! negotiate); clocks of different gateways may disagree by up to [`TICKET_LEEWAY_SECS`].
//!
//! A ticket is never an access token and an access token is never a ticket: tickets carry the
//! purpose claim `"sbt":"conn"` and no `aud`; [`KeySet::verify`] refuses the former and
//! [`KeySet::verify_ticket`] requires both.

use serde_json::Value;

use crate::error::AuthError;
use crate::jwt::{check_exp, sign, Algorithm, Claims, KeySet, PURPOSE_CLAIM, TICKET_PURPOSE};

/// Clock skew between gateways tolerated when checking a ticket's expiry, in seconds.
pub const TICKET_LEEWAY_SECS: u64 = 5;

/// Claims of the client token not worth carrying in a ticket.
const DROPPED_CLAIMS: [&str; 4] = ["aud", "exp", "iat", "nbf"];

/// What a connection ticket says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionTicket {
    /// The (possibly application-prefixed) hub the client negotiated for.
    pub hub: String,
    /// The connection id assigned at negotiate.
    pub connection_id: String,
    /// The user id resolved from the client's token.
    pub user_id: Option<String>,
    /// The client's claims (minus `aud`/`exp`/`iat`/`nbf`), e.g. for upstream headers.
    pub claims: Claims,
    /// Unix seconds after which the ticket is no longer accepted (plus [`TICKET_LEEWAY_SECS`]).
    pub expires_at: u64,
    /// The client negotiated stateful reconnect (`useStatefulReconnect=true`).
    pub stateful_reconnect: bool,
}

impl KeySet {
    /// Signs `ticket` (HS256, primary key). The client claims `aud`/`exp`/`iat`/`nbf` are dropped.
    pub fn mint_ticket(&self, ticket: &ConnectionTicket) -> String {
        let mut client = ticket.claims.clone();
        for name in DROPPED_CLAIMS {
            client.remove(name);
        }
        let mut claims = Claims::new();
        claims.insert(PURPOSE_CLAIM.to_string(), Value::from(TICKET_PURPOSE));
        claims.insert("hub".to_string(), Value::from(ticket.hub.as_str()));
        claims.insert(
            "cid".to_string(),
            Value::from(ticket.connection_id.as_str()),
        );
        if let Some(uid) = &ticket.user_id {
            claims.insert("uid".to_string(), Value::from(uid.as_str()));
        }
        if !client.is_empty() {
            claims.insert("c".to_string(), Value::Object(client));
        }
        claims.insert("exp".to_string(), Value::from(ticket.expires_at));
        if ticket.stateful_reconnect {
            claims.insert("sr".to_string(), Value::from(true));
        }
        sign(self.primary(), Algorithm::HS256, None, &claims)
    }

    /// Verifies a ticket: signature by any key, the purpose claim, no `aud`, and `expires_at` no
    /// more than [`TICKET_LEEWAY_SECS`] in the past. Access tokens yield [`AuthError::NotATicket`].
    pub fn verify_ticket(&self, token: &str, now_secs: u64) -> Result<ConnectionTicket, AuthError> {
        let mut claims = self.verify_signature(token)?;
        if claims.get(PURPOSE_CLAIM).and_then(Value::as_str) != Some(TICKET_PURPOSE)
            || claims.contains_key("aud")
        {
            return Err(AuthError::NotATicket);
        }
        let expires_at = check_exp(&claims, now_secs, TICKET_LEEWAY_SECS)?;
        let mut take_string = |name: &str| match claims.remove(name) {
            Some(Value::String(s)) => Ok(Some(s)),
            None => Ok(None),
            Some(_) => Err(AuthError::Malformed(format!(
                "connection token claim '{name}' is not a string"
            ))),
        };
        let missing =
            |name: &str| AuthError::Malformed(format!("connection token has no '{name}'"));
        let hub = take_string("hub")?.ok_or_else(|| missing("hub"))?;
        let connection_id = take_string("cid")?.ok_or_else(|| missing("cid"))?;
        let user_id = take_string("uid")?;
        let stateful_reconnect = claims.remove("sr").and_then(|v| v.as_bool()) == Some(true);
        let claims = match claims.remove("c") {
            None => Claims::new(),
            Some(Value::Object(c)) => c,
            Some(_) => {
                return Err(AuthError::Malformed(
                    "connection token claims are not an object".to_string(),
                ))
            }
        };
        Ok(ConnectionTicket {
            hub,
            connection_id,
            user_id,
            claims,
            expires_at,
            stateful_reconnect,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::{mint_client_token, mint_rest_token};
    use proptest::prelude::*;
    use serde_json::json;

    const NOW: u64 = 1_700_000_000;

    fn keys(k: &[&str]) -> KeySet {
        KeySet::new(k.iter().map(|s| s.to_string()).collect()).unwrap()
    }

    fn ticket() -> ConnectionTicket {
        let mut claims = Claims::new();
        claims.insert("role".to_string(), json!(["a", "b"]));
        claims.insert("asrs.s.uid".to_string(), json!("u1"));
        ConnectionTicket {
            hub: "app_chat".to_string(),
            connection_id: "n1-abc".to_string(),
            user_id: Some("u1".to_string()),
            claims,
            expires_at: NOW + 5,
            stateful_reconnect: true,
        }
    }

    #[test]
    fn round_trips_across_gateways_sharing_keys() {
        let minted = keys(&["k1", "k2"]).mint_ticket(&ticket());
        assert_eq!(
            keys(&["k1", "k2"]).verify_ticket(&minted, NOW),
            Ok(ticket())
        );
        // Another gateway that has rotated: k1 is now secondary.
        assert_eq!(
            keys(&["k0", "k1"]).verify_ticket(&minted, NOW),
            Ok(ticket())
        );
        assert_eq!(
            keys(&["k2"]).verify_ticket(&minted, NOW),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn drops_time_and_audience_claims() {
        let mut t = ticket();
        for name in DROPPED_CLAIMS {
            t.claims.insert(name.to_string(), json!(1));
        }
        let ks = keys(&["k"]);
        assert_eq!(ks.verify_ticket(&ks.mint_ticket(&t), NOW), Ok(ticket()));
    }

    #[test]
    fn minimal_ticket_round_trips() {
        let t = ConnectionTicket {
            hub: "h".to_string(),
            connection_id: "c".to_string(),
            user_id: None,
            claims: Claims::new(),
            expires_at: NOW,
            stateful_reconnect: false,
        };
        let ks = keys(&["k"]);
        assert_eq!(ks.verify_ticket(&ks.mint_ticket(&t), NOW), Ok(t));
    }

    #[test]
    fn expires() {
        let ks = keys(&["k"]);
        let minted = ks.mint_ticket(&ticket());
        assert!(ks
            .verify_ticket(&minted, NOW + 5 + TICKET_LEEWAY_SECS)
            .is_ok());
        assert_eq!(
            ks.verify_ticket(&minted, NOW + 6 + TICKET_LEEWAY_SECS),
            Err(AuthError::Expired {
                exp: NOW + 5,
                now: NOW + 6 + TICKET_LEEWAY_SECS
            })
        );
    }

    #[test]
    fn tickets_are_not_access_tokens() {
        let ks = keys(&["k"]);
        let minted = ks.mint_ticket(&ticket());
        assert_eq!(ks.verify(&minted, NOW), Err(AuthError::NotAnAccessToken));
        // Even if it were accepted as a token, it has no audience.
        let claims = ks.verify_signature(&minted).unwrap();
        assert!(!claims.contains_key("aud"));
    }

    #[test]
    fn access_tokens_are_not_tickets() {
        let ks = keys(&["k"]);
        let client = mint_client_token(
            "k",
            "http://h",
            "chat",
            Some("u"),
            &Claims::new(),
            NOW,
            3600,
        );
        assert_eq!(ks.verify_ticket(&client, NOW), Err(AuthError::NotATicket));
        let rest = mint_rest_token("k", "http://h/api/v1/hubs/chat", None, NOW, 3600);
        assert_eq!(ks.verify_ticket(&rest, NOW), Err(AuthError::NotATicket));
        // A client that copies the purpose claim into its token still has an aud.
        let mut extra = Claims::new();
        extra.insert("sbt".to_string(), json!("conn"));
        extra.insert("hub".to_string(), json!("chat"));
        extra.insert("cid".to_string(), json!("x"));
        let forged = mint_client_token("k", "http://h", "chat", None, &extra, NOW, 3600);
        assert_eq!(ks.verify_ticket(&forged, NOW), Err(AuthError::NotATicket));
        assert_eq!(ks.verify(&forged, NOW), Err(AuthError::NotAnAccessToken));
    }

    #[test]
    fn rejects_tickets_with_bad_fields() {
        let ks = keys(&["k"]);
        let bad = |c: Value| {
            let Value::Object(c) = c else { unreachable!() };
            ks.verify_ticket(&sign("k", Algorithm::HS256, None, &c), NOW)
        };
        assert!(matches!(
            bad(json!({"sbt":"conn","exp":NOW,"cid":"c"})),
            Err(AuthError::Malformed(_))
        ));
        assert!(matches!(
            bad(json!({"sbt":"conn","exp":NOW,"hub":"h"})),
            Err(AuthError::Malformed(_))
        ));
        assert!(matches!(
            bad(json!({"sbt":"conn","exp":NOW,"hub":1,"cid":"c"})),
            Err(AuthError::Malformed(_))
        ));
        assert!(matches!(
            bad(json!({"sbt":"conn","exp":NOW,"hub":"h","cid":"c","c":[]})),
            Err(AuthError::Malformed(_))
        ));
        assert_eq!(
            bad(json!({"sbt":"conn","hub":"h","cid":"c"})),
            Err(AuthError::MissingExp)
        );
        assert_eq!(
            bad(json!({"sbt":"other","exp":NOW,"hub":"h","cid":"c"})),
            Err(AuthError::NotATicket)
        );
    }

    proptest! {
        #[test]
        fn garbage_never_panics(s in ".{0,300}") {
            let _ = keys(&["k"]).verify_ticket(&s, NOW);
        }

        #[test]
        fn round_trip(hub in ".{0,40}", cid in ".{0,40}", uid in proptest::option::of(".{0,40}"), role in ".{0,20}", exp in 0u64..u64::MAX / 2) {
            let mut claims = Claims::new();
            claims.insert("role".to_string(), json!(role));
            let t = ConnectionTicket { hub, connection_id: cid, user_id: uid, claims, expires_at: exp, stateful_reconnect: exp % 2 == 0 };
            let ks = keys(&["key"]);
            prop_assert_eq!(ks.verify_ticket(&ks.mint_ticket(&t), exp), Ok(t));
        }
    }
}

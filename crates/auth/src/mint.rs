//! Access tokens minted by Switchboard itself (`switchboard token`, `:generateToken`).
//!
//! They have the shape the Azure SignalR SDKs produce, so they work against Azure too and every
//! audience form accepted by [`crate::check_audience`] is exercised by our own tokens.

use serde_json::Value;

use crate::jwt::{sign, Algorithm, Claims};
use crate::uri::percent_encode;

/// Claims Switchboard sets itself; same-named entries of `extra` are replaced.
const TIME_AND_AUDIENCE: [&str; 4] = ["aud", "exp", "iat", "nbf"];

fn timed_claims(mut claims: Claims, aud: String, now_secs: u64, lifetime_secs: u64) -> Claims {
    for name in TIME_AND_AUDIENCE {
        claims.remove(name);
    }
    claims.insert("nbf".to_string(), Value::from(now_secs));
    claims.insert(
        "exp".to_string(),
        Value::from(now_secs.saturating_add(lifetime_secs)),
    );
    claims.insert("iat".to_string(), Value::from(now_secs));
    claims.insert("aud".to_string(), Value::from(aud));
    claims
}

/// The audience of a client token: `{client_base_url}/client/?hub={hub}`.
pub fn client_audience(client_base_url: &str, hub: &str) -> String {
    format!(
        "{}/client/?hub={}",
        client_base_url.trim_end_matches('/'),
        percent_encode(hub)
    )
}

/// A client access token (HS256): aud `{client_base_url}/client/?hub={hub}`, `asrs.s.uid` = user
/// when given, the `extra` claims (e.g. `role`), `exp` = now + lifetime, `iat` = `nbf` = now.
pub fn mint_client_token(
    key: &str,
    client_base_url: &str,
    hub: &str,
    user: Option<&str>,
    extra: &Claims,
    now_secs: u64,
    lifetime_secs: u64,
) -> String {
    let mut claims = extra.clone();
    if let Some(user) = user {
        claims.insert("asrs.s.uid".to_string(), Value::from(user));
    }
    let aud = client_audience(client_base_url, hub);
    sign(
        key,
        Algorithm::HS256,
        None,
        &timed_claims(claims, aud, now_secs, lifetime_secs),
    )
}

/// A REST access token (HS256) whose aud is the full request URL (`{base_url}{path}`, a query is
/// allowed and ignored by the check); `nameid` = user when given; `exp` = now + lifetime.
pub fn mint_rest_token(
    key: &str,
    url: &str,
    user: Option<&str>,
    now_secs: u64,
    lifetime_secs: u64,
) -> String {
    let mut claims = Claims::new();
    if let Some(user) = user {
        claims.insert("nameid".to_string(), Value::from(user));
    }
    sign(
        key,
        Algorithm::HS256,
        None,
        &timed_claims(claims, url.to_string(), now_secs, lifetime_secs),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::{check_audience, user_id, Audience, AuthError, KeySet, LEEWAY_SECS};
    use serde_json::json;

    const KEY: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ABCDEFGH";
    const NOW: u64 = 1_700_000_000;

    fn keys() -> KeySet {
        KeySet::new(vec![KEY.to_string()]).unwrap()
    }

    #[test]
    fn client_tokens_carry_audience_user_and_extra_claims() {
        let mut extra = Claims::new();
        extra.insert("role".to_string(), json!(["admin", "reader"]));
        extra.insert("exp".to_string(), json!(1)); // replaced
        extra.insert("asrs.s.uid".to_string(), json!("ignored")); // replaced by `user`
        let t = mint_client_token(
            KEY,
            "http://localhost:8080/",
            "App_Chat",
            Some("u1"),
            &extra,
            NOW,
            3600,
        );
        let c = keys().verify(&t, NOW).unwrap();
        assert_eq!(
            c["aud"],
            json!("http://localhost:8080/client/?hub=App_Chat")
        );
        assert_eq!(c["exp"], json!(NOW + 3600));
        assert_eq!(c["iat"], json!(NOW));
        assert_eq!(c["nbf"], json!(NOW));
        assert_eq!(c["role"], json!(["admin", "reader"]));
        assert_eq!(user_id(&c).as_deref(), Some("u1"));
        assert!(check_audience(&c, &Audience::Client { hub: "app_chat" }).is_ok());
        assert!(check_audience(&c, &Audience::Client { hub: "chat" }).is_err());
        assert!(check_audience(
            &c,
            &Audience::Rest {
                path: "/api/v1/hubs/app_chat",
                application: None,
            }
        )
        .is_err());
        assert_eq!(
            keys().verify(&t, NOW + 3600 + LEEWAY_SECS + 1),
            Err(AuthError::Expired {
                exp: NOW + 3600,
                now: NOW + 3600 + LEEWAY_SECS + 1
            })
        );
    }

    #[test]
    fn anonymous_client_tokens_have_no_user() {
        let t = mint_client_token(KEY, "http://h", "chat", None, &Claims::new(), NOW, 60);
        let c = keys().verify(&t, NOW).unwrap();
        assert_eq!(user_id(&c), None);
    }

    #[test]
    fn hub_is_encoded_in_the_audience() {
        assert_eq!(
            client_audience("http://h/", "a[b]"),
            "http://h/client/?hub=a%5Bb%5D"
        );
        let t = mint_client_token(KEY, "http://h", "a[b]", None, &Claims::new(), NOW, 60);
        let c = keys().verify(&t, NOW).unwrap();
        assert!(check_audience(&c, &Audience::Client { hub: "A[B]" }).is_ok());
    }

    #[test]
    fn rest_tokens_open_exactly_their_path() {
        let t = mint_rest_token(
            KEY,
            "http://localhost:8080/api/hubs/chat/users/u%201/:send?api-version=2022-06-01",
            Some("server1"),
            NOW,
            60,
        );
        let c = keys().verify(&t, NOW).unwrap();
        assert_eq!(user_id(&c).as_deref(), Some("server1"));
        assert_eq!(c["exp"], json!(NOW + 60));
        assert!(check_audience(
            &c,
            &Audience::Rest {
                path: "/api/hubs/chat/users/u%201/:send",
                application: None,
            }
        )
        .is_ok());
        assert!(check_audience(
            &c,
            &Audience::Rest {
                path: "/api/hubs/chat/users/u2/:send",
                application: None,
            }
        )
        .is_err());
        assert!(check_audience(&c, &Audience::Client { hub: "chat" }).is_err());
    }

    #[test]
    fn lifetimes_saturate() {
        let t = mint_rest_token(KEY, "http://h/api", None, u64::MAX - 1, u64::MAX);
        let c = keys().verify(&t, u64::MAX).unwrap();
        assert_eq!(c["exp"], json!(u64::MAX));
    }
}

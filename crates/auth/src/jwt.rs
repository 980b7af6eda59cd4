//! Compact HS256/HS512 JWTs: signing, and verification against a set of access keys.
//!
//! Azure SignalR signs with the UTF-8 bytes of the access key string (not its base64 decoding),
//! and the `kid` the .NET SDK puts in the header is a per-process random hash, so verification
//! ignores `kid` and tries every configured key. Only `exp` is checked among the time claims, with
//! [`LEEWAY_SECS`] of clock skew; the service does not check `nbf`, `iat` or `iss` and neither do we.
//! Nothing here reads the clock: callers pass `now_secs`.

use std::fmt;
use std::str::FromStr;

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::Serialize;
use serde_json::Value;
use sha2::{Sha256, Sha512};

use crate::error::{shorten, AuthError};

/// A token's claims: a JSON object. Repeated claim types may be arrays.
pub type Claims = serde_json::Map<String, serde_json::Value>;

/// Clock skew allowed when checking `exp`, in seconds.
pub const LEEWAY_SECS: u64 = 60;

/// Longest token accepted, in characters; longer ones are rejected before any decoding.
/// (The REST API allows 16 KB of headers; the SDK itself refuses to mint tokens over 4 KB.)
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Claim that marks a token minted by Switchboard for an internal purpose (see the ticket module).
pub(crate) const PURPOSE_CLAIM: &str = "sbt";
/// Value of [`PURPOSE_CLAIM`] in connection tickets.
pub(crate) const TICKET_PURPOSE: &str = "conn";

/// base64url without padding on output; padding tolerated on input; non-canonical trailing bits
/// rejected.
const B64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// JWS signing algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Algorithm {
    /// HMAC-SHA256, the SDK's default.
    #[default]
    HS256,
    /// HMAC-SHA512 (SDK option `AccessTokenAlgorithm`).
    HS512,
}

impl Algorithm {
    /// The JOSE name, `HS256` or `HS512`.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::HS256 => "HS256",
            Algorithm::HS512 => "HS512",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Algorithm {
    type Err = AuthError;

    /// Parses `HS256` / `HS512` (case-insensitively, for command lines).
    fn from_str(s: &str) -> Result<Self, AuthError> {
        if s.eq_ignore_ascii_case("HS256") {
            Ok(Algorithm::HS256)
        } else if s.eq_ignore_ascii_case("HS512") {
            Ok(Algorithm::HS512)
        } else {
            Err(AuthError::UnsupportedAlgorithm(shorten(s, 32)))
        }
    }
}

#[derive(Serialize)]
struct Header<'a> {
    alg: &'static str,
    typ: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    kid: Option<&'a str>,
}

/// Signs `claims` as a compact JWS with the UTF-8 bytes of `key` (not base64-decoded).
/// The header is `{"alg":..,"typ":"JWT"}` plus `kid` when given.
pub fn sign(key: &str, alg: Algorithm, kid: Option<&str>, claims: &Claims) -> String {
    let header = Header {
        alg: alg.as_str(),
        typ: "JWT",
        kid,
    };
    // Serialising these types cannot fail (string keys, no non-finite floats in a Value); the
    // fallback only keeps this function total and would yield a token that never verifies.
    let header = serde_json::to_vec(&header).unwrap_or_default();
    let payload = serde_json::to_vec(claims).unwrap_or_default();
    let mut token = B64.encode(header);
    token.push('.');
    B64.encode_string(payload, &mut token);
    let signature = mac(alg, key.as_bytes(), token.as_bytes());
    token.push('.');
    B64.encode_string(signature, &mut token);
    token
}

fn mac(alg: Algorithm, key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail; an empty signature
    // (never valid) is the fallback that keeps this total.
    match alg {
        Algorithm::HS256 => match <Hmac<Sha256> as Mac>::new_from_slice(key) {
            Ok(mut m) => {
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
            Err(_) => Vec::new(),
        },
        Algorithm::HS512 => match <Hmac<Sha512> as Mac>::new_from_slice(key) {
            Ok(mut m) => {
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
            Err(_) => Vec::new(),
        },
    }
}

/// Constant-time check of `signature` over `data` with `key`.
fn mac_matches(alg: Algorithm, key: &[u8], data: &[u8], signature: &[u8]) -> bool {
    match alg {
        Algorithm::HS256 => <Hmac<Sha256> as Mac>::new_from_slice(key).is_ok_and(|mut m| {
            m.update(data);
            m.verify_slice(signature).is_ok()
        }),
        Algorithm::HS512 => <Hmac<Sha512> as Mac>::new_from_slice(key).is_ok_and(|mut m| {
            m.update(data);
            m.verify_slice(signature).is_ok()
        }),
    }
}

/// A fresh random access key: 32 random bytes, base64 (44 characters, like the emulator's key).
pub fn generate_access_key() -> String {
    let mut bytes = [0u8; 32];
    rand::Rng::fill(&mut rand::rng(), &mut bytes);
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Every accepted access key; the first (primary) signs, all of them verify (key rotation).
///
/// `Debug` prints only how many keys there are.
#[derive(Clone)]
pub struct KeySet {
    keys: Vec<String>,
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySet")
            .field("keys", &self.keys.len())
            .finish_non_exhaustive()
    }
}

impl KeySet {
    /// A key set from `keys`, primary first. At least one key is needed and none may be empty.
    pub fn new(keys: Vec<String>) -> Result<Self, AuthError> {
        if keys.is_empty() {
            return Err(AuthError::InvalidKeys(
                "at least one access key is required".to_string(),
            ));
        }
        if let Some(n) = keys.iter().position(|k| k.is_empty()) {
            return Err(AuthError::InvalidKeys(format!(
                "access key {} is empty",
                n + 1
            )));
        }
        Ok(KeySet { keys })
    }

    /// The key new tokens are signed with.
    pub fn primary(&self) -> &str {
        // `new` guarantees at least one key.
        self.keys.first().map_or("", String::as_str)
    }

    /// All keys, primary first.
    pub fn keys(&self) -> &[String] {
        &self.keys
    }

    /// Signs `claims` with the primary key (no `kid`).
    pub fn sign(&self, alg: Algorithm, claims: &Claims) -> String {
        sign(self.primary(), alg, None, claims)
    }

    /// Verifies an access token: HS256 or HS512 signature by any key (anything else, including
    /// `none`, is rejected), a numeric `exp` no more than [`LEEWAY_SECS`] in the past. `nbf`,
    /// `iat` and `iss` are not checked (the service does not). Connection tickets are refused.
    /// The audience is checked separately, with [`crate::check_audience`].
    pub fn verify(&self, token: &str, now_secs: u64) -> Result<Claims, AuthError> {
        let claims = self.verify_signature(token)?;
        if claims.get(PURPOSE_CLAIM).and_then(Value::as_str) == Some(TICKET_PURPOSE) {
            return Err(AuthError::NotAnAccessToken);
        }
        check_exp(&claims, now_secs, LEEWAY_SECS)?;
        Ok(claims)
    }

    /// Decodes `token`, checks its algorithm and signature, and returns its claims; no claim is
    /// checked.
    pub(crate) fn verify_signature(&self, token: &str) -> Result<Claims, AuthError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(AuthError::TokenTooLong {
                len: token.len(),
                max: MAX_TOKEN_LEN,
            });
        }
        let mut parts = token.split('.');
        let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Malformed(
                "expected three dot-separated parts".to_string(),
            ));
        };
        let header = decode_object(header_b64, "header")?;
        // JOSE algorithm names are case-sensitive: "hs256" is not an algorithm.
        let alg = match header.get("alg") {
            Some(Value::String(alg)) if alg == "HS256" => Algorithm::HS256,
            Some(Value::String(alg)) if alg == "HS512" => Algorithm::HS512,
            Some(Value::String(other)) => {
                return Err(AuthError::UnsupportedAlgorithm(shorten(other, 32)))
            }
            Some(_) => return Err(AuthError::Malformed("'alg' is not a string".to_string())),
            None => return Err(AuthError::Malformed("header has no 'alg'".to_string())),
        };
        if header.contains_key("crit") {
            return Err(AuthError::Malformed(
                "critical header parameters are not supported".to_string(),
            ));
        }
        let signature = B64
            .decode(signature_b64)
            .map_err(|_| AuthError::Malformed("signature is not base64url".to_string()))?;
        let signed_len = header_b64.len() + 1 + payload_b64.len();
        let signed = token.as_bytes().get(..signed_len).unwrap_or_default();
        if !self
            .keys
            .iter()
            .any(|k| mac_matches(alg, k.as_bytes(), signed, &signature))
        {
            return Err(AuthError::BadSignature);
        }
        decode_object(payload_b64, "payload")
    }
}

fn decode_object(part: &str, what: &str) -> Result<Claims, AuthError> {
    let bytes = B64
        .decode(part)
        .map_err(|_| AuthError::Malformed(format!("{what} is not base64url")))?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(AuthError::Malformed(format!("{what} is not a JSON object"))),
        Err(_) => Err(AuthError::Malformed(format!("{what} is not valid JSON"))),
    }
}

/// Checks that `exp` is present, numeric, and not more than `leeway` seconds before `now`.
/// Returns `exp` in unix seconds (negative values count as 0).
pub(crate) fn check_exp(claims: &Claims, now: u64, leeway: u64) -> Result<u64, AuthError> {
    let exp = match claims.get("exp") {
        None | Some(Value::Null) => return Err(AuthError::MissingExp),
        Some(Value::Number(n)) => {
            if let Some(u) = n.as_u64() {
                u
            } else if n.as_i64().is_some() {
                0 // negative
            } else {
                // A float: saturating conversion (negatives and NaN become 0).
                n.as_f64().map_or(0, |f| f as u64)
            }
        }
        Some(_) => return Err(AuthError::Malformed("'exp' is not a number".to_string())),
    };
    if now > exp.saturating_add(leeway) {
        return Err(AuthError::Expired { exp, now });
    }
    Ok(exp)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    const KEY: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ABCDEFGH";
    const NOW: u64 = 1_700_000_000;

    fn claims(v: Value) -> Claims {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    fn keys(k: &[&str]) -> KeySet {
        KeySet::new(k.iter().map(|s| s.to_string()).collect()).unwrap()
    }

    /// Raw token from hand-made JSON parts, signed HS256 with `key`.
    fn raw_token(key: &str, header: &str, payload: &str) -> String {
        let mut t = format!("{}.{}", B64.encode(header), B64.encode(payload));
        let sig = mac(Algorithm::HS256, key.as_bytes(), t.as_bytes());
        t.push('.');
        t.push_str(&B64.encode(sig));
        t
    }

    // Computed independently with Python's hmac module:
    //   h = b64url('{"alg":"HS256","typ":"JWT"}'); p = b64url('{"aud":"http://localhost/api/v1/hubs/chat",
    //   "exp":4102444800,"nameid":"user1"}'); sig = hmac.new(KEY.encode(), f"{h}.{p}".encode(), sha256)
    const PY_HS256: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJhdWQiOiJodHRwOi8vbG9jYWxob3N0L2FwaS92MS9odWJzL2NoYXQiLCJleHAiOjQxMDI0NDQ4MDAsIm5hbWVpZCI6InVzZXIxIn0.t1sOOXK4GUC45qbD6IXU7WxhDiERkZtce6fr4XWGQfM";
    // The same payload with header {"alg":"HS512","typ":"JWT","kid":"123"} and hashlib.sha512.
    const PY_HS512: &str = "eyJhbGciOiJIUzUxMiIsInR5cCI6IkpXVCIsImtpZCI6IjEyMyJ9.eyJhdWQiOiJodHRwOi8vbG9jYWxob3N0L2FwaS92MS9odWJzL2NoYXQiLCJleHAiOjQxMDI0NDQ4MDAsIm5hbWVpZCI6InVzZXIxIn0.BgpsQ4TlABP7mLak8gDNiXNthT8yXto0UY91u4Yo9Up6JV8GPmYFqr6GawQSuyuEhTFBhBOp03RQ7ZLf5KBtOA";

    fn vector_claims() -> Claims {
        claims(json!({
            "aud": "http://localhost/api/v1/hubs/chat",
            "exp": 4102444800u64,
            "nameid": "user1",
        }))
    }

    #[test]
    fn matches_an_independently_computed_hs256_token() {
        assert_eq!(
            sign(KEY, Algorithm::HS256, None, &vector_claims()),
            PY_HS256
        );
        let got = keys(&[KEY]).verify(PY_HS256, NOW).unwrap();
        assert_eq!(got, vector_claims());
        assert_eq!(
            keys(&["another key"]).verify(PY_HS256, NOW),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn verifies_an_independently_computed_hs512_token_with_kid() {
        let got = keys(&[KEY]).verify(PY_HS512, NOW).unwrap();
        assert_eq!(got, vector_claims());
        assert_eq!(
            sign(KEY, Algorithm::HS512, Some("123"), &vector_claims()),
            PY_HS512
        );
    }

    #[test]
    fn header_has_alg_typ_and_optional_kid() {
        let t = sign(KEY, Algorithm::HS512, Some("k1"), &Claims::new());
        let header = t.split('.').next().unwrap();
        assert_eq!(
            B64.decode(header).unwrap(),
            br#"{"alg":"HS512","typ":"JWT","kid":"k1"}"#
        );
        let t = sign(KEY, Algorithm::HS256, None, &Claims::new());
        let header = t.split('.').next().unwrap();
        assert_eq!(
            B64.decode(header).unwrap(),
            br#"{"alg":"HS256","typ":"JWT"}"#
        );
    }

    #[test]
    fn round_trips_both_algorithms() {
        let c = claims(json!({"exp": NOW + 10, "role": ["a", "b"], "asrs.s.uid": "u"}));
        for alg in [Algorithm::HS256, Algorithm::HS512] {
            let t = sign(KEY, alg, Some("ignored"), &c);
            assert_eq!(keys(&[KEY]).verify(&t, NOW).unwrap(), c, "{alg}");
        }
    }

    #[test]
    fn any_configured_key_verifies() {
        let c = claims(json!({"exp": NOW + 10}));
        let ks = keys(&["primary", "secondary"]);
        assert_eq!(ks.primary(), "primary");
        let by_second = sign("secondary", Algorithm::HS256, Some("kid"), &c);
        assert_eq!(ks.verify(&by_second, NOW).unwrap(), c);
        let by_primary = ks.sign(Algorithm::HS512, &c);
        assert_eq!(keys(&["primary"]).verify(&by_primary, NOW).unwrap(), c);
        assert_eq!(
            keys(&["secondary"]).verify(&by_primary, NOW),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn rejects_tampering() {
        let ks = keys(&[KEY]);
        let t = sign(
            KEY,
            Algorithm::HS256,
            None,
            &claims(json!({"exp": NOW + 10, "sub": "a"})),
        );
        let parts: Vec<&str> = t.split('.').collect();
        let forged = B64.encode(br#"{"exp":9999999999,"sub":"admin"}"#);
        let tampered = format!("{}.{}.{}", parts[0], forged, parts[2]);
        assert_eq!(ks.verify(&tampered, NOW), Err(AuthError::BadSignature));

        let mut sig = B64.decode(parts[2]).unwrap();
        sig[0] ^= 1;
        let tampered = format!("{}.{}.{}", parts[0], parts[1], B64.encode(&sig));
        assert_eq!(ks.verify(&tampered, NOW), Err(AuthError::BadSignature));

        let truncated = format!("{}.{}.{}", parts[0], parts[1], B64.encode(&sig[..16]));
        assert_eq!(ks.verify(&truncated, NOW), Err(AuthError::BadSignature));

        // Re-labelling an HS256 token as HS512 breaks it too.
        let header = B64.encode(br#"{"alg":"HS512","typ":"JWT"}"#);
        let relabelled = format!("{}.{}.{}", header, parts[1], parts[2]);
        assert_eq!(ks.verify(&relabelled, NOW), Err(AuthError::BadSignature));
    }

    #[test]
    fn rejects_alg_none_and_others() {
        let ks = keys(&[KEY]);
        let payload = B64.encode(format!(r#"{{"exp":{}}}"#, NOW + 10));
        for alg in ["none", "None", "RS256", "hs256", "HS384", ""] {
            let header = B64.encode(format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#));
            for sig in ["", "AAAA"] {
                let t = format!("{header}.{payload}.{sig}");
                assert!(
                    matches!(ks.verify(&t, NOW), Err(AuthError::UnsupportedAlgorithm(_))),
                    "{alg}"
                );
            }
        }
        let t = raw_token(KEY, r#"{"typ":"JWT"}"#, r#"{"exp":9999999999}"#);
        assert!(matches!(ks.verify(&t, NOW), Err(AuthError::Malformed(_))));
        let t = raw_token(KEY, r#"{"alg":["HS256"]}"#, r#"{"exp":9999999999}"#);
        assert!(matches!(ks.verify(&t, NOW), Err(AuthError::Malformed(_))));
        let t = raw_token(
            KEY,
            r#"{"alg":"HS256","crit":["x"]}"#,
            r#"{"exp":9999999999}"#,
        );
        assert!(matches!(ks.verify(&t, NOW), Err(AuthError::Malformed(_))));
    }

    #[test]
    fn expiry_allows_leeway() {
        let ks = keys(&[KEY]);
        let t = sign(KEY, Algorithm::HS256, None, &claims(json!({"exp": NOW})));
        assert!(ks.verify(&t, NOW).is_ok());
        assert!(ks.verify(&t, NOW + LEEWAY_SECS).is_ok());
        assert_eq!(
            ks.verify(&t, NOW + LEEWAY_SECS + 1),
            Err(AuthError::Expired {
                exp: NOW,
                now: NOW + LEEWAY_SECS + 1
            })
        );
        // nbf and iat in the future are not checked (the service does not either).
        let t = sign(
            KEY,
            Algorithm::HS256,
            None,
            &claims(json!({"exp": NOW + 100, "nbf": NOW + 50, "iat": NOW + 50, "iss": "x"})),
        );
        assert!(ks.verify(&t, NOW).is_ok());
        // Floats and negative numbers are understood.
        let t = sign(
            KEY,
            Algorithm::HS256,
            None,
            &claims(json!({"exp": NOW as f64 + 0.5})),
        );
        assert!(ks.verify(&t, NOW).is_ok());
        let t = sign(KEY, Algorithm::HS256, None, &claims(json!({"exp": -5})));
        assert_eq!(
            ks.verify(&t, NOW),
            Err(AuthError::Expired { exp: 0, now: NOW })
        );
    }

    #[test]
    fn requires_a_numeric_exp() {
        let ks = keys(&[KEY]);
        let t = sign(KEY, Algorithm::HS256, None, &claims(json!({"aud": "x"})));
        assert_eq!(ks.verify(&t, NOW), Err(AuthError::MissingExp));
        let t = sign(KEY, Algorithm::HS256, None, &claims(json!({"exp": null})));
        assert_eq!(ks.verify(&t, NOW), Err(AuthError::MissingExp));
        let t = sign(
            KEY,
            Algorithm::HS256,
            None,
            &claims(json!({"exp": "9999999999"})),
        );
        assert!(matches!(ks.verify(&t, NOW), Err(AuthError::Malformed(_))));
    }

    #[test]
    fn rejects_malformed_tokens() {
        let ks = keys(&[KEY]);
        for t in ["", "a", "a.b", "a.b.c.d", "...", "!!.!!.!!"] {
            assert!(
                matches!(ks.verify(t, NOW), Err(AuthError::Malformed(_))),
                "{t}"
            );
        }
        let t = raw_token(KEY, r#"{"alg":"HS256"}"#, r#"[1,2]"#);
        assert!(matches!(ks.verify(&t, NOW), Err(AuthError::Malformed(_))));
        let t = raw_token(KEY, r#"{"alg":"HS256"}"#, r#"{"exp":1"#);
        assert!(matches!(ks.verify(&t, NOW), Err(AuthError::Malformed(_))));
        let long = "a".repeat(MAX_TOKEN_LEN + 1);
        assert_eq!(
            ks.verify(&long, NOW),
            Err(AuthError::TokenTooLong {
                len: MAX_TOKEN_LEN + 1,
                max: MAX_TOKEN_LEN
            })
        );
    }

    #[test]
    fn padded_base64_is_tolerated() {
        let ks = keys(&[KEY]);
        // A 28-byte payload is not a multiple of 3, so its padded form ends in `==`.
        let header = B64.encode(br#"{"alg":"HS256"}"#);
        let body = r#"{"exp":9999999999,"x":"abc"}"#;
        let padded = base64::engine::general_purpose::URL_SAFE.encode(body);
        assert!(padded.ends_with('='));
        let signed = format!("{header}.{padded}");
        let sig = B64.encode(mac(Algorithm::HS256, KEY.as_bytes(), signed.as_bytes()));
        assert!(ks.verify(&format!("{signed}.{sig}"), NOW).is_ok());
    }

    #[test]
    fn key_sets_need_non_empty_keys() {
        assert!(matches!(
            KeySet::new(vec![]),
            Err(AuthError::InvalidKeys(_))
        ));
        assert!(matches!(
            KeySet::new(vec!["a".into(), String::new()]),
            Err(AuthError::InvalidKeys(_))
        ));
        let dbg = format!("{:?}", keys(&["SECRETKEY"]));
        assert!(!dbg.contains("SECRETKEY"), "{dbg}");
    }

    #[test]
    fn error_messages_do_not_leak_keys() {
        let ks = keys(&[KEY]);
        let t = sign(KEY, Algorithm::HS256, None, &claims(json!({"exp": 1})));
        for err in [
            ks.verify(&t, NOW).unwrap_err(),
            ks.verify(&t.replace('.', ""), NOW).unwrap_err(),
            keys(&["x"]).verify(&t, NOW).unwrap_err(),
        ] {
            assert!(!err.to_string().contains(KEY), "{err}");
        }
    }

    #[test]
    fn generated_keys_are_random_44_char_base64() {
        let a = generate_access_key();
        let b = generate_access_key();
        assert_eq!(a.len(), 44);
        assert_ne!(a, b);
        assert!(base64::engine::general_purpose::STANDARD.decode(&a).is_ok());
    }

    #[test]
    fn algorithm_names() {
        assert_eq!("hs512".parse::<Algorithm>(), Ok(Algorithm::HS512));
        assert_eq!(Algorithm::default().to_string(), "HS256");
        assert!("none".parse::<Algorithm>().is_err());
    }

    proptest! {
        #[test]
        fn garbage_never_panics(s in ".{0,300}") {
            let _ = keys(&[KEY]).verify(&s, NOW);
        }

        #[test]
        fn dotted_garbage_never_panics(a in "[A-Za-z0-9_=-]{0,60}", b in "[A-Za-z0-9_=-]{0,60}", c in "[A-Za-z0-9_=-]{0,90}") {
            let _ = keys(&[KEY]).verify(&format!("{a}.{b}.{c}"), NOW);
        }

        #[test]
        fn signed_garbage_never_panics(header in ".{0,60}", payload in ".{0,120}") {
            let _ = keys(&[KEY]).verify(&raw_token(KEY, &header, &payload), NOW);
        }

        #[test]
        fn round_trip(key in "[ -~]{1,64}", sub in ".{0,40}", exp in 0u64..u64::MAX / 2, hs512: bool) {
            let alg = if hs512 { Algorithm::HS512 } else { Algorithm::HS256 };
            let c = claims(json!({"exp": exp, "sub": sub}));
            let t = sign(&key, alg, None, &c);
            prop_assert_eq!(keys(&[&key]).verify(&t, exp), Ok(c));
        }

        #[test]
        fn single_bit_flips_are_rejected(pos in 0usize..200, bit in 0u8..6) {
            let t = sign(KEY, Algorithm::HS256, None, &claims(json!({"exp": 9_999_999_999u64, "sub": "user"})));
            let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
            let mut bytes = t.clone().into_bytes();
            let i = pos % bytes.len();
            prop_assume!(bytes[i] != b'.');
            let idx = alphabet.iter().position(|&c| c == bytes[i]).unwrap();
            bytes[i] = alphabet[idx ^ (1 << bit)];
            let flipped = String::from_utf8(bytes).unwrap();
            prop_assert!(keys(&[KEY]).verify(&flipped, NOW).is_err());
        }
    }
}

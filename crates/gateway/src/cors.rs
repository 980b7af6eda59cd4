//! Which browser origins may call the gateway (`--cors-allowed-origins`).
//!
//! Like Azure SignalR's `cors.allowedOrigins`: `*` (the default) lets every origin in, and the
//! answer echoes the request's origin with credentials allowed, because the official browser
//! client sends negotiate with credentials by default and a literal `*` would make the browser
//! refuse it. A list lets in exactly those origins (scheme, host and port, compared without
//! regard to case); any other origin gets no CORS headers at all, so the browser refuses the
//! response, and credentials are allowed only for a listed origin. CORS protects browser users,
//! not the server: tokens are what keep other callers out.

use axum::http::HeaderValue;
use tower_http::cors::{AllowCredentials, AllowHeaders, AllowMethods, AllowOrigin, CorsLayer};

/// The allowed origins.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum CorsOrigins {
    /// Every origin (`*`).
    #[default]
    Any,
    /// Exactly these origins, lowercased, e.g. `https://app.example.com:8443`.
    Listed(Vec<String>),
}

impl CorsOrigins {
    /// Parses the flag's values: `*`, or origins `scheme://host[:port]` (no path, query or
    /// trailing slash). `*` among other origins means every origin.
    pub fn parse<S: AsRef<str>>(values: &[S]) -> Result<CorsOrigins, String> {
        let mut listed = Vec::new();
        for value in values {
            let value = value.as_ref().trim();
            if value.is_empty() {
                continue;
            }
            if value == "*" {
                return Ok(CorsOrigins::Any);
            }
            listed.push(origin(value)?);
        }
        if listed.is_empty() {
            return Err("--cors-allowed-origins needs '*' or at least one origin".into());
        }
        Ok(CorsOrigins::Listed(listed))
    }

    /// Whether a request with this `Origin` header gets CORS headers.
    pub fn allows(&self, origin: &[u8]) -> bool {
        match self {
            CorsOrigins::Any => true,
            CorsOrigins::Listed(list) => list
                .iter()
                .any(|allowed| allowed.as_bytes().eq_ignore_ascii_case(origin)),
        }
    }

    /// The layer that answers preflights and adds CORS headers to allowed origins.
    pub fn layer(&self) -> CorsLayer {
        let (allow, credentials) = match self {
            CorsOrigins::Any => (AllowOrigin::mirror_request(), AllowCredentials::yes()),
            CorsOrigins::Listed(_) => {
                let (a, b) = (self.clone(), self.clone());
                (
                    AllowOrigin::predicate(move |origin: &HeaderValue, _| {
                        a.allows(origin.as_bytes())
                    }),
                    AllowCredentials::predicate(move |origin: &HeaderValue, _| {
                        b.allows(origin.as_bytes())
                    }),
                )
            }
        };
        CorsLayer::new()
            .allow_origin(allow)
            .allow_credentials(credentials)
            .allow_methods(AllowMethods::mirror_request())
            .allow_headers(AllowHeaders::mirror_request())
    }
}

/// Checks and normalizes one origin.
fn origin(value: &str) -> Result<String, String> {
    let bad = |why: &str| {
        format!("--cors-allowed-origins: '{value}' is not an origin ({why}); write e.g. https://app.example.com:8443")
    };
    let (scheme, rest) = value.split_once("://").ok_or_else(|| bad("no scheme"))?;
    if scheme.is_empty()
        || !scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
    {
        return Err(bad("bad scheme"));
    }
    if rest.is_empty() || rest.contains(['/', '?', '#', '@', ' ']) {
        return Err(bad("only scheme, host and port"));
    }
    let (host, port) = match rest.strip_prefix('[') {
        // An IPv6 literal: `[::1]` or `[::1]:8080`.
        Some(v6) => {
            let (host, after) = v6.split_once(']').ok_or_else(|| bad("unclosed ["))?;
            match after {
                "" => (host, None),
                _ => (
                    host,
                    Some(after.strip_prefix(':').ok_or_else(|| bad("bad port"))?),
                ),
            }
        }
        None => match rest.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (rest, None),
        },
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    if port.is_some_and(|p| p.parse::<u16>().is_err()) {
        return Err(bad("bad port"));
    }
    if HeaderValue::from_str(value).is_err() {
        return Err(bad("not a valid header value"));
    }
    Ok(value.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn star_and_lists() {
        assert_eq!(CorsOrigins::parse(&["*"]), Ok(CorsOrigins::Any));
        assert_eq!(
            CorsOrigins::parse(&["https://a.example", "*"]),
            Ok(CorsOrigins::Any)
        );
        let listed = CorsOrigins::parse(&["https://App.example:8443", "http://localhost:3000"])
            .expect("valid");
        assert!(listed.allows(b"https://app.example:8443"));
        assert!(listed.allows(b"HTTP://LOCALHOST:3000"));
        assert!(!listed.allows(b"https://app.example"));
        assert!(!listed.allows(b"https://app.example:8443.evil"));
        assert!(!listed.allows(b"null"));
        assert!(CorsOrigins::Any.allows(b"null"));
    }

    #[test]
    fn bad_origins_are_refused() {
        for bad in [
            "app.example",
            "https://app.example/",
            "https://app.example/path",
            "https://",
            "https://a:port",
            "https://a?x",
            "://a",
        ] {
            assert!(CorsOrigins::parse(&[bad]).is_err(), "{bad}");
        }
        assert!(CorsOrigins::parse::<&str>(&[]).is_err());
        assert!(CorsOrigins::parse(&["https://[::1]:8080"]).is_ok());
    }

    fn listed_allows(host: &str, port: u16, origin: &str) -> bool {
        CorsOrigins::parse(&[format!("https://{host}:{port}")])
            .expect("valid")
            .allows(origin.as_bytes())
    }

    proptest! {
        #[test]
        fn only_listed_origins_are_allowed(host in "[a-z]{1,10}", other in "[a-z]{1,10}", port in 1u16..) {
            let exact = format!("https://{host}:{port}");
            let upper = format!("https://{}:{}", host.to_uppercase(), port);
            let plain_http = format!("http://{host}:{port}");
            prop_assert!(listed_allows(&host, port, &exact));
            prop_assert!(listed_allows(&host, port, &upper));
            prop_assert!(!listed_allows(&host, port, &plain_http));
            prop_assume!(other != host);
            let another = format!("https://{other}:{port}");
            prop_assert!(!listed_allows(&host, port, &another));
        }
    }
}

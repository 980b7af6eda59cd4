//! Azure SignalR connection strings: parsing, validation and canonical printing.
//!
//! The grammar follows the service SDK's parser so that any string an application already uses
//! with Azure SignalR (or the local emulator) works unchanged against Switchboard: `;`-separated
//! `key=value` pairs split on the first `=`, keys case-insensitive, values trimmed, empty segments
//! ignored, a repeated key rejected. Unknown keys are ignored, as the SDK does.

use std::fmt;
use std::str::FromStr;

use crate::error::AuthError;
use crate::uri::AbsoluteUri;

/// `AuthType` values that mean Entra ID (AAD) credentials instead of an access key.
const AAD_AUTH_TYPES: [&str; 4] = ["aad", "azure", "azure.app", "azure.msi"];

/// A parsed, validated connection string.
///
/// `Debug` redacts the access key and client secret; [`ConnectionString::to_string_canonical`]
/// prints them (that is its purpose).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct ConnectionString {
    /// `Endpoint`: absolute http/https URI without trailing `/` (Port not applied).
    pub endpoint: String,
    /// `AccessKey`: the HMAC key (its UTF-8 bytes sign tokens). `None` only for AAD auth types.
    pub access_key: Option<String>,
    /// `Version`, e.g. `1.0`.
    pub version: Option<String>,
    /// `Port`: overrides the endpoint's port.
    pub port: Option<u16>,
    /// `ClientEndpoint`: where clients are sent (reverse proxy / custom domain), no trailing `/`.
    pub client_endpoint: Option<String>,
    /// `ServerEndpoint`: where app servers and REST callers connect, no trailing `/`.
    pub server_endpoint: Option<String>,
    /// `AuthType` as written (`aad`, `azure`, `azure.app`, `azure.msi` mean Entra ID).
    pub auth_type: Option<String>,
    /// `ClientId` (Entra ID).
    pub client_id: Option<String>,
    /// `ClientSecret` (Entra ID).
    pub client_secret: Option<String>,
    /// `ClientCert` (Entra ID).
    pub client_cert: Option<String>,
    /// `TenantId` (Entra ID).
    pub tenant_id: Option<String>,
}

impl fmt::Debug for ConnectionString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redact = |v: &Option<String>| v.as_ref().map(|_| "<redacted>");
        f.debug_struct("ConnectionString")
            .field("endpoint", &self.endpoint)
            .field("access_key", &redact(&self.access_key))
            .field("version", &self.version)
            .field("port", &self.port)
            .field("client_endpoint", &self.client_endpoint)
            .field("server_endpoint", &self.server_endpoint)
            .field("auth_type", &self.auth_type)
            .field("client_id", &self.client_id)
            .field("client_secret", &redact(&self.client_secret))
            .field("client_cert", &self.client_cert)
            .field("tenant_id", &self.tenant_id)
            .finish()
    }
}

/// Canonical spellings of the keys we understand, in the order they are printed.
const KEYS: [&str; 11] = [
    "Endpoint",
    "Port",
    "AccessKey",
    "Version",
    "ClientEndpoint",
    "ServerEndpoint",
    "AuthType",
    "ClientId",
    "ClientSecret",
    "ClientCert",
    "TenantId",
];

impl FromStr for ConnectionString {
    type Err = AuthError;

    fn from_str(s: &str) -> Result<Self, AuthError> {
        // (canonical key, value) for every known key; unknown keys are only checked for repeats.
        let mut seen: Vec<String> = Vec::new();
        let mut values: Vec<(&'static str, String)> = Vec::new();
        for (n, segment) in s.split(';').enumerate() {
            if segment.trim().is_empty() {
                continue;
            }
            // Never echo the segment: a malformed one may well be a key.
            let (key, value) = segment.split_once('=').ok_or_else(|| {
                AuthError::conn_str(
                    "ConnectionString",
                    format!("segment {} is not of the form key=value", n + 1),
                )
            })?;
            let key = key.trim();
            if key.is_empty() {
                return Err(AuthError::conn_str(
                    "ConnectionString",
                    format!("segment {} has an empty key", n + 1),
                ));
            }
            let lower = key.to_lowercase();
            let canonical = KEYS.iter().find(|k| k.eq_ignore_ascii_case(key)).copied();
            if seen.contains(&lower) {
                let name = canonical.map_or_else(|| key.to_string(), str::to_string);
                return Err(AuthError::conn_str(&name, "is given more than once"));
            }
            seen.push(lower);
            if let Some(canonical) = canonical {
                values.push((canonical, value.trim().to_string()));
            }
        }
        let take = |name: &str| -> Option<String> {
            values
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.clone())
        };
        let optional = |name: &str| take(name).filter(|v| !v.is_empty());

        let endpoint = match take("Endpoint") {
            Some(v) if !v.is_empty() => v,
            _ => return Err(AuthError::conn_str("Endpoint", "is required")),
        };
        let endpoint = AbsoluteUri::parse(&endpoint)
            .map_err(|reason| AuthError::conn_str("Endpoint", reason))?
            .render(None);

        let port = match take("Port") {
            None => None,
            Some(v) => match v.parse::<u16>() {
                Ok(p) if p > 0 && v.bytes().all(|b| b.is_ascii_digit()) => Some(p),
                _ => {
                    return Err(AuthError::conn_str(
                        "Port",
                        "must be an integer in 1..=65535",
                    ))
                }
            },
        };

        let version = match take("Version") {
            None => None,
            Some(v) if is_valid_version(&v) => Some(v),
            Some(_) => {
                return Err(AuthError::conn_str(
                    "Version",
                    "must look like 1.0 (only service version 1.x is supported)",
                ))
            }
        };

        let auth_type = optional("AuthType");
        let is_aad = auth_type
            .as_deref()
            .is_some_and(|t| AAD_AUTH_TYPES.iter().any(|a| a.eq_ignore_ascii_case(t)));
        let access_key = optional("AccessKey");
        if access_key.is_none() && !is_aad {
            return Err(AuthError::conn_str(
                "AccessKey",
                "is required unless AuthType is aad, azure, azure.app or azure.msi",
            ));
        }

        let uri_key = |name: &str| -> Result<Option<String>, AuthError> {
            match optional(name) {
                None => Ok(None),
                Some(v) => AbsoluteUri::parse(&v)
                    .map(|u| Some(u.render(None)))
                    .map_err(|reason| AuthError::conn_str(name, reason)),
            }
        };

        Ok(ConnectionString {
            endpoint,
            access_key,
            version,
            port,
            client_endpoint: uri_key("ClientEndpoint")?,
            server_endpoint: uri_key("ServerEndpoint")?,
            auth_type,
            client_id: optional("ClientId"),
            client_secret: optional("ClientSecret"),
            client_cert: optional("ClientCert"),
            tenant_id: optional("TenantId"),
        })
    }
}

/// `^1\.\d+(?:[\w-.]+)?$`
fn is_valid_version(v: &str) -> bool {
    let Some(rest) = v.strip_prefix("1.") else {
        return false;
    };
    rest.chars().next().is_some_and(|c| c.is_ascii_digit())
        && rest
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '-' || c == '.')
}

impl ConnectionString {
    /// A connection string for `endpoint` signed with `access_key`, `Version=1.0`.
    pub fn new(endpoint: &str, access_key: &str) -> Result<Self, AuthError> {
        let endpoint = AbsoluteUri::parse(endpoint)
            .map_err(|reason| AuthError::conn_str("Endpoint", reason))?
            .render(None);
        if access_key.is_empty() {
            return Err(AuthError::conn_str("AccessKey", "must not be empty"));
        }
        Ok(ConnectionString {
            endpoint,
            access_key: Some(access_key.to_string()),
            version: Some("1.0".to_string()),
            ..ConnectionString::default()
        })
    }

    /// Endpoint with Port applied, no trailing slash, e.g. `http://localhost:8080`.
    pub fn base_url(&self) -> String {
        match AbsoluteUri::parse(&self.endpoint) {
            Ok(uri) => uri.render(self.port),
            Err(_) => self.endpoint.trim_end_matches('/').to_string(),
        }
    }

    /// `ClientEndpoint` if set, else [`ConnectionString::base_url`].
    pub fn client_base_url(&self) -> String {
        match &self.client_endpoint {
            Some(e) => e.trim_end_matches('/').to_string(),
            None => self.base_url(),
        }
    }

    /// `ServerEndpoint` if set, else [`ConnectionString::base_url`]: where REST calls go.
    pub fn server_base_url(&self) -> String {
        match &self.server_endpoint {
            Some(e) => e.trim_end_matches('/').to_string(),
            None => self.base_url(),
        }
    }

    /// Whether `AuthType` selects Entra ID instead of the access key.
    pub fn is_aad(&self) -> bool {
        self.auth_type
            .as_deref()
            .is_some_and(|t| AAD_AUTH_TYPES.iter().any(|a| a.eq_ignore_ascii_case(t)))
    }

    /// The string form that parses back to `self`:
    /// `Endpoint=...;[Port=...;]AccessKey=...;Version=1.0;` followed by any other keys that are set.
    /// Contains the access key: do not log it.
    pub fn to_string_canonical(&self) -> String {
        let version = self.version.clone().unwrap_or_else(|| "1.0".to_string());
        let port = self.port.map(|p| p.to_string());
        let fields: [(&str, Option<&str>); 11] = [
            ("Endpoint", Some(self.endpoint.as_str())),
            ("Port", port.as_deref()),
            ("AccessKey", self.access_key.as_deref()),
            ("Version", Some(version.as_str())),
            ("ClientEndpoint", self.client_endpoint.as_deref()),
            ("ServerEndpoint", self.server_endpoint.as_deref()),
            ("AuthType", self.auth_type.as_deref()),
            ("ClientId", self.client_id.as_deref()),
            ("ClientSecret", self.client_secret.as_deref()),
            ("ClientCert", self.client_cert.as_deref()),
            ("TenantId", self.tenant_id.as_deref()),
        ];
        let mut out = String::new();
        for (key, value) in fields {
            if let Some(v) = value {
                out.push_str(key);
                out.push('=');
                out.push_str(v);
                out.push(';');
            }
        }
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const EMULATOR: &str = "Endpoint=http://localhost;Port=8888;AccessKey=ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ABCDEFGH;Version=1.0;";

    fn parse(s: &str) -> Result<ConnectionString, AuthError> {
        s.parse()
    }

    fn err_key(s: &str) -> String {
        match parse(s) {
            Err(AuthError::BadConnectionString { key, .. }) => key,
            other => panic!("expected a connection string error for {s:?}, got {other:?}"),
        }
    }

    #[test]
    fn parses_the_emulator_string() {
        let cs = parse(EMULATOR).unwrap();
        assert_eq!(cs.endpoint, "http://localhost");
        assert_eq!(cs.port, Some(8888));
        assert_eq!(
            cs.access_key.as_deref(),
            Some("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ABCDEFGH")
        );
        assert_eq!(cs.version.as_deref(), Some("1.0"));
        assert_eq!(cs.base_url(), "http://localhost:8888");
        assert_eq!(cs.client_base_url(), "http://localhost:8888");
        assert_eq!(cs.server_base_url(), "http://localhost:8888");
        assert!(!cs.is_aad());
        assert_eq!(
            cs.to_string_canonical(),
            "Endpoint=http://localhost;Port=8888;AccessKey=ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ABCDEFGH;Version=1.0;"
        );
        assert_eq!(parse(&cs.to_string_canonical()).unwrap(), cs);
    }

    #[test]
    fn parses_every_key() {
        let cs = parse(
            "Endpoint=https://sb.example.com/;AccessKey=k=with=equals;Version=1.1-preview;Port=443;\
             ClientEndpoint=https://proxy.example.com:8443/;ServerEndpoint=http://internal:8080;\
             AuthType=azure.app;ClientId=cid;ClientSecret=sec;ClientCert=/c.pem;TenantId=tid;Other=x",
        )
        .unwrap();
        assert_eq!(cs.endpoint, "https://sb.example.com");
        assert_eq!(cs.access_key.as_deref(), Some("k=with=equals"));
        assert_eq!(cs.version.as_deref(), Some("1.1-preview"));
        assert_eq!(cs.port, Some(443));
        assert_eq!(
            cs.client_endpoint.as_deref(),
            Some("https://proxy.example.com:8443")
        );
        assert_eq!(cs.server_endpoint.as_deref(), Some("http://internal:8080"));
        assert_eq!(cs.auth_type.as_deref(), Some("azure.app"));
        assert!(cs.is_aad());
        assert_eq!(cs.client_id.as_deref(), Some("cid"));
        assert_eq!(cs.client_secret.as_deref(), Some("sec"));
        assert_eq!(cs.client_cert.as_deref(), Some("/c.pem"));
        assert_eq!(cs.tenant_id.as_deref(), Some("tid"));
        assert_eq!(cs.base_url(), "https://sb.example.com:443");
        assert_eq!(cs.client_base_url(), "https://proxy.example.com:8443");
        assert_eq!(cs.server_base_url(), "http://internal:8080");
        assert_eq!(parse(&cs.to_string_canonical()).unwrap(), cs);
    }

    #[test]
    fn keys_are_case_insensitive_and_values_trimmed() {
        let cs = parse("  endpoint = HTTP://Host:81/ ;ACCESSKEY= key ; version=1.0 ;;; ").unwrap();
        assert_eq!(cs.endpoint, "http://Host:81");
        assert_eq!(cs.access_key.as_deref(), Some("key"));
        assert_eq!(cs.version.as_deref(), Some("1.0"));
        assert_eq!(cs.port, None);
        assert_eq!(cs.base_url(), "http://Host:81");
    }

    #[test]
    fn port_overrides_endpoint_port_and_keeps_path() {
        let cs = parse("Endpoint=http://h:1/prefix;Port=2;AccessKey=k").unwrap();
        assert_eq!(cs.base_url(), "http://h:2/prefix");
        let cs = parse("Endpoint=http://[::1]:1;Port=65535;AccessKey=k").unwrap();
        assert_eq!(cs.base_url(), "http://[::1]:65535");
    }

    #[test]
    fn rejects_duplicates_naming_the_key() {
        assert_eq!(
            err_key("Endpoint=http://a;AccessKey=k;accesskey=k2"),
            "AccessKey"
        );
        assert_eq!(err_key("Endpoint=http://a;AccessKey=k;x=1;X=2"), "X");
        let msg = parse("Endpoint=http://a;ENDPOINT=http://b;AccessKey=k")
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("Endpoint") && msg.contains("more than once"),
            "{msg}"
        );
    }

    #[test]
    fn requires_endpoint() {
        assert_eq!(err_key("AccessKey=k;Version=1.0"), "Endpoint");
        assert_eq!(err_key("Endpoint=;AccessKey=k"), "Endpoint");
        assert_eq!(err_key(""), "Endpoint");
        assert_eq!(err_key("Endpoint=localhost;AccessKey=k"), "Endpoint");
        assert_eq!(err_key("Endpoint=ftp://h;AccessKey=k"), "Endpoint");
        assert_eq!(err_key("Endpoint=http://h?x=1;AccessKey=k"), "Endpoint");
    }

    #[test]
    fn rejects_bad_ports() {
        for p in ["0", "65536", "-1", "+1", "abc", "", "8 8"] {
            let s = format!("Endpoint=http://h;AccessKey=k;Port={p}");
            assert_eq!(err_key(&s), "Port", "{p}");
        }
        assert_eq!(
            parse("Endpoint=http://h;AccessKey=k;Port=65535")
                .unwrap()
                .port,
            Some(65535)
        );
        assert_eq!(
            parse("Endpoint=http://h;AccessKey=k;Port=1").unwrap().port,
            Some(1)
        );
    }

    #[test]
    fn validates_versions() {
        for ok in ["1.0", "1.10", "1.0-preview", "1.0.1", "1.2_a"] {
            let s = format!("Endpoint=http://h;AccessKey=k;Version={ok}");
            assert_eq!(parse(&s).unwrap().version.as_deref(), Some(ok));
        }
        for bad in ["", "1", "1.", "2.0", "1.x", "v1.0", "1.0 beta", "1.0+x"] {
            let s = format!("Endpoint=http://h;AccessKey=k;Version={bad}");
            assert_eq!(err_key(&s), "Version", "{bad}");
        }
    }

    #[test]
    fn access_key_required_unless_aad() {
        assert_eq!(err_key("Endpoint=http://h"), "AccessKey");
        assert_eq!(err_key("Endpoint=http://h;AccessKey="), "AccessKey");
        assert_eq!(err_key("Endpoint=http://h;AuthType=other"), "AccessKey");
        for t in ["aad", "AAD", "azure", "azure.app", "Azure.Msi"] {
            let cs = parse(&format!("Endpoint=http://h;AuthType={t}")).unwrap();
            assert!(cs.is_aad());
            assert_eq!(cs.access_key, None);
        }
    }

    #[test]
    fn validates_client_and_server_endpoints() {
        assert_eq!(
            err_key("Endpoint=http://h;AccessKey=k;ClientEndpoint=proxy"),
            "ClientEndpoint"
        );
        assert_eq!(
            err_key("Endpoint=http://h;AccessKey=k;ServerEndpoint=ws://x"),
            "ServerEndpoint"
        );
    }

    #[test]
    fn malformed_segments_are_reported_without_their_content() {
        let err = parse("Endpoint=http://h;SECRETSECRET").unwrap_err();
        assert_eq!(
            err_key("Endpoint=http://h;SECRETSECRET"),
            "ConnectionString"
        );
        assert!(!err.to_string().contains("SECRET"), "{err}");
        assert_eq!(
            err_key("Endpoint=http://h;=v;AccessKey=k"),
            "ConnectionString"
        );
    }

    #[test]
    fn debug_redacts_secrets() {
        let cs = parse(
            "Endpoint=http://h;AccessKey=TOPSECRETKEY;ClientSecret=TOPSECRETCLIENT;AuthType=x",
        )
        .unwrap();
        let dbg = format!("{cs:?}");
        assert!(!dbg.contains("TOPSECRET"), "{dbg}");
        assert!(dbg.contains("http://h"));
    }

    #[test]
    fn new_builds_a_canonical_string() {
        let cs = ConnectionString::new("http://127.0.0.1:8080/", "key").unwrap();
        assert_eq!(
            cs.to_string_canonical(),
            "Endpoint=http://127.0.0.1:8080;AccessKey=key;Version=1.0;"
        );
        assert!(ConnectionString::new("nope", "key").is_err());
        assert!(ConnectionString::new("http://h", "").is_err());
    }

    proptest! {
        #[test]
        fn garbage_never_panics(s in ".{0,200}") {
            let _ = parse(&s);
        }

        #[test]
        fn structured_garbage_never_panics(
            parts in proptest::collection::vec(
                ("(?i)(endpoint|accesskey|port|version|clientendpoint|x)", "[ -~]{0,30}"),
                0..6,
            )
        ) {
            let s: String = parts.iter().map(|(k, v)| format!("{k}={v};")).collect();
            if let Ok(cs) = parse(&s) {
                // Whatever parses prints to a string that parses back to the same settings.
                let canonical = cs.to_string_canonical();
                let again = parse(&canonical);
                prop_assert!(again.is_ok(), "{:?}", again);
                let again = again.unwrap_or_default();
                prop_assert_eq!(again.to_string_canonical(), canonical);
                prop_assert_eq!(again.base_url(), cs.base_url());
            }
        }
    }
}

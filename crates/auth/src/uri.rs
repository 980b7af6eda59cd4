//! The little URI handling auth needs, kept here so the crate stays free of a URL library.
//!
//! Connection strings need absolute `http`/`https` URIs split into scheme, host, port and path;
//! audience checks need a path and query pulled out of an `aud` value and percent-decoded. Both
//! are lenient in what they accept and never panic.

/// An absolute `http`/`https` URI as it appears in a connection string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AbsoluteUri {
    /// Lower-case `http` or `https`.
    pub scheme: String,
    /// Host as written (IPv6 literals keep their brackets).
    pub host: String,
    /// Explicit port, if the URI had one.
    pub port: Option<u16>,
    /// Path without trailing `/` (empty for the root).
    pub path: String,
}

impl AbsoluteUri {
    /// Parses `s` as an absolute http/https URI without query or fragment; trailing `/` trimmed.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (scheme, rest) = s
            .split_once("://")
            .ok_or_else(|| "must be an absolute http or https URI".to_string())?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "http" && scheme != "https" {
            return Err("must be an absolute http or https URI".to_string());
        }
        if rest.contains('?') || rest.contains('#') {
            return Err("must not contain a query or fragment".to_string());
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.contains('@') {
            return Err("must not contain user information".to_string());
        }
        let (host, port) = split_host_port(authority)?;
        if host.is_empty() {
            return Err("has no host".to_string());
        }
        if host
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '\\')
        {
            return Err("has an invalid host".to_string());
        }
        if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("has an invalid path".to_string());
        }
        Ok(AbsoluteUri {
            scheme,
            host: host.to_string(),
            port,
            path: path.trim_end_matches('/').to_string(),
        })
    }

    /// Renders the URI, with `port` (if any) overriding the parsed one; no trailing `/`.
    pub fn render(&self, port: Option<u16>) -> String {
        match port.or(self.port) {
            Some(p) => format!("{}://{}:{}{}", self.scheme, self.host, p, self.path),
            None => format!("{}://{}{}", self.scheme, self.host, self.path),
        }
    }
}

fn split_host_port(authority: &str) -> Result<(&str, Option<u16>), String> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        // IPv6 literal: [addr] or [addr]:port
        let end = rest
            .find(']')
            .ok_or_else(|| "has an unterminated IPv6 host".to_string())?;
        let host = &authority[..end + 2];
        match &rest[end + 1..] {
            "" => (host, None),
            p => match p.strip_prefix(':') {
                Some(p) => (host, Some(p)),
                None => return Err("has an invalid host".to_string()),
            },
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port = match port {
        None | Some("") => None,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => Some(n),
            _ => return Err("has an invalid port".to_string()),
        },
    };
    Ok((host, port))
}

/// Splits an `aud` value into its (raw) path and query. Accepts an absolute URI of any scheme
/// (`scheme://authority/path?query`) or a bare absolute path (`/path?query`); anything else has no
/// path and yields `None`. The fragment is dropped.
pub(crate) fn path_and_query(s: &str) -> Option<(&str, &str)> {
    let s = s.trim();
    let s = match s.find('#') {
        Some(i) => &s[..i],
        None => s,
    };
    let after_authority = if s.starts_with('/') && !s.starts_with("//") {
        s
    } else {
        let (_, rest) = s.split_once("://")?;
        match rest.find(['/', '?']) {
            Some(i) => &rest[i..],
            None => "",
        }
    };
    Some(match after_authority.split_once('?') {
        Some((p, q)) => (p, q),
        None => (after_authority, ""),
    })
}

/// Normalises a URL path for audience comparison: query/fragment dropped, trailing `/` removed
/// (the root becomes the empty string), percent-decoded except where decoding would change the
/// path's structure, lower-cased. `%2F` (and `%3F`, `%23`, `%25`) stay encoded, so a name that
/// contains a `/` never reads as two segments: `users/u%2Fgroups%2Fg` is one user, not the user
/// `u` in group `g`. Trimming happens before decoding, so an encoded trailing `%2F` is kept.
pub(crate) fn normalize_path(raw: &str) -> String {
    let raw = match raw.find(['?', '#']) {
        Some(i) => &raw[..i],
        None => raw,
    };
    decode_within_segments(raw.trim_end_matches('/')).to_lowercase()
}

/// Percent-decodes `s` except escapes of `/`, `?`, `#` and `%`, which are kept (upper-cased) so
/// the result has the same segments as the input.
fn decode_within_segments(s: &str) -> String {
    decode(s, |b| matches!(b, b'/' | b'?' | b'#' | b'%'))
}

/// Values of query parameter `name` (matched case-insensitively after decoding), decoded.
pub(crate) fn query_values(query: &str, name: &str) -> Vec<String> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            if percent_decode(k).eq_ignore_ascii_case(name) {
                Some(percent_decode(v))
            } else {
                None
            }
        })
        .collect()
}

/// Percent-decodes `s` (invalid escapes are kept literally; invalid UTF-8 is replaced).
pub(crate) fn percent_decode(s: &str) -> String {
    decode(s, |_| false)
}

/// Percent-decodes `s`, except escapes of bytes for which `keep` holds (re-encoded upper-case).
fn decode(s: &str, keep: impl Fn(u8) -> bool) -> String {
    if !s.contains('%') {
        return s.to_string();
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hi = bytes.get(i + 1).copied().and_then(hex_val);
            let lo = bytes.get(i + 2).copied().and_then(hex_val);
            if let (Some(h), Some(l)) = (hi, lo) {
                let decoded = h << 4 | l;
                if keep(decoded) {
                    out.extend_from_slice(format!("%{decoded:02X}").as_bytes());
                } else {
                    out.push(decoded);
                }
                i += 3;
                continue;
            }
        }
        out.push(b);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters (like .NET `EscapeDataString`).
pub(crate) fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_absolute_uris() {
        let u = AbsoluteUri::parse("HTTPS://Example.com:8443/prefix/").unwrap();
        assert_eq!(u.scheme, "https");
        assert_eq!(u.host, "Example.com");
        assert_eq!(u.port, Some(8443));
        assert_eq!(u.path, "/prefix");
        assert_eq!(u.render(None), "https://Example.com:8443/prefix");
        assert_eq!(u.render(Some(1)), "https://Example.com:1/prefix");

        let u = AbsoluteUri::parse("http://[::1]:8080").unwrap();
        assert_eq!(u.host, "[::1]");
        assert_eq!(u.port, Some(8080));
        assert_eq!(AbsoluteUri::parse("http://[::1]").unwrap().port, None);
        assert_eq!(AbsoluteUri::parse("http://h:").unwrap().port, None);

        for bad in [
            "localhost",
            "ftp://x",
            "http://",
            "http:///path",
            "http://h:0",
            "http://h:65536",
            "http://h:+80",
            "http://h:x",
            "http://u@h",
            "http://h/?q=1",
            "http://h/#f",
            "http://[::1",
            "http://[::1]x",
            "http://h h",
        ] {
            assert!(AbsoluteUri::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn splits_audiences() {
        assert_eq!(
            path_and_query("https://h:1/client/?hub=a#x"),
            Some(("/client/", "hub=a"))
        );
        assert_eq!(path_and_query("wss://h?hub=a"), Some(("", "hub=a")));
        assert_eq!(path_and_query("https://h"), Some(("", "")));
        assert_eq!(path_and_query("/api/x?y"), Some(("/api/x", "y")));
        assert_eq!(path_and_query("h/api/x"), None);
        assert_eq!(path_and_query("//h/api/x"), None);
    }

    #[test]
    fn normalizes_paths() {
        assert_eq!(normalize_path("/API/V1/Hubs/Chat/"), "/api/v1/hubs/chat");
        assert_eq!(normalize_path("/a%20b/%2F?x=1"), "/a b/%2f");
        assert_eq!(normalize_path("/u%2fg/%3F%23%25%41"), "/u%2fg/%3f%23%25a");
        assert_eq!(normalize_path("/"), "");
        assert_eq!(normalize_path("/100%"), "/100%");
        assert_eq!(normalize_path("/%zz%4"), "/%zz%4");
        assert_eq!(normalize_path("/%C3%A9"), "/é");
    }

    #[test]
    fn reads_query_values() {
        assert_eq!(query_values("a=1&HUB=x%5B&&hub", "hub"), vec!["x[", ""]);
        assert!(query_values("", "hub").is_empty());
    }

    #[test]
    fn encodes_like_escape_data_string() {
        assert_eq!(percent_encode("a-b_c.d~e"), "a-b_c.d~e");
        assert_eq!(percent_encode("a b/[é]"), "a%20b%2F%5B%C3%A9%5D");
        assert_eq!(percent_decode(&percent_encode("a b/[é]%")), "a b/[é]%");
    }
}

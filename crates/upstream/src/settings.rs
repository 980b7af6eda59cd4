//! Upstream templates: which URL an event of a hub goes to.
//!
//! The shape is Azure's upstream setting: a list of templates, each a `urlTemplate` and three
//! patterns (`hubPattern`, `categoryPattern`, `eventPattern`). A pattern is `*` (anything), one
//! name, or a comma-separated list of names. Templates are tried in order and the first whose
//! three patterns match wins. `{hub}`, `{category}` and `{event}` in the URL are replaced by the
//! values, escaped like .NET's `Uri.EscapeDataString` (everything but `A-Z a-z 0-9 - . _ ~`
//! percent-encoded as UTF-8), so a hub or method name can never change the URL's structure;
//! the rest of the URL, its query (`?code=…` for a Functions key) included, is kept as written.
//!
//! Names are compared ignoring ASCII case: hub names are case-insensitive in the service (and
//! always lower-case here), and SignalR binds hub methods ignoring case.
//!
//! Every template is checked when it is loaded, so a typo stops the process at start with a
//! message naming the template and the problem, instead of failing every call later.

use serde_json::{Map, Value};

/// A configuration problem, naming where it is (`at`) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{at}: not valid JSON: {problem}")]
    Json { at: String, problem: String },
    #[error("{at}: {problem}")]
    Invalid { at: String, problem: String },
}

impl ConfigError {
    fn invalid(at: impl Into<String>, problem: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            at: at.into(),
            problem: problem.into(),
        }
    }
}

/// What a pattern matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    /// `*`: every value.
    Any,
    /// One name or a comma list: exactly these values (ignoring ASCII case).
    Names(Vec<String>),
}

impl Pattern {
    /// Parses `*`, `name` or `a,b,c` (items trimmed). An empty pattern or item is refused: it
    /// would silently match nothing.
    pub fn parse(text: &str) -> Result<Pattern, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("an empty pattern matches nothing (use * for any)".into());
        }
        if text == "*" {
            return Ok(Pattern::Any);
        }
        let mut names = Vec::new();
        for item in text.split(',') {
            let item = item.trim();
            if item.is_empty() {
                return Err(format!("the pattern '{text}' has an empty item"));
            }
            if item == "*" {
                return Ok(Pattern::Any);
            }
            names.push(item.to_owned());
        }
        Ok(Pattern::Names(names))
    }

    pub fn matches(&self, value: &str) -> bool {
        match self {
            Pattern::Any => true,
            Pattern::Names(names) => names.iter().any(|n| n.eq_ignore_ascii_case(value)),
        }
    }
}

/// One piece of a URL template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Hub,
    Category,
    Event,
}

/// A URL with `{hub}`, `{category}` and `{event}` placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlTemplate {
    parts: Vec<Part>,
    https: bool,
}

const PLACEHOLDERS: [(&str, Part); 3] = [
    ("{hub}", Part::Hub),
    ("{category}", Part::Category),
    ("{event}", Part::Event),
];

impl UrlTemplate {
    /// Parses and checks a template: an absolute `http://` or `https://` URL with a host, no
    /// white space, no credentials, only the three placeholders in braces.
    pub fn parse(text: &str) -> Result<UrlTemplate, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("the URL template is empty".into());
        }
        if let Some(c) = text
            .chars()
            .find(|c| !c.is_ascii() || c.is_ascii_control() || *c == ' ')
        {
            return Err(format!(
                "the URL template contains {c:?}: percent-encode spaces, control and non-ASCII characters"
            ));
        }
        let lower = text.to_ascii_lowercase();
        let (https, rest_at) = if lower.starts_with("https://") {
            (true, 8)
        } else if lower.starts_with("http://") {
            (false, 7)
        } else {
            return Err("the URL template must start with http:// or https://".into());
        };
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(open) = rest.find(['{', '}']) {
            literal.push_str(&rest[..open]);
            let tail = &rest[open..];
            let Some((name, part)) = PLACEHOLDERS.iter().find(|(name, _)| tail.starts_with(name))
            else {
                let shown: String = tail.chars().take(24).collect();
                return Err(if tail.starts_with("{@") {
                    "Key Vault references ({@Microsoft.KeyVault(...)}) are not supported: put the secret in the template".into()
                } else {
                    format!("unknown placeholder at '{shown}': only {{hub}}, {{category}} and {{event}} are replaced")
                });
            };
            if !literal.is_empty() {
                parts.push(Part::Literal(std::mem::take(&mut literal)));
            }
            parts.push(part.clone());
            rest = &tail[name.len()..];
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        let authority_end = text[rest_at..]
            .find(['/', '?', '#'])
            .map_or(text.len(), |i| i + rest_at);
        let authority = &text[rest_at..authority_end];
        if authority.is_empty() {
            return Err("the URL template has no host".into());
        }
        if authority.contains('@') {
            return Err(
                "credentials in the URL are not supported: put a key in the query (e.g. ?code=...)"
                    .into(),
            );
        }
        if !authority.contains('{') {
            check_authority(authority)?;
        }
        Ok(UrlTemplate { parts, https })
    }

    /// The URL for these values, each escaped.
    pub fn expand(&self, hub: &str, category: &str, event: &str) -> String {
        let mut url = String::with_capacity(128);
        for part in &self.parts {
            match part {
                Part::Literal(text) => url.push_str(text),
                Part::Hub => escape_into(&mut url, hub),
                Part::Category => escape_into(&mut url, category),
                Part::Event => escape_into(&mut url, event),
            }
        }
        url
    }

    /// Whether the URL is `https://`.
    pub fn is_https(&self) -> bool {
        self.https
    }
}

/// Checks `host[:port]` (a name, an IPv4 address or a bracketed IPv6 address).
fn check_authority(authority: &str) -> Result<(), String> {
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let Some(end) = v6.find(']') else {
            return Err("the URL template has an unclosed IPv6 address".into());
        };
        let after = &v6[end + 1..];
        let port = match after.strip_prefix(':') {
            Some(port) => Some(port),
            None if after.is_empty() => None,
            None => return Err(format!("unexpected '{after}' after the IPv6 address")),
        };
        if v6[..end].is_empty()
            || !v6[..end]
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
        {
            return Err("the URL template has an invalid IPv6 address".into());
        }
        (None, port)
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (Some(host), Some(port)),
            None => (Some(authority), None),
        }
    };
    if let Some(host) = host {
        if host.is_empty() {
            return Err("the URL template has no host".into());
        }
        if !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        {
            return Err(format!("'{host}' is not a valid host name"));
        }
    }
    if let Some(port) = port {
        if port.is_empty() || port.len() > 5 || !port.chars().all(|c| c.is_ascii_digit()) {
            return Err(format!("'{port}' is not a valid port"));
        }
        match port.parse::<u32>() {
            Ok(1..=65535) => {}
            _ => return Err(format!("'{port}' is not a valid port")),
        }
    }
    Ok(())
}

/// Appends `value` escaped like `Uri.EscapeDataString`: unreserved characters as they are,
/// every other UTF-8 byte as `%XX` (upper-case hex).
pub fn escape_into(out: &mut String, value: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0xF)]));
        }
    }
}

/// One upstream: where events that match its three patterns go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub url: UrlTemplate,
    pub hub: Pattern,
    pub category: Pattern,
    pub event: Pattern,
}

impl Template {
    /// A template for every hub, category and event (an `--upstream` flag).
    pub fn any(url: &str) -> Result<Template, String> {
        Ok(Template {
            url: UrlTemplate::parse(url)?,
            hub: Pattern::Any,
            category: Pattern::Any,
            event: Pattern::Any,
        })
    }

    pub fn matches(&self, hub: &str, category: &str, event: &str) -> bool {
        self.hub.matches(hub) && self.category.matches(category) && self.event.matches(event)
    }
}

/// Every configured template, in the order they are tried.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    templates: Vec<Template>,
}

impl Settings {
    /// The templates of a config file (`file`: its name and contents), then one per flag.
    pub fn load(file: Option<(&str, &str)>, flags: &[String]) -> Result<Settings, ConfigError> {
        let mut templates = Vec::new();
        if let Some((name, contents)) = file {
            templates.extend(parse_config(name, contents)?);
        }
        for (i, url) in flags.iter().enumerate() {
            let template = Template::any(url).map_err(|problem| {
                ConfigError::invalid(format!("--upstream #{}", i + 1), problem)
            })?;
            templates.push(template);
        }
        Ok(Settings { templates })
    }

    pub fn new(templates: Vec<Template>) -> Settings {
        Settings { templates }
    }

    pub fn templates(&self) -> &[Template] {
        &self.templates
    }

    pub fn is_empty(&self) -> bool {
        self.templates.is_empty()
    }

    /// The first template that matches.
    pub fn find(&self, hub: &str, category: &str, event: &str) -> Option<&Template> {
        self.templates
            .iter()
            .find(|t| t.matches(hub, category, event))
    }
}

/// The value of `key` in `object`, comparing keys ignoring ASCII case (Azure's JSON settings
/// are read case-insensitively: `urlTemplate`, `UrlTemplate` and `urltemplate` are the same).
fn get<'a>(object: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    object
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v)
}

const TEMPLATE_KEYS: [&str; 5] = [
    "urlTemplate",
    "hubPattern",
    "categoryPattern",
    "eventPattern",
    "auth",
];

/// Parses Azure's upstream setting: `{"templates":[...]}`, also wrapped the way the emulator's
/// settings file (`{"UpstreamSettings":{"Templates":[...]}}`) or an ARM resource's
/// `upstream` property (`{"upstream":{"templates":[...]}}`) has it.
pub fn parse_config(name: &str, contents: &str) -> Result<Vec<Template>, ConfigError> {
    let value: Value = serde_json::from_str(contents).map_err(|e| ConfigError::Json {
        at: name.to_owned(),
        problem: e.to_string(),
    })?;
    let Value::Object(root) = &value else {
        return Err(ConfigError::invalid(
            name,
            "expected a JSON object with \"templates\"",
        ));
    };
    let holder = ["upstreamSettings", "upstream"]
        .iter()
        .find_map(|k| get(root, k))
        .and_then(Value::as_object)
        .unwrap_or(root);
    let Some(list) = get(holder, "templates") else {
        return Err(ConfigError::invalid(name, "no \"templates\" list"));
    };
    let Value::Array(items) = list else {
        return Err(ConfigError::invalid(name, "\"templates\" must be a list"));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let at = format!("{name}: template #{}", i + 1);
            parse_template(item).map_err(|problem| ConfigError::invalid(at, problem))
        })
        .collect()
}

fn parse_template(item: &Value) -> Result<Template, String> {
    let Value::Object(object) = item else {
        return Err("a template must be a JSON object".into());
    };
    if let Some((key, _)) = object
        .iter()
        .find(|(k, _)| !TEMPLATE_KEYS.iter().any(|t| t.eq_ignore_ascii_case(k)))
    {
        return Err(format!(
            "unknown setting \"{key}\" (expected urlTemplate, hubPattern, categoryPattern, eventPattern, auth)"
        ));
    }
    let text = |key: &str| -> Result<Option<&str>, String> {
        match get(object, key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(format!("\"{key}\" must be a string")),
        }
    };
    let url = text("urlTemplate")?.ok_or("\"urlTemplate\" is required")?;
    let pattern = |key: &str| -> Result<Pattern, String> {
        match text(key)? {
            None => Ok(Pattern::Any),
            Some(p) => Pattern::parse(p).map_err(|e| format!("\"{key}\": {e}")),
        }
    };
    if let Some(auth) = get(object, "auth") {
        check_auth(auth)?;
    }
    Ok(Template {
        url: UrlTemplate::parse(url).map_err(|e| format!("\"urlTemplate\": {e}"))?,
        hub: pattern("hubPattern")?,
        category: pattern("categoryPattern")?,
        event: pattern("eventPattern")?,
    })
}

/// Only `{"type":"None"}` can be honoured: managed identities exist only inside Azure.
fn check_auth(auth: &Value) -> Result<(), String> {
    let kind = match auth {
        Value::Null => return Ok(()),
        Value::Object(object) => match get(object, "type") {
            None | Some(Value::Null) => return Ok(()),
            Some(Value::String(kind)) => kind.as_str(),
            Some(_) => return Err("\"auth.type\" must be a string".into()),
        },
        _ => return Err("\"auth\" must be an object".into()),
    };
    if kind.eq_ignore_ascii_case("none") {
        Ok(())
    } else {
        Err(format!(
            "upstream auth type '{kind}' is not supported (only None): requests are signed with the access keys (X-ASRS-Signature)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn unescape(s: &str) -> Vec<u8> {
        let bytes = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).expect("hex");
                out.push(u8::from_str_radix(hex, 16).expect("hex"));
                i += 3;
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        out
    }

    #[test]
    fn patterns() {
        assert_eq!(Pattern::parse(" * "), Ok(Pattern::Any));
        assert_eq!(Pattern::parse("a, *"), Ok(Pattern::Any));
        let p = Pattern::parse(" chat , News ").expect("valid");
        assert!(p.matches("chat") && p.matches("news") && p.matches("CHAT"));
        assert!(!p.matches("chats") && !p.matches("") && !p.matches("cha"));
        assert!(Pattern::parse("").is_err());
        assert!(Pattern::parse("a,,b").is_err());
        assert!(Pattern::parse("a,").is_err());
    }

    #[test]
    fn templates_are_checked() {
        for good in [
            "http://localhost:7071/runtime/webhooks/signalr?code=abc",
            "https://app.example.com/api/{hub}/{category}/{event}",
            "HTTP://127.0.0.1:8000",
            "http://[::1]:9000/x",
            "http://{hub}.internal/api",
            "  http://a/  ",
        ] {
            assert!(UrlTemplate::parse(good).is_ok(), "{good}");
        }
        for (bad, why) in [
            ("", "empty"),
            ("localhost:7071/api", "http://"),
            ("ftp://x/", "http://"),
            ("http:///path", "no host"),
            ("http://a b/", "contains"),
            ("http://a/{user}", "unknown placeholder"),
            ("http://a/{hub", "unknown placeholder"),
            ("http://a/}", "unknown placeholder"),
            ("http://a/{@Microsoft.KeyVault(SecretUri=x)}", "Key Vault"),
            ("http://user:pw@a/", "credentials"),
            ("http://a:0/", "port"),
            ("http://a:70000/", "port"),
            ("http://a:/", "port"),
            ("http://a:x/", "port"),
            ("http://a!b/", "host"),
            ("http://[::1/", "IPv6"),
            ("http://caf\u{e9}/", "non-ASCII"),
            ("http://a/\tb", "contains"),
        ] {
            let err = UrlTemplate::parse(bad).expect_err(bad);
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn expansion_escapes_like_escape_data_string() {
        let t = UrlTemplate::parse("http://h/api/{hub}/{category}/{event}?code=a%2Fb&x={event}")
            .expect("valid");
        assert_eq!(
            t.expand("chat", "messages", "SendMessage"),
            "http://h/api/chat/messages/SendMessage?code=a%2Fb&x=SendMessage"
        );
        assert_eq!(
            t.expand("a_b`c,d.e[f]", "messages", "x/y?z#w é"),
            "http://h/api/a_b%60c%2Cd.e%5Bf%5D/messages/x%2Fy%3Fz%23w%20%C3%A9?code=a%2Fb&x=x%2Fy%3Fz%23w%20%C3%A9"
        );
    }

    proptest! {
        /// Any value expands to only unreserved characters and escapes, decodes back to itself,
        /// and leaves the template's own characters where they were.
        #[test]
        fn expansion_never_changes_the_url_structure(hub in ".{0,40}", event in "\\PC{0,40}") {
            let t = UrlTemplate::parse("http://h:1/p/{hub}/x?e={event}&k=v").expect("valid");
            let url = t.expand(&hub, "messages", &event);
            let rest = url.strip_prefix("http://h:1/p/").expect("prefix kept");
            let (hub_part, rest) = rest.split_once("/x?e=").expect("middle kept");
            let event_part = rest.strip_suffix("&k=v").expect("suffix kept");
            for part in [hub_part, event_part] {
                prop_assert!(part.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~%".contains(&b)));
            }
            prop_assert_eq!(unescape(hub_part), hub.as_bytes());
            prop_assert_eq!(unescape(event_part), event.as_bytes());
        }

        /// Parsing any text never panics, and anything accepted starts with a scheme.
        #[test]
        fn parse_never_panics(text in "\\PC{0,60}") {
            if UrlTemplate::parse(&text).is_ok() {
                let lower = text.trim().to_ascii_lowercase();
                prop_assert!(lower.starts_with("http://") || lower.starts_with("https://"));
            }
        }

        /// A comma list matches exactly its items, in any ASCII case.
        #[test]
        fn lists_match_their_items(items in proptest::collection::vec("[a-zA-Z][a-zA-Z0-9_]{0,8}", 1..5), other in "[a-z]{1,9}") {
            let p = Pattern::parse(&items.join(" , ")).expect("valid");
            for item in &items {
                prop_assert!(p.matches(item));
                prop_assert!(p.matches(&item.to_ascii_uppercase()));
            }
            prop_assert_eq!(p.matches(&other), items.iter().any(|i| i.eq_ignore_ascii_case(&other)));
        }
    }

    #[test]
    fn config_file_shapes() {
        let azure = r#"{"templates":[
            {"urlTemplate":"http://a/{event}","hubPattern":"chat,news","categoryPattern":"messages","eventPattern":"broadcast"},
            {"UrlTemplate":"http://b/","Auth":{"Type":"None"}}]}"#;
        let emulator = r#"{"UpstreamSettings":{"Templates":[{"UrlTemplate":"http://b/","EventPattern":"*","HubPattern":"*","CategoryPattern":"*"}]}}"#;
        let arm = r#"{"upstream":{"templates":[{"urlTemplate":"http://b/"}]}}"#;
        let s = Settings::load(Some(("f", azure)), &["http://c/".to_owned()]).expect("valid");
        assert_eq!(s.templates().len(), 3);
        assert_eq!(
            s.find("chat", "messages", "broadcast")
                .map(|t| t.url.expand("chat", "messages", "broadcast")),
            Some("http://a/broadcast".to_owned())
        );
        assert_eq!(
            s.find("chat", "messages", "other")
                .map(|t| t.url.expand("", "", "")),
            Some("http://b/".to_owned()),
            "the first match wins, the file before the flags"
        );
        for text in [emulator, arm] {
            let t = parse_config("f", text).expect(text);
            assert_eq!(t.len(), 1);
            assert!(t[0].matches("x", "connections", "connected"));
        }
        assert!(Settings::load(None, &[])
            .expect("empty")
            .find("a", "b", "c")
            .is_none());
    }

    #[test]
    fn config_errors_name_the_problem() {
        for (text, want) in [
            ("{", "not valid JSON"),
            ("[]", "JSON object"),
            ("{}", "no \"templates\""),
            (r#"{"templates":{}}"#, "must be a list"),
            (
                r#"{"templates":[1]}"#,
                "template #1: a template must be a JSON object",
            ),
            (r#"{"templates":[{}]}"#, "urlTemplate\" is required"),
            (r#"{"templates":[{"urlTemplate":"x"}]}"#, "http://"),
            (
                r#"{"templates":[{"urlTemplate":"http://a/","hubPatern":"x"}]}"#,
                "unknown setting \"hubPatern\"",
            ),
            (
                r#"{"templates":[{"urlTemplate":"http://a/","hubPattern":""}]}"#,
                "\"hubPattern\": an empty pattern",
            ),
            (
                r#"{"templates":[{"urlTemplate":"http://a/","eventPattern":5}]}"#,
                "must be a string",
            ),
            (
                r#"{"templates":[{"urlTemplate":"http://a/"},{"urlTemplate":"http://a/","auth":{"type":"ManagedIdentity"}}]}"#,
                "template #2: upstream auth type 'ManagedIdentity'",
            ),
        ] {
            let err = parse_config("up.json", text).expect_err(text).to_string();
            assert!(err.starts_with("up.json"), "{err}");
            assert!(err.contains(want), "{text}: {err}");
        }
        let err =
            Settings::load(None, &["http://ok/".into(), "nope".into()]).expect_err("bad flag");
        assert!(err.to_string().starts_with("--upstream #2:"), "{err}");
    }
}

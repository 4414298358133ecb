use std::{collections::BTreeMap, fmt};

use serde::{Deserialize, Serialize};
use url::Url;

use super::ValidationError;

/// An absolute `http`/`https` URL of at most 2048 characters, without credentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub(crate) struct WebhookUrl(Url);

impl WebhookUrl {
    pub(crate) const MAX_LEN: usize = 2048;

    pub(crate) fn parse(s: &str) -> Result<Self, ValidationError> {
        let err = |m: &str| ValidationError::new("payload.url", m);
        if s.len() > Self::MAX_LEN {
            return Err(err("longer than 2048 characters"));
        }
        // The same parser the HTTP client uses, so what we check is what gets called.
        let url = Url::parse(s).map_err(|e| err(&format!("not an absolute URL ({e})")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(err("scheme must be http or https"));
        }
        if url.host().is_none() {
            return Err(err("must name a host"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(err("must not contain credentials; send them as a header"));
        }
        Ok(Self(url))
    }

    pub(crate) fn as_url(&self) -> &Url {
        &self.0
    }
}

impl fmt::Display for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str())
    }
}

impl TryFrom<String> for WebhookUrl {
    type Error = ValidationError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<WebhookUrl> for String {
    fn from(u: WebhookUrl) -> Self {
        u.0.into()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub(crate) enum HttpMethod {
    #[default]
    Post,
    Put,
    Patch,
    Get,
    Delete,
}

impl HttpMethod {
    pub(crate) const ALLOWED: &'static str = "POST, PUT, PATCH, GET, DELETE";

    pub(crate) fn parse(s: &str) -> Result<Self, ValidationError> {
        Ok(match s {
            "POST" => Self::Post,
            "PUT" => Self::Put,
            "PATCH" => Self::Patch,
            "GET" => Self::Get,
            "DELETE" => Self::Delete,
            _ => {
                return Err(ValidationError::new(
                    "payload.method",
                    format!("must be one of {}", Self::ALLOWED),
                ));
            }
        })
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Post => "POST",
            Self::Put => "PUT",
            Self::Patch => "PATCH",
            Self::Get => "GET",
            Self::Delete => "DELETE",
        }
    }
}

/// Caller-chosen headers for the webhook request: at most 32, valid HTTP names and values,
/// none that would let a caller smuggle framing or forge our signature.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(
    try_from = "BTreeMap<String, String>",
    into = "BTreeMap<String, String>"
)]
pub(crate) struct WebhookHeaders(BTreeMap<String, String>);

impl WebhookHeaders {
    pub(crate) const MAX: usize = 32;
    pub(crate) const MAX_VALUE_LEN: usize = 8192;
    /// Hop-by-hop headers (RFC 9110 §7.6.1), framing, and the headers we sign with.
    const REFUSED: [&'static str; 14] = [
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
    ];

    pub(crate) fn parse(map: BTreeMap<String, String>) -> Result<Self, ValidationError> {
        if map.len() > Self::MAX {
            return Err(ValidationError::new(
                "payload.headers",
                format!("at most {} headers", Self::MAX),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (name, value) in &map {
            let field = format!("payload.headers.{name}");
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(ValidationError::new(field, "not a valid header name"));
            }
            let lower = name.to_ascii_lowercase();
            if Self::REFUSED.contains(&lower.as_str()) {
                return Err(ValidationError::new(
                    field,
                    "this header is set by the scheduler or the connection and cannot be chosen",
                ));
            }
            if !seen.insert(lower) {
                return Err(ValidationError::new(
                    field,
                    "given twice (names are case-insensitive)",
                ));
            }
            if value.len() > Self::MAX_VALUE_LEN || http::HeaderValue::from_str(value).is_err() {
                return Err(ValidationError::new(
                    field,
                    "not a valid header value (visible ASCII, at most 8192 bytes)",
                ));
            }
        }
        Ok(Self(map))
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub(crate) fn as_map(&self) -> &BTreeMap<String, String> {
        &self.0
    }

    pub(crate) fn contains(&self, name: &str) -> bool {
        self.0.keys().any(|k| k.eq_ignore_ascii_case(name))
    }
}

impl TryFrom<BTreeMap<String, String>> for WebhookHeaders {
    type Error = ValidationError;
    fn try_from(m: BTreeMap<String, String>) -> Result<Self, Self::Error> {
        Self::parse(m)
    }
}

impl From<WebhookHeaders> for BTreeMap<String, String> {
    fn from(h: WebhookHeaders) -> Self {
        h.0
    }
}

/// What to call: the webhook action of the API (`action: "webhook"` + `payload`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct WebhookAction {
    pub(crate) url: WebhookUrl,
    #[serde(default)]
    pub(crate) method: HttpMethod,
    #[serde(default)]
    pub(crate) headers: WebhookHeaders,
    /// Sent as the JSON body; `None` sends no body.
    #[serde(default)]
    pub(crate) data: Option<serde_json::Value>,
}

/// The kinds of action a task can carry. Only webhooks today; the enum keeps the
/// original design's `action` discriminator open for more.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", content = "payload", rename_all = "snake_case")]
pub(crate) enum Action {
    Webhook(WebhookAction),
}

impl Action {
    pub(crate) const ALLOWED: &'static str = "webhook";

    pub(crate) fn name(&self) -> &'static str {
        match self {
            Self::Webhook(_) => "webhook",
        }
    }

    pub(crate) fn webhook(&self) -> &WebhookAction {
        match self {
            Self::Webhook(w) => w,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn url_accepts_http_and_https_only() {
        assert!(WebhookUrl::parse("https://example.com/hook?x=1").is_ok());
        assert!(WebhookUrl::parse("http://127.0.0.1:8080/hook").is_ok());
        for bad in [
            "ftp://example.com",
            "example.com/hook",
            "/hook",
            "",
            "http://",
            "javascript:alert(1)",
            "file:///etc/passwd",
            "https://user:pw@example.com/",
            "https://user@example.com/",
        ] {
            let e = WebhookUrl::parse(bad).unwrap_err();
            assert_eq!(e.field, "payload.url", "{bad}");
        }
    }

    #[test]
    fn url_length_limit_is_2048() {
        let base = "https://example.com/";
        let ok = format!("{base}{}", "a".repeat(2048 - base.len()));
        assert!(WebhookUrl::parse(&ok).is_ok());
        let too_long = format!("{ok}a");
        assert!(
            WebhookUrl::parse(&too_long)
                .unwrap_err()
                .message
                .contains("2048")
        );
    }

    #[test]
    fn headers_refuse_hop_by_hop_signature_and_duplicates() {
        let one = |k: &str, v: &str| BTreeMap::from([(k.to_owned(), v.to_owned())]);
        assert!(WebhookHeaders::parse(one("X-Tenant", "acme")).is_ok());
        for refused in [
            "Host",
            "content-length",
            "Transfer-Encoding",
            "Connection",
            "webhook-signature",
            "Webhook-Id",
        ] {
            let e = WebhookHeaders::parse(one(refused, "x")).unwrap_err();
            assert_eq!(e.field, format!("payload.headers.{refused}"));
        }
        assert!(WebhookHeaders::parse(one("bad name", "x")).is_err());
        assert!(WebhookHeaders::parse(one("X-A", "line\r\nbreak")).is_err());
        let dup = BTreeMap::from([
            ("X-A".to_owned(), "1".to_owned()),
            ("x-a".to_owned(), "2".to_owned()),
        ]);
        assert!(WebhookHeaders::parse(dup).is_err());
        let many: BTreeMap<_, _> = (0..33)
            .map(|i| (format!("X-{i}"), "v".to_owned()))
            .collect();
        assert!(
            WebhookHeaders::parse(many)
                .unwrap_err()
                .message
                .contains("32")
        );
    }

    #[test]
    fn method_names_the_allowed_values() {
        assert_eq!(HttpMethod::parse("PUT").unwrap(), HttpMethod::Put);
        let e = HttpMethod::parse("post").unwrap_err();
        assert!(e.message.contains("POST, PUT, PATCH, GET, DELETE"));
    }

    proptest! {
        /// Absolute URLs of every scheme a caller might try, with and without credentials:
        /// exactly the `http`/`https` ones without userinfo are accepted, unchanged.
        #[test]
        fn only_http_and_https_urls_without_credentials_are_accepted(
            scheme in "(https?|ftp|file|javascript)",
            userinfo in proptest::option::of("[a-z]{1,8}(:[a-zA-Z0-9]{0,8})?"),
            host in "[a-z]{1,20}",
            port in proptest::option::of(1u16..),
            path in "[a-zA-Z0-9/_-]{0,40}",
        ) {
            let at = userinfo.as_ref().map(|u| format!("{u}@")).unwrap_or_default();
            let port_part = port.map(|p| format!(":{p}")).unwrap_or_default();
            let s = format!("{scheme}://{at}{host}.example{port_part}/{path}");
            let accepted = WebhookUrl::parse(&s);
            let expected = matches!(scheme.as_str(), "http" | "https") && userinfo.is_none();
            prop_assert_eq!(accepted.is_ok(), expected, "{} -> {:?}", s, accepted);
            match accepted {
                Ok(u) => {
                    let expected_host = format!("{host}.example");
                    prop_assert_eq!(u.as_url().scheme(), scheme.as_str());
                    prop_assert_eq!(u.as_url().host_str(), Some(expected_host.as_str()));
                    prop_assert_eq!(
                        u.as_url().port_or_known_default(),
                        Some(port.unwrap_or(if scheme == "https" { 443 } else { 80 }))
                    );
                    prop_assert_eq!(u.as_url().path(), format!("/{path}"));
                }
                Err(e) => prop_assert_eq!(e.field, "payload.url"),
            }
        }
    }
}

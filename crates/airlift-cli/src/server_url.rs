//! [`ServerUrl`]: the base URL of an Airlift server, parsed once.

use reqwest::Url;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// An `http`/`https` URL with a host and no query or fragment, kept without
/// a trailing slash and without a trailing `/api/v1`, so that
/// `https://updates.example.com/`, `https://updates.example.com` and
/// `https://updates.example.com/api/v1` name the same server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerUrl(String);

impl ServerUrl {
    /// The URL of a management API path such as `/packages`.
    pub fn api(&self, path: &str) -> anyhow::Result<Url> {
        let text = format!("{}{}{path}", self.0, airlift_protocol::MANAGEMENT_API);
        Url::parse(&text).map_err(|e| anyhow::anyhow!("invalid URL {text}: {e}"))
    }

    /// Whether requests to it travel unencrypted to another machine.
    pub fn is_plain_http_to_remote_host(&self) -> bool {
        let Ok(url) = Url::parse(&self.0) else {
            return false;
        };
        let host = url.host_str().unwrap_or_default();
        let ip = host.trim_start_matches('[').trim_end_matches(']');
        let loopback = host == "localhost" || ip.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
        url.scheme() == "http" && !loopback
    }
}

impl FromStr for ServerUrl {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let url = Url::parse(text.trim()).map_err(|e| {
            format!("{text:?} is not a URL ({e}); expected e.g. https://updates.example.com")
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "{text:?} is not an http:// or https:// URL; expected e.g. https://updates.example.com"
            ));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(format!("{text:?} names no host"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(format!(
                "{text:?} has a query or fragment; give only the server's base URL"
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(format!(
                "{text:?} holds credentials; give the token with --token instead"
            ));
        }
        let mut base = url.as_str().trim_end_matches('/').to_owned();
        if let Some(stripped) = base.strip_suffix(airlift_protocol::MANAGEMENT_API) {
            base = stripped.trim_end_matches('/').to_owned();
        }
        Ok(Self(base))
    }
}

impl fmt::Display for ServerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for ServerUrl {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ServerUrl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> Result<String, String> {
        text.parse::<ServerUrl>().map(|url| url.to_string())
    }

    #[test]
    fn urls_are_normalised() {
        for text in [
            "https://updates.example.com",
            "https://updates.example.com/",
            " https://updates.example.com/api/v1/ ",
            "HTTPS://Updates.Example.COM/api/v1",
        ] {
            assert_eq!(
                url(text).as_deref(),
                Ok("https://updates.example.com"),
                "{text}"
            );
        }
        assert_eq!(
            url("http://10.0.0.5:8080/airlift/").as_deref(),
            Ok("http://10.0.0.5:8080/airlift")
        );
        let server: ServerUrl = "http://127.0.0.1:8080/prefix".parse().expect("valid");
        assert_eq!(
            server.api("/devices").expect("url").as_str(),
            "http://127.0.0.1:8080/prefix/api/v1/devices"
        );
    }

    #[test]
    fn bad_urls_say_what_is_expected() {
        for (text, needle) in [
            ("updates.example.com", "is not a URL"),
            ("ftp://updates.example.com", "not an http:// or https://"),
            ("https://u:p@updates.example.com", "--token"),
            ("https://updates.example.com/?x=1", "query"),
        ] {
            let error = url(text).expect_err(text);
            assert!(error.contains(needle), "{text}: {error}");
        }
    }

    #[test]
    fn plain_http_is_flagged_only_off_this_machine() {
        let remote = |text: &str| {
            text.parse::<ServerUrl>()
                .expect("valid")
                .is_plain_http_to_remote_host()
        };
        assert!(remote("http://updates.example.com"));
        assert!(!remote("https://updates.example.com"));
        assert!(!remote("http://localhost:8080"));
        assert!(!remote("http://127.0.0.1:8080"));
        assert!(!remote("http://[::1]:8080"));
    }
}

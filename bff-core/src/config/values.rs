//! Typed configuration values: each checks its text once, as it is read, so nothing downstream
//! parses or falls back again.

use std::fmt;
use std::net::IpAddr;
use std::ops::Deref;
use std::str::FromStr;

use axum::http::uri::{Authority, Scheme};
use axum::http::{HeaderName, HeaderValue, Uri};
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};
use url::Url;

/// Implements `Deserialize` through `FromStr` and `Serialize` through `Display`.
macro_rules! via_str {
    ($type:ty) => {
        impl<'de> Deserialize<'de> for $type {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                text.parse().map_err(de::Error::custom)
            }
        }

        impl Serialize for $type {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }
    };
}

/// An `http` or `https` URL with a host: where an upstream or a JWKS lives. Its scheme and
/// authority are parsed for requests once, here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    url: Url,
    scheme: Scheme,
    authority: Authority,
}

impl HttpUrl {
    /// The scheme, as requests carry it.
    pub fn scheme(&self) -> &Scheme {
        &self.scheme
    }

    /// `host[:port]`, as requests carry it.
    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// `scheme://authority/`: the same server, at its root.
    pub fn origin(&self) -> Self {
        let mut url = self.url.clone();
        url.set_path("/");
        url.set_query(None);
        url.set_fragment(None);
        Self { url, scheme: self.scheme.clone(), authority: self.authority.clone() }
    }
}

impl FromStr for HttpUrl {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let url = Url::parse(text).map_err(|e| format!("`{text}` is not a URL: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(format!("`{text}` is not an http(s) URL with a host"));
        }
        let uri: Uri = url.as_str().parse().map_err(|e| format!("`{text}` cannot be requested: {e}"))?;
        match (uri.scheme(), uri.authority()) {
            (Some(scheme), Some(authority)) => Ok(Self { scheme: scheme.clone(), authority: authority.clone(), url }),
            _ => Err(format!("`{text}` is not an http(s) URL with a host")),
        }
    }
}

impl Deref for HttpUrl {
    type Target = Url;

    fn deref(&self) -> &Url {
        &self.url
    }
}

impl fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.url.fmt(f)
    }
}

via_str!(HttpUrl);

/// The base URLs of an upstream's identical instances: one (`url = "…"`) or several
/// (`urls = ["…", "…"]`); never none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamUrls(Vec<HttpUrl>);

/// The most instances one upstream may list.
pub(crate) const MAX_INSTANCES: usize = 64;

impl UpstreamUrls {
    /// Instances at `urls`; `None` when there are none or more than 64.
    pub fn new(urls: Vec<HttpUrl>) -> Option<Self> {
        (!urls.is_empty() && urls.len() <= MAX_INSTANCES).then_some(Self(urls))
    }

    /// The first instance's URL (the only one, mostly).
    pub fn first(&self) -> &HttpUrl {
        &self.0[0]
    }
}

impl Deref for UpstreamUrls {
    type Target = [HttpUrl];

    fn deref(&self) -> &[HttpUrl] {
        &self.0
    }
}

impl<'de> Deserialize<'de> for UpstreamUrls {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(String),
            Many(Vec<String>),
        }
        let texts = match OneOrMany::deserialize(deserializer) {
            Ok(OneOrMany::One(text)) => vec![text],
            Ok(OneOrMany::Many(texts)) => texts,
            Err(_) => return Err(de::Error::custom("expected a URL or a list of URLs")),
        };
        let urls = texts.iter().map(|t| t.parse()).collect::<Result<Vec<HttpUrl>, _>>().map_err(de::Error::custom)?;
        Self::new(urls).ok_or_else(|| de::Error::custom(format!("list between 1 and {MAX_INSTANCES} URLs")))
    }
}

impl Serialize for UpstreamUrls {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match &*self.0 {
            [one] => one.serialize(serializer),
            many => many.serialize(serializer),
        }
    }
}

/// A JWT signature algorithm a BFF accepts: asymmetric only (`HS*` and `none` never are).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[allow(clippy::upper_case_acronyms)]
#[non_exhaustive]
pub enum JwtAlgorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    RS384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    RS512,
    /// RSASSA-PSS with SHA-256.
    PS256,
    /// RSASSA-PSS with SHA-384.
    PS384,
    /// RSASSA-PSS with SHA-512.
    PS512,
    /// ECDSA on P-256 with SHA-256.
    ES256,
    /// ECDSA on P-384 with SHA-384.
    ES384,
    /// Ed25519.
    EdDSA,
}

/// The SHA-256 of an API key, written as 64 hex digits (`printf %s KEY | sha256sum`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct KeyHash(pub [u8; 32]);

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyHash({self})")
    }
}

impl fmt::Display for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl FromStr for KeyHash {
    type Err = String;

    fn from_str(hex: &str) -> Result<Self, String> {
        let invalid = || "must be 64 hex digits (a SHA-256)".to_owned();
        if hex.len() != 64 || !hex.is_ascii() {
            return Err(invalid());
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| invalid())?;
        }
        Ok(Self(out))
    }
}

via_str!(KeyHash);

/// A browser origin, `scheme://host[:port]`, as CORS compares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin(HeaderValue);

impl Origin {
    /// The origin as a header value.
    pub fn header_value(&self) -> &HeaderValue {
        &self.0
    }
}

impl FromStr for Origin {
    type Err = String;

    fn from_str(origin: &str) -> Result<Self, String> {
        let ok = Url::parse(origin).is_ok_and(|u| {
            matches!(u.scheme(), "http" | "https")
                && u.host().is_some()
                && u.path() == "/"
                && !origin.ends_with('/')
                && u.query().is_none()
                && u.fragment().is_none()
                && u.username().is_empty()
        });
        let invalid = || format!("`{origin}` is not an origin (scheme://host[:port])");
        if !ok {
            return Err(invalid());
        }
        HeaderValue::try_from(origin).map(Self).map_err(|_| invalid())
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.to_str().unwrap_or_default())
    }
}

via_str!(Origin);

/// A host a request may name: a host name (`api.example.com`), an IP address (`127.0.0.1`,
/// `::1` or `[::1]`), or `*.` and a name for any one label before it (`*.example.com` takes
/// `a.example.com`, not `example.com` nor `a.b.example.com`). Letters in any case; no port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// This name or address exactly (lowercase; an IPv6 address without brackets).
    Exact(String),
    /// Any one label, then this suffix (`.example.com`).
    Wildcard(String),
}

impl HostPattern {
    /// Whether `host` (a request's host name, without its port or an IPv6 address's brackets,
    /// letters in any case) is one this pattern takes.
    pub fn matches(&self, host: &str) -> bool {
        self.matches_bytes(host.as_bytes())
    }

    /// [`HostPattern::matches`], on a name as it came in a header.
    pub(crate) fn matches_bytes(&self, host: &[u8]) -> bool {
        match self {
            Self::Exact(name) => host.eq_ignore_ascii_case(name.as_bytes()),
            Self::Wildcard(suffix) => takes_suffix(suffix.as_bytes(), host),
        }
    }

    /// Whether some host is taken by both patterns.
    pub fn overlaps(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Exact(name), pattern) | (pattern, Self::Exact(name)) => pattern.matches(name),
            (Self::Wildcard(a), Self::Wildcard(b)) => a == b,
        }
    }
}

/// Whether the wildcard of `suffix` (`.example.com`, lowercase) takes `host` (letters in any
/// case): one label, then the suffix. Bytes, not `str`: the split need not fall on a
/// character's boundary.
pub(crate) fn takes_suffix(suffix: &[u8], host: &[u8]) -> bool {
    host.len() > suffix.len() && {
        let (label, rest) = host.split_at(host.len() - suffix.len());
        rest.eq_ignore_ascii_case(suffix) && !label.contains(&b'.')
    }
}

impl FromStr for HostPattern {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let host = text.to_ascii_lowercase();
        let literal = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(&host);
        if let Ok(ip) = literal.parse::<IpAddr>() {
            return Ok(Self::Exact(ip.to_string()));
        }
        let (wildcard, name) = match host.strip_prefix("*.") {
            Some(name) => (true, name),
            None => (false, host.as_str()),
        };
        let label_ok =
            |l: &str| !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if name.is_empty() || !name.split('.').all(label_ok) {
            return Err(format!(
                "`{text}` is not a host name or an IP address (letters, digits, `-` and dots, no port; \
                 `*.` first for any one label)"
            ));
        }
        Ok(if wildcard { Self::Wildcard(format!(".{name}")) } else { Self::Exact(name.to_owned()) })
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(name) if name.contains(':') => write!(f, "[{name}]"),
            Self::Exact(name) => f.write_str(name),
            Self::Wildcard(suffix) => write!(f, "*{suffix}"),
        }
    }
}

via_str!(HostPattern);

/// A request header's name (lower-cased as HTTP/2 and HTTP/1.1 compare them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header(pub HeaderName);

impl FromStr for Header {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        HeaderName::try_from(name).map(Self).map_err(|_| format!("`{name}` is not a header name"))
    }
}

impl fmt::Display for Header {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str())
    }
}

via_str!(Header);

/// A network in CIDR notation (`10.0.0.0/8`, `2001:db8::/32`), or one address (`127.0.0.1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// Whether this is every address of its family (`0.0.0.0/0`, `::/0`).
    pub(crate) fn is_everything(&self) -> bool {
        self.prefix == 0
    }

    /// Whether `ip` is in this network (an IPv4-mapped IPv6 address counts as its IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for IpNet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = s.split_once('/').map_or((s, None), |(a, p)| (a, Some(p)));
        let addr: IpAddr = addr.parse().map_err(|_| format!("`{s}` is not an IP address or a CIDR network"))?;
        let addr = addr.to_canonical();
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{s}`: the prefix length after `/` must be a number from 0 to {max}"))?,
        };
        Ok(Self { addr, prefix })
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

via_str!(IpNet);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_contain_their_addresses() {
        let net: IpNet = "10.0.0.0/8".parse().unwrap();
        assert!(net.contains("10.1.2.3".parse().unwrap()));
        assert!(net.contains("::ffff:10.9.9.9".parse().unwrap()));
        assert!(!net.contains("11.0.0.1".parse().unwrap()));
        let one: IpNet = "127.0.0.1".parse().unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()) && !one.contains("127.0.0.2".parse().unwrap()));
        let v6: IpNet = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains("2001:db8:1::9".parse().unwrap()) && !v6.contains("2001:db9::1".parse().unwrap()));
        let all: IpNet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("203.0.113.9".parse().unwrap()));
        for bad in ["10.0.0.0/33", "10.0.0/8", "x", "::/129", "1.2.3.4/"] {
            assert!(bad.parse::<IpNet>().is_err(), "{bad}");
        }
    }

    #[test]
    fn host_patterns_take_their_hosts_in_any_case_and_bad_ones_are_named() {
        let parse = |text: &str| text.parse::<HostPattern>();
        assert_eq!(parse("API.Example.com").unwrap(), HostPattern::Exact("api.example.com".into()));
        assert_eq!(parse("*.example.com").unwrap(), HostPattern::Wildcard(".example.com".into()));
        assert_eq!(parse("[::1]").unwrap(), HostPattern::Exact("::1".into()));
        assert_eq!(parse("0:0::1").unwrap().to_string(), "[::1]", "an address as it is written back");
        assert_eq!(parse("127.0.0.1").unwrap(), HostPattern::Exact("127.0.0.1".into()));
        for bad in ["", "*.", "a..b", "a b", "a.example.com:443", "*.*.example.com", "a/b", "[::1]:80", "é.example"] {
            let error = parse(bad).unwrap_err();
            assert!(error.contains(&format!("`{bad}`")), "{bad}: {error}");
        }

        let exact = parse("api.example.com").unwrap();
        assert!(exact.matches("api.example.com") && exact.matches("API.example.COM"));
        assert!(!exact.matches("api.example.com.evil") && !exact.matches("x.api.example.com"));
        let any = parse("*.example.com").unwrap();
        assert!(any.matches("api.example.com") && any.matches("A.EXAMPLE.com"));
        assert!(!any.matches("example.com") && !any.matches(".example.com"), "one label first");
        assert!(!any.matches("a.b.example.com") && !any.matches("aexample.com"), "exactly one label");
        assert!(!any.matches("a.example.com.evil"));
        assert!(!any.matches("ééééééééééééééé"), "any text, never a panic");
        assert!(parse("::1").unwrap().matches("::1"));

        let wide = parse("*.example.com").unwrap();
        assert!(wide.overlaps(&exact) && exact.overlaps(&wide) && wide.overlaps(&wide));
        assert!(!wide.overlaps(&parse("*.example.org").unwrap()));
        assert!(!wide.overlaps(&parse("example.com").unwrap()));
        assert!(!exact.overlaps(&parse("web.example.com").unwrap()));
    }

    #[test]
    fn values_are_checked_as_they_are_read() {
        assert!("http://127.0.0.1:7001".parse::<HttpUrl>().is_ok());
        assert!("ftp://x".parse::<HttpUrl>().is_err());
        assert!("mailto:ops@example.com".parse::<HttpUrl>().is_err());
        assert!("http://".parse::<HttpUrl>().is_err());
        let hash = "A".repeat(64).parse::<KeyHash>().unwrap();
        assert_eq!(hash.to_string(), "a".repeat(64));
        assert!("ab".parse::<KeyHash>().is_err());
        assert!("é".repeat(32).parse::<KeyHash>().is_err(), "non-ASCII must not panic on slicing");
        assert!("https://app.example.com".parse::<Origin>().is_ok());
        for bad in ["https://app.example.com/", "https://a.example/x", "*", "https://u@a.example"] {
            assert!(bad.parse::<Origin>().is_err(), "{bad}");
        }
        assert!("x-api-key".parse::<Header>().is_ok());
        assert!("bad header".parse::<Header>().is_err());
        let alg: JwtAlgorithm = serde_json::from_str("\"EdDSA\"").unwrap();
        assert_eq!(alg, JwtAlgorithm::EdDSA);
        assert!(serde_json::from_str::<JwtAlgorithm>("\"HS256\"").is_err());
    }

    proptest::proptest! {
        /// Any text for a URL, an origin, an address range or a key hash: a value or a message,
        /// never a panic; an accepted URL has a host and an http(s) scheme.
        #[test]
        fn any_text_is_a_typed_value_or_a_message(text in "\\PC{0,80}|(https?|ftp)://[a-z0-9.:@/\\[\\]%-]{0,40}") {
            if let Ok(url) = text.parse::<HttpUrl>() {
                proptest::prop_assert!(matches!(url.scheme().as_str(), "http" | "https"));
                proptest::prop_assert!(!url.authority().host().is_empty());
            }
            let _ = text.parse::<Origin>();
            let _ = text.parse::<IpNet>();
            let _ = text.parse::<KeyHash>();
        }
    }
}

//! One host per request, settled before anything reads it. A request can name its host twice:
//! in `Host` and in the request target's authority (HTTP/1.1's absolute form,
//! `GET http://a.example/x`, or HTTP/2's `:authority`). If layers read different ones, a client
//! could be routed by one host and checked against the other, or be counted under one and
//! served by the other. So, before any layer reads it:
//!
//! - a request with more than one `Host`, or an HTTP/1.1 request with none, is a
//!   `400 INVALID_HOST` (RFC 9112 §3.2; an HTTP/1.0 request may have none);
//! - a `Host` that is not a host and an optional port (`a.example:8443`, `[::1]:8080`; user
//!   information such as `user@a.example` is not one) is a `400 INVALID_HOST`, and so is a
//!   request target's authority with user information (RFC 9110 §4.2.4);
//! - in HTTP/1.1's absolute form the target's authority is the host and `Host` is ignored
//!   (RFC 9112 §3.2.2). `Host` is set to that authority, so every later layer reads the same
//!   host.
//! - over HTTP/2 a `Host` that names another host than `:authority` is a `400 INVALID_HOST`
//!   (RFC 9113 §8.3.1).
//!
//! After this layer, a request's `Host` (or, when it has none, its authority) is its host. An
//! empty `Host` is valid: a client sends one for a target without an authority.
//!
//! Then, with `server.allowed_hosts` set, a request whose host is not among them, or that names
//! none, is a `421 HOST_NOT_ALLOWED` (RFC 9110 §15.5.20: this server does not answer for that
//! host). A page served under another name that resolves to the BFF (DNS rebinding) gets no
//! answer to read, and nothing later builds a URL from a host it was not configured with.

use std::sync::Arc;

use axum::extract::Request;
use axum::http::header::HOST;
use axum::http::uri::Authority;
use axum::http::{HeaderValue, StatusCode, Version};
use axum::response::{IntoResponse, Response};

use crate::config::HostPattern;
use crate::error::BffError;
use crate::field;
use crate::middleware::Filter;

/// Refuses a request whose host is missing, doubled, malformed or contradicted, or (with a list)
/// not allowed; makes an absolute-form target's authority its `Host`.
#[derive(Debug, Clone)]
pub(super) struct OneHost {
    /// The hosts served; empty: any.
    allowed: Arc<[HostPattern]>,
}

impl OneHost {
    pub(super) fn new(allowed: &[HostPattern]) -> Self {
        Self { allowed: allowed.into() }
    }
}

impl Filter for OneHost {
    type State = ();

    fn on_request(&self, request: &mut Request) -> Result<(), Response> {
        settle(request, &self.allowed).map_err(|refused| match refused {
            Refused::Invalid(why) => BffError::bad_request("INVALID_HOST", why).into_response(),
            Refused::NotAllowed(name) => not_allowed(name.as_deref()),
        })
    }
}

/// Why a request's host is refused.
#[derive(Debug, PartialEq, Eq)]
enum Refused {
    /// Missing, doubled, malformed or contradicted: a 400.
    Invalid(&'static str),
    /// Not among the hosts served (`None`: the request names none): a 421.
    NotAllowed(Option<String>),
}

impl From<&'static str> for Refused {
    fn from(why: &'static str) -> Self {
        Self::Invalid(why)
    }
}

/// The answer to a request for a host this BFF does not serve (`name`; `None`: no host).
fn not_allowed(name: Option<&str>) -> Response {
    let detail = match name {
        // Bounded: the name is the client's.
        Some(name) => format!(
            "this server does not answer for the host `{}`; `server.allowed_hosts` lists those it does",
            crate::problem::bounded(name, 128)
        ),
        None => "the request names no host; `server.allowed_hosts` lists those this server answers for".to_owned(),
    };
    BffError::rejected(StatusCode::MISDIRECTED_REQUEST, "HOST_NOT_ALLOWED", detail).into_response()
}

/// Checks `request`'s host as the module docs say, and that `allowed` (empty: any) takes it; in
/// HTTP/1's absolute form, sets `Host` to the target's authority. The host is read where it is
/// checked, with no lookup of its own.
fn settle(request: &mut Request, allowed: &[HostPattern]) -> Result<(), Refused> {
    let Ok(host) = field::one(request.headers(), HOST) else {
        return Err("the request has more than one `Host` header; it must have one".into());
    };
    if host.is_some_and(|h| !is_host_and_port(h.as_bytes())) {
        return Err("the `Host` header is not a host and an optional port".into());
    }
    let http1 = request.version() <= Version::HTTP_11;
    if host.is_none() && request.version() == Version::HTTP_11 {
        return Err("an HTTP/1.1 request must have a `Host` header".into());
    }
    let Some(authority) = request.uri().authority() else {
        return served(allowed, host.map(HeaderValue::as_bytes));
    };
    if authority.as_str().contains('@') {
        return Err("the request target's authority has user information".into());
    }
    served(allowed, Some(authority.as_str().as_bytes()))?;
    if http1 {
        // The absolute form (or CONNECT's authority form): the target's authority is the host.
        if host.is_none_or(|h| h.as_bytes() != authority.as_str().as_bytes()) {
            // An authority is a valid header value: its characters are a subset of a value's.
            let value = HeaderValue::from_str(authority.as_str()).map_err(|_| "the request target is not valid")?;
            request.headers_mut().insert(HOST, value);
        }
        return Ok(());
    }
    match host {
        Some(host) if !same_host(host, authority, request.uri().scheme_str()) => {
            Err("the `Host` header names another host than the request's `:authority`".into())
        }
        _ => Ok(()),
    }
}

/// Whether `allowed` (empty: any) takes `host` (`host[:port]`, checked; `None`: no host).
fn served(allowed: &[HostPattern], host: Option<&[u8]>) -> Result<(), Refused> {
    if allowed.is_empty() {
        return Ok(());
    }
    let name = host.map(crate::request::name_of).filter(|name| !name.is_empty());
    match name {
        Some(name) if allowed.iter().any(|pattern| pattern.matches_bytes(name)) => Ok(()),
        _ => Err(Refused::NotAllowed(name.map(|name| String::from_utf8_lossy(name).into_owned()))),
    }
}

/// Whether `value` is `host [ ":" port ]` (RFC 9110 §7.2): a registered name or an IPv4 address
/// (unreserved characters, sub-delimiters and percent escapes), or an IP literal in brackets;
/// then digits after a colon. Empty is valid.
fn is_host_and_port(value: &[u8]) -> bool {
    let (host, port) = match value.first() {
        Some(b'[') => match value.iter().position(|&b| b == b']') {
            Some(end) => value.split_at(end + 1),
            None => return false,
        },
        _ => match value.iter().rposition(|&b| b == b':') {
            Some(colon) => value.split_at(colon),
            None => (value, &[][..]),
        },
    };
    let port_ok = match port.split_first() {
        None => true,
        Some((b':', digits)) => digits.iter().all(u8::is_ascii_digit),
        Some(_) => false,
    };
    let host_ok = match host.strip_prefix(b"[").and_then(|h| h.strip_suffix(b"]")) {
        // An IPv6 address (an IPv4 one may end it).
        Some(literal) => {
            !literal.is_empty() && literal.iter().all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        }
        None => host.iter().all(|&b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=%".contains(&b)),
    };
    port_ok && host_ok
}

/// Whether `host` names the same host and port as `authority`: letters in any case, and a
/// scheme's default port written or not.
fn same_host(host: &HeaderValue, authority: &Authority, scheme: Option<&str>) -> bool {
    let Ok(host) = host.to_str() else { return false };
    let default = match scheme {
        Some("https") => Some(443),
        Some("http") => Some(80),
        _ => None,
    };
    let Ok(host) = host.parse::<Authority>() else { return false };
    let port = |a: &Authority| a.port_u16().or(default);
    host.host().eq_ignore_ascii_case(authority.host()) && port(&host) == port(authority)
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::header::HOST;
    use axum::http::{Request, Version};

    use super::{OneHost, Refused, is_host_and_port, settle};
    use crate::middleware::Filter;

    fn request(version: Version, target: &str, hosts: &[&str]) -> Request<Body> {
        let mut builder = Request::get(target).version(version);
        for host in hosts {
            builder = builder.header(HOST, *host);
        }
        builder.body(Body::empty()).unwrap()
    }

    fn host_after(mut request: Request<Body>) -> Result<Option<String>, &'static str> {
        settle(&mut request, &[]).map_err(|refused| match refused {
            Refused::Invalid(why) => why,
            Refused::NotAllowed(_) => unreachable!("no list, no host refused for it"),
        })?;
        let mut hosts = request.headers().get_all(HOST).iter();
        let host = hosts.next().map(|h| h.to_str().unwrap().to_owned());
        assert!(hosts.next().is_none(), "one Host at most after the layer");
        Ok(host)
    }

    #[test]
    fn hosts_and_ports_are_told_from_anything_else() {
        let valid =
            ["a.example", "A.Example:8443", "127.0.0.1:80", "[::1]", "[::1]:8080", "[::ffff:10.0.0.1]", "x_y~z", ""];
        for host in valid {
            assert!(is_host_and_port(host.as_bytes()), "{host:?} is a host");
        }
        let invalid = [
            "user@a.example",
            "a.example:80x",
            "a b",
            "a/b",
            "a.example:8080:1",
            "[::1",
            "[]",
            "[::1]x",
            "a\\b",
            "a?b",
            "a#b",
            "[::1]:8080]",
        ];
        for host in invalid {
            assert!(!is_host_and_port(host.as_bytes()), "{host:?} is not a host");
        }
    }

    #[test]
    fn an_http_1_1_request_has_exactly_one_valid_host() {
        let ok = |target, hosts: &[&str]| host_after(request(Version::HTTP_11, target, hosts));
        assert_eq!(ok("/x", &["a.example"]), Ok(Some("a.example".to_owned())));
        assert_eq!(ok("/x", &[""]), Ok(Some(String::new())), "empty is valid");
        assert!(ok("/x", &[]).unwrap_err().contains("must have a `Host`"));
        assert!(ok("/x", &["a.example", "b.example"]).unwrap_err().contains("more than one"));
        assert!(ok("/x", &["a.example", "a.example"]).unwrap_err().contains("more than one"), "even the same");
        assert!(ok("/x", &["user@a.example"]).unwrap_err().contains("not a host"));
        assert!(ok("http://a.example/x", &[]).unwrap_err().contains("must have a `Host`"));
    }

    #[test]
    fn http_1_0_may_have_no_host_but_not_two() {
        let ok = |hosts: &[&str]| host_after(request(Version::HTTP_10, "/x", hosts));
        assert_eq!(ok(&[]), Ok(None));
        assert_eq!(ok(&["a.example"]), Ok(Some("a.example".to_owned())));
        assert!(ok(&["a", "b"]).is_err());
    }

    #[test]
    fn an_absolute_target_is_the_host_whatever_host_says() {
        let ok = |version, target, hosts: &[&str]| host_after(request(version, target, hosts));
        assert_eq!(
            ok(Version::HTTP_11, "http://b.example:8080/x", &["a.example"]),
            Ok(Some("b.example:8080".to_owned()))
        );
        assert_eq!(ok(Version::HTTP_11, "http://b.example/x", &["b.example"]), Ok(Some("b.example".to_owned())));
        assert_eq!(ok(Version::HTTP_10, "http://b.example/x", &[]), Ok(Some("b.example".to_owned())));
        assert!(
            ok(Version::HTTP_11, "http://user@b.example/x", &["b.example"]).unwrap_err().contains("user information")
        );
    }

    #[test]
    fn over_http_2_host_must_name_the_authority() {
        let ok = |target, hosts: &[&str]| host_after(request(Version::HTTP_2, target, hosts));
        assert_eq!(ok("https://a.example/x", &[]), Ok(None), "no Host: the authority is the host");
        assert_eq!(ok("https://a.example/x", &["A.EXAMPLE"]), Ok(Some("A.EXAMPLE".to_owned())), "case aside");
        assert!(ok("https://a.example/x", &["a.example:443"]).is_ok(), "the default port, written");
        assert!(ok("http://a.example:80/x", &["a.example"]).is_ok());
        assert!(ok("https://a.example/x", &["b.example"]).unwrap_err().contains("another host"));
        assert!(ok("https://a.example/x", &["a.example:8443"]).unwrap_err().contains("another host"));
        assert_eq!(ok("/x", &["a.example"]), Ok(Some("a.example".to_owned())), "no authority: Host is the host");
    }

    /// With a list, only its hosts pass, however the request names them; without one, any.
    #[test]
    fn with_a_list_only_its_hosts_pass() {
        let allowed = ["bff.example.com", "*.apps.example", "[::1]"].map(|h| h.parse().unwrap());
        let filter = OneHost::new(&allowed);
        let status = |request: Request<Body>| {
            let mut request = request;
            filter.on_request(&mut request).map_or_else(|answer| answer.status().as_u16(), |()| 200)
        };
        let (pass, refused) = (200, 421);
        for (request, expected) in [
            (request(Version::HTTP_11, "/x", &["bff.example.com"]), pass),
            (request(Version::HTTP_11, "/x", &["BFF.EXAMPLE.COM:8080"]), pass),
            (request(Version::HTTP_11, "/x", &["a.apps.example"]), pass),
            (request(Version::HTTP_11, "/x", &["[::1]:8080"]), pass),
            (request(Version::HTTP_11, "/x", &["bff.example.com.:443"]), pass),
            (request(Version::HTTP_11, "http://bff.example.com/x", &["evil.example"]), pass),
            (request(Version::HTTP_2, "https://a.apps.example/x", &[]), pass),
            (request(Version::HTTP_11, "/x", &["evil.example"]), refused),
            (request(Version::HTTP_11, "/x", &["apps.example"]), refused),
            (request(Version::HTTP_11, "/x", &["[::2]"]), refused),
            (request(Version::HTTP_11, "/x", &["bff.example.com.."]), refused),
            (request(Version::HTTP_11, "/x", &["."]), refused),
            (request(Version::HTTP_11, "/x", &[""]), refused),
            (request(Version::HTTP_10, "/x", &[]), refused),
            (request(Version::HTTP_11, "http://evil.example/x", &["bff.example.com"]), refused),
            (request(Version::HTTP_2, "https://evil.example/x", &[]), refused),
        ] {
            let described = format!("{request:?}");
            assert_eq!(status(request), expected, "{described}");
        }
        // A malformed host is a 400 first, list or none.
        assert_eq!(status(request(Version::HTTP_11, "/x", &["a b"])), 400);
        let mut any = request(Version::HTTP_11, "/x", &["evil.example"]);
        assert!(OneHost::new(&[]).on_request(&mut any).is_ok(), "no list: any host");
    }
}

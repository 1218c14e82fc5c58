//! `Strict-Transport-Security` on every answer of a TLS listener (`[hsts]`, RFC 6797), the
//! gateway's own refusals included, in place of any an upstream sent: how long browsers keep to
//! HTTPS is the edge's to say.
//!
//! Not for `localhost` or an address (`127.0.0.1`, `[::1]`): browsers ignore it for an address
//! (RFC 6797 §8.1.1), and one visit to a developer's `https://localhost` would hold every app on
//! that name to HTTPS for a year.

use std::net::IpAddr;

use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::response::Response;

use crate::config::HstsConfig;
use crate::middleware::Filter;

/// Adds the header when the request names a host a browser keeps it for.
#[derive(Debug, Clone)]
pub(crate) struct Hsts(HeaderValue);

impl Hsts {
    /// The filter of `config`, for a listener that serves TLS; `None` when it is off.
    pub(crate) fn new(config: &HstsConfig) -> Option<Self> {
        if !config.enabled {
            return None;
        }
        let mut value = format!("max-age={}", config.max_age.as_secs());
        if config.include_subdomains {
            value.push_str("; includeSubDomains");
        }
        if config.preload {
            value.push_str("; preload");
        }
        HeaderValue::try_from(value).ok().map(Self)
    }
}

impl Filter for Hsts {
    type State = Option<HeaderValue>;

    fn on_request(&self, request: &mut Request) -> Result<Option<HeaderValue>, Response> {
        // HTTP/2's `:authority` and HTTP/1.1's absolute form are in the URI, `Host` otherwise.
        let host = match request.uri().host() {
            Some(host) => Some(host.as_bytes()),
            None => request.headers().get(header::HOST).map(HeaderValue::as_bytes),
        };
        Ok(host.is_some_and(kept_for).then(|| self.0.clone()))
    }

    fn on_response(value: Option<HeaderValue>, response: &mut Response) {
        if let Some(value) = value {
            response.headers_mut().insert(header::STRICT_TRANSPORT_SECURITY, value);
        }
    }
}

/// Whether browsers keep HSTS for `host` (a `Host` value, port and all): a name, and not
/// `localhost` or one of its subdomains (RFC 6761 §6.3).
fn kept_for(host: &[u8]) -> bool {
    const LOCALHOST: &[u8] = b".localhost";
    let name = crate::request::name_of(host);
    let under_localhost = |name: &[u8]| {
        name.len() >= LOCALHOST.len() && {
            let (_, end) = name.split_at(name.len() - LOCALHOST.len());
            end.eq_ignore_ascii_case(LOCALHOST)
        }
    };
    let address = std::str::from_utf8(name).is_ok_and(|name| name.parse::<IpAddr>().is_ok());
    !(name.is_empty()
        || !name.is_ascii()
        || address
        || name.eq_ignore_ascii_case(&LOCALHOST[1..])
        || under_localhost(name))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::body::Body;

    use super::*;

    fn config(max_age: u64, include_subdomains: bool, preload: bool) -> HstsConfig {
        HstsConfig { max_age: Duration::from_secs(max_age), include_subdomains, preload, ..HstsConfig::default() }
    }

    #[test]
    fn the_header_says_what_the_config_does() {
        let value = |config: HstsConfig| Hsts::new(&config).map(|hsts| hsts.0.to_str().unwrap().to_owned());
        assert_eq!(value(HstsConfig::default()).as_deref(), Some("max-age=31536000"));
        assert_eq!(value(config(0, false, false)).as_deref(), Some("max-age=0"));
        assert_eq!(
            value(config(63_072_000, true, true)).as_deref(),
            Some("max-age=63072000; includeSubDomains; preload")
        );
        assert_eq!(value(HstsConfig { enabled: false, ..HstsConfig::default() }), None);
    }

    #[test]
    fn names_get_it_and_addresses_and_localhost_do_not() {
        for name in ["app.example.com", "app.example.com:8443", "APP.example.", "localhost.example", "x-localhost"] {
            assert!(kept_for(name.as_bytes()), "{name}");
        }
        let never: [&[u8]; 12] = [
            b"localhost",
            b"LocalHost:8443",
            b"localhost.",
            b"app.localhost",
            b"app.LOCALHOST.:443",
            b"127.0.0.1",
            b"10.1.2.3:8443",
            b"[::1]",
            b"[2001:db8::1]:443",
            b"",
            b":443",
            b"caf\xc3",
        ];
        for host in never {
            assert!(!kept_for(host), "{:?}", String::from_utf8_lossy(host));
        }
    }

    #[test]
    fn it_replaces_an_upstreams_and_goes_on_every_answer_for_a_name() {
        let hsts = Hsts::new(&HstsConfig::default()).unwrap();
        let answer = |request: Request| {
            let mut request = request;
            let state = hsts.on_request(&mut request).unwrap();
            let mut response = Response::new(Body::empty());
            response.headers_mut().insert(header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static("max-age=1"));
            Hsts::on_response(state, &mut response);
            response.headers().get(header::STRICT_TRANSPORT_SECURITY).map(|v| v.to_str().unwrap().to_owned())
        };
        let by_host = |host: &str| Request::builder().uri("/x").header(header::HOST, host).body(Body::empty()).unwrap();
        assert_eq!(answer(by_host("shop.example")).as_deref(), Some("max-age=31536000"));
        // An upstream's own is left alone where none is sent.
        assert_eq!(answer(by_host("127.0.0.1:8443")).as_deref(), Some("max-age=1"));
        // The authority of HTTP/2 (or an absolute form) is the host, whatever `Host` says.
        let authority =
            Request::builder().uri("https://shop.example/x").header(header::HOST, "localhost").body(Body::empty());
        assert_eq!(answer(authority.unwrap()).as_deref(), Some("max-age=31536000"));
    }
}

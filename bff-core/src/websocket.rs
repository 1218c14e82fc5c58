//! Whether a request opens a WebSocket, either way a client may open one: over HTTP/1.1 a `GET`
//! with `Connection: Upgrade` and `Upgrade: websocket` (RFC 6455), over HTTP/2 an extended
//! `CONNECT` with `:protocol = websocket` (RFC 8441). Passthrough routes tunnel such a request
//! (`proxy/tunnel.rs`); a browser session lets one through on its page's `Origin`, since a
//! browser cannot add the `X-CSRF` header to it (`session`).

use axum::http::header::{CONNECTION, UPGRADE};
use axum::http::{Extensions, HeaderMap, Method, Version};
use hyper::ext::Protocol;

/// How a client asked to open a WebSocket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Opening {
    /// An HTTP/1.1 upgrade, answered `101`.
    Upgrade,
    /// An HTTP/2 extended `CONNECT`, answered `200`.
    ExtendedConnect,
}

impl Opening {
    /// How a request of `method`, `version`, `headers` and `extensions` opens a WebSocket, if
    /// it does. The upgrade headers are read as bytes, each a list of tokens.
    pub(crate) fn of(method: &Method, version: Version, headers: &HeaderMap, extensions: &Extensions) -> Option<Self> {
        if *method == Method::CONNECT {
            let websocket = extended_connect(method, extensions) && version == Version::HTTP_2;
            return websocket.then_some(Self::ExtendedConnect);
        }
        let has = |name, token: &[u8]| {
            headers
                .get_all(name)
                .iter()
                .any(|v| v.as_bytes().split(|&b| b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(token)))
        };
        (*method == Method::GET && has(CONNECTION, b"upgrade") && has(UPGRADE, b"websocket")).then_some(Self::Upgrade)
    }
}

/// Whether a request is a `CONNECT` for the WebSocket protocol (`:protocol websocket`).
pub(crate) fn extended_connect(method: &Method, extensions: &Extensions) -> bool {
    *method == Method::CONNECT
        && extensions.get::<Protocol>().is_some_and(|p| p.as_str().eq_ignore_ascii_case("websocket"))
}

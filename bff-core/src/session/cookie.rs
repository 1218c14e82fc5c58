//! The two cookies of a browser session, read from `Cookie` and written as `Set-Cookie`.
//!
//! Both are `__Host-` cookies (RFC 6265bis §4.1.3.2): `Secure`, `Path=/`, no `Domain`, so no
//! subdomain can set or overwrite them, and `HttpOnly`, so no script reads them. `SameSite=Lax`
//! keeps them off cross-site subrequests and form posts, yet sends them on the top-level
//! navigation back from the identity provider. Browsers treat `http://127.0.0.1` and
//! `http://localhost` as secure contexts, so they work in local development without TLS.

use std::time::Duration;

use axum::http::header::{COOKIE, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue};

/// Names the server-side session.
pub(crate) const SESSION: &str = "__Host-bff-session";
/// Binds a login in progress (its state, nonce and PKCE verifier) to the browser that began it.
pub(crate) const LOGIN: &str = "__Host-bff-login";

/// The length of every id this module writes: 32 random bytes, base64url without padding.
pub(crate) const ID_LEN: usize = 43;

/// The value of the first cookie `name` that has the shape of our ids; anything else a client
/// sends under that name is ignored, never looked up. A `Cookie` line is read as bytes: a
/// browser sends whatever a page's script wrote into its cookies, UTF-8 included.
pub(crate) fn read<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .flat_map(|value| pairs(value.as_bytes()))
        .filter_map(name_and_value)
        .find(|(key, value)| *key == name.as_bytes() && is_id(value))
        // An id is ASCII.
        .and_then(|(_, value)| std::str::from_utf8(value).ok())
}

/// Whether `pair` (a `name=value` of a `Cookie` line, as bytes) is one of this module's
/// cookies: never forwarded upstream (`proxy/headers.rs` takes them out).
pub(crate) fn is_ours(pair: &[u8]) -> bool {
    name_and_value(pair).is_some_and(|(name, _)| name == SESSION.as_bytes() || name == LOGIN.as_bytes())
}

/// The `name=value` pairs of a `Cookie` line, trimmed. As bytes: a browser sends whatever a
/// page's script wrote into a cookie, UTF-8 included.
pub(crate) fn pairs(line: &[u8]) -> impl Iterator<Item = &[u8]> {
    line.split(|&b| b == b';').map(<[u8]>::trim_ascii)
}

/// `pair` split at its first `=`, the spaces around the name and the value left out.
fn name_and_value(pair: &[u8]) -> Option<(&[u8], &[u8])> {
    let at = pair.iter().position(|&b| b == b'=')?;
    Some((pair[..at].trim_ascii(), pair[at + 1..].trim_ascii()))
}

/// Removes the `Set-Cookie` lines of `headers` (an upstream's answer on a passthrough route)
/// that would set one of this module's cookies. Only the BFF sets them: an upstream that could
/// would put a session of its choosing in the browser (session fixation).
pub(crate) fn remove_ours_set(headers: &mut HeaderMap) {
    let ours = |line: &HeaderValue| {
        let line = line.as_bytes();
        // The name is what comes before the first `=`, spaces around it ignored (RFC 6265 §5.2).
        let name = line.iter().position(|&b| b == b'=').map_or(&[][..], |at| line[..at].trim_ascii());
        name == SESSION.as_bytes() || name == LOGIN.as_bytes()
    };
    if !headers.get_all(SET_COOKIE).iter().any(ours) {
        return;
    }
    let kept: Vec<HeaderValue> = headers.get_all(SET_COOKIE).iter().filter(|line| !ours(line)).cloned().collect();
    headers.remove(SET_COOKIE);
    for line in kept {
        headers.append(SET_COOKIE, line);
    }
}

/// Whether `value` is one of our ids: 43 base64url characters.
fn is_id(value: &[u8]) -> bool {
    value.len() == ID_LEN && value.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `Set-Cookie` for `name=value`, kept for `max_age`.
pub(crate) fn set(name: &str, value: &str, max_age: Duration) -> HeaderValue {
    let cookie = format!("{name}={value}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age={}", max_age.as_secs());
    // Ours alone: a name and an id of safe characters, so always a valid header value.
    HeaderValue::try_from(cookie).unwrap_or(HeaderValue::from_static(""))
}

/// `Set-Cookie` that removes `name`.
pub(crate) fn clear(name: &str) -> HeaderValue {
    let cookie = format!("{name}=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0");
    HeaderValue::try_from(cookie).unwrap_or(HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123-_Z";

    fn headers(cookies: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for cookie in cookies {
            headers.append(COOKIE, HeaderValue::from_str(cookie).unwrap());
        }
        headers
    }

    #[test]
    fn only_an_id_shaped_value_of_the_right_name_is_read() {
        assert_eq!(ID.len(), ID_LEN);
        let found = headers(&[&format!("theme=dark; {SESSION}=short; {SESSION}={ID}")]);
        assert_eq!(read(&found, SESSION), Some(ID));
        assert_eq!(read(&found, LOGIN), None);
        // Across several Cookie headers (HTTP/2 sends one per cookie).
        let split = headers(&["a=b", &format!("{LOGIN}={ID}")]);
        assert_eq!(read(&split, LOGIN), Some(ID));
        let forged = headers(&[&format!("{SESSION}={}", "x".repeat(4096)), &format!("{SESSION}=../../{ID}")]);
        assert_eq!(read(&forged, SESSION), None);
    }

    /// A line with bytes that are not ASCII (a page's script may write UTF-8 into a cookie) is
    /// read as bytes: the session's id is found in it.
    #[test]
    fn our_id_is_read_from_a_line_that_is_not_ascii() {
        let mut found = HeaderMap::new();
        let line = format!("lang=fran\u{e7}ais; {SESSION}={ID}");
        found.insert(COOKIE, HeaderValue::from_bytes(line.as_bytes()).unwrap());
        assert_eq!(read(&found, SESSION), Some(ID));
        assert!(is_ours(format!(" {SESSION}={ID}").as_bytes()) && !is_ours("lang=fran\u{e7}ais".as_bytes()));
    }

    /// An upstream's answer may set any cookie but ours, however it spaces the name.
    #[test]
    fn an_upstream_cannot_set_our_cookies() {
        let mut answer = HeaderMap::new();
        let lines =
            ["theme=dark; Path=/", &format!("{SESSION}={ID}; Path=/; Secure"), &format!(" {LOGIN} =x"), "lang=en"];
        for line in lines {
            answer.append(SET_COOKIE, HeaderValue::from_str(line).unwrap());
        }
        remove_ours_set(&mut answer);
        let kept: Vec<_> = answer.get_all(SET_COOKIE).iter().collect();
        assert_eq!(kept, ["theme=dark; Path=/", "lang=en"]);
        // Another cookie whose value names ours is not ours.
        let mut answer = HeaderMap::new();
        answer.append(SET_COOKIE, HeaderValue::from_str(&format!("x={SESSION}=1")).unwrap());
        remove_ours_set(&mut answer);
        assert_eq!(answer.get_all(SET_COOKIE).iter().count(), 1);
    }

    #[test]
    fn a_cookie_is_host_only_secure_http_only_and_lax() {
        let set = set(SESSION, ID, Duration::from_secs(60));
        assert_eq!(set, format!("{SESSION}={ID}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=60").as_str());
        assert!(clear(LOGIN).to_str().unwrap().ends_with("Max-Age=0"));
    }
}

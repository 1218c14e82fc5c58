//! The headers of a forwarded request and of its answer: hop-by-hop headers dropped both ways
//! (RFC 9110 §7.6.1, those a `Connection` header names included), `X-Forwarded-*`, `Forwarded`
//! and `Via` set, and what belongs to this hop only (the client's `Host`, request id, deadline,
//! `Expect`) left for the outbound stack to set.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::http::Version;
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue, InvalidHeaderValue};
use bytes::Bytes;

use crate::config::IpNet;
use crate::identity::REQUEST_ID_HEADER;
use crate::session::{cookie_pairs, is_session_cookie};
use crate::upstream::DEADLINE_MS;

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1, and the
/// pre-standard ones proxies still meet). `Trailer` is not one: it names the trailer fields the
/// message carries end to end.
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRANSFER_ENCODING,
];

/// Headers with which many web frameworks let a client name another method than the request's
/// (a `GET` that an upstream runs as a `DELETE`). The route's `methods` and its access check
/// judged the request's own method, so no upstream gets another.
const METHOD_OVERRIDES: [HeaderName; 3] = [
    HeaderName::from_static("x-http-method-override"),
    HeaderName::from_static("x-http-method"),
    HeaderName::from_static("x-method-override"),
];

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Whether `name` is dropped at every hop (`Upgrade` too: a WebSocket is not forwarded as a
/// header).
fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name) || name == header::UPGRADE
}

/// Removes the hop-by-hop headers of `headers`, those its `Connection` names first; `Upgrade`
/// too (a WebSocket is not forwarded on these routes). Most messages have none: one pass over
/// the names finds that, without a lookup per name.
pub(crate) fn remove_hop_by_hop(headers: &mut HeaderMap) {
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    // As bytes: a line with a byte that is not ASCII still names the fields it names.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .filter_map(|name| HeaderName::from_bytes(name.trim_ascii()).ok())
        .collect();
    for name in named.iter().chain(&HOP_BY_HOP) {
        headers.remove(name);
    }
    headers.remove(header::UPGRADE);
}

/// The client's `Cookie` lines as the upstream gets them: one line, `; ` between cookies, and
/// without the browser session's own when `drop_session` (they are the browser's credential with
/// this BFF, never an upstream's). An HTTP/2 client may send each cookie as a field of its own,
/// and they must be joined before the request goes on in another protocol (RFC 9113 §8.2.3): an
/// HTTP/1.1 origin reads one `Cookie` line (RFC 6265 §5.4), and many read only the first. One
/// line with none of the session's is left as it came.
fn forward_cookies(headers: &mut HeaderMap, drop_session: bool) {
    let header::Entry::Occupied(mut lines) = headers.entry(header::COOKIE) else { return };
    let has_ours = |line: &HeaderValue| cookie_pairs(line.as_bytes()).any(is_session_cookie);
    if lines.iter().nth(1).is_none() && !(drop_session && lines.iter().any(has_ours)) {
        return;
    }
    let mut joined = Vec::with_capacity(lines.iter().map(|v| v.len() + 2).sum());
    let mut push = |piece: &[u8]| {
        if !joined.is_empty() {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(piece);
    };
    for line in lines.iter() {
        if drop_session {
            cookie_pairs(line.as_bytes())
                .filter(|pair| !pair.is_empty() && !is_session_cookie(pair))
                .for_each(&mut push);
        } else {
            push(line.as_bytes());
        }
    }
    if joined.is_empty() {
        lines.remove();
    } else if let Ok(value) = HeaderValue::from_maybe_shared(Bytes::from(joined)) {
        // Each piece was part of a valid value, and `; ` is valid between them.
        lines.insert(value);
    }
}

/// Removes each of `names` that `headers` has, looking up only those it has.
fn remove_each(headers: &mut HeaderMap, names: &[&HeaderName]) {
    let mut present = 0u32;
    for name in headers.keys() {
        if let Some(i) = names.iter().position(|n| *n == name) {
            present |= 1 << i;
        }
    }
    for (i, name) in names.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(*name);
        }
    }
}

/// What the forwarded request's headers need from the request and its connection.
pub(crate) struct Forwarding<'a> {
    /// The connection's peer; `None` when unknown (an in-process test).
    pub(crate) peer: Option<SocketAddr>,
    /// Peers whose `X-Forwarded-*` and `Forwarded` are extended rather than replaced.
    pub(crate) trusted: &'a [IpNet],
    /// `https` when the listener terminates TLS.
    pub(crate) proto: &'static str,
    /// The host the client asked for (`Host`, or the HTTP/2 authority), as it came.
    pub(crate) host: Option<HeaderValue>,
    pub(crate) version: Version,
    /// The credential header the gateway verified, if the route needed one: not forwarded (the
    /// upstream gets the verified identity headers instead).
    pub(crate) credential: Option<&'a HeaderName>,
    /// Whether the browser-session cookies are taken out of `Cookie`: they are the browser's
    /// credential with this BFF, never an upstream's.
    pub(crate) session_cookies: bool,
}

/// The request has already passed through BFFs more than [`MAX_BFF_HOPS`] times: a loop.
#[derive(Debug)]
pub(crate) struct Looped;

/// The headers of the request sent upstream, made from the client's `headers`; [`Looped`] when
/// its `Via` shows a loop (read while this hop's entry is added: no extra lookup).
pub(crate) fn request_headers(headers: &mut HeaderMap, forwarding: &Forwarding<'_>) -> Result<(), Looped> {
    // TE: trailers is the one TE a proxy may pass on (gRPC needs it).
    let trailers = headers
        .get_all(header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("trailers")));
    remove_hop_by_hop(headers);
    let trusted = forwarding.peer.is_some_and(|p| forwarding.trusted.iter().any(|n| n.contains(p.ip().to_canonical())));
    // This hop's own headers, the verified credential, a method other than the one the route
    // and its checks saw, and an untrusted peer's forwarding claims.
    let credential = forwarding.credential.unwrap_or(&header::HOST);
    let names = [
        &header::HOST,
        &REQUEST_ID_HEADER,
        &DEADLINE_MS,
        &header::EXPECT,
        credential,
        &METHOD_OVERRIDES[0],
        &METHOD_OVERRIDES[1],
        &METHOD_OVERRIDES[2],
        &X_FORWARDED_FOR,
        &X_FORWARDED_PROTO,
        &X_FORWARDED_HOST,
        &header::FORWARDED,
    ];
    remove_each(headers, if trusted { &names[..8] } else { &names });
    forward_cookies(headers, forwarding.session_cookies);
    if trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    if let Some(peer) = forwarding.peer {
        let host = forwarding.host.as_ref().and_then(|h| h.to_str().ok());
        let (address, forwarded) = client_values(peer.ip().to_canonical(), host, forwarding.proto);
        if let Ok(address) = address {
            append(headers, X_FORWARDED_FOR, address);
        }
        if let Ok(forwarded) = forwarded {
            append(headers, header::FORWARDED, forwarded);
        }
    }
    if !headers.contains_key(X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(forwarding.proto));
    }
    if !headers.contains_key(X_FORWARDED_HOST)
        && let Some(host) = &forwarding.host
    {
        headers.insert(X_FORWARDED_HOST, host.clone());
    }
    match headers.entry(header::VIA) {
        header::Entry::Vacant(vacant) => {
            vacant.insert(via(forwarding.version));
        }
        header::Entry::Occupied(lines) => {
            if bff_hops(lines.iter()) > MAX_BFF_HOPS {
                return Err(Looped);
            }
            join_onto(lines, &via(forwarding.version));
        }
    }
    Ok(())
}

/// The trailer fields of a forwarded request, cleaned as its headers are: what a client may not
/// send upstream as a header may not arrive as a trailer either (RFC 9110 §6.5.1 lets a recipient
/// merge a trailer field into the headers where the field's definition allows it, and some
/// servers do). Dropped: hop-by-hop fields, this hop's own, the identity headers, the forwarding
/// claims and `Via`, the method overrides, cookies and the route's `credential`.
pub(crate) fn request_trailers(trailers: &mut HeaderMap, credential: Option<&HeaderName>) {
    remove_hop_by_hop(trailers);
    let [override_a, override_b, override_c] = &METHOD_OVERRIDES;
    let [user, scopes, account] = &crate::identity::NAMES;
    let names = [
        &header::HOST,
        &REQUEST_ID_HEADER,
        &DEADLINE_MS,
        &header::EXPECT,
        &header::AUTHORIZATION,
        credential.unwrap_or(&header::AUTHORIZATION),
        &header::COOKIE,
        &X_FORWARDED_FOR,
        &X_FORWARDED_PROTO,
        &X_FORWARDED_HOST,
        &header::FORWARDED,
        &header::VIA,
        override_a,
        override_b,
        override_c,
        user,
        scopes,
        account,
    ];
    remove_each(trailers, &names);
}

/// The headers of the answer sent to the client, made from the upstream's.
pub(crate) fn response_headers(headers: &mut HeaderMap, version: Version) {
    remove_hop_by_hop(headers);
    append(headers, header::VIA, via(version));
}

/// How many BFFs a forwarded request may already have passed: one more means a passthrough
/// route points back at a BFF (its own listener, say), and each pass would forward it again.
const MAX_BFF_HOPS: usize = 8;

/// How many entries of `Via` `lines` a BFF wrote (`1.1 bff`, `2 bff`), counting up to
/// [`MAX_BFF_HOPS`] + 1 at most.
fn bff_hops<'a>(lines: impl Iterator<Item = &'a HeaderValue>) -> usize {
    lines
        .flat_map(|line| line.as_bytes().split(|&b| b == b','))
        .filter(|entry| entry.split(u8::is_ascii_whitespace).filter(|word| !word.is_empty()).nth(1) == Some(b"bff"))
        .take(MAX_BFF_HOPS + 1)
        .count()
}

/// A `Via` entry for a message received in `version`, under the gateway's pseudonym (RFC 9110
/// §7.6.3: no host name or version given away); static, not made per message.
fn via(version: Version) -> HeaderValue {
    HeaderValue::from_static(match version {
        Version::HTTP_09 => "0.9 bff",
        Version::HTTP_10 => "1.0 bff",
        Version::HTTP_2 => "2 bff",
        Version::HTTP_3 => "3 bff",
        _ => "1.1 bff",
    })
}

/// `value` appended to the last line of `name` (`a, b`), or as its first line (as it is: the
/// common case costs no copy).
fn append(headers: &mut HeaderMap, name: HeaderName, value: HeaderValue) {
    match headers.entry(name) {
        header::Entry::Vacant(vacant) => {
            vacant.insert(value);
        }
        header::Entry::Occupied(lines) => join_onto(lines, &value),
    }
}

/// `value` appended to the last of `lines` (`a, b`).
fn join_onto(mut lines: header::OccupiedEntry<'_, HeaderValue>, value: &HeaderValue) {
    let mut joined = String::new();
    for line in lines.iter().filter_map(|v| v.to_str().ok()) {
        joined.push_str(line);
        joined.push_str(", ");
    }
    joined.push_str(value.to_str().unwrap_or_default());
    if let Ok(value) = HeaderValue::try_from(joined) {
        lines.insert(value);
    }
}

/// `ip` in dotted decimal, written digit by digit (the formatting machinery costs more than the
/// rest of the header).
/// The client's `X-Forwarded-For` entry (its address) and its `Forwarded` node, written into one
/// buffer that both values share.
fn client_values(
    ip: IpAddr,
    host: Option<&str>,
    proto: &str,
) -> (Result<HeaderValue, InvalidHeaderValue>, Result<HeaderValue, InvalidHeaderValue>) {
    let mut text = String::with_capacity(128 + host.map_or(0, str::len));
    match ip {
        IpAddr::V4(v4) => push_ipv4(&mut text, v4),
        IpAddr::V6(v6) => {
            let _ = write!(text, "{v6}");
        }
    }
    let address = text.len();
    // A `Forwarded` node: IPv6 quoted in brackets (RFC 7239 §6).
    text.push_str(if ip.is_ipv6() { "for=\"[" } else { "for=" });
    text.extend_from_within(..address);
    if ip.is_ipv6() {
        text.push_str("]\"");
    }
    if let Some(host) = host {
        text.push_str(";host=\"");
        text.extend(host.chars().filter(|c| !matches!(c, '"' | '\\')));
        text.push('"');
    }
    text.push_str(";proto=");
    text.push_str(proto);
    let shared = Bytes::from(text);
    (HeaderValue::from_maybe_shared(shared.slice(..address)), HeaderValue::from_maybe_shared(shared.slice(address..)))
}

fn push_ipv4(out: &mut String, ip: Ipv4Addr) {
    for (i, octet) in ip.octets().into_iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        if octet >= 100 {
            out.push(char::from(b'0' + octet / 100));
        }
        if octet >= 10 {
            out.push(char::from(b'0' + octet / 10 % 10));
        }
        out.push(char::from(b'0' + octet % 10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn forwarding<'a>(peer: &str, trusted: &'a [IpNet], credential: Option<&'a HeaderName>) -> Forwarding<'a> {
        Forwarding {
            peer: Some(peer.parse().unwrap()),
            trusted,
            proto: "http",
            host: Some(HeaderValue::from_static("shop.example")),
            version: Version::HTTP_11,
            credential,
            session_cookies: true,
        }
    }

    /// Only the entries a BFF wrote count, across lines, whatever else is there.
    #[test]
    fn a_bffs_via_entries_are_counted() {
        let h = headers(&[("via", "1.1 bff, 1.0 fred, 2 bff (comment)"), ("via", "1.1 nginx"), ("via", " 1.1  bff ")]);
        assert_eq!(bff_hops(h.get_all("via").iter()), 3);
        assert_eq!(bff_hops(std::iter::empty()), 0);
        assert_eq!(bff_hops(headers(&[("via", "1.1 bffx, bff, 1.1 bff.example")]).get_all("via").iter()), 0);
        let many = vec!["1.1 bff"; 50].join(", ");
        let many = headers(&[("via", &many)]);
        assert_eq!(bff_hops(many.get_all("via").iter()), MAX_BFF_HOPS + 1, "counted no further than needed");
        let mut looped = many.clone();
        assert!(request_headers(&mut looped, &forwarding("203.0.113.9:5000", &[], None)).is_err());
    }

    /// The session's cookies are taken out of what goes upstream, every other cookie kept; with
    /// none of them, one line is left as it came.
    #[test]
    fn our_cookies_are_taken_out_of_a_forwarded_request_and_the_others_kept() {
        const ID: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123-_Z";
        let mut forwarded = headers(&[
            ("cookie", &format!("theme=dark; __Host-bff-session={ID}; lang=en")),
            ("cookie", &format!("__Host-bff-login={ID}")),
        ]);
        forward_cookies(&mut forwarded, true);
        let left: Vec<&str> = forwarded.get_all(header::COOKIE).iter().map(|v| v.to_str().unwrap()).collect();
        assert_eq!(left, ["theme=dark; lang=en"]);
        let mut none = headers(&[("cookie", "a=b")]);
        forward_cookies(&mut none, true);
        assert_eq!(none[header::COOKIE], "a=b");
        let mut only_ours = headers(&[("cookie", &format!("__Host-bff-session={ID}"))]);
        forward_cookies(&mut only_ours, true);
        assert!(!only_ours.contains_key(header::COOKIE), "no empty line");
    }

    /// A browser sends the bytes a page's script wrote into a cookie, UTF-8 included, which
    /// are not text to `HeaderValue::to_str`: the session's cookie in such a line is taken out
    /// all the same, and the page's cookie goes upstream byte for byte.
    #[test]
    fn our_cookies_are_taken_out_of_a_line_that_is_not_ascii() {
        const ID: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123-_Z";
        let line = format!("lang=fran\u{e7}ais; __Host-bff-session={ID}; city=K\u{f8}benhavn");
        let mut forwarded = HeaderMap::new();
        forwarded.insert(header::COOKIE, HeaderValue::from_bytes(line.as_bytes()).unwrap());
        forward_cookies(&mut forwarded, true);
        let left = forwarded.get(header::COOKIE).map(HeaderValue::as_bytes);
        assert_eq!(left, Some("lang=fran\u{e7}ais; city=K\u{f8}benhavn".as_bytes()));
    }

    /// An HTTP/2 client's cookie fields reach the upstream as one line, in their order, with the
    /// session's own taken out; one line is left as it came.
    #[test]
    fn cookie_fields_are_joined_into_one_line() {
        let mut h = headers(&[("cookie", "a=1"), ("cookie", "__Host-bff-session=s"), ("cookie", "b=2; c=3")]);
        request_headers(&mut h, &forwarding("203.0.113.9:5000", &[], None)).unwrap();
        let lines: Vec<_> = h.get_all("cookie").iter().collect();
        assert_eq!(lines, ["a=1; b=2; c=3"]);
        let mut h = headers(&[("cookie", "a=1; b=2")]);
        request_headers(&mut h, &forwarding("203.0.113.9:5000", &[], None)).unwrap();
        assert_eq!(h.get_all("cookie").iter().collect::<Vec<_>>(), ["a=1; b=2"]);
    }

    #[test]
    fn hop_by_hop_and_this_hops_headers_are_not_forwarded() {
        let mut h = headers(&[
            ("connection", "keep-alive, x-secret-hop"),
            ("keep-alive", "timeout=5"),
            ("x-secret-hop", "1"),
            ("transfer-encoding", "chunked"),
            ("te", "gzip, trailers"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic x"),
            ("host", "shop.example"),
            ("x-request-id", "client-chosen"),
            ("x-request-deadline-ms", "999999"),
            ("expect", "100-continue"),
            ("authorization", "Bearer t"),
            ("x-http-method-override", "DELETE"),
            ("x-http-method", "DELETE"),
            ("x-method-override", "DELETE"),
            ("accept", "application/json"),
        ]);
        let auth = header::AUTHORIZATION;
        request_headers(&mut h, &forwarding("203.0.113.9:5000", &[], Some(&auth))).unwrap();
        for gone in [
            "connection",
            "keep-alive",
            "x-secret-hop",
            "transfer-encoding",
            "upgrade",
            "proxy-authorization",
            "host",
            "x-request-id",
            "x-request-deadline-ms",
            "expect",
            "authorization",
            "x-http-method-override",
            "x-http-method",
            "x-method-override",
        ] {
            assert!(!h.contains_key(gone), "{gone} was forwarded");
        }
        assert_eq!(h["te"], "trailers");
        assert_eq!(h["accept"], "application/json");
        assert_eq!(h["via"], "1.1 bff");
        // A `Connection` line with a byte that is not ASCII names its fields all the same.
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_bytes(b"x-secret-hop, caf\xc3\xa9").unwrap());
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        request_headers(&mut h, &forwarding("203.0.113.9:5000", &[], None)).unwrap();
        assert!(!h.contains_key("x-secret-hop") && !h.contains_key(header::CONNECTION), "{h:?}");
    }

    #[test]
    fn forwarded_headers_are_replaced_unless_the_peer_is_a_trusted_proxy() {
        let sent = [
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example"),
            ("forwarded", "for=6.6.6.6"),
        ];
        let mut h = headers(&sent);
        request_headers(&mut h, &forwarding("203.0.113.9:5000", &[], None)).unwrap();
        assert_eq!(h["x-forwarded-for"], "203.0.113.9");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "shop.example");
        assert_eq!(h["forwarded"], "for=203.0.113.9;host=\"shop.example\";proto=http");

        let trusted = ["10.0.0.0/8".parse().unwrap()];
        let mut h = headers(&sent);
        h.insert("x-http-method-override", HeaderValue::from_static("DELETE"));
        request_headers(&mut h, &forwarding("10.1.2.3:5000", &trusted, None)).unwrap();
        assert!(!h.contains_key("x-http-method-override"), "not even from a trusted proxy");
        assert_eq!(h["x-forwarded-for"], "6.6.6.6, 10.1.2.3");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "evil.example");
        assert_eq!(h["forwarded"], "for=6.6.6.6, for=10.1.2.3;host=\"shop.example\";proto=http");

        let mut h = HeaderMap::new();
        request_headers(&mut h, &forwarding("[2001:db8::1]:443", &[], None)).unwrap();
        assert!(h["forwarded"].to_str().unwrap().starts_with("for=\"[2001:db8::1]\""));
    }

    proptest::proptest! {
        #[test]
        fn addresses_are_written_as_rust_writes_them(octets: [u8; 4]) {
            let mut written = String::new();
            push_ipv4(&mut written, Ipv4Addr::from(octets));
            proptest::prop_assert_eq!(written, Ipv4Addr::from(octets).to_string());
        }
    }

    #[test]
    fn a_clients_address_and_forwarded_node_share_one_buffer() {
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        let (address, forwarded) = client_values(v6, Some("shop.\"example\\.com"), "https");
        let (address, forwarded) = (address.unwrap(), forwarded.unwrap());
        assert_eq!(address, "2001:db8::1");
        assert_eq!(forwarded, "for=\"[2001:db8::1]\";host=\"shop.example.com\";proto=https");
        let end = address.as_bytes().as_ptr_range().end;
        assert_eq!(end, forwarded.as_bytes().as_ptr(), "the node follows the address in one buffer");
        let (address, forwarded) = client_values(IpAddr::from([10, 0, 0, 7]), None, "http");
        assert_eq!(address.unwrap(), "10.0.0.7");
        assert_eq!(forwarded.unwrap(), "for=10.0.0.7;proto=http");
    }

    #[test]
    fn a_requests_trailers_lose_what_its_headers_may_not_carry() {
        let mut t = headers(&[
            ("x-user-id", "1"),
            ("x-user-scopes", "admin"),
            ("x-partner-account", "other"),
            ("x-forwarded-for", "6.6.6.6"),
            ("forwarded", "for=6.6.6.6"),
            ("via", "1.1 bff"),
            ("cookie", "__Host-bff-session=s"),
            ("x-api-key", "someone's"),
            ("x-http-method-override", "DELETE"),
            ("connection", "x-hop"),
            ("x-hop", "1"),
            ("content-digest", "sha-256=:x:"),
            ("x-checksum", "1"),
        ]);
        request_trailers(&mut t, Some(&HeaderName::from_static("x-api-key")));
        let mut kept: Vec<&str> = t.keys().map(HeaderName::as_str).collect();
        kept.sort_unstable();
        assert_eq!(kept, ["content-digest", "x-checksum"]);
    }

    #[test]
    fn answers_lose_their_hop_by_hop_headers_and_gain_a_via() {
        let mut h = headers(&[("connection", "close"), ("transfer-encoding", "chunked"), ("via", "1.1 cdn")]);
        response_headers(&mut h, Version::HTTP_2);
        assert!(!h.contains_key("connection") && !h.contains_key("transfer-encoding"));
        assert_eq!(h["via"], "1.1 cdn, 2 bff");
    }
}

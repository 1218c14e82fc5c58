//! The client's address: the connection's peer, or what `X-Forwarded-For` says when the peer is a
//! trusted proxy.
//!
//! From a trusted peer, the header is read right to left (each proxy appends the address it got
//! the request from), skipping trusted proxies: the first address that is not one is the client.
//! A client can write anything on the left of the header, never on the right of what a trusted
//! proxy appended, so nothing it sends can choose its key. From any other peer the header is
//! ignored.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use axum::http::HeaderMap;

use crate::config::IpNet;

/// The most `X-Forwarded-For` entries read, right to left.
const MAX_HOPS: usize = 32;

/// The client's address, `peer` being the connection's.
pub(crate) fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|net| net.contains(ip));
    let peer = peer.to_canonical();
    if !is_trusted(peer) {
        return peer;
    }
    let mut client = peer;
    // The last line first, and each line's entries right to left. As bytes: a client's byte
    // that is not ASCII, on the left of a line a proxy appended to, must not hide that line.
    let lines = headers.get_all("x-forwarded-for").iter().rev().map(|v| v.as_bytes());
    let entries = lines.flat_map(|line| line.rsplit(|&b| b == b',')).take(MAX_HOPS);
    for entry in entries {
        let Some(ip) = std::str::from_utf8(entry.trim_ascii()).ok().and_then(parse_entry) else { break };
        client = ip;
        if !is_trusted(ip) {
            break;
        }
    }
    client
}

/// `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1` or `[2001:db8::1]:443`.
fn parse_entry(entry: &str) -> Option<IpAddr> {
    let ip = entry.parse::<IpAddr>().ok().or_else(|| entry.parse::<SocketAddr>().ok().map(|s| s.ip()))?;
    Some(ip.to_canonical())
}

/// The address a limit counts: an IPv6 address by its /64, which one subscriber usually holds
/// whole (counting each address would let one client take 2^64 buckets).
pub(crate) fn limit_address(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !(u128::MAX >> 64))),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append("x-forwarded-for", HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_header_counts_only_from_trusted_peers() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let spoofed = headers(&["203.0.113.7"]);
        assert_eq!(client_ip(ip("198.51.100.1"), &spoofed, &trusted), ip("198.51.100.1"));
        assert_eq!(client_ip(ip("10.0.0.1"), &spoofed, &trusted), ip("203.0.113.7"));
        assert_eq!(client_ip(ip("10.0.0.1"), &spoofed, &[]), ip("10.0.0.1"));
        assert_eq!(client_ip(ip("10.0.0.1"), &HeaderMap::new(), &trusted), ip("10.0.0.1"));
    }

    #[test]
    fn the_rightmost_untrusted_entry_is_the_client() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        // The client wrote `1.1.1.1` itself; the edge proxy appended its real address, then an
        // inner proxy appended the edge's.
        let chain = headers(&["1.1.1.1, 203.0.113.7", "10.0.0.2"]);
        assert_eq!(client_ip(ip("10.0.0.1"), &chain, &trusted), ip("203.0.113.7"));
        let ports = headers(&["[2001:db8::5]:443, 203.0.113.8:5000"]);
        assert_eq!(client_ip(ip("10.0.0.1"), &ports, &trusted), ip("203.0.113.8"));
        // Garbage stops the walk at the last address read.
        assert_eq!(client_ip(ip("10.0.0.1"), &headers(&["junk, 10.0.0.3"]), &trusted), ip("10.0.0.3"));
        // A byte that is not ASCII on the client's side of the line the proxy appended to.
        let mut line = HeaderMap::new();
        line.append("x-forwarded-for", HeaderValue::from_bytes(b"1.1.1.1\xff, 203.0.113.7").unwrap());
        assert_eq!(client_ip(ip("10.0.0.1"), &line, &trusted), ip("203.0.113.7"));
        let mapped = headers(&["::ffff:203.0.113.9"]);
        assert_eq!(client_ip(ip("::ffff:10.0.0.1"), &mapped, &trusted), ip("203.0.113.9"));
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64() {
        assert_eq!(limit_address(ip("2001:db8:1:2:3:4:5:6")), ip("2001:db8:1:2::"));
        assert_eq!(limit_address(ip("203.0.113.7")), ip("203.0.113.7"));
    }

    proptest::proptest! {
        /// Whatever `X-Forwarded-For` a client writes, an untrusted peer is its own client, and a
        /// trusted one yields an address from the header or itself; never a panic.
        #[test]
        fn any_forwarded_for_gives_an_address(
            lines in proptest::collection::vec("[0-9a-f.:, \\[\\]]{0,60}", 0..4),
        ) {
            let mut headers = HeaderMap::new();
            for line in &lines {
                if let Ok(value) = HeaderValue::from_str(line) {
                    headers.append("x-forwarded-for", value);
                }
            }
            let stranger = ip("203.0.113.9");
            proptest::prop_assert_eq!(client_ip(stranger, &headers, &[]), stranger);
            let proxy = ip("10.0.0.1");
            let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
            let client = client_ip(proxy, &headers, &trusted);
            let named = lines.iter().flat_map(|l| l.split(',')).filter_map(|e| parse_entry(e.trim())).any(|e| e == client);
            proptest::prop_assert!(client == proxy || named, "{client} from {lines:?}");
        }
    }
}

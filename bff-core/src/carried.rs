//! What a rebuilt gateway (a reload) keeps of the one before, when the keys it was made from are
//! unchanged: the JWT verifier (its JWKS keys and token cache), the limits (their in-process
//! counters and the Redis connection), and each upstream (its breaker, retry budget, ejections,
//! cache and connection pool). A reload that changes a route's deadline must not hand every
//! client a fresh rate limit or close a breaker that is open.

use serde::Serialize;

use crate::config::Config;

/// Whether the verifier of `before` serves `now`: the same `[auth]`, and the same claims kept
/// for limits.
pub(crate) fn same_auth(before: &Config, now: &Config) -> bool {
    same(
        &(&before.auth, &before.rate_limits, &before.concurrency_limits),
        &(&now.auth, &now.rate_limits, &now.concurrency_limits),
    )
}

/// Whether the limits of `before` serve `now`: the same limits (rate and concurrency), quotas, API
/// clients (a quota counts per client), Redis and trusted proxies (the client address).
pub(crate) fn same_limits(before: &Config, now: &Config) -> bool {
    fn counted(c: &Config) -> impl Serialize + '_ {
        let clients: Vec<&String> = c.api_keys.iter().flat_map(|k| k.clients.keys()).collect();
        (&c.rate_limits, &c.concurrency_limits, &c.quotas, clients, &c.redis, &c.server.trusted_proxies)
    }
    same(&counted(before), &counted(now))
}

/// Whether the sessions of `before` serve `now` (their store, and the sessions in it): the same
/// provider, sessions, Redis, TLS (the scheme of its own URLs) and allowed origins.
pub(crate) fn same_sessions(before: &Config, now: &Config) -> bool {
    let origins = |c: &Config| c.cors.as_ref().map(|cors| cors.allow_origins.clone());
    same(
        &(&before.oidc, &before.session, &before.redis, before.tls.is_some(), origins(before)),
        &(&now.oidc, &now.session, &now.redis, now.tls.is_some(), origins(now)),
    )
}

/// Whether the upstream `name` of `before` serves `now`: the same section and the same
/// defaults. One with TLS files is always made again, so that a certificate replaced in place is
/// read.
pub(crate) fn same_upstream(before: &Config, now: &Config, name: &str) -> bool {
    match (before.upstreams.get(name), now.upstreams.get(name)) {
        (Some(b), Some(n)) if n.tls.is_none() => same(&(&before.defaults, b), &(&now.defaults, n)),
        _ => false,
    }
}

/// Whether two parts of configurations hold the same values (as they serialize). One that does
/// not serialize is never the same: what it was made from is made again.
pub(crate) fn same<T: Serialize>(before: &T, now: &T) -> bool {
    match (serde_json::to_value(before), serde_json::to_value(now)) {
        (Ok(before), Ok(now)) => before == now,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ConfigSource, Overrides, load};

    fn config(extra: &str) -> Config {
        let text = format!(
            "listen = \"127.0.0.1:0\"\n[upstreams.users]\nurl = \"http://127.0.0.1:1\"\n\
             [upstreams.orders]\nurl = \"http://127.0.0.1:2\"\n[rate_limits.per-ip]\nkey = \"ip\"\nrate = 2\nper = \"1m\"\n{extra}"
        );
        load(&ConfigSource { name: "t.toml".into(), text }, &Overrides::default()).unwrap()
    }

    #[test]
    fn only_what_a_change_touches_is_made_again() {
        let before = config("");
        let deadline = config("[routes.\"/a\"]\ndeadline = \"3s\"\n");
        assert!(same_limits(&before, &deadline) && same_auth(&before, &deadline));
        assert!(same_upstream(&before, &deadline, "users") && same_upstream(&before, &deadline, "orders"));
        let timeout = config("[upstreams.orders.retry]\nattempts = 1\n");
        assert!(same_upstream(&before, &timeout, "users") && !same_upstream(&before, &timeout, "orders"));
        let defaults = config("[defaults]\ntimeout = \"2s\"\n");
        assert!(!same_upstream(&before, &defaults, "users"), "a default is part of every upstream");
        let limit = config("[rate_limits.per-user]\nkey = \"ip\"\nrate = 9\nper = \"1s\"\n");
        assert!(!same_limits(&before, &limit) && !same_auth(&before, &limit));
        // A concurrency limit is a limit too, and its claim a claim the verifier keeps.
        let in_flight = config("[concurrency_limits.uploads]\nkey = \"ip\"\nmax_in_flight = 4\n");
        assert!(!same_limits(&before, &in_flight) && !same_auth(&before, &in_flight));
        assert!(!same_upstream(&before, &before, "reviews"), "one it does not have");
    }

    /// A reload that leaves `[oidc]` and `[session]` alone keeps the sessions (the memory store
    /// with them): nobody is signed out by a route's new deadline.
    #[test]
    fn sessions_are_kept_unless_what_they_are_made_of_changes() {
        let sessions = "[oidc]\nissuer = \"http://127.0.0.1:7\"\nclient_id = \"c\"\nclient_secret = \"s\"\n[session]\n";
        let before = config(sessions);
        let deadline = config(&format!("[routes.\"/a\"]\ndeadline = \"3s\"\n{sessions}"));
        assert!(same_sessions(&before, &deadline));
        let idle = config(&format!("{sessions}idle_timeout = \"5m\"\n"));
        assert!(!same_sessions(&before, &idle));
        let secret = config(&sessions.replace("\"s\"", "\"t\""));
        assert!(!same_sessions(&before, &secret), "a new client secret is a new provider client");
    }
}

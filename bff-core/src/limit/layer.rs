//! The layer that checks a request's limits: before the credentials for the ones keyed by
//! address (or by no one), after them for the ones keyed by the caller, and the caller's quota.
//!
//! Every response of a limited route says where the caller stands, in the `RateLimit-Policy` and
//! `RateLimit` fields of draft-ietf-httpapi-ratelimit-headers (`"per-user";q=20;w=12` and
//! `"per-user";r=19;t=1`: a limit's burst and the seconds it takes to come back whole; what is
//! left and the seconds until it is whole). A refused request is a `429` problem with
//! `Retry-After`: `RATE_LIMITED`, or `QUOTA_EXCEEDED` with the time the quota resets.
//!
//! Concurrency limits are checked first, in the process: a request over one is `429
//! CONCURRENCY_LIMITED` with `Retry-After: 1` and spends nothing of its rate limits. One under
//! them holds its places until its response body has ended, or, when it becomes a WebSocket
//! tunnel, until the tunnel closes.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper::upgrade::OnUpgrade;

use super::client_ip::{client_ip, limit_address};
use super::{Check, Held, HeldBody, LimitKey, Limits, Outcomes, Status, TunnelPlaces};
use crate::config::LimitKeyKind;
use crate::error::BffError;
use crate::middleware::{Inner, Middleware, run};
use crate::observe::metrics::Metrics;
use crate::policy::api_key::ApiClient;
use crate::policy::auth::Identity;
use crate::request::route_of;

const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// Which limits a layer checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    /// Keyed by address or by no one: before the credentials are checked.
    Anonymous,
    /// Keyed by the caller, and its quota: after.
    Caller,
}

/// Checks the limits of its stage on the routes it wraps.
#[derive(Debug, Clone)]
pub(crate) struct Enforce(Arc<Table>);

#[derive(Debug)]
struct Table {
    limits: Limits,
    routes: HashMap<String, RouteLimits>,
    /// By tier.
    quotas: HashMap<String, Outcomes>,
}

#[derive(Debug)]
struct RouteLimits {
    rules: Vec<(usize, Outcomes)>,
    /// Its concurrency limits, by index.
    in_flight: Vec<(usize, Outcomes)>,
    quota: bool,
}

impl Enforce {
    /// The layer of `stage` for `patterns`, or `None` when none of them has a limit of it.
    pub(crate) fn new<'a>(
        limits: &Limits,
        stage: Stage,
        patterns: impl IntoIterator<Item = &'a str>,
        metrics: &Metrics,
    ) -> Option<Self> {
        let mut routes = HashMap::new();
        let staged = |key: &LimitKeyKind| key.is_anonymous() == (stage == Stage::Anonymous);
        for pattern in patterns {
            let outcomes = |name: &str| {
                let outcome = |outcome: &str| {
                    let labels =
                        [("route", pattern.to_owned()), ("limit", name.to_owned()), ("outcome", outcome.to_owned())];
                    metrics.counter("bff_rate_limit_requests_total", &labels)
                };
                Outcomes { allowed: outcome("allowed"), limited: outcome("limited") }
            };
            let rules: Vec<(usize, Outcomes)> = (limits.rules().iter().enumerate())
                .filter(|(_, rule)| staged(&rule.key) && rule.covers(pattern))
                .map(|(index, rule)| (index, outcomes(&rule.name)))
                .collect();
            let in_flight: Vec<(usize, Outcomes)> = (limits.concurrency().iter().enumerate())
                .filter(|(_, rule)| staged(&rule.key) && rule.covers(pattern))
                .map(|(index, rule)| (index, outcomes(&rule.name)))
                .collect();
            let quota = stage == Stage::Caller && limits.has_quotas();
            if !rules.is_empty() || !in_flight.is_empty() || quota {
                routes.insert(pattern.to_owned(), RouteLimits { rules, in_flight, quota });
            }
        }
        if routes.is_empty() {
            return None;
        }
        let quotas = limits
            .tiers()
            .map(|tier| {
                let outcome = |outcome: &str| {
                    let labels = [("tier", tier.to_owned()), ("outcome", outcome.to_owned())];
                    metrics.counter("bff_quota_requests_total", &labels)
                };
                (tier.to_owned(), Outcomes { allowed: outcome("allowed"), limited: outcome("exceeded") })
            })
            .collect();
        Some(Self(Arc::new(Table { limits: limits.clone(), routes, quotas })))
    }
}

impl Middleware for Enforce {
    fn call<S: Inner>(&self, mut request: Request, inner: S) -> impl Future<Output = Response> + Send + 'static {
        let table = self.0.clone();
        async move {
            let route = route_of(request.extensions()).and_then(|r| table.routes.get(&*r.pattern));
            let Some(route) = route else { return run(inner, request).await };
            let mut held = match table.hold(route, &request) {
                Ok(held) => held,
                Err(full) => return table.too_many(full),
            };
            // A request that may become a tunnel (a WebSocket) holds its places for the tunnel's
            // life: its route's handler takes them from its extensions. (Looked for only when
            // there are places: a route with rate limits alone pays no lookup.)
            if held.is_some()
                && request.extensions().get::<OnUpgrade>().is_some()
                && let Some(places) = held.take()
            {
                request.extensions_mut().get_or_insert_default::<TunnelPlaces>().add(places);
            }
            let checks = table.checks(route, &request);
            let response = if checks.is_empty() {
                run(inner, request).await
            } else {
                let statuses = match table.limits.check(&checks).await {
                    Ok(statuses) => statuses,
                    Err(_) => return unavailable(),
                };
                let refused = statuses.iter().position(|s| s.retry_after.is_some());
                table.count(route, &checks, refused);
                let headers = table.headers(&checks, &statuses);
                let mut response = match refused {
                    Some(index) => table.refusal(&checks[index], &statuses[index]),
                    None => run(inner, request).await,
                };
                if let Some((policy, state)) = headers {
                    response.headers_mut().append(RATELIMIT_POLICY, policy);
                    response.headers_mut().append(RATELIMIT, state);
                }
                response
            };
            match held {
                Some(held) => response.map(|body| axum::body::Body::new(HeldBody { inner: body, held: Some(held) })),
                None => response,
            }
        }
    }
}

impl Table {
    /// The key `request` is counted by under a limit keyed by `kind`; `None` when it has no value
    /// for it (no token, or a token without the claim).
    fn key(&self, kind: &LimitKeyKind, request: &Request) -> Option<LimitKey> {
        let extensions = request.extensions();
        match kind {
            LimitKeyKind::Ip => {
                // Every request served has its peer; one without (a test calling the router
                // directly) is counted as the unspecified address.
                let peer =
                    extensions.get::<ConnectInfo<SocketAddr>>().map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
                let ip = client_ip(peer, request.headers(), self.limits.trusted_proxies());
                Some(LimitKey::Ip(limit_address(ip)))
            }
            LimitKeyKind::Global => Some(LimitKey::Global),
            LimitKeyKind::User => extensions.get::<Identity>().map(|i| LimitKey::Name(Arc::from(i.subject()))),
            LimitKeyKind::Claim(claim) => {
                extensions.get::<Identity>().and_then(|i| i.claim(claim)).map(|v| LimitKey::Name(v.clone()))
            }
            LimitKeyKind::Client => extensions.get::<ApiClient>().map(|c| LimitKey::Name(c.name.clone())),
            LimitKeyKind::Account => extensions.get::<ApiClient>().map(|c| LimitKey::Name(c.account.clone())),
        }
    }

    /// Places under `route`'s concurrency limits for `request` (none when it has none, or no key
    /// for them), or the index of the first that is full.
    fn hold(&self, route: &RouteLimits, request: &Request) -> Result<Option<Held>, usize> {
        if route.in_flight.is_empty() {
            return Ok(None);
        }
        let concurrency = self.limits.concurrency();
        let wanted: Vec<_> = (route.in_flight.iter())
            .filter_map(|(index, _)| {
                let rule = concurrency.get(*index)?;
                Some((*index, self.key(&rule.key, request)?, rule.max))
            })
            .collect();
        if wanted.is_empty() {
            return Ok(None);
        }
        let outcomes = |index: usize| route.in_flight.iter().find(|(i, _)| *i == index).map(|(_, o)| o);
        match self.limits.hold(wanted) {
            Ok(held) => {
                held.limits().filter_map(outcomes).for_each(|o| o.allowed.increment(1));
                Ok(Some(held))
            }
            Err(index) => {
                if let Some(outcomes) = outcomes(index) {
                    outcomes.limited.increment(1);
                }
                Err(index)
            }
        }
    }

    /// `429 CONCURRENCY_LIMITED` for a request over the concurrency limit `index`.
    fn too_many(&self, index: usize) -> Response {
        let Some(rule) = self.limits.concurrency().get(index) else { return unavailable() };
        let whose = match rule.key {
            LimitKeyKind::Global => "from everyone together, and that many are".to_owned(),
            ref key => format!("per `{key}`, and that many of yours are"),
        };
        let detail = format!(
            "the limit `{}` allows {} requests in flight at once {whose}; retry when one has finished",
            rule.name, rule.max
        );
        let status = StatusCode::TOO_MANY_REQUESTS;
        let mut response = BffError::Rejected { status, code: "CONCURRENCY_LIMITED", detail }.into_response();
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(1u64));
        response
    }

    /// What `request` is counted against on `route` (keys it has no value for are skipped):
    /// rate limits first, then the quota.
    fn checks(&self, route: &RouteLimits, request: &Request) -> Vec<Check> {
        let client = request.extensions().get::<ApiClient>();
        let mut checks = Vec::with_capacity(route.rules.len() + 1);
        for (index, _) in &route.rules {
            let Some(rule) = self.limits.rules().get(*index) else { continue };
            if let Some(key) = self.key(&rule.key, request) {
                checks.push(Check::Rule { index: *index, key });
            }
        }
        if route.quota
            && let Some(client) = client
            && let Some(quota) = self.limits.quota(&client.tier)
        {
            checks.push(Check::Quota {
                client: client.name.clone(),
                tier: client.tier.clone(),
                requests: quota.requests.get(),
                per: quota.per,
            });
        }
        checks
    }

    fn count(&self, route: &RouteLimits, checks: &[Check], refused: Option<usize>) {
        for (position, check) in checks.iter().enumerate() {
            let outcomes = match check {
                Check::Rule { index, .. } => route.rules.iter().find(|(i, _)| i == index).map(|(_, o)| o),
                Check::Quota { tier, .. } => self.quotas.get(&**tier),
            };
            let Some(outcomes) = outcomes else { continue };
            match refused {
                Some(r) if r == position => outcomes.limited.increment(1),
                // Checked after the refusal (in Redis, where all are checked): not counted.
                Some(r) if position > r => {}
                _ => outcomes.allowed.increment(1),
            }
        }
    }

    /// The `RateLimit-Policy` and `RateLimit` values of the checks answered. Written by hand, not
    /// with `format!`, which was a large part of a check's cost (bench/README.md has the figures).
    fn headers(&self, checks: &[Check], statuses: &[Status]) -> Option<(HeaderValue, HeaderValue)> {
        let mut policy = String::with_capacity(40 * checks.len());
        let mut state = String::with_capacity(32 * checks.len());
        for (check, status) in checks.iter().zip(statuses) {
            let (name, quota, window): (&str, u64, u64) = match check {
                Check::Rule { index, .. } => {
                    let rule = self.limits.rules().get(*index)?;
                    let burst = rule.burst.get();
                    (&rule.name, u64::from(burst), whole_seconds(rule.interval * burst))
                }
                Check::Quota { requests, per, .. } => (crate::config::QUOTA_POLICY, *requests, per.as_secs()),
            };
            if !policy.is_empty() {
                policy.push_str(", ");
                state.push_str(", ");
            }
            for (out, first, second) in [
                (&mut policy, ("\";q=", quota), (";w=", window)),
                (&mut state, ("\";r=", status.remaining.min(quota)), (";t=", whole_seconds(status.reset))),
            ] {
                out.push('"');
                out.push_str(name);
                out.push_str(first.0);
                push_number(out, first.1);
                out.push_str(second.0);
                push_number(out, second.1);
            }
        }
        Some((HeaderValue::from_str(&policy).ok()?, HeaderValue::from_str(&state).ok()?))
    }

    fn refusal(&self, check: &Check, status: &Status) -> Response {
        let wait = status.retry_after.unwrap_or_default();
        let seconds = whole_seconds(wait);
        let (code, detail) = match check {
            Check::Rule { index, .. } => {
                let Some(rule) = self.limits.rules().get(*index) else { return unavailable() };
                let per = humantime::format_duration(rule.per);
                let detail = format!(
                    "the limit `{}` of {} requests per {per} (bursts of {}) is reached; retry in {seconds} s",
                    rule.name, rule.rate, rule.burst
                );
                ("RATE_LIMITED", detail)
            }
            Check::Quota { tier, requests, per, .. } => {
                let resets = UNIX_EPOCH + self.limits.unix_now() + status.reset;
                let resets = humantime::format_rfc3339_seconds(resets);
                let per = humantime::format_duration(*per);
                let detail = format!(
                    "the `{tier}` tier's quota of {requests} requests per {per} is spent; it resets at {resets}"
                );
                ("QUOTA_EXCEEDED", detail)
            }
        };
        let mut response = BffError::Rejected { status: StatusCode::TOO_MANY_REQUESTS, code, detail }.into_response();
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        response
    }
}

/// `503 RATE_LIMIT_UNAVAILABLE`: limits cannot be counted and `redis.on_error` is `deny`.
fn unavailable() -> Response {
    let detail = "rate limits cannot be checked right now".to_owned();
    BffError::Unavailable { code: "RATE_LIMIT_UNAVAILABLE", detail }.into_response()
}

/// Appends `n` in decimal: two digits at a time (`itoa`), and one copy of them.
fn push_number(out: &mut String, n: u64) {
    out.push_str(itoa::Buffer::new().format(n));
}

/// Seconds, rounded up: a client waiting this long is never early.
fn whole_seconds(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_written_in_decimal() {
        for n in [0, 7, 10, 86_400, u64::MAX] {
            let mut out = String::from("x");
            push_number(&mut out, n);
            assert_eq!(out, format!("x{n}"));
        }
    }
}

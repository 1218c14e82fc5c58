//! An upstream's response cache (optional, per upstream): GETs answered from memory while the
//! upstream's `Cache-Control` says they are fresh, revalidated with `If-None-Match` once stale,
//! and served stale when the upstream fails within `stale-if-error`.
//!
//! What is stored, and for whom (RFC 9111, as a shared cache in front of calls that carry the
//! caller's identity):
//! - a `200` with `max-age` (or `s-maxage`) and without `no-store`;
//! - for every caller when it says `public`; otherwise (`private` included) for the caller it
//!   was fetched for only: the key is then the caller's identity headers, so one user's answer
//!   never reaches another;
//! - keyed by the request headers its `Vary` names (RFC 9111 §4.1): every header the call sets
//!   is part of the key anyway; a `public` answer that varies on an identity header the stack
//!   sets (`X-User-Id`, `X-User-Scopes`, `X-Partner-Account`) is kept per caller; one that varies
//!   on a header whose value changes with each attempt (`X-Request-Id`, the deadline, `Host`)
//!   cannot be reused, and neither can `Vary: *`: those are not stored. Any other header is sent
//!   by no call, so every call agrees on it.
//!
//! The cache is bounded in bytes (moka, each entry weighed by its body and headers; an entry
//! larger than an eighth of the cache is not stored), and keeps an entry past its freshness only
//! for as long as it may still serve: its `stale-if-error` window, or to be revalidated.

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use http::header::{CACHE_CONTROL, ETAG, IF_NONE_MATCH, VARY};
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use metrics::Counter;
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

use super::headers::PER_ATTEMPT;
use super::journal::{JournalLayer, Short};
use super::outgoing::Outgoing;
use super::snapshot::{CallKey, Shareable, Snapshot};
use super::{Body, BoxError};
use crate::identity::{self, CallerHeaders};
use crate::observe::metrics::Metrics;

/// The longest freshness or stale window believed, whatever the upstream says.
const MAX_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);

/// The longest `Cache-Control` value read; a longer one is not understood, so not cached.
const MAX_DIRECTIVES_BYTES: usize = 1024;

/// How long a stale entry with a validator is kept for revalidation, beyond `stale-if-error`.
const REVALIDATE_FOR: Duration = Duration::from_secs(60);

/// Caches an upstream's GETs.
#[derive(Clone)]
pub(crate) struct CacheLayer(Arc<Store>);

impl CacheLayer {
    /// A cache of at most `max_bytes` for upstream `name`; `None` without `max_bytes` (the
    /// stack leaves it out with tower's `option_layer`).
    /// The calls it answers are journaled.
    pub(crate) fn new(
        name: &Arc<str>,
        max_bytes: Option<u64>,
        registry: &Metrics,
        journal: &JournalLayer,
    ) -> Option<Self> {
        max_bytes.map(|max_bytes| {
            let entries = moka::sync::Cache::builder()
                .max_capacity(max_bytes)
                .weigher(|_: &Key, entry: &Arc<Entry>| u32::try_from(entry.snapshot.weight()).unwrap_or(u32::MAX))
                .expire_after(Lifetime)
                .build();
            let counter = |result: &'static str| {
                registry.counter(
                    "bff_upstream_cache_total",
                    &[("upstream", name.to_string()), ("result", result.to_owned())],
                )
            };
            Self(Arc::new(Store {
                entries,
                max_entry_bytes: usize::try_from(max_bytes / 8).unwrap_or(usize::MAX),
                hit: counter("hit"),
                miss: counter("miss"),
                revalidated: counter("revalidated"),
                stale: counter("stale"),
                journal: journal.clone(),
            }))
        })
    }
}

impl<S> Layer<S> for CacheLayer {
    type Service = Cached<S>;

    fn layer(&self, inner: S) -> Cached<S> {
        Cached { inner, store: self.0.clone() }
    }
}

/// See [the module docs](self).
#[derive(Clone)]
pub(crate) struct Cached<S> {
    inner: S,
    store: Arc<Store>,
}

pub(crate) struct Store {
    entries: moka::sync::Cache<Key, Arc<Entry>>,
    max_entry_bytes: usize,
    hit: Counter,
    miss: Counter,
    revalidated: Counter,
    stale: Counter,
    journal: JournalLayer,
}

/// A call's identity in the cache: the call, and whose answer it is.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    call: CallKey,
    /// `None` for an answer every caller may share; the caller (or `Some(None)`, no one in
    /// particular) for one kept per identity.
    owner: Option<Option<CallerHeaders>>,
}

struct Entry {
    snapshot: Snapshot,
    stored: Instant,
    fresh_for: Duration,
    stale_if_error: Duration,
    etag: Option<HeaderValue>,
}

impl Entry {
    fn fresh(&self, now: Instant) -> bool {
        now < self.stored + self.fresh_for
    }

    fn may_serve_stale(&self, now: Instant) -> bool {
        now < self.stored + self.fresh_for + self.stale_if_error
    }
}

/// How long moka keeps an entry: while fresh, then while it may serve stale or be revalidated.
struct Lifetime;

impl moka::Expiry<Key, Arc<Entry>> for Lifetime {
    fn expire_after_create(&self, _: &Key, entry: &Arc<Entry>, _: std::time::Instant) -> Option<Duration> {
        let keep_stale =
            if entry.etag.is_some() { entry.stale_if_error.max(REVALIDATE_FOR) } else { entry.stale_if_error };
        Some(entry.fresh_for + keep_stale)
    }
}

/// What `Cache-Control` (and `Vary`) say about storing a response.
#[derive(Debug, Default, PartialEq)]
struct Directives {
    fresh_for: Option<Duration>,
    shared_fresh_for: Option<Duration>,
    stale_if_error: Duration,
    public: bool,
    no_store: bool,
    no_cache: bool,
    /// It varies on a caller's identity: kept per caller even when `public`.
    per_caller: bool,
}

impl Directives {
    fn parse(headers: &HeaderMap) -> Option<Self> {
        let mut out = Self::default();
        for value in headers.get_all(CACHE_CONTROL) {
            let text = value.to_str().ok().filter(|t| t.len() <= MAX_DIRECTIVES_BYTES)?;
            for directive in text.split(',') {
                let (name, argument) = directive.split_once('=').unwrap_or((directive, ""));
                let seconds = || {
                    let n: u64 = argument.trim().trim_matches('"').parse().ok()?;
                    Some(Duration::from_secs(n).min(MAX_LIFETIME))
                };
                match name.trim().to_ascii_lowercase().as_str() {
                    "max-age" => out.fresh_for = seconds(),
                    "s-maxage" => out.shared_fresh_for = seconds(),
                    "stale-if-error" => out.stale_if_error = seconds().unwrap_or_default(),
                    "public" => out.public = true,
                    "no-store" => out.no_store = true,
                    "no-cache" => out.no_cache = true,
                    _ => {}
                }
            }
        }
        for value in headers.get_all(VARY) {
            let text = value.to_str().ok().filter(|t| t.len() <= MAX_DIRECTIVES_BYTES)?;
            for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                let named = |known: &HeaderName| name.eq_ignore_ascii_case(known.as_str());
                if name == "*" || PER_ATTEMPT.iter().any(named) {
                    out.no_store = true;
                } else if identity::NAMES.iter().any(named) {
                    out.per_caller = true;
                }
            }
        }
        Some(out)
    }
}

impl Store {
    /// The entry for `shared` (the key with no owner), or else the caller's own.
    fn lookup(&self, shared: &Key, caller: &Option<CallerHeaders>) -> Option<(Key, Arc<Entry>)> {
        if let Some(entry) = self.entries.get(shared) {
            return Some((shared.clone(), entry));
        }
        let own = Key { owner: Some(caller.clone()), ..shared.clone() };
        self.entries.get(&own).map(|entry| (own, entry))
    }

    /// Stores `response` when its directives allow, under the shared key or the caller's.
    fn store(&self, shared: Key, caller: Option<CallerHeaders>, snapshot: &Snapshot) {
        if snapshot.status != StatusCode::OK || snapshot.weight() > self.max_entry_bytes {
            return;
        }
        let Some(directives) = Directives::parse(&snapshot.headers) else { return };
        let public = directives.public;
        let fresh_for =
            if public { directives.shared_fresh_for.or(directives.fresh_for) } else { directives.fresh_for };
        let Some(fresh_for) = fresh_for else { return };
        if directives.no_store {
            return;
        }
        let fresh_for = if directives.no_cache { Duration::ZERO } else { fresh_for };
        let entry = Entry {
            snapshot: snapshot.clone(),
            stored: Instant::now(),
            fresh_for,
            stale_if_error: directives.stale_if_error,
            etag: snapshot.headers.get(ETAG).cloned(),
        };
        let key = if public && !directives.per_caller { shared } else { Key { owner: Some(caller), ..shared } };
        self.entries.insert(key, Arc::new(entry));
    }
}

impl<S> Service<Outgoing> for Cached<S>
where
    S: Service<Outgoing, Response = Response<Body>, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Response<Body>, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), BoxError>> {
        // A call readies the rest of the stack only when it goes on: a hit must not hold a place
        // in the bulkhead.
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut call: Outgoing) -> Self::Future {
        let store = &self.store;
        let Some(Shareable { key, caller, .. }) = Shareable::of(&call) else {
            return self.inner.clone().oneshot(call).boxed();
        };
        let shared = Key { call: key, owner: None };
        let now = Instant::now();
        let found = store.lookup(&shared, &caller);
        if let Some((_, entry)) = &found
            && entry.fresh(now)
        {
            store.hit.increment(1);
            store.journal.short(&call, Short::CacheHit);
            return futures::future::ready(Ok(entry.snapshot.to_response())).boxed();
        }
        let stale = found.map(|(_, entry)| entry);
        if let Some(etag) = stale.as_ref().and_then(|entry| entry.etag.clone()) {
            call.request.headers_mut().insert(IF_NONE_MATCH, etag);
            call.revalidation = true;
        }
        // With a stale entry that may be served, a copy of the call (a GET: no body) is kept to
        // journal it.
        let witness = stale.as_ref().and_then(|_| call.try_clone());
        let call = self.inner.clone().oneshot(call);
        let store = store.clone();
        async move {
            let result = call.await;
            let answer = settle(&store, shared, caller, stale, result);
            if let (Some(witness), Some(Stale)) = (witness, answer.as_ref().ok().and_then(|r| r.extensions().get())) {
                store.journal.short(&witness, Short::CacheStale);
            }
            answer
        }
        .boxed()
    }
}

/// A response extension on a stale answer served for a failed call.
#[derive(Debug, Clone, Copy)]
struct Stale;

/// The answer to a call the cache could not answer alone: stored, refreshed, or replaced by the
/// stale entry when the upstream failed within its `stale-if-error`.
fn settle(
    store: &Store,
    shared: Key,
    caller: Option<CallerHeaders>,
    stale: Option<Arc<Entry>>,
    result: Result<Response<Body>, BoxError>,
) -> Result<Response<Body>, BoxError> {
    if let Some(entry) = &stale {
        if matches!(&result, Ok(response) if response.status() == StatusCode::NOT_MODIFIED) {
            // Still good: the stored body, with the fresh answer's caching headers.
            store.revalidated.increment(1);
            let mut snapshot = entry.snapshot.clone();
            if let Ok(response) = &result {
                for name in [CACHE_CONTROL, ETAG] {
                    if let Some(value) = response.headers().get(&name) {
                        snapshot.headers.insert(name, value.clone());
                    }
                }
            }
            let response = snapshot.to_response();
            store.store(shared, caller, &snapshot);
            return Ok(response);
        }
        // Any error (the breaker open, the deadline, no connection) or a 5xx.
        let failed = result.as_ref().map_or(true, |response| response.status().is_server_error());
        if failed && entry.may_serve_stale(Instant::now()) {
            store.stale.increment(1);
            let mut response = entry.snapshot.to_response();
            response.extensions_mut().insert(Stale);
            return Ok(response);
        }
    }
    store.miss.increment(1);
    let response = result?;
    if response.status() != StatusCode::OK {
        return Ok(response);
    }
    match Snapshot::of(response) {
        Ok(snapshot) => {
            store.store(shared, caller, &snapshot);
            Ok(snapshot.to_response())
        }
        Err(response) => Ok(*response),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http::Request;
    use serde_json::Value;

    use super::super::{Upstream, UpstreamErrorKind, UpstreamSettings};
    use super::*;
    use crate::Ctx;

    #[test]
    fn directives_are_read_case_blind_and_bounded() {
        let mut headers = HeaderMap::new();
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("Public, MAX-AGE=60, stale-if-error=\"300\", x-other"));
        let d = Directives::parse(&headers).unwrap();
        assert_eq!(
            (d.public, d.fresh_for, d.stale_if_error),
            (true, Some(Duration::from_secs(60)), Duration::from_secs(300))
        );
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("max-age=99999999999"));
        assert_eq!(Directives::parse(&headers).unwrap().fresh_for, Some(MAX_LIFETIME));
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("max-age=-1"));
        assert_eq!(Directives::parse(&headers).unwrap().fresh_for, None);
        headers.insert(VARY, HeaderValue::from_static("accept, *"));
        assert!(Directives::parse(&headers).unwrap().no_store);
        for (vary, no_store, per_caller) in [
            ("Accept-Language", false, false),
            ("accept, X-User-Id", false, true),
            ("x-partner-account", false, true),
            ("X-Request-Id", true, false),
            ("x-request-deadline-ms, accept", true, false),
            ("host", true, false),
        ] {
            headers.insert(VARY, HeaderValue::from_static(vary));
            let d = Directives::parse(&headers).unwrap();
            assert_eq!((d.no_store, d.per_caller), (no_store, per_caller), "{vary}");
        }
        headers.remove(VARY);
        headers.insert(CACHE_CONTROL, HeaderValue::try_from("max-age=1,".repeat(200)).unwrap());
        assert_eq!(Directives::parse(&headers), None, "too long to be believed");
    }

    /// What the fake upstream answers next, and what it saw.
    struct Script {
        status: StatusCode,
        cache_control: &'static str,
        vary: Option<&'static str>,
        body: String,
        seen_if_none_match: Vec<Option<String>>,
    }

    fn scripted(cache_control: &'static str) -> (Upstream, Arc<Mutex<Script>>, Arc<AtomicUsize>, Metrics) {
        let script = Arc::new(Mutex::new(Script {
            status: StatusCode::OK,
            cache_control,
            vary: None,
            body: r#"{"v":1}"#.to_owned(),
            seen_if_none_match: Vec::new(),
        }));
        let calls = Arc::new(AtomicUsize::new(0));
        let (played, counted) = (script.clone(), calls.clone());
        let service = tower::service_fn(move |request: Request<Body>| {
            counted.fetch_add(1, Ordering::SeqCst);
            let mut script = played.lock().unwrap();
            let tag = request.headers().get(IF_NONE_MATCH).map(|v| v.to_str().unwrap().to_owned());
            script.seen_if_none_match.push(tag.clone());
            let etag = format!("\"{}\"", script.body.len());
            let status = if tag.as_deref() == Some(etag.as_str()) && script.status == StatusCode::OK {
                StatusCode::NOT_MODIFIED
            } else {
                script.status
            };
            let user = request.headers().get("x-user-id").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
            let body = script.body.replace("}", &format!(r#","user":"{user}"}}"#));
            let mut response = Response::builder()
                .status(status)
                .header(CACHE_CONTROL, script.cache_control)
                .header(ETAG, etag)
                .body(if status == StatusCode::OK { Body::from(body.into_bytes()) } else { Body::empty() })
                .unwrap();
            if let Some(vary) = script.vary {
                response.headers_mut().insert(VARY, HeaderValue::from_static(vary));
            }
            let hang = request.uri().path() == "/hang";
            async move {
                if hang {
                    std::future::pending::<()>().await;
                }
                Ok::<_, BoxError>(response)
            }
        });
        let metrics = Metrics::new();
        let settings = UpstreamSettings {
            cache_bytes: Some(1 << 20),
            max_in_flight: std::num::NonZeroUsize::new(1),
            ..UpstreamSettings::bare()
        };
        (Upstream::from_service("catalog", settings, service, &metrics), script, calls, metrics)
    }

    fn as_user(user: &str) -> Ctx {
        Ctx::detached(Duration::from_secs(5), 4).on_behalf_of(CallerHeaders::user(user, ["profile"]))
    }

    #[tokio::test(start_paused = true)]
    async fn fresh_from_memory_stale_on_error_then_refetched() {
        let (up, script, calls, metrics) = scripted("public, max-age=60, stale-if-error=300");
        let ana = as_user("ana");
        let first = up.get::<Value>("/p/1").send(&ana).await.unwrap();
        // Within max-age: no call, whoever asks (public).
        tokio::time::advance(Duration::from_secs(59)).await;
        assert_eq!(up.get::<Value>("/p/1").send(&as_user("bo")).await.unwrap(), first);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // Stale, and the upstream fails: the stale answer is served.
        tokio::time::advance(Duration::from_secs(2)).await;
        script.lock().unwrap().status = StatusCode::SERVICE_UNAVAILABLE;
        assert_eq!(up.get::<Value>("/p/1").send(&ana).await.unwrap(), first);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        // Past stale-if-error, the failure shows.
        tokio::time::advance(Duration::from_secs(300)).await;
        let error = up.get::<Value>("/p/1").send(&ana).await.unwrap_err();
        assert_eq!(error.kind(), &UpstreamErrorKind::Status(StatusCode::SERVICE_UNAVAILABLE));
        // Back, with new content: refetched and stored again.
        {
            let mut script = script.lock().unwrap();
            script.status = StatusCode::OK;
            script.body = r#"{"v":22}"#.to_owned();
        }
        let fresh = up.get::<Value>("/p/1").send(&ana).await.unwrap();
        assert_eq!(fresh["v"], 22);
        assert_eq!(up.get::<Value>("/p/1").send(&ana).await.unwrap(), fresh);
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        let text = metrics.render();
        for line in [
            r#"bff_upstream_cache_total{upstream="catalog",result="hit"} 2"#,
            r#"bff_upstream_cache_total{upstream="catalog",result="stale"} 1"#,
            // Journaled as calls with no attempt of their own.
            r#"bff_upstream_attempt_duration_seconds_count{upstream="catalog",outcome="cache_hit"} 2"#,
            r#"bff_upstream_attempt_duration_seconds_count{upstream="catalog",outcome="cache_stale"} 1"#,
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn stale_entries_are_revalidated_with_their_etag() {
        let (up, script, calls, metrics) = scripted("public, max-age=10");
        let ana = as_user("ana");
        let first = up.get::<Value>("/p/1").send(&ana).await.unwrap();
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(up.get::<Value>("/p/1").send(&ana).await.unwrap(), first, "a 304 answers with the stored body");
        assert_eq!(script.lock().unwrap().seen_if_none_match, [None, Some("\"7\"".to_owned())]);
        // Fresh again for max-age after the 304.
        tokio::time::advance(Duration::from_secs(9)).await;
        up.get::<Value>("/p/1").send(&ana).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert!(metrics.render().contains(r#"bff_upstream_cache_total{upstream="catalog",result="revalidated"} 1"#));
    }

    /// With a bulkhead of one held by a hanging call, a hit is still served: it takes no place.
    #[tokio::test(start_paused = true)]
    async fn a_hit_takes_no_place_in_the_bulkhead() {
        let (up, _, _, _) = scripted("public, max-age=60");
        let ana = as_user("ana");
        let first = up.get::<Value>("/p/1").send(&ana).await.unwrap();
        let (hanging_up, hanging_ctx) = (up.clone(), ana.clone());
        let hanging = tokio::spawn(async move { hanging_up.get::<Value>("/hang").send(&hanging_ctx).await });
        tokio::task::yield_now().await;
        let full = up.get::<Value>("/p/2").send(&ana).await.unwrap_err();
        assert_eq!(full.kind(), &UpstreamErrorKind::Overloaded, "the bulkhead is full");
        assert_eq!(up.get::<Value>("/p/1").send(&ana).await.unwrap(), first);
        hanging.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn private_answers_are_kept_per_caller_and_no_store_not_at_all() {
        let (up, _, calls, _) = scripted("private, max-age=60");
        let (ana, bo) = (as_user("ana"), as_user("bo"));
        assert_eq!(up.get::<Value>("/me").send(&ana).await.unwrap()["user"], "ana");
        assert_eq!(up.get::<Value>("/me").send(&bo).await.unwrap()["user"], "bo");
        assert_eq!(up.get::<Value>("/me").send(&ana).await.unwrap()["user"], "ana");
        assert_eq!(up.get::<Value>("/me").send(&bo).await.unwrap()["user"], "bo");
        assert_eq!(calls.load(Ordering::SeqCst), 2, "one call per caller");
        // Not marked public: kept per caller too.
        let (up, _, calls, _) = scripted("max-age=60");
        assert_eq!(up.get::<Value>("/me").send(&ana).await.unwrap()["user"], "ana");
        assert_eq!(up.get::<Value>("/me").send(&bo).await.unwrap()["user"], "bo");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        let (up, _, calls, _) = scripted("no-store, max-age=60");
        up.get::<Value>("/me").send(&ana).await.unwrap();
        up.get::<Value>("/me").send(&ana).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_public_answer_is_keyed_by_the_headers_its_vary_names() {
        let (ana, bo) = (as_user("ana"), as_user("bo"));
        // Varies on the user the stack names: never one user's answer for another.
        let (up, script, calls, _) = scripted("public, max-age=60");
        script.lock().unwrap().vary = Some("Accept, X-User-Id");
        for _ in 0..2 {
            assert_eq!(up.get::<Value>("/p/1").send(&ana).await.unwrap()["user"], "ana");
            assert_eq!(up.get::<Value>("/p/1").send(&bo).await.unwrap()["user"], "bo");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 2, "one call per user, then each from memory");
        // Varies on what each attempt carries differently: never reused.
        let (up, script, calls, _) = scripted("public, max-age=60");
        script.lock().unwrap().vary = Some("x-request-id");
        up.get::<Value>("/p/1").send(&ana).await.unwrap();
        up.get::<Value>("/p/1").send(&ana).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        // Varies on a header the call sets: keyed by it; on one no call sends: shared.
        let (up, script, calls, _) = scripted("public, max-age=60");
        script.lock().unwrap().vary = Some("accept-language, accept");
        let json = || up.get::<Value>("/p/1").header("accept", "application/json");
        let plain = || up.get::<Value>("/p/1").header("accept", "text/plain");
        json().send(&ana).await.unwrap();
        json().send(&bo).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1, "shared: the same Accept, no Accept-Language");
        plain().send(&bo).await.unwrap();
        plain().send(&ana).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2, "another Accept is another entry");
    }

    proptest::proptest! {
        /// Any `Cache-Control` an upstream sends: directives or none, never a panic, and never a
        /// lifetime past the cap.
        #[test]
        fn any_cache_control_is_parsed_within_the_cap(value in "[ -~]{0,120}", vary in "[ -~]{0,40}") {
            let mut headers = HeaderMap::new();
            headers.insert(CACHE_CONTROL, http::HeaderValue::from_str(&value).unwrap());
            headers.insert(VARY, http::HeaderValue::from_str(&vary).unwrap());
            if let Some(directives) = Directives::parse(&headers) {
                for lifetime in [directives.fresh_for, directives.shared_fresh_for, Some(directives.stale_if_error)] {
                    proptest::prop_assert!(lifetime.is_none_or(|l| l <= MAX_LIFETIME));
                }
            }
        }
    }
}

//! Browser sessions in bff-web: the login through the mock OpenID Provider, the cookie, CSRF,
//! refresh, logout, and sessions shared through Redis, driven as a browser would (redirects
//! followed by hand, cookies kept by hand).

mod common;

use bff_core::config::{ConfigSource, Overrides, load};
use bff_core::serve::Server;
use std::time::Duration;

use bff_core::testing::{RawH2, RedisServer, TestServer, frame};
use common::browser::{LOGIN, SESSION, begin, browser, location, set_cookie, sign_in};
use common::{Stack, StackBuilder, eventually, problem};
use reqwest::StatusCode;
use reqwest::header::COOKIE;
use serde_json::Value;
use services_mock::Service;
use services_mock::services::oidc::DEMO_CLIENT_ID;
use tokio::net::TcpStream;

fn web() -> StackBuilder {
    StackBuilder::new(bff_demo::WEB_CONFIG, bff_web::app)
}

fn base(stack: &Stack) -> String {
    stack.bff.url("").trim_end_matches('/').to_owned()
}

/// A cookie-authenticated call as the page makes it.
fn call(http: &reqwest::Client, url: String, session: &str) -> reqwest::RequestBuilder {
    http.get(url).header(COOKIE, format!("{SESSION}={session}")).header("x-csrf", "1")
}

/// A `POST` with the session cookie alone (a form's, or the page's once it adds `X-CSRF`).
fn post(http: &reqwest::Client, url: String, session: &str) -> reqwest::RequestBuilder {
    http.post(url).header(COOKIE, format!("{SESSION}={session}"))
}

#[tokio::test]
async fn a_browser_signs_in_and_calls_the_api_with_its_cookie_alone() {
    let stack = web().start().await;
    let http = browser();
    let session = sign_in(&http, &base(&stack), 42).await;
    let home = call(&http, stack.bff.url("/web/home"), &session).send().await.unwrap();
    assert_eq!(home.status(), 200);
    assert!(home.headers().get_all("vary").iter().any(|v| v.to_str().unwrap().contains("cookie")));
    let body: Value = home.json().await.unwrap();
    assert_eq!(body["profile"]["id"], 42);
    // The upstreams saw the session's user, as with a bearer token.
    let user: Value = call(&http, stack.bff.url("/bff/user"), &session).send().await.unwrap().json().await.unwrap();
    assert_eq!(user["sub"], "42");
    assert!(user["name"].as_str().is_some_and(|n| !n.is_empty()), "{user}");
    assert!(user["scopes"].as_array().unwrap().iter().any(|s| s == "profile"), "{user}");
    assert!(user["expires_at"].as_u64().is_some(), "{user}");
    // No token reaches the browser.
    assert!(user.get("access_token").is_none() && user.get("refresh_token").is_none());
    // A POST with the cookie and the CSRF header.
    let read =
        post(&http, stack.bff.url("/web/notifications/read"), &session).header("x-csrf", "1").send().await.unwrap();
    assert!(read.status().is_success(), "{}", read.status());
}

/// A page's script may write UTF-8 into a cookie, and the browser sends it as it is, in the
/// same `Cookie` line as the session's. The session is read from that line all the same, and a
/// passthrough route forwards the page's cookie but never the session's.
#[tokio::test]
async fn a_cookie_line_with_utf8_keeps_its_session_and_never_sends_it_upstream() {
    let stack = web().start().await;
    let http = browser();
    let session = sign_in(&http, &base(&stack), 42).await;
    let line = format!("lang=fran\u{e7}ais; {SESSION}={session}; city=K\u{f8}benhavn");
    let cookie = reqwest::header::HeaderValue::from_bytes(line.as_bytes()).unwrap();
    let user = http.get(stack.bff.url("/bff/user")).header(COOKIE, cookie.clone()).header("x-csrf", "1");
    let user: Value = user.send().await.unwrap().json().await.unwrap();
    assert_eq!(user["sub"], "42", "{user}");
    let product = http.get(stack.bff.url("/api/catalog/products/SKU-0007")).header(COOKIE, cookie);
    assert_eq!(product.send().await.unwrap().status(), 200);
    let seen = stack.stats(Service::Catalog).last_headers;
    let forwarded = seen.get("cookie").map(String::as_str).unwrap_or_default();
    assert!(!forwarded.contains(SESSION) && !forwarded.contains(&session), "the catalog saw {forwarded:?}");
    assert!(forwarded.starts_with("lang=fran") && forwarded.contains("city=K"), "{forwarded:?}");
}

/// A WebSocket opened with the session cookie: a browser cannot add `X-CSRF` to it, but always
/// sends its page's `Origin`, and a WebSocket is not held to the same-origin policy. So the
/// `Origin` is what is checked: this BFF's own page and an allowed one (`cors.allow_origins`)
/// open it; another site's page, or a handshake without `Origin`, is refused before anything
/// reaches the service. Plain requests still need `X-CSRF`.
#[tokio::test]
async fn a_websocket_opens_with_the_session_cookie_from_an_allowed_page_only() {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::{Error, Message};

    let stack = web().start().await;
    let session = sign_in(&browser(), &base(&stack), 42).await;
    let url = format!("ws://{}/api/notifications/ws", stack.bff.addr);
    let open = |origin: Option<String>| {
        let mut request = url.as_str().into_client_request().unwrap();
        request.headers_mut().insert("cookie", format!("{SESSION}={session}").parse().unwrap());
        if let Some(origin) = origin {
            request.headers_mut().insert("origin", origin.parse().unwrap());
        }
        let addr = stack.bff.addr;
        async move {
            let stream = TcpStream::connect(addr).await.unwrap();
            tokio_tungstenite::client_async(request, stream).await
        }
    };
    for origin in [format!("http://{}", stack.bff.addr), "http://localhost:3000".to_owned()] {
        let (mut socket, response) = open(Some(origin.clone())).await.expect("opened");
        assert_eq!(response.status(), 101, "{origin}");
        let hello = socket.next().await.unwrap().unwrap();
        assert_eq!(hello, Message::Text(r#"{"user":"42"}"#.into()), "{origin}: the session's user");
    }
    let opened = stack.stats(Service::Notifications).requests;
    for origin in [Some("https://evil.example".to_owned()), None] {
        match open(origin.clone()).await {
            Err(Error::Http(response)) => {
                assert_eq!(response.status(), 403, "{origin:?}");
                let body = String::from_utf8_lossy(response.body().as_deref().unwrap_or_default()).into_owned();
                assert!(body.contains("CSRF_REQUIRED"), "{origin:?}: {body}");
            }
            other => panic!("{origin:?}: opened: {other:?}"),
        }
    }
    assert_eq!(stack.stats(Service::Notifications).requests, opened, "a refused opening reached the service");
    // An ordinary request with the cookie from the BFF's own page still needs `X-CSRF`.
    let url = stack.bff.url("/api/notifications/events?count=1");
    let plain = browser().get(url).header(COOKIE, format!("{SESSION}={session}"));
    let plain = plain.header("origin", format!("http://{}", stack.bff.addr)).send().await.unwrap();
    problem(plain, 403, "CSRF_REQUIRED").await;
}

#[tokio::test]
async fn bearer_clients_are_unaffected_and_nothing_is_a_credential_without_one() {
    let stack = web().start().await;
    // A bearer token, no cookie, no CSRF header: as before sessions.
    assert_eq!(stack.get("/web/home").await.status(), 200);
    let http = browser();
    let refused = problem(http.get(stack.bff.url("/web/home")).send().await.unwrap(), 401, "AUTH_REQUIRED").await;
    // Saying both ways in: a browser app's developer is told to sign in, not only about tokens.
    let detail = refused["detail"].as_str().unwrap();
    assert!(detail.contains("`/bff/login`") && detail.contains("bearer token"), "{detail}");
    // A cookie of the right shape that names no session.
    let forged = call(&http, stack.bff.url("/web/home"), &"A".repeat(43)).send().await.unwrap();
    let (_, cleared) = set_cookie(&forged, SESSION).expect("the dead cookie cleared");
    assert!(cleared.contains("Max-Age=0"));
    problem(forged, 401, "SESSION_ENDED").await;
}

#[tokio::test]
async fn a_cookie_call_without_the_csrf_header_or_from_another_origin_is_refused() {
    let stack = web().start().await;
    let http = browser();
    let session = sign_in(&http, &base(&stack), 42).await;
    let cookie = format!("{SESSION}={session}");
    let bare = http.get(stack.bff.url("/web/home")).header(COOKIE, &cookie).send().await.unwrap();
    problem(bare, 403, "CSRF_REQUIRED").await;
    let wrong = http.post(stack.bff.url("/web/notifications/read")).header(COOKIE, &cookie).header("x-csrf", "0");
    problem(wrong.send().await.unwrap(), 403, "CSRF_REQUIRED").await;
    let evil = call(&http, stack.bff.url("/web/home"), &session).header("origin", "https://evil.example");
    problem(evil.send().await.unwrap(), 403, "CSRF_REQUIRED").await;
    // The BFF's own page, and a page of `cors.allow_origins`, may.
    let own = call(&http, stack.bff.url("/web/home"), &session).header("origin", base(&stack));
    assert_eq!(own.send().await.unwrap().status(), 200);
    let listed = call(&http, stack.bff.url("/web/home"), &session).header("origin", "http://localhost:3000");
    assert_eq!(listed.send().await.unwrap().status(), 200);
    // Nothing upstream was called for the refused ones.
    assert_eq!(stack.stats(Service::Users).requests, 2);
}

#[tokio::test]
async fn a_return_url_off_this_site_is_refused() {
    let stack = web().start().await;
    let http = browser();
    for foreign in ["https://evil.example/", "//evil.example", "/%5Cevil.example", "http:evil"] {
        let url = format!("{}?returnUrl={foreign}", stack.bff.url("/bff/login"));
        problem(http.get(url).send().await.unwrap(), 400, "INVALID_RETURN_URL").await;
    }
}

#[tokio::test]
async fn a_query_the_session_endpoints_cannot_read_is_a_problem() {
    let stack = web().start().await;
    let http = browser();
    for query in ["/bff/login?returnUrl=/a&returnUrl=/b", "/bff/callback?code=a&code=b&state=s"] {
        problem(http.get(stack.bff.url(query)).send().await.unwrap(), 400, "INVALID_QUERY").await;
    }
}

#[tokio::test]
async fn the_answer_must_carry_this_browsers_state_and_is_taken_once() {
    let stack = web().start().await;
    let http = browser();
    let (callback, login) = begin(&http, &base(&stack), "/", 42).await;
    // Another browser's state (an attacker's own login, injected into this one).
    let tampered = callback.replace("state=", "state=x");
    let refused = http.get(&tampered).header(COOKIE, format!("{LOGIN}={login}")).send().await.unwrap();
    let body = problem(refused, 400, "LOGIN_FAILED").await;
    assert!(body["detail"].as_str().unwrap().contains("state"), "{body}");
    // The login was used up by that attempt: the right answer is refused too, and no session
    // cookie is set.
    let late = http.get(&callback).header(COOKIE, format!("{LOGIN}={login}")).send().await.unwrap();
    assert!(set_cookie(&late, SESSION).is_none());
    problem(late, 400, "LOGIN_FAILED").await;
    // Without the login cookie at all.
    problem(http.get(&callback).send().await.unwrap(), 400, "LOGIN_FAILED").await;
}

#[tokio::test]
async fn a_replayed_code_is_refused_by_the_provider() {
    let stack = web().start().await;
    let http = browser();
    let base = base(&stack);
    let (first, login) = begin(&http, &base, "/", 42).await;
    let done = http.get(&first).header(COOKIE, format!("{LOGIN}={login}")).send().await.unwrap();
    assert_eq!(done.status(), StatusCode::FOUND);
    // A new login in the same browser, answered with the first login's code.
    let (second, login) = begin(&http, &base, "/", 42).await;
    let code =
        |url: &str| url::Url::parse(url).unwrap().query_pairs().find(|(k, _)| k == "code").unwrap().1.into_owned();
    let replayed = second.replace(&code(&second), &code(&first));
    let refused = http.get(&replayed).header(COOKIE, format!("{LOGIN}={login}")).send().await.unwrap();
    let body = problem(refused, 400, "LOGIN_FAILED").await;
    assert!(body["detail"].as_str().unwrap().contains("invalid_grant"), "{body}");
}

#[tokio::test]
async fn a_login_gives_a_new_session_id_and_forgets_the_one_before() {
    let stack = web().start().await;
    let http = browser();
    let base = base(&stack);
    let before = sign_in(&http, &base, 42).await;
    // The same browser signs in again, sending the cookie it has (or one an attacker planted).
    let (callback, login) = begin(&http, &base, "/", 7).await;
    let again = http.get(callback).header(COOKIE, format!("{LOGIN}={login}; {SESSION}={before}")).send().await.unwrap();
    let (after, _) = set_cookie(&again, SESSION).expect("a new session cookie");
    assert_ne!(after, before, "the id changes at login");
    problem(call(&http, stack.bff.url("/web/home"), &before).send().await.unwrap(), 401, "SESSION_ENDED").await;
    let user: Value = call(&http, stack.bff.url("/bff/user"), &after).send().await.unwrap().json().await.unwrap();
    assert_eq!(user["sub"], "7");
}

#[tokio::test]
async fn the_access_token_is_refreshed_before_it_expires_and_a_refused_refresh_ends_the_session() {
    let stack = web().start().await;
    // Tokens that expire within `session.refresh_before` (60 s): every call refreshes.
    stack.mocks.idp().set_access_ttl(DEMO_CLIENT_ID, 30);
    let http = browser();
    let session = sign_in(&http, &base(&stack), 42).await;
    assert_eq!(stack.mocks.idp().live_refresh_tokens(), 1);
    stack.mocks.service(Service::Auth).stats.reset();
    // Concurrent calls of one session refresh once (a second refresh with the rotated-out token
    // would be a reuse, and the provider would revoke the session).
    let calls = (0..4).map(|_| call(&http, stack.bff.url("/bff/user"), &session).send());
    for response in futures::future::join_all(calls).await {
        assert_eq!(response.unwrap().status(), 200);
    }
    let after = stack.mocks.service(Service::Auth).stats.snapshot().requests;
    assert!((1..=4).contains(&after), "{after} token calls for 4 requests");
    assert_eq!(stack.mocks.idp().live_refresh_tokens(), 1, "rotated, the family intact");
    assert!(stack.admin_text("/metrics").await.contains("bff_session_events_total{event=\"refreshed\"}"));
    // The provider ends the user's sessions: the next refresh is refused, the session ends.
    stack.mocks.idp().revoke_user(42);
    let ended = call(&http, stack.bff.url("/web/home"), &session).send().await.unwrap();
    problem(ended, 401, "SESSION_ENDED").await;
    problem(call(&http, stack.bff.url("/bff/user"), &session).send().await.unwrap(), 401, "SESSION_ENDED").await;
}

/// A request that goes away while its session's tokens are refreshed (a tab closed, a fetch
/// aborted, an HTTP/2 stream reset) does not lose the refresh token the provider rotated: the
/// next refresh would present the old one, a reuse, and the provider would end the session.
#[tokio::test]
async fn a_refresh_outlives_the_request_that_started_it() {
    let stack = web().start().await;
    let idp = stack.mocks.idp();
    idp.set_access_ttl(DEMO_CLIENT_ID, 30);
    let session = sign_in(&browser(), &base(&stack), 42).await;
    // The provider rotates the refresh token at once and answers a while later, with tokens
    // that then need no refresh for an hour.
    idp.set_access_ttl(DEMO_CLIENT_ID, 3600);
    idp.delay_token_answers(Duration::from_millis(500));
    let mut h2 = RawH2::handshake(TcpStream::connect(stack.bff.addr).await.unwrap(), &[]).await.unwrap();
    let cookie = format!("{SESSION}={session}");
    h2.get(1, "/bff/user", &[("cookie", &cookie), ("x-csrf", "1")]).await.unwrap();
    let refreshing = eventually(Duration::from_secs(10), || async { stack.stats(Service::Auth).in_flight > 0 }).await;
    assert!(refreshing, "the session's refresh reached the provider");
    h2.send(frame::RST_STREAM, 0, 1, &8u32.to_be_bytes()).await.unwrap();
    drop(h2);
    idp.delay_token_answers(Duration::ZERO);
    let user = call(&browser(), stack.bff.url("/bff/user"), &session).send().await.unwrap();
    assert_eq!(user.status(), 200, "{:?}", user.text().await);
    assert_eq!(idp.live_refresh_tokens(), 1, "the rotated token kept, the family intact");
}

#[tokio::test]
async fn logout_revokes_at_the_provider_and_forgets_the_session() {
    let stack = web().start().await;
    let http = browser();
    let base = base(&stack);
    let session = sign_in(&http, &base, 42).await;
    assert_eq!(stack.mocks.idp().live_refresh_tokens(), 1);
    // A form post from another site (Origin set, no CSRF header) is refused.
    let cross = post(&http, stack.bff.url("/bff/logout"), &session)
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    problem(cross, 403, "CSRF_REQUIRED").await;
    // The page's own form.
    let out = post(&http, stack.bff.url("/bff/logout"), &session).header("origin", &base).send().await.unwrap();
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    let (_, cleared) = set_cookie(&out, SESSION).expect("cleared");
    assert!(cleared.contains("Max-Age=0"));
    let end_session = location(&out);
    assert!(end_session.starts_with(&format!("{}/end_session?", stack.mocks.url(Service::Auth))), "{end_session}");
    assert_eq!(stack.mocks.idp().live_refresh_tokens(), 0, "revoked at the provider");
    // The provider sends the browser back to the page.
    let back = http.get(&end_session).send().await.unwrap();
    assert_eq!(location(&back), format!("{base}/"));
    problem(call(&http, stack.bff.url("/web/home"), &session).send().await.unwrap(), 401, "SESSION_ENDED").await;
}

/// A second bff-web on `stack`'s mocks, with `overrides`.
async fn another_web_bff(stack: &Stack, overrides: &[(&str, String)]) -> TestServer {
    let mut set = Overrides::default();
    for (key, value) in stack.mocks.config_overrides() {
        set.set_existing(key, value, "mocks");
    }
    for (key, value) in overrides {
        set.set(*key, value.clone(), "test");
    }
    let source = ConfigSource { name: "web.toml".into(), text: bff_demo::WEB_CONFIG.to_owned() };
    let config = load(&source, &set).unwrap();
    let gateway = bff_core::Gateway::builder(config).build().await.unwrap();
    let server = Server::new(&gateway.config().server).metrics(gateway.metrics().clone());
    let bff = TestServer::serve(server, bff_web::app(&gateway).unwrap()).await;
    stack.mocks.idp().register_origin(DEMO_CLIENT_ID, bff.url("").trim_end_matches('/'));
    bff
}

#[tokio::test]
async fn sessions_in_redis_are_shared_by_replicas_and_outlive_them() {
    let Some(redis) = RedisServer::start().await else { return };
    let shared = [("session.store", "redis".to_owned()), ("redis.url", redis.url())];
    let stack = web().set("session.store", "redis").set("redis.url", &redis.url()).start().await;
    let http = browser();
    let session = sign_in(&http, &base(&stack), 42).await;
    let other = another_web_bff(&stack, &shared).await;
    let there = call(&http, other.url("/web/home"), &session).send().await.unwrap();
    assert_eq!(there.status(), 200);
    // A replica started after the login (a restart) knows the session too.
    drop(other);
    let restarted = another_web_bff(&stack, &shared).await;
    assert_eq!(call(&http, restarted.url("/bff/user"), &session).send().await.unwrap().status(), 200);
    // Logging out on one logs out everywhere.
    let out = post(&http, restarted.url("/bff/logout"), &session).header("x-csrf", "1").send().await.unwrap();
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    problem(call(&http, stack.bff.url("/web/home"), &session).send().await.unwrap(), 401, "SESSION_ENDED").await;
    // A memory-store replica never saw it.
    let alone = another_web_bff(&stack, &[]).await;
    let session = sign_in(&http, &base(&stack), 42).await;
    problem(call(&http, alone.url("/web/home"), &session).send().await.unwrap(), 401, "SESSION_ENDED").await;
}

/// bff-web with one more passthrough route, to the users service, that forwards the caller's
/// access token.
fn with_token_route() -> StackBuilder {
    let config = format!(
        "{}\n[[proxy]]\npath = \"/api/users/{{*rest}}\"\nupstream = \"users\"\nrewrite = \"/users/{{rest}}\"\n\
         access = \"scope:profile\"\nforward_token = true\n",
        bff_demo::WEB_CONFIG
    );
    StackBuilder::new(Box::leak(config.into_boxed_str()), bff_web::app)
}

#[tokio::test]
async fn a_route_with_forward_token_calls_upstream_with_the_sessions_access_token_and_never_the_cookie() {
    let stack = with_token_route().start().await;
    let http = browser();
    let session = sign_in(&http, &base(&stack), 42).await;
    let response = http
        .get(stack.bff.url("/api/users/42"))
        .header(COOKIE, format!("theme=dark; {SESSION}={session}"))
        .header("x-csrf", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let seen = stack.stats(Service::Users).last_headers;
    let token = seen["authorization"].strip_prefix("Bearer ").expect("a bearer token upstream");
    // The provider's access token for user 42, which the browser never saw.
    let payload = token.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload).unwrap(),
    )
    .unwrap();
    assert_eq!(claims["sub"], "42");
    assert_eq!(seen["cookie"], "theme=dark", "the session cookie stays with the BFF");
    assert_eq!(seen["x-user-id"], "42");
    // A bearer client's own token goes up on that route.
    let own = stack.token();
    let bearer = http.get(stack.bff.url("/api/users/42")).bearer_auth(&own).send().await.unwrap();
    assert_eq!(bearer.status(), 200);
    assert_eq!(stack.stats(Service::Users).last_headers["authorization"], format!("Bearer {own}"));
    // A route without `forward_token` sends no credential, and no session cookie.
    let public =
        http.get(stack.bff.url("/api/catalog/products/SKU-0001")).header(COOKIE, format!("{SESSION}={session}"));
    assert_eq!(public.send().await.unwrap().status(), 200);
    let seen = stack.stats(Service::Catalog).last_headers;
    assert!(!seen.contains_key("authorization") && !seen.contains_key("cookie"), "{seen:?}");
}

#[tokio::test]
async fn forward_token_on_a_public_route_stops_the_bff_naming_the_key() {
    let config = format!(
        "{}\n[[proxy]]\npath = \"/api/open/{{*rest}}\"\nupstream = \"users\"\naccess = \"public\"\nforward_token = true\n",
        bff_demo::WEB_CONFIG
    );
    let mut set = Overrides::default();
    set.set("oidc.client_secret", "s", "test");
    let config = load(&ConfigSource { name: "web.toml".into(), text: config }, &set).unwrap();
    let error = bff_core::Gateway::builder(config).source("web.toml").build().await.unwrap_err().to_string();
    assert!(error.contains(".forward_token") && error.contains("public"), "{error}");
}

#[tokio::test]
async fn sessions_without_a_provider_or_a_secret_stop_the_bff_naming_the_key() {
    let cases = [
        ("oidc.client_secret", None, "BFF_OIDC__CLIENT_SECRET"),
        ("oidc.scopes", Some("[\"profile\"]"), "openid"),
        ("session.store", Some("\"redis\""), "redis.url"),
    ];
    for (key, value, hint) in cases {
        let mut set = Overrides::default();
        if key != "oidc.client_secret" {
            set.set("oidc.client_secret", "s", "test");
        }
        if let Some(value) = value {
            set.set(key, value, "test");
        }
        let source = ConfigSource { name: "web.toml".into(), text: bff_demo::WEB_CONFIG.to_owned() };
        let error = match load(&source, &set) {
            Err(e) => e.to_string(),
            Ok(config) => bff_core::Gateway::builder(config).source("web.toml").build().await.unwrap_err().to_string(),
        };
        assert!(error.contains(key) && error.contains(hint), "{key}: {error}");
    }
}

/// Real time (the store's clock is the system's), with margins of two seconds or more each way.
#[tokio::test]
async fn a_session_slides_while_used_and_ends_when_idle_or_at_its_absolute_expiry() {
    let stack = web().set("session.idle_timeout", "4s").set("session.max_lifetime", "12s").start().await;
    let http = browser();
    let used = sign_in(&http, &base(&stack), 42).await;
    let idle = sign_in(&http, &base(&stack), 7).await;
    let start = std::time::Instant::now();
    let second = std::time::Duration::from_secs(1);
    let mut ended_at = None;
    let mut idle_checked = false;
    while ended_at.is_none() && start.elapsed() < 25 * second {
        tokio::time::sleep(second).await;
        let status = call(&http, stack.bff.url("/bff/user"), &used).send().await.unwrap().status();
        let elapsed = start.elapsed();
        match status.as_u16() {
            200 => assert!(elapsed < 13 * second, "alive at {elapsed:?}, past max_lifetime"),
            401 => ended_at = Some(elapsed),
            other => panic!("{other} at {elapsed:?}"),
        }
        // Past its idle timeout (and well before the absolute expiry), the unused one is gone.
        if !idle_checked && elapsed > 6 * second {
            assert!(elapsed < 10 * second, "the idle check came too late to tell: {elapsed:?}");
            let answer = call(&http, stack.bff.url("/bff/user"), &idle).send().await.unwrap();
            problem(answer, 401, "SESSION_ENDED").await;
            idle_checked = true;
        }
    }
    let ended_at = ended_at.expect("the session ended");
    // Used every second, it outlived its idle timeout more than twice over (sliding), then ended
    // at its absolute expiry (in whole seconds: between 11 and 12 s after the login).
    assert!(ended_at > 10 * second, "ended at {ended_at:?}");
}

/// Replicas sharing Redis refresh one session once at a time: two refreshes with the same
/// rotated token would be taken by the provider for a theft, and end the session.
#[tokio::test]
async fn replicas_refresh_a_shared_session_one_at_a_time() {
    let Some(redis) = RedisServer::start().await else { return };
    let shared = [("session.store", "redis".to_owned()), ("redis.url", redis.url())];
    let stack = web().set("session.store", "redis").set("redis.url", &redis.url()).start().await;
    // Every call finds the access token within `refresh_before` of its expiry.
    stack.mocks.idp().set_access_ttl(DEMO_CLIENT_ID, 30);
    let http = browser();
    let session = sign_in(&http, &base(&stack), 42).await;
    let other = another_web_bff(&stack, &shared).await;
    for _ in 0..5 {
        let calls = (0..6).map(|i| {
            let url = if i % 2 == 0 { stack.bff.url("/bff/user") } else { other.url("/bff/user") };
            call(&http, url, &session).send()
        });
        for response in futures::future::join_all(calls).await {
            assert_eq!(response.unwrap().status(), 200);
        }
    }
    assert_eq!(stack.mocks.idp().live_refresh_tokens(), 1, "no refresh token was used twice");
}

/// Beginning a login keeps state on the server, and needs no credential: the shipped config
/// bounds how many one address begins.
#[tokio::test]
async fn logins_begun_by_one_address_are_rate_limited() {
    let stack = web().start().await;
    let http = browser();
    let mut statuses = Vec::new();
    for _ in 0..31 {
        let url = format!("{}?returnUrl=/", stack.bff.url("/bff/login"));
        statuses.push(http.get(url).send().await.unwrap().status().as_u16());
    }
    assert!(statuses[..30].iter().all(|s| *s == 302), "{statuses:?}");
    assert_eq!(statuses[30], 429);
}
